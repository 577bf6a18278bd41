"""Scan windows: the neighbours a miss that continues a scan of its pack
fetches along (``ScanTracker``).

A scan of small files (``cat dir/*``, ``cp -r``, a loader going through a
directory, several readers sharing one out) would cost one ranged read per
file.  ``close`` packs a directory in name order, so the files after the one
missed lie next in its pack: when a cold read of a small chunk starts where a
fetch of this reader ended in the same pack (or one chunk of its size later,
for readers racing each other), the chunks of the following files come with
the same ranged read, up to ``SCAN_WINDOW`` bytes.  A lone read never opens a
window.  Pure bookkeeping: no I/O, no store, no cache.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

from dsfs.format.manifest import ChunkRef

#: The largest chunk that a scan window carries along (or starts from).
SCAN_CHUNK = 256 * 1024
#: Bytes of a pack that one miss continuing a scan fetches at most.
SCAN_WINDOW = 2 * 1024 * 1024
#: Neighbours further apart than this in a pack do not join a window.
SCAN_GAP = 256 * 1024
#: Recent fetch ends remembered per pack, and packs remembered.
SCAN_TRACK = 8
SCAN_PACKS = 256


class ScanTracker:
    """Where this reader's recent fetches ended, per pack."""

    def __init__(self) -> None:
        self._pack_ends: OrderedDict[str, list[int]] = OrderedDict()

    def note_range(self, ref: ChunkRef, window: list[ChunkRef]) -> None:
        """Remember where a fetch of ``ref`` and ``window`` ends in its pack (the
        next miss just after it is a scan)."""
        end = (window[-1] if window else ref)
        ends = self._pack_ends.pop(ref.pack_id, None) or []
        ends = [*ends[-(SCAN_TRACK - 1):], end.offset + end.length]
        self._pack_ends[ref.pack_id] = ends
        while len(self._pack_ends) > SCAN_PACKS:
            self._pack_ends.popitem(last=False)

    def window(self, ref: ChunkRef, neighbours: Callable[[], Iterable[ChunkRef]] | None,
               busy: Callable[[str], bool]) -> list[ChunkRef]:
        """The chunks to fetch with a small chunk that continues a scan of its pack.

        A miss is a scan when a fetch of this reader ended just before the
        chunk in the same pack, or at most one chunk of its size before it.
        The window is then the chunks of the following files (``neighbours``,
        in directory order) that lie next in the pack, up to ``SCAN_WINDOW``
        bytes in all, stopping at the first that is not (another pack, a gap,
        or a chunk for which ``busy`` says the reader has it or is fetching
        it).  A lone read of one file fetches that file's bytes only.
        """
        if ref.length > SCAN_CHUNK or neighbours is None:
            return []
        ends = self._pack_ends.get(ref.pack_id)
        # just after a fetch, or one file of its size further (readers racing)
        if not ends or not any(0 <= ref.offset - end <= ref.length for end in ends):
            return []
        window: list[ChunkRef] = []
        limit = ref.offset + SCAN_WINDOW
        last_end = ref.offset + ref.length
        for near in neighbours():
            if (near.pack_id != ref.pack_id or near.length > SCAN_CHUNK
                    or not 0 <= near.offset - last_end <= SCAN_GAP
                    or near.offset + near.length > limit or busy(near.chunk_id)):
                break
            window.append(near)
            last_end = near.offset + near.length
        return window
