"""Version manifests: one immutable object per version, header plus delta.

Byte layout (integers little-endian; docs/format.md, "Manifests")::

    magic       8 bytes  MANIFEST_MAGIC
    format      u16
    reserved    u16      zero
    header_len  u32
    header      header_len bytes of UTF-8 JSON (the version's metadata)
    entries     gzip of JSON Lines, one entry per line (the delta)

The header comes first and uncompressed so that listing versions needs only a
short ranged read.  Entry paths are checked on decode: an absolute path, an
empty, ``.`` or ``..`` component, or a NUL byte makes the manifest invalid, so
nothing read from a store can address a file outside its target directory.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from dsfs.errors import IntegrityError
from dsfs.format.digest import is_chunk_id
from dsfs.format.version import BASE_FORMAT, EXTERNAL_FORMAT, check_format_version

MANIFEST_MAGIC = b"DSFSMNFT"
_PREFIX = struct.Struct("<8sHHI")
PREFIX_SIZE = _PREFIX.size  # 16
#: How many bytes to read to be sure of getting a typical header whole.
HEADER_PROBE_SIZE = 64 * 1024

FILE, DIR, SYMLINK, REMOVED = "file", "dir", "symlink", "removed"
#: URL schemes an external file may have (read by ``dsfs.store.external``).
EXTERNAL_SCHEMES = ("s3", "https", "http")
EXTERNAL_KEY = b'"u":{'

_KIND_CODES = {FILE: "f", DIR: "d", SYMLINK: "l", REMOVED: "x"}
_CODE_KINDS = {v: k for k, v in _KIND_CODES.items()}


def manifest_key(version_id: str) -> str:
    return f"versions/{version_id}"


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """One chunk of a file and where it is stored."""

    chunk_id: str
    pack_id: str
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class Entry:
    """One path of a version's tree, or the removal of one in a delta."""

    path: str
    kind: str
    size: int = 0
    mode: int = 0
    mtime_ns: int = 0
    digest: str | None = None
    chunks: tuple[ChunkRef, ...] = ()
    target: str | None = None
    #: An external file (format 2): the object's URL, which is then also the
    #: location of every chunk (``ChunkRef.pack_id``), and its ETag at close.
    url: str | None = None
    etag: str | None = None

    def same_content(self, other: Entry) -> bool:
        """True when a user would call the two unchanged (mtime aside)."""
        return (
            self.kind == other.kind
            and self.digest == other.digest
            and self.target == other.target
            and (self.mode & 0o7777) == (other.mode & 0o7777)
        )


