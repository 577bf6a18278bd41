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

from dsfs.cache.chunks import COALESCE_GAP, MAX_RANGE
from dsfs.errors import IntegrityError
from dsfs.format.digest import chunk_id
from dsfs.format.manifest import ChunkRef
from dsfs.format.pack import pack_key
from dsfs.store.base import Store

Range = tuple[str, list[ChunkRef]]


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
        blob = memoryview(store.get_range(pack_key(pack_id), start, end - start))
        total += end - start
        for ref in group:
            data = blob[ref.offset - start: ref.offset - start + ref.length]
            if chunk_id(data) != ref.chunk_id:
                raise IntegrityError(
                    f"chunk {ref.chunk_id} in pack {pack_id} of the store is corrupt "
                    "(its bytes do not match its digest)")
            out[ref.chunk_id] = data
    return total
