"""External objects: files a version references by URL instead of holding them.

A version may name objects that live outside its store (ClearML's "links",
``dsfs add s3://bucket/prefix/...`` or ``https://host/file``).  This module
is the one place that reads them: ``stat`` (size and ETag), ``listing`` (the
objects under an ``s3://`` prefix), ``read_range`` (bytes at an offset) and
``open_object`` (the whole object, piece by piece, for hashing at close).

Schemes: ``s3://BUCKET/KEY`` through the S3 store's client (boto3's standard
configuration: credentials, region and ``AWS_ENDPOINT_URL``; boto3 stays in
``dsfs.store.s3``), and ``https://`` / ``http://`` through the standard
library (``Range`` requests; a server that ignores ``Range`` is read from
the start and the wanted bytes kept).  Any other scheme is an ``InputError``
(exit 10).  A URL with user information (``https://user:pw@host``) is refused
so that credentials never reach a manifest, a log or ``--json`` output; the
query string of a URL (it may carry a signature) is left out of every message
(``shown``).

The bytes read here are never trusted: callers check every chunk against the
digest recorded at close (``dsfs.cache.chunks``), so an object that changed
after it was added fails as an integrity error instead of returning mixed
bytes.  ``read_pack_range`` routes a chunk's location: an external URL, or a
pack of the store.
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from dsfs.errors import (
    InputError,
    ObjectNotFoundError,
    StoreCorruptError,
    StoreError,
    StoreUnavailableError,
    UsageError,
)
from dsfs.format.pack import pack_key
from dsfs.store.base import Store
from dsfs.store.s3common import parse_url

SCHEMES = ("s3", "https", "http")
#: Seconds an HTTP request may wait for the server.
HTTP_TIMEOUT = 60
#: Tries of an HTTP range read that fails on the way (S3 reads are retried by botocore).
HTTP_ATTEMPTS = 4
#: Bytes per piece when a whole object is streamed (per ranged GET on S3).
STREAM_PIECE = 1 << 20
S3_PIECE = 8 << 20


@dataclass(frozen=True)
class Remote:
    """One external object as seen now."""

    url: str
    size: int
    etag: str  # "" when the server gives none
    mtime: float  # seconds since the epoch, 0 when unknown


def is_external(location: str) -> bool:
    """True when a chunk location (a pack id or a URL) names an external object."""
    return "://" in location


def shown(url: str) -> str:
    """The URL as messages show it: no query string (it may hold a signature)."""
    return url.split("?", 1)[0].split("#", 1)[0]


def check_url(url: str) -> str:
    """``url`` if dsfs can read it, its scheme in lower case; else an
    ``InputError`` that says why."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in SCHEMES:
        url = scheme + url[len(scheme):]  # S3://, HTTPS:// work as well
    if scheme not in SCHEMES:
        raise InputError(f"cannot add {shown(url)!r}: the scheme {scheme!r} is not supported "
                         "(external files are s3://, https:// or http:// URLs)")
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise InputError(f"the URL of {parts.scheme}://{parts.hostname}/... embeds credentials, "
                         "which dsfs refuses so that they never reach a manifest or a log")
    if not parts.netloc:
        raise InputError(f"cannot add {shown(url)!r}: the URL names no host or bucket")
    if scheme == "s3":
        _bucket_key(url)
    return url


def _bucket_key(url: str) -> tuple[str, str]:
    bucket, key = parse_url(url.split("?", 1)[0])
    return bucket, key


_s3_stores: dict[str, Store] = {}
_s3_lock = threading.Lock()


def _bucket(bucket: str) -> Any:
    """One S3 store per bucket (prefix empty: keys are the objects' own keys)."""
    with _s3_lock:
        store = _s3_stores.get(bucket)
        if store is None:
            try:
                from dsfs.store.s3 import S3Store  # noqa: PLC0415 - boto3 only when needed
            except ImportError as exc:
                raise UsageError(f"s3:// URLs need boto3 ({exc}); install dsfs with the "
                                 "'s3' extra") from None
            store = _s3_stores[bucket] = S3Store(bucket)
        return store


# -- reading -----------------------------------------------------------------------------


def stat(url: str) -> Remote | None:
    """The object at ``url`` now, or None if it does not exist."""
    if url.startswith("s3://"):
        bucket, key = _bucket_key(url)
        info = _bucket(bucket).stat(key) if key else None
        return None if info is None else Remote(url, info.size, info.etag, info.mtime)
    try:
        with _open(url, method="HEAD") as reply:
            return _remote(url, reply)
    except ObjectNotFoundError:
        return None


def listing(url: str) -> Iterator[Remote]:
    """The objects ``url`` names: for ``s3://`` the object itself or, if the URL
    ends with ``/`` or names no object, every object below it as a folder; for
    ``http(s)://`` the one object.  Nothing found is an ``InputError``."""
    found = False
    if url.startswith("s3://"):
        bucket, key = _bucket_key(url)
        store = _bucket(bucket)
        one = None if not key or url.endswith("/") else store.stat(key)
        if one is not None:
            found = True
            yield Remote(url, one.size, one.etag, one.mtime)
        else:
            folder = f"{key}/" if key else ""
            for info in store.list(folder):
                if info.key.endswith("/"):
                    continue  # a "folder marker" object, not a file
                found = True
                yield Remote(f"s3://{bucket}/{info.key}", info.size, info.etag, info.mtime)
    else:
        remote = stat(url)
        if remote is not None:
            found = True
            yield remote
    if not found:
        raise InputError(f"cannot add {shown(url)!r}: no such object")


