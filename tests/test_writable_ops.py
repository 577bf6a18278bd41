"""The writable adapter without a mount (S3QL's ``t3_fs_api`` tier).

``WritableOperations`` is driven directly, handler by handler, over a real
``OverlayFS`` with a temporary upper layer and a small lower tree whose file
contents come from a simple in-memory reader.  Faults are real: a tiny tmpfs
under the upper layer for a full disk, a lowered ``RLIMIT_NOFILE`` for a
failing ``open``, ext4's maximum file size for EFBIG.  Each case checks the
errno the kernel would get and what the mount's log says.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pyfuse3 = pytest.importorskip("pyfuse3", reason="pyfuse3 is not installed")
trio = pytest.importorskip("trio", reason="trio is not installed")

from dsfs.format.manifest import DIR, FILE, Entry  # noqa: E402
from dsfs.fuse.writable import WritableOperations  # noqa: E402
from dsfs.overlay.fs import OverlayFS  # noqa: E402
from dsfs.overlay.upper import Upper  # noqa: E402
from dsfs.vfs import ROOT_INO, MemoryTreeSource, OpenFile  # noqa: E402

LOWER = {"d/a.txt": b"lower a\n", "d/b.bin": bytes(range(256)) * 40}
SECRET = b"SECRET-CONTENTS-"


class MemoryReader:
    """Lower file contents from a dict (the ``FileReader`` protocol)."""

    def __init__(self, contents: dict[str, bytes]) -> None:
        self.contents = contents
        self.files: dict[int, OpenFile] = {}

    def open(self, file: OpenFile) -> int:
        fh = len(self.files) + 1
        self.files[fh] = file
        return fh

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        return self.contents[self.files[fh].entry.path][offset:offset + size]

    def release(self, fh: int) -> None:
        self.files.pop(fh, None)


def lower_source() -> MemoryTreeSource:
    tree = {"d": Entry("d", DIR, 0, stat.S_IFDIR | 0o755, 1)}
    for path, data in LOWER.items():
        tree[path] = Entry(path, FILE, len(data), stat.S_IFREG | 0o644, 1, f"xxh:{path}")
    return MemoryTreeSource(tree)


@contextlib.contextmanager
def writable_ops(upper_dir: Path, no_open: bool = False) -> Iterator[WritableOperations]:
    """The adapter over a fresh or existing upper layer (replayed as a mount does);
    with ``no_open`` as a mount with the patched pyfuse3 runs it."""
    upper = Upper(upper_dir)
    upper.open()
    state = upper.load()
    fs = OverlayFS(lower_source(), upper)
    fs.replay((state or {}).get("records", []))
    upper.save("0" * 32, "base", fs.records())
    try:
        yield WritableOperations(fs, MemoryReader(LOWER), no_open=no_open)
    finally:
        upper.close()


@pytest.fixture
def ops(tmp_path: Path) -> Iterator[WritableOperations]:
    with writable_ops(tmp_path / "overlay") as value:
        yield value


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (a real full disk within a few writes)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def call(ops: WritableOperations, name: str, *args: Any) -> Any:
    async def go() -> Any:
        return await getattr(ops, name)(*args)

    return trio.run(go)


def fuse_errno(ops: WritableOperations, name: str, *args: Any) -> int:
    with pytest.raises(pyfuse3.FUSEError) as info:
        call(ops, name, *args)
    return int(info.value.errno)


def ino_of(ops: WritableOperations, path: str) -> int:
    return ops.fs.resolve(path).ino


def fields(**updates: bool) -> Any:
    names = ("update_atime", "update_mtime", "update_ctime", "update_mode", "update_uid",
             "update_gid", "update_size")
    return SimpleNamespace(**{n: updates.get(n.removeprefix("update_"), False)
                              for n in names})


def size_attr(size: int) -> Any:
    attr = pyfuse3.EntryAttributes()
    attr.st_size = size
    return attr


def new_file(ops: WritableOperations, name: str, parent: int = ROOT_INO) -> tuple[int, int]:
    """(fh, inode) of a file created open for writing."""
    info, attr = call(ops, "create", parent, os.fsencode(name), stat.S_IFREG | 0o644,
                      os.O_WRONLY | os.O_CREAT, None)
    return info.fh, attr.st_ino


def open_files(ops: WritableOperations) -> list[str]:
    """The files some handle holds open."""
    return [ops.fs.path(n) for n in ops.fs.iter_nodes() if n.kind == FILE and n.opens]


def assert_quiet_log(caplog: pytest.LogCaptureFixture, *forbidden: bytes) -> None:
    """At most one line per failure, no traceback, none of the data written."""
    for record in caplog.records:
        assert record.exc_info is None, record.getMessage()
        text = record.getMessage()
        assert "\n" not in text, text
        for data in forbidden:
            assert data.decode() not in text, text
            assert repr(data)[2:-1][:16] not in text, text


# -- the basics work without a mount ------------------------------------------------------


def test_create_write_read_rename_unlink(ops: WritableOperations) -> None:
    fh, ino = new_file(ops, "new.txt")
    assert call(ops, "write", fh, 0, b"hello") == 5
    assert call(ops, "read", fh, 0, 100) == b"hello"
    call(ops, "release", fh)
    d = ino_of(ops, "d")
    call(ops, "rename", ROOT_INO, b"new.txt", d, b"moved.txt", 0, None)
    assert call(ops, "lookup", d, b"moved.txt", None).st_ino == ino
    # a lower file: copy-up on the first write, the rest still read from below
    a = ino_of(ops, "d/b.bin")
    info = call(ops, "open", a, os.O_RDWR, None)
    assert call(ops, "write", info.fh, 1, b"XY") == 2
    assert call(ops, "read", info.fh, 0, 4) == bytes([0]) + b"XY" + bytes([3])
    call(ops, "release", info.fh)
    again = call(ops, "open", ino, os.O_RDONLY, None)
    call(ops, "unlink", d, b"moved.txt", None)
    assert call(ops, "lookup", d, b"moved.txt", None).st_ino == 0
    assert call(ops, "getattr", ino, None).st_nlink == 0  # open, unlinked
    assert call(ops, "read", again.fh, 0, 100) == b"hello"
    call(ops, "release", again.fh)
    assert open_files(ops) == []


# -- errno mapping (issue 10) ----------------------------------------------------------------


def test_full_disk_is_enospc_and_the_log_holds_no_data(
        tiny_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with writable_ops(tiny_disk / "overlay") as ops:
        fh, _ino = new_file(ops, "fill.bin")
        chunk = SECRET * 4096  # 64 KiB
        codes = set()
        for i in range(64):  # 4 MiB into a 1 MiB disk
            try:
                call(ops, "write", fh, i * len(chunk), chunk)
            except pyfuse3.FUSEError as exc:
                codes.add(exc.errno)
                break
        assert codes == {errno.ENOSPC}
        call(ops, "release", fh)
        assert open_files(ops) == []
    assert_quiet_log(caplog, SECRET)


def test_truncate_or_write_past_the_largest_file_is_efbig(
        ops: WritableOperations, caplog: pytest.LogCaptureFixture) -> None:
    fh, ino = new_file(ops, "big")
    # ext4 and xfs stop far below 2**63; the kernel lets FUSE ask for it
    assert fuse_errno(ops, "setattr", ino, size_attr(2**63 - 1), fields(size=True), fh,
                      None) == errno.EFBIG
    assert fuse_errno(ops, "write", fh, 2**63 - 2, b"x") in (errno.EFBIG, errno.EINVAL)
    call(ops, "release", fh)
    lower = ino_of(ops, "d/a.txt")  # copy-up first, then the same answer
    assert fuse_errno(ops, "setattr", lower, size_attr(2**63 - 1), fields(size=True), None,
                      None) == errno.EFBIG
    assert call(ops, "getattr", ino, None).st_size == 0
    assert_quiet_log(caplog)


def test_names_over_255_bytes_are_enametoolong(ops: WritableOperations) -> None:
    long = b"n" * 256
    fine = b"n" * 255
    d = ino_of(ops, "d")
    assert fuse_errno(ops, "lookup", d, long, None) == errno.ENAMETOOLONG
    assert call(ops, "lookup", d, fine, None).st_ino == 0  # just missing
    assert fuse_errno(ops, "create", d, long, stat.S_IFREG | 0o644, os.O_WRONLY,
                      None) == errno.ENAMETOOLONG
    assert fuse_errno(ops, "mkdir", d, long, 0o755, None) == errno.ENAMETOOLONG
    assert fuse_errno(ops, "symlink", d, long, b"t", None) == errno.ENAMETOOLONG
    assert fuse_errno(ops, "mknod", d, long, stat.S_IFREG | 0o644, 0,
                      None) == errno.ENAMETOOLONG
    assert fuse_errno(ops, "rename", d, b"a.txt", d, long, 0, None) == errno.ENAMETOOLONG
    assert fuse_errno(ops, "unlink", d, long, None) == errno.ENAMETOOLONG
    assert fuse_errno(ops, "rmdir", d, long, None) == errno.ENAMETOOLONG
    fh, _ino = new_file(ops, fine.decode(), d)
    call(ops, "release", fh)


def test_an_open_that_fails_leaves_no_handle(ops: WritableOperations) -> None:
    """``open`` of an upper file needs a file descriptor; when there is none
    (EMFILE), the request fails with that errno and counts no handle, so the
    file's data file is not held open for the life of the mount."""
    fh, ino = new_file(ops, "f")
    call(ops, "release", fh)

    async def open_without_fds() -> int:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        probe = os.open("/dev/null", os.O_RDONLY)  # the lowest free descriptor
        os.close(probe)
        resource.setrlimit(resource.RLIMIT_NOFILE, (probe, hard))
        try:
            await ops.open(ino, os.O_WRONLY, None)
        except pyfuse3.FUSEError as exc:
            return int(exc.errno)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        return 0

    assert trio.run(open_without_fds) == errno.EMFILE
    assert open_files(ops) == []
    node = ops.fs.node(ino)
    assert node.opens == 0 and node.fd is None
    info = call(ops, "open", ino, os.O_WRONLY, None)  # and it works again
    assert open_files(ops) == ["f"]
    call(ops, "release", info.fh)
    assert open_files(ops) == []


