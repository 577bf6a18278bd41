"""The ``dsfs://`` fsspec filesystem (issue 14) on the local store and on S3
(moto): pandas and pyarrow read a version, fsspec's own calls (ls, find,
glob, info, cat_ranges, seek and read) agree with the files that went in,
writes are refused, and reads go through the shared cache."""

from __future__ import annotations

import errno
import io
import os
import random
from pathlib import Path

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from dsfs.dataset import Dataset
from dsfs.fsspec import DsfsFileSystem

REF = "vision/cats@1.0.1"


@pytest.fixture(autouse=True)
def _registered() -> None:
    """The entry point registers ``dsfs`` once dsfs is installed; a checkout run
    from source registers the same class by hand."""
    if "dsfs" not in fsspec.available_protocols():
        fsspec.register_implementation("dsfs", DsfsFileSystem, clobber=True)


def _source(root: Path) -> dict[str, bytes]:
    rng = random.Random(14)
    files: dict[str, bytes] = {}
    for i in range(40):
        files[f"train/{i:04d}.jpg"] = rng.randbytes(rng.randrange(1, 20_000))
    files["big/blob.bin"] = rng.randbytes(3 * 1024 * 1024 + 17)
    frame = pd.DataFrame({"name": [f"cat{i}" for i in range(200)],
                          "weight": [rng.random() for _ in range(200)]})
    files["labels.csv"] = frame.to_csv(index=False).encode()
    for part in range(3):
        table = pa.table({"part": [part] * 50, "value": list(range(part * 50, part * 50 + 50))})
        sink = io.BytesIO()
        pq.write_table(table, sink)
        files[f"tables/part-{part}.parquet"] = sink.getvalue()
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    os.symlink("labels.csv", root / "labels-link.csv")
    return files


@pytest.fixture
def version(store_url: str, tmp_path: Path) -> dict[str, bytes]:
    src = tmp_path / "src"
    files = _source(src)
    ds = Dataset.create("vision", "cats", dataset_version="1.0.1")
    ds.add_files(str(src))
    ds.finalize()
    return files


def test_pandas_and_pyarrow_read_a_version(version: dict[str, bytes], store_url: str) -> None:
    frame = pd.read_csv(f"dsfs://{REF}/labels.csv")
    assert frame.equals(pd.read_csv(io.BytesIO(version["labels.csv"])))
    # storage_options name the store instead of $DSFS_STORE
    again = pd.read_csv(f"dsfs://{REF}/labels.csv", storage_options={"store": store_url})
    assert again.equals(frame)
    fs = fsspec.filesystem("dsfs")
    table = pads.dataset(f"{REF}/tables", filesystem=fs, format="parquet").to_table()
    assert sorted(table.column("value").to_pylist()) == list(range(150))
    assert pq.read_table(f"{REF}/tables/part-1.parquet", filesystem=fs).num_rows == 50


def test_fsspec_calls_agree_with_the_files(version: dict[str, bytes]) -> None:
    fs = fsspec.filesystem("dsfs")
    assert sorted(fs.ls(REF, detail=False)) == sorted(
        f"{REF}/{name}" for name in ("big", "labels.csv", "labels-link.csv", "tables", "train"))
    found = fs.find(REF)
    assert sorted(found) == sorted([*(f"{REF}/{rel}" for rel in version),
                                    f"{REF}/labels-link.csv"])
    assert len(fs.glob(f"{REF}/train/00*.jpg")) == 40
    assert fs.glob(f"dsfs://{REF}/tables/*.parquet") == [
        f"{REF}/tables/part-{i}.parquet" for i in range(3)]
    info = fs.info(f"dsfs://{REF}/train/0007.jpg")
    assert (info["type"], info["size"]) == ("file", len(version["train/0007.jpg"]))
    assert fs.info(f"{REF}/train")["type"] == "directory"
    assert fs.info(f"{REF}/labels-link.csv")["destination"] == "labels.csv"
    assert fs.isdir(f"{REF}/tables") and not fs.exists(f"{REF}/nothing-here")

    blob = version["big/blob.bin"]
    paths = [f"{REF}/big/blob.bin", f"{REF}/train/0003.jpg", f"{REF}/big/blob.bin"]
    starts, ends = [2 * 1024 * 1024 - 5, 0, 100], [2 * 1024 * 1024 + 70_000, 10, 100]
    got = fs.cat_ranges(paths, starts, ends)
    assert got == [blob[starts[0]:ends[0]], version["train/0003.jpg"][:10], b""]
    with fs.open(f"{REF}/big/blob.bin") as f:
        f.seek(len(blob) - 100)
        assert f.read() == blob[-100:]
        f.seek(1234)
        assert f.read(4321) == blob[1234:1234 + 4321]
        assert f.tell() == 1234 + 4321
    with fsspec.open(f"dsfs://{REF}/big/blob.bin", "rb") as f:
        assert f.read() == blob
    assert fs.cat(f"{REF}/train/0011.jpg") == version["train/0011.jpg"]


