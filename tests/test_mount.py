"""Real mounts driven by real tools: the tree, contents, errno, lifecycle.

One version is built per module; most checks share one mount (as S3QL's
t4_fuse does), each test class of faults mounts its own.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import stat
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest
from test_mount_support import (
    assert_clean_log,
    is_mounted,
    make_source,
    mounted,
    needs_fuse,
    run,
)

pytestmark = needs_fuse


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("mountdata")
    env = {"DSFS_DATA_DIR": str(base / "data"), "DSFS_CACHE_DIR": str(base / "cache"),
           "DSFS_STORE": str(base / "store"), "DSFS_DEBUG": "1"}
    src = base / "src"
    make_source(src)
    out = run(env, "sync", str(src), "-p", "proj", "-n", "ds", check=True)
    v1 = run(env, "search", "--json", check=True)
    import json

    version_id = json.loads(v1.stdout)[0]["id"]
    assert out.returncode == 0
    return {"env": env, "src": src, "id": version_id, "base": base}


@pytest.fixture(scope="module")
def mnt(dataset: dict):
    mountpoint = dataset["base"] / "mnt"
    with mounted(dataset["env"], dataset["id"], mountpoint):
        yield mountpoint


def tree_listing(root: Path) -> dict[str, tuple]:
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            kind = stat.S_IFMT(st.st_mode)
            size = st.st_size if stat.S_ISREG(st.st_mode) else None
            target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
            found[str(path.relative_to(root))] = (kind, size, target, st.st_mtime_ns
                                                  if stat.S_ISREG(st.st_mode) else None)
    return found


def test_tree_matches_source(dataset: dict, mnt: Path) -> None:
    assert tree_listing(mnt) == tree_listing(dataset["src"])


def test_modes_have_no_write_bits(dataset: dict, mnt: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(mnt):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if not stat.S_ISLNK(st.st_mode):
                assert st.st_mode & 0o222 == 0, name
    src_mode = (dataset["src"] / "exec.sh").stat().st_mode & 0o777
    assert (mnt / "exec.sh").stat().st_mode & 0o777 == src_mode & ~0o222
    assert os.access(mnt / "exec.sh", os.X_OK)


def test_tools_cp_diff_tar_find_ls_stat(dataset: dict, mnt: Path, tmp_path: Path) -> None:
    src = dataset["src"]
    subprocess.run(["cp", "-r", str(mnt), str(tmp_path / "copy")], check=True)
    subprocess.run(["diff", "-r", "--no-dereference", str(src), str(tmp_path / "copy")],
                   check=True)
    subprocess.run(["diff", "-r", "--no-dereference", str(src), str(mnt)], check=True)
    ls = subprocess.run(["ls", "-lR", str(mnt)], capture_output=True, text=True, check=True)
    assert "big.bin" in ls.stdout and "-> exec.sh" in ls.stdout
    found = subprocess.run(["find", str(mnt), "-type", "f"], capture_output=True, text=True,
                           check=True).stdout.split("\n")
    expected = subprocess.run(["find", str(src), "-type", "f"], capture_output=True,
                              text=True, check=True).stdout.split("\n")
    assert sorted(p.replace(str(mnt), "") for p in found) == sorted(
        p.replace(str(src), "") for p in expected)
    st = subprocess.run(["stat", "-c", "%s %F", str(mnt / "big.bin")], capture_output=True,
                        text=True, check=True).stdout.strip()
    assert st == f"{(src / 'big.bin').stat().st_size} regular file"
    tar = subprocess.run(["tar", "cf", str(tmp_path / "t.tar"), "-C", str(mnt), "."],
                         capture_output=True)
    assert tar.returncode == 0, tar.stderr
    with tarfile.open(tmp_path / "t.tar") as tf:
        member = tf.extractfile("./exec.sh")
        assert member is not None and member.read() == (src / "exec.sh").read_bytes()
    cat = subprocess.run(["cat", str(mnt / "link")], capture_output=True, check=True)
    assert cat.stdout == (src / "exec.sh").read_bytes()


def test_python_open_seek_mmap(dataset: dict, mnt: Path) -> None:
    data = (dataset["src"] / "big.bin").read_bytes()
    with open(mnt / "big.bin", "rb") as f:
        f.seek(8 * 1024 * 1024 - 10)  # across a chunk boundary
        assert f.read(20) == data[8 * 1024 * 1024 - 10 : 8 * 1024 * 1024 + 10]
        f.seek(len(data) - 3)
        assert f.read(100) == data[-3:]
        assert f.read(100) == b""
        with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
            assert m[:1000] == data[:1000]
            assert hashlib.sha256(m).digest() == hashlib.sha256(data).digest()
    assert (mnt / "zero.bin").read_bytes() == b""


def test_eight_parallel_readers(dataset: dict, mnt: Path) -> None:
    src = dataset["src"]
    paths = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file()
                   and not p.is_symlink())
    errors: list[str] = []

    def reader(k: int) -> None:
        for rel in paths[k::2] + [Path("big.bin")]:
            if (mnt / rel).read_bytes() != (src / rel).read_bytes():
                errors.append(str(rel))

    threads = [threading.Thread(target=reader, args=(k % 2,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_inodes_stable(mnt: Path) -> None:
    before = {p: os.lstat(p).st_ino for p in (mnt / "big.bin", mnt / "d1", mnt / "link")}
    with open("/proc/sys/vm/drop_caches", "w") as f:  # the kernel forgets its inodes
        f.write("2")
    after = {p: os.lstat(p).st_ino for p in before}
    assert before == after
    assert len(set(before.values())) == 3
    assert os.stat(mnt).st_ino == 1


def test_statfs(mnt: Path, dataset: dict) -> None:
    st = os.statvfs(mnt)
    assert st.f_bavail == 0 and st.f_ffree == 0
    assert st.f_blocks * st.f_frsize >= (dataset["src"] / "big.bin").stat().st_size
    assert st.f_namemax == 255


def read_fd(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 10)
    finally:
        os.close(fd)


def touch_open(path: Path, mode: str = "rb") -> None:
    with open(path, mode):
        pass


@pytest.mark.parametrize("action, code", [
    (lambda m: touch_open(m / "new", "w"), errno.EROFS),
    (lambda m: touch_open(m / "exec.sh", "r+b"), errno.EROFS),
    (lambda m: touch_open(m / "exec.sh", "ab"), errno.EROFS),
    (lambda m: os.truncate(m / "exec.sh", 0), errno.EROFS),
    (lambda m: os.mkdir(m / "newdir"), errno.EROFS),
    (lambda m: os.rmdir(m / "empty dir"), errno.EROFS),
    (lambda m: os.unlink(m / "exec.sh"), errno.EROFS),
    (lambda m: os.rename(m / "exec.sh", m / "x.sh"), errno.EROFS),
    (lambda m: os.symlink("x", m / "newlink"), errno.EROFS),
    (lambda m: os.link(m / "exec.sh", m / "hard"), errno.EROFS),
    (lambda m: os.chmod(m / "exec.sh", 0o777), errno.EROFS),
    (lambda m: os.utime(m / "exec.sh", (1, 1)), errno.EROFS),
    (lambda m: os.setxattr(m / "exec.sh", "user.x", b"1"), errno.EROFS),
    (lambda m: os.removexattr(m / "exec.sh", "user.x"), errno.EROFS),
    (lambda m: os.mknod(m / "fifo", 0o600 | stat.S_IFIFO), errno.EROFS),
    (lambda m: os.stat(m / "missing"), errno.ENOENT),
    (lambda m: touch_open(m / "d1" / "missing"), errno.ENOENT),
    (lambda m: os.listdir(m / "exec.sh"), errno.ENOTDIR),
    (lambda m: os.stat(m / "exec.sh" / "x"), errno.ENOTDIR),
    (lambda m: read_fd(m / "d1"), errno.EISDIR),
    (lambda m: os.readlink(m / "exec.sh"), errno.EINVAL),
    (lambda m: os.getxattr(m / "exec.sh", "user.nothing"), errno.ENODATA),
])
def test_errno(mnt: Path, action, code: int) -> None:
    with pytest.raises(OSError) as info:
        action(mnt)
    assert info.value.errno == code, info.value


def test_listxattr_is_empty(mnt: Path) -> None:
    assert os.listxattr(mnt / "exec.sh") == []


def test_same_version_mounted_twice(dataset: dict, mnt: Path, tmp_path: Path) -> None:
    with mounted(dataset["env"], dataset["id"], tmp_path / "second"):
        assert (tmp_path / "second" / "big.bin").read_bytes() == (mnt / "big.bin").read_bytes()
        listed = run(dataset["env"], "mounts", "--json", check=True).stdout
        assert str(tmp_path / "second") in listed and str(mnt) in listed


def test_daemon_returns_when_ready_and_umount(dataset: dict, tmp_path: Path) -> None:
    env = dataset["env"]
    mp = tmp_path / "daemon"
    mp.mkdir()
    out = run(env, "mount", dataset["id"][:8], str(mp), check=True)
    try:
        assert "mounted proj/ds" in out.stdout and str(mp) in out.stdout
        assert is_mounted(mp)
        assert (mp / "exec.sh").read_bytes() == (dataset["src"] / "exec.sh").read_bytes()
        listed = run(env, "mounts", check=True).stdout
        assert str(mp) in listed and dataset["id"] in listed and "proj/ds" in listed
        out = run(env, "umount", str(mp), check=True)
        assert not is_mounted(mp)
    finally:
        if is_mounted(mp):
            subprocess.run(["fusermount3", "-u", "-z", str(mp)])
    log = next((Path(env["DSFS_DATA_DIR"]) / "mounts").glob("daemon-*.log")).read_text()
    assert "mounted proj/ds" in log and "Traceback" not in log


def test_mount_by_name_and_parent_chain(dataset: dict, tmp_path: Path) -> None:
    """A child version: its own delta over its parent's tree, through the mount."""
    env = dataset["env"]
    src2 = tmp_path / "src2"
    subprocess.run(["cp", "-a", str(dataset["src"]), str(src2)], check=True)
    (src2 / "exec.sh").write_text("changed\n")
    subprocess.run(["rm", "-r", str(src2 / "d2")], check=True)
    (src2 / "added").mkdir()
    (src2 / "added" / "new.txt").write_text("new\n")
    run(env, "sync", str(src2), "-p", "proj", "-n", "ds", check=True)
    with mounted(env, "proj/ds@1.0.1", tmp_path / "m2") as _proc:
        subprocess.run(["diff", "-r", "--no-dereference", str(src2), str(tmp_path / "m2")],
                       check=True)
    with mounted(env, "proj/ds@1.0.0", tmp_path / "m1"):
        assert (tmp_path / "m1" / "d2").is_dir()
        assert (tmp_path / "m1" / "exec.sh").read_text().startswith("#!")


def test_traceback_in_mount_log_fails_the_test() -> None:
    assert_clean_log("INFO mounted\n")
    with pytest.raises(AssertionError, match="traceback"):
        assert_clean_log("ERROR x\nTraceback (most recent call last):\n  boom\n")
