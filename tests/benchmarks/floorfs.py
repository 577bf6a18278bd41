"""The least a Python file system on pyfuse3 can do for ``rsync -a``: the floor
of ``bench_fuseloop.py``'s rsync figure for any server written in Python.

An in-memory tree that answers the requests rsync sends (lookup, getattr,
setattr, mkdir, create, write, rename, listing) with as little work as a
handler can do: a dict of nodes, attributes built once per reply, file
contents kept as bytes, no journal, no data files, nothing durable.  It runs
on the same pyfuse3 loop and mount options as a writable dsfs mount (no-open
and no ``atomic_o_trunc`` with dsfs's patch, no ``default_permissions``), so
the difference between this and dsfs is what dsfs's handlers cost, and the
difference between this and fuse-overlayfs is what the Python request loop
and handlers cost at all.  Not a file system to use: a measuring stick.

    python tests/benchmarks/floorfs.py MOUNTPOINT
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import stat
import time

import pyfuse3
import trio

ROOT = pyfuse3.ROOT_INODE
PATCHED = "no_open_inode" in getattr(pyfuse3, "extensions", frozenset())
TIMEOUT = 86400.0


class Node:
    __slots__ = ("ino", "mode", "size", "mtime_ns", "atime_ns", "ctime_ns", "uid", "gid",
                 "data", "children", "lookups", "fd")

    def __init__(self, ino: int, mode: int, uid: int, gid: int) -> None:
        now = time.time_ns()
        self.ino, self.mode, self.size = ino, mode, 0
        self.mtime_ns = self.atime_ns = self.ctime_ns = now
        self.uid, self.gid = uid, gid
        self.data = b""
        self.children: dict[bytes, Node] | None = {} if stat.S_ISDIR(mode) else None
        self.lookups = 0
        self.fd = -1  # --durable: the data file


class Durable:
    """--durable: data files and an append-only journal in one directory."""

    def __init__(self, root: str) -> None:
        os.makedirs(os.path.join(root, "data"), exist_ok=True)
        self.data = os.path.join(root, "data", "")
        self.journal = os.open(os.path.join(root, "journal"),
                               os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.at = 0

    def line(self, op: str, ino: int, node: Node, name: bytes = b"") -> None:
        text = (f'{{"op":"{op}","ino":{ino},"name":{json.dumps(os.fsdecode(name))},'
                f'"mode":{node.mode},"mtime":{node.mtime_ns},"size":{node.size}}}\n')
        self.at += os.pwrite(self.journal, text.encode(), self.at)

    def new_file(self, node: Node) -> None:
        node.fd = os.open(f"{self.data}{node.ino}", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.utime(node.fd, ns=(node.mtime_ns, node.mtime_ns))

    def fd(self, node: Node) -> int:
        """The data file, open (a rename closes it: rsync's last request a file)."""
        if node.fd < 0:
            node.fd = os.open(f"{self.data}{node.ino}", os.O_RDWR)
        return node.fd


class FloorFS(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, durable: Durable | None = None) -> None:
        super().__init__()
        self.durable = durable
        self.no_open_inode = PATCHED
        self.atomic_o_trunc = not PATCHED
        self.nodes = {ROOT: Node(ROOT, stat.S_IFDIR | 0o755, os.getuid(), os.getgid())}
        self.next_ino = ROOT + 1
        self.listings: dict[int, list[tuple[bytes, Node]]] = {}

    def entry(self, node: Node) -> pyfuse3.EntryAttributes:
        out = pyfuse3.EntryAttributes()
        out.st_ino = node.ino
        out.entry_timeout = out.attr_timeout = TIMEOUT
        out.st_mode = node.mode
        out.st_nlink = 2 if node.children is not None else 1
        out.st_uid, out.st_gid = node.uid, node.gid
        out.st_size = node.size
        out.st_blksize = 4096
        out.st_blocks = (node.size + 511) // 512
        out.st_atime_ns, out.st_mtime_ns, out.st_ctime_ns = (
            node.atime_ns, node.mtime_ns, node.ctime_ns)
        return out

    def new(self, parent: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext) -> Node:
        kids = self.nodes[parent].children
        if kids is None:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if name in kids:
            raise pyfuse3.FUSEError(errno.EEXIST)
        node = Node(self.next_ino, mode, ctx.uid, ctx.gid)
        self.next_ino += 1
        self.nodes[node.ino] = node
        kids[name] = node
        node.lookups += 1
        return node

    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
                     ) -> pyfuse3.EntryAttributes:
        node = (self.nodes[parent_inode].children or {}).get(name)
        if node is None:
            out = pyfuse3.EntryAttributes()
            out.st_ino = 0
            out.entry_timeout = TIMEOUT
            return out
        node.lookups += 1
        return self.entry(node)

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        for ino, count in inode_list:
            node = self.nodes.get(ino)
            if node is not None:
                node.lookups -= count

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext
                      ) -> pyfuse3.EntryAttributes:
        return self.entry(self.nodes[inode])

    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self.nodes[inode]
        unchanged = node.mode  # a chmod to the same mode needs no journal line (dsfs's rule)
        if fields.update_mode:
            node.mode = stat.S_IFMT(node.mode) | stat.S_IMODE(attr.st_mode)
        if fields.update_size:
            node.data = node.data[:attr.st_size].ljust(attr.st_size, b"\0")
            node.size = attr.st_size
        if fields.update_mtime:
            node.mtime_ns = attr.st_mtime_ns
        if fields.update_atime:
            node.atime_ns = attr.st_atime_ns
        if fields.update_uid:
            node.uid = attr.st_uid
        if fields.update_gid:
            node.gid = attr.st_gid
        node.ctime_ns = time.time_ns()
        if self.durable is not None:
            if stat.S_ISREG(node.mode) and (fields.update_mtime or fields.update_atime):
                os.utime(self.durable.fd(node), ns=(node.atime_ns, node.mtime_ns))
            if stat.S_ISREG(node.mode) and fields.update_size:
                os.ftruncate(self.durable.fd(node), node.size)
            only_mode = not (fields.update_size or fields.update_mtime or fields.update_atime
                             or fields.update_uid or fields.update_gid)
            if not (only_mode and node.mode == unchanged):
                self.durable.line("attr", inode, node)
        return self.entry(node)

    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self.new(parent_inode, name, stat.S_IFDIR | mode, ctx)
        if self.durable is not None:
            self.durable.line("dir", parent_inode, node, name)
        return self.entry(node)

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext
                     ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        node = self.new(parent_inode, name, stat.S_IFREG | stat.S_IMODE(mode), ctx)
        if self.durable is not None:
            self.durable.new_file(node)
            self.durable.line("file", parent_inode, node, name)
        return pyfuse3.FileInfo(fh=node.ino), self.entry(node)

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext
                   ) -> pyfuse3.FileInfo:
        if PATCHED:
            raise pyfuse3.FUSEError(errno.ENOSYS)  # no OPEN/RELEASE, as dsfs
        return pyfuse3.FileInfo(fh=inode)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return self.nodes[fh].data[off:off + size]

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        node = self.nodes[fh]
        data = node.data
        if off == len(data):
            node.data = data + buf
        else:
            node.data = data[:off].ljust(off, b"\0") + buf + data[off + len(buf):]
        node.size = len(node.data)
        node.mtime_ns = node.ctime_ns = time.time_ns()
        if self.durable is not None:  # the bytes go to the data file, no journal line
            fd = self.durable.fd(node)
            os.pwrite(fd, buf, off)
            node.mtime_ns = os.fstat(fd).st_mtime_ns
        return len(buf)

    async def release(self, fh: int) -> None:
        pass

    async def flush(self, fh: int) -> None:
        raise pyfuse3.FUSEError(errno.ENOSYS)

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        raise pyfuse3.FUSEError(errno.ENOSYS)

    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: pyfuse3.RequestContext) -> None:
        old_kids = self.nodes[parent_inode_old].children
        new_kids = self.nodes[parent_inode_new].children
        if old_kids is None or new_kids is None or name_old not in old_kids:
            raise pyfuse3.FUSEError(errno.ENOENT)
        node = new_kids[name_new] = old_kids.pop(name_old)
        if self.durable is not None:
            self.durable.line("rename", parent_inode_new, node, name_new)
            if node.fd >= 0:
                os.close(node.fd)
                node.fd = -1

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
                     ) -> None:
        kids = self.nodes[parent_inode].children
        if kids is None or name not in kids:
            raise pyfuse3.FUSEError(errno.ENOENT)
        del kids[name]

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        kids = self.nodes[inode].children
        if kids is None:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        self.listings[inode] = sorted(kids.items())
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        items = self.listings.get(fh, [])
        for pos in range(start_id, len(items)):
            name, node = items[pos]
            if not pyfuse3.readdir_reply(token, name, self.entry(node), pos + 1):
                break
            node.lookups += 1

    async def releasedir(self, fh: int) -> None:
        self.listings.pop(fh, None)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        out = pyfuse3.StatvfsData()
        out.f_bsize = out.f_frsize = 4096
        out.f_blocks = out.f_bfree = out.f_bavail = 1 << 20
        out.f_files = out.f_ffree = out.f_favail = 1 << 20
        out.f_namemax = 255
        return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mountpoint")
    parser.add_argument("--durable", metavar="DIR",
                        help="data files and a journal line per change in DIR")
    args = parser.parse_args()
    options = set(pyfuse3.default_options) - {"default_permissions"}
    options |= {"nodev", "nosuid", "fsname=floorfs"}
    durable = Durable(args.durable) if args.durable else None
    pyfuse3.init(FloorFS(durable), args.mountpoint, options)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    main()
