"""Benchmarks of the read-only mount against the native disk and a minimal
pyfuse3 passthrough (the ceiling for any pyfuse3 file system on this kernel).

    python tests/benchmarks/bench_mount.py [--files 100000] [--big-mib 1024] [--small 10000]
        [--million 1000000] [--depth 100] [--only meta,small,big,million,depth]

Each figure is the median of --reps (>= 3) runs, all measured in the same run.
Source files are re-read before each repetition (idle page-cache pages are
dropped on these machines).  Run as root (mounts, drop_caches).

``fuse-overlayfs`` (Debian: ``apt-get install -y fuse-overlayfs``) is the C FUSE
reference for reading the big file again from the page cache; without it that
baseline is skipped with a message.

``million``: a version of --million files (few distinct contents, written as a
manifest directly, so no million files on disk) mounted with its manifest
indexed: ready time, and the mount process's peak RSS (VmHWM) while
``find`` walks it.  ``depth``: the tip of a chain of --depth delta versions
(each changes one file; no snapshots in between, harder than the engine's own
bound) against its first version: listing and lookups through the vfs and
through a mount, cold (the tree memo being built) and warm.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

DSFS = str(Path(sys.executable).with_name("dsfs"))


# -- a minimal pyfuse3 passthrough -------------------------------------------------

def passthrough_main(source: str, mountpoint: str) -> None:
    from passthrough import serve

    serve(source, mountpoint, read_only=True)


# -- helpers ------------------------------------------------------------------------

def drop_caches() -> None:
    subprocess.run(["sync"], check=False)
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def is_mounted(path: Path) -> bool:
    return any(line.split()[4] == str(path) for line in open("/proc/self/mountinfo"))


@contextlib.contextmanager
def fuse(command: list[str], mountpoint: Path, env: dict[str, str] | None = None
         ) -> Iterator[float]:
    with fuse_process(command, mountpoint, env) as (ready, _proc):
        yield ready


@contextlib.contextmanager
def fuse_process(command: list[str], mountpoint: Path, env: dict[str, str] | None = None
                 ) -> Iterator[tuple[float, subprocess.Popen]]:
    mountpoint.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    proc = subprocess.Popen(command, env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not is_mounted(mountpoint):
        if proc.poll() is not None:
            raise RuntimeError(f"{command} exited {proc.returncode}")
        time.sleep(0.005)
    os.stat(mountpoint)
    ready = time.perf_counter() - start
    try:
        yield ready, proc
    finally:
        subprocess.run(["fusermount3", "-u", str(mountpoint)], check=False)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)
            proc.kill()


def median(fn: Callable[[], object], reps: int, before: Callable[[], object] | None = None
           ) -> float:
    times = []
    for _ in range(reps):
        if before:
            before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def reread(paths: list[Path]) -> Callable[[], None]:
    def go() -> None:
        for p in paths:
            with open(p, "rb") as f:
                while f.read(1 << 20):
                    pass
    return go


def walk_stat(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            os.stat(os.path.join(dirpath, name))


def cat_all(root: Path) -> None:
    subprocess.run(f"find {root} -type f -print0 | xargs -0 cat > /dev/null", shell=True,
                   check=True)


def python_read_all(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                f.read()


def vm_hwm_mib(pid: int) -> float:
    """Peak resident set size of a process so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")


def open_repo(env: dict[str, str]):  # noqa: ANN201 - a Repository, imported late
    from dsfs.repository import Repository
    from dsfs.store import open_store

    return Repository(open_store(env["DSFS_STORE"]), Path(env["DSFS_CACHE_DIR"]))


def publish_version(repo, name: str, entries: list, parents: list[str] | None = None,
                    depth: int = 1):  # noqa: ANN001, ANN201
    """Publish a manifest of ``entries`` directly (no files on disk)."""
    from dsfs.engine.publish import publish
    from dsfs.engine.versions import new_header

    header = new_header(repo, "bench", name, parents=parents or [])
    header.chain_depth = depth
    header.stats = {"files": sum(1 for e in entries if e.kind != "removed"),
                    "size": sum(e.size for e in entries)}
    return publish(repo, header, entries, False)


