"""The LMDB index of the local cache: its tables and their typed access.

One environment per cache directory, opened once per process and shared by
threads (``dsfs.cache.lmdbenv``, the only module that imports lmdb).
Many processes may read at once; LMDB serializes writers with its own lock.
Every table is derived data: it can be rebuilt from the chunk files and the
store, so writes are batched and not synced one by one.

Tables (all integers little-endian):

``chunks``
    key: raw xxh3-128 digest of a chunk (16 bytes)
    value: size u64 | last access, seconds since the epoch u64
    A chunk file ``chunks/<2 hex>/<32 hex>`` exists and was verified when written.

``store_chunks``
    key: store id (16 bytes, from the store's config) | raw chunk digest (16)
    value: raw pack id (16) | offset u64 | length u64
    Where a store holds a chunk; used to skip uploading what is already stored.

``store_packs``
    key: store id (16) | raw pack id (16)
    value: number of chunks u64
    Packs whose index is already merged into ``store_chunks``.

``copies``
    key: raw file digest (16) | mode u32 | mtime ns i64
    value: UTF-8 path of a finished read-only copy of such a file
    Lets ``get`` hard-link an unchanged file instead of writing it again.

``counters``
    key: ASCII name (``gets``, ``fetched_bytes``, ``read_bytes``, ``span_fetches``,
    ``shuffled_spans``)
    value: u64, a running total since the cache was made or its counters cleared
    What the fetch path did, summed over every process (``dsfs cache stats``);
    processes add their counts in batches.

``pack_misses``
    key: raw pack id (16)
    value: misses u32 | first miss of the current run, seconds since the epoch u64
    Cold reads of lone chunks that landed in a pack, over every process, for
    the pack span policy (``dsfs.content.spans``); a run older than the
    policy's window starts again at one, a pack fetched whole is removed, and
    runs older than the window are removed whenever the cache is pruned.

``span_scopes``
    key: a scope (the id of the version being read, ASCII)
    value: packs u32 | first pack of the current run, seconds since the epoch u64
    Packs of that version in which a run of cold lone reads began (a shuffled
    reader touches many), over every process; a run older than the policy's
    window starts again (and is removed when the cache is pruned).

Tables ``tree_versions``, ``tree_deltas``, ``tree_dirs``, ``tree_listings`` and
``tree_heads`` hold version trees, one directory at a time;
``dsfs.cache.treetables`` documents them.
"""

from __future__ import annotations

import contextlib
import os
import struct
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from dsfs.cache import lmdbenv
from dsfs.cache.lmdbenv import Database, Transaction
from dsfs.cache.treetables import TreeTables

_CHUNK = struct.Struct("<QQ")
_LOCATION = struct.Struct("<16sQQ")
_COUNT = struct.Struct("<Q")
_COPY_KEY = struct.Struct("<16sIq")
_MISSES = struct.Struct("<IQ")


