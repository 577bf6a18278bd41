"""What a version looks like as a file system: lookup, readdir, getattr,
readlink, statfs and the byte ranges a read needs.  No FUSE types here.

Inode numbers are handed out on first sight of a path and never reused or
forgotten while the ``VersionFS`` lives, so they are stable for the life of a
mount (the kernel's ``forget`` needs no bookkeeping: an immutable tree loses
nothing by remembering).  The root is inode 1.

Attributes follow the manifest: sizes and mtimes as stored, permission bits
with every write bit cleared, the mounting user as owner.  A read is planned
here (which chunk slices cover a byte range) and carried out by whoever owns
the store I/O (``dsfs.mount.reader``), so this module never blocks on a store.

Errors are the classes below; the FUSE adapter maps each to one errno.
"""

from __future__ import annotations

import bisect
import os
import posixpath
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from dsfs.format.manifest import DIR, FILE, SYMLINK, ChunkRef, Entry
from dsfs.vfs.source import TreeSource

ROOT_INO = 1
_WRITE_BITS = 0o222
#: The block size reported to readers (a hint for cp and friends).
BLOCK_SIZE = 128 * 1024


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


@dataclass(frozen=True, slots=True)
class Attr:
    """The stat of one node."""

    ino: int
    mode: int
    size: int
    mtime_ns: int
    nlink: int
    uid: int
    gid: int

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
    """A file's chunk layout, computed once per open, for planning reads."""

    __slots__ = ("entry", "ino", "_starts")

    def __init__(self, ino: int, entry: Entry) -> None:
        self.ino = ino
        self.entry = entry
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


class VersionFS:
    """One version's tree as inodes and attributes."""

    def __init__(self, source: TreeSource, uid: int | None = None,
                 gid: int | None = None) -> None:
        self.source = source
        self.uid = os.getuid() if uid is None else uid
        self.gid = os.getgid() if gid is None else gid
        self._paths: list[str] = ["", ""]  # index = inode; 0 unused, 1 = root
        self._inodes: dict[str, int] = {"": ROOT_INO}

    # -- inodes --------------------------------------------------------------

    def _ino(self, path: str) -> int:
        ino = self._inodes.get(path)
        if ino is None:
            ino = len(self._paths)
            self._paths.append(path)
            self._inodes[path] = ino
        return ino

    def path_of(self, ino: int) -> str:
        if ino < ROOT_INO or ino >= len(self._paths):
            raise NoEntry(f"inode {ino} is unknown")
        return self._paths[ino]

    def _entry(self, ino: int) -> Entry:
        entry = self.source.entry(self.path_of(ino))
        if entry is None:
            raise NoEntry(f"inode {ino} has no entry")
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
        parent = self.path_of(parent_ino)
        entry = self._entry(parent_ino)
        if entry.kind != DIR:
            raise NotADirectory(parent)
        if name == ".":
            return self._attr(parent_ino, entry)
        if name == "..":
            up = posixpath.dirname(parent)
            return self.getattr(self._inodes[up] if up in self._inodes else self._ino(up))
        if not name or "/" in name or "\x00" in name:
            raise NoEntry(name)
        path = f"{parent}/{name}" if parent else name
        child = self.source.entry(path)
        if child is None:
            raise NoEntry(path)
        return self._attr(self._ino(path), child)

    def opendir(self, ino: int) -> None:
        if self._entry(ino).kind != DIR:
            raise NotADirectory(self.path_of(ino))

    def readdir(self, ino: int, start: int) -> Iterator[tuple[str, Attr, int]]:
        """Children from position ``start`` on, one at a time: (name, attr, position
        of the next).  Checks happen before the first child is asked for."""
        path = self.path_of(ino)
        if self._entry(ino).kind != DIR:
            raise NotADirectory(path)
        return self._children(path, self.source.children(path), start)

    def _children(self, path: str, listing: list[tuple[str, Entry]], start: int
                  ) -> Iterator[tuple[str, Attr, int]]:
        prefix = f"{path}/" if path else ""
        for pos in range(start, len(listing)):
            name, entry = listing[pos]
            yield name, self._attr(self._ino(prefix + name), entry), pos + 1

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
        return OpenFile(ino, entry)

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
        return len(self._paths) - 1
