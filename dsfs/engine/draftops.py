"""A draft's operations applied to its base tree as a stream, in walking order.

``close`` builds the new tree as ``base -> op 1 -> op 2 -> ... -> structure``,
each stage a generator over (path, value) pairs in walking order
(``dsfs.engine.dirtree``): a value is an encoded entry of the base, kept as
it is, or a ``SourceItem`` an operation recorded.  The stages apply the rules
``close`` always had:

* ``add``: an item replaces whatever was at its path; an item that is no
  directory where a directory was drops everything below that path;
* ``mirror`` (``sync_folder``): everything at or below the prefix is replaced
  by the items;
* ``remove``: every path matching the pattern (``fnmatch``, case-sensitive)
  goes, with everything below a matching directory (a pattern with ``://``
  matches external files by URL instead); a pattern that matches nothing is
  reported;
* ``structure``: a missing ancestor directory is implied (mode ``0o40755``,
  mtime 0, as in ``dsfs.engine.tree.check_structure``); an entry below a
  file or symlink fails the close (``IntegrityError``).

Only one item of each stage and the ancestors of the current path are held.
``applied`` runs the same stages to lay a delta over a version's tree (the
snapshot a commit from a writable mount writes every 32nd version).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator
from typing import Any

from dsfs.engine.dirtree import dfs_key, open_version_tree, outer_join, walk
from dsfs.engine.drafts import Draft, iter_items
from dsfs.engine.scan import SourceItem
from dsfs.engine.treeindex import IMPLIED_DIR, KIND_DIR, Decoder, encode_entry, external_url
from dsfs.errors import IntegrityError
from dsfs.format.manifest import DIR, REMOVED, Entry, Header
from dsfs.report import Reporter
from dsfs.repository import Repository

Value = bytes | SourceItem
Stream = Iterable[tuple[str, Value]]

_KIND_NAMES = {1: "file", 3: "symlink"}


def _is_dir(value: Value) -> bool:
    return value[0] == KIND_DIR if isinstance(value, bytes) else value.kind == DIR


def _kind(value: Value) -> str:
    return _KIND_NAMES.get(value[0], "dir") if isinstance(value, bytes) else value.kind


def new_tree(base: Stream, draft: Draft, reporter: Reporter) -> Iterator[tuple[str, Value]]:
    """The draft's tree: ``base`` with its operations applied, checked."""
    stream: Iterable[tuple[str, Value]] = base
    for op in draft.ops:
        if op["op"] == "add":
            stream = _add(stream, iter_items(draft.header.id, op))
        elif op["op"] == "mirror":
            stream = _mirror(stream, op["prefix"], iter_items(draft.header.id, op))
        elif op["op"] == "remove":
            stream = _remove(stream, op["pattern"], reporter)
    return _structure(stream)


def _items(items: Iterable[SourceItem]) -> Iterator[tuple[str, Value]]:
    return ((item.path, item) for item in items)


def applied(base: Stream, delta: Iterable[Entry]) -> Iterator[tuple[str, bytes]]:
    """``base`` with a delta applied as ``dsfs.engine.tree.apply_delta`` does
    (removals first, then additions, then the structure check), streamed:
    the whole tree of a snapshot written on top of one version."""
    removed = sorted({e.path for e in delta if e.kind == REMOVED}, key=dfs_key)
    last = {e.path: e for e in delta if e.kind != REMOVED}  # a path listed twice: the later
    added = [(path, encode_entry(last[path])) for path in sorted(last, key=dfs_key)]
    stream = _add(_drop(base, removed), added)
    return _structure(stream)  # type: ignore[return-value]


def _drop(stream: Stream, paths: list[str]) -> Iterator[tuple[str, Value]]:
    """``stream`` without ``paths`` (in walking order) and what is below them."""
    targets = iter(paths)
    target = next(targets, None)
    cut: str | None = None
    for path, value in stream:
        if cut is not None:
            if path.startswith(cut):
                continue
            cut = None
        key = dfs_key(path)
        while target is not None and dfs_key(target) < key:
            target = next(targets, None)
        if target == path:
            cut = path + "/"
            continue
        yield path, value