def read_range(url: str, offset: int, length: int) -> bytes:
    """``length`` bytes of the object at ``offset`` (a short object is an error)."""
    if length == 0:
        return b""
    if url.startswith("s3://"):
        bucket, key = _bucket_key(url)
        try:
            return bytes(_bucket(bucket).get_range(key, offset, length))
        except ObjectNotFoundError:
            raise _gone(url) from None
        except StoreCorruptError:  # shorter than when it was added
            raise _changed(url) from None
    headers = {"Range": f"bytes={offset}-{offset + length - 1}"}
    for attempt in range(HTTP_ATTEMPTS):
        try:
            with _open(url, headers=headers) as reply:
                if reply.status != 206:  # the server sent the whole object
                    _skip(reply, offset)
                data = _read_exactly(reply, length)
            break
        except ObjectNotFoundError:
            raise _gone(url) from None
        except (StoreUnavailableError, OSError, http.client.HTTPException) as exc:
            # a refused connection, a 5xx or a body cut off: worth another try
            if attempt + 1 >= HTTP_ATTEMPTS:
                if isinstance(exc, StoreUnavailableError):
                    raise
                raise StoreUnavailableError(f"cannot read {shown(url)}: {exc}") from None
            time.sleep(min(2.0, 0.2 * 2 ** attempt))
    if len(data) != length:
        raise _changed(url)
    return data


def _gone(url: str) -> StoreCorruptError:
    # integrity, not "not found": the version names it, so the version is damaged
    return StoreCorruptError(f"the external object {shown(url)} is gone since it was added")


def _changed(url: str) -> StoreCorruptError:
    return StoreCorruptError(f"the external object {shown(url)} changed since it was "
                             "added (it is shorter)")


def open_object(url: str, piece: int = STREAM_PIECE
                ) -> tuple[Remote, Iterator[bytes]] | None:
    """The object as it is now and its bytes, ``piece`` at a time (None: it
    does not exist).  http(s): one GET, whose reply gives size and ETag;
    s3: a HEAD, then ranged GETs of ``S3_PIECE``."""
    if url.startswith("s3://"):
        remote = stat(url)
        if remote is None:
            return None
        step = max(piece, S3_PIECE)  # fewer, larger GETs: each is a request

        def ranges() -> Iterator[bytes]:
            for offset in range(0, remote.size, step):
                yield read_range(url, offset, min(step, remote.size - offset))

        return remote, ranges()
    try:
        reply = _open(url)
    except ObjectNotFoundError:
        return None

    def body() -> Iterator[bytes]:
        with reply:
            while data := reply.read(piece):
                yield data

    try:
        return _remote(url, reply), body()
    except BaseException:
        reply.close()
        raise


def corrupt_chunk(cid: str, location: str) -> str:
    """The message for a chunk whose bytes do not match its id."""
    if is_external(location):
        return (f"the external object {shown(location)} changed since it was added "
                f"(chunk {cid} does not match its digest)")
    return f"chunk {cid} in pack {location} of the store is corrupt (its bytes do not match " \
        "its digest)"


def read_pack_range(store: Store, location: str, offset: int, length: int) -> bytes:
    """A chunk's bytes from where the manifest says it is: an external URL, or
    the pack ``location`` of ``store``."""
    if is_external(location):
        return read_range(location, offset, length)
    return store.get_range(pack_key(location), offset, length)


# -- http(s) -------------------------------------------------------------------------------


def _open(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        return urllib.request.urlopen(request, timeout=HTTP_TIMEOUT)  # noqa: S310 - checked scheme
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code in (404, 410):
            raise ObjectNotFoundError(f"the external object {shown(url)} is gone "
                                      f"(HTTP {exc.code})") from None
        if exc.code >= 500 or exc.code == 429:
            raise StoreUnavailableError(f"cannot read {shown(url)}: HTTP {exc.code}") from None
        raise StoreError(f"cannot read {shown(url)}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StoreUnavailableError(f"cannot read {shown(url)}: {reason}") from None


def _remote(url: str, reply: Any) -> Remote:
    length = reply.headers.get("Content-Length")
    if length is None:
        raise StoreError(f"{shown(url)} has no Content-Length: dsfs needs its size")
    modified = reply.headers.get("Last-Modified")
    mtime = 0.0
    if modified:
        from email.utils import parsedate_to_datetime  # noqa: PLC0415 - rarely needed

        try:
            mtime = parsedate_to_datetime(modified).timestamp()
        except (TypeError, ValueError):
            mtime = 0.0
    return Remote(url, int(length), (reply.headers.get("ETag") or "").strip('"'), mtime)


def _skip(reply: Any, count: int) -> None:
    while count > 0:
        data = reply.read(min(count, STREAM_PIECE))
        if not data:
            return
        count -= len(data)


def _read_exactly(reply: Any, length: int) -> bytes:
    parts: list[bytes] = []
    left = length
    while left > 0:
        data = reply.read(left)
        if not data:
            break
        parts.append(data)
        left -= len(data)
    return b"".join(parts)
