"""Packs: many chunks in one store object, with an index at the end.

Byte layout (all integers little-endian; see docs/format.md, "Packs")::

    header   16 bytes  PACK_MAGIC (8) | format u16 | 6 zero bytes
    blobs    the chunks' bytes, back to back, uncompressed
    index    N entries of INDEX_ENTRY_SIZE bytes:
                 digest (16, raw xxh3-128) | offset u64 | length u64
    trailer  TRAILER_SIZE bytes:
                 N u64 | xxh3-128 of the index (16) | format u16 | 6 zero | TRAILER_MAGIC (8)

A pack is named by the xxh3-128 of its whole content, so writing the same pack
twice is harmless, and its trailer lets it be checked and re-indexed alone.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from dsfs.errors import IntegrityError
from dsfs.format.digest import bytes_to_id, digest_bytes, digest_hex, id_to_bytes
from dsfs.format.version import BASE_FORMAT, check_format_version

PACK_MAGIC = b"DSFSPACK"
TRAILER_MAGIC = b"DSFSPEND"
HEADER_SIZE = 16
_HEADER = struct.Struct("<8sH6x")
_ENTRY = struct.Struct("<16sQQ")
_TRAILER = struct.Struct("<Q16sH6x8s")
INDEX_ENTRY_SIZE = _ENTRY.size  # 32
TRAILER_SIZE = _TRAILER.size  # 40

#: Packs are closed once they hold this many bytes (restic's default size).
PACK_TARGET_SIZE = 16 * 1024 * 1024


def pack_key(pack_id: str) -> str:
    """Store key of a pack: two-hex-digit fan-out like restic's data/ tree."""
    return f"packs/{pack_id[:2]}/{pack_id}"


def pack_id_from_key(key: str) -> str | None:
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == "packs" and len(parts[2]) == 32 and parts[2][:2] == parts[1]:
        return parts[2]
    return None


@dataclass(frozen=True)
class PackEntry:
    """Where one chunk sits inside a pack."""

    chunk_id: str
    offset: int
    length: int


class PackBuilder:
    """Collects chunks in memory until the pack is big enough to upload."""

    def __init__(self) -> None:
        # Blobs are kept as separate objects and joined once in finish(): growing
        # one buffer would copy every byte again at each reallocation.
        self._parts: list[bytes | memoryview] = [_HEADER.pack(PACK_MAGIC, BASE_FORMAT)]
        self._size = HEADER_SIZE
        self._entries: list[PackEntry] = []
        self._ids: set[str] = set()

    def __len__(self) -> int:
        return self._size

    @property
    def chunk_count(self) -> int:
        return len(self._entries)

    def __contains__(self, cid: str) -> bool:
        return cid in self._ids

    def add(self, cid: str, data: bytes | memoryview) -> PackEntry:
        entry = PackEntry(cid, self._size, len(data))
        self._parts.append(data)
        self._size += len(data)
        self._entries.append(entry)
        self._ids.add(cid)
        return entry

    def finish(self) -> tuple[str, bytes, list[PackEntry]]:
        """Append index and trailer; return (pack id, bytes, entries)."""
        index = b"".join(
            _ENTRY.pack(id_to_bytes(e.chunk_id), e.offset, e.length) for e in self._entries
        )
        self._parts.append(index)
        self._parts.append(_TRAILER.pack(
            len(self._entries), digest_bytes(index), BASE_FORMAT, TRAILER_MAGIC
        ))
        data = b"".join(self._parts)
        self._parts = []
        return digest_hex(data), data, list(self._entries)


def index_span(tail: bytes | memoryview, pack_size: int) -> tuple[int, int]:
    """From the last bytes of a pack, the (offset, length) of its index."""
    if len(tail) < TRAILER_SIZE:
        raise IntegrityError("pack is too short to hold a trailer")
    count, _digest, version, magic = _TRAILER.unpack(tail[-TRAILER_SIZE:])
    if magic != TRAILER_MAGIC:
        raise IntegrityError("pack trailer magic is wrong: not a dsfs pack or truncated")
    check_format_version(version, "pack")
    length = count * INDEX_ENTRY_SIZE
    offset = pack_size - TRAILER_SIZE - length
    if offset < HEADER_SIZE:
        raise IntegrityError("pack index is larger than the pack")
    return offset, length


def parse_index(index_and_trailer: bytes | memoryview, pack_size: int) -> list[PackEntry]:
    """Decode and check the index, given the bytes from the index start to the end."""
    count, digest, _version, _magic = _TRAILER.unpack(index_and_trailer[-TRAILER_SIZE:])
    index = index_and_trailer[: count * INDEX_ENTRY_SIZE]
    if len(index) != count * INDEX_ENTRY_SIZE or digest_bytes(index) != digest:
        raise IntegrityError("pack index does not match its digest")
    data_end = pack_size - TRAILER_SIZE - len(index)
    entries = []
    for raw, offset, length in _ENTRY.iter_unpack(index):
        if offset < HEADER_SIZE or offset + length > data_end:
            raise IntegrityError("pack index points outside the pack's data")
        entries.append(PackEntry(bytes_to_id(raw), offset, length))
    return entries


def read_index(pack: bytes | memoryview) -> list[PackEntry]:
    """Index of a pack held whole in memory, with the header checked too."""
    if len(pack) < HEADER_SIZE + TRAILER_SIZE:
        raise IntegrityError("pack is too short")
    magic, version = _HEADER.unpack(pack[:HEADER_SIZE])
    if magic != PACK_MAGIC:
        raise IntegrityError("pack header magic is wrong")
    check_format_version(version, "pack")
    offset, _length = index_span(pack[-TRAILER_SIZE:], len(pack))
    return parse_index(pack[offset:], len(pack))
