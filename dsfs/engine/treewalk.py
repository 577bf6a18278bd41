"""Walking versions' trees in bounded memory, from the LMDB tree index.

The commands that read whole versions (``list``, ``diff``, ``verify`` of the
store, ``lineage``) used to build each tree as a dict of every path
(``TreeResolver``: ~600 bytes of Python objects an entry).  Here they walk
the records a mount uses instead (``dsfs.engine.treeindex`` indexes each
manifest once per machine; ``dsfs.engine.treedirs`` resolves and memoizes
one directory at a time): the process holds one directory listing per level
of the path being walked, plus the source's bounded memos.

* ``iter_files(source)``: every file and symlink, in the order of their
  paths as strings (the order ``sorted(tree)`` gives), so output is the same
  as before.  Within a directory, a subdirectory sorts as its name plus
  ``/``: that is where its paths fall among its siblings' names.
* ``diff(a, b)``: a merge-join of two trees, directory by directory, that
  skips every directory whose resolved listing the two versions share (the
  same ``tree_dirs`` owner): such a directory and everything below it are
  the same in both.  A version and its descendant share every directory
  their deltas do not touch, so a diff of two versions of a million files
  that differ in ten reads a few listings.

Both sides of a diff are sources over the same cache index.
"""

from __future__ import annotations

from collections.abc import Iterator

from dsfs.engine import dirtree
from dsfs.engine.tree import Changes
from dsfs.engine.treedirs import LmdbTreeSource, open_tree_source
from dsfs.engine.treeindex import is_dir
from dsfs.format.manifest import DIR, Entry, Header
from dsfs.repository import Repository

__all__ = ["Changes", "TreeEntries", "changes", "diff", "iter_entries", "iter_files",
           "iter_listings",
           "open_tree", "own_changes"]


def open_tree(repo: Repository, header: Header) -> LmdbTreeSource:
    """A version's tree, indexing its chain's manifests first if this machine
    has not yet (the same records a mount uses)."""
    return open_tree_source(repo, header)


def _key(item: tuple[str, Entry]) -> str:
    name, entry = item
    return name + "/" if entry.kind == DIR else name


def _ordered(listing: list[tuple[str, Entry]]) -> list[tuple[str, Entry]]:
    """A listing in path order: a directory's paths come after a sibling named
    with its name plus a character below ``/`` (``a.txt`` before ``a/x``)."""
    if any(entry.kind == DIR for _name, entry in listing):
        return sorted(listing, key=_key)
    return listing


def _steps(listing: list[tuple[str, Entry]]) -> list[tuple[str, Entry, bool]]:
    """(sort key, entry, descend) for a listing: a directory is yielded at its
    name and entered at its name plus ``/``."""
    steps = [(name, entry, False) for name, entry in listing]
    dirs = [(name + "/", entry, True) for name, entry in listing if entry.kind == DIR]
    if dirs:
        steps += dirs
        steps.sort(key=lambda step: step[0])
    return steps


def iter_entries(source: LmdbTreeSource, path: str = "") -> Iterator[Entry]:
    """Every entry below ``path``, directories too, in the order of
    ``sorted(tree)`` (``a``, ``a.txt``, ``a/x``)."""
    stack = [iter(_steps(source.walk_children(path)))]
    while stack:
        step = next(stack[-1], None)
        if step is None:
            stack.pop()
            continue
        _key, entry, descend = step
        if descend:
            stack.append(iter(_steps(source.walk_children(entry.path))))
        else:
            yield entry


class TreeEntries:
    """A version's whole tree as a re-iterable of entries in path order, each
    pass streamed from the tree index (for ``publish``, which reads a delta
    more than once)."""

    def __init__(self, repo: Repository, header: Header) -> None:
        self.repo, self.header = repo, header

    def __iter__(self) -> Iterator[Entry]:
        return iter_entries(open_tree(self.repo, self.header))


