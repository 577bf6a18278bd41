"""A fast reader of manifest entries, for the tree indexer and ``get``.

``mf.iter_entries`` builds one ``Entry`` (with a ``ChunkRef`` per chunk) per
line through ``json.loads``: about 25 µs an entry, so tens of seconds for a
manifest of a million files.  ``iter_raw_batches`` decodes the same JSON Lines
in blocks of a few thousand lines with one ``msgspec`` call each (typed
structs, no dicts), never holding the whole decompressed text, and hands out
``RawEntry`` structs whose fields are the manifest's keys
(``iter_line_blocks`` and ``decode_lines`` are its two halves, for a reader
that decodes the blocks elsewhere: ``get``'s writer processes).  The helpers
check what ``entry_from_json`` checks (path safety, kind, integer fields,
chunk ids, pack ids, lengths adding up to the size) and raise
``IntegrityError`` for the same manifests; ``file_digests`` returns the raw
digests, so every hex string is converted once."""

from __future__ import annotations

import base64
import re
import zlib
from collections.abc import Iterator
from typing import BinaryIO

import msgspec

from dsfs.errors import IntegrityError
from dsfs.format.manifest import _split, external_of

#: Decompressed bytes decoded per msgspec call (a few thousand lines).
BLOCK = 1 << 20


class RawEntry(msgspec.Struct, gc=False):
    """One manifest line as written (keys as in docs/format.md, "Entries")."""

    t: str
    p: str | None = None
    pb: str | None = None
    m: int = -1
    mt: int | None = None
    s: int = -1
    h: str | None = None
    c: list[tuple[str, str, int, int]] | None = None
    l: dict[str, str] | None = None  # noqa: E741 - the format's key
    u: dict[str, str] | None = None  # an external file (format 2)


CHUNK_ID = re.compile(r"xxh3_128:[0-9a-f]{32}\Z")
PACK_ID = re.compile(r"[0-9a-f]{32}\Z")
BAD_PART = re.compile(r"(?:^|/)(?:\.\.?)?(?:/|$)")
#: The raw pack id an external file's chunks carry in tree records (their
#: location is the URL in the record's trailer, ``external_trailer``).
EXTERNAL_PACK = bytes(16)


def _bad(obj: object, why: str) -> IntegrityError:
    return IntegrityError(f"manifest entry is malformed ({why}): {str(obj)[:200]}")


def check_path(path: str) -> str:
    """``validate_path``'s rules, with C-speed checks for the common case."""
    if (not path or path[0] == "/" or "\x00" in path or len(path) > 4096
            or BAD_PART.search(path)):
        raise IntegrityError(f"manifest path is not a safe relative path: {path!r}")
    return path


def entry_path(e: RawEntry) -> str:
    """The entry's path, checked (``p``, or ``pb`` base64-decoded)."""
    if e.p is not None:
        return check_path(e.p)
    if e.pb is None:
        raise _bad(e, "no path")
    try:
        raw = base64.b64decode(e.pb, validate=True)
    except ValueError as exc:
        raise _bad(e, str(exc)) from None
    return check_path(raw.decode("utf-8", "surrogateescape"))


def quick_path(e: RawEntry) -> str:
    """``entry_path`` with plain string tests for the common case (a path
    with no component starting with a dot, no ``pb``); anything odd is
    checked fully."""
    path = e.p
    if (path is None or not path or path[0] in "/." or "/." in path or "//" in path
            or path[-1] == "/" or "\x00" in path or len(path) > 4096):
        return entry_path(e)
    return path


def file_digests(e: RawEntry) -> tuple[bytes, list[tuple[bytes, bytes, int, int]]]:
    """The raw file digest and (raw chunk id, raw pack id, offset, length) per
    chunk of a file entry, checked as ``entry_from_json`` checks them."""
    h, chunks = e.h, e.c
    if h is None or chunks is None or e.s < 0 or not CHUNK_ID.match(h):
        raise _bad(e, "bad size, digest or chunk list")
    digest = bytes.fromhex(h[9:])
    out = []
    total = 0
    external = e.u is not None
    if external:
        external_trailer(e)  # checks the URL
    for cid, pid, offset, length in chunks:
        if offset < 0 or length < 0:
            raise _bad(e, "negative chunk offset or length")
        if external:
            if pid != "":
                raise _bad(e, "an external file's chunk names a pack")
        elif not PACK_ID.match(pid):
            raise _bad(e, f"pack id {pid!r} is not a 32-digit hex id")
        if cid == h:
            craw = digest
        elif CHUNK_ID.match(cid):
            craw = bytes.fromhex(cid[9:])
        else:
            raise _bad(e, "bad digest")
        out.append((craw, EXTERNAL_PACK if external else bytes.fromhex(pid), offset, length))
        total += length
    if total != e.s:
        raise _bad(e, "chunk lengths do not add up to the file size")
    return digest, out


