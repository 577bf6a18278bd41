"""The S3 store: keys under ``s3://BUCKET/PREFIX``, through boto3.

This is the only module that imports boto3/botocore.  It implements the
contract of ``dsfs.store.base`` against AWS S3 or any S3-compatible endpoint
(MinIO, Ceph RGW, R2).

Configuration is boto3's own and nothing else: credentials, region and
endpoint come from the standard chain (``AWS_PROFILE``, ``AWS_ACCESS_KEY_ID``,
``AWS_ENDPOINT_URL``, ``~/.aws/config``, instance roles ...).  A URL that
embeds credentials is refused, so they never end up in drafts, logs or
``--json`` output, which all carry the store URL.

Failure handling, in layers:

* botocore retries throttling, 5xx and connection errors with backoff and
  jitter (retry mode "standard" unless the user chose another one;
  ``max_attempts`` defaults to ``DEFAULT_MAX_ATTEMPTS`` unless configured);
* a response body cut off mid-stream is not retried by botocore, so reads are
  re-requested here (``STREAM_ATTEMPTS``, full-jitter backoff);
* ``put_if_absent`` sends ``If-None-Match: *``.  When a retried conditional
  write comes back 412, the first attempt may have been ours with its reply
  lost: the stored object's write token (user metadata) or, failing that,
  its bytes are compared with ours before reporting a conflict;
* an endpoint that silently ignores ``If-None-Match`` would break uniqueness
  of version claims, so the first conditional write of a process probes it
  (a random key written twice) and refuses to go on if it is not enforced.

Every error leaving this module is one of the typed store errors of
``dsfs.store.base`` (chosen by S3's error code and HTTP status, never by
matching message text), whose message names the operation and key and has
known credentials removed.
One boto3 client is shared by all threads (clients are thread-safe; the
session is used only in the constructor).  Every store has a session of its
own (credentials, region, endpoint and retry settings are resolved per
store), but the sessions of a process share one botocore data loader
(``shared_loader``): parsing S3's service model and endpoint rules costs more
CPU than anything else in making a client (about 50 ms a store here), and a
forked child (a data loader's worker) inherits its parent's parsed models.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, TypeVar

import boto3
import botocore.exceptions as bexc
import botocore.loaders
import botocore.session
from botocore.config import Config

from dsfs.errors import (
    NotFoundError,
    ObjectNotFoundError,
    RangeNotSatisfiableError,
    StoreAccessError,
    StoreCorruptError,
    StoreError,
    StoreUnavailableError,
)
from dsfs.store.base import ObjectInfo, Store
from dsfs.store.s3common import backoff, parse_url, reply_error, scrub
from dsfs.store.s3sinks import BufferSink, FileSink, SinkT
from dsfs.store.s3upload import Payload, multipart, same_bytes

T = TypeVar("T")

#: Objects larger than this are uploaded in parts (S3 allows 5 GiB per PUT,
#: but a failed part is cheaper to resend than a failed 1 GiB body).
MULTIPART_THRESHOLD = 64 * 1024 * 1024
MULTIPART_PART_SIZE = 16 * 1024 * 1024
MULTIPART_THREADS = 4

#: botocore's total attempts per request when the user configured none.
DEFAULT_MAX_ATTEMPTS = 8
#: Attempts of a read whose body breaks off mid-stream (botocore gives up at once).
STREAM_ATTEMPTS = 6

#: Key of the probe objects that check conditional writes are enforced.
PROBE_PREFIX = ".dsfs-probe/"
_WRITE_TOKEN = "dsfs-write-token"

# Endpoints (endpoint URL, bucket) whose conditional writes were checked in this
# process, so every store object opened on them does not probe again.
_checked_endpoints: dict[tuple[str, str], bool] = {}
_checked_lock = threading.Lock()
#: Guards the first making of a store's client for ``get_buffered``.
_bulk_lock = threading.Lock()
#: botocore data loaders by data path (``AWS_DATA_PATH``; None: the default),
#: shared by the sessions of this process (``shared_loader``).
_loaders: dict[str | None, Any] = {}

# Errors while reading a response body: the request itself succeeded, so
# botocore does not retry them.
_STREAM_ERRORS: tuple[type[BaseException], ...] = (
    bexc.ResponseStreamingError,
    bexc.IncompleteReadError,
    bexc.ReadTimeoutError,
    bexc.ConnectionError,
    bexc.HTTPClientError,
    bexc.FlexibleChecksumError,
    ConnectionError,
    TimeoutError,
)
try:  # urllib3 is botocore's transport; its errors can escape a body read
    import urllib3.exceptions as _u3

    _STREAM_ERRORS += (_u3.HTTPError,)
except ImportError:  # pragma: no cover - botocore always brings urllib3
    pass


class S3Store(Store):
    """Objects under ``prefix/`` in ``bucket``; see the module docstring."""

    def __init__(self, bucket: str, prefix: str = "", *, client: Any = None,
                 session: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._root = f"{self.prefix}/" if self.prefix else ""
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._secrets: list[str] = []
        try:
            core = botocore.session.get_session()
            if session is None:
                session = boto3.session.Session(botocore_session=shared_loader(core))
                _dedupe_search_paths(core)
            config = self._client_config(core)
            self._client = client or session.client("s3", config=config)
            # made at the first ``get_buffered`` (most commands never read a pack)
            self._bulk: Callable[[], Any] = functools.cache(
                (lambda: client) if client is not None else functools.partial(
                    session.client, "s3", config=config.merge(
                        Config(response_checksum_validation="when_required"))))
            self._remember_secrets(session)
        except bexc.BotoCoreError as exc:
            raise StoreError(
                f"cannot set up the S3 client for {self.url}: {self._clean(str(exc))}"
            ) from None
        self._endpoint = str(self._client.meta.endpoint_url)

    @classmethod
    def from_url(cls, url: str) -> S3Store:
        bucket, prefix = parse_url(url)
        return cls(bucket, prefix)

    @staticmethod
    def _client_config(core: botocore.session.Session) -> Config:
        retries: dict[str, Any] = {}
        # Respect a retry mode / attempt count the user configured (env or profile);
        # otherwise retry more than botocore's default 3 attempts, which a flaky
        # link exhausts over the thousands of requests of a large close.
        if core.get_config_variable("max_attempts") is None:
            retries["total_max_attempts"] = DEFAULT_MAX_ATTEMPTS
        return Config(
            retries=retries or None,
            max_pool_connections=32,  # packer, fetch and verify pools share this client
            connect_timeout=10,
            read_timeout=60,
            tcp_keepalive=True,
        )

    def _remember_secrets(self, session: Any) -> None:
        """Collect the resolved credentials so that no message can ever show them."""
        try:
            creds = session.get_credentials()
        except bexc.BotoCoreError:
            return
        if creds is None:
            return
        frozen = creds.get_frozen_credentials()
        self._secrets = [s for s in (frozen.secret_key, frozen.token, frozen.access_key)
                         if s and len(s) >= 4]

    def _clean(self, text: str) -> str:
        return scrub(text, self._secrets)

    def _key(self, key: str) -> str:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"invalid store key {key!r}")
        return self._root + key

    # -- error mapping -------------------------------------------------------------

    def _error(self, exc: BaseException, op: str, key: str) -> Exception:
        """The typed store error (``dsfs.store.base``) that ``exc`` from ``op`` on
        ``key`` means, decided by S3's error code and HTTP status, never by text."""
        where = f"{op} {key} in {self.url}"
        if isinstance(exc, bexc.ClientError):
            err = exc.response.get("Error", {})
            return reply_error(str(err.get("Code", "")),
                               exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"),
                               self._clean(str(err.get("Message", "") or "")),
                               where, key, self.url, self.bucket)
        if isinstance(exc, bexc.NoCredentialsError | bexc.PartialCredentialsError):
            return StoreAccessError(
                f"cannot {where}: no usable S3 credentials; configure them the standard "
                "way (AWS_PROFILE, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, ~/.aws/credentials)"
            )
        text = self._clean(str(exc)) or type(exc).__name__
        if isinstance(exc, _STREAM_ERRORS):
            return StoreUnavailableError(f"cannot {where}: {text} (after retries)")
        return StoreError(f"cannot {where}: {text} (after retries)")

    def _call(self, op: str, key: str, fn: Callable[[], T]) -> T:
        """Run one boto3 call (botocore retries inside it), mapping its errors."""
        try:
            return fn()
        except (bexc.BotoCoreError, bexc.ClientError) as exc:
            raise self._error(exc, op, key) from None

    def _read(self, op: str, key: str, **kwargs: Any) -> bytes:
        """GET ``key`` (whole or ``Range=``) and read its body, re-requesting a broken one.

        botocore has already retried the request itself (throttling, 5xx, resets
        before the reply); only a body that breaks off is retried here.
        """
        full = self._key(key)
        for attempt in range(STREAM_ATTEMPTS):
            reply = self._call(op, key, lambda: self._client.get_object(
                Bucket=self.bucket, Key=full, **kwargs))
            expected = reply.get("ContentLength")
            try:
                with reply["Body"] as body:
                    data: bytes = body.read()
                if expected is not None and len(data) != expected:
                    raise bexc.IncompleteReadError(actual_bytes=len(data),
                                                   expected_bytes=expected)
                return data
            except _STREAM_ERRORS as exc:
                if attempt + 1 >= STREAM_ATTEMPTS:
                    raise self._error(exc, op, key) from None
                time.sleep(backoff(attempt))
            except bexc.BotoCoreError as exc:
                raise self._error(exc, op, key) from None
        raise AssertionError("unreachable")  # pragma: no cover

    # -- reads -----------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        return self._read("read", key)

    def get_into(self, key: str, target: BinaryIO) -> int:
        """Streamed a block at a time; a body that breaks off is re-requested
        from where it stopped, pinned to the same object (``IfMatch``)."""
        return self._resumable_get(key, FileSink(target), self._client).written

    def get_buffered(self, key: str, buffer: bytearray | None = None) -> memoryview:
        """Read straight into ``buffer`` (or new memory when it is too small) a
        block at a time, resumed like ``get_into``; without S3's response
        checksum, which would pass over every byte once more (the caller
        checks the contents against their digests)."""
        with _bulk_lock:
            client = self._bulk()
        sink = self._resumable_get(key, BufferSink(buffer), client)
        return memoryview(sink.buffer)[:sink.written]

    def _resumable_get(self, key: str, sink: SinkT, client: Any) -> SinkT:
        """GET ``key`` into ``sink``; a body that breaks off is re-requested from
        where it stopped, pinned to the same object (``IfMatch``)."""
        full = self._key(key)
        etag, size = None, None
        for attempt in range(STREAM_ATTEMPTS):
            ask: dict[str, Any] = {}
            if etag is not None:
                ask = {"IfMatch": etag, "Range": f"bytes={sink.written}-"}
            if size == sink.written and sink.written:
                return sink  # whole already; nothing left to ask for
            reply: dict[str, Any] = self._call("read", key, functools.partial(
                client.get_object, Bucket=self.bucket, Key=full, **ask))
            if etag is None:
                etag, size = reply.get("ETag"), reply.get("ContentLength")
                sink.begin(size)
            try:
                with contextlib.closing(reply["Body"]) as body:
                    sink.fill(body)
                if size is not None and sink.written != size:
                    raise bexc.IncompleteReadError(actual_bytes=sink.written,
                                                   expected_bytes=size)
                return sink
            except _STREAM_ERRORS as exc:
                if attempt + 1 >= STREAM_ATTEMPTS or etag is None:
                    raise self._error(exc, "read", key) from None
                time.sleep(backoff(attempt))
            except bexc.BotoCoreError as exc:
                raise self._error(exc, "read", key) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError(f"bad range {offset}+{length}")
        if length == 0:
            if self.stat(key) is None:
                raise ObjectNotFoundError(f"{key} is not in the store {self.url}")
            return b""
        try:
            data = self._read("read", key, Range=f"bytes={offset}-{offset + length - 1}")
        except RangeNotSatisfiableError:
            data = b""  # the range starts past the object's end
        # A range cut by the object's end comes back short, without an error.
        if len(data) != length:
            raise StoreCorruptError(
                f"short read of {key} in {self.url}: wanted {length} bytes at {offset}, "
                f"got {len(data)} (the object is shorter than its references say)"
            )
        return data

    def get_head(self, key: str, length: int) -> bytes:
        """One ranged GET for the first bytes (manifest headers), not the whole object."""
        if length <= 0:
            return b""
        try:
            return self._read("read", key, Range=f"bytes=0-{length - 1}")
        except RangeNotSatisfiableError:
            return b""  # an empty object has no byte 0

    def remove_stale_uploads(self, older_than: float) -> int:
        """Abort multipart uploads under the prefix that a killed writer left behind."""
        cutoff = time.time() - older_than
        removed = 0
        paginator = self._client.get_paginator("list_multipart_uploads")
        pages = iter(paginator.paginate(Bucket=self.bucket, Prefix=self._root))
        while True:
            page = self._call("list uploads", "/", lambda: next(pages, None))
            if page is None:
                return removed
            for upload in page.get("Uploads", []):
                if upload["Initiated"].timestamp() >= cutoff:
                    continue
                self._abort_upload(upload["Key"], upload["UploadId"])
                removed += 1

    def _abort_upload(self, full_key: str, upload_id: str) -> None:
        self._call("abort upload", full_key[len(self._root):],
                   lambda: self._client.abort_multipart_upload(
                       Bucket=self.bucket, Key=full_key, UploadId=upload_id))

    def stat(self, key: str) -> ObjectInfo | None:
        full = self._key(key)
        try:
            reply = self._call("stat", key, lambda: self._client.head_object(
                Bucket=self.bucket, Key=full))
        except NotFoundError:
            return None
        return ObjectInfo(key, int(reply["ContentLength"]), reply["LastModified"].timestamp(),
                          str(reply.get("ETag", "")).strip('"'))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        full = self._root + prefix
        paginator = self._client.get_paginator("list_objects_v2")
        pages = iter(paginator.paginate(Bucket=self.bucket, Prefix=full))
        while True:
            # Each page is one request, retried by botocore; a failure after retries
            # ends the listing with an error rather than a silently short list.
            page = self._call("list", prefix or "/", lambda: next(pages, None))
            if page is None:
                return
            for obj in page.get("Contents", []):
                key = obj["Key"][len(self._root):]
                if key.startswith(PROBE_PREFIX):
                    continue
                yield ObjectInfo(key, int(obj["Size"]), obj["LastModified"].timestamp(),
                                 str(obj.get("ETag", "")).strip('"'))

    # -- writes ------------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        self._upload(key, Payload(bytes(data)), conditional=False, token=None)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        return self._put_if_absent(key, Payload(bytes(data)))

    def put_file_if_absent(self, key: str, source: BinaryIO) -> bool:
        """Streamed from the file: one PUT, or parts read a range at a time."""
        return self._put_if_absent(key, Payload(source=source))

    def _put_if_absent(self, key: str, payload: Payload) -> bool:
        self._check_conditional_writes()
        # A random token in the object's metadata tells our write from another
        # writer's, even when both wrote the same bytes.
        token = secrets.token_hex(16)
        resent = False
        for attempt in range(STREAM_ATTEMPTS):
            try:
                self._upload(key, payload, conditional=True, token=token)
                return True
            except _PreconditionFailed as failed:
                if failed.conflict and attempt + 1 < STREAM_ATTEMPTS:
                    # 409: another conditional write to the key is in flight; S3 asks
                    # for a retry, which then meets 412 or succeeds.
                    resent = True
                    time.sleep(backoff(attempt))
                    continue
                if not (failed.retried or resent):
                    return False  # refused at the first attempt: another writer's object
                return self._is_our_write(key, payload, token)
        raise StoreError(f"cannot write {key} to {self.url}: conflicting writes kept failing")

    def _upload(self, key: str, payload: Payload, conditional: bool, token: str | None) -> bool:
        """PUT (or multipart-upload) ``payload``; return whether botocore had to retry.

        Raises ``_PreconditionFailed`` for a conditional write refused with 412.
        """
        full = self._key(key)
        extra: dict[str, Any] = {}
        if conditional:
            extra["IfNoneMatch"] = "*"
        if token is not None:
            extra["Metadata"] = {_WRITE_TOKEN: token}
        try:
            if payload.size > MULTIPART_THRESHOLD:
                reply = multipart(self._client, self.bucket, full, payload, MULTIPART_PART_SIZE,
                                  MULTIPART_THREADS, extra)
                return _retried(reply)
            with payload.body() as body:
                reply = self._client.put_object(Bucket=self.bucket, Key=full, Body=body,
                                                **extra)
            return _retried(reply)
        except bexc.ClientError as exc:
            status = _status(exc)
            if conditional and status in (409, 412):
                raise _PreconditionFailed(_retried(exc.response), status == 409) from None
            raise self._error(exc, "write", key) from None
        except bexc.BotoCoreError as exc:
            raise self._error(exc, "write", key) from None

    def _is_our_write(self, key: str, payload: Payload, token: str) -> bool:
        """After a 412 on a retried conditional write: is the stored object ours?"""
        full = self._key(key)
        try:
            head = self._call("check", key, lambda: self._client.head_object(
                Bucket=self.bucket, Key=full))
        except NotFoundError:
            return False  # deleted since: whoever wrote it, it was not kept
        stored_token = (head.get("Metadata") or {}).get(_WRITE_TOKEN)
        if stored_token is not None:
            return bool(stored_token == token)
        # An endpoint that drops user metadata: fall back to comparing the bytes.
        if int(head.get("ContentLength", -1)) != payload.size:
            return False
        try:
            return same_bytes(payload, lambda offset, length: self.get_range(key, offset, length))
        except (NotFoundError, StoreCorruptError):
            return False

    def delete(self, key: str) -> None:
        full = self._key(key)
        with contextlib.suppress(NotFoundError):
            self._call("delete", key, lambda: self._client.delete_object(
                Bucket=self.bucket, Key=full))

    def close(self) -> None:
        with contextlib.suppress(AttributeError, bexc.BotoCoreError):
            self._client.close()
            if self._bulk.cache_info().currsize:  # type: ignore[attr-defined]
                self._bulk().close()

    # -- conditional-write enforcement ----------------------------------------------

    def _probe(self, probe: str) -> bool:
        """Write ``probe`` twice with If-None-Match: is the second write refused?"""
        for attempt in (1, 2):
            try:
                self._client.put_object(Bucket=self.bucket, Key=probe, Body=b"probe",
                                        IfNoneMatch="*")
            except bexc.ClientError as exc:
                status = _status(exc)
                if status in (412, 409):
                    return True  # 412 on attempt 1 only after a lost reply: enforced too
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if status == 501 or code == "NotImplemented":
                    return False
                raise self._error(exc, "probe conditional writes with", probe) from None
            except bexc.BotoCoreError as exc:
                raise self._error(exc, "probe conditional writes with", probe) from None
            del attempt
        return False

    def _check_conditional_writes(self) -> None:
        """Refuse an endpoint that ignores ``If-None-Match: *`` (checked once per process)."""
        ident = (self._endpoint, self.bucket)
        with _checked_lock:
            if _checked_endpoints.get(ident):
                return
            # Probing under the lock keeps concurrent first writers from probing many times.
            probe = self._key(f"{PROBE_PREFIX}{secrets.token_hex(16)}")
            try:
                enforced = self._probe(probe)
            finally:
                # A leftover probe object is harmless (and hidden from list).
                with contextlib.suppress(bexc.BotoCoreError, bexc.ClientError):
                    self._client.delete_object(Bucket=self.bucket, Key=probe)
            if not enforced:
                raise StoreError(
                    f"the S3 endpoint of {self.url} ({self._endpoint}) does not enforce "
                    "conditional writes (If-None-Match: *): two machines could claim the same "
                    "version. Use an endpoint that supports them (AWS S3, a recent MinIO, "
                    "Ceph RGW, R2)"
                )
            _checked_endpoints[ident] = True


