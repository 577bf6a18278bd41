"""The store contract: what every backend (local directory, S3) provides.

A store is a flat namespace of keys (``/``-separated, no leading slash) holding
immutable byte objects.  The engine relies on exactly these promises, and
``tests/test_store_conformance.py`` checks them against every backend:

* ``put`` is atomic: a reader sees no object or the whole object, never part.
  It is durable (survives a crash of the machine) once ``flush`` returns;
  ``put_if_absent`` is durable when it returns.
* ``put_if_absent`` writes only if no object has the key, and says whether it
  did; two concurrent callers get one ``True`` and one ``False``.
  ``put_file_if_absent`` is the same write with the bytes read from a file
  (a manifest of millions of entries is never held in memory), and
  ``get_into`` the whole-object read written into a file: both with the
  same atomicity (a failed upload publishes nothing) and error mapping.
  ``get_buffered`` is ``get`` into a reusable buffer, for callers that check
  the bytes themselves (packs).
* ``get`` of a missing key raises ``ObjectNotFoundError``; ``get_range``
  returns exactly the bytes asked for or raises (``StoreCorruptError`` when
  the object is shorter than the range).
* ``list`` yields every object under a key prefix with its size and
  modification time (seconds since the epoch), in no particular order.
  ``etag`` changes whenever the object is rewritten (S3's ETag; the inode
  and change time of a local file), and ``list`` and ``stat`` report the
  same one; a backend without one leaves it empty and reports the same
  ``mtime`` from both.  Readers compare size and ``etag`` (else size and
  ``mtime``) to tell whether a cached copy is still current.
* ``delete`` of a missing key is not an error.
* Failures raise typed errors, decided by the backend from error codes
  (errno, S3 code and status), never by matching message text; each message
  names the operation and key but never a credential:

  ======================  ==========================================  ====
  error                   meaning                                     exit
  ======================  ==========================================  ====
  ObjectNotFoundError     the key does not exist (a NotFoundError)    3
  StoreAccessError        permission or credentials refused           8
  StoreUnavailableError   network, throttling, 5xx: may pass later    8
  StoreCorruptError       an object shorter than what refers to it    6
                          (an IntegrityError)
  DiskFullError           a local store's disk is full                11
  StoreError              any other failure of the store              8
  ======================  ==========================================  ====

  ``StoreAccessError`` and ``StoreUnavailableError`` subclass ``StoreError``,
  so ``except StoreError`` still catches every failure of the medium.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from dsfs.errors import (
    DiskFullError,
    IntegrityError,
    NotFoundError,
    ObjectNotFoundError,
    RangeNotSatisfiableError,
    StoreAccessError,
    StoreCorruptError,
    StoreError,
    StoreUnavailableError,
)
from dsfs.format.version import check_format_version

CONFIG_KEY = "config"

def file_size(source: BinaryIO) -> int:
    """The size of an open regular file, whatever its position."""
    return os.fstat(source.fileno()).st_size


__all__ = ["CONFIG_KEY", "DiskFullError", "ObjectInfo", "ObjectNotFoundError",
           "RangeNotSatisfiableError", "Store", "StoreAccessError", "StoreCorruptError",
           "StoreError", "StoreUnavailableError", "file_size"]


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    mtime: float
    #: Changes whenever the object is rewritten (S3: its ETag without quotes);
    #: empty for backends without one.
    etag: str = ""


class Store(ABC):
    """Abstract backend.  Subclasses implement the primitives below."""

    #: A printable location without credentials, for messages and logs.
    url: str
    #: Whether a process forked from the one that opened the store may use it
    #: (the local store: plain files; not an S3 client's shared connections).
    fork_safe: bool = False

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def get_range(self, key: str, offset: int, length: int) -> bytes: ...

    @abstractmethod
    def put(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectInfo]: ...

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo | None: ...

    def put_file_if_absent(self, key: str, source: BinaryIO) -> bool:
        """``put_if_absent`` of the whole contents of ``source`` (a regular file
        opened for reading; read from its start).  This default reads it into
        memory; the backends override it to stream."""
        source.seek(0)
        return self.put_if_absent(key, source.read())

    def get_into(self, key: str, target: BinaryIO) -> int:
        """Write the whole object to ``target`` (from its current position);
        return its size.  This default holds the object in memory; the
        backends override it to stream."""
        data = self.get(key)
        target.write(data)
        return len(data)

    def get_buffered(self, key: str, buffer: bytearray | None = None) -> memoryview:
        """The whole object, for a caller that checks its bytes itself (a pack:
        every chunk against its digest), so the transport's own checksum may
        be skipped.  Read into ``buffer`` when it is large enough (a caller
        that reads many big objects reuses one: no fresh memory to fault in
        for each), else into new memory; ``view.obj`` is what holds the bytes.
        This default is ``get``."""
        return memoryview(self.get(key))

    def remove_stale_uploads(self, older_than: float) -> int:
        """Remove partial uploads (temporary files, unfinished multipart uploads)
        started more than ``older_than`` seconds ago; return how many."""
        return 0

    def get_head(self, key: str, length: int) -> bytes:
        """The first ``min(length, size)`` bytes of an object (a short read where
        the backend can do one; this default reads the whole object)."""
        return self.get(key)[:length]

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def flush(self) -> None:  # noqa: B027 - stores that write through need nothing
        """Make every ``put`` that has returned durable."""

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing
        """Release connections; the default holds none."""

    # -- the store's own config object -------------------------------------

    def read_config(self) -> dict | None:
        """The store's config, format-checked; None for a store never written."""
        try:
            raw = self.get(CONFIG_KEY)
        except NotFoundError:
            return None
        try:
            config = json.loads(raw)
        except ValueError:
            raise IntegrityError(f"store config at {self.url} is not valid JSON") from None
        if not isinstance(config, dict):
            raise IntegrityError(f"store config at {self.url} is malformed")
        check_format_version(config.get("format_version"), f"store {self.url}")
        return config
