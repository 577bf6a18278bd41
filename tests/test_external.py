"""External files (issue 13, ClearML's links): objects a version references by
URL, on a foreign S3 bucket (moto) or an HTTP server on 127.0.0.1.

Added by URL without a copy in the store, read lazily (``get``, ``get
--copy``, ``dsfs://``, read-only and writable mounts), checked by ``verify``;
an object changed or removed after the close is reported by ``verify``
(exit 6) and fails every read with an integrity error rather than returning
mixed bytes.  Manifests holding external files are store format 2; a store
holds both formats and a format-1 reader refuses only the new manifests.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_mount_support import mounted, needs_fuse, run

from dsfs.dataset import Dataset
from dsfs.errors import FormatVersionError
from dsfs.format import manifest as mf
from dsfs.format import version as fmt
from dsfs.fsspec import DsfsFileSystem
from dsfs.repository import Repository
from dsfs.store import open_store
from dsfs_cli.main import cli

# -- an HTTP server with Range and ETag, serving a folder ---------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    root = ""
    etags = True
    #: answer every n-th ranged GET with 503 (0: never); GETs are counted in ``served``
    flaky = 0
    served: list[str]

    def _file(self) -> str | None:
        path = os.path.join(self.root, self.path.split("?", 1)[0].lstrip("/"))
        return path if os.path.isfile(path) else None

    def _start(self, path: str, status: int, length: int, extra: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        if self.etags:
            st = os.stat(path)
            self.send_header("ETag", f'"{st.st_size:x}-{st.st_mtime_ns:x}"')
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
        path = self._file()
        if path is None:
            self.send_error(404)
            return
        self._start(path, 200, os.path.getsize(path), {})

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self._file()
        if path is None:
            self.send_error(404)
            return
        with open(path, "rb") as f:
            data = f.read()
        wanted = self.headers.get("Range")
        self.served.append(self.path)
        if wanted and self.flaky and len(self.served) % self.flaky == 0:
            self.send_error(503)
            return
        if wanted:
            first, last = (int(x) for x in wanted.split("=", 1)[1].split("-"))
            last = min(last, len(data) - 1)
            part = data[first:last + 1]
            self._start(path, 206, len(part),
                        {"Content-Range": f"bytes {first}-{last}/{len(data)}"})
            self.wfile.write(part)
        else:
            self._start(path, 200, len(data), {})
            self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


#: The paths of the GETs each running server answered, by its URL.
SERVED: dict[str, list[str]] = {}


@contextlib.contextmanager
def http_server(root: Path, etags: bool = True, flaky: int = 0) -> Iterator[str]:
    served: list[str] = []
    handler = type("Handler", (_Handler,), {"root": str(root), "etags": etags,
                                            "flaky": flaky, "served": served})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    SERVED[url] = served
    try:
        yield url
    finally:
        del SERVED[url]
        server.shutdown()
        server.server_close()


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "www"
    root.mkdir()
    with http_server(root) as url:
        yield root, url


@pytest.fixture
def foreign(s3_endpoint: str | None) -> Iterator[tuple[Any, str]]:
    """A second bucket, not the store's: where the external objects live."""
    if s3_endpoint is None:
        pytest.skip("needs the local moto server")
    from s3_support import make_client, new_bucket

    client = make_client(s3_endpoint)
    yield client, new_bucket(client)
    client.close()


@pytest.fixture
def local_store(tmp_path: Path, dsfs_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
                ) -> str:
    url = str(tmp_path / "store")
    monkeypatch.setenv("DSFS_STORE", url)
    return url


