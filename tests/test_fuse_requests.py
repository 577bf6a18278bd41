"""How many FUSE requests an operation costs, counted on real mounts from the
kernel requests libfuse logs with ``dsfs mount --debug``, so a change that
adds requests shows here.  With the patched pyfuse3 a read-only mount answers
a second read of a file and a second listing of a directory from the
kernel's caches, without a request; with stock pyfuse3 they cost OPEN/RELEASE
and OPENDIR/READDIRPLUS/RELEASEDIR (counted too, as the reference).  Without
``--allow-other`` no mount asks for ``default_permissions``, so creating and
renaming cost no GETATTR of the directory.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from test_mount_support import make_source, mounted, needs_fuse, run

pytestmark = needs_fuse

OPCODE = re.compile(r"opcode: (\w+)")
#: kernel bookkeeping that comes whenever the kernel likes, not per operation
IGNORED = {"FORGET", "BATCH_FORGET", "INTERRUPT"}


def _patched() -> bool:
    from dsfs.fuse.adapter import PATCHED

    return PATCHED


def read_file(path: Path) -> bytes:
    """The file's bytes through open/read/close only (``Path.read_bytes`` also
    asks whether the file is a terminal: an IOCTL request every time)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        parts = []
        while chunk := os.read(fd, 1 << 20):
            parts.append(chunk)
        return b"".join(parts)
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def rewrite_start(path: Path, data: bytes) -> None:
    """Overwrite the first bytes of a file in place."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def quiet(log: Path) -> None:
    """Wait until the mount has logged every request the kernel sent so far,
    and then nothing for a while.  The first part does not depend on timing:
    a ``statfs`` of the mount point is a request of its own (never cached,
    and no operation counted here makes one), queued behind whatever the
    kernel had queued, so once libfuse has logged it the daemon has read every
    earlier request, however long a busy machine kept it from running.  The
    quiet spell then catches what the kernel sends on its own a little later."""
    mnt = log.with_name(log.name.removesuffix(".stderr"))
    start = log.stat().st_size
    os.statvfs(mnt)
    deadline = time.monotonic() + 60
    while OPCODE_STATFS not in _text_from(log, start):
        assert time.monotonic() < deadline, "the mount never logged the STATFS"
        time.sleep(0.02)
    size = -1
    while size != log.stat().st_size:
        size = log.stat().st_size
        time.sleep(0.3)


OPCODE_STATFS = "opcode: STATFS"


def _text_from(log: Path, start: int) -> str:
    with open(log, "rb") as f:
        f.seek(start)
        return f.read().decode(errors="replace")


def counted(log: Path, action: Callable[[], object]) -> Counter[str]:
    """The requests the mount logged while ``action`` ran (and until the log
    has been quiet for a while: RELEASE comes after close returns), less the
    one STATFS of ``quiet``."""
    quiet(log)
    start = log.stat().st_size
    action()
    quiet(log)
    found = Counter(op for op in OPCODE.findall(_text_from(log, start)) if op not in IGNORED)
    found["STATFS"] -= 1
    return +found  # without a zero count


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], str]:
    base = tmp_path_factory.mktemp("requests")
    env = {"DSFS_DATA_DIR": str(base / "data"), "DSFS_CACHE_DIR": str(base / "cache"),
           "DSFS_STORE": str(base / "store")}
    src = base / "src"
    src.mkdir()
    make_source(src)
    run(env, "sync", str(src), "-p", "req", "-n", "counts", check=True)
    return env, "req/counts"


def test_read_only_mount_requests(tmp_path: Path, dataset: tuple[dict[str, str], str]
                                  ) -> None:
    env, version = dataset
    mnt = tmp_path / "mnt"
    with mounted(env, version, mnt, "--debug", check_log=False):
        log = tmp_path / "mnt.stderr"
        some = sorted(p for p in os.listdir(mnt) if p.endswith(".bin") or p.startswith("f"))
        target = mnt / next(p for p in some if (mnt / p).is_file() and (mnt / p).stat().st_size)
        first = counted(log, lambda: read_file(target))
        # The kernel may reclaim a file's pages and its dentry at any time (a
        # busy machine, memory pressure); a cache that works is seen in at
        # least one of three repeats, one that does not in none of them.
        again = min((counted(log, lambda: read_file(target)) for _ in range(3)),
                    key=lambda requests: sum(requests.values()))
        listing = counted(log, lambda: os.listdir(mnt))
        walk = counted(log, lambda: [os.lstat(os.path.join(d, f))
                                     for d, _, files in os.walk(mnt) for f in files])
    assert first["READ"] >= 1
    if _patched():
        # no-open and cached listings: nothing reaches the daemon the second time
        assert sum(again.values()) == 0, again
        assert sum(listing.values()) == 0, listing
        assert "OPEN" not in walk and "OPENDIR" not in walk and "RELEASEDIR" not in walk, walk
    else:
        assert again == Counter({"OPEN": 1, "RELEASE": 1}), again
        assert listing["OPENDIR"] == 1 and listing["READDIRPLUS"] >= 1, listing
    assert "GETATTR" not in again and "LOOKUP" not in again


def test_writable_mount_requests(tmp_path: Path, dataset: tuple[dict[str, str], str]
                                 ) -> None:
    env, version = dataset
    mnt = tmp_path / "mnt"
    files = tmp_path / "many"
    files.mkdir()
    for i in range(20):
        (files / f"f{i:02d}").write_bytes(b"x" * 100)
    with mounted(env, version, mnt, "--writable", "--overlay", str(tmp_path / "upper"),
                 "--debug", check_log=False):
        log = tmp_path / "mnt.stderr"
        write_file(mnt / "warm", b"1")  # the kernel's first FLUSH, answered ENOSYS
        read_file(mnt / "warm")  # and the first OPEN (ENOSYS with the patch)
        create = counted(log, lambda: write_file(mnt / "new.txt", b"hello"))
        rename = counted(log, lambda: os.rename(mnt / "new.txt", mnt / "renamed.txt"))
        rsync = counted(log, lambda: subprocess.run(
            ["rsync", "-a", f"{files}/", f"{mnt}/copy/"], check=True))
        assert (mnt / "copy" / "f07").read_bytes() == b"x" * 100
        # open(O_TRUNC) then a short write leaves only the new bytes (the kernel
        # truncates in OPEN, or by a SETATTR of its own without ATOMIC_O_TRUNC)
        trunc = counted(log, lambda: write_file(mnt / "copy" / "f07", b"yz"))
        assert read_file(mnt / "copy" / "f07") == b"yz"
        assert "GETATTR" not in trunc and trunc["WRITE"] == 1, trunc
        # a file of the version, read then rewritten in place (copy-up by inode)
        lower = next(p for p in sorted(os.listdir(mnt)) if (mnt / p).is_file()
                     and 4 < (mnt / p).stat().st_size < 1 << 20)
        before = read_file(mnt / lower)
        reread = counted(log, lambda: read_file(mnt / lower))
        rewrite = counted(log, lambda: rewrite_start(mnt / lower, b"AB"))
        assert read_file(mnt / lower) == b"AB" + before[2:]
    # without default_permissions the kernel fetches no attributes for a create
    assert "GETATTR" not in create, create
    assert create["CREATE"] == 1 and create["WRITE"] == 1, create
    assert sum(create.values()) <= 4, create  # LOOKUP, CREATE, WRITE, RELEASE
    assert "GETATTR" not in rename and sum(rename.values()) <= 2, rename
    per_file = sum(rsync.values()) / 20
    # rsync -a: lookups of the temporary and final names, create, write,
    # release, rename, setattr of times and mode (16 a file with stock pyfuse3
    # and default_permissions; 13.4 with the patch before no-open)
    if _patched():
        # no-open: no OPEN or RELEASE (but one of the first create's)
        assert "OPEN" not in rsync and rsync["RELEASE"] <= 20, rsync
        assert "OPEN" not in trunc and "OPEN" not in rewrite, (trunc, rewrite)
        assert trunc["SETATTR"] == 1, trunc  # O_TRUNC without ATOMIC_O_TRUNC
        assert "OPEN" not in reread and "RELEASE" not in reread, reread
        # the write, and no OPEN/FLUSH/RELEASE (a LOOKUP if the kernel dropped the entry)
        assert rewrite["WRITE"] == 1 and set(rewrite) <= {"WRITE", "LOOKUP"}, rewrite
        assert per_file <= 12, (per_file, rsync)
    else:
        assert rewrite["OPEN"] == 1 and rewrite["WRITE"] == 1, rewrite
        assert per_file <= 14, (per_file, rsync)
