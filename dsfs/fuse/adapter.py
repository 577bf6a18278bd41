"""The pyfuse3 adapter: kernel requests in, one vfs call, attributes or errno out.

The two adapters (this module and ``dsfs.fuse.writable``) and the mount
lifecycle (``dsfs.mount.lifecycle``) are the only importers of pyfuse3.  Each
handler converts its arguments (names arrive as bytes: ``os.fsdecode`` here
and nowhere else), calls one method of ``VersionFS`` (reads go to the
``FileReader`` of ``dsfs.content`` that owns store I/O), and converts the answer.

Errors: ``ERRNO`` is the one table from exception to errno.  Any exception
outside it — a store or integrity failure after retries, or a bug — becomes
EIO and a log line; pyfuse3 would end the mount on anything but
``FUSEError``, so nothing else escapes a handler.  Every operation that would
change the tree answers EROFS.

The tree never changes while mounted, so entries and attributes carry long
kernel timeouts, missing names are cached negatively, and files open with
``keep_cache`` so that a second read is served by the page cache.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import pyfuse3

from dsfs.content import FileReader
from dsfs.errors import DsfsError
from dsfs.vfs import (
    Attr,
    InvalidArgument,
    IsADirectory,
    NoEntry,
    NotADirectory,
    ReadOnly,
    VersionFS,
)

log = logging.getLogger("dsfs.fuse")

#: Seconds the kernel may cache entries and attributes: the tree is immutable.
TIMEOUT = 24 * 3600.0
BLOCK_SIZE = 128 * 1024

#: The one table from exception to errno; everything else is EIO.
ERRNO: dict[type[BaseException], int] = {
    NoEntry: errno.ENOENT,
    NotADirectory: errno.ENOTDIR,
    IsADirectory: errno.EISDIR,
    InvalidArgument: errno.EINVAL,
    ReadOnly: errno.EROFS,
}

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT


#: OSError numbers a writable mount passes through to the caller as they are: the
#: disk under the overlay is full or over quota, a file would grow past what it
#: allows, the process is out of file descriptors or memory, the overlay's disk
#: went read-only.  Every other OSError inside a handler is EIO and a log line.
PASS_THROUGH: frozenset[int] = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EMFILE, errno.ENFILE, errno.ENOMEM,
    errno.EROFS, errno.EOVERFLOW,
})


def errno_for(exc: BaseException, what: str,
              table: dict[type[BaseException], int] | None = None,
              passthrough: frozenset[int] = frozenset()) -> int:
    """The errno for ``exc`` (in ``table``, by default ``ERRNO``), logging what is
    not an ordinary answer: one line for a store failure or an ``OSError`` in
    ``passthrough`` (which keeps its errno), a traceback for anything else (a bug).
    ``what`` names the request, never the data it carried."""
    for cls in type(exc).__mro__:
        code = (ERRNO if table is None else table).get(cls)
        if code is not None:
            return code
    if isinstance(exc, OSError) and exc.errno in passthrough:
        log.warning("%s failed: %s", what, os.strerror(exc.errno or 0))
        return int(exc.errno or errno.EIO)
    if isinstance(exc, OSError) and exc.errno == errno.EIO:
        # a failing disk under the cache or the overlay, not a bug: one line
        log.error("%s failed: %s", what, exc)
        return errno.EIO
    if isinstance(exc, DsfsError):
        log.error("%s failed: %s: %s", what, type(exc).__name__, exc)
    else:
        log.error("%s failed with an unexpected error", what, exc_info=exc)
    return errno.EIO


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def guard(table: dict[type[BaseException], int], passthrough: frozenset[int] = frozenset()
          ) -> Callable[[F], F]:
    """A decorator that turns every exception of a handler into a ``FUSEError``,
    its errno from ``table`` or, for an ``OSError`` whose number is in
    ``passthrough``, that number (EIO and a log line for anything else)."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        async def wrapper(self: Any, *args: Any) -> Any:
            try:
                return await func(self, *args)
            except pyfuse3.FUSEError:
                raise
            except Exception as exc:  # noqa: BLE001 - the errno boundary
                what = f"{func.__name__}{describe(func.__name__, args)}"
                raise pyfuse3.FUSEError(errno_for(exc, what, table, passthrough)) from None

        return cast(F, wrapper)

    return decorate


guarded = guard(ERRNO)

#: Handlers whose argument at this position is file contents (never logged).
_DATA_ARGS = {"write": 2, "setxattr": 2}


def describe(name: str, args: Sequence[Any]) -> str:
    """A request's arguments for a log line: numbers and names, never the data a
    write carries (it would put file contents in the mount's log)."""
    secret = _DATA_ARGS.get(name)
    shown = []
    for i, a in enumerate(args[:3]):
        if i == secret and isinstance(a, (bytes, bytearray, memoryview)):
            shown.append(f"<{len(a)} bytes>")
        elif isinstance(a, (bytes, str)) and len(a) > 255:
            shown.append(repr(a[:40]) + "…")
        else:
            shown.append(repr(a) if isinstance(a, (int, bytes, str)) else "…")
    return "(" + ", ".join(shown) + ")"


