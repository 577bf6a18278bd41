"""Version trees in the cache index, one directory at a time.

The five ``tree_*`` tables of the cache's LMDB environment, read and written
through ``TreeTables``, which ``dsfs.cache.index.CacheIndex`` mixes in.

Tables (all integers little-endian):

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
    offset u64 | length u64, and for an external file (store format 2) the raw
    pack ids are zero and the chunks are followed by the URL, a newline and the
    ETag (UTF-8); for a symlink: the target's bytes.

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

``tree_heads``
    key: raw version id (16) | dir key (16)
    value: a directory's stat digest (``dsfs.engine.statdigest``: a scheme
    byte, then 16 bytes) of the listing that ``tree_dirs`` records of this
    version as owner resolve to (the version's own listing of that
    directory); present only for listings whose entries are all regular files.
    Lets ``sync`` pass an unchanged directory without reading its listing.

The five ``tree_*`` tables are keyed by version first, so forgetting a version
is a range delete (``forget_tree_versions``), and ``clear_trees`` empties
them all.  A version's records may point at an ancestor's (``tree_dirs``
owners), so whoever forgets a version also forgets the versions that depend
on it (``dsfs.engine.treeindex.forget_trees`` decides which); a mount that is
running keeps its memo in memory and needs its records, so ``dsfs cache
clear`` and ``prune`` leave the trees of mounted versions alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

from dsfs.cache.lmdbenv import Database, Environment, Transaction

#: Puts per write transaction when indexing trees: one transaction per put costs
#: a commit each; a thousand amortize it (about 84,000 puts a second here).
BATCH = 1000


class TreeTables:
    """Typed access to the ``tree_*`` tables; needs the environment, the
    table handles and ``_write``/``release_pages`` of ``CacheIndex``."""

    env: Environment
    _tree_versions: Database
    _tree_deltas: Database
    _tree_dirs: Database
    _tree_listings: Database
    _tree_heads: Database

    def _write(self, db: Database | None = None
               ) -> contextlib.AbstractContextManager[Transaction]:
        raise NotImplementedError

    def release_pages(self) -> None:
        raise NotImplementedError

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
        """Empty the five ``tree_*`` tables."""
        with self._write() as txn:
            for db in self._tree_tables():
                txn.drop(db, delete=False)

    def _tree_tables(self) -> tuple[Database, ...]:
        return (self._tree_versions, self._tree_dirs, self._tree_listings,
                self._tree_deltas, self._tree_heads)

    def tree_heads(self, version_id: bytes, dir_key: bytes) -> bytes | None:
        """The stat digest memoized for a version's listing of one directory."""
        with self.env.begin(db=self._tree_heads) as txn:
            value = txn.get(version_id + dir_key)
        return None if value is None else bytes(value)

    def put_tree_heads(self, items: Iterable[tuple[bytes, bytes, bytes]]) -> None:
        """Memoize (version id, dir key, stat digest) triples, one transaction."""
        self._put_all(self._tree_heads, ((vid + key, digest) for vid, key, digest in items))

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

    def _prefix_items(self, db: Database, prefix: bytes, start: bytes = b"",
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

    def _put_all(self, db: Database, items: Iterable[tuple[bytes, bytes]]) -> None:
        with self._write(db) as txn:
            for key, value in items:
                txn.put(key, value)


def _first(item: tuple[bytes, bytes]) -> bytes:
    return item[0]
