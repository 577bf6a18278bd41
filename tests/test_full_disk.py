"""A full disk under the cache: one clear line and exit code 11, nothing left
behind, and a cache size limit that counts everything the cache takes.

Every test puts the cache on a real, small tmpfs (mounted here; the tests run
as root) and fills it for real: no write is faked.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_mount_support import mounted, needs_fuse, run

from dsfs.errors import DiskFullError

MiB = 1 << 20


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator:
    """``make(name, size)`` mounts a tmpfs of ``size`` (e.g. "4m") at tmp_path/name."""
    made: list[Path] = []

    def make(name: str, size: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755",
                                 "tmpfs", str(path)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {result.stderr.strip()}")
        made.append(path)
        return path

    yield make
    for path in reversed(made):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def make_dataset(tmp_path: Path, name: str, files: int, size: int = MiB) -> Path:
    src = tmp_path / f"src-{name}"
    src.mkdir()
    for i in range(files):
        (src / f"f{i:03}.bin").write_bytes(os.urandom(size))  # no dedup, no compression
    return src


def env_for(tmp_path: Path, cache: Path) -> dict[str, str]:
    return {"DSFS_DATA_DIR": str(tmp_path / "data"), "DSFS_CACHE_DIR": str(cache),
            "DSFS_STORE": str(tmp_path / "store")}


def fill(directory: Path, leave: int = 0) -> Path:
    """Fill the file system of ``directory`` until at most ``leave`` bytes are free."""
    filler = directory / "filler"
    with open(filler, "wb") as f:
        while True:
            st = os.statvfs(directory)
            free = st.f_bavail * st.f_frsize
            if free <= leave:
                break
            try:
                f.write(bytes(min(free - leave, MiB)))
                f.flush()
            except OSError:
                break
    return filler


def temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith((".tmp-", ".building-"))]


def assert_disk_full(result: subprocess.CompletedProcess[str], where: Path) -> None:
    assert result.returncode == DiskFullError.exit_code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"dsfs: error: no space left on {where}"), lines[0]


def test_get_and_prefetch_into_a_full_cache(tmp_path: Path, small_fs) -> None:
    cache = small_fs("cache", "4m")
    env = env_for(tmp_path, cache)
    run(env, "sync", str(make_dataset(tmp_path, "a", 6)), "-p", "p", "-n", "n", check=True)
    for command in (["get", "p/n"], ["prefetch", "p/n"]):
        assert_disk_full(run(env, *command), cache)
        assert temporaries(cache) == [], command
    stats = json.loads(run(env, "cache", "stats", "--json", check=True).stdout)
    assert stats["temp_files"] == 0
    assert stats["total_bytes"] >= stats["index_bytes"] > 0


def test_get_into_a_full_data_target(tmp_path: Path, small_fs) -> None:
    """``get --copy`` into a full disk: exit 11 naming a directory, nothing left."""
    target_fs = small_fs("target", "2m")
    env = env_for(tmp_path, tmp_path / "cache")
    run(env, "sync", str(make_dataset(tmp_path, "a", 3)), "-p", "p", "-n", "n", check=True)
    result = run(env, "get", "p/n", "--copy", str(target_fs / "copy"))
    assert result.returncode == DiskFullError.exit_code, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "no space left on" in result.stderr


@needs_fuse
@pytest.mark.parametrize("leave", [0, 96 * 1024])
def test_mount_on_a_full_cache(tmp_path: Path, small_fs, leave: int) -> None:
    """The mount indexes the version's tree into LMDB at start: a full disk
    there (also one that fills half-way) is exit 11, not a crash or exit 1."""
    cache = small_fs("cache", "8m")
    env = env_for(tmp_path, cache)
    src = tmp_path / "src-many"
    for i in range(3000):
        (src / f"d{i % 30}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 30}" / f"a-long-file-name-for-the-index-{i:05}.txt").write_text(str(i))
    run(env, "sync", str(src), "-p", "p", "-n", "n", check=True)
    run(env, "cache", "clear", check=True)
    for stale in ("manifests", "index"):
        subprocess.run(["rm", "-rf", str(cache / stale)], check=True)
    fill(cache, leave)
    (tmp_path / "mnt").mkdir()
    result = run(env, "mount", "p/n", str(tmp_path / "mnt"), timeout=60)
    if result.returncode == 0:
        run(env, "umount", str(tmp_path / "mnt"))
    assert_disk_full(result, cache)


def test_cache_stats_and_prune_count_index_copies_and_temporaries(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = env_for(tmp_path, cache)
    run(env, "sync", str(make_dataset(tmp_path, "a", 6)), "-p", "p", "-n", "n", check=True)
    run(env, "get", "p/n", check=True)
    run(env, "prefetch", "p/n", check=True)  # get makes no chunk files: the copy is the cache
    stale = cache / "chunks" / "00" / ".tmp-deadbeef"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(bytes(MiB))
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    stats = json.loads(run(env, "cache", "stats", "--json", check=True).stdout)
    assert stats["copies_bytes"] >= 6 * MiB
    assert stats["temp_files"] == 1 and stats["temp_bytes"] >= MiB
    assert stats["total_bytes"] == (stats["bytes"] + stats["index_bytes"]
                                    + stats["copies_bytes"] + stats["temp_bytes"])
    assert stats["total_bytes"] > 12 * MiB
    run(env, "cache", "prune", "--size", "9M", check=True)
    after = json.loads(run(env, "cache", "stats", "--json", check=True).stdout)
    assert after["temp_files"] == 0 and not stale.exists()
    assert after["total_bytes"] <= 9 * MiB
    assert after["chunks"] > 0  # only as many chunks as needed were evicted


@needs_fuse
def test_mount_with_a_cache_limit_larger_than_the_disk(tmp_path: Path, small_fs) -> None:
    """A cache limit the disk cannot hold (``get`` copies took part of it):
    reads through the mount still succeed, evicting chunks when the disk is
    full, instead of failing with EIO.  (Chunks the mount holds open keep their
    space until it closes them, so only the others can make room.)"""
    cache = small_fs("cache", "10m")
    env = env_for(tmp_path, cache)
    run(env, "sync", str(make_dataset(tmp_path, "a", 3)), "-p", "p", "-n", "a", check=True)
    src_b = make_dataset(tmp_path, "b", 5)
    run(env, "sync", str(src_b), "-p", "p", "-n", "b", check=True)
    run(env, "get", "p/a", check=True)  # 3 MiB of copies and 3 MiB of chunks
    mnt = tmp_path / "mnt"
    with mounted(env, "p/b", mnt, "--cache-size", "9M"):
        for path in sorted(src_b.iterdir()):
            assert (mnt / path.name).read_bytes() == path.read_bytes(), path.name
    assert temporaries(cache / "chunks") == []


def test_sync_into_a_full_local_store(tmp_path: Path, small_fs) -> None:
    """A local store on a full disk: exit 11 naming the store, nothing published."""
    store = small_fs("store", "2m")
    env = {**env_for(tmp_path, tmp_path / "cache"), "DSFS_STORE": str(store / "s")}
    result = run(env, "sync", str(make_dataset(tmp_path, "a", 3)), "-p", "p", "-n", "n")
    assert_disk_full(result, store / "s")
    assert run(env, "search", "--json", check=True).stdout.strip() in ("[]", "")
    assert temporaries(store) == []


def test_create_with_a_full_data_dir(tmp_path: Path, small_fs) -> None:
    data = small_fs("data", "1m")
    env = {**env_for(tmp_path, tmp_path / "cache"), "DSFS_DATA_DIR": str(data)}
    fill(data)
    assert_disk_full(run(env, "create", "-p", "p", "-n", "n"), data)
    assert temporaries(data) == []
