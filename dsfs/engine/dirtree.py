"""Trees as directory listings of encoded entries, for walks in bounded memory.

The commands that build or compare whole trees walk them one directory at a
time, in depth-first name order, and keep entries encoded
(``dsfs.engine.treeindex``'s form: a fixed head of kind, mode, mtime and size,
then the digest and chunks or the symlink target), so that most entries are
judged from their head without becoming ``Entry`` objects.

A ``DirTree`` has a ``root`` node; ``listing(node)`` gives a directory's
children as (name, encoded entry, child node or None), in name (str) order,
with a node for each child that is a directory.  Three kinds:

* ``VersionTree``: one version's tree, from the tree index (the records a
  mount uses; ``open_version_tree`` indexes the chain first if needed);
* ``MergedTree``: several trees laid over each other in order, by the rules
  of ``dsfs.engine.tree`` (a later tree wins a name; a file or symlink at a
  path drops what earlier trees had below it): the base of a version with
  several parents, a squash of several versions;
* ``EMPTY``: no tree (the base of a version without parents).

Walking order: a directory's subtree comes right after the directory, before
its later siblings (``a``, ``a/x``, ``a.txt``) -- the order of paths with
``/`` read as the lowest character (``dfs_key``).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, TypeVar

from dsfs.engine.treedirs import LmdbTreeSource, open_tree_source
from dsfs.engine.treeindex import KIND_DIR, KIND_FILE, KIND_SYMLINK, Decoder
from dsfs.format.manifest import Entry, Header
from dsfs.repository import Repository

A = TypeVar("A")
B = TypeVar("B")

#: (name, encoded entry, node of the child directory or None)
Listing = list[tuple[str, bytes, Any]]

_HEAD = struct.Struct("<BIqQ")  # treeindex's entry head: kind, mode, mtime ns, size
HEAD_SIZE = _HEAD.size
_DIGEST_END = HEAD_SIZE + 16


class DirTree(Protocol):
    root: Any

    def listing(self, node: Any) -> Listing: ...


class _Empty:
    root: Any = None

    def listing(self, node: Any) -> Listing:
        return []


EMPTY: DirTree = _Empty()


class VersionTree:
    """One version's tree; a node is the directory's path."""

    root: Any = ""

    def __init__(self, source: LmdbTreeSource) -> None:
        self.source = source

    def listing(self, node: Any) -> Listing:
        return self.source.dir_listing(node)

    def stat_digest(self, node: Any) -> bytes | None:
        """The memoized ``statdigest.of_listing`` of ``listing(node)``, or None."""
        return self.source.stat_digest(node)

    def remember_stat_digest(self, node: Any, digest: bytes) -> None:
        self.source.remember_stat_digest(node, digest)

    def flush(self) -> None:
        """Write the digests remembered and not yet written."""
        self.source.flush_stat_digests()


def open_version_tree(repo: Repository, header: Header) -> VersionTree:
    return VersionTree(open_tree_source(repo, header))


class MergedTree:
    """Trees laid over each other in order; a node is a tuple with each tree's
    node for that directory, or None where the tree no longer reaches it."""

    def __init__(self, trees: list[DirTree]) -> None:
        self.trees = trees
        self.root: Any = tuple(t.root for t in trees)

    def listing(self, node: Any) -> Listing:
        count = len(self.trees)
        hits: dict[str, list[tuple[int, bytes, Any]]] = {}
        for i, (tree, sub) in enumerate(zip(self.trees, node, strict=True)):
            if sub is None:
                continue
            for name, enc, child in tree.listing(sub):
                found = hits.get(name)
                if found is None:
                    hits[name] = [(i, enc, child)]
                else:
                    found.append((i, enc, child))
        out: Listing = []
        for name in sorted(hits):
            found = hits[name]
            enc = found[-1][1]
            if enc[0] != KIND_DIR:
                out.append((name, enc, None))
                continue
            children: list[Any] = [None] * count
            for i, _enc, child in found:
                if child is None:  # a file here drops what earlier trees had below
                    children = [None] * count
                else:
                    children[i] = child
            out.append((name, enc, tuple(children)))
        return out


def tree_of(repo: Repository, headers: list[Header]) -> DirTree:
    """The tree of one version, the merged tree of several, or EMPTY."""
    if not headers:
        return EMPTY
    if len(headers) == 1:
        return open_version_tree(repo, headers[0])
    return MergedTree([open_version_tree(repo, h) for h in headers])


def dfs_key(path: str) -> str:
    """A sort key giving the walking order of this module (``/`` lowest)."""
    return path.replace("/", "\x00")


def walk(tree: DirTree) -> Iterator[tuple[str, bytes]]:
    """Every (path, encoded entry) of a tree, directories too, in walking order."""
    stack: list[tuple[str, Iterator[tuple[str, bytes, Any]]]] = [
        ("", iter(tree.listing(tree.root)))] if tree.root is not None else []
    while stack:
        prefix, it = stack[-1]
        step = next(it, None)
        if step is None:
            stack.pop()
            continue
        name, enc, child = step
        path = prefix + name
        yield path, enc
        if child is not None:
            stack.append((path + "/", iter(tree.listing(child))))


def outer_join(old: Iterable[tuple[str, A]], new: Iterable[tuple[str, B]]
               ) -> Iterator[tuple[str, A | None, B | None]]:
    """Two streams of (path, value), each in walking order, joined by path:
    (path, old value or None, new value or None) in walking order.  Values
    are never None themselves."""
    olds = iter(old)
    current = next(olds, None)
    current_key = dfs_key(current[0]) if current is not None else ""
    for path, value in new:
        key = dfs_key(path)
        while current is not None and current_key < key:
            yield current[0], current[1], None
            current = next(olds, None)
            current_key = dfs_key(current[0]) if current is not None else ""
        before = None
        if current is not None and current_key == key:
            before = current[1]
            current = next(olds, None)
            current_key = dfs_key(current[0]) if current is not None else ""
        yield path, before, value
    while current is not None:
        yield current[0], current[1], None
        current = next(olds, None)


def walk_entries(tree: DirTree) -> Iterator[Entry]:
    decoder = Decoder()
    for path, enc in walk(tree):
        yield decoder.decode(path, enc)


# -- judging encoded entries ------------------------------------------------------------


def is_dir(enc: bytes) -> bool:
    return enc[0] == KIND_DIR


def counts_as_file(enc: bytes) -> bool:
    """Files and symlinks: what ``files`` counts and changes are made of."""
    return enc[0] != KIND_DIR


def file_size(enc: bytes) -> int:
    """The size a file adds to a tree's total (0 for a directory or symlink)."""
    return _HEAD.unpack_from(enc)[3] if enc[0] == KIND_FILE else 0