def seed_entries(dsfs, base: Path, env: dict[str, str], count: int = 16) -> list:  # noqa: ANN001
    """``count`` small files really stored, whose contents big versions reuse."""
    from dsfs.catalog import Catalog, Ref
    from dsfs.engine.tree import TreeResolver

    seed = base / "seed"
    seed.mkdir()
    for i in range(count):
        (seed / f"s{i}").write_bytes(os.urandom(512 + i))
    dsfs("sync", str(seed), "-p", "bench", "-n", "seed")
    repo = open_repo(env)
    header = Catalog(repo).resolve(Ref(project="bench", name="seed"))
    return [e for e in TreeResolver(repo).tree(header.id).values() if e.kind == "file"]


def bench_million(args, base: Path, env: dict[str, str], dsfs, results: dict) -> None:  # noqa: ANN001
    from dataclasses import replace

    seeds = seed_entries(dsfs, base, env)
    repo = open_repo(env)
    per_dir = 1000
    start = time.perf_counter()
    entries = [replace(seeds[i % len(seeds)], path=f"m{i // (per_dir * 100):02d}/"
                       f"d{(i // per_dir) % 100:02d}/f{i:07d}") for i in range(args.million)]
    header = publish_version(repo, "million", entries)
    del entries
    results["million_build_s"] = time.perf_counter() - start
    mnt = base / "mnt-million"
    command = [DSFS, "mount", "--foreground", "bench/million", str(mnt)]

    def walk(proc: subprocess.Popen) -> None:
        start = time.perf_counter()
        out = subprocess.run(f"find {mnt} -type f | wc -l", shell=True, check=True,
                             capture_output=True, text=True).stdout
        results.setdefault("million_find_s", []).append(time.perf_counter() - start)
        assert int(out) == args.million, out
        results.setdefault("million_find_hwm_mib", []).append(vm_hwm_mib(proc.pid))

    # first mount: the manifest is read and indexed into LMDB
    with fuse_process(command, mnt, env) as (ready, proc):
        results["million_first_ready_s"] = ready
        results["million_first_ready_hwm_mib"] = vm_hwm_mib(proc.pid)
        walk(proc)  # the first walk also resolves (and memoizes) every directory
    readies = []
    for _ in range(args.reps):
        with fuse_process(command, mnt, env) as (ready, proc):
            readies.append(ready)
            results.setdefault("million_ready_hwm_mib", []).append(vm_hwm_mib(proc.pid))
            walk(proc)
    results["million_ready_s"] = statistics.median(readies)
    for key in ("million_find_s", "million_find_hwm_mib", "million_ready_hwm_mib"):
        results[f"{key}_all"] = results[key]
        results[key] = statistics.median(results[key][1:] or results[key])
    # in-process: what opening the tree source costs once indexed
    from dsfs.vfs import open_tree_source

    results["million_open_source_s"] = median(
        lambda: open_tree_source(open_repo(env), header), args.reps)


