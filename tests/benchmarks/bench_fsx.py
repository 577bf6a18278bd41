"""fsx-style random I/O on the writable overlay against fuse-overlayfs (issue 10).

    python tests/benchmarks/bench_fsx.py [--ops 100000] [--rounds 3] [--seed 1]
        [--max-size 262144]

One file that came from the version (so the first write copies it up) gets
``--ops`` random operations, as xfstests' fsx does: reads, writes, reads and
writes through a shared ``mmap``, truncates up and down, each read checked
byte for byte against an in-memory model, so the run is a correctness check
as well as a timing.  The same seeded sequence runs on a native directory,
on fuse-overlayfs (the C FUSE overlay; ``apt-get install -y fuse-overlayfs``)
over a lower directory holding the same file, on the minimal pyfuse3
passthrough of ``passthrough.py`` (one system call per request: the floor of
any pyfuse3 file system on this machine), and on a ``dsfs mount
--writable`` of a version holding it.  Rounds interleave the four; each
round starts from a fresh copy.  Prints one JSON object with the median
seconds of each, ``ratio_dsfs_over_overlayfs`` (aim: <= 1.5) and
``ratio_dsfs_over_passthrough`` (what dsfs's own handlers add to pyfuse3's
per-request cost).

Run as root with /dev/fuse.  The operation mix is fsx's default minus
fallocate/punch-hole (the overlay answers EOPNOTSUPP for those).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mmap
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_mount import DSFS, fuse  # noqa: E402

NAME = "fsx.bin"


class Mismatch(AssertionError):
    pass


def run_fsx(path: Path, initial: bytes, ops: int, seed: int, max_size: int) -> float:
    """Apply the seeded operations to ``path`` (which holds ``initial``); return
    the seconds they took.  Raises Mismatch on the first read that differs."""
    rng = random.Random(seed)
    # written data is sliced from one random pool: generating it per write
    # would cost more than the write and hide the file systems' differences
    pool = random.Random(seed ^ 0xDA7A).randbytes(1 << 20)
    model = bytearray(initial)
    fd = os.open(path, os.O_RDWR)
    page = mmap.PAGESIZE
    start = time.perf_counter()
    try:
        for step in range(ops):
            op = rng.random()
            size = len(model)
            if op < 0.25 and size:  # read
                offset = rng.randrange(size)
                length = rng.randrange(1, min(65536, size - offset) + 1)
                got = os.pread(fd, length, offset)
                if got != model[offset:offset + length]:
                    raise Mismatch(f"step {step}: read {length}@{offset} differs")
            elif op < 0.50:  # write, possibly extending
                offset = rng.randrange(max_size)
                length = rng.randrange(1, min(65536, max_size - offset) + 1)
                at = rng.randrange(len(pool) - length)
                data = pool[at:at + length]
                os.pwrite(fd, data, offset)
                if offset > size:
                    model.extend(bytes(offset - size))
                model[offset:offset + length] = data
            elif op < 0.65 and size:  # mapped read
                offset = rng.randrange(size)
                length = rng.randrange(1, min(65536, size - offset) + 1)
                start_page = offset - offset % page
                with mmap.mmap(fd, offset + length - start_page, offset=start_page,
                               prot=mmap.PROT_READ) as m:
                    got = m[offset - start_page:]
                if got != model[offset:offset + length]:
                    raise Mismatch(f"step {step}: mapped read {length}@{offset} differs")
            elif op < 0.80 and size:  # mapped write inside the file
                offset = rng.randrange(size)
                length = rng.randrange(1, min(65536, size - offset) + 1)
                at = rng.randrange(len(pool) - length)
                data = pool[at:at + length]
                start_page = offset - offset % page
                with mmap.mmap(fd, offset + length - start_page, offset=start_page) as m:
                    m[offset - start_page:] = data
                    m.flush()
                model[offset:offset + length] = data
            elif op < 0.90:  # truncate up or down
                new = rng.randrange(max_size)
                os.ftruncate(fd, new)
                if new < size:
                    del model[new:]
                else:
                    model.extend(bytes(new - size))
            else:  # stat: the size the model says
                if os.fstat(fd).st_size != len(model):
                    raise Mismatch(f"step {step}: size {os.fstat(fd).st_size} != {len(model)}")
        os.fsync(fd)
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
    if path.read_bytes() != bytes(model):
        raise Mismatch("final contents differ from the model")
    return elapsed


@contextlib.contextmanager
def dsfs_mount(env: dict[str, str], ref: str, mnt: Path, overlay: Path) -> Iterator[Path]:
    with fuse([DSFS, "mount", "--foreground", "--writable", "--overlay", str(overlay), ref,
               str(mnt)], mnt, env):
        yield mnt
    shutil.rmtree(overlay, ignore_errors=True)


@contextlib.contextmanager
def overlayfs_mount(binary: str, lower: Path, base: Path, mnt: Path) -> Iterator[Path]:
    upper, work = base / "ovl-upper", base / "ovl-work"
    for d in (upper, work):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
    with fuse([binary, "-f", "-o", f"lowerdir={lower},upperdir={upper},workdir={work}",
               str(mnt)], mnt):
        yield mnt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-size", type=int, default=256 << 10)
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    args = parser.parse_args()

    overlayfs = shutil.which("fuse-overlayfs")
    load = os.getloadavg()[0]
    base = Path(tempfile.mkdtemp(prefix="bench-fsx-", dir=args.dir))
    env = {**os.environ, "DSFS_STORE": str(base / "store"), "DSFS_DATA_DIR": str(base / "data"),
           "DSFS_CACHE_DIR": str(base / "cache")}
    initial = random.Random(args.seed ^ 0x5EED).randbytes(args.max_size // 2)
    lower = base / "lower"
    lower.mkdir()
    (lower / NAME).write_bytes(initial)
    out = subprocess.run([DSFS, "sync", str(lower), "-p", "bench", "-n", "fsx"], env=env,
                         check=True, capture_output=True, text=True)
    ref = out.stdout.strip().splitlines()[-1]
    results: dict[str, object] = {"ops": args.ops, "rounds": args.rounds, "seed": args.seed,
                                  "max_size": args.max_size}
    runs: dict[str, list[float]] = {"native": [], "dsfs": [], "passthrough": []}
    passthrough = [sys.executable, str(Path(__file__).with_name("passthrough.py"))]
    if overlayfs:
        runs["fuse-overlayfs"] = []
    else:
        print("fuse-overlayfs is not installed (apt-get install -y fuse-overlayfs): "
              "no C baseline", file=sys.stderr)
    try:
        for round_no in range(args.rounds):
            seed = args.seed + round_no
            native = base / "native"
            shutil.rmtree(native, ignore_errors=True)
            native.mkdir()
            shutil.copy(lower / NAME, native / NAME)
            runs["native"].append(run_fsx(native / NAME, initial, args.ops, seed,
                                          args.max_size))
            if overlayfs:
                with overlayfs_mount(overlayfs, lower, base, base / "ovl") as mnt:
                    runs["fuse-overlayfs"].append(run_fsx(mnt / NAME, initial, args.ops, seed,
                                                          args.max_size))
            backing = base / "pt-backing"
            shutil.rmtree(backing, ignore_errors=True)
            backing.mkdir()
            shutil.copy(lower / NAME, backing / NAME)
            with fuse([*passthrough, str(backing), str(base / "pt")], base / "pt"):
                runs["passthrough"].append(run_fsx(base / "pt" / NAME, initial, args.ops, seed,
                                                   args.max_size))
            with dsfs_mount(env, ref, base / "mnt", base / f"overlay-{round_no}") as mnt:
                runs["dsfs"].append(run_fsx(mnt / NAME, initial, args.ops, seed,
                                            args.max_size))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    for kind, times in runs.items():
        results[f"{kind}_s"] = statistics.median(times)
    results["ratio_dsfs_over_native"] = results["dsfs_s"] / results["native_s"]  # type: ignore[operator]
    results["ratio_dsfs_over_passthrough"] = (
        results["dsfs_s"] / results["passthrough_s"])  # type: ignore[operator]
    if overlayfs:
        results["ratio_dsfs_over_overlayfs"] = (
            results["dsfs_s"] / results["fuse-overlayfs_s"])  # type: ignore[operator]
        results["ratio_passthrough_over_overlayfs"] = (
            results["passthrough_s"] / results["fuse-overlayfs_s"])  # type: ignore[operator]
    results["load_before_after"] = [load, os.getloadavg()[0]]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
