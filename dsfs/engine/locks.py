"""Store locks: writers share the store, gc has it alone (restic's protocol).

Without a server, the store itself holds the locks: one small object per
holder under ``locks/``, named ``locks/<kind>-<stale seconds>-<32 hex>``,
where kind is ``shared`` (close, sync, squash, an overlay commit: everything
that may reuse a chunk already in the store and then publish a manifest) or
``exclusive`` (gc: everything that deletes packs or manifests).  The full
rules are in ``docs/format.md`` ("Locks"); in short:

* **Acquire**: write your own lock object (a conditional write under a fresh
  random name), *then* list ``locks/``.  Both sides write before they look,
  so of a writer and a gc that start together at least one sees the other.
  A shared lock is held if the listing shows no live exclusive lock; an
  exclusive lock if it shows no other live exclusive lock, and then its
  holder waits, keeping its lock, until no live shared lock is left (new
  writers see it and wait, so a gc is not starved by a stream of closes).
  Whoever yields deletes its own object and tries again later.
* **Stale**: a lock is stale when its modification time is more than its
  own stale timeout (the number in its name) behind the store's clock, read
  as the modification time of the looker's own lock in the same listing.
  Stale locks are ignored and removed, so a crashed writer or gc blocks
  others for one timeout at most.
* **Refresh**: a holder rewrites its object every ``stale / 6`` seconds.  It
  counts a refresh only if the write returned within ``stale / 3`` seconds
  of its start, and it treats its lock as lost once ``2/3 * stale`` seconds
  have passed since the start of its last counted refresh (measured with
  this machine's boot-time clock, which keeps counting through a suspend).
  A lock that another process may consider stale is therefore always one
  its owner already considers lost: a writer checks (``StoreLock.check``)
  right before its manifest and before its claim, gc before it deletes.

``shared`` is re-entrant per store object, so ``publish`` can make sure a
lock is held while the commands around it hold one for their whole run.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import random
import re
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar

from dsfs.errors import ConflictError, DsfsError, NotFoundError, UsageError
from dsfs.report import Reporter
from dsfs.store.base import ObjectInfo, Store

if TYPE_CHECKING:
    from dsfs.repository import Repository

log = logging.getLogger("dsfs")

P = ParamSpec("P")
T = TypeVar("T")

LOCK_PREFIX = "locks/"
SHARED = "shared"
EXCLUSIVE = "exclusive"

#: A lock not refreshed for this long (by the store's clock) is stale.
STALE_SECONDS = 1800.0
#: Overrides STALE_SECONDS for the locks this process writes (tests use a few
#: seconds).  Each lock carries its own timeout in its name, so processes with
#: different settings still judge each other's locks correctly.
STALE_ENV = "DSFS_LOCK_STALE_SECONDS"
#: How long a writer waits for a gc to finish before it gives up (seconds).
WRITER_WAIT_SECONDS = 3600.0
WAIT_ENV = "DSFS_LOCK_WAIT_SECONDS"

_NAME_RE = re.compile(r"^(shared|exclusive)-([0-9]+(?:\.[0-9]+)?)-([0-9a-f]{32})$")


def _env_seconds(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise UsageError(f"{name}={value!r} is not a number of seconds") from None
    if seconds < 0 or (name == STALE_ENV and seconds < 1):
        raise UsageError(f"{name}={value!r} is too small")
    return seconds


def stale_seconds() -> float:
    return _env_seconds(STALE_ENV, STALE_SECONDS)


def writer_wait_seconds() -> float:
    return _env_seconds(WAIT_ENV, WRITER_WAIT_SECONDS)


def _clock() -> float:
    """Seconds on this machine's clock that keeps counting through a suspend."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is not None:
        return time.clock_gettime(boottime)
    return time.monotonic()


@dataclass(frozen=True)
class LockInfo:
    key: str
    exclusive: bool
    stale_seconds: float
    mtime: float


def parse_lock(info: ObjectInfo) -> LockInfo:
    """A listed lock object.  A name dsfs does not know is taken as an exclusive
    lock with the default timeout: whatever wrote it, it is not ignored early."""
    match = _NAME_RE.match(info.key[len(LOCK_PREFIX):])
    if match is None:
        return LockInfo(info.key, True, STALE_SECONDS, info.mtime)
    return LockInfo(info.key, match.group(1) == EXCLUSIVE, float(match.group(2)), info.mtime)


