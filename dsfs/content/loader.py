"""Bringing one chunk into the cache, in a worker thread (``ChunkLoader``).

The reader (``dsfs.content.reader``) decides what to fetch and runs this in a
thread; here: verify the cached copy (a corrupt one is discarded and fetched
again, never served), else fetch the chunk (with its scan window, in one
ranged read) with retries and back-off, or its whole pack when the pack span
policy (``dsfs.content.spans``) says so.  A window whose fetch fails is
retried as the one chunk, so a neighbour that is corrupt in the store fails
only its own read.  Touches the cache and the store, nothing above them.
"""

from __future__ import annotations

import logging
import threading
import time

from dsfs.cache.chunks import ChunkCache
from dsfs.content.spans import NO_SPANS, SpanPolicy
from dsfs.errors import DiskFullError, DsfsError, LocalError, StoreError
from dsfs.format.digest import chunk_id, id_to_bytes
from dsfs.format.manifest import ChunkRef
from dsfs.format.pack import HEADER_SIZE
from dsfs.store.base import Store
from dsfs.store.external import is_external

log = logging.getLogger("dsfs.mount.reader")

#: Delays before the second, third, ... attempt of a failed fetch (seconds).
RETRY_DELAYS = (0.2, 0.5, 1.0)
#: Whole-pack fetches one process runs at once: each holds its pack in memory
#: (up to about 40 MiB).  A mount serves many readers from one process, and
#: with fewer its shuffled readers wait on each other's packs (4 were measured
#: slower than 8 readers in 8 processes).
SPAN_FETCHES = 8


class ChunkLoader:
    """Verifies or fetches chunks into the cache; its methods run in worker threads."""

    def __init__(self, cache: ChunkCache, store: Store, spans: SpanPolicy = NO_SPANS) -> None:
        self.cache = cache
        self.store = store
        self.spans = spans
        #: Record the cache's counters after every fetch (``_flush_counters``).
        self.eager_counters = False
        #: Fetches from the store so far.
        self.fetches = 0
        self._span_slots = threading.BoundedSemaphore(SPAN_FETCHES)
        #: Packs this process is fetching whole, and the event set when done:
        #: another read of the same pack waits for it without taking a slot.
        self._packs_running: dict[str, threading.Event] = {}
        self._packs_lock = threading.Lock()
        #: Chunks cached by this process's whole-pack fetches, verified on the
        #: way in, that the reader has not taken yet (``take_verified``).
        self._verified: list[str] = []

    def load(self, ref: ChunkRef, window: list[ChunkRef] | None = None,
             own: bool = False) -> int:
        """Verify the cached copy of ``ref``, or fetch it (with the chunks of its
        scan window, in one ranged read) with retries; the bytes downloaded.
        ``own``: a reader asked for the chunk (not readahead), so the policy
        may count the miss as a sign of shuffled reads."""
        cid = ref.chunk_id
        path = self.cache.chunk_path(cid)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = None
        if data is not None:
            if chunk_id(data) == cid:
                if not self.cache.has(cid):  # index lost or cleared: re-record it
                    self.cache.index.add_chunks([(id_to_bytes(cid), len(data))])
                return 0
            log.warning("cached chunk %s is corrupt; discarding it and fetching again", cid)
            self.cache.discard([cid])
        elif self.cache.has(cid):
            self.cache.discard([cid])  # indexed but its file is gone
        # an external object has no pack index to span: its chunks are fetched alone
        if not window and self.spans.enabled and not is_external(ref.pack_id):
            spanned = self._span(ref, own)
            if spanned is not None:
                return spanned
        delays = (0.0, *RETRY_DELAYS)
        for attempt, delay in enumerate(delays, 1):
            time.sleep(delay)
            try:
                fetched = self.cache.fetch(self.store, [ref, *(window or ())])
                self.fetches += 1
                self._flush_counters()
                return fetched
            except DsfsError as exc:
                if attempt == len(delays):
                    if isinstance(exc, DiskFullError | LocalError):
                        raise  # a full or unusable cache is not the store's failure
                    raise StoreError(
                        f"cannot fetch chunk {cid} from {self.store.url} after "
                        f"{attempt} attempts: {exc}") from None
                log.warning("fetch of chunk %s failed (attempt %d of %d): %s",
                            cid, attempt, len(delays), exc)
                # the next attempts fetch this chunk alone: a neighbour that is
                # corrupt in the store must not fail the read of a sound file
                window = None
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _span(self, ref: ChunkRef, own: bool) -> int | None:
        """Count a cold lone read in ``ref``'s pack and, when the policy says
        so, fetch the whole pack; the bytes downloaded if ``ref`` is now
        cached, None if not.  A span that fails leaves the chunk to the usual
        fetch."""
        raw = bytes.fromhex(ref.pack_id)
        policy = self.spans
        try:
            misses, packs = self.cache.index.note_pack_miss(
                raw, policy.seconds, policy.scope.encode(),
                evidence=own and ref.offset != HEADER_SIZE)
            if not policy.whole_pack(misses, packs):
                return None
            with self._packs_lock:
                running = self._packs_running.get(ref.pack_id)
                leader = running is None
                if running is None:
                    running = self._packs_running[ref.pack_id] = threading.Event()
            if not leader:
                running.wait()
                return 0 if self.cache.has(ref.chunk_id) else None
            try:
                with self._span_slots:
                    cached: list[str] = []
                    fetched = self.cache.fetch_pack(self.store, ref, cached)
                with self._packs_lock:
                    self._verified += cached
            finally:
                with self._packs_lock:
                    del self._packs_running[ref.pack_id]
                running.set()
            self.cache.index.forget_pack_misses(raw)
            if fetched and misses < policy.after:  # at the first touch: shuffled
                self.cache.count(shuffled_spans=1)
        except DsfsError as exc:
            log.info("whole-pack fetch for chunk %s failed, fetching the chunk: %s",
                     ref.chunk_id, exc)
            return None
        self.fetches += 1
        self._flush_counters()
        return fetched

    def take_verified(self) -> list[str]:
        """The chunks whole-pack fetches cached (and verified) since the last
        call: the reader serves them without reading and hashing them again."""
        with self._packs_lock:
            verified, self._verified = self._verified, []
        return verified

    def _flush_counters(self) -> None:
        """With ``eager_counters``, add the counts of a fetch to the index at once
        (a loader's worker may be killed rather than closed); a mount adds them
        every few seconds and at unmount."""
        if not self.eager_counters:
            return
        try:
            self.cache.flush_counters()
        except DsfsError as exc:  # counts are kept for the next flush
            log.debug("counters not recorded: %s", exc)
