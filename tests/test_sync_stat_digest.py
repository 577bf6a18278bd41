"""Property: ``sync``'s per-directory stat digest never hides a change that the
entry-by-entry quick check would see.

An unchanged directory passes ``sync`` on one digest of its ``lstat`` listing
compared with a digest memoized for the base's listing
(``dsfs.engine.statdigest``), without reading that listing.  Here a random
tree is published and synced again unchanged (which memoizes the digests),
then edited in the ways that fool a stat check or nearly do: a same-size
rewrite with the mtime put back, the same one nanosecond later, an mtime
alone, a mode, a rename keeping every stat, two same-size files swapped, a
size change with the mtime put back, a file replaced by a directory or a
symlink, an added file with a sibling's stat, a removal.  The next ``sync``
(with and without ``--checksum``) must publish exactly what the model of
``test_streaming_build`` (the in-memory code sync ran before it streamed)
publishes; then the same again on top of the new version, whose unchanged
directories share the memoized digests of the old one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_streaming_build import _SERIAL, MTIMES, check, model_build, trees, write

from dsfs.engine import dirtree, statdigest, versions
from dsfs.engine.scan import scan_folder
from dsfs.engine.tree import TreeResolver
from dsfs.repository import Repository

EDITS = ["same-size-same-mtime", "same-size-next-ns", "mtime", "mode", "rename", "swap",
         "size-same-mtime", "to-dir", "to-link", "add", "remove"]


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def edit(folder: Path, how: str, pick: int) -> None:
    """One edit of a regular file of ``folder`` (the ``pick``-th, cyclically)."""
    files = _files(folder)
    if not files:
        return
    path = files[pick % len(files)]
    st_ = path.stat()
    times = (st_.st_mtime_ns, st_.st_mtime_ns)
    data = path.read_bytes()
    if how == "same-size-same-mtime":
        path.write_bytes(bytes(b ^ 1 for b in data))
        os.utime(path, ns=times)
    elif how == "same-size-next-ns":
        path.write_bytes(bytes(b ^ 1 for b in data))
        os.utime(path, ns=(times[0] + 1, times[1] + 1))
    elif how == "mtime":
        os.utime(path, ns=(times[0] + 1, times[1] + 1))
    elif how == "mode":
        path.chmod(st_.st_mode & 0o7777 ^ 0o100)
    elif how == "rename":
        path.rename(path.with_name(path.name + "~"))
    elif how == "swap":
        other = next((f for f in files if f != path and f.parent == path.parent
                      and f.stat().st_size == st_.st_size), None)
        if other is not None:
            path.write_bytes(other.read_bytes())
            other.write_bytes(data)
            for f in (path, other):
                os.utime(f, ns=times)
                f.chmod(st_.st_mode & 0o7777)
    elif how == "size-same-mtime":
        path.write_bytes(data + b"+")
        os.utime(path, ns=times)
    elif how == "to-dir":
        path.unlink()
        path.mkdir()
        os.utime(path, ns=times)
    elif how == "to-link":
        path.unlink()
        os.symlink("a", path)
    elif how == "add":
        new = path.with_name(path.name + "+")
        new.write_bytes(data)
        new.chmod(st_.st_mode & 0o7777)
        os.utime(new, ns=times)
    else:
        path.unlink()


def sync_against_model(repo: Repository, folder: Path, name: str, parent: str,
                       checksum: bool) -> str:
    """One ``sync`` onto ``parent`` checked against the model; the version now."""
    base = TreeResolver(repo).merged([parent])
    items = {i.path: i for i in scan_folder(str(folder))}
    model = model_build(base, dict(items), trust=not checksum)
    result = versions.sync(repo, str(folder), "p", name, parents=[parent], checksum=checksum)
    got = check(repo, result, base, model, [parent])
    return parent if got is None else got


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(tree=trees(),
       rounds=st.lists(st.lists(st.tuples(st.sampled_from(EDITS), st.integers(0, 30)),
                                max_size=3), min_size=1, max_size=2),
       checksum=st.lists(st.booleans(), min_size=2, max_size=2))
def test_digest_sync_sees_what_the_entry_compare_sees(dsfs_env: dict[str, str], tree: dict,
                                                      rounds: list[list[tuple[str, int]]],
                                                      checksum: list[bool]) -> None:
    repo = Repository.open()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "data"
        write(folder, tree)
        name = f"d{next(_SERIAL)}"
        version = versions.sync(repo, str(folder), "p", name).header.id
        for edits, checked in zip(rounds, checksum, strict=False):
            # unchanged: publishes nothing, and memoizes the base's digests
            assert not versions.sync(repo, str(folder), "p", name, parents=[version]).created
            for how, pick in edits:
                edit(folder, how, pick)
            version = sync_against_model(repo, folder, name, version, checked)


#: A tree whose directories hold only files (each judged by its digest), two
#: of a size, all of one mtime and mode: the edits that keep stats bite here.
FIXED = {"a": ("dir", 0o755), "a/x": ("file", b"x", 0o644, MTIMES[0]),
         "a/y": ("file", b"y", 0o644, MTIMES[0]), "a/z": ("file", b"xy", 0o644, MTIMES[0]),
         "b": ("dir", 0o755), "b/x": ("file", b"x", 0o644, MTIMES[0])}


@pytest.mark.parametrize("checksum", [False, True])
@pytest.mark.parametrize("how", EDITS)
def test_each_edit_is_judged_as_the_entry_compare_judges_it(
        dsfs_env: dict[str, str], tmp_path: Path, how: str, checksum: bool) -> None:
    """Every edit once on a directory whose digest is memoized, then a second
    round on the version that made (its unchanged directory shares the digest)."""
    repo = Repository.open()
    folder = tmp_path / "data"
    write(folder, FIXED)
    version = versions.sync(repo, str(folder), "p", "n").header.id
    for pick in (0, 3):
        assert not versions.sync(repo, str(folder), "p", "n", parents=[version]).created
        edit(folder, how, pick)
        version = sync_against_model(repo, folder, "n", version, checksum)


def test_an_unchanged_directory_is_judged_without_its_listing(
        dsfs_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once memoized, a directory of files whose stats are unchanged costs no
    listing read; a same-size rewrite one nanosecond later is still seen, and
    one with the mtime put back is seen with ``--checksum``."""
    folder = tmp_path / "data"
    for d in range(3):
        (folder / f"d{d}").mkdir(parents=True)
        for i in range(5):
            (folder / f"d{d}" / f"f{i}").write_bytes(b"%d" % i)
            os.utime(folder / f"d{d}" / f"f{i}", ns=(MTIMES[0], MTIMES[0]))
    repo = Repository.open()
    v1 = versions.sync(repo, str(folder), "p", "n").header.id
    read: list[str] = []
    listing = dirtree.VersionTree.listing

    def counting(self: dirtree.VersionTree, node: str) -> dirtree.Listing:
        read.append(node)
        return listing(self, node)

    monkeypatch.setattr(dirtree.VersionTree, "listing", counting)
    assert not versions.sync(repo, str(folder), "p", "n").created
    assert sorted(read) == ["", "d0", "d1", "d2"]  # the first: digests memoized
    read.clear()
    assert not versions.sync(repo, str(folder), "p", "n").created
    assert read == [""]  # the root holds directories: never judged whole

    target = folder / "d1" / "f3"
    target.write_bytes(b"9")
    os.utime(target, ns=(MTIMES[0], MTIMES[0]))
    read.clear()
    assert not versions.sync(repo, str(folder), "p", "n").created  # as the quick check
    assert read == [""]
    changed = versions.sync(repo, str(folder), "p", "n", checksum=True)
    assert changed.created and changed.changes["modified"] == 1
    os.utime(target, ns=(MTIMES[0] + 1, MTIMES[0] + 1))
    target.write_bytes(b"8")
    os.utime(target, ns=(MTIMES[0] + 1, MTIMES[0] + 1))
    again = versions.sync(repo, str(folder), "p", "n")
    assert again.created and again.changes["modified"] == 1
    assert TreeResolver(repo).tree(again.header.id)["d1/f3"].mtime_ns == MTIMES[0] + 1
    assert v1 != again.header.id


def test_digests_differ_on_every_field() -> None:
    """Each compared field (names, count, mode, mtime, size) moves the digest;
    a listing holding anything but files has none."""
    head = dirtree.fast_file_head
    listing = [("a", head(0o100644, 5, 1) + b"\0" * 20, None),
               ("b", head(0o100600, 7, 2) + b"\0" * 20, None)]
    digest = statdigest.of_listing(listing)
    assert digest is not None

    def with_(i: int, name: str | None = None, mode: int | None = None,
              mtime: int | None = None, size: int | None = None) -> bytes | None:
        rows = list(listing)
        old_name, enc, _node = rows[i]
        _k, m, t, s = statdigest._HEAD.unpack_from(enc)
        rows[i] = (name or old_name, head(mode or m, mtime or t, size or s), None)
        return statdigest.of_listing(rows)

    variants = [with_(0, name="c"), with_(1, mode=0o100644), with_(1, mtime=8),
                with_(0, size=3), statdigest.of_listing(listing[:1])]
    assert digest not in variants and len(set(variants)) == len(variants)
    assert statdigest.of_listing([*listing, ("c", b"\2" + b"\0" * 28, "c")]) is None
    assert with_(0) == digest
