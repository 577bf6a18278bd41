"""The pyfuse3 adapter of a writable mount: kernel requests in, one
``OverlayFS`` call, attributes or errno out.

Reads of files still in the lower layer go to the ``ChunkReader`` (as in the
read-only adapter); upper files are read and written with ``pread`` and
``pwrite`` on their data file.  The first change to a lower file copies it
up lazily: a sparse data file of the surviving size, whose blocks (the
store's chunks) stay the lower file's until a write touches them; a write
fetches only the blocks it touches and does not wholly replace (an append
fetches at most the last one; ``O_TRUNC`` and truncations fetch nothing).
Reads of a partly copied file take each piece from where it is.  Status and
commit fill the remaining blocks first (``fill_all``).

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
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyfuse3
import trio

from dsfs.content import FileReader
from dsfs.flight import SingleFlight
from dsfs.format.digest import CHUNK_SIZE
from dsfs.format.manifest import FILE, Entry
from dsfs.fuse.adapter import (
    ERRNO,
    PASS_THROUGH,
    BaseOperations,
    entry_attributes,
    guard,
    negative_entry,
    statvfs,
)
from dsfs.overlay.fs import (
    NAME_MAX,
    OVERLAY_ERRNO,
    NameTooLong,
    Node,
    NotPermitted,
    NotSupported,
    OverlayFS,
)
from dsfs.vfs import Attr, NoEntry, OpenFile

log = logging.getLogger("dsfs.fuse.writable")

WRITABLE_ERRNO: dict[type[BaseException], int] = {**ERRNO, **OVERLAY_ERRNO}
_WRITE_ACCESS = os.O_WRONLY | os.O_RDWR

#: Changes answer a full disk with ENOSPC (and EDQUOT, EFBIG, ...: ``PASS_THROUGH``).
guarded = guard(WRITABLE_ERRNO, PASS_THROUGH)
#: Reads answer EIO for every failure that is not in the table (a read has no ENOSPC).
read_guarded = guard(WRITABLE_ERRNO)


def fs_name(name: bytes) -> str:
    """A name from the kernel as a str; ENAMETOOLONG past 255 bytes (the kernel
    lets FUSE see names of up to 1024 bytes)."""
    if len(name) > NAME_MAX:
        raise NameTooLong(os.fsdecode(name[:40]) + "…")
    return os.fsdecode(name)


def attributes(attr: Attr) -> pyfuse3.EntryAttributes:
    """The same attributes as a read-only mount gives (both cache them a day)."""
    return entry_attributes(attr)


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
    """Changes pass one at a time or many at once; a commit stops them all."""

    def __init__(self) -> None:
        self.active = 0
        self.closed = False
        self._opened = trio.Event()
        self._opened.set()
        self._idle = trio.Event()
        self._idle.set()

    async def __aenter__(self) -> None:
        while self.closed:
            await self._opened.wait()
        self.active += 1
        if self.active == 1:
            self._idle = trio.Event()

    async def __aexit__(self, *exc: object) -> None:
        self.active -= 1
        if self.active == 0:
            self._idle.set()

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """No change runs inside this block (they wait at the gate)."""
        while self.closed:
            await self._opened.wait()
        self.closed = True
        self._opened = trio.Event()
        try:
            await self._idle.wait()
            yield
        finally:
            self.closed = False
            self._opened.set()


@dataclass
class _Handle:
    node: Node
    writing: bool
    reader_fh: int | None = None
    reader_entry: Entry | None = None


@dataclass
class _Listing:
    items: list[tuple[str, Attr]] = field(default_factory=list)


class WritableOperations(BaseOperations):
    """The merged, writable tree of a version and its overlay.  The kernel may
    cache entries and attributes as long as on a read-only mount (``TIMEOUT``):
    every change passes through this mount, a commit changes nothing visible
    and a discard invalidates the top-level names it replaces."""

    def __init__(self, fs: OverlayFS, reader: FileReader) -> None:
        super().__init__(reader)
        self.fs = fs
        self.gate = Gate()
        self._handles: dict[int, _Handle] = {}
        self._listings: dict[int, tuple[int, _Listing]] = {}
        self._copying: SingleFlight[int] = SingleFlight()  # inode
        self._filling: SingleFlight[tuple[int, int]] = SingleFlight()  # (inode, block)

    def invalidate_names(self, parent_inode: int, names: Iterable[str]) -> None:
        """Make the kernel forget ``names`` under ``parent_inode`` (the tree
        changed under it).  Best effort: a name the kernel never looked up
        answers ENOENT, and the kernel asks again after its timeout anyway.
        Call it from a worker thread, never the trio thread."""
        for name in names:
            with contextlib.suppress(OSError):
                pyfuse3.invalidate_entry(parent_inode, os.fsencode(name))

    # -- the tree ---------------------------------------------------------------------

    @guarded
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None
                     ) -> pyfuse3.EntryAttributes:
        attr = self.fs.find(parent_inode, fs_name(name))
        if attr is None:
            return negative_entry()
        self.fs.remember(attr.ino)
        return attributes(attr)

    @guarded
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
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
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        inode, listing = self._listings[fh]
        if start_id == 0 or not listing.items:
            # a snapshot per pass, so offsets stay meaningful while the directory changes
            listing.items = self.fs.readdir(inode)
        for pos in range(start_id, len(listing.items)):
            name, attr = listing.items[pos]
            if not pyfuse3.readdir_reply(token, os.fsencode(name), attributes(attr), pos + 1):
                break
            self.fs.remember(attr.ino)

    @guarded
    async def releasedir(self, fh: int) -> None:
        listing = self._listings.pop(fh, None)
        if listing is not None:
            with contextlib.suppress(NoEntry):
                self.fs.node(listing[0]).opens -= 1

    @guarded
    async def statfs(self, ctx: Any = None) -> pyfuse3.StatvfsData:
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
        raise pyfuse3.FUSEError(errno.ENOSYS)

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
                self.fs.forget(inode, count)
        except Exception:  # noqa: BLE001 - forget has no reply; keep the mount up
            log.exception("forget failed")

    # -- files ------------------------------------------------------------------------

    @guarded
    async def open(self, inode: int, flags: int, ctx: Any = None) -> pyfuse3.FileInfo:
        writing = bool(flags & _WRITE_ACCESS)
        if writing or flags & os.O_TRUNC:
            async with self.gate:
                node = self.fs.open(inode, writing)
                try:
                    if flags & os.O_TRUNC:
                        await self._copy_up(node, keep=0)
                        self.fs.setattr(inode, size=0)
                except BaseException:
                    self.fs.release(node, writing)
                    raise
        else:
            node = self.fs.open(inode, writing)
        fh = self._fh()
        self._handles[fh] = _Handle(node, writing)
        return pyfuse3.FileInfo(fh=fh)

    @read_guarded
    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self._handles[fh]
        node = handle.node
        if node.data is not None and node.fd is not None:
            if not node.missing:
                return os.pread(node.fd, size, off)
            parts = []
            for lower, start, end in self.fs.read_plan(node, off, size):
                if lower:
                    parts.append(await self._read_lower(handle, start, end - start))
                else:
                    parts.append(os.pread(node.fd, end - start, start))
            return b"".join(parts)
        return await self._read_lower(handle, off, size)

    async def _read_lower(self, handle: _Handle, off: int, size: int) -> bytes:
        node = handle.node
        entry = node.lower
        if entry is None:
            return b""
        if handle.reader_entry is not entry:
            if handle.reader_fh is not None:
                self.reader.release(handle.reader_fh)
            handle.reader_fh = self.reader.open(OpenFile(node.ino, entry))
            handle.reader_entry = entry
        assert handle.reader_fh is not None
        return await self.reader.read(handle.reader_fh, off, size)

    @guarded
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        node = self._handles[fh].node
        async with self.gate:
            if node.data is None or node.missing:  # not (wholly) in the upper layer yet
                await self._copy_up(node, keep=None)
                await self._fill(node, off, off + len(buf), covered=True)
            return self.fs.write(node, off, buf)

    @guarded
    async def release(self, fh: int) -> None:
        handle = self._handles.pop(fh, None)
        if handle is None:
            return
        if handle.reader_fh is not None:
            self.reader.release(handle.reader_fh)
        self.fs.release(handle.node, handle.writing)

    @guarded
    async def fsync(self, fh: int, datasync: bool) -> None:
        handle = self._handles.get(fh)
        self.fs.fsync(handle.node if handle else None, datasync)

    @guarded
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        self.fs.fsync(None)

    async def _copy_up(self, node: Node, keep: int | None) -> None:
        """Bring ``node``'s bytes into the upper layer (its first ``keep`` bytes)."""
        while node.data is None:
            if await self._copying.join(node.ino):
                continue
            plan = self.fs.copy_up_plan(node, keep)
            if plan is None:
                return

            async def copy(plan: Any = plan) -> None:
                try:
                    self.fs.copy_up_done(plan)  # sparse: blocks are fetched by _fill
                except BaseException:
                    self.fs.copy_up_failed(plan)
                    raise

            await self._copying.lead(copy, node.ino)

    async def _fill(self, node: Node, start: int, end: int, covered: bool = False) -> None:
        """Copy the lower bytes of the missing blocks overlapping [start, end) into
        the data file (with ``covered``, not those a write replaces whole)."""
        while True:
            spans = self.fs.missing_blocks(node, start, end, covered)
            if not spans:
                return
            block, lo, hi = spans[0]
            key = (node.ino, block)
            if await self._filling.join(key):
                continue

            async def fill(block: int = block, lo: int = lo, hi: int = hi) -> None:
                if hi > lo:
                    await self._fetch_into(node, lo, hi)
                self.fs.block_filled(node, block)

            await self._filling.lead(fill, key)

    async def _fetch_into(self, node: Node, lo: int, hi: int) -> None:
        assert node.lower is not None and node.data is not None
        fd = node.fd if node.fd is not None else os.open(
            self.fs.upper.data_path(node.data), os.O_WRONLY | os.O_CLOEXEC)
        rfh = self.reader.open(OpenFile(node.ino, node.lower))
        try:
            offset = lo
            while offset < hi:
                data = await self.reader.read(rfh, offset, min(CHUNK_SIZE, hi - offset))
                if not data:
                    raise OSError(errno.EIO, f"lower file ended at {offset}, not {hi}")
                os.pwrite(fd, data, offset)
                offset += len(data)
        finally:
            self.reader.release(rfh)
            if fd != node.fd:
                os.close(fd)

    async def fill_all(self) -> None:
        """Fetch every block still missing from partly copied files (status and
        commit hash whole data files)."""
        for node in self.fs.iter_nodes():
            if node.missing and node.data is not None:
                await self._fill(node, 0, node.lower_end)

    # -- changes ----------------------------------------------------------------------

    @guarded
    async def setattr(self, inode: int, attr: Any, fields: Any, fh: int | None,
                      ctx: Any = None) -> pyfuse3.EntryAttributes:
        async with self.gate:
            node = self.fs.node(inode)
            size = attr.st_size if fields.update_size else None
            if size is not None and node.data is None and not stat.S_ISDIR(
                    self.fs.attr(node).mode):
                await self._copy_up(node, keep=size)
            uid = attr.st_uid if fields.update_uid else None
            gid = attr.st_gid if fields.update_gid else None
            if uid is not None or gid is not None:
                self._may_chown(self.fs.attr(node), uid, gid, ctx)
            self.fs.setattr(
                inode,
                mode=attr.st_mode if fields.update_mode else None,
                size=size,
                mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
                uid=uid,
                gid=gid,
                atime_ns=attr.st_atime_ns if fields.update_atime else None,
            )
            return attributes(self.fs.getattr(inode))

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
                     ctx: Any = None) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        text = fs_name(name)
        async with self.gate:
            try:
                node = self.fs.create(parent_inode, text, mode, opening=True,
                                      owner=self._owner(parent_inode, ctx))
            except BaseException:
                self._drop_unhandled_writer(parent_inode, text)
                raise
            fh = self._fh()
            self._handles[fh] = _Handle(node, True)
            self.fs.remember(node.ino)
            return pyfuse3.FileInfo(fh=fh), attributes(self.fs.attr(node))

    def _drop_unhandled_writer(self, parent_inode: int, name: str) -> None:
        """A ``create`` that failed after the file was made open for writing (its
        journal record could not be written, say) leaves no handle: close it, or
        its writer would block ``discard`` for the life of the mount."""
        try:
            node = self.fs.children(self.fs.node(parent_inode)).get(name)
        except Exception:  # noqa: BLE001 - nothing to undo
            return
        if node is None or node.writers <= 0:
            return
        if any(h.node is node for h in self._handles.values()):
            return
        self.fs.release(node, True)

    @guarded
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: Any = None) -> pyfuse3.EntryAttributes:
        text = fs_name(name)
        async with self.gate:
            owner = self._owner(parent_inode, ctx)
            if stat.S_ISREG(mode) or not stat.S_IFMT(mode):
                return self._entry(self.fs.create(parent_inode, text, mode, owner=owner))
            return self._entry(self.fs.special(parent_inode, text, mode, rdev, owner=owner))

    @guarded
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any = None
                    ) -> pyfuse3.EntryAttributes:
        text = fs_name(name)
        async with self.gate:
            if self.fs.node(parent_inode).mode & stat.S_ISGID:
                mode |= stat.S_ISGID  # set-group-ID directories pass it on
            return self._entry(self.fs.mkdir(parent_inode, text, mode,
                                             owner=self._owner(parent_inode, ctx)))

    @guarded
    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any = None
                      ) -> pyfuse3.EntryAttributes:
        text = fs_name(name)
        async with self.gate:
            return self._entry(self.fs.symlink(parent_inode, text, os.fsdecode(target),
                                               owner=self._owner(parent_inode, ctx)))

    def _entry(self, node: Node) -> pyfuse3.EntryAttributes:
        """The reply to a request that gives the kernel a new reference to ``node``."""
        self.fs.remember(node.ino)
        return attributes(self.fs.attr(node))

    @guarded
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any = None
                   ) -> pyfuse3.EntryAttributes:
        text = fs_name(new_name)
        async with self.gate:
            node = self.fs.node(inode)
            if node.kind == FILE and node.data is None:
                await self._copy_up(node, keep=None)  # the data file is the identity
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