def bench_depth(args, base: Path, env: dict[str, str], dsfs, results: dict) -> None:  # noqa: ANN001
    from dataclasses import replace

    from dsfs.vfs import ROOT_INO, VersionFS, open_tree_source

    seeds = seed_entries(dsfs, base, env) if not (base / "seed").exists() else None
    repo = open_repo(env)
    if seeds is None:
        from dsfs.catalog import Catalog, Ref
        from dsfs.engine.tree import TreeResolver

        seed = Catalog(repo).resolve(Ref(project="bench", name="seed"))
        seeds = [e for e in TreeResolver(repo).tree(seed.id).values() if e.kind == "file"]
    dirs, per_dir = 100, 100
    first = [replace(seeds[i % len(seeds)], path=f"d{i // per_dir:02d}/f{i:05d}")
             for i in range(dirs * per_dir)]
    # Two chains of the same content, so that each end is measured cold on its
    # own: the tip's first walk resolves all of its chain, nothing memoized yet.
    alone = publish_version(repo, "chain1", first)
    chain = [publish_version(repo, "chain", first)]
    for k in range(1, args.depth):
        i = (k * 37) % len(first)
        changed = replace(seeds[(i + k) % len(seeds)], path=first[i].path)
        chain.append(publish_version(repo, "chain", [changed], [chain[-1].id], depth=k + 1))
    ends = {"depth1": alone, f"depth{args.depth}": chain[-1]}

    def vfs_walk(header) -> None:  # noqa: ANN001
        fs = VersionFS(open_tree_source(open_repo(env), header))
        for name, attr, _ in fs.readdir(ROOT_INO, 0):
            for child, _a, _p in fs.readdir(attr.ino, 0):
                fs.lookup(attr.ino, child)
            fs.lookup(ROOT_INO, name)

    vfs_walk(publish_version(repo, "warmup", first[:10]))  # imports and first-use costs
    for label, header in ends.items():  # cold: the first walk resolves and memoizes
        start = time.perf_counter()
        vfs_walk(header)
        results[f"depth_vfs_cold_{label}_s"] = time.perf_counter() - start
    for label, header in ends.items():
        results[f"depth_vfs_warm_{label}_s"] = median(lambda h=header: vfs_walk(h), args.reps)
    for label, header in ends.items():
        mnt = base / f"mnt-{label}"
        times = []
        for _ in range(args.reps):  # a new mount each time: the kernel's caches are cold
            with fuse_process([DSFS, "mount", "--foreground", header.id, str(mnt)], mnt,
                              env):
                start = time.perf_counter()
                subprocess.run(["find", str(mnt), "-type", "f"], check=True,
                               stdout=subprocess.DEVNULL)
                times.append(time.perf_counter() - start)
        results[f"depth_mount_find_{label}_s"] = statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--million", type=int, default=1_000_000)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--only", default="meta,small,big,million,depth",
                        help="comma-separated sections to run")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--passthrough", nargs=2, metavar=("SRC", "MNT"))
    args = parser.parse_args()
    if args.passthrough:
        passthrough_main(*args.passthrough)
        return
    sections = set(args.only.split(","))
    args.reps = max(3, args.reps)

    base = Path(tempfile.mkdtemp(prefix="dsfs-bench-"))
    env = {"DSFS_DATA_DIR": str(base / "data"), "DSFS_CACHE_DIR": str(base / "cache"),
           "DSFS_STORE": str(base / "store")}
    os.environ.update(env)  # the in-process parts (million, depth) use the same dsfs
    results: dict = {}

    def dsfs(*cmd: str) -> None:
        subprocess.run([DSFS, *cmd], check=True, env={**os.environ, **env},
                       stdout=subprocess.DEVNULL)

    # data sets: many tiny files (metadata), small 64 KiB files, one big file
    meta = base / "meta"
    if "meta" in sections:
        for i in range(args.files):
            d = meta / f"d{i % 100:02d}" / f"e{i % 10}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"f{i}").write_bytes(b"x")
    small = base / "small"
    if "small" in sections:
        for i in range(args.small):
            d = small / f"d{i % 50:02d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"s{i}").write_bytes(os.urandom(64 * 1024))
    big = base / "big"
    if "big" in sections:
        big.mkdir()
        with open(big / "big.bin", "wb") as f:
            for _ in range(args.big_mib):
                f.write(os.urandom(1 << 20))
    datasets = [(name, folder) for name, folder in (("meta", meta), ("small", small),
                                                    ("big", big)) if name in sections]
    for name, folder in datasets:
        start = time.perf_counter()
        dsfs("sync", str(folder), "-p", "bench", "-n", name)
        results[f"sync_{name}_s"] = time.perf_counter() - start
        dsfs("prefetch", f"bench/{name}")

    overlayfs = shutil.which("fuse-overlayfs")
    if overlayfs is None and "big" in sections:
        print("fuse-overlayfs is not installed (apt-get install -y fuse-overlayfs): "
              "skipping the C FUSE baseline", file=sys.stderr)
    pt_cmd = [sys.executable, __file__, "--passthrough"]
    reps = args.reps
    for name, folder in datasets:
        src_files = [p for p in folder.rglob("*") if p.is_file()]
        # the page cache of both sides: the source files and dsfs's chunk files
        warm_files = src_files + [p for p in (base / "cache" / "chunks").rglob("*")
                                  if p.is_file()]
        warm = reread(warm_files)
        with contextlib.ExitStack() as stack:
            roots = {"native": folder}
            pt = base / f"pt-{name}"
            stack.enter_context(fuse([*pt_cmd, str(folder), str(pt)], pt))
            roots["passthrough"] = pt
            if name == "big" and overlayfs is not None:
                ovl = base / "ovl-big"
                stack.enter_context(fuse([overlayfs, "-f", "-o", f"lowerdir={folder}",
                                          str(ovl)], ovl))
                roots["fuse-overlayfs"] = ovl
            mnt = base / f"mnt-{name}"
            ready = stack.enter_context(
                fuse([DSFS, "mount", "--foreground", f"bench/{name}", str(mnt)], mnt, env))
            results[f"mount_ready_{name}_s"] = ready
            roots["dsfs"] = mnt
            if name == "small":
                # rounds interleave the file systems: a slow spell of this
                # shared machine then falls on all of them, not on one
                for test, reader in (("cat", cat_all), ("python", python_read_all)):
                    runs: dict[str, list[float]] = {kind: [] for kind in roots}
                    for _ in range(reps):
                        for kind, root in roots.items():
                            drop_caches()
                            warm()
                            start = time.perf_counter()
                            reader(root)
                            runs[kind].append(time.perf_counter() - start)
                    for kind, times in runs.items():
                        results[f"small_{test}_{kind}_s"] = statistics.median(times)
                continue
            for kind, root in roots.items():
                if name == "meta":
                    # warm: one untimed pass fills the kernel's attribute caches
                    subprocess.run(["find", str(root), "-type", "f"], check=True,
                                   stdout=subprocess.DEVNULL)
                    results[f"meta_find_{kind}_s"] = median(
                        lambda root=root: subprocess.run(
                            ["find", str(root), "-type", "f"], check=True,
                            stdout=subprocess.DEVNULL), reps)
                    results[f"meta_walk_stat_{kind}_s"] = median(
                        lambda root=root: walk_stat(root), reps)
                else:
                    target = root / "big.bin"
                    if kind != "fuse-overlayfs":
                        results[f"big_first_read_{kind}_s"] = median(
                            reread([target]), reps,
                            before=lambda warm=warm: (drop_caches(), warm()))
                    reread([target])()
                    results[f"big_repeat_read_{kind}_s"] = median(reread([target]), reps)
    if "million" in sections and args.million:
        bench_million(args, base, env, dsfs, results)
    if "depth" in sections and args.depth:
        bench_depth(args, base, env, dsfs, results)
    ratios = {}
    for key in list(results):
        if key.endswith("_dsfs_s"):
            stem = key[: -len("_dsfs_s")]
            for other in ("passthrough", "native", "fuse-overlayfs"):
                if f"{stem}_{other}_s" in results:
                    ratios[f"{stem}: dsfs speed / {other}"] = round(
                        results[f"{stem}_{other}_s"] / results[key], 3)
    deep = f"depth{args.depth}"
    for kind in ("vfs_cold", "vfs_warm", "mount_find"):
        one, many = f"depth_{kind}_depth1_s", f"depth_{kind}_{deep}_s"
        if one in results and many in results:
            ratios[f"{kind}: time at depth {args.depth} / depth 1"] = round(
                results[many] / results[one], 3)
    print(json.dumps({"args": vars(args), "figures": {
        k: ([round(x, 4) for x in v] if isinstance(v, list) else round(v, 4))
        for k, v in results.items()}, "ratios": ratios}, indent=2))
    subprocess.run(["rm", "-rf", str(base)], check=False)


if __name__ == "__main__":
    main()
