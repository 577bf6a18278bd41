"""Plain helpers of the S3 store that need no boto3: the store URL, keeping
credentials out of messages, the typed error an S3 error reply means, and
the backoff between re-requests.

``dsfs.store.s3`` (the only module that imports boto3) uses them; they live
apart so that they can be read and tested without a client.
"""

from __future__ import annotations

import random
import re
from urllib.parse import urlsplit

from dsfs.errors import (
    ObjectNotFoundError,
    RangeNotSatisfiableError,
    StoreAccessError,
    StoreError,
    StoreUnavailableError,
    UsageError,
)

BACKOFF_BASE = 0.1
BACKOFF_CAP = 5.0

#: S3 error codes of a refused identity or permission.
_ACCESS_CODES = frozenset({"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                           "ExpiredToken", "InvalidToken", "AllAccessDisabled",
                           "AccountProblem"})
#: S3 error codes that may pass on their own (botocore has retried them already).
_TRANSIENT_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException",
                              "RequestTimeout", "InternalError",
                              "ServiceUnavailable", "503"})

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-_]{1,254}$")
_ACCESS_KEY_RE = re.compile(r"\b(?:AKIA|ASIA|AROA|AIDA)[A-Z0-9]{12,}\b")
_URL_USERINFO_RE = re.compile(r"(//)[^/@\s]*@")


def backoff(attempt: int) -> float:
    """Full-jitter exponential backoff (AWS architecture blog), in seconds."""
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * (2**attempt)))


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` without the given secrets, anything shaped like an AWS access
    key id, or the userinfo of a URL."""
    for secret in secrets:
        text = text.replace(secret, "***")
    text = _ACCESS_KEY_RE.sub("***", text)
    return _URL_USERINFO_RE.sub(r"\1***@", text)


def reply_error(code: str, status: int | None, message: str, where: str, key: str,
                url: str, bucket: str) -> Exception:
    """The typed store error (``dsfs.store.base``) an S3 error reply means,
    decided by its error code and HTTP status, never by its text.  ``where``
    is the operation and key for the message; ``message`` is already scrubbed."""
    if code in ("NoSuchKey", "404", "NotFound") or (status == 404 and not code):
        return ObjectNotFoundError(f"{key} is not in the store {url}")
    if code == "NoSuchBucket":
        return StoreError(f"cannot {where}: the bucket {bucket} does not exist")
    if code == "InvalidRange" or status == 416:
        return RangeNotSatisfiableError(
            f"cannot {where}: the range starts past the end of the object")
    if code in _ACCESS_CODES or status == 403:
        return StoreAccessError(
            f"cannot {where}: access denied ({code or status}); check the "
            "credentials boto3 uses (AWS_PROFILE, AWS_ACCESS_KEY_ID, "
            "~/.aws/credentials) and the bucket's policy"
        )
    detail = f"{code}: {message}" if message else code or f"HTTP {status}"
    if code in _TRANSIENT_CODES or (isinstance(status, int) and status >= 500):
        return StoreUnavailableError(f"cannot {where} ({detail}) after retries")
    return StoreError(f"cannot {where} ({detail}) after retries")


def parse_url(url: str) -> tuple[str, str]:
    """``s3://BUCKET/PREFIX`` → (bucket, prefix without surrounding slashes)."""
    if not url.startswith("s3://"):
        raise UsageError("an S3 store URL looks like s3://BUCKET/PREFIX")
    rest = url[len("s3://"):]
    netloc = rest.split("/", 1)[0]
    # A secret key may contain '/', which would move part of it into the path:
    # any '@' or ':' in the authority (never valid in a bucket name) means userinfo.
    if "@" in netloc or ":" in netloc or ("@" in rest and ":" in rest.split("@", 1)[0]):
        raise UsageError(
            "the store URL embeds credentials (s3://KEY:SECRET@bucket/...), which dsfs "
            "refuses so that they never reach drafts or logs: give s3://BUCKET/PREFIX and "
            "configure credentials the standard way (AWS_PROFILE, AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY, ~/.aws/credentials or an instance role)"
        )
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise UsageError("an S3 store URL takes no ?query or #fragment: use s3://BUCKET/PREFIX")
    bucket = netloc
    if not _BUCKET_RE.match(bucket):
        raise UsageError(f"{bucket!r} is not a valid S3 bucket name (in store URL {url!r})")
    prefix = rest[len(netloc):].strip("/")
    if any(p in ("", ".", "..") for p in prefix.split("/")) and prefix:
        raise UsageError(f"the prefix of the store URL {url!r} has an empty, '.' or '..' part")
    return bucket, prefix


__all__ = ["BACKOFF_BASE", "BACKOFF_CAP", "backoff", "parse_url", "reply_error", "scrub"]
