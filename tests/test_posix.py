"""POSIX behaviour of a writable mount, driven by real tools on a real mount.

Owners (``tar x`` and ``rsync -a`` as root keep them, ``chown`` follows the
usual rules for other users through ``--allow-other``), atime and ctime,
directory link counts, hard links, FIFOs, sockets and device nodes: each
survives a remount, and a commit keeps what a version can hold (contents,
modes, mtimes; a hard link as a second file), not owners nor special files
(docs/semantics.md, "Writable mounts").
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import stat
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_mount_support import mounted, needs_fuse, run

pytestmark = [needs_fuse, pytest.mark.skipif(os.geteuid() != 0,
                                             reason="owners need root (chown, tar, rsync)")]

NOBODY = 65534


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("posix")
    env = {"DSFS_DATA_DIR": str(base / "data"), "DSFS_CACHE_DIR": str(base / "cache"),
           "DSFS_STORE": str(base / "store")}
    src = base / "src"
    (src / "lower").mkdir(parents=True)
    (src / "lower" / "a.txt").write_text("lower a\n")
    run(env, "sync", str(src), "-p", "proj", "-n", "posix", check=True)
    found = json.loads(run(env, "search", "--json", check=True).stdout)
    return {"env": env, "src": src, "base": base, "id": found[0]["id"]}


def owner(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


def as_user(uid: int, *command: str) -> subprocess.CompletedProcess[str]:
    """``command`` run by ``uid`` (group ``uid``, no supplementary groups)."""

    def drop() -> None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)

    return subprocess.run(command, capture_output=True, text=True, preexec_fn=drop,
                          timeout=60)


def owned_archive(path: Path) -> None:
    """A tar of files owned by users and groups other than root."""
    with tarfile.open(path, "w") as tar:
        for name, uid, gid, mode in (("t/", 1001, 1002, 0o750), ("t/one.txt", 1001, 1002, 0o640),
                                     ("t/two.txt", 2001, 2002, 0o604)):
            info = tarfile.TarInfo(name.rstrip("/"))
            info.uid, info.gid, info.mode, info.mtime = uid, gid, mode, 1_600_000_000
            if name.endswith("/"):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                data = f"{name}\n".encode()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def public() -> Iterator[Path]:
    """A directory other users can reach (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="dsfs-posix-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_owners_tar_rsync_chown_and_commit(dataset: dict, tmp_path: Path,
                                           public: Path) -> None:
    env = dataset["env"]
    archive = tmp_path / "owned.tar"
    owned_archive(archive)
    native = tmp_path / "native"
    (native / "r").mkdir(parents=True)
    (native / "r" / "x.bin").write_bytes(b"x" * 5000)
    os.chown(native / "r" / "x.bin", 3001, 3002)
    os.chown(native / "r", 3003, 3004)
    os.utime(native / "r" / "x.bin", ns=(1_500_000_000_000_000_000, 1_500_000_000_000_000_000))
    mnt = public / "mnt"  # other users must reach it
    overlay = tmp_path / "ov"
    with mounted(env, dataset["id"], mnt, "--writable", "--allow-other", "--overlay",
                 str(overlay)):
        done = subprocess.run(["tar", "xf", str(archive), "-C", str(mnt)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert owner(mnt / "t") == (1001, 1002)
        assert owner(mnt / "t" / "two.txt") == (2001, 2002)
        assert stat.S_IMODE(os.lstat(mnt / "t" / "one.txt").st_mode) == 0o640
        done = subprocess.run(["rsync", "-a", f"{native}/", f"{mnt}/"], capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr
        assert owner(mnt / "r") == (3003, 3004)
        assert owner(mnt / "r" / "x.bin") == (3001, 3002)
        again = subprocess.run(["rsync", "-a", "-i", "-n", f"{native}/", f"{mnt}/"],
                               capture_output=True, text=True)
        assert again.stdout.strip() == "", again.stdout  # nothing left to do
        # root chowns anything; another user may not give away or take
        os.chown(mnt / "lower" / "a.txt", NOBODY, NOBODY)
        assert owner(mnt / "lower" / "a.txt") == (NOBODY, NOBODY)
        refused = as_user(NOBODY, "chown", "0", str(mnt / "lower" / "a.txt"))
        assert refused.returncode != 0 and "Operation not permitted" in refused.stderr
        refused = as_user(NOBODY, "chgrp", "0", str(mnt / "lower" / "a.txt"))
        assert refused.returncode != 0 and "Operation not permitted" in refused.stderr
        refused = as_user(NOBODY, "chown", str(NOBODY), str(mnt / "t" / "one.txt"))
        assert refused.returncode != 0
        # what a user creates is theirs (rsync -a gave the root native's mode: open it)
        os.chmod(mnt, 0o777)
        made = as_user(NOBODY, "touch", str(mnt / "by-nobody"))
        assert made.returncode == 0, made.stderr
        assert owner(mnt / "by-nobody") == (NOBODY, NOBODY)
    with mounted(env, dataset["id"], mnt, "--writable", "--overlay", str(overlay)):
        assert owner(mnt / "t" / "two.txt") == (2001, 2002)  # kept across a remount
        assert owner(mnt / "r" / "x.bin") == (3001, 3002)
        assert owner(mnt / "by-nobody") == (NOBODY, NOBODY)
        child = run(env, "commit", str(mnt), "-m", "owned", check=True).stdout.split()[-1]
        assert owner(mnt / "t" / "two.txt") == (2001, 2002)  # the overlay still shows them
    ro = tmp_path / "ro"
    with mounted(env, child, ro):
        # a version stores contents, modes and mtimes, not owners: the mounting user
        assert owner(ro / "t" / "two.txt") == (os.getuid(), os.getgid())
        assert (ro / "t" / "two.txt").read_text() == "t/two.txt\n"
        assert os.lstat(ro / "r" / "x.bin").st_mtime_ns == 1_500_000_000_000_000_000


def test_times_link_counts_and_special_files(dataset: dict, tmp_path: Path) -> None:
    env = dataset["env"]
    mnt = tmp_path / "mnt"
    overlay = tmp_path / "ov"
    with mounted(env, dataset["id"], mnt, "--writable", "--overlay", str(overlay)):
        f = mnt / "f.txt"
        f.write_text("x")
        os.utime(f, ns=(1_000_000_000_000_000_000, 1_100_000_000_000_000_000))
        st = os.lstat(f)
        assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_000_000_000_000,
                                                    1_100_000_000_000_000_000)
        assert st.st_ctime_ns > st.st_mtime_ns  # utimens changed the inode now
        time.sleep(0.01)
        os.chmod(f, 0o600)
        st2 = os.lstat(f)
        assert st2.st_ctime_ns > st.st_ctime_ns and st2.st_mtime_ns == st.st_mtime_ns
        # hard links: one inode, shared content, either name renamed or removed
        os.link(f, mnt / "f-link")
        assert os.lstat(f).st_nlink == 2
        assert os.lstat(mnt / "f-link").st_ino == os.lstat(f).st_ino
        with open(mnt / "f-link", "r+") as through:
            through.write("y")
        assert f.read_text() == "y"
        os.link(mnt / "lower" / "a.txt", mnt / "a-link")  # a file of the version
        os.rename(mnt / "a-link", mnt / "a-moved")
        assert os.lstat(mnt / "lower" / "a.txt").st_nlink == 2
        assert (mnt / "a-moved").read_text() == "lower a\n"
        os.unlink(mnt / "lower" / "a.txt")
        assert os.lstat(mnt / "a-moved").st_nlink == 1
        # directories: 2 + subdirectories
        (mnt / "d" / "a").mkdir(parents=True)
        (mnt / "d" / "b").mkdir()
        (mnt / "d" / "file").write_text("")
        assert os.lstat(mnt / "d").st_nlink == 4
        assert os.lstat(mnt / "d" / "a").st_nlink == 2
        os.rmdir(mnt / "d" / "b")
        assert os.lstat(mnt / "d").st_nlink == 3
        found = subprocess.run(["find", str(mnt / "d")], capture_output=True, text=True)
        assert sorted(found.stdout.split()) == sorted(
            str(p) for p in (mnt / "d", mnt / "d" / "a", mnt / "d" / "file"))
        # FIFOs, sockets, device nodes
        os.mkfifo(mnt / "fifo", 0o600)
        assert stat.S_ISFIFO(os.lstat(mnt / "fifo").st_mode)
        reader = subprocess.Popen(["cat", str(mnt / "fifo")], stdout=subprocess.PIPE)
        with open(mnt / "fifo", "w") as pipe:
            pipe.write("through the pipe\n")
        assert reader.communicate(timeout=10)[0] == b"through the pipe\n"
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(mnt / "sock"))
        assert stat.S_ISSOCK(os.lstat(mnt / "sock").st_mode)
        os.mknod(mnt / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        st = os.lstat(mnt / "null")
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
        with pytest.raises(PermissionError):  # the mount is nodev
            open(mnt / "null", "rb").close()
        status = json.loads(run(env, "status", "--json", str(mnt), check=True).stdout)
        listed = {e["path"] for k in ("added", "modified", "removed") for e in status[k]}
        assert "f.txt" in listed and not {"fifo", "sock", "null"} & listed
    with mounted(env, dataset["id"], mnt, "--writable", "--overlay", str(overlay)):
        assert stat.S_ISFIFO(os.lstat(mnt / "fifo").st_mode)  # kept across a remount
        assert os.lstat(mnt / "null").st_rdev == os.makedev(1, 3)
        assert os.lstat(mnt / "f.txt").st_atime_ns == 1_000_000_000_000_000_000
        assert os.lstat(mnt / "d").st_nlink == 3
        assert os.lstat(mnt / "f-link").st_nlink == 2  # still one inode
        assert os.lstat(mnt / "f-link").st_ino == os.lstat(mnt / "f.txt").st_ino
        child = run(env, "commit", str(mnt), "-m", "special", check=True).stdout.split()[-1]
        assert stat.S_ISSOCK(os.lstat(mnt / "sock").st_mode)  # still in the overlay
    ro = tmp_path / "ro"
    with mounted(env, child, ro):
        # no special files; hard links are two files with the same content
        assert sorted(os.listdir(ro)) == ["a-moved", "d", "f-link", "f.txt", "lower"]
        assert (ro / "f-link").read_text() == (ro / "f.txt").read_text() == "y"
        assert os.listdir(ro / "lower") == []
