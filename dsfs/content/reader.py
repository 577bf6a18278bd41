"""File contents for a mount: chunks from the shared cache, fetched on a miss.

``ChunkReader`` serves ``read(fh, offset, size)`` for the FUSE adapters and
the overlay (the ``FileReader`` protocol).  It sits below both: it touches the
cache and the store, never a FUSE type or the mount; the mount passes in its
cache size limit (``CacheLimit``) and runs ``run`` in its nursery.

* A chunk is used only once verified: a cached chunk file is hashed the first
  time this process uses it (a corrupt one is discarded and fetched again,
  never served); a fetched chunk is verified by ``ChunkCache.fetch`` before it
  enters the cache.  After that, reads are ``pread`` on a small pool of open
  chunk files (an open file keeps its chunk readable even if another process
  evicts it).
* Store I/O and hashing run in worker threads under one
  ``trio.CapacityLimiter``, so a slow fetch blocks only the readers waiting
  for that chunk.  Concurrent readers of one chunk share one fetch
  (``_inflight``, a ``dsfs.flight.SingleFlight``; a failed fetch fails its
  waiters too, a cancelled one makes a waiter fetch).
* A failed fetch is retried with back-off; after the last attempt the read
  fails (the adapter answers EIO and logs), and the next read tries again.
* A read of a chunk this process has verified is served at once (``pread``,
  no await, no thread): that is every read but the first of each chunk.
* A handle whose reads follow each other is a sequential reader: it gets the
  next ``readahead`` chunks fetched in the background (started once per
  chunk it enters).  The kernel's own readahead for the mount is raised to
  ``READAHEAD_KB`` (as root, ``dsfs.content.readahead``), so such a reader
  sends 1 MiB requests.
* A cold read of a small chunk that continues a scan of its pack brings the
  following files' chunks along in the same ranged read (``dsfs.content.scan``).
* Verifying or fetching a chunk, with retries, happens in a worker thread
  (``dsfs.content.loader``).
* A cold lone read may fetch its whole pack: once reads land across a pack
  (a shuffled epoch), the pack span policy (``dsfs.content.spans``) has
  the pack fetched with one GET and the following reads served from the
  cache; a window that fails is retried as the one chunk.
* Chunk accesses are recorded for LRU eviction in batches, off the hot path,
  and so are the bytes read (the cache's counters, ``dsfs cache stats``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import trio

from dsfs.cache.chunks import ChunkCache
from dsfs.chore import Chore, describe
from dsfs.content.loader import ChunkLoader
from dsfs.content.readahead import raise_readahead
from dsfs.content.scan import ScanTracker
from dsfs.content.spans import NO_SPANS, SpanPolicy
from dsfs.errors import LocalError
from dsfs.flight import SingleFlight
from dsfs.format.digest import chunk_id, id_to_bytes
from dsfs.format.manifest import ChunkRef
from dsfs.store.base import Store
from dsfs.vfs import OpenFile, Slice

log = logging.getLogger("dsfs.mount.reader")

#: Worker threads for store I/O and hashing.
WORKERS = 16
#: Chunks fetched ahead of a sequential reader.
READAHEAD_CHUNKS = 2
#: Seconds between background chores (access times every 6 ticks, eviction).
TICK = 5.0
#: Open chunk files kept for pread.
OPEN_FILES = 128
#: Cached chunks up to this size are verified in the event loop, not a thread.
INLINE_VERIFY = 256 * 1024


class FileReader(Protocol):
    """Whoever reads file contents (from the cache, fetching from the store)."""

    def open(self, file: OpenFile) -> int: ...

    async def read(self, fh: int, offset: int, size: int) -> bytes: ...

    def release(self, fh: int) -> None: ...


class CacheLimit(Protocol):
    """A size limit on the shared cache and the eviction that keeps it (the
    mount's, over ``dsfs.mount.cachectl``)."""

    #: The most bytes the cache may take.
    limit: int

    def prune(self, protect: set[str]) -> tuple[int, int]:
        """Evict until the cache fits, never a chunk in ``protect`` (in a worker
        thread); (chunks removed, bytes freed)."""
        ...

    def when_full(self, protect: Callable[[], Iterable[str]]) -> None:
        """Make a fetch that meets a full disk evict (not ``protect()``) and retry."""
        ...


def _due(chore: Chore, ticks: int) -> bool:
    """Whether a failing chore's back-off has passed (it is tried every tick
    while it works)."""
    return chore.failures == 0 or ticks % max(1, round(chore.delay / TICK)) == 0


@dataclass
class _Handle:
    file: OpenFile
    next_offset: int = 0
    sequential: int = 0
    #: The chunk whose readahead was last started.
    ahead_of: str = ""


class ChunkReader:
    """Reads file contents through the cache; one instance per mount."""

    def __init__(self, cache: ChunkCache, store: Store, workers: int = WORKERS,
                 readahead: int = READAHEAD_CHUNKS, limit: CacheLimit | None = None,
                 spans: SpanPolicy = NO_SPANS) -> None:
        self.cache = cache
        self.store = store
        self.loader = ChunkLoader(cache, store, spans)
        #: Bytes served since the counters were last flushed.
        self._read_bytes = 0
        self.readahead = readahead
        self.limit = limit
        self.cache_size = None if limit is None else limit.limit
        self.limiter = trio.CapacityLimiter(workers)
        #: Where the mount is, if the reader should raise its readahead.
        self.mountpoint: str | None = None
        self._handles: dict[int, _Handle] = {}
        self._next_fh = 1
        self._verified: set[str] = set()
        self._inflight: SingleFlight[str] = SingleFlight()
        self._scans = ScanTracker()
        self._fds: OrderedDict[str, int] = OrderedDict()
        # ``ChunkCache.chunk_path`` as a plain string: pathlib costs more than
        # the open itself on the path of every small file
        self._chunk_dir = os.fspath(cache.chunk_dir)
        self._touched: set[str] = set()
        self._touch_lock = threading.Lock()
        self._nursery: trio.Nursery | None = None
        self._unpruned = 0 if limit is None else 1  # bytes fetched since the last prune
        if limit is not None:  # a disk smaller than the limit: evict and retry
            limit.when_full(lambda: {*self._inflight, *self._fds})

    # -- lifecycle -------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background work (readahead, access-time flushes, eviction) until
        cancelled.  A chore that fails (an LMDB error, a chunk file that cannot
        be removed, a dead cache disk) is logged once and tried again later with
        back-off; it never ends the mount."""
        touching = Chore("recording chunk access times", first=TICK, longest=300.0)
        pruning = Chore("pruning the cache", first=TICK, longest=300.0)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                ticks = 0
                while True:
                    await trio.sleep(TICK)
                    ticks += 1
                    self.cache.buffers.trim()  # pack buffers unused for a while
                    if (ticks % 6 == 0 or self._unpruned or self._read_bytes) and _due(
                            touching, ticks):
                        try:
                            if await trio.to_thread.run_sync(self.flush_access_times,
                                                             limiter=self.limiter):
                                touching.succeeded()
                        except Exception as exc:  # noqa: BLE001 - a chore outlives failures
                            touching.failed(exc)
                    if self.cache_size is not None and self._unpruned and _due(pruning, ticks):
                        try:
                            await self._prune()
                            self._unpruned = 0
                            pruning.succeeded()
                        except Exception as exc:  # noqa: BLE001 - a chore outlives failures
                            pruning.failed(exc)
            finally:
                self._nursery = None

    async def _prune(self) -> None:
        assert self.limit is not None
        protect = set(self._inflight)
        for handle in list(self._handles.values()):
            protect.update(r.chunk_id for r in handle.file.entry.chunks)
        removed, freed = await trio.to_thread.run_sync(
            self.limit.prune, protect, limiter=self.limiter)
        if removed:
            log.info("evicted %d chunk(s), %d bytes, to keep the cache under %d bytes",
                     removed, freed, self.cache_size)

    def close(self) -> None:
        try:
            self.flush_access_times()
        except Exception as exc:  # noqa: BLE001 - access times are a hint for eviction
            log.warning("chunk access times not recorded at unmount: %s", describe(exc))
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    def flush_access_times(self) -> bool:
        """Record the chunks read since the last flush (and the counters of
        bytes read and fetched); False if there were none.  If the index cannot
        be written they are kept for the next attempt."""
        read, self._read_bytes = self._read_bytes, 0
        if read:
            self.cache.count(read_bytes=read)
        self.cache.flush_counters()
        with self._touch_lock:
            touched, self._touched = self._touched, set()
        if not touched:
            return False
        try:
            self.cache.index.touch_chunks(id_to_bytes(c) for c in touched)
        except BaseException:
            with self._touch_lock:
                self._touched |= touched
            raise
        return True

    # -- handles ---------------------------------------------------------------------

    def handshake_done(self) -> None:
        """Raise the mount's readahead, once: the kernel resets it during its
        handshake, so this runs at the first open, or at the first lookup of a
        mount whose files are never opened (no-open: the kernel copies the
        setting into each file at its open, before any read).  Never by a stat
        of our own mount point: a thread waiting on our own mount when the loop
        ends can never be answered, and the process could not exit."""
        if self.mountpoint is not None:
            raise_readahead(self.mountpoint)
            self.mountpoint = None

    def open(self, file: OpenFile) -> int:
        self.handshake_done()
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = _Handle(file)
        return fh

    def release(self, fh: int) -> None:
        self._handles.pop(fh, None)

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        handle = self._handles[fh]
        file = handle.file
        if offset == handle.next_offset and offset > 0:
            handle.sequential += 1
        elif offset != handle.next_offset:
            handle.sequential = 0
        slices = file.slices(offset, size)
        data = self._read_ready(slices[0]) if len(slices) == 1 else None
        if data is None:  # a chunk to verify or fetch, or a read across chunks
            parts = []
            for piece in slices:
                parts.append(await self._read_slice(piece.ref, piece.start, piece.end, file))
            data = b"".join(parts) if len(parts) != 1 else parts[0]
        handle.next_offset = offset + len(data)
        self._read_bytes += len(data)
        if handle.sequential and self.readahead and slices and self._nursery is not None:
            last = slices[-1].ref.chunk_id
            if last != handle.ahead_of:  # once per chunk, not once per request
                handle.ahead_of = last
                for ref in file.chunks_after(offset + len(data), self.readahead):
                    if ref.chunk_id not in self._verified and ref.chunk_id not in self._inflight:
                        self._nursery.start_soon(self._prefetch, ref)
        return data

    def _read_ready(self, piece: Slice) -> bytes | None:
        """The fast path: a slice of a chunk verified and open already (no await,
        no thread); None when the slow path must run."""
        cid = piece.ref.chunk_id
        if cid not in self._verified:
            return None
        try:
            fd = self._fd(cid)
        except FileNotFoundError:
            return None
        data = os.pread(fd, piece.end - piece.start, piece.start)
        if len(data) != piece.end - piece.start:
            return None
        if cid not in self._touched:
            with self._touch_lock:
                self._touched.add(cid)
        return data

    # -- chunks ----------------------------------------------------------------------

    async def _read_slice(self, ref: ChunkRef, start: int, end: int,
                          file: OpenFile | None = None) -> bytes:
        for _attempt in range(2):
            await self.ensure(ref, file)
            try:
                fd = self._fd(ref.chunk_id)
            except FileNotFoundError:
                # evicted or cleared by another process since we verified it
                self._verified.discard(ref.chunk_id)
                continue
            data = os.pread(fd, end - start, start)
            if len(data) == end - start:
                with self._touch_lock:
                    self._touched.add(ref.chunk_id)
                return data
            self._forget(ref.chunk_id)
        raise LocalError(f"chunk {ref.chunk_id} vanished from the cache while being read")

    def _fd(self, cid: str) -> int:
        fd = self._fds.get(cid)
        if fd is not None:
            self._fds.move_to_end(cid)
            return fd
        hexpart = cid.split(":", 1)[1]
        fd = os.open(f"{self._chunk_dir}/{hexpart[:2]}/{hexpart}", os.O_RDONLY | os.O_CLOEXEC)
        self._fds[cid] = fd
        while len(self._fds) > OPEN_FILES:
            _old, old_fd = self._fds.popitem(last=False)
            os.close(old_fd)
        return fd

    def _forget(self, cid: str) -> None:
        self._verified.discard(cid)
        fd = self._fds.pop(cid, None)
        if fd is not None:
            os.close(fd)

    async def _prefetch(self, ref: ChunkRef) -> None:
        try:
            await self.ensure(ref)
        except Exception as exc:  # noqa: BLE001 - readahead is best effort
            log.info("readahead of %s failed: %s", ref.chunk_id, exc)

    async def ensure(self, ref: ChunkRef, file: OpenFile | None = None) -> None:
        """Return once ``ref`` is in the cache and verified by this process.

        ``file`` is the open file the chunk belongs to: on a miss that continues
        a scan of its pack, the chunks of the files after it come along in the
        same ranged read (``dsfs.content.scan``)."""
        cid = ref.chunk_id
        while cid not in self._verified:
            if await self._inflight.join(cid):
                # another task's fetch: ours if it was for this chunk, or a
                # neighbour's window that holds it (then checked on the next turn)
                continue
            if ref.length <= INLINE_VERIFY and self._verify_inline(ref):
                self._verified.add(cid)
                return
            await self._fetch(ref, file)

    async def _fetch(self, ref: ChunkRef, file: OpenFile | None) -> None:
        """Fetch ``ref`` (and its scan window) in a worker thread; waiters of any
        chunk of the window wait for this one fetch."""
        window = [] if file is None else self._scans.window(ref, file.neighbours, self._busy)
        self._scans.note_range(ref, window)

        async def load() -> None:
            self._unpruned += await trio.to_thread.run_sync(
                self.loader.load, ref, window, file is not None, limiter=self.limiter)
            self._verified.add(ref.chunk_id)
            # the rest of a pack fetched whole was verified on its way in too
            self._verified.update(self.loader.take_verified())

        await self._inflight.lead(load, *(member.chunk_id for member in (ref, *window)))

    def _verify_inline(self, ref: ChunkRef) -> bool:
        """A small cached chunk checked right here (hashing 64 KiB costs less than
        a trip to a worker thread); False leaves it to ``ChunkLoader.load``:
        missing, corrupt (it logs, discards and fetches it) or unreadable."""
        cid = ref.chunk_id
        try:
            fd = self._fd(cid)
            data = os.pread(fd, ref.length + 1, 0)
        except OSError:
            return False
        if len(data) != ref.length or chunk_id(data) != cid:
            self._forget(cid)
            return False
        raw = id_to_bytes(cid)
        if self.cache.index.chunk_size(raw) is None:  # index lost or cleared
            self.cache.index.add_chunks([(raw, len(data))])
        return True

    def _busy(self, cid: str) -> bool:
        """Whether this reader has ``cid`` verified or is fetching it (a scan
        window stops there)."""
        return cid in self._verified or cid in self._inflight

    # -- what the loader holds: the span policy and the fetch counts ---------------------

    @property
    def spans(self) -> SpanPolicy:
        return self.loader.spans

    @spans.setter
    def spans(self, policy: SpanPolicy) -> None:
        self.loader.spans = policy

    @property
    def eager_counters(self) -> bool:
        """Record the cache's counters after every fetch (a data loader's worker
        may be killed rather than closed); a mount adds them every few seconds."""
        return self.loader.eager_counters

    @eager_counters.setter
    def eager_counters(self, eager: bool) -> None:
        self.loader.eager_counters = eager

    @property
    def fetches(self) -> int:
        return self.loader.fetches
