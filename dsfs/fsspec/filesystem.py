"""``DsfsFileSystem``: the fsspec protocol ``dsfs://`` (the only module that
imports fsspec).

Each method resolves ``REF/PATH`` through a ``Session`` and answers from the
version's tree; contents come through the session's ``BlockingReader``.
Missing paths raise ``FileNotFoundError`` (as fsspec callers expect); any
write raises ``PermissionError`` with errno ``EROFS``: a version is immutable,
change it with a writable mount or a new version.
"""

from __future__ import annotations

import contextlib
import errno
import stat
from typing import Any

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from dsfs.errors import NotFoundError
from dsfs.format.manifest import FILE
from dsfs.fsspec.session import Sessions, Version
from dsfs.vfs import Attr, OpenFile, VfsError

#: Bytes a file object reads from the reader at once (fsspec's readahead block).
BLOCK_SIZE = 1 << 20


def _read_only(path: str) -> PermissionError:
    return PermissionError(errno.EROFS, "dsfs:// is read-only: a version never changes "
                           "(write through `dsfs mount --writable` or a new version)", path)


class DsfsFileSystem(AbstractFileSystem):
    """Versions of dsfs datasets, read-only, without FUSE.

    ``store`` (else ``$DSFS_STORE``) and ``cache_dir`` (else ``$DSFS_CACHE_DIR``)
    are its storage options."""

    protocol = "dsfs"
    root_marker = ""

    def __init__(self, store: str | None = None, cache_dir: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sessions = Sessions(store, cache_dir)

    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]  # type: ignore[return-value]
        text = str(path)
        if text.startswith("dsfs://"):
            text = text[len("dsfs://"):]
        return text.strip("/")

    # -- looking things up -----------------------------------------------------------

    def _node(self, path: str) -> tuple[Version, str, int, Attr]:
        path = self._strip_protocol(path)
        try:
            version, inner = self.sessions.get().locate(path)
            ino, attr = version.node(inner)
        except (VfsError, NotFoundError):
            raise FileNotFoundError(errno.ENOENT, "no such file or directory in dsfs",
                                    path) from None
        return version, inner, ino, attr

    @staticmethod
    def _info(name: str, attr: Attr, version: Version, ino: int) -> dict[str, Any]:
        if stat.S_ISDIR(attr.mode):
            kind = "directory"
        elif stat.S_ISREG(attr.mode):
            kind = "file"
        else:
            kind = "other"
        info: dict[str, Any] = {"name": name, "size": attr.size if kind != "directory" else 0,
                                "type": kind, "mode": attr.mode,
                                "mtime": attr.mtime_ns / 1e9, "version_id": version.header.id}
        if stat.S_ISLNK(attr.mode):
            info["islink"] = True
            info["destination"] = version.readlink(ino)
        return info

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        version, _inner, ino, attr = self._node(path)
        return self._info(self._strip_protocol(path), attr, version, ino)

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        version, _inner, ino, attr = self._node(path)
        base = self._strip_protocol(path)
        if not stat.S_ISDIR(attr.mode):
            found = [self._info(base, attr, version, ino)]
        else:
            found = [self._info(f"{base}/{name}", child, version, child.ino)
                     for name, child in version.children(ino)]
        return found if detail else [item["name"] for item in found]

    def ukey(self, path: str) -> str:
        """The file's content digest (a version's files never change)."""
        version, _inner, ino, attr = self._node(path)
        entry = version.open(ino).entry if stat.S_ISREG(attr.mode) else None
        return (entry.digest if entry is not None and entry.digest
                else f"{version.header.id}:{self._strip_protocol(path)}")

    def modified(self, path: str) -> Any:
        import datetime  # noqa: PLC0415 - only this method needs it

        return datetime.datetime.fromtimestamp(self.info(path)["mtime"], datetime.timezone.utc)

    # -- reading ---------------------------------------------------------------------

    def open_file(self, path: str) -> tuple[Version, OpenFile]:
        """The read plan of the file at ``path``."""
        version, _inner, ino, attr = self._node(path)
        if stat.S_ISDIR(attr.mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", path)
        try:
            opened = version.open(ino)
        except VfsError:
            raise FileNotFoundError(errno.ENOENT, "not a regular file", path) from None
        if opened.entry.kind != FILE:
            raise FileNotFoundError(errno.ENOENT, "not a regular file", path)
        return version, opened

    def _open(self, path: str, mode: str = "rb", block_size: Any = None,
              autocommit: bool = True, cache_options: Any = None, **kwargs: Any) -> DsfsFile:
        if mode != "rb":
            raise _read_only(path)
        _version, opened = self.open_file(path)
        return DsfsFile(self, path, opened, block_size=block_size or BLOCK_SIZE,
                        cache_options=cache_options,
                        cache_type=kwargs.get("cache_type", "readahead"))

    def cat_file(self, path: str, start: int | None = None, end: int | None = None,
                 **kwargs: Any) -> bytes:
        _version, opened = self.open_file(path)
        size = opened.size
        begin = 0 if start is None else (start if start >= 0 else max(0, size + start))
        stop = size if end is None else (end if end >= 0 else max(0, size + end))
        if stop <= begin:
            return b""
        return self.sessions.get().reader.read_file(opened, begin, stop - begin)

    # -- refusing writes -------------------------------------------------------------

    def _refuse(self, path: Any, *args: Any, **kwargs: Any) -> Any:
        raise _read_only(str(path))

    mkdir = makedirs = rmdir = touch = _refuse
    rm_file = _rm = rm = _refuse
    pipe_file = put_file = cp_file = mv = _refuse

    def close(self) -> None:
        """Stop this process's reader thread (counters are flushed)."""
        self.sessions.close()


class DsfsFile(AbstractBufferedFile):
    """A file of a version, read through the reader (sequential reads get readahead)."""

    def __init__(self, fs: DsfsFileSystem, path: str, opened: OpenFile, block_size: int,
                 cache_options: Any, cache_type: str) -> None:
        self.opened = opened
        self._reader = fs.sessions.get().reader
        self._fh = self._reader.open(opened)
        super().__init__(fs, path, mode="rb", block_size=block_size, cache_type=cache_type,
                         cache_options=cache_options, size=opened.size)

    def _fetch_range(self, start: int, end: int) -> bytes:
        end = min(end, self.opened.size)
        if start >= end:
            return b""
        return self._reader.read(self._fh, start, end - start)

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                self._reader.release(self._fh)
        super().close()