def file_head(mode: int, mtime_ns: int, size: int) -> bytes:
    """The encoded head of a regular file with this stat: equal heads pass
    ``sync``'s quick check (size, mtime and mode unchanged)."""
    return _HEAD.pack(KIND_FILE, mode, mtime_ns, size)


#: ``file_head`` without a Python call (for the walk's inner loop)
fast_file_head = functools.partial(_HEAD.pack, KIND_FILE)


def same_content(a: bytes, b: bytes) -> bool:
    """``Entry.same_content`` on encoded entries: kind, permission bits, and
    digest or symlink target (mtime aside)."""
    if a[0] != b[0] or (_HEAD.unpack_from(a)[1] & 0o7777) != (_HEAD.unpack_from(b)[1] & 0o7777):
        return False
    if a[0] == KIND_FILE:
        return a[HEAD_SIZE:_DIGEST_END] == b[HEAD_SIZE:_DIGEST_END]
    if a[0] == KIND_SYMLINK:
        return a[HEAD_SIZE:] == b[HEAD_SIZE:]
    return True


def same_file(enc: bytes, digest_raw: bytes, mode: int) -> bool:
    """True when ``enc`` is a file with this digest and these permission bits."""
    return (enc[0] == KIND_FILE and enc[HEAD_SIZE:_DIGEST_END] == digest_raw
            and (_HEAD.unpack_from(enc)[1] & 0o7777) == (mode & 0o7777))


# -- comparing two trees ------------------------------------------------------------------

#: A row of a diff: (path, entry in the old tree or None, entry in the new one or None).
Row = tuple[str, "Entry | None", "Entry | None"]


def _path_order(listing: Listing) -> Listing:
    """A listing in the order of full paths as strings: a directory's paths
    sort at its name plus ``/`` (``a.txt`` before ``a/x``)."""
    if any(child is not None for _n, _e, child in listing):
        return sorted(listing, key=lambda item: item[0] + "/" if item[2] is not None
                      else item[0])
    return listing


def _sides(a: DirTree, b: DirTree, prefix: str, na: Any, nb: Any
           ) -> list[tuple[str, bytes | None, bytes | None, Any, Any]]:
    """The children of one directory in both trees, side by side, in path order:
    (path, old entry, new entry, old node, new node)."""
    left = _path_order(a.listing(na)) if na is not None else []
    right = _path_order(b.listing(nb)) if nb is not None else []
    rows: list[tuple[str, bytes | None, bytes | None, Any, Any]] = []
    i = j = 0
    while i < len(left) or j < len(right):
        ka = (left[i][0] + "/" if left[i][2] is not None else left[i][0]) \
            if i < len(left) else None
        kb = (right[j][0] + "/" if right[j][2] is not None else right[j][0]) \
            if j < len(right) else None
        if kb is None or (ka is not None and ka < kb):
            name, enc, child = left[i]
            rows.append((prefix + name, enc, None, child, None))
            i += 1
        elif ka is None or kb < ka:
            name, enc, child = right[j]
            rows.append((prefix + name, None, enc, None, child))
            j += 1
        else:
            name, enc, child = left[i]
            rows.append((prefix + name, enc, right[j][1], child, right[j][2]))
            i += 1
            j += 1
    return rows


def diff(a: DirTree, b: DirTree) -> Iterator[Row]:
    """Files and symlinks that differ from tree ``a`` to tree ``b``, in the
    order of their paths as strings, as ``treewalk.diff`` gives them (mtime
    alone is no change); one directory listing per level held."""
    decoder = Decoder()
    stack = [iter(_sides(a, b, "", a.root, b.root))]
    while stack:
        row = next(stack[-1], None)
        if row is None:
            stack.pop()
            continue
        path, old, new, ca, cb = row
        if ca is not None or cb is not None:
            stack.append(iter(_sides(a, b, path + "/", ca, cb)))
            continue
        if old is not None and new is not None and same_content(old, new):
            continue
        yield (path, None if old is None else decoder.decode(path, old),
               None if new is None else decoder.decode(path, new))

