"""Property: the streamed ``sync`` and ``close`` publish what the in-memory
model publishes, over random trees and histories.

The model is the code ``sync`` and ``close`` ran before they streamed:
``TreeResolver`` for the parents' merged tree, the draft's operations applied
to a dict, the quick check (size, mtime and mode as the parent's), a file
whose content and permission bits are the parent's keeping the parent's
entry, ``check_structure``, ``compare`` and ``make_delta``.  After each step
the published version's tree (resolved in memory), its delta (as a set of
path and kind) and its header's stats must equal the model's, and a step the
model calls unchanged must publish nothing.

Names are drawn to stress the walking order (``a``, ``a.txt``, ``a-b``,
``a/x``: ``/`` sorts below ``.`` and ``-`` in one order and above in the
other); sizes and mtimes from small sets so that the quick check passes on
changed files too; a path changes kind between steps; histories have several
parents (``MergedTree``) and removals by pattern.
"""

from __future__ import annotations

import fnmatch
import itertools
import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dsfs.engine import versions
from dsfs.engine.scan import SourceItem, scan, scan_folder
from dsfs.engine.tree import (
    Tree,
    TreeResolver,
    apply_delta,
    check_structure,
    compare,
    make_delta,
    sweep_below,
    totals,
)
from dsfs.format.digest import file_hasher
from dsfs.format.manifest import DIR, FILE, SYMLINK, Entry
from dsfs.repository import Repository

NAMES = ["a", "a.txt", "a-b", "b", "a b", "é"]
CONTENTS = [b"", b"x", b"y", b"xy"]
_SERIAL = itertools.count()
MTIMES = [1_000_000_000_000_000_000, 1_000_000_000_000_000_001]


@st.composite
def trees(draw: st.DrawFn, depth: int = 0) -> dict[str, tuple]:
    tree: dict[str, tuple] = {}
    for name in draw(st.lists(st.sampled_from(NAMES), max_size=4, unique=True)):
        kind = draw(st.sampled_from(["file", "file", "dir", "link"] if depth < 2
                                    else ["file", "link"]))
        if kind == "dir":
            tree[name] = ("dir", draw(st.sampled_from([0o755, 0o750])))
            for rel, node in draw(trees(depth + 1)).items():
                tree[f"{name}/{rel}"] = node
        elif kind == "link":
            tree[name] = ("link", draw(st.sampled_from(["a", "../b"])))
        else:
            tree[name] = ("file", draw(st.sampled_from(CONTENTS)),
                          draw(st.sampled_from([0o644, 0o600])), draw(st.sampled_from(MTIMES)))
    return tree


def write(root: Path, tree: dict[str, tuple]) -> None:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir()
    for rel in sorted(tree, key=lambda p: p.count("/")):
        node, path = tree[rel], root / rel
        if node[0] == "dir":
            path.mkdir()
        elif node[0] == "link":
            os.symlink(node[1], path)
        else:
            path.write_bytes(node[1])
            path.chmod(node[2])
            os.utime(path, ns=(node[3], node[3]))
    for rel, node in tree.items():
        if node[0] == "dir":
            (root / rel).chmod(node[1])


def _digest(path: str) -> str:
    hasher = file_hasher()
    with open(path, "rb") as f:
        hasher.update(f.read())
    return hasher.digest_id()


def model_build(base: Tree, desired: dict[str, Entry | SourceItem], trust: bool) -> Tree:
    """What ``build_tree`` made of the desired tree (chunks left out)."""
    tree: Tree = {}
    for path, value in desired.items():
        if isinstance(value, Entry):
            tree[path] = value
            continue
        old = base.get(path)
        if value.kind == FILE:
            if (trust and old is not None and old.kind == FILE and old.size == value.size
                    and old.mtime_ns == value.mtime_ns and old.mode == value.mode):
                tree[path] = old
                continue
            st = os.lstat(value.source)
            entry = Entry(path, FILE, st.st_size, st.st_mode, st.st_mtime_ns,
                          _digest(value.source))
            tree[path] = old if old is not None and old.same_content(entry) else entry
        elif value.kind == SYMLINK:
            tree[path] = Entry(path, SYMLINK, value.size, value.mode, value.mtime_ns,
                               target=value.target)
        else:
            tree[path] = Entry(path, DIR, 0, value.mode, value.mtime_ns)
    check_structure(tree)
    return tree


