"""Versions' deltas in the cache index: how a mount's tree records are made.

Each manifest of a version's chain is streamed once per machine into the
``tree_deltas`` table (records keyed by version, directory and name; layout
with the tables in ``dsfs.cache.index``), and ``tree_versions`` marks a
finished one with a summary (entry count, newest mtime, snapshot flag,
parents).  Manifests are immutable, so every later mount, in any process,
skips this step.  Here: the encoding of entries and records
(``encode_entry``, ``Decoder``), indexing (``index_version``,
``load_graph``) and forgetting (``forget_trees``).  Resolving a directory
from these records is ``dsfs.engine.treedirs``'s job.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from dsfs.cache.index import CacheIndex
from dsfs.engine.tree import IMPLIED_DIR_MODE
from dsfs.errors import IntegrityError
from dsfs.format import rawentries as raw
from dsfs.format.digest import PREFIX as CHUNK_PREFIX
from dsfs.format.digest import digest_bytes
from dsfs.format.manifest import DIR, FILE, SYMLINK, ChunkRef, Entry, Header
from dsfs.fsutil import taking_turns
from dsfs.repository import Repository

# -- encoded entries (layout documented with the tables in dsfs.cache.index) ---------

KIND_FILE, KIND_DIR, KIND_SYMLINK = 1, 2, 3
_KINDS = {FILE: KIND_FILE, DIR: KIND_DIR, SYMLINK: KIND_SYMLINK}
_HEAD = struct.Struct("<BIqQ")  # kind, mode, mtime ns, size
_FILE = struct.Struct("<16sI")  # digest, chunk count
_CHUNK = struct.Struct("<16s16sQQ")  # chunk id, pack id, offset, length

#: ``tree_deltas`` record flags.
#: ``TOUCHED``: the delta removes something below this path (a record of its
#: own, so that the directory's listing counts as changed: two versions that
#: share a directory's resolved listing then have the same tree below it).
CUT, IMPLIED, HAS_ENTRY, TOUCHED = 1, 2, 4, 8
#: Ends a ``tree_versions`` summary written with ``TOUCHED`` marks (indexes
#: made before have none: their versions' directories are not compared by owner).
MARKS_REMOVALS = 2
_SUMMARY = struct.Struct("<QqBB")  # entries, newest mtime, snapshot, parent count

#: Longest name a key can hold: LMDB's 511-byte keys less version id and dir key.
MAX_NAME_BYTES = 511 - 32

def raw_name(name: str) -> bytes:
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise IntegrityError(f"manifest name {name!r} cannot be encoded") from None
    if len(raw) > MAX_NAME_BYTES:
        raise IntegrityError(f"manifest name is longer than {MAX_NAME_BYTES} bytes: "
                             f"{name[:80]!r}...")
    return raw


def dir_key(path: str) -> bytes:
    """The 16-byte key of a directory path ("" is the root)."""
    return digest_bytes(path.encode("utf-8", "surrogateescape"))


def split(path: str) -> tuple[str, str]:
    parent, _, name = path.rpartition("/")
    return parent, name


def encode_entry(entry: Entry) -> bytes:
    head = _HEAD.pack(_KINDS[entry.kind], entry.mode, entry.mtime_ns, entry.size)
    if entry.kind == FILE:
        parts = [head, _FILE.pack(_raw_digest(entry.digest or ""), len(entry.chunks))]
        if entry.url is not None:  # an external file: its URL follows the chunks
            parts += [_CHUNK.pack(_raw_digest(c.chunk_id), raw.EXTERNAL_PACK, c.offset,
                                  c.length) for c in entry.chunks]
            parts.append(f"{entry.url}\n{entry.etag or ''}".encode())
        else:
            parts += [_CHUNK.pack(_raw_digest(c.chunk_id), bytes.fromhex(c.pack_id), c.offset,
                                  c.length) for c in entry.chunks]
        return b"".join(parts)
    if entry.kind == SYMLINK:
        return head + (entry.target or "").encode("utf-8", "surrogateescape")
    return head


def _raw_digest(cid: str) -> bytes:
    return bytes.fromhex(cid[len(CHUNK_PREFIX):])


IMPLIED_DIR = encode_entry(Entry("", DIR, 0, IMPLIED_DIR_MODE, 0))


class Decoder:
    """Encoded entries back to ``Entry``; repeated strings are shared, not copied."""

    def __init__(self) -> None:
        self._packs: dict[bytes, str] = {}

    def decode(self, path: str, data: bytes) -> Entry:
        kind, mode, mtime, size = _HEAD.unpack_from(data)
        if kind == KIND_FILE:
            raw, count = _FILE.unpack_from(data, _HEAD.size)
            digest = CHUNK_PREFIX + raw.hex()
            chunks = []
            pos = _HEAD.size + _FILE.size
            url = etag = None
            if len(data) > pos + count * _CHUNK.size:  # an external file
                url, _, etag = data[pos + count * _CHUNK.size:].decode().partition("\n")
            for _ in range(count):
                craw, praw, offset, length = _CHUNK.unpack_from(data, pos)
                pos += _CHUNK.size
                # a one-chunk file's chunk id is its digest: share the string
                cid = digest if craw == raw else CHUNK_PREFIX + craw.hex()
                chunks.append(ChunkRef(cid, url or self._pack(praw), offset, length))
            return Entry(path, FILE, size, mode, mtime, digest, tuple(chunks), url=url,
                         etag=etag)
        if kind == KIND_SYMLINK:
            target = data[_HEAD.size:].decode("utf-8", "surrogateescape")
            return Entry(path, SYMLINK, size, mode, mtime, target=target)
        return Entry(path, DIR, 0, mode, mtime)

    def _pack(self, raw: bytes) -> str:
        pack = self._packs.get(raw)
        if pack is None:
            pack = raw.hex()
            if len(self._packs) < 1_000_000:
                self._packs[raw] = pack
        return pack


def external_url(encoded: bytes) -> str | None:
    """The URL of an encoded external file (None for anything else)."""
    if encoded[0] != KIND_FILE:
        return None
    end = _HEAD.size + _FILE.size + _FILE.unpack_from(encoded, _HEAD.size)[1] * _CHUNK.size
    if len(encoded) <= end:
        return None
    return encoded[end:].decode().partition("\n")[0]


def is_dir(encoded: bytes) -> bool:
    return encoded[0] == KIND_DIR


def entry_of_record(record: bytes) -> bytes | None:
    """The encoded entry a delta record puts in a listing built on an empty base."""
    flags = record[0]
    if flags & HAS_ENTRY:
        if flags & IMPLIED and not is_dir(record[1:]):
            # Checked here, not while indexing: a manifest may list a path twice
            # (the last wins), so only the finished record says which it is.
            raise IntegrityError("a manifest puts entries below one of its own files "
                                 "or symlinks")
        return record[1:]
    if flags & IMPLIED:
        return IMPLIED_DIR
    return None


def merge_records(old: bytes, new: bytes) -> bytes:
    """Two records of one path in one delta: flags add up, an entry replaces none
    (a path listed twice: the later entry wins, as in ``apply_delta``)."""
    body = new[1:] if new[0] & HAS_ENTRY else old[1:]
    return bytes([old[0] | new[0]]) + body


# -- indexing a manifest ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class VersionInfo:
    parents: tuple[bytes, ...]
    snapshot: bool
    newest_mtime: int
    #: Indexed with ``TOUCHED`` marks: a directory it shares (the same
    #: ``tree_dirs`` owner) with another such version is the same below too.
    exact: bool = False


def _summary(entries: int, newest: int, header: Header) -> bytes:
    parents = [bytes.fromhex(p) for p in header.parents]
    return (_SUMMARY.pack(entries, newest, header.snapshot, len(parents))
            + b"".join(parents) + bytes([MARKS_REMOVALS]))


def _info(summary: bytes) -> VersionInfo:
    _entries, newest, snapshot, count = _SUMMARY.unpack_from(summary)
    start = _SUMMARY.size
    parents = tuple(summary[start + 16 * i: start + 16 * (i + 1)] for i in range(count))
    exact = summary[start + 16 * count: start + 16 * count + 1] == bytes([MARKS_REMOVALS])
    return VersionInfo(parents, bool(snapshot), newest, exact)


_FILE1 = struct.Struct("<BBIqQ16sI16s16sQQ")  # flags + head + file + one chunk
_FLAGS_HEAD = struct.Struct("<BBIqQ")  # flags + head


def index_version(repo: Repository, header: Header) -> VersionInfo:
    """Stream ``header``'s manifest into ``tree_deltas``; never holds its entries.

    Reads the manifest from its local file in batches (``iter_raw_batches``:
    one msgspec call per few thousand lines) and encodes each entry straight
    from its JSON fields, without ``Entry`` objects: about 5 µs an entry."""
    index = repo.cache.index
    vid = bytes.fromhex(header.id)
    counts = [0, 0]  # entries, newest mtime

    def records() -> Iterator[tuple[bytes, bytes]]:
        # Directories already marked IMPLIED, so that a directory's ancestors are
        # marked once rather than once per file.  Bounded: manifests list paths in
        # order, so the recent ones are the ones that repeat; a miss only
        # repeats an idempotent mark.
        marked: OrderedDict[str, None] = OrderedDict()
        touched: OrderedDict[str, None] = OrderedDict()  # the same, for removals
        last_parent, last_key = None, b""
        entries, newest = 0, 0
        cut_file, has = HAS_ENTRY | CUT, HAS_ENTRY
        chunk_id, pack_id = raw.CHUNK_ID.match, raw.PACK_ID.match
        fromhex = bytes.fromhex
        new_parent = False
        pack_one, pack_head = _FILE1.pack, _FLAGS_HEAD.pack
        with repo.open_manifest(header.id) as source:
            for batch in raw.iter_raw_batches(source):
                for e in batch:
                    path = e.p
                    # the common case in plain string tests; anything odd (a
                    # component starting with a dot, pb, ...) is checked fully
                    if (path is None or not path or path[0] in "/." or "/." in path
                            or "//" in path or path[-1] == "/" or "\x00" in path
                            or len(path) > 4096):
                        path = raw.entry_path(e)  # pb, or raises
                    parent, _, name = path.rpartition("/")
                    if parent != last_parent:
                        last_parent, last_key = parent, vid + dir_key(parent)
                        new_parent = True
                    try:
                        nb = name.encode("utf-8", "surrogateescape")
                    except UnicodeEncodeError:
                        nb = raw_name(name)  # raises
                    if len(nb) > MAX_NAME_BYTES:
                        nb = raw_name(name)  # raises
                    key = last_key + nb
                    kind = e.t
                    mode, mtime = e.m, e.mt
                    try:
                        if kind == "f":
                            c, h = e.c, e.h
                            value = None
                            if (c is not None and len(c) == 1 and mode >= 0 and mtime is not None
                                    and h is not None):
                                cid, pid, offset, length = c[0]
                                if (cid == h and length == e.s and length >= 0 and offset >= 0
                                        and chunk_id(h) and pack_id(pid)):
                                    digest = fromhex(h[9:])
                                    value = pack_one(cut_file, KIND_FILE, mode, mtime, length,
                                                     digest, 1, digest, fromhex(pid), offset,
                                                     length)
                            if value is None:
                                raw.check_attrs(e)
                                digest, chunks = raw.file_digests(e)
                                value = b"".join([
                                    pack_head(cut_file, KIND_FILE, mode, mtime, e.s),
                                    _FILE.pack(digest, len(chunks)),
                                    *(_CHUNK.pack(*ch) for ch in chunks),
                                    raw.external_trailer(e)])
                        elif kind == "x":
                            yield key, _CUT_RECORD
                            while parent and parent not in marked and parent not in touched:
                                touched[parent] = None
                                if len(touched) > 4096:
                                    touched.popitem(last=False)
                                up, _, dname = parent.rpartition("/")
                                yield vid + dir_key(up) + raw_name(dname), _TOUCHED_RECORD
                                parent = up
                            continue
                        elif kind == "d":
                            raw.check_attrs(e)
                            value = pack_head(has, KIND_DIR, mode, mtime, 0)
                        elif kind == "l":
                            raw.check_attrs(e)
                            target = raw.symlink_target(e).encode("utf-8", "surrogateescape")
                            value = pack_head(cut_file, KIND_SYMLINK, mode, mtime,
                                              len(target)) + target
                        else:
                            raise IntegrityError(f"manifest entry has an unknown kind {kind!r}")
                    except struct.error as exc:
                        raise IntegrityError(
                            f"manifest entry is malformed ({exc}): {path[:200]!r}") from None
                    entries += 1
                    if mtime > newest:  # type: ignore[operator]
                        newest = mtime  # type: ignore[assignment]
                    yield key, value
                    if not new_parent:
                        continue  # this directory's ancestors are marked already
                    new_parent = False
                    while parent and parent not in marked:
                        marked[parent] = None
                        if len(marked) > 4096:
                            marked.popitem(last=False)
                        up, _, dname = parent.rpartition("/")
                        yield vid + dir_key(up) + raw_name(dname), _IMPLIED_RECORD
                        parent = up
        counts[0], counts[1] = entries, newest

    index.merge_tree_records(records(), merge_records)
    summary = _summary(counts[0], counts[1], header)
    index.finish_tree_delta(vid, summary)
    return _info(summary)


_IMPLIED_RECORD = bytes([IMPLIED])
_CUT_RECORD = bytes([CUT])
_TOUCHED_RECORD = bytes([TOUCHED])


def load_graph(repo: Repository, header: Header) -> dict[bytes, VersionInfo]:
    """Every version whose delta ``header``'s tree depends on, indexed first if new."""
    index = repo.cache.index
    graph: dict[bytes, VersionInfo] = {}
    todo = [header.id]
    while todo:
        hex_id = todo.pop()
        vid = bytes.fromhex(hex_id)
        if vid in graph:
            continue
        summary = index.tree_version(vid)
        if summary is None:
            # Processes that start on a new version together (a loader's workers)
            # take turns: one indexes it, the others find it indexed.
            with taking_turns(repo.cache_root / "locks", f"tree-{hex_id}"):
                summary = index.tree_version(vid)
                if summary is None:
                    info = index_version(
                        repo, header if hex_id == header.id else repo.header(hex_id))
        if summary is not None:
            info = _info(summary)
        graph[vid] = info
        if not info.snapshot:
            todo.extend(p.hex() for p in info.parents)
    return graph