def entry_attributes(attr: Attr) -> pyfuse3.EntryAttributes:
    out = pyfuse3.EntryAttributes()
    out.st_ino = attr.ino
    out.generation = 0
    out.entry_timeout = TIMEOUT
    out.attr_timeout = TIMEOUT
    out.st_mode = attr.mode
    out.st_nlink = attr.nlink
    out.st_uid = attr.uid
    out.st_gid = attr.gid
    out.st_rdev = attr.rdev
    out.st_size = attr.size
    out.st_blksize = BLOCK_SIZE
    out.st_blocks = attr.blocks
    out.st_atime_ns = attr.mtime_ns if attr.atime_ns is None else attr.atime_ns
    out.st_mtime_ns = attr.mtime_ns
    out.st_ctime_ns = attr.mtime_ns if attr.ctime_ns is None else attr.ctime_ns
    return out


def _negative_entry() -> pyfuse3.EntryAttributes:
    """A lookup answer meaning "no such name", which the kernel may cache."""
    out = pyfuse3.EntryAttributes()
    out.st_ino = 0
    out.entry_timeout = TIMEOUT
    return out


def _read_only() -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(errno.EROFS)


class Operations(pyfuse3.Operations):
    """The read-only file system of one version."""

    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self, vfs: VersionFS, reader: FileReader) -> None:
        super().__init__()
        self.vfs = vfs
        self.reader = reader

    # -- reading the tree --------------------------------------------------------

    @guarded
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None
                     ) -> pyfuse3.EntryAttributes:
        try:
            return entry_attributes(self.vfs.lookup(parent_inode, os.fsdecode(name)))
        except NoEntry:
            return _negative_entry()

    @guarded
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return entry_attributes(self.vfs.getattr(inode))

    @guarded
    async def readlink(self, inode: int, ctx: Any = None) -> bytes:
        return os.fsencode(self.vfs.readlink(inode))

    @guarded
    async def opendir(self, inode: int, ctx: Any = None) -> int:
        self.vfs.opendir(inode)
        return inode

    @guarded
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        for name, attr, next_id in self.vfs.readdir(fh, start_id):
            if not pyfuse3.readdir_reply(token, os.fsencode(name), entry_attributes(attr),
                                         next_id):
                break

    @guarded
    async def releasedir(self, fh: int) -> None:
        return None

    @guarded
    async def statfs(self, ctx: Any = None) -> pyfuse3.StatvfsData:
        stats = self.vfs.statfs()
        out = pyfuse3.StatvfsData()
        out.f_bsize = stats.block_size
        out.f_frsize = stats.block_size
        out.f_blocks = stats.blocks
        out.f_bfree = 0
        out.f_bavail = 0
        out.f_files = stats.files
        out.f_ffree = 0
        out.f_favail = 0
        out.f_namemax = stats.name_max
        return out

    @guarded
    async def access(self, inode: int, mode: int, ctx: Any = None) -> bool:
        self.vfs.access(inode, bool(mode & os.W_OK))
        return True

    @guarded
    async def getxattr(self, inode: int, name: bytes, ctx: Any = None) -> bytes:
        self.vfs.getattr(inode)
        raise pyfuse3.FUSEError(pyfuse3.ENOATTR)

    @guarded
    async def listxattr(self, inode: int, ctx: Any = None) -> list[bytes]:
        self.vfs.getattr(inode)
        return []

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        return None  # inodes live as long as the mount: nothing to release

    # -- reading files -------------------------------------------------------------

    @guarded
    async def open(self, inode: int, flags: int, ctx: Any = None) -> pyfuse3.FileInfo:
        file = self.vfs.open(inode, writing=bool(flags & _WRITE_FLAGS))
        return pyfuse3.FileInfo(fh=self.reader.open(file), keep_cache=True)

    @guarded
    async def read(self, fh: int, off: int, size: int) -> bytes:
        return await self.reader.read(fh, off, size)

    @guarded
    async def release(self, fh: int) -> None:
        self.reader.release(fh)

    async def flush(self, fh: int) -> None:
        # Nothing to do on close; ENOSYS once makes the kernel stop sending
        # FLUSH (one request less per file read) and report success itself.
        raise pyfuse3.FUSEError(errno.ENOSYS)

    @guarded
    async def fsync(self, fh: int, datasync: bool) -> None:
        return None

    @guarded
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        return None

    # -- changes: a read-only version refuses them all --------------------------------

    async def setattr(self, inode: int, attr: Any, fields: Any, fh: int | None,
                      ctx: Any = None) -> pyfuse3.EntryAttributes:
        raise _read_only()

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        raise _read_only()

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: Any = None) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        raise _read_only()

    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: Any = None) -> pyfuse3.EntryAttributes:
        raise _read_only()

    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any = None
                    ) -> pyfuse3.EntryAttributes:
        raise _read_only()

    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any = None
                      ) -> pyfuse3.EntryAttributes:
        raise _read_only()

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any = None
                   ) -> pyfuse3.EntryAttributes:
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
