"""Seeded kill -9 trials of the writable overlay (issue 10's crash campaign).

    python tests/benchmarks/bench_crash.py [--trials 500] [--first-seed 0] [--jobs 2]
        [--ops 40]

Each trial is ``tests/test_overlay_crash.py``'s ``run_trial``: random
create / write at offsets / truncate / unlink / rename (files and
directories, over existing targets) / mkdir / rmdir / symlink / chmod /
utimens on a fresh writable mount, mirrored on a native directory; ``kill
-9`` of the mount process after a random number of them (some files still
open, sometimes while a background fsync runs); remount; the tree must equal
the model (entries, bytes, sizes, symlink targets, modes); then ``dsfs
status`` must list exactly the model's changes, ``dsfs commit`` must succeed
and a read-only mount of the child must equal the model.  Trials run
``--jobs`` at a time (each has its own mount point and overlay).

Run as root with /dev/fuse.  Prints one JSON object: trials, passed, the
seeds that failed with the first line of their failure, seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS))

from test_mount_support import run  # noqa: E402
from test_overlay_crash import Trial, make_lower, run_trial  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--ops", type=int, default=40, help="at most this many operations")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="dsfs-bench-crash-"))
    env = {"DSFS_DATA_DIR": str(base / "data"), "DSFS_CACHE_DIR": str(base / "cache"),
           "DSFS_STORE": str(base / "store")}
    src = base / "src"
    make_lower(src)
    run(env, "sync", str(src), "-p", "bench", "-n", "crash", check=True)
    version = json.loads(run(env, "search", "--json", check=True).stdout)[0]["id"]
    failures: dict[int, str] = {}
    started = time.monotonic()

    def one(seed: int) -> None:
        work = base / f"trial-{seed}"
        work.mkdir()
        try:
            run_trial(Trial(seed=seed, env=env, version=version, src=src, work=work,
                            ops=args.ops))
        except (Exception, BaseException) as exc:  # noqa: BLE001 - pytest.fail is a BaseException
            if isinstance(exc, KeyboardInterrupt):
                raise
            lines = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            failures[seed] = lines.splitlines()[0][:300] if lines else type(exc).__name__
            print(f"seed {seed} failed:\n{lines[:4000]}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
            print(f"seed {seed} passed", file=sys.stderr, flush=True)

    seeds = range(args.first_seed, args.first_seed + args.trials)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(one, seeds))
    print(json.dumps({"trials": args.trials, "passed": args.trials - len(failures),
                      "failed_seeds": {str(k): v for k, v in sorted(failures.items())},
                      "seconds": round(time.monotonic() - started, 1),
                      "work": str(base) if failures else None}, indent=1))
    if not failures:
        shutil.rmtree(base, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    os.umask(0o022)
    main()
