"""What the workers of a data loader starting together cost the store (issue
14): processes that open a version at the same moment on a machine that has
never seen it read its header from S3 once, not once each (they take turns on
a lock file; the first fetches, the others read its copy).  Real moto server,
the counting proxy in between."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fault_proxy import FaultProxy
from s3_support import s3_available

from dsfs.dataset import Dataset
from dsfs.repository import Repository

pytestmark = pytest.mark.skipif(not s3_available(), reason="no S3 endpoint (moto not installed)")

WORKERS = 8


def test_workers_starting_together_read_a_header_once(
        bucket: str, proxy: FaultProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"s3://{bucket}/store"
    monkeypatch.setenv("DSFS_STORE", url)
    monkeypatch.setenv("DSFS_CACHE_DIR", str(tmp_path / "writer-cache"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"a")
    ds = Dataset.create("p", "n")
    ds.add_files(str(src))
    ds.finalize()
    version_id = ds.id
    # one cold cache, as on a new machine; each worker has its own repository
    repos = [Repository.open(url, tmp_path / "cache") for _ in range(WORKERS)]
    for repo in repos:
        assert repo.store_id  # the store's config is read before, not counted
    barrier = threading.Barrier(WORKERS)
    before = proxy.stats.gets_by_kind["versions"]

    def start(repo: Repository) -> str:
        barrier.wait()
        return repo.header(version_id).id

    with ThreadPoolExecutor(WORKERS) as pool:
        assert list(pool.map(start, repos)) == [version_id] * WORKERS
    assert proxy.stats.gets_by_kind["versions"] - before == 1
    for repo in repos:
        repo.store.close()
