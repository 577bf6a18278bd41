"""Streamed writes and reads of the S3 store (``put_file_if_absent``,
``get_into``) under injected HTTP faults: a manifest uploaded from its spool
file a part at a time is visible whole or not at all, a lost reply is
recognized as our own write, and a body cut off mid-stream is resumed.

Faults come from ``fault_proxy.FaultProxy`` between the store and moto.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from fault_proxy import FaultProxy
from s3_support import s3_available

from dsfs.errors import StoreError
from dsfs.store import open_store

pytestmark = pytest.mark.skipif(not s3_available(), reason="no S3 endpoint (moto not installed)")

s3 = pytest.importorskip("dsfs.store.s3")

MIB = 1024 * 1024


@pytest.fixture(autouse=True)
def few_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    # S3 parts are at least 5 MiB except the last: lower the threshold, not the part size.
    monkeypatch.setattr(s3, "MULTIPART_THRESHOLD", 6 * MIB)
    monkeypatch.setattr(s3, "MULTIPART_PART_SIZE", 5 * MIB)


def _file(tmp_path: Path, size: int, seed: int) -> tuple[Path, bytes]:
    data = random.Random(seed).randbytes(size)
    path = tmp_path / f"payload-{seed}"
    path.write_bytes(data)
    return path, data


def _open_uploads(store: object) -> list:
    client = store._client  # type: ignore[attr-defined]
    return client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])  # type: ignore[attr-defined]


@pytest.mark.parametrize("fault", ["500", "reset", "cut"])
def test_failed_part_publishes_nothing_then_a_retry_writes_it_whole(
        bucket: str, proxy: FaultProxy, small_parts: None, tmp_path: Path, fault: str) -> None:
    """Part 2 fails on every attempt: the write raises a store error, no object
    is visible under the key and the multipart upload is aborted; the same
    file written again afterwards reads back byte for byte."""
    store = open_store(f"s3://{bucket}/p")
    path, data = _file(tmp_path, 13 * MIB, 1)  # three parts
    proxy.add(fault, method="PUT", path_contains="partNumber=2", times=50)
    with open(path, "rb") as f, pytest.raises(StoreError):
        store.put_file_if_absent("versions/m", f)
    assert store.stat("versions/m") is None
    assert _open_uploads(store) == []
    proxy.clear()
    with open(path, "rb") as f:
        assert store.put_file_if_absent("versions/m", f) is True
    assert store.get("versions/m") == data


@pytest.mark.parametrize("size", [1 * MIB, 13 * MIB])
def test_lost_reply_of_a_file_write_is_recognized_as_ours(
        bucket: str, proxy: FaultProxy, small_parts: None, tmp_path: Path, size: int) -> None:
    """The request that makes the object visible (PUT, or the multipart
    completion) succeeds but its reply is lost: the retry meets 412 and the
    write token says the object is ours, so the write reports success; a
    second writer with other bytes is still refused."""
    store = open_store(f"s3://{bucket}/p")
    store.put_if_absent("warm", b"x")  # the conditional-write probe goes first
    path, data = _file(tmp_path, size, 2)
    if size > 6 * MIB:
        proxy.add("drop_reply", method="POST", path_contains="uploadId=")
    else:
        proxy.add("drop_reply", method="PUT", path_contains="/versions/m")
    with open(path, "rb") as f:
        assert store.put_file_if_absent("versions/m", f) is True
    assert proxy.stats.faults["drop_reply"] == 1
    assert store.get("versions/m") == data
    other, _ = _file(tmp_path, size, 3)
    with open(other, "rb") as f:
        assert store.put_file_if_absent("versions/m", f) is False
    assert store.get("versions/m") == data


def test_get_into_resumes_a_cut_body(bucket: str, proxy: FaultProxy, tmp_path: Path) -> None:
    """A reply whose body breaks off half-way is asked again from where it
    stopped: the file gets every byte once, in order."""
    store = open_store(f"s3://{bucket}/p")
    data = random.Random(4).randbytes(3 * MIB + 5)
    store.put("versions/big", data)
    proxy.add("cut", method="GET", path_contains="/versions/big", times=2)
    with open(tmp_path / "out", "w+b") as out:
        assert store.get_into("versions/big", out) == len(data)
    assert (tmp_path / "out").read_bytes() == data
    assert proxy.stats.faults["cut"] == 2
