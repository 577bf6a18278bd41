"""Benchmarks of the FUSE request loop (issue 12), every figure against
baselines measured in the same run, in interleaved rounds (medians).

    python tests/benchmarks/bench_fuseloop.py [--only null,rsync,walk,read]
        [--stats 5000] [--null-rounds 15] [--pin-cpu 0] [--compare NAME=DIR]
        [--rsync-files 10000] [--walk-files 100000]
        [--read-files 2000] [--rounds 3] [--stock DIR] [--tmpfs-gib 6]

"patched" is this venv's pyfuse3 (dsfs's patch), "stock" the released
pyfuse3 put first on PYTHONPATH from --stock (``packaging/pyfuse3/build.sh
VENV --stock DIR``; default ``<venv>/pyfuse3-stock``): today's figure.

* ``null``: a stat(2) of the mount point of a file system that lets the
  kernel cache nothing (a GETATTR round trip each), in µs: a C libfuse
  low-level null file system compiled here (``nullfs_ll.c``, single-threaded
  loop), and its Python twin ``tests/pyfuse3_probe.py --null`` (``NullFS``,
  the same work per request) on patched and on stock pyfuse3 (and any
  ``--compare NAME=DIR`` build).  --null-rounds rounds of --stats stats, a
  new server process per round (idle for --null-settle seconds first), the
  order rotated; each round measured in
  two modes: ``spread`` (the scheduler places client and server: the aim's
  figure) and ``pinned`` (both on --pin-cpu: no idle core to wake, so the
  figure is the two sides' CPU work and context switches).  Aim: patched
  <= 1.3x C (``null_patched_over_c``: spread, ratio of medians).  Also the
  median of per-round ratios, the best rounds, and the CPU time of server
  and client per round trip from the scheduler's account.
* ``rsync``: ``rsync -a`` of --rsync-files files of 512 bytes into a native
  directory, into dsfs's writable overlay (patched and stock) and into
  fuse-overlayfs, all on one tmpfs (store, cache, overlay, upper layers,
  sources), each round into a new directory; and into ``floorfs.py``, the
  least a Python server on the same pyfuse3 loop can do (an in-memory tree,
  nothing durable: ``python_floor``), which bounds what any Python handlers
  can reach, and the same with the system calls of dsfs's crash-proof
  change path done plainly (a data file per new file, a journal line per
  change: ``python_floor_durable``).  Aims: dsfs >= 0.2x native and faster than fuse-overlayfs.
  Also CPU seconds of rsync plus the server (``rsync_cpu_s``;
  ``..._over_native_cpu`` is native's over each's), which a busy machine
  disturbs less than wall time.  Each round runs every kind
  twice: spread (the aims' figures, ``rsync_...``) and pinned (rsync's
  processes and the server on --pin-cpu, ``rsync_pinned_...``): on an idle
  VM every request of a spread run may wake a halted vCPU, so the spread
  figure swings with the machine's idleness, the pinned one is CPU work.
* ``walk``: ``os.walk`` + ``lstat`` of --walk-files files (100 directories)
  on a read-only mount, warm (after one untimed walk), against the native
  tree.  Aim: >= 0.8x native.
* ``read``: every one of --read-files 64 KiB files read with Python's
  ``open().read()`` on a fresh read-only mount (a new mount each round: the
  kernel's caches are cold, dsfs's chunk cache warm), patched against stock,
  spread (the aim's figure) and pinned (reader and server on --pin-cpu:
  ``read_pinned_...``), with the CPU seconds of reader and server.
  Aim: >= 1.5x stock.

Run as root (tmpfs, mounts).  Prints one JSON object with the load average
before and after each section (the machine is shared: note it with figures).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_mount import DSFS, fuse_process  # noqa: E402

HERE = Path(__file__).parent
PROBE = HERE.parent / "pyfuse3_probe.py"


def load() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def timed(func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def process_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) a process has used so far (0 without one)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """CPU seconds this process's waited-for children (rsync) have used."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_timed(func: Callable[[], object], server: int | None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, its children and ``server``)
    of ``func``: the CPU figure does not depend on how busy the machine is."""
    cpu = process_cpu(server) + children_cpu() + time.process_time()
    wall = timed(func)
    return wall, process_cpu(server) + children_cpu() + time.process_time() - cpu


@contextlib.contextmanager
def mounted(command: list[str], mountpoint: Path, env: dict[str, str] | None = None
            ) -> Iterator[Path]:
    with fuse_process(command, mountpoint, env):
        yield mountpoint


@contextlib.contextmanager
def serving(command: list[str], mountpoint: Path, env: dict[str, str] | None = None
            ) -> Iterator[int]:
    """Mount with ``command``; yields the server's process id."""
    with fuse_process(command, mountpoint, env) as (_ready, proc):
        yield proc.pid


