"""A version's whole tree, resolved from its delta and its parents' trees.

tree(v) = merge of tree(p) for each parent p in order (a later parent wins a
conflicting path), then v's own delta applied (removals, then additions).  A
snapshot manifest holds the whole tree and ends the walk, which bounds the
number of manifests read (see MAX_CHAIN_DEPTH).  Trees are memoized per
resolver, so resolving siblings reads each shared ancestor once.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field

from dsfs.errors import IntegrityError
from dsfs.format import manifest as mf
from dsfs.format.manifest import DIR, FILE, REMOVED, SYMLINK, Entry
from dsfs.repository import Repository

Tree = dict[str, Entry]

#: A version whose delta chain would be longer than this is written as a snapshot.
MAX_CHAIN_DEPTH = 32

IMPLIED_DIR_MODE = 0o40755


class TreeResolver:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._trees: dict[str, Tree] = {}

    def delta(self, version_id: str) -> list[Entry]:
        return list(mf.iter_entries(self.repo.manifest_bytes(version_id)))

    def tree(self, version_id: str) -> Tree:
        cached = self._trees.get(version_id)
        if cached is not None:
            return cached
        header = self.repo.header(version_id)
        base: Tree = {} if header.snapshot else self.merged(header.parents)
        tree = apply_delta(base, self.delta(version_id))
        self._trees[version_id] = tree
        return tree

    def merged(self, parents: Iterable[str]) -> Tree:
        """The trees of ``parents`` merged in order; a later parent wins."""
        parents = list(parents)
        if not parents:
            return {}
        if len(parents) == 1:
            return dict(self.tree(parents[0]))
        result: Tree = {}
        for parent in parents:
            overlay(result, self.tree(parent))
        check_structure(result)
        return result


def overlay(result: Tree, later: Tree) -> None:
    """Lay ``later`` over ``result`` in place: its entries win every conflict."""
    replaced_dirs = []
    for path, entry in later.items():
        old = result.get(path)
        if old is not None and old.kind == DIR and entry.kind != DIR:
            replaced_dirs.append(path)
        result[path] = entry
    sweep_below(result, replaced_dirs, keep=later)


def sweep_below(tree: Tree, dirs: list[str], keep: Tree | None = None) -> None:
    """Remove everything below the given directories (one pass over the tree)."""
    if not dirs:
        return
    prefixes = tuple(d + "/" for d in dirs)
    for path in [p for p in tree if p.startswith(prefixes)]:
        if keep is None or path not in keep:
            del tree[path]


def apply_delta(base: Tree, delta: Iterable[Entry]) -> Tree:
    """A new tree: ``base`` with removals, then additions, of one delta."""
    tree = dict(base)
    removed_dirs = []
    additions = []
    for entry in delta:
        if entry.kind == REMOVED:
            old = tree.pop(entry.path, None)
            if old is not None and old.kind == DIR:
                removed_dirs.append(entry.path)
        else:
            additions.append(entry)
    sweep_below(tree, removed_dirs)
    replaced_dirs = []
    for entry in additions:
        old = tree.get(entry.path)
        if old is not None and old.kind == DIR and entry.kind != DIR:
            replaced_dirs.append(entry.path)
        tree[entry.path] = entry
    sweep_below(tree, replaced_dirs, keep={e.path: e for e in additions})
    check_structure(tree)
    return tree


def check_structure(tree: Tree) -> None:
    """Every entry's parent must be a directory of the tree; add implied ones.

    An entry below a file or symlink would let a symlink in a manifest steer a
    later write outside the target directory, so such a tree is refused.
    """
    implied: dict[str, Entry] = {}
    for path in list(tree):
        parent = posixpath.dirname(path)
        while parent:
            node = tree.get(parent) or implied.get(parent)
            if node is None:
                implied[parent] = Entry(parent, DIR, 0, IMPLIED_DIR_MODE, 0)
            elif node.kind != DIR:
                raise IntegrityError(
                    f"manifest puts {path!r} below {parent!r}, which is a {node.kind}"
                )
            else:
                break
            parent = posixpath.dirname(parent)
    tree.update(implied)


@dataclass
class Changes:
    """What differs between two trees: files and symlinks only, not directories."""

    added: list[Entry] = field(default_factory=list)
    removed: list[Entry] = field(default_factory=list)
    modified: list[tuple[Entry, Entry]] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {"added": len(self.added), "removed": len(self.removed),
                "modified": len(self.modified)}


def compare(old: Tree, new: Tree) -> Changes:
    changes = Changes()
    for path, entry in new.items():
        if entry.kind == DIR:
            continue
        before = old.get(path)
        if before is None or before.kind == DIR:
            changes.added.append(entry)
        elif not before.same_content(entry):
            changes.modified.append((before, entry))
    for path, entry in old.items():
        if entry.kind == DIR:
            continue
        after = new.get(path)
        if after is None or after.kind == DIR:
            changes.removed.append(entry)
    changes.added.sort(key=lambda e: e.path)
    changes.removed.sort(key=lambda e: e.path)
    changes.modified.sort(key=lambda pair: pair[1].path)
    return changes


def make_delta(base: Tree, new: Tree) -> list[Entry]:
    """The smallest delta that turns ``base`` into ``new`` (mtime-only edits ignored)."""
    delta: list[Entry] = []
    for path in sorted(base):
        if path not in new:
            delta.append(Entry(path, REMOVED))
    for path in sorted(new):
        entry = new[path]
        before = base.get(path)
        if before is None or not before.same_content(entry):
            delta.append(entry)
    return delta


def totals(tree: Tree) -> dict[str, int]:
    files = sum(1 for e in tree.values() if e.kind in (FILE, SYMLINK))
    size = sum(e.size for e in tree.values() if e.kind == FILE)
    return {"files": files, "size": size}
