"""Sharded workers (issue 14): ``Dataset.shard`` gives each of N workers a
stable, disjoint, byte-balanced share; the loader of the README's PyTorch
example, run in forked worker processes that read through ``dsfs://``, sees
every file once and fetches each byte about once; ``dsfs prefetch --part``
fills the cache with one share."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import random
from pathlib import Path

import fsspec
import pytest

from dsfs.dataset import Dataset
from dsfs.engine import packer
from dsfs.errors import UsageError
from dsfs.fsspec import DsfsFileSystem
from dsfs.repository import Repository

WORKERS = 4


@pytest.fixture
def version(tmp_path: Path, dsfs_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
            ) -> dict[str, bytes]:
    monkeypatch.setenv("DSFS_STORE", str(tmp_path / "store"))
    monkeypatch.setattr(packer, "PACK_TARGET_SIZE", 256 * 1024)  # several packs
    rng = random.Random(11)
    contents = {}
    src = tmp_path / "src"
    for i in range(300):
        rel = f"c{i % 5}/img{i:04d}.bin"
        contents[rel] = rng.randbytes(rng.choice((10, 3000, 9000, 30_000)))
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(contents[rel])
    ds = Dataset.create("vision", "cats", dataset_version="2.0.0")
    ds.add_files(str(src))
    ds.finalize()
    return contents


def test_shards_are_stable_disjoint_complete_and_balanced(version: dict[str, bytes]) -> None:
    ds = Dataset.get(dataset_project="vision", dataset_name="cats")
    biggest = max(len(data) for data in version.values())
    for count in (1, 3, WORKERS, 7):
        shards = [ds.shard(i, count) for i in range(count)]
        files = [f for shard in shards for f in shard.files]
        assert sorted(files) == sorted(version) and len(set(files)) == len(files)
        share = sum(len(d) for d in version.values()) / count
        assert all(abs(shard.total_bytes - share) <= biggest + 1 for shard in shards)
        again = Dataset.get(dataset_project="vision", dataset_name="cats")
        assert [again.shard(i, count).files for i in range(count)] == [s.files for s in shards]
        assert [ds.list_files(part=i, num_parts=count) for i in range(count)] == [
            s.files for s in shards]
    shard = ds.shard(1, 3)
    assert shard.urls()[0] == f"dsfs://{ds.id}/{shard.files[0]}"
    assert shard.paths("/mnt/cats")[0] == f"/mnt/cats/{shard.files[0]}"
    for bad in ((3, 3), (-1, 2), (0, 0)):
        with pytest.raises(UsageError, match="index|count"):
            ds.shard(*bad)


# -- the loader of the README's PyTorch example, without torch --------------------------


def iterate_share(rank: int, world: int, seed: int, epoch: int) -> list[tuple[str, str]]:
    """What the example's ``__iter__`` does in worker ``rank`` of ``world``:
    its share, in a seeded shuffled order, read through dsfs://."""
    shard = Dataset.get(dataset_project="vision", dataset_name="cats",
                        dataset_version="2.0.0").shard(rank, world)
    urls = shard.urls()
    random.Random(seed * 1000 + epoch).shuffle(urls)
    out = []
    for url in urls:
        with fsspec.open(url, "rb") as f:
            out.append((url.split("/", 3)[3], hashlib.sha256(f.read()).hexdigest()))
    return out


def _worker(args: tuple[int, int]) -> list[tuple[str, str]]:
    if "dsfs" not in fsspec.available_protocols():
        fsspec.register_implementation("dsfs", DsfsFileSystem, clobber=True)
    rank, world = args
    try:
        return iterate_share(rank, world, seed=7, epoch=0)
    finally:  # a pool's worker is killed, not closed: count its reads now
        fsspec.filesystem("dsfs").close()


def test_forked_workers_read_their_shares_once(version: dict[str, bytes],
                                                tmp_path: Path) -> None:
    if "dsfs" not in fsspec.available_protocols():
        fsspec.register_implementation("dsfs", DsfsFileSystem, clobber=True)
    # the parent uses dsfs before forking, as a training script does
    assert fsspec.filesystem("dsfs").cat("vision/cats@2.0.0/c0/img0000.bin") == \
        version["c0/img0000.bin"]
    with multiprocessing.get_context("fork").Pool(WORKERS) as pool:
        results = pool.map(_worker, [(rank, WORKERS) for rank in range(WORKERS)])
    seen = [item for result in results for item in result]
    assert sorted(path for path, _digest in seen) == sorted(version)
    assert dict(seen) == {p: hashlib.sha256(d).hexdigest() for p, d in version.items()}
    orders = [[p for p, _d in result] for result in results]
    assert all(order != sorted(order) for order in orders if len(order) > 3)  # shuffled
    counters = Repository.open().cache.counters()
    data = sum(len(d) for d in version.values())
    assert counters["read_bytes"] >= data
    assert counters["fetched_bytes"] <= 1.3 * data, counters
    assert counters["gets"] <= len(version) // 4, counters


def test_prefetch_one_part(version: dict[str, bytes], run_dsfs) -> None:  # noqa: ANN001
    done = run_dsfs("prefetch", "vision/cats@2.0.0", "--part", "2", "--num-parts", "3",
                    check=True)
    assert "/s)" in done.stdout
    share = Dataset.get(dataset_project="vision", dataset_name="cats").shard(2, 3)
    stats = json.loads(run_dsfs("cache", "stats", "--json", check=True).stdout)
    assert stats["chunks"] == len(share.files)
    assert stats["bytes"] == share.total_bytes
    for args, word in ((("--part", "3", "--num-parts", "3"), "--part"),
                       (("--part", "1"), "--num-parts"),
                       (("c0", "--part", "0", "--num-parts", "2"), "not both")):
        bad = run_dsfs("prefetch", "vision/cats@2.0.0", *args)
        assert bad.returncode == 2 and word in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1


def _start_together(barrier) -> int:  # noqa: ANN001 - a multiprocessing Barrier
    barrier.wait()
    return len(Dataset.get(dataset_project="vision", dataset_name="cats").shard(0, 2).files)


def test_workers_starting_together_index_the_version_once(
        version: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dsfs.engine import treeindex

    index = Repository.open().cache.index
    index.clear_trees()  # the fixture's close indexed it: start cold
    log = tmp_path / "indexed.log"
    real = treeindex.index_version

    def counting(repo, header):  # noqa: ANN001, ANN202
        with open(log, "a") as f:
            f.write(f"{header.id}\n")
        return real(repo, header)

    monkeypatch.setattr(treeindex, "index_version", counting)
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(WORKERS)
    procs = [ctx.Process(target=_start_together, args=(barrier,))
             for _ in range(WORKERS)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [proc.exitcode for proc in procs] == [0] * WORKERS
    assert len(log.read_text().splitlines()) == 1
