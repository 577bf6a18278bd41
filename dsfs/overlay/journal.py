"""The overlay's records and their one codec (snapshot and journal alike).

A *record* says what one path of the merged tree is, as a whole value:
applying the snapshot's records, then the journal's, in order, rebuilds the
upper layer, and a record applied twice changes nothing.  Five kinds:

* ``Removed(path)``: nothing at ``path`` (a whiteout when the lower has it);
* ``Directory(path, lower, mode, mtime_ns)``: a directory whose unlisted
  children are those of lower directory ``lower`` (none when None); replaces
  whatever was at ``path``, subtree included;
* ``DirAttrs(path, mode, mtime_ns)``: new attributes of the directory at
  ``path``, its children kept;
* ``File(path, lower, data, mode, mtime_ns, size, missing, lower_end)``: a file
  with the bytes of lower entry ``lower`` (``data`` None) or of data file
  ``data``; with ``missing``, the data file except those blocks, whose bytes
  below ``lower_end`` are still the lower entry's;
* ``Symlink(path, target, mtime_ns)``;
* ``Special(path, mode, rdev, mtime_ns)``: a FIFO, socket or device node
  (``mode`` with its ``S_IFMT`` type bits).

Every kind but ``Removed`` also carries the POSIX attributes a version does
not store (``Meta``): owner ``uid``/``gid`` (None: the mounting user),
``atime_ns`` and ``ctime_ns`` (None: the mtime).  They are written only when
set, as ``"uid"``, ``"gid"``, ``"atime"``, ``"ctime"``.

Records are values: nothing changes one after it is made.  They are not
frozen dataclasses only because a frozen one's ``__init__`` costs about four
times as much, and a mount makes one for every change it journals.  ``Meta``,
a default value, must be immutable (hashable): it is a ``NamedTuple``, which
costs half of what a frozen dataclass does to make (a mount makes one for
nearly every record once a file's times were set).

On disk each record is one JSON object (an item of ``state.json``'s
``records``; in the journal, a line, see below)::

    {"op": "del",   "path": P}
    {"op": "dir",   "path": P, "lower": L | null, "mode": M, "mtime": T}
    {"op": "dattr", "path": P, "mode": M, "mtime": T}
    {"op": "file",  "path": P, "lower": L | null, "data": ID | null, "mode": M,
                    "mtime": T, "size": S[, "missing": [B, ...], "lower_end": N]}
    {"op": "link",  "path": P, "target": T, "mtime": T}
    {"op": "node",  "path": P, "mode": M, "rdev": R, "mtime": T}

The journal holds one line per change: the records of one operation (a
rename: the old name removed, the new one made, what changed below it) are
one line, a JSON array when there are several, so a power loss that tears
the journal keeps each operation whole or not at all (``decode_lines`` takes
only whole lines and stops at the first that is not).

``FORMAT`` 3 (the arrays; 2 wrote a line per record).  Format 1 (``dsfs``
before the typed records) wrote ``p`` for ``path``, ``from`` for a file's
``lower`` and ``lend`` for ``lower_end``; ``decode`` reads all three.
Nothing here touches the disk: ``dsfs.overlay.upper`` writes the lines,
``dsfs.overlay.records`` makes and replays the records.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

#: The overlay's on-disk format (state.json's "format"); 1 and 2 are still read.
FORMAT = 3
READABLE_FORMATS = (1, 2, 3)


class BadRecord(ValueError):
    """A record that cannot be decoded (an unknown kind, a missing field)."""


class Meta(NamedTuple):
    """Owner and times a version does not store (None: the default)."""

    uid: int | None = None
    gid: int | None = None
    atime_ns: int | None = None
    ctime_ns: int | None = None


NO_META = Meta()


@dataclass(slots=True)
class Removed:
    path: str


@dataclass(slots=True)
class Directory:
    path: str
    lower: str | None
    mode: int
    mtime_ns: int
    meta: Meta = NO_META


@dataclass(slots=True)
class DirAttrs:
    path: str
    mode: int
    mtime_ns: int
    meta: Meta = NO_META


@dataclass(slots=True)
class File:
    path: str
    lower: str | None
    data: str | None
    mode: int
    mtime_ns: int
    size: int
    missing: tuple[int, ...] = ()
    lower_end: int = 0
    meta: Meta = NO_META


@dataclass(slots=True)
class Symlink:
    path: str
    target: str
    mtime_ns: int
    meta: Meta = NO_META


@dataclass(slots=True)
class Special:
    path: str
    mode: int  # with the type bits (S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK)
    rdev: int
    mtime_ns: int
    meta: Meta = NO_META


Record = Removed | Directory | DirAttrs | File | Symlink | Special


def _with_meta(out: dict[str, Any], meta: Meta) -> dict[str, Any]:
    if meta is not NO_META:
        for key, value in (("uid", meta.uid), ("gid", meta.gid), ("atime", meta.atime_ns),
                           ("ctime", meta.ctime_ns)):
            if value is not None:
                out[key] = value
    return out


def _meta_of(value: dict[str, Any]) -> Meta:
    if not any(k in value for k in ("uid", "gid", "atime", "ctime")):
        return NO_META
    got = [None if value.get(k) is None else int(value[k])
           for k in ("uid", "gid", "atime", "ctime")]
    return Meta(*got)


def encode(record: Record) -> dict[str, Any]:
    """The JSON object of one record."""
    if isinstance(record, File):
        out: dict[str, Any] = {"op": "file", "path": record.path, "lower": record.lower,
                               "data": record.data, "mode": record.mode,
                               "mtime": record.mtime_ns, "size": record.size}
        if record.missing:
            out["missing"], out["lower_end"] = list(record.missing), record.lower_end
        return _with_meta(out, record.meta)
    if isinstance(record, Removed):
        return {"op": "del", "path": record.path}
    if isinstance(record, Directory):
        return _with_meta({"op": "dir", "path": record.path, "lower": record.lower,
                           "mode": record.mode, "mtime": record.mtime_ns}, record.meta)
    if isinstance(record, DirAttrs):
        return _with_meta({"op": "dattr", "path": record.path, "mode": record.mode,
                           "mtime": record.mtime_ns}, record.meta)
    if isinstance(record, Special):
        return _with_meta({"op": "node", "path": record.path, "mode": record.mode,
                           "rdev": record.rdev, "mtime": record.mtime_ns}, record.meta)
    return _with_meta({"op": "link", "path": record.path, "target": record.target,
                       "mtime": record.mtime_ns}, record.meta)


def decode(value: Any) -> Record:
    """One record from its JSON object (format 2 or 1); BadRecord if it is not one."""
    if not isinstance(value, dict):
        raise BadRecord(f"not a record: {value!r}")
    try:
        op = value["op"]
        path = value["path"] if "path" in value else value["p"]
        if not isinstance(path, str):
            raise BadRecord(f"bad path in {value!r}")
        if op == "file":
            lower = value["lower"] if "lower" in value else value.get("from")
            missing = tuple(int(b) for b in value.get("missing") or ())
            lower_end = int(value.get("lower_end", value.get("lend")) or 0) if missing else 0
            return File(path, lower, value.get("data") or None, int(value["mode"]),
                        int(value["mtime"]), int(value.get("size", 0)), missing, lower_end,
                        _meta_of(value))
        if op == "del":
            return Removed(path)
        if op == "dir":
            return Directory(path, value.get("lower"), int(value["mode"]),
                             int(value["mtime"]), _meta_of(value))
        if op == "dattr":
            return DirAttrs(path, int(value["mode"]), int(value["mtime"]), _meta_of(value))
        if op == "link":
            return Symlink(path, str(value["target"]), int(value["mtime"]), _meta_of(value))
        if op == "node":
            return Special(path, int(value["mode"]), int(value.get("rdev", 0)),
                           int(value["mtime"]), _meta_of(value))
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRecord(f"bad record {value!r}: {exc}") from None
    raise BadRecord(f"unknown record kind {op!r}")


#: A JSON string literal as ``json.dumps(..., ensure_ascii=False)`` writes it
#: (the C function ``json`` itself uses).
_string = json.encoder.encode_basestring


def _nullable(value: str | None) -> str:
    return "null" if value is None else _string(value)


def _meta_text(meta: Meta) -> str:
    """The keys of ``meta`` that are set, each after a comma (no closing brace)."""
    text = "" if meta.uid is None else f',"uid":{meta.uid}'
    if meta.gid is not None:
        text += f',"gid":{meta.gid}'
    if meta.atime_ns is not None:
        text += f',"atime":{meta.atime_ns}'
    if meta.ctime_ns is not None:
        text += f',"ctime":{meta.ctime_ns}'
    return text


def _text(record: Record) -> str:
    """``encode(record)`` as compact JSON text, written out directly: this runs
    for every change a mount journals, and building the dict and running the
    generic encoder cost several times more.  The same text, key for key
    (``tests/test_journal_codec.py`` compares the two on random records).
    A file's record, nearly every line a mount writes, spends no call on its
    nullable fields or an unset ``meta``."""
    if isinstance(record, File):
        lower, data = record.lower, record.data
        text = (f'{{"op":"file","path":{_string(record.path)},'
                f'"lower":{"null" if lower is None else _string(lower)},'
                f'"data":{"null" if data is None else _string(data)},'
                f'"mode":{record.mode},"mtime":{record.mtime_ns},"size":{record.size}')
        if record.missing:
            text += (f',"missing":[{",".join(map(str, record.missing))}],'
                     f'"lower_end":{record.lower_end}')
    elif isinstance(record, Removed):
        return f'{{"op":"del","path":{_string(record.path)}}}'
    elif isinstance(record, Directory):
        text = (f'{{"op":"dir","path":{_string(record.path)},'
                f'"lower":{_nullable(record.lower)},"mode":{record.mode},'
                f'"mtime":{record.mtime_ns}')
    elif isinstance(record, DirAttrs):
        text = (f'{{"op":"dattr","path":{_string(record.path)},"mode":{record.mode},'
                f'"mtime":{record.mtime_ns}')
    elif isinstance(record, Special):
        text = (f'{{"op":"node","path":{_string(record.path)},"mode":{record.mode},'
                f'"rdev":{record.rdev},"mtime":{record.mtime_ns}')
    else:
        text = (f'{{"op":"link","path":{_string(record.path)},'
                f'"target":{_string(record.target)},"mtime":{record.mtime_ns}')
    meta = record.meta
    return text + "}" if meta is NO_META else text + _meta_text(meta) + "}"


def encode_line(records: Sequence[Record]) -> bytes:
    """The journal line of one change: its record, or an array of its records
    (names that are not UTF-8 keep their bytes: surrogateescape)."""
    text = _text(records[0]) if len(records) == 1 else f"[{','.join(map(_text, records))}]"
    return (text + "\n").encode("utf-8", "surrogateescape")


def decode_lines(data: bytes) -> tuple[list[Record], int]:
    """The records of a journal and how many of its bytes they take: reading
    stops at the first line that is not a whole record or array of records
    (the torn tail of a power loss, or the zeros of space allocated ahead);
    everything before counts."""
    records: list[Record] = []
    used = 0
    while used < len(data):
        end = data.find(b"\n", used)
        if end < 0:
            break
        try:
            value = json.loads(data[used:end].decode("utf-8", "surrogateescape"))
            records.extend([decode(v) for v in value] if isinstance(value, list) and value
                           else [decode(value)])
        except (ValueError, UnicodeDecodeError):
            break
        used = end + 1
    return records, used
