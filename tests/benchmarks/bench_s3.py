"""Benchmark: ``close`` and ``get`` into S3 (a local moto server) against plain boto3.

Run by hand (not part of the test command):

    /work/venv/bin/python tests/benchmarks/bench_s3.py [--repeat 3] [--small 10000]
        [--big-mib 1024]

The same sizes can be set with DSFS_BENCH_REPEAT, DSFS_BENCH_SMALL and
DSFS_BENCH_BIG_MIB; a quick run is ``--small 500 --big-mib 64 --repeat 1``.

What runs (issue 3), each against a baseline measured in the same run:

* ``close`` of N files of 32 KiB vs boto3 ``put_object`` of one object per
  file with 16 threads (aim: >= 3x faster);
* ``get`` of that version into an empty cache vs boto3 ``get_object`` of the
  N objects with 16 threads, written to files (aim: >= 2x faster);
* ``close`` / ``get`` of one big file vs boto3 ``upload_file`` /
  ``download_file`` (aim: >= 1x).

Times are medians of the repetitions.  Requests and bytes are counted on
every botocore client (hooks on ``before-send`` / ``after-call``): moto serves
a ranged GET by reading the whole object, so on moto wall time alone
misleads, while request counts and bytes hold for real S3 too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: s3_support

import boto3  # noqa: E402 - after the path set-up above
import botocore.session  # noqa: E402
from bench_close_get import make_files  # noqa: E402 - a sibling script
from boto3.s3.transfer import TransferConfig  # noqa: E402
from botocore.config import Config  # noqa: E402
from s3_support import aws_environment, make_client, moto_server  # noqa: E402

from dsfs.engine import versions  # noqa: E402
from dsfs.engine.materialize import local_copy  # noqa: E402
from dsfs.report import Reporter  # noqa: E402
from dsfs.repository import Repository  # noqa: E402

BASELINE_THREADS = 16


# -- request accounting --------------------------------------------------------------


class Traffic:
    """Requests (by HTTP method) and bytes of every botocore client in this process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.methods: Counter[str] = Counter()
        self.up = 0
        self.down = 0

    def reset(self) -> None:
        with self.lock:
            self.methods.clear()
            self.up = self.down = 0

    def snapshot(self) -> tuple[Counter[str], int, int]:
        with self.lock:
            return Counter(self.methods), self.up, self.down

    def before_send(self, request: Any, **_: Any) -> None:
        body = request.body
        size = len(body) if isinstance(body, bytes | bytearray) else int(
            request.headers.get("Content-Length", 0) or 0)
        with self.lock:
            self.methods[request.method] += 1
            self.up += size

    def after_call(self, http_response: Any, model: Any = None, **_: Any) -> None:
        # A HEAD reply announces the object's length but carries no body.
        if http_response is None or getattr(model, "name", "") == "HeadObject":
            return
        size = int(http_response.headers.get("Content-Length", 0) or 0)
        with self.lock:
            self.down += size


TRAFFIC = Traffic()
_create_client = botocore.session.Session.create_client


def _counting_create_client(self: Any, *args: Any, **kwargs: Any) -> Any:
    client = _create_client(self, *args, **kwargs)
    client.meta.events.register("before-send.s3", TRAFFIC.before_send)
    client.meta.events.register("after-call.s3", TRAFFIC.after_call)
    return client


botocore.session.Session.create_client = _counting_create_client  # type: ignore[method-assign]


# -- data --------------------------------------------------------------------------------


def make_big(root: Path, mib: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "big.bin"
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1024 * 1024))
    return path


# -- measuring ---------------------------------------------------------------------------


class Result:
    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.traffic: tuple[Counter[str], int, int] = (Counter(), 0, 0)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def measure(action: Callable[[], object], prepare: Callable[[], object] | None,
            repeat: int) -> Result:
    result = Result()
    for _ in range(repeat):
        if prepare:
            prepare()
        TRAFFIC.reset()
        start = time.perf_counter()
        action()
        result.seconds.append(time.perf_counter() - start)
        result.traffic = TRAFFIC.snapshot()  # the same every run; keep the last
    return result


def empty_bucket(client: Any, bucket: str) -> None:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})


