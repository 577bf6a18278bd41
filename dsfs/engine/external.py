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
"""

from __future__ import annotations

import fnmatch
import stat
from collections.abc import Sequence

from dsfs.engine.dirtree import dfs_key
from dsfs.engine.scan import SourceItem, normalize_dataset_path
from dsfs.errors import InputError, IntegrityError
from dsfs.format.digest import CHUNK_SIZE, chunk_id, file_hasher
from dsfs.format.manifest import FILE, ChunkRef, Entry, validate_path
from dsfs.report import Progress
from dsfs.store import external
from dsfs.store.external import is_external

#: Mode of an external file (objects have none).
FILE_MODE = stat.S_IFREG | 0o644

__all__ = ["FILE_MODE", "hash_object", "is_external", "scan"]


def scan(url: str, dataset_folder: str = "", wildcards: Sequence[str] | None = None,
         recursive: bool = True) -> list[SourceItem]:
    """The draft items for ``url``, in walking order: one object, or (an
    ``s3://`` folder) every object below it at its path relative to the folder,
    below ``dataset_folder``.  ``wildcards`` match the object's file name (any
    of them); ``recursive=False`` keeps the folder's own objects only."""
    external.check_url(url)
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


def hash_object(path: str, item: SourceItem, progress: Progress | None = None) -> Entry:
    """Read the object once and return its entry: chunk digests located in the
    object itself, the file digest, and the size and ETag it has now;
    ``progress`` advances by the bytes read."""
    url = item.source
    now = external.stat(url)
    if now is None:
        raise InputError(f"the external object {external.shown(url)} added as {path!r} "
                         "is gone")
    hasher = file_hasher()
    chunks: list[ChunkRef] = []
    pending = bytearray()
    offset = 0

    def cut(piece: bytes) -> None:
        nonlocal offset
        chunks.append(ChunkRef(chunk_id(piece), url, offset, len(piece)))
        offset += len(piece)

    for data in external.read_chunks(url):
        if progress is not None:
            progress.advance(len(data))
        hasher.update(data)
        pending += data
        while len(pending) >= CHUNK_SIZE:
            cut(bytes(pending[:CHUNK_SIZE]))
            del pending[:CHUNK_SIZE]
    if pending:
        cut(bytes(pending))
    if offset != now.size:
        raise InputError(f"the external object {external.shown(url)} changed while it was "
                         f"read ({now.size} bytes announced, {offset} read): add it again")
    return Entry(path, FILE, offset, item.mode, item.mtime_ns, hasher.digest_id(),
                 tuple(chunks), url=url, etag=now.etag)
