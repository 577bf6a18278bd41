"""A minimal pyfuse3 passthrough file system: the ceiling of any pyfuse3 file
system on this kernel, read-only (bench_mount.py's baseline) or writable
(bench_overlay.py's).

    python passthrough.py [--ro] SOURCE MOUNTPOINT     # runs in the foreground

It mirrors SOURCE with one system call per request and nothing else: no
journal, no copy-up, no permission logic of its own (the kernel checks
permissions, as for a dsfs mount: ``default_permissions``).  Entries and
attributes are cached by the kernel as long as a dsfs mount lets it, and
missing names are cached too; read-only, files open with ``keep_cache`` as
dsfs's do.  Not for use: it trusts every request.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any

import pyfuse3
import trio

TIMEOUT = 24 * 3600.0


class Passthrough(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, source: str, read_only: bool = False) -> None:
        super().__init__()
        self.read_only = read_only
        self.paths: dict[int, str] = {pyfuse3.ROOT_INODE: source}
        self.inodes: dict[str, int] = {source: pyfuse3.ROOT_INODE}

    # -- inodes -------------------------------------------------------------------

    def _ino(self, path: str) -> int:
        ino = self.inodes.get(path)
        if ino is None:
            ino = len(self.paths) + 1
            self.paths[ino] = path
            self.inodes[path] = ino
        return ino

    def _path(self, parent: int, name: bytes) -> str:
        return os.path.join(self.paths[parent], os.fsdecode(name))

    def _attr(self, path: str, fd: int | None = None) -> pyfuse3.EntryAttributes:
        try:
            st = os.fstat(fd) if fd is not None else os.lstat(path)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno) from None
        out = pyfuse3.EntryAttributes()
        out.st_ino = self._ino(path)
        out.entry_timeout = out.attr_timeout = TIMEOUT
        for name in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_rdev", "st_size",
                     "st_blksize", "st_blocks", "st_atime_ns", "st_mtime_ns", "st_ctime_ns"):
            setattr(out, name, getattr(st, name))
        return out

    # -- the tree -----------------------------------------------------------------

    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None
                     ) -> pyfuse3.EntryAttributes:
        path = self._path(parent_inode, name)
        try:
            return self._attr(path)
        except pyfuse3.FUSEError as exc:
            if exc.errno != errno.ENOENT:
                raise
            out = pyfuse3.EntryAttributes()
            out.st_ino = 0
            out.entry_timeout = TIMEOUT
            return out

    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self._attr(self.paths[inode])

    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None, ctx: Any
                      ) -> pyfuse3.EntryAttributes:
        path = self.paths[inode]
        try:
            if fields.update_size:
                os.truncate(path, attr.st_size)
            if fields.update_mode:
                os.chmod(path, attr.st_mode & 0o7777, follow_symlinks=False)
            if fields.update_atime or fields.update_mtime:
                st = os.lstat(path)
                atime = attr.st_atime_ns if fields.update_atime else st.st_atime_ns
                mtime = attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns
                os.utime(path, ns=(atime, mtime), follow_symlinks=False)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno) from None
        return self._attr(path)

    async def readlink(self, inode: int, ctx: Any = None) -> bytes:
        return os.fsencode(os.readlink(self.paths[inode]))

    async def opendir(self, inode: int, ctx: Any = None) -> int:
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        names = sorted(os.listdir(self.paths[fh]))
        for i in range(start_id, len(names)):
            attr = self._attr(os.path.join(self.paths[fh], names[i]))
            if not pyfuse3.readdir_reply(token, os.fsencode(names[i]), attr, i + 1):
                break

    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any
                    ) -> pyfuse3.EntryAttributes:
        path = self._path(parent_inode, name)
        try:
            os.mkdir(path, mode & 0o7777)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno) from None
        return self._attr(path)

    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any
                      ) -> pyfuse3.EntryAttributes:
        path = self._path(parent_inode, name)
        os.symlink(os.fsdecode(target), path)
        return self._attr(path)

    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        path = self._path(parent_inode, name)
        try:
            os.unlink(path)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno) from None
        self.inodes.pop(path, None)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        path = self._path(parent_inode, name)
        try:
            os.rmdir(path)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno) from None
        self.inodes.pop(path, None)

    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: Any) -> None:
        old = self._path(parent_inode_old, name_old)
        new = self._path(parent_inode_new, name_new)
        try:
            os.rename(old, new)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno) from None
        ino = self.inodes.pop(old)
        self.inodes.pop(new, None)
        self.inodes[new] = ino
        self.paths[ino] = new

    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        st = os.statvfs(self.paths[pyfuse3.ROOT_INODE])
        out = pyfuse3.StatvfsData()
        for name in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                     "f_ffree", "f_favail", "f_namemax"):
            setattr(out, name, getattr(st, name))
        return out

    # -- files --------------------------------------------------------------------

    async def open(self, inode: int, flags: int, ctx: Any = None) -> pyfuse3.FileInfo:
        if self.read_only and flags & (os.O_WRONLY | os.O_RDWR):
            raise pyfuse3.FUSEError(errno.EROFS)
        try:
            fd = os.open(self.paths[inode], flags & ~os.O_CREAT)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno) from None
        return pyfuse3.FileInfo(fh=fd, keep_cache=self.read_only)

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: Any = None) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        path = self._path(parent_inode, name)
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_TRUNC, mode & 0o7777)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno) from None
        return pyfuse3.FileInfo(fh=fd), self._attr(path, fd)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return os.pread(fh, size, off)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return os.pwrite(fh, buf, off)

    async def fsync(self, fh: int, datasync: bool) -> None:
        if datasync:
            os.fdatasync(fh)
        else:
            os.fsync(fh)

    async def release(self, fh: int) -> None:
        os.close(fh)


def serve(source: str, mountpoint: str, read_only: bool = False) -> None:
    """Mount and serve until unmounted."""
    options = set(pyfuse3.default_options) | {"fsname=passthrough"}
    if read_only:
        options.add("ro")
    pyfuse3.init(Passthrough(os.path.abspath(source), read_only), mountpoint, options)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=False)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    ro = "--ro" in arguments
    source_dir, mount_dir = [a for a in arguments if a != "--ro"]
    serve(source_dir, mount_dir, read_only=ro)
