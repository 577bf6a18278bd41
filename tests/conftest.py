"""Shared fixtures: an isolated dsfs environment per test, and stores of every kind.

``store_url`` is parametrized over every backend available: the local
directory always, S3 when ``s3_support`` (a real HTTP S3 endpoint, see that
module) can start one.  Tests that take ``store_url`` run once per backend.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

try:
    from s3_support import (  # noqa: F401 - fixtures
        moto_bucket,
        moto_endpoint,
        moto_proxy,
        s3_available,
        s3_endpoint,
        s3_store_url,
    )
except ImportError:  # the S3 backend is not part of this checkout
    def s3_available() -> bool:
        return False

STORE_KINDS = ["local"] + (["s3"] if s3_available() else [])


@pytest.fixture
def dsfs_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Private data and cache directories; no store from the caller's environment."""
    data = tmp_path / "dsfs-data"
    cache = tmp_path / "dsfs-cache"
    monkeypatch.setenv("DSFS_DATA_DIR", str(data))
    monkeypatch.setenv("DSFS_CACHE_DIR", str(cache))
    monkeypatch.delenv("DSFS_STORE", raising=False)
    monkeypatch.delenv("DSFS_DEBUG", raising=False)
    return {"DSFS_DATA_DIR": str(data), "DSFS_CACHE_DIR": str(cache)}


@pytest.fixture(params=STORE_KINDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path, dsfs_env: dict[str, str],
              monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, empty store of each kind, also exported as DSFS_STORE."""
    if request.param == "local":
        url = str(tmp_path / "store")
    else:
        url = request.getfixturevalue("s3_store_url")
    monkeypatch.setenv("DSFS_STORE", url)
    return url


@pytest.fixture
def run_dsfs(dsfs_env: dict[str, str]):
    """Run the installed ``dsfs`` as a real subprocess; returns CompletedProcess."""

    def run(*args: str, check: bool = False, input_text: str | None = None,
            cwd: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **dsfs_env}
        exe = Path(sys.executable).with_name("dsfs")
        command = [str(exe)] if exe.exists() else [sys.executable, "-m", "dsfs"]
        result = subprocess.run(command + list(args), capture_output=True, text=True,
                                env=env, input=input_text, cwd=cwd, timeout=600)
        if check:
            assert result.returncode == 0, result.stderr + result.stdout
        return result

    return run


def make_tree(root: Path, files: int = 50, seed: int = 0, size: int = 3000) -> dict[str, bytes]:
    """Write a deterministic tree of small files; return path → content."""
    import random

    rng = random.Random(seed)
    contents = {}
    for i in range(files):
        rel = f"d{i % 7}/sub{i % 3}/file{i}.bin"
        data = rng.randbytes(rng.randint(0, size))
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        contents[rel] = data
    return contents
