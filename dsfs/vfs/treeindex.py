"""Moved to ``dsfs.engine.treeindex`` (the engine's streaming commands walk the
same records); kept so that callers of the old path keep working."""

from dsfs.engine.treeindex import (
    CUT,
    HAS_ENTRY,
    IMPLIED,
    IMPLIED_DIR,
    Decoder,
    VersionInfo,
    dir_key,
    encode_entry,
    entry_of_record,
    forget_trees,
    index_version,
    is_dir,
    load_graph,
    merge_records,
    raw_name,
    split,
)

__all__ = [
    "CUT", "HAS_ENTRY", "IMPLIED", "IMPLIED_DIR", "Decoder", "VersionInfo", "dir_key",
    "encode_entry", "entry_of_record", "forget_trees", "index_version", "is_dir",
    "load_graph", "merge_records", "raw_name", "split",
]
