"""Chunk files of the local cache and the fetch-on-miss path from a store.

A chunk lives at ``<cache>/chunks/<2 hex>/<32 hex>``.  It enters the cache only
after its bytes matched its digest; files are written under a temporary name,
renamed into place, and only then recorded in the LMDB index.  They are not
fsynced: every reader verifies a chunk against its digest before its first use
(``read`` here, the mount on first open), so a chunk torn by a power loss is
found, removed and fetched again — an fsync per chunk would cost far more on
the cold-read path than it protects.  A chunk found corrupt on read is removed
and reported, never returned.

``fetch_pack`` reads a whole pack with one GET and caches every sound chunk
in it (the pack span policy of ``dsfs.content.spans``); processes that want
the same pack at once take turns on a lock file, ``<cache>/locks/<pack id>``,
so the pack is fetched once.  Every fetch is counted (GETs, bytes) in memory
and added to the index's ``counters`` table by ``flush_counters``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dsfs.cache.buffers import BufferPool
from dsfs.cache.index import CacheIndex, index_dir
from dsfs.errors import DiskFullError, IntegrityError, local_os_error
from dsfs.format.digest import chunk_id, id_to_bytes
from dsfs.format.manifest import ChunkRef
from dsfs.format.pack import pack_key, read_index
from dsfs.fsutil import TMP_PREFIX, write_temp
from dsfs.store.base import Store
from dsfs.store.external import corrupt_chunk, read_pack_range

#: Adjacent chunks of one pack closer than this are fetched with one ranged read.
COALESCE_GAP = 256 * 1024
#: A single ranged read never grows past this.
MAX_RANGE = 32 * 1024 * 1024
FETCH_THREADS = 8
#: Pack buffers kept for reuse (``dsfs.cache.buffers``): one per whole-pack
#: fetch a reader runs at once (``dsfs.content.loader.SPAN_FETCHES``).
PACK_BUFFERS = 8

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _fetch_pool() -> ThreadPoolExecutor:
    """One pool per process for store reads (not one per fetch)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=FETCH_THREADS,
                                       thread_name_prefix="dsfs-fetch")
        return _pool


