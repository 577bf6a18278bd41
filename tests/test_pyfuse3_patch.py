"""The pyfuse3 patch that packaging/ builds (packaging/pyfuse3/), tested through
a real mount of a tiny counting file system (``tests/pyfuse3_probe.py``):
the read-first session loop (a handler that suspends never stalls the others,
other trio tasks keep running under a flood, unmount and terminate end it),
the inode in place of a handle after ``open``/``opendir`` answered ENOSYS,
clearing ATOMIC_O_TRUNC, ``cache_readdir`` on opendir and the readdirplus
modes.  Skipped with stock pyfuse3 (the dsfs tests of the mount run with both).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_mount_support import force_unmount, fuse_skip_reason, is_mounted

PROBE = str(Path(__file__).with_name("pyfuse3_probe.py"))


def _patched() -> bool:
    try:
        import pyfuse3
    except ImportError:
        return False
    return "read_first_loop" in getattr(pyfuse3, "extensions", frozenset())


pytestmark = [
    pytest.mark.skipif(fuse_skip_reason() is not None, reason=fuse_skip_reason() or ""),
    pytest.mark.skipif(not _patched(), reason="stock pyfuse3: the patch is not installed"),
]


class Probe:
    def __init__(self, root: Path, pid: int) -> None:
        self.root = root
        self.pid = pid

    def cpu_seconds(self) -> float:
        """CPU time the probe process has used (user and system, all threads)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stats(self) -> dict:
        with open(self.root / "stats", "rb") as f:
            return json.loads(f.read())

    def calls(self) -> dict[str, int]:
        return self.stats()["calls"]


