"""An S3 endpoint for the tests: moto in server mode on 127.0.0.1, or a real S3.

By default ``s3_endpoint`` starts moto's HTTP server (not its in-process mock:
requests go through botocore, urllib3 and a real socket, as they do against
AWS) in a child process on a free port of 127.0.0.1, and stops it at the end
of the session.  The child also exits when its stdin closes, so a killed test
run leaves no server behind.  The test process gets dummy credentials,
``AWS_ENDPOINT_URL`` pointing at the server, and no shared config files, so
nothing from the developer's own AWS setup is used.

Set ``DSFS_TEST_S3_URL=s3://BUCKET/PREFIX`` to run the same tests against any
other S3 instead (AWS, MinIO, Ceph ...): credentials, region and endpoint then
come from the usual AWS variables/profile, the bucket must exist, and each
test works under a fresh sub-prefix of PREFIX that it deletes afterwards.

Run as a script (``python s3_support.py serve``) this module is the server
child: it prints its port and serves until stdin closes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

TEST_URL_VAR = "DSFS_TEST_S3_URL"
DUMMY_KEY_ID = "AKIADSFSTESTKEY00001"
DUMMY_SECRET = "dsfs-test-secret/NOT+REAL+0123456789abcdef"
REGION = "us-east-1"


def s3_available() -> bool:
    """Whether S3 tests can run: a real S3 is named, or moto's server is installed."""
    if os.environ.get(TEST_URL_VAR):
        return True
    return all(importlib.util.find_spec(m) is not None
               for m in ("boto3", "moto", "flask", "werkzeug"))


def real_s3_url() -> str | None:
    return os.environ.get(TEST_URL_VAR) or None


# -- the moto server child ---------------------------------------------------------


def _serve() -> None:
    """Child process: moto's threaded server on a free port until stdin closes."""
    from moto.s3.responses import S3Response
    from moto.server import ThreadedMotoServer

    # moto checks "If-None-Match: *" and then writes without a lock, so two
    # concurrent conditional writes can both succeed; real S3 is atomic here.
    # Serialize conditional requests so the server keeps S3's promise.
    original = S3Response._key_response
    lock = threading.Lock()

    def key_response(self: Any, request: Any, full_url: str) -> Any:
        if request.headers.get("If-None-Match"):
            with lock:
                return original(self, request, full_url)
        return original(self, request, full_url)

    S3Response._key_response = key_response  # type: ignore[method-assign]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    print(server.get_host_and_port()[1], flush=True)
    sys.stdin.read()  # EOF: the parent is done (or gone)
    server.stop()


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """Start the moto server child; yield its endpoint URL; stop it."""
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "serve"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"moto server did not start (exit code {proc.poll()})")
        yield f"http://127.0.0.1:{int(line)}"
    finally:
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def aws_environment(endpoint: str) -> dict[str, str]:
    """Variables that point boto3 at ``endpoint`` with dummy credentials only."""
    return {
        "AWS_ACCESS_KEY_ID": DUMMY_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


_ISOLATE_UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3",
                  "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str | None]:
    """The endpoint URL of the test S3 (None: a real S3 from the user's own config)."""
    if real_s3_url():
        yield None
        return
    with moto_server() as endpoint, pytest.MonkeyPatch.context() as mp:
        for name in _ISOLATE_UNSET:
            mp.delenv(name, raising=False)
        for name, value in aws_environment(endpoint).items():
            mp.setenv(name, value)
        yield endpoint


@pytest.fixture
def moto_endpoint(s3_endpoint: str | None) -> str:
    """The local moto server's endpoint, for tests that put a fault proxy in
    front of it (skipped against a real S3)."""
    if s3_endpoint is None:
        pytest.skip("needs the local moto server (fault injection)")
    return s3_endpoint


def make_client(endpoint: str | None = None) -> Any:
    """A plain boto3 client on the test S3 (for tests that look behind the store)."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint or os.environ.get("AWS_ENDPOINT_URL"))


def new_bucket(client: Any) -> str:
    name = f"dsfs-test-{secrets.token_hex(6)}"
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture(name="bucket")
def moto_bucket(moto_endpoint: str) -> str:
    """A new, empty bucket on the local moto server (its name)."""
    client = make_client(moto_endpoint)
    name = new_bucket(client)
    client.close()
    return name


@pytest.fixture(name="proxy")
def moto_proxy(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fault-free ``fault_proxy.FaultProxy`` in front of moto; stores opened
    in the test go through it (tests set its faults)."""
    from fault_proxy import FaultProxy

    with FaultProxy(moto_endpoint, lifetime=120) as p:
        monkeypatch.setenv("AWS_ENDPOINT_URL", p.url)
        yield p


def _clean_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:60].strip("-") or "t"


@pytest.fixture
def s3_store_url(s3_endpoint: str | None, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty ``s3://bucket/prefix`` (a new bucket on moto)."""
    base = real_s3_url()
    if base is None:
        client = make_client(s3_endpoint)
        yield f"s3://{new_bucket(client)}/store"
        client.close()
        return
    url = f"{base.rstrip('/')}/{_clean_name(request.node.name)}-{secrets.token_hex(4)}"
    yield url
    bucket, _, prefix = url[len("s3://"):].partition("/")
    client = make_client()
    with contextlib.suppress(Exception):  # best effort: never hide the test's own result
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                 Prefix=prefix + "/")
        for page in pages:
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    client.close()


if __name__ == "__main__" and sys.argv[1:] == ["serve"]:
    _serve()
