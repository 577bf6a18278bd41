"""File contents below the adapters: the chunk reader (the shared cache,
fetched from the store on a miss) and the ``FileReader`` protocol that the
FUSE adapters and the overlay read lower files through.  No FUSE types, no
mount: the mount builds a reader and runs its background work."""

from dsfs.content.reader import CacheLimit, ChunkReader, FileReader

__all__ = ["CacheLimit", "ChunkReader", "FileReader"]
