"""Streaming walks of versions (``dsfs.engine.treewalk``) against the dict-based
reference (``TreeResolver`` and ``compare``), and the memory they take.

Random histories (deltas with removals, directories replaced by files and
back, symlinks, several parents, snapshots) are published as manifests; for
every version the streamed file list must equal the sorted files of the
reference tree, and for every pair of versions the streamed diff must equal
``compare`` of the two reference trees, row for row and in order.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsfs.engine import treewalk
from dsfs.engine.tree import TreeResolver, compare
from dsfs.errors import IntegrityError
from dsfs.format import manifest as mf
from dsfs.format.manifest import DIR, FILE, REMOVED, SYMLINK, ChunkRef, Entry, Header
from dsfs.repository import Repository
from dsfs.store import open_store

PACK = "34" * 16
#: Names whose order as strings differs from a walk's naive order: "a.x" and
#: "a-" sort before "a/..." ('.' and '-' are below '/'), "a0" after it.
NAMES = ["a", "a.x", "a-", "a0", "b"]


def cid(n: int) -> str:
    return "xxh3_128:" + f"{n:032x}"


def make_entry(kind: str, path: str, n: int, mtime: int) -> Entry:
    if kind == FILE:
        return Entry(path, FILE, 10, 0o100644 | (n % 2) * 0o100, mtime, cid(n),
                     (ChunkRef(cid(n), PACK, 16, 10),))
    if kind == DIR:
        return Entry(path, DIR, 0, 0o40750 + n % 8, mtime)
    if kind == SYMLINK:
        target = f"t{n}"
        return Entry(path, SYMLINK, len(target), 0o120777, mtime, target=target)
    return Entry(path, REMOVED)


def publish(repo: Repository, entries: list[Entry], parents: list[str],
            snapshot: bool = False) -> Header:
    header = Header(id=uuid.uuid4().hex, project="p", name="n", version="1",
                    parents=parents, snapshot=snapshot, stats={"files": 0, "size": 0})
    repo.store.put(mf.manifest_key(header.id), mf.encode(header, entries))
    return header


def reference_rows(old: dict[str, Entry], new: dict[str, Entry]) -> list[treewalk.Row]:
    changes = compare(old, new)
    rows: list[treewalk.Row] = [(e.path, None, e) for e in changes.added]
    rows += [(e.path, e, None) for e in changes.removed]
    rows += [(n.path, o, n) for o, n in changes.modified]
    return sorted(rows, key=lambda row: row[0])


paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join)
ops = st.tuples(st.sampled_from([FILE, FILE, FILE, DIR, SYMLINK, REMOVED, REMOVED]),
                paths, st.integers(1, 4))
versions = st.lists(
    st.tuples(st.lists(ops, max_size=8),
              st.lists(st.integers(0, 50), max_size=3),  # parents, as indexes
              st.booleans()),  # snapshot
    min_size=1, max_size=7)


def build_history(tmp: Path, spec: list) -> tuple[Repository, list[Header]]:
    repo = Repository(open_store(str(tmp / "store")), tmp / "cache")
    made: list[Header] = []
    for step, (delta_ops, parent_picks, snapshot) in enumerate(spec):
        parents = list(dict.fromkeys(made[i % len(made)].id for i in parent_picks)) if made \
            else []
        delta = [make_entry(kind, path, n, step) for kind, path, n in delta_ops]
        header = publish(repo, delta, parents, snapshot and step % 2 == 1)
        try:
            TreeResolver(repo).tree(header.id)
        except IntegrityError:  # a tree the reference refuses: not a version
            repo.store.delete(mf.manifest_key(header.id))
            repo.forget_manifest(header.id)
            continue
        made.append(header)
    return repo, made


def check_history(tmp: Path, spec: list) -> None:
    repo, made = build_history(tmp, spec)
    resolver = TreeResolver(repo)
    trees = {h.id: resolver.tree(h.id) for h in made}
    for header in made:
        tree = trees[header.id]
        streamed = list(treewalk.iter_files(treewalk.open_tree(repo, header)))
        assert streamed == [tree[p] for p in sorted(tree) if tree[p].kind != DIR]
        every = list(treewalk.iter_entries(treewalk.open_tree(repo, header)))
        assert sorted(e.path for e in every) == sorted(tree)
        own = treewalk.own_changes(repo, header)
        if own is not None:
            assert list(own) == reference_rows(resolver.merged(header.parents), tree)
    for a in made:
        for b in made:
            rows = list(treewalk.diff(treewalk.open_tree(repo, a), treewalk.open_tree(repo, b)))
            assert rows == reference_rows(trees[a.id], trees[b.id]), (a.id, b.id)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(spec=versions)
def test_streamed_list_and_diff_match_the_reference(tmp_path_factory: pytest.TempPathFactory,
                                                    spec: list) -> None:
    check_history(tmp_path_factory.mktemp("h"), spec)


@pytest.mark.slow
@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(spec=versions)
def test_streamed_list_and_diff_match_the_reference_long(
        tmp_path_factory: pytest.TempPathFactory, spec: list) -> None:
    check_history(tmp_path_factory.mktemp("h"), spec)


def test_a_diff_of_a_child_reads_only_the_directories_it_changed(tmp_path: Path) -> None:
    """A version and its child share every directory the child's delta does not
    touch: the diff resolves the changed directories, not the whole tree."""
    repo = Repository(open_store(str(tmp_path / "store")), tmp_path / "cache")
    base = publish(repo, [make_entry(FILE, f"d{i}/f{j}", j, 1) for i in range(50)
                          for j in range(20)], [])
    child = publish(repo, [make_entry(FILE, "d7/f3", 9, 2), make_entry(REMOVED, "d9/f1", 0, 0)],
                    [base.id])
    old, new = treewalk.open_tree(repo, base), treewalk.open_tree(repo, child)
    listed: list[str] = []
    for source in (old, new):
        original = source.walk_children

        def spy(path: str, original=original) -> list[tuple[str, Entry]]:  # noqa: ANN001
            listed.append(path)
            return original(path)

        source.walk_children = spy  # type: ignore[method-assign]
    rows = list(treewalk.diff(old, new))
    assert [(p, o is not None, n is not None) for p, o, n in rows] == [
        ("d7/f3", True, True), ("d9/f1", True, False)]
    assert sorted(set(listed)) == ["", "d7", "d9"]


def write_big_version(tmp: Path, files: int) -> tuple[dict[str, str], str]:
    env = {"DSFS_STORE": str(tmp / "store"), "DSFS_DATA_DIR": str(tmp / "data"),
           "DSFS_CACHE_DIR": str(tmp / "cache")}
    repo = Repository(open_store(env["DSFS_STORE"]), Path(env["DSFS_CACHE_DIR"]))
    from dsfs.catalog import claim_key

    header = Header(id=uuid.uuid4().hex, project="big", name="n", version="1.0.0",
                    stats={"files": files, "size": 10 * files})
    entries = (make_entry(FILE, f"d{i // 1000:04d}/f{i:07d}", i % 16 + 1, 7)
               for i in range(files))
    repo.store.put(mf.manifest_key(header.id), mf.encode(header, entries))
    repo.store.put_if_absent(claim_key("big", "n", "1.0.0"), header.id.encode())
    return env, header.id


#: What ``dsfs list`` may take, at most, for 200,000 files (the dict-based
#: listing took ~230 MiB on this layout; the streamed one ~80).
LIST_RSS_LIMIT_MIB = 150

#: Runs the CLI and records the process's own peak RSS (VmHWM: not the
#: parent's, which a vforked child's ru_maxrss would include).
_PEAK = """
import atexit, sys
PEAK_FILE = sys.argv[1]
def peak():
    with open(PEAK_FILE, "w") as out:
        out.write([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0])
atexit.register(peak)
from dsfs_cli.main import main
sys.argv = ["dsfs", *sys.argv[2:]]
main()
"""


def test_list_of_200k_files_in_bounded_memory(tmp_path: Path) -> None:
    env, version_id = write_big_version(tmp_path, 200_000)
    peak_file = tmp_path / "peak"
    listing = tmp_path / "listing"
    with open(listing, "wb") as out:
        subprocess.run([sys.executable, "-c", _PEAK, str(peak_file), "list", version_id],
                       env={**os.environ, **env}, stdout=out, check=True)
    peak_mib = int(peak_file.read_text().split()[1]) / 1024
    with open(listing, "rb") as f:
        lines = sum(1 for _ in f)
    assert lines == 200_000
    assert peak_mib < LIST_RSS_LIMIT_MIB, f"dsfs list peaked at {peak_mib:.0f} MiB"
