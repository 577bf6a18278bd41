"""One worker's share of a version, for data loaders: ``Dataset.shard``.

    shard = Dataset.get(dataset_project="vision", dataset_name="cats").shard(rank, world)
    shard.files                   # paths inside the version, in path order
    shard.paths("/mnt/cats")      # the same under a mount of the version
    shard.urls()                  # dsfs://<id>/... for fsspec
    shard.prefetch()              # fill the shared cache with this share

Shares come from ``dsfs.engine.parts`` (the rule ``get --part`` and
``list_files(part=, num_parts=)`` use): stable for a version, disjoint,
together every file, balanced by bytes (each within one file of
``total / count``), and each a contiguous run of paths, so a worker's files
sit together in the store's packs.  Shard indexes count from 0.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dsfs.engine import parts, treewalk
from dsfs.format.manifest import FILE, ChunkRef, Entry, Header
from dsfs.repository import Repository

if TYPE_CHECKING:  # only for the annotation: dataset imports this module
    from dsfs.dataset import Dataset


@dataclass
class Shard:
    """Share ``index`` of ``count`` of a published version's files."""

    dataset: Dataset
    index: int
    count: int
    _entries: list[Entry] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        parts.check_part(self.index, self.count, part_name="index", num_name="count")

    def entries(self) -> list[Entry]:
        """The files and symlinks of this share, in path order (computed once)."""
        if self._entries is None:
            self._entries = list(parts.select(self.dataset.iter_files, _size,
                                              self.index, self.count))
        return self._entries

    @property
    def files(self) -> list[str]:
        return [entry.path for entry in self.entries()]

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.entries())

    def paths(self, mountpoint: str) -> list[str]:
        """The share's files under a mount of this version at ``mountpoint``."""
        return [posixpath.join(mountpoint, path) for path in self.files]

    def urls(self) -> list[str]:
        """The share's files as ``dsfs://`` URLs of this version (by id, so
        every worker reads the same version whatever is published meanwhile)."""
        return [f"dsfs://{self.dataset.id}/{path}" for path in self.files]

    def refs(self) -> Iterator[ChunkRef]:
        for entry in self.entries():
            if entry.kind == FILE:
                yield from entry.chunks

    def prefetch(self, progress: Callable[[int], None] | None = None) -> int:
        """Fetch what the shared cache lacks of this share; bytes fetched."""
        return prefetch_part(self.dataset, (self.index, self.count), progress)

    def __len__(self) -> int:
        return len(self.entries())


def _size(entry: Entry) -> int:
    return entry.size


def part_files(repo: Repository, header: Header, part: tuple[int, int]) -> Iterator[Entry]:
    """The files and symlinks of share ``part`` = (K, N), in path order."""
    source = treewalk.open_tree(repo, header)
    return parts.select(lambda: treewalk.iter_files(source), _size, *part)


def part_refs(repo: Repository, header: Header, part: tuple[int, int]) -> list[ChunkRef]:
    """The chunks of the files of share ``part`` = (K, N)."""
    return [ref for entry in part_files(repo, header, part)
            if entry.kind == FILE for ref in entry.chunks]


def prefetch_part(dataset: Dataset, part: tuple[int, int],
                  progress: Callable[[int], None] | None = None) -> int:
    repo = dataset.repo
    try:
        return repo.cache.fetch(repo.store, part_refs(repo, dataset.header, part), progress)
    finally:
        repo.cache.flush_counters()


__all__ = ["Shard", "part_files", "part_refs", "prefetch_part"]
