"""A store wrapper that fails on purpose, chosen by configuration: fault tests
without hooks in the business logic.

Like mountpoint-s3's failure client beside its real one, ``FaultyStore`` wraps
any store and, for the operations its rules name, kills the process, raises a
typed store error, or loses the reply of a write that did happen.  Outside
tests nothing sets ``DSFS_FAULTS`` and ``open_store`` returns the real store.

``DSFS_FAULTS`` holds rules separated by ``;``, each
``OPERATION:KEY_PREFIX:ACTION[:COUNT[:SKIP]]``:

OPERATION
    a ``Store`` method: ``get``, ``get_range``, ``get_head``, ``put``,
    ``put_if_absent``, ``delete``, ``list``, ``stat``, ``flush``, or ``*``
    (``put_file_if_absent`` counts as ``put_if_absent``, ``get_into`` as ``get``).
KEY_PREFIX
    the rule applies to keys starting with it (empty: every key; for ``list``
    the listed prefix, for ``flush`` the empty key).
ACTION
    ``kill`` (SIGKILL this process before the operation), ``kill-after``
    (SIGKILL it once the operation succeeded), ``lose-reply`` (do the
    operation, then raise ``StoreUnavailableError`` as if the reply were
    lost), ``error`` (raise ``StoreUnavailableError`` instead), ``deny``
    (``StoreAccessError``), ``missing`` (``ObjectNotFoundError``),
    ``corrupt`` (a read returns its bytes with the first one flipped),
    ``slow`` (sleep ``SLOW_SECONDS`` first: a slow store, which widens the
    windows races need).
COUNT, SKIP
    the rule fires on COUNT matching calls (default 1; ``*`` for all) after
    letting SKIP matching calls through (default 0).  Counts are per process.

Examples: ``put_if_absent:names/:kill`` dies just before a version claim;
``put_if_absent:names/:lose-reply`` writes the claim and reports a failure;
``get_range:packs/:error:2`` fails the next two pack reads.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

from dsfs.errors import (
    ObjectNotFoundError,
    StoreAccessError,
    StoreUnavailableError,
    UsageError,
)
from dsfs.store.base import ObjectInfo, Store

#: The environment variable holding the rules.
FAULTS_ENV = "DSFS_FAULTS"

OPERATIONS = frozenset({"get", "get_range", "get_head", "put", "put_if_absent", "delete",
                        "list", "stat", "flush", "*"})
ACTIONS = frozenset({"kill", "kill-after", "lose-reply", "error", "deny", "missing",
                     "corrupt", "slow"})

#: How long the ``slow`` action waits before the operation.
SLOW_SECONDS = 1.0

T = TypeVar("T")


@dataclass
class Rule:
    operation: str
    prefix: str
    action: str
    count: int | None = 1  # None: every matching call
    skip: int = 0
    seen: int = 0

    def fires(self, operation: str, key: str) -> bool:
        """Count a call; whether this rule acts on it (call under the store's lock)."""
        if self.operation not in ("*", operation) or not key.startswith(self.prefix):
            return False
        self.seen += 1
        if self.seen <= self.skip:
            return False
        return self.count is None or self.seen - self.skip <= self.count


def parse_rules(text: str) -> list[Rule]:
    rules = []
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        fields = part.split(":")
        if len(fields) < 3 or len(fields) > 5:
            raise UsageError(f"{FAULTS_ENV}: {part!r} is not OPERATION:KEY_PREFIX:ACTION"
                             "[:COUNT[:SKIP]]")
        operation, prefix, action = fields[:3]
        if operation not in OPERATIONS:
            raise UsageError(f"{FAULTS_ENV}: unknown operation {operation!r} "
                             f"(one of {', '.join(sorted(OPERATIONS))})")
        if action not in ACTIONS:
            raise UsageError(f"{FAULTS_ENV}: unknown action {action!r} "
                             f"(one of {', '.join(sorted(ACTIONS))})")
        try:
            count = None if len(fields) > 3 and fields[3] == "*" else (
                int(fields[3]) if len(fields) > 3 else 1)
            skip = int(fields[4]) if len(fields) > 4 else 0
        except ValueError:
            raise UsageError(f"{FAULTS_ENV}: COUNT and SKIP of {part!r} must be numbers"
                             ) from None
        rules.append(Rule(operation, prefix, action, count, skip))
    return rules


class FaultyStore(Store):
    """``inner`` with the failures ``rules`` ask for; see the module docstring."""

    def __init__(self, inner: Store, rules: list[Rule]) -> None:
        self.inner = inner
        self.rules = rules
        self.url = inner.url
        self.fork_safe = inner.fork_safe  # a forked worker counts its own calls
        self._lock = threading.Lock()

    def _action(self, operation: str, key: str) -> str | None:
        with self._lock:
            for rule in self.rules:
                if rule.fires(operation, key):
                    return rule.action
        return None

    def _run(self, operation: str, key: str, call: Callable[[], T]) -> T:
        action = self._action(operation, key)
        where = f"{operation} {key} in {self.url} ({FAULTS_ENV})"
        if action is None:
            return call()
        if action == "slow":
            time.sleep(SLOW_SECONDS)
            return call()
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if action == "error":
            raise StoreUnavailableError(f"cannot {where}: injected failure")
        if action == "deny":
            raise StoreAccessError(f"cannot {where}: access denied (injected)")
        if action == "missing":
            raise ObjectNotFoundError(f"{key} is not in the store {self.url} ({FAULTS_ENV})")
        result = call()
        if action == "kill-after":
            os.kill(os.getpid(), signal.SIGKILL)
        if action == "lose-reply":
            raise StoreUnavailableError(f"cannot {where}: the reply was lost (injected)")
        if action == "corrupt" and isinstance(result, bytes) and result:
            return bytes([result[0] ^ 0xFF]) + result[1:]  # type: ignore[return-value]
        return result

    def get(self, key: str) -> bytes:
        return self._run("get", key, lambda: self.inner.get(key))

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return self._run("get_range", key, lambda: self.inner.get_range(key, offset, length))

    def get_head(self, key: str, length: int) -> bytes:
        return self._run("get_head", key, lambda: self.inner.get_head(key, length))

    def put(self, key: str, data: bytes) -> None:
        self._run("put", key, lambda: self.inner.put(key, data))

    def put_if_absent(self, key: str, data: bytes) -> bool:
        return self._run("put_if_absent", key, lambda: self.inner.put_if_absent(key, data))

    def put_file_if_absent(self, key: str, source: BinaryIO) -> bool:
        # the same operation as put_if_absent, so rules written for it apply
        return self._run("put_if_absent", key,
                         lambda: self.inner.put_file_if_absent(key, source))

    def get_into(self, key: str, target: BinaryIO) -> int:
        # through get, so that every rule for it (corrupt included) applies;
        # memory is no concern in fault tests
        data = self.get(key)
        target.write(data)
        return len(data)

    def delete(self, key: str) -> None:
        self._run("delete", key, lambda: self.inner.delete(key))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        return self._run("list", prefix, lambda: self.inner.list(prefix))

    def stat(self, key: str) -> ObjectInfo | None:
        return self._run("stat", key, lambda: self.inner.stat(key))

    def flush(self) -> None:
        self._run("flush", "", self.inner.flush)

    def remove_stale_uploads(self, older_than: float) -> int:
        return self.inner.remove_stale_uploads(older_than)

    def close(self) -> None:
        self.inner.close()


def from_env(store: Store) -> Store:
    """``store`` wrapped as ``DSFS_FAULTS`` asks, or ``store`` itself when unset."""
    text = os.environ.get(FAULTS_ENV, "")
    if not text.strip():
        return store
    return FaultyStore(store, parse_rules(text))


__all__ = ["FAULTS_ENV", "FaultyStore", "Rule", "from_env", "parse_rules"]
