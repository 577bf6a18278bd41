"""What ``prefetch`` fetches, streamed: the chunks of a version's files (all,
or those at or below some paths) that the cache lacks, in windows.

The tree is walked from the tree index (``treewalk``) in path order; chunk
references are gathered ``WINDOW_CHUNKS`` at a time, each window deduplicated
and checked against the cache when it is asked for, so that a window fetched
before the next one is built makes the next one skip what it brought.  Memory
is one window, whatever the size of the version.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from dsfs.engine import treewalk
from dsfs.errors import NotFoundError
from dsfs.format.manifest import FILE, ChunkRef, Header
from dsfs.repository import Repository

WINDOW_CHUNKS = 20_000


@dataclass
class Window:
    """One window of the walk: how many chunk references it met, and the
    distinct chunks among them the cache lacks (at the time it was built)."""

    wanted: int
    missing: list[ChunkRef]


def _roots(repo: Repository, header: Header, paths: Iterable[str]
           ) -> tuple[treewalk.LmdbTreeSource, list[str]]:
    source = treewalk.open_tree(repo, header)
    wanted = [posixpath.normpath(p.strip("/")) for p in paths if p.strip("/")]
    for p in wanted:
        if p != "." and source.entry(p) is None:
            raise NotFoundError(f"{p!r} is not a path of version {header.id}")
    if not wanted or "." in wanted:
        return source, [""]
    roots: list[str] = []
    for p in sorted(set(wanted)):
        if not any(p.startswith(r + "/") for r in roots):  # inside one already listed
            roots.append(p)
    return source, roots


def _refs(source: treewalk.LmdbTreeSource, roots: list[str]) -> Iterator[ChunkRef]:
    for root in roots:
        entry = source.entry(root) if root else None
        if entry is not None and entry.kind != "dir":
            files: Iterable = [entry]
        else:
            files = treewalk.iter_files(source, root)
        for e in files:
            if e.kind == FILE:
                yield from e.chunks


def windows(repo: Repository, header: Header, paths: Iterable[str] = (),
            window: int = WINDOW_CHUNKS) -> Iterator[Window]:
    """The version's chunks below ``paths``, a window at a time (a path that
    is not in the version: ``NotFoundError`` before the first window)."""
    source, roots = _roots(repo, header, paths)
    return chunk_windows(repo, _refs(source, roots), window)


def chunk_windows(repo: Repository, refs: Iterator[ChunkRef],
                  window: int = WINDOW_CHUNKS) -> Iterator[Window]:
    """Any stream of chunk references (one worker's share, say) in windows."""
    cache = repo.cache
    batch: dict[str, ChunkRef] = {}
    count = 0
    for ref in refs:
        batch.setdefault(ref.chunk_id, ref)
        count += 1
        if count >= window:
            yield Window(count, [r for cid, r in batch.items() if not cache.has(cid)])
            batch, count = {}, 0
    if count:
        yield Window(count, [r for cid, r in batch.items() if not cache.has(cid)])