def stock_env(stock: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(
        [str(stock), *filter(None, [os.environ.get("PYTHONPATH")])])}


def flavour(env: dict[str, str]) -> str:
    return subprocess.run(
        [sys.executable, "-c", "from dsfs.fuse.adapter import pyfuse3_build; "
         "print(pyfuse3_build())"], env={**os.environ, **env}, capture_output=True,
        text=True, check=True).stdout.strip()


# -- null round trip ------------------------------------------------------------------

def server_cpu_ns(pid: int) -> int:
    """CPU nanoseconds all threads of a process have run so far, from the
    scheduler's own account (exact, unlike the tick-sampled /proc/PID/stat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            total += int((task / "schedstat").read_text().split()[0])
    return total


def set_affinity(pid: int, cpus: set[int]) -> None:
    """Move every thread of ``pid`` onto ``cpus``."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task.name), cpus)


def null_round(mnt: Path, pid: int, n: int) -> tuple[float, float, float]:
    """``n`` stats of ``mnt``: µs per round trip of (wall, server CPU, client CPU)."""
    for _ in range(200):  # both sides awake and in their loops
        os.stat(mnt)
    server = server_cpu_ns(pid)
    client = time.thread_time_ns()
    start = time.perf_counter_ns()
    for _ in range(n):
        os.stat(mnt)
    wall = time.perf_counter_ns() - start
    client = time.thread_time_ns() - client
    server = server_cpu_ns(pid) - server
    return wall / n / 1e3, server / n / 1e3, client / n / 1e3


def bench_null(args: argparse.Namespace, base: Path, results: dict) -> None:
    """Interleaved rounds of ``--stats`` stats on each server, in two modes:
    ``spread`` (the scheduler places client and server: the aim's figure, and
    what a user sees; on an idle machine mostly the cost of waking an idle
    core) and ``pinned`` (client and server on one CPU: no idle core to wake,
    so the round trip is the CPU work of both sides plus two context
    switches).  Same client, same rounds, same order rotation for every
    server; per-round ratios (patched ÷ C in the same round) as well as
    ratios of medians."""
    exe = base / "nullfs_ll"
    cflags = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"], check=True,
                            capture_output=True, text=True).stdout.split()
    subprocess.run(["cc", "-O2", str(HERE / "nullfs_ll.c"), *cflags, "-o", str(exe)],
                   check=True)
    python = [sys.executable, str(PROBE), "--null"]
    kinds: dict[str, tuple[list[str], dict[str, str]]] = {
        "c_libfuse": ([str(exe)], {}),
        "pyfuse3_patched": (python, {}),
        "pyfuse3_stock": (python, stock_env(args.stock)),
    }
    for name, path in (c.split("=", 1) for c in args.compare):
        kinds[f"pyfuse3_{name}"] = (python, stock_env(Path(path)))
    modes = {"spread": None, "pinned": {args.pin_cpu}}
    everywhere = os.sched_getaffinity(0)
    n = args.stats
    out: dict[str, dict] = {}
    names = list(kinds)
    rows: dict[str, dict[str, list[tuple[float, float, float]]]] = {
        m: {k: [] for k in names} for m in modes}
    try:
        for r in range(args.null_rounds):
            # a new server process each round: one process's luck (its memory
            # layout) moves its figure by up to 10 %, so rounds sample many
            for kind in names[r % len(names):] + names[:r % len(names)]:
                cmd, env = kinds[kind]
                mnt = base / f"null-{kind}"
                with serving([*cmd, str(mnt)], mnt, env) as pid:
                    # right after mounting, a Python server's round trips in
                    # the spread mode took 80 µs for a while (seen at load 2,
                    # cause not found): measure servers settled, C's as well
                    time.sleep(args.null_settle)
                    for mode, cpus in modes.items():
                        target = cpus or everywhere
                        set_affinity(pid, target)
                        os.sched_setaffinity(0, target)
                        rows[mode][kind].append(null_round(mnt, pid, n))
                        set_affinity(pid, everywhere)
                        os.sched_setaffinity(0, everywhere)
    finally:
        os.sched_setaffinity(0, everywhere)
    for mode, by_kind in rows.items():
        res: dict[str, object] = {}
        for i, what in enumerate(("wall", "server_cpu", "client_cpu")):
            res[f"{what}_us"] = {k: statistics.median(r[i] for r in v)
                                 for k, v in by_kind.items()}
        res["wall_us_best"] = {k: min(r[0] for r in v) for k, v in by_kind.items()}
        res["wall_us_runs"] = {k: [round(r[0], 2) for r in v] for k, v in by_kind.items()}
        c = by_kind["c_libfuse"]
        for kind in names[1:]:
            py = by_kind[kind]
            short = kind.removeprefix("pyfuse3_")
            res[f"{short}_over_c"] = {
                "wall_median": res["wall_us"][kind] / res["wall_us"]["c_libfuse"],
                "wall_median_of_round_ratios": statistics.median(
                    p[0] / q[0] for p, q in zip(py, c, strict=True)),
                "wall_best": res["wall_us_best"][kind] / res["wall_us_best"]["c_libfuse"],
                "cpu_both_sides": ((res["server_cpu_us"][kind] + res["client_cpu_us"][kind])
                                   / (res["server_cpu_us"]["c_libfuse"]
                                      + res["client_cpu_us"]["c_libfuse"])),
                "cpu_server": res["server_cpu_us"][kind] / res["server_cpu_us"]["c_libfuse"],
            }
        out[mode] = res
    results["null_stats_per_round"] = n
    results["null_rounds"] = args.null_rounds
    results["null"] = out
    # the aim: the wall round trip as the scheduler places things, patched ÷ C
    results["null_patched_over_c"] = out["spread"]["patched_over_c"]["wall_median"]


