"""Helpers for the real-mount tests (no tests here).

``mounted()`` mounts a version with ``dsfs mount --foreground`` as a child
process, waits for the kernel's mount table to show it while checking that
the process is alive, yields, then unmounts: ``fusermount3 -u``, then ``-z``,
then terminate, then kill.  On the way out it fails the test if the mount
process logged a traceback, so errors inside the mount are not silent.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

DSFS = str(Path(sys.executable).with_name("dsfs"))


def fuse_skip_reason() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    try:
        import pyfuse3  # noqa: F401
        import trio  # noqa: F401
    except ImportError as exc:
        return f"pyfuse3/trio not installed ({exc})"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed"
    try:
        fd = os.open("/dev/fuse", os.O_RDWR)
        os.close(fd)
    except OSError as exc:
        return f"/dev/fuse cannot be opened ({exc})"
    return None


needs_fuse = pytest.mark.skipif(fuse_skip_reason() is not None,
                                reason=fuse_skip_reason() or "")


def mountinfo() -> list[tuple[str, str]]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            out.append((left.split()[4], right.split()[0]))
    return out


def is_mounted(path: Path | str) -> bool:
    return any(mp == str(path) for mp, _ in mountinfo())


def run(env: dict[str, str], *args: str, check: bool = False, timeout: float = 120
        ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([DSFS, *args], capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=timeout)
    if check:
        assert result.returncode == 0, result.stderr + result.stdout
    return result


def force_unmount(path: Path | str, pid: int | None = None) -> None:
    """Unmount at any cost: -u, then -z, then kill the process."""
    for flags in (["-u"], ["-u", "-z"]):
        if not is_mounted(path):
            break
        subprocess.run(["fusermount3", *flags, str(path)], capture_output=True, timeout=30)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 15)


def assert_clean_log(text: str) -> None:
    assert "Traceback" not in text, f"the mount process logged a traceback:\n{text}"


@contextlib.contextmanager
def mounted(env: dict[str, str], ref: str, mountpoint: Path, *extra: str,
            timeout: float = 120, check_log: bool = True) -> Iterator[subprocess.Popen]:
    mountpoint.mkdir(parents=True, exist_ok=True)
    log_file = mountpoint.parent / f"{mountpoint.name}.stderr"
    with open(log_file, "wb") as err:
        proc = subprocess.Popen([DSFS, "mount", "--foreground", *extra, ref, str(mountpoint)],
                                env={**os.environ, **env}, stdout=err, stderr=err)
    try:
        deadline = time.monotonic() + timeout
        while not is_mounted(mountpoint):
            if proc.poll() is not None:
                pytest.fail(f"mount process exited ({proc.returncode}):\n"
                            + log_file.read_text())
            if time.monotonic() > deadline:
                pytest.fail("mount did not appear in time:\n" + log_file.read_text())
            time.sleep(0.02)
        yield proc
    finally:
        force_unmount(mountpoint)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        force_unmount(mountpoint)
    assert not is_mounted(mountpoint)
    if check_log:
        assert_clean_log(log_file.read_text())


def make_source(root: Path) -> None:
    """A tree with every kind of entry the mount must show."""
    from conftest import make_tree

    make_tree(root, files=60, size=70_000)
    (root / "empty dir").mkdir()
    (root / "naïve name ünïcode.txt").write_text("unicode\n")
    (root / "exec.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "exec.sh").chmod(0o755)
    (root / "link").symlink_to("exec.sh")
    (root / "dangling").symlink_to("nowhere/at/all")
    (root / "big.bin").write_bytes(os.urandom(20 << 20) + b"tail")  # three chunks
    (root / "zero.bin").write_bytes(b"")


def mount_row(env: dict[str, str], mountpoint: Path | str) -> dict | None:
    """The ``dsfs mounts --json`` row of one mount point (other tests, or other
    test runs on the same machine, may have mounts of their own)."""
    rows = json.loads(run(env, "mounts", "--json", check=True).stdout)
    return next((r for r in rows if r["mountpoint"] == str(mountpoint)), None)
