"""The pyfuse3 adapter of a writable mount: kernel requests in, one
``OverlayFS`` call, attributes or errno out (the shared base:
``dsfs.fuse.adapter``; its read-only sibling: ``dsfs.fuse.readonly``).

File contents, copy-up and block fill are the overlay's (``dsfs.overlay.blocks``:
reads of lower and partly copied files go through the content reader; the
first change to a lower file copies it up, sparse, and a write fills only the
blocks it touches).

With dsfs's patch (``no_open``) ``open`` answers ENOSYS: the kernel sends no
OPEN and RELEASE, truncates for ``open(O_TRUNC)`` with a SETATTR of its own
(``atomic_o_trunc`` off), and reads and writes come with the inode; a file's
open state is then per inode (``dsfs.fuse.handles``), and its copy-up happens
at its first write or truncation, as without the patch.

Every request that changes the tree passes the ``Gate``: a commit closes it,
waits for the changes in flight to finish, and opens it again once the child
version is published and the mount rebased; changes issued meanwhile wait,
reads do not.  Errors: the read-only table plus ``OVERLAY_ERRNO``; anything
else is EIO and a log line, never the end of the mount.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import sys
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from dsfs.content import FileReader
from dsfs.format.manifest import DIR, FILE
from dsfs.fuse.adapter import (
    ERRNO,
    PASS_THROUGH,
    BaseOperations,
    EntryAttributes,
    FileInfo,
    FUSEError,
    ReaddirToken,
    StatvfsData,
    entry_attributes,
    guard,
    invalidate_entry,
    negative_entry,
    readdir_reply,
    statvfs,
)
from dsfs.fuse.handles import Handles
from dsfs.overlay.blocks import Blocks
from dsfs.overlay.fs import OverlayFS
from dsfs.overlay.nodes import (
    NAME_MAX,
    OVERLAY_ERRNO,
    NameTooLong,
    Node,
    NotPermitted,
    NotSupported,
)
from dsfs.vfs import Attr, NoEntry

log = logging.getLogger("dsfs.fuse.writable")

WRITABLE_ERRNO: dict[type[BaseException], int] = {**ERRNO, **OVERLAY_ERRNO}

#: Changes answer a full disk with ENOSPC (and EDQUOT, EFBIG, ...: ``PASS_THROUGH``).
guarded = guard(WRITABLE_ERRNO, PASS_THROUGH)
#: Reads answer EIO for every failure that is not in the table (a read has no ENOSPC).
read_guarded = guard(WRITABLE_ERRNO)


#: ``os.fsdecode``'s codec, called directly: every name a request carries is
#: decoded (six a file of rsync's), and the generic function costs twice as much.
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


def fs_name(name: bytes) -> str:
    """A name from the kernel as a str (as ``os.fsdecode`` gives it);
    ENAMETOOLONG past 255 bytes (the kernel lets FUSE see names of up to 1024
    bytes)."""
    if len(name) > NAME_MAX:
        raise NameTooLong(os.fsdecode(name[:40]) + "…")
    return name.decode(_FS_ENCODING, _FS_ERRORS)


#: The same attributes as a read-only mount gives (both cache them a day); the
#: function itself, not a wrapper: five replies a file of rsync's pass here.
attributes = entry_attributes


def _groups(ctx: Any) -> set[int]:
    """The calling process's groups (its primary one and the supplementary
    ones from ``/proc``)."""
    groups = {int(ctx.gid)}
    try:
        with open(f"/proc/{int(ctx.pid)}/status") as status:
            for line in status:
                if line.startswith("Groups:"):
                    groups.update(int(g) for g in line.split()[1:])
    except (OSError, ValueError, TypeError):
        pass
    return groups


class Gate:
    """Changes pass one at a time or many at once; a commit stops them all.
    Passing costs two counter updates: an event exists only while a commit
    waits for the changes in flight (every change request passes here)."""

    def __init__(self) -> None:
        self.active = 0
        self.closed = False
        self._opened = trio.Event()
        self._opened.set()
        self._idle: trio.Event | None = None  # set once ``active`` is back to 0

    async def __aenter__(self) -> None:
        while self.closed:
            await self._opened.wait()
        self.active += 1

    async def __aexit__(self, *exc: object) -> None:
        self.active -= 1
        if self.active == 0 and self._idle is not None:
            self._idle.set()

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """No change runs inside this block (they wait at the gate)."""
        while self.closed:
            await self._opened.wait()
        self.closed = True
        self._opened = trio.Event()
        try:
            if self.active:
                self._idle = trio.Event()
                try:
                    await self._idle.wait()
                finally:
                    self._idle = None
            yield
        finally:
            self.closed = False
            self._opened.set()


@dataclass
class _Listing:
    items: list[tuple[str, Attr]] = field(default_factory=list)


class WritableOperations(BaseOperations):
    """The merged, writable tree of a version and its overlay.  The kernel may
    cache entries and attributes as long as on a read-only mount (``TIMEOUT``):
    every change passes through this mount, a commit changes nothing visible
    and a discard invalidates the top-level names it replaces."""

    def __init__(self, fs: OverlayFS, reader: FileReader, no_open: bool = False) -> None:
        super().__init__(reader)
        self.fs = fs
        self.blocks = Blocks(fs, reader)
        self.gate = Gate()
        #: no OPEN/RELEASE: requests carry the inode, and the kernel truncates
        #: for open(O_TRUNC) with a SETATTR (pyfuse3 reads both at ``init``;
        #: only the patched build has them)
        self.no_open_inode = no_open
        self.atomic_o_trunc = not no_open
        self.handles = Handles(self.blocks, by_inode=no_open)
        self._listings: dict[int, tuple[int, _Listing]] = {}

    def invalidate_names(self, parent_inode: int, names: Iterable[str]) -> None:
        """Make the kernel forget ``names`` under ``parent_inode`` (the tree
        changed under it).  Best effort: a name the kernel never looked up
        answers ENOENT, and the kernel asks again after its timeout anyway.
        Call it from a worker thread, never the trio thread."""
        for name in names:
            with contextlib.suppress(OSError):
                invalidate_entry(parent_inode, os.fsencode(name))

    # -- the tree ---------------------------------------------------------------------

    @guarded
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None
                     ) -> EntryAttributes:
        attr = self.fs.find(parent_inode, fs_name(name))
        if attr is None:
            return negative_entry()
        self.fs.remember(attr.ino)
        return attributes(attr)

    @guarded
    async def getattr(self, inode: int, ctx: Any = None) -> EntryAttributes:
        return attributes(self.fs.getattr(inode))

    @guarded
    async def readlink(self, inode: int, ctx: Any = None) -> bytes:
        return os.fsencode(self.fs.readlink(inode))

    @guarded
    async def opendir(self, inode: int, ctx: Any = None) -> int:
        node = self.fs.node(inode)
        self.fs.children(node)
        node.opens += 1  # its children stay while it is being listed
        fh = self._fh()
        self._listings[fh] = (inode, _Listing())
        return fh

    @guarded
    async def readdir(self, fh: int, start_id: int, token: ReaddirToken) -> None:
        inode, listing = self._listings[fh]
        if start_id == 0 or not listing.items:
            # a snapshot per pass, so offsets stay meaningful while the directory changes
            listing.items = self.fs.readdir(inode)
        for pos in range(start_id, len(listing.items)):
            name, attr = listing.items[pos]
            if not readdir_reply(token, os.fsencode(name), attributes(attr), pos + 1):
                break
            self.fs.remember(attr.ino)

    @guarded
    async def releasedir(self, fh: int) -> None:
        listing = self._listings.pop(fh, None)
        if listing is not None:
            with contextlib.suppress(NoEntry):
                self.fs.node(listing[0]).opens -= 1

    @guarded
    async def statfs(self, ctx: Any = None) -> StatvfsData:
        stats = self.fs.statfs()
        free, avail, ffree = self.fs.statvfs_free()
        return statvfs(stats, free, avail, ffree)

    @guarded
    async def access(self, inode: int, mode: int, ctx: Any = None) -> bool:
        self.fs.node(inode)
        return True

    async def getxattr(self, inode: int, name: bytes, ctx: Any = None) -> bytes:
        # ENOSYS: the kernel stops asking (it otherwise asks for security.capability
        # before every write) and answers EOPNOTSUPP itself from then on
        raise FUSEError(errno.ENOSYS)

    @guarded
    async def listxattr(self, inode: int, ctx: Any = None) -> list[bytes]:
        self.fs.node(inode)
        return []

    @guarded
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any = None) -> None:
        raise NotSupported("extended attributes are not stored")

    @guarded
    async def removexattr(self, inode: int, name: bytes, ctx: Any = None) -> None:
        raise NotSupported("extended attributes are not stored")

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        try:
            for inode, count in inode_list:
                if self.fs.references(inode) <= count:
                    self.handles.forget(inode)  # first: the node may go with its count
                self.fs.forget(inode, count)
        except Exception:  # noqa: BLE001 - forget has no reply; keep the mount up
            log.exception("forget failed")

    # -- files ------------------------------------------------------------------------

    @guarded
    async def open(self, inode: int, flags: int, ctx: Any = None) -> FileInfo:
        if self.no_open_inode:
            # ENOSYS once: the kernel stops sending OPEN and RELEASE (the open
            # state is per inode, ``Handles``)
            raise FUSEError(errno.ENOSYS)
        if flags & os.O_TRUNC:
            async with self.gate:
                node = self.fs.open(inode)
                try:
                    await self.blocks.copy_up(node, keep=0)
                    self.fs.setattr(inode, size=0)
                except BaseException:
                    self.fs.release(node)
                    raise
        else:
            node = self.fs.open(inode)
        return FileInfo(fh=self.handles.add(node))

    @read_guarded
    async def read(self, fh: int, off: int, size: int) -> bytes:
        opened = self.handles.acquire(fh)
        try:
            return await self.blocks.read(opened, off, size)
        finally:
            self.handles.done(fh)

    @guarded
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        node = self.handles.acquire(fh).node
        try:
            async with self.gate:
                await self.blocks.prepare_write(node, off, off + len(buf))
                return self.fs.write(node, off, buf)
        finally:
            self.handles.done(fh)

    @guarded
    async def release(self, fh: int) -> None:
        self.handles.release(fh)

    @guarded
    async def fsync(self, fh: int, datasync: bool) -> None:
        if self.handles.by_inode:
            # the data file must be open to be synced, even if its handle was closed
            node = self.handles.acquire(fh).node
            try:
                self.fs.fsync(node, datasync)
            finally:
                self.handles.done(fh)
            return
        handle = self.handles.get(fh)
        self.fs.fsync(handle.node if handle else None, datasync)

    @guarded
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        self.fs.fsync(None)

    # -- changes ----------------------------------------------------------------------

    @guarded
    async def setattr(self, inode: int, attr: Any, fields: Any, fh: int | None,
                      ctx: Any = None) -> EntryAttributes:
        async with self.gate:
            size = attr.st_size if fields.update_size else None
            if size is not None:
                node = self.fs.node(inode)
                if node.data is None and node.kind != DIR:
                    await self.blocks.copy_up(node, keep=size)
            uid = attr.st_uid if fields.update_uid else None
            gid = attr.st_gid if fields.update_gid else None
            if (uid is not None or gid is not None) and getattr(ctx, "uid", None):
                self._may_chown(self.fs.getattr(inode), uid, gid, ctx)  # root may
            node = self.fs.setattr(
                inode,
                mode=attr.st_mode if fields.update_mode else None,
                size=size,
                mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
                uid=uid,
                gid=gid,
                atime_ns=attr.st_atime_ns if fields.update_atime else None,
            )
            return attributes(self.fs.attr(node))

    @staticmethod
    def _may_chown(now: Attr, uid: int | None, gid: int | None, ctx: Any) -> None:
        """chown's rules (the kernel checks them too, with ``default_permissions``):
        root may give anything to anyone; others may not change the owner, and
        may change the group of what they own to one of their groups only."""
        caller = getattr(ctx, "uid", None)
        if caller is None or caller == 0:
            return
        if uid is not None and uid != now.uid:
            raise NotPermitted("only root may change the owner")
        if gid is not None and gid != now.gid and (
                caller != now.uid or gid not in _groups(ctx)):
            raise NotPermitted("the group must be one of the owner's groups")

    def _owner(self, parent_inode: int, ctx: Any) -> tuple[int, int] | None:
        """Who owns what ``ctx``'s process creates in ``parent_inode``: the caller,
        with the directory's group when it is set-group-ID."""
        if ctx is None or getattr(ctx, "uid", None) is None:
            return None
        parent = self.fs.node(parent_inode)  # not attr(): no link count needed here
        if parent.mode & stat.S_ISGID:
            return int(ctx.uid), self.fs.gid if parent.gid is None else parent.gid
        return int(ctx.uid), int(ctx.gid)

    @guarded
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: Any = None) -> tuple[FileInfo, EntryAttributes]:
        text = fs_name(name)
        async with self.gate:
            try:
                node = self.fs.create(parent_inode, text, mode, opening=True,
                                      owner=self._owner(parent_inode, ctx))
            except BaseException:
                self._drop_unhandled_open(parent_inode, text)
                raise
            fh = self.handles.add(node)
            self.fs.remember(node.ino)
            return FileInfo(fh=fh), attributes(self.fs.attr(node))

    def _drop_unhandled_open(self, parent_inode: int, name: str) -> None:
        """A ``create`` that failed after the file was made open (its journal
        record could not be written, say) leaves no handle: close it, or its
        data file would stay open for the life of the mount."""
        try:
            node = self.fs.children(self.fs.node(parent_inode)).get(name)
        except Exception:  # noqa: BLE001 - nothing to undo
            return
        if node is None or node.opens <= 0 or self.handles.holds(node):
            return
        self.fs.release(node)

    @guarded
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: Any = None) -> EntryAttributes:
        text = fs_name(name)
        async with self.gate:
            owner = self._owner(parent_inode, ctx)
            if stat.S_ISREG(mode) or not stat.S_IFMT(mode):
                return self._entry(self.fs.create(parent_inode, text, mode, owner=owner))
            return self._entry(self.fs.special(parent_inode, text, mode, rdev, owner=owner))

    @guarded
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any = None
                    ) -> EntryAttributes:
        text = fs_name(name)
        async with self.gate:
            if self.fs.node(parent_inode).mode & stat.S_ISGID:
                mode |= stat.S_ISGID  # set-group-ID directories pass it on
            return self._entry(self.fs.mkdir(parent_inode, text, mode,
                                             owner=self._owner(parent_inode, ctx)))

    @guarded
    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any = None
                      ) -> EntryAttributes:
        text = fs_name(name)
        async with self.gate:
            return self._entry(self.fs.symlink(parent_inode, text, os.fsdecode(target),
                                               owner=self._owner(parent_inode, ctx)))

    def _entry(self, node: Node) -> EntryAttributes:
        """The reply to a request that gives the kernel a new reference to ``node``."""
        self.fs.remember(node.ino)
        return attributes(self.fs.attr(node))

    @guarded
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any = None
                   ) -> EntryAttributes:
        text = fs_name(new_name)
        async with self.gate:
            node = self.fs.node(inode)
            if node.kind == FILE and node.data is None:
                await self.blocks.copy_up(node, keep=None)  # the data file is the identity
            return self._entry(self.fs.link(inode, new_parent_inode, text))

    @guarded
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any = None) -> None:
        async with self.gate:
            self.fs.unlink(parent_inode, fs_name(name))

    @guarded
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any = None) -> None:
        async with self.gate:
            self.fs.rmdir(parent_inode, fs_name(name))

    @guarded
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: Any = None) -> None:
        async with self.gate:
            self.fs.rename(parent_inode_old, fs_name(name_old), parent_inode_new,
                           fs_name(name_new), flags)


