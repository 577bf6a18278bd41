"""Adding external files: URLs a version references instead of storing them.

``dsfs add s3://bucket/prefix/ ...``, ``dsfs add https://host/file`` and
``Dataset.add_external_files`` (ClearML's links) record each object as an
item of the draft whose source is its URL (``scan``): nothing is read but the
listing and the objects' size and ETag.  ``close`` then reads each object
once (``hash_object``) to record its chunk digests and file digest; nothing
of it is written to the store.  Later reads fetch byte ranges from the URL
and check every chunk against those digests (``dsfs.store.external``), so an
object that changed is an integrity error, never mixed bytes; ``verify``
compares size and ETag (``dsfs.engine.verify``).

Close reads several objects at a time: ``Prehasher`` wraps the stream of the
new tree's rows and hashes the external objects a few dozen rows ahead in
worker threads, in the order the walk will ask for them.  What an object
hashed to is remembered in the cache (``external/<digest of the URL>.json``,
with its strong ETag; used while a HEAD shows the same ETag and size), so
``upload()`` then ``finalize()``, a close retried after a failure, or the
same objects added to a later version read each object once.  A remembered
answer that were wrong could only fail reads (every chunk is checked), never
change bytes.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import stat
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from dsfs.engine.dirtree import dfs_key
from dsfs.engine.scan import SourceItem, normalize_dataset_path
from dsfs.errors import InputError, IntegrityError
from dsfs.format.digest import CHUNK_SIZE, chunk_id, digest_hex, file_hasher
from dsfs.format.manifest import FILE, ChunkRef, Entry, validate_path
from dsfs.report import Progress
from dsfs.store import external
from dsfs.store.external import is_external

#: Mode of an external file (objects have none).
FILE_MODE = stat.S_IFREG | 0o644

#: Objects hashed at once by a close, and rows of the walk looked ahead.
WORKERS = 8
LOOKAHEAD = 64

__all__ = ["FILE_MODE", "Prehasher", "hash_object", "is_external", "scan", "scan_many"]


def scan(url: str, dataset_folder: str = "", wildcards: Sequence[str] | None = None,
         recursive: bool = True) -> list[SourceItem]:
    """The draft items for ``url``, in walking order: one object, or (an
    ``s3://`` folder) every object below it at its path relative to the folder,
    below ``dataset_folder``.  ``wildcards`` match the object's file name (any
    of them); ``recursive=False`` keeps the folder's own objects only."""
    url = external.check_url(url)
    folder = normalize_dataset_path(dataset_folder)
    base = url.split("?", 1)[0].rstrip("/")
    items: dict[str, SourceItem] = {}
    for remote in external.listing(url):
        where = remote.url.split("?", 1)[0]
        rel = where.rsplit("/", 1)[-1] if where == base else where[len(base) + 1:]
        if not recursive and "/" in rel:
            continue
        name = rel.rsplit("/", 1)[-1]
        if wildcards and not any(fnmatch.fnmatchcase(name, w) for w in wildcards):
            continue
        path = "/".join(p for p in (folder, rel) if p)
        try:
            validate_path(path)
        except IntegrityError:
            raise InputError(f"cannot add {external.shown(remote.url)!r}: its dataset path "
                             f"{path!r} is not a safe relative path") from None
        items[path] = SourceItem(path, FILE, remote.url, remote.size, FILE_MODE,
                                 int(remote.mtime * 1e9), remote.etag)
    return sorted(items.values(), key=lambda i: dfs_key(i.path))


def scan_many(urls: Sequence[str], dataset_folder: str = "",
              wildcards: Sequence[str] | None = None, recursive: bool = True
              ) -> list[SourceItem]:
    """``scan`` of several URLs, ``WORKERS`` at a time (each http(s) URL costs
    a HEAD request), as one list in walking order; a later URL wins a path."""
    with ThreadPoolExecutor(max_workers=min(WORKERS, len(urls)) or 1,
                            thread_name_prefix="dsfs-external") as pool:
        scans = list(pool.map(lambda url: scan(url, dataset_folder, wildcards, recursive),
                              urls))
    items: dict[str, SourceItem] = {}
    for found in scans:
        items.update((i.path, i) for i in found)
    return sorted(items.values(), key=lambda i: dfs_key(i.path))


