"""Every expected failure has its documented exit code and one line.

Permission problems are real: the commands run as an unprivileged user
(``setpriv``, uid/gid 65534) against directories that user cannot read or
write, since root ignores file modes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsfs.errors import (
    EXIT_CODES,
    DiskFullError,
    LocalError,
    StoreAccessError,
    StoreError,
)

DSFS = str(Path(sys.executable).with_name("dsfs"))
ROOT = Path(__file__).resolve().parent.parent
NOBODY = 65534


def can_drop_privileges() -> bool:
    return os.geteuid() == 0 and shutil.which("setpriv") is not None


needs_root = pytest.mark.skipif(not can_drop_privileges(),
                                reason="needs root and setpriv to run as another user")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the unprivileged user can enter (tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="dsfs-exit-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def dsfs(env: dict[str, str], *args: str, as_nobody: bool = False
         ) -> subprocess.CompletedProcess[str]:
    prefix = ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY),
              "--clear-groups"] if as_nobody else []
    return subprocess.run([*prefix, DSFS, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOME": "/nonexistent", **env})


def writable_by_nobody(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, NOBODY, NOBODY)
    return path


def assert_fails(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dsfs: error: "), result.stderr
    assert "internal error" not in lines[0] and "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture
def published(shared_dir: Path) -> dict[str, str]:
    """A store with one version p/n, made by root, readable by everyone."""
    src = shared_dir / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    env = {"DSFS_STORE": str(shared_dir / "store"), "DSFS_DATA_DIR": str(shared_dir / "data"),
           "DSFS_CACHE_DIR": str(shared_dir / "cache")}
    result = dsfs(env, "sync", str(src), "-p", "p", "-n", "n")
    assert result.returncode == 0, result.stderr
    for path in (shared_dir / "store", src):
        for dirpath, _dirs, _files in os.walk(path):
            os.chmod(dirpath, 0o755)
    return env


@needs_root
def test_unreadable_store_is_a_store_access_error(shared_dir: Path, published: dict) -> None:
    env = {**published, "DSFS_DATA_DIR": str(writable_by_nobody(shared_dir / "d2")),
           "DSFS_CACHE_DIR": str(writable_by_nobody(shared_dir / "c2"))}
    (shared_dir / "store").chmod(0o700)
    for args in (["search"], ["list", "p/n"], ["get", "p/n"], ["search", "--json"]):
        result = dsfs(env, *args, as_nobody=True)
        assert_fails(result, StoreAccessError.exit_code, "access denied", str(shared_dir))
    # an unreadable directory inside the store: listing never silently skips it
    (shared_dir / "store").chmod(0o755)
    (shared_dir / "store" / "versions").chmod(0o700)
    assert_fails(dsfs(env, "search", as_nobody=True), StoreError.exit_code, "access denied")


@needs_root
def test_unwritable_data_dir_is_a_local_error(shared_dir: Path, published: dict) -> None:
    data = shared_dir / "readonly-data"
    data.mkdir(mode=0o755)
    env = {**published, "DSFS_DATA_DIR": str(data),
           "DSFS_CACHE_DIR": str(writable_by_nobody(shared_dir / "c2"))}
    result = dsfs(env, "create", "-p", "p", "-n", "other", as_nobody=True)
    assert_fails(result, LocalError.exit_code, str(data))


@needs_root
@pytest.mark.parametrize("made_by_root", [False, True])
def test_unwritable_cache_dir_is_a_local_error(shared_dir: Path, published: dict,
                                               made_by_root: bool) -> None:
    """An empty read-only cache directory, or a cache (chunks, LMDB index) that
    root made: exit 12 naming it, never an integrity failure, for commands
    that fill the cache; commands that only read versions run on a temporary
    cache with one warning (issue 11)."""
    cache = shared_dir / "readonly-cache"
    cache.mkdir(mode=0o755)
    env = {**published, "DSFS_DATA_DIR": str(writable_by_nobody(shared_dir / "d2")),
           "DSFS_CACHE_DIR": str(cache)}
    if made_by_root:
        assert dsfs(env, "get", "p/n").returncode == 0
        for dirpath, _dirs, files in os.walk(cache):
            os.chmod(dirpath, 0o755)
            for name in files:
                os.chmod(os.path.join(dirpath, name), 0o644)
    for args in (["get", "p/n"], ["prefetch", "p/n"]):
        assert_fails(dsfs(env, *args, as_nobody=True), LocalError.exit_code, str(cache))
    # commands that only read versions run on a temporary cache, with a warning
    for args in (["search"], ["list", "p/n"], ["verify", "p/n"]):
        result = dsfs(env, *args, as_nobody=True)
        assert result.returncode == 0, result.stderr
        assert result.stderr.startswith("dsfs: warning: cannot use the cache")
        assert "uses a temporary cache instead" in result.stderr
        assert sum("warning" in line for line in result.stderr.splitlines()) == 1
    assert "a.txt" in dsfs(env, "list", "p/n", as_nobody=True).stdout
    assert not any(Path(tempfile.gettempdir()).glob("dsfs-cache-*/chunks"))  # removed


def test_exit_codes_are_documented() -> None:
    """docs/cli.md's table, errors.EXIT_CODES and `dsfs --help` list the same codes."""
    text = (ROOT / "docs" / "cli.md").read_text()
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    table = {int(m.group(1)) for m in re.finditer(r"^\|\s*(\d+)\s*\|", section, re.M)}
    assert table == set(EXIT_CODES) | {130}
    assert {DiskFullError.exit_code, LocalError.exit_code} <= set(EXIT_CODES)
    help_text = subprocess.run([DSFS, "--help"], capture_output=True, text=True).stdout
    for code, meaning in EXIT_CODES.items():
        assert re.search(rf"^\s+{code}\s+{re.escape(meaning)}", help_text, re.M), code


@pytest.mark.parametrize("variable", ["DSFS_DATA_DIR", "DSFS_CACHE_DIR"])
def test_data_or_cache_dir_that_is_a_file(shared_dir: Path, published: dict,
                                          variable: str) -> None:
    a_file = shared_dir / "a-file"
    a_file.write_text("not a directory\n")
    env = {**published, variable: str(a_file)}
    commands = [["create", "-p", "p", "-n", "other"]]
    if variable == "DSFS_CACHE_DIR":
        commands.append(["get", "p/n"])  # get needs no data directory
    for args in commands:
        assert_fails(dsfs(env, *args), LocalError.exit_code, str(a_file), "Not a directory")
