"""Bad input and faults of real mounts: each one a clear error, never a hang
or a dead mount left behind."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_mount_support import is_mounted, make_source, mount_row, mounted, needs_fuse, run

pytestmark = needs_fuse


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("faultdata")
    env = {"DSFS_DATA_DIR": str(base / "data"), "DSFS_CACHE_DIR": str(base / "cache"),
           "DSFS_STORE": str(base / "store")}
    src = base / "src"
    make_source(src)
    run(env, "sync", str(src), "-p", "proj", "-n", "ds", check=True)
    version_id = json.loads(run(env, "search", "--json", check=True).stdout)[0]["id"]
    return {"env": env, "src": src, "id": version_id, "base": base}


def fresh_env(dataset: dict, tmp_path: Path) -> dict[str, str]:
    """The dataset's store with an empty cache and private mount state."""
    return {**dataset["env"], "DSFS_CACHE_DIR": str(tmp_path / "cache"),
            "DSFS_DATA_DIR": str(tmp_path / "data")}


def test_missing_mountpoint(dataset: dict, tmp_path: Path) -> None:
    result = run(dataset["env"], "mount", dataset["id"], str(tmp_path / "nope"))
    assert result.returncode == 10
    assert "does not exist" in result.stderr


def test_mountpoint_not_a_directory(dataset: dict, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    result = run(dataset["env"], "mount", dataset["id"], str(tmp_path / "file"))
    assert result.returncode == 10
    assert "not a directory" in result.stderr


def test_mountpoint_already_mounted(dataset: dict, tmp_path: Path) -> None:
    with mounted(dataset["env"], dataset["id"], tmp_path / "m"):
        result = run(dataset["env"], "mount", dataset["id"], str(tmp_path / "m"))
        assert result.returncode == 5
        assert "already a mount point" in result.stderr


def test_unknown_ref_mounts_nothing(dataset: dict, tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    for ref in ("0123abcd", "proj/nosuch", "proj/ds@9.9.9"):
        result = run(dataset["env"], "mount", ref, str(tmp_path / "m"))
        assert result.returncode == 3, result.stderr
        assert result.stderr.startswith("dsfs: error:")
        assert not is_mounted(tmp_path / "m")


def test_store_failure_gives_eio_then_recovers(dataset: dict, tmp_path: Path) -> None:
    env = fresh_env(dataset, tmp_path)
    store = Path(env["DSFS_STORE"])
    mp = tmp_path / "m"
    with mounted(env, dataset["id"], mp) as proc:
        os.rename(store, store.with_name("store-away"))
        try:
            with pytest.raises(OSError) as info:
                (mp / "big.bin").read_bytes()
            assert info.value.errno == errno.EIO
            assert proc.poll() is None and is_mounted(mp)
            assert sorted(os.listdir(mp))  # the tree is still served
        finally:
            os.rename(store.with_name("store-away"), store)
        assert (mp / "big.bin").read_bytes() == (dataset["src"] / "big.bin").read_bytes()
    log = (tmp_path / "m.stderr").read_text()
    assert "cannot fetch chunk" in log and "after 4 attempts" in log


def test_corrupt_cached_chunk_is_fetched_again(dataset: dict, tmp_path: Path) -> None:
    env = fresh_env(dataset, tmp_path)
    want = (dataset["src"] / "exec.sh").read_bytes()
    with mounted(env, dataset["id"], tmp_path / "m"):
        assert (tmp_path / "m" / "exec.sh").read_bytes() == want
    chunks = [p for p in (tmp_path / "cache" / "chunks").rglob("*") if p.is_file()]
    assert len(chunks) == 1
    chunks[0].write_bytes(b"garbage" + chunks[0].read_bytes()[7:])
    with mounted(env, dataset["id"], tmp_path / "m2"):
        assert (tmp_path / "m2" / "exec.sh").read_bytes() == want
    assert chunks[0].read_bytes() == want
    assert "is corrupt" in (tmp_path / "m2.stderr").read_text()


def test_umount_busy_then_lazy(dataset: dict, tmp_path: Path) -> None:
    env = fresh_env(dataset, tmp_path)
    mp = tmp_path / "m"
    mp.mkdir()
    run(env, "mount", dataset["id"], str(mp), check=True)
    try:
        pid = mount_row(env, mp)["pid"]
        with open(mp / "exec.sh", "rb") as held:
            result = run(env, "umount", str(mp))
            assert result.returncode == 5
            assert "busy" in result.stderr and "--lazy" in result.stderr
            assert is_mounted(mp)
            run(env, "umount", "--lazy", str(mp), check=True)
            assert not is_mounted(mp)
            assert held.read() == (dataset["src"] / "exec.sh").read_bytes()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{pid}")
    finally:
        if is_mounted(mp):
            subprocess.run(["fusermount3", "-u", "-z", str(mp)])


def test_killed_mount_is_cleaned_by_umount(dataset: dict, tmp_path: Path) -> None:
    env = fresh_env(dataset, tmp_path)
    mp = tmp_path / "m"
    mp.mkdir()
    run(env, "mount", dataset["id"], str(mp), check=True)
    try:
        pid = mount_row(env, mp)["pid"]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.05)
        with pytest.raises(OSError) as info:
            os.listdir(mp)
        assert info.value.errno == errno.ENOTCONN
        assert mount_row(env, mp)["alive"] is False
        run(env, "umount", str(mp), check=True)
        assert not is_mounted(mp)
        assert mount_row(env, mp) is None
        # and the mount point can be used again
        run(env, "mount", dataset["id"], str(mp), check=True)
        run(env, "umount", str(mp), check=True)
    finally:
        if is_mounted(mp):
            subprocess.run(["fusermount3", "-u", "-z", str(mp)])


def test_umount_of_something_else(dataset: dict, tmp_path: Path) -> None:
    result = run(dataset["env"], "umount", str(tmp_path))
    assert result.returncode == 10
    assert "not a dsfs mount" in result.stderr


def test_sigterm_unmounts_cleanly(dataset: dict, tmp_path: Path) -> None:
    with mounted(dataset["env"], dataset["id"], tmp_path / "m") as proc:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not is_mounted(tmp_path / "m")
