"""File contents in the merged tree: opening data files, copy-up and the block
map of a partly copied file, where a read finds its bytes, writes,
truncates and fsync.  The bytes of the lower layer are fetched by
``dsfs.overlay.blocks`` (which awaits the content reader); this module only
plans and records.

A partly copied file is its data file except for the ``missing`` blocks (of
``BLOCK`` bytes, the store's chunk size), whose bytes below ``lower_end``
are still the lower entry's: a write fills only the blocks it touches, and
status and commit fill the rest.  A filled block is made durable before the
journal says it is no longer missing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from dsfs.format.manifest import DIR, FILE, Entry
from dsfs.overlay.nodes import BLOCK, Node
from dsfs.overlay.records import Records
from dsfs.vfs import InvalidArgument, IsADirectory


@dataclass
class CopyUp:
    """What the adapter must copy from the lower layer into ``fd``: ``length``
    bytes of ``entry`` (0 when the file is being truncated anyway)."""

    node: Node
    entry: Entry
    length: int
    data_id: str
    fd: int



class Contents(Records):
    """Open files, copy-up, the block map, writes, truncates and fsync."""

    # -- opening and reading -----------------------------------------------------------

    def open(self, ino: int) -> Node:
        """Count one more handle of ``ino`` (a kernel file handle, or a no-open
        mount's per-inode handle): its data file stays open, and its bytes stay
        while it is unlinked."""
        node = self.node(ino)
        if node.kind == DIR:
            raise IsADirectory(self.path(node))
        if node.kind != FILE:
            raise InvalidArgument(f"{self.path(node)} is not a regular file")
        if node.data is not None and node.fd is None:
            node.fd = os.open(self.upper.data_file(node.data), os.O_RDWR | os.O_CLOEXEC)
        # counted once the open succeeded: a failed open leaves no phantom handle
        node.opens += 1
        return node

    def release(self, node: Node) -> None:
        node.opens -= 1
        if node.opens == 0:
            if node.fd is not None:
                os.close(node.fd)
                node.fd = None
            attached = self.attached(node)
            if attached and node.data is not None and not node.dirty:
                # clean after a commit: the version has the bytes
                self._drop_data(node)
            elif not attached:
                self._unreferenced(node)

    def _unreferenced(self, node: Node) -> None:
        """An unlinked (or discarded) node: its bytes go once neither a handle nor
        the kernel refers to it.  The kernel holds its reference while a process
        has the file open, so this covers files opened without an OPEN request."""
        if node.opens == 0 and node.lookups == 0:
            self._drop_data(node)
            self._inodes.pop(node.ino, None)

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
        before the journal says so, and so is the data file's name: a power
        loss must not leave a record without missing blocks over a data file
        whose holes read as zeros, or that is gone."""
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
        self.upper.make_names_durable()
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

    def truncate(self, node: Node, size: int, set_mtime: bool) -> None:
        """Cut or extend a copied-up file's data file to ``size`` (``setattr``
        records it, or not: see there); with ``set_mtime`` the node takes the
        data file's new mtime (else the caller sets one)."""
        if node.kind == DIR:
            raise IsADirectory(self.path(node))
        assert node.data is not None, "copy up first"
        if node.fd is not None:
            os.ftruncate(node.fd, size)
            if set_mtime:
                node.mtime_ns = os.fstat(node.fd).st_mtime_ns
        else:
            os.truncate(self.upper.data_path(node.data), size)
            if set_mtime:
                node.mtime_ns = os.stat(self.upper.data_path(node.data)).st_mtime_ns
        node.size = size
        node.version += 1
        if node.missing:  # bytes cut off are gone from the lower side too
            node.lower_end = min(node.lower_end, size)
            node.missing = {b for b in node.missing if b * BLOCK < node.lower_end}
            if not node.missing:
                node.missing, node.lower = None, None

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

    def _forget_subtree(self, node: Node) -> None:
        """Data files of a removed node (and below) go now if nothing refers to them,
        else once neither a handle nor the kernel does (``_unreferenced``)."""
        stack = [node]
        while stack:
            current = stack.pop()
            if current.data is not None and current.opens == 0 and current.lookups == 0:
                self.upper.retire(current.data)
                current.data = None
            if current.children:
                stack.extend(current.children.values())

