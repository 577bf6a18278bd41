"""Small file-system helpers shared by the local store, the cache and the
local state (drafts, mount state, overlays).

``write_atomic`` is the one way dsfs replaces a file: the bytes go to a
temporary name in the target's directory, then a rename puts them in place,
so a reader sees the old file or the new one, never part of one.  Its
``durable`` argument says whether the data exists anywhere else:

* ``durable=True`` (drafts, overlay state: the only copy of a user's work):
  the file is fsynced before the rename and the directory after it, so the
  new contents survive a crash of the machine once the call returns;
* ``durable=False`` (caches of immutable store objects, derived data): no
  fsync; a crash may lose the file, which is fetched or derived again.

On failure the temporary file is removed and the ``OSError`` re-raised.

``taking_turns`` lets processes that would all do the same work at once (a
loader's workers starting together) take turns on a lock file, so the first
does it and the others find it done.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

#: Prefix of every temporary file dsfs writes (stores and caches skip and
#: clean up names that start with it).
TMP_PREFIX = ".tmp-"

_libc = ctypes.CDLL(None, use_errno=True)
_syncfs = getattr(_libc, "syncfs", None)


def syncfs(path: Path) -> None:
    """Flush the file system holding ``path``: one call instead of an fsync per
    file when many files were written together."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _syncfs is None or _syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


_statfs = getattr(_libc, "statfs", None)
#: ``f_type`` of file systems kept in memory (tmpfs, ramfs; linux/magic.h).
_IN_MEMORY = {0x01021994, 0x858458F6}


def in_memory(path: Path) -> bool:
    """Whether ``path`` (which exists) lies on a file system kept in memory,
    where how files are laid out costs nothing; False when unknown."""
    if _statfs is None or not sys.platform.startswith("linux"):
        return False
    buf = ctypes.create_string_buffer(256)  # struct statfs; f_type comes first
    if _statfs(os.fsencode(path), buf) != 0:
        return False
    return ctypes.c_long.from_buffer(buf).value in _IN_MEMORY


_sync_file_range = getattr(_libc, "sync_file_range", None)
_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing a file's dirty pages now, without waiting,
    so that a later ``syncfs`` finds most of the work done (the writes overlap
    with whatever the caller does next)."""
    if _sync_file_range is not None:
        _sync_file_range(fd, ctypes.c_int64(0), ctypes.c_int64(0), _SYNC_FILE_RANGE_WRITE)


def fsync_dir(path: Path) -> None:
    """Make a rename, link or unlink in ``path`` durable; some file systems
    refuse to fsync a directory, which is fine."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(directory: Path, durable: bool) -> None:
    if directory.is_dir():
        return
    missing = []
    probe = directory
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    directory.mkdir(parents=True, exist_ok=True)
    if durable:  # the new directories' entries must survive too
        for made in reversed(missing):
            fsync_dir(made.parent)


#: Bytes copied per read when a temporary file is filled from another file.
COPY_BLOCK = 1 << 20


def write_temp(directory: Path, data: bytes | memoryview | BinaryIO, *, durable: bool,
               writeback: bool = False, mode: int = 0o644) -> Path:
    """Write ``data`` (bytes, or a binary file read from its current position
    to its end, a block at a time) to a new temporary file in ``directory``
    (created if needed) and return its path; fsynced if ``durable``.
    ``writeback`` starts the kernel's write-out at once (for a caller that
    syncs the file system later).  The caller renames or links the file into
    place, or removes it."""
    _make_dirs(directory, durable)
    tmp = directory / f"{TMP_PREFIX}{secrets.token_hex(8)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        if isinstance(data, bytes | bytearray | memoryview):
            _write_all(fd, data)
        else:
            while block := data.read(COPY_BLOCK):
                _write_all(fd, block)
        if durable:
            os.fsync(fd)
        elif writeback:
            start_writeback(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.close(fd)
    return tmp


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def write_atomic(path: Path, data: bytes | memoryview | str, *, durable: bool,
                 mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` (str is written as UTF-8): old or new
    contents, never half.  ``durable``: fsync the file and its directory (the
    data exists nowhere else); see the module docstring."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = write_temp(path.parent, payload, durable=durable, mode=mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        fsync_dir(path.parent)


def write_json_atomic(path: Path, value: Any, *, durable: bool = True) -> None:
    """``write_atomic`` of compact JSON; durable unless told otherwise (the
    signature of the overlay's former helper of the same name)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    write_atomic(path, text, durable=durable)


@contextlib.contextmanager
def taking_turns(locks: Path, name: str) -> Iterator[None]:
    """An exclusive lock on ``locks/name`` across processes (and threads) for
    the duration; if the lock file cannot be made, no lock: nothing worse than
    doing the work twice."""
    try:
        locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(locks / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
