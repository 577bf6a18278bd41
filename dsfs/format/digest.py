"""Content digests: xxh3-128, written as ``xxh3_128:<32 hex digits>``.

The algorithm name is part of every id so that a later format can add another
without ambiguity.  xxh3 guards against accidental corruption, not against an
attacker who can write the store (see the threat model in docs/format.md).
"""

from __future__ import annotations

import xxhash

ALGORITHM = "xxh3_128"
PREFIX = ALGORITHM + ":"

#: Files are cut into chunks of this size; a smaller file is one chunk.
CHUNK_SIZE = 8 * 1024 * 1024


def digest_hex(data: bytes | memoryview) -> str:
    """The bare hex digest of ``data`` (used for pack names)."""
    return xxhash.xxh3_128_hexdigest(data)


def chunk_id(data: bytes | memoryview) -> str:
    """The id of a chunk: its digest with the algorithm's name."""
    return PREFIX + xxhash.xxh3_128_hexdigest(data)


def digest_bytes(data: bytes | memoryview) -> bytes:
    """The 16-byte binary digest (used inside pack indexes)."""
    return xxhash.xxh3_128_digest(data)


def id_to_bytes(cid: str) -> bytes:
    """``xxh3_128:<hex>`` → 16 raw bytes."""
    if not cid.startswith(PREFIX) or len(cid) != len(PREFIX) + 32:
        raise ValueError(f"not a chunk id: {cid!r}")
    return bytes.fromhex(cid[len(PREFIX) :])


def bytes_to_id(raw: bytes) -> str:
    """16 raw bytes → ``xxh3_128:<hex>``."""
    return PREFIX + raw.hex()


def is_chunk_id(value: object) -> bool:
    if not isinstance(value, str) or not value.startswith(PREFIX):
        return False
    hexpart = value[len(PREFIX) :]
    return len(hexpart) == 32 and all(c in "0123456789abcdef" for c in hexpart)


class file_hasher:  # noqa: N801 - reads like a function at call sites
    """Incremental digest of a whole file, fed chunk by chunk."""

    def __init__(self) -> None:
        self._state = xxhash.xxh3_128()

    def update(self, data: bytes | memoryview) -> None:
        self._state.update(data)

    def digest_id(self) -> str:
        return PREFIX + self._state.hexdigest()
