"""``get`` and ``get --copy`` of many small files against ``tar -c | tar -x``,
interleaved in one run (issue 11; the disk and the machine's load swing).

    python tests/benchmarks/bench_get.py [--files 200000] [--per-dir 1000]
        [--tmpfs] [--rounds 2] [--old PYTHONPATH]

Publishes the tree once, then per round: a tar copy, ``get`` with an empty
cache (a fresh cache directory: the tree index is built too), ``get --copy``
with that cache, and again with ``--old`` (a checkout of older dsfs code put
first on PYTHONPATH) when given.  Prints seconds, peak RSS, the ratios to
the tar copy of the same round and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_mount import DSFS  # noqa: E402
from bench_scale import make_tree, run, scratch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--per-dir", type=int, default=1000)
    parser.add_argument("--tmpfs", action="store_true")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--old", default="", help="PYTHONPATH of older dsfs code to compare")
    args = parser.parse_args()
    results: dict = {"tmpfs": args.tmpfs, "files": args.files}
    with scratch(args.tmpfs) as base:
        src = base / "src"
        make_tree(src, args.files, args.per_dir)
        env = {"DSFS_STORE": str(base / "store"), "DSFS_DATA_DIR": str(base / "data"),
               "DSFS_CACHE_DIR": str(base / "cache-sync")}
        run([DSFS, "sync", str(src), "-p", "bench", "-n", "real"], env, results, "sync")
        sides = [("new", {})] + ([("old", {"PYTHONPATH": args.old})] if args.old else [])
        try:
            for r in range(args.rounds):
                tar = base / "tarcopy"
                run(["sh", "-c", f"mkdir {tar} && tar -C {src} -cf - . | tar -C {tar} -xf -"],
                    {}, results, f"r{r}_tar")
                shutil.rmtree(tar)
                for name, extra in sides:
                    cache = base / f"cache-{name}-{r}"
                    e = {**env, **extra, "DSFS_CACHE_DIR": str(cache)}
                    run([DSFS, "get", "bench/real"], e, results, f"r{r}_{name}_get")
                    copy = base / "copy"
                    run([DSFS, "get", "bench/real", "--copy", str(copy)], e, results,
                        f"r{r}_{name}_get_copy")
                    for gone in (copy, cache):
                        os.system(f"chmod -R u+w {gone} && rm -rf {gone}")
                    t = results[f"r{r}_tar_s"]
                    for label in ("get", "get_copy"):
                        results[f"r{r}_{name}_{label}_ratio"] = round(
                            t / results[f"r{r}_{name}_{label}_s"], 3)
        finally:
            results["loadavg"] = os.getloadavg()
            print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
