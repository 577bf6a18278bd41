"""The cache's LMDB environments; the only module that imports lmdb.

LMDB allows one open of an environment per process, so environments are kept
here, one per directory, shared by threads and reopened in a forked child.
This module also prepares LMDB's lock file so a full disk is an error rather
than a SIGBUS, drops a process's resident map pages on request, and turns
LMDB's failures into dsfs errors that name the cache index.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import lmdb

from dsfs.errors import DiskFullError, DsfsError, IntegrityError, LocalError, local_os_error
from dsfs.fsutil import write_temp

Environment = lmdb.Environment
Database = lmdb._Database
Transaction = lmdb.Transaction

#: Virtual size of the map; LMDB only uses what it needs on disk.
MAP_SIZE = 1 << 36

#: Readers LMDB makes room for, and the size of its lock file for that many.
MAX_READERS = 512
LOCK_FILE_SIZE = (MAX_READERS - 1) * 64 + 192

#: ``madvise`` advice letting the kernel drop a mapping's pages (they are read
#: again from the page cache, or the file, on the next touch).
_MADV_DONTNEED = 4

#: An LMDB write that fails with less free space than this on its file system
#: is reported as a full disk: LMDB turns a short write into EIO, not ENOSPC.
FULL_DISK_MARGIN = 64 * 1024 * 1024


class Reopenable(Protocol):
    def _open(self) -> None: ...


_envs: dict[str, lmdb.Environment] = {}
_envs_lock = threading.Lock()
#: Every open user of an environment in this process, to reopen in a forked child.
_users: weakref.WeakSet[Reopenable] = weakref.WeakSet()


def track(user: Reopenable) -> None:
    """Reopen ``user`` (call its ``_open``) in a forked child."""
    _users.add(user)


def _reopen_after_fork() -> None:
    """In a forked child (a data loader's worker): LMDB forbids using the
    parent's environments, so close the inherited ones (closing touches only
    this process's reader slots and file handles) and reopen every user."""
    global _envs_lock
    inherited = list(_envs.values())
    _envs.clear()
    _envs_lock = threading.Lock()
    for env in inherited:
        with contextlib.suppress(Exception):
            env.close()
    for user in list(_users):
        with contextlib.suppress(Exception):
            user._open()


os.register_at_fork(after_in_child=_reopen_after_fork)


def open_env(path: Path) -> lmdb.Environment:
    """This process's environment for the directory ``path`` (made if missing)."""
    key = str(path.resolve())
    with _envs_lock:
        env = _envs.get(key)
        if env is None:
            try:
                path.mkdir(parents=True, exist_ok=True)
                _allocate_lock_file(path)
                env = lmdb.open(
                    key, map_size=MAP_SIZE, max_dbs=16, subdir=True, sync=False,
                    metasync=False, readahead=False, max_readers=MAX_READERS,
                )
            except OSError as exc:
                raise local_os_error(exc, path, "the cache index") from None
            except lmdb.Error as exc:
                if _disk_full(path) or _denied(exc):
                    raise write_error(exc, path) from None
                raise IntegrityError(
                    f"the cache index at {key} cannot be opened ({exc}); "
                    "remove that directory and dsfs will rebuild it"
                ) from None
            _envs[key] = env
        return env


def close_env(path: Path) -> None:
    """Close and forget this process's environment for ``path``, if open."""
    with _envs_lock:
        env = _envs.pop(str(path.resolve()), None)
    if env is not None:
        env.close()


def _allocate_lock_file(path: Path) -> None:
    """Create LMDB's lock file with real (not sparse) blocks before LMDB maps it.

    LMDB writes its reader table through a shared mapping of ``lock.mdb``; on a
    full disk the first touch of a page the file system cannot back kills the
    process with SIGBUS.  Writing the file whole first turns that into an
    ENOSPC here.  A lock file that exists is in use or was set up before, and
    is left alone."""
    lock = path / "lock.mdb"
    if lock.exists():
        return
    tmp = write_temp(path, bytes(LOCK_FILE_SIZE), durable=False)
    try:
        os.link(tmp, lock)
    except FileExistsError:
        pass  # another process was first
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def write_txn(env: lmdb.Environment, db: lmdb._Database | None = None
              ) -> Iterator[lmdb.Transaction]:
    """A write transaction whose failure to commit (a full disk, an
    unwritable directory) raises a DsfsError naming the cache index."""
    try:
        with env.begin(db=db, write=True) as txn:
            yield txn
    except lmdb.Error as exc:
        raise write_error(exc, Path(env.path())) from None


def release_pages(env: lmdb.Environment) -> None:
    """Drop this process's resident pages of the environment's map.

    LMDB reads through a shared, read-only mapping of ``data.mdb``: every
    page a reader touches stays resident in the process (and counts in its
    RSS) until the kernel reclaims it.  A mount that walks a big tree
    touches the whole tree; calling this now and then keeps its resident
    set to what it touched since.  Safe at any time, also while other
    threads read: the pages are file-backed and never written through the
    map, so a later touch faults them in again from the page cache.
    """
    span = _map_span(env.path())
    if span is not None and _libc is not None:
        start, length = span
        _libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(length), _MADV_DONTNEED)


def _load_libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc


_libc = _load_libc()


def _map_span(directory: str) -> tuple[int, int] | None:
    """(address, length) of this process's mapping of ``directory``/data.mdb."""
    target = os.path.join(os.path.realpath(directory), "data.mdb")
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                if line.rstrip("\n").endswith(target):
                    low, high = line.split(None, 1)[0].split("-")
                    return int(low, 16), int(high, 16) - int(low, 16)
    except OSError:
        pass
    return None


def _disk_full(path: Path) -> bool:
    try:
        st = os.statvfs(path if path.exists() else path.parent)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < FULL_DISK_MARGIN


def _denied(exc: lmdb.Error) -> bool:
    text = str(exc)
    return any(os.strerror(code) in text for code in (errno.EACCES, errno.EPERM, errno.EROFS))


def write_error(exc: lmdb.Error, path: Path) -> DsfsError:
    if os.strerror(errno.ENOSPC) in str(exc) or isinstance(exc, lmdb.MapFullError) or (
            _disk_full(path)):
        return DiskFullError(path, "the cache index")
    if _denied(exc):
        return LocalError(f"cannot write the cache index at {path}: {exc}")
    return LocalError(f"the cache index at {path} failed to write ({exc}); if it keeps "
                      "failing, remove that directory and dsfs will rebuild it")
