"""Benchmark: cold reads through a mount from S3 (moto on 127.0.0.1) against boto3.

Run by hand (not part of the test command):

    .venv/bin/python tests/benchmarks/bench_mount_s3.py [--files 10000] [--size-kib 64]
        [--readers 16] [--repeat 3]

A version of ``--files`` files of ``--size-kib`` is stored in S3; each
repetition mounts it with an empty cache and has ``--readers`` threads read
every file once.  The baseline downloads the same files, stored as one object
each, with the same number of boto3 threads.  Both go through a counting proxy
(tests/fault_proxy.py with no faults), which reports GET requests and bytes.
Mount and baseline rounds alternate, so the load of the machine hits both
alike.  Aims (issue 4): one ranged GET per small file at most (a scan of a directory
makes it far fewer: the following files of a pack come with the same GET), no
bytes fetched beyond readahead, and wall time >= 1x the boto3 baseline.
Mind that moto reads a whole object to serve any range, which real S3 does not.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from s3bench import BUCKET, PLAIN_PREFIX, S3Bench, run, s3_bench, uptime, write_files  # noqa: E402


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
        with s3_bench(work, args.readers) as s3:
            bench(work, s3, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench(work: Path, s3: S3Bench, args: argparse.Namespace) -> None:
    print(f"uptime at start: {uptime()}", flush=True)
    src = work / "src"
    files = write_files(src, args.files, args.size_kib)
    version = s3.sync(src, "cold", work / "cache-close")
    s3.upload_plain(src, files, args.readers)
    client = s3.client

    mount_times, gets, fetched, pack_gets = [], [], [], []
    boto_times, boto_gets = [], []
    for round_ in range(args.repeat):
        mnt = work / f"mnt{round_}"
        mnt.mkdir()
        renv = {**s3.env, "DSFS_CACHE_DIR": str(work / f"cache{round_}")}
        run(renv, "mount", version, str(mnt))
        try:
            before = s3.traffic()
            mount_times.append(read_all([mnt / rel for rel in files], args.readers))
            t = s3.traffic() - before
            gets.append(t.gets)
            fetched.append(t.bytes_down)
            pack_gets.append(t.pack_gets)
        finally:
            run(renv, "umount", str(mnt))
        shutil.rmtree(work / f"cache{round_}", ignore_errors=True)

        before = s3.traffic()
        start = time.perf_counter()
        with ThreadPoolExecutor(args.readers) as pool:
            list(pool.map(lambda rel: client.get_object(  # type: ignore[attr-defined]
                Bucket=BUCKET, Key=f"{PLAIN_PREFIX}/{rel}")["Body"].read(), files))
        boto_times.append(time.perf_counter() - start)
        boto_gets.append((s3.traffic() - before).gets)

    n = len(files)
    data = n * args.size_kib * 1024
    ours, base = statistics.median(mount_times), statistics.median(boto_times)
    print(f"\ncold reads of {n} files of {args.size_kib} KiB by {args.readers} readers, "
          f"medians of {args.repeat} (ratio = boto3 time / dsfs time; >1 is faster)")
    print(f"uptime at end: {uptime()}")
    print(f"  dsfs mount : {ours:7.2f} s   GETs {statistics.median(gets):>7.0f} "
          f"({statistics.median(gets) / n:.3f} per file; "
          f"{statistics.median(pack_gets):.0f} of packs)   bytes fetched "
          f"{statistics.median(fetched) / data:.3f} x the data")
    print(f"  boto3      : {base:7.2f} s   GETs {statistics.median(boto_gets):>7.0f}")
    print(f"  ratio      : {base / ours:7.2f}   (aim >= 1)")


if __name__ == "__main__":
    main()
