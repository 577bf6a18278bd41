"""The shared cache's commands (stats, prune, clear, verify, prefetch) and the
size limit of a mount."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from test_mount_support import make_source, mounted, needs_fuse, run


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("cachedata")
    env = {"DSFS_DATA_DIR": str(base / "data"), "DSFS_CACHE_DIR": str(base / "cache"),
           "DSFS_STORE": str(base / "store")}
    make_source(base / "src")
    run(env, "sync", str(base / "src"), "-p", "proj", "-n", "ds", check=True)
    return {"env": env, "src": base / "src", "base": base}


def cache_env(dataset: dict, tmp_path: Path) -> dict[str, str]:
    return {**dataset["env"], "DSFS_CACHE_DIR": str(tmp_path / "cache"),
            "DSFS_DATA_DIR": str(tmp_path / "data")}


def stats(env: dict[str, str]) -> dict:
    return json.loads(run(env, "cache", "stats", "--json", check=True).stdout)


def test_prefetch_stats_verify_clear(dataset: dict, tmp_path: Path) -> None:
    env = cache_env(dataset, tmp_path)
    assert stats(env)["chunks"] == 0
    out = run(env, "prefetch", "proj/ds", "d1", "exec.sh", check=True).stdout
    assert "fetched" in out
    partial = stats(env)
    assert 0 < partial["chunks"] < 30
    run(env, "prefetch", "proj/ds", check=True)
    full = stats(env)
    assert full["bytes"] >= (dataset["src"] / "big.bin").stat().st_size
    again = run(env, "prefetch", "proj/ds", check=True).stdout
    assert "0 fetched" in again
    missing = run(env, "prefetch", "proj/ds", "no/such/path")
    assert missing.returncode == 3
    assert "checked" in run(env, "cache", "verify", check=True).stdout
    victim = next(p for p in (tmp_path / "cache" / "chunks").rglob("*") if p.is_file())
    victim.write_bytes(b"X" + victim.read_bytes()[1:])
    bad = run(env, "cache", "verify")
    assert bad.returncode == 6 and "1 bad" in bad.stdout
    assert not victim.exists()
    assert stats(env)["chunks"] == full["chunks"] - 1
    run(env, "cache", "clear", check=True)
    assert stats(env)["chunks"] == 0
    assert not [p for p in (tmp_path / "cache" / "chunks").rglob("*") if p.is_file()]


def test_prune_keeps_the_most_recently_used(dataset: dict, tmp_path: Path) -> None:
    env = cache_env(dataset, tmp_path)
    run(env, "prefetch", "proj/ds", "big.bin", check=True)
    time.sleep(1.1)  # access times have a resolution of one second
    run(env, "prefetch", "proj/ds", "exec.sh", check=True)
    out = run(env, "cache", "prune", "--size", "1M", check=True).stdout
    assert "removed 3 chunk(s)" in out
    left = stats(env)
    assert left["chunks"] == 1 and left["bytes"] == (dataset["src"] / "exec.sh").stat().st_size
    assert run(env, "cache", "prune").returncode == 2  # no size given


@needs_fuse
def test_mount_cache_size_limit(dataset: dict, tmp_path: Path) -> None:
    env = cache_env(dataset, tmp_path)
    want = (dataset["src"] / "big.bin").read_bytes()
    with mounted(env, "proj/ds", tmp_path / "m", "--cache-size", "9M"):
        assert (tmp_path / "m" / "big.bin").read_bytes() == want
        deadline = time.monotonic() + 60
        while stats(env)["bytes"] > 9 << 20 and time.monotonic() < deadline:
            time.sleep(0.25)
        assert stats(env)["bytes"] <= 9 << 20
        # evicted chunks come back on demand, bytes unchanged
        assert (tmp_path / "m" / "big.bin").read_bytes() == want
