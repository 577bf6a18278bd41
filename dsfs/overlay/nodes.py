"""The merged tree's nodes and inode table: which names exist, what each
node is, and what the kernel holds.  No FUSE types, no journal, no file
contents here (``records`` and ``contents`` build on this; ``fs`` adds the
operations that change names).

Every node of the merged tree that anyone has looked at is a ``Node`` with an
inode number that stays the same while the kernel holds it (also across a
commit); the kernel's references are counted (``remember``/``forget``) and
the children of an unchanged directory are dropped once none is referenced.
A directory's children are materialized from the lower layer on first use
(``children is None`` until then); a directory carries ``lower_dir``, the
lower directory its unmaterialized children come from, so renaming a
directory with a million lower files below it moves one node and copies
nothing.  A file's bytes are either a lower entry's chunks (``lower``) or a
data file of the upper layer (``data``), or, while partly copied up, the data
file except for the ``missing`` blocks, which are still the lower entry's.

``marked`` says a directory holds changes at or below it (``records`` walks
only those); ``dirty`` says a node differs from where it came from.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Iterator

from dsfs.engine.tree import IMPLIED_DIR_MODE
from dsfs.format.digest import CHUNK_SIZE
from dsfs.format.manifest import DIR, SYMLINK, Entry
from dsfs.overlay.journal import NO_META, Meta
from dsfs.overlay.upper import Upper
from dsfs.vfs import (
    ROOT_INO,
    Attr,
    FsStats,
    InvalidArgument,
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
    """An operation POSIX refuses here (EPERM): a hard link to a directory, a
    file type ``create`` cannot make, a change of owner the caller may not make."""


class NotSupported(VfsError):
    """Extended attributes and rename flags dsfs does not implement."""


class NameTooLong(VfsError):
    """A name longer than 255 bytes."""


class Busy(VfsError):
    """The overlay is in a state that forbids the request (see the message)."""


#: Exceptions of this package and their errno (the adapter adds them to its table).
OVERLAY_ERRNO: dict[type[BaseException], int] = {
    Exists: errno.EEXIST,
    NotEmpty: errno.ENOTEMPTY,
    NotPermitted: errno.EPERM,
    NotSupported: errno.EOPNOTSUPP,
    NameTooLong: errno.ENAMETOOLONG,
    Busy: errno.EBUSY,
}


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


class Node:
    """One file, directory or symlink of the merged tree."""

    __slots__ = ("ino", "kind", "mode", "mtime_ns", "size", "lower", "data", "fd",
                 "target", "lower_dir", "children", "parent", "name", "dirty", "marked",
                 "opens", "digest", "version", "lookups", "held", "missing",
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
        self.opens = 0  # handles: kernel file handles, or a no-open mount's per inode
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



class Inodes:
    """The inode table and the lookups of the merged tree (the base of ``OverlayFS``)."""

    def __init__(self, source: TreeSource, upper: Upper, uid: int | None = None,
                 gid: int | None = None) -> None:
        self.source = source
        self.upper = upper
        self.uid = os.getuid() if uid is None else uid
        self.gid = os.getgid() if gid is None else gid
        self._inodes: dict[int, Node] = {}
        self._next_ino = ROOT_INO
        self.root = self._new_root()

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

    def attached_path(self, node: Node) -> str | None:
        """``path(node)`` if the node is in the tree, else None (one walk up
        for both questions: every journaled change asks them)."""
        parts = []
        while node.parent is not None:
            parts.append(node.name)
            node = node.parent
        if node is not self.root:
            return None
        parts.reverse()
        return "/".join(parts)

    # -- the kernel's references ------------------------------------------------------

    def references(self, ino: int) -> int:
        """How many references to ``ino`` the kernel holds."""
        node = self._inodes.get(ino)
        return 0 if node is None else node.lookups

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
            self._unreferenced(node)
            return
        while parent is not None and parent.held == 0 and self._collapse(parent):
            if parent.lookups or parent.parent is None:
                break
            parent = parent.parent

    def _unreferenced(self, node: Node) -> None:
        """A node outside the tree that the kernel forgot (``Contents`` drops its
        bytes too, once no handle refers to it either)."""
        if node.opens == 0:
            self._inodes.pop(node.ino, None)

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

    def resolve(self, path: str) -> Node:
        node = self.root
        for part in path.split("/") if path else []:
            node = self._child(node, part)
        return node


    def data_ids(self) -> set[str]:
        ids = set()
        for node in self._inodes.values():
            if node.data is not None:
                ids.add(node.data)
        return ids

    def iter_nodes(self) -> Iterator[Node]:
        return iter(list(self._inodes.values()))

