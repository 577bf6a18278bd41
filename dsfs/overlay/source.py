"""A version's tree as an older tree plus one delta: the lower layer after a
commit, without resolving the new version's whole tree again.

``DeltaSource(below, delta)`` answers like the tree of the committed child
(``dsfs.engine.tree.apply_delta`` semantics: removals, then additions), at a
cost that follows the delta, so rebasing a mount of a million-file version
onto a commit of ten files touches ten entries.  The next mount of the child
resolves it the ordinary way.
"""

from __future__ import annotations

import posixpath

from dsfs.format.manifest import DIR, REMOVED, Entry
from dsfs.vfs import TreeSource


class DeltaSource:
    """``below`` with ``delta`` applied.  A DeltaSource over a DeltaSource is
    flattened into one over the same tree (the deltas merged), so a mount that
    commits a thousand times answers through one layer, not a thousand."""

    def __init__(self, below: TreeSource, delta: list[Entry], totals: tuple[int, int]) -> None:
        self._cut: set[str] = set()
        self._added: dict[str, Entry] = {}
        self._kids: dict[str, dict[str, Entry]] = {}
        if isinstance(below, DeltaSource):
            upper: DeltaSource = below
            self._cut = set(upper._cut)
            self._added = dict(upper._added)
            self._kids = {k: dict(v) for k, v in upper._kids.items()}
            view: TreeSource = upper  # what the delta was made against
            base: TreeSource = upper.below
        else:
            view = base = below
        self.below: TreeSource = base
        for entry in delta:
            if entry.kind == REMOVED:
                self._cut_at(entry.path)
                continue
            old = view.entry(entry.path)
            if old is not None and old.kind == DIR and entry.kind != DIR:
                self._cut_at(entry.path)  # what was below the directory is gone
            self._added[entry.path] = entry
            parent = posixpath.dirname(entry.path)
            self._kids.setdefault(parent, {})[posixpath.basename(entry.path)] = entry
        self._listings: dict[str, list[tuple[str, Entry]]] = {}
        self._totals = totals

    def _cut_at(self, path: str) -> None:
        """Nothing at ``path`` or below it, from ``below`` or from earlier deltas."""
        self._cut.add(path)
        prefix = f"{path}/"
        for gone in [p for p in self._added if p == path or p.startswith(prefix)]:
            del self._added[gone]
            kids = self._kids.get(posixpath.dirname(gone))
            if kids is not None:
                kids.pop(posixpath.basename(gone), None)
        for parent in [p for p in self._kids if p == path or p.startswith(prefix)]:
            del self._kids[parent]

    def _is_cut(self, path: str) -> bool:
        while path:
            if path in self._cut:
                return True
            path = posixpath.dirname(path)
        return False

    def entry(self, path: str) -> Entry | None:
        added = self._added.get(path)
        if added is not None:
            return added
        if self._is_cut(path):
            return None
        return self.below.entry(path)

    def children(self, path: str) -> list[tuple[str, Entry]]:
        listing = self._listings.get(path)
        if listing is not None:
            return listing
        merged: dict[str, Entry] = {}
        if not self._is_cut(path):
            prefix = f"{path}/" if path else ""
            for name, entry in self.below.children(path):
                if prefix + name not in self._cut:
                    merged[name] = entry
        merged.update(self._kids.get(path, {}))
        listing = sorted(merged.items(), key=lambda item: item[0])
        self._listings[path] = listing
        return listing

    def totals(self) -> tuple[int, int]:
        return self._totals
