"""An error is one printable line, whatever bytes the names in it hold."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dsfs_cli.main import one_line


def test_one_line_escapes_undecodable_bytes_and_newlines() -> None:
    name = os.fsdecode(b"bad\xe9name")
    assert one_line(f"{name}: not a folder") == "bad\\xe9name: not a folder"
    assert one_line("a\nb\rc") == "a\\nb\\rc"


@pytest.mark.parametrize("raw", [b"caf\xe9", b"two\nlines"])
def test_cli_error_for_an_odd_missing_path_is_one_line(
        tmp_path: Path, dsfs_env: dict[str, str], raw: bytes) -> None:
    """A missing folder whose name is not UTF-8 or holds a newline: exit 10,
    one line on stderr, no traceback, the name escaped."""
    missing = os.path.join(os.fsencode(tmp_path), raw)
    exe = Path(sys.executable).with_name("dsfs")
    result = subprocess.run([os.fsencode(exe), b"sync", missing, b"-p", b"p", b"-n", b"n"],
                            capture_output=True, env={**os.environ, **dsfs_env}, timeout=120)
    assert result.returncode == 10, result.stderr
    lines = result.stderr.decode("utf-8").splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("dsfs: error: ")
    assert "Traceback" not in lines[0]
    escaped = raw.decode("utf-8", "backslashreplace").replace("\n", "\\n")
    assert escaped in lines[0]
