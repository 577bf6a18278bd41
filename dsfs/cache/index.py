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

``tree_versions``
    key: raw version id (16)
    value: entries u64 | newest mtime ns i64 | snapshot u8 | parent count u8 |
    raw parent ids (16 each) | 2 u8 (present when the delta was indexed with
    ``TOUCHED`` marks; indexes made before lack it)
    Written last, once every record of the version's delta is in ``tree_deltas``:
    its presence means the manifest need not be read again by any process.

``tree_deltas``
    key: raw version id (16) | dir key (16) | name (UTF-8, surrogate escapes as
    the raw bytes)
    value: flags u8 (``CUT`` 1: the delta removes this path or puts a file or
    symlink there, and with it whatever the parents had below it; ``IMPLIED`` 2:
    the delta has entries below this path; ``HAS_ENTRY`` 4: an encoded entry
    follows; ``TOUCHED`` 8: the delta removes something below this path) |
    encoded entry if ``HAS_ENTRY``
    One version's delta (its manifest's entries), grouped by directory.  The dir
    key is the xxh3-128 digest of the directory's path ("" for the root), which
    keeps keys within LMDB's 511 bytes; the names under one dir key come out of a
    cursor in byte order.  An encoded entry (``dsfs.engine.treeindex``) is
    kind u8 | mode u32 | mtime ns i64 | size u64, then for a file: raw digest (16)
    | chunk count u32 | per chunk: raw chunk id (16) | raw pack id (16) |
    offset u64 | length u64; for a symlink: the target's bytes.

``tree_dirs``
    key: raw version id (16) | dir key (16)
    value: form u8 (1: the listing is ``owner``'s delta records for this dir;
    2: it is stored in ``tree_listings`` under ``owner``; 3: an overlay, the
    base listing below with the changes stored in ``tree_listings`` under
    ``owner`` applied) | raw owner version id (16) | count u16 | count ×
    parent index u16 (the parents whose trees still reach into this dir, in
    order; see ``DirRecord.bases``) | for form 3 only: base form u8 | raw
    base owner (16) | overlays stacked u8 (this one included; at most
    ``treedirs.MAX_OVERLAY_DEPTH``).  A form-3 base is read through the
    base owner's own record for the dir (which names the next base).
    The memoized, resolved listing of one directory of one version: present
    only for paths that are directories of that version's tree.  ``owner`` is
    often an ancestor whose listing this version shares unchanged.

``tree_listings``
    key: raw version id (16) | dir key (16) | name
    value: encoded entry (as in ``tree_deltas``)
    A resolved listing that no single delta holds (a merge of parents, or a
    parent's listing with the version's changes), or an overlay's changes
    (an empty value: the name is removed); written before the ``tree_dirs``
    record that points at it.

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
    policy's window starts again at one, a pack fetched whole is removed.

``span_scopes``
    key: a scope (the id of the version being read, ASCII)
    value: packs u32 | first pack of the current run, seconds since the epoch u64
    Packs of that version in which a run of cold lone reads began (a shuffled
    reader touches many), over every process; a run older than the policy's
    window starts again.

The four ``tree_*`` tables are keyed by version first, so forgetting a version
is a range delete (``forget_tree_versions``), and ``clear_trees`` empties
them all.  A version's records may point at an ancestor's (``tree_dirs``
owners), so whoever forgets a version also forgets the versions that depend
on it (``dsfs.engine.treeindex.forget_trees`` decides which); a mount that is
running keeps its memo in memory and needs its records, so ``dsfs cache
clear`` and ``prune`` leave the trees of mounted versions alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import lmdb

from dsfs.errors import DiskFullError, DsfsError, IntegrityError, LocalError, local_os_error
from dsfs.fsutil import write_temp

_CHUNK = struct.Struct("<QQ")
_LOCATION = struct.Struct("<16sQQ")
_COUNT = struct.Struct("<Q")
_COPY_KEY = struct.Struct("<16sIq")
_MISSES = struct.Struct("<IQ")

#: Puts per write transaction when indexing trees: one transaction per put costs
#: a commit each; a thousand amortize it (about 84,000 puts a second here).
BATCH = 1000

#: Virtual size of the map; LMDB only uses what it needs on disk.
MAP_SIZE = 1 << 36