def model_desired(base: Tree, ops: list[tuple]) -> dict[str, Entry | SourceItem]:
    """The draft's operations on a dict, as ``close`` applied them."""
    desired: dict[str, Entry | SourceItem] = dict(base)
    for op in ops:
        if op[0] == "add":
            replaced = []
            for item in op[1]:
                old = desired.get(item.path)
                if old is not None and old.kind == DIR and item.kind != DIR:
                    replaced.append(item.path)
                desired[item.path] = item
            sweep_below(desired, replaced)  # type: ignore[arg-type]
        else:
            matched = [p for p in desired if fnmatch.fnmatchcase(p, op[1])]
            dirs = [p for p in matched if desired[p].kind == DIR]
            for path in matched:
                del desired[path]
            sweep_below(desired, dirs)  # type: ignore[arg-type]
    return desired


def view(tree: Tree) -> dict[str, tuple]:
    return {p: (e.kind, e.mode, e.size, e.mtime_ns, e.digest, e.target)
            for p, e in tree.items()}


def check(repo: Repository, result: versions.CloseResult, base: Tree, model: Tree,
          parents: list[str]) -> str | None:
    """The published version against the model; returns its id (None if
    nothing was published)."""
    delta = make_delta(base, model)
    if parents and not delta and not result.created:
        return None
    assert result.created
    header = result.header
    published = TreeResolver(repo).tree(header.id)
    # a directory or symlink whose content is the parent's keeps the parent's mtime
    assert view(published) == view(apply_delta(base, delta))
    own = {(e.path, e.kind) for e in TreeResolver(repo).delta(header.id)}
    assert own == {(e.path, e.kind) for e in delta}
    assert header.stats == {**totals(model), **compare(base, model).counts,
                            "uploaded_bytes": header.stats["uploaded_bytes"]}
    assert result.changes == compare(base, model).counts
    return header.id


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(history=st.lists(trees(), min_size=1, max_size=4),
       merges=st.lists(st.booleans(), min_size=4, max_size=4),
       checksum=st.booleans())
def test_streamed_sync_equals_the_model(dsfs_env: dict[str, str], history: list[dict],
                                        merges: list[bool], checksum: bool) -> None:
    repo = Repository.open()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "data"
        published: list[str] = []
        name = f"n{next(_SERIAL)}"
        for step, tree in enumerate(history):
            write(folder, tree)
            parents = published[-2:] if merges[step] and len(published) >= 2 else \
                published[-1:]
            base = TreeResolver(repo).merged(parents)
            items = {i.path: i for i in scan_folder(str(folder))}
            model = model_build(base, dict(items), trust=not checksum)
            result = versions.sync(repo, str(folder), "p", name, parents=parents or None,
                                   checksum=checksum)
            got = check(repo, result, base, model, parents)
            if got is not None:
                published.append(got)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(first=trees(), second=trees(), third=trees(),
       script=st.lists(st.tuples(st.sampled_from(["add", "add", "remove"]),
                                 st.sampled_from(["", "a", "a/b", "b"]),
                                 st.sampled_from(["*", "a*", "a/*", "*.txt", "b", "zz"]),
                                 st.sampled_from([None, "*.txt", "a*"]),
                                 st.integers(0, 2)), max_size=4),
       two_parents=st.booleans())
@example(first={"a": ("dir", 0o755), "a/b": ("file", b"x", 0o644, MTIMES[0]),
                "a.txt": ("file", b"y", 0o644, MTIMES[0])},
         second={}, third={"a": ("file", b"x", 0o644, MTIMES[0])},
         script=[("add", "", "*", None, 2), ("remove", "", "a.txt", None, 0)],
         two_parents=False)
def test_streamed_close_equals_the_model(dsfs_env: dict[str, str], first: dict, second: dict,
                                         third: dict, script: list[tuple],
                                         two_parents: bool) -> None:
    repo = Repository.open()
    with tempfile.TemporaryDirectory() as scratch:
        folders = [Path(scratch) / f"s{i}" for i in range(3)]
        for folder, tree in zip(folders, (first, second, third), strict=True):
            write(folder, tree)
        name = f"c{next(_SERIAL)}"
        v1 = versions.sync(repo, str(folders[0]), "p", name).header.id
        parents = [v1]
        if two_parents:
            v2 = versions.sync(repo, str(folders[1]), "p", name, parents=[]).header.id
            parents = [v2, v1]
        base = TreeResolver(repo).merged(parents)
        draft = versions.create(repo, "p", name, parents=parents)
        ops: list[tuple] = []
        for kind, prefix, pattern, wildcard, source in script:
            if kind == "remove":
                versions.remove_files(draft, [pattern])
                ops.append(("remove", pattern))
            else:
                versions.add_files(draft, [str(folders[source])], prefix, wildcard)
                ops.append(("add", list(scan(str(folders[source]), prefix, wildcard))))
        try:
            model = model_build(base, model_desired(base, ops), trust=False)
        except Exception as exc:  # the model refuses the tree: so must close
            expected: Exception | None = exc
        else:
            expected = None
        if expected is not None:
            try:
                versions.close(repo, draft.header.id)
            except type(expected):
                return
            raise AssertionError(f"close published a tree the model refuses: {expected}")
        result = versions.close(repo, draft.header.id)
        check(repo, result, base, model, [])


