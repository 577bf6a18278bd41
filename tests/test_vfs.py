"""The vfs without FUSE: a version's tree as inodes, attributes and read plans."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from dsfs.format.manifest import DIR, FILE, SYMLINK, ChunkRef, Entry
from dsfs.vfs import (
    ROOT_INO,
    InvalidArgument,
    IsADirectory,
    MemoryTreeSource,
    NoEntry,
    NotADirectory,
    ReadOnly,
    VersionFS,
)

CID = "xxh3_128:" + "ab" * 16


def chunk(n: int, length: int) -> ChunkRef:
    return ChunkRef("xxh3_128:" + f"{n:032x}", "00" * 16, 16 + 100 * n, length)


def make_fs(**extra: Entry) -> VersionFS:
    entries = [
        Entry("a", DIR, 0, 0o40775, 5),
        Entry("a/f.txt", FILE, 5, 0o100664, 7, CID, (chunk(1, 5),)),
        Entry("a/big", FILE, 25, 0o100755, 8, CID, (chunk(1, 10), chunk(2, 10), chunk(3, 5))),
        Entry("link", SYMLINK, 7, 0o120777, 9, target="a/f.txt"),
        Entry("deep/er/file", FILE, 0, 0o100644, 1, CID, ()),
    ]
    tree = {e.path: e for e in entries} | {e.path: e for e in extra.values()}
    from dsfs.engine.tree import check_structure

    check_structure(tree)
    return VersionFS(MemoryTreeSource(tree), uid=1000, gid=1000)


def test_lookup_and_attributes() -> None:
    fs = make_fs()
    a = fs.lookup(ROOT_INO, "a")
    assert stat.S_ISDIR(a.mode) and a.mode & 0o777 == 0o555
    f = fs.lookup(a.ino, "f.txt")
    assert stat.S_ISREG(f.mode) and f.mode & 0o777 == 0o444
    assert (f.size, f.mtime_ns, f.uid, f.gid, f.blocks) == (5, 7, 1000, 1000, 1)
    assert fs.lookup(a.ino, "big").mode & 0o777 == 0o555
    link = fs.lookup(ROOT_INO, "link")
    assert stat.S_ISLNK(link.mode) and link.size == 7
    assert fs.readlink(link.ino) == "a/f.txt"
    assert stat.S_ISDIR(fs.getattr(ROOT_INO).mode)
    # implied directories exist
    assert stat.S_ISDIR(fs.lookup(fs.lookup(ROOT_INO, "deep").ino, "er").mode)


def test_dot_and_dotdot() -> None:
    fs = make_fs()
    a = fs.lookup(ROOT_INO, "a")
    assert fs.lookup(a.ino, ".").ino == a.ino
    assert fs.lookup(a.ino, "..").ino == ROOT_INO


def test_inodes_are_stable_and_unique() -> None:
    fs = make_fs()
    a = fs.lookup(ROOT_INO, "a").ino
    first = {name: attr.ino for name, attr, _ in fs.readdir(a, 0)}
    again = {name: fs.lookup(a, name).ino for name in first}
    assert first == again
    assert len(set(first.values()) | {a, ROOT_INO}) == len(first) + 2


def test_inodes_of_a_whole_tree_are_unique_and_lead_back_to_their_paths() -> None:
    odd = "caf\udce9"  # a name that is not valid UTF-8 (surrogate-escaped)
    many = {f"n{i}": Entry(f"w/d{i % 7}/f{i:03d}", FILE, i, 0o100644, 0, CID, ())
            for i in range(200)}
    fs = make_fs(**many, odd=Entry(f"w/{odd}", FILE, 3, 0o100644, 0, CID, ()))
    seen: dict[int, str] = {}
    todo = [(ROOT_INO, "")]
    while todo:
        ino, path = todo.pop()
        for name, attr, _ in fs.readdir(ino, 0):
            child = f"{path}/{name}" if path else name
            assert attr.ino not in seen and attr.ino != ROOT_INO
            seen[attr.ino] = child
            assert fs.path_of(attr.ino) == child
            assert fs.lookup(ino, name).ino == attr.ino
            assert fs.getattr(attr.ino) == attr
            if stat.S_ISDIR(attr.mode):
                assert fs.lookup(attr.ino, "..").ino == ino
                todo.append((attr.ino, child))
    assert f"w/{odd}" in seen.values() and len(seen) == fs.inode_count - 1  # and the root
    with pytest.raises(NoEntry):
        fs.getattr(fs.inode_count + 5)


def test_readdir_sorted_and_resumable() -> None:
    many = {f"n{i}": Entry(f"dir/n{i:03d}", FILE, 0, 0o100644, 0, CID, ())
            for i in range(250)}
    fs = make_fs(**many)
    d = fs.lookup(ROOT_INO, "dir").ino
    names, pos = [], 0
    while True:
        batch = list(zip(range(17), fs.readdir(d, pos), strict=False))
        if not batch:
            break
        names += [name for _, (name, _attr, _next) in batch]
        pos = batch[-1][1][2]
    assert names == sorted(f"n{i:03d}" for i in range(250))
    assert [n for n, _a, _p in fs.readdir(ROOT_INO, 0)] == ["a", "deep", "dir", "link"]


def test_errors() -> None:
    fs = make_fs()
    a = fs.lookup(ROOT_INO, "a").ino
    f = fs.lookup(a, "f.txt").ino
    with pytest.raises(NoEntry):
        fs.lookup(ROOT_INO, "missing")
    with pytest.raises(NoEntry):
        fs.getattr(99999)
    with pytest.raises(NotADirectory):
        fs.lookup(f, "x")
    with pytest.raises(NotADirectory):
        fs.readdir(f, 0)
    with pytest.raises(NotADirectory):
        fs.opendir(f)
    with pytest.raises(IsADirectory):
        fs.open(a)
    with pytest.raises(InvalidArgument):
        fs.readlink(f)
    with pytest.raises(ReadOnly):
        fs.open(f, writing=True)
    with pytest.raises(ReadOnly):
        fs.access(f, writing=True)
    fs.access(f, writing=False)


def test_read_plan_crosses_chunks_and_clips_at_eof() -> None:
    fs = make_fs()
    big = fs.open(fs.lookup(fs.lookup(ROOT_INO, "a").ino, "big").ino)
    plan = [(s.ref.chunk_id[-1], s.start, s.end) for s in big.slices(8, 10)]
    assert plan == [("1", 8, 10), ("2", 0, 8)]
    assert [(s.start, s.end) for s in big.slices(18, 100)] == [(8, 10), (0, 5)]
    assert big.slices(25, 10) == [] and big.slices(100, 1) == []
    assert [r.chunk_id[-1] for r in big.chunks_after(10, 5)] == ["2", "3"]


def test_neighbours_are_the_following_files_in_name_order() -> None:
    fs = make_fs(sub=Entry("a/c-dir", DIR, 0, 0o40755, 1),
                 last=Entry("a/z.bin", FILE, 3, 0o100644, 1, CID, (chunk(9, 3),)))
    a = fs.lookup(ROOT_INO, "a")
    big = fs.open(fs.lookup(a.ino, "big").ino)
    assert big.neighbours is not None
    # a/big, then a/c-dir (a directory: no chunks), a/f.txt, a/z.bin
    assert [r.chunk_id for r in big.neighbours()] == [chunk(1, 5).chunk_id,
                                                      chunk(9, 3).chunk_id]
    last = fs.open(fs.lookup(a.ino, "z.bin").ino)
    assert last.neighbours is not None and list(last.neighbours()) == []
    assert [r.chunk_id for r in fs.following_chunks(big.ino, files=2)] == [
        chunk(1, 5).chunk_id]


def test_statfs_counts() -> None:
    stats = make_fs().statfs()
    assert stats.files == 4  # files and symlinks: a/f.txt, a/big, link, deep/er/file
    assert stats.blocks == 1


def test_layered_version_from_a_real_store(run_dsfs, store_url: str, tmp_path: Path) -> None:
    """A child version seen through the vfs: its delta over the parent's tree."""
    from dsfs.catalog import Catalog, Ref
    from dsfs.repository import Repository

    src = tmp_path / "src"
    (src / "keep").mkdir(parents=True)
    (src / "keep" / "a.txt").write_text("a")
    (src / "gone").mkdir()
    (src / "gone" / "b.txt").write_text("b")
    run_dsfs("sync", str(src), "-p", "p", "-n", "n", check=True)
    (src / "gone" / "b.txt").unlink()
    (src / "gone").rmdir()
    (src / "keep" / "a.txt").write_text("changed")
    (src / "new.txt").write_text("new")
    run_dsfs("sync", str(src), "-p", "p", "-n", "n", check=True)
    rows = json.loads(run_dsfs("search", "--json", check=True).stdout)
    assert len(rows) == 2
    repo = Repository.open(store_url)
    header = Catalog(repo).resolve(Ref(project="p", name="n", version="1.0.1"))
    fs = VersionFS(MemoryTreeSource.for_version(repo, header))
    assert [n for n, _a, _p in fs.readdir(ROOT_INO, 0)] == ["keep", "new.txt"]
    keep = fs.lookup(ROOT_INO, "keep").ino
    assert fs.lookup(keep, "a.txt").size == len("changed")
