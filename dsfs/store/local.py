"""The local-directory store: each key is a file under a root directory.

Atomic ``put``: write a temporary file in the target directory, fsync, rename.
``put_if_absent``: write a temporary file, then ``link`` it to the key, which
fails if the key exists — the same guarantee as ``O_EXCL``, but the object is
never visible half-written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from dsfs.errors import (
    DiskFullError,
    ObjectNotFoundError,
    StoreAccessError,
    StoreCorruptError,
    StoreError,
)
from dsfs.fsutil import COPY_BLOCK, TMP_PREFIX, fsync_dir, syncfs, write_temp
from dsfs.store.base import ObjectInfo, Store

_TMP_PREFIX = TMP_PREFIX


class LocalStore(Store):
    fork_safe = True

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self.url = str(self.root)
        try:
            not_dir = self.root.exists() and not self.root.is_dir()
        except OSError:
            not_dir = False  # unreadable: each operation says so, with its typed error
        if not_dir:
            raise StoreError(f"store path {self.root} exists and is not a directory")

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise StoreError(f"invalid store key {key!r}")
        return self.root.joinpath(*parts)

    def _error(self, exc: OSError, op: str, key: str) -> Exception:
        """The typed error (``dsfs.store.base``) an OSError of ``op`` on ``key`` means."""
        if isinstance(exc, FileNotFoundError | NotADirectoryError) and op == "read":
            return ObjectNotFoundError(f"{key} is not in the store {self.url}")
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return StoreAccessError(f"cannot {op} {key} in the store {self.url}: access "
                                    f"denied ({exc.strerror}); check the permissions of "
                                    f"{exc.filename or self.root}")
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return DiskFullError(self.root, "the store")
        return StoreError(f"cannot {op} {key} in the store {self.url}: {exc.strerror or exc}")

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except OSError as exc:
            raise self._error(exc, "read", key) from None

    def get_head(self, key: str, length: int) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                return f.read(length)
        except OSError as exc:
            raise self._error(exc, "read", key) from None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                data = os.pread(f.fileno(), length, offset)
        except OSError as exc:
            raise self._error(exc, "read", key) from None
        if len(data) != length:
            raise StoreCorruptError(
                f"short read of {key} in {self.url}: wanted {length} bytes at {offset}, "
                f"got {len(data)} (the object is shorter than its references say)"
            )
        return data

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            # One syncfs in flush() instead of an fsync per object: a close writes
            # hundreds of packs and makes them durable together before its manifest.
            tmp = write_temp(path.parent, data, durable=False, writeback=True)
            try:
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise self._error(exc, "write", key) from None

    def put_if_absent(self, key: str, data: bytes | BinaryIO) -> bool:
        path = self._path(key)
        try:
            tmp = write_temp(path.parent, data, durable=True)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                tmp.unlink(missing_ok=True)
            fsync_dir(path.parent)
            return True
        except OSError as exc:
            raise self._error(exc, "write", key) from None

    def put_file_if_absent(self, key: str, source: BinaryIO) -> bool:
        """Copied a block at a time into the temporary file that is then linked."""
        source.seek(0)
        return self.put_if_absent(key, source)

    def get_into(self, key: str, target: BinaryIO) -> int:
        try:
            with open(self._path(key), "rb") as f:
                size = 0
                while block := f.read(COPY_BLOCK):
                    target.write(block)
                    size += len(block)
                return size
        except OSError as exc:
            raise self._error(exc, "read", key) from None

    def remove_stale_uploads(self, older_than: float) -> int:
        """Temporary files left by a writer that was killed mid-write."""
        removed = 0
        cutoff = time.time() - older_than
        for dirpath, _dirs, files in os.walk(self.root) if self.root.exists() else []:
            for name in files:
                path = os.path.join(dirpath, name)
                with contextlib.suppress(FileNotFoundError):
                    if name.startswith(_TMP_PREFIX) and os.lstat(path).st_mtime < cutoff:
                        os.unlink(path)
                        removed += 1
        return removed

    def flush(self) -> None:
        if self.root.exists():
            syncfs(self.root)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._error(exc, "delete", key) from None

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        base_key = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self.root.joinpath(*base_key.split("/")) if base_key else self.root
        try:
            if not base.is_dir():
                return
        except OSError as exc:
            raise self._error(exc, "list", prefix or "/") from None

        def failed(exc: OSError) -> None:
            # a directory removed while we list is fine; one we cannot read would
            # make the listing silently short
            if not isinstance(exc, FileNotFoundError):
                raise self._error(exc, "list", prefix or "/") from None

        for dirpath, dirnames, filenames in os.walk(base, onerror=failed):
            dirnames.sort()
            rel = os.path.relpath(dirpath, self.root)
            rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            for name in sorted(filenames):
                if name.startswith(_TMP_PREFIX):
                    continue
                key = rel + name
                if not key.startswith(prefix):
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue  # deleted while we listed
                except OSError as exc:
                    raise self._error(exc, "list", key) from None
                yield ObjectInfo(key, st.st_size, st.st_mtime, _etag(st))

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise self._error(exc, "stat", key) from None
        return ObjectInfo(key, st.st_size, st.st_mtime, _etag(st))


def _etag(st: os.stat_result) -> str:
    """Changes when the file is replaced (a new inode) or written, truncated or
    touched in place (the change time): what a cached copy is checked against."""
    return f"{st.st_ino:x}-{st.st_ctime_ns:x}"