def _forget_inherited_pool() -> None:
    """A pool's threads do not survive a fork: the child starts its own."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_inherited_pool)


class ChunkCache:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.chunk_dir = root / "chunks"
        #: Called with the bytes a fetch needs when the disk is full; returns
        #: whether it made room (then the fetch is tried once more).  Set by a
        #: mount with a cache size limit (``cachectl.evict_when_full``).
        self.on_full: Callable[[int], bool] | None = None
        try:
            self.chunk_dir.mkdir(parents=True, exist_ok=True)
            if not os.access(self.chunk_dir, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES),
                                      str(self.chunk_dir))
        except OSError as exc:
            raise local_os_error(exc, root, "the cache directory") from None
        #: What this process fetched and read, not yet added to the index.
        self._counts: dict[str, int] = defaultdict(int)
        self._counts_lock = threading.Lock()
        #: Buffers that whole-pack fetches read into, reused.
        self.buffers = BufferPool(PACK_BUFFERS)
        fresh = not (index_dir(root) / "data.mdb").exists()
        self.index = CacheIndex(index_dir(root))
        if fresh and any(self.chunk_dir.iterdir()):
            self.rebuild_index()  # the index is derived data: a lost one is re-made

    # -- counters ------------------------------------------------------------

    def count(self, **deltas: int) -> None:
        """Add to this process's counts (``gets``, ``fetched_bytes``,
        ``read_bytes``, ``span_fetches``, ``shuffled_spans``)."""
        with self._counts_lock:
            for name, delta in deltas.items():
                self._counts[name] += delta

    def flush_counters(self) -> None:
        """Add this process's counts to the index (kept if that fails)."""
        with self._counts_lock:
            counts, self._counts = self._counts, defaultdict(int)
        if not any(counts.values()):
            return
        try:
            self.index.add_counters(counts)
        except BaseException:
            self.count(**counts)
            raise

    def counters(self) -> dict[str, int]:
        """Totals over every process, with this one's unflushed counts."""
        totals = self.index.counters()
        with self._counts_lock:
            for name, value in self._counts.items():
                totals[name] = totals.get(name, 0) + value
        return totals

    def chunk_path(self, cid: str) -> Path:
        hexpart = cid.split(":", 1)[1]
        return self.chunk_dir / hexpart[:2] / hexpart

    def has(self, cid: str) -> bool:
        return self.index.chunk_size(id_to_bytes(cid)) is not None and self.chunk_path(
            cid
        ).exists()

    def read(self, cid: str) -> bytes:
        """The verified bytes of a cached chunk; IntegrityError if corrupt."""
        path = self.chunk_path(cid)
        data = path.read_bytes()
        if chunk_id(data) != cid:
            self.discard([cid])
            raise IntegrityError(f"cached chunk {cid} was corrupt; it has been removed")
        return data

    def discard(self, cids: Iterable[str]) -> None:
        cids = list(cids)
        for cid in cids:
            self.chunk_path(cid).unlink(missing_ok=True)
        self.index.forget_chunks(id_to_bytes(c) for c in cids)

    def _stage(self, cid: str, data: bytes | memoryview, verified: bool = False
               ) -> tuple[Path, Path]:
        """Write a chunk under a temporary name, verified here unless the caller
        did; return (tmp, final)."""
        if not verified and chunk_id(data) != cid:
            raise IntegrityError(f"chunk {cid} does not match its digest")
        final = self.chunk_path(cid)
        try:
            # not fsynced: see the module docstring; removed again if it fails
            return write_temp(final.parent, data, durable=False), final
        except OSError as exc:
            raise local_os_error(exc, self.root, "the cache") from None

    def _commit(self, staged: list[tuple[str, int, Path, Path]]) -> None:
        """Renames, then one index transaction for the batch."""
        if not staged:
            return
        try:
            for _cid, _size, tmp, final in staged:
                os.replace(tmp, final)
        except OSError as exc:
            raise local_os_error(exc, self.root, "the cache") from None
        try:
            self.index.add_chunks((id_to_bytes(cid), size) for cid, size, _t, _f in staged)
        except BaseException:
            # files the index does not know would take space nobody can see
            for cid, _size, _tmp, final in staged:
                if self.index.chunk_size(id_to_bytes(cid)) is None:
                    final.unlink(missing_ok=True)
            raise

    @staticmethod
    def _discard_staged(staged: list[tuple[str, int, Path, Path]]) -> None:
        for _cid, _size, tmp, _final in staged:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        """Add chunks (each verified against its id) as one durable batch."""
        staged: list[tuple[str, int, Path, Path]] = []
        try:
            for cid, data in items:
                staged.append((cid, len(data), *self._stage(cid, data)))
            self._commit(staged)
        except BaseException:
            self._discard_staged(staged)
            raise

    def missing(self, cids: Iterable[str]) -> list[str]:
        return [c for c in dict.fromkeys(cids) if not self.has(c)]

    def fetch(
        self,
        store: Store,
        refs: Iterable[ChunkRef],
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Make sure every referenced chunk is cached; return bytes downloaded.

        Chunks of one pack that sit close together are read with one ranged
        read; reads run in a small thread pool.  Each chunk is verified against
        its digest before it enters the cache.
        """
        wanted: dict[str, ChunkRef] = {}
        for ref in refs:
            if ref.chunk_id not in wanted and not self.has(ref.chunk_id):
                wanted[ref.chunk_id] = ref
        by_pack: dict[str, list[ChunkRef]] = defaultdict(list)
        for ref in wanted.values():
            by_pack[ref.pack_id].append(ref)
        ranges: list[tuple[str, list[ChunkRef]]] = []
        for pack_id, pack_refs in by_pack.items():
            pack_refs.sort(key=lambda r: r.offset)
            group = [pack_refs[0]]
            for ref in pack_refs[1:]:
                start, end = group[0].offset, group[-1].offset + group[-1].length
                near = ref.offset - end <= COALESCE_GAP
                if near and ref.offset + ref.length - start <= MAX_RANGE:
                    group.append(ref)
                else:
                    ranges.append((pack_id, group))
                    group = [ref]
            ranges.append((pack_id, group))

        def fetch_range(job: tuple[str, list[ChunkRef]]) -> int:
            pack_id, group = job
            start = group[0].offset
            end = group[-1].offset + group[-1].length
            blob = read_pack_range(store, pack_id, start, end - start)
            self.count(gets=1, fetched_bytes=len(blob))
            for ref in group:
                data = blob[ref.offset - start : ref.offset - start + ref.length]
                if chunk_id(data) != ref.chunk_id:
                    raise IntegrityError(corrupt_chunk(ref.chunk_id, pack_id))
                tmp, final = self._stage(ref.chunk_id, data)
                with lock:
                    staged.append((ref.chunk_id, ref.length, tmp, final))
            if progress is not None:
                progress(end - start)
            return end - start

        if not ranges:
            return 0
        lock = threading.Lock()
        for attempt in (1, 2):
            staged: list[tuple[str, int, Path, Path]] = []
            try:
                if len(ranges) == 1:  # the mount's common case: no thread hand-off
                    fetched = fetch_range(ranges[0])
                else:
                    fetched = sum(_fetch_pool().map(fetch_range, ranges))
                self._commit(staged)
                return fetched
            except DiskFullError:
                self._discard_staged(staged)
                needed = sum(g[-1].offset + g[-1].length - g[0].offset for _p, g in ranges)
                if attempt == 2 or self.on_full is None or not self.on_full(needed):
                    raise
            except BaseException:
                self._discard_staged(staged)
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def fetch_pack(self, store: Store, wanted: ChunkRef,
                   cached: list[str] | None = None) -> int:
        """Cache every sound chunk of ``wanted``'s pack, read whole with one GET;
        return the bytes downloaded (0 when another process fetched it while
        this one waited for the pack's lock).  A chunk that does not match its
        digest is left out; IntegrityError only if ``wanted`` is one of them
        (or the pack's index is unreadable).  The ids of the chunks it cached
        (each verified against its digest) are added to ``cached``."""
        locks = self.root / "locks"
        try:
            locks.mkdir(exist_ok=True)
            fd = os.open(locks / wanted.pack_id, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise local_os_error(exc, self.root, "the cache") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self.has(wanted.chunk_id):
                return 0
            # into a reused buffer, without the transport's checksum: every
            # chunk is checked against its digest below
            view = store.get_buffered(pack_key(wanted.pack_id), self.buffers.take())
            self.count(gets=1, fetched_bytes=len(view), span_fetches=1)
            staged: list[tuple[str, int, Path, Path]] = []
            sound = False
            try:
                for entry in read_index(view):
                    if self.has(entry.chunk_id):
                        continue
                    data = view[entry.offset:entry.offset + entry.length]  # no copy
                    if chunk_id(data) != entry.chunk_id:
                        continue  # its own read will fail; the others stay sound
                    staged.append((entry.chunk_id, entry.length,
                                   *self._stage(entry.chunk_id, data, verified=True)))
                    sound = sound or entry.chunk_id == wanted.chunk_id
                if not sound:
                    raise IntegrityError(
                        f"chunk {wanted.chunk_id} in pack {wanted.pack_id} of the store is "
                        "corrupt (its bytes do not match its digest)")
                self._commit(staged)
            except BaseException:
                self._discard_staged(staged)
                raise
            finally:
                self.buffers.give(view.obj)
            if cached is not None:
                cached.extend(cid for cid, _size, _tmp, _final in staged)
            return len(view)
        finally:
            os.close(fd)  # releases the lock

    def rebuild_index(self) -> int:
        """Re-create the chunk table from the chunk files; return how many."""
        found = []
        for sub in sorted(self.chunk_dir.iterdir()) if self.chunk_dir.exists() else []:
            if not sub.is_dir():
                continue
            for entry in os.scandir(sub):
                if entry.name.startswith(TMP_PREFIX):
                    os.unlink(entry.path)
                    continue
                if len(entry.name) == 32:
                    found.append((bytes.fromhex(entry.name), entry.stat().st_size))
        self.index.add_chunks(found)
        return len(found)
