"""A power-loss simulator for code that writes files below one directory.

``Recorder`` sits between the code under test and the kernel: while it is
installed (``with recorder:``), the ``os`` calls that change files below
``root`` go to the real file system as usual and are also logged, in the
order they ran (threads included): files created (``open`` with
``O_CREAT``), ``pwrite``/``write``, ``ftruncate``/``truncate``,
``posix_fallocate``, ``unlink``, ``rename``/``replace``, and the barriers
``fsync``/``fdatasync`` of a file or of a directory.  Calls on other paths
pass through untouched.  ``mark`` puts the test's own events (an operation
beginning or ending) into the same log.

``image(cut, fate, dest)`` then builds, in a new directory, what a disk may
hold after the power failed at log position ``cut``, under the weakest
guarantees POSIX file systems give:

* a file's writes, truncations and allocations before its last ``fsync`` or
  ``fdatasync`` (before ``cut``) are there;
* a directory's entries (creations, unlinks, renames) before its last fsync
  are there; an fsync of a file does not make its name durable;
* everything else may be there, be missing, or (a write) be torn: each such
  change is kept, dropped or, for writes, cut short or kept only in some of
  its 512-byte sectors, each choice independent of the others, and the kept
  ones are applied in their order.  ``Fate`` draws these choices at random;
  ``Fixed`` makes the same choice every time (drop all data and keep all
  names, say), which finds in a few images what chance finds in many.

Directories themselves are always kept (the overlay makes its few
directories once).  File identities follow inode numbers, so a file renamed
or reached through another name keeps its history.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

_FILE_OPS = ("write", "trunc", "alloc")
_NAME_OPS = ("link", "unlink", "rename")


class Recorder:
    """Log of the file-system calls below ``root`` (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = os.path.abspath(root)
        self.log: list[tuple[Any, ...]] = []
        self._lock = threading.RLock()
        self._fds: dict[int, str] = {}  # open fd -> file id, or "dir:<relative dir>"
        self._ino: dict[int, str] = {}  # inode number -> file id
        self._next = 0
        self._saved: dict[str, Callable[..., Any]] = {}
        # the starting point, taken as durable
        self.files: dict[str, bytes] = {}
        self.dirs: dict[str, dict[str, str]] = {}
        for top, dirnames, filenames in os.walk(self.root):
            rel = os.path.relpath(top, self.root)
            self.dirs[rel] = {}
            for name in filenames:
                path = os.path.join(top, name)
                fid = self._new_id(os.stat(path).st_ino)
                with open(path, "rb") as f:
                    self.files[fid] = f.read()
                self.dirs[rel][name] = fid
            del dirnames  # walked by os.walk

    # -- recording -----------------------------------------------------------------------

    def _new_id(self, ino: int) -> str:
        self._next += 1
        fid = f"f{self._next}"
        self._ino[ino] = fid
        return fid

    def _rel(self, path: Any) -> tuple[str, str] | None:
        """(directory relative to root, name) of a path below root, else None."""
        full = os.path.abspath(os.fsdecode(path))
        if not full.startswith(self.root + os.sep):
            return None
        rel = os.path.relpath(full, self.root)
        return os.path.dirname(rel) or ".", os.path.basename(rel)

    def mark(self, *event: Any) -> None:
        with self._lock:
            self.log.append(("mark", *event))

    def __enter__(self) -> Recorder:
        real = {name: getattr(os, name) for name in (
            "open", "close", "pwrite", "write", "ftruncate", "truncate", "posix_fallocate",
            "fsync", "fdatasync", "unlink", "rename", "replace")}
        self._saved = real
        lock = self._lock

        def open_(path: Any, flags: int, mode: int = 0o777, *args: Any, **kw: Any) -> int:
            where = self._rel(path) if not args and not kw else None
            if where is None:
                full = os.path.abspath(os.fsdecode(path)) if not args and not kw else ""
                fd = real["open"](path, flags, mode, *args, **kw)
                if full == self.root:
                    with lock:
                        self._fds[fd] = "dir:."
                return fd
            with lock:
                existed = os.path.lexists(path)
                fd = real["open"](path, flags, mode)
                if os.path.isdir(path):
                    self._fds[fd] = "dir:" + os.path.join(*where) if where[0] != "." \
                        else "dir:" + where[1]
                    return fd
                ino = os.fstat(fd).st_ino
                if not existed:
                    fid = self._new_id(ino)
                    self.log.append(("link", where[0], where[1], fid))
                else:
                    fid = self._ino.get(ino) or self._new_id(ino)
                    if flags & os.O_TRUNC:
                        self.log.append(("trunc", fid, 0))
                self._fds[fd] = fid
                return fd

        def close(fd: int) -> None:
            with lock:
                self._fds.pop(fd, None)
                real["close"](fd)

        def pwrite(fd: int, data: Any, offset: int) -> int:
            with lock:
                written = real["pwrite"](fd, data, offset)
                fid = self._fds.get(fd)
                if fid is not None and not fid.startswith("dir:"):
                    self.log.append(("write", fid, offset, bytes(data[:written])))
                return int(written)

        def write(fd: int, data: Any) -> int:
            with lock:
                fid = self._fds.get(fd)
                offset = os.lseek(fd, 0, os.SEEK_CUR) if fid is not None else 0
                written = real["write"](fd, data)
                if fid is not None and not fid.startswith("dir:"):
                    self.log.append(("write", fid, offset, bytes(data[:written])))
                return int(written)

        def ftruncate(fd: int, size: int) -> None:
            with lock:
                real["ftruncate"](fd, size)
                fid = self._fds.get(fd)
                if fid is not None and not fid.startswith("dir:"):
                    self.log.append(("trunc", fid, size))

        def truncate(path: Any, size: int) -> None:
            with lock:
                real["truncate"](path, size)
                if isinstance(path, int):
                    fid = self._fds.get(path)
                elif self._rel(path) is not None:
                    fid = self._ino.get(os.stat(path).st_ino)
                else:
                    fid = None
                if fid is not None and not fid.startswith("dir:"):
                    self.log.append(("trunc", fid, size))

        def fallocate(fd: int, offset: int, length: int) -> None:
            with lock:
                real["posix_fallocate"](fd, offset, length)
                fid = self._fds.get(fd)
                if fid is not None and not fid.startswith("dir:"):
                    self.log.append(("alloc", fid, offset + length))

        def sync(name: str) -> Callable[[int], None]:
            def call(fd: int) -> None:
                with lock:
                    real[name](fd)
                    fid = self._fds.get(fd)
                    if fid is None:
                        return
                    if fid.startswith("dir:"):
                        self.log.append(("dsync", fid[4:]))
                    else:
                        self.log.append(("fsync", fid))
            return call

        def unlink(path: Any, *args: Any, **kw: Any) -> None:
            with lock:
                real["unlink"](path, *args, **kw)
                where = self._rel(path) if not args and not kw else None
                if where is not None:
                    self.log.append(("unlink", *where))

        def rename(name: str) -> Callable[..., None]:
            def call(src: Any, dst: Any, *args: Any, **kw: Any) -> None:
                with lock:
                    real[name](src, dst, *args, **kw)
                    a, b = (self._rel(src), self._rel(dst)) if not args and not kw \
                        else (None, None)
                    if a is not None and b is not None:
                        self.log.append(("rename", *a, *b))
            return call

        replacements = {"open": open_, "close": close, "pwrite": pwrite, "write": write,
                        "ftruncate": ftruncate, "truncate": truncate,
                        "posix_fallocate": fallocate, "fsync": sync("fsync"),
                        "fdatasync": sync("fdatasync"), "unlink": unlink,
                        "rename": rename("rename"), "replace": rename("replace")}
        for name, function in replacements.items():
            setattr(os, name, function)
        return self

    def __exit__(self, *exc: object) -> None:
        for name, function in self._saved.items():
            setattr(os, name, function)

    # -- what a power loss leaves ----------------------------------------------------------

    def image(self, cut: int, fate: Fate, dest: Path) -> None:
        """Write to ``dest`` (a new directory) a disk as a power loss at log
        position ``cut`` may leave it."""
        log = self.log[:cut]
        last_fsync: dict[str, int] = {}
        last_dsync: dict[str, int] = {}
        for i, op in enumerate(log):
            if op[0] == "fsync":
                last_fsync[op[1]] = i
            elif op[0] == "dsync":
                last_dsync[op[1]] = i
        files = {fid: bytearray(data) for fid, data in self.files.items()}
        dirs = {d: dict(names) for d, names in self.dirs.items()}
        for i, op in enumerate(log):
            kind = op[0]
            if kind in _FILE_OPS:
                fid = op[1]
                content = files.setdefault(fid, bytearray())
                durable = i < last_fsync.get(fid, -1)
                choice = "keep" if durable else fate.data()
                if choice == "drop":
                    continue
                if kind == "write":
                    _write(content, op[2], op[3], None if choice == "keep" else fate)
                elif kind == "trunc" or len(content) < op[2]:
                    _resize(content, op[2])
            elif kind in _NAME_OPS:
                touched = [op[1]] if kind != "rename" else [op[1], op[3]]
                durable = all(i < last_dsync.get(d, -1) for d in touched)
                if not durable and not fate.name_kept():
                    continue
                if kind == "link":
                    dirs.setdefault(op[1], {})[op[2]] = op[3]
                    files.setdefault(op[3], bytearray())
                elif kind == "unlink":
                    dirs.setdefault(op[1], {}).pop(op[2], None)
                else:
                    fid_moved = dirs.setdefault(op[1], {}).pop(op[2], None)
                    if fid_moved is not None:
                        dirs.setdefault(op[3], {})[op[4]] = fid_moved
        dest.mkdir(parents=True)
        for d in sorted(dirs):
            (dest / d).mkdir(parents=True, exist_ok=True)
        for d, names in dirs.items():
            for name, fid in names.items():
                (dest / d / name).write_bytes(bytes(files.get(fid, b"")))


class Fate:
    """What becomes of each change that was not synced: random choices."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def data(self) -> str:
        """A write, truncation or allocation: "keep", "drop" or "tear" (writes)."""
        return self.rng.choice(["keep", "drop", "tear"])

    def name_kept(self) -> bool:
        """A directory change (a file made, unlinked or renamed)."""
        return self.rng.random() < 0.5

    def pieces(self, size: int) -> list[tuple[int, int]]:
        """What a torn write of ``size`` bytes keeps: a prefix, or some of its
        512-byte sectors."""
        if self.rng.random() < 0.5:
            return [(0, self.rng.randrange(size))]
        return [(lo, min(lo + 512, size)) for lo in range(0, size, 512)
                if self.rng.random() < 0.5]


class Fixed(Fate):
    """The same choice for every unsynced change: ``data`` ("keep", "drop",
    "tear": half of each write, its first half), ``names`` kept or not."""

    def __init__(self, data: str, names: bool) -> None:
        super().__init__(random.Random(0))
        self._data, self._names = data, names

    def data(self) -> str:
        return self._data

    def name_kept(self) -> bool:
        return self._names

    def pieces(self, size: int) -> list[tuple[int, int]]:
        return [(0, size // 2)]


#: Every ``Fixed`` fate.
FIXED = [Fixed(data, names) for data in ("keep", "drop", "tear") for names in (True, False)]


def _resize(content: bytearray, size: int) -> None:
    if size < len(content):
        del content[size:]
    else:
        content.extend(bytes(size - len(content)))


def _write(content: bytearray, offset: int, data: bytes, tear: Fate | None) -> None:
    """Apply a write; with ``tear``, only the pieces of it that it keeps."""
    pieces = [(0, len(data))]
    if tear is not None and data:
        pieces = tear.pieces(len(data))
    for lo, hi in pieces:
        if hi <= lo:
            continue
        end = offset + hi
        if len(content) < end:
            _resize(content, end)
        content[offset + lo:end] = data[lo:hi]
