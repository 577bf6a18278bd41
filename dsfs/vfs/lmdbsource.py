"""Moved to ``dsfs.engine.treedirs`` (the engine's streaming commands resolve
trees the same way a mount does); kept so that callers of the old path keep
working."""

from dsfs.engine.treedirs import (
    DELTA_FORM,
    STORED_FORM,
    DirRecord,
    LmdbTreeSource,
    open_tree_source,
)

__all__ = ["DELTA_FORM", "STORED_FORM", "DirRecord", "LmdbTreeSource", "open_tree_source"]
