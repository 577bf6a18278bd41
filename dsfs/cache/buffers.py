"""Reusable buffers for whole-pack reads (``ChunkCache.fetch_pack``).

A pack is read whole into memory (16 to 40 MiB) so that its chunks can be
checked and written into the cache.  Fresh memory of that size costs the
kernel a page fault and a zeroed page for every 4 KiB, once per pack: about
as much CPU as receiving the bytes.  So the buffers of finished fetches are
kept and handed to the next ones: at most ``keep`` of them (one per fetch
that may run at once), and none once no fetch has used the pool for
``idle`` seconds, so a reader that has finished its shuffled epoch does not
go on holding them.  Pure memory bookkeeping: no I/O.  A forked child
starts with empty pools and fresh locks (a parent's thread may have held
one at the fork).
"""

from __future__ import annotations

import os
import threading
import time
import weakref

_pools: weakref.WeakSet[BufferPool] = weakref.WeakSet()


def _reset_in_child() -> None:
    for pool in list(_pools):
        pool._lock = threading.Lock()
        pool._free = []


os.register_at_fork(after_in_child=_reset_in_child)


class BufferPool:
    """Free buffers of finished fetches, up to ``keep``, dropped when idle."""

    def __init__(self, keep: int, idle: float = 30.0) -> None:
        self.keep = keep
        self.idle = idle
        self._free: list[bytearray] = []
        self._used = time.monotonic()
        self._lock = threading.Lock()
        _pools.add(self)

    def take(self) -> bytearray | None:
        """A free buffer (the largest), or None: the reader allocates one."""
        with self._lock:
            self._trim_locked()
            self._used = time.monotonic()
            return self._free.pop() if self._free else None

    def give(self, buffer: object) -> None:
        """Keep ``buffer`` for the next fetch (if it is a buffer worth keeping)."""
        if not isinstance(buffer, bytearray) or not buffer:
            return
        with self._lock:
            self._trim_locked()
            self._used = time.monotonic()
            self._free.append(buffer)
            self._free.sort(key=len)  # take() hands out the largest
            if len(self._free) > self.keep:
                del self._free[:len(self._free) - self.keep]

    def trim(self) -> int:
        """Drop the free buffers if the pool has been idle; the bytes let go."""
        with self._lock:
            return self._trim_locked()

    def _trim_locked(self) -> int:
        if not self._free or time.monotonic() - self._used < self.idle:
            return 0
        freed = sum(len(b) for b in self._free)
        self._free.clear()
        return freed

    @property
    def held(self) -> int:
        """Bytes held in free buffers."""
        with self._lock:
            return sum(len(b) for b in self._free)
