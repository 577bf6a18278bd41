"""What a ``dsfs://`` filesystem holds in one process: the repository, the
versions it has resolved and a ``BlockingReader`` (no fsspec types here).

A path is ``REF/PATH``: REF is a version id (or unique prefix), or
``PROJECT/NAME`` with an optional ``@VERSION`` or ``#TAG`` on the name
(``vision/cats@1.0.1/train/0001.jpg``).  A REF is resolved once per session,
so a "latest" REF keeps naming the version it named first.

A forked child (a data loader's worker) must not use its parent's LMDB
environment or store connections: ``Sessions.get`` makes each process its own.
It does keep what its parent resolved: a REF its parent (or the parent's
parent) had resolved names the same version in the child, without asking the
store again (``_resolved``).  So the workers of a loader read the version
their main process named, even if a newer one is published meanwhile, and
start without three GETs each (store config, claim, tags).
"""

from __future__ import annotations

import atexit
import os
import posixpath
import re
import stat
import threading
from dataclasses import dataclass, field

from dsfs import config
from dsfs.cache.chunks import ChunkCache
from dsfs.catalog import Catalog, Ref, parse_ref
from dsfs.content.blocking import BlockingReader
from dsfs.content.reader import ChunkReader
from dsfs.content.spans import span_policy
from dsfs.errors import UsageError
from dsfs.format.manifest import Header
from dsfs.mount import cachectl
from dsfs.repository import Repository
from dsfs.store.base import Store
from dsfs.vfs import ROOT_INO, Attr, NoEntry, OpenFile, VersionFS, open_tree_source

_ID_TEXT = re.compile(r"^[0-9a-fA-F]{6,32}$")

#: The versions the sessions of this process resolved, and those of the
#: processes it was forked from: {store URL: {REF as written: (pid, header)}}.
#: Only entries of another pid (an ancestor's) are taken without resolving: in
#: one process each session resolves its REFs itself.  Plain data, no lock, so
#: a fork copies it safely.
_resolved: dict[str, dict[str, tuple[int, Header]]] = {}


def split_path(path: str) -> tuple[str, Ref, str]:
    """``REF/PATH`` → (REF as written, Ref, PATH inside the version)."""
    parts = [p for p in path.strip("/").split("/") if p]
    if parts and _ID_TEXT.match(parts[0]):
        return parts[0], Ref(id=parts[0]), "/".join(parts[1:])
    if len(parts) < 2:
        raise UsageError(f"dsfs://{path.strip('/')}: name a version as "
                         "dsfs://PROJECT/NAME[@VERSION|#TAG]/PATH or dsfs://ID/PATH")
    ref = parse_ref(f"{parts[0]}/{parts[1]}")
    return f"{parts[0]}/{parts[1]}", ref, "/".join(parts[2:])


@dataclass
class Version:
    """One resolved version: its header and its tree as a ``VersionFS``."""

    ref_text: str
    header: Header
    vfs: VersionFS
    lock: threading.Lock = field(default_factory=threading.Lock)

    def node(self, inner: str) -> tuple[int, Attr]:
        """The inode and attributes at ``inner`` (``NoEntry`` if none)."""
        with self.lock:
            ino, attr = ROOT_INO, self.vfs.getattr(ROOT_INO)
            for name in (p for p in inner.split("/") if p):
                if not stat.S_ISDIR(attr.mode):
                    raise NoEntry(inner)
                attr = self.vfs.lookup(ino, name)
                ino = attr.ino
            return ino, attr

    def children(self, ino: int) -> list[tuple[str, Attr]]:
        with self.lock:
            return [(name, attr) for name, attr, _next in self.vfs.readdir(ino, 0)]

    def open(self, ino: int) -> OpenFile:
        with self.lock:
            return self.vfs.open(ino)

    def readlink(self, ino: int) -> str:
        with self.lock:
            return self.vfs.readlink(ino)


class Session:
    """The repository, versions and reader of one process."""

    def __init__(self, store: str, cache_dir: str | None) -> None:
        self.store_url = store
        self.repo = Repository.open(store, cache_dir)
        self.catalog = Catalog(self.repo)
        self.limit = cachectl.default_limit()
        self.reader = BlockingReader(self._make_reader)
        self._chunk_reader: ChunkReader | None = None
        self._versions: dict[str, Version] = {}
        self._lock = threading.Lock()
        self._largest = 0
        #: The version the span policy counts shuffled reads for: the largest.
        self._scope = ""

    def _make_reader(self) -> tuple[ChunkCache, Store, ChunkReader]:
        cache = self.repo.cache
        limit = None if self.limit is None else cachectl.CacheLimit(cache, self.limit)
        reader = ChunkReader(cache, self.repo.store, limit=limit,
                             spans=span_policy(self._largest, cache.root, self.limit,
                                               scope=self._scope))
        reader.eager_counters = True  # a data loader's worker is killed, not closed
        self._chunk_reader = reader
        return cache, self.repo.store, reader

    def version(self, ref_text: str, ref: Ref) -> Version:
        with self._lock:
            found = self._versions.get(ref_text)
            if found is not None:
                return found
        known = _resolved.setdefault(self.store_url, {})
        inherited = known.get(ref_text)
        if inherited is not None and inherited[0] != os.getpid():
            header = inherited[1]  # as the parent process resolved it
        else:
            header = self.catalog.resolve(ref)
            known[ref_text] = (os.getpid(), header)
        vfs = VersionFS(open_tree_source(self.repo, header))
        with self._lock:
            found = self._versions.setdefault(ref_text, Version(ref_text, header, vfs))
            size = int(header.stats.get("size", 0))
            if size > self._largest or not self._scope:
                # the span policy allows for the largest version
                self._largest, self._scope = max(size, self._largest), header.id
                if self._chunk_reader is not None:
                    self._chunk_reader.spans = span_policy(size, self.repo.cache.root,
                                                           self.limit, scope=header.id)
            return found

    def locate(self, path: str) -> tuple[Version, str]:
        """The version a path names and the path inside it."""
        ref_text, ref, inner = split_path(path)
        return self.version(ref_text, ref), posixpath.normpath(inner) if inner else ""

    def close(self) -> None:
        self.reader.close()


class Sessions:
    """One ``Session`` per process (made on first use, again after a fork, and
    again when ``$DSFS_STORE`` or ``$DSFS_CACHE_DIR`` name others: fsspec keeps
    one filesystem object per set of storage options, whatever the environment)."""

    def __init__(self, store: str | None, cache_dir: str | None) -> None:
        self.store = store
        self.cache_dir = cache_dir
        self._session: Session | None = None
        self._key: tuple[int, str, str] | None = None
        self._lock = threading.Lock()
        atexit.register(self.close)  # flush access times and counters

    def get(self) -> Session:
        key = (os.getpid(), self.store or config.default_store_url(),
               self.cache_dir or str(config.cache_dir()))
        with self._lock:
            if self._session is None or self._key != key:
                if self._session is not None and self._key and self._key[0] == key[0]:
                    self._session.close()
                self._session, self._key = Session(key[1], key[2]), key
            return self._session

    def close(self) -> None:
        with self._lock:
            if self._session is not None and self._key and self._key[0] == os.getpid():
                self._session.close()
            self._session = None

