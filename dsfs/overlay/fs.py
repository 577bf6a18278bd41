"""The merged tree of a writable mount: a version (the lower layer) with the
edits of an upper layer on top.  No FUSE types here; ``dsfs.fuse.writable``
is the only caller that speaks to the kernel.

``OverlayFS`` is built in layers, each a module with one job:

* ``nodes``: the nodes, the inode table, the kernel's references, attributes
  and lookups;
* ``records``: the records describing the upper layer, and ``replay``;
* ``contents``: open files, copy-up, the block map, writes, truncates, fsync;
* this module: the operations that change names and attributes (create,
  mkdir, symlink, mknod, link, unlink, rmdir, rename, setattr) and the tree
  after a commit or a discard.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterable

from dsfs.format.manifest import DIR, FILE, SYMLINK, Entry
from dsfs.overlay.contents import Contents
from dsfs.overlay.journal import DirAttrs, Record, Removed
from dsfs.overlay.nodes import (
    NAME_MAX,
    SPECIAL,
    Exists,
    NameTooLong,
    Node,
    NotEmpty,
    NotPermitted,
    NotSupported,
    join,
)
from dsfs.overlay.records import Replayed
from dsfs.overlay.upper import JOURNAL_MIN_REMOVE, Upper
from dsfs.vfs import ROOT_INO, InvalidArgument, IsADirectory, NoEntry, NotADirectory, TreeSource

#: How far from the clock a truncate's mtime may be for it to need no record
#: (the kernel's "now", computed a moment before the request reaches us).
QUIET_MTIME_NS = 1_000_000_000

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


class OverlayFS(Contents):
    """The merged tree of one writable mount."""

    # -- changing the tree ---------------------------------------------------------------

    def _check_name(self, name: str) -> None:
        # a character is at most 4 bytes (surrogateescape: 1), so only a name
        # of more than NAME_MAX // 4 characters needs encoding to be measured
        if len(name) > NAME_MAX // 4 and len(os.fsencode(name)) > NAME_MAX:
            raise NameTooLong(name[:40] + "…")
        if not name or name in (".", "..") or "/" in name:
            raise InvalidArgument(name)

    def _free_name(self, parent: Node, name: str) -> dict[str, Node]:
        self._check_name(name)
        kids = self.children(parent)
        if name in kids:
            raise Exists(join(self.path(parent), name))
        return kids

    def _attach(self, parent: Node, name: str, node: Node) -> None:
        self.children(parent)[name] = node
        if node.parent is not None:  # another name of a hard-linked node
            node.aliases = [*(node.aliases or ()), (parent, name)]
        else:
            node.parent, node.name = parent, name
        if node.kind == DIR and parent.nsub is not None:
            parent.nsub += 1  # kept exact: a count per change would be quadratic
        self._touch_dir(parent)

    def create(self, parent_ino: int, name: str, mode: int, opening: bool = False,
               owner: tuple[int, int] | None = None) -> Node:
        """A new, empty file; with ``opening``, also opened for writing (as
        ``open`` would); ``owner`` (uid, gid) when not the mounting user."""
        parent = self.node(parent_ino)
        self._free_name(parent, name)
        if not stat.S_ISREG(mode) and stat.S_IFMT(mode):
            raise NotPermitted(f"{name}: dsfs stores only files, directories and symlinks")
        self.upper.reserve()
        data_id, fd = self.upper.new_data()
        now = time.time_ns()
        try:
            # a spare was made earlier: the data file's mtime is the one a remount reads
            os.utime(fd, ns=(now, now))
        except BaseException:
            os.close(fd)
            self.upper.retire(data_id)
            raise
        node = self._new_node(FILE, mode, now)
        node.data = data_id
        self._own(node, owner)
        if opening:
            node.fd, node.opens = fd, 1
        else:
            os.close(fd)
        self._attach(parent, name, node)
        self._changed(node)
        return node

    def mkdir(self, parent_ino: int, name: str, mode: int,
              owner: tuple[int, int] | None = None) -> Node:
        parent = self.node(parent_ino)
        self._free_name(parent, name)
        self.upper.reserve()
        node = self._new_node(DIR, mode, time.time_ns())
        node.children = {}
        self._own(node, owner)
        self._attach(parent, name, node)
        self._changed(node)
        return node

    def symlink(self, parent_ino: int, name: str, target: str,
                owner: tuple[int, int] | None = None) -> Node:
        parent = self.node(parent_ino)
        self._free_name(parent, name)
        self.upper.reserve()
        node = self._new_node(SYMLINK, 0o777, time.time_ns())
        node.target = target
        node.size = len(os.fsencode(target))
        self._own(node, owner)
        self._attach(parent, name, node)
        self._changed(node)
        return node

    def special(self, parent_ino: int, name: str, mode: int, rdev: int,
                owner: tuple[int, int] | None = None) -> Node:
        """A FIFO, socket or device node (``mode`` with its type bits): kept in the
        overlay, never committed."""
        parent = self.node(parent_ino)
        self._free_name(parent, name)
        if stat.S_IFMT(mode) not in (stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR,
                                     stat.S_IFBLK):
            raise InvalidArgument(f"{name}: not a FIFO, socket or device")
        self.upper.reserve()
        node = self._new_node(SPECIAL, mode, time.time_ns())
        node.ftype, node.rdev = stat.S_IFMT(mode), rdev
        self._own(node, owner)
        self._attach(parent, name, node)
        self._changed(node)
        return node

    def unlink(self, parent_ino: int, name: str) -> None:
        parent = self.node(parent_ino)
        node = self._child(parent, name)
        if node.kind == DIR:
            raise IsADirectory(self.path(node))
        self._remove(parent, name)

    def rmdir(self, parent_ino: int, name: str) -> None:
        parent = self.node(parent_ino)
        node = self._child(parent, name)
        if node.kind != DIR:
            raise NotADirectory(self.path(node))
        if self.children(node):
            raise NotEmpty(self.path(node))
        self._remove(parent, name)

    def _remove(self, parent: Node, name: str) -> None:
        path = join(self.path(parent), name)
        self.upper.reserve(JOURNAL_MIN_REMOVE)
        node = self.children(parent).pop(name)
        self._unname(node, parent, name)
        if node.kind == DIR and parent.nsub is not None:
            parent.nsub -= 1
        self._touch_dir(parent)
        if node.parent is None:  # its last name
            self._forget_subtree(node)
        else:
            node.ctime_ns = time.time_ns()  # one link less
        self.upper.append([Removed(path)])

    def link(self, ino: int, new_parent_ino: int, new_name: str) -> Node:
        """Another name for a file, symlink or special file (a hard link; the
        adapter copies a lower file up first: the name is the data file's)."""
        node = self.node(ino)
        if node.kind == DIR:
            raise NotPermitted(f"{self.path(node)}: hard links to directories")
        if node.parent is None:
            raise NoEntry(f"inode {ino} has no name left")
        if node.kind == FILE and node.data is None:
            raise RuntimeError("copy up before linking")
        parent = self.node(new_parent_ino)
        self._free_name(parent, new_name)
        self.upper.reserve()
        self._attach(parent, new_name, node)
        node.ctime_ns = time.time_ns()
        self._changed(node)
        return node


    def rename(self, old_parent_ino: int, old_name: str, new_parent_ino: int, new_name: str,
               flags: int = 0) -> None:
        if flags & RENAME_EXCHANGE:
            raise NotSupported("rename with RENAME_EXCHANGE")
        old_parent = self.node(old_parent_ino)
        new_parent = self.node(new_parent_ino)
        node = self._child(old_parent, old_name)
        self._check_name(new_name)
        target = self.children(new_parent).get(new_name)
        if target is node:
            return
        up: Node | None = new_parent if node.kind == DIR else None
        while up is not None:  # no directory may move below itself
            if up is node:
                raise InvalidArgument(f"cannot move {self.path(node)} below itself")
            up = up.parent
        if target is not None:
            if flags & RENAME_NOREPLACE:
                raise Exists(self.path(target))
            if node.kind == DIR and target.kind != DIR:
                raise NotADirectory(self.path(target))
            if node.kind != DIR and target.kind == DIR:
                raise IsADirectory(self.path(target))
            if target.kind == DIR and self.children(target):
                raise NotEmpty(self.path(target))
        old_dir = self.path(old_parent)
        old_path = join(old_dir, old_name)
        self.upper.reserve()
        del self.children(old_parent)[old_name]
        self._unname(node, old_parent, old_name)
        if node.kind == DIR and old_parent.nsub is not None:
            old_parent.nsub -= 1
        node.ctime_ns = time.time_ns()  # a rename changes the inode's ctime
        self._touch_dir(old_parent)
        if target is not None:
            del self.children(new_parent)[new_name]
            if target.kind == DIR and new_parent.nsub is not None:
                new_parent.nsub -= 1
            self._unname(target, new_parent, new_name)
            if target.parent is None:
                self._forget_subtree(target)
            else:
                target.ctime_ns = time.time_ns()  # a hard link less
        self._attach(new_parent, new_name, node)
        node.dirty = True
        self._mark_path(node if node.kind == DIR else new_parent)
        records: list[Record] = [Removed(old_path)]
        new_dir = old_dir if new_parent is old_parent else self.path(new_parent)
        self._records_of(node, join(new_dir, new_name), records)
        self.upper.append(records)

    def setattr(self, ino: int, mode: int | None = None, size: int | None = None,
                mtime_ns: int | None = None, uid: int | None = None,
                gid: int | None = None, atime_ns: int | None = None) -> Node:
        """chmod, utimens, chown (who may is the adapter's and the kernel's
        question: any owner is stored); ``truncate`` first goes through
        ``copy_up_plan`` in the adapter.  Every change moves the ctime."""
        node = self.node(ino)
        if uid is not None and uid == (self.uid if node.uid is None else node.uid):
            uid = None
        if gid is not None and gid == (self.gid if node.gid is None else node.gid):
            gid = None
        if size is None and mtime_ns is None and atime_ns is None and uid is None \
                and gid is None and (mode is None or node.kind == SYMLINK
                                     or mode & 0o7777 == node.mode):
            return node  # nothing changes (rsync sets a new file's mode once more)
        now = time.time_ns()
        # A truncate of a changed file needs no record, as a write needs none:
        # a remount reads the size and mtime from the data file (``_node_of``),
        # which ftruncate and utime change before this request returns.  So
        # after kill -9 the truncate is kept (the data file's inode outlives
        # the process), and after a power loss it is kept or lost together with
        # the file's bytes, as writes are; an fsync covers it either way (the
        # data file's fsync/fdatasync makes its size durable).  Only when
        # nothing else changes: not the mode, owner or atime, not a partly
        # copied file (its missing blocks and ``lower_end`` are in the record),
        # not a file whose first change this is (``dirty``: no record of its
        # data file yet), and an mtime that is "now" (the kernel's ftruncate
        # and O_TRUNC send that), so the ctime a remount shows (the mtime, see
        # ``attr``) is the one shown now: ``ctime_ns`` is left as recorded.
        quiet = (size is not None and mode is None and uid is None and gid is None
                 and atime_ns is None and node.kind == FILE and node.dirty
                 and node.data is not None and not node.missing
                 and (mtime_ns is None or abs(mtime_ns - now) < QUIET_MTIME_NS))
        self.upper.reserve()
        if size is not None:
            self.truncate(node, size, set_mtime=mtime_ns is None)
        if mode is not None and node.kind != SYMLINK:
            node.mode = mode & 0o7777
        if uid is not None:
            node.uid = None if uid == self.uid else uid
        if gid is not None:
            node.gid = None if gid == self.gid else gid
        if atime_ns is not None:
            node.atime_ns = atime_ns
        if not quiet:
            node.ctime_ns = now
        if mtime_ns is not None:
            node.mtime_ns = mtime_ns
            if node.fd is not None:
                os.utime(node.fd, ns=(mtime_ns, mtime_ns))
            elif node.data is not None:
                os.utime(self.upper.data_file(node.data), ns=(mtime_ns, mtime_ns))
        if quiet:
            node.digest = None
            return node
        if node.kind == DIR:
            self._mark_path(node)
            node.dirty = True
            if self.attached(node):
                self.upper.append([DirAttrs(self.path(node), node.mode, node.mtime_ns,
                                            self._meta(node))])
        else:
            self._changed(node)
        return node


    # -- after a commit or a discard -------------------------------------------------------

    def rebase(self, source: TreeSource, entry_of: Callable[[str], Entry | None]) -> None:
        """Make the current tree the lower layer: ``source`` is the new version,
        ``entry_of(path)`` its entry for a committed path.  Inode numbers stay."""
        self.source = source
        stack: list[tuple[Node, str]] = [(self.root, "")]
        self.root.dirty = False
        while stack:
            node, path = stack.pop()
            node.marked = False
            node.lower_dir = path
            for name, child in (node.children or {}).items():
                child_path = join(path, name)
                child.dirty = False
                if child.kind == DIR:
                    stack.append((child, child_path))
                    continue
                if child.kind != FILE:
                    continue
                committed = entry_of(child_path)
                if committed is not None:
                    child.lower = committed
                if child.data is not None and child.opens == 0:
                    self._drop_data(child)
        for node in self._inodes.values():
            if not self.attached(node):
                node.dirty = False

    def reset(self, source: TreeSource) -> tuple[Node, list[str]]:
        """Drop every edit (discard): a fresh tree over ``source``; returns the old
        root and the names it had (for the kernel's caches)."""
        old_root = self.root
        names = list(old_root.children or {})
        for node in self._inodes.values():
            # a file still open (the kernel still refers to it) keeps its bytes
            # until closed, like an unlinked one (``_unreferenced``)
            if node.data is not None and node.opens == 0 and node.lookups == 0:
                self.upper.retire(node.data)
                node.data = None
        self.source = source
        del self._inodes[ROOT_INO]
        self._next_ino, saved = ROOT_INO, self._next_ino
        self.root = self._new_root()
        self._next_ino = saved
        for node in list(self._inodes.values()):  # what the kernel never saw goes now
            if node is not self.root and node.lookups == 0 and node.opens == 0:
                del self._inodes[node.ino]
        return old_root, names


def restore(source: TreeSource, upper: Upper, records: Iterable[Record], store_id: str,
            base: str) -> tuple[OverlayFS, Replayed, int]:
    """The merged tree a mount serves: ``records`` (``Upper.load``'s) replayed
    over ``source``, the data files no record names removed (how many: the
    third item; first, so that a full disk has their room for the snapshot),
    then written as a new snapshot, which starts a new journal.  Removing
    them first is safe because ``load`` fsynced the journal it read: else,
    after a kill -9, the disk might still hold a journal without a removal
    that was only in the page cache, and a power loss would bring back the
    name without its file."""
    fs = OverlayFS(source, upper)
    replayed = fs.replay(records)
    removed = upper.collect(fs.data_ids())
    upper.save(store_id, base, fs.records())
    return fs, replayed, removed
