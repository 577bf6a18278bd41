"""The merged tree without FUSE or a store: operations, records, replay, status.

A lower tree is made of entries by hand; every test checks that replaying the
journal into a fresh ``OverlayFS`` gives the same upper layer (what a remount
after ``kill -9`` sees)."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from dsfs.format.manifest import DIR, FILE, SYMLINK, Entry
from dsfs.overlay import commit as oc
from dsfs.overlay.fs import OverlayFS
from dsfs.overlay.nodes import Exists, NotEmpty, NotSupported
from dsfs.overlay.source import DeltaSource
from dsfs.overlay.upper import SPARES, Upper
from dsfs.vfs import ROOT_INO, InvalidArgument, MemoryTreeSource


def lower_tree(big: int = 300, huge: int = 0) -> MemoryTreeSource:
    tree = {
        "d": Entry("d", DIR, 0, stat.S_IFDIR | 0o755, 1),
        "d/a.txt": Entry("d/a.txt", FILE, 3, stat.S_IFREG | 0o644, 1, "xxh:a"),
        "d/b.txt": Entry("d/b.txt", FILE, 4, stat.S_IFREG | 0o644, 1, "xxh:b"),
        "l": Entry("l", SYMLINK, 7, stat.S_IFLNK | 0o777, 1, target="d/a.txt"),
        "big": Entry("big", DIR, 0, stat.S_IFDIR | 0o755, 1),
    }
    for i in range(big):
        tree[f"big/f{i}"] = Entry(f"big/f{i}", FILE, 1, stat.S_IFREG | 0o644, 1, f"xxh:{i}")
    if huge:
        tree["huge"] = Entry("huge", FILE, huge, stat.S_IFREG | 0o644, 1, "xxh:h")
    return MemoryTreeSource(tree)


def open_fs(root: Path, source: MemoryTreeSource | DeltaSource) -> OverlayFS:
    upper = Upper(root)
    upper.open()
    state = upper.load()
    fs = OverlayFS(source, upper)
    fs.replay((state or {}).get("records", []))
    upper.save("0" * 32, "base", fs.records())
    return fs


def ino(fs: OverlayFS, path: str) -> int:
    return fs.resolve(path).ino


def test_edits_replay_to_the_same_upper_layer(tmp_path: Path) -> None:
    source = lower_tree()
    fs = open_fs(tmp_path / "o", source)
    d = ino(fs, "d")
    node = fs.create(d, "new.txt", stat.S_IFREG | 0o600)
    fs.open(node.ino)
    plan = fs.copy_up_plan(node, None)
    assert plan is None  # created files live in the upper layer already
    node.fd = os.open(fs.upper.data_path(node.data), os.O_RDWR)
    fs.write(node, 0, b"hello")
    fs.release(node)
    fs.mkdir(ROOT_INO, "empty", 0o750)
    fs.symlink(d, "s", "../l")
    fs.unlink(d, "b.txt")
    fs.rename(ROOT_INO, "big", d, "moved")  # 300 lower files, one node moved
    fs.rename(d, "a.txt", ROOT_INO, "a2.txt")
    fs.setattr(ino(fs, "d"), mode=0o700)
    before = fs.records()
    fs.upper.close()
    again = open_fs(tmp_path / "o", source)
    assert again.records() == before
    assert sorted(again.children(again.resolve("d"))) == ["moved", "new.txt", "s"]
    assert len(again.children(again.resolve("d/moved"))) == 300
    assert again.resolve("d").mode == 0o700
    regions = oc.collect(again)
    status = oc.status(regions)
    assert ("d/moved", DIR) in status.added and ("big", DIR) in status.removed
    assert ("a2.txt", FILE) in status.added and ("d/a.txt", FILE) in status.removed
    assert ("d/b.txt", FILE) in status.removed
    assert ("d", DIR) in status.modified
    assert sum(p.startswith("d/moved/") for p in regions.new) == 300
    again.upper.close()


def test_errors(tmp_path: Path) -> None:
    fs = open_fs(tmp_path / "o", lower_tree(3))
    d = ino(fs, "d")
    with pytest.raises(Exists):
        fs.mkdir(ROOT_INO, "d", 0o755)
    with pytest.raises(NotEmpty):
        fs.rmdir(ROOT_INO, "d")
    with pytest.raises(InvalidArgument):
        fs.rename(ROOT_INO, "d", d, "inside")
    with pytest.raises(NotSupported):
        fs.rename(ROOT_INO, "d", ROOT_INO, "big", 2)
    fs.setattr(d, uid=fs.uid + 1)  # owners are stored (who may: the adapter, the kernel)
    assert fs.getattr(d).uid == fs.uid + 1
    with pytest.raises(NotEmpty):
        fs.rename(ROOT_INO, "d", ROOT_INO, "big")
    fs.upper.close()


def test_spare_data_files_and_unchanged_attributes(tmp_path: Path) -> None:
    """New files take data files made ahead by a worker thread; ``close`` deletes
    the ones left.  A chmod to the mode a file already has is not an edit."""
    fs = open_fs(tmp_path / "o", lower_tree(3))
    d = ino(fs, "d")
    data = tmp_path / "o" / "data"
    node = fs.create(d, "new", stat.S_IFREG | 0o600, opening=True)
    assert node.fd is not None and node.opens == 1
    assert os.fstat(node.fd).st_mtime_ns == node.mtime_ns  # what a remount reads back
    fs.release(node)
    deadline = time.monotonic() + 60
    while len(os.listdir(data)) < 1 + SPARES and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(os.listdir(data)) == 1 + SPARES
    with pytest.raises(RuntimeError):  # collect is for the start, before any spare
        fs.upper.collect({node.data or ""})
    assert len(os.listdir(data)) == 1 + SPARES
    journal = fs.upper.journal_bytes
    fs.setattr(node.ino, mode=0o600)
    fs.setattr(ino(fs, "d/a.txt"), mode=0o644, uid=fs.uid)
    assert fs.upper.journal_bytes == journal
    assert not fs.resolve("d/a.txt").dirty
    fs.setattr(node.ino, mode=0o640)
    assert fs.upper.journal_bytes > journal
    fs.upper.close()
    assert os.listdir(data) == [node.data]
    again = open_fs(tmp_path / "o", lower_tree(3))
    assert again.resolve("d/new").mode == 0o640
    again.upper.close()


def test_delta_source_is_the_child_tree() -> None:
    below = lower_tree(3)
    delta = [Entry("big", "removed"), Entry("d/c.txt", FILE, 1, 0o100644, 2, "xxh:c"),
             Entry("l", FILE, 1, 0o100644, 2, "xxh:l")]
    source = DeltaSource(below, delta, (0, 0))
    assert source.entry("big") is None and source.entry("big/f1") is None
    assert [n for n, _e in source.children("")] == ["d", "l"]
    assert [n for n, _e in source.children("d")] == ["a.txt", "b.txt", "c.txt"]
    assert source.entry("l").kind == FILE


def test_forgotten_nodes_are_released(tmp_path: Path) -> None:
    """What the kernel forgets does not stay in memory: the children of an
    unchanged directory go once none is referenced; changed ones stay."""
    fs = open_fs(tmp_path / "o", lower_tree(big=1000))
    big = fs.lookup(ROOT_INO, "big").ino
    fs.remember(big)
    before = fs.node_count()
    for _name, attr in fs.readdir(big):  # readdirplus: one reference per entry
        fs.remember(attr.ino)
    assert fs.node_count() >= before + 1000
    names = fs.readdir(big)
    for _name, attr in names[:-1]:
        fs.forget(attr.ino, 1)
    assert fs.node_count() >= before + 1000  # one child is still referenced
    fs.forget(names[-1][1].ino, 1)
    assert fs.node_count() == before
    assert len(fs.readdir(big)) == 1000  # made again from the lower layer
    # a changed directory keeps its children; a removed node goes when forgotten
    d = fs.lookup(ROOT_INO, "d").ino
    a = fs.lookup(d, "a.txt").ino
    fs.remember(a)
    fs.unlink(d, "a.txt")
    fs.forget(a, 1)
    with pytest.raises(Exception):  # noqa: B017, PT011 - NoEntry
        fs.node(a)
    assert "b.txt" in dict(fs.readdir(d))


def test_partial_copy_up_keeps_untouched_blocks_below(tmp_path: Path) -> None:
    """A copied-up file is sparse: blocks no write touched stay the lower
    entry's, through a truncation and a remount."""
    from dsfs.overlay.nodes import BLOCK

    size = 2 * BLOCK + 10
    tree = lower_tree(big=0, huge=size)
    fs = open_fs(tmp_path / "o", tree)
    node = fs.resolve("huge")
    fs.open(node.ino)
    plan = fs.copy_up_plan(node, None)
    assert plan is not None and plan.length == size
    fs.copy_up_done(plan)
    assert node.missing == {0, 1, 2} and node.lower is not None
    assert os.stat(fs.upper.data_path(node.data or "")).st_blocks == 0  # nothing fetched
    # an append touches only the last block; a whole block written needs no fetch
    assert fs.missing_blocks(node, size, size + 5, covered=True) == [(2, 2 * BLOCK, size)]
    assert fs.missing_blocks(node, 0, BLOCK, covered=True) == [(0, 0, 0)]
    fs.block_filled(node, 2)
    fs.write(node, size, b"tail!")
    assert fs.read_plan(node, BLOCK - 2, 4) == [(True, BLOCK - 2, BLOCK),
                                                (True, BLOCK, BLOCK + 2)]
    assert fs.read_plan(node, size - 1, 10) == [(False, size - 1, size + 5)]
    fs.setattr(node.ino, size=BLOCK + 3)  # cuts block 1's lower bytes at BLOCK + 3
    assert node.missing == {0, 1} and node.lower_end == BLOCK + 3
    fs.setattr(node.ino, size=BLOCK + 100)  # what grows back is zeros, not lower bytes
    assert fs.read_plan(node, BLOCK, 100) == [(True, BLOCK, BLOCK + 3),
                                              (False, BLOCK + 3, BLOCK + 100)]
    fs.release(node)
    fs.upper.close()
    again = open_fs(tmp_path / "o", tree)
    copy = again.resolve("huge")
    assert (copy.missing, copy.lower_end, copy.size) == ({0, 1}, BLOCK + 3, BLOCK + 100)
    again.block_filled(copy, 0)
    again.block_filled(copy, 1)
    assert copy.missing is None and copy.lower is None
