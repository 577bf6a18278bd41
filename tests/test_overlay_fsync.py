"""What an fsync of the writable mount costs, counted with strace on a real mount.

fsx-style work (a write, a truncate or a mapped write, each followed by
fdatasync or msync) must cost one fdatasync of the data file per request, as
on fuse-overlayfs: no journal fsync when no record was appended since the
last one (a write or a truncate of a changed file appends none: the data file
holds its size and mtime), no fsync of ``data/`` when no data file was made.
A full ``fsync`` of the file is an fsync (its mtime too), and a change that
did append a record (chmod) is followed by one journal fsync.  The truncate
that appends no record is kept across a ``kill -9`` and a remount.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_mount_support import is_mounted, mounted, needs_fuse, run

pytestmark = [needs_fuse,
              pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")]

#: A call as strace -f logs it: whole, or its first half when another thread's
#: call came in between ("<unfinished ...>"; its "<... resumed>" half names no file).
_CALL = re.compile(r'^(?:\[pid\s+\d+\]\s+|\d+\s+)?(\w+)\((\d+)<([^>]*)>(?:.*\)\s+=\s+0|'
                   r' <unfinished \.\.\.>)')
ROUNDS = 8


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("fsync")
    env = {"DSFS_DATA_DIR": str(base / "data"), "DSFS_CACHE_DIR": str(base / "cache"),
           "DSFS_STORE": str(base / "store")}
    src = base / "src"
    src.mkdir()
    (src / "f.bin").write_bytes(os.urandom(200_000))
    run(env, "sync", str(src), "-p", "proj", "-n", "fsync", check=True)
    rows = json.loads(run(env, "search", "--json", check=True).stdout)
    return {"env": env, "src": src, "base": base, "id": rows[0]["id"]}


class Traced:
    """strace attached to the mount process: the fsync-family calls it made."""

    def __init__(self, pid: int, log: Path) -> None:
        self.log = log
        self.skip = 0  # calls before this many lines are not counted (``settle``)
        self.proc = subprocess.Popen(
            ["strace", "-f", "-qq", "-y", "-o", str(log), "-e", "trace=fsync,fdatasync,syncfs",
             "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        # strace writes nothing until a call: wait until it has attached
        while not self._attached(pid):
            assert time.monotonic() < deadline, "strace did not attach"
            time.sleep(0.02)

    @staticmethod
    def _attached(pid: int) -> bool:
        for task in os.listdir(f"/proc/{pid}/task"):
            status = Path(f"/proc/{pid}/task/{task}/status").read_text()
            if "TracerPid:\t0\n" in status:
                return False
        return True

    def _lines(self) -> list[str]:
        text = self.log.read_text()
        return text[:text.rfind("\n") + 1].splitlines()  # whole lines only

    def settle(self) -> None:
        """Wait until the mount's first data file and its spares are made
        durable, then count only the calls after them.  The first change makes
        a data file on the spot (its name is fsynced with the journal) and
        starts the thread that makes ``SPARES`` spares ahead, in batches of
        ``SPARE_BATCH``, each followed by an fsync of ``data/``; that thread
        may still be at work after the request returned (on a busy machine,
        for long), and its fsyncs are not the requests' cost."""
        from dsfs.overlay.upper import SPARE_BATCH, SPARES

        expected = 1 + SPARES // SPARE_BATCH
        deadline = time.monotonic() + 120
        while True:
            lines = self._lines()
            made = [line for line in lines if (m := _CALL.match(line))
                    and (m.group(1), kind_of(m.group(3))) == ("fsync", "data-dir")]
            if len(made) >= expected:
                break
            assert time.monotonic() < deadline, ("the spares were not made", lines)
            time.sleep(0.02)
        self.skip = len(lines)

    def calls(self) -> list[tuple[str, str]]:
        """(syscall, path of its descriptor) since ``settle``: strace stopped first."""
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=10)
        out = []
        for line in self.log.read_text().splitlines()[self.skip:]:
            match = _CALL.match(line)
            if match:
                out.append((match.group(1), match.group(3)))
        return out


def kind_of(path: str) -> str:
    name = os.path.basename(path)
    if name.startswith("journal."):
        return "journal"
    if os.path.basename(os.path.dirname(path)) == "data" and "/overlay" in path:
        return "data-file"
    if name == "data":
        return "data-dir"
    return path


