"""The version-wide side of the pack span policy (issue 14): once cold lone
reads of a version have landed in ``DSFS_SPAN_SHUFFLED`` packs, every cold
lone read fetches its pack whole at the first touch, so a shuffled epoch costs
about a GET per pack (not two), through ``dsfs://`` and through a real mount;
fewer reads than that in a big version fetch only their own bytes.  And big
files make big packs (``dsfs.engine.packer``), so that a GET per pack is a GET
per many files.  GETs and bytes are counted by a proxy in front of a real moto
server."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fault_proxy import FaultProxy
from s3_support import make_client, new_bucket
from test_mount_support import mounted, needs_fuse, run

from dsfs import config
from dsfs.dataset import Dataset
from dsfs.engine import packer
from dsfs.engine.tree import TreeResolver
from dsfs.format.pack import HEADER_SIZE
from dsfs.fsspec import DsfsFileSystem
from dsfs.repository import Repository

FILES = 192
SIZE = 16 * 1024
#: Packs of 64 KiB (DSFS_PACK_SIZE): 4 files a pack, 48 packs.
PACK = 64 * 1024
PACKS = FILES * SIZE // PACK
REF = "train/many@1.0.0"
SHUFFLED = config.SPAN_SHUFFLED
#: GETs beyond one per pack that a shuffled epoch may cost: the lone reads
#: before the signal (a read at a pack's start does not count towards it: a
#: quarter of them here), scan windows, reads racing a pack's fetch.  The
#: per-pack rule alone costs about PACKS more (a lone read, then the pack).
LONE = 3 * SHUFFLED


@pytest.fixture(scope="module")
def many_packs(s3_endpoint: str | None, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[dict]:
    if s3_endpoint is None:
        pytest.skip("needs the local moto server (GETs counted by a proxy)")
    tmp = tmp_path_factory.mktemp("shuffled")
    client = make_client(s3_endpoint)
    url = f"s3://{new_bucket(client)}/store"
    client.close()
    src = tmp / "src"
    rng = random.Random(7)
    contents = {}
    for i in range(FILES):
        rel = f"d{i % 3}/f{i:05d}.bin"
        contents[rel] = rng.randbytes(SIZE)
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(contents[rel])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DSFS_DATA_DIR", str(tmp / "data"))
        mp.setenv("DSFS_PACK_SIZE", str(PACK))  # the setting, read by the packer
        ds = Dataset.create("train", "many", dataset_version="1.0.0", store=url,
                            cache_dir=str(tmp / "build-cache"))
        ds.add_files(str(src))
        ds.finalize()
    refs = TreeResolver(Repository.open(url, str(tmp / "build-cache"))).tree(ds.id)
    chunks = {rel: refs[rel].chunks[0] for rel in contents}
    assert len({c.pack_id for c in chunks.values()}) == PACKS
    with FaultProxy(s3_endpoint, lifetime=900) as proxy:
        yield {"url": url, "contents": contents, "chunks": chunks, "proxy": proxy,
               "id": ds.id, "tmp": tmp}


@pytest.fixture
def version(many_packs: dict, dsfs_env: dict[str, str],
            monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("AWS_ENDPOINT_URL", many_packs["proxy"].url)
    return many_packs


def _traffic(proxy: FaultProxy) -> tuple[int, int]:
    return proxy.stats.pack_gets, proxy.stats.pack_bytes_down


def _shuffled(names: list[str], seed: int = 1) -> list[str]:
    order = list(names)
    random.Random(seed).shuffle(order)
    return order


@pytest.mark.parametrize("shuffled", [SHUFFLED, 0])
def test_a_shuffled_epoch_fetches_each_pack_once_through_fsspec(
        version: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shuffled: int) -> None:
    """With the version-wide signal, about a GET per pack; without it
    (DSFS_SPAN_SHUFFLED=0: only the per-pack rule), about two."""
    monkeypatch.setenv("DSFS_SPAN_SHUFFLED", str(shuffled))
    contents, proxy = version["contents"], version["proxy"]
    fs = DsfsFileSystem(store=version["url"], cache_dir=str(tmp_path / "cold"),
                        skip_instance_cache=True)
    fs.info(REF)  # the manifest is read before counting
    gets, down = _traffic(proxy)
    order = _shuffled(sorted(contents))
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda rel: fs.cat(f"{REF}/{rel}"), order))
    fs.close()
    assert dict(zip(order, got, strict=True)) == contents
    gets, down = _traffic(proxy)[0] - gets, _traffic(proxy)[1] - down
    counters = Repository.open(version["url"], str(tmp_path / "cold")).cache.counters()
    seen = f"{gets} GETs for {PACKS} packs, {down} bytes for {FILES * SIZE}; {counters}"
    signalled = gets <= PACKS + LONE
    assert signalled == (shuffled > 0), seen
    # (the per-pack rule alone fetches the first file of each pack twice)
    assert (down <= 1.2 * FILES * SIZE) == (shuffled > 0), seen
    assert (counters.get("shuffled_spans", 0) >= PACKS - 2 * SHUFFLED) == (shuffled > 0), seen


@needs_fuse
def test_a_shuffled_epoch_fetches_each_pack_once_through_a_mount(
        version: dict, tmp_path: Path) -> None:
    contents, proxy = version["contents"], version["proxy"]
    env = {"AWS_ENDPOINT_URL": proxy.url, "DSFS_STORE": version["url"],
           "DSFS_DATA_DIR": str(tmp_path / "data"), "DSFS_CACHE_DIR": str(tmp_path / "cold")}
    mp = tmp_path / "m"
    with mounted(env, version["id"], mp):
        gets, down = _traffic(proxy)
        order = _shuffled(sorted(contents), seed=2)
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda rel: (mp / rel).read_bytes(), order))
        gets, down = _traffic(proxy)[0] - gets, _traffic(proxy)[1] - down
    assert dict(zip(order, got, strict=True)) == contents
    stats = json.loads(run(env, "cache", "stats", "--json", check=True).stdout)
    seen = f"{gets} GETs for {PACKS} packs, {down} bytes for {FILES * SIZE}; {stats}"
    assert gets <= PACKS + LONE, seen
    assert down <= 1.2 * FILES * SIZE, seen
    assert stats["shuffled_spans"] >= PACKS - 2 * SHUFFLED, seen
    assert stats["read_bytes"] == FILES * SIZE, seen
    text = run(env, "cache", "stats", check=True).stdout
    assert f"once {SHUFFLED} packs of a version" in text, text


def test_fewer_lone_reads_than_the_signal_fetch_only_their_bytes(
        version: dict, tmp_path: Path) -> None:
    """Reads in SHUFFLED - 1 different packs of a big version fetch exactly what
    they read; the next one, in one more pack, fetches its pack whole."""
    contents, chunks, proxy = version["contents"], version["chunks"], version["proxy"]
    lone: dict[str, str] = {}  # pack -> a file inside it, not at its start
    for rel in _shuffled(sorted(contents), seed=3):
        ref = chunks[rel]
        if ref.offset != HEADER_SIZE and ref.pack_id not in lone:
            lone[ref.pack_id] = rel
    picks = list(lone.values())[:SHUFFLED]
    fs = DsfsFileSystem(store=version["url"], cache_dir=str(tmp_path / "cold"),
                        skip_instance_cache=True)
    fs.info(REF)
    for rel in picks[:-1]:
        gets, down = _traffic(proxy)
        assert fs.cat(f"{REF}/{rel}") == contents[rel]
        assert (_traffic(proxy)[0] - gets, _traffic(proxy)[1] - down) == (1, SIZE), rel
    gets, down = _traffic(proxy)
    assert fs.cat(f"{REF}/{picks[-1]}") == contents[picks[-1]]
    gets, down = _traffic(proxy)[0] - gets, _traffic(proxy)[1] - down
    fs.close()
    assert gets == 1 and down >= PACK, (gets, down)
    counters = Repository.open(version["url"], str(tmp_path / "cold")).cache.counters()
    assert counters["shuffled_spans"] == 1, counters


def test_big_files_make_big_packs(tmp_path: Path, dsfs_env: dict[str, str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of BIG_CHUNK or more fill a pack to PACK_MIN_CHUNKS of them (up to
    DSFS_PACK_MAX_SIZE); small ones close it at DSFS_PACK_SIZE."""
    monkeypatch.setattr(packer, "BIG_CHUNK", 8 * 1024)
    monkeypatch.setenv("DSFS_PACK_SIZE", str(64 * 1024))
    monkeypatch.setenv("DSFS_PACK_MAX_SIZE", str(1024 * 1024))
    rng = random.Random(11)
    sizes = {"big": 16 * 1024, "small": 4 * 1024, "huge": 96 * 1024}
    for kind, size in sizes.items():
        for i in range(80):
            path = tmp_path / "src" / kind / f"f{i:03d}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(rng.randbytes(size))
    store = str(tmp_path / "store")
    for kind in sizes:
        ds = Dataset.create("p", kind, store=store, cache_dir=str(tmp_path / "cache"))
        ds.add_files(str(tmp_path / "src" / kind))
        ds.finalize()
        repo = Repository.open(store, str(tmp_path / "cache"))
        per_pack: dict[str, int] = {}
        for entry in TreeResolver(repo).tree(ds.id).values():
            for ref in entry.chunks:
                per_pack[ref.pack_id] = per_pack.get(ref.pack_id, 0) + 1
        full = sorted(per_pack.values())[1:]  # the last pack of a run may be short
        if kind == "big":  # 32 chunks of 16 KiB: 512 KiB packs, not 64 KiB ones
            assert full and min(full) >= packer.PACK_MIN_CHUNKS, per_pack
        elif kind == "small":  # 16 chunks make 64 KiB: closed there
            assert full and max(full) == 16, per_pack
        else:  # 32 chunks of 96 KiB would pass the 1 MiB limit: 11 of them
            assert full and max(full) == 11, per_pack
