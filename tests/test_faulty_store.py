"""The failing store (dsfs/store/faulty.py): DSFS_FAULTS rules over a real
store of each kind, and the process kills that crash tests rely on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from dsfs.errors import (
    ObjectNotFoundError,
    StoreAccessError,
    StoreUnavailableError,
    UsageError,
)
from dsfs.store import open_store
from dsfs.store.faulty import FAULTS_ENV, FaultyStore, parse_rules


def test_rules_fire_on_count_after_skip(store_url: str, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    monkeypatch.setenv(FAULTS_ENV, "get:a/:error:2:1; put_if_absent:names/:lose-reply;"
                                   "stat::deny:*; get_range:b:corrupt; get_head:c:missing")
    store = open_store(store_url)
    assert isinstance(store, FaultyStore) and store.url == store.inner.url
    store.put("a/x", b"one")
    store.put("b", b"two")
    store.put("c", b"three")
    assert store.get("a/x") == b"one"  # skipped
    for _ in range(2):
        with pytest.raises(StoreUnavailableError, match=FAULTS_ENV):
            store.get("a/x")
    assert store.get("a/x") == b"one"  # count used up
    with pytest.raises(StoreUnavailableError, match="reply was lost"):
        store.put_if_absent("names/p/n/1", b"id")
    assert store.inner.get("names/p/n/1") == b"id"  # written all the same
    assert store.put_if_absent("names/p/n/1", b"id") is False
    for _ in range(3):
        with pytest.raises(StoreAccessError):
            store.stat("b")
    assert store.get_range("b", 0, 3) == b"\x8bwo"
    with pytest.raises(ObjectNotFoundError):
        store.get_head("c", 10)
    assert store.get_head("c", 10) == b"three"


def test_unset_means_the_real_store(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FAULTS_ENV, raising=False)
    assert not isinstance(open_store(store_url), FaultyStore)


@pytest.mark.parametrize("text", ["get:x", "fly:x:error", "get:x:explode", "get:x:error:two"])
def test_bad_rules_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match=FAULTS_ENV):
        parse_rules(text)


@pytest.mark.parametrize(("action", "written"), [("kill", False), ("kill-after", True)])
def test_kill_before_or_after_the_operation(store_url: str, action: str, written: bool) -> None:
    code = ("from dsfs.store import open_store\n"
            f"open_store({store_url!r}).put_if_absent('names/k', b'v')\n"
            "print('survived')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60,
                            env={**os.environ, FAULTS_ENV: f"put_if_absent:names/:{action}"})
    assert result.returncode == -signal.SIGKILL and "survived" not in result.stdout
    store = open_store(store_url)
    assert store.exists("names/k") is written