def hash_object(path: str, item: SourceItem, progress: Progress | None = None,
                memo: Path | None = None, stop: threading.Event | None = None) -> Entry:
    """Read the object once and return its entry: chunk digests located in the
    object itself, the file digest, and the size and ETag it has now;
    ``progress`` advances by the bytes read.  ``memo``: the directory of
    remembered answers (see the module docstring); ``stop``, once set, ends
    the read early (the close is failing or interrupted).  One request for
    an http(s) object seen for the first time (its GET gives size and ETag);
    one HEAD for one remembered."""
    url = item.source
    remembered = _recall(memo, url)
    if remembered is not None:
        now = external.stat(url)
        if now is None:
            raise _gone(url, path)
        digest, chunks, etag = remembered
        if now.etag == etag and now.size == sum(n for _c, _o, n in chunks):
            if progress is not None:
                progress.advance(now.size)
            return Entry(path, FILE, now.size, item.mode, item.mtime_ns, digest,
                         tuple(ChunkRef(cid, url, o, n) for cid, o, n in chunks),
                         url=url, etag=now.etag)
    opened = external.open_object(url)
    if opened is None:
        raise _gone(url, path)
    now, pieces = opened
    hasher = file_hasher()
    cut: list[tuple[str, int, int]] = []
    pending = bytearray()
    offset = 0

    def take(piece: bytes) -> None:
        nonlocal offset
        cut.append((chunk_id(piece), offset, len(piece)))
        offset += len(piece)

    for data in pieces:
        if stop is not None and stop.is_set():
            raise InputError(f"reading {external.shown(url)} was stopped")
        if progress is not None:
            progress.advance(len(data))
        hasher.update(data)
        pending += data
        while len(pending) >= CHUNK_SIZE:
            take(bytes(pending[:CHUNK_SIZE]))
            del pending[:CHUNK_SIZE]
    if pending:
        take(bytes(pending))
    if offset != now.size:
        raise InputError(f"the external object {external.shown(url)} changed while it was "
                         f"read ({now.size} bytes announced, {offset} read): add it again")
    digest = hasher.digest_id()
    _remember(memo, url, now.etag, digest, cut)
    return Entry(path, FILE, offset, item.mode, item.mtime_ns, digest,
                 tuple(ChunkRef(cid, url, o, n) for cid, o, n in cut), url=url, etag=now.etag)


def _gone(url: str, path: str) -> InputError:
    return InputError(f"the external object {external.shown(url)} added as {path!r} is gone")


def _memo_file(memo: Path | None, url: str) -> Path | None:
    if memo is None:
        return None
    return memo / f"{digest_hex(url.encode())}.json"


def _recall(memo: Path | None, url: str) -> tuple[str, list[tuple[str, int, int]], str] | None:
    """(file digest, chunks, ETag) remembered for ``url``, if any."""
    where = _memo_file(memo, url)
    if where is None or not where.exists():
        return None
    try:
        obj = json.loads(where.read_bytes())
        if obj["url"] != url:
            return None
        chunks = [(str(c), int(o), int(n)) for c, o, n in obj["chunks"]]
        return str(obj["digest"]), chunks, str(obj["etag"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable: read the object


def _remember(memo: Path | None, url: str, etag: str, digest: str,
              chunks: list[tuple[str, int, int]]) -> None:
    # only a strong ETag names the content (a weak one, W/"...", may not)
    where = _memo_file(memo, url)
    if where is None or not etag or etag.startswith("W/"):
        return
    data = json.dumps({"url": url, "etag": etag, "digest": digest, "chunks": chunks}).encode()
    with contextlib.suppress(OSError):  # a memo is an optimisation only
        where.parent.mkdir(parents=True, exist_ok=True)
        tmp = where.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{where.name}")
        tmp.write_bytes(data)
        os.replace(tmp, where)


def memo_dir(cache_root: Path) -> Path:
    """Where a cache remembers what external objects hashed to."""
    return cache_root / "external"


Row = tuple[str, "bytes | SourceItem"]


class Prehasher:
    """The rows of a new tree, with their external objects hashed ahead.

    ``rows()`` passes ``source``'s rows through unchanged, but only after it
    has submitted the hashing of the external items among the next
    ``LOOKAHEAD`` rows to ``WORKERS`` threads; ``entry(path, item)`` then
    returns the finished entry (hashing it there if it was not submitted).
    The walk asks in the order the rows come, so a row the walk never asks
    for (replaced by a later operation) only costs its read."""

    def __init__(self, source: Iterable[Row], progress: Progress | None = None,
                 memo: Path | None = None) -> None:
        self._source = iter(source)
        self._progress = progress
        self._memo = memo
        self._pool = ThreadPoolExecutor(max_workers=WORKERS,
                                        thread_name_prefix="dsfs-external")
        self._pending: dict[tuple[str, str], Future[Entry]] = {}
        self._stop = threading.Event()

    def rows(self) -> Iterator[Row]:
        ahead: deque[Row] = deque()
        for row in self._source:
            self._submit(row)
            ahead.append(row)
            if len(ahead) > LOOKAHEAD:
                yield ahead.popleft()
        yield from ahead

    def _submit(self, row: Row) -> None:
        path, value = row
        if isinstance(value, SourceItem) and value.kind == FILE and is_external(value.source):
            self._pending[(path, value.source)] = self._pool.submit(
                hash_object, path, value, self._progress, self._memo, self._stop)

    def entry(self, path: str, item: SourceItem) -> Entry:
        future = self._pending.pop((path, item.source), None)
        if future is None:
            return hash_object(path, item, self._progress, self._memo)
        return future.result()

    def close(self) -> None:
        """Stop: reads under way end at their next piece, queued ones never start."""
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()
