"""Copy-up, block fill and the reads of partly copied files: the part of the
overlay that moves lower bytes into the upper layer.

``OverlayFS`` owns the block map of a partly copied file (its ``missing``
blocks, ``lower_end``) and the plans (``copy_up_plan``, ``missing_blocks``,
``read_plan``); ``Blocks`` carries them out for a live mount, reading the
lower file's bytes through a ``FileReader`` (``dsfs.content``):

* The first change to a lower file copies it up lazily: a sparse data file of
  the surviving size, whose blocks (the store's chunks) stay the lower
  file's until a write touches them.
* A write fetches only the blocks it touches and does not wholly replace (an
  append fetches at most the last one; ``O_TRUNC`` and truncations fetch
  nothing); a read of a partly copied file takes each piece from where it is.
* Status and commit fill the remaining blocks first (``fill_all``).

Concurrent requests for one file's copy-up, or one block's fill, share one
(``dsfs.flight.SingleFlight``).  This is the overlay's only async module (it
awaits the reader); it speaks no FUSE.
"""

from __future__ import annotations

import errno
import functools
import os
from dataclasses import dataclass

from dsfs.content import FileReader
from dsfs.flight import SingleFlight
from dsfs.format.digest import CHUNK_SIZE
from dsfs.format.manifest import Entry
from dsfs.overlay.contents import CopyUp
from dsfs.overlay.fs import OverlayFS
from dsfs.overlay.nodes import Node
from dsfs.vfs import OpenFile


@dataclass
class Opened:
    """One open of a file (a kernel file handle): the node, and the reader
    handle of its lower entry once a read needed it."""

    node: Node
    reader_fh: int | None = None
    reader_entry: Entry | None = None


class Blocks:
    """Lower bytes into the upper layer, and reads that span both, for one mount."""

    def __init__(self, fs: OverlayFS, reader: FileReader) -> None:
        self.fs = fs
        self.reader = reader
        self._copying: SingleFlight[int] = SingleFlight()  # inode
        self._filling: SingleFlight[tuple[int, int]] = SingleFlight()  # (inode, block)

    # -- reading ------------------------------------------------------------------------

    async def read(self, opened: Opened, off: int, size: int) -> bytes:
        """Bytes [off, off + size) of an open file, from wherever they are."""
        node = opened.node
        if node.data is not None and node.fd is not None:
            if not node.missing:
                return os.pread(node.fd, size, off)
            parts = []
            for lower, start, end in self.fs.read_plan(node, off, size):
                if lower:
                    parts.append(await self._read_lower(opened, start, end - start))
                else:
                    parts.append(os.pread(node.fd, end - start, start))
            return b"".join(parts)
        return await self._read_lower(opened, off, size)

    async def _read_lower(self, opened: Opened, off: int, size: int) -> bytes:
        node = opened.node
        entry = node.lower
        if entry is None:
            return b""
        if opened.reader_entry is not entry:
            if opened.reader_fh is not None:
                self.reader.release(opened.reader_fh)
            opened.reader_fh = self.reader.open(OpenFile(node.ino, entry))
            opened.reader_entry = entry
        assert opened.reader_fh is not None
        return await self.reader.read(opened.reader_fh, off, size)

    def close(self, opened: Opened) -> None:
        """The kernel released the handle: its reader handle goes, and the node's
        open count (``OverlayFS.release``)."""
        if opened.reader_fh is not None:
            self.reader.release(opened.reader_fh)
            opened.reader_fh = None
        self.fs.release(opened.node)

    # -- copying up -----------------------------------------------------------------------

    async def prepare_write(self, node: Node, start: int, end: int) -> None:
        """Make ``node`` writable over bytes [start, end): copied up, and the
        missing blocks the range touches but does not wholly replace filled."""
        if node.data is None or node.missing:  # not (wholly) in the upper layer yet
            await self.copy_up(node, keep=None)
            await self.fill(node, start, end, covered=True)

    async def copy_up(self, node: Node, keep: int | None) -> None:
        """Bring ``node``'s bytes into the upper layer (its first ``keep`` bytes),
        sparse: the blocks are filled when needed (``fill``)."""
        while node.data is None:
            if await self._copying.join(node.ino):
                continue
            plan = self.fs.copy_up_plan(node, keep)
            if plan is None:
                return
            await self._copying.lead(functools.partial(self._copy, plan), node.ino)

    async def _copy(self, plan: CopyUp) -> None:
        try:
            self.fs.copy_up_done(plan)
        except BaseException:
            self.fs.copy_up_failed(plan)
            raise

    async def fill(self, node: Node, start: int, end: int, covered: bool = False) -> None:
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
            await self._filling.lead(functools.partial(self._fill, node, block, lo, hi), key)

    async def _fill(self, node: Node, block: int, lo: int, hi: int) -> None:
        if hi > lo:
            await self._fetch_into(node, lo, hi)
        self.fs.block_filled(node, block)

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
                await self.fill(node, 0, node.lower_end)
