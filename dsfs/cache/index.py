"""The LMDB index of the local cache; the only module that imports lmdb.

One environment per cache directory, opened once per process (LMDB forbids a
second open of the same environment in one process) and shared by threads.
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
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import lmdb

from dsfs.errors import IntegrityError

_CHUNK = struct.Struct("<QQ")
_LOCATION = struct.Struct("<16sQQ")
_COUNT = struct.Struct("<Q")
_COPY_KEY = struct.Struct("<16sIq")

#: Virtual size of the map; LMDB only uses what it needs on disk.
MAP_SIZE = 1 << 36

_envs: dict[str, lmdb.Environment] = {}
_envs_lock = threading.Lock()


def _open_env(path: Path) -> lmdb.Environment:
    key = str(path.resolve())
    with _envs_lock:
        env = _envs.get(key)
        if env is None:
            path.mkdir(parents=True, exist_ok=True)
            try:
                env = lmdb.open(
                    key, map_size=MAP_SIZE, max_dbs=8, subdir=True, sync=False,
                    metasync=False, readahead=False, max_readers=512,
                )
            except lmdb.Error as exc:
                raise IntegrityError(
                    f"the cache index at {key} cannot be opened ({exc}); "
                    "remove that directory and dsfs will rebuild it"
                ) from None
            _envs[key] = env
        return env


class CacheIndex:
    """Typed access to the cache's LMDB tables."""

    def __init__(self, directory: Path) -> None:
        self.env = _open_env(directory)
        self._chunks = self.env.open_db(b"chunks")
        self._store_chunks = self.env.open_db(b"store_chunks")
        self._store_packs = self.env.open_db(b"store_packs")
        self._copies = self.env.open_db(b"copies")

    def sync(self) -> None:
        self.env.sync(True)

    # -- chunks ------------------------------------------------------------

    def chunk_size(self, digest: bytes) -> int | None:
        with self.env.begin(db=self._chunks) as txn:
            value = txn.get(digest)
        return None if value is None else _CHUNK.unpack(value)[0]

    def add_chunks(self, items: Iterable[tuple[bytes, int]]) -> None:
        now = int(time.time())
        with self.env.begin(db=self._chunks, write=True) as txn:
            for digest, size in items:
                txn.put(digest, _CHUNK.pack(size, now))

    def touch_chunks(self, digests: Iterable[bytes]) -> None:
        now = int(time.time())
        with self.env.begin(db=self._chunks, write=True) as txn:
            for digest in digests:
                value = txn.get(digest)
                if value is not None:
                    txn.put(digest, _CHUNK.pack(_CHUNK.unpack(value)[0], now))

    def forget_chunks(self, digests: Iterable[bytes]) -> None:
        with self.env.begin(db=self._chunks, write=True) as txn:
            for digest in digests:
                txn.delete(digest)

    def iter_chunks(self) -> Iterator[tuple[bytes, int, int]]:
        """(digest, size, last access) of every indexed chunk."""
        with self.env.begin(db=self._chunks) as txn:
            for key, value in txn.cursor():
                size, atime = _CHUNK.unpack(value)
                yield bytes(key), size, atime

    def clear_chunks(self) -> None:
        with self.env.begin(write=True) as txn:
            txn.drop(self._chunks, delete=False)
            txn.drop(self._copies, delete=False)

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
        with self.env.begin(write=True) as txn:
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
        with self.env.begin(write=True) as txn:
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
        with self.env.begin(db=self._copies, write=True) as txn:
            for digest, mode, mtime_ns, path in items:
                txn.put(_COPY_KEY.pack(digest, mode, mtime_ns),
                        path.encode("utf-8", "surrogateescape"))


def index_dir(cache_root: Path) -> Path:
    return cache_root / "index"


def remove_index(cache_root: Path) -> None:
    """Delete the LMDB files (the index is rebuilt from chunk files)."""
    directory = index_dir(cache_root)
    with _envs_lock:
        env = _envs.pop(str(directory.resolve()), None)
    if env is not None:
        env.close()
    for name in ("data.mdb", "lock.mdb"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(directory / name)
