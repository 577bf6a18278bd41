"""Shared set-up of the benchmarks that read from S3 (bench_mount_s3.py,
bench_training.py): a moto server on 127.0.0.1 behind the counting proxy
(tests/fault_proxy.py, no faults), a bucket, the environment for ``dsfs``
commands, files of random bytes, a version of them and the same files as one
object each (the boto3 baseline), and the proxy's counts.

Not a test module: imported by the benchmarks, which put tests/ on the path.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: helpers

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402
from fault_proxy import FaultProxy  # noqa: E402
from s3_support import aws_environment, moto_server  # noqa: E402

DSFS = str(Path(sys.executable).with_name("dsfs"))
BUCKET = "bench"
#: Where the version's store lives in the bucket, and the plain objects.
STORE_PREFIX = "ds"
PLAIN_PREFIX = "plain"


def run(env: dict[str, str], *args: str) -> str:
    """Run ``dsfs ARGS`` with ``env``; its stdout, or exit with its stderr."""
    result = subprocess.run([DSFS, *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"dsfs {' '.join(args)} failed: {result.stderr}")
    return result.stdout


def uptime() -> str:
    return os.popen("uptime").read().strip()


def write_files(src: Path, files: int, size_kib: int, seed: int | None = None) -> list[str]:
    """``files`` files of ``size_kib`` random bytes in 100 directories; their
    paths relative to ``src``, sorted."""
    rng = random.Random(seed)
    for i in range(files):
        path = src / f"d{i % 100:02d}" / f"f{i:06d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size_kib * 1024))
    return sorted(str(p.relative_to(src)) for p in src.rglob("*.bin"))


@dataclass(frozen=True)
class Traffic:
    """The proxy's counts at one moment (subtract two for what happened between)."""

    gets: int
    bytes_down: int
    pack_gets: int
    #: GETs by kind (``fault_proxy.get_kind``: packs, versions, list ...).
    kinds: Counter[str] = field(default_factory=Counter)

    def __sub__(self, other: Traffic) -> Traffic:
        return Traffic(self.gets - other.gets, self.bytes_down - other.bytes_down,
                       self.pack_gets - other.pack_gets, self.kinds - other.kinds)


@dataclass
class S3Bench:
    proxy: FaultProxy
    #: moto itself, not through the proxy (to measure what the proxy costs).
    endpoint: str
    #: For ``dsfs`` commands: the proxy as endpoint, the store, a data dir.
    env: dict[str, str]
    client: object

    def traffic(self) -> Traffic:
        stats = self.proxy.stats
        return Traffic(stats.methods["GET"], stats.bytes_down, stats.pack_gets,
                       Counter(stats.gets_by_kind))

    def sync(self, src: Path, name: str, cache: Path) -> str:
        """Store ``src`` as a version (project ``bench``); its id."""
        return run({**self.env, "DSFS_CACHE_DIR": str(cache)},
                   "sync", str(src), "-p", "bench", "-n", name).strip().splitlines()[-1]

    def upload_plain(self, src: Path, files: list[str], workers: int) -> None:
        """Each file as one object under ``plain/`` (the boto3 baseline)."""
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda rel: self.client.upload_file(  # type: ignore[attr-defined]
                str(src / rel), BUCKET, f"{PLAIN_PREFIX}/{rel}"), files))

    def pack_keys(self) -> list[str]:
        """The keys of the store's packs."""
        pages = self.client.get_paginator("list_objects_v2").paginate(  # type: ignore[attr-defined]
            Bucket=BUCKET, Prefix=f"{STORE_PREFIX}/packs/")
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


@contextmanager
def s3_bench(work: Path, connections: int) -> Iterator[S3Bench]:
    """moto, the counting proxy in front of it, a bucket; the environment for
    ``dsfs`` (and this process's AWS_* variables) pointing at the proxy."""
    with moto_server() as endpoint:
        proxy = FaultProxy(endpoint, rate=0.0, lifetime=24 * 3600).start()
        try:
            base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DSFS_"))}
            env = {**base, **aws_environment(proxy.url),
                   "DSFS_STORE": f"s3://{BUCKET}/{STORE_PREFIX}",
                   "DSFS_DATA_DIR": str(work / "data")}
            os.environ.update(aws_environment(proxy.url))
            client = boto3.client("s3", endpoint_url=proxy.url,
                                  config=Config(max_pool_connections=connections))
            client.create_bucket(Bucket=BUCKET)
            yield S3Bench(proxy, endpoint, env, client)
        finally:
            proxy.stop()


def get_objects(endpoint: str, keys: list[str]) -> int:
    """Read each object whole with one GET (a worker of the baseline); bytes read."""
    client = boto3.client("s3", endpoint_url=endpoint)
    return sum(len(client.get_object(Bucket=BUCKET, Key=key)["Body"].read()) for key in keys)
