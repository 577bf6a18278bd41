"""The store contract (dsfs/store/base.py), checked against every backend.

Runs once per store kind of the ``store_url`` fixture: the local directory
always, S3 when an endpoint is available.  A new backend passes this file
unchanged or it is not a store.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from dsfs.errors import (
    NotFoundError,
    ObjectNotFoundError,
    StoreCorruptError,
    StoreError,
    UsageError,
)
from dsfs.store import Store, open_store


@pytest.fixture
def store(store_url: str) -> Store:
    s = open_store(store_url)
    yield s
    s.close()


def test_put_get_roundtrip(store: Store) -> None:
    store.put("a/b/c", b"hello")
    assert store.get("a/b/c") == b"hello"
    info = store.stat("a/b/c")
    assert info is not None and info.size == 5 and info.key == "a/b/c"


def test_put_replaces_whole_object(store: Store) -> None:
    store.put("k", b"x" * 1000)
    store.put("k", b"short")
    assert store.get("k") == b"short"


def test_empty_object(store: Store) -> None:
    store.put("empty", b"")
    assert store.get("empty") == b""
    assert store.stat("empty").size == 0


def test_get_missing_raises_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError):
        store.get("no/such/key")
    with pytest.raises(NotFoundError):
        store.get_range("no/such/key", 0, 1)
    assert store.stat("no/such/key") is None
    assert not store.exists("no/such/key")


def test_typed_errors_for_missing_keys_and_short_ranges(store: Store) -> None:
    """Each backend raises the typed errors of dsfs.store.base: a missing key
    is ObjectNotFoundError (for every read), a range past the object's end is
    StoreCorruptError, and neither is a plain StoreError."""
    for read in (lambda: store.get("no/such"), lambda: store.get_range("no/such", 0, 4),
                 lambda: store.get_head("no/such", 4), lambda: store.get_range("no/such", 0, 0)):
        with pytest.raises(ObjectNotFoundError):
            read()
    store.put("r5", b"12345")
    for offset, length in ((3, 10), (5, 1), (100, 1)):
        with pytest.raises(StoreCorruptError) as info:
            store.get_range("r5", offset, length)
        assert not isinstance(info.value, StoreError) and "r5" in str(info.value)
    assert store.get_head("r5", 100) == b"12345"
    store.put("e", b"")
    assert store.get_head("e", 10) == b""


def test_get_range_exact_bytes(store: Store) -> None:
    data = bytes(range(256)) * 100
    store.put("r", data)
    assert store.get_range("r", 0, 10) == data[:10]
    assert store.get_range("r", 1000, 300) == data[1000:1300]
    assert store.get_range("r", len(data) - 7, 7) == data[-7:]


def test_put_if_absent_only_once(store: Store) -> None:
    assert store.put_if_absent("claim", b"first") is True
    assert store.put_if_absent("claim", b"second") is False
    assert store.get("claim") == b"first"


def test_put_if_absent_concurrent_one_winner(store: Store) -> None:
    results: list[bool] = []
    lock = threading.Lock()

    def claim(i: int) -> None:
        ok = store.put_if_absent("race", str(i).encode())
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1
    winner = store.get("race").decode()
    assert winner.isdigit()


def test_list_prefix(store: Store) -> None:
    for key in ["p/1", "p/2", "p/sub/3", "q/4", "pp/5"]:
        store.put(key, key.encode())
    keys = sorted(i.key for i in store.list("p/"))
    assert keys == ["p/1", "p/2", "p/sub/3"]
    assert sorted(i.key for i in store.list("p")) == ["p/1", "p/2", "p/sub/3", "pp/5"]
    assert list(store.list("nothing/")) == []
    sizes = {i.key: i.size for i in store.list("q/")}
    assert sizes == {"q/4": 3}


def test_delete(store: Store) -> None:
    store.put("d", b"1")
    store.delete("d")
    assert not store.exists("d")
    store.delete("d")  # missing is fine


def test_large_object(store: Store) -> None:
    data = bytes(range(256)) * (40 * 1024)  # 10 MiB
    store.put("big", data)
    assert store.get_range("big", 5 * 1024 * 1024, 4096) == data[5 * 1024 * 1024 :][:4096]
    assert store.get("big") == data


def test_put_file_if_absent_and_get_into_stream_whole_objects(store: Store,
                                                              tmp_path: Path) -> None:
    """The file forms of a conditional write and a whole read: the bytes of the
    whole file (wherever its position was), written once only, read back
    exactly into a file; a missing key writes nothing into the target."""
    rng = random.Random(11)
    for size in (0, 1, (1 << 20) + 7, 3 * (1 << 20)):
        data = rng.randbytes(size)
        source = tmp_path / f"src{size}"
        source.write_bytes(data)
        with open(source, "rb") as f:
            f.seek(size // 2)  # read from the start regardless
            assert store.put_file_if_absent(f"m/{size}", f) is True
        with open(source, "rb") as f:
            assert store.put_file_if_absent(f"m/{size}", f) is False
        with open(tmp_path / "out", "w+b") as out:
            out.write(b"prefix")
            assert store.get_into(f"m/{size}", out) == size
            out.seek(0)
            assert out.read() == b"prefix" + data
    other = tmp_path / "other"
    other.write_bytes(b"second writer")
    with open(other, "rb") as f:
        assert store.put_file_if_absent("m/1", f) is False
    assert store.get("m/1") == data_of(tmp_path / "src1")
    with open(tmp_path / "missing", "w+b") as out, pytest.raises(ObjectNotFoundError):
        store.get_into("no/such", out)
    assert (tmp_path / "missing").read_bytes() == b""


def data_of(path: Path) -> bytes:
    return path.read_bytes()


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(UsageError):
        open_store("ftp://example/x")
