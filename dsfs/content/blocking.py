"""The chunk reader for callers without an event loop (the fsspec filesystem).

``BlockingReader`` runs a ``ChunkReader`` in trio in a daemon thread of its
own and hands it ``open`` / ``read`` / ``release`` from any thread, so a
synchronous reader goes through the very fetch path of a mount: the shared
cache, one fetch per chunk however many threads want it, scan windows, the
pack span policy, retries.

A fork does not copy the thread: a child process that uses a reader made
by its parent (a data loader's worker) gets a new thread and a new reader,
with its own store connections (``renew``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TypeVar

import trio

from dsfs.cache.chunks import ChunkCache
from dsfs.content.reader import ChunkReader
from dsfs.store.base import Store
from dsfs.vfs import OpenFile

T = TypeVar("T")


class BlockingReader:
    """A ``ChunkReader`` in a thread; every method may be called from any thread."""

    def __init__(self, make: Callable[[], tuple[ChunkCache, Store, ChunkReader]]) -> None:
        #: Builds the cache, store and reader (again in a forked child).
        self._make = make
        self._lock = threading.Lock()
        self._pid = -1
        self._token: trio.lowlevel.TrioToken | None = None
        self._reader: ChunkReader | None = None
        self._stop: trio.Event | None = None
        self._thread: threading.Thread | None = None

    def _ensure(self) -> tuple[ChunkReader, trio.lowlevel.TrioToken]:
        with self._lock:
            if self._pid != os.getpid() or self._token is None or self._reader is None:
                self._start()
            assert self._reader is not None and self._token is not None
            return self._reader, self._token

    def _start(self) -> None:
        _cache, _store, reader = self._make()
        started = threading.Event()
        failure: list[BaseException] = []

        async def main() -> None:
            self._stop = trio.Event()
            self._token = trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as nursery:
                await nursery.start(reader.run)
                started.set()
                await self._stop.wait()
                nursery.cancel_scope.cancel()

        def thread() -> None:
            try:
                trio.run(main)
            except BaseException as exc:  # noqa: BLE001 - handed to the starter
                failure.append(exc)
                started.set()
            finally:
                reader.close()

        self._reader, self._pid = reader, os.getpid()
        self._thread = threading.Thread(target=thread, name="dsfs-reader", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            self._reader = self._token = None
            raise failure[0]

    def _call(self, func: Callable[[ChunkReader], T]) -> T:
        reader, token = self._ensure()
        return trio.from_thread.run_sync(func, reader, trio_token=token)

    def open(self, file: OpenFile) -> int:
        return self._call(lambda reader: reader.open(file))

    def read(self, fh: int, offset: int, size: int) -> bytes:
        reader, token = self._ensure()
        return trio.from_thread.run(reader.read, fh, offset, size, trio_token=token)

    def release(self, fh: int) -> None:
        if self._pid == os.getpid():
            self._call(lambda reader: reader.release(fh))

    def read_file(self, file: OpenFile, offset: int = 0, size: int | None = None) -> bytes:
        """Bytes ``offset:offset + size`` of a file (to its end when None), in
        one trip to the reader's thread."""
        end = file.size if size is None else min(file.size, offset + size)
        if offset >= end:
            return b""

        async def whole(reader: ChunkReader) -> bytes:
            fh = reader.open(file)
            try:
                return await reader.read(fh, offset, end - offset)
            finally:
                reader.release(fh)

        reader, token = self._ensure()
        return trio.from_thread.run(whole, reader, trio_token=token)

    def close(self) -> None:
        """Stop the thread (flushing access times and counters); a later call
        starts it again."""
        with self._lock:
            if self._pid == os.getpid() and self._stop is not None and self._token is not None:
                stop = self._stop
                trio.from_thread.run_sync(stop.set, trio_token=self._token)
                if self._thread is not None:
                    self._thread.join(timeout=30)
            self._token = self._reader = self._stop = self._thread = None
            self._pid = -1
