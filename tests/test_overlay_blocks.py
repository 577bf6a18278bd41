"""``dsfs.overlay.blocks``: copy-up and block fill without a mount or a FUSE type.

A real ``OverlayFS`` over a temporary upper layer and an in-memory lower tree;
the lower bytes come from a reader that counts its reads and takes a moment,
so overlapping requests can be seen sharing one copy-up and one fill.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

trio = pytest.importorskip("trio", reason="trio is not installed")

from dsfs.format.manifest import DIR, FILE, Entry  # noqa: E402
from dsfs.overlay.blocks import Blocks, Opened  # noqa: E402
from dsfs.overlay.fs import OverlayFS  # noqa: E402
from dsfs.overlay.upper import Upper  # noqa: E402
from dsfs.vfs import MemoryTreeSource, OpenFile  # noqa: E402

DATA = bytes(range(256)) * 64  # 16 KiB: one block


class SlowReader:
    """Lower contents from a dict; every read takes a moment and is counted."""

    def __init__(self, contents: dict[str, bytes]) -> None:
        self.contents = contents
        self.files: dict[int, OpenFile] = {}
        self.reads: list[tuple[str, int, int]] = []
        self._next = 1

    def open(self, file: OpenFile) -> int:
        fh, self._next = self._next, self._next + 1
        self.files[fh] = file
        return fh

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        path = self.files[fh].entry.path
        self.reads.append((path, offset, size))
        await trio.sleep(0.02)
        return self.contents[path][offset:offset + size]

    def release(self, fh: int) -> None:
        del self.files[fh]


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[OverlayFS]:
    tree = {"d": Entry("d", DIR, 0, stat.S_IFDIR | 0o755, 1),
            "d/f": Entry("d/f", FILE, len(DATA), stat.S_IFREG | 0o644, 1, "xxh:f")}
    upper = Upper(tmp_path / "overlay")
    upper.open()
    upper.load()
    overlay = OverlayFS(MemoryTreeSource(tree), upper)
    overlay.replay([])
    upper.save("0" * 32, "base", overlay.records())
    try:
        yield overlay
    finally:
        upper.close()


def test_overlapping_writes_share_one_copy_up_and_one_fill(fs: OverlayFS) -> None:
    reader = SlowReader({"d/f": DATA})
    blocks = Blocks(fs, reader)
    node = fs.resolve("d/f")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for off in (10, 20, 30):
                nursery.start_soon(blocks.prepare_write, node, off, off + 1)

    trio.run(main)
    assert reader.reads == [("d/f", 0, len(DATA))]  # one fetch for three writers
    assert node.data is not None and not node.missing
    assert reader.files == {}  # every reader handle released
    opened = Opened(fs.open(node.ino))
    assert trio.run(blocks.read, opened, 0, len(DATA)) == DATA
    blocks.close(opened)


def test_a_partly_copied_file_reads_from_both_layers_and_fills_for_commit(
        fs: OverlayFS) -> None:
    reader = SlowReader({"d/f": DATA})
    blocks = Blocks(fs, reader)
    node = fs.open(fs.resolve("d/f").ino)
    opened = Opened(node)
    trio.run(blocks.copy_up, node, None)
    assert node.data is not None and node.missing == {0}  # sparse: nothing fetched yet
    assert reader.reads == []
    expected = b"XYZ" + DATA[3:]
    # a write that wholly replaces no block must fill the block it touches first
    trio.run(blocks.prepare_write, node, 0, 3)
    fs.write(node, 0, b"XYZ")
    assert trio.run(blocks.read, opened, 0, len(DATA)) == expected
    trio.run(blocks.fill_all)
    assert not node.missing
    assert trio.run(blocks.read, opened, 0, len(DATA)) == expected
    blocks.close(opened)
    assert node.opens == 0 and reader.files == {}


def test_a_failed_fill_is_shared_and_leaves_the_block_missing(fs: OverlayFS) -> None:
    reader = SlowReader({"d/f": b""})  # the lower file ends early: EIO
    blocks = Blocks(fs, reader)
    node = fs.resolve("d/f")
    errors: list[OSError] = []

    async def writer(off: int) -> None:
        try:
            await blocks.prepare_write(node, off, off + 1)
        except OSError as exc:
            errors.append(exc)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer, 1)
            nursery.start_soon(writer, 2)

    trio.run(main)
    assert len(reader.reads) == 1
    assert len(errors) == 2 and all("lower file ended" in str(e) for e in errors)
    assert node.missing == {0}
