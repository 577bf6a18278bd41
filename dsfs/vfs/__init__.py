"""What a version looks like as a file system, without any FUSE types.

``VersionFS`` answers lookup, getattr, readdir, readlink, open (a read plan)
and statfs for one version; a ``TreeSource`` supplies the tree (a mount uses
``open_tree_source``: lazy, memoized in the cache's LMDB index).  The FUSE
adapter (``dsfs.fuse``) is the only caller that speaks to the kernel.
"""

from dsfs.engine.treedirs import LmdbTreeSource, open_tree_source
from dsfs.vfs.fs import (
    ROOT_INO,
    Attr,
    FsStats,
    InvalidArgument,
    IsADirectory,
    NoEntry,
    NotADirectory,
    OpenFile,
    ReadOnly,
    Slice,
    VersionFS,
    VfsError,
)
from dsfs.vfs.source import MemoryTreeSource, TreeSource

__all__ = [
    "ROOT_INO", "Attr", "FsStats", "InvalidArgument", "IsADirectory", "LmdbTreeSource",
    "MemoryTreeSource", "NoEntry", "NotADirectory", "OpenFile", "ReadOnly", "Slice",
    "TreeSource", "VersionFS", "VfsError", "open_tree_source",
]