#: ``madvise`` advice letting the kernel drop a mapping's pages (they are read
#: again from the page cache, or the file, on the next touch).
_MADV_DONTNEED = 4

_envs: dict[str, lmdb.Environment] = {}
_envs_lock = threading.Lock()
#: Every ``CacheIndex`` of this process, to reopen in a forked child.
_indexes: weakref.WeakSet[CacheIndex] = weakref.WeakSet()


def _reopen_after_fork() -> None:
    """In a forked child (a data loader's worker): LMDB forbids using the
    parent's environments, so close the inherited ones (closing touches only
    this process's reader slots and file handles) and reopen every index."""
    global _envs_lock
    inherited = list(_envs.values())
    _envs.clear()
    _envs_lock = threading.Lock()
    for env in inherited:
        with contextlib.suppress(Exception):
            env.close()
    for index in list(_indexes):
        with contextlib.suppress(Exception):
            index._open()


os.register_at_fork(after_in_child=_reopen_after_fork)


def _open_env(path: Path) -> lmdb.Environment:
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
                    raise _write_error(exc, path) from None
                raise IntegrityError(
                    f"the cache index at {key} cannot be opened ({exc}); "
                    "remove that directory and dsfs will rebuild it"
                ) from None
            _envs[key] = env
        return env


#: Readers LMDB makes room for, and the size of its lock file for that many.
MAX_READERS = 512
LOCK_FILE_SIZE = (MAX_READERS - 1) * 64 + 192


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


