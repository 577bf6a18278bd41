"""``get`` and ``get --copy`` of many small files against ``tar -c | tar -x``,
interleaved in one run (issue 11; the disk and the machine's load swing).

    python tests/benchmarks/bench_get.py [--files 200000] [--per-dir 1000]
        [--tmpfs | --both] [--rounds 2] [--old PYTHONPATH] [--settle SECONDS]

``--tmpfs`` puts the tree, the store, the caches and the copies on one
tmpfs (the disk's file-creation speed swings several-fold from minute to
minute); without it they are on the disk (the system's temporary directory);
``--both`` runs the tmpfs benchmark, then the disk one, and reports both.

Publishes the tree once, then per round: a tar copy, ``get`` with an empty
cache (a fresh cache directory: the tree index is built too), ``get --copy``
with that cache, a second tar copy, and again with ``--old`` (a checkout of
older dsfs code put first on PYTHONPATH) when given.  Each dsfs figure is
compared with the mean of the two tar copies around it (the machine's load
and the disk's speed drift).  Prints seconds, peak RSS, the ratios (tar
time / dsfs time: above 1 is faster than tar), their medians over the
rounds, and the load average before and after; the same ratios of CPU time
(user + system, workers included) as ``cpu_ratio``: on a machine shared
with other work the wall time swings with the load, the CPU time much less.

On a disk, every command runs right after a deletion of 200,000 to 400,000
files; ext4 without a journal skips the inodes freed in the last 60 s (300 s
more while their inode-table block is unwritten), scanning past each one
for every new file, so a copy whose directories follow the allocation front
into the freed inodes (tar's do) pays for it.  ``--settle SECONDS`` keeps
the copies of a round until its end, deletes them, then runs ``sync`` and
pauses: the first round then starts on a settled disk, but a freed inode
whose inode-table block a new file dirties again counts as recent for
another 360 s, so later rounds still meet the previous round's deletions
(200,000 files, --settle 65: tar 2.8-3.2 s in the first round, 9-23 s in
the second).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_mount import DSFS  # noqa: E402
from bench_scale import make_tree, run, scratch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--per-dir", type=int, default=1000)
    parser.add_argument("--tmpfs", action="store_true")
    parser.add_argument("--both", action="store_true", help="tmpfs, then disk")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--old", default="", help="PYTHONPATH of older dsfs code to compare")
    parser.add_argument("--settle", type=float, default=0.0,
                        help="delete a round's copies at its end, then sync and wait this long")
    args = parser.parse_args()
    if not args.both:
        print(json.dumps(bench(args, args.tmpfs), indent=2))
        return
    both = {}
    try:
        for where, tmpfs in (("tmpfs", True), ("disk", False)):
            both[where] = bench(args, tmpfs)
    finally:
        print(json.dumps(both, indent=2))
        for where, results in both.items():  # the summary: medians per side
            print(where, {k: v for k, v in results.items() if k.startswith("median")},
                  file=sys.stderr)


def bench(args: argparse.Namespace, tmpfs: bool) -> dict:
    """One benchmark (on a tmpfs or on the disk); returns its figures."""
    results: dict = {"tmpfs": tmpfs, "files": args.files, "loadavg_before": os.getloadavg()}
    with scratch(tmpfs) as base:
        src = base / "src"
        make_tree(src, args.files, args.per_dir)
        env = {"DSFS_STORE": str(base / "store"), "DSFS_DATA_DIR": str(base / "data"),
               "DSFS_CACHE_DIR": str(base / "cache-sync")}
        run([DSFS, "sync", str(src), "-p", "bench", "-n", "real"], env, results, "sync")
        sides = [("new", {})] + ([("old", {"PYTHONPATH": args.old})] if args.old else [])
        if args.settle:
            settle(args.settle)
        try:
            for r in range(args.rounds):
                kept: list[Path] = []  # --settle: deleted at the end of the round
                kept.append(tar_copy(src, base, results, f"r{r}_tar", bool(args.settle)))
                for name, extra in sides:
                    cache = base / f"cache-{name}-{r}"
                    e = {**env, **extra, "DSFS_CACHE_DIR": str(cache)}
                    run([DSFS, "get", "bench/real"], e, results, f"r{r}_{name}_get")
                    copy = base / f"copy-{name}-{r}"
                    run([DSFS, "get", "bench/real", "--copy", str(copy)], e, results,
                        f"r{r}_{name}_get_copy")
                    if args.settle:
                        kept += [copy, cache]
                    else:
                        remove(copy, cache)
                kept.append(tar_copy(src, base, results, f"r{r}_tar_after", bool(args.settle)))
                if args.settle:
                    remove(*kept)
                    settle(args.settle)
                for unit in ("s", "cpu_s"):  # wall time, and CPU time (steadier under load)
                    t = (results[f"r{r}_tar_{unit}"] + results[f"r{r}_tar_after_{unit}"]) / 2
                    kind = "ratio" if unit == "s" else "cpu_ratio"
                    for name, _extra in sides:
                        for label in ("get", "get_copy"):
                            results[f"r{r}_{name}_{label}_{kind}"] = round(
                                t / results[f"r{r}_{name}_{label}_{unit}"], 3)
            for name, _extra in sides:
                for label in ("get", "get_copy"):
                    for kind in ("ratio", "cpu_ratio"):
                        results[f"median_{name}_{label}_{kind}"] = statistics.median(
                            results[f"r{r}_{name}_{label}_{kind}"] for r in range(args.rounds))
        finally:
            results["loadavg"] = os.getloadavg()
    return results


def tar_copy(src: Path, base: Path, results: dict, label: str, keep: bool = False) -> Path:
    tar = base / f"tarcopy-{label}"
    run(["sh", "-c", f"mkdir {tar} && tar -C {src} -cf - . | tar -C {tar} -xf -"],
        {}, results, label)
    if not keep:
        shutil.rmtree(tar)
    return tar


def remove(*paths: Path) -> None:
    for gone in paths:  # get's copies are read-only
        os.system(f"chmod -R u+w {gone} && rm -rf {gone}")


def settle(seconds: float) -> None:
    """Let ext4 forget the inodes just freed (see the module docstring)."""
    os.sync()
    time.sleep(seconds)


if __name__ == "__main__":
    main()
