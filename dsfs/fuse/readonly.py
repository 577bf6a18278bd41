"""The read-only adapter: kernel requests in, one ``VersionFS`` call,
attributes or errno out (the shared base: ``dsfs.fuse.adapter``).

Every operation that would change the tree answers EROFS.  The tree never
changes while mounted, so entries and attributes carry long kernel timeouts,
missing names are cached negatively, and files open with ``keep_cache`` so
that a second read is served by the page cache.

With ``no_open`` (the mount sets it with the patched pyfuse3, ``PATCHED``)
``open`` and ``opendir`` answer ENOSYS:
the kernel then sends neither OPEN/RELEASE nor OPENDIR/RELEASEDIR again, keeps
file contents and listings in its caches (a second walk of the tree never
reaches this process), and ``read`` and ``readdir`` receive the inode in place
of a handle.  The reader's per-file state (sequential detection, the chunks
a prune spares) then lives per inode: opened at a file's first read,
released when a read reaches the end of the file (so a prune may evict what
was read through) or when it is the least recently read of
``INODE_HANDLES``.
"""

from __future__ import annotations

import errno
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from dsfs.content import FileReader
from dsfs.fuse.adapter import (
    ENOATTR,
    ERRNO,
    BaseOperations,
    EntryAttributes,
    FileInfo,
    FUSEError,
    ReaddirToken,
    StatvfsData,
    entry_attributes,
    guard,
    negative_entry,
    readdir_reply,
    statvfs,
)
from dsfs.vfs import NoEntry, VersionFS

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT

guarded = guard(ERRNO)

#: Files whose reader handle a no-open mount keeps (the least recently read goes).
INODE_HANDLES = 256


def _read_only() -> FUSEError:
    return FUSEError(errno.EROFS)


class ReadOnlyOperations(BaseOperations):
    """The read-only file system of one version."""

    def __init__(self, vfs: VersionFS, reader: FileReader, no_open: bool = False) -> None:
        super().__init__(reader)
        self.vfs = vfs
        #: no OPEN/OPENDIR: reads and listings come with the inode (pyfuse3
        #: reads this attribute at ``init``; only the patched build has it)
        self.no_open_inode = no_open
        self._by_inode: OrderedDict[int, tuple[int, int]] = OrderedDict()
        self._handshake: Callable[[], None] | None = (
            getattr(reader, "handshake_done", None) if no_open else None)

    def _inode_handle(self, inode: int) -> tuple[int, int]:
        """The reader handle and size of ``inode`` on a no-open mount, opened at
        its first read; the least recently read of ``INODE_HANDLES`` is released."""
        known = self._by_inode.get(inode)
        if known is not None:
            self._by_inode.move_to_end(inode)
            return known
        file = self.vfs.open(inode)
        known = self._by_inode[inode] = (self.reader.open(file), file.entry.size)
        if len(self._by_inode) > INODE_HANDLES:
            self.reader.release(self._by_inode.popitem(last=False)[1][0])
        return known

    # -- reading the tree --------------------------------------------------------

    @guarded
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None
                     ) -> EntryAttributes:
        done = self._handshake
        if done is not None:
            # no-open: the first lookup comes before the first file's open
            self._handshake = None
            done()
        try:
            return entry_attributes(self.vfs.lookup(parent_inode, os.fsdecode(name)))
        except NoEntry:
            return negative_entry()

    @guarded
    async def getattr(self, inode: int, ctx: Any = None) -> EntryAttributes:
        return entry_attributes(self.vfs.getattr(inode))

    @guarded
    async def readlink(self, inode: int, ctx: Any = None) -> bytes:
        return os.fsencode(self.vfs.readlink(inode))

    @guarded
    async def opendir(self, inode: int, ctx: Any = None) -> int:
        if self.no_open_inode:
            # ENOSYS once: the kernel stops sending OPENDIR and RELEASEDIR and
            # caches listings (readdir gets the inode)
            raise FUSEError(errno.ENOSYS)
        self.vfs.opendir(inode)
        return inode

    @guarded
    async def readdir(self, fh: int, start_id: int, token: ReaddirToken) -> None:
        for name, attr, next_id in self.vfs.readdir(fh, start_id):
            if not readdir_reply(token, os.fsencode(name), entry_attributes(attr),
                                         next_id):
                break

    @guarded
    async def releasedir(self, fh: int) -> None:
        return None

    @guarded
    async def statfs(self, ctx: Any = None) -> StatvfsData:
        return statvfs(self.vfs.statfs())

    @guarded
    async def access(self, inode: int, mode: int, ctx: Any = None) -> bool:
        self.vfs.access(inode, bool(mode & os.W_OK))
        return True

    @guarded
    async def getxattr(self, inode: int, name: bytes, ctx: Any = None) -> bytes:
        self.vfs.getattr(inode)
        raise FUSEError(ENOATTR)

    @guarded
    async def listxattr(self, inode: int, ctx: Any = None) -> list[bytes]:
        self.vfs.getattr(inode)
        return []

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        return None  # inodes live as long as the mount: nothing to release

    # -- reading files -------------------------------------------------------------

    @guarded
    async def open(self, inode: int, flags: int, ctx: Any = None) -> FileInfo:
        file = self.vfs.open(inode, writing=bool(flags & _WRITE_FLAGS))
        if self.no_open_inode:
            # ENOSYS once (here, after the checks, so this open still fails
            # as it should): no more OPEN and RELEASE; reads get the inode and
            # the kernel keeps the page cache as with keep_cache
            raise FUSEError(errno.ENOSYS)
        return FileInfo(fh=self.reader.open(file), keep_cache=True)

    @guarded
    async def read(self, fh: int, off: int, size: int) -> bytes:
        if not self.no_open_inode:
            return await self.reader.read(fh, off, size)
        inode = fh
        fh, length = self._inode_handle(inode)
        data = await self.reader.read(fh, off, size)
        if off + len(data) >= length and self._by_inode.get(inode, (0, 0))[0] == fh:
            # read to the end: what a close would have released
            del self._by_inode[inode]
            self.reader.release(fh)
        return data

    @guarded
    async def release(self, fh: int) -> None:
        if not self.no_open_inode:
            self.reader.release(fh)

    @guarded
    async def fsync(self, fh: int, datasync: bool) -> None:
        return None

    @guarded
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        return None

    # -- changes: a read-only version refuses them all --------------------------------

    async def setattr(self, inode: int, attr: Any, fields: Any, fh: int | None,
                      ctx: Any = None) -> EntryAttributes:
        raise _read_only()

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        raise _read_only()

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: Any = None) -> tuple[FileInfo, EntryAttributes]:
        raise _read_only()

    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: Any = None) -> EntryAttributes:
        raise _read_only()

    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any = None
                    ) -> EntryAttributes:
        raise _read_only()

    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any = None
                      ) -> EntryAttributes:
        raise _read_only()

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any = None
                   ) -> EntryAttributes:
        raise _read_only()

    async def unlink(self, parent_inode: int, name: bytes, ctx: Any = None) -> None:
        raise _read_only()

    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any = None) -> None:
        raise _read_only()

    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: Any = None) -> None:
        raise _read_only()

    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any = None) -> None:
        raise _read_only()

    async def removexattr(self, inode: int, name: bytes, ctx: Any = None) -> None:
        raise _read_only()
