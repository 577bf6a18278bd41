"""Reads of a resolved version tree for walkers, as a mixin of ``LmdbTreeSource``.

``dsfs.engine.treedirs`` resolves directories and serves the mount's
``TreeSource`` calls (decoded entries, an LRU of listings).  The walks of the
engine and the UI want less: encoded entries (``raw_children`` for ``get``,
``dir_listing`` for ``dsfs.engine.dirtree``), pages of a big directory
(``encoded_children_range``, ``count_children``), and ``sync``'s memoized
stat digests of listings (``dsfs.engine.statdigest``).  Those are here; none
of them fills the LRU.
"""

from __future__ import annotations

from dsfs.cache.index import CacheIndex
from dsfs.engine.dirrecord import OVERLAY_FORM, STORED_FORM, DirRecord
from dsfs.engine.treeindex import KIND_DIR, Decoder, dir_key, entry_of_record
from dsfs.format.manifest import Entry

#: Stat digests written to the cache index per transaction.
DIGEST_BATCH = 1000


class WalkReads:
    """Needs ``LmdbTreeSource``'s index, version, decoder and resolution."""

    index: CacheIndex
    vid: bytes
    _decoder: Decoder
    _heads: list[tuple[bytes, bytes, bytes]]

    def _dir(self, vid: bytes, path: str) -> DirRecord | None:
        raise NotImplementedError

    def _raw_listing(self, record: DirRecord, path: str) -> list[tuple[bytes, bytes]]:
        raise NotImplementedError

    def _read(self, records: int) -> None:
        raise NotImplementedError

    def _listing(self, record: DirRecord, path: str, memo: bool = True
                 ) -> tuple[list[str], list[tuple[str, Entry]]]:
        raise NotImplementedError

    def raw_children(self, path: str) -> list[tuple[bytes, bytes]]:
        """(name as bytes, encoded entry) of each child of directory ``path``,
        in the order of the names' bytes, nothing decoded (``get`` hands the
        encoded entries to its writers as they are)."""
        record = self._dir(self.vid, path)
        return [] if record is None else self._raw_listing(record, path)

    def dir_listing(self, path: str) -> list[tuple[str, bytes, str | None]]:
        """The children of directory ``path`` as (name, encoded entry, path if
        it is a directory), in name (str) order, nothing decoded but the
        names and nothing memoized: for walks that look at most entries'
        heads only (``dsfs.engine.dirtree``)."""
        record = self._dir(self.vid, path)
        if record is None:
            return []
        prefix = f"{path}/" if path else ""
        items = []
        for raw, encoded in self._raw_listing(record, path):
            name = raw.decode("utf-8", "surrogateescape")
            items.append((name, encoded, prefix + name if encoded[0] == KIND_DIR else None))
        if any(items[i][0] >= items[i + 1][0] for i in range(len(items) - 1)):
            items.sort(key=lambda item: item[0])
        return items

    def stat_digest(self, path: str) -> bytes | None:
        """The stat digest (``dsfs.engine.statdigest``) memoized for directory
        ``path``'s listing, or None.  Kept per listing owner: versions that
        share a listing share its digest."""
        record = self._dir(self.vid, path)
        return None if record is None else self.index.tree_heads(record.owner, dir_key(path))

    def remember_stat_digest(self, path: str, digest: bytes) -> None:
        """Memoize ``statdigest.of_listing`` of directory ``path``'s listing
        (written in batches; ``flush_stat_digests`` writes the rest)."""
        record = self._dir(self.vid, path)
        if record is not None:
            self._heads.append((record.owner, dir_key(path), digest))
            if len(self._heads) >= DIGEST_BATCH:
                self.flush_stat_digests()

    def flush_stat_digests(self) -> None:
        if self._heads:
            self.index.put_tree_heads(self._heads)
            self._heads = []

    def walk_children(self, path: str) -> list[tuple[str, Entry]]:
        """``children`` for a walk that lists each directory once: the listing
        is not kept in the LRU (which would pin scattered objects in memory
        while millions of others come and go)."""
        record = self._dir(self.vid, path)
        return [] if record is None else self._listing(record, path, memo=False)[1]

    def encoded_children_range(self, path: str, start: str, limit: int
                               ) -> tuple[list[tuple[str, bytes]], str | None]:
        """Entries of directory ``path`` whose names are ``start`` or later (in
        the byte order of their UTF-8 names), as (name, encoded entry), reading
        at most ``limit`` records; and where the next range starts (None: the
        listing ended).  Nothing is decoded (``decode_entry`` decodes one,
        ``treeindex.is_dir`` tells a directory) nor kept in the LRU: a page of
        a 100,000-entry directory reads a page.  Empty if not a directory."""
        record = self._dir(self.vid, path)
        if record is None:
            return [], None
        try:
            raw_start = start.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raw_start = b""
        if record.form == OVERLAY_FORM:  # merged whole, then cut: one directory
            merged = [(n, e) for n, e in self._raw_listing(record, path) if n >= raw_start]
            page = merged[:limit]
            next_start = None
            if len(merged) > limit:
                next_start = merged[limit][0].decode("utf-8", "surrogateescape")
            return [(n.decode("utf-8", "surrogateescape"), e) for n, e in page], next_start
        stored = self.index.tree_listing_range(record.owner, dir_key(path), raw_start, limit,
                                               delta=record.form != STORED_FORM)
        self._read(len(stored) + 1)
        items = []
        for raw, value in stored:
            encoded = value if record.form == STORED_FORM else entry_of_record(value)
            if encoded is not None:
                items.append((raw.decode("utf-8", "surrogateescape"), encoded))
        more = None
        if len(stored) >= limit:
            more = (stored[-1][0] + b"\x00").decode("utf-8", "surrogateescape")
        return items, more

    def count_children(self, path: str) -> int:
        """How many entries directory ``path`` has (0: not a directory), from
        its keys alone.  A listing that is a version's own delta records counts
        a removal recorded there too (a delta removing what no parent has)."""
        record = self._dir(self.vid, path)
        if record is None:
            return 0
        if record.form == OVERLAY_FORM:
            return len(self._raw_listing(record, path))
        return self.index.tree_listing_size(record.owner, dir_key(path),
                                            delta=record.form != STORED_FORM)

    def decode_entry(self, path: str, encoded: bytes) -> Entry:
        """The entry at ``path`` from its encoded form (``encoded_children_range``)."""
        return self._decoder.decode(path, encoded)
