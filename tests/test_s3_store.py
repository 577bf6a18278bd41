"""S3-specific behaviour of dsfs.store.s3 beyond the shared contract suite:
URL handling, lost replies of conditional writes, broken bodies, retries,
endpoints that ignore conditional writes, multipart, and credential hygiene.

Faults come from ``fault_proxy.FaultProxy`` placed between the store and the
moto server (``AWS_ENDPOINT_URL`` points the store at the proxy), so these
tests need moto and are skipped against a real S3 (``DSFS_TEST_S3_URL``).
"""

from __future__ import annotations

import os
import time

import pytest
from fault_proxy import FaultProxy
from s3_support import DUMMY_KEY_ID, DUMMY_SECRET, make_client, s3_available

from dsfs.errors import (
    NotFoundError,
    StoreCorruptError,
    StoreError,
    StoreUnavailableError,
    UsageError,
)
from dsfs.store import open_store

pytestmark = pytest.mark.skipif(not s3_available(), reason="no S3 endpoint (moto not installed)")

s3 = pytest.importorskip("dsfs.store.s3")


# -- URLs ----------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "s3://AKIAEXAMPLEKEY123456:sup3rs3cret@bucket/prefix",
    "s3://AKIAEXAMPLEKEY123456:sup3r/s3cret@bucket/prefix",  # '/' in the secret
    "s3://sup3rs3cret@bucket/prefix",
])
def test_url_with_credentials_is_refused(url: str) -> None:
    with pytest.raises(UsageError) as info:
        open_store(url)
    message = str(info.value)
    assert "sup3r" not in message and "s3cret" not in message and "AKIAEXAMPLE" not in message
    assert "AWS_PROFILE" in message and "AWS_ACCESS_KEY_ID" in message


@pytest.mark.parametrize("url, bucket, prefix", [
    ("s3://my-bucket/a/b", "my-bucket", "a/b"),
    ("s3://my-bucket/a/b/", "my-bucket", "a/b"),
    ("s3://my-bucket", "my-bucket", ""),
    ("s3://my-bucket/", "my-bucket", ""),
])
def test_url_parsing(url: str, bucket: str, prefix: str) -> None:
    assert s3.parse_url(url) == (bucket, prefix)


