"""Where bytes live: the store contract and its backends, chosen by URL.

``open_store(url)``: a plain path or ``file://`` URL opens a local-directory
store; ``s3://BUCKET/PREFIX`` opens the S3 store (boto3 is imported there and
nowhere else, and only when an S3 URL is used).  ``DSFS_FAULTS`` (tests
only) wraps the store in ``dsfs.store.faulty.FaultyStore``.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from dsfs.errors import UsageError
from dsfs.store.base import ObjectInfo, Store
from dsfs.store.faulty import from_env
from dsfs.store.local import LocalStore


def open_store(url: str) -> Store:
    """The store at ``url``; wrapped in the failing store of
    ``dsfs.store.faulty`` when ``DSFS_FAULTS`` asks for injected failures."""
    return from_env(_open(url))


def _open(url: str) -> Store:
    if url.startswith("s3://"):
        try:
            from dsfs.store.s3 import S3Store  # noqa: PLC0415 - boto3 only when needed
        except ImportError as exc:
            raise UsageError(
                f"S3 stores need boto3 ({exc}); install dsfs with the 's3' extra"
            ) from None
        return S3Store.from_url(url)
    if url.startswith("file://"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise UsageError(f"file:// store URLs must be local, not host {parts.netloc!r}")
        return LocalStore(unquote(parts.path))
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise UsageError(f"unknown store scheme {scheme!r}: use a path, file:// or s3://")
    return LocalStore(url)


__all__ = ["LocalStore", "ObjectInfo", "Store", "open_store"]
