"""Writing batches of files from their packs, in worker processes: the file
side of ``get`` and ``get --copy``.

``dsfs.engine.materialize`` walks the tree and hands out batches of
consecutive files, each file as (path, encoded entry) — the compact entry
form of the tree index (``dsfs.engine.treeindex``), never ``Entry``
objects.  ``write_batch`` reads the batch's chunks with a few ranged reads
of their packs (``dsfs.engine.packranges``), checks every chunk against its
id before it writes anything, then creates each file with one ``open``
(``O_CREAT | O_EXCL | O_NOFOLLOW``, the mode given there), its ``write``
calls, ``futimens`` on the descriptor and ``close`` — and an ``fchmod``
only when the umask took bits the file must have.

File creation is system calls plus a little Python per file, and Python
threads share one lock: four threads made ``get`` of tiny files slower than
one.  ``Pool`` therefore runs batches in worker processes forked from the
command (``fork``: nothing is pickled but the batches, and a worker is
ready in milliseconds), when the store can be used from a forked child
(``Store.fork_safe``: the local store; an S3 client's connections cannot
be shared, so S3 gets threads, where the network is the bound anyway).
Small trees are written in the calling thread.  Workers never touch the
cache index: chunks the cache holds are named in the batch by the parent
and read straight from their files (re-checked like every chunk).

Stopping: a failure or an interrupt sets the pool's stop flag; workers
finish the file they are writing and take no further one, and the pool
waits for them, so nothing writes into a copy that is being removed.
Workers ignore SIGINT (Ctrl-C reaches the whole process group): the parent
handles it.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import struct
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dsfs.engine.packranges import RawRef, plan_raw, read_raw
from dsfs.errors import DsfsError, IntegrityError
from dsfs.format.digest import CHUNK_SIZE, digest_bytes
from dsfs.store.base import Store

_HEAD = struct.Struct("<BIqQ")  # kind, mode, mtime ns, size (treeindex's entry head)
_FILE = struct.Struct("<16sI")  # digest, chunk count
_CHUNK = struct.Struct("<16s16sQQ")  # chunk id, pack id, offset, length
_WRITE_BITS = 0o222
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: A file bigger than this is a batch of its own, read a few chunks at a time.
BIG_FILE = 16 * 1024 * 1024
#: Files are written in batches of consecutive paths: at most this many files...
BATCH_FILES = 1024
#: ... and this many bytes (a bigger file is a batch of its own, read in steps).
BATCH_BYTES = BIG_FILE
#: Worker processes (or threads, for stores that cannot be forked).
WORKERS = max(2, min(4, os.cpu_count() or 2))
#: Trees with fewer files are written by the calling thread (a pool costs more).
PARALLEL_MIN_FILES = 2048

#: A batch: (path, encoded entry) per file.
Job = tuple[bytes, bytes]
T = TypeVar("T")


@dataclass
class Settings:
    """What every batch of one copy shares (inherited by forked workers)."""

    store: Store
    read_only: bool
    chunk_dir: bytes  # <cache>/chunks, for chunks the parent says are cached
    umask: int
    stop: Stop
    #: Directories known to exist below the target (``dsfs.engine.streamcopy``
    #: makes them as it goes; each forked worker has its own copy).
    dirs: set[bytes] = field(default_factory=set)


_settings: Settings | None = None  # a worker process's copy


class Stop:
    """A flag every writer checks before each file: a word of shared memory
    (forked workers see the parent's store to it), cheaper to read than a
    multiprocessing Event (a semaphore round per file)."""

    def __init__(self) -> None:
        self._flag = multiprocessing.get_context("fork").RawValue("b", 0)

    def set(self) -> None:
        self._flag.value = 1

    def is_set(self) -> bool:
        return bool(self._flag.value)


_FIRST = _HEAD.size + _FILE.size


def file_refs(encoded: bytes) -> list[RawRef]:
    """The chunks of an encoded file entry, as raw refs (an external file's
    carry its URL where the pack id would be)."""
    count = _FILE.unpack_from(encoded, _HEAD.size)[1]
    end = _FIRST + count * _CHUNK.size
    if len(encoded) > end:  # an external file: its chunks lie in the object at its URL
        url = encoded[end:].partition(b"\n")[0]
        return [(cid, url, offset, length) for cid, _zero, offset, length
                in (_CHUNK.unpack_from(encoded, _FIRST + i * _CHUNK.size) for i in range(count))]
    if count == 1:
        return [_CHUNK.unpack_from(encoded, _FIRST)]
    return [_CHUNK.unpack_from(encoded, _FIRST + i * _CHUNK.size) for i in range(count)]


def chunk_ids(encoded: bytes) -> list[bytes]:
    """The raw chunk ids of an encoded file entry."""
    return [ref[0] for ref in file_refs(encoded)]


def file_size(encoded: bytes) -> int:
    return _HEAD.unpack_from(encoded)[3]


def file_key(encoded: bytes) -> tuple[bytes, int, int]:
    """(raw digest, mode, mtime ns) of an encoded file entry: its ``copies`` key."""
    _kind, mode, mtime, _size = _HEAD.unpack_from(encoded)
    return encoded[_HEAD.size:_HEAD.size + 16], mode, mtime


def _cached_chunk(settings: Settings, cid: bytes) -> memoryview | None:
    """A cached chunk's bytes if they still match their id, else None."""
    h = cid.hex()
    path = b"%s/%s/%s" % (settings.chunk_dir, h[:2].encode(), h.encode())
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    return memoryview(data) if digest_bytes(data) == cid else None


def _chunks(settings: Settings, refs: Iterable[RawRef], cached: frozenset[bytes],
            bad: list[bytes]) -> dict[bytes, memoryview]:
    """Verified bytes of every chunk ``refs`` name, cached ones from their files."""
    out: dict[bytes, memoryview] = {}
    wanted = []
    for ref in refs:
        cid = ref[0]
        if cid in out:
            continue
        if cid in cached:
            data = _cached_chunk(settings, cid)
            if data is not None:
                out[cid] = data
                continue
            bad.append(cid)
        wanted.append(ref)
    if wanted:
        read_raw(settings.store, plan_raw(wanted), out)
    return out


def write_file(settings: Settings, path: bytes, mode: int, mtime: int,
               chunks: list[memoryview]) -> None:
    """One file from its chunks' verified bytes (``mode`` without the type bits)."""
    if settings.read_only:
        mode &= ~_WRITE_BITS
    fd = os.open(path, _OPEN_FLAGS, mode)
    try:
        for data in chunks:
            while data:
                data = data[os.write(fd, data):]
        if mode & settings.umask or mode & 0o7000:
            os.fchmod(fd, mode)  # the umask took bits the file must have
        os.utime(fd, ns=(mtime, mtime))
    finally:
        os.close(fd)


def write_batch(settings: Settings, jobs: list[Job], cached: frozenset[bytes]
                ) -> list[bytes]:
    """Write a batch of files; return the ids of cached chunks found corrupt
    (read from the store instead; the parent drops them from the cache)."""
    bad: list[bytes] = []
    if settings.stop.is_set():
        return bad
    if len(jobs) == 1 and file_size(jobs[0][1]) > BIG_FILE:
        _big_file(settings, *jobs[0], cached, bad)
        return bad
    files = []
    for path, encoded in jobs:
        _kind, mode, mtime, _size = _HEAD.unpack_from(encoded)
        files.append((path, mode & 0o7777, mtime, file_refs(encoded)))
    write_files(settings, files, cached, bad)
    return bad


#: A file to write: (path, mode without the type bits, mtime ns, its chunks).
FileJob = tuple[bytes, int, int, list[RawRef]]


def write_files(settings: Settings, files: list[FileJob], cached: frozenset[bytes],
                bad: list[bytes]) -> None:
    """Write files (none bigger than a batch) once all their chunks are read
    and verified; corrupt cached chunks are added to ``bad``."""
    chunks = _chunks(settings, [ref for file in files for ref in file[3]], cached, bad)
    stop = settings.stop
    for path, mode, mtime, refs in files:
        if stop.is_set():
            break
        write_file(settings, path, mode, mtime,
                   [chunks[refs[0][0]]] if len(refs) == 1 else [chunks[r[0]] for r in refs])


def _big_file(settings: Settings, path: bytes, encoded: bytes, cached: frozenset[bytes],
              bad: list[bytes]) -> None:
    """A file larger than a batch: its chunks are read a few at a time and
    appended; the mode and mtime are set last."""
    refs = file_refs(encoded)
    step = max(1, BIG_FILE // CHUNK_SIZE)
    fd = os.open(path, _OPEN_FLAGS, 0o600)  # owner-writable while it is filled
    try:
        for i in range(0, len(refs), step):
            if settings.stop.is_set():
                return
            part = refs[i:i + step]
            chunks = _chunks(settings, part, cached, bad)
            for ref in part:
                data = chunks[ref[0]]
                while data:
                    data = data[os.write(fd, data):]
        _kind, mode, mtime, _size = _HEAD.unpack_from(encoded)
        mode &= 0o7777
        os.fchmod(fd, mode & ~_WRITE_BITS if settings.read_only else mode)
        os.utime(fd, ns=(mtime, mtime))
    finally:
        os.close(fd)


# -- worker processes --------------------------------------------------------------------

def _init_worker(settings: Settings) -> None:
    global _settings
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _settings = settings


def _in_worker(task: Callable[..., T], *args: Any) -> T:
    assert _settings is not None
    try:
        return task(_settings, *args)
    except BaseException as exc:
        # the exception travels back pickled: make sure it can
        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:
            if isinstance(exc, OSError):
                raise OSError(exc.errno, exc.strerror, exc.filename) from None
            kind = IntegrityError if isinstance(exc, IntegrityError) else DsfsError
            raise kind(str(exc)) from None
        raise


class Pool:
    """Runs the tasks of one copy (``write_batch``, or any module-level
    function taking the settings first): in the caller, threads or processes."""

    def __init__(self, settings: Settings, files: int) -> None:
        self.settings = settings
        self.executor: Executor | None = None
        self.processes = False
        if files >= PARALLEL_MIN_FILES:
            if getattr(settings.store, "fork_safe", False):
                ctx = multiprocessing.get_context("fork")
                self.executor = ProcessPoolExecutor(
                    WORKERS, mp_context=ctx, initializer=_init_worker, initargs=(settings,))
                self.processes = True
            else:
                self.executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="dsfs-get")

    def submit(self, task: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``task(settings, *args)``; in the caller (at once) for a small copy."""
        if self.executor is None:
            done: Future[T] = Future()
            done.set_result(task(self.settings, *args))
            return done
        if self.processes:
            return self.executor.submit(_in_worker, task, *args)
        return self.executor.submit(task, self.settings, *args)

    @property
    def depth(self) -> int:
        """Batches to keep submitted ahead."""
        return 1 if self.executor is None else 2 * WORKERS

    def stop(self) -> None:
        self.settings.stop.set()

    def close(self) -> None:
        """Wait for every running batch (after ``stop``: each ends at its next file)."""
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)


def new_settings(store: Store, read_only: bool, chunk_dir: str) -> Settings:
    umask = os.umask(0o022)
    os.umask(umask)
    return Settings(store, read_only, os.fsencode(chunk_dir), umask, Stop())


__all__ = ["BATCH_BYTES", "BATCH_FILES", "BIG_FILE", "FileJob", "Job", "Pool", "Settings",
           "chunk_ids", "file_key", "file_refs", "file_size", "new_settings", "write_batch",
           "write_file", "write_files"]
