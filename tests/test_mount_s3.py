"""Cold reads through a real mount of a version in S3 (moto on 127.0.0.1, behind
the counting proxy): how many pack GETs and bytes each way of reading costs.

A lone read fetches that file's bytes and nothing more; a scan of a directory
(one reader in name order, or several readers sharing the files out) fetches
the files that follow in the pack with the same ranged GET, so it costs far
fewer GETs than files and never more bytes than it reads plus one window.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fault_proxy import FaultProxy
from s3_support import make_client, new_bucket, real_s3_url, s3_available
from test_mount_support import mounted, needs_fuse, run

from dsfs.content.scan import SCAN_WINDOW

pytestmark = [
    needs_fuse,
    pytest.mark.skipif(not s3_available(), reason="boto3/moto not installed"),
    pytest.mark.skipif(real_s3_url() is not None,
                       reason="counts requests through a proxy in front of moto"),
]

FILES = 64
SIZE = 24 * 1024


@pytest.fixture(scope="module")
def s3_dataset(s3_endpoint: str | None, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[dict]:
    assert s3_endpoint is not None
    base = tmp_path_factory.mktemp("s3mount")
    src = base / "src"
    (src / "scan").mkdir(parents=True)
    (src / "other").mkdir()
    for i in range(FILES):
        (src / "scan" / f"f{i:03d}.bin").write_bytes(os.urandom(SIZE))
    (src / "other" / "alone.bin").write_bytes(os.urandom(SIZE))
    client = make_client(s3_endpoint)
    bucket = new_bucket(client)
    client.close()
    with FaultProxy(s3_endpoint, lifetime=1800) as proxy:
        env = {"AWS_ENDPOINT_URL": proxy.url, "DSFS_STORE": f"s3://{bucket}/store",
               "DSFS_DATA_DIR": str(base / "data"), "DSFS_CACHE_DIR": str(base / "cache")}
        run(env, "sync", str(src), "-p", "proj", "-n", "cold", check=True)
        version_id = json.loads(run(env, "search", "--json", check=True).stdout)[0]["id"]
        yield {"env": env, "src": src, "id": version_id, "proxy": proxy}


def fresh(s3_dataset: dict, tmp_path: Path) -> dict[str, str]:
    """The dataset's store with an empty cache."""
    return {**s3_dataset["env"], "DSFS_CACHE_DIR": str(tmp_path / "cache"),
            "DSFS_DATA_DIR": str(tmp_path / "data")}


def pack_traffic(proxy: FaultProxy) -> tuple[int, int]:
    return proxy.stats.pack_gets, proxy.stats.pack_bytes_down


def scan_names() -> list[str]:
    return [f"scan/f{i:03d}.bin" for i in range(FILES)]


def test_lone_reads_fetch_their_own_bytes_only(s3_dataset: dict, tmp_path: Path) -> None:
    """Without the pack span policy (tests/test_spans.py checks it), reads that
    do not follow each other fetch their own bytes."""
    proxy, src = s3_dataset["proxy"], s3_dataset["src"]
    mp = tmp_path / "m"
    with mounted({**fresh(s3_dataset, tmp_path), "DSFS_SPAN_AFTER": "0"}, s3_dataset["id"], mp):
        gets, down = pack_traffic(proxy)
        for name in ("scan/f030.bin", "scan/f050.bin", "other/alone.bin", "scan/f010.bin"):
            assert (mp / name).read_bytes() == (src / name).read_bytes()
        after = pack_traffic(proxy)
        assert after == (gets + 4, down + 4 * SIZE)  # one GET per file, no over-fetch


