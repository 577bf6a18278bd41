"""``dsfs://`` for fsspec: read any version of a dataset without FUSE.

    import fsspec, pandas as pd
    df = pd.read_csv("dsfs://vision/cats@1.0.1/labels.csv")
    fs = fsspec.filesystem("dsfs")            # store from $DSFS_STORE
    fs.ls("vision/cats@1.0.1/train")

Installed with the ``fsspec`` extra, which registers the protocol as an fsspec
entry point.  Reads go through ``dsfs.content`` (the shared cache and the
fetch path of a mount); the filesystem is read-only.  Only
``dsfs.fsspec.filesystem`` imports fsspec.
"""

from dsfs.fsspec.filesystem import DsfsFile, DsfsFileSystem

__all__ = ["DsfsFile", "DsfsFileSystem"]
