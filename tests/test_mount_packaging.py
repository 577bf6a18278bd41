"""The /etc/fstab mount helper and the systemd unit in packaging/."""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_mount_support import DSFS, is_mounted, make_source, needs_fuse, run

pytestmark = needs_fuse
PACKAGING = Path(__file__).resolve().parent.parent / "packaging"
HELPER = PACKAGING / "mount.fuse.dsfs"


@pytest.fixture
def version(tmp_path: Path) -> dict:
    env = {"DSFS_DATA_DIR": str(tmp_path / "data"), "DSFS_CACHE_DIR": str(tmp_path / "cache"),
           "DSFS_STORE": str(tmp_path / "store")}
    make_source(tmp_path / "src")
    run(env, "sync", str(tmp_path / "src"), "-p", "proj", "-n", "ds", check=True)
    return env


def helper_env(env: dict[str, str]) -> dict[str, str]:
    """What mount(8) gives a helper: no dsfs variables, only options."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DSFS_")}
    clean["DSFS_BIN"] = DSFS
    clean["PATH"] = f"{Path(sys.executable).parent}:{clean.get('PATH', '')}"
    return clean


def test_helper_mounts_like_mount8(version: dict, tmp_path: Path) -> None:
    mp = tmp_path / "m"
    mp.mkdir()
    options = (f"store={version['DSFS_STORE']},cache_dir={version['DSFS_CACHE_DIR']},"
               f"data_dir={version['DSFS_DATA_DIR']},ro,noatime,_netdev,nofail,defaults")
    result = subprocess.run(["sh", str(HELPER), "proj/ds@1.0.0", str(mp), "-n", "-o", options],
                            capture_output=True, text=True, env=helper_env(version),
                            timeout=60)
    try:
        assert result.returncode == 0, result.stderr
        assert is_mounted(mp)
        assert (mp / "exec.sh").read_bytes() == (tmp_path / "src" / "exec.sh").read_bytes()
        rows = json.loads(run(version, "mounts", "--json", check=True).stdout)
        assert rows[0]["mountpoint"] == str(mp) and rows[0]["version"] == "1.0.0"
    finally:
        run(version, "umount", str(mp))
        if is_mounted(mp):
            subprocess.run(["fusermount3", "-u", "-z", str(mp)])
    assert not is_mounted(mp)


def test_helper_reports_errors(version: dict, tmp_path: Path) -> None:
    result = subprocess.run(["sh", str(HELPER), "proj/ds@9.9", str(tmp_path), "-o",
                             f"store={version['DSFS_STORE']}"], capture_output=True, text=True,
                            env=helper_env(version), timeout=60)
    assert result.returncode == 3 and "no version 9.9" in result.stderr


@pytest.mark.skipif(not any(Path(d, "mount.fuse.dsfs").exists() for d in ("/sbin", "/usr/sbin")),
                    reason="mount.fuse.dsfs is not installed in /sbin or /usr/sbin")
def test_mount_t_fuse_dsfs(version: dict, tmp_path: Path) -> None:
    mp = tmp_path / "m"
    mp.mkdir()
    options = f"store={version['DSFS_STORE']},cache_dir={version['DSFS_CACHE_DIR']}"
    subprocess.run(["mount", "-t", "fuse.dsfs", "-o", options, "proj/ds", str(mp)], check=True,
                   env=helper_env(version), timeout=60)
    try:
        assert (mp / "exec.sh").exists()
    finally:
        subprocess.run(["umount", str(mp)])
        if is_mounted(mp):
            subprocess.run(["fusermount3", "-u", "-z", str(mp)])


def test_systemd_unit_is_well_formed() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(PACKAGING / "dsfs@.service")
    assert "--foreground" in parser["Service"]["ExecStart"]
    assert "umount" in parser["Service"]["ExecStop"]
    if shutil.which("systemd-analyze"):
        subprocess.run(["systemd-analyze", "verify", str(PACKAGING / "dsfs@.service")],
                       capture_output=True)
