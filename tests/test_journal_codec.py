"""The journal's line codec on random records: ``encode_line`` writes each
record's JSON text directly (the fast path every journaled change takes), and
must give byte for byte what the generic encoder gives for ``encode(record)``
(so journals written before and after read alike, and the snapshot's records
and the journal's stay one format); ``decode_lines`` must give the records
back, whole lines only, and stop at a torn one.  Names include quotes,
backslashes, control characters, non-ASCII and undecodable bytes
(surrogateescape)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dsfs.overlay.journal import (
    NO_META,
    DirAttrs,
    Directory,
    File,
    Meta,
    Record,
    Removed,
    Special,
    Symlink,
    decode_lines,
    encode,
    encode_line,
)

names = st.text(st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1,
                max_size=12) | st.binary(min_size=1, max_size=8).map(
    lambda b: b.replace(b"/", b"_").replace(b"\x00", b"_").decode("utf-8",
                                                                   "surrogateescape"))
paths = st.lists(names, min_size=1, max_size=3).map("/".join)
ints = st.integers(min_value=0, max_value=2**63 - 1)
maybe = st.none() | ints
metas = st.just(NO_META) | st.builds(Meta, maybe, maybe, maybe, maybe)
data_ids = st.none() | st.text("0123456789abcdef", min_size=16, max_size=16)

records: st.SearchStrategy[Record] = st.one_of(
    st.builds(Removed, paths),
    st.builds(Directory, paths, st.none() | paths, ints, ints, metas),
    st.builds(DirAttrs, paths | st.just(""), ints, ints, metas),
    st.builds(File, paths, st.none() | paths, data_ids, ints, ints, ints,
              st.lists(st.integers(0, 10**6), max_size=5).map(tuple), ints, metas),
    st.builds(Symlink, paths, names, ints, metas),
    st.builds(Special, paths, ints, ints, ints, metas),
)


def reference_line(batch: list[Record]) -> bytes:
    """What the journal wrote before the direct encoder: ``encode`` and ``json``."""
    value: Any = encode(batch[0]) if len(batch) == 1 else [encode(r) for r in batch]
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return (text + "\n").encode("utf-8", "surrogateescape")


def normal(record: Record) -> Record:
    """A record as decoding gives it back (a file without missing blocks keeps
    no ``lower_end``; an empty data id is none)."""
    if isinstance(record, File):
        return File(record.path, record.lower, record.data or None, record.mode,
                    record.mtime_ns, record.size, record.missing,
                    record.lower_end if record.missing else 0, record.meta)
    return record


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(records, min_size=1, max_size=4), min_size=1, max_size=6),
       st.data())
def test_lines_are_the_generic_encoding_and_read_back(batches: list[list[Record]],
                                                      data: st.DataObject) -> None:
    journal = b""
    for batch in batches:
        line = encode_line(batch)
        assert line == reference_line(batch)
        journal += line
    decoded, used = decode_lines(journal)
    assert used == len(journal)
    assert decoded == [normal(r) for batch in batches for r in batch]
    # a torn last line: everything before it, nothing of it
    cut = data.draw(st.integers(len(journal) - len(line), len(journal) - 1))
    decoded, used = decode_lines(journal[:cut])
    assert used == len(journal) - len(line)
    assert decoded == [normal(r) for batch in batches[:-1] for r in batch]
