"""Cutting files into chunks, skipping chunks the store already has, and
uploading new ones in packs.

Chunks are looked up first among those this run already packed, then in the
cache's record of what the store holds (kept current by
``Repository.sync_pack_index``), so a renamed or copied file uploads nothing
and a rerun after an interruption re-uploads no finished pack.  Packs are
uploaded by a few worker threads while hashing goes on; at most
``MAX_INFLIGHT`` finished packs wait in memory.  A pack is closed at about
16 MiB, or at ``MAX_PACK_CHUNKS`` chunks; a pack of big chunks (``BIG_CHUNK``
on average) grows until it holds ``PACK_MIN_CHUNKS`` of them, up to 32 MiB:
files of 1 MiB make packs of 32 MiB, so a reader that fetches whole packs
needs a GET per 32 files (sizes from ``dsfs.config.pack_sizes``:
``DSFS_PACK_SIZE``, ``DSFS_PACK_MAX_SIZE``).
Memory does not grow with
the number of files: a pack's chunks are recorded in the cache index as soon
as its upload is done (later duplicates are found there), so only the chunks
of packs still being built or uploaded are held.

A packer holds a shared store lock (``dsfs.engine.locks``) from its creation
to the end of the ``publish`` that follows in the same thread (or until it is
aborted or dropped, or the ``locks.holding_shared`` function around it
returns): a gc cannot delete a pack between the moment a chunk in it is
chosen for reuse and the claim of the version that reuses it.  If the lock
was not held already (by the command around it), the record of the store's
packs is read again once it is, so no choice rests on a listing a gc made
stale.
"""

from __future__ import annotations

import os
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from dsfs import config
from dsfs.engine import locks
from dsfs.engine.scan import open_recorded_file
from dsfs.errors import InputError
from dsfs.format.digest import CHUNK_SIZE, chunk_id, file_hasher, id_to_bytes
from dsfs.format.manifest import ChunkRef
from dsfs.format.pack import PACK_TARGET_SIZE, PackBuilder, PackEntry, pack_key
from dsfs.report import Progress
from dsfs.repository import Repository

UPLOAD_THREADS = 4
MAX_INFLIGHT = 4
#: A pack is closed at this many chunks whatever its size: what a pack costs
#: in memory while it is built and uploaded is per chunk too (its index, the
#: refs waiting for its id), and 16 MiB of tiny files would be hundreds of
#: thousands of chunks.
MAX_PACK_CHUNKS = 8_192
#: A pack whose chunks average BIG_CHUNK or more grows past PACK_TARGET_SIZE
#: until it holds PACK_MIN_CHUNKS chunks, up to PACK_MAX_SIZE: big files make
#: big packs, so that a pack still holds enough files for a reader that
#: fetches it whole (a shuffled epoch) to save requests.  Not more: finished
#: packs wait for upload in memory, and a pack stays a single PUT on S3.
BIG_CHUNK = 512 * 1024
PACK_MIN_CHUNKS = 32
PACK_MAX_SIZE = 32 * 1024 * 1024
#: Lookups in the cache index between two releases of its mapped pages.
RELEASE_EVERY = 2_000


@dataclass(frozen=True, slots=True)
class PendingRef:
    """A chunk placed in a pack whose id is known only once the pack is full."""

    chunk_id: str
    pack_seq: int
    offset: int
    length: int


@dataclass
class PackStats:
    files_hashed: int = 0
    bytes_hashed: int = 0
    chunks_new: int = 0
    chunks_reused: int = 0
    packs_uploaded: int = 0
    bytes_uploaded: int = 0


