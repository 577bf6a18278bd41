"""A version's tree resolved lazily, one directory at a time, memoized in LMDB.

``open_tree_source(repo, header)`` returns an ``LmdbTreeSource``: the
``TreeSource`` a mount uses.  It never holds a whole tree in memory:

* **Deltas.**  Each manifest of the version's chain is streamed once into the
  cache index (``dsfs.engine.treeindex``: records keyed by version, directory
  and name).  Manifests are immutable, so every later mount, in any process,
  skips this step.
* **Resolution.**  The listing of directory ``D`` in version ``v`` is the
  listing of ``D`` in each parent whose tree still reaches ``D`` (in order: a
  later parent wins a name; a parent with a file or symlink at ``D`` or above
  drops what earlier parents had there), then ``v``'s own delta records for
  ``D`` (a removal, file or symlink cuts off whatever the parents had below
  its path; an addition wins; an entry deeper down implies ``D``'s
  directories).  A snapshot manifest has no base.  These are the rules of
  ``dsfs.engine.tree``, applied per directory.
* **Memoization.**  A resolved directory gets a ``tree_dirs`` record: either
  "the listing is ``owner``'s delta records" (nothing to merge), "it is
  ``owner``'s listing" (an unchanged directory shares its ancestor's, so a
  long chain costs no copies), or a listing stored in ``tree_listings``.  So
  every directory of every version is resolved once per machine, and after
  that a lookup costs the same at any chain depth.
* **Memory.**  Entries stay encoded in LMDB; the process keeps a bounded LRU
  of decoded listings and a bounded memo of directory records.

Differences from ``TreeResolver``, all on trees it would refuse (it fails
the whole version): a delta entry below one of the same delta's files makes
the listing holding that file fail (EIO); an entry below a parent's file is
never reached, so never shown; a directory implied below a parent's file
makes its parent directory's listing fail.  ``totals`` come from the header's
stats, and the root's mtime is the newest mtime in the chain's deltas.
One thread uses one source.  The record of a resolved directory is
``dsfs.engine.dirrecord``'s; the reads that walkers use (encoded listings,
ranges, stat digests) are ``dsfs.engine.walkreads``'s, mixed in.
"""

from __future__ import annotations

from collections import OrderedDict

from dsfs.cache.index import CacheIndex
from dsfs.engine.dirrecord import DELTA_FORM, OVERLAY_FORM, STORED_FORM, DirRecord
from dsfs.engine.tree import IMPLIED_DIR_MODE
from dsfs.engine.treeindex import (
    CUT,
    HAS_ENTRY,
    IMPLIED,
    IMPLIED_DIR,
    Decoder,
    VersionInfo,
    dir_key,
    entry_of_record,
    is_dir,
    load_graph,
    raw_name,
    split,
)
from dsfs.engine.walkreads import WalkReads
from dsfs.errors import IntegrityError
from dsfs.format.manifest import DIR, Entry, Header
from dsfs.repository import Repository

#: Overlays stacked on one stored listing at most: reading a directory then
#: merges at most this many short change lists into one listing; the next
#: change stores the merged listing whole (and overlays start again on it).
MAX_OVERLAY_DEPTH = 8

#: Decoded entries kept in the per-process LRU of listings (about 0.5 KiB each).
LISTING_CACHE_ENTRIES = 20_000
#: Directory records (and "not a directory" answers) kept in the process.
DIR_MEMO_SIZE = 200_000
#: LMDB records read between two ``CacheIndex.release_pages`` calls: a walk of a
#: big tree would otherwise keep every page of it resident in the mount process
#: (about 250 MiB for a million files).  Reads of many small directories touch
#: far more pages a record than one big listing: at 100,000 a million files in
#: 10,000 folders kept 190 MiB resident through `dsfs list`, 45 MiB at 2,000
#: (the madvise costs ~0.4 s of system time a million records).
RELEASE_EVERY = 2_000

_Listing = tuple[list[str], list[tuple[str, Entry]]]


