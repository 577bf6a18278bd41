"""What a copied tree holds, for tests that compare two trees: every entry by
its path (bytes, so names that are not UTF-8 compare too) with its kind, its
bytes or target, and the attributes a copy must keep."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def snapshot(root: Path, dir_attributes: bool = True) -> dict[bytes, tuple]:
    """Files as ("file", bytes, mode, mtime_ns), symlinks as ("link", target),
    folders as ("dir", mode, mtime_ns), or ("dir",) without ``dir_attributes``
    (for copies whose folders are made, not copied, attributes and all)."""
    out: dict[bytes, tuple] = {}
    base = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st_ = os.lstat(path)
            rel = os.path.relpath(path, base)
            if stat.S_ISLNK(st_.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st_.st_mode):
                out[rel] = (("dir", stat.S_IMODE(st_.st_mode), st_.st_mtime_ns)
                            if dir_attributes else ("dir",))
            else:
                with open(path, "rb") as f:
                    out[rel] = ("file", f.read(), stat.S_IMODE(st_.st_mode), st_.st_mtime_ns)
    return out