# -- rsync into the writable overlay ------------------------------------------------------

def small_files(root: Path, count: int, size: int, dirs: int = 100) -> None:
    for i in range(count):
        path = root / f"d{i % dirs:02d}" / f"f{i}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))


def bench_rsync(args: argparse.Namespace, base: Path, env: dict[str, str],
                results: dict) -> None:
    src = base / "rsync-src"
    small_files(src, args.rsync_files, 512)
    seed = base / "rsync-seed"
    small_files(seed, 10, 512, dirs=2)
    subprocess.run([DSFS, "sync", str(seed), "-p", "bench", "-n", "rsync"], env=env,
                   check=True, capture_output=True)
    lower, upper, work = base / "ofs-lower", base / "ofs-upper", base / "ofs-work"
    for d in (lower, upper, work):
        d.mkdir()

    def rsync(target: Path, server: int | None, cpus: set[int]) -> tuple[float, float]:
        # rsync's three processes inherit this process's CPUs, the server is moved
        if server is not None:
            set_affinity(server, cpus)
        os.sched_setaffinity(0, cpus)
        try:
            return cpu_timed(lambda: subprocess.run(
                ["rsync", "-a", f"{src}/", f"{target}/"], check=True), server)
        finally:
            os.sched_setaffinity(0, everywhere)
            if server is not None:
                set_affinity(server, everywhere)

    overlayfs = shutil.which("fuse-overlayfs")
    kinds = ["native", "dsfs_patched", "dsfs_stock", "python_floor", "python_floor_durable"]
    if overlayfs:
        kinds.append("fuse_overlayfs")
    else:
        print("fuse-overlayfs is not installed: that baseline is skipped", file=sys.stderr)
    everywhere = os.sched_getaffinity(0)
    modes = {"spread": everywhere, "pinned": {args.pin_cpu}}
    runs = {m: {k: [] for k in kinds} for m in modes}
    cpu = {m: {k: [] for k in kinds} for m in modes}
    with contextlib.ExitStack() as stack:
        mnts: dict[str, Path] = {}
        pids: dict[str, int | None] = {"native": None}
        for kind, extra in (("dsfs_patched", {}), ("dsfs_stock", stock_env(args.stock))):
            mnt = mnts[kind] = base / f"mnt-{kind}"
            pids[kind] = stack.enter_context(serving(
                [DSFS, "mount", "--foreground", "--writable", "--overlay",
                 str(base / f"upper-{kind}"), "bench/rsync", str(mnt)], mnt,
                {**env, **extra}))
        mnt = mnts["python_floor"] = base / "mnt-floor"
        pids["python_floor"] = stack.enter_context(serving(
            [sys.executable, str(HERE / "floorfs.py"), str(mnt)], mnt))
        mnt = mnts["python_floor_durable"] = base / "mnt-floor-durable"
        pids["python_floor_durable"] = stack.enter_context(serving(
            [sys.executable, str(HERE / "floorfs.py"), str(mnt),
             "--durable", str(base / "floor-durable")], mnt))
        if overlayfs:
            mnt = mnts["fuse_overlayfs"] = base / "mnt-ofs"
            pids["fuse_overlayfs"] = stack.enter_context(serving(
                [overlayfs, "-f", "-o", f"lowerdir={lower},upperdir={upper},workdir={work}",
                 str(mnt)], mnt))
        for r in range(args.rounds):
            for mode, cpus in modes.items():
                for kind in kinds:
                    name = f"{mode}-{r}"
                    target = (base / f"native-{name}") if kind == "native" \
                        else mnts[kind] / f"in-{name}"
                    wall, used = rsync(target, pids[kind], cpus)
                    runs[mode][kind].append(wall)
                    cpu[mode][kind].append(used)
    results["rsync_files"] = args.rsync_files
    for mode in modes:
        # "spread": the scheduler places rsync and the server (the aims' figure);
        # "pinned": all of them on --pin-cpu, so no request waits for an idle
        # CPU to wake up and the time is the CPU work of both sides.  CPU
        # seconds: rsync's and the file system's server's (none for native).
        key, med, cpu_med = _medians(results, "rsync", mode, runs[mode], cpu[mode])
        for kind in kinds:
            if kind != "native":
                results[f"{key}_{kind}_over_native_speed"] = med["native"] / med[kind]
                results[f"{key}_{kind}_over_native_cpu"] = cpu_med["native"] / cpu_med[kind]