class LmdbTreeSource(WalkReads):
    """One version's tree, resolved per directory through the LMDB index."""

    def __init__(self, index: CacheIndex, version_id: str,
                 graph: dict[bytes, VersionInfo], totals: tuple[int, int],
                 listing_cache_entries: int = LISTING_CACHE_ENTRIES) -> None:
        self.index = index
        self.vid = bytes.fromhex(version_id)
        self.graph = graph
        self._totals = totals
        newest = max((info.newest_mtime for info in graph.values()), default=0)
        self._root = Entry("", DIR, 0, IMPLIED_DIR_MODE, newest)
        self._decoder = Decoder()
        self._dirs: dict[tuple[bytes, str], DirRecord | None] = {}
        self._listings: OrderedDict[tuple[int, bytes, str], _Listing] = OrderedDict()
        self._listed = 0
        self._max_listed = listing_cache_entries
        self._orders: dict[bytes, list[bytes]] = {}
        self._unreleased = 0
        #: How many directories this process resolved (not found memoized).
        self.resolved = 0
        self._heads: list[tuple[bytes, bytes, bytes]] = []

    # -- TreeSource --------------------------------------------------------------

    def entry(self, path: str) -> Entry | None:
        if path == "":
            return self._root
        parent, name = split(path)
        record = self._dir(self.vid, parent)
        if record is None:
            return None
        encoded = self._child(record, parent, name)
        return None if encoded is None else self._decoder.decode(path, encoded)

    def children(self, path: str) -> list[tuple[str, Entry]]:
        record = self._dir(self.vid, path)
        return [] if record is None else self._listing(record, path)[1]

    def totals(self) -> tuple[int, int]:
        return self._totals

    @property
    def exact_sharing(self) -> bool:
        """True when every delta of the chain was indexed with ``TOUCHED``
        marks, so that ``dir_record`` owners compare subtrees (see there)."""
        return all(info.exact for info in self.graph.values())

    def dir_record(self, path: str) -> DirRecord | None:
        """Where the resolved listing of directory ``path`` lives (None: not a
        directory).  Two versions whose records name the same form and owner
        have the same listing there, and the same tree below it: a version
        shares a listing only when its delta has nothing below the directory."""
        return self._dir(self.vid, path)

    # -- listings ---------------------------------------------------------------

    def _read(self, records: int) -> None:
        """Count LMDB records read; release the map's pages every so often."""
        self._unreleased += records
        if self._unreleased >= RELEASE_EVERY:
            self._unreleased = 0
            self.index.release_pages()

    def _base_of(self, record: DirRecord, key: bytes) -> DirRecord:
        """The record an overlay is laid on (for an overlay base: the record its
        owner wrote for this directory, which names the next base)."""
        if record.base_form != OVERLAY_FORM:
            return DirRecord(record.base_form, record.base_owner, ())
        raw = self.index.tree_dir(record.base_owner, key)
        if raw is None:
            raise IntegrityError(f"the tree index lacks the listing version "
                                 f"{record.base_owner.hex()} shares; run `dsfs cache clear`")
        return DirRecord.decode(raw)

    def _raw_listing(self, record: DirRecord, path: str) -> list[tuple[bytes, bytes]]:
        if record.form == OVERLAY_FORM:
            key = dir_key(path)
            overlays = []
            while record.form == OVERLAY_FORM:
                overlays.append(record.owner)
                record = self._base_of(record, key)
            merged = dict(self._raw_listing(record, path))
            for owner in reversed(overlays):  # the oldest change first
                changes = self.index.tree_listing(owner, key)
                self._read(len(changes) + 1)
                for name, value in changes:
                    if value:
                        merged[name] = value
                    else:
                        merged.pop(name, None)
            return sorted(merged.items())
        if record.form == STORED_FORM:
            stored = self.index.tree_listing(record.owner, dir_key(path))
            self._read(len(stored) + 1)
            return stored
        out = []
        deltas = self.index.tree_delta_listing(record.owner, dir_key(path))
        self._read(len(deltas) + 1)
        for name, rec in deltas:
            encoded = entry_of_record(rec)
            if encoded is not None:
                out.append((name, encoded))
        return out

    def _child(self, record: DirRecord, path: str, name: str) -> bytes | None:
        """The encoded entry ``name`` in a resolved directory, or None."""
        return self._child_raw(record, dir_key(path), raw_name(name))

    def _child_raw(self, record: DirRecord, key: bytes, raw: bytes) -> bytes | None:
        self._read(1)
        while record.form == OVERLAY_FORM:
            value = self.index.tree_listing_record(record.owner, key, raw)
            if value is not None:
                return value or None  # an empty value: removed here
            record = self._base_of(record, key)
            self._read(1)
        if record.form == STORED_FORM:
            return self.index.tree_listing_record(record.owner, key, raw)
        rec = self.index.tree_delta_record(record.owner, key, raw)
        return None if rec is None else entry_of_record(rec)

    def _listing(self, record: DirRecord, path: str, memo: bool = True) -> _Listing:
        key = (record.form, record.owner, path)
        cached = self._listings.get(key)
        if cached is not None:
            self._listings.move_to_end(key)
            return cached
        prefix = f"{path}/" if path else ""
        items = []
        for raw, encoded in self._raw_listing(record, path):
            name = raw.decode("utf-8", "surrogateescape")
            items.append((name, self._decoder.decode(prefix + name, encoded)))
        # LMDB orders names by their bytes; str order differs only for names
        # that are not valid UTF-8, and readers expect str order.
        if any(items[i][0] >= items[i + 1][0] for i in range(len(items) - 1)):
            items.sort(key=lambda item: item[0])
        listing = ([name for name, _ in items], items)
        if not memo:
            return listing
        self._listings[key] = listing
        self._listed += len(items)
        while self._listed > self._max_listed and len(self._listings) > 1:
            _key, (names, _items) = self._listings.popitem(last=False)
            self._listed -= len(names)
        return listing

    # -- resolving directories -------------------------------------------------------

    def _dir(self, vid: bytes, path: str) -> DirRecord | None:
        """The resolved record of directory ``path`` in ``vid``; None if ``path``
        is not a directory there."""
        key = (vid, path)
        if key in self._dirs:
            return self._dirs[key]
        raw = self.index.tree_dir(vid, dir_key(path))
        if raw is not None:
            return self._remember(key, DirRecord.decode(raw))
        return self._resolve(vid, path)

    def _remember(self, key: tuple[bytes, str], record: DirRecord | None
                  ) -> DirRecord | None:
        if len(self._dirs) >= DIR_MEMO_SIZE:
            del self._dirs[next(iter(self._dirs))]
        self._dirs[key] = record
        return record

    def _known(self, vid: bytes, path: str) -> bool:
        if (vid, path) in self._dirs:
            return True
        raw = self.index.tree_dir(vid, dir_key(path))
        if raw is None:
            return False
        self._remember((vid, path), DirRecord.decode(raw))
        return True

    def _resolve(self, vid: bytes, path: str) -> DirRecord | None:
        """Resolve ``path`` and its ancestors in ``vid`` and in every version it
        depends on.  Iterative (root down; ancestors before descendants in the
        version graph), so neither path depth nor chain depth can exhaust the
        stack, and each step finds what it needs already resolved."""
        order = self._order(vid)
        parts = path.split("/") if path else []
        result: DirRecord | None = None
        for depth in range(len(parts) + 1):
            prefix = "/".join(parts[:depth])
            if self._known(vid, prefix):
                result = self._dirs.get((vid, prefix))
            else:
                for version in order:
                    if not self._known(version, prefix):
                        found = self._resolve_one(version, prefix)
                        self._remember((version, prefix), found)
                result = self._dirs.get((vid, prefix))
            if result is None:
                return None
        return result

    def _order(self, vid: bytes) -> list[bytes]:
        """``vid`` and the versions its tree depends on, each after its parents."""
        order = self._orders.get(vid)
        if order is not None:
            return order
        order, done, active = [], set(), set()
        stack: list[tuple[bytes, bool]] = [(vid, False)]
        while stack:
            version, expanded = stack.pop()
            if expanded:
                active.discard(version)
                done.add(version)
                order.append(version)
                continue
            if version in done:
                continue
            if version in active:
                raise IntegrityError(f"version {version.hex()} is its own ancestor")
            info = self.graph.get(version)
            if info is None:
                raise IntegrityError(f"version {version.hex()} is missing from the chain")
            active.add(version)
            stack.append((version, True))
            if not info.snapshot:
                stack.extend((p, False) for p in reversed(info.parents) if p not in done)
        self._orders[vid] = order
        return order

    def _overlay(self, vid: bytes, path: str, key: bytes, base: DirRecord,
                 reach: tuple[int, ...]) -> DirRecord:
        """Memoize a changed directory with one base as that base plus its
        changes (``OVERLAY_FORM``): a directory of 100,000 entries changed in
        each of 30 versions stores its changes, not 30 listings."""
        record = DirRecord(OVERLAY_FORM, vid, reach, base.form, base.owner, base.depth + 1)
        changes = _overlay_changes(self, vid, path, key, base)
        self.index.put_tree_dir(vid, key, record.encode(), changes)
        return record

    def _entry_in(self, vid: bytes, path: str) -> bytes | None:
        """The encoded entry at ``path`` (not the root) in version ``vid``."""
        parent, name = split(path)
        record = self._dir(vid, parent)
        return None if record is None else self._child(record, parent, name)

    def _resolve_one(self, vid: bytes, path: str) -> DirRecord | None:
        """Resolve one directory of one version whose parent directory (and every
        version ``vid`` depends on) is resolved; memoize it in LMDB."""
        info = self.graph[vid]
        key = dir_key(path)
        if path == "":
            candidates: tuple[int, ...] = () if info.snapshot else tuple(
                range(len(info.parents)))
        else:
            parent, name = split(path)
            parent_record = self._dir(vid, parent)
            if parent_record is None:
                return None
            encoded = self._child(parent_record, parent, name)
            if encoded is None or not is_dir(encoded):
                return None
            delta = self.index.tree_delta_record(vid, dir_key(parent), raw_name(name))
            cut = delta is not None and delta[0] & CUT
            candidates = () if cut else parent_record.bases
        self.resolved += 1
        bases: list[DirRecord] = []
        kept: list[int] = []
        for i in candidates:
            parent_vid = info.parents[i]
            if path:
                encoded = self._entry_in(parent_vid, path)
                if encoded is None:
                    continue
                if not is_dir(encoded):
                    # a later parent's file replaces the directory and all below it
                    bases, kept = [], []
                    continue
            base = self._dir(parent_vid, path)
            if base is not None:
                bases.append(base)
                kept.append(i)
        reach = tuple(kept)
        changed = self.index.has_tree_delta_listing(vid, key)
        distinct = {(b.form, b.owner) for b in bases}
        if not bases:
            record = DirRecord(DELTA_FORM, vid, reach)
        elif not changed and len(distinct) == 1:
            # unchanged: share the (terminal) listing the parent points at
            record = bases[0].sharing(reach)
        elif len(distinct) == 1 and bases[0].depth < MAX_OVERLAY_DEPTH:
            return self._overlay(vid, path, key, bases[0], reach)
        else:
            record = DirRecord(STORED_FORM, vid, reach)
            merged: dict[bytes, bytes] = {}
            for base in bases:
                merged.update(self._raw_listing(base, path))
            for name_raw, rec in self.index.tree_delta_listing(vid, key):
                flags = rec[0]
                if flags & HAS_ENTRY:
                    merged[name_raw] = entry_of_record(rec) or b""
                elif flags & IMPLIED:
                    old = merged.get(name_raw)
                    if flags & CUT or old is None:
                        merged[name_raw] = IMPLIED_DIR
                    elif not is_dir(old):
                        raise _entries_below_a_file(vid, path, name_raw)
                elif flags & CUT:
                    merged.pop(name_raw, None)
            self.index.put_tree_dir(vid, key, record.encode(), sorted(merged.items()))
            return record
        self.index.put_tree_dir(vid, key, record.encode())
        return record