class Bench:
    def __init__(self, work: Path, repeat: int) -> None:
        self.work = work
        self.repeat = repeat
        self.admin = make_client()
        self.bucket = "dsfs-bench"
        self.admin.create_bucket(Bucket=self.bucket)
        self.client = boto3.client("s3", config=Config(max_pool_connections=BASELINE_THREADS))
        self.run = 0

    def forget_runs(self) -> None:
        """Drop the caches and data of earlier runs (a 1 GiB get leaves 2 GiB)."""
        for path in self.work.glob("cache-*"):
            shutil.rmtree(path, ignore_errors=True)
        for path in self.work.glob("data-*"):
            shutil.rmtree(path, ignore_errors=True)

    def fresh_repo(self, tag: str) -> Repository:
        """A new store prefix and new data and cache directories."""
        self.forget_runs()
        self.run += 1
        os.environ["DSFS_DATA_DIR"] = str(self.work / f"data-{tag}-{self.run}")
        os.environ["DSFS_CACHE_DIR"] = str(self.work / f"cache-{tag}-{self.run}")
        return Repository.open(f"s3://{self.bucket}/dsfs-{tag}-{self.run}")

    def fresh_cache(self, store_url: str, tag: str) -> Repository:
        self.forget_runs()
        self.run += 1
        cache = self.work / f"cache-{tag}-{self.run}"
        return Repository.open(store_url, str(cache))

    def dsfs_close(self, src: Path, tag: str) -> tuple[Result, str, str]:
        """Time a close (sync) of ``src``; keep the last store for the get benchmark."""
        state: dict[str, Any] = {}

        def prepare() -> None:
            empty_bucket(self.admin, self.bucket)
            state["repo"] = self.fresh_repo(tag)
            _ = state["repo"].store_config  # the one-time store set-up is not timed

        def action() -> None:
            state["header"] = versions.sync(state["repo"], str(src), "bench", tag,
                                            reporter=Reporter()).header

        result = measure(action, prepare, self.repeat)
        return result, state["repo"].store.url, state["header"].id

    def dsfs_get(self, store_url: str, version_id: str, tag: str) -> Result:
        state: dict[str, Any] = {}

        def prepare() -> None:
            state["repo"] = self.fresh_cache(store_url, tag)
            state["header"] = state["repo"].header(version_id)  # catalog look-up: not timed

        return measure(lambda: local_copy(state["repo"], state["header"]), prepare,
                       self.repeat)

    def boto_put_each(self, paths: list[Path], root: Path) -> Result:
        def prepare() -> None:
            empty_bucket(self.admin, self.bucket)

        def put(path: Path) -> None:
            key = f"boto/{path.relative_to(root).as_posix()}"
            self.client.put_object(Bucket=self.bucket, Key=key, Body=path.read_bytes())

        def action() -> None:
            with ThreadPoolExecutor(BASELINE_THREADS) as pool:
                list(pool.map(put, paths))

        return measure(action, prepare, self.repeat)

    def boto_get_each(self, paths: list[Path], root: Path) -> Result:
        target = self.work / "boto-get"

        def prepare() -> None:
            shutil.rmtree(target, ignore_errors=True)

        def get(path: Path) -> None:
            rel = path.relative_to(root).as_posix()
            reply = self.client.get_object(Bucket=self.bucket, Key=f"boto/{rel}")
            dst = target / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(reply["Body"].read())

        def action() -> None:
            with ThreadPoolExecutor(BASELINE_THREADS) as pool:
                list(pool.map(get, paths))

        return measure(action, prepare, self.repeat)

    def boto_upload_file(self, path: Path) -> Result:
        return measure(lambda: self.client.upload_file(str(path), self.bucket, "boto/big",
                                                       Config=TransferConfig()),
                       lambda: empty_bucket(self.admin, self.bucket), self.repeat)

    def boto_download_file(self, path: Path) -> Result:
        target = self.work / "boto-big"
        return measure(lambda: self.client.download_file(self.bucket, "boto/big", str(target),
                                                         Config=TransferConfig()),
                       lambda: target.unlink(missing_ok=True), self.repeat)


def describe(result: Result) -> str:
    methods, up, down = result.traffic
    calls = " ".join(f"{m}:{n}" for m, n in sorted(methods.items()))
    return f"{calls}; up {up / 1e6:.1f} MB, down {down / 1e6:.1f} MB"


def main() -> None:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=int(env("DSFS_BENCH_REPEAT", "3")))
    parser.add_argument("--small", type=int, default=int(env("DSFS_BENCH_SMALL", "10000")),
                        help="number of 32 KiB files")
    parser.add_argument("--big-mib", type=int, default=int(env("DSFS_BENCH_BIG_MIB", "1024")))
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="dsfs-bench-s3-"))
    work.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, Result, Result, float]] = []
    with moto_server() as endpoint:
        for name in ("AWS_PROFILE", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"):
            os.environ.pop(name, None)
        os.environ.update(aws_environment(endpoint))
        bench = Bench(work, args.repeat)
        try:
            small = work / "small"
            paths = make_files(small, args.small, 32 * 1024)
            close, url, version_id = bench.dsfs_close(small, "small")
            get = bench.dsfs_get(url, version_id, "small")
            boto_put = bench.boto_put_each(paths, small)
            boto_get = bench.boto_get_each(paths, small)
            rows.append((f"close {args.small} x 32 KiB", close, boto_put, 3.0))
            rows.append((f"get {args.small} x 32 KiB", get, boto_get, 2.0))
            shutil.rmtree(small)

            big_dir = work / "big"
            big = make_big(big_dir, args.big_mib)
            close, url, version_id = bench.dsfs_close(big_dir, "big")
            get = bench.dsfs_get(url, version_id, "big")
            boto_up = bench.boto_upload_file(big)
            boto_down = bench.boto_download_file(big)
            rows.append((f"close 1 x {args.big_mib} MiB", close, boto_up, 1.0))
            rows.append((f"get 1 x {args.big_mib} MiB", get, boto_down, 1.0))
        finally:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\nS3 on a local moto server; medians of {args.repeat} run(s); "
          "ratio = boto3 time / dsfs time (>1: dsfs faster)")
    print(f"{'benchmark':24} {'dsfs s':>8} {'boto3 s':>8} {'ratio':>6} {'aim':>6}")
    for name, ours, base, aim in rows:
        ratio = base.median / ours.median
        flag = "" if ratio >= aim else "  (below aim)"
        print(f"{name:24} {ours.median:8.2f} {base.median:8.2f} {ratio:6.2f} {'>=' + str(aim):>6}"
              f"{flag}")
    print("\nrequests and bytes per run (dsfs | boto3)")
    for name, ours, base, _aim in rows:
        print(f"{name:24} dsfs  {describe(ours)}")
        print(f"{'':24} boto3 {describe(base)}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