def invoke(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == code, (args, result.stdout, result.stderr)
    return result.stdout + result.stderr


def store_bytes(store_url: str) -> int:
    return sum(info.size for info in open_store(store_url).list(""))


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


# -- adding and reading ---------------------------------------------------------------------


def test_https_objects_are_referenced_and_read_lazily(web, local_store: str, tmp_path: Path
                                                       ) -> None:
    root, url = web
    rng = random.Random(13)
    big = rng.randbytes(9 * 1024 * 1024 + 5)  # two chunks
    (root / "data").mkdir()
    (root / "data" / "big.bin").write_bytes(big)
    (root / "labels.csv").write_bytes(b"a,b\n1,2\n")
    src = tmp_path / "src"
    src.mkdir()
    (src / "local.txt").write_bytes(b"held in the store\n")

    ds = Dataset.create(dataset_project="web", dataset_name="mixed")
    ds.add_files(str(src))
    assert ds.add_external_files(source_url=f"{url}/data/big.bin", dataset_path="remote") == 1
    # a scheme in capitals is recorded in lower case
    assert ds.add_external_files([f"{url}/labels.csv".replace("http:", "HTTP:")]) == 1
    ds.upload()
    ds.finalize()
    assert store_bytes(local_store) < 64 * 1024  # the objects were not copied

    want = {"local.txt": b"held in the store\n", "remote/big.bin": big,
            "labels.csv": b"a,b\n1,2\n"}
    got = Dataset.get(dataset_project="web", dataset_name="mixed")
    assert sorted(got.list_files()) == sorted(want)
    assert sorted(got.link_entries_dict) == ["labels.csv", "remote/big.bin"]
    assert sorted(got.file_entries_dict) == ["local.txt"]
    assert files_of(Path(got.get_local_copy())) == want
    invoke("get", "--copy", str(tmp_path / "copy"), "web/mixed")
    assert files_of(tmp_path / "copy") == want
    fs = fsspec.filesystem("dsfs") if "dsfs" in fsspec.available_protocols() \
        else DsfsFileSystem()
    with fs.open("web/mixed/remote/big.bin", "rb") as f:
        f.seek(8 * 1024 * 1024 - 3)
        assert f.read(10) == big[8 * 1024 * 1024 - 3:8 * 1024 * 1024 + 7]
    assert "ok:" in invoke("verify", "web/mixed")
    rows = {r["path"]: r for r in json.loads(invoke("list", "web/mixed", "--json"))}
    assert rows["labels.csv"]["url"] == f"{url}/labels.csv" and "url" not in rows["local.txt"]
    # the manifest names the URL and the ETag, and is format 2
    repo = Repository.open(local_store)
    data = repo.store.get(mf.manifest_key(got.id))
    assert int.from_bytes(data[8:10], "little") == fmt.EXTERNAL_FORMAT
    entries = {e.path: e for e in mf.iter_entries(data)}
    assert entries["remote/big.bin"].url == f"{url}/data/big.bin"
    assert entries["remote/big.bin"].etag
    assert entries["local.txt"].url is None


def test_the_web_ui_names_an_external_file_by_its_url(web, local_store: str) -> None:
    """``dsfs ui``'s file page shows where an external file lives, escaped,
    without the query string (it may hold a signature); a stored file has
    no such row."""
    from test_ui import Client

    from dsfs.ui.app import App

    root, url = web
    (root / "a<b>.bin").write_bytes(b"remote bytes")
    (root / "plain.bin").write_bytes(b"more")
    ds = Dataset.create(dataset_project="web", dataset_name="ui")
    ds.add_external_files([f"{url}/a<b>.bin?sig=TOPSECRET", f"{url}/plain.bin"])
    ds.upload()
    ds.finalize()
    client = Client(App(Repository.open(local_store)))
    page = client.get(f"/v/{ds.id}/file", "path=a%3Cb%3E.bin")
    assert page.status == 200, page.text
    assert f"<code>{url}/a&lt;b&gt;.bin</code>" in page.text
    assert "TOPSECRET" not in page.text and "<b>" not in page.text
    assert "external object" in client.get(f"/v/{ds.id}/file", "path=plain.bin").text


def test_s3_prefix_with_wildcards_and_recursion(foreign, store_url: str, tmp_path: Path
                                                 ) -> None:
    client, bucket = foreign
    objects = {"shots/a.txt": b"a" * 10, "shots/sub/b.bin": b"b" * 20_000,
               "shots/sub/deep/c.txt": b"c", "shots/d.csv": b"d,e\n", "other/x.txt": b"x"}
    for key, data in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=data)
    invoke("create", "-p", "s3", "-n", "links")
    out = invoke("add", f"s3://{bucket}/shots/", "--wildcard", "*.txt", "--wildcard", "*.bin")
    assert "added 3" in out
    invoke("add", f"s3://{bucket}/shots", "--dataset-folder", "flat", "--wildcard", "*.csv")
    invoke("close")
    ds = Dataset.get(dataset_project="s3", dataset_name="links")
    assert sorted(ds.list_files()) == ["a.txt", "flat/d.csv", "sub/b.bin", "sub/deep/c.txt"]
    copy = Path(ds.get_local_copy())
    assert files_of(copy) == {"a.txt": b"a" * 10, "sub/b.bin": b"b" * 20_000,
                              "sub/deep/c.txt": b"c", "flat/d.csv": b"d,e\n"}
    # recursive=False keeps the folder's own objects; one object by its key
    child = Dataset.create("s3", "links", parent_datasets=[ds.id])
    assert child.add_external_files(f"s3://{bucket}/shots/", dataset_path="top",
                                    recursive=False) == 2
    assert child.add_external_files(f"s3://{bucket}/other/x.txt", dataset_path="one") == 1
    child.finalize()
    assert sorted(Dataset.get(dataset_id=child.id).list_files()) == [
        "a.txt", "flat/d.csv", "one/x.txt", "sub/b.bin", "sub/deep/c.txt",
        "top/a.txt", "top/d.csv"]
    diff = invoke("diff", f"s3/links@{ds.header.version}", "s3/links")
    assert "top/a.txt" in diff and "one/x.txt" in diff
    # ClearML removes external files by their links too: a glob or a folder URL
    last = Dataset.create("s3", "links", parent_datasets=[child.id])
    assert last.remove_files(f"s3://{bucket}/shots/sub") == 2
    assert last.remove_files(f"s3://{bucket}/*.csv") == 2
    assert last.remove_files("top/a.txt") == 1
    last.finalize()
    assert sorted(Dataset.get(dataset_id=last.id).list_files()) == ["a.txt", "one/x.txt"]


