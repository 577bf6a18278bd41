"""Looking after the shared chunk cache: stats, LRU prune, clear, verify, prefetch.

Used by ``dsfs cache ...``, ``dsfs prefetch`` and by a mount with a size
limit.  It works only through ``ChunkCache`` and ``CacheIndex`` (no lmdb, no
pyfuse3 here); it lives beside the mount because the mount is its main user,
and belongs in ``dsfs.cache`` when that package is next opened.

Besides chunks, the cache's LMDB index memoizes version trees (the
``tree_*`` tables, ``dsfs.cache.index``): ``clear_trees`` drops them all
when no dsfs mount is running, and ``forget_gone_trees`` drops those of
versions the store no longer has (and of versions depending on them), never
those a running mount uses; ``forget_gone_manifests`` drops their cached
manifests.  ``dsfs get``'s read-only copies (``<cache>/copies``) are
evicted by ``prune(copies=True)`` in the same LRU order as chunks.

Eviction removes the least recently used chunks (the index's last-access
time, which readers update in batches) until the cache fits.  It never
removes a chunk named in ``protect`` (the chunks a mount has open); a chunk
another process has open stays readable through its open file after removal
(POSIX unlink semantics), and a mount that needs a removed chunk again
fetches it again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from dsfs import config
from dsfs.cache.chunks import ChunkCache
from dsfs.cache.index import index_dir
from dsfs.engine.materialize import complete_copies, remove_copy
from dsfs.engine.treeindex import forget_trees
from dsfs.errors import UsageError
from dsfs.format.digest import bytes_to_id, chunk_id
from dsfs.format.manifest import ChunkRef
from dsfs.fsutil import TMP_PREFIX
from dsfs.mount import table
from dsfs.repository import Repository

log = logging.getLogger("dsfs.cache")

#: Environment variable giving the default cache size limit (e.g. ``50G``).
SIZE_ENV = "DSFS_CACHE_SIZE"

#: Free space ``make_room`` leaves beyond what the failed write needed (the
#: index and the copies grow too).
ROOM_MARGIN = 1 << 20

#: A temporary chunk file older than this belongs to a write that died.
STALE_TEMP_SECONDS = 3600.0


#: The cache's counters: ranged and whole-pack GETs, bytes they fetched, whole
#: packs fetched (the span policy), of those the ones fetched at the first read
#: in the pack because the version's reads looked shuffled, bytes that readers
#: (mounts, fsspec) served.
COUNTERS = ("gets", "fetched_bytes", "span_fetches", "shuffled_spans", "read_bytes")


def parse_size(text: str | None) -> int | None:
    """``500M``, ``20G``, ``1.5T``, ``1048576`` → bytes; None stays None."""
    if text is None or not text.strip():
        return None
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = value[-1] if value and value[-1] in units else ""
    try:
        size = int(float(value[: len(value) - len(unit)]) * units[unit])
    except ValueError:
        raise UsageError(f"{text!r} is not a size (examples: 500M, 20G, 1T)") from None
    if size <= 0:
        raise UsageError(f"cache size {text!r} must be positive")
    return size


def default_limit() -> int | None:
    return parse_size(os.environ.get(SIZE_ENV))


@dataclass
class CacheStats:
    chunks: int
    bytes: int
    oldest_access: int | None
    newest_access: int | None
    index_bytes: int
    #: Read-only copies made by ``dsfs get`` (``<cache>/copies``), each file once.
    copies_bytes: int = 0
    #: Temporary files of writes still running or killed (chunks, copies).
    temp_files: int = 0
    temp_bytes: int = 0
    #: What readers did since the last clear (``COUNTERS``; all processes).
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        """What the cache takes on disk: chunks, index, copies and temporaries;
        the size limit applies to this."""
        return self.bytes + self.index_bytes + self.copies_bytes + self.temp_bytes


def _allocated(st: os.stat_result) -> int:
    return st.st_blocks * 512


def index_bytes(cache: ChunkCache) -> int:
    """Disk space of the LMDB index (its files are sparse: blocks, not length)."""
    total = 0
    for name in ("data.mdb", "lock.mdb"):
        with contextlib.suppress(FileNotFoundError):
            total += _allocated(os.stat(index_dir(cache.root) / name))
    return total


_copies_memo: dict[str, tuple[int, int]] = {}


def copies_bytes(cache: ChunkCache) -> int:
    """Disk space of ``dsfs get``'s copies, a hard-linked file counted once.

    Walking every copy is costly, so the sum is remembered per process until
    the copies directory changes (a copy added, renamed or removed)."""
    root = copies_dir(cache)
    try:
        stamp = os.stat(root).st_mtime_ns
    except FileNotFoundError:
        return 0
    memo = _copies_memo.get(str(root))
    if memo is not None and memo[0] == stamp:
        return memo[1]
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(os.path.join(dirpath, name))
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += _allocated(st)
    _copies_memo[str(root)] = (stamp, total)
    return total


def copies_dir(cache: ChunkCache) -> Path:
    return cache.root / "copies"


def temporaries(cache: ChunkCache) -> list[tuple[str, int, float]]:
    """(path, bytes, mtime) of every temporary chunk file (``.tmp-*``)."""
    found = []
    for sub in os.scandir(cache.chunk_dir) if cache.chunk_dir.exists() else []:
        if not sub.is_dir(follow_symlinks=False):
            continue
        for entry in os.scandir(sub.path):
            if entry.name.startswith(TMP_PREFIX):
                with contextlib.suppress(FileNotFoundError):
                    st = entry.stat(follow_symlinks=False)
                    found.append((entry.path, _allocated(st), st.st_mtime))
    return found


def remove_stale_temporaries(cache: ChunkCache, older_than: float = STALE_TEMP_SECONDS
                             ) -> tuple[int, int]:
    """Remove temporary chunk files no running write can still own (older
    than ``older_than`` seconds); returns (files, bytes)."""
    cutoff = time.time() - older_than
    removed = freed = 0
    for path, size, mtime in temporaries(cache):
        if mtime < cutoff:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                removed += 1
                freed += size
    return removed, freed


def stats(cache: ChunkCache) -> CacheStats:
    count = total = 0
    oldest: int | None = None
    newest: int | None = None
    for _digest, size, atime in cache.index.iter_chunks():
        count += 1
        total += size
        oldest = atime if oldest is None else min(oldest, atime)
        newest = atime if newest is None else max(newest, atime)
    temps = temporaries(cache)
    return CacheStats(count, total, oldest, newest, index_bytes(cache), copies_bytes(cache),
                      len(temps), sum(size for _p, size, _m in temps), cache.counters())


def prune(cache: ChunkCache, limit: int, protect: Iterable[str] = (),
          copies: bool = False) -> tuple[int, int]:
    """Evict least recently used chunks until the whole cache (chunks, index,
    ``get`` copies, temporaries: ``CacheStats.total_bytes``) takes at most
    ``limit`` bytes, or nothing evictable is left.  Stale temporaries go first.

    With ``copies`` (``dsfs cache prune``), the read-only copies ``dsfs get``
    made in ``<cache>/copies`` are evicted too, in one least-recently-used
    order with the chunks (a copy's last use is its last ``get``); a mount's
    limit evicts chunks only.  Only those copies are ever removed: a
    ``get --copy DIR`` target is the user's and is not part of the cache.

    Returns (chunks and copies removed, bytes freed)."""
    remove_stale_temporaries(cache)
    cache.index.expire_pack_runs(config.span_settings()[2])
    if copies:
        remove_stale_builds(cache)
    keep = set(protect)
    chunks = sorted(cache.index.iter_chunks(), key=lambda c: c[2])
    temps = temporaries(cache)
    other = (index_bytes(cache) + copies_bytes(cache)
             + sum(size for _p, size, _m in temps))
    total = other + sum(size for _d, size, _a in chunks)
    # (last use, kind, name, bytes its removal frees)
    order: list[tuple[float, int, str, int]] = [
        (atime, 0, bytes_to_id(digest), size) for digest, size, atime in chunks]
    if copies and total > limit:
        order += [(used, 1, name, copy_own_bytes(cache, name))
                  for name, used in complete_copies(copies_dir(cache)).items()]
        order.sort()
    doomed: list[str] = []
    gone_copies = 0
    freed = 0
    for _used, kind, name, size in order:
        if total - freed <= limit:
            break
        if kind == 1:
            remove_copy_of(cache, name)
            gone_copies += 1
        elif name in keep:
            continue
        else:
            doomed.append(name)
        freed += size
    if doomed:
        cache.discard(doomed)
    return len(doomed) + gone_copies, freed


def copy_own_bytes(cache: ChunkCache, name: str) -> int:
    """Disk space removing one copy frees: its directories and the files no
    other copy shares (hard links from related versions' copies stay)."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(copies_dir(cache) / name):
        for child in dirnames + filenames:
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(os.path.join(dirpath, child))
                if st.st_nlink == 1 or child in dirnames:
                    total += _allocated(st)
    return total


def remove_copy_of(cache: ChunkCache, name: str) -> None:
    """Remove one complete copy: its marker first (a ``get`` then rebuilds it
    rather than returning a half-removed tree), then the tree."""
    root = copies_dir(cache)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(root / f"{name}.complete")
    remove_copy(root / name)


def remove_stale_builds(cache: ChunkCache, older_than: float = STALE_TEMP_SECONDS) -> int:
    """Remove ``.building-*`` trees of ``get`` runs that died (older than
    ``older_than`` seconds) and copies left without their marker; returns
    how many went."""
    root = copies_dir(cache)
    cutoff = time.time() - older_than
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(root):
            if not entry.is_dir(follow_symlinks=False):
                continue
            with contextlib.suppress(OSError):
                stale = entry.stat(follow_symlinks=False).st_mtime < cutoff
                unmarked = not os.path.exists(root / f"{entry.name}.complete")
                if stale and (entry.name.startswith(".building-") or unmarked):
                    remove_copy(Path(entry.path))
                    removed += 1
    return removed


def make_room(cache: ChunkCache, needed: int, protect: Iterable[str] = ()) -> int:
    """Evict least recently used chunks (not those in ``protect``) until the
    file system of the cache has ``needed`` bytes free plus a margin, after a
    write failed for lack of space.  Returns the bytes freed."""
    want = needed + ROOM_MARGIN
    keep = set(protect)
    doomed: list[str] = []
    freed = 0
    try:
        st = os.statvfs(cache.chunk_dir)
        free = st.f_bavail * st.f_frsize
    except OSError:
        free = 0
    for digest, size, _atime in sorted(cache.index.iter_chunks(), key=lambda c: c[2]):
        if free + freed >= want:
            break
        cid = bytes_to_id(digest)
        if cid not in keep:
            doomed.append(cid)
            freed += size
    if doomed:
        cache.discard(doomed)
        log.warning("the cache's disk is full: evicted %d chunk(s), %d bytes",
                    len(doomed), freed)
    return freed


def evict_when_full(cache: ChunkCache,
                    protect: Callable[[], Iterable[str]] | None = None) -> None:
    """Make a fetch into ``cache`` that meets a full disk evict least recently
    used chunks (except ``protect()``) and try once more, instead of failing:
    for a mount with a size limit, whose limit the disk may not fit (a chunk
    another reader has open stays readable through its open file)."""

    def on_full(needed: int) -> bool:
        try:
            keep = set(protect()) if protect is not None else set()
        except RuntimeError:  # the protected set changed while it was read
            keep = set()
        return make_room(cache, needed, keep) > 0

    cache.on_full = on_full


def clear(cache: ChunkCache) -> tuple[int, int]:
    """Remove every chunk; return (chunks, bytes)."""
    found = stats(cache)
    cids = [bytes_to_id(d) for d, _s, _a in cache.index.iter_chunks()]
    cache.discard(cids)
    cache.index.clear_counters()
    shutil.rmtree(cache.root / "locks", ignore_errors=True)
    # chunk files the index did not know about (a lost index), and temporaries
    # of writes that died (not those of a write still running)
    cutoff = time.time() - STALE_TEMP_SECONDS
    for sub in cache.chunk_dir.iterdir() if cache.chunk_dir.exists() else []:
        if sub.is_dir():
            for entry in os.scandir(sub):
                with contextlib.suppress(FileNotFoundError):
                    if (not entry.name.startswith(TMP_PREFIX)
                            or entry.stat(follow_symlinks=False).st_mtime < cutoff):
                        os.unlink(entry.path)
    return found.chunks, found.bytes


def mounted_versions() -> set[bytes]:
    """Raw ids of the versions that dsfs mounts of this machine serve."""
    found = set()
    for record in table.dsfs_mounts():
        with contextlib.suppress(ValueError):
            found.add(bytes.fromhex(record.version_id))
    return found


def clear_trees(cache: ChunkCache) -> int | None:
    """Forget every memoized version tree; None (and nothing forgotten) while a
    dsfs mount runs, since a mount keeps using its records."""
    if table.dsfs_mounts():
        return None
    return forget_trees(cache.index, None)


def forget_gone_trees(repo: Repository) -> int:
    """Forget the memoized trees of versions the store no longer holds (and of
    versions whose trees depend on them), except what running mounts use and
    the versions of other stores sharing this cache (those whose manifest is
    cached under another store's id).  Returns how many versions were
    forgotten."""
    existing = {bytes.fromhex(v) for v in repo.version_ids()}
    gone = repo.cache.index.tree_version_ids() - existing
    others = [d for d in _manifest_dirs(repo) if d.name != repo.store_id.hex()]
    gone = {vid for vid in gone if not any(
        (d / vid.hex()).exists() or (d / f"{vid.hex()}.head").exists() for d in others)}
    if not gone:
        return 0
    return forget_trees(repo.cache.index, gone, mounted_versions())


def _manifest_dirs(repo: Repository) -> list[Path]:
    root = repo.cache_root / "manifests"
    return [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []


def forget_gone_manifests(repo: Repository) -> int:
    """Remove the cached manifests and headers (``manifests/<store id>/``) of
    versions this store no longer holds; returns how many files went.  A
    version hidden by ``delete --force`` keeps its manifest in the store, and
    here."""
    existing = set(repo.version_ids())
    mine = repo.cache_root / "manifests" / repo.store_id.hex()
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(mine):
            vid = entry.name.split(".", 1)[0]  # <id>, <id>.head, <id>.stamp
            if len(vid) == 32 and vid not in existing and entry.is_file():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def verify(cache: ChunkCache, progress: Callable[[int], None] | None = None
           ) -> tuple[int, list[str]]:
    """Hash every cached chunk; remove the corrupt ones.  Returns (checked, bad ids)."""
    cids = [bytes_to_id(d) for d, _s, _a in cache.index.iter_chunks()]

    def check(cid: str) -> str | None:
        try:
            data = cache.chunk_path(cid).read_bytes()
        except FileNotFoundError:
            return cid
        if progress is not None:
            progress(len(data))
        return None if chunk_id(data) == cid else cid

    with ThreadPoolExecutor(max_workers=4) as pool:
        bad = [cid for cid in pool.map(check, cids) if cid is not None]
    if bad:
        cache.discard(bad)
    return len(cids), bad


def prefetch(repo: Repository, refs: list[ChunkRef],
             progress: Callable[[int], None] | None = None) -> int:
    """Fetch what the cache lacks of ``refs`` (in parallel); return bytes fetched."""
    try:
        return repo.cache.fetch(repo.store, refs, progress)
    finally:
        repo.cache.flush_counters()


@dataclass
class CacheLimit:
    """A cache size limit kept by this module, as the content reader wants it
    (``dsfs.content.CacheLimit``): used by mounts and by ``dsfs://`` sessions."""

    cache: ChunkCache
    limit: int

    def prune(self, protect: set[str]) -> tuple[int, int]:
        return prune(self.cache, self.limit, protect)

    def when_full(self, protect: Callable[[], Iterable[str]]) -> None:
        evict_when_full(self.cache, protect)
