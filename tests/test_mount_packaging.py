"""The /etc/fstab mount helper and the systemd unit in packaging/."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_mount_support import DSFS, is_mounted, make_source, mount_row, needs_fuse, run

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
        row = mount_row(version, mp)
        assert row is not None and row["version"] == "1.0.0"
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


@pytest.fixture
def installed_helper() -> Iterator[None]:
    """The helper where mount(8) looks for it; installed for the test when absent
    (as root, as on CI), and removed again afterwards."""
    if any(Path(d, "mount.fuse.dsfs").exists() for d in ("/sbin", "/usr/sbin")):
        yield
        return
    if os.getuid() != 0 or not os.access("/usr/sbin", os.W_OK):
        pytest.skip("mount.fuse.dsfs is not installed and /usr/sbin is not writable")
    target = Path("/usr/sbin/mount.fuse.dsfs")
    shutil.copy(HELPER, target)
    target.chmod(0o755)
    try:
        yield
    finally:
        target.unlink(missing_ok=True)


def _mount_and_check(command: list[str], version: dict, mp: Path) -> None:
    subprocess.run(command, check=True, env=helper_env(version), timeout=60)
    try:
        src = Path(version["DSFS_STORE"]).parent / "src"
        assert (mp / "exec.sh").read_bytes() == (src / "exec.sh").read_bytes()
    finally:
        subprocess.run(["umount", str(mp)])
        if is_mounted(mp):
            subprocess.run(["fusermount3", "-u", "-z", str(mp)])
    assert not is_mounted(mp)


def test_mount_t_fuse_dsfs(installed_helper: None, version: dict, tmp_path: Path) -> None:
    mp = tmp_path / "m"
    mp.mkdir()
    options = f"store={version['DSFS_STORE']},cache_dir={version['DSFS_CACHE_DIR']}"
    _mount_and_check(["mount", "-t", "fuse.dsfs", "-o", options, "proj/ds", str(mp)],
                     version, mp)


def test_fstab_line(installed_helper: None, version: dict, tmp_path: Path) -> None:
    mp = tmp_path / "from-fstab"
    mp.mkdir()
    fstab = tmp_path / "fstab"
    options = (f"store={version['DSFS_STORE']},cache_dir={version['DSFS_CACHE_DIR']},"
               "nofail,_netdev")
    fstab.write_text(f"proj/ds@1.0.0  {mp}  fuse.dsfs  {options}  0 0\n")
    # mount --fstab reads this file instead of /etc/fstab, exactly as it would that one.
    _mount_and_check(["mount", "--fstab", str(fstab), str(mp)], version, mp)


def test_systemd_unit_is_well_formed() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(PACKAGING / "dsfs@.service")
    assert "--foreground" in parser["Service"]["ExecStart"]
    assert "umount" in parser["Service"]["ExecStop"]
    if shutil.which("systemd-analyze"):
        subprocess.run(["systemd-analyze", "verify", str(PACKAGING / "dsfs@.service")],
                       capture_output=True)