def test_one_reader_scanning_a_directory_coalesces(s3_dataset: dict, tmp_path: Path) -> None:
    proxy, src = s3_dataset["proxy"], s3_dataset["src"]
    mp = tmp_path / "m"
    with mounted(fresh(s3_dataset, tmp_path), s3_dataset["id"], mp):
        gets, down = pack_traffic(proxy)
        for name in scan_names():  # as `cat scan/*` or a sequential data loader
            assert (mp / name).read_bytes() == (src / name).read_bytes()
        after_gets, after_down = pack_traffic(proxy)
    # the first file alone, then the rest in windows of SCAN_WINDOW
    windows = -(-(FILES - 1) * SIZE // SCAN_WINDOW)
    assert after_gets - gets == 1 + windows
    assert after_down - down == FILES * SIZE  # every byte once


def test_parallel_readers_share_the_windows(s3_dataset: dict, tmp_path: Path) -> None:
    proxy, src = s3_dataset["proxy"], s3_dataset["src"]
    mp = tmp_path / "m"
    with mounted(fresh(s3_dataset, tmp_path), s3_dataset["id"], mp):
        gets, down = pack_traffic(proxy)
        with ThreadPoolExecutor(8) as pool:
            same = list(pool.map(
                lambda name: (mp / name).read_bytes() == (src / name).read_bytes(),
                scan_names()))
        after_gets, after_down = pack_traffic(proxy)
    assert all(same)
    assert after_gets - gets <= FILES // 8
    assert FILES * SIZE <= after_down - down <= FILES * SIZE + SCAN_WINDOW


def test_a_warm_cache_fetches_nothing(s3_dataset: dict, tmp_path: Path) -> None:
    proxy, src = s3_dataset["proxy"], s3_dataset["src"]
    env = fresh(s3_dataset, tmp_path)
    with mounted(env, s3_dataset["id"], tmp_path / "m1") as _first:
        for name in scan_names():
            (tmp_path / "m1" / name).read_bytes()
    with mounted(env, s3_dataset["id"], tmp_path / "m2"):
        before = pack_traffic(proxy)
        for name in reversed(scan_names()):
            assert (tmp_path / "m2" / name).read_bytes() == (src / name).read_bytes()
        assert pack_traffic(proxy) == before


def test_a_corrupt_neighbour_fails_only_its_own_read(
        s3_endpoint: str | None, tmp_path: Path) -> None:
    """A window that meets a chunk corrupt in the store is fetched again without
    it: the sound files read, the corrupt one gets EIO."""
    import errno

    from dsfs.engine.tree import TreeResolver
    from dsfs.format.pack import pack_key
    from dsfs.repository import Repository

    assert s3_endpoint is not None
    src = tmp_path / "src"
    src.mkdir()
    for i in range(8):
        (src / f"g{i}.bin").write_bytes(os.urandom(SIZE))
    client = make_client(s3_endpoint)
    bucket = new_bucket(client)
    env = {"DSFS_STORE": f"s3://{bucket}/store", "DSFS_DATA_DIR": str(tmp_path / "data"),
           "DSFS_CACHE_DIR": str(tmp_path / "cache")}
    run(env, "sync", str(src), "-p", "proj", "-n", "hurt", check=True)
    version_id = json.loads(run(env, "search", "--json", check=True).stdout)[0]["id"]
    repo = Repository.open(env["DSFS_STORE"], env["DSFS_CACHE_DIR"])
    bad = TreeResolver(repo).tree(version_id)["g2.bin"].chunks[0]
    key = f"store/{pack_key(bad.pack_id)}"
    pack = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    pack[bad.offset + 100] ^= 0xFF
    client.put_object(Bucket=bucket, Key=key, Body=bytes(pack))
    client.close()

    mp = tmp_path / "m"
    with mounted({**env, "DSFS_CACHE_DIR": str(tmp_path / "cold")}, version_id, mp,
                 check_log=False):
        for i in range(8):
            if i == 2:
                with pytest.raises(OSError) as info:
                    (mp / "g2.bin").read_bytes()
                assert info.value.errno == errno.EIO
            else:  # g1's window holds g2: g1 still reads
                assert (mp / f"g{i}.bin").read_bytes() == (src / f"g{i}.bin").read_bytes()
    log = (tmp_path / "m.stderr").read_text()
    assert "Traceback" not in log and "corrupt" in log


def test_commit_whose_claim_the_store_cannot_confirm(s3_dataset: dict, tmp_path: Path) -> None:
    """The claim of a commit is written but its reply is lost, and the store
    stays down while the mount asks: the commit fails with exit code 8 and the
    edits in place; once the store is back, committing again reports the
    version that did get published, and makes no second one."""
    from fault_proxy import ScriptedFault

    proxy = s3_dataset["proxy"]
    env = {**fresh(s3_dataset, tmp_path), "DSFS_SETTLE_SECONDS": "2",
           "AWS_MAX_ATTEMPTS": "2"}
    mp = tmp_path / "w"

    def versions() -> set[str]:
        return {v["id"] for v in json.loads(run(env, "search", "--json", check=True).stdout)}

    before = versions()
    with mounted(env, s3_dataset["id"], mp, "--writable"):
        (mp / "scan" / "new.txt").write_text("edit\n")
        proxy.add("drop_reply", method="PUT", path_contains="/names/",
                  then=ScriptedFault("500", path_contains="/names/", times=100_000))
        try:
            failed = run(env, "commit", str(mp), "-m", "first try")
        finally:
            proxy.clear()
        assert failed.returncode == 8, failed.stderr
        assert "cannot tell whether the commit got published" in failed.stderr
        assert "Traceback" not in failed.stderr
        status = json.loads(run(env, "status", "--json", str(mp), check=True).stdout)
        assert status["added"] == [{"path": "scan/new.txt", "kind": "file"}]
        published = versions() - before
        assert len(published) == 1  # the claim did get written

        again = run(env, "commit", str(mp), "-m", "first try", check=True)
        assert again.stdout.strip().splitlines()[-1] == next(iter(published))
        assert "got published after all" in again.stderr
        status = json.loads(run(env, "status", "--json", str(mp), check=True).stdout)
        assert status["added"] == status["modified"] == status["removed"] == []
        assert (mp / "scan" / "new.txt").read_text() == "edit\n"
    assert versions() - before == published
