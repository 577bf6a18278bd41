"""A mount survives what goes wrong around it (issue 10), tested with real faults.

* The disks under the cache and under the overlay die (an ext4 image on a
  loop device, shut down with ``EXT4_IOC_SHUTDOWN``: every later I/O is EIO):
  the background tasks (journal fsync and retired data files, access-time
  flushes into LMDB, cache eviction) log one line and retry, the mount keeps
  answering, and each request that needs the dead disk gets an errno.
* The mount process runs out of file descriptors (``prlimit``): the control
  socket's ``accept`` fails, the mount keeps serving and answers the waiting
  ``dsfs status`` once descriptors are back.
* The state file cannot be written after the kernel mounted: ``dsfs mount``
  fails and leaves no mount without a server.
* The overlay's disk is full (a small tmpfs): writes answer ENOSPC, the log
  holds one line per failure and never the bytes written; removing a file
  makes room again.  EFBIG and ENAMETOOLONG on the same mount.

Every mount's log is checked for tracebacks on the way out (``mounted``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_mount_support import DSFS, force_unmount, is_mounted, mounted, needs_fuse, run

pytestmark = needs_fuse

#: ``_IOR('X', 125, __u32)``; flag 2 = EXT4_GOING_FLAGS_NOLOGFLUSH (like pulling the disk)
EXT4_IOC_SHUTDOWN = 0x8004587D
SECRET = b"TOP-SECRET-PAYLOAD-"


def _root_or_skip() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (mounts a tmpfs or a loop device)")


@contextlib.contextmanager
def loop_disk(where: Path, size_mb: int = 64) -> Iterator[Path]:
    """A fresh ext4 file system on a loop device, mounted at ``where``."""
    _root_or_skip()
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 is not installed")
    image = where.with_name(where.name + ".img")
    with open(image, "wb") as f:
        f.truncate(size_mb << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-o", "loop", str(image), str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a loop device: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
        image.unlink(missing_ok=True)


def shut_down(disk: Path) -> None:
    """Every later I/O on the file system at ``disk`` fails with EIO."""
    fd = os.open(disk, os.O_RDONLY)
    try:
        assert os.fstat(fd).st_dev != os.stat("/").st_dev
        fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", 2))
    finally:
        os.close(fd)


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    _root_or_skip()
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("robust")
    env = {"DSFS_DATA_DIR": str(base / "data"), "DSFS_CACHE_DIR": str(base / "cache"),
           "DSFS_STORE": str(base / "store")}
    src = base / "src"
    (src / "dir").mkdir(parents=True)
    for i in range(6):
        (src / "dir" / f"f{i}.bin").write_bytes(os.urandom(50_000 + i))
    (src / "small.txt").write_text("small\n")
    run(env, "sync", str(src), "-p", "proj", "-n", "robust", check=True)
    found = json.loads(run(env, "search", "--json", check=True).stdout)
    return {"env": env, "src": src, "base": base, "id": found[0]["id"]}


def errno_of(action) -> int:  # type: ignore[no-untyped-def]
    try:
        action()
    except OSError as exc:
        return int(exc.errno or 0)
    return 0


def log_text(mountpoint: Path) -> str:
    return (mountpoint.parent / f"{mountpoint.name}.stderr").read_text()


def wait_for(predicate, timeout: float = 60) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


# -- background tasks ------------------------------------------------------------------------


def test_dead_disks_under_cache_and_overlay_do_not_end_the_mount(
        dataset: dict, tmp_path: Path) -> None:
    with loop_disk(tmp_path / "cachedisk") as cache, \
            loop_disk(tmp_path / "overlaydisk") as overlay:
        env = {**dataset["env"], "DSFS_CACHE_DIR": str(cache / "cache")}
        mnt = tmp_path / "mnt"
        with mounted(env, dataset["id"], mnt, "--writable", "--overlay",
                     str(overlay / "ov")) as proc:
            src = dataset["src"]
            assert (mnt / "dir" / "f0.bin").read_bytes() == (src / "dir" / "f0.bin").read_bytes()
            with open(mnt / "open-then-unlinked", "wb") as f:
                f.write(b"x" * 1000)
                f.flush()
                os.unlink(mnt / "open-then-unlinked")
                # its data file is deleted once the journal is durable: by the
                # background task, after the disks are gone
                shut_down(cache)
                shut_down(overlay)
            # both chores have run on the dead disks: a journal tick (1 s) and a
            # reader tick (5 s), later on a busy machine, so wait for what they log
            assert wait_for(lambda: all(line in log_text(mnt) for line in CHORE_FAILURES),
                            timeout=120), log_text(mnt)
            assert proc.poll() is None, log_text(mnt)
            assert is_mounted(mnt)
            # the mount answers; what needs a dead disk gets EIO, nothing hangs
            assert sorted(os.listdir(mnt / "dir")) == [f"f{i}.bin" for i in range(6)]
            assert errno_of(lambda: (mnt / "dir" / "f5.bin").read_bytes()) == errno.EIO
            assert errno_of(lambda: (mnt / "new.txt").write_text("x")) == errno.EIO
            assert errno_of(lambda: os.mkdir(mnt / "newdir")) == errno.EIO
            time.sleep(2)
            assert proc.poll() is None, log_text(mnt)
        text = log_text(mnt)
        # one line a failure, not one a second: retries back off
        assert text.count("making the overlay journal durable failed") <= 2, text


#: What the background tasks log when the disks under them are dead.
CHORE_FAILURES = ("making the overlay journal durable failed",
                  "recording chunk access times failed")


def _lowest_free_fd(pid: int) -> int:
    used = {int(n) for n in os.listdir(f"/proc/{pid}/fd")}
    fd = 0
    while fd in used:
        fd += 1
    return fd


def test_control_socket_without_file_descriptors(dataset: dict, tmp_path: Path) -> None:
    _root_or_skip()  # limits of another process
    mnt = tmp_path / "mnt"
    env = dataset["env"]
    with mounted(env, dataset["id"], mnt, "--writable", "--overlay",
                 str(tmp_path / "ov")) as proc:
        (mnt / "edit.txt").write_text("edit\n")
        time.sleep(0.5)  # the kernel's release of edit.txt closes a descriptor
        soft, hard = resource.prlimit(proc.pid, resource.RLIMIT_NOFILE)
        resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (_lowest_free_fd(proc.pid), hard))
        client = subprocess.Popen([DSFS, "status", "--json", str(mnt)],
                                  env={**os.environ, **env}, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        # accept fails meanwhile (EMFILE); wait for the log line rather than a fixed
        # time, since the client's start-up alone can take seconds on a loaded machine
        deadline = time.monotonic() + 60
        while ("accepting on the control socket failed" not in log_text(mnt)
               and time.monotonic() < deadline):
            time.sleep(0.1)
        assert proc.poll() is None, log_text(mnt)
        assert "edit.txt" in os.listdir(mnt)  # still serving
        # an open that needs a descriptor gets the mount process's own EMFILE
        assert errno_of(lambda: (mnt / "edit.txt").read_text()) in (0, errno.EMFILE)
        resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (soft, hard))
        out, err = client.communicate(timeout=30)
        # answered once accepted: its result, or a clean error if the status itself
        # ran out of descriptors before they were back
        assert client.returncode in (0, 12), out + err
        again = run(env, "status", "--json", str(mnt))
        assert again.returncode == 0, again.stdout + again.stderr
        assert "edit.txt" in again.stdout
        assert proc.poll() is None
    assert "accepting on the control socket failed" in log_text(mnt)


# -- the state file --------------------------------------------------------------------------


def test_state_file_failure_leaves_no_mount(dataset: dict, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = dataset["env"]
    key = subprocess.run(
        [sys.executable, "-c",
         "import sys; from dsfs.mount import table; print(table.state_path(sys.argv[1]))",
         str(mnt)], env={**os.environ, **env}, capture_output=True, text=True, check=True)
    state = Path(key.stdout.strip())
    state.mkdir(parents=True)  # a directory where the state file goes: it cannot be written
    try:
        result = run(env, "mount", dataset["id"], str(mnt), timeout=60)
        mounted_after = is_mounted(mnt)
        assert result.returncode != 0, result.stdout + result.stderr
        assert not mounted_after, "a kernel mount was left without a server"
        assert "state" in result.stderr, result.stderr
    finally:
        force_unmount(mnt)
        state.rmdir()


# -- a full disk, EFBIG, ENAMETOOLONG ----------------------------------------------------------


def test_full_overlay_disk_is_enospc_and_the_log_holds_no_data(
        dataset: dict, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "4m") as small:
        mnt = tmp_path / "mnt"
        with mounted(dataset["env"], dataset["id"], mnt, "--writable", "--overlay",
                     str(small / "ov")) as proc:
            fill = subprocess.run(["dd", "if=/dev/zero", f"of={mnt / 'fill'}", "bs=1M",
                                   "count=16"], capture_output=True, text=True)
            assert fill.returncode != 0 and "No space left" in fill.stderr, fill.stderr
            with open(mnt / "secret.txt", "wb", buffering=0) as f:
                code = errno_of(lambda: [f.write(SECRET * 4096) for _ in range(256)])
            assert code == errno.ENOSPC
            assert errno_of(lambda: os.truncate(mnt / "dir" / "f1.bin", 64 << 20)) in (
                0, errno.ENOSPC)  # sparse on tmpfs: may fit
            os.unlink(mnt / "fill")
            os.unlink(mnt / "secret.txt")
            assert wait_for(lambda: errno_of(
                lambda: (mnt / "after.txt").write_bytes(b"y" * 100_000)) == 0)
            assert (mnt / "after.txt").stat().st_size == 100_000
            assert proc.poll() is None
        text = log_text(mnt)
        assert SECRET.decode() not in text
        assert "No space left on device" in text


def test_efbig_and_enametoolong_on_a_real_mount(dataset: dict, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    with mounted(dataset["env"], dataset["id"], mnt, "--writable", "--overlay",
                 str(tmp_path / "ov")):
        (mnt / "f").write_text("x")
        # the overlay is on ext4 (16 TiB files at most): the kernel lets FUSE ask
        assert errno_of(lambda: os.truncate(mnt / "f", 1 << 62)) == errno.EFBIG
        assert errno_of(lambda: os.truncate(mnt / "small.txt", 1 << 62)) == errno.EFBIG
        long = "n" * 256
        assert errno_of(lambda: os.stat(mnt / long)) == errno.ENAMETOOLONG
        assert errno_of(lambda: (mnt / long).write_text("x")) == errno.ENAMETOOLONG
        assert errno_of(lambda: os.mkdir(mnt / "dir" / long)) == errno.ENAMETOOLONG
        assert errno_of(lambda: os.rename(mnt / "f", mnt / long)) == errno.ENAMETOOLONG
        (mnt / ("n" * 255)).write_text("fine")
        assert (mnt / "f").read_text() == "x"
