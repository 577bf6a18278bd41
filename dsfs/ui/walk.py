"""Pages of a version's tree that cost the page, not the tree.

The engine's walks (``dsfs.engine.treewalk``) start at the first path and
decode every entry of each directory they enter.  A page of the UI wants
the 100 rows after a given path, so these walks take a cursor: the last path
of the previous page.  Rows come in the engine's order (paths as strings:
``a``, ``a.txt``, ``a/x``; a directory sorts at its name plus ``/``).  Each
directory on the way down is read from the cursor's name on, a few hundred
encoded records at a time (``LmdbTreeSource.encoded_children_range``), and
only the entries a page shows are decoded, so a page deep into a million
files, or in a folder of 100,000, costs a few small range reads and a
hundred decodes.

``diff_after`` is the merge-join of ``treewalk.diff`` with the same cursor:
it skips a directory whose resolved listing both trees share, and compares
two entries by their encoded bytes before decoding them.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from dsfs.engine.treedirs import LmdbTreeSource
from dsfs.engine.treeindex import is_dir
from dsfs.format.manifest import Entry

#: (path, old entry or None, new entry or None), as ``treewalk.Row``.
Row = tuple[str, "Entry | None", "Entry | None"]
_Item = tuple[str, bytes, bool]  # (sort key, encoded entry, is a directory)

#: Records read from the index at a time while streaming a directory.
BATCH = 512


def _stream(source: LmdbTreeSource, path: str, start: str) -> Iterator[_Item]:
    """The items of directory ``path`` in walk order (a directory's key is its
    name plus ``/``) from the name ``start`` on, read ``BATCH`` records at a
    time.  The index returns names in byte order; an item is held back until
    no name read later can sort before it (a later name is at least the next
    range's start, and an item's key at least its name).  Once a name that
    is not ASCII appears, whose byte and str orders may disagree, the rest of
    the directory is read before anything more is yielded."""
    pending: list[_Item] = []
    whole = False
    while True:
        items, more = source.encoded_children_range(path, start, BATCH)
        for name, enc in items:
            directory = is_dir(enc)
            pending.append((name + "/" if directory else name, enc, directory))
            # byte order is str order for ASCII names only; beyond it (names
            # that are not UTF-8 sort as surrogates) read the rest, then sort
            whole = whole or not name.isascii()
        if more is not None and whole:
            start = more
            continue
        pending.sort(key=lambda item: item[0])
        if more is None:
            yield from pending
            return
        cut = bisect.bisect_left([key for key, _e, _d in pending], more)
        yield from pending[:cut]
        pending = pending[cut:]
        start = more


def _start(rel: str) -> str:
    """The first name of a directory that can sort after the relative path
    ``rel`` in walk order: ``rel`` cut before its first character at or below
    ``/`` (the directory ``a`` sorts as ``a/``, after ``a.txt``)."""
    for i, char in enumerate(rel):
        if char <= "/":
            return rel[:i]
    return rel


def _items(source: LmdbTreeSource, prefix: str, after: str) -> Iterator[_Item]:
    """Items of the directory ``prefix`` (``""`` or ending in ``/``), from
    where ``after`` falls in it.  The index seeks in byte order, which is str
    order only against an ASCII name: a cursor that is not ASCII there is
    found by reading the directory from its start."""
    start = _start(after[len(prefix):]) if after and after.startswith(prefix) else ""
    return _stream(source, prefix[:-1], start if start.isascii() else "")


def _after(key_path: str, is_directory: bool, after: str) -> bool:
    """Whether the item (at ``key_path``, a directory's ending in ``/``) holds
    or is a path after ``after``."""
    if is_directory and after.startswith(key_path):
        return True
    return key_path > after


def files_after(source: LmdbTreeSource, after: str = "") -> Iterator[Entry]:
    """Files and symlinks of the tree in path order, from the first one whose
    path sorts after ``after`` (all of them for "")."""
    stack = [("", _items(source, "", after))]
    while stack:
        prefix, items = stack[-1]
        item = next(items, None)
        if item is None:
            stack.pop()
            continue
        key, enc, directory = item
        if after and not _after(prefix + key, directory, after):
            continue
        if directory:
            stack.append((prefix + key, _items(source, prefix + key, after)))
        else:
            yield source.decode_entry(prefix + key, enc)


def folder_page(source: LmdbTreeSource, path: str, after: str, count: int
                ) -> tuple[int, list[tuple[str, Entry]], str | None]:
    """(entries in folder ``path``, up to ``count`` of them decoded, those
    whose names come after ``after`` — "" for the first page —, the cursor of
    the next page or None).  Pages follow the index's byte order of names."""
    prefix = f"{path}/" if path else ""
    items, more = source.encoded_children_range(path, after + "\x00" if after else "", count)
    page = [(name, source.decode_entry(prefix + name, enc)) for name, enc in items]
    # ``more`` is the last name read plus NUL (where the next range starts)
    return source.count_children(path), page, None if more is None else more[:-1]


def _shared(a: LmdbTreeSource, b: LmdbTreeSource, path: str) -> bool:
    if not (a.exact_sharing and b.exact_sharing):
        return False
    ra, rb = a.dir_record(path), b.dir_record(path)
    return ra is not None and rb is not None and (ra.form, ra.owner) == (rb.form, rb.owner)


def diff_after(a: LmdbTreeSource, b: LmdbTreeSource, after: str = "") -> Iterator[Row]:
    """``treewalk.diff(a, b)`` from the first row whose path sorts after ``after``.
    Iterative: a stack of directories, so path depth cannot exhaust the stack."""
    stack = [_dir_items(a, b, "", after, True, True)]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
        elif isinstance(item, str):
            stack.append(_dir_items(a, b, item, after, *_sides(a, b, item)))
        else:
            yield item


def _sides(a: LmdbTreeSource, b: LmdbTreeSource, path: str) -> tuple[bool, bool]:
    return a.dir_record(path) is not None, b.dir_record(path) is not None


def _dir_items(a: LmdbTreeSource, b: LmdbTreeSource, path: str, after: str,
               in_a: bool, in_b: bool) -> Iterator[Row | str]:
    """The rows directly in directory ``path`` (present in ``a`` and/or ``b``),
    and the paths of its subdirectories to descend into, in path order."""
    if in_a and in_b and _shared(a, b, path):
        return
    prefix = f"{path}/" if path else ""
    empty: Iterator[_Item] = iter(())
    left = _items(a, prefix, after) if in_a else empty
    right = _items(b, prefix, after) if in_b else empty
    old, new = next(left, None), next(right, None)
    while old is not None or new is not None:
        if new is None or (old is not None and old[0] < new[0]):
            here, there = old, None
            old = next(left, None)
        elif old is None or new[0] < old[0]:
            here, there = None, new
            new = next(right, None)
        else:
            here, there = old, new
            old, new = next(left, None), next(right, None)
        key = (here or there)[0]  # type: ignore[index]
        if after and not _after(prefix + key, key.endswith("/"), after):
            continue
        if key.endswith("/"):
            yield prefix + key[:-1]
            continue
        if here is not None and there is not None and here[1] == there[1]:
            continue
        full = prefix + key
        old_e = a.decode_entry(full, here[1]) if here is not None else None
        new_e = b.decode_entry(full, there[1]) if there is not None else None
        if old_e is not None and new_e is not None and old_e.same_content(new_e):
            continue
        yield full, old_e, new_e
