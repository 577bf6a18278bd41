"""The pack span policy: when a reader fetches a whole pack instead of a chunk.

A shuffled first epoch reads a version's files in random order, so the scan
window of ``dsfs.content.scan`` (which needs reads that follow each other in
a pack) never opens, and each file would cost a GET.  The span policy
watches where cold lone reads land instead, counted over every process of
the machine in the cache index, and fetches a pack whole with one GET
(``ChunkCache.fetch_pack``) so that the following reads of that pack are
served from the cache:

* per pack: the ``after``-th cold lone read (2 by default) within ``seconds``
  in one pack fetches that pack;
* per version: once cold lone reads have landed in ``shuffled`` different
  packs of the version (8 by default) within ``seconds``, the reads look
  shuffled, and every cold lone read of the version fetches its pack whole
  at the first touch.  Only a reader's own reads count towards this, and
  not those at the start of a pack (where a scan that crosses into the next
  pack lands), nor readahead.

It applies only when the cache may hold what it fetches: the version's data
must fit in ``share`` of the cache size limit (of the cache disk's free
space when no limit is set).  A reader of a version bigger than that
fetches exactly what it reads, and so does a lone read anywhere: fewer than
``shuffled`` reads in different packs fetch their own bytes only.
Settings: ``DSFS_SPAN_AFTER`` (0 turns spans off), ``DSFS_SPAN_SHUFFLED``
(0: never at the first touch), ``DSFS_SPAN_SECONDS``, ``DSFS_SPAN_SHARE``
(``dsfs.config``).
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
    #: Packs of the version with a cold lone read after which every cold lone
    #: read fetches its whole pack (0: never at the first read).
    shuffled: int = config.SPAN_SHUFFLED
    #: Seconds a run of misses in a pack, or of packs of a version, counts for.
    seconds: float = config.SPAN_SECONDS
    #: What the packs missed are counted for: the id of the version read.
    scope: str = ""

    @property
    def enabled(self) -> bool:
        return self.after > 0

    def whole_pack(self, misses: int, packs: int) -> bool:
        """Whether a cold lone read, the ``misses``-th of its pack's run while
        ``packs`` packs of the version had one, fetches its pack whole."""
        return self.enabled and (
            misses >= self.after or (self.shuffled > 0 and packs >= self.shuffled))


#: A policy that never fetches a whole pack.
NO_SPANS = SpanPolicy(after=0, shuffled=0)


def free_bytes(path: Path) -> int:
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def span_policy(version_bytes: int, cache_root: Path, cache_limit: int | None,
                scope: str = "") -> SpanPolicy:
    """The policy for readers of a version of ``version_bytes`` (its id
    ``scope``): spans when the version fits in the share of the cache limit
    (or of the free space of the cache's disk) that the settings allow, none
    otherwise."""
    after, shuffled, seconds, share = config.span_settings()
    room = cache_limit if cache_limit is not None else free_bytes(cache_root)
    if after <= 0 or version_bytes > share * room:
        return NO_SPANS
    return SpanPolicy(after=after, shuffled=shuffled, seconds=seconds, scope=scope)