def test_a_changed_or_removed_object_is_reported_and_never_read(
        foreign, web, local_store: str, tmp_path: Path) -> None:
    client, bucket = foreign
    root, url = web
    client.put_object(Bucket=bucket, Key="k/one.bin", Body=b"1" * 5000)
    client.put_object(Bucket=bucket, Key="k/two.bin", Body=b"2" * 5000)
    (root / "page.txt").write_bytes(b"page one\n")
    invoke("create", "-p", "p", "-n", "n")
    # a query string (a signature, say) reaches the server but no message
    invoke("add", f"s3://{bucket}/k/", f"{url}/page.txt?sig=S3CRETSIG")
    invoke("close")
    assert "ok:" in invoke("verify", "p/n")

    # same size, other bytes: the ETag tells
    client.put_object(Bucket=bucket, Key="k/one.bin", Body=b"X" * 5000)
    client.delete_object(Bucket=bucket, Key="k/two.bin")
    (root / "page.txt").write_bytes(b"page two\n")
    err = invoke("verify", "p/n", code=6)
    assert "one.bin: external object" in err and "changed" in err
    assert "two.bin: external object" in err and "is gone" in err
    assert "page.txt: external object" in err and "S3CRETSIG" not in err
    report = json.loads(invoke("verify", "p/n", "--json", code=6))
    assert len(report["problems"]) == 3

    err = invoke("get", "--copy", str(tmp_path / "copy"), "p/n", code=6)
    assert "changed since it was added" in err or "is gone" in err
    assert "S3CRETSIG" not in err
    assert not (tmp_path / "copy").exists()  # nothing left of a failed copy
    with pytest.raises(Exception, match="changed since it was added|is gone"):
        Dataset.get(dataset_project="p", dataset_name="n").get_local_copy()

    # the same bytes back: S3's ETag (an MD5) matches again, the web server's
    # (size and mtime) does not, so verify names page.txt, but reads, which
    # check digests, succeed
    (root / "page.txt").write_bytes(b"page one\n")
    client.put_object(Bucket=bucket, Key="k/one.bin", Body=b"1" * 5000)
    client.put_object(Bucket=bucket, Key="k/two.bin", Body=b"2" * 5000)
    report = json.loads(invoke("verify", "p/n", "--json", code=6))
    assert [p.split(":")[0] for p in report["problems"]] == ["page.txt"]
    invoke("get", "--copy", str(tmp_path / "copy"), "p/n")
    assert files_of(tmp_path / "copy") == {"one.bin": b"1" * 5000, "two.bin": b"2" * 5000,
                                           "page.txt": b"page one\n"}