def _medians(results: dict, name: str, mode: str, runs: dict[str, list[float]],
             cpu: dict[str, list[float]]) -> tuple[str, dict[str, float], dict[str, float]]:
    """Record one mode's rounds and their medians (wall and CPU seconds) under
    ``name`` ("spread", the aims' figure) or ``name_mode``; return the key
    and the two medians by kind."""
    key = name if mode == "spread" else f"{name}_{mode}"
    med = {k: statistics.median(v) for k, v in runs.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    results[f"{key}_s_runs"] = runs
    results[f"{key}_s"] = med
    results[f"{key}_cpu_s_runs"] = cpu
    results[f"{key}_cpu_s"] = cpu_med
    return key, med, cpu_med


# -- warm walk of a read-only mount ----------------------------------------------------

def walk_lstat(root: Path) -> int:
    n = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            os.lstat(os.path.join(dirpath, name))
            n += 1
    return n


def bench_walk(args: argparse.Namespace, base: Path, env: dict[str, str],
               results: dict) -> None:
    src = base / "walk-src"
    small_files(src, args.walk_files, 1)
    start = time.perf_counter()
    subprocess.run([DSFS, "sync", str(src), "-p", "bench", "-n", "walk"], env=env,
                   check=True, capture_output=True)
    results["walk_sync_s"] = time.perf_counter() - start
    runs: dict[str, list[float]] = {"native": [], "dsfs_patched": [], "dsfs_stock": []}
    with contextlib.ExitStack() as stack:
        roots = {"native": src}
        for kind, extra in (("dsfs_patched", {}), ("dsfs_stock", stock_env(args.stock))):
            mnt = base / f"walk-{kind}"
            roots[kind] = stack.enter_context(mounted(
                [DSFS, "mount", "--foreground", "bench/walk", str(mnt)], mnt,
                {**env, **extra}))
        for root in roots.values():
            assert walk_lstat(root) == args.walk_files  # the untimed, warming walk
        for _ in range(args.rounds):
            for kind, root in roots.items():
                runs[kind].append(timed(lambda root=root: walk_lstat(root)))
    med = {k: statistics.median(v) for k, v in runs.items()}
    results["walk_files"] = args.walk_files
    results["walk_s_runs"] = runs
    results["walk_s"] = med
    for kind in ("dsfs_patched", "dsfs_stock"):
        results[f"walk_{kind}_over_native_speed"] = med["native"] / med[kind]


# -- cached 64 KiB reads -------------------------------------------------------------

def read_all(root: Path) -> int:
    n = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                n += len(f.read())
    return n


def bench_read(args: argparse.Namespace, base: Path, env: dict[str, str],
               results: dict) -> None:
    src = base / "read-src"
    small_files(src, args.read_files, 64 * 1024, dirs=20)
    subprocess.run([DSFS, "sync", str(src), "-p", "bench", "-n", "read"], env=env,
                   check=True, capture_output=True)
    subprocess.run([DSFS, "prefetch", "bench/read"], env=env, check=True,
                   capture_output=True)
    kinds = {"dsfs_patched": {}, "dsfs_stock": stock_env(args.stock)}
    everywhere = os.sched_getaffinity(0)
    modes = {"spread": everywhere, "pinned": {args.pin_cpu}}
    runs = {m: {k: [] for k in kinds} for m in modes}
    cpu = {m: {k: [] for k in kinds} for m in modes}
    total = args.read_files * 64 * 1024
    for r in range(args.rounds):
        for kind, extra in kinds.items():
            mnt = base / f"read-{kind}-{r}"
            with mounted([DSFS, "mount", "--foreground", "bench/read", str(mnt)], mnt,
                         {**env, **extra}):
                read_all(mnt)  # the first pass verifies the chunks once per process
            for mode, cpus in modes.items():
                # a new mount each time: the kernel's caches are cold
                with serving([DSFS, "mount", "--foreground", "bench/read", str(mnt)], mnt,
                             {**env, **extra}) as pid:
                    set_affinity(pid, cpus)
                    os.sched_setaffinity(0, cpus)
                    try:
                        server, client = server_cpu_ns(pid), time.thread_time()
                        seconds = timed(lambda mnt=mnt: read_all(mnt))
                        used = (server_cpu_ns(pid) - server) / 1e9 + time.thread_time() - client
                    finally:
                        os.sched_setaffinity(0, everywhere)
                runs[mode][kind].append(seconds)
                cpu[mode][kind].append(used)
    results["read_files"] = args.read_files
    for mode in modes:
        # spread: the aim's figure; pinned: reader and server on --pin-cpu (CPU work,
        # no idle vCPU to wake per request).  CPU seconds: the reading thread's
        # and the server's.
        key, med, cpu_med = _medians(results, "read", mode, runs[mode], cpu[mode])
        results[f"{key}_mib_s"] = {k: total / v / 2**20 for k, v in med.items()}
        results[f"{key}_patched_over_stock_speed"] = med["dsfs_stock"] / med["dsfs_patched"]
        results[f"{key}_patched_over_stock_cpu"] = cpu_med["dsfs_stock"] / cpu_med["dsfs_patched"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="null,rsync,walk,read")
    parser.add_argument("--stats", type=int, default=5_000,
                        help="stats per null round")
    parser.add_argument("--null-rounds", type=int, default=15)
    parser.add_argument("--null-settle", type=float, default=1.0,
                        help="seconds each null server idles after mounting")
    parser.add_argument("--pin-cpu", type=int, default=0,
                        help="the CPU of the pinned modes (null, rsync, read)")
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=DIR",
                        help="null section: also the pyfuse3 in DIR (first on PYTHONPATH)")
    parser.add_argument("--rsync-files", type=int, default=10_000)
    parser.add_argument("--walk-files", type=int, default=100_000)
    parser.add_argument("--read-files", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tmpfs-gib", type=int, default=6)
    parser.add_argument("--stock", type=Path, default=Path(sys.prefix) / "pyfuse3-stock")
    args = parser.parse_args()
    if not (args.stock / "pyfuse3").is_dir():
        sys.exit(f"no stock pyfuse3 in {args.stock}: "
                 f"bash packaging/pyfuse3/build.sh {sys.prefix} --stock {args.stock}")
    base = Path(tempfile.mkdtemp(prefix="dsfs-bench-loop-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.tmpfs_gib}g", "tmpfs",
                    str(base)], check=True)
    env = {"DSFS_DATA_DIR": str(base / "data"), "DSFS_CACHE_DIR": str(base / "cache"),
           "DSFS_STORE": str(base / "store")}
    results: dict = {"builds": {"patched": flavour({}),
                                "stock": flavour(stock_env(args.stock))}}
    sections = {"null": lambda: bench_null(args, base, results),
                "rsync": lambda: bench_rsync(args, base, env, results),
                "walk": lambda: bench_walk(args, base, env, results),
                "read": lambda: bench_read(args, base, env, results)}
    try:
        for name in args.only.split(","):
            results[f"{name}_load_before"] = load()
            sections[name]()
            results[f"{name}_load_after"] = load()
    finally:
        subprocess.run(["umount", "-l", str(base)], check=False)
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                      "results": results}, indent=1, default=str))


if __name__ == "__main__":
    main()