@pytest.fixture
def mount(dataset: dict, tmp_path: Path) -> Iterator[tuple[Path, int]]:
    mnt = tmp_path / "mnt"
    with mounted(dataset["env"], dataset["id"], mnt, "--writable", "--overlay",
                 str(tmp_path / "overlay")) as proc:
        yield mnt, proc.pid


def test_fsx_style_requests_cost_one_fdatasync_each(mount: tuple[Path, int],
                                                      tmp_path: Path) -> None:
    mnt, pid = mount
    fd = os.open(mnt / "f.bin", os.O_RDWR)
    try:
        trace = Traced(pid, tmp_path / "strace.log")
        os.pwrite(fd, b"copy up", 10)  # the first change records the data file
        os.fsync(fd)
        trace.settle()
        for i in range(ROUNDS):
            os.pwrite(fd, b"w" * 100, 1000 * i)
            os.fdatasync(fd)
            os.ftruncate(fd, 150_000 + 7000 * i)  # down and up
            os.fdatasync(fd)
            with mmap.mmap(fd, 8192) as m:
                m[100 * i:100 * i + 10] = b"m" * 10
                m.flush()  # msync: an fsync request with datasync set
        calls = trace.calls()
    finally:
        os.close(fd)
    counted = Counter((name, kind_of(path)) for name, path in calls)
    # exactly one fdatasync of the data file per request, nothing else
    assert counted == Counter({("fdatasync", "data-file"): 3 * ROUNDS}), counted


def test_fsync_after_a_recorded_change_syncs_the_journal_once(mount: tuple[Path, int],
                                                              tmp_path: Path) -> None:
    mnt, pid = mount
    fd = os.open(mnt / "f.bin", os.O_RDWR)
    try:
        trace = Traced(pid, tmp_path / "strace.log")
        os.pwrite(fd, b"copy up", 10)
        os.fsync(fd)
        trace.settle()
        os.pwrite(fd, b"x", 5)
        os.fsync(fd)  # a full fsync: the data file's mtime too, no journal
        os.fchmod(fd, 0o600)  # a record
        os.fsync(fd)
        os.fsync(fd)  # nothing new: the data file only
        calls = trace.calls()
    finally:
        os.close(fd)
    kinds = [(name, kind_of(path)) for name, path in calls]
    # the background sync may fsync the journal before the second request does
    assert kinds.count(("fsync", "journal")) == 1, kinds
    assert kinds.count(("fsync", "data-file")) == 3, kinds
    assert len(kinds) == 4, kinds


def test_a_truncate_without_a_record_survives_kill_9(dataset: dict, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    overlay = tmp_path / "overlay"
    args = ("--writable", "--overlay", str(overlay))
    original = (dataset["src"] / "f.bin").read_bytes()
    with mounted(dataset["env"], dataset["id"], mnt, *args) as proc:
        with open(mnt / "f.bin", "r+b") as f:
            f.write(b"head")
            f.flush()
            os.fsync(f.fileno())
            journal = sorted(overlay.glob("journal.*"))[-1]
            records = journal.read_bytes().rstrip(b"\0").count(b"\n")
            os.ftruncate(f.fileno(), 1234)
            os.ftruncate(f.fileno(), 5000)  # up again: zeros after byte 1234
            shown = os.fstat(f.fileno())
        # no record was appended for either truncate
        assert journal.read_bytes().rstrip(b"\0").count(b"\n") == records
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        run(dataset["env"], "umount", str(mnt))
    assert not is_mounted(mnt)
    with mounted(dataset["env"], dataset["id"], mnt, *args):
        expected = b"head" + original[4:1234] + bytes(5000 - 1234)
        assert (mnt / "f.bin").read_bytes() == expected
        st = os.stat(mnt / "f.bin")
        assert (st.st_size, st.st_mtime_ns) == (5000, shown.st_mtime_ns)
        assert st.st_ctime_ns == shown.st_ctime_ns
        status = json.loads(run(dataset["env"], "status", "--json", str(mnt),
                                check=True).stdout)
        assert status["modified"] == [{"path": "f.bin", "kind": "file"}], status
