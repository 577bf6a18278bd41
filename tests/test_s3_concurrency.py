"""Many machines, one bucket: 8 ``dsfs sync`` processes publish versions of the
same dataset at once (each with its own data and cache directory, as separate
machines would have), with ``dsfs gc`` running beside them.  Every version
must come out with its own version string, and read back exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_tree
from s3_support import s3_available

from dsfs import Dataset

pytestmark = pytest.mark.skipif(not s3_available(), reason="no S3 endpoint (moto not installed)")

WRITERS = 8


def _dsfs() -> list[str]:
    exe = Path(sys.executable).with_name("dsfs")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "dsfs"]


def _machine_env(root: Path, store: str) -> dict[str, str]:
    return {**os.environ, "DSFS_DATA_DIR": str(root / "data"),
            "DSFS_CACHE_DIR": str(root / "cache"), "DSFS_STORE": store}


def _read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in root.rglob("*") if p.is_file()}


def test_eight_processes_close_into_one_bucket(s3_store_url: str, tmp_path: Path,
                                               dsfs_env: dict[str, str]) -> None:
    # Shared content across writers exercises dedup races on the same packs.
    common = make_tree(tmp_path / "common", files=10, seed=99, size=20_000)
    folders = []
    for i in range(WRITERS):
        folder = tmp_path / f"src{i}"
        make_tree(folder, files=12, seed=i, size=20_000)
        for rel, data in common.items():
            (folder / "common" / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / "common" / rel).write_bytes(data)
        folders.append(folder)
    # Create the store config first, as a team's first `dsfs` run would.
    first = subprocess.run(_dsfs() + ["search"], env=_machine_env(tmp_path / "m-init",
                                                                   s3_store_url),
                           capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr

    procs = [subprocess.Popen(_dsfs() + ["-q", "sync", str(folder), "-p", "team", "-n", "shared"],
                              env=_machine_env(tmp_path / f"m{i}", s3_store_url),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, folder in enumerate(folders)]
    gc = subprocess.Popen(_dsfs() + ["-q", "gc"], env=_machine_env(tmp_path / "m-gc",
                                                                    s3_store_url),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ids = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        ids.append(out.strip().splitlines()[-1])
    _out, err = gc.communicate(timeout=300)
    assert gc.returncode == 0, err

    reader = _machine_env(tmp_path / "reader", s3_store_url)
    found = subprocess.run(_dsfs() + ["search", "--json", "-p", "team", "-n", "shared"],
                           env=reader, capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr
    rows = json.loads(found.stdout)
    assert sorted(r["id"] for r in rows) == sorted(ids)
    assert len({r["version"] for r in rows}) == WRITERS  # one claim each, none lost

    check = subprocess.run(_dsfs() + ["verify", ids[0]], env=reader, capture_output=True,
                           text=True, timeout=120)
    assert check.returncode == 0, check.stderr + check.stdout
    # Read back in this process (a fresh cache: nothing comes from the writers').
    for version_id, folder in zip(ids, folders, strict=True):
        ds = Dataset.get(dataset_id=version_id, store=s3_store_url,
                         cache_dir=str(tmp_path / "reader-cache"))
        assert _read_tree(Path(ds.get_local_copy())) == _read_tree(folder)
