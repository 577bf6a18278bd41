"""What a version looks like as a file system: lookup, readdir, getattr,
readlink, statfs and the byte ranges a read needs.  No FUSE types here.

Inode numbers follow from the tree, so they need no table of paths: the
first time a directory's children are needed (a lookup in it or a listing of
it), the directory gets a block of consecutive numbers, one per child in name
order, and keeps its children's names packed in one bytes object (about 12
bytes a name, against some 150 for a dict of path strings: a walk of a
million files costs about 12 MiB).  Numbers are never reused or forgotten
while the ``VersionFS`` lives, so they are stable for the life of a mount
(the kernel's ``forget`` needs no bookkeeping: an immutable tree loses
nothing by remembering).  The root is inode 1.

Attributes follow the manifest: sizes and mtimes as stored, permission bits
with every write bit cleared, the mounting user as owner.  A read is planned
here (which chunk slices cover a byte range) and carried out by whoever owns
the store I/O (``dsfs.content.reader``), so this module never blocks on a store.

Errors are the classes below; the FUSE adapter maps each to one errno.
"""

from __future__ import annotations

import bisect
import os
import stat
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from dsfs.format.manifest import DIR, FILE, SYMLINK, ChunkRef, Entry
from dsfs.vfs.source import TreeSource

ROOT_INO = 1
_WRITE_BITS = 0o222
#: Entries of recent lookups and listings kept decoded (the open or getattr
#: that follows then needs no trip to the tree source).  Enough for ``find |
#: xargs cat`` to open what a listing just showed: the kernel learns a file
#: from readdirplus and never looks it up.  About 0.5 KiB each.
RECENT_ENTRIES = 16384
#: The block size reported to readers (a hint for cp and friends).
BLOCK_SIZE = 128 * 1024
#: Files after an open one whose chunks ``following_chunks`` offers at most.
NEIGHBOUR_FILES = 256


class VfsError(Exception):
    """Base of the errors a file system operation can report."""


class NoEntry(VfsError):
    """No such file or directory (or an inode the vfs never handed out)."""


class NotADirectory(VfsError):
    """A directory operation on something that is not a directory."""


class IsADirectory(VfsError):
    """A file operation on a directory."""


class InvalidArgument(VfsError):
    """readlink of a non-symlink, or a read of a non-file."""


class ReadOnly(VfsError):
    """Any change to a read-only version."""


@dataclass(slots=True)
class Attr:
    """The stat of one node: a value, never changed once made (not a frozen
    dataclass: that costs four times as much to make, and a mount makes one
    for nearly every request)."""

    ino: int
    mode: int
    size: int
    mtime_ns: int
    nlink: int
    uid: int
    gid: int
    #: None: the same as ``mtime_ns`` (a version stores one time)
    atime_ns: int | None = None
    ctime_ns: int | None = None
    #: device number of a device node (writable mounts)
    rdev: int = 0

    @property
    def blocks(self) -> int:
        return (self.size + 511) // 512


@dataclass(frozen=True, slots=True)
class FsStats:
    block_size: int
    blocks: int
    files: int
    name_max: int


@dataclass(frozen=True, slots=True)
class Slice:
    """Bytes ``start:end`` of chunk ``ref`` are part of a read."""

    ref: ChunkRef
    start: int
    end: int


class OpenFile:
    """A file's chunk layout, computed once per open, for planning reads.

    ``neighbours``, when the vfs can tell, yields the chunks of the files that
    follow this one in its directory (name order): ``close`` packs a directory
    in that order, so they are the pack's next bytes, and a reader scanning the
    directory reads them next (see ``dsfs.content.reader``).
    """

    __slots__ = ("entry", "ino", "_starts", "neighbours")

    def __init__(self, ino: int, entry: Entry,
                 neighbours: Callable[[], Iterator[ChunkRef]] | None = None) -> None:
        self.ino = ino
        self.entry = entry
        self.neighbours = neighbours
        starts, pos = [], 0
        for ref in entry.chunks:
            starts.append(pos)
            pos += ref.length
        self._starts = starts

    @property
    def size(self) -> int:
        return self.entry.size

    def slices(self, offset: int, size: int) -> list[Slice]:
        """The chunk slices covering ``[offset, offset + size)``, clipped to EOF."""
        end = min(offset + size, self.entry.size)
        if offset < 0 or offset >= end:
            return []
        out = []
        i = bisect.bisect_right(self._starts, offset) - 1
        while i < len(self._starts) and self._starts[i] < end:
            base = self._starts[i]
            ref = self.entry.chunks[i]
            out.append(Slice(ref, max(offset - base, 0), min(end - base, ref.length)))
            i += 1
        return out

    def chunks_after(self, offset: int, count: int) -> list[ChunkRef]:
        """Up to ``count`` chunks that start at or after ``offset`` (for readahead)."""
        i = bisect.bisect_left(self._starts, offset)
        return list(self.entry.chunks[i : i + count])


