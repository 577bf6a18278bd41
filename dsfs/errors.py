"""Every error dsfs reports to a user, each with its exit code.

The CLI prints ``str(error)`` as one line on stderr and exits with
``error.exit_code``; nothing else decides exit codes.  The table of codes is
documented in ``docs/cli.md`` and must stay in step with this module.
"""

from __future__ import annotations

import errno


class DsfsError(Exception):
    """Base of every expected failure: a message for the user and an exit code."""

    exit_code = 1


class UsageError(DsfsError):
    """The command line or API call asks for something that makes no sense."""

    exit_code = 2


class NotFoundError(DsfsError):
    """A version, draft, path or object that does not exist."""

    exit_code = 3


class AmbiguousError(DsfsError):
    """A reference (id prefix, name) matches more than one version."""

    exit_code = 4


class ConflictError(DsfsError):
    """Someone else got there first: a version string already claimed, a draft
    being closed by another process, a version that others depend on."""

    exit_code = 5


class IntegrityError(DsfsError):
    """Stored or cached bytes do not match their digest, or a manifest is malformed."""

    exit_code = 6


class FormatVersionError(DsfsError):
    """The store was written by a newer dsfs than this one."""

    exit_code = 7


class StoreError(DsfsError):
    """The store could not be reached or refused an operation after retries."""

    exit_code = 8


class StoreAccessError(StoreError):
    """The store refused access: bad credentials, no permission on the bucket
    or on the store directory."""


class StoreUnavailableError(StoreError):
    """The store failed in a way that may pass (network, throttling, 5xx),
    after retries."""


class ObjectNotFoundError(NotFoundError):
    """A key the store does not hold."""


class StoreCorruptError(IntegrityError):
    """A store object is shorter than, or otherwise not, what its reader needs."""


class RangeNotSatisfiableError(StoreCorruptError):
    """A ranged read that starts at or past the end of the object."""


class InputError(DsfsError):
    """A local path given by the user is missing or unusable."""

    exit_code = 10


class DiskFullError(DsfsError):
    """A local file system (cache, data directory, ``get`` target) is full."""

    exit_code = 11

    def __init__(self, path: object, what: str = "") -> None:
        self.path = str(path)
        detail = f" ({what})" if what else ""
        super().__init__(f"no space left on {self.path}{detail}: free some space "
                         "(`dsfs cache prune --size SIZE` shrinks the cache)")


class LocalError(DsfsError):
    """Something of this machine that dsfs needs is unusable: its cache or data
    directory cannot be read or written, a helper program is missing, a mount
    process does not answer."""

    exit_code = 12


def local_os_error(exc: OSError, path: object, what: str) -> DsfsError:
    """The DsfsError an OSError on dsfs's own local files under ``path`` means
    (``what`` names them, e.g. "the cache"): ``DiskFullError`` for a full disk
    or quota, else ``LocalError`` naming the file and the reason."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(path, what)
    where = exc.filename if exc.filename is not None else path
    reason = exc.strerror or str(exc) or type(exc).__name__
    return LocalError(f"cannot use {what} ({where}): {reason}")


EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "unexpected error (a bug: please report it with the log)",
    UsageError.exit_code: "bad usage: wrong or conflicting options",
    NotFoundError.exit_code: "not found: unknown version, draft, id or path",
    AmbiguousError.exit_code: "ambiguous reference: an id prefix matches several versions",
    ConflictError.exit_code: "conflict: already exists, busy, or other versions depend on it",
    IntegrityError.exit_code: "integrity failure: data does not match its digest",
    FormatVersionError.exit_code: "the store was written by a newer dsfs",
    StoreError.exit_code: "the store failed or could not be reached",
    InputError.exit_code: "a local input path or external URL is missing or unusable",
    DiskFullError.exit_code: "no space left on a local disk (cache, data dir, target)",
    LocalError.exit_code: "a local directory, program or process dsfs needs is unusable",
}
