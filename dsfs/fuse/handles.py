"""The open files of a writable mount: what the file handle of a request means.

With stock pyfuse3 the kernel sends OPEN and RELEASE, and each kernel file
handle is an ``Opened`` of its own.  With dsfs's patch (no-open: ``open``
answers ENOSYS) the kernel sends neither; a request carries the inode in
place of the handle, and a file's open state lives per inode: its data file
descriptor and the reader handle of its lower bytes, opened at the first
request that needs them and kept for the ``INODE_HANDLES`` most recently used
files (the others are closed, and opened again when next needed) or until the
kernel forgets the inode.  A file created with ``create`` (which the kernel
still sends; it sends no RELEASE for it once it knows there is no OPEN)
gets its inode as its handle, so the two kinds of request mean the same
thing, and ``release`` leaves the per-inode handle in place.

Nothing here decides what an open file may keep: the overlay keeps a file's
bytes while a handle or a kernel reference holds it (``Contents.release``,
``_unreferenced``), so closing a per-inode handle early loses nothing; the
kernel holds its reference while any process has the file open.  This module
speaks no FUSE.
"""

from __future__ import annotations

from collections import OrderedDict

from dsfs.overlay.blocks import Blocks, Opened
from dsfs.overlay.nodes import Node

#: Files whose per-inode handle a no-open mount keeps open (least recently used go).
INODE_HANDLES = 256


class Handles:
    """The ``Opened`` of each live file handle; per inode when ``by_inode``."""

    def __init__(self, blocks: Blocks, by_inode: bool) -> None:
        self.blocks = blocks
        self.by_inode = by_inode
        self._open: OrderedDict[int, Opened] = OrderedDict()
        self._busy: dict[int, int] = {}  # handles in use by a request that may await
        self._next = 1

    def add(self, node: Node) -> int:
        """A handle for ``node``, counted open already (a ``create`` or ``open``):
        a new number, or per inode the inode (joining a handle already there)."""
        if not self.by_inode:
            fh = self._next
            self._next += 1
            self._open[fh] = Opened(node)
            return fh
        fh = node.ino
        if fh in self._open:
            self.blocks.fs.release(node)  # one handle per inode: drop the extra count
            self._open.move_to_end(fh)
        else:
            self._open[fh] = Opened(node)
            self._trim()
        return fh

    def get(self, fh: int) -> Opened | None:
        """The handle ``fh`` if open (no-open: without opening one)."""
        return self._open.get(fh)

    def acquire(self, fh: int) -> Opened:
        """The ``Opened`` of a request's handle, kept open until ``done(fh)``
        (call it in a ``finally``); per inode, opened now when it is not
        (``Contents.open``).  Not a context manager: this runs for every read
        and write, and a generator-based one costs more than the rest."""
        opened = self._open.get(fh)
        if opened is None:
            if not self.by_inode:
                raise KeyError(fh)
            opened = self._open[fh] = Opened(self.blocks.fs.open(fh))
            self._trim()
        elif self.by_inode:
            self._open.move_to_end(fh)
        self._busy[fh] = self._busy.get(fh, 0) + 1
        return opened

    def done(self, fh: int) -> None:
        """The request that ``acquire``d ``fh`` is over."""
        left = self._busy[fh] - 1
        if left:
            self._busy[fh] = left
        else:
            del self._busy[fh]

    def release(self, fh: int) -> None:
        """The kernel released ``fh``.  A per-inode handle stays (it is the
        inode's, not this open's); it goes with ``forget`` or ``_trim``."""
        if self.by_inode:
            return
        opened = self._open.pop(fh, None)
        if opened is not None:
            self.blocks.close(opened)

    def forget(self, ino: int) -> None:
        """The kernel is about to forget ``ino``: no request names it again."""
        if self.by_inode and ino not in self._busy:
            opened = self._open.pop(ino, None)
            if opened is not None:
                self.blocks.close(opened)

    def holds(self, node: Node) -> bool:
        return any(opened.node is node for opened in self._open.values())

    def _trim(self) -> None:
        """Close the least recently used per-inode handles past ``INODE_HANDLES``
        (those in use by a request stay)."""
        excess = len(self._open) - INODE_HANDLES
        if excess <= 0:
            return
        # the oldest first, and only as far as needed: this runs at every new
        # file once the table is full (no copy of the whole table each time)
        victims = []
        for fh in self._open:
            if fh not in self._busy:
                victims.append(fh)
                if len(victims) == excess:
                    break
        for fh in victims:
            self.blocks.close(self._open.pop(fh))
