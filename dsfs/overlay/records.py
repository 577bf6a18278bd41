"""The journal side of the merged tree: the records that describe its upper
layer, and rebuilding the tree from them (the record types and their codec
are ``dsfs.overlay.journal``'s; ``dsfs.overlay.upper`` writes them).

Each operation first asks the upper layer for journal room
(``Upper.reserve``: ENOSPC before anything changes), then changes the tree,
then appends the records of what it changed (``_changed``, or its own list
in one ``append``).  ``records()`` describes the whole
upper layer (the snapshot), walking only directories marked as holding
changes.  Writes and truncates of a file already changed append nothing: its
data file holds its bytes, size and mtime, which a replay reads from it.

A mount rebuilds the tree with ``replay(records)``: each record is applied
in order, nodes it replaces are dropped (nobody has referred to them yet), a
record that no longer applies is skipped and reported with its data file
moved to the overlay's ``orphans/`` (never deleted), and ``check()`` then
verifies the invariants: every data file is named by exactly one node, and
every partly copied file has its lower entry and its missing blocks below
``lower_end``.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field

from dsfs.errors import IntegrityError
from dsfs.format.manifest import DIR, FILE, SYMLINK
from dsfs.overlay.journal import (
    DirAttrs,
    Directory,
    File,
    Record,
    Removed,
    Special,
    Symlink,
)
from dsfs.overlay.nodes import BLOCK, SPECIAL, Inodes, Node, join
from dsfs.vfs import VfsError


class NotReplayable(VfsError):
    """A record that cannot be applied to the tree it is replayed on."""


@dataclass
class Replayed:
    """What ``replay`` did: records applied, records skipped (with why), and
    the data files of skipped records kept in ``orphans/`` (path, where)."""

    applied: int = 0
    skipped: list[tuple[Record, str]] = field(default_factory=list)
    orphans: list[tuple[str, str]] = field(default_factory=list)




class Records(Inodes):
    """Records of the tree's changes, and the tree rebuilt from records."""

    #: while replaying: the node each data file belongs to (hard links), and the
    #: data files a power loss left short or gone, with the size and mtime their
    #: latest record gives (see ``_node_of``)
    _by_data: dict[str, Node]
    _short: dict[str, tuple[int, int]]

    def _changed(self, node: Node) -> None:
        """Record ``node``'s new value (nothing for an unlinked node)."""
        self._mark(node)
        node.digest = None
        path = self.attached_path(node)
        if path is None:
            return
        if node.aliases:  # every name of a hard-linked node
            self.upper.append([self._record(node, name) for name in self.names(node)])
        else:
            self.upper.append([self._record(node, path)])


    # -- records ------------------------------------------------------------------------

    def _record(self, node: Node, path: str) -> Record:
        meta = self._meta(node)
        kind = node.kind
        if kind != FILE:  # (one test for nearly every record: most are files')
            if kind == DIR:
                return Directory(path, node.lower_dir, node.mode, node.mtime_ns, meta)
            if kind == SYMLINK:
                return Symlink(path, node.target or "", node.mtime_ns, meta)
            if kind == SPECIAL:
                return Special(path, node.ftype | node.mode, node.rdev, node.mtime_ns, meta)
        if node.missing and node.data is not None:
            return File(path, node.lower.path if node.lower else None, node.data, node.mode,
                        node.mtime_ns, node.size, tuple(sorted(node.missing)), node.lower_end,
                        meta)
        return File(path, node.lower.path if node.lower else None, node.data, node.mode,
                    node.mtime_ns, node.size, meta=meta)

    def _records_of(self, node: Node, path: str, out: list[Record]) -> None:
        """``node``'s record, then (directories) those of what changed below."""
        out.append(self._record(node, path))
        if node.kind == DIR:
            self._walk(node, path, out)

    def _clean_at(self, node: Node, lower_path: str | None) -> bool:
        """True when ``node`` is exactly the lower entry at ``lower_path``."""
        if node.dirty or lower_path is None:
            return False
        if node.kind == DIR:
            return node.lower_dir == lower_path
        if node.kind == FILE:
            return node.data is None and node.lower is not None and \
                node.lower.path == lower_path
        return True  # an unmodified lower symlink

    def _walk(self, node: Node, path: str, out: list[Record]) -> None:
        if node.children is None or not node.marked:
            return
        lower_names = ({name for name, _e in self.source.children(node.lower_dir)}
                       if node.lower_dir is not None else set())
        for name in sorted(lower_names - node.children.keys()):
            out.append(Removed(join(path, name)))
        for name in sorted(node.children):
            child = node.children[name]
            child_path = join(path, name)
            lower_path = join(node.lower_dir, name) if node.lower_dir is not None else None
            if not self._clean_at(child, lower_path if name in lower_names else None):
                out.append(self._record(child, child_path))
            if child.kind == DIR:
                self._walk(child, child_path, out)

    def records(self) -> list[Record]:
        """The whole upper layer as records (parents before children)."""
        out: list[Record] = []
        if self.root.dirty:
            out.append(DirAttrs("", self.root.mode, self.root.mtime_ns,
                                self._meta(self.root)))
        self._walk(self.root, "", out)
        return out

    def has_changes(self) -> bool:
        return bool(self.records())


    def replay(self, records: Iterable[Record]) -> Replayed:
        """Rebuild the upper layer from its records (a mount: the snapshot's,
        then the journal's), before the kernel has seen any node.  Nodes that a
        later record replaced are dropped; a record that does not apply is
        skipped and reported, and its data file, unless a live node names it,
        is moved to ``orphans/`` rather than deleted.  Ends with ``check()``."""
        if any(node.lookups or node.opens for node in self._inodes.values()):
            raise RuntimeError("replay() runs before the tree is served")
        report = Replayed()
        self._by_data, self._short = {}, {}
        for record in records:
            try:
                self._apply(record)
                report.applied += 1
            except (VfsError, OSError) as exc:
                report.skipped.append((record, str(exc)))
        self._by_data = {}
        live = self._live()
        self._inodes = {node.ino: node for node in live}
        for node in live:
            if node.data is not None and node.data in self._short:
                self._repair(node.data, *self._short[node.data])
        self._short = {}
        named = self.data_ids()
        for record, _why in report.skipped:
            if isinstance(record, File) and record.data and record.data not in named:
                where = self.upper.keep_orphan(record.data)
                if where is not None:
                    named.add(record.data)
                    report.orphans.append((record.path, str(where)))
        self.check()
        return report

    def _live(self) -> list[Node]:
        """The nodes reachable from the root (through materialized children)."""
        out, stack = [], [self.root]
        while stack:
            node = stack.pop()
            out.append(node)
            if node.children:
                stack.extend(node.children.values())
        return out

    def check(self) -> None:
        """The invariants of the tree and its upper layer; IntegrityError if one
        fails: every data file is named by one node only (no node with missing
        blocks shares the data file another one filled), and every partly
        copied file has a lower file entry, missing blocks below its
        ``lower_end``, and a data file."""
        named: dict[str, Node] = {}
        for node in self._inodes.values():
            if node.data is not None:
                other = named.setdefault(node.data, node)
                if other is not node:
                    raise IntegrityError(
                        f"overlay data file {node.data} is named by two nodes "
                        f"({self.path(other) or '/'} and {self.path(node) or '/'})")
            if node.missing:
                lower = node.lower
                if (node.data is None or lower is None or lower.kind != FILE
                        or node.lower_end > lower.size
                        or max(node.missing) * BLOCK >= node.lower_end):
                    raise IntegrityError(
                        f"{self.path(node)}: partly copied file with missing blocks "
                        f"{sorted(node.missing)[:5]} below {node.lower_end} of "
                        f"{lower.path if lower else None} (data {node.data})")

    def _apply(self, record: Record) -> None:
        """Replay one record."""
        path = record.path
        if isinstance(record, DirAttrs):
            node = self.resolve(path)
            if node.kind != DIR:
                raise NotReplayable(f"{path} is not a directory")
            node.mode, node.mtime_ns = record.mode & 0o7777, record.mtime_ns
            self._set_meta(node, record.meta)
            node.dirty = True
            self._mark_path(node)
            return
        if not path:
            raise NotReplayable("a record replaces the root")
        parent = self.resolve(posixpath.dirname(path))
        name = posixpath.basename(path)
        kids = self.children(parent)
        linked = self._by_data.get(record.data) if isinstance(record, File) and \
            record.data else None
        if linked is not None and (linked.parent is None or not self.attached(linked)):
            linked = None  # the data file's earlier name is gone: not a hard link
        made = self._node_of(record)  # before anything changes: it may not apply
        if linked is not None and made is not None:
            # the node that has this data file under another name (a hard link), or
            # under this one (a newer record of it): it takes the record's content
            for slot in ("mode", "mtime_ns", "size", "data", "lower", "lower_end",
                         "missing"):
                setattr(linked, slot, getattr(made, slot))
            made = linked
        old = kids.pop(name, None)
        if old is not None:
            self._unname(old, parent, name)
        parent.nsub = None
        self._mark_path(parent)
        if made is None:
            return
        if not isinstance(record, Removed):
            self._set_meta(made, record.meta)
        if made.parent is not None:  # another name of a hard-linked file
            made.aliases = [*(made.aliases or ()), (parent, name)]
        else:
            made.parent, made.name = parent, name
        kids[name] = made
        if isinstance(record, File) and record.data:
            self._by_data[record.data] = made
        self._mark(made)

    def _repair(self, data_id: str, size: int, mtime_ns: int) -> None:
        """Make a data file what its latest record says a power loss cannot
        have changed: there (a power loss kept the journal but not the file's
        name in ``data/``: an empty file) and, partly copied, at least the
        record's size (the copy-up's ftruncate was lost: the lower bytes of
        the missing blocks must still show)."""
        fd = os.open(self.upper.data_file(data_id), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
        try:
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
            os.utime(fd, ns=(mtime_ns, mtime_ns))
        finally:
            os.close(fd)

    def _node_of(self, record: Record) -> Node | None:
        """A new node for ``record`` (None for a removal)."""
        if isinstance(record, Removed):
            return None
        if isinstance(record, Directory):
            node = self._new_node(DIR, record.mode, record.mtime_ns)
            node.lower_dir = record.lower
            if node.lower_dir is None:
                node.children = {}
            return node
        if isinstance(record, Symlink):
            node = self._new_node(SYMLINK, 0o777, record.mtime_ns)
            node.target = record.target
            node.size = len(os.fsencode(record.target))
            return node
        if isinstance(record, Special):
            node = self._new_node(SPECIAL, record.mode, record.mtime_ns)
            node.ftype, node.rdev = stat.S_IFMT(record.mode), record.rdev
            return node
        assert isinstance(record, File)
        if record.data is None:
            entry = self.source.entry(record.lower or "")
            if entry is None or entry.kind != FILE:
                raise NotReplayable(f"{record.path}: its lower file {record.lower!r} is gone")
            node = self._new_node(FILE, record.mode, record.mtime_ns)
            node.lower, node.size = entry, entry.size
            return node
        lower = None
        if record.missing:
            lower = self.source.entry(record.lower or "")
            if lower is None or lower.kind != FILE:
                # its holes would read as zeros: keep the data file, not the path
                raise NotReplayable(f"{record.path}: partly copied from {record.lower!r}, "
                                    f"which the lower layer lacks")
        node = self._new_node(FILE, record.mode, record.mtime_ns)
        node.data = record.data
        # the data file's size and mtime are the truth: writes to a changed file
        # add no record (the data file holds them); the file is as it is now, after
        # every record of it, so a repair waits until the last one (``replay``)
        try:
            st = os.stat(self.upper.data_file(record.data))
            size, mtime_ns, gone = st.st_size, st.st_mtime_ns, False
        except FileNotFoundError:
            size, mtime_ns, gone = 0, record.mtime_ns, True
        least = record.size if record.missing else 0
        if gone or size < least:
            size, mtime_ns = max(size, least), record.mtime_ns
            self._short[record.data] = (size, mtime_ns)
        else:
            self._short.pop(record.data, None)
        node.size, node.mtime_ns = size, mtime_ns
        if lower is not None:
            node.lower, node.lower_end = lower, min(record.lower_end, lower.size)
            node.missing = {b for b in record.missing if b * BLOCK < node.lower_end} or None
            if node.missing is None:
                node.lower = None
        return node