@dataclass
class Header:
    """A version's metadata: everything but its entries."""

    id: str
    project: str
    name: str
    version: str
    parents: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    description: str = ""
    created: str = ""
    #: True when the entries are the whole tree, not a delta: readers stop here.
    snapshot: bool = False
    #: Longest number of delta manifests a reader must read to resolve the tree.
    chain_depth: int = 1
    stats: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "project": self.project,
            "name": self.name,
            "version": self.version,
            "parents": list(self.parents),
            "tags": list(self.tags),
            "description": self.description,
            "created": self.created,
            "snapshot": self.snapshot,
            "chain_depth": self.chain_depth,
            "stats": dict(self.stats),
        }

    @classmethod
    def from_json(cls, obj: Any) -> Header:
        try:
            header = cls(
                id=_hex_id(obj["id"], "version id"),
                project=_str(obj["project"]),
                name=_str(obj["name"]),
                version=_str(obj["version"]),
                parents=[_hex_id(p, "parent id") for p in obj.get("parents", [])],
                tags=[_str(t) for t in obj.get("tags", [])],
                description=_str(obj.get("description", "")),
                created=_str(obj.get("created", "")),
                snapshot=bool(obj.get("snapshot", False)),
                chain_depth=int(obj.get("chain_depth", 1)),
                stats={str(k): int(v) for k, v in obj.get("stats", {}).items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise IntegrityError(f"manifest header is malformed: {exc}") from None
        return header


def _hex_id(value: Any, what: str) -> str:
    """A 32-digit lowercase hex id (version or pack)."""
    if not isinstance(value, str) or len(value) != 32 or not all(
            c in "0123456789abcdef" for c in value):
        raise ValueError(f"{what} {value!r} is not a 32-digit hex id")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def validate_path(path: str) -> str:
    """Return ``path`` if it is a safe relative path, else raise IntegrityError."""
    if not path or path.startswith("/") or "\x00" in path or len(path) > 4096:
        raise IntegrityError(f"manifest path is not a safe relative path: {path!r}")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise IntegrityError(f"manifest path is not a safe relative path: {path!r}")
    return path


def _encode_path(path: str) -> dict[str, str]:
    try:
        return {"p": path.encode("utf-8").decode("utf-8")}
    except UnicodeEncodeError:
        # A name that is not valid UTF-8 on disk reaches us as surrogate escapes;
        # store its exact bytes so that it is restored byte for byte.
        raw = path.encode("utf-8", "surrogateescape")
        return {"pb": base64.b64encode(raw).decode("ascii")}


def _decode_path(obj: dict[str, Any]) -> str:
    if "p" in obj:
        return validate_path(_str(obj["p"]))
    raw = base64.b64decode(_str(obj["pb"]), validate=True)
    return validate_path(raw.decode("utf-8", "surrogateescape"))


def entry_to_json(entry: Entry) -> dict[str, Any]:
    obj: dict[str, Any] = _encode_path(entry.path)
    obj["t"] = _KIND_CODES[entry.kind]
    if entry.kind == REMOVED:
        return obj
    obj["m"] = entry.mode
    obj["mt"] = entry.mtime_ns
    if entry.kind == FILE:
        obj["s"] = entry.size
        obj["h"] = entry.digest
        if entry.url is not None:
            # an external file's chunks lie in the object itself: "" stands for it
            obj["c"] = [[c.chunk_id, "", c.offset, c.length] for c in entry.chunks]
            obj["u"] = {"url": entry.url, "etag": entry.etag or ""}
        else:
            obj["c"] = [[c.chunk_id, c.pack_id, c.offset, c.length] for c in entry.chunks]
    elif entry.kind == SYMLINK:
        obj["l"] = _encode_path(entry.target or "")
    return obj


def entry_from_json(obj: Any) -> Entry:
    try:
        path = _decode_path(obj)
        kind = _CODE_KINDS[obj["t"]]
        if kind == REMOVED:
            return Entry(path, REMOVED)
        mode, mtime = int(obj["m"]), int(obj["mt"])
        if kind == FILE:
            url, etag = external_of(obj)
            chunks = tuple(
                ChunkRef(_str(c[0]), _location(c[1], url), int(c[2]), int(c[3]))
                for c in obj["c"]
            )
            if any(c.offset < 0 or c.length < 0 for c in chunks):
                raise ValueError("negative chunk offset or length")
            size = int(obj["s"])
            if size < 0 or sum(c.length for c in chunks) != size:
                raise ValueError("chunk lengths do not add up to the file size")
            if not all(is_chunk_id(c.chunk_id) for c in chunks) or not is_chunk_id(obj["h"]):
                raise ValueError("bad digest")
            return Entry(path, FILE, size, mode, mtime, obj["h"], chunks, url=url, etag=etag)
        if kind == SYMLINK:
            target_obj = obj["l"]
            target = target_obj["p"] if "p" in target_obj else base64.b64decode(
                target_obj["pb"], validate=True
            ).decode("utf-8", "surrogateescape")
            return Entry(path, SYMLINK, len(target.encode("utf-8", "surrogateescape")),
                         mode, mtime, target=_str(target))
        return Entry(path, DIR, 0, mode, mtime)
    except IntegrityError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise IntegrityError(f"manifest entry is malformed ({exc}): {str(obj)[:200]}") from None


def external_of(obj: Any) -> tuple[str | None, str | None]:
    """The ``u`` key of a file entry: (URL, ETag), or (None, None) for a file
    held in the store's packs."""
    ext = obj.get("u")
    if ext is None:
        return None, None
    url, etag = _str(ext["url"]), _str(ext.get("etag", ""))
    if any(c in url + etag for c in "\n\x00"):
        raise ValueError("external URL or ETag holds a newline or NUL")
    if "://" not in url or url.split("://", 1)[0].lower() not in EXTERNAL_SCHEMES:
        raise ValueError(f"external URL {url[:80]!r} has an unsupported scheme")
    return url, etag


def _location(pack: Any, url: str | None) -> str:
    if url is not None:
        if pack != "":
            raise ValueError("an external file's chunk names a pack")
        return url
    return _hex_id(pack, "pack id")


def entry_line(entry: Entry) -> bytes:
    """One manifest line (JSON and a newline), as ``encode`` writes it."""
    return json.dumps(entry_to_json(entry), separators=(",", ":")).encode() + b"\n"


def encode(header: Header, entries: Iterable[Entry]) -> bytes:
    return encode_lines(header, (entry_line(entry) for entry in entries))


def encode_lines(header: Header, lines: Iterable[bytes]) -> bytes:
    """A manifest from its header and its entries' lines (``entry_line``)."""
    body = io.BytesIO()
    write_lines(body, header, lines)
    return body.getvalue()


def write_lines(target: BinaryIO, header: Header, lines: Iterable[bytes]) -> None:
    """Write the manifest of ``header`` and its entries' lines to ``target`` (a
    seekable file) as they come: a manifest of millions of entries is never
    held whole.  The format field is set once every line has been seen."""
    header_bytes = json.dumps(header.to_json(), sort_keys=True).encode("utf-8")
    start = target.tell()
    version = BASE_FORMAT
    target.write(_PREFIX.pack(MANIFEST_MAGIC, version, 0, len(header_bytes)))
    target.write(header_bytes)
    with gzip.GzipFile(fileobj=target, mode="wb", compresslevel=6, mtime=0) as gz:
        batch: list[bytes] = []
        for line in lines:
            # A manifest with an external file is format 2, so that a reader of
            # format 1 refuses it instead of taking "" for a pack id.  JSON
            # escapes every quote inside a string, so '"u":{' can only be the key.
            if version == BASE_FORMAT and EXTERNAL_KEY in line:
                version = EXTERNAL_FORMAT
            batch.append(line)
            if len(batch) >= 4096:
                gz.write(b"".join(batch))
                batch.clear()
        gz.write(b"".join(batch))
    if version != BASE_FORMAT:
        end = target.tell()
        target.seek(start)
        target.write(_PREFIX.pack(MANIFEST_MAGIC, version, 0, len(header_bytes)))
        target.seek(end)


def _split(data: bytes) -> tuple[int, int]:
    """Check the prefix; return (header start, header end)."""
    if len(data) < PREFIX_SIZE:
        raise IntegrityError("manifest is truncated")
    magic, version, _reserved, header_len = _PREFIX.unpack(data[:PREFIX_SIZE])
    if magic != MANIFEST_MAGIC:
        raise IntegrityError("not a dsfs manifest (bad magic)")
    check_format_version(version, "manifest")
    return PREFIX_SIZE, PREFIX_SIZE + header_len


def header_length(prefix: bytes) -> int:
    """Total bytes needed to read the header, from the first PREFIX_SIZE bytes."""
    return _split(prefix)[1]


def decode_header(data: bytes) -> Header:
    start, end = _split(data)
    if len(data) < end:
        raise IntegrityError("manifest header is truncated")
    try:
        obj = json.loads(data[start:end])
    except ValueError as exc:
        raise IntegrityError(f"manifest header is not JSON: {exc}") from None
    return Header.from_json(obj)


def iter_entries(data: bytes) -> Iterator[Entry]:
    """Stream the entries of a whole manifest object, checking each one."""
    _start, end = _split(data)
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data[end:]), mode="rb") as gz:
            for line in gz:
                if line.strip():
                    yield entry_from_json(json.loads(line))
    except (OSError, EOFError, ValueError) as exc:
        if isinstance(exc, IntegrityError):
            raise
        raise IntegrityError(f"manifest entries are corrupt: {exc}") from None
