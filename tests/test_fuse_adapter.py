"""The pyfuse3 adapter without a mount: a fake vfs raises chosen errors and
each must come out as its errno; nothing but FUSEError may escape."""

from __future__ import annotations

import errno
import logging
import os
import stat
from types import SimpleNamespace
from typing import Any

import pytest

pyfuse3 = pytest.importorskip("pyfuse3", reason="pyfuse3 is not installed")
trio = pytest.importorskip("trio", reason="trio is not installed")

from dsfs.errors import IntegrityError, NotFoundError, StoreError  # noqa: E402
from dsfs.fuse import ERRNO, TIMEOUT, ReadOnlyOperations  # noqa: E402
from dsfs.vfs import (  # noqa: E402
    Attr,
    FsStats,
    InvalidArgument,
    IsADirectory,
    NoEntry,
    NotADirectory,
    ReadOnly,
)

FILE_ATTR = Attr(5, stat.S_IFREG | 0o444, 10, 123, 1, 0, 0)


class FakeVfs:
    """Answers with FILE_ATTR, or raises ``self.error`` from every method."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error

    def _answer(self) -> Any:
        if self.error is not None:
            raise self.error
        return FILE_ATTR

    def lookup(self, parent: int, name: str) -> Attr:
        return self._answer()

    def getattr(self, ino: int) -> Attr:
        return self._answer()

    def readlink(self, ino: int) -> str:
        self._answer()
        return "target"

    def opendir(self, ino: int) -> None:
        self._answer()

    def readdir(self, ino: int, start: int) -> Any:
        self._answer()
        return iter(())

    def open(self, ino: int, writing: bool = False) -> Any:
        self._answer()
        if writing:
            raise ReadOnly("x")
        return object()

    def access(self, ino: int, writing: bool) -> None:
        self._answer()
        if writing:
            raise ReadOnly("x")

    def statfs(self) -> FsStats:
        self._answer()
        return FsStats(4096, 10, 3, 255)


class FakeReader:
    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error

    def open(self, file: Any) -> int:
        return 7

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        if self.error is not None:
            raise self.error
        return b"x" * size

    def release(self, fh: int) -> None:
        pass


def call(ops: ReadOnlyOperations, name: str, *args: Any) -> Any:
    async def go() -> Any:
        return await getattr(ops, name)(*args)

    return trio.run(go)


def fuse_errno(ops: ReadOnlyOperations, name: str, *args: Any) -> int:
    with pytest.raises(pyfuse3.FUSEError) as info:
        call(ops, name, *args)
    return info.value.errno


READ_OPS = [
    ("getattr", (5, None)),
    ("readlink", (5, None)),
    ("opendir", (5, None)),
    ("open", (5, os.O_RDONLY, None)),
    ("statfs", (None,)),
    ("access", (5, os.R_OK, None)),
    ("listxattr", (5, None)),
]


@pytest.mark.parametrize("error, code", [
    (NoEntry("x"), errno.ENOENT),
    (NotADirectory("x"), errno.ENOTDIR),
    (IsADirectory("x"), errno.EISDIR),
    (InvalidArgument("x"), errno.EINVAL),
    (ReadOnly("x"), errno.EROFS),
    (StoreError("store down"), errno.EIO),
    (IntegrityError("bad digest"), errno.EIO),
    (NotFoundError("pack gone"), errno.EIO),
    (OSError(errno.ENOSPC, "disk full"), errno.EIO),
    (RuntimeError("a bug"), errno.EIO),
    (KeyError("a bug"), errno.EIO),
])
@pytest.mark.parametrize("name, args", READ_OPS)
def test_each_error_maps_to_its_errno(error: BaseException, code: int, name: str,
                                      args: tuple) -> None:
    ops = ReadOnlyOperations(FakeVfs(error), FakeReader())  # type: ignore[arg-type]
    assert fuse_errno(ops, name, *args) == code


def test_errno_table_is_complete() -> None:
    assert set(ERRNO.values()) == {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EINVAL,
                                   errno.EROFS}


def test_read_errors(caplog: pytest.LogCaptureFixture) -> None:
    ops = ReadOnlyOperations(FakeVfs(), FakeReader(StoreError("store down")))  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="dsfs.fuse"):
        assert fuse_errno(ops, "read", 7, 0, 10) == errno.EIO
    assert "store down" in caplog.text
    assert "Traceback" not in caplog.text  # an expected failure: one line


def test_unexpected_error_is_logged_with_traceback(caplog: pytest.LogCaptureFixture) -> None:
    ops = ReadOnlyOperations(FakeVfs(ZeroDivisionError("oops")), FakeReader())  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="dsfs.fuse"):
        assert fuse_errno(ops, "getattr", 5, None) == errno.EIO
    assert "ZeroDivisionError" in caplog.text
    assert caplog.records[0].exc_info is not None


def test_missing_name_is_a_cached_negative_entry() -> None:
    ops = ReadOnlyOperations(FakeVfs(NoEntry("x")), FakeReader())  # type: ignore[arg-type]
    attrs = call(ops, "lookup", 1, b"missing", None)
    assert attrs.st_ino == 0 and attrs.entry_timeout == TIMEOUT


def test_attributes_and_timeouts() -> None:
    ops = ReadOnlyOperations(FakeVfs(), FakeReader())  # type: ignore[arg-type]
    attrs = call(ops, "lookup", 1, "naïve".encode(), None)
    assert attrs.st_ino == 5 and attrs.st_size == 10 and attrs.st_mtime_ns == 123
    assert attrs.entry_timeout == TIMEOUT and attrs.attr_timeout == TIMEOUT
    assert call(ops, "readlink", 5, None) == b"target"


def test_open_keeps_cache_and_refuses_writes() -> None:
    ops = ReadOnlyOperations(FakeVfs(), FakeReader())  # type: ignore[arg-type]
    info = call(ops, "open", 5, os.O_RDONLY, None)
    assert info.fh == 7 and info.keep_cache
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC, os.O_WRONLY | os.O_APPEND):
        assert fuse_errno(ops, "open", 5, flags, None) == errno.EROFS
    assert call(ops, "read", 7, 0, 3) == b"xxx"


def test_flush_is_enosys_so_the_kernel_stops_sending_it() -> None:
    ops = ReadOnlyOperations(FakeVfs(), FakeReader())  # type: ignore[arg-type]
    assert fuse_errno(ops, "flush", 7) == errno.ENOSYS


def test_getxattr_has_no_attributes() -> None:
    ops = ReadOnlyOperations(FakeVfs(), FakeReader())  # type: ignore[arg-type]
    assert fuse_errno(ops, "getxattr", 5, b"user.x", None) == pyfuse3.ENOATTR


@pytest.mark.parametrize("name, args", [
    ("setattr", (5, None, None, None, None)),
    ("write", (7, 0, b"x")),
    ("create", (1, b"new", 0o644, os.O_WRONLY, None)),
    ("mknod", (1, b"new", 0o644, 0, None)),
    ("mkdir", (1, b"new", 0o755, None)),
    ("symlink", (1, b"new", b"target", None)),
    ("link", (5, 1, b"new", None)),
    ("unlink", (1, b"x", None)),
    ("rmdir", (1, b"x", None)),
    ("rename", (1, b"x", 1, b"y", 0, None)),
    ("setxattr", (5, b"user.x", b"1", None)),
    ("removexattr", (5, b"user.x", None)),
])
def test_every_change_is_erofs(name: str, args: tuple) -> None:
    ops = ReadOnlyOperations(FakeVfs(), FakeReader())  # type: ignore[arg-type]
    assert fuse_errno(ops, name, *args) == errno.EROFS


def test_access_for_writing_is_erofs() -> None:
    ops = ReadOnlyOperations(FakeVfs(), FakeReader())  # type: ignore[arg-type]
    assert call(ops, "access", 5, os.R_OK, None) is True
    assert fuse_errno(ops, "access", 5, os.W_OK, None) == errno.EROFS


class CountingReader(FakeReader):
    """Hands out a new handle per open and remembers which are open."""

    def __init__(self) -> None:
        super().__init__()
        self.open_handles: set[int] = set()
        self.reads: list[int] = []
        self._next = 100

    def open(self, file: Any) -> int:
        self._next += 1
        self.open_handles.add(self._next)
        return self._next

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        assert fh in self.open_handles
        self.reads.append(fh)
        return b"x" * size

    def release(self, fh: int) -> None:
        self.open_handles.remove(fh)


class SizedVfs(FakeVfs):
    """Files of 100 bytes."""

    def open(self, ino: int, writing: bool = False) -> Any:
        super().open(ino, writing)
        return SimpleNamespace(entry=SimpleNamespace(size=100))


def test_no_open_mode_reads_by_inode_with_a_bounded_set_of_handles(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With the patched pyfuse3: open and opendir answer ENOSYS (after open's
    own checks), reads come with the inode; the reader's handles are per inode,
    released at the end of the file or, past ``INODE_HANDLES``, the least
    recently read first."""
    from dsfs.fuse import readonly

    monkeypatch.setattr(readonly, "INODE_HANDLES", 2)
    reader = CountingReader()
    handshakes: list[int] = []
    reader.handshake_done = lambda: handshakes.append(1)  # type: ignore[attr-defined]
    ops = ReadOnlyOperations(SizedVfs(), reader, no_open=True)  # type: ignore[arg-type]
    call(ops, "lookup", 1, b"a", None)
    call(ops, "lookup", 1, b"b", None)
    assert handshakes == [1]  # readahead raised once, before any file is opened
    assert fuse_errno(ops, "opendir", 5, None) == errno.ENOSYS
    assert fuse_errno(ops, "open", 5, os.O_WRONLY, None) == errno.EROFS  # checks first
    assert fuse_errno(ops, "open", 5, os.O_RDONLY, None) == errno.ENOSYS
    assert call(ops, "read", 5, 0, 3) == b"xxx"
    assert call(ops, "read", 5, 3, 3) == b"xxx"
    assert reader.reads[0] == reader.reads[1]  # one handle for the inode
    call(ops, "read", 6, 0, 1)
    call(ops, "read", 5, 0, 1)  # 5 is now the most recent
    call(ops, "read", 8, 0, 1)  # releases 6's handle
    assert len(reader.open_handles) == 2
    call(ops, "release", 5)  # a no-op: the kernel never sends it without open
    assert len(reader.open_handles) == 2
    call(ops, "read", 6, 0, 1)  # reopened
    assert len(reader.open_handles) == 2 and reader.reads[-1] not in reader.reads[:3]
    # a read that reaches the end releases the handle (a prune may evict its chunks)
    call(ops, "read", 6, 90, 10)
    assert len(reader.open_handles) == 1