def test_objects_without_etag_are_verified_by_their_bytes(tmp_path: Path, local_store: str
                                                          ) -> None:
    root = tmp_path / "plain"
    root.mkdir()
    (root / "f.bin").write_bytes(b"0123456789" * 100)
    with http_server(root, etags=False) as url:
        invoke("create", "-p", "p", "-n", "plain")
        invoke("add", f"{url}/f.bin")
        invoke("close")
        assert "ok:" in invoke("verify", "p/plain")
        (root / "f.bin").write_bytes(b"9123456789" * 100)  # same size, no ETag
        err = invoke("verify", "p/plain", code=6)
        assert "f.bin" in err and "changed since it was added" in err


def test_http_reads_are_retried_when_the_server_fails_now_and_then(tmp_path: Path,
                                                                   local_store: str) -> None:
    root = tmp_path / "flaky"
    root.mkdir()
    rng = random.Random(8)
    files = {f"f{i}.bin": rng.randbytes(rng.randrange(1, 40_000)) for i in range(6)}
    for name, data in files.items():
        (root / name).write_bytes(data)
    with http_server(root, flaky=2) as url:
        invoke("create", "-p", "p", "-n", "flaky")
        invoke("add", *(f"{url}/{name}" for name in files))
        invoke("close")  # whole-object GETs: never failed
        invoke("get", "--copy", str(tmp_path / "copy"), "p/flaky")
    assert files_of(tmp_path / "copy") == files


def test_close_reads_each_object_once_in_threads_and_remembers_it(tmp_path: Path,
                                                                    local_store: str) -> None:
    root = tmp_path / "count"
    root.mkdir()
    rng = random.Random(3)
    files = {f"d{i % 3}/f{i}.bin": rng.randbytes(rng.randrange(0, 30_000)) for i in range(40)}
    for rel, data in files.items():
        (root / rel).parent.mkdir(exist_ok=True)
        (root / rel).write_bytes(data)
    src = tmp_path / "src"
    src.mkdir()
    (src / "f0.bin").write_bytes(b"local wins")
    with http_server(root) as url:
        served = SERVED[url]
        ds = Dataset.create("c", "n")
        ds.add_external_files([f"{url}/{rel}" for rel in files], dataset_path="ext")
        ds.add_files(src / "f0.bin", dataset_path="ext")  # replaces an external file
        ds.add_external_files(f"{url}/d1/f1.bin", dataset_path="again")
        ds.remove_files("ext/f5.bin")
        ds.upload()
        # each object read once (f0 and f5 never: replaced or removed before
        # close; f1 is added twice and two threads may race for it)
        assert len(files) - 2 <= len(served) <= len(files) - 1
        reads = len(served)
        ds.finalize()  # after upload(): nothing is read again
        assert len(served) == reads
        want = {f"ext/{rel.rsplit('/', 1)[1]}": data for rel, data in files.items()}
        want["ext/f0.bin"] = b"local wins"
        want["again/f1.bin"] = files["d1/f1.bin"]
        del want["ext/f5.bin"]
        got = Dataset.get(dataset_id=ds.id)
        assert files_of(Path(got.get_local_copy())) == want
        assert sorted(got.link_entries_dict) == sorted(set(want) - {"ext/f0.bin"})
        # the same objects in a later version: remembered, not read again
        before = len(served)
        child = Dataset.create("c", "n", parent_datasets=[ds.id])
        child.add_external_files([f"{url}/{rel}" for rel in files], dataset_path="copy")
        child.finalize()
        assert sorted(served[before:]) == ["/d0/f0.bin", "/d2/f5.bin"]  # read for the first time
        assert files_of(Path(Dataset.get(dataset_id=child.id).get_local_copy()))[
            "copy/f7.bin"] == files["d1/f7.bin"]


