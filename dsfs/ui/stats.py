"""Statistics of a version: files and bytes per top-level folder and per
extension, and a histogram of file sizes.

A version never changes, so its statistics are computed once per machine and
kept as a small JSON file in the cache (``<cache>/ui/stats/<version id>.json``,
derived data like the rest of the cache).  A version with one parent whose
statistics are known is computed from them and its own changes (a diff that
reads only the directories its delta touches); otherwise its tree is walked
from the tree index, in bounded memory.  Walking a million files takes
seconds, so ``StatsJobs`` runs big ones in a background thread (with its own
repository object, as a tree source serves one thread) while pages say the
statistics are on their way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsfs.engine import treewalk
from dsfs.errors import DsfsError
from dsfs.format.manifest import DIR, FILE, Entry, Header
from dsfs.fsutil import write_json_atomic
from dsfs.repository import Repository
from dsfs.store import open_store

log = logging.getLogger("dsfs")

STATS_FORMAT = 1
#: Size buckets: 0 bytes, then [2**(i-1), 2**i) for i = 1..BUCKETS-1 (the last
#: one open-ended).
BUCKETS = 42
#: Versions with at most this many files (or own changes, given the parent's
#: statistics) are computed while the page waits.
INLINE_LIMIT = 20_000


def bucket(size: int) -> int:
    return min(size.bit_length(), BUCKETS - 1)


def bucket_label(i: int) -> str:
    if i == 0:
        return "0 B"
    low = 1 << (i - 1)
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if low >= scale:
            return f"≥{low // scale} {unit}"
    return f"≥{low} B"


def extension(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else "(none)"


def top_folder(path: str) -> str:
    return path.split("/", 1)[0] if "/" in path else "(top level)"


@dataclass
class Stats:
    files: int = 0
    bytes: int = 0
    folders: dict[str, list[int]] = field(default_factory=dict)
    extensions: dict[str, list[int]] = field(default_factory=dict)
    sizes: list[int] = field(default_factory=lambda: [0] * BUCKETS)

    def apply(self, entry: Entry, sign: int) -> None:
        """Count (``sign`` 1) or uncount (-1) one file or symlink."""
        size = entry.size if entry.kind == FILE else 0
        self.files += sign
        self.bytes += sign * size
        for table, key in ((self.folders, top_folder(entry.path)),
                           (self.extensions, extension(entry.path))):
            row = table.setdefault(key, [0, 0])
            row[0] += sign
            row[1] += sign * size
            if row[0] == 0:
                del table[key]
        self.sizes[bucket(size)] += sign

    def to_json(self) -> dict[str, Any]:
        return {"format": STATS_FORMAT, "files": self.files, "bytes": self.bytes,
                "folders": self.folders, "extensions": self.extensions, "sizes": self.sizes}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Stats:
        return cls(obj["files"], obj["bytes"], obj["folders"], obj["extensions"],
                   list(obj["sizes"]))

    def top(self, table: str, limit: int = 12) -> list[tuple[str, int, int]]:
        """(key, files, bytes) of the biggest rows by bytes, the rest summed."""
        rows = sorted(getattr(self, table).items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[0]))
        out = [(k, v[0], v[1]) for k, v in rows[:limit]]
        rest = rows[limit:]
        if rest:
            out.append((f"{len(rest)} others", sum(v[0] for _k, v in rest),
                        sum(v[1] for _k, v in rest)))
        return out

    def histogram(self) -> tuple[list[int], list[str]]:
        """Counts and labels from the smallest to the largest bucket in use."""
        used = [i for i, c in enumerate(self.sizes) if c]
        if not used:
            return [], []
        span = range(used[0], used[-1] + 1)
        return [self.sizes[i] for i in span], [bucket_label(i) for i in span]


def stats_path(repo: Repository, version_id: str) -> Path:
    return _stats_dir(repo.cache_root) / f"{version_id}.json"


def _stats_dir(cache_root: Path) -> Path:
    return cache_root / "ui" / "stats"


def drop_all(cache_root: Path) -> int:
    """Remove every kept statistics file (``dsfs cache clear``); returns how many."""
    return _remove(_stats_dir(cache_root), lambda _version_id: True)


def forget_gone(cache_root: Path, existing: set[str]) -> int:
    """Remove the statistics of versions not in ``existing`` (``dsfs cache
    prune``, given the ids a store holds); returns how many went.  Only files
    named ``<32 hex digits>.json`` are touched."""
    return _remove(_stats_dir(cache_root), lambda version_id: version_id not in existing)


def _remove(directory: Path, doomed: Callable[[str], bool]) -> int:
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            version_id, dot, suffix = entry.name.partition(".")
            if (dot and suffix == "json" and _VERSION_ID.fullmatch(version_id)
                    and doomed(version_id) and entry.is_file()):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


_VERSION_ID = re.compile(r"[0-9a-f]{32}")


def cached(repo: Repository, version_id: str) -> Stats | None:
    try:
        obj = json.loads(stats_path(repo, version_id).read_text())
        if obj.get("format") == STATS_FORMAT:
            return Stats.from_json(obj)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _count(stats: Stats, entries: Iterable[Entry]) -> Stats:
    for entry in entries:
        if entry.kind != DIR:
            stats.apply(entry, 1)
    return stats


def compute(repo: Repository, header: Header) -> Stats:
    """The statistics of a version, from its parent's when known; saved."""
    known = cached(repo, header.id)
    if known is not None:
        return known
    base = cached(repo, header.parents[0]) if len(header.parents) == 1 else None
    if base is not None:
        parent = repo.header(header.parents[0])
        rows = treewalk.diff(treewalk.open_tree(repo, parent), treewalk.open_tree(repo, header))
        for _path, old, new in rows:
            if old is not None:
                base.apply(old, -1)
            if new is not None:
                base.apply(new, 1)
        stats = base
    else:
        stats = _count(Stats(), treewalk.iter_files(treewalk.open_tree(repo, header)))
    try:
        write_json_atomic(stats_path(repo, header.id), stats.to_json(), durable=False)
    except OSError as exc:  # a read-only or full cache: the page still shows them
        log.warning("dsfs: warning: could not save the statistics of %s: %s", header.id, exc)
    return stats