def _entries_below_a_file(vid: bytes, path: str, name_raw: bytes) -> IntegrityError:
    return IntegrityError(f"version {vid.hex()} puts entries below "
                          f"{path}/{name_raw.decode('utf-8', 'surrogateescape')}, "
                          "which is a file or symlink")


def _overlay_changes(source: LmdbTreeSource, vid: bytes, path: str, key: bytes,
                     base: DirRecord) -> list[tuple[bytes, bytes]]:
    """What ``vid``'s delta changes in directory ``path`` of its one base
    listing, as overlay records (an empty value removes the name): the rules
    of the merge in ``_resolve_one``, asking the base one name at a time."""
    changes = []
    for name_raw, rec in source.index.tree_delta_listing(vid, key):
        flags = rec[0]
        if flags & HAS_ENTRY:
            changes.append((name_raw, entry_of_record(rec) or b""))
        elif flags & IMPLIED:
            old = None if flags & CUT else source._child_raw(base, key, name_raw)
            if old is None:
                changes.append((name_raw, IMPLIED_DIR))
            elif not is_dir(old):
                raise _entries_below_a_file(vid, path, name_raw)
        elif flags & CUT:
            changes.append((name_raw, b""))
    return changes


def open_tree_source(repo: Repository, header: Header) -> LmdbTreeSource:
    """The tree source of ``header``'s version; indexes manifests not seen before."""
    graph = load_graph(repo, header)
    totals = (int(header.stats.get("files", 0)), int(header.stats.get("size", 0)))
    return LmdbTreeSource(repo.cache.index, header.id, graph, totals)