def test_unexpected_errors_are_eio_with_a_log_line_without_data(
        ops: WritableOperations, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A data file removed from under the mount (ENOENT inside a write) is an
    inconsistency, not an answer: EIO and one log line naming the request, but
    not the bytes it carried."""
    fh, ino = new_file(ops, "gone")
    node = ops.fs.node(ino)
    assert node.fd is not None
    os.close(node.fd)
    node.fd = os.open(tmp_path, os.O_RDONLY)  # a descriptor pwrite refuses (EISDIR)
    assert fuse_errno(ops, "write", fh, 0, SECRET) == errno.EIO
    messages = [r.getMessage() for r in caplog.records]
    assert any("write" in m for m in messages), messages
    assert all(SECRET.decode() not in m for m in messages), messages
    call(ops, "release", fh)


# -- POSIX attributes: owners, times, link counts, special files ---------------------------


def ctx(uid: int, gid: int) -> Any:
    """A request's context (pyfuse3's RequestContext cannot be made in Python)."""
    return SimpleNamespace(uid=uid, gid=gid, pid=os.getpid(), umask=0o022)


def owner_attr(uid: int = 0, gid: int = 0) -> Any:
    attr = pyfuse3.EntryAttributes()
    attr.st_uid, attr.st_gid = uid, gid
    return attr


def test_owners_are_kept_and_chown_follows_the_rules(tmp_path: Path) -> None:
    with writable_ops(tmp_path / "o") as ops:
        info, attr = call(ops, "create", ROOT_INO, b"theirs", stat.S_IFREG | 0o644,
                          os.O_WRONLY, ctx(1000, 1001))
        call(ops, "release", info.fh)
        ino = attr.st_ino
        assert (attr.st_uid, attr.st_gid) == (1000, 1001)  # the creator's
        made = call(ops, "mkdir", ROOT_INO, b"dir", 0o2775, ctx(1000, 1001))
        assert (made.st_uid, made.st_gid, made.st_mode & 0o7777) == (1000, 1001, 0o2775)
        # a set-group-ID directory passes on its group (and the bit, to directories)
        sub = call(ops, "mkdir", made.st_ino, b"sub", 0o755, ctx(2000, 2000))
        assert (sub.st_uid, sub.st_gid) == (2000, 1001) and sub.st_mode & stat.S_ISGID
        link = call(ops, "symlink", made.st_ino, b"l", b"target", ctx(2000, 2000))
        assert (link.st_uid, link.st_gid) == (2000, 1001)
        # root gives anything to anyone
        out = call(ops, "setattr", ino, owner_attr(2000, 3000), fields(uid=True, gid=True),
                   None, ctx(0, 0))
        assert (out.st_uid, out.st_gid) == (2000, 3000)
        # others may not give files away, nor take them
        assert fuse_errno(ops, "setattr", ino, owner_attr(1000, 0), fields(uid=True), None,
                          ctx(2000, 3000)) == errno.EPERM
        assert fuse_errno(ops, "setattr", ino, owner_attr(1000, 0), fields(uid=True), None,
                          ctx(1000, 1000)) == errno.EPERM
        # the owner may change the group to one of its groups, not to another
        out = call(ops, "setattr", ino, owner_attr(0, 3000), fields(gid=True), None,
                   ctx(2000, 3000))
        assert out.st_gid == 3000
        assert fuse_errno(ops, "setattr", ino, owner_attr(0, 4321), fields(gid=True), None,
                          ctx(2000, 3000)) == errno.EPERM
        assert fuse_errno(ops, "setattr", ino, owner_attr(0, 1000), fields(gid=True), None,
                          ctx(1000, 1000)) == errno.EPERM  # not the owner
    with writable_ops(tmp_path / "o") as again:  # a remount keeps owners
        theirs = again.fs.resolve("theirs")
        assert (again.fs.attr(theirs).uid, again.fs.attr(theirs).gid) == (2000, 3000)
        assert again.fs.attr(again.fs.resolve("dir/sub")).gid == 1001
        assert again.fs.attr(again.fs.resolve("dir/l")).uid == 2000


def test_times_ctime_moves_with_metadata_atime_is_kept(tmp_path: Path) -> None:
    with writable_ops(tmp_path / "o") as ops:
        fh, ino = new_file(ops, "f")
        call(ops, "write", fh, 0, b"data")
        call(ops, "release", fh)
        before = call(ops, "getattr", ino, None)
        assert before.st_ctime_ns >= before.st_mtime_ns
        times = pyfuse3.EntryAttributes()
        times.st_atime_ns, times.st_mtime_ns = 1_000_000_000, 2_000_000_000
        out = call(ops, "setattr", ino, times, fields(atime=True, mtime=True), None, None)
        assert (out.st_atime_ns, out.st_mtime_ns) == (1_000_000_000, 2_000_000_000)
        assert out.st_ctime_ns >= before.st_ctime_ns  # utimens is a metadata change
        mode = pyfuse3.EntryAttributes()
        mode.st_mode = stat.S_IFREG | 0o600
        chmod = call(ops, "setattr", ino, mode, fields(mode=True), None, None)
        assert chmod.st_ctime_ns >= out.st_ctime_ns and chmod.st_mtime_ns == 2_000_000_000
        call(ops, "rename", ROOT_INO, b"f", ROOT_INO, b"g", 0, None)
        moved = call(ops, "getattr", ino, None)
        assert moved.st_ctime_ns >= chmod.st_ctime_ns and moved.st_mtime_ns == 2_000_000_000
        lower = call(ops, "getattr", ino_of(ops, "d/a.txt"), None)
        assert lower.st_atime_ns == lower.st_ctime_ns == lower.st_mtime_ns  # a version's time
    with writable_ops(tmp_path / "o") as again:
        attr = again.fs.attr(again.fs.resolve("g"))
        assert (attr.atime_ns, attr.mtime_ns) == (1_000_000_000, 2_000_000_000)
        assert attr.ctime_ns is not None and attr.ctime_ns >= moved.st_ctime_ns


def test_directory_link_counts(ops: WritableOperations) -> None:
    d = ino_of(ops, "d")
    call(ops, "opendir", d, None)  # its children are known from now on
    assert call(ops, "getattr", d, None).st_nlink == 2  # two files, no subdirectory
    call(ops, "mkdir", d, b"x", 0o755, None)
    y = call(ops, "mkdir", d, b"y", 0o755, None)
    assert y.st_nlink == 2
    assert call(ops, "getattr", d, None).st_nlink == 4
    call(ops, "rename", d, b"y", ROOT_INO, b"y", 0, None)
    assert call(ops, "getattr", d, None).st_nlink == 3
    call(ops, "rmdir", d, b"x", None)
    assert call(ops, "getattr", d, None).st_nlink == 2
    assert call(ops, "getattr", ROOT_INO, None).st_nlink == 4  # d, y
    call(ops, "mkdir", ROOT_INO, b"z", 0o755, None)
    assert call(ops, "getattr", ROOT_INO, None).st_nlink == 5
    call(ops, "rename", ROOT_INO, b"y", ROOT_INO, b"z", 0, None)  # over an empty directory
    assert call(ops, "getattr", ROOT_INO, None).st_nlink == 4  # d, z
    for i in range(300):  # the count is kept, not recounted per change
        call(ops, "mkdir", d, f"s{i}".encode(), 0o755, None)
        assert call(ops, "getattr", d, None).st_nlink == 3 + i


@pytest.mark.parametrize("kind", [stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK])
def test_special_files_are_kept_in_the_overlay(tmp_path: Path, kind: int) -> None:
    rdev = os.makedev(1, 3) if kind in (stat.S_IFCHR, stat.S_IFBLK) else 0
    with writable_ops(tmp_path / "o") as ops:
        attr = call(ops, "mknod", ROOT_INO, b"node", kind | 0o640, rdev, ctx(1000, 1000))
        assert stat.S_IFMT(attr.st_mode) == kind and attr.st_mode & 0o7777 == 0o640
        assert (attr.st_rdev, attr.st_uid) == (rdev, 1000)
        assert fuse_errno(ops, "mknod", ROOT_INO, b"node", kind | 0o640, rdev,
                          None) == errno.EEXIST
    with writable_ops(tmp_path / "o") as again:
        attr2 = again.fs.attr(again.fs.resolve("node"))
        assert (attr2.mode, attr2.rdev, attr2.uid) == (kind | 0o640, rdev, 1000)


def test_hard_links(tmp_path: Path) -> None:
    with writable_ops(tmp_path / "o") as ops:
        d = ino_of(ops, "d")
        fh, ino = new_file(ops, "f")
        call(ops, "write", fh, 0, b"shared")
        call(ops, "release", fh)
        linked = call(ops, "link", ino, d, b"g", None)
        assert linked.st_ino == ino and linked.st_nlink == 2
        info = call(ops, "open", ino_of(ops, "d/g"), os.O_RDWR, None)
        call(ops, "write", info.fh, 0, b"SH")
        call(ops, "release", info.fh)
        mode = pyfuse3.EntryAttributes()
        mode.st_mode = stat.S_IFREG | 0o600
        call(ops, "setattr", ino, mode, fields(mode=True), None, None)
        # a lower file is copied up (sparsely) first: the data file is its identity
        lower = ino_of(ops, "d/b.bin")
        assert call(ops, "link", lower, ROOT_INO, b"b2", None).st_nlink == 2
        assert fuse_errno(ops, "link", d, ROOT_INO, b"dir2", None) == errno.EPERM
        assert fuse_errno(ops, "link", ino, d, b"a.txt", None) == errno.EEXIST
        call(ops, "rename", d, b"g", ROOT_INO, b"h", 0, None)
        assert call(ops, "getattr", ino, None).st_nlink == 2
        # a rename over one name of another linked file: that file has a link less
        other, other_ino = new_file(ops, "o1")
        call(ops, "release", other)
        call(ops, "link", other_ino, ROOT_INO, b"o2", None)
        before = call(ops, "getattr", other_ino, None).st_ctime_ns
        call(ops, "symlink", ROOT_INO, b"s", b"t", None)
        call(ops, "rename", ROOT_INO, b"s", ROOT_INO, b"o2", 0, None)
        after = call(ops, "getattr", other_ino, None)
        assert after.st_nlink == 1 and after.st_ctime_ns > before
    with writable_ops(tmp_path / "o") as again:  # a remount keeps them one inode
        fs = again.fs
        f, h = fs.resolve("f"), fs.resolve("h")
        assert f is h and fs.attr(f).nlink == 2 and fs.attr(f).mode & 0o777 == 0o600
        assert fs.resolve("b2") is fs.resolve("d/b.bin")
        info = call(again, "open", f.ino, os.O_RDONLY, None)
        assert call(again, "read", info.fh, 0, 100) == b"SHared"
        call(again, "release", info.fh)
        blob = call(again, "open", fs.resolve("b2").ino, os.O_RDONLY, None)
        assert call(again, "read", blob.fh, 0, 10**6) == LOWER["d/b.bin"]
        call(again, "release", blob.fh)
        call(again, "unlink", ROOT_INO, b"f", None)
        assert fs.attr(h).nlink == 1 and fs.path(h) == "h"
        data = h.data
    with writable_ops(tmp_path / "o") as third:
        h = third.fs.resolve("h")
        assert h.data == data and third.fs.attr(h).nlink == 1
        assert third.fs.find(ROOT_INO, "f") is None