def cheap(repo: Repository, header: Header) -> bool:
    """True when ``compute`` will be quick enough to run while a page waits."""
    if cached(repo, header.id) is not None:
        return True
    if len(header.parents) == 1 and cached(repo, header.parents[0]) is not None:
        own = sum(int(header.stats.get(k, 0)) for k in ("added", "removed", "modified"))
        return own <= INLINE_LIMIT
    return int(header.stats.get("files", 0)) <= INLINE_LIMIT


class StatsJobs:
    """Statistics of big versions computed in background threads, one per
    version at a time, each with its own repository (store and tree sources)."""

    def __init__(self, store_url: str, cache_root: Path) -> None:
        self.store_url, self.cache_root = store_url, cache_root
        self._lock = threading.Lock()
        self._running: dict[str, threading.Thread] = {}
        self.failed: dict[str, str] = {}

    def get(self, repo: Repository, header: Header) -> Stats | None:
        """The statistics if they can be had now; else start a job, None."""
        if cheap(repo, header):
            return compute(repo, header)
        self.start(header)
        return None

    def start(self, header: Header) -> None:
        with self._lock:
            if header.id in self._running or header.id in self.failed:
                return
            thread = threading.Thread(target=self._run, args=(header,), daemon=True,
                                      name=f"dsfs-ui-stats-{header.id[:8]}")
            self._running[header.id] = thread
        thread.start()

    def wait(self, timeout: float | None = None) -> None:
        for thread in list(self._running.values()):
            thread.join(timeout)

    def _run(self, header: Header) -> None:
        try:
            repo = Repository(open_store(self.store_url), self.cache_root)
            compute(repo, header)
        except (DsfsError, OSError) as exc:
            self.failed[header.id] = str(exc)
            log.warning("dsfs: warning: statistics of %s failed: %s", header.id, exc)
        finally:
            with self._lock:
                self._running.pop(header.id, None)