def test_many_packs_resolve_and_the_packer_stays_small(dsfs_env: dict[str, str],
                                                       tmp_path: Path,
                                                       monkeypatch) -> None:  # noqa: ANN001
    """Packs of 8 KiB: the delta's chunks wait for pack ids that become known
    one pack at a time, duplicates come back after their pack was recorded,
    and the packer holds only the chunks of packs not yet recorded."""
    from dsfs.engine import packer as packer_module
    from dsfs.engine.materialize import mutable_copy

    monkeypatch.setattr(packer_module, "PACK_TARGET_SIZE", 8 << 10)
    held: list[int] = []
    place = packer_module.Packer._place

    def spy(self, data: bytes):  # type: ignore[no-untyped-def]
        held.append(len(self._placed))
        return place(self, data)

    monkeypatch.setattr(packer_module.Packer, "_place", spy)
    src = tmp_path / "src"
    for d in range(4):
        (src / f"d{d}").mkdir(parents=True)
        for i in range(60):
            # every 7th file repeats an earlier file's bytes
            body = (b"%04d" % ((d * 60 + i) // 7 * 7 if i % 7 == 3 else d * 60 + i)) * 256
            (src / f"d{d}" / f"f{i:03d}").write_bytes(body)
    repo = Repository.open()
    result = versions.sync(repo, str(src), "p", "packs")
    assert result.stats.packs_uploaded > 20
    assert max(held) <= 8 * (packer_module.MAX_INFLIGHT + 2)
    out = tmp_path / "out"
    mutable_copy(repo, result.header, str(out))
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        assert (out / path.relative_to(src)).read_bytes() == path.read_bytes(), path
    tree = TreeResolver(repo).tree(result.header.id)
    assert all(not c.pack_id.startswith("@") for e in tree.values() for c in e.chunks)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(old=trees(), new=trees(), extra=st.lists(st.sampled_from(["a/b", "b/a.txt", "x/y/z"]),
                                               max_size=2))
def test_snapshot_entries_equal_apply_delta(dsfs_env: dict[str, str], old: dict, new: dict,
                                            extra: list[str]) -> None:
    """The streamed snapshot of a commit (a version's tree with a delta laid
    over it) equals ``apply_delta`` on the version's tree, in walking order;
    the delta may add paths below directories it does not list (implied)."""
    from dsfs.engine.dirtree import dfs_key
    from dsfs.engine.draftops import SnapshotEntries

    repo = Repository.open()
    with tempfile.TemporaryDirectory() as scratch:
        a, b = Path(scratch) / "a", Path(scratch) / "b"
        write(a, old)
        write(b, new)
        name = f"s{next(_SERIAL)}"
        first = versions.sync(repo, str(a), "p", name).header
        second = versions.sync(repo, str(b), "p", name, parents=[]).header
        resolver = TreeResolver(repo)
        base, target = resolver.tree(first.id), resolver.tree(second.id)
        delta = make_delta(base, target)
        for path in extra:
            if not any(path == p or path.startswith(p + "/") or p.startswith(path + "/")
                       for p in target):
                delta.append(Entry(path, FILE, 0, 0o100644, 0,
                                   "xxh3_128:" + "0" * 32))
        try:
            expected = apply_delta(base, delta)
        except Exception as exc:  # noqa: BLE001 - the model refuses: so must the stream
            try:
                list(SnapshotEntries(repo, first, delta))
            except type(exc):
                return
            raise
        got = list(SnapshotEntries(repo, first, delta))
        assert [e.path for e in got] == sorted(expected, key=dfs_key)
        assert view({e.path: e for e in got}) == view(expected)
