"""Benchmarks of the read-only mount against the native disk and a minimal
pyfuse3 passthrough (the ceiling for any pyfuse3 file system on this kernel).

    python tests/benchmarks/bench_mount.py [--files 100000] [--big-mib 1024] [--small 10000]

Each figure is the median of --reps (>= 3) runs, all measured in the same run.
Source files are re-read before each repetition (idle page-cache pages are
dropped on these machines).  fuse-overlayfs is used as a C reference when
installed.  Run as root (mounts, drop_caches).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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
    import errno

    import pyfuse3
    import trio

    class Passthrough(pyfuse3.Operations):
        def __init__(self) -> None:
            super().__init__()
            self.paths = {pyfuse3.ROOT_INODE: source}
            self.inodes = {source: pyfuse3.ROOT_INODE}
            self.fds: dict[int, int] = {}

        def _ino(self, path: str) -> int:
            ino = self.inodes.get(path)
            if ino is None:
                ino = len(self.paths) + 1
                self.paths[ino] = path
                self.inodes[path] = ino
            return ino

        def _attr(self, path: str) -> pyfuse3.EntryAttributes:
            try:
                st = os.lstat(path)
            except OSError as exc:
                raise pyfuse3.FUSEError(exc.errno) from None
            a = pyfuse3.EntryAttributes()
            a.st_ino = self._ino(path)
            a.entry_timeout = a.attr_timeout = 86400
            for name in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_rdev", "st_size",
                         "st_blksize", "st_blocks", "st_atime_ns", "st_mtime_ns",
                         "st_ctime_ns"):
                setattr(a, name, getattr(st, name))
            return a

        async def lookup(self, parent, name, ctx=None):
            return self._attr(os.path.join(self.paths[parent], os.fsdecode(name)))

        async def getattr(self, inode, ctx=None):
            return self._attr(self.paths[inode])

        async def readlink(self, inode, ctx=None):
            return os.fsencode(os.readlink(self.paths[inode]))

        async def opendir(self, inode, ctx=None):
            return inode

        async def readdir(self, fh, start_id, token):
            names = sorted(os.listdir(self.paths[fh]))
            for i in range(start_id, len(names)):
                attr = self._attr(os.path.join(self.paths[fh], names[i]))
                if not pyfuse3.readdir_reply(token, os.fsencode(names[i]), attr, i + 1):
                    break

        async def open(self, inode, flags, ctx=None):
            if flags & (os.O_WRONLY | os.O_RDWR):
                raise pyfuse3.FUSEError(errno.EROFS)
            fd = os.open(self.paths[inode], os.O_RDONLY)
            self.fds[fd] = fd
            return pyfuse3.FileInfo(fh=fd, keep_cache=True)

        async def read(self, fh, off, size):
            return os.pread(fh, size, off)

        async def release(self, fh):
            os.close(self.fds.pop(fh))

    options = set(pyfuse3.default_options) | {"ro", "fsname=passthrough"}
    pyfuse3.init(Passthrough(), mountpoint, options)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=False)


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
        yield ready
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--passthrough", nargs=2, metavar=("SRC", "MNT"))
    args = parser.parse_args()
    if args.passthrough:
        passthrough_main(*args.passthrough)
        return

    base = Path(tempfile.mkdtemp(prefix="dsfs-bench-"))
    env = {"DSFS_DATA_DIR": str(base / "data"), "DSFS_CACHE_DIR": str(base / "cache"),
           "DSFS_STORE": str(base / "store")}
    results: dict[str, float] = {}

    def dsfs(*cmd: str) -> None:
        subprocess.run([DSFS, *cmd], check=True, env={**os.environ, **env},
                       stdout=subprocess.DEVNULL)

    # data sets: many tiny files (metadata), small 64 KiB files, one big file
    meta = base / "meta"
    for i in range(args.files):
        d = meta / f"d{i % 100:02d}" / f"e{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_bytes(b"x")
    small = base / "small"
    for i in range(args.small):
        d = small / f"d{i % 50:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"s{i}").write_bytes(os.urandom(64 * 1024))
    big = base / "big"
    big.mkdir()
    with open(big / "big.bin", "wb") as f:
        for _ in range(args.big_mib):
            f.write(os.urandom(1 << 20))
    for name, folder in (("meta", meta), ("small", small), ("big", big)):
        start = time.perf_counter()
        dsfs("sync", str(folder), "-p", "bench", "-n", name)
        results[f"sync_{name}_s"] = time.perf_counter() - start
        dsfs("prefetch", f"bench/{name}")

    pt_cmd = [sys.executable, __file__, "--passthrough"]
    reps = max(3, args.reps)
    for name, folder in (("meta", meta), ("small", small), ("big", big)):
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
            mnt = base / f"mnt-{name}"
            ready = stack.enter_context(
                fuse([DSFS, "mount", "--foreground", f"bench/{name}", str(mnt)], mnt, env))
            results[f"mount_ready_{name}_s"] = ready
            roots["dsfs"] = mnt
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
                elif name == "small":
                    results[f"small_cat_{kind}_s"] = median(
                        lambda root=root: cat_all(root), reps,
                        before=lambda warm=warm: (drop_caches(), warm()))
                    results[f"small_python_{kind}_s"] = median(
                        lambda root=root: python_read_all(root), reps,
                        before=lambda warm=warm: (drop_caches(), warm()))
                else:
                    target = root / "big.bin"
                    results[f"big_first_read_{kind}_s"] = median(
                        reread([target]), reps,
                        before=lambda warm=warm: (drop_caches(), warm()))
                    reread([target])()
                    results[f"big_repeat_read_{kind}_s"] = median(reread([target]), reps)
    ratios = {}
    for key in list(results):
        if key.endswith("_dsfs_s"):
            stem = key[: -len("_dsfs_s")]
            pt_key = f"{stem}_passthrough_s"
            if pt_key in results:
                ratios[f"{stem}: dsfs speed / passthrough"] = round(
                    results[pt_key] / results[key], 3)
            nat = f"{stem}_native_s"
            if nat in results:
                ratios[f"{stem}: dsfs speed / native"] = round(results[nat] / results[key], 3)
    print(json.dumps({"args": vars(args), "seconds": {k: round(v, 4) for k, v in
                                                       results.items()}, "ratios": ratios},
                     indent=2))
    subprocess.run(["rm", "-rf", str(base)], check=False)


if __name__ == "__main__":
    main()