class Packer:
    def __init__(self, repo: Repository) -> None:
        self._hold = locks.Hold(repo, "close", until_publish=True)
        weakref.finalize(self, locks.release_later, self._hold)
        if self._hold.acquired:  # the caller looked at the store's packs without it
            try:
                repo.sync_pack_index()  # under the lock: no gc can make it stale now
            except BaseException:
                self._hold.release()
                raise
        self.repo = repo
        self.store_id = repo.store_id
        self.stats = PackStats()
        self._builder = PackBuilder()
        #: Bytes at which a pack is closed (of big chunks: PACK_MIN_CHUNKS of
        #: them), and at which any pack is.
        self._pack_size, self._pack_max = config.pack_sizes(PACK_TARGET_SIZE, PACK_MAX_SIZE)
        self._seq = 0
        #: chunks of packs not yet recorded in the cache index
        self._placed: dict[str, PendingRef] = {}
        self._pack_ids: dict[int, str] = {}
        #: packs uploaded, waiting to be recorded (by the hashing thread)
        self._uploaded: list[tuple[int, str, list[PackEntry]]] = []
        self._reused_packs: set[str] = set()
        self._pool = ThreadPoolExecutor(max_workers=UPLOAD_THREADS)
        self._slots = threading.BoundedSemaphore(MAX_INFLIGHT)
        self._futures: list[Future[None]] = []
        self._stats_lock = threading.Lock()
        self._lookups = 0

    def hash_file(self, source: str, progress: Progress
                  ) -> tuple[str, int, list, os.stat_result]:
        """Read one file: (file digest, size, refs, its stat when opened), packing
        new chunks.  Mode and mtime come from the same open file as the bytes."""
        hasher = file_hasher()
        refs: list[PendingRef | ChunkRef] = []
        size = 0
        try:
            with open_recorded_file(source) as f:
                st = os.fstat(f.fileno())
                while True:
                    data = f.read(CHUNK_SIZE)
                    if not data:
                        break
                    hasher.update(data)
                    refs.append(self._place(data))
                    size += len(data)
                    progress.advance(len(data))
        except FileNotFoundError:
            raise InputError(
                f"{source} was added but no longer exists: add it again or remove it"
            ) from None
        except OSError as exc:
            raise InputError(f"cannot read {source}: {exc.strerror}") from None
        self.stats.files_hashed += 1
        self.stats.bytes_hashed += size
        return hasher.digest_id(), size, refs, st

    def _place(self, data: bytes) -> PendingRef | ChunkRef:
        cid = chunk_id(data)
        placed = self._placed.get(cid)
        if placed is not None:
            self.stats.chunks_reused += 1
            return placed
        location = self.repo.cache.index.chunk_location(self.store_id, id_to_bytes(cid))
        self._lookups += 1
        if self._lookups % RELEASE_EVERY == 0:
            # chunk ids are random: each lookup touches another page of the
            # index's chunk table; let them go (they stay in the page cache)
            self.repo.cache.index.release_pages()
        if location is not None:
            pack_raw, offset, length = location
            pack = pack_raw.hex()
            self._reused_packs.add(pack)
            self.stats.chunks_reused += 1
            return ChunkRef(cid, pack, offset, length)
        entry = self._builder.add(cid, data)
        ref = PendingRef(cid, self._seq, entry.offset, entry.length)
        self.stats.chunks_new += 1
        self._placed[cid] = ref
        size, chunks = len(self._builder), self._builder.chunk_count
        if ((size >= self._pack_size
             and (chunks >= PACK_MIN_CHUNKS or size < BIG_CHUNK * chunks))
                or size >= self._pack_max or chunks >= MAX_PACK_CHUNKS):
            self._flush()
        return ref

    def _flush(self) -> None:
        if self._builder.chunk_count == 0:
            return
        pack_id, data, entries = self._builder.finish()
        seq = self._seq
        self._pack_ids[seq] = pack_id
        self._seq += 1
        self._builder = PackBuilder()
        self._slots.acquire()

        def upload() -> None:
            try:
                if not self.repo.store.exists(pack_key(pack_id)):
                    self.repo.store.put(pack_key(pack_id), data)
                    with self._stats_lock:
                        self.stats.bytes_uploaded += len(data)
                        self.stats.packs_uploaded += 1
                self._hold.lock.fresh_packs.add(pack_id)
                with self._stats_lock:
                    self._uploaded.append((seq, pack_id, entries))
            finally:
                self._slots.release()

        self._futures.append(self._pool.submit(upload))
        # Surface an upload failure early instead of hashing on for nothing.
        running = []
        for future in self._futures:
            if future.done():
                future.result()
            else:
                running.append(future)
        self._futures = running
        self._record_uploaded()

    def _record_uploaded(self) -> None:
        """Record the chunks of uploaded packs in the cache index and stop
        holding them: a later duplicate is found there."""
        with self._stats_lock:
            uploaded, self._uploaded = self._uploaded, []
        sid = self.store_id
        for seq, pack_id, entries in uploaded:
            self.repo.cache.index.add_pack(
                sid, bytes.fromhex(pack_id),
                ((id_to_bytes(e.chunk_id), e.offset, e.length) for e in entries),
            )
            for e in entries:
                ref = self._placed.get(e.chunk_id)
                if ref is not None and ref.pack_seq == seq:
                    del self._placed[e.chunk_id]
        if uploaded:
            self.repo.cache.index.release_pages()  # the pages these writes touched

    def finish(self) -> None:
        """Upload the last pack and wait for every upload; raise the first failure."""
        try:
            self._flush()
            for future in self._futures:
                future.result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._record_uploaded()

    def abort(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._hold.release()

    def pack_id(self, seq: int) -> str:
        """The id of the ``seq``-th pack of this run (known once it is full)."""
        return self._pack_ids[seq]

    def resolve(self, refs: list) -> tuple[ChunkRef, ...]:
        out = []
        for ref in refs:
            if isinstance(ref, PendingRef):
                ref = ChunkRef(ref.chunk_id, self._pack_ids[ref.pack_seq], ref.offset, ref.length)
            out.append(ref)
        return tuple(out)

    @property
    def reused_packs(self) -> set[str]:
        """Packs from earlier uploads that the new version will reference."""
        return set(self._reused_packs)