def test_an_object_gone_before_close_fails_it_and_nothing_is_published(
        web, local_store: str) -> None:
    root, url = web
    for i in range(20):
        (root / f"o{i}.bin").write_bytes(bytes([i]) * 1000)
    invoke("create", "-p", "p", "-n", "gone")
    invoke("add", *(f"{url}/o{i}.bin" for i in range(20)))
    (root / "o13.bin").unlink()
    err = invoke("close", code=10)
    assert "o13.bin" in err and "is gone" in err
    assert "Traceback" not in err
    invoke("get", "p/gone", code=3)  # nothing published
    (root / "o13.bin").write_bytes(bytes([13]) * 1000)
    invoke("close")  # the draft is intact: closing again works
    assert len(Dataset.get(dataset_project="p", dataset_name="gone").list_files()) == 20


def test_object_keys_that_escape_the_folder_are_refused(foreign, local_store: str) -> None:
    client, bucket = foreign
    client.put_object(Bucket=bucket, Key="d/ok.txt", Body=b"ok")
    client.put_object(Bucket=bucket, Key="d/../evil.txt", Body=b"evil")
    invoke("create", "-p", "p", "-n", "keys")
    err = invoke("add", f"s3://{bucket}/d/", code=10)
    assert "not a safe relative path" in err
    invoke("add", f"s3://{bucket}/d/ok.txt")
    invoke("close")
    assert Dataset.get(dataset_project="p", dataset_name="keys").list_files() == ["ok.txt"]


def test_bad_urls_are_refused_with_one_line(web, local_store: str, run_dsfs) -> None:
    _root, url = web
    run_dsfs("create", "-p", "p", "-n", "n", check=True)
    for bad in ("ftp://host/file", "gs://bucket/key", f"{url}/missing.bin"):
        result = run_dsfs("add", bad)
        assert result.returncode == 10, result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    secret = "s3cr3tPassw0rd"
    result = run_dsfs("add", f"https://user:{secret}@example.com/x")
    assert result.returncode == 10 and secret not in result.stderr + result.stdout
    assert "credentials" in result.stderr
    with pytest.raises(Exception, match="not a URL"):
        Dataset.create("p", "m").add_external_files("/local/path")


def test_squash_delete_and_gc_keep_external_files_readable(web, local_store: str,
                                                           tmp_path: Path) -> None:
    root, url = web
    (root / "one.bin").write_bytes(b"1" * 3000)
    (root / "two.bin").write_bytes(b"2" * 3000)
    src = tmp_path / "src"
    src.mkdir()
    (src / "local.txt").write_bytes(b"local")
    first = Dataset.create("g", "a")
    first.add_files(src)
    first.add_external_files(f"{url}/one.bin")
    first.finalize()
    second = Dataset.create("g", "a", parent_datasets=[first.id])
    second.add_external_files(f"{url}/two.bin", dataset_path="more")
    second.finalize()
    invoke("squash", first.id, second.id, "-p", "g", "-n", "flat")
    invoke("delete", "--project", "g", "--name", "a", "--entire-dataset", "--yes")
    invoke("gc", "--grace", "0s")
    flat = Dataset.get(dataset_project="g", dataset_name="flat")
    assert sorted(flat.link_entries_dict) == ["more/two.bin", "one.bin"]
    assert files_of(Path(flat.get_local_copy())) == {
        "local.txt": b"local", "one.bin": b"1" * 3000, "more/two.bin": b"2" * 3000}
    assert "ok:" in invoke("verify", "g/flat")


# -- mounts -----------------------------------------------------------------------------------