class CacheIndex(TreeTables):
    """Typed access to the cache's LMDB tables."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._open()
        lmdbenv.track(self)

    def _open(self) -> None:
        self.env = lmdbenv.open_env(self.directory)
        self._chunks = self.env.open_db(b"chunks")
        self._store_chunks = self.env.open_db(b"store_chunks")
        self._store_packs = self.env.open_db(b"store_packs")
        self._copies = self.env.open_db(b"copies")
        self._tree_versions = self.env.open_db(b"tree_versions")
        self._tree_deltas = self.env.open_db(b"tree_deltas")
        self._tree_dirs = self.env.open_db(b"tree_dirs")
        self._tree_listings = self.env.open_db(b"tree_listings")
        self._tree_heads = self.env.open_db(b"tree_heads")
        self._counters = self.env.open_db(b"counters")
        self._pack_misses = self.env.open_db(b"pack_misses")
        self._span_scopes = self.env.open_db(b"span_scopes")

    def _write(self, db: Database | None = None
               ) -> contextlib.AbstractContextManager[Transaction]:
        return lmdbenv.write_txn(self.env, db)

    def sync(self) -> None:
        self.env.sync(True)

    def release_pages(self) -> None:
        """Drop this process's resident pages of the map (``lmdbenv.release_pages``)."""
        lmdbenv.release_pages(self.env)

    # -- chunks ------------------------------------------------------------

    def chunk_size(self, digest: bytes) -> int | None:
        with self.env.begin(db=self._chunks) as txn:
            value = txn.get(digest)
        return None if value is None else _CHUNK.unpack(value)[0]

    def add_chunks(self, items: Iterable[tuple[bytes, int]]) -> None:
        now = int(time.time())
        with self._write(self._chunks) as txn:
            for digest, size in items:
                txn.put(digest, _CHUNK.pack(size, now))

    def touch_chunks(self, digests: Iterable[bytes]) -> None:
        now = int(time.time())
        with self._write(self._chunks) as txn:
            for digest in digests:
                value = txn.get(digest)
                if value is not None:
                    txn.put(digest, _CHUNK.pack(_CHUNK.unpack(value)[0], now))

    def forget_chunks(self, digests: Iterable[bytes]) -> None:
        with self._write(self._chunks) as txn:
            for digest in digests:
                txn.delete(digest)

    def has_any_chunk(self) -> bool:
        with self.env.begin(db=self._chunks) as txn:
            return bool(txn.stat(self._chunks)["entries"])

    def cached_chunks(self, digests: Iterable[bytes]) -> set[bytes]:
        """Which of ``digests`` the chunk table holds (one transaction)."""
        with self.env.begin(db=self._chunks) as txn:
            return {d for d in digests if txn.get(d) is not None}

    def iter_chunks(self) -> Iterator[tuple[bytes, int, int]]:
        """(digest, size, last access) of every indexed chunk."""
        with self.env.begin(db=self._chunks) as txn:
            for key, value in txn.cursor():
                size, atime = _CHUNK.unpack(value)
                yield bytes(key), size, atime

    def clear_chunks(self) -> None:
        with self._write() as txn:
            txn.drop(self._chunks, delete=False)
            txn.drop(self._copies, delete=False)

    # -- counters and pack misses --------------------------------------------

    def add_counters(self, deltas: dict[str, int]) -> None:
        """Add to the running totals of the ``counters`` table."""
        with self._write(self._counters) as txn:
            for name, delta in deltas.items():
                if delta:
                    old = txn.get(name.encode())
                    total = _COUNT.unpack(old)[0] if old is not None else 0
                    txn.put(name.encode(), _COUNT.pack(total + delta))

    def counters(self) -> dict[str, int]:
        with self.env.begin(db=self._counters) as txn:
            return {bytes(k).decode(): _COUNT.unpack(v)[0] for k, v in txn.cursor()}

    def clear_counters(self) -> None:
        with self._write() as txn:
            txn.drop(self._counters, delete=False)
            txn.drop(self._pack_misses, delete=False)
            txn.drop(self._span_scopes, delete=False)

    def note_pack_miss(self, pack_id: bytes, window: float, scope: bytes = b"",
                       evidence: bool = False) -> tuple[int, int]:
        """Count one more cold lone read in a pack; return the misses of its
        current run (a run whose first miss is older than ``window`` seconds
        starts again) and the packs of ``scope`` in which a run began within
        ``window`` (this one counted if it begins one and ``evidence`` says the
        read may count: a reader's own, not at the start of a pack)."""
        now = int(time.time())
        with self._write() as txn:
            old = txn.get(pack_id, db=self._pack_misses)
            count, first = _MISSES.unpack(old) if old is not None else (0, now)
            if now - first > window:
                count, first = 0, now
            txn.put(pack_id, _MISSES.pack(count + 1, first), db=self._pack_misses)
            packs = 0
            if scope:
                old = txn.get(scope, db=self._span_scopes)
                packs, began = _MISSES.unpack(old) if old is not None else (0, now)
                if now - began > window:
                    packs, began = 0, now
                if evidence and count == 0:
                    packs += 1
                    txn.put(scope, _MISSES.pack(packs, began), db=self._span_scopes)
        return count + 1, packs

    def expire_pack_runs(self, window: float) -> int:
        """Remove the ``pack_misses`` and ``span_scopes`` rows whose run began
        more than ``window`` seconds ago: they would start again anyway, and
        without this both tables keep a row per pack and version ever read.
        Returns the rows removed."""
        cutoff = int(time.time()) - window
        removed = 0
        with self._write() as txn:
            for db in (self._pack_misses, self._span_scopes):
                cursor = txn.cursor(db=db)
                stale = [bytes(key) for key, value in cursor
                         if _MISSES.unpack(value)[1] < cutoff]
                for key in stale:
                    txn.delete(key, db=db)
                removed += len(stale)
        return removed

    def forget_pack_misses(self, pack_id: bytes) -> None:
        with self._write(self._pack_misses) as txn:
            txn.delete(pack_id)

    # -- what a store holds --------------------------------------------------

    def known_packs(self, store_id: bytes) -> set[bytes]:
        found = set()
        with self.env.begin(db=self._store_packs) as txn:
            cursor = txn.cursor()
            if cursor.set_range(store_id):
                for key in cursor.iternext(values=False):
                    if key[:16] != store_id:
                        break
                    found.add(bytes(key[16:]))
        return found

    def add_pack(
        self, store_id: bytes, pack_id: bytes, entries: Iterable[tuple[bytes, int, int]]
    ) -> None:
        """Record a pack's index: (chunk digest, offset, length) per chunk."""
        count = 0
        with self._write() as txn:
            for digest, offset, length in entries:
                txn.put(store_id + digest, _LOCATION.pack(pack_id, offset, length),
                        db=self._store_chunks)
                count += 1
            txn.put(store_id + pack_id, _COUNT.pack(count), db=self._store_packs)

    def forget_packs(self, store_id: bytes, pack_ids: Iterable[bytes]) -> None:
        """Drop packs (deleted from the store) and every chunk location in them."""
        doomed = set(pack_ids)
        if not doomed:
            return
        with self._write() as txn:
            for pack_id in doomed:
                txn.delete(store_id + pack_id, db=self._store_packs)
            cursor = txn.cursor(db=self._store_chunks)
            stale = []
            if cursor.set_range(store_id):
                for key, value in cursor:
                    if key[:16] != store_id:
                        break
                    if bytes(value[:16]) in doomed:
                        stale.append(bytes(key))
            for key in stale:
                txn.delete(key, db=self._store_chunks)

    def chunk_location(self, store_id: bytes, digest: bytes) -> tuple[bytes, int, int] | None:
        with self.env.begin(db=self._store_chunks) as txn:
            value = txn.get(store_id + digest)
        if value is None:
            return None
        pack_id, offset, length = _LOCATION.unpack(value)
        return pack_id, offset, length

    # -- finished copies -------------------------------------------------------

    def copy_of(self, digest: bytes, mode: int, mtime_ns: int) -> str | None:
        with self.env.begin(db=self._copies) as txn:
            value = txn.get(_COPY_KEY.pack(digest, mode, mtime_ns))
        return None if value is None else bytes(value).decode("utf-8", "surrogateescape")

    def add_copies(self, items: Iterable[tuple[bytes, int, int, str]]) -> None:
        with self._write(self._copies) as txn:
            for digest, mode, mtime_ns, path in items:
                txn.put(_COPY_KEY.pack(digest, mode, mtime_ns),
                        path.encode("utf-8", "surrogateescape"))


def index_dir(cache_root: Path) -> Path:
    return cache_root / "index"


def remove_index(cache_root: Path) -> None:
    """Delete the LMDB files (the index is rebuilt from chunk files)."""
    directory = index_dir(cache_root)
    lmdbenv.close_env(directory)
    for name in ("data.mdb", "lock.mdb"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(directory / name)