class CacheIndex:
    """Typed access to the cache's LMDB tables."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._open()
        _indexes.add(self)

    def _open(self) -> None:
        self.env = _open_env(self.directory)
        self._chunks = self.env.open_db(b"chunks")
        self._store_chunks = self.env.open_db(b"store_chunks")
        self._store_packs = self.env.open_db(b"store_packs")
        self._copies = self.env.open_db(b"copies")
        self._tree_versions = self.env.open_db(b"tree_versions")
        self._tree_deltas = self.env.open_db(b"tree_deltas")
        self._tree_dirs = self.env.open_db(b"tree_dirs")
        self._tree_listings = self.env.open_db(b"tree_listings")
        self._counters = self.env.open_db(b"counters")
        self._pack_misses = self.env.open_db(b"pack_misses")
        self._span_scopes = self.env.open_db(b"span_scopes")

    @contextlib.contextmanager
    def _write(self, db: lmdb._Database | None = None) -> Iterator[lmdb.Transaction]:
        """A write transaction whose failure to commit (a full disk, an
        unwritable directory) raises a DsfsError naming the cache index."""
        try:
            with self.env.begin(db=db, write=True) as txn:
                yield txn
        except lmdb.Error as exc:
            raise _write_error(exc, Path(self.env.path())) from None

    def sync(self) -> None:
        self.env.sync(True)

    def release_pages(self) -> None:
        """Drop this process's resident pages of the LMDB map.

        LMDB reads through a shared, read-only mapping of ``data.mdb``: every
        page a reader touches stays resident in the process (and counts in its
        RSS) until the kernel reclaims it.  A mount that walks a big tree
        touches the whole tree; calling this now and then keeps its resident
        set to what it touched since.  Safe at any time, also while other
        threads read: the pages are file-backed and never written through the
        map, so a later touch faults them in again from the page cache.
        """
        span = _map_span(self.env.path())
        if span is not None and _libc is not None:
            start, length = span
            _libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(length), _MADV_DONTNEED)

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

    # -- version trees, one directory at a time --------------------------------

    def tree_version(self, version_id: bytes) -> bytes | None:
        """The ``tree_versions`` record of a version whose delta is indexed, or None."""
        with self.env.begin(db=self._tree_versions) as txn:
            value = txn.get(version_id)
        return None if value is None else bytes(value)

    def merge_tree_delta(self, version_id: bytes,
                         records: Iterable[tuple[bytes, bytes, bytes]],
                         merge: Callable[[bytes, bytes], bytes]) -> None:
        """Add (dir key, name, record) triples to ``tree_deltas``, ``BATCH`` per
        transaction; a record already there is combined as ``merge(old, new)``.

        ``merge`` must be idempotent and order-free (flags or-ed, an entry
        replacing none): then a second process indexing the same manifest, or a
        retry after a crash half-way, leaves exactly what one clean pass would.
        """
        batch: list[tuple[bytes, bytes]] = []

        def flush() -> None:
            with self._write(self._tree_deltas) as txn:
                for key, value in batch:
                    if not txn.put(key, value, overwrite=False):
                        old = txn.get(key)
                        assert old is not None  # put refused: the key is there
                        txn.put(key, merge(bytes(old), value))
            batch.clear()

        for dir_key, name, record in records:
            batch.append((version_id + dir_key + name, record))
            if len(batch) >= BATCH:
                flush()
        if batch:
            flush()

    def merge_tree_records(self, records: Iterable[tuple[bytes, bytes]],
                           merge: Callable[[bytes, bytes], bytes],
                           batch_size: int = 16 * BATCH) -> None:
        """``merge_tree_delta`` for (whole key, record) pairs, in bigger
        transactions, each sorted by key first (LMDB inserts in key order touch
        fewer pages); the same idempotent ``merge`` rules."""
        batch: list[tuple[bytes, bytes]] = []

        def flush() -> None:
            batch.sort(key=_first)  # stable: a key's records keep their order
            with self._write(self._tree_deltas) as txn:
                put, get = txn.put, txn.get
                for key, value in batch:
                    if not put(key, value, overwrite=False):
                        old = get(key)
                        assert old is not None  # put refused: the key is there
                        put(key, merge(bytes(old), value))
            batch.clear()
            # the B-tree pages the puts walked stay resident in this process
            # otherwise: ~200 MiB for a million records (see release_pages)
            self.release_pages()

        append = batch.append
        for item in records:
            append(item)
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()

    def finish_tree_delta(self, version_id: bytes, summary: bytes) -> None:
        """Mark a version's delta as completely indexed (see ``tree_versions``)."""
        with self._write(self._tree_versions) as txn:
            txn.put(version_id, summary)

    def tree_delta_record(self, version_id: bytes, dir_key: bytes, name: bytes
                          ) -> bytes | None:
        with self.env.begin(db=self._tree_deltas) as txn:
            value = txn.get(version_id + dir_key + name)
        return None if value is None else bytes(value)

    def tree_delta_listing(self, version_id: bytes, dir_key: bytes
                           ) -> list[tuple[bytes, bytes]]:
        """(name, record) of each delta record directly below one directory."""
        return self._prefix_items(self._tree_deltas, version_id + dir_key)

    def has_tree_delta_listing(self, version_id: bytes, dir_key: bytes) -> bool:
        prefix = version_id + dir_key
        with self.env.begin(db=self._tree_deltas) as txn:
            cursor = txn.cursor()
            return cursor.set_range(prefix) and cursor.key()[: len(prefix)] == prefix

    def tree_dir(self, version_id: bytes, dir_key: bytes) -> bytes | None:
        with self.env.begin(db=self._tree_dirs) as txn:
            value = txn.get(version_id + dir_key)
        return None if value is None else bytes(value)

    def put_tree_dir(self, version_id: bytes, dir_key: bytes, record: bytes,
                     listing: Iterable[tuple[bytes, bytes]] = ()) -> None:
        """Memoize a resolved directory: its listing (if stored) in batches, then
        the ``tree_dirs`` record, so that a reader who finds the record finds the
        whole listing.  Writing the same resolution twice is harmless."""
        prefix = version_id + dir_key
        batch: list[tuple[bytes, bytes]] = []
        for name, value in listing:
            batch.append((prefix + name, value))
            if len(batch) >= BATCH:
                self._put_all(self._tree_listings, batch)
                batch.clear()
        with self._write() as txn:
            for key, value in batch:
                txn.put(key, value, db=self._tree_listings)
            txn.put(prefix, record, db=self._tree_dirs)

    def tree_version_ids(self) -> set[bytes]:
        """Every version with a record in any ``tree_*`` table (also half-indexed ones)."""
        found: set[bytes] = set()
        with self.env.begin() as txn:
            for db in self._tree_tables():
                cursor = txn.cursor(db=db)
                if not cursor.first():
                    continue
                while True:
                    vid = bytes(cursor.key()[:16])
                    found.add(vid)
                    # skip to the first key of the next version
                    if not cursor.set_range(vid + b"\xff" * 495):
                        break
                    if cursor.key()[:16] == vid and not cursor.next():
                        break
        return found

    def forget_tree_versions(self, version_ids: Iterable[bytes]) -> None:
        """Delete every ``tree_*`` record of these versions, one transaction each
        (the ``tree_versions`` mark first: a reader then indexes it again)."""
        for vid in version_ids:
            with self._write() as txn:
                for db in self._tree_tables():
                    cursor = txn.cursor(db=db)
                    if cursor.set_range(vid):
                        while cursor.key()[:16] == vid:
                            if not cursor.delete():
                                break

    def clear_trees(self) -> None:
        """Empty the four ``tree_*`` tables."""
        with self._write() as txn:
            for db in self._tree_tables():
                txn.drop(db, delete=False)

    def _tree_tables(self) -> tuple[lmdb._Database, ...]:
        return (self._tree_versions, self._tree_dirs, self._tree_listings,
                self._tree_deltas)

    def tree_listing_record(self, version_id: bytes, dir_key: bytes, name: bytes
                            ) -> bytes | None:
        with self.env.begin(db=self._tree_listings) as txn:
            value = txn.get(version_id + dir_key + name)
        return None if value is None else bytes(value)

    def tree_listing(self, version_id: bytes, dir_key: bytes) -> list[tuple[bytes, bytes]]:
        """(name, encoded entry) of a stored listing, in name order."""
        return self._prefix_items(self._tree_listings, version_id + dir_key)

    def tree_listing_range(self, version_id: bytes, dir_key: bytes, start: bytes, limit: int,
                           delta: bool) -> list[tuple[bytes, bytes]]:
        """At most ``limit`` (name, value) of one directory's stored listing
        (``delta``: its delta records) whose names are ``start`` or later, in
        name order: one page of a big directory without reading all of it."""
        db = self._tree_deltas if delta else self._tree_listings
        return self._prefix_items(db, version_id + dir_key, start, limit)

    def tree_listing_size(self, version_id: bytes, dir_key: bytes, delta: bool) -> int:
        """How many records one directory's stored listing (``delta``: its delta
        records) holds; reads keys only."""
        prefix = version_id + dir_key
        count = 0
        with self.env.begin(db=self._tree_deltas if delta else self._tree_listings) as txn:
            cursor = txn.cursor()
            if cursor.set_range(prefix):
                for key in cursor.iternext(keys=True, values=False):
                    if key[:len(prefix)] != prefix:
                        break
                    count += 1
        return count

    def _prefix_items(self, db: lmdb._Database, prefix: bytes, start: bytes = b"",
                      limit: int | None = None) -> list[tuple[bytes, bytes]]:
        out = []
        cut = len(prefix)
        with self.env.begin(db=db) as txn:
            cursor = txn.cursor()
            if cursor.set_range(prefix + start):
                for key, value in cursor:
                    if key[:cut] != prefix:
                        break
                    out.append((bytes(key[cut:]), bytes(value)))
                    if limit is not None and len(out) >= limit:
                        break
        return out

    def _put_all(self, db: lmdb._Database, items: Iterable[tuple[bytes, bytes]]) -> None:
        with self._write(db) as txn:
            for key, value in items:
                txn.put(key, value)


def _first(item: tuple[bytes, bytes]) -> bytes:
    return item[0]


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


#: An LMDB write that fails with less free space than this on its file system
#: is reported as a full disk: LMDB turns a short write into EIO, not ENOSPC.
FULL_DISK_MARGIN = 64 * 1024 * 1024


def _disk_full(path: Path) -> bool:
    try:
        st = os.statvfs(path if path.exists() else path.parent)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < FULL_DISK_MARGIN


def _denied(exc: lmdb.Error) -> bool:
    text = str(exc)
    return any(os.strerror(code) in text for code in (errno.EACCES, errno.EPERM, errno.EROFS))


def _write_error(exc: lmdb.Error, path: Path) -> DsfsError:
    if os.strerror(errno.ENOSPC) in str(exc) or isinstance(exc, lmdb.MapFullError) or (
            _disk_full(path)):
        return DiskFullError(path, "the cache index")
    if _denied(exc):
        return LocalError(f"cannot write the cache index at {path}: {exc}")
    return LocalError(f"the cache index at {path} failed to write ({exc}); if it keeps "
                      "failing, remove that directory and dsfs will rebuild it")


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