@needs_fuse
@pytest.mark.parametrize("writable", [False, True])
def test_mounts_read_external_files_and_fail_changed_ones_with_eio(
        web, local_store: str, dsfs_env: dict[str, str], tmp_path: Path, writable: bool) -> None:
    root, url = web
    rng = random.Random(5)
    keep, change = rng.randbytes(300_000), rng.randbytes(70_000)
    (root / "keep.bin").write_bytes(keep)
    (root / "change.bin").write_bytes(change)
    ds = Dataset.create("m", "n")
    ds.add_external_files([f"{url}/keep.bin", f"{url}/change.bin"], dataset_path="ext")
    ds.finalize()
    (root / "change.bin").write_bytes(rng.randbytes(70_000))
    mnt = tmp_path / "mnt"
    extra = ("--writable",) if writable else ()
    env = {**dsfs_env, "DSFS_STORE": local_store}
    with mounted(env, "m/n", mnt, *extra):
        assert sorted(os.listdir(mnt / "ext")) == ["change.bin", "keep.bin"]
        assert (mnt / "ext" / "keep.bin").read_bytes() == keep
        assert os.stat(mnt / "ext" / "change.bin").st_size == 70_000
        with pytest.raises(OSError) as caught:
            (mnt / "ext" / "change.bin").read_bytes()
        assert caught.value.errno == 5  # EIO
        if writable:  # an edit of the external file makes it a file of the store
            with open(mnt / "ext" / "keep.bin", "ab") as f:
                f.write(b"+")
            (mnt / "new.txt").write_bytes(b"new")
            run(env, "commit", str(mnt), "-m", "edit", check=True)
    if writable:
        child = Dataset.get(dataset_project="m", dataset_name="n")
        assert child.id != ds.id
        assert sorted(child.link_entries_dict) == ["ext/change.bin"]
        assert sorted(child.file_entries_dict) == ["ext/keep.bin", "new.txt"]
        (root / "keep.bin").unlink()  # the edited copy no longer needs the object
        (root / "change.bin").write_bytes(change)  # the object as it was added
        assert files_of(Path(child.get_local_copy())) == {
            "ext/keep.bin": keep + b"+", "ext/change.bin": change, "new.txt": b"new"}


# -- the format -------------------------------------------------------------------------------


def test_a_store_holds_both_formats_and_an_old_reader_refuses_only_the_new(
        web, local_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, url = web
    (root / "x.bin").write_bytes(b"external")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"local")
    old = Dataset.create("f", "n")
    old.add_files(str(src))
    old.finalize()
    new = Dataset.create("f", "n", parent_datasets=[old.id])
    new.add_external_files(f"{url}/x.bin")
    new.finalize()
    repo = Repository.open(local_store)
    raw_old = repo.store.get(mf.manifest_key(old.id))
    raw_new = repo.store.get(mf.manifest_key(new.id))
    assert int.from_bytes(raw_old[8:10], "little") == fmt.BASE_FORMAT == 1
    assert int.from_bytes(raw_new[8:10], "little") == fmt.EXTERNAL_FORMAT == 2
    assert repo.store.read_config()["format_version"] == 1  # type: ignore[index]
    assert files_of(Path(Dataset.get(dataset_id=new.id).get_local_copy())) == {
        "a.txt": b"local", "x.bin": b"external"}
    # a dsfs that reads format 1 at most
    monkeypatch.setattr(fmt, "FORMAT_VERSION", 1)
    assert mf.decode_header(raw_old).id == old.id
    with pytest.raises(FormatVersionError, match="format 2"):
        mf.decode_header(raw_new)


# -- a random mix through add, close, get, list and diff ---------------------------------------

_names = st.sampled_from(["a", "b", "c", "d/e", "d/f", "g/h/i"])
_files = st.dictionaries(_names, st.tuples(st.booleans(), st.binary(max_size=3000)),
                         min_size=1, max_size=5)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rounds=st.lists(_files, min_size=1, max_size=3))
