"""Local state that exists nowhere else (drafts) is written durably.

The system calls of a real ``dsfs`` process are traced with strace: every
write of a draft file (and of the current-draft pointer) must fsync the new
file before renaming it into place and fsync its directory after, or a crash
of the machine can leave an empty or missing draft.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dsfs.fsutil import TMP_PREFIX, write_atomic

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")

_CALL = re.compile(r'^(?:\[pid\s+\d+\]\s+|\d+\s+)?(\w+)\((.*)\)\s+=\s+(-?\d+)')


def traced(env: dict[str, str], *args: str, cwd: Path) -> list[tuple[str, str]]:
    """(syscall, arguments) of fsync/rename calls made by ``dsfs ARGS``."""
    exe = Path(sys.executable).with_name("dsfs")
    log = cwd / "strace.log"
    command = ["strace", "-f", "-qq", "-y", "-o", str(log),
               "-e", "trace=fsync,fdatasync,rename,renameat,renameat2", str(exe), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                            env={**os.environ, **env}, cwd=cwd)
    assert result.returncode == 0, result.stderr
    calls = []
    for line in log.read_text().splitlines():
        match = _CALL.match(line)
        if match and match.group(3) == "0":
            calls.append((match.group(1), match.group(2)))
    return calls


def assert_durable_replace(calls: list[tuple[str, str]], target: Path) -> None:
    """Some rename onto ``target`` came after an fsync of its source and was
    followed by an fsync of the directory."""
    directory = str(target.parent)
    for index, (name, args) in enumerate(calls):
        if not name.startswith("rename") or f'"{target}"' not in args:
            continue
        source = args.split('"')[1]
        synced_before = any(n in ("fsync", "fdatasync") and f"<{source}>" in a
                            for n, a in calls[:index])
        synced_dir = any(n == "fsync" and a.endswith(f"<{directory}>")
                         for n, a in calls[index + 1:])
        assert synced_before, f"{source} renamed onto {target} without an fsync first"
        assert synced_dir, f"directory {directory} not fsynced after renaming {target}"
        return
    raise AssertionError(f"no rename onto {target} in {calls}")


def test_draft_files_are_fsynced(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"DSFS_DATA_DIR": str(data), "DSFS_CACHE_DIR": str(tmp_path / "cache"),
           "DSFS_STORE": str(tmp_path / "store")}
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a\n")
    calls = traced(env, "create", "-p", "p", "-n", "n", cwd=tmp_path)
    draft_id = (data / "current_draft").read_text().strip()
    assert_durable_replace(calls, data / "drafts" / f"{draft_id}.json")
    assert_durable_replace(calls, data / "current_draft")
    calls = traced(env, "add", str(tmp_path / "src"), cwd=tmp_path)
    assert_durable_replace(calls, data / "drafts" / f"{draft_id}.json")


def test_write_atomic_replaces_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "new" / "dir" / "file"
    write_atomic(target, b"one", durable=True)
    write_atomic(target, "two", durable=False)
    assert target.read_text() == "two"
    with pytest.raises(UnicodeEncodeError):
        write_atomic(target, "\udcff", durable=True)
    assert target.read_text() == "two"
    target.parent.chmod(0o500)
    try:
        if os.geteuid() != 0:  # root ignores the mode; the full-disk tests cover failure
            with pytest.raises(PermissionError):
                write_atomic(target, b"three", durable=True)
    finally:
        target.parent.chmod(0o700)
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(TMP_PREFIX)] == []
