"""Benchmark (issue 14): a shuffled first epoch read cold from S3 by 8 worker
processes, through a mount and through ``dsfs://``, against boto3.

Run by hand (not part of the test command):

    .venv/bin/python tests/benchmarks/bench_training.py [--files 10000] [--size-kib 64]
        [--workers 8] [--repeat 1] [--seed 1]
        [--modes mount,fsspec,fsspec-each,packs,packs-direct]

A version of ``--files`` files of ``--size-kib`` (in 100 directories) is
stored in S3 on moto; the same files are also stored as one object each.
Every repetition, in turn (interleaved, so the load of the machine hits each
alike): boto3 reads every object (one GET a file), and each mode reads with
an empty cache; each repetition starts one mode later than the one before
(the order matters: of two mounts alike, the one right after boto3 took
~10% longer, whichever ran first).  The order is one seeded shuffle of all the files, dealt
round-robin to ``--workers`` processes, each reading its files one after
another.  All traffic goes through the counting proxy (tests/fault_proxy.py
with no faults), which reports GETs (by kind) and bytes.

``mount`` reads through a mount made before the round (its time to mount is
reported, not counted).  ``fsspec`` is a data loader's pattern: the main
process opens the version through ``dsfs://`` (resolves it, indexes its
tree: reported, not counted, like the mount), then forks the workers, which
read through ``dsfs://`` filesystems of their own.  ``fsspec-each`` has
every worker open the version on its own, forked before (counted: each
resolves the version, three GETs, and waits for the tree index).  The boto3
workers are forked from a process that made a boto3 client, as a loader's
would be; the ``fsspec`` ones from one that opened dsfs's S3 store.
Aims: >= 3x boto3's speed, GETs <= files / 20, bytes fetched <= 1.2x the
data.

Two more modes measure what bounds any reader that fetches whole packs:
``packs`` has boto3 read every pack of the version whole (one GET a pack,
the same workers) through the proxy, ``packs-direct`` the same straight from
moto.  Each mode also reports the CPU seconds that moto, the proxy (this
process), the mount and the workers spent: the machine has few cores, shared.
``--profile DIR`` records them with py-spy (``DIR/<round>-<mode>-<role>.txt``;
the workers too in the fsspec mode, where they do the fetching;
collapsed stacks; it slows every mode down, so take no ratios from it).
Mind that moto reads a whole object to serve any range.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from s3bench import (  # noqa: E402
    PLAIN_PREFIX,
    S3Bench,
    get_objects,
    run,
    s3_bench,
    uptime,
    write_files,
)

#: Seconds each fsspec worker spent resolving the version and indexing its tree.
SETUP: multiprocessing.SimpleQueue = multiprocessing.get_context("fork").SimpleQueue()
TICKS = os.sysconf("SC_CLK_TCK")


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


def read_objects(task: tuple[str, list[str]]) -> int:
    return get_objects(*task)


def deal(files: list[str], workers: int, seed: int) -> list[list[str]]:
    order = list(files)
    random.Random(seed).shuffle(order)
    return [order[i::workers] for i in range(workers)]


# -- CPU accounting ----------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its reaped children, in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / TICKS


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with open(task / "children") as f:
            found += [int(p) for p in f.read().split()]
    return found


def mount_pid(mountpoint: Path) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"mount" in cmd and str(mountpoint).encode() in cmd:
                return int(entry.name)
    return None


def spy(out: Path, name: str, roles: dict[str, list[int]], gil: bool = False
        ) -> list[subprocess.Popen]:
    """py-spy recording each role's processes until interrupted (``gil``: only
    the samples of the thread holding the GIL)."""
    out.mkdir(parents=True, exist_ok=True)
    tool = str(Path(sys.executable).with_name("py-spy"))
    return [subprocess.Popen([tool, "record", "-p", str(pid), "-r", "40", "--nonblocking",
                              "--threads", *(["--gil"] if gil else []), "-f", "raw",
                              "-o", str(out / f"{name}-{role}{i}.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for role, pids in roles.items() if role != "workers" or "fsspec" in name
            for i, pid in enumerate(pids)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--size-kib", type=int, default=64)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--modes", default="mount,fsspec,fsspec-each,packs")
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--profile-gil", action="store_true",
                        help="with --profile: only samples that hold the GIL")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dsfs-bench-training-"))
    try:
        with s3_bench(work, args.workers) as s3:
            bench(work, s3, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench(work: Path, s3: S3Bench, args: argparse.Namespace) -> None:
    print(f"uptime at start: {uptime()}", flush=True)
    src = work / "src"
    files = write_files(src, args.files, args.size_kib, seed=args.seed)
    version = s3.sync(src, "epoch", work / "cache-close")
    s3.upload_plain(src, files, args.workers)
    shutil.rmtree(src)
    packs = s3.pack_keys()
    print(f"{len(files)} files of {args.size_kib} KiB in {len(packs)} packs", flush=True)
    shares = deal(files, args.workers, args.seed)
    pack_shares = deal(packs, args.workers, args.seed)
    plain = [[f"{PLAIN_PREFIX}/{rel}" for rel in share] for share in shares]
    modes = ["boto3", *[m for m in args.modes.split(",") if m]]
    results: dict[str, list[tuple[float, int, int, float, int]]] = {m: [] for m in modes}
    cpu: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    data = len(files) * args.size_kib * 1024
    moto = next(pid for pid in children(os.getpid()) if b"s3_support" in
                Path(f"/proc/{pid}/cmdline").read_bytes())
    # The workers are forked from here with boto3 imported (s3bench): import
    # dsfs's fsspec filesystem here too, so neither side's rounds pay imports.
    from dsfs.fsspec import DsfsFileSystem
    pool = multiprocessing.get_context("fork").Pool(args.workers)
    try:
        for round_ in range(args.repeat):
            # each round starts one mode later: the mode that runs right after
            # boto3 was measured ~10% slower than the one after it, in either order
            for mode in modes[round_ % len(modes):] + modes[:round_ % len(modes)]:
                cache = work / f"cache-{mode}-{round_}"
                renv = {**s3.env, "DSFS_CACHE_DIR": str(cache)}
                extra = 0.0
                mnt = work / f"mnt-{round_}"
                mounted = None
                opened, readers = None, pool
                if mode == "fsspec":  # the main process opens the version, then forks
                    started = time.perf_counter()
                    opened = DsfsFileSystem(skip_instance_cache=True, store=renv["DSFS_STORE"],
                                            cache_dir=renv["DSFS_CACHE_DIR"])
                    opened.info(version)
                    extra = time.perf_counter() - started
                    readers = multiprocessing.get_context("fork").Pool(args.workers)
                if mode == "mount":
                    mnt.mkdir()
                    started = time.perf_counter()
                    run(renv, "mount", version, str(mnt))
                    extra = time.perf_counter() - started
                    mounted = mount_pid(mnt)
                roles = {"moto": [moto], "proxy": [os.getpid()],
                         "workers": [p.pid for p in readers._pool],  # type: ignore[attr-defined]
                         "mount": [mounted] if mounted else []}
                before_cpu = {r: sum(cpu_seconds(p) for p in pids) for r, pids in roles.items()}
                spies = [] if args.profile is None else spy(args.profile, f"{round_}-{mode}",
                                                            roles, args.profile_gil)
                before = s3.traffic()
                started = time.perf_counter()
                try:
                    if mode == "boto3":
                        total = sum(pool.map(read_objects, [(s3.proxy.url, s) for s in plain]))
                    elif mode == "mount":
                        total = sum(pool.map(read_mounted, [(str(mnt), s) for s in shares]))
                    elif mode in ("fsspec", "fsspec-each"):
                        total = sum(readers.map(read_fsspec,
                                                [(renv, version, s) for s in shares]))
                        if mode == "fsspec-each":
                            extra = statistics.median(SETUP.get() for _ in shares)
                        else:
                            for _ in shares:
                                SETUP.get()
                    elif mode in ("packs", "packs-direct"):
                        url = s3.proxy.url if mode == "packs" else s3.endpoint
                        total = sum(pool.map(read_objects, [(url, s) for s in pack_shares]))
                    else:
                        raise SystemExit(f"unknown mode {mode}")
                    took = time.perf_counter() - started
                    cpu[mode].append({r: sum(cpu_seconds(p) for p in pids) - before_cpu[r]
                                      for r, pids in roles.items()})
                finally:
                    for proc in spies:
                        proc.send_signal(signal.SIGINT)
                        proc.wait()
                    if mode == "mount":
                        run(renv, "umount", str(mnt))
                    if opened is not None:
                        readers.terminate()
                        opened.close()
                if mode.startswith("packs"):
                    data_here = total  # the packs' bytes: data plus their indexes
                else:
                    assert total == data, (mode, total, data)
                    data_here = data
                t = s3.traffic() - before
                results[mode].append((took, t.gets, t.bytes_down, extra, t.pack_gets))
                shutil.rmtree(cache, ignore_errors=True)
                used = ", ".join(f"{r} {s:.1f}" for r, s in cpu[mode][-1].items() if s)
                print(f"  round {round_} {mode:12}: {took:7.2f} s, {t.gets} GETs "
                      f"({t.pack_gets} of packs), {t.bytes_down / data:.3f} x data, "
                      f"{data_here / took / 2**20:.0f} MiB/s; CPU s: {used}"
                      + (f" (+{extra:.1f} s to mount)" if mode == "mount" else "")
                      + (f" (of which {extra:.1f} s median set-up per worker: resolve, index)"
                         if mode == "fsspec-each" else "")
                      + (f" (+{extra:.1f} s to open the version in the main process)"
                         if mode == "fsspec" else ""), flush=True)
                if mode in ("mount", "fsspec", "fsspec-each"):
                    print("      GETs by kind: " + ", ".join(
                        f"{kind} {n}" for kind, n in t.kinds.most_common()), flush=True)
    finally:
        pool.terminate()

    n = len(files)
    base = statistics.median(r[0] for r in results["boto3"])
    print(f"\nshuffled cold epoch: {n} files of {args.size_kib} KiB ({len(packs)} packs), "
          f"{args.workers} worker processes, medians of {args.repeat} "
          "(ratio = boto3 time / time; aim >= 3)")
    print(f"uptime at end: {uptime()}")
    for mode, rows in results.items():
        took = statistics.median(r[0] for r in rows)
        gets = statistics.median(r[1] for r in rows)
        fetched = statistics.median(r[2] for r in rows)
        pack_gets = statistics.median(r[4] for r in rows)
        print(f"  {mode:12}: {took:7.2f} s  ratio {base / took:5.2f}  GETs {gets:>7.0f} "
              f"({n / max(gets, 1):.1f} files per GET; aim >= 20; {pack_gets:.0f} of packs)"
              "  bytes fetched "
              f"{fetched / data:.3f} x data (aim <= 1.2)")


if __name__ == "__main__":
    main()