def test_random_mixes_of_local_and_external_files(web, local_store: str, tmp_path: Path,
                                                  rounds) -> None:
    root, url = web
    name = f"n{random.getrandbits(40):x}"
    model: dict[str, bytes] = {}
    previous = None
    for n, files in enumerate(rounds):
        before = dict(model)
        ds = Dataset.create("mix", name, parent_datasets=[previous] if previous else None)
        for path, (outside, content) in files.items():
            if any(p.startswith(path + "/") or path.startswith(p + "/") for p in model):
                continue  # a file where a directory is (or the reverse): not this test's case
            folder = path.rpartition("/")[0]
            if outside:
                where = root / f"r{n}-{name}" / path
                where.parent.mkdir(parents=True, exist_ok=True)
                where.write_bytes(content)
                ds.add_external_files(f"{url}/r{n}-{name}/{path}", dataset_path=folder)
            else:
                where = tmp_path / f"src-{name}-{n}" / path
                where.parent.mkdir(parents=True, exist_ok=True)
                where.write_bytes(content)
                ds.add_files(str(where), dataset_path=folder)
            model[path] = content
        ds.finalize()
        got = Dataset.get(dataset_id=ds.id)
        assert sorted(got.list_files()) == sorted(model)
        assert files_of(Path(got.get_local_copy())) == model
        assert "ok:" in invoke("verify", ds.id)
        if previous:
            rows = invoke("diff", previous, ds.id).splitlines()
            named = {row.split()[1] for row in rows if row[:1] in "+-M" and len(row.split()) > 1}
            for path, content in model.items():
                assert (path in named) == (before.get(path) != content), (path, rows)
        previous = ds.id


# -- the entry encodings ----------------------------------------------------------------------

_urls = st.builds(lambda scheme, host, path: f"{scheme}://{host}/{path}",
                  st.sampled_from(["s3", "https", "http"]),
                  st.from_regex(r"[a-z0-9][a-z0-9.-]{1,20}", fullmatch=True),
                  st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40))


@settings(max_examples=60, deadline=None)
@given(url=_urls, etag=st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40),
       sizes=st.lists(st.integers(1, 1 << 23), max_size=3))
def test_external_entries_round_trip_through_json_and_tree_records(url: str, etag: str,
                                                                     sizes: list[int]) -> None:
    from dsfs.engine.treeindex import Decoder, encode_entry
    from dsfs.format import rawentries

    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    chunks = tuple(mf.ChunkRef(f"xxh3_128:{i:032x}", url, o, n)
                   for i, (o, n) in enumerate(zip(offsets, sizes, strict=True)))
    entry = mf.Entry("a/b.bin", mf.FILE, sum(sizes), 0o100644, 7, "xxh3_128:" + "f" * 32,
                     chunks, url=url, etag=etag)
    line = mf.entry_line(entry)
    assert mf.entry_from_json(json.loads(line)) == entry
    raw = rawentries._decode(line)[0]
    rawentries.check_entry(raw)
    assert rawentries.external_trailer(raw) == f"{url}\n{etag}".encode()
    assert Decoder().decode("a/b.bin", encode_entry(entry)) == entry
    header = mf.Header(id="ab" * 16, project="p", name="n", version="1")
    assert mf.encode(header, [entry])[8] == fmt.EXTERNAL_FORMAT
    assert mf.encode(header, [mf.Entry("x", mf.DIR, 0, 0o40755, 0)])[8] == fmt.BASE_FORMAT


@pytest.mark.parametrize("change", [
    {"u": {"url": "ftp://h/x", "etag": ""}},                      # scheme
    {"u": {"url": "https://h/x\nevil", "etag": ""}},              # newline
    {"u": {"etag": ""}},                                          # no URL
    {"c": [["xxh3_128:" + "1" * 32, "ab" * 16, 0, 5]]},           # a pack id with u
    {"u": None, "c": [["xxh3_128:" + "1" * 32, "", 0, 5]]},        # "" without u
])
def test_malformed_external_entries_are_refused_by_both_decoders(change: dict) -> None:
    from dsfs.errors import IntegrityError
    from dsfs.format import rawentries

    obj = {"p": "f", "t": "f", "m": 33188, "mt": 1, "s": 5, "h": "xxh3_128:" + "1" * 32,
           "c": [["xxh3_128:" + "1" * 32, "", 0, 5]], "u": {"url": "https://h/x", "etag": ""}}
    obj.update(change)
    if obj.get("u") is None:
        obj.pop("u")
    with pytest.raises(IntegrityError):
        mf.entry_from_json(obj)
    with pytest.raises(IntegrityError):
        rawentries.check_entry(rawentries._decode(json.dumps(obj).encode())[0])