def shared_loader(core: botocore.session.Session) -> botocore.session.Session:
    """``core`` with the process's data loader for its data path in place of a
    new one of its own.  A loader holds parsed JSON only (service models,
    endpoint rules; no credentials, connections or locks), each file parsed
    once and never changed, so sessions and threads may share it and a forked
    child may go on using its parent's.  A race makes two loaders and keeps
    one (no lock: none can be held across a fork)."""
    path = core.get_config_variable("data_path")
    loader = _loaders.get(path)
    if loader is None:
        loader = _loaders.setdefault(path, botocore.loaders.create_loader(path))
    core.register_component("data_loader", loader)
    return core


def _dedupe_search_paths(core: botocore.session.Session) -> None:
    """boto3 appends its own data folder to the loader's search path for
    every session it makes; with one loader per process that would grow
    without end."""
    paths = core.get_component("data_loader").search_paths
    if len(paths) != len(set(paths)):
        paths[:] = list(dict.fromkeys(paths))


class _PreconditionFailed(Exception):
    """A conditional write refused: 412 (the key exists) or 409 (S3's
    ConditionalRequestConflict: another conditional write is in flight).
    ``retried``: botocore had resent the request before this answer."""

    def __init__(self, retried: bool, conflict: bool = False) -> None:
        super().__init__("precondition failed")
        self.retried = retried
        self.conflict = conflict


def _status(exc: bexc.ClientError) -> int | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def _retried(reply: dict[str, Any]) -> bool:
    return int(reply.get("ResponseMetadata", {}).get("RetryAttempts", 0) or 0) > 0


__all__ = ["S3Store", "parse_url"]
