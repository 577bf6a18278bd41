"""Repeated errors in a mount log: one line per kind per interval, with a count."""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_mount_support import mounted, needs_fuse, run

from dsfs import logutil
from dsfs.logutil import RepeatFilter


class Clock:
    """``time.monotonic`` for ``dsfs.logutil`` that moves only when told: the
    test's 1,000 records then fall in one interval however slowly a busy
    machine logs them (on the real clock a loop slower than the interval
    would let a second record of a kind through)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(logutil, "time", fake)
    return fake


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, io.StringIO, io.StringIO, RepeatFilter]]:
    log = logging.getLogger(f"test.logutil.{time.monotonic_ns()}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    first, second = io.StringIO(), io.StringIO()
    repeat = RepeatFilter(interval=3.0)
    for stream in (first, second):
        handler = logging.StreamHandler(stream)
        handler.addFilter(repeat)
        log.addHandler(handler)
    yield log, first, second, repeat
    log.handlers.clear()


def test_repeats_collapse_with_a_count(logger, clock: Clock) -> None:
    log, first, second, repeat = logger
    for i in range(1000):
        try:
            raise OSError(5, "Input/output error")
        except OSError:
            log.exception("read(%d, %d) failed", i, 4096)
        log.error(f"chunk xxh3_128:{i:032x} of pack {i * 7} is corrupt")  # f-strings too
        log.info("progress %d", i)  # below WARNING: never held back
    for stream in (first, second):  # two handlers, one decision per record
        text = stream.getvalue()
        assert text.count("read(") == 1 and text.count("Traceback") == 1
        assert text.count("is corrupt") == 1
        assert text.count("progress") == 1000
    clock.now += 3.1  # the interval is over
    log.error("read(%d, %d) failed", 1, 2)
    assert "[999 more like this in the last" in first.getvalue().splitlines()[-1]
    log.error("read(%d, %d) failed", 1, 2)
    repeat.report_pending()
    summary = first.getvalue().splitlines()[-2:]
    assert "1 more like this were not logged: read(%d, %d) failed" in summary, summary
    assert "999 more like this were not logged: chunk # of pack # is corrupt" in summary


@needs_fuse
def test_mount_log_of_a_failing_read_stays_small(tmp_path: Path) -> None:
    """A file whose pack is gone, read again and again through the mount:
    the log holds one traceback-free line per kind, not one per read."""
    env = {"DSFS_DATA_DIR": str(tmp_path / "data"), "DSFS_CACHE_DIR": str(tmp_path / "cache"),
           "DSFS_STORE": str(tmp_path / "store")}
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(100_000))
    run(env, "sync", str(src), "-p", "p", "-n", "n", check=True)
    for pack in (tmp_path / "store" / "packs").rglob("*"):
        if pack.is_file():
            pack.unlink()
    mnt = tmp_path / "mnt"
    with mounted(env, "p/n", mnt, check_log=False):
        for _ in range(4):
            with pytest.raises(OSError):
                (mnt / "a.bin").read_bytes()
    log = next((tmp_path / "data" / "mounts").glob("*.log")).read_text()
    failures = [line for line in log.splitlines() if "failed" in line]
    kinds = {line.split(": ", 1)[1].split("(")[0] for line in failures}
    assert len(failures) <= 2 * len(kinds) + 2, log
    assert "more like this were not logged" in log, log
