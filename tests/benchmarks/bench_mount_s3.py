"""Benchmark: cold reads through a mount from S3 (moto on 127.0.0.1) against boto3.

Run by hand (not part of the test command):

    .venv/bin/python tests/benchmarks/bench_mount_s3.py [--files 10000] [--size-kib 64]
        [--readers 16] [--repeat 3]

A version of ``--files`` files of ``--size-kib`` is stored in S3; each
repetition mounts it with an empty cache and has ``--readers`` threads read
every file once.  The baseline downloads the same files, stored as one object
each, with the same number of boto3 threads.  Both go through a counting proxy
(tests/fault_proxy.py with no faults), which reports GET requests and bytes.
Aims (issue 4): one ranged GET per small file at most (a scan of a directory
makes it far fewer: the following files of a pack come with the same GET), no
bytes fetched beyond readahead, and wall time >= 1x the boto3 baseline.
Mind that moto reads a whole object to serve any range, which real S3 does not.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: helpers

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402
from fault_proxy import FaultProxy  # noqa: E402
from s3_support import aws_environment, moto_server  # noqa: E402

DSFS = str(Path(sys.executable).with_name("dsfs"))


def run(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([DSFS, *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"dsfs {' '.join(args)} failed: {result.stderr}")
    return result.stdout


def read_all(paths: list[Path], readers: int) -> float:
    def read(path: Path) -> int:
        with open(path, "rb") as f:
            return len(f.read())

    start = time.perf_counter()
    with ThreadPoolExecutor(readers) as pool:
        total = sum(pool.map(read, paths))
    elapsed = time.perf_counter() - start
    assert total == sum(p.stat().st_size for p in paths)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--size-kib", type=int, default=64)
    parser.add_argument("--readers", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dsfs-bench-s3mount-"))
    try:
        with moto_server() as endpoint:
            bench(work, endpoint, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench(work: Path, endpoint: str, args: argparse.Namespace) -> None:
    src = work / "src"
    for i in range(args.files):
        path = src / f"d{i % 100:02d}" / f"f{i:06d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(args.size_kib * 1024))
    files = sorted(p.relative_to(src) for p in src.rglob("*.bin"))
    proxy = FaultProxy(endpoint, rate=0.0, lifetime=24 * 3600).start()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DSFS_"))}
    env = {**base_env, **aws_environment(proxy.url)}
    client = boto3.client("s3", endpoint_url=proxy.url, region_name=env["AWS_REGION"],
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                          config=Config(max_pool_connections=args.readers))
    client.create_bucket(Bucket="bench")
    env.update(DSFS_STORE="s3://bench/ds", DSFS_DATA_DIR=str(work / "data"))
    version = run({**env, "DSFS_CACHE_DIR": str(work / "cache-close")},
                  "sync", str(src), "-p", "bench", "-n", "cold").strip().splitlines()[-1]
    with ThreadPoolExecutor(args.readers) as pool:
        list(pool.map(lambda rel: client.upload_file(str(src / rel), "bench",
                                                     f"plain/{rel}"), files))

    mount_times, gets, fetched, pack_gets = [], [], [], []
    for round_ in range(args.repeat):
        mnt = work / f"mnt{round_}"
        mnt.mkdir()
        renv = {**env, "DSFS_CACHE_DIR": str(work / f"cache{round_}")}
        run(renv, "mount", version, str(mnt))
        try:
            before = (proxy.stats.methods["GET"], proxy.stats.bytes_down,
                      proxy.stats.pack_gets)
            mount_times.append(read_all([mnt / rel for rel in files], args.readers))
            gets.append(proxy.stats.methods["GET"] - before[0])
            fetched.append(proxy.stats.bytes_down - before[1])
            pack_gets.append(proxy.stats.pack_gets - before[2])
        finally:
            run(renv, "umount", str(mnt))
        shutil.rmtree(work / f"cache{round_}", ignore_errors=True)

    boto_times, boto_gets = [], []
    for _ in range(args.repeat):
        before = proxy.stats.methods["GET"]
        start = time.perf_counter()
        with ThreadPoolExecutor(args.readers) as pool:
            list(pool.map(lambda rel: client.get_object(Bucket="bench", Key=f"plain/{rel}")
                          ["Body"].read(), files))
        boto_times.append(time.perf_counter() - start)
        boto_gets.append(proxy.stats.methods["GET"] - before)
    proxy.stop()

    n = len(files)
    data = n * args.size_kib * 1024
    ours, base = statistics.median(mount_times), statistics.median(boto_times)
    print(f"\ncold reads of {n} files of {args.size_kib} KiB by {args.readers} readers, "
          f"medians of {args.repeat} (ratio = boto3 time / dsfs time; >1 is faster)")
    print(f"  dsfs mount : {ours:7.2f} s   GETs {statistics.median(gets):>7.0f} "
          f"({statistics.median(gets) / n:.3f} per file; "
          f"{statistics.median(pack_gets):.0f} of packs)   bytes fetched "
          f"{statistics.median(fetched) / data:.3f} x the data")
    print(f"  boto3      : {base:7.2f} s   GETs {statistics.median(boto_gets):>7.0f}")
    print(f"  ratio      : {base / ours:7.2f}   (aim >= 1)")


if __name__ == "__main__":
    main()
