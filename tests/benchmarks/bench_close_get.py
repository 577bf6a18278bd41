"""Benchmark: ``close`` and ``get`` on the local store against ``cp -r``.

Run by hand (not part of the test command):

    .venv/bin/python tests/benchmarks/bench_close_get.py [--repeat 3] [--small 10000]
        [--big-mib 1024] [--many 100000] [--workdir DIR]

Prints a table of medians over the repetitions and the ratio against the
baseline measured in the same run.  Aims (issue 2): close >= 0.5x the
throughput of ``cp -r``; a second ``get`` of an unchanged 100,000-file version
well under a second.  Page caches are dropped before each timed run where
possible (root), so every run reads from disk the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from dsfs.engine import versions
from dsfs.engine.materialize import copies_dir, local_copy, remove_copy
from dsfs.report import Reporter
from dsfs.repository import Repository


def drop_caches() -> None:
    subprocess.run(["sync"], check=False)
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def make_files(root: Path, count: int, size: int) -> list[Path]:
    """``count`` distinct files of ``size`` bytes in 100 directories (cheap
    to make: slices of one random block, each with its own number)."""
    block = os.urandom(size * 64)
    paths = []
    for i in range(count):
        path = root / f"d{i % 100:03d}" / f"f{i:06d}"
        if i < 100:
            path.parent.mkdir(parents=True, exist_ok=True)
        offset = (i * 4099) % (len(block) - size)
        path.write_bytes(block[offset : offset + size - 8] + i.to_bytes(8, "little"))
        paths.append(path)
    return paths


def make_big(root: Path, mib: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "big.bin", "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1024 * 1024))


def timed(action: Callable[[], object], prepare: Callable[[], object] | None = None,
          repeat: int = 3) -> float:
    samples = []
    for _ in range(repeat):
        if prepare:
            prepare()
        drop_caches()
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def cp_r(src: Path, dst: Path) -> None:
    subprocess.run(["cp", "-r", str(src), str(dst)], check=True)


def fresh_env(work: Path, tag: str) -> Repository:
    os.environ["DSFS_DATA_DIR"] = str(work / f"data-{tag}")
    os.environ["DSFS_CACHE_DIR"] = str(work / f"cache-{tag}")
    for sub in (f"data-{tag}", f"cache-{tag}", f"store-{tag}"):
        shutil.rmtree(work / sub, ignore_errors=True)
    return Repository.open(str(work / f"store-{tag}"))


def bench_close(work: Path, src: Path, tag: str, repeat: int) -> tuple[float, float, float]:
    def prepare() -> None:
        nonlocal repo
        repo = fresh_env(work, tag)
        shutil.rmtree(work / "cp-target", ignore_errors=True)

    repo = fresh_env(work, tag)
    close_s = timed(lambda: versions.sync(repo, str(src), "bench", tag, reporter=Reporter()),
                    prepare, repeat)
    cp_s = timed(lambda: cp_r(src, work / "cp-target"),
                 lambda: shutil.rmtree(work / "cp-target", ignore_errors=True), repeat)
    # close makes its packs durable before publishing; cp -r does not. cp -r
    # followed by sync is the like-for-like copy, shown for information.
    cp_sync_s = timed(lambda: (cp_r(src, work / "cp-target"), os.sync()),
                      lambda: shutil.rmtree(work / "cp-target", ignore_errors=True), repeat)
    shutil.rmtree(work / "cp-target", ignore_errors=True)
    return close_s, cp_s, cp_sync_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--small", type=int, default=10_000, help="files of 32 KiB")
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--many", type=int, default=100_000, help="files for the get test")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="dsfs-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        if args.small:
            small = work / "small"
            make_files(small, args.small, 32 * 1024)
            close_s, cp_s, cp_sync_s = bench_close(work, small, "small", args.repeat)
            mb = args.small * 32 * 1024 / 1e6
            rows.append((f"close {args.small} x 32 KiB", f"{mb / close_s:.0f} MB/s, "
                         f"{args.small / close_s:.0f} files/s", f"cp -r {mb / cp_s:.0f} MB/s",
                         cp_s / close_s, 0.5))
            rows.append(("  (baseline: cp -r; sync)", "", f"{mb / cp_sync_s:.0f} MB/s",
                         cp_sync_s / close_s, None))
            shutil.rmtree(small)

        if args.big_mib:
            big = work / "big"
            make_big(big, args.big_mib)
            close_s, cp_s, cp_sync_s = bench_close(work, big, "big", args.repeat)
            mb = args.big_mib * 1024 * 1024 / 1e6
            rows.append((f"close 1 x {args.big_mib} MiB", f"{mb / close_s:.0f} MB/s",
                         f"cp -r {mb / cp_s:.0f} MB/s", cp_s / close_s, 0.5))
            rows.append(("  (baseline: cp -r; sync)", "", f"{mb / cp_sync_s:.0f} MB/s",
                         cp_sync_s / close_s, None))
            shutil.rmtree(big)

        if args.many:
            many = work / "many"
            make_files(many, args.many, 1024)
            repo = fresh_env(work, "many")
            header = versions.sync(repo, str(many), "bench", "many").header

            def clear_copy() -> None:
                nonlocal repo
                shutil.rmtree(work / "cache-many", ignore_errors=True)
                repo = Repository.open(str(work / "store-many"))

            first_s = timed(lambda: local_copy(repo, header), clear_copy, args.repeat)
            second_s = timed(lambda: local_copy(repo, header), None, args.repeat)
            cp_s = timed(lambda: cp_r(many, work / "cp-target"),
                         lambda: shutil.rmtree(work / "cp-target", ignore_errors=True),
                         args.repeat)
            rows.append((f"first get of {args.many} files", f"{first_s:.2f} s",
                         f"cp -r {cp_s:.2f} s", cp_s / first_s, None))
            rows.append((f"second get of {args.many} files", f"{second_s * 1000:.1f} ms",
                         f"cp -r {cp_s:.2f} s", cp_s / second_s, None))
            remove_copy(copies_dir(repo))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nmedians of {args.repeat} runs (ratio = baseline time / dsfs time; >1 is faster)")
    print(f"{'benchmark':34} {'dsfs':28} {'baseline':22} {'ratio':>7}  aim")
    for name, ours, base, ratio, aim in rows:
        aim_text = f">= {aim}" if aim else ""
        if not ours:
            print(f"{name:34} {'':28} {base:22} {ratio:7.2f}")
            continue
        print(f"{name:34} {ours:28} {base:22} {ratio:7.2f}  {aim_text}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
