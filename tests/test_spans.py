"""The pack span policy (issue 14): a shuffled first epoch fetches each pack
about once, a lone read fetches only what it reads, a version the cache
cannot hold is never fetched whole, and a corrupt chunk in a pack fetched
whole fails only its own read.  GETs are counted by a proxy in front of a
real moto server, and checked against the cache's own counters."""

from __future__ import annotations

import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fault_proxy import FaultProxy
from s3_support import make_client, new_bucket

from dsfs.dataset import Dataset
from dsfs.engine import packer
from dsfs.engine.tree import TreeResolver
from dsfs.errors import DsfsError
from dsfs.format.pack import pack_key
from dsfs.fsspec import DsfsFileSystem
from dsfs.repository import Repository

FILES = 256
SIZE = 16 * 1024
#: Packs of about 1 MiB here (16 MiB in use): 64 files a pack, 4 packs.
PACK = 1024 * 1024
REF = "train/shuffle@1.0.0"


def _build(tmp: Path, store: str, monkeypatch: pytest.MonkeyPatch, files: int = FILES
           ) -> dict[str, bytes]:
    monkeypatch.setattr(packer, "PACK_TARGET_SIZE", PACK)
    src = tmp / "src"
    rng = random.Random(5)
    contents = {}
    for i in range(files):
        rel = f"d{i % 4}/f{i:05d}.bin"
        contents[rel] = rng.randbytes(SIZE)
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(contents[rel])
    ds = Dataset.create("train", "shuffle", dataset_version="1.0.0", store=store,
                        cache_dir=str(tmp / "build-cache"))
    ds.add_files(str(src))
    ds.finalize()
    return contents


@pytest.fixture(scope="module")
def s3_built(s3_endpoint: str | None, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    if s3_endpoint is None:
        pytest.skip("needs the local moto server (GETs counted by a proxy)")
    tmp = tmp_path_factory.mktemp("spans")
    client = make_client(s3_endpoint)
    url = f"s3://{new_bucket(client)}/store"
    client.close()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DSFS_DATA_DIR", str(tmp / "data"))
        contents = _build(tmp, url, mp)
    with FaultProxy(s3_endpoint, lifetime=900) as proxy:
        yield url, contents, proxy


@pytest.fixture
def s3_version(s3_built, dsfs_env: dict[str, str], monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001, ANN201
    url, contents, proxy = s3_built
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    return url, contents, proxy


def _read_shuffled(fs: DsfsFileSystem, names: list[str], seed: int = 1,
                   threads: int = 4) -> dict[str, bytes]:
    order = list(names)
    random.Random(seed).shuffle(order)
    with ThreadPoolExecutor(threads) as pool:
        got = list(pool.map(lambda rel: fs.cat(f"{REF}/{rel}"), order))
    return dict(zip(order, got, strict=True))


def _fs(url: str, cache: Path) -> DsfsFileSystem:
    return DsfsFileSystem(store=url, cache_dir=str(cache), skip_instance_cache=True)


def test_a_shuffled_epoch_fetches_each_pack_about_once(s3_version, tmp_path: Path) -> None:  # noqa: ANN001
    url, contents, proxy = s3_version
    fs = _fs(url, tmp_path / "cold")
    fs.info(REF)  # the manifest is read before counting
    gets, down = proxy.stats.pack_gets, proxy.stats.pack_bytes_down
    assert _read_shuffled(fs, sorted(contents)) == contents
    gets, down = proxy.stats.pack_gets - gets, proxy.stats.pack_bytes_down - down
    fs.close()
    data = FILES * SIZE
    packs = -(-data // PACK)
    # per pack: a lone read, then the whole pack on the second (plus reads that
    # were already on their way when it was decided, or continued a scan)
    counters = Repository.open(url, str(tmp_path / "cold")).cache.counters()
    seen = f"{gets} GETs, {down} bytes down for {data}; counters {counters}"
    assert gets <= packs * 8 and gets <= FILES // 8, seen
    assert data <= down <= 1.2 * data, seen
    # the cache's counters saw what the proxy saw (less any retried request)
    assert gets - 2 <= counters["gets"] <= gets, seen
    assert counters["fetched_bytes"] <= down, seen
    assert counters["read_bytes"] == data and counters["span_fetches"] >= packs, seen


def test_without_spans_each_file_costs_a_get(s3_version, tmp_path: Path,  # noqa: ANN001
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    url, contents, proxy = s3_version
    monkeypatch.setenv("DSFS_SPAN_AFTER", "0")
    fs = _fs(url, tmp_path / "cold")
    fs.info(REF)
    gets = proxy.stats.pack_gets
    names = sorted(contents)[::3]
    assert _read_shuffled(fs, names) == {n: contents[n] for n in names}
    fs.close()
    # a shuffled order rarely continues a scan: about a GET per file
    assert proxy.stats.pack_gets - gets >= 0.8 * len(names)


def test_a_lone_read_fetches_only_its_bytes(s3_version, tmp_path: Path) -> None:  # noqa: ANN001
    url, contents, proxy = s3_version
    fs = _fs(url, tmp_path / "cold")
    fs.info(REF)
    gets, down = proxy.stats.pack_gets, proxy.stats.pack_bytes_down
    assert fs.cat(f"{REF}/d1/f00101.bin") == contents["d1/f00101.bin"]
    assert (proxy.stats.pack_gets - gets, proxy.stats.pack_bytes_down - down) == (1, SIZE)
    fs.close()


def test_a_version_the_cache_cannot_hold_is_not_fetched_whole(
        s3_version, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    url, contents, proxy = s3_version
    monkeypatch.setenv("DSFS_CACHE_SIZE", str(FILES * SIZE))  # half of it is too small
    fs = _fs(url, tmp_path / "cold")
    fs.info(REF)
    down = proxy.stats.pack_bytes_down
    names = sorted(contents)[::4]  # 16 files a pack: spans would fetch every pack
    assert _read_shuffled(fs, names) == {n: contents[n] for n in names}
    fs.close()
    assert proxy.stats.pack_bytes_down - down <= 0.6 * FILES * SIZE
    assert Repository.open(url, str(tmp_path / "cold")).cache.counters().get(
        "span_fetches", 0) == 0


def test_a_corrupt_chunk_in_a_whole_pack_fails_only_its_read(
        tmp_path: Path, dsfs_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    store = str(tmp_path / "store")
    contents = _build(tmp_path, store, monkeypatch, files=64)
    repo = Repository.open(store, str(tmp_path / "look"))
    version = Dataset.get(dataset_project="train", dataset_name="shuffle", store=store,
                          cache_dir=str(tmp_path / "look"))
    bad = TreeResolver(repo).tree(version.id)["d2/f00010.bin"].chunks[0]
    path = Path(store) / pack_key(bad.pack_id)
    pack = bytearray(path.read_bytes())
    pack[bad.offset + 7] ^= 0x55
    os.chmod(path, 0o644)
    path.write_bytes(bytes(pack))
    fs = _fs(store, tmp_path / "cold")
    order = sorted(contents)
    random.Random(3).shuffle(order)
    for rel in order:
        if rel == "d2/f00010.bin":
            with pytest.raises(DsfsError, match="corrupt|cannot fetch"):
                fs.cat(f"{REF}/{rel}")
        else:
            assert fs.cat(f"{REF}/{rel}") == contents[rel]
    fs.close()
    assert Repository.open(store, str(tmp_path / "cold")).cache.counters()["span_fetches"] >= 1
