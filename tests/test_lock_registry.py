"""The process's registry of store locks never deadlocks with a finalizer.

A ``Packer`` releases its lock hold from a weakref finalizer when it is
dropped without publishing.  Finalizers run wherever the garbage collector
runs, including inside a thread that ``Thread.start`` is still starting for
a caller who holds the registry (a lock's refresh thread): seen under load as
a ``dsfs commit`` that never returned.  Such a release must not wait.
"""

from __future__ import annotations

import threading
from pathlib import Path

from dsfs.engine import locks
from dsfs.repository import Repository
from dsfs.store import open_store


def test_a_finalizer_release_never_waits_for_the_registry(tmp_path: Path) -> None:
    repo = Repository(open_store(str(tmp_path / "store")), tmp_path / "cache")
    hold = locks.Hold(repo, "test")
    assert locks.current(repo) is not None
    returned = threading.Event()

    def finalizer() -> None:
        locks.release_later(hold)
        returned.set()

    with locks._registry:  # another thread is busy in the registry
        thread = threading.Thread(target=finalizer)
        thread.start()
        assert returned.wait(10), "a finalizer's release waited for the registry"
        assert locks.current(repo) is not None  # deferred, not lost
    thread.join()
    locks.release_later_pending()  # the next user of the registry performs it
    assert locks.current(repo) is None
    assert not list((tmp_path / "store").rglob("locks/*")), "the lock object stays behind"


def test_a_deferred_release_is_performed_by_the_next_hold(tmp_path: Path) -> None:
    repo = Repository(open_store(str(tmp_path / "store")), tmp_path / "cache")
    first = locks.Hold(repo, "first")
    with locks._registry:
        threading.Thread(target=locks.release_later, args=(first,)).start()
    second = locks.Hold(repo, "second")  # drains the deferred release first
    assert first._done
    second.release()
    assert locks.current(repo) is None