@pytest.mark.parametrize("url", ["s3://Bad_Bucket!/x", "s3:///x", "s3://bucket/a//b",
                                 "s3://bucket/a/../b", "s3://bucket/x?versionId=1"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(UsageError):
        s3.parse_url(url)


def test_url_attribute_reopens_the_same_store(s3_store_url: str) -> None:
    store = open_store(s3_store_url)
    store.put("k", b"v")
    assert store.url == s3_store_url.rstrip("/")
    again = open_store(store.url)
    assert again.get("k") == b"v"
    store.close()
    again.close()


def test_prefixes_do_not_see_each_other(bucket: str) -> None:
    a, ab = open_store(f"s3://{bucket}/a"), open_store(f"s3://{bucket}/ab")
    a.put("x", b"1")
    ab.put("x", b"2")
    assert [i.key for i in a.list("")] == ["x"]
    assert a.get("x") == b"1" and ab.get("x") == b"2"
    # The underlying keys really live below each prefix.
    client = make_client()
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["a/x", "ab/x"]


def test_stores_share_the_parsed_service_model_but_not_their_settings(
        moto_endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One botocore data loader per process: S3's model is parsed once, not
    per store (nor per client), and a forked child keeps its parent's; each
    store still resolves its own endpoint, credentials and settings."""
    first = open_store(f"s3://{bucket}/a")
    first.put("x", b"1")
    loader = first._client._loader
    assert first._bulk()._loader is loader  # the pack-reading client too
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIADSFSOTHERKEY0002")
    other = s3.S3Store(bucket, "a")
    assert other._client._loader is loader
    assert other._endpoint == "http://127.0.0.1:9" and first._endpoint == moto_endpoint
    assert "AKIADSFSOTHERKEY0002" in other._secrets and DUMMY_KEY_ID in first._secrets
    # boto3 adds its data folder to the loader of every session it makes: once
    paths = loader.search_paths
    assert len(paths) == len(set(paths))
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
            mine = s3.S3Store(bucket, "a")
            ok = mine._client._loader is loader and mine.get("x") == b"1"
            os.write(write, b"ok" if ok else b"no")
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    assert os.read(read, 2) == b"ok"
    os.close(read)
    first.close()
    other.close()


# -- conditional writes --------------------------------------------------------------


def test_lost_reply_of_conditional_write_is_recognized(bucket: str, proxy: FaultProxy) -> None:
    store = open_store(f"s3://{bucket}/p")
    # The first PUT of the claim reaches moto, but its reply is lost; botocore
    # resends it and gets 412 for the object the first attempt created.
    proxy.add("drop_reply", method="PUT", path_contains="/claim")
    assert store.put_if_absent("claim", b"mine") is True
    assert proxy.stats.faults["drop_reply"] == 1
    assert store.get("claim") == b"mine"
    assert store.put_if_absent("claim", b"mine") is False  # now it is a real conflict


def test_412_after_retry_for_another_writers_object_is_a_conflict(
        bucket: str, proxy: FaultProxy) -> None:
    store = open_store(f"s3://{bucket}/p")
    other = open_store(f"s3://{bucket}/p")
    assert other.put_if_absent("claim", b"same bytes") is True
    # Our first attempt fails with 500, the retry meets the other writer's
    # object: identical bytes, but not our write.
    proxy.add("500", method="PUT", path_contains="/claim")
    assert store.put_if_absent("claim", b"same bytes") is False
    assert proxy.stats.faults["500"] == 1


def test_endpoint_ignoring_conditional_writes_is_detected(
        moto_endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with FaultProxy(moto_endpoint, strip_headers=("If-None-Match",), lifetime=60) as p:
        monkeypatch.setenv("AWS_ENDPOINT_URL", p.url)
        store = open_store(f"s3://{bucket}/p")
        store.put("plain", b"unconditional writes still work")
        with pytest.raises(StoreError, match="does not enforce conditional writes"):
            store.put_if_absent("claim", b"x")
        assert not store.exists("claim")
        assert list(store.list("")) == [store.stat("plain")]  # no probe left visible


# -- reads and retries ----------------------------------------------------------------


def test_body_cut_mid_stream_is_requested_again(bucket: str, proxy: FaultProxy) -> None:
    store = open_store(f"s3://{bucket}/p")
    data = bytes(range(256)) * 4096  # 1 MiB
    store.put("obj", data)
    proxy.add("cut", method="GET", times=2)
    assert store.get("obj") == data
    proxy.add("cut", method="GET", times=1)
    assert store.get_range("obj", 1000, 300_000) == data[1000:301_000]
    assert proxy.stats.faults["cut"] == 3
    assert proxy.stats.methods["GET"] == 5  # three cut bodies, two whole ones


def test_retries_on_500_503_and_resets(bucket: str, proxy: FaultProxy) -> None:
    store = open_store(f"s3://{bucket}/p")
    proxy.add("500", method="PUT", times=2)
    proxy.add("reset", method="PUT", times=1)
    store.put("obj", b"payload")
    proxy.add("503", method="GET", times=1)
    proxy.add("reset", method="GET", times=1)
    assert store.get("obj") == b"payload"
    proxy.add("500", method="HEAD", times=1)
    info = store.stat("obj")
    assert info is not None and info.size == 7
    assert proxy.stats.faults == {"500": 3, "503": 1, "reset": 2}


def test_persistent_failure_is_a_clear_store_error(
        bucket: str, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    monkeypatch.setattr(s3, "STREAM_ATTEMPTS", 2)
    store = open_store(f"s3://{bucket}/p")
    store.put("obj", b"payload")
    proxy.add("500", times=10)
    with pytest.raises(StoreUnavailableError) as info:  # typed: it may pass later
        store.get("obj")
    message = str(info.value)
    assert "obj" in message and "InternalError" in message and store.url in message
    proxy.clear()
    proxy.add("cut", method="GET", times=10)
    with pytest.raises(StoreUnavailableError, match="read obj"):
        store.get("obj")
    proxy.clear()
    with pytest.raises(NotFoundError):
        store.get("missing")
    with pytest.raises(StoreCorruptError, match="short read"):
        store.get_range("obj", 5, 100)


def test_missing_bucket_is_a_store_error(moto_endpoint: str) -> None:
    store = open_store("s3://no-such-bucket-dsfs/p")
    with pytest.raises(StoreError, match="does not exist"):
        store.get("x")
    with pytest.raises(StoreError, match="does not exist"):
        store.put("x", b"1")


# -- large objects ----------------------------------------------------------------------


def test_multipart_upload(bucket: str, proxy: FaultProxy,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    # S3 parts are at least 5 MiB except the last, so lower the threshold, not the part size.
    monkeypatch.setattr(s3, "MULTIPART_THRESHOLD", 6 * 1024 * 1024)
    monkeypatch.setattr(s3, "MULTIPART_PART_SIZE", 5 * 1024 * 1024)
    store = open_store(f"s3://{bucket}/p")
    data = bytes(range(256)) * (48 * 1024)  # 12 MiB: three parts
    proxy.add("500", method="PUT", path_contains="partNumber=2")
    store.put("big", data)
    assert store.get("big") == data
    assert proxy.stats.methods["POST"] == 2  # create + complete
    assert store.put_if_absent("big", data) is False
    assert store.put_if_absent("big2", data) is True
    assert store.get_range("big2", 11 * 1024 * 1024, 10) == data[11 * 1024 * 1024:][:10]


# -- credentials --------------------------------------------------------------------------


def test_credentials_never_appear_in_errors(
        moto_endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    messages = []
    for url in ("s3://no-such-bucket-dsfs/p", f"s3://{bucket}/p"):
        store = open_store(url)
        for action in (lambda s: s.get("missing"), lambda s: s.put("k", b"1"),
                       lambda s: list(s.list("")), lambda s: s.get_range("k", 10, 10)):
            try:
                action(store)
            except (StoreError, NotFoundError, StoreCorruptError) as exc:
                messages.append(str(exc))
    # Nothing listens on port 9: connection errors name the endpoint, not the key.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    unreachable = s3.S3Store.from_url(f"s3://{bucket}/p")
    with pytest.raises(StoreError) as info:
        unreachable.get("x")
    messages.append(str(info.value))
    assert len(messages) >= 6
    for message in messages:
        assert DUMMY_SECRET not in message and DUMMY_KEY_ID not in message, message
    # And the store hides the credentials it resolved, should S3 ever echo them.
    assert DUMMY_SECRET not in unreachable._clean(f"boom {DUMMY_SECRET} {DUMMY_KEY_ID}")
    assert DUMMY_KEY_ID not in unreachable._clean(f"boom {DUMMY_KEY_ID}")


def test_cli_refuses_credentials_in_url_and_hides_them(run_dsfs, s3_endpoint) -> None:
    result = run_dsfs("--store", "s3://AKIAEXAMPLEKEY123456:topsecret@bucket/x", "search",
                      "--json")
    assert result.returncode == 2
    assert "topsecret" not in result.stderr + result.stdout
    assert "AWS_PROFILE" in result.stderr


def test_head_read_and_stale_multipart_cleanup(s3_store_url: str) -> None:
    from dsfs.store import open_store

    store = open_store(s3_store_url)
    store.put("obj", b"0123456789")
    assert store.get_head("obj", 4) == b"0123"
    assert store.get_head("obj", 100) == b"0123456789"
    store.put("empty", b"")
    assert store.get_head("empty", 16) == b""
    # A writer killed in the middle of a multipart upload leaves it open.
    client = store._client  # type: ignore[attr-defined]
    full = store._key("packs/ab/unfinished")  # type: ignore[attr-defined]
    client.create_multipart_upload(Bucket=store.bucket, Key=full)  # type: ignore[attr-defined]
    uploads = client.list_multipart_uploads(Bucket=store.bucket)["Uploads"]  # type: ignore[attr-defined]
    if abs(uploads[0]["Initiated"].timestamp() - time.time()) < 86400:
        # moto reports a fixed date from 2010 for every upload; real S3 the true one
        assert store.remove_stale_uploads(3600) == 0  # young: kept
    assert store.remove_stale_uploads(-60) == 1  # old enough: aborted
    assert store.remove_stale_uploads(-60) == 0
