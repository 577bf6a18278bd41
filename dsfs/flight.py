"""Single flight per key: concurrent callers for one key share one computation.

A mount does a few slow things that many requests may want at once: fetch a
chunk (``dsfs.content.reader``), copy a file up into the overlay, fill a block
of a partly copied file (``dsfs.overlay.blocks``).  Each runs once per key;
whoever asks while it is in flight waits for it instead of starting another.

``SingleFlight`` is that table, for trio tasks in one thread:

* ``run(key, fn)``: the result of ``fn()``, computed once for the callers that
  overlap; a latecomer gets the same result, or the same exception.
* ``lead(fn, *keys)`` and ``join(key)``: the two halves, for callers that check
  their own state between tries (a chunk already verified, a block already
  filled) and for a computation that covers several keys at once (a chunk
  fetched with its neighbours in one read).

A failure (an ``Exception``) is shared: every waiter raises it.  A leader that
is cancelled (or interrupted by any other ``BaseException``) shares nothing:
its waiters are not cancelled with it, they wake and try again, and one of
them leads the next attempt.

There is no ``await`` between a ``join`` that returns False and the ``lead``
that follows it as long as the caller adds none, so two tasks cannot both
lead one key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Iterator
from typing import Any, Generic, TypeVar

import trio

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class _Flight:
    __slots__ = ("done", "error", "ok", "result")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.ok = False
        self.result: Any = None
        self.error: Exception | None = None


class SingleFlight(Generic[K]):
    """The computations in flight, by key."""

    def __init__(self) -> None:
        self._flights: dict[K, _Flight] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._flights

    def __iter__(self) -> Iterator[K]:
        return iter(self._flights)

    def __len__(self) -> int:
        return len(self._flights)

    async def join(self, key: K) -> bool:
        """Wait for the computation in flight for ``key``: False at once if there
        is none; True once it ended well or was cancelled (check and try
        again); its exception, raised here, if it failed."""
        flight = self._flights.get(key)
        if flight is None:
            return False
        await flight.done.wait()
        if flight.error is not None:
            raise flight.error
        return True

    async def lead(self, fn: Callable[[], Awaitable[T]], *keys: K) -> T:
        """Run ``fn()`` as the one computation in flight for ``keys`` (none of
        them may be in flight already) and wake their waiters when it ends."""
        flight = _Flight()
        owned = list(dict.fromkeys(keys))
        busy = [k for k in owned if k in self._flights]
        if busy:
            raise RuntimeError(f"already in flight: {busy!r}")
        for key in owned:
            self._flights[key] = flight
        try:
            flight.result = await fn()
            flight.ok = True
            return flight.result
        except Exception as exc:
            flight.error = exc
            raise
        finally:
            for key in owned:
                del self._flights[key]
            flight.done.set()

    async def run(self, key: K, fn: Callable[[], Awaitable[T]]) -> T:
        """``fn()``'s result for ``key``: computed here, or shared with the
        computation already in flight (its result or its exception)."""
        while True:
            flight = self._flights.get(key)
            if flight is None:
                return await self.lead(fn, key)
            await self.join(key)
            if flight.ok:
                return flight.result
            # the leader was cancelled: try again, perhaps as the leader
