"""Which dsfs mounts exist, and ending them.

The kernel's mount table (``/proc/self/mountinfo``) is the truth about what is
mounted: a dsfs mount has type ``fuse.dsfs`` and source ``dsfs:<version id>``.
Each mount process also leaves a small state file (its pid, version, log
file) under ``<data dir>/mounts/`` so that ``dsfs mounts`` can say more and
``dsfs umount`` can wait for the process to finish; a writable mount rewrites
it after each commit, so its version is the state file's, not the source's.
A state file whose mount is gone is stale and removed when seen.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsfs import config
from dsfs.errors import ConflictError, InputError, LocalError
from dsfs.fsutil import write_atomic

FSTYPE = "fuse.dsfs"
MOUNTINFO = "/proc/self/mountinfo"


@dataclass
class MountRecord:
    mountpoint: str
    source: str
    fstype: str
    state: dict[str, Any]

    @property
    def version_id(self) -> str:
        """The version the mount started on (whose tree it reads below its edits)."""
        return self.source.split(":", 1)[1] if ":" in self.source else ""

    @property
    def current_version_id(self) -> str:
        """The version it shows: a writable mount moves to each version it
        commits, which its state file records (the kernel keeps the source)."""
        recorded = self.state.get("version_id")
        if self.state.get("writable") and isinstance(recorded, str) and recorded:
            return recorded
        return self.version_id

    @property
    def pid(self) -> int | None:
        pid = self.state.get("pid")
        return pid if isinstance(pid, int) else None

    @property
    def alive(self) -> bool:
        return self.pid is not None and pid_alive(self.pid)


def _unescape(field: str) -> str:
    """Mount table fields escape space, tab, newline and backslash as octal."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def kernel_mounts() -> list[tuple[str, str, str]]:
    """(mount point, file system type, source) of every mount of this namespace."""
    found = []
    with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            left, _sep, right = line.partition(" - ")
            fields = left.split()
            rest = right.split()
            if len(fields) < 5 or len(rest) < 2:
                continue
            found.append((_unescape(fields[4]), rest[0], _unescape(rest[1])))
    return found


def normalize(mountpoint: str | os.PathLike[str]) -> str:
    """An absolute path without resolving the last component (it may be a dead mount)."""
    path = os.path.abspath(os.fspath(mountpoint))
    head, tail = os.path.split(path)
    return os.path.join(os.path.realpath(head), tail) if tail else path


def is_mountpoint(path: str) -> bool:
    return any(mp == path for mp, _t, _s in kernel_mounts())


def state_dir() -> Path:
    return config.data_dir() / "mounts"


def state_key(mountpoint: str) -> str:
    return config.mount_key(mountpoint)


def state_path(mountpoint: str) -> Path:
    return state_dir() / f"{state_key(mountpoint)}.json"


def log_path(mountpoint: str) -> Path:
    name = os.path.basename(mountpoint.rstrip("/")) or "root"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40]
    return state_dir() / f"{safe}-{state_key(mountpoint)[:8]}.log"


def write_state(mountpoint: str, state: dict[str, Any]) -> None:
    # derived from the running mount (and rewritten by it): no fsync needed
    write_atomic(state_path(mountpoint), json.dumps(state, sort_keys=True), durable=False)


def read_state(mountpoint: str) -> dict[str, Any]:
    try:
        state = json.loads(state_path(mountpoint).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def remove_state(mountpoint: str, pid: int | None = None) -> None:
    """Remove the state file (only if it belongs to ``pid``, when given)."""
    if pid is not None and read_state(mountpoint).get("pid") not in (pid, None):
        return
    with contextlib.suppress(FileNotFoundError):
        state_path(mountpoint).unlink()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie has exited; it only waits for its parent
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
        if f.read().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def dsfs_mounts() -> list[MountRecord]:
    """Every dsfs mount of this mount namespace, with what its state file says."""
    records = []
    for mountpoint, fstype, source in kernel_mounts():
        if fstype == FSTYPE:
            records.append(MountRecord(mountpoint, source, fstype, read_state(mountpoint)))
    return records


def unmount(mountpoint: str, lazy: bool = False, wait: float = 10.0) -> MountRecord:
    """End a dsfs mount (also one whose process died); return what it was."""
    path = normalize(mountpoint)
    record = next((r for r in dsfs_mounts() if r.mountpoint == path), None)
    if record is None:
        if any(mp == path for mp, _t, _s in kernel_mounts()):
            raise InputError(f"{path} is mounted, but not by dsfs: not unmounting it")
        remove_state(path)
        raise InputError(f"{path} is not a dsfs mount (see `dsfs mounts`)")
    command = ["fusermount3", "-u"] + (["-z"] if lazy else []) + [path]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise LocalError("fusermount3 is not installed (package fuse3)") from None
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip()
        if "busy" in message.lower() or os.strerror(errno.EBUSY) in message:
            raise ConflictError(
                f"{path} is busy: a process has a file or directory open below it "
                f"(see `fuser -vm {path}`); close it, or use `dsfs umount --lazy {path}` "
                "to detach it now and finish when it is closed")
        raise InputError(f"cannot unmount {path}: {message}")
    pid = record.pid
    deadline = time.monotonic() + wait
    while pid is not None and pid_alive(pid) and time.monotonic() < deadline and not lazy:
        time.sleep(0.05)
    remove_state(path)
    return record