def iter_listings(source: LmdbTreeSource) -> Iterator[tuple[bytes, list[tuple[bytes, bytes]]]]:
    """(directory path as bytes, its (name, encoded entry) children in the
    order of the names' bytes) of every directory, nothing decoded, depth
    first: a directory always comes before those below it.  What ``get``
    walks: a directory's files come in the order ``close`` packed them."""
    stack = [b""]
    while stack:
        path = stack.pop()
        listing = source.raw_children(path.decode("utf-8", "surrogateescape"))
        yield path, listing
        prefix = path + b"/" if path else b""
        stack.extend(reversed([prefix + name for name, encoded in listing if is_dir(encoded)]))


def iter_files(source: LmdbTreeSource, path: str = "") -> Iterator[Entry]:
    """Every file and symlink below ``path``, in path order."""
    return (e for e in iter_entries(source, path) if e.kind != DIR)


#: A row of a diff: (path, entry in the old tree or None, entry in the new one or None).
Row = tuple[str, "Entry | None", "Entry | None"]


def _merged(a: LmdbTreeSource, b: LmdbTreeSource, path: str) -> list[Row]:
    """The children of ``path`` (a directory of both trees) side by side, in
    path order; empty when the two share the directory's resolved listing."""
    if a.exact_sharing and b.exact_sharing:
        ra, rb = a.dir_record(path), b.dir_record(path)
        if ra is not None and rb is not None and (ra.form, ra.owner) == (rb.form, rb.owner):
            return []
    left = _ordered(a.walk_children(path))
    right = _ordered(b.walk_children(path))
    rows: list[Row] = []
    i = j = 0
    while i < len(left) or j < len(right):
        ka = _key(left[i]) if i < len(left) else None
        kb = _key(right[j]) if j < len(right) else None
        if kb is None or (ka is not None and ka < kb):
            rows.append((left[i][1].path, left[i][1], None))
            i += 1
        elif ka is None or kb < ka:
            rows.append((right[j][1].path, None, right[j][1]))
            j += 1
        else:
            rows.append((left[i][1].path, left[i][1], right[j][1]))
            i += 1
            j += 1
    return rows


def _one_side(source: LmdbTreeSource, path: str, old: bool) -> list[Row]:
    return [(e.path, e, None) if old else (e.path, None, e)
            for _name, e in _ordered(source.walk_children(path))]


def diff(a: LmdbTreeSource, b: LmdbTreeSource) -> Iterator[Row]:
    """Files and symlinks that differ from tree ``a`` to tree ``b``, in path
    order: (path, old, None) removed, (path, None, new) added, (path, old,
    new) modified (``Entry.same_content`` is false: mtime alone is no change).
    A directory in one and a file in the other: the file is added (or
    removed) and what the directory held removed (or added)."""
    stack = [iter(_merged(a, b, ""))]
    while stack:
        row = next(stack[-1], None)
        if row is None:
            stack.pop()
            continue
        path, old, new = row
        old_dir = old is not None and old.kind == DIR
        new_dir = new is not None and new.kind == DIR
        if old_dir and new_dir:
            stack.append(iter(_merged(a, b, path)))
        elif old_dir:
            stack.append(iter(_one_side(a, path, True)))
        elif new_dir:
            stack.append(iter(_one_side(b, path, False)))
        elif old is None or new is None or not old.same_content(new):
            yield row


def changes(rows: Iterator[Row]) -> Changes:
    """A diff's rows gathered as ``Changes`` (holds the changed entries only)."""
    result = Changes()
    for _path, old, new in rows:
        if old is None:
            assert new is not None
            result.added.append(new)
        elif new is None:
            result.removed.append(old)
        else:
            result.modified.append((old, new))
    return result


def own_changes(repo: Repository, header: Header) -> Iterator[Row]:
    """What a version changed against its parent, streamed; against its
    parents' merged tree when it has several (``dirtree.MergedTree``)."""
    if len(header.parents) > 1:
        parents = [repo.header(p) for p in header.parents]
        return dirtree.diff(dirtree.tree_of(repo, parents),
                            dirtree.open_version_tree(repo, header))
    new = open_tree(repo, header)
    if not header.parents:
        return ((e.path, None, e) for e in iter_files(new))
    old = open_tree(repo, repo.header(header.parents[0]))
    return diff(old, new)
