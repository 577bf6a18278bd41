"""A directory's stat digest: ``sync``'s quick check for a whole directory at once.

``sync`` judges a file unchanged when its ``lstat`` gives the mode, mtime and
size the base version recorded (the head of its encoded entry).  Checking a
directory of a thousand unchanged files that way means reading and decoding
its base listing, a thousand records from the cache index.  Instead, one
digest is taken over what that check compares:

    the entry count, the names (UTF-8, surrogate escapes as the raw bytes,
    joined by ``/``, in str order), then the modes (u32 each), the mtimes in
    ns (i64 each) and the sizes (u64 each), in the same order

once from the directory's ``lstat`` listing (``of_stats``) and once from the
base's listing (``of_listing``, memoized per listing in the cache index's
``tree_heads`` table).  The listing side has a digest only when every entry
is a regular file: a directory or symlink never passes the quick check.  So
equal digests mean exactly what the entry-by-entry check would find: the
same names, each a file with the same mode, mtime and size (up to a
collision of a 128-bit BLAKE2b, about 2**-64 even for chosen inputs).  Any
difference, or a value that does not fit the fields, gives unequal digests
or none, and the caller falls back to the full compare.
"""

from __future__ import annotations

import array
import hashlib
import operator
import os
import struct
from collections.abc import Sequence
from typing import Any

from dsfs.engine.treeindex import KIND_FILE

#: The first byte of a stored digest: a digest made by other rules never equals.
SCHEME = b"\x01"

_HEAD = struct.Struct("<BIqQ")  # treeindex's entry head: kind, mode, mtime ns, size
_MODE = operator.attrgetter("st_mode")
_MTIME = operator.attrgetter("st_mtime_ns")
_SIZE = operator.attrgetter("st_size")
_ENC = operator.itemgetter(1)


def _digest(names: Sequence[str], modes: Any, mtimes: Any, sizes: Any) -> bytes | None:
    try:
        columns = (array.array("I", modes), array.array("q", mtimes), array.array("Q", sizes))
        joined = "/".join(names).encode("utf-8", "surrogateescape")
    except (OverflowError, UnicodeEncodeError):
        return None  # nothing the quick check could pass either
    h = hashlib.blake2b(len(names).to_bytes(8, "little"), digest_size=16)
    h.update(joined)
    for column in columns:
        h.update(column.tobytes())
    return SCHEME + h.digest()


def of_stats(names: Sequence[str], stats: Sequence[os.stat_result]) -> bytes | None:
    """The digest of a directory's names (sorted) and their ``lstat`` results."""
    return _digest(names, map(_MODE, stats), map(_MTIME, stats), map(_SIZE, stats))


def of_listing(listing: Sequence[tuple[str, bytes, Any]]) -> bytes | None:
    """The digest of a base listing ((name, encoded entry, node), in str order
    of the names); None unless every entry is a regular file."""
    encs = list(map(_ENC, listing))
    if any(enc[0] != KIND_FILE for enc in encs):
        return None
    heads = list(map(_HEAD.unpack_from, encs))
    if not heads:
        return _digest([], (), (), ())
    _kinds, modes, mtimes, sizes = zip(*heads, strict=True)
    return _digest([name for name, _enc, _node in listing], modes, mtimes, sizes)