def test_a_version_by_id_and_the_latest(version: dict[str, bytes]) -> None:
    fs = fsspec.filesystem("dsfs")
    version_id = fs.info(REF)["version_id"]
    assert fs.cat(f"{version_id}/labels.csv") == version["labels.csv"]
    assert fs.cat(f"{version_id[:12]}/labels.csv") == version["labels.csv"]
    assert fs.cat("vision/cats/labels.csv") == version["labels.csv"]


def test_forked_workers_read_the_version_their_parent_named(version: dict[str, bytes],
                                                           tmp_path: Path) -> None:
    """A data loader's workers (forked) keep the versions their main process
    resolved: a "latest" REF names the same version in every worker, even
    once a newer one is published, and is not resolved against the store
    again; a new filesystem of the parent's own process does resolve it."""
    fs = DsfsFileSystem(skip_instance_cache=True)
    named = fs.info("vision/cats")["version_id"]
    src = tmp_path / "newer"
    src.mkdir()
    (src / "labels.csv").write_bytes(b"newer\n")
    newer = Dataset.create("vision", "cats", dataset_version="1.0.2")
    newer.add_files(str(src))
    newer.finalize()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            worker = DsfsFileSystem(skip_instance_cache=True)  # a worker's own
            seen = worker.info("vision/cats")["version_id"]
            same = worker.cat("vision/cats/labels.csv") == version["labels.csv"]
            os.write(write, f"{seen} {same}".encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    answer = os.read(read, 200).decode()
    os.close(read)
    assert answer == f"{named} True"
    again = DsfsFileSystem(skip_instance_cache=True)
    assert again.info("vision/cats")["version_id"] != named
    assert again.cat("vision/cats/labels.csv") == b"newer\n"
    fs.close()
    again.close()


def test_writes_and_missing_paths_are_refused_clearly(version: dict[str, bytes]) -> None:
    fs = fsspec.filesystem("dsfs")
    attempts = [
        lambda: fs.open(f"{REF}/new.txt", "wb"),
        lambda: fsspec.open(f"dsfs://{REF}/labels.csv", "wb").open(),
        lambda: fs.pipe(f"{REF}/new.txt", b"x"),
        lambda: fs.rm(f"{REF}/labels.csv"),
        lambda: fs.mkdir(f"{REF}/newdir"),
        lambda: fs.open(f"{REF}/labels.csv", "ab"),
    ]
    for attempt in attempts:
        with pytest.raises(PermissionError) as caught:
            attempt()
        assert caught.value.errno == errno.EROFS and "read-only" in str(caught.value)
    with pytest.raises(FileNotFoundError):
        fs.cat(f"{REF}/train/nope.jpg")
    with pytest.raises(FileNotFoundError):
        fs.ls("vision/dogs@1.0.1")
    with pytest.raises(IsADirectoryError):
        fs.cat(f"{REF}/train")


def test_reads_fill_the_shared_cache_and_its_counters(version: dict[str, bytes],
                                                      run_dsfs) -> None:  # noqa: ANN001
    fs = DsfsFileSystem(skip_instance_cache=True)
    want = version["train/0021.jpg"]
    assert fs.cat(f"{REF}/train/0021.jpg") == want
    fs.close()  # flushes the counters
    stats = run_dsfs("cache", "stats", "--json", check=True)
    import json

    row = json.loads(stats.stdout)
    assert row["chunks"] >= 1
    assert row["read_bytes"] >= len(want) and row["gets"] >= 1
    assert row["fetched_bytes"] >= len(want)


@pytest.mark.parametrize("path", ["p/n@/f.txt", "p/n#/f.txt", "p/n@1.0#t/f.txt"])
def test_a_ref_the_cli_refuses_is_refused(path: str) -> None:
    """dsfs:// parses REFs as the CLI does: ``P/N@`` names no version (it is
    not the latest), and ``@`` and ``#`` are not combined."""
    from dsfs.errors import UsageError
    from dsfs.fsspec.session import split_path

    with pytest.raises(UsageError):
        split_path(path)