def _add(stream: Stream, items: Iterable[SourceItem] | Iterable[tuple[str, Value]]
         ) -> Iterator[tuple[str, Value]]:
    pairs = (item if isinstance(item, tuple) else (item.path, item) for item in items)
    cut: str | None = None
    for path, value, replaced in _merge(stream, pairs):
        if cut is not None:
            if path.startswith(cut):
                continue
            cut = None
        if replaced is not None and _is_dir(replaced) and not _is_dir(value):
            cut = path + "/"
        yield path, value


def _mirror(stream: Stream, prefix: str, items: Iterable[SourceItem]
            ) -> Iterator[tuple[str, Value]]:
    below = prefix + "/"
    kept = ((path, value) for path, value in stream
            if prefix and path != prefix and not path.startswith(below))
    for path, value, _replaced in _merge(kept, _items(items)):
        yield path, value


def _merge(old: Stream, new: Iterable[tuple[str, Value]]
           ) -> Iterator[tuple[str, Value, Any]]:
    """Two streams in walking order as one: (path, value, value it replaced)."""
    for path, before, value in outer_join(old, new):
        if value is None:
            assert before is not None
            yield path, before, None
        else:
            yield path, value, before


def _link(value: Value) -> str:
    """An external file's URL without its query string ("" for anything else)."""
    if isinstance(value, bytes):
        url = external_url(value) or ""
    else:
        url = value.source if "://" in value.source else ""
    return url.split("?", 1)[0]


def _remove(stream: Stream, pattern: str, reporter: Reporter) -> Iterator[tuple[str, Value]]:
    matched = False
    cut: str | None = None
    # a pattern with "://" names external files by their URL (as ClearML's
    # links): a glob, or a folder of the bucket or site
    by_link = "://" in pattern
    for path, value in stream:
        if cut is not None:
            if path.startswith(cut):
                continue
            cut = None
        if by_link:
            link = _link(value)
            if link and (fnmatch.fnmatchcase(link, pattern)
                         or link.startswith(pattern.rstrip("/") + "/")):
                matched = True
                continue
        elif fnmatch.fnmatchcase(path, pattern):
            matched = True
            if _is_dir(value):
                cut = path + "/"
            continue
        yield path, value
    if not matched:
        reporter.warn(f"remove: nothing in the version matches {pattern!r}")


def _structure(stream: Stream) -> Iterator[tuple[str, Value]]:
    ancestors: list[tuple[str, Value]] = []  # the chain of directories above
    for path, value in stream:
        while ancestors and not path.startswith(ancestors[-1][0] + "/"):
            ancestors.pop()
        if ancestors and not _is_dir(ancestors[-1][1]):
            raise IntegrityError(f"manifest puts {path!r} below {ancestors[-1][0]!r}, "
                                 f"which is a {_kind(ancestors[-1][1])}")
        top = ancestors[-1][0] + "/" if ancestors else ""
        rest = path[len(top):].split("/")[:-1]
        for name in rest:  # missing ancestors are implied
            top += name
            ancestors.append((top, IMPLIED_DIR))
            yield top, IMPLIED_DIR
            top += "/"
        ancestors.append((path, value))
        yield path, value


class SnapshotEntries:
    """A version's tree with a delta applied (``applied``), as a re-iterable
    of entries in walking order, streamed from the tree index at each pass
    (``publish`` reads a delta twice)."""

    def __init__(self, repo: Repository, header: Header, delta: list[Entry]) -> None:
        self.repo, self.header, self.delta = repo, header, delta

    def __iter__(self) -> Iterator[Entry]:
        decoder = Decoder()
        tree = open_version_tree(self.repo, self.header)
        for path, enc in applied(walk(tree), self.delta):
            yield decoder.decode(path, enc)