class _Children:
    """The children of one directory, numbered: the child at position ``i`` of
    the name-sorted listing has inode ``base + i``."""

    __slots__ = ("ino", "path", "base", "count", "_names", "_ends")

    def __init__(self, ino: int, path: str, base: int, names: list[str]) -> None:
        self.ino = ino
        self.path = path
        self.base = base
        self.count = len(names)
        raw = [name.encode("utf-8", "surrogatepass") for name in names]
        self._names = b"".join(raw)
        ends, pos = array("I"), 0
        for item in raw:
            pos += len(item)
            ends.append(pos)
        self._ends = ends

    def name(self, pos: int) -> str:
        start = self._ends[pos - 1] if pos else 0
        return self._names[start:self._ends[pos]].decode("utf-8", "surrogatepass")

    def find(self, name: str) -> int | None:
        """The position of ``name`` (a binary search in name order), or None."""
        lo, hi = 0, self.count
        while lo < hi:
            mid = (lo + hi) // 2
            if self.name(mid) < name:
                lo = mid + 1
            else:
                hi = mid
        return lo if lo < self.count and self.name(lo) == name else None

    def child_path(self, name: str) -> str:
        return f"{self.path}/{name}" if self.path else name


class VersionFS:
    """One version's tree as inodes and attributes."""

    def __init__(self, source: TreeSource, uid: int | None = None,
                 gid: int | None = None) -> None:
        self.source = source
        self.uid = os.getuid() if uid is None else uid
        self.gid = os.getgid() if gid is None else gid
        #: Numbered directories by their own inode; and by the first inode of
        #: their block (ascending, non-empty blocks only), to find an inode's.
        self._numbered: dict[int, _Children] = {}
        self._bases: list[int] = []
        self._blocks: list[_Children] = []
        self._next_ino = ROOT_INO + 1
        self._recent: dict[int, Entry] = {}
        self._older: dict[int, Entry] = {}

    # -- inodes --------------------------------------------------------------

    def _locate(self, ino: int) -> tuple[_Children, int]:
        """The directory that numbered ``ino`` and the child's position in it."""
        i = bisect.bisect_right(self._bases, ino) - 1
        if i >= 0:
            block = self._blocks[i]
            pos = ino - block.base
            if pos < block.count:
                return block, pos
        raise NoEntry(f"inode {ino} is unknown")

    def path_of(self, ino: int) -> str:
        if ino == ROOT_INO:
            return ""
        block, pos = self._locate(ino)
        return block.child_path(block.name(pos))

    def _children_of(self, ino: int, path: str) -> _Children:
        """Number the children of directory ``ino`` (at ``path``) on first need."""
        block = self._numbered.get(ino)
        if block is None:
            names = [name for name, _entry in self.source.children(path)]
            block = _Children(ino, path, self._next_ino, names)
            self._next_ino += block.count
            self._numbered[ino] = block
            if block.count:
                self._bases.append(block.base)
                self._blocks.append(block)
        return block

    def _entry(self, ino: int) -> Entry:
        entry = self._recent.get(ino) or self._older.get(ino)
        if entry is not None:
            return entry
        entry = self.source.entry(self.path_of(ino))
        if entry is None:
            raise NoEntry(f"inode {ino} has no entry")
        return self._remember(ino, entry)

    def _remember(self, ino: int, entry: Entry) -> Entry:
        """Keep the entries handed out last: an open or getattr follows its lookup.
        Two generations of ``RECENT_ENTRIES // 2``: when the young one is full
        it becomes the old one (evicting one entry at a time from the front of
        a dict costs a scan over the holes earlier deletions left)."""
        if len(self._recent) >= RECENT_ENTRIES // 2:
            self._older, self._recent = self._recent, {}
        self._recent[ino] = entry
        return entry

    def _attr(self, ino: int, entry: Entry) -> Attr:
        if entry.kind == DIR:
            mode = stat.S_IFDIR | (entry.mode & 0o7777 & ~_WRITE_BITS)
            return Attr(ino, mode, 0, entry.mtime_ns, 1, self.uid, self.gid)
        if entry.kind == SYMLINK:
            return Attr(ino, stat.S_IFLNK | 0o777, entry.size, entry.mtime_ns, 1,
                        self.uid, self.gid)
        mode = stat.S_IFREG | (entry.mode & 0o7777 & ~_WRITE_BITS)
        return Attr(ino, mode, entry.size, entry.mtime_ns, 1, self.uid, self.gid)

    # -- operations ------------------------------------------------------------

    def getattr(self, ino: int) -> Attr:
        return self._attr(ino, self._entry(ino))

    def lookup(self, parent_ino: int, name: str) -> Attr:
        block = self._numbered.get(parent_ino)
        if block is None:
            entry = self._entry(parent_ino)
            if entry.kind != DIR:
                raise NotADirectory(self.path_of(parent_ino))
            block = self._children_of(parent_ino, self.path_of(parent_ino))
        if name == ".":
            return self.getattr(parent_ino)
        if name == "..":
            if parent_ino == ROOT_INO:
                return self.getattr(ROOT_INO)
            return self.getattr(self._locate(parent_ino)[0].ino)
        if not name or "/" in name or "\x00" in name:
            raise NoEntry(name)
        pos = block.find(name)
        if pos is None:
            raise NoEntry(block.child_path(name))
        path = block.child_path(name)
        child = self.source.entry(path)
        if child is None:
            raise NoEntry(path)
        return self._attr(block.base + pos, self._remember(block.base + pos, child))

    def opendir(self, ino: int) -> None:
        if self._entry(ino).kind != DIR:
            raise NotADirectory(self.path_of(ino))

    def readdir(self, ino: int, start: int) -> Iterator[tuple[str, Attr, int]]:
        """Children from position ``start`` on, one at a time: (name, attr, position
        of the next).  Checks happen before the first child is asked for."""
        path = self.path_of(ino)
        if ino not in self._numbered and self._entry(ino).kind != DIR:
            raise NotADirectory(path)
        block = self._children_of(ino, path)
        return self._children(block.base, self.source.children(path), start)

    def _children(self, base: int, listing: list[tuple[str, Entry]], start: int
                  ) -> Iterator[tuple[str, Attr, int]]:
        for pos in range(start, len(listing)):
            name, entry = listing[pos]
            yield name, self._attr(base + pos, self._remember(base + pos, entry)), pos + 1

    def readlink(self, ino: int) -> str:
        entry = self._entry(ino)
        if entry.kind != SYMLINK:
            raise InvalidArgument(f"{entry.path} is not a symlink")
        return entry.target or ""

    def open(self, ino: int, writing: bool = False) -> OpenFile:
        entry = self._entry(ino)
        if entry.kind == DIR:
            raise IsADirectory(entry.path)
        if writing:
            raise ReadOnly(entry.path)
        if entry.kind != FILE:
            raise InvalidArgument(f"{entry.path} is not a regular file")
        return OpenFile(ino, entry, lambda: self.following_chunks(ino))

    def following_chunks(self, ino: int, files: int = NEIGHBOUR_FILES) -> Iterator[ChunkRef]:
        """The chunks of up to ``files`` files after ``ino`` in its directory, in
        name order (entries are looked up one at a time, as the caller goes)."""
        try:
            block, pos = self._locate(ino)
        except NoEntry:
            return
        for following in range(pos + 1, min(block.count, pos + 1 + files)):
            entry = self.source.entry(block.child_path(block.name(following)))
            if entry is not None and entry.kind == FILE:
                yield from entry.chunks

    def access(self, ino: int, writing: bool) -> None:
        self._entry(ino)
        if writing:
            raise ReadOnly(self.path_of(ino))

    def statfs(self) -> FsStats:
        files, size = self.source.totals()
        return FsStats(block_size=4096, blocks=(size + 4095) // 4096, files=files,
                       name_max=255)

    @property
    def inode_count(self) -> int:
        """How many inodes have been handed out so far."""
        return self._next_ino - 1
