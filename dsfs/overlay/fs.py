"""The merged tree of a writable mount: a version (the lower layer) with the
edits of an upper layer on top.  No FUSE types here; ``dsfs.fuse.writable``
is the only caller that speaks to the kernel.

Every node of the merged tree that anyone has looked at is a ``Node`` with an
inode number that stays the same while the kernel holds it (also across a
commit); the kernel's references are counted (``remember``/``forget``) and
the children of an unchanged directory are dropped once none is referenced.
A directory's children are materialized from the lower layer on first use
(``children is None`` until then); a directory carries ``lower_dir``, the
lower directory its unmaterialized children come from, so renaming a
directory with a million lower files below it moves one node and copies
nothing.  A file's bytes are either a lower entry's chunks
(``lower``) or a data file of the upper layer (``data``), or, while
partly copied up, the data file except for the ``missing`` blocks, which are
still the lower entry's (a write fills only the blocks it touches; status and
commit fill the rest).

Changes are described by *records* (``dsfs.overlay.journal``: whole values
for one path).  Each operation first asks the upper layer for journal room
(``Upper.reserve``: ENOSPC before anything changes), then changes the tree,
then appends the records of what it changed to the journal
(``dsfs.overlay.upper``); ``records()`` describes the whole upper layer (the
snapshot), walking only directories marked as holding changes.  Writes and
truncates of a file already changed append nothing: its data file holds its
bytes, size and mtime, which a replay reads from it (see ``setattr``).

A mount rebuilds the tree with ``replay(records)``: each record is applied
in order, nodes it replaces are dropped (nobody has referred to them yet), a
record that no longer applies is skipped and reported with its data file
moved to the overlay's ``orphans/`` (never deleted), and ``check()`` then
verifies the invariants: every data file is named by exactly one node, and
every partly copied file has its lower entry and its missing blocks below
``lower_end``.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from dsfs.engine.tree import IMPLIED_DIR_MODE
from dsfs.errors import IntegrityError
from dsfs.format.digest import CHUNK_SIZE
from dsfs.format.manifest import DIR, FILE, SYMLINK, Entry
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
)
from dsfs.overlay.upper import JOURNAL_MIN_REMOVE, Upper
from dsfs.vfs import (
    ROOT_INO,
    Attr,
    FsStats,
    InvalidArgument,
    IsADirectory,
    NoEntry,
    NotADirectory,
    TreeSource,
    VfsError,
)

NAME_MAX = 255
#: Copy-up granularity: the store's chunk size (a block is fetched whole).
BLOCK = CHUNK_SIZE
#: The node kind of FIFOs, sockets and device nodes: kept in the overlay, shown
#: by the mount, never committed (a version holds files, directories, symlinks).
SPECIAL = "special"


class Exists(VfsError):
    """The name is taken (create, mkdir, symlink, rename with NOREPLACE)."""


class NotEmpty(VfsError):
    """rmdir of, or rename over, a directory that has children."""


class NotPermitted(VfsError):
    """An operation dsfs does not store: hard links, device files, fifos, sockets,
    a change of owner."""


class NotSupported(VfsError):
    """Extended attributes and rename flags dsfs does not implement."""


class NameTooLong(VfsError):
    """A name longer than 255 bytes."""


class Busy(VfsError):
    """The overlay is in a state that forbids the request (see the message)."""


class NotReplayable(VfsError):
    """A record that cannot be applied to the tree it is replayed on."""


@dataclass
class Replayed:
    """What ``replay`` did: records applied, records skipped (with why), and
    the data files of skipped records kept in ``orphans/`` (path, where)."""

    applied: int = 0
    skipped: list[tuple[Record, str]] = field(default_factory=list)
    orphans: list[tuple[str, str]] = field(default_factory=list)


#: Exceptions of this package and their errno (the adapter adds them to its table).
OVERLAY_ERRNO: dict[type[BaseException], int] = {
    Exists: errno.EEXIST,
    NotEmpty: errno.ENOTEMPTY,
    NotPermitted: errno.EPERM,
    NotSupported: errno.EOPNOTSUPP,
    NameTooLong: errno.ENAMETOOLONG,
    Busy: errno.EBUSY,
}

#: How far from the clock a truncate's mtime may be for it to need no record
#: (the kernel's "now", computed a moment before the request reaches us).
QUIET_MTIME_NS = 1_000_000_000

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


class Node:
    """One file, directory or symlink of the merged tree."""

    __slots__ = ("ino", "kind", "mode", "mtime_ns", "size", "lower", "data", "fd",
                 "target", "lower_dir", "children", "parent", "name", "dirty", "marked",
                 "opens", "writers", "digest", "version", "lookups", "held", "missing",
                 "lower_end", "uid", "gid", "atime_ns", "ctime_ns", "ftype", "rdev", "nsub",
                 "aliases")

    def __init__(self, ino: int, kind: str, mode: int, mtime_ns: int) -> None:
        self.ino = ino
        self.kind = kind
        self.mode = mode  # permission bits only (0o7777)
        self.mtime_ns = mtime_ns
        self.size = 0
        self.lower: Entry | None = None  # file bytes, when not copied up
        self.data: str | None = None  # upper data file id
        self.fd: int | None = None  # open data file while handles are open
        self.target: str | None = None
        self.lower_dir: str | None = None  # directories: where lower children come from
        self.children: dict[str, Node] | None = None
        self.parent: Node | None = None
        self.name = ""
        self.dirty = False  # content or attributes differ from where it came from
        self.marked = False  # this directory has changes at or below it
        self.opens = 0
        self.writers = 0
        self.digest: tuple[int, str] | None = None  # (version, digest of the data file)
        self.version = 0  # bumped by every write, invalidates ``digest``
        self.lookups = 0  # references the kernel holds (see ``remember``/``forget``)
        self.held = 0  # directories: about how many children have lookups (a hint)
        #: partly copied up: blocks (of BLOCK bytes) still read from ``lower``, whose
        #: bytes below ``lower_end`` are the file's there (the data file has a hole)
        self.missing: set[int] | None = None
        self.lower_end = 0
        #: what a version does not store (None: the mounting user; the mtime)
        self.uid: int | None = None
        self.gid: int | None = None
        self.atime_ns: int | None = None
        self.ctime_ns: int | None = None
        self.ftype = 0  # SPECIAL: the S_IFMT bits (FIFO, socket, device)
        self.rdev = 0  # SPECIAL: the device number
        #: directories: how many children are directories (None: count when asked)
        self.nsub: int | None = None
        #: hard links: the names besides (parent, name), as (directory, name)
        self.aliases: list[tuple[Node, str]] | None = None


@dataclass
class CopyUp:
    """What the adapter must copy from the lower layer into ``fd``: ``length``
    bytes of ``entry`` (0 when the file is being truncated anyway)."""

    node: Node
    entry: Entry
    length: int
    data_id: str
    fd: int


class OverlayFS:
    """The merged tree of one writable mount."""

    def __init__(self, source: TreeSource, upper: Upper, uid: int | None = None,
                 gid: int | None = None) -> None:
        self.source = source
        self.upper = upper
        self.uid = os.getuid() if uid is None else uid
        self.gid = os.getgid() if gid is None else gid
        self._inodes: dict[int, Node] = {}
        self._next_ino = ROOT_INO
        self.root = self._new_root()
        #: while replaying: the node each data file belongs to (hard links)
        self._by_data: dict[str, Node] = {}

    # -- nodes ---------------------------------------------------------------------

    def _new_node(self, kind: str, mode: int, mtime_ns: int) -> Node:
        node = Node(self._next_ino, kind, mode & 0o7777, mtime_ns)
        self._inodes[node.ino] = node
        self._next_ino += 1
        return node

    def _new_root(self) -> Node:
        entry = self.source.entry("")
        root = self._new_node(DIR, entry.mode if entry else IMPLIED_DIR_MODE,
                              entry.mtime_ns if entry else 0)
        root.lower_dir = ""
        return root

    def _from_lower(self, entry: Entry) -> Node:
        node = self._new_node(entry.kind, entry.mode, entry.mtime_ns)
        if entry.kind == DIR:
            node.lower_dir = entry.path
        elif entry.kind == SYMLINK:
            node.target = entry.target or ""
            node.size = entry.size
        else:
            node.lower = entry
            node.size = entry.size
        return node

    def node(self, ino: int) -> Node:
        node = self._inodes.get(ino)
        if node is None:
            raise NoEntry(f"inode {ino} is unknown")
        return node

    def children(self, node: Node) -> dict[str, Node]:
        if node.kind != DIR:
            raise NotADirectory(self.path(node))
        if node.children is None:
            node.children = {}
            node.nsub = None
            if node.lower_dir is not None:
                for name, entry in self.source.children(node.lower_dir):
                    child = self._from_lower(entry)
                    child.parent, child.name = node, name
                    node.children[name] = child
        return node.children

    def path(self, node: Node) -> str:
        parts = []
        while node.parent is not None:
            parts.append(node.name)
            node = node.parent
        return "/".join(reversed(parts))

    def attached(self, node: Node) -> bool:
        while node.parent is not None:
            node = node.parent
        return node is self.root

    # -- the kernel's references ------------------------------------------------------

    def remember(self, ino: int) -> None:
        """The kernel was given one more reference to ``ino`` (an entry reply)."""
        node = self._inodes.get(ino)
        if node is None:
            return
        node.lookups += 1
        if node.lookups == 1 and node.parent is not None:
            node.parent.held += 1

    def forget(self, ino: int, count: int) -> None:
        """The kernel dropped ``count`` references.  A node nobody refers to any
        more is released: removed nodes at once; the children of a directory
        without changes once none of them is referenced (they are made again
        from the lower layer when next listed, with new inode numbers)."""
        node = self._inodes.get(ino)
        if node is None or node is self.root or node.lookups <= 0:
            return
        node.lookups = max(0, node.lookups - count)
        if node.lookups:
            return
        parent = node.parent
        if parent is not None:
            parent.held = max(0, parent.held - 1)
        if not self.attached(node):
            if node.opens == 0:
                self._inodes.pop(node.ino, None)
            return
        while parent is not None and parent.held == 0 and self._collapse(parent):
            if parent.lookups or parent.parent is None:
                break
            parent = parent.parent

    def _releasable(self, node: Node) -> bool:
        return (node.lookups == 0 and node.opens == 0 and node.data is None
                and not node.dirty and not node.aliases
                and (node.kind != DIR or node.children is None))

    def _collapse(self, node: Node) -> bool:
        """Drop the children of an unchanged directory if nothing refers to them."""
        kids = node.children
        if (kids is None or node.marked or node.dirty or node.lower_dir is None or node.opens
                or not all(self._releasable(k) and k.parent is node  # no hard link
                           for k in kids.values())):
            return False
        for kid in kids.values():
            self._inodes.pop(kid.ino, None)
            kid.parent = None
        node.children = None
        return True

    def node_count(self) -> int:
        return len(self._inodes)

    def _child(self, parent: Node, name: str) -> Node:
        child = self.children(parent).get(name)
        if child is None:
            raise NoEntry(join(self.path(parent), name))
        return child

    def _mark(self, node: Node) -> None:
        """Note that ``node`` changed: its ancestors hold changes."""
        node.dirty = True
        up = node if node.kind == DIR else node.parent
        while up is not None and not up.marked:
            up.marked = True
            up = up.parent

    def _touch_dir(self, node: Node) -> None:
        # a directory's mtime follows its entries, in memory only: it is not
        # part of a version's content (make_delta ignores mtimes)
        node.mtime_ns = time.time_ns()
        self._mark_path(node)

    def _mark_path(self, node: Node | None) -> None:
        while node is not None and not node.marked:
            node.marked = True
            node = node.parent

    # -- attributes ------------------------------------------------------------------

    def attr(self, node: Node) -> Attr:
        uid = self.uid if node.uid is None else node.uid
        gid = self.gid if node.gid is None else node.gid
        # a write moves the mtime past the last metadata change: ctime follows it
        ctime = node.ctime_ns if node.ctime_ns is not None and \
            node.ctime_ns > node.mtime_ns else None
        if node.kind == DIR:
            return Attr(node.ino, stat.S_IFDIR | node.mode, 0, node.mtime_ns,
                        self._dir_links(node), uid, gid, node.atime_ns, ctime)
        # unlinked while open: 0 (fstat); only empty directories are ever removed, so
        # a node below a removed one is no concern
        links = 0 if node.parent is None else 1 + len(node.aliases or ())
        if node.kind == SYMLINK:
            return Attr(node.ino, stat.S_IFLNK | 0o777, node.size, node.mtime_ns, links,
                        uid, gid, node.atime_ns, ctime)
        if node.kind == SPECIAL:
            return Attr(node.ino, node.ftype | node.mode, 0, node.mtime_ns, links, uid, gid,
                        node.atime_ns, ctime, node.rdev)
        return Attr(node.ino, stat.S_IFREG | node.mode, node.size, node.mtime_ns, links,
                    uid, gid, node.atime_ns, ctime)

    @staticmethod
    def _dir_links(node: Node) -> int:
        """2 + subdirectories once the children are known; 1 ("not counted", as
        btrfs says, so ``find`` makes no leaf assumption) until then."""
        if node.children is None:
            return 1
        if node.nsub is None:
            node.nsub = sum(1 for kid in node.children.values() if kid.kind == DIR)
        return 2 + node.nsub

    @staticmethod
    def _meta(node: Node) -> Meta:
        if node.uid is None and node.gid is None and node.atime_ns is None \
                and node.ctime_ns is None:
            return NO_META
        return Meta(node.uid, node.gid, node.atime_ns, node.ctime_ns)

    @staticmethod
    def _set_meta(node: Node, meta: Meta) -> None:
        node.uid, node.gid = meta.uid, meta.gid
        node.atime_ns, node.ctime_ns = meta.atime_ns, meta.ctime_ns

    def _own(self, node: Node, owner: tuple[int, int] | None) -> None:
        """A new node belongs to ``owner`` (uid, gid; None: the mounting user)."""
        if owner is not None:
            node.uid = None if owner[0] == self.uid else owner[0]
            node.gid = None if owner[1] == self.gid else owner[1]

    def getattr(self, ino: int) -> Attr:
        return self.attr(self.node(ino))

    def lookup(self, parent_ino: int, name: str) -> Attr:
        parent = self.node(parent_ino)
        if name == ".":
            return self.attr(parent)
        if name == "..":
            return self.attr(parent.parent or parent)
        return self.attr(self._child(parent, name))

    def find(self, parent_ino: int, name: str) -> Attr | None:
        """``lookup`` that answers None for a missing name (the kernel asks for
        many: every ``O_EXCL`` create and rename target is looked up first)."""
        parent = self.node(parent_ino)
        if name in (".", ".."):
            return self.lookup(parent_ino, name)
        child = self.children(parent).get(name)
        return None if child is None else self.attr(child)

    def readdir(self, ino: int) -> list[tuple[str, Attr]]:
        """The listing of a directory (the adapter keeps it per open handle)."""
        kids = self.children(self.node(ino))
        return [(name, self.attr(kids[name])) for name in sorted(kids)]

    def readlink(self, ino: int) -> str:
        node = self.node(ino)
        if node.kind != SYMLINK:
            raise InvalidArgument(f"{self.path(node)} is not a symlink")
        return node.target or ""

    def statfs(self) -> FsStats:
        st = os.statvfs(self.upper.root)
        files, size = self.source.totals()
        return FsStats(block_size=st.f_frsize, blocks=st.f_blocks, files=files,
                       name_max=NAME_MAX)

    def statvfs_free(self) -> tuple[int, int, int]:
        """(free blocks, blocks available, free inodes) of the upper layer's disk."""
        st = os.statvfs(self.upper.root)
        return st.f_bfree, st.f_bavail, st.f_ffree

    # -- opening and reading -----------------------------------------------------------

    def open(self, ino: int, writing: bool) -> Node:
        node = self.node(ino)
        if node.kind == DIR:
            raise IsADirectory(self.path(node))
        if node.kind != FILE:
            raise InvalidArgument(f"{self.path(node)} is not a regular file")
        if node.data is not None and node.fd is None:
            node.fd = os.open(self.upper.data_file(node.data), os.O_RDWR | os.O_CLOEXEC)
        # counted once the open succeeded: a failed open leaves no phantom writer
        node.opens += 1
        node.writers += writing
        return node

    def release(self, node: Node, writing: bool) -> None:
        node.opens -= 1
        node.writers -= writing
        if node.opens == 0:
            if node.fd is not None:
                os.close(node.fd)
                node.fd = None
            if node.data is not None and (not node.dirty or not self.attached(node)):
                # clean after a commit, or unlinked while open: the bytes are no
                # longer needed once the last handle is gone
                self._drop_data(node)

    def _drop_data(self, node: Node) -> None:
        if node.data is None:
            return
        if node.fd is not None:
            os.close(node.fd)
            node.fd = None
        if self.attached(node) and node.lower is None:
            return  # a clean committed file with no lower entry yet: keep the bytes
        # unlinked (its removal is in the journal) or committed (in the version)
        self.upper.retire(node.data, recorded=True)
        node.data = None

    def copy_up_plan(self, node: Node, keep: int | None) -> CopyUp | None:
        """Start copying ``node`` into the upper layer, keeping its first ``keep``
        bytes (all when None); None when it is already there."""
        if node.data is not None:
            return None
        entry = node.lower
        assert entry is not None
        self.upper.reserve()
        data_id, fd = self.upper.new_data()
        length = entry.size if keep is None else min(keep, entry.size)
        try:
            os.ftruncate(fd, length)  # a sparse file: blocks are filled when needed
        except BaseException:
            os.close(fd)
            raise
        return CopyUp(node, entry, length, data_id, fd)

    def copy_up_done(self, plan: CopyUp) -> None:
        node = plan.node
        if node.data is not None:  # another request finished first
            os.close(plan.fd)
            self.upper.data_path(plan.data_id).unlink(missing_ok=True)
            return
        os.utime(plan.fd, ns=(node.mtime_ns, node.mtime_ns))
        if node.opens:
            node.fd = plan.fd
        else:
            os.close(plan.fd)
        node.data, node.size = plan.data_id, plan.length
        blocks = -(-plan.length // BLOCK)
        if blocks:
            node.lower, node.lower_end, node.missing = plan.entry, plan.length, set(range(blocks))
        else:
            node.lower = None
        node.version += 1
        self._changed(node)

    def missing_blocks(self, node: Node, start: int, end: int, covered: bool
                       ) -> list[tuple[int, int, int]]:
        """The missing blocks overlapping bytes [start, end) as (block, lower
        bytes from, to); with ``covered``, blocks whose lower bytes lie wholly
        inside the range get an empty span (a write replaces them: no fetch)."""
        if not node.missing:
            return []
        out = []
        for block in range(start // BLOCK, -(-end // BLOCK)):
            if block not in node.missing:
                continue
            lo, hi = block * BLOCK, min((block + 1) * BLOCK, node.lower_end)
            if covered and start <= lo and hi <= end:
                hi = lo
            out.append((block, lo, max(lo, hi)))
        return out

    def block_filled(self, node: Node, block: int) -> None:
        """The data file now holds ``block``'s lower bytes.  They are made durable
        before the journal says so: a power loss must not leave a record
        without missing blocks over a data file whose holes read as zeros."""
        if not node.missing or block not in node.missing:
            return
        self.upper.reserve()
        assert node.data is not None
        if node.fd is not None:
            os.fdatasync(node.fd)
        else:
            fd = os.open(self.upper.data_file(node.data), os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
        node.missing.discard(block)
        if not node.missing:
            node.missing, node.lower = None, None
        self._changed(node)

    def read_plan(self, node: Node, offset: int, size: int) -> list[tuple[bool, int, int]]:
        """Where the bytes [offset, offset + size) of a partly copied file are:
        (from the lower entry?, start, end) pieces in order."""
        end = min(offset + size, node.size)
        pieces: list[tuple[bool, int, int]] = []
        pos = offset
        while pos < end:
            block = pos // BLOCK
            stop = min(end, (block + 1) * BLOCK)
            if node.missing and block in node.missing and pos < node.lower_end:
                cut = min(stop, node.lower_end)
                pieces.append((True, pos, cut))
                if cut < stop:
                    pieces.append((False, cut, stop))
            else:
                pieces.append((False, pos, stop))
            pos = stop
        return pieces

    def copy_up_failed(self, plan: CopyUp) -> None:
        os.close(plan.fd)
        self.upper.data_path(plan.data_id).unlink(missing_ok=True)

    def write(self, node: Node, offset: int, data: bytes) -> int:
        assert node.data is not None and node.fd is not None, "copy up first"
        if not node.dirty:
            self.upper.reserve()
        written = os.pwrite(node.fd, data, offset)
        if written:  # an empty write past the end does not extend the file
            node.size = max(node.size, offset + written)
        # the data file's mtime is the one a remount reads back: use it, not our clock
        node.mtime_ns = os.fstat(node.fd).st_mtime_ns
        node.version += 1
        if not node.dirty:
            self._changed(node)
        return written

    def fsync(self, node: Node | None, datasync: bool = False) -> None:
        """Make ``node``'s bytes and every recorded change durable.  With
        ``datasync`` (fdatasync, msync) the data file is fdatasynced: its bytes
        and size, not its mtime (POSIX asks no more of fdatasync).  The journal
        is fsynced only when a record was appended since its last fsync, and
        ``data/`` only when a data file was made since (``Upper.sync``)."""
        if node is not None and node.fd is not None:
            if datasync:
                os.fdatasync(node.fd)
            else:
                os.fsync(node.fd)
        self.upper.sync()

    # -- changing the tree ---------------------------------------------------------------

    def _check_name(self, name: str) -> None:
        if len(os.fsencode(name)) > NAME_MAX:
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
            node.fd, node.opens, node.writers = fd, 1, 1
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

    def _unname(self, node: Node, parent: Node, name: str) -> None:
        """``node`` is no longer at ``name`` in ``parent`` (the caller took it out of
        the children); a hard-linked node keeps its other names, and is detached
        (``parent`` None) only when this was its last."""
        if node.parent is parent and node.name == name:
            if node.aliases:
                node.parent, node.name = node.aliases.pop(0)
            else:
                node.parent = None
        elif node.aliases and (parent, name) in node.aliases:
            node.aliases.remove((parent, name))
        if not node.aliases:
            node.aliases = None

    def names(self, node: Node) -> list[str]:
        """Every path of ``node`` (more than one for a hard-linked file)."""
        paths = [self.path(node)]
        for parent, name in node.aliases or ():
            paths.append(join(self.path(parent), name))
        return paths

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

    def _forget_subtree(self, node: Node) -> None:
        """Data files of a removed node (and below) go once no handle uses them."""
        stack = [node]
        while stack:
            current = stack.pop()
            if current.data is not None and current.opens == 0:
                self.upper.retire(current.data)
                current.data = None
            if current.children:
                stack.extend(current.children.values())

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
        up: Node | None = new_parent
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
        old_path = join(self.path(old_parent), old_name)
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
        self._records_of(node, join(self.path(new_parent), new_name), records)
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
            if node.kind == DIR:
                raise IsADirectory(self.path(node))
            assert node.data is not None, "copy up first"
            if node.fd is not None:
                os.ftruncate(node.fd, size)
                if mtime_ns is None:  # else set below, on the data file too
                    node.mtime_ns = os.fstat(node.fd).st_mtime_ns
            else:
                os.truncate(self.upper.data_path(node.data), size)
                if mtime_ns is None:
                    node.mtime_ns = os.stat(self.upper.data_path(node.data)).st_mtime_ns
            node.size = size
            node.version += 1
            if node.missing:  # bytes cut off are gone from the lower side too
                node.lower_end = min(node.lower_end, size)
                node.missing = {b for b in node.missing if b * BLOCK < node.lower_end}
                if not node.missing:
                    node.missing, node.lower = None, None
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

    def _changed(self, node: Node) -> None:
        """Record ``node``'s new value (nothing for an unlinked node)."""
        self._mark(node)
        node.digest = None
        if self.attached(node):
            records: list[Record] = []
            for path in self.names(node):  # every name of a hard-linked node
                self._records_of(node, path, records, deep=False)
            self.upper.append(records)

    # -- records ------------------------------------------------------------------------

    def _record(self, node: Node, path: str) -> Record:
        meta = self._meta(node)
        if node.kind == DIR:
            return Directory(path, node.lower_dir, node.mode, node.mtime_ns, meta)
        if node.kind == SYMLINK:
            return Symlink(path, node.target or "", node.mtime_ns, meta)
        if node.kind == SPECIAL:
            return Special(path, node.ftype | node.mode, node.rdev, node.mtime_ns, meta)
        if node.missing and node.data is not None:
            return File(path, node.lower.path if node.lower else None, node.data, node.mode,
                        node.mtime_ns, node.size, tuple(sorted(node.missing)), node.lower_end,
                        meta)
        return File(path, node.lower.path if node.lower else None, node.data, node.mode,
                    node.mtime_ns, node.size, meta=meta)

    def _records_of(self, node: Node, path: str, out: list[Record], deep: bool = True) -> None:
        """``node``'s record, then (directories, ``deep``) those of what changed below."""
        out.append(self._record(node, path))
        if deep and node.kind == DIR:
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

    def resolve(self, path: str) -> Node:
        node = self.root
        for part in path.split("/") if path else []:
            node = self._child(node, part)
        return node

    def replay(self, records: Iterable[Record]) -> Replayed:
        """Rebuild the upper layer from its records (a mount: the snapshot's,
        then the journal's), before the kernel has seen any node.  Nodes that a
        later record replaced are dropped; a record that does not apply is
        skipped and reported, and its data file, unless a live node names it,
        is moved to ``orphans/`` rather than deleted.  Ends with ``check()``."""
        if any(node.lookups or node.opens for node in self._inodes.values()):
            raise RuntimeError("replay() runs before the tree is served")
        report = Replayed()
        self._by_data = {}
        for record in records:
            try:
                self._apply(record)
                report.applied += 1
            except (VfsError, OSError) as exc:
                report.skipped.append((record, str(exc)))
        self._by_data = {}
        live = self._live()
        self._inodes = {node.ino: node for node in live}
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
        data_path = self.upper.data_file(record.data)
        try:
            st = os.stat(data_path)
        except FileNotFoundError:
            # only possible after a power loss that kept the journal but not the
            # file's creation: an empty file (its lower blocks still show)
            fd = os.open(data_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                if record.missing:
                    os.ftruncate(fd, record.size)
                st = os.fstat(fd)
            finally:
                os.close(fd)
        node = self._new_node(FILE, record.mode, record.mtime_ns)
        node.data = record.data
        # the data file's size and mtime are the truth: writes to a changed file
        # add no record (the data file holds them)
        node.size, node.mtime_ns = st.st_size, st.st_mtime_ns
        if lower is not None:
            node.lower, node.lower_end = lower, min(record.lower_end, lower.size)
            node.missing = {b for b in record.missing if b * BLOCK < node.lower_end} or None
            if node.missing is None:
                node.lower = None
        return node

    def data_ids(self) -> set[str]:
        ids = set()
        for node in self._inodes.values():
            if node.data is not None:
                ids.add(node.data)
        return ids

    def writers(self) -> list[str]:
        return [self.path(n) or "/" for n in self._inodes.values() if n.writers > 0]

    def iter_nodes(self) -> Iterator[Node]:
        return iter(list(self._inodes.values()))

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
            if node.data is not None and node.opens == 0:
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