def forget_trees(index: CacheIndex, gone: set[bytes] | None,
                 keep: Iterable[bytes] = ()) -> int:
    """Forget the ``tree_*`` records of the versions in ``gone`` (None: of every
    version) and of every version whose tree depends on one of them, except the
    versions that the trees of ``keep`` (mounted versions) depend on.  Returns
    how many versions were forgotten.  They are indexed again if mounted later."""
    present = index.tree_version_ids()
    graph: dict[bytes, VersionInfo] = {}
    for vid in present:
        summary = index.tree_version(vid)
        if summary is not None:
            graph[vid] = _info(summary)
    doomed = set(present) if gone is None else present & gone
    grew = True
    while grew:  # a version whose tree uses a doomed one's records goes too
        grew = False
        for vid, info in graph.items():
            if vid not in doomed and not info.snapshot and any(
                    p in doomed for p in info.parents):
                doomed.add(vid)
                grew = True
    needed: set[bytes] = set()
    todo = list(keep)
    while todo:
        vid = todo.pop()
        if vid in needed:
            continue
        needed.add(vid)
        known = graph.get(vid)
        if known is not None and not known.snapshot:
            todo.extend(known.parents)
    doomed -= needed
    if gone is None and not needed:
        index.clear_trees()
    else:
        index.forget_tree_versions(sorted(doomed))
    return len(doomed)
