"""The on-store format: chunk ids, packs, version manifests and their encodings.

Everything that decides which bytes land in a store lives in this package, and
``docs/format.md`` describes the same bytes for people.  Nothing here performs
I/O against a store.
"""

from dsfs.format.digest import CHUNK_SIZE, chunk_id, digest_hex, file_hasher
from dsfs.format.version import FORMAT_VERSION, check_format_version

__all__ = [
    "CHUNK_SIZE",
    "FORMAT_VERSION",
    "check_format_version",
    "chunk_id",
    "digest_hex",
    "file_hasher",
]
