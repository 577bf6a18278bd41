"""Benchmark (issue 14): a shuffled first epoch read cold from S3 by 8 worker
processes, through a mount and through ``dsfs://``, against boto3.

Run by hand (not part of the test command):

    .venv/bin/python tests/benchmarks/bench_training.py [--files 10000] [--size-kib 64]
        [--workers 8] [--repeat 1] [--seed 1] [--modes mount,fsspec]

A version of ``--files`` files of ``--size-kib`` (in 100 directories) is
stored in S3 on moto; the same files are also stored as one object each.
Every repetition, in turn (interleaved, so the load of the machine hits each
alike): boto3 reads every object (one GET a file), then each dsfs mode reads
every file with an empty cache.  The order is one seeded shuffle of all the
files, dealt round-robin to ``--workers`` processes, each reading its files
one after another.  All traffic goes through the counting proxy
(tests/fault_proxy.py with no faults), which reports GETs and bytes.
Aims: >= 3x boto3's speed, GETs <= files / 20, bytes fetched <= 1.2x the
data.  Mind that moto reads a whole object to serve any range and that
every process shares the machine's cores (note ``uptime`` with the figures).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
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
#: Seconds each fsspec worker spent resolving the version and indexing its tree.
SETUP: multiprocessing.SimpleQueue = multiprocessing.get_context("fork").SimpleQueue()


def run(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([DSFS, *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"dsfs {' '.join(args)} failed: {result.stderr}")
    return result.stdout


# -- the workers (each a process; a task is one worker's list of files) ---------------


def read_mounted(task: tuple[str, list[str]]) -> int:
    root, files = task
    total = 0
    for rel in files:
        with open(os.path.join(root, rel), "rb") as f:
            total += len(f.read())
    return total


def read_fsspec(task: tuple[dict[str, str], str, list[str]]) -> int:
    env, version, files = task
    os.environ.update(env)
    from dsfs.fsspec import DsfsFileSystem

    fs = DsfsFileSystem(skip_instance_cache=True)
    started = time.perf_counter()
    fs.info(version)  # resolve the version, index its tree: the worker's set-up
    SETUP.put(time.perf_counter() - started)
    try:
        return sum(len(fs.cat(f"{version}/{rel}")) for rel in files)
    finally:
        fs.close()


def read_boto3(task: tuple[str, list[str]]) -> int:
    endpoint, files = task
    client = boto3.client("s3", endpoint_url=endpoint)
    return sum(len(client.get_object(Bucket="bench", Key=f"plain/{rel}")["Body"].read())
               for rel in files)


def deal(files: list[str], workers: int, seed: int) -> list[list[str]]:
    order = list(files)
    random.Random(seed).shuffle(order)
    return [order[i::workers] for i in range(workers)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--size-kib", type=int, default=64)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--modes", default="mount,fsspec")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dsfs-bench-training-"))
    try:
        with moto_server() as endpoint:
            bench(work, endpoint, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench(work: Path, endpoint: str, args: argparse.Namespace) -> None:
    print(f"uptime at start: {os.popen('uptime').read().strip()}", flush=True)
    src = work / "src"
    rng = random.Random(args.seed)
    for i in range(args.files):
        path = src / f"d{i % 100:02d}" / f"f{i:06d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(args.size_kib * 1024))
    files = sorted(str(p.relative_to(src)) for p in src.rglob("*.bin"))
    proxy = FaultProxy(endpoint, rate=0.0, lifetime=24 * 3600).start()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DSFS_"))}
    env = {**base_env, **aws_environment(proxy.url),
           "DSFS_STORE": "s3://bench/ds", "DSFS_DATA_DIR": str(work / "data")}
    os.environ.update(aws_environment(proxy.url))
    client = boto3.client("s3", endpoint_url=proxy.url,
                          config=Config(max_pool_connections=args.workers))
    client.create_bucket(Bucket="bench")
    version = run({**env, "DSFS_CACHE_DIR": str(work / "cache-close")},
                  "sync", str(src), "-p", "bench", "-n", "epoch").strip().splitlines()[-1]
    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(lambda rel: client.upload_file(str(src / rel), "bench",
                                                     f"plain/{rel}"), files))
    shutil.rmtree(src)
    shares = deal(files, args.workers, args.seed)
    modes = [m for m in args.modes.split(",") if m]
    results: dict[str, list[tuple[float, int, int, float, int]]] = {m: [] for m in
                                                                    ["boto3", *modes]}
    data = len(files) * args.size_kib * 1024
    pool = multiprocessing.get_context("fork").Pool(args.workers)
    try:
        for round_ in range(args.repeat):
            for mode in ["boto3", *modes]:
                cache = work / f"cache-{mode}-{round_}"
                renv = {**env, "DSFS_CACHE_DIR": str(cache)}
                extra = 0.0
                mnt = work / f"mnt-{round_}"
                if mode == "mount":
                    mnt.mkdir()
                    started = time.perf_counter()
                    run(renv, "mount", version, str(mnt))
                    extra = time.perf_counter() - started
                gets, down = proxy.stats.methods["GET"], proxy.stats.bytes_down
                packs = proxy.stats.pack_gets
                started = time.perf_counter()
                try:
                    if mode == "boto3":
                        total = sum(pool.map(read_boto3, [(proxy.url, s) for s in shares]))
                    elif mode == "mount":
                        total = sum(pool.map(read_mounted, [(str(mnt), s) for s in shares]))
                    else:
                        total = sum(pool.map(read_fsspec, [(renv, version, s) for s in shares]))
                        setups = [SETUP.get() for _ in shares]
                        extra = statistics.median(setups)
                    took = time.perf_counter() - started
                finally:
                    if mode == "mount":
                        run(renv, "umount", str(mnt))
                assert total == data, (mode, total, data)
                results[mode].append((took, proxy.stats.methods["GET"] - gets,
                                      proxy.stats.bytes_down - down, extra,
                                      proxy.stats.pack_gets - packs))
                shutil.rmtree(cache, ignore_errors=True)
                print(f"  round {round_} {mode:6}: {took:7.2f} s, "
                      f"{results[mode][-1][1]} GETs ({results[mode][-1][4]} of packs), "
                      f"{results[mode][-1][2] / data:.3f} x data"
                      + (f" (+{extra:.1f} s to mount)" if mode == "mount" else "")
                      + (f" (of which {extra:.1f} s median set-up per worker: resolve, index)"
                         if mode == "fsspec" else ""), flush=True)
    finally:
        pool.terminate()
        proxy.stop()

    n = len(files)
    base = statistics.median(r[0] for r in results["boto3"])
    print(f"\nshuffled cold epoch: {n} files of {args.size_kib} KiB, {args.workers} worker "
          f"processes, medians of {args.repeat} (ratio = boto3 time / time; aim >= 3)")
    print(f"uptime at end: {os.popen('uptime').read().strip()}")
    for mode, rows in results.items():
        took = statistics.median(r[0] for r in rows)
        gets = statistics.median(r[1] for r in rows)
        fetched = statistics.median(r[2] for r in rows)
        pack_gets = statistics.median(r[4] for r in rows)
        print(f"  {mode:6}: {took:7.2f} s  ratio {base / took:5.2f}  GETs {gets:>7.0f} "
              f"({n / max(gets, 1):.1f} files per GET; aim >= 20; {pack_gets:.0f} of packs)"
              "  bytes fetched "
              f"{fetched / data:.3f} x data (aim <= 1.2)")


if __name__ == "__main__":
    main()
