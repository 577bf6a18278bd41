"""Benchmarks of the writable overlay (issue 5's ratios, in one run).

    python tests/benchmarks/bench_overlay.py [--big 1000000] [--small-version 10000]
        [--write-mib 1024] [--rsync-files 10000] [--only commit,write,rsync]

* ``commit``: commit of 10 changed files in a --big-file version against the
  same in a --small-version-file version (versions written as manifests
  directly, as in bench_mount.py); the time of ``dsfs commit`` as the user
  sees it (median of --rounds commits, each after ``sync`` so that writing
  back the set-up's files is not counted).  Target ratio <= 1.5.
* ``write``: --write-mib MiB written sequentially (1 MiB writes, then fsync)
  into the overlay against into a native directory on the same disk.
  Target >= 0.3.
* ``rsync``: ``rsync -a`` of --rsync-files small files into the overlay
  against into a native directory (medians of --rounds runs, each into a new
  directory, after ``sync``), and into a minimal writable pyfuse3
  passthrough (``passthrough.py``: the ceiling of any pyfuse3 file
  system here; rounds interleave the three).  Target >= 0.2 of native.  Noisy: on ext4 without a
  journal, inode allocation skips inodes deleted in the last minutes, so a
  run soon after another one's clean-up can see native times 3-4x longer
  (compare ``rsync_overlay_s`` across runs too).  Each file costs about 10
  FUSE requests with dsfs's pyfuse3 patch (lookups of the final and the
  temporary name, create, chmod, write, getattr, chown, utimens, the
  rename's lookup, rename; tests/test_fuse_requests.py) and about 13 with
  stock pyfuse3 (open and release too).

Run as root with /dev/fuse.  Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_mount import DSFS, fuse, open_repo, publish_version, seed_entries  # noqa: E402


def timed(func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


class Mount:
    def __init__(self, env: dict[str, str], ref: str, mnt: Path) -> None:
        self.env, self.ref, self.mnt = env, ref, mnt

    def __enter__(self) -> Path:
        self.mnt.mkdir(exist_ok=True)
        subprocess.run([DSFS, "mount", "--writable", "--overlay", self.mnt.name, self.ref,
                        str(self.mnt)], env=self.env, check=True, capture_output=True)
        return self.mnt

    def __exit__(self, *exc: object) -> None:
        subprocess.run([DSFS, "umount", str(self.mnt)], env=self.env, capture_output=True)


def bench_commit(args: argparse.Namespace, base: Path, env: dict[str, str],
                 results: dict) -> None:
    def dsfs(*a: str) -> None:
        subprocess.run([DSFS, *a], env=env, check=True, capture_output=True)

    seeds = seed_entries(dsfs, base, env)
    repo = open_repo(env)
    for label, count in (("small", args.small_version), ("big", args.big)):
        entries = [replace(seeds[i % len(seeds)], path=f"m{i // 100_000:02d}/"
                           f"d{(i // 1000) % 100:02d}/f{i:07d}") for i in range(count)]
        header = publish_version(repo, f"v{label}", entries)
        del entries
        with Mount(env, header.id, base / f"mnt-{label}") as mnt:
            times = []
            for _round in range(args.rounds):
                for i in range(10):
                    (mnt / "m00" / "d00" / f"f{i:07d}").write_bytes(os.urandom(1000))
                # what setting up wrote (a million-entry manifest, the mount's tree
                # memo) must not be written back inside the commit's fsyncs
                os.sync()
                start = time.perf_counter()
                out = subprocess.run([DSFS, "commit", str(mnt)], env=env, check=True,
                                     capture_output=True, text=True)
                times.append(time.perf_counter() - start)
            results[f"commit_{label}_s"] = statistics.median(times)
            results[f"commit_{label}_id"] = out.stdout.strip().splitlines()[-1]
    results["commit_ratio_big_over_small"] = results["commit_big_s"] / results["commit_small_s"]


def bench_write(args: argparse.Namespace, base: Path, env: dict[str, str],
                results: dict, ref: str) -> None:
    block = os.urandom(1 << 20)

    def write(path: Path) -> None:
        with open(path, "wb") as f:
            for _ in range(args.write_mib):
                f.write(block)
            f.flush()
            os.fsync(f.fileno())

    native = base / "native"
    native.mkdir(exist_ok=True)
    with Mount(env, ref, base / "mnt-write") as mnt:
        over = timed(lambda: write(mnt / "big.bin"))
    nat = timed(lambda: write(native / "big.bin"))
    results["write_mib"] = args.write_mib
    results["write_overlay_mib_s"] = args.write_mib / over
    results["write_native_mib_s"] = args.write_mib / nat
    results["write_ratio"] = nat / over


def bench_rsync(args: argparse.Namespace, base: Path, env: dict[str, str],
                results: dict, ref: str) -> None:
    src = base / "small-src"
    for i in range(args.rsync_files):
        path = src / f"d{i % 100:02d}" / f"f{i}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(512))
    def rsync(target: Path) -> float:
        os.sync()
        return timed(lambda: subprocess.run(["rsync", "-a", f"{src}/", f"{target}/"],
                                            check=True))

    # rounds interleave the three targets, so that a slow spell of the disk
    # (see the docstring) does not fall on one of them only
    times: dict[str, list[float]] = {"overlay": [], "passthrough": [], "native": []}
    backing = base / "pt-backing"
    backing.mkdir()
    passthrough = [sys.executable, str(Path(__file__).with_name("passthrough.py")),
                   str(backing)]
    with Mount(env, ref, base / "mnt-rsync") as mnt, \
            fuse([*passthrough, str(base / "mnt-pt")], base / "mnt-pt"):
        for r in range(args.rounds):
            times["overlay"].append(rsync(mnt / f"in{r}"))
            times["passthrough"].append(rsync(base / "mnt-pt" / f"in{r}"))
            times["native"].append(rsync(base / f"rsync-native{r}"))
    over, pt, nat = (statistics.median(times[k]) for k in ("overlay", "passthrough", "native"))
    results["rsync_files"] = args.rsync_files
    results["rsync_runs_s"] = times
    results["rsync_overlay_s"] = over
    results["rsync_passthrough_s"] = pt
    results["rsync_native_s"] = nat
    results["rsync_ratio"] = nat / over
    results["rsync_passthrough_ratio"] = nat / pt
    results["rsync_overlay_vs_passthrough"] = pt / over


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--small-version", type=int, default=10_000)
    parser.add_argument("--write-mib", type=int, default=1024)
    parser.add_argument("--rsync-files", type=int, default=10_000)
    parser.add_argument("--only", default="commit,write,rsync")
    parser.add_argument("--rounds", type=int, default=3, help="median of this many runs")
    args = parser.parse_args()
    only = set(args.only.split(","))
    base = Path(tempfile.mkdtemp(prefix="dsfs-bench-overlay-", dir="/var/tmp"))
    env = {**os.environ, "DSFS_DATA_DIR": str(base / "data"),
           "DSFS_CACHE_DIR": str(base / "cache"), "DSFS_STORE": str(base / "store")}
    results: dict = {}
    try:
        seed = base / "tiny"
        seed.mkdir()
        (seed / "x").write_text("x")
        subprocess.run([DSFS, "sync", str(seed), "-p", "bench", "-n", "tiny"], env=env,
                       check=True, capture_output=True)
        if "commit" in only:
            bench_commit(args, base, env, results)
        if "write" in only:
            bench_write(args, base, env, results, "bench/tiny")
        if "rsync" in only:
            bench_rsync(args, base, env, results, "bench/tiny")
    finally:
        for mnt in base.glob("mnt-*"):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(results, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
