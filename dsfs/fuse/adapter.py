"""What the two pyfuse3 adapters share: the errno boundary and the plumbing.

The adapters are siblings over ``BaseOperations``: ``ReadOnlyOperations``
(``dsfs.fuse.readonly``, one version through ``VersionFS``) and
``WritableOperations`` (``dsfs.fuse.writable``, a version and its overlay
through ``OverlayFS``).  They and the mount lifecycle (``dsfs.mount``) are the
users of pyfuse3, and this module is its only importer: the others take the
names they need from here (``FUSEError``, ``EntryAttributes``, ...; the mount
starts and ends the session with ``start_session``/``serve_requests``/
``end_session``).  Each handler converts its arguments (names arrive as
bytes: ``os.fsdecode``, or its codec, in the adapters and nowhere else),
calls down one layer (file contents come from the ``FileReader`` of
``dsfs.content`` that owns store I/O), and converts the answer.

pyfuse3 comes in two builds: the release, and the one ``packaging/pyfuse3``
makes with dsfs's patch (``EXTENSIONS`` names what it adds; docs/design.md,
"The FUSE loop").  With the patch a read-only mount answers ``open`` and
``opendir`` with ENOSYS, so the kernel stops sending OPEN, RELEASE, OPENDIR and
RELEASEDIR and keeps file contents and listings cached; with the release it
opens files and directories as usual.

Errors: ``ERRNO`` is the one table from exception to errno (a writable mount
adds the overlay's).  Any exception outside it — a store or integrity failure
after retries, or a bug — becomes EIO and a log line; pyfuse3 would end the
mount on anything but ``FUSEError``, so every handler is wrapped by ``guard``
and nothing else escapes.
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
    FsStats,
    InvalidArgument,
    IsADirectory,
    NoEntry,
    NotADirectory,
    ReadOnly,
)

log = logging.getLogger("dsfs.fuse")

# -- pyfuse3's names for the adapters and the mount (pyfuse3 is imported here only) ---
FUSEError = pyfuse3.FUSEError
EntryAttributes = pyfuse3.EntryAttributes
FileInfo = pyfuse3.FileInfo
ReaddirToken = pyfuse3.ReaddirToken
StatvfsData = pyfuse3.StatvfsData
ENOATTR = pyfuse3.ENOATTR
readdir_reply = pyfuse3.readdir_reply
invalidate_entry = pyfuse3.invalidate_entry
#: pyfuse3's default mount options
DEFAULT_OPTIONS: frozenset[str] = frozenset(pyfuse3.default_options)


def start_session(ops: pyfuse3.Operations, mountpoint: str, options: set[str]) -> None:
    """Mount ``ops`` at ``mountpoint`` (RuntimeError if the kernel refuses)."""
    pyfuse3.init(ops, mountpoint, options)


async def serve_requests(**loop: int) -> None:
    """Answer the kernel's requests until the session ends (an unmount or
    ``stop_serving``); ``loop`` goes to ``pyfuse3.main``."""
    await pyfuse3.main(**loop)


def stop_serving() -> None:
    """End ``serve_requests`` (from the trio thread)."""
    pyfuse3.terminate()


def end_session(unmount: bool) -> None:
    """Close the session, unmounting when ``unmount``."""
    pyfuse3.close(unmount=unmount)


#: What the installed pyfuse3 adds to the release (dsfs's patch); empty for stock pyfuse3.
EXTENSIONS: frozenset[str] = frozenset(getattr(pyfuse3, "extensions", ()))
#: The patched build: a read-first request loop, no-open, listing caches.
PATCHED = {"read_first_loop", "no_open_inode", "opendir_fileinfo"} <= EXTENSIONS


def pyfuse3_build() -> str:
    """The pyfuse3 in use, for the mount's log."""
    if PATCHED:
        return f"pyfuse3 {pyfuse3.__version__} with dsfs's patch (read-first loop, no-open)"
    return (f"pyfuse3 {pyfuse3.__version__} without dsfs's patch: every FUSE request costs "
            f"more (packaging/pyfuse3 builds the patched one)")

#: Seconds the kernel may cache entries and attributes: every change to a tree
#: passes through its mount (a read-only one has none), so the kernel's view stays right.
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


def _negative() -> pyfuse3.EntryAttributes:
    out = pyfuse3.EntryAttributes()
    out.st_ino = 0
    out.entry_timeout = TIMEOUT
    return out


_NEGATIVE = _negative()


def negative_entry() -> pyfuse3.EntryAttributes:
    """A lookup answer meaning "no such name", which the kernel may cache: one
    object for all (pyfuse3 only reads a reply; rsync makes three such lookups
    a file)."""
    return _NEGATIVE


def statvfs(stats: FsStats, free: int = 0, avail: int = 0, ffree: int = 0
            ) -> pyfuse3.StatvfsData:
    """A ``statfs`` answer: the tree's ``stats`` and the free blocks and inodes
    (none on a read-only version)."""
    out = pyfuse3.StatvfsData()
    out.f_bsize = stats.block_size
    out.f_frsize = stats.block_size
    out.f_blocks = stats.blocks
    out.f_bfree = free
    out.f_bavail = avail
    out.f_files = stats.files + ffree
    out.f_ffree = ffree
    out.f_favail = ffree
    out.f_namemax = stats.name_max
    return out


class BaseOperations(pyfuse3.Operations):
    """The plumbing both adapters share: the reader of file contents, file
    handle numbers, and the requests they answer alike."""

    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self, reader: FileReader) -> None:
        super().__init__()
        self.reader = reader
        self._next_fh = 1

    def _fh(self) -> int:
        """A new file or directory handle number."""
        fh = self._next_fh
        self._next_fh += 1
        return fh

    async def flush(self, fh: int) -> None:
        # Nothing to do on close; ENOSYS once makes the kernel stop sending
        # FLUSH (one request less per file closed) and report success itself.
        raise pyfuse3.FUSEError(errno.ENOSYS)
