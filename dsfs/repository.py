"""A store together with this machine's cache: the handle every operation takes.

It owns the read path for manifests (store → immutable local copy) and keeps
the cache's record of which chunks the store holds up to date.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from dsfs import config
from dsfs.cache.chunks import ChunkCache
from dsfs.errors import IntegrityError, LocalError, NotFoundError, StoreError, local_os_error
from dsfs.format import manifest as mf
from dsfs.format.digest import digest_hex
from dsfs.format.pack import TRAILER_SIZE, index_span, pack_id_from_key, pack_key, parse_index
from dsfs.format.version import BASE_FORMAT
from dsfs.fsutil import taking_turns, write_atomic
from dsfs.store import Store, open_store
from dsfs.store.base import CONFIG_KEY

log = logging.getLogger("dsfs")

#: Bytes read from a pack's end in one go, enough for the index of ~2,000 chunks.
INDEX_PROBE = 64 * 1024


class Repository:
    def __init__(self, store: Store, cache_root: Path | None = None) -> None:
        self.store = store
        self.cache_root = cache_root or config.cache_dir()
        self.cache = ChunkCache(self.cache_root)
        self._store_config: dict | None = None
        self._manifest_memo: dict[str, bytes] = {}

    @classmethod
    def open(cls, store_url: str | None = None, cache_dir: str | os.PathLike[str] | None = None
             ) -> Repository:
        store = open_store(store_url or config.default_store_url())
        return cls(store, Path(cache_dir) if cache_dir else None)

    # -- store identity ------------------------------------------------------

    @property
    def store_config(self) -> dict:
        """The store's config, created on first use (checks the format version)."""
        if self._store_config is None:
            try:
                cfg = self.store.read_config()
            except StoreError:
                # Offline: what this machine learned about the store still holds,
                # so fully cached versions stay readable.
                cfg = self._cached_config()
                if cfg is None:
                    raise
                log.warning("store %s unreachable; using its cached config", self.store.url)
            if cfg is None:
                fresh = {"format_version": BASE_FORMAT, "kind": "dsfs-store",
                         "store_id": secrets.token_hex(16)}
                # Two first writers race here; put_if_absent keeps exactly one config.
                self.store.put_if_absent(CONFIG_KEY, json.dumps(fresh).encode())
                cfg = self.store.read_config() or fresh
            self._adopt_config(cfg)
        assert self._store_config is not None
        return self._store_config

    def _adopt_config(self, cfg: dict) -> None:
        store_id = cfg.get("store_id")
        if not isinstance(store_id, str) or len(store_id) != 32:
            raise IntegrityError(f"store config at {self.store.url} has no valid store_id")
        self._store_config = cfg
        self._save_config(cfg)

    def _config_cache_path(self) -> Path:
        return self.cache_root / "stores" / (digest_hex(self.store.url.encode()) + ".json")

    def _cached_config(self) -> dict | None:
        try:
            cfg = json.loads(self._config_cache_path().read_text())
        except (FileNotFoundError, ValueError):
            return None
        return cfg if isinstance(cfg, dict) else None

    def _save_config(self, cfg: dict) -> None:
        if self._cached_config() != cfg:
            self._cache_write(self._config_cache_path(), json.dumps(cfg).encode())

    def _cache_write(self, path: Path, data: bytes) -> None:
        """A local copy of an immutable store object (no fsync: it can be read
        from the store again)."""
        try:
            write_atomic(path, data, durable=False)
        except OSError as exc:
            raise local_os_error(exc, self.cache_root, "the cache") from None

    def cached_header(self, version_id: str) -> mf.Header | None:
        """A header known locally (no store access), or None."""
        path = self._manifest_cache_path(version_id)
        for candidate in (path, path.with_name(version_id + ".head")):
            try:
                return mf.decode_header(_read_head(candidate))
            except FileNotFoundError:
                continue
        return None

    @property
    def store_id(self) -> bytes:
        return bytes.fromhex(self.store_config["store_id"])

    def check_readable(self) -> None:
        """Raise FormatVersionError early for a store written by a newer dsfs.
        The config read is kept (``store_config`` needs no second GET); one
        this repository read already was checked then."""
        if self._store_config is None:
            cfg = self.store.read_config()
            if cfg is not None:
                self._adopt_config(cfg)

    # -- manifests -------------------------------------------------------------

    def _manifest_cache_path(self, version_id: str) -> Path:
        return self.cache_root / "manifests" / self.store_id.hex() / version_id

    def manifest_bytes(self, version_id: str, memo: bool = True) -> bytes:
        """The whole manifest object, from memory, the local cache or the store.

        With ``memo=False`` the bytes are not kept in memory for later calls (for
        a caller that reads a big manifest once, such as the tree indexer)."""
        data = self._manifest_memo.get(version_id)
        if data is not None:
            return data
        path = self._manifest_cache_path(version_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = self.store.get(mf.manifest_key(version_id))
            _check_id(mf.decode_header(data), version_id)
            self._cache_write(path, data)
        if memo:
            self._manifest_memo[version_id] = data
        return data

    def open_manifest(self, version_id: str) -> BinaryIO:
        """The manifest object as a file to stream from: its local copy, fetched
        first if need be, a block at a time (for readers of big manifests,
        which should not hold them in memory)."""
        path = self._manifest_cache_path(version_id)
        data = self._manifest_memo.get(version_id)
        if data is not None:
            return io.BytesIO(data)
        with contextlib.suppress(FileNotFoundError):
            return open(path, "rb")  # noqa: SIM115 - the caller closes it
        with self.manifest_spool() as spool:
            self.store.get_into(mf.manifest_key(version_id), spool)
            spool.seek(0)
            head = spool.read(mf.HEADER_PROBE_SIZE)
            spool.seek(0)
            _check_id(mf.decode_header(spool.read(mf.header_length(head))), version_id)
            self.adopt_manifest(version_id, spool)
        return open(path, "rb")  # noqa: SIM115 - the caller closes it

    @contextlib.contextmanager
    def manifest_spool(self) -> Iterator[BinaryIO]:
        """A new temporary file under the cache for a manifest being written or
        fetched; removed on leaving unless ``adopt_manifest`` took it."""
        directory = self.cache_root / "tmp"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=directory, prefix=".manifest-")
            os.close(fd)
        except OSError as exc:
            raise local_os_error(exc, self.cache_root, "the cache") from None
        try:
            with open(name, "w+b", buffering=1 << 20) as spool:
                yield spool
        except OSError as exc:
            raise local_os_error(exc, self.cache_root, "the cache") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)

    def adopt_manifest(self, version_id: str, spool: BinaryIO) -> None:
        """Make the whole manifest in ``spool`` (from ``manifest_spool``, its
        bytes checked or written by us) the local copy of ``version_id``."""
        spool.flush()
        path = self._manifest_cache_path(version_id)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(spool.name, path)
        except OSError as exc:
            raise local_os_error(exc, self.cache_root, "the cache") from None

    def header(self, version_id: str) -> mf.Header:
        """A version's header, reading only the head of its manifest when the
        manifest is not cached (listing versions stays cheap on S3)."""
        data = self._manifest_memo.get(version_id)
        if data is None:
            path = self._manifest_cache_path(version_id)
            head_path = path.with_name(version_id + ".head")
            for candidate in (path, head_path):
                try:
                    data = _read_head(candidate)
                    break
                except FileNotFoundError:
                    continue
            else:
                # processes that start on a version together (a loader's
                # workers) take turns: the first fetches, the others read its
                # copy (256 lock files at most, however many versions are listed)
                with taking_turns(self.cache_root / "locks", f"head-{version_id[:2]}"):
                    header = self.cached_header(version_id)
                    if header is None:
                        header = self._fetch_header(version_id, head_path)
                _check_id(header, version_id)
                return header
        header = mf.decode_header(data)
        _check_id(header, version_id)
        return header

    def _fetch_header(self, version_id: str, head_path: Path) -> mf.Header:
        """Read a header from the store (the manifest's head only) and keep a
        local copy of it."""
        key = mf.manifest_key(version_id)
        data = self.store.get_head(key, mf.HEADER_PROBE_SIZE)
        needed = mf.header_length(data)
        if len(data) < needed:
            data = self.store.get_head(key, needed)
        header = mf.decode_header(data)
        _check_id(header, version_id)
        self._cache_write(head_path, data[:needed])
        return header

    def forget_manifest(self, version_id: str) -> None:
        self._manifest_memo.pop(version_id, None)
        path = self._manifest_cache_path(version_id)
        for stale in (path, path.with_name(version_id + ".head")):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()

    def version_ids(self) -> list[str]:
        """Ids of every manifest in the store (claimed or not)."""
        ids = []
        for info in self.store.list("versions/"):
            name = info.key[len("versions/") :]
            if "/" not in name and len(name) == 32:
                ids.append(name)
        return sorted(ids)

    # -- what the store holds ---------------------------------------------------

    def sync_pack_index(self) -> None:
        """Merge the index of every pack not seen before; drop packs now gone."""
        sid = self.store_id
        known = self.cache.index.known_packs(sid)
        listed: dict[bytes, int] = {}
        for info in self.store.list("packs/"):
            pack_id = pack_id_from_key(info.key)
            if pack_id is not None:
                listed[bytes.fromhex(pack_id)] = info.size
        for raw_id, size in listed.items():
            if raw_id in known:
                continue
            try:
                entries = self.read_pack_index(raw_id.hex(), size)
            except (IntegrityError, NotFoundError):
                continue  # an unreadable pack is gc's business, not a reason to fail
            self.cache.index.add_pack(
                sid, raw_id, ((bytes.fromhex(e.chunk_id.split(":")[1]), e.offset, e.length)
                              for e in entries))
        self.cache.index.forget_packs(sid, known - listed.keys())

    def read_pack_index(self, pack_id: str, size: int) -> list:
        key = pack_key(pack_id)
        probe = min(size, INDEX_PROBE)
        tail = self.store.get_range(key, size - probe, probe)
        offset, length = index_span(tail[-TRAILER_SIZE:], size)
        needed = length + TRAILER_SIZE
        if needed > len(tail):
            tail = self.store.get_range(key, offset, needed)
        return parse_index(tail[-needed:], size)


#: The environment variable naming the cache directory (``config.cache_dir``).
CACHE_ENV = "DSFS_CACHE_DIR"


def _read_head(path: Path) -> bytes:
    """The prefix and header of a cached manifest file (never its entries:
    the manifest of a 10M-entry version is hundreds of MiB)."""
    with open(path, "rb") as f:
        data = f.read(mf.HEADER_PROBE_SIZE)
        try:
            needed = mf.header_length(data)
        except IntegrityError:
            return data  # decode_header says what is wrong
        if len(data) < needed:
            data += f.read(needed - len(data))
    return data


def cache_problem(cache_root: Path) -> LocalError | None:
    """Why the cache at ``cache_root`` cannot be used (None: it can), found by
    opening it as every command does."""
    try:
        ChunkCache(cache_root)  # its LMDB environment stays open for the command
    except LocalError as exc:
        return exc
    return None


def _check_id(header: mf.Header, version_id: str) -> None:
    if header.id != version_id:
        raise IntegrityError(
            f"manifest {version_id} names itself {header.id}: the store is corrupt"
        )