def list_locks(store: Store) -> list[LockInfo]:
    return [parse_lock(i) for i in store.list(LOCK_PREFIX)]


class StoreLock:
    """One lock object of this process in the store (see the module docstring)."""

    def __init__(self, store: Store, exclusive: bool, purpose: str,
                 stale: float | None = None) -> None:
        self.store = store
        self.exclusive = exclusive
        self.purpose = purpose
        self.stale = stale_seconds() if stale is None else stale
        self.key = ""
        #: The store's clock when the lock was acquired (its own lock's mtime).
        self.store_time = 0.0
        self._refreshed = 0.0  # our clock at the start of the last counted write
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Packs this process wrote (or found present) while holding this lock
        #: without a break: no gc can have removed them since.
        self.fresh_packs: set[str] = set()

    @property
    def kind(self) -> str:
        return EXCLUSIVE if self.exclusive else SHARED

    @property
    def refresh_interval(self) -> float:
        return self.stale / 6

    @property
    def margin(self) -> float:
        return self.stale / 3

    def _body(self) -> bytes:
        return json.dumps({
            "kind": self.kind, "purpose": self.purpose, "host": socket.gethostname(),
            "pid": os.getpid(), "command": " ".join(sys.argv[:2]),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }, sort_keys=True).encode()

    # -- acquiring ------------------------------------------------------------------

    def acquire(self, wait_seconds: float, reporter: Reporter | None = None) -> None:
        """Hold the lock, waiting up to ``wait_seconds`` for conflicting holders;
        raise ConflictError (naming them) if they are still there then."""
        reporter = reporter or Reporter()
        deadline = _clock() + wait_seconds
        delay = 0.1
        told = False
        while True:
            self._create()
            try:
                blockers = self._settle(deadline, reporter, told)
            except BaseException:
                self._remove()
                raise
            if not blockers:
                return
            self._remove()  # yield to them: our object must not block anyone meanwhile
            if _clock() >= deadline:
                raise self._conflict(blockers)
            if not told:
                reporter.warn(f"waiting for {self._describe(blockers)} to finish "
                              f"(up to {max(0.0, deadline - _clock()):.0f} s)")
                told = True
            time.sleep(min(delay, max(0.0, deadline - _clock())) * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 2.0)

    def _create(self) -> None:
        self.key = f"{LOCK_PREFIX}{self.kind}-{self.stale:g}-{secrets.token_hex(16)}"
        self._lost = None
        started = _clock()
        if not self.store.put_if_absent(self.key, self._body()):
            raise ConflictError(f"lock {self.key} exists already")  # 128 random bits
        self._refreshed = started
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh_loop, daemon=True,
                                        name=f"dsfs-lock-{self.kind}")
        self._thread.start()

    def _settle(self, deadline: float, reporter: Reporter, told: bool) -> list[LockInfo]:
        """After creating our object: the live locks we must yield to (empty:
        we hold the lock).  An exclusive lock waits here, kept, for writers."""
        first = True
        while True:
            mine, live = self._look()
            self.store_time = mine.mtime
            if self.exclusive:
                others = [x for x in live if x.exclusive]
                if first and others:
                    return others
                first = False  # a later exclusive lock sees ours and yields
                writers = [x for x in live if not x.exclusive]
                if not writers:
                    return []
                if _clock() >= deadline:
                    raise self._conflict(writers)
                if not told:
                    reporter.warn(f"waiting for {self._describe(writers)} to finish "
                                  f"(up to {max(0.0, deadline - _clock()):.0f} s)")
                    told = True
                self.check()
                time.sleep(min(0.5, max(0.05, deadline - _clock())) * random.uniform(0.5, 1.0))
            else:
                return [x for x in live if x.exclusive]

    def _look(self) -> tuple[LockInfo, list[LockInfo]]:
        """(our lock, the other live locks); stale ones are removed on the way."""
        locks = list_locks(self.store)
        mine = next((x for x in locks if x.key == self.key), None)
        if mine is None:
            info = self.store.stat(self.key)  # a listing that lags behind our write
            if info is None:
                raise ConflictError(f"the lock {self.key} this process wrote vanished "
                                    f"from {self.store.url}")
            mine = parse_lock(info)
        now = mine.mtime
        live = []
        for other in locks:
            if other.key == self.key:
                continue
            if now - other.mtime > other.stale_seconds:
                log.info("removing stale lock %s (%.0f s old)", other.key, now - other.mtime)
                try:
                    self.store.delete(other.key)
                except DsfsError as exc:
                    log.warning("cannot remove stale lock %s: %s", other.key, exc)
                continue
            live.append(other)
        return mine, live

    def _describe(self, locks: list[LockInfo]) -> str:
        names = []
        for lock in locks[:3]:
            try:
                body = json.loads(self.store.get(lock.key))
                command = os.path.basename(str(body.get("command", "")))
                who = (f"{body.get('purpose', '?')}"
                       + (f" ({command})" if command else "")
                       + f" on {body.get('host', '?')} pid {body.get('pid', '?')}")
            except (NotFoundError, ValueError, AttributeError):
                who = "unknown holder"
            except DsfsError:
                who = "unreadable"
            names.append(f"{who} ({lock.key})")
        more = f" and {len(locks) - 3} more" if len(locks) > 3 else ""
        kind = "an exclusive lock" if all(x.exclusive for x in locks) else "shared locks"
        return f"{kind} held by {', '.join(names)}{more}"

    def _conflict(self, locks: list[LockInfo]) -> ConflictError:
        if self.exclusive:
            return ConflictError(
                f"{self.purpose}: the store {self.store.url} is in use: "
                f"{self._describe(locks)}; try again later or wait longer (gc --wait). "
                f"A lock of a crashed process expires {max(x.stale_seconds for x in locks):g} s "
                "after its last refresh")
        return ConflictError(
            f"{self.purpose}: {self._describe(locks)}: a gc is running on {self.store.url}; "
            f"nothing was published, run the command again later (or set {WAIT_ENV})")

    # -- holding --------------------------------------------------------------------

    def _valid_until(self) -> float:
        return self._refreshed + self.stale - self.margin

    def _refresh_loop(self) -> None:
        stop = self._stop
        while not stop.wait(self.refresh_interval):
            if _clock() >= self._valid_until():
                self._lost = (f"it was not refreshed for {_clock() - self._refreshed:.0f} s "
                              "(the process was suspended or the store unreachable)")
                return
            started = _clock()
            try:
                self.store.put(self.key, self._body())
            except Exception as exc:  # keep trying: the lock expires by itself
                log.warning("cannot refresh the store lock %s: %s", self.key, exc)
                continue
            if stop.is_set():  # released meanwhile: the put must not outlive it
                self._delete_quietly()
                return
            if _clock() - started <= self.margin:
                self._refreshed = started

    def check(self) -> None:
        """Raise ConflictError unless the lock is certainly still held: no other
        process can consider it stale yet."""
        if self._lost is None and _clock() >= self._valid_until():
            self._lost = f"it was not refreshed for {_clock() - self._refreshed:.0f} s"
        if self._lost is not None:
            what = ("gc stopped before deleting anything more" if self.exclusive
                    else "nothing was published")
            raise ConflictError(
                f"{self.purpose}: the {self.kind} lock on {self.store.url} expired: "
                f"{self._lost}, so another process may have taken over; {what}: run the "
                "command again")

    def release(self) -> None:
        self._remove()

    def _remove(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.key:
            self._delete_quietly()

    def _delete_quietly(self) -> None:
        try:
            self.store.delete(self.key)
        except DsfsError as exc:  # it expires by itself
            log.warning("cannot remove the store lock %s: %s", self.key, exc)


# -- holding locks around operations -----------------------------------------------

_registry = threading.RLock()
#: id(store) -> [lock, number of holds]
_held: dict[int, list] = {}
#: Holds whose release a weakref finalizer asked for (see ``release_later``).
_deferred: list[Hold] = []


def release_later(hold: Hold) -> None:
    """Release ``hold`` soon, without waiting: for weakref finalizers.  They run
    wherever the garbage collector happens to run, for example inside a thread
    that ``Thread.start`` is still starting for a caller who holds ``_registry``
    (a lock's refresh thread): waiting for ``_registry`` there deadlocks both.
    The next user of the registry performs the release (``list.append`` needs
    no lock)."""
    _deferred.append(hold)
    if _registry.acquire(blocking=False):  # nobody else has it: release now
        try:
            _drain_deferred()
        finally:
            _registry.release()


def _drain_deferred() -> None:
    """Perform the releases finalizers asked for; the caller holds ``_registry``."""
    while _deferred:
        _deferred.pop().release()
#: (id(store), thread id) -> holds that end with the next publish in that thread
_until_publish: dict[tuple[int, int], list[Hold]] = {}


class Hold:
    """One reference to this process's shared lock on a store, acquiring it if no
    other hold has it.  ``until_publish``: the hold also ends when ``publish``
    finishes in this thread (the packer takes one: from its first look at the
    store's packs to the claim)."""

    def __init__(self, repo: Repository, purpose: str, wait_seconds: float | None = None,
                 reporter: Reporter | None = None, until_publish: bool = False) -> None:
        self._ident = id(repo.store)
        self._done = False
        #: Whether this hold took the lock (no other hold of this process had it).
        self.acquired = False
        with _registry:
            _drain_deferred()
            held = _held.get(self._ident)
            if held is None:
                self.acquired = True
                lock = StoreLock(repo.store, False, purpose)
                lock.acquire(writer_wait_seconds() if wait_seconds is None else wait_seconds,
                             reporter)
                held = _held[self._ident] = [lock, 0]
            held[1] += 1
            self.lock: StoreLock = held[0]
            if until_publish:
                key = (self._ident, threading.get_ident())
                _until_publish.setdefault(key, []).append(self)

    def release(self) -> None:
        with _registry:
            if self._done:
                return
            self._done = True
            held = _held.get(self._ident)
            if held is None or held[0] is not self.lock:
                return
            held[1] -= 1
            if held[1] == 0:
                del _held[self._ident]
                held[0].release()
        if _deferred:  # a finalizer found the registry taken meanwhile
            release_later_pending()


def release_later_pending() -> None:
    """Perform finalizers' releases if the registry is free (never waits)."""
    if _registry.acquire(blocking=False):
        try:
            _drain_deferred()
        finally:
            _registry.release()


def end_holds_until_publish(repo: Repository) -> None:
    with _registry:
        _drain_deferred()
        holds = _until_publish.pop((id(repo.store), threading.get_ident()), [])
    for hold in holds:
        hold.release()


@atexit.register
def _release_all() -> None:
    """A process that ends normally never leaves its locks behind."""
    with _registry:
        _deferred.clear()  # every lock is released below anyway
        locks = [held[0] for held in _held.values()]
        _held.clear()
    for lock in locks:
        lock.release()


@contextmanager
def shared(repo: Repository, purpose: str, wait_seconds: float | None = None,
           reporter: Reporter | None = None) -> Iterator[StoreLock]:
    """Hold a shared lock on ``repo``'s store (re-entrant: an inner call on the
    same store object reuses the outer lock)."""
    hold = Hold(repo, purpose, wait_seconds, reporter)
    try:
        yield hold.lock
    finally:
        hold.release()


@contextmanager
def exclusive(repo: Repository, purpose: str, wait_seconds: float,
              reporter: Reporter | None = None) -> Iterator[StoreLock]:
    """Hold the exclusive lock on ``repo``'s store (gc)."""
    lock = StoreLock(repo.store, True, purpose)
    lock.acquire(wait_seconds, reporter)
    try:
        yield lock
    finally:
        lock.release()


def holding_shared(purpose: str) -> Callable[[Callable[Concatenate[Repository, P], T]],
                                             Callable[Concatenate[Repository, P], T]]:
    """Decorate an engine function whose first argument is the repository: it
    runs under a shared store lock, from its first look at what the store
    holds to its last write."""
    def decorate(fn: Callable[Concatenate[Repository, P], T]
                 ) -> Callable[Concatenate[Repository, P], T]:
        @functools.wraps(fn)
        def run(repo: Repository, *args: P.args, **kwargs: P.kwargs) -> T:
            with shared(repo, purpose):
                try:
                    return fn(repo, *args, **kwargs)
                finally:  # a packer whose publish never came (no changes, an error)
                    end_holds_until_publish(repo)
        return run
    return decorate


def current(repo: Repository) -> StoreLock | None:
    """The shared lock this process holds on ``repo``'s store, if any."""
    with _registry:
        held = _held.get(id(repo.store))
        return held[0] if held else None