def external_trailer(e: RawEntry) -> bytes:
    """What follows an external file's chunks in its tree record: the URL, a
    newline and the ETag (b"" for a file held in packs)."""
    if e.u is None:
        return b""
    try:
        url, etag = external_of({"u": e.u})
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad(e, f"bad external object: {exc}") from None
    return f"{url}\n{etag}".encode()


def symlink_target(e: RawEntry) -> str:
    target = e.l
    if not isinstance(target, dict):
        raise _bad(e, "no symlink target")
    if "p" in target:
        return target["p"]
    try:
        return base64.b64decode(target["pb"], validate=True).decode("utf-8", "surrogateescape")
    except (KeyError, ValueError) as exc:
        raise _bad(e, f"bad symlink target: {exc}") from None


def check_attrs(e: RawEntry) -> None:
    """Mode and mtime are present (they are required for f, d and l)."""
    if e.m < 0 or e.mt is None:
        raise _bad(e, "no mode or mtime")


def _blocks(source: BinaryIO, first: bytes, size: int = BLOCK) -> Iterator[bytes]:
    """Decompressed bytes of a gzip stream (several members allowed), at most
    ``size`` bytes at a time."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    pending = first
    while True:
        if not pending:
            pending = source.read(max(size // 4, 1024))
            if not pending:
                break
        out = d.decompress(pending, size)
        pending = d.unconsumed_tail
        if out:
            yield out
        if d.eof:
            rest = d.unused_data + pending
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            pending = rest
            if not pending:
                pending = source.read(max(size // 4, 1024))
                if not pending:
                    return
    if not d.eof:
        raise IntegrityError("manifest entries are corrupt: the gzip stream is truncated")


def iter_line_blocks(source: BinaryIO, size: int = BLOCK) -> Iterator[bytes]:
    """The entry lines of the manifest object readable from ``source``
    (positioned at its start), decompressed, whole lines about ``size`` bytes
    at a time (``decode_lines`` turns a block into entries).  Checks the
    prefix only."""
    head = source.read(64 * 1024)
    _start, end = _split(head)
    while len(head) < end:
        more = source.read(end - len(head))
        if not more:
            raise IntegrityError("manifest header is truncated")
        head += more
    rest = b""
    try:
        for block in _blocks(source, head[end:], size):
            text = rest + block if rest else block
            cut = text.rfind(b"\n") + 1
            rest = text[cut:]
            if cut:
                yield text[:cut]
        if rest.strip():
            yield rest
    except zlib.error as exc:
        raise IntegrityError(f"manifest entries are corrupt: {exc}") from None


def iter_raw_batches(source: BinaryIO) -> Iterator[list[RawEntry]]:
    """Entries of the manifest object readable from ``source`` (positioned at
    its start), a batch at a time.  Checks the prefix; fields are checked by
    the helpers above."""
    for lines in iter_line_blocks(source):
        yield _decode(lines)


_LINES = msgspec.json.Decoder(RawEntry)


def _decode(lines: bytes) -> list[RawEntry]:
    """The entries of whole manifest lines (blank lines skipped); one JSON
    object per line, anything else is corrupt."""
    try:
        return _LINES.decode_lines(lines)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise IntegrityError(f"manifest entries are corrupt: {exc}") from None


decode_lines = _decode


def check_entry(e: RawEntry) -> None:
    """Every check ``entry_from_json`` makes, without building the ``Entry``."""
    entry_path(e)
    kind = e.t
    if kind == "x":
        return
    if kind not in ("f", "d", "l"):
        raise _bad(e, f"unknown kind {kind!r}")
    check_attrs(e)
    if kind == "f":
        file_digests(e)
    elif kind == "l":
        symlink_target(e)


def pack_ids(source: BinaryIO) -> set[str]:
    """The pack ids a manifest's file entries reference, every entry checked;
    streamed (``source`` as for ``iter_raw_batches``)."""
    found: set[str] = set()
    for batch in iter_raw_batches(source):
        for e in batch:
            check_entry(e)
            if e.t == "f" and e.c:
                found.update(c[1] for c in e.c if c[1])  # "": an external file
    return found
