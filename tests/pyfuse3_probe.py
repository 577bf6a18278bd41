"""A tiny pyfuse3 file system that counts the requests it answers, for the
tests of dsfs's pyfuse3 patch (``tests/test_pyfuse3_patch.py``) and the null
round-trip benchmark.  Run as a script:

    python tests/pyfuse3_probe.py MOUNTPOINT [--no-open] [--no-opendir]
        [--readdirplus on|off|auto] [--cache-readdir] [--no-atomic-trunc] [--null]
        [--asyncio]

The tree: ``/a`` (a small writable file), ``/slow`` (a read waits until
``/go`` is looked up), ``/dir`` (three files), ``/go``, ``/stats``.  Looking up
``late`` sleeps, then answers ENOENT; ``boom`` and ``lateboom`` (the same
after a sleep) raise an error that is not a FUSEError, which ends the loop.  Reading
``/stats`` returns JSON: the requests answered so far by kind (those about
``/stats`` itself not counted), the inode or handle each read and write
received, the ``plus`` flag of each listing, and how often a trio task that
sleeps 1 ms ran (``ticks``) — it must keep running however busy the loop is.
With ``--null`` it serves ``NullFS`` instead: the Python twin of the C
``tests/benchmarks/nullfs_ll.c`` (an empty root whose attributes the kernel
may not cache, so each ``stat`` of the mount point is a GETATTR round trip;
bench_fuseloop.py), doing the same work per request: fresh attributes, the
uid and gid asked of the kernel, no counting.
With ``--asyncio`` it runs on asyncio (``pyfuse3.asyncio``) instead of trio.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import stat
import sys
from collections import Counter
from typing import Any

import pyfuse3
import pyfuse3.asyncio as pyfuse3_asyncio
import trio

ROOT, A, SLOW, DIR, GO, STATS = 1, 2, 3, 4, 5, 6
FILES = {10: b"one", 11: b"two", 12: b"three"}
NAMES = {b"a": A, b"slow": SLOW, b"dir": DIR, b"go": GO, b"stats": STATS}
DIR_NAMES = {b"f1": 10, b"f2": 11, b"f3": 12}
PATCHED = "read_first_loop" in getattr(pyfuse3, "extensions", frozenset())


class Probe(pyfuse3.Operations):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__()
        self.args = args
        self.calls: Counter[str] = Counter()
        self.handles: list[tuple[str, int]] = []
        self.plus: list[bool] = []
        self.data = bytearray(b"0123456789")
        self.go: Any = asyncio.Event() if args.asyncio else trio.Event()
        self.ticks = 0
        self.snapshot = b""
        self.no_open_inode = args.no_open
        self.atomic_o_trunc = not args.no_atomic_trunc
        self.readdirplus = args.readdirplus

    def count(self, what: str, ino: int) -> None:
        if ino != STATS:
            self.calls[what] += 1

    def attr(self, ino: int) -> pyfuse3.EntryAttributes:
        out = pyfuse3.EntryAttributes()
        out.st_ino = ino
        out.entry_timeout = out.attr_timeout = 3600
        if ino in (ROOT, DIR):
            out.st_mode = stat.S_IFDIR | 0o755
            out.st_nlink = 2
        else:
            out.st_mode = stat.S_IFREG | 0o644
            out.st_size = {A: len(self.data), SLOW: 4, STATS: 1 << 20}.get(
                ino, len(FILES.get(ino, b"")))
        out.st_uid, out.st_gid = os.getuid(), os.getgid()
        return out

    async def lookup(self, parent: int, name: bytes, ctx: Any = None
                     ) -> pyfuse3.EntryAttributes:
        if name in (b"late", b"lateboom"):
            await (asyncio.sleep(0.01) if self.args.asyncio else trio.sleep(0.01))
        if name in (b"boom", b"lateboom"):
            raise RuntimeError(f"the probe's {name!r} handler failed")
        ino = (NAMES if parent == ROOT else DIR_NAMES if parent == DIR else {}).get(name)
        self.count("lookup", ino or 0)
        if ino == GO:
            self.go.set()
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self.attr(ino)

    async def getattr(self, ino: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        self.count("getattr", ino)
        return self.attr(ino)

    async def setattr(self, ino: int, attr: Any, fields: Any, fh: int | None, ctx: Any
                      ) -> pyfuse3.EntryAttributes:
        self.count("setattr", ino)
        if fields.update_size and ino == A:
            del self.data[attr.st_size:]
        return self.attr(ino)

    async def opendir(self, ino: int, ctx: Any) -> Any:
        self.count("opendir", ino)
        if self.args.no_opendir:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        if self.args.cache_readdir:
            return pyfuse3.FileInfo(fh=ino, keep_cache=True, cache_readdir=True)
        return ino

    async def readdir(self, fh: int, start: int, token: Any) -> None:
        self.count("readdir", fh)
        self.plus.append(bool(getattr(token, "plus", True)))
        names = sorted(NAMES.items()) if fh == ROOT else sorted(DIR_NAMES.items())
        for i, (name, ino) in enumerate(names[start:], start + 1):
            if not pyfuse3.readdir_reply(token, name, self.attr(ino), i):
                break

    async def releasedir(self, fh: int) -> None:
        self.count("releasedir", fh)

    async def open(self, ino: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        self.count("open", ino)
        if ino == STATS:
            return pyfuse3.FileInfo(fh=STATS, direct_io=True)
        if self.args.no_open:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        if flags & os.O_TRUNC and ino == A:
            self.data.clear()
        return pyfuse3.FileInfo(fh=100 + ino)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        if fh == STATS:
            if off == 0:  # a snapshot per pass, so that its reads agree
                self.snapshot = json.dumps({"calls": self.calls, "handles": self.handles,
                                            "plus": self.plus, "ticks": self.ticks}).encode()
            return self.snapshot[off:off + size]
        self.count("read", fh)
        self.handles.append(("read", fh))
        ino = fh - 100 if fh > 100 else fh
        if ino == SLOW:
            await self.go.wait()
            return b"done"[off:off + size]
        data = bytes(self.data) if ino == A else FILES.get(ino, b"")
        return data[off:off + size]

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        self.count("write", fh)
        self.handles.append(("write", fh))
        if len(self.data) < off:
            self.data.extend(bytes(off - len(self.data)))
        self.data[off:off + len(buf)] = buf
        return len(buf)

    async def flush(self, fh: int) -> None:
        raise pyfuse3.FUSEError(errno.ENOSYS)

    async def release(self, fh: int) -> None:
        self.count("release", fh)

    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        return pyfuse3.StatvfsData()


class NullFS(pyfuse3.Operations):
    """The round-trip benchmark's file system: what ``nullfs_ll.c`` does, in
    Python (so that the benchmark compares the request loops, not handlers
    of unequal work)."""

    async def getattr(self, ino: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        if ino != ROOT:
            raise pyfuse3.FUSEError(errno.ENOENT)
        out = pyfuse3.EntryAttributes()
        out.st_ino = ino
        out.st_mode = stat.S_IFDIR | 0o755
        out.st_nlink = 2
        out.st_uid = os.getuid()
        out.st_gid = os.getgid()
        out.attr_timeout = 0
        return out

    async def lookup(self, parent: int, name: bytes, ctx: Any = None
                     ) -> pyfuse3.EntryAttributes:
        raise pyfuse3.FUSEError(errno.ENOENT)


async def serve_null(yield_every: int) -> None:
    if PATCHED:
        await pyfuse3.main(min_tasks=2, max_tasks=16, yield_every=yield_every)
    else:
        await pyfuse3.main(min_tasks=2, max_tasks=16)


async def ticker(probe: Probe) -> None:
    while True:
        await (asyncio.sleep(0.001) if probe.args.asyncio else trio.sleep(0.001))
        probe.ticks += 1


async def serve_asyncio(probe: Probe) -> None:
    ticking = asyncio.ensure_future(ticker(probe))
    try:
        await pyfuse3.main(min_tasks=2, max_tasks=16)
    finally:
        ticking.cancel()


async def serve(probe: Probe) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker, probe)
        if PATCHED:
            await pyfuse3.main(min_tasks=2, max_tasks=16, yield_every=probe.args.yield_every)
        else:
            await pyfuse3.main(min_tasks=2, max_tasks=16)
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mountpoint")
    parser.add_argument("--no-open", action="store_true")
    parser.add_argument("--no-opendir", action="store_true")
    parser.add_argument("--cache-readdir", action="store_true")
    parser.add_argument("--no-atomic-trunc", action="store_true")
    parser.add_argument("--readdirplus", default="on", choices=["on", "off", "auto"])
    parser.add_argument("--yield-every", type=int, default=128)
    parser.add_argument("--null", action="store_true")
    parser.add_argument("--asyncio", action="store_true")
    args = parser.parse_args()
    options = {"fsname=probe", "subtype=probe"}
    if args.null:
        pyfuse3.init(NullFS(), args.mountpoint, options)
        try:
            trio.run(serve_null, args.yield_every)
        finally:
            pyfuse3.close(unmount=True)
        return
    probe = Probe(args)
    pyfuse3.init(probe, args.mountpoint, options)
    try:
        if args.asyncio:
            pyfuse3_asyncio.enable()
            asyncio.run(serve_asyncio(probe))
        else:
            trio.run(serve, probe)
    finally:
        pyfuse3.close(unmount=True)
    print("probe: main returned", file=sys.stderr)


if __name__ == "__main__":
    main()