@contextlib.contextmanager
def probe(tmp_path: Path, *options: str) -> Iterator[Probe]:
    mnt = tmp_path / "mnt"
    mnt.mkdir(exist_ok=True)
    err = tmp_path / "probe.stderr"
    with open(err, "wb") as out:
        proc = subprocess.Popen([sys.executable, PROBE, str(mnt), *options],
                                stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while not is_mounted(mnt):
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline, "the probe did not mount"
            time.sleep(0.02)
        yield Probe(mnt, proc.pid)
        # an unmount ends pyfuse3.main(): the process exits on its own
        subprocess.run(["fusermount3", "-u", str(mnt)], check=True, timeout=30)
        assert proc.wait(timeout=20) == 0, err.read_text()
    finally:
        force_unmount(mnt, proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    text = err.read_text()
    assert "main returned" in text and "Traceback" not in text, text


@pytest.mark.parametrize("loop", ["trio", "asyncio"])
def test_a_suspended_handler_does_not_stall_the_others(tmp_path: Path, loop: str) -> None:
    with probe(tmp_path, *(["--asyncio"] if loop == "asyncio" else [])) as p:
        result: list[bytes] = []
        reader = threading.Thread(target=lambda: result.append((p.root / "slow").read_bytes()))
        reader.start()
        # the probe counts a read as it enters the handler, which then waits for /go
        deadline = time.monotonic() + 60
        while not p.calls().get("read"):
            assert time.monotonic() < deadline, "the read never reached its handler"
            time.sleep(0.02)
        assert not result  # the read waits inside its handler ...
        # ... while other requests are answered, among them the one it waits for
        assert sorted(os.listdir(p.root / "dir")) == ["f1", "f2", "f3"]
        assert (p.root / "dir" / "f2").read_bytes() == b"two"
        assert (p.root / "go").exists()
        reader.join(timeout=10)
        assert result == [b"done"]


@pytest.mark.parametrize("loop", ["trio", "asyncio"])
def test_an_error_after_a_suspension_reaches_the_caller(tmp_path: Path, loop: str) -> None:
    """A handler that returns at once is answered from its FUSE callback; one
    that suspends first is finished by the loop, FUSEError included."""
    with probe(tmp_path, *(["--asyncio"] if loop == "asyncio" else [])) as p:
        errors: list[BaseException] = []

        def stat_late() -> None:
            for _ in range(3):
                try:
                    os.stat(p.root / "late")
                except OSError as e:
                    errors.append(e)

        caller = threading.Thread(target=stat_late, daemon=True)
        caller.start()
        caller.join(timeout=20)  # an unanswered request would hang it
        assert [type(e) for e in errors] == [FileNotFoundError] * 3, errors
        assert (p.root / "dir" / "f1").read_bytes() == b"one"
        assert p.calls()["lookup"] >= 5  # late three times, dir and f1 once


@pytest.mark.parametrize("name", ["boom", "lateboom"])
def test_an_exception_that_is_no_fuse_error_ends_main(tmp_path: Path, name: str) -> None:
    """As with stock pyfuse3: the exception comes out of main() (the probe
    prints it and exits 1) whether the handler raised it at once or after a
    suspension; the caller gets an error, not a hang."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.Popen([sys.executable, PROBE, str(mnt)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not is_mounted(mnt):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        assert (mnt / "dir" / "f3").read_bytes() == b"three"
        failed: list[BaseException] = []

        def stat() -> None:
            try:
                os.stat(mnt / name)
            except OSError as e:
                failed.append(e)

        caller = threading.Thread(target=stat, daemon=True)
        caller.start()
        caller.join(timeout=20)
        assert failed, "the stat did not fail (or hangs: the request was never answered)"
        assert proc.wait(timeout=20) == 1
        out = proc.stdout.read().decode() if proc.stdout else ""
        assert f"RuntimeError: the probe's b'{name}' handler failed" in out, out
    finally:
        force_unmount(mnt, proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


def test_other_tasks_run_under_a_flood_of_requests(tmp_path: Path) -> None:
    """Lookups of missing names are not cached, so each is a request; eight
    threads keep the device busy; the trio task that sleeps 1 ms still runs
    (the loop checkpoints every ``yield_every`` requests).  The ticks are
    counted against the CPU time the probe used, not the wall clock: on a
    loaded machine the probe may get a fraction of a core, and while it does
    not run neither its requests nor its ticks move."""
    with probe(tmp_path, "--yield-every", "8") as p:
        before = p.stats()["ticks"]
        cpu_before = p.cpu_seconds()
        stop = time.monotonic() + 1.0
        done = [0] * 8

        def flood(i: int) -> None:
            # a second at least, and 1,200 lookups at least however slow they are
            while time.monotonic() < stop or sum(done) < 1200:
                for _ in range(50):
                    with contextlib.suppress(FileNotFoundError):
                        os.stat(p.root / f"missing{i}")
                    done[i] += 1

        threads = [threading.Thread(target=flood, args=(i,)) for i in range(8)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        ticks = p.stats()["ticks"] - before
        cpu = p.cpu_seconds() - cpu_before
        lookups = p.calls()["lookup"]
    assert lookups >= sum(done) > 1000
    # one tick per 20 ms of the probe's CPU time at the very least (1 ms is the
    # ideal; without the checkpoints the flood starves the ticker: no ticks)
    assert ticks >= cpu * 50, (ticks, cpu, elapsed, sum(done))


def test_no_open_passes_the_inode_and_truncates_by_setattr(tmp_path: Path) -> None:
    with probe(tmp_path, "--no-open", "--no-atomic-trunc") as p:
        a = p.root / "a"
        assert a.read_bytes() == b"0123456789"
        assert a.read_bytes() == b"0123456789"
        # open(O_TRUNC) then a short write: only the new bytes remain
        fd = os.open(a, os.O_WRONLY | os.O_TRUNC)
        try:
            assert os.write(fd, b"xy") == 2
        finally:
            os.close(fd)
        assert a.read_bytes() == b"xy"
        stats = p.stats()
    calls = stats["calls"]
    assert calls["open"] == 1  # answered ENOSYS once, never asked again
    assert "release" not in calls
    assert calls["setattr"] == 1  # the kernel's truncation
    # every read and write got the inode (2) in place of a handle
    assert {fh for _, fh in stats["handles"]} == {2}


def test_with_open_the_handle_is_passed(tmp_path: Path) -> None:
    with probe(tmp_path) as p:
        fd = os.open(p.root / "a", os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, b"xy")
        finally:
            os.close(fd)
        assert (p.root / "a").read_bytes() == b"xy"
        stats = p.stats()
    assert {fh for _, fh in stats["handles"]} == {102}
    assert stats["calls"]["open"] == 2 and stats["calls"]["release"] == 2
    assert "setattr" not in stats["calls"]  # ATOMIC_O_TRUNC: open truncates


@pytest.mark.parametrize("cache", [False, True])
def test_cache_readdir_on_opendir(tmp_path: Path, cache: bool) -> None:
    with probe(tmp_path, *(["--cache-readdir"] if cache else [])) as p:
        for _ in range(3):
            assert sorted(os.listdir(p.root / "dir")) == ["f1", "f2", "f3"]
        calls = p.calls()
    assert calls["opendir"] == 3
    if cache:
        assert calls["readdir"] <= 2  # the first listing only (entries, then the end)
    else:
        assert calls["readdir"] >= 3


def test_no_opendir_lists_by_inode_from_the_kernel_cache(tmp_path: Path) -> None:
    with probe(tmp_path, "--no-opendir") as p:
        for _ in range(3):
            assert sorted(os.listdir(p.root / "dir")) == ["f1", "f2", "f3"]
        calls = p.calls()
    assert calls["opendir"] == 1 and "releasedir" not in calls
    assert calls["readdir"] <= 2


@pytest.mark.parametrize("mode", ["on", "off"])
def test_readdirplus_modes(tmp_path: Path, mode: str) -> None:
    with probe(tmp_path, "--readdirplus", mode) as p:
        assert sorted(os.listdir(p.root / "dir")) == ["f1", "f2", "f3"]
        stats = p.stats()
        if mode == "off":
            # the names came without attributes: a stat looks the name up
            os.stat(p.root / "dir" / "f1")
            assert p.calls()["lookup"] == stats["calls"].get("lookup", 0) + 1
    assert set(stats["plus"]) == {mode == "on"}
