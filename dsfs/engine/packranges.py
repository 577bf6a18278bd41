"""Reading the chunks of many small files with few ranged reads of their packs.

``close`` packs files in path order, so the chunks of consecutive files sit
next to each other in one pack: a batch of files in path order needs about
one ranged read per pack it touches.  ``plan_ranges`` groups chunk refs
into such reads (chunks closer than ``COALESCE_GAP`` share a read, no read
grows past ``MAX_RANGE``); ``read_ranges`` runs them and verifies every
chunk against its digest before handing its bytes out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from dsfs.cache.chunks import COALESCE_GAP, MAX_RANGE
from dsfs.errors import IntegrityError
from dsfs.format.digest import PREFIX as CHUNK_PREFIX
from dsfs.format.digest import chunk_id, digest_bytes
from dsfs.format.manifest import ChunkRef
from dsfs.store.base import Store
from dsfs.store.external import corrupt_chunk, read_pack_range

Range = tuple[str, list[ChunkRef]]
#: Ranges of external objects read at once by ``read_raw``.
EXTERNAL_READS = 8


def plan_ranges(refs: Iterable[ChunkRef]) -> list[Range]:
    """(pack id, refs in offset order) per ranged read, one ref per chunk id."""
    by_pack: dict[str, dict[str, ChunkRef]] = defaultdict(dict)
    for ref in refs:
        by_pack[ref.pack_id].setdefault(ref.chunk_id, ref)
    ranges: list[Range] = []
    for pack_id, unique in by_pack.items():
        ordered = sorted(unique.values(), key=lambda r: r.offset)
        group = [ordered[0]]
        for ref in ordered[1:]:
            start, end = group[0].offset, group[-1].offset + group[-1].length
            if ref.offset - end <= COALESCE_GAP and ref.offset + ref.length - start <= MAX_RANGE:
                group.append(ref)
            else:
                ranges.append((pack_id, group))
                group = [ref]
        ranges.append((pack_id, group))
    return ranges


def read_ranges(store: Store, ranges: Iterable[Range], out: dict[str, memoryview]) -> int:
    """Read each range and put every chunk's verified bytes into ``out``
    (chunk id -> bytes); return the bytes read.  A chunk that does not match
    its digest is an IntegrityError (exit 6)."""
    total = 0
    for pack_id, group in ranges:
        start = group[0].offset
        end = group[-1].offset + group[-1].length
        blob = memoryview(read_pack_range(store, pack_id, start, end - start))
        total += end - start
        for ref in group:
            data = blob[ref.offset - start: ref.offset - start + ref.length]
            if chunk_id(data) != ref.chunk_id:
                raise IntegrityError(corrupt_chunk(ref.chunk_id, pack_id))
            out[ref.chunk_id] = data
    return total


# -- the same on raw refs (the tree index's encoded form; no ChunkRef objects) --

#: (raw chunk id, raw pack id, offset, length), as ``treeindex`` encodes them.
RawRef = tuple[bytes, bytes, int, int]
RawRange = tuple[bytes, list[RawRef]]


def plan_raw(refs: Iterable[RawRef]) -> list[RawRange]:
    """``plan_ranges`` for raw refs: (raw pack id, refs in offset order) per read."""
    by_pack: dict[bytes, dict[bytes, RawRef]] = defaultdict(dict)
    for ref in refs:
        by_pack[ref[1]].setdefault(ref[0], ref)
    ranges: list[RawRange] = []
    for pack, unique in by_pack.items():
        ordered = sorted(unique.values(), key=lambda r: r[2])
        group = [ordered[0]]
        start, end = ordered[0][2], ordered[0][2] + ordered[0][3]
        for ref in ordered[1:]:
            if ref[2] - end <= COALESCE_GAP and ref[2] + ref[3] - start <= MAX_RANGE:
                group.append(ref)
            else:
                ranges.append((pack, group))
                group, start = [ref], ref[2]
            end = max(end, ref[2] + ref[3])
        ranges.append((pack, group))
    return ranges


def read_raw(store: Store, ranges: Iterable[RawRange], out: dict[bytes, memoryview]) -> int:
    """``read_ranges`` for raw refs: each chunk's verified bytes into ``out``
    (raw chunk id -> bytes); a chunk that does not match its id is an
    IntegrityError (exit 6) naming it and its pack.  Ranges of external
    files (one object each, often small and far away) are read
    ``EXTERNAL_READS`` at a time."""
    outside: list[RawRange] = []
    total = 0
    for pack, group in ranges:
        if b"://" in pack:  # an external file's URL (``copywriter.file_refs``)
            outside.append((pack, group))
        else:
            total += _read_one(store, pack.hex(), group, out)
    if len(outside) == 1:
        total += _read_one(store, outside[0][0].decode(), outside[0][1], out)
    elif outside:
        with ThreadPoolExecutor(max_workers=min(EXTERNAL_READS, len(outside))) as pool:
            total += sum(pool.map(lambda r: _read_one(store, r[0].decode(), r[1], out),
                                  outside))
    return total


def _read_one(store: Store, location: str, group: list[RawRef],
              out: dict[bytes, memoryview]) -> int:
    start = group[0][2]
    end = max(ref[2] + ref[3] for ref in group)
    blob = memoryview(read_pack_range(store, location, start, end - start))
    for cid, _pack, offset, length in group:
        data = blob[offset - start: offset - start + length]
        if digest_bytes(data) != cid:
            raise IntegrityError(corrupt_chunk(CHUNK_PREFIX + cid.hex(), location))
        out[cid] = data
    return end - start
