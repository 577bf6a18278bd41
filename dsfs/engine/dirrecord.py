"""Where a version's resolved directory listing lives: a ``tree_dirs`` record.

``dsfs.engine.treedirs`` resolves each directory of a version once and
memoizes the answer in the cache index as one of three forms (layout with the
tables in ``dsfs.cache.treetables``); this is that record, encoded and decoded.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

#: ``tree_dirs`` forms.  ``OVERLAY_FORM``: the listing is a base listing (the
#: parent's, which may itself be an overlay) with the changes stored in
#: ``tree_listings`` under ``owner`` applied (an empty value removes a name).
DELTA_FORM, STORED_FORM, OVERLAY_FORM = 1, 2, 3
_DIR = struct.Struct("<B16sH")  # form, owner, number of parent indexes (u16 each)
_BASE = struct.Struct("<B16sB")  # an overlay's base: form, owner; overlays stacked


@dataclass(frozen=True, slots=True)
class DirRecord:
    """Where a resolved listing lives (a decoded ``tree_dirs`` value)."""

    form: int
    owner: bytes
    #: The parents (indexes into the version's parent list, in order) whose
    #: trees still reach into this directory: those that have it as a directory
    #: and were not overruled, here or above, by a later parent's file or by
    #: the version's own delta.  Only they can contribute to its subdirectories.
    bases: tuple[int, ...]
    #: An overlay's base listing (form and owner) and how many overlays are
    #: stacked, this one included (0 for the other forms).
    base_form: int = 0
    base_owner: bytes = b""
    depth: int = 0

    def encode(self) -> bytes:
        head = (_DIR.pack(self.form, self.owner, len(self.bases))
                + struct.pack(f"<{len(self.bases)}H", *self.bases))
        if self.form == OVERLAY_FORM:
            head += _BASE.pack(self.base_form, self.base_owner, self.depth)
        return head

    @classmethod
    def decode(cls, data: bytes) -> DirRecord:
        form, owner, count = _DIR.unpack_from(data)
        bases = struct.unpack_from(f"<{count}H", data, _DIR.size)
        if form == OVERLAY_FORM:
            base_form, base_owner, depth = _BASE.unpack_from(data, _DIR.size + 2 * count)
            return cls(form, owner, bases, base_form, base_owner, depth)
        return cls(form, owner, bases)

    def sharing(self, bases: tuple[int, ...]) -> DirRecord:
        """The record of a version that shares this listing unchanged."""
        return DirRecord(self.form, self.owner, bases, self.base_form, self.base_owner,
                         self.depth)
