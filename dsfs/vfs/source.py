"""Where the vfs learns a version's tree: per-directory listings of entries.

A ``TreeSource`` answers two questions about one version: the entry at a path,
and the sorted children of a directory.  ``MemoryTreeSource`` resolves the
whole tree once through the parent chain (``dsfs.engine.tree``) and indexes it
by directory; it needs no store access after construction, so every lookup
and listing is answered locally.  The vfs depends only on the protocol, so a
lazier source (per-directory listings memoized in the LMDB cache) can replace
it without touching the vfs or the adapter.
"""

from __future__ import annotations

import posixpath
from typing import Protocol

from dsfs.engine.tree import IMPLIED_DIR_MODE, Tree, TreeResolver
from dsfs.format.manifest import DIR, FILE, SYMLINK, Entry, Header
from dsfs.repository import Repository

#: The root directory of every version: it has no entry of its own in a manifest.
ROOT = Entry("", DIR, 0, IMPLIED_DIR_MODE, 0)


class TreeSource(Protocol):
    """A version's tree, read one directory at a time."""

    def entry(self, path: str) -> Entry | None:
        """The entry at ``path`` ("" is the root), or None."""

    def children(self, path: str) -> list[tuple[str, Entry]]:
        """(name, entry) of each child of ``path``, sorted by name; callers must not
        change the list (sources may memoize it)."""

    def totals(self) -> tuple[int, int]:
        """(files and symlinks, bytes of file content) of the whole tree: the
        version's ``files`` and ``size`` stats, which statfs reports."""


class MemoryTreeSource:
    """The whole tree of a version, resolved once, indexed by directory."""

    def __init__(self, tree: Tree, root_mtime_ns: int = 0) -> None:
        self._tree = tree
        self._root = Entry("", DIR, 0, IMPLIED_DIR_MODE, root_mtime_ns)
        children: dict[str, list[str]] = {"": []}
        for path, entry in tree.items():
            parent = posixpath.dirname(path)
            children.setdefault(parent, []).append(path)
            if entry.kind == DIR:
                children.setdefault(path, [])
        self._paths = children
        self._listings: dict[str, list[tuple[str, Entry]]] = {}
        files = sum(1 for e in tree.values() if e.kind in (FILE, SYMLINK))
        size = sum(e.size for e in tree.values() if e.kind == FILE)
        self._totals = (files, size)  # as the header's stats (engine.tree.totals)

    @classmethod
    def for_version(cls, repo: Repository, header: Header) -> MemoryTreeSource:
        tree = TreeResolver(repo).tree(header.id)
        mtimes = [e.mtime_ns for e in tree.values()]
        return cls(tree, max(mtimes, default=0))

    def entry(self, path: str) -> Entry | None:
        if path == "":
            return self._root
        return self._tree.get(path)

    def children(self, path: str) -> list[tuple[str, Entry]]:
        listing = self._listings.get(path)
        if listing is None:
            paths = self._paths.get(path, [])
            listing = sorted(((posixpath.basename(p), self._tree[p]) for p in paths),
                             key=lambda item: item[0])
            self._listings[path] = listing
        return listing

    def totals(self) -> tuple[int, int]:
        return self._totals
