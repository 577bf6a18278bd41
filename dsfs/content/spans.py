"""The pack span policy: when a reader fetches a whole pack instead of a chunk.

A shuffled first epoch reads a version's files in random order, so the scan
window of ``dsfs.content.reader`` (which needs reads that follow each other
in a pack) never opens, and each file costs a GET.  The span policy watches
where cold lone reads land instead: once ``after`` of them (2 by default,
counted over every process of the machine in the cache index) have landed
in one pack within ``seconds``, the next one fetches the whole pack with
one GET (``ChunkCache.fetch_pack``) and the following random reads of that
pack are served from the cache.

It applies only when the cache may hold what it fetches: the version's data
must fit in ``share`` of the cache size limit (of the cache disk's free
space when no limit is set).  A reader of a version bigger than that, or a
lone read anywhere, fetches exactly what it reads.  Settings:
``DSFS_SPAN_AFTER`` (0 turns spans off), ``DSFS_SPAN_SECONDS``,
``DSFS_SPAN_SHARE`` (``dsfs.config``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dsfs import config


@dataclass(frozen=True)
class SpanPolicy:
    #: Cold lone reads in a pack after which the pack is fetched whole (0: never).
    after: int = config.SPAN_AFTER
    #: Seconds a run of misses in a pack counts for.
    seconds: float = config.SPAN_SECONDS

    @property
    def enabled(self) -> bool:
        return self.after > 0


#: A policy that never fetches a whole pack.
NO_SPANS = SpanPolicy(after=0)


def free_bytes(path: Path) -> int:
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def span_policy(version_bytes: int, cache_root: Path, cache_limit: int | None) -> SpanPolicy:
    """The policy for readers of a version of ``version_bytes``: spans when the
    version fits in the share of the cache limit (or of the free space of the
    cache's disk) that the settings allow, none otherwise."""
    after, seconds, share = config.span_settings()
    room = cache_limit if cache_limit is not None else free_bytes(cache_root)
    if after <= 0 or version_bytes > share * room:
        return NO_SPANS
    return SpanPolicy(after=after, seconds=seconds)
