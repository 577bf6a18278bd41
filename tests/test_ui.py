"""The web UI's pages, through a WSGI test client, on the local store and on S3.

One demo history over the Python standard library (``tests/ui_demo.py``:
several parents, a squash, a version deleted with --force, files whose names
are HTML) is built per store kind and shared by the tests of this module;
nothing here writes to it, and ``test_pages_change_nothing`` checks that.
"""

from __future__ import annotations

import html
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from conftest import STORE_KINDS
from ui_demo import HOSTILE_PATH, build, png

from dsfs.engine import treewalk
from dsfs.repository import Repository
from dsfs.store import open_store
from dsfs.ui import model, walk
from dsfs.ui.app import App
from dsfs_cli.main import cli

DSFS = Path(sys.executable).with_name("dsfs")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def text(self) -> str:
        return self.raw.decode("utf-8")


class Client:
    """Calls the WSGI application in-process, as a server would."""

    def __init__(self, app: App) -> None:
        self.app = app

    def request(self, method: str, path: str, query: str = "", host: str | None = None
                ) -> Reply:
        got: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]]) -> None:
            got["status"], got["headers"] = int(status.split()[0]), dict(headers)

        environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query}
        if host:
            environ["HTTP_HOST"] = host
        body = b"".join(self.app(environ, start_response))
        return Reply(got["status"], got["headers"], body)

    def get(self, path: str, query: str = "") -> Reply:
        return self.request("GET", path, query)


@dataclass
class Demo:
    env: dict[str, str]
    ids: dict[str, str]
    store_url: str

    def repo(self) -> Repository:
        return Repository(open_store(self.store_url), Path(self.env["DSFS_CACHE_DIR"]))

    def client(self) -> Client:
        return Client(App(self.repo()))


@pytest.fixture(scope="module", params=STORE_KINDS)
def demo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Demo]:
    base = tmp_path_factory.mktemp(f"ui-{request.param}")
    if request.param == "local":
        url = str(base / "store")
    else:
        from s3_support import make_client, new_bucket

        endpoint = request.getfixturevalue("s3_endpoint")
        client = make_client(endpoint)
        url = f"s3://{new_bucket(client)}/store"
        client.close()
    env = {"DSFS_DATA_DIR": str(base / "data"), "DSFS_CACHE_DIR": str(base / "cache"),
           "DSFS_STORE": url}

    def dsfs(*args: str) -> str:
        # the CLI in this process (the same code as the dsfs command, without
        # a Python start-up per command)
        result = CliRunner().invoke(cli, ["-q", *args], env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout

    ids = build(dsfs, base / "work", hostile=True)
    yield Demo(env, ids, url)


def local_only(demo: Demo) -> None:
    """Checks that do not depend on the store run on the local one only (each
    S3 page costs a few round trips to moto; the suite has a time budget)."""
    if demo.store_url.startswith("s3://"):
        pytest.skip("store-independent: checked on the local store")


def dataset_path() -> str:
    return "/ds/" + model.dataset_key("demo", "stdlib")


def test_index_lists_and_searches_datasets(demo: Demo) -> None:
    client = demo.client()
    page = client.get("/")
    assert page.status == 200, page.text
    assert f'href="{dataset_path()}"' in page.text
    assert "stdlib" in page.text and "demo" in page.text
    for query, found in (("stdlib", True), ("tag:best", True), ("DEMO std", True),
                         ("tag:nope", False), ("cats", False)):
        reply = client.get("/", f"q={query.replace(' ', '+')}")
        assert reply.status == 200
        assert (f'href="{dataset_path()}"' in reply.text) is found, query


def test_lineage_graph_marks_parents_squash_and_deleted(demo: Demo) -> None:
    page = demo.client().get(dataset_path())
    assert page.status == 200, page.text
    svg = re.search(r'<svg[^>]*class="lineage".*?</svg>', page.text, re.S)
    assert svg is not None
    found = re.findall(r'<g class="(node[^"]*)" data-id="([0-9a-f]{32})"', svg.group(0))
    by_id = {vid: classes for classes, vid in found}
    assert set(by_id) == set(demo.ids.values())
    ids = demo.ids
    assert "node-deleted" in by_id[ids["1.0.2"]]
    assert "node-squash" in by_id[ids["1.0.5"]]
    assert all("node-ok" in by_id[ids[v]] for v in ("1.0.0", "1.0.1", "1.0.3", "1.0.4"))
    # a link to every version's page, the deleted one too
    for vid in ids.values():
        assert f'<a href="/v/{vid}"><g class="node' in svg.group(0)
    edges = re.findall(r'class="edge edge-(parent|squash)"', svg.group(0))
    # 1.0.1, 1.0.2 <- 1.0.0; 1.0.3 <- 1.0.1 and 1.0.2; 1.0.4 <- 1.0.3; 1.0.5 squashes 1.0.4
    assert edges.count("parent") == 5 and edges.count("squash") == 1
    assert "[deleted]" in svg.group(0)


def test_version_page_header_changes_contents_stats_previews(demo: Demo) -> None:
    vid = demo.ids["1.0.1"]
    page = demo.client().get(f"/v/{vid}")
    assert page.status == 200, page.text
    text = page.text
    assert vid in text and "data folder added, wsgiref removed" in text and ">best<" in text
    changes = re.search(r'<table class="changes">.*?</table>', text, re.S).group(0)  # type: ignore[union-attr]
    assert re.search(r'class="added".*data/cats\.csv', changes)
    assert re.search(r'class="removed".*wsgiref/', changes)
    assert re.search(r'class="modified".*json/__init__\.py', changes)
    contents = re.search(r'<table class="contents">.*?</table>', text, re.S).group(0)  # type: ignore[union-attr]
    for name in ("data/", "json/", "email/", "NOTES.md"):
        if name == "NOTES.md":
            continue  # added in 1.0.2 and 1.0.3 only
        assert f">{name}<" in contents
    assert "wsgiref/" not in contents
    # statistics: three SVG plots, the folder plot naming top-level folders
    assert text.count('<svg xmlns="http://www.w3.org/2000/svg" class="plot') == 3
    assert re.search(r'bytes and files per top-level folder.*>data<', text, re.S)
    assert re.search(r'>[0-9.]+ KiB · 1[0-9] files<', text)  # data/ holds 12 files
    assert ">.py<" in text and ">.png<" in text
    # previews of the first files of each kind, read through the cache
    assert re.search(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+"', text)
    assert 'class="preview preview-csv"' in text and "<td>cat0</td>" in text
    assert 'class="preview preview-json"' in text and "&#34;classes&#34;: [" in text


def test_image_preview_is_the_stored_image(demo: Demo) -> None:
    client = demo.client()
    vid = demo.ids["1.0.1"]
    raw = client.get(f"/v/{vid}/raw", "path=data/img1.png")
    assert raw.status == 200 and raw.headers["Content-Type"] == "image/png"
    assert raw.raw == png(48, 32, 1)
    download = client.get(f"/v/{vid}/raw", "path=json/__init__.py")
    assert download.headers["Content-Type"] == "application/octet-stream"
    assert download.headers["Content-Disposition"].startswith("attachment;")


def test_folders_and_changes_are_paged(demo: Demo, monkeypatch: pytest.MonkeyPatch) -> None:
    local_only(demo)
    monkeypatch.setattr(model, "PAGE", 7)
    client = demo.client()
    vid = demo.ids["1.0.0"]

    def names(query: str, table: str) -> list[str]:
        page = client.get(f"/v/{vid}", query)
        assert page.status == 200, page.text
        body = re.search(rf'<table class="{table}">.*?</table>', page.text, re.S)
        assert body is not None
        return re.findall(r'<td class="path"><a [^>]*>([^<]*)</a>', body.group(0))

    every: list[str] = []
    query = "dir=email"
    for _ in range(100):
        every += names(query, "contents")
        page = client.get(f"/v/{vid}", query)
        more = re.search(r'<a href="([^"]*)" rel="next-entries">', page.text)
        if more is None:
            break
        query = html.unescape(more.group(1)).split("?", 1)[1]
    listing = [n for n, _e in model.tree(demo.repo(), demo.repo().header(vid)).children("email")]
    assert [n.rstrip("/") for n in every] == listing and len(listing) > 14
    # changes: follow the "next" links (a cursor: the last path shown) to the end
    repo = demo.repo()
    header = repo.header(vid)
    expected = [e.path for e in treewalk.iter_files(model.tree(repo, header))]
    seen: list[str] = []
    query = ""
    for _ in range(200):
        page = client.get(f"/v/{vid}", query)
        body = re.search(r'<table class="changes">.*?</table>', page.text, re.S)
        assert body is not None
        got = [html.unescape(p) for p in
               re.findall(r'<td class="path"><a [^>]*>([^<]*)</a>', body.group(0))]
        assert 0 < len(got) <= 7
        seen += got
        more = re.search(r'<a href="([^"]*)" rel="next">', page.text)
        if more is None:
            break
        query = html.unescape(more.group(1)).split("?", 1)[1]
    assert seen == expected and len(expected) > 14


def test_diff_of_any_two_versions(demo: Demo) -> None:
    local_only(demo)
    client = demo.client()
    page = client.get("/diff", "a=demo/stdlib@1.0.0&b=" + demo.ids["1.0.4"])
    assert page.status == 200, page.text
    assert re.search(r'class="added".*data/img0\.png', page.text)
    assert re.search(r'class="added".*NOTES\.md', page.text)
    assert re.search(r'class="removed".*wsgiref/', page.text)
    assert client.get("/diff", "a=demo/stdlib@9.9.9&b=demo/stdlib").status == 404
    assert client.get("/diff", "a=demo/stdlib").status == 400
    # REFs the CLI refuses name nothing here either (``P/N@`` is not the latest)
    for bad in ("demo/stdlib@", "demo/stdlib%23", "demo/stdlib@1.0.0%23x", "demo/"):
        reply = client.get("/diff", f"a={bad}&b=demo/stdlib")
        assert reply.status == 404, (bad, reply.status)


@pytest.mark.parametrize("batch", [2, 3, 512])
def test_cursor_walks_agree_with_the_engine(demo: Demo, batch: int,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """``walk.files_after`` and ``walk.diff_after`` give the engine's rows
    (``treewalk``) from any cursor: paths of the trees, and paths between them;
    with listings read 3 records at a time, too."""
    local_only(demo)
    monkeypatch.setattr(walk, "BATCH", batch)
    repo = demo.repo()
    headers = [repo.header(vid) for vid in demo.ids.values()]
    rng = random.Random(7)
    for a in headers:
        files = list(treewalk.iter_files(model.tree(repo, a)))
        assert list(walk.files_after(model.tree(repo, a))) == files
        paths = [e.path for e in files]
        cursors = rng.sample(paths, 8) + [p + "/" for p in rng.sample(paths, 3)] + [
            "", "json", "json/", "json0", "data/z", "~", "<", "data/a", "data/a.txt",
            "data/a/", "data/a-b.txt", "data/a/x.txt"]
        for after in cursors:
            assert [e.path for e in walk.files_after(model.tree(repo, a), after)] == [
                p for p in paths if p > after], after
        for b in headers:
            rows = list(treewalk.diff(model.tree(repo, a), model.tree(repo, b)))
            assert list(walk.diff_after(model.tree(repo, a), model.tree(repo, b))) == rows
            for after in [rows[len(rows) // 2][0]] if rows else []:
                assert list(walk.diff_after(model.tree(repo, a), model.tree(repo, b), after)
                            ) == [r for r in rows if r[0] > after]
            for after in rng.sample(cursors, 4):
                assert list(walk.diff_after(model.tree(repo, a), model.tree(repo, b), after)
                            ) == [r for r in rows if r[0] > after], after


def test_names_are_escaped_everywhere(demo: Demo) -> None:
    """A file named ``<script>alert(1)</script>`` (a folder ``<script>alert(1)<``
    holding ``script>``) and a folder ``<img src=x onerror=alert(2)>`` show as text."""
    local_only(demo)
    client = demo.client()
    vid = demo.ids["1.0.1"]
    pages = [client.get(f"/v/{vid}"), client.get(f"/v/{vid}", "dir=<script>alert(1)<"),
             client.get(f"/v/{vid}/file", f"path={HOSTILE_PATH}"),
             client.get("/diff", f"a={demo.ids['1.0.0']}&b={vid}"),
             client.get(f"/v/{vid}/file", "path=<img src=x onerror=alert(2)>/a.txt")]
    for page in pages:
        assert page.status == 200, page.text
        assert "<script" not in page.text and "<img src=x" not in page.text
        assert "alert(" in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[2].text
    assert "&lt;b&gt;not bold&lt;/b&gt;" in pages[2].text  # the file's content too
    assert "script&gt;" in pages[1].text
    # a not-found message repeats what was asked for: escaped as well
    missing = client.get(f"/v/{vid}/file", "path=<script>x</script>")
    assert missing.status == 404 and "<script>" not in missing.text
    # and no page may run any script at all
    assert "script-src" not in pages[0].headers["Content-Security-Policy"]
    assert "default-src 'none'" in pages[0].headers["Content-Security-Policy"]


@pytest.mark.parametrize("path,query", [
    ("/v/{vid}/file", "path=../../../../../../etc/passwd"),
    ("/v/{vid}/raw", "path=../../../../../../etc/passwd"),
    ("/v/{vid}/raw", "path=/etc/passwd"),
    ("/v/{vid}/raw", "path=%2e%2e/%2e%2e/%2e%2e/etc/passwd"),
    ("/v/{vid}/raw", "path=json/../../../../etc/passwd"),
    ("/v/{vid}/raw", "path=json"),
    ("/v/{vid}", "dir=../../.."),
    ("/v/{vid}", "dir=/etc"),
    ("/static/../../../pyproject.toml", ""),
    ("/static/..%2f..%2fapp.py", ""),
    ("/v/../../etc/passwd", ""),
    ("/v/{vid}/../../../etc/passwd", ""),
    ("/v/zzzz", ""),
])
def test_nothing_outside_the_version_is_served(demo: Demo, path: str, query: str) -> None:
    local_only(demo)
    reply = demo.client().get(path.format(vid=demo.ids["1.0.1"]), query)
    assert reply.status == 404, reply.text
    assert b"root:" not in reply.raw


def test_read_only(demo: Demo) -> None:
    def store_objects() -> list[tuple[str, int]]:
        return sorted((info.key, info.size) for info in demo.repo().store.list(""))

    before = store_objects()
    client = demo.client()
    vid = demo.ids["1.0.4"]
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        for path in ("/", f"/v/{vid}", f"/v/{vid}/raw"):
            reply = client.request(method, path, "path=data/cats.csv")
            assert reply.status == 405 and reply.headers["Allow"] == "GET, HEAD", method
    head = client.request("HEAD", f"/v/{vid}")
    assert head.status == 200 and head.raw == b""
    for path in ("/", dataset_path(), f"/v/{vid}", f"/v/{demo.ids['1.0.2']}",
                 f"/v/{demo.ids['1.0.5']}"):
        assert client.get(path).status == 200
    assert store_objects() == before


def test_host_header_must_name_the_server(demo: Demo) -> None:
    local_only(demo)
    from dsfs.ui.serve import make_server

    server = make_server(demo.repo(), "127.0.0.1", 0)
    app = server.get_app()
    assert isinstance(app, App)
    client = Client(app)
    port = server.server_port
    assert client.request("GET", "/", host=f"127.0.0.1:{port}").status == 200
    assert client.request("GET", "/", host=f"localhost:{port}").status == 200
    assert client.request("GET", "/", host=f"attacker.example:{port}").status == 421
    server.server_close()


def test_export_writes_linked_static_pages(demo: Demo, tmp_path: Path) -> None:
    local_only(demo)
    out = tmp_path / "site"
    result = subprocess.run([str(DSFS), "ui", "--export", str(out)], capture_output=True,
                            text=True, env={**os.environ, **demo.env}, timeout=300)
    assert result.returncode == 0, result.stderr
    files = {p.name for p in out.iterdir()}
    assert {"index.html", "style.css"} <= files
    assert {f"v-{vid}.html" for vid in demo.ids.values()} <= files
    index = (out / "index.html").read_text()
    ds_page = "ds-" + model.dataset_key("demo", "stdlib") + ".html"
    assert f'href="{ds_page}"' in index and ds_page in files
    for name in files - {"style.css"}:
        text = (out / name).read_text()
        # links stay inside the export: relative, to pages it wrote
        for href in re.findall(r'href="([^"]*)"', text):
            assert href.split("#")[0] in files | {""}, (name, href)
        assert "<script" not in text
    version = (out / f"v-{demo.ids['1.0.1']}.html").read_text()
    assert 'class="plot' in version and "data:image/png;base64," in version


def test_export_below_a_file_is_one_line_and_exit_10(demo: Demo, tmp_path: Path) -> None:
    local_only(demo)
    target = tmp_path / "a-file"
    target.write_text("x")
    result = subprocess.run([str(DSFS), "ui", "--export", str(target / "site")],
                            capture_output=True, text=True, env={**os.environ, **demo.env},
                            timeout=300)
    assert result.returncode == 10, result.stderr
    assert result.stderr == f"dsfs: error: cannot write {target / 'site'}: Not a directory\n"
    assert target.read_text() == "x"


def test_dsfs_ui_serves_on_loopback_and_prints_its_url(demo: Demo) -> None:
    local_only(demo)
    proc = subprocess.Popen([str(DSFS), "ui", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **demo.env})
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url), url
        with urllib.request.urlopen(url, timeout=30) as reply:
            assert reply.status == 200 and b"stdlib" in reply.read()
        request = urllib.request.Request(url, data=b"x", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 405
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# -- a real browser ----------------------------------------------------------------------

def _browser() -> str | None:
    """A Chromium that runs here (Ubuntu's chromium-browser may be a wrapper
    around a snap that is not installed: it is then skipped too)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            try:
                ok = subprocess.run([found, "--version"], capture_output=True,
                                    timeout=60).returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                ok = False
            if ok:
                return found
    return None


def _pixels(png_bytes: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB(A) rows of an 8-bit PNG (as Chromium writes them)."""
    assert png_bytes[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = depth = color = 0
    while pos < len(png_bytes):
        length, kind = struct.unpack(">I4s", png_bytes[pos:pos + 8])
        data = png_bytes[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", data[:10])
        elif kind == b"IDAT":
            idat += data
        pos += 12 + length
    assert depth == 8 and color in (2, 6), (depth, color)
    bpp = 3 if color == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up, corner = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + pred) & 255
        rows.append(bytes(line) if bpp == 3 else bytes(
            b for j in range(0, stride, 4) for b in line[j:j + 3]))
        prev = line
    return width, height, rows


def _count_colour(rows: list[bytes], rgb: tuple[int, int, int]) -> int:
    needle = bytes(rgb)
    return sum(sum(1 for i in range(0, len(row), 3) if row[i:i + 3] == needle) for row in rows)


def test_in_a_real_browser(demo: Demo, tmp_path: Path) -> None:
    """Headless Chromium loads the lineage page and a version page served by
    ``dsfs ui``: the DOM it built holds the graph and the content table, and
    the screenshot shows the graph's boxes.  The screenshot is written to
    $DSFS_TEST_ARTIFACTS/ui-lineage.png (default: this test's temporary folder)."""
    local_only(demo)
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium here (packaging/install.sh installs Debian's where it can)")
    artefacts = Path(os.environ.get("DSFS_TEST_ARTIFACTS") or tmp_path)
    artefacts.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([str(DSFS), "ui", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **demo.env})

    def chromium(*args: str) -> str:
        result = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}", "--no-first-run", *args],
            capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        lineage_url = url.rstrip("/") + dataset_path()
        dom = chromium("--dump-dom", lineage_url)
        graph = re.search(r'<svg[^>]*class="lineage".*?</svg>', dom, re.S)
        assert graph is not None, dom[:2000]
        assert graph.group(0).count('<g class="node') == len(demo.ids)
        assert graph.group(0).count('class="edge') == 6
        shot = artefacts / "ui-lineage.png"
        chromium("--window-size=1100,800", f"--screenshot={shot}", lineage_url)
        width, height, rows = _pixels(shot.read_bytes())
        assert (width, height) == (1100, 800)
        # the boxes of the graph are drawn: their fills cover many pixels
        assert _count_colour(rows, (0xEE, 0xF4, 0xFF)) > 5 * 150 * 30   # versions
        assert _count_colour(rows, (0xF2, 0xF2, 0xF2)) > 150 * 30       # the deleted one

        version_url = url.rstrip("/") + f"/v/{demo.ids['1.0.1']}"
        dom = chromium("--dump-dom", version_url)
        table = re.search(r'<table class="contents">.*?</table>', dom, re.S)
        assert table is not None
        names = re.findall(r'<td class="path"><a [^>]*>([^<]*)</a>', table.group(0))
        assert "data/" in names and "json/" in names and "&lt;script&gt;alert(1)&lt;/" in names
        assert dom.count('class="plot') >= 3 and "<img src=\"data:image/png" in dom
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# -- any request ------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_SEGMENTS = st.sampled_from(["v", "file", "raw", "ds", "diff", "static", "style.css", "..",
                             "%2e%2e", "", ".", "etc", "passwd", "VID", "PARENT"])
_KEYS = st.sampled_from(["path", "dir", "d", "c", "a", "b", "after", "against", "q"])
_VALUES = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["../../etc/passwd", "/etc/passwd", "data/../../x", "VID", "PARENT",
                     "demo/stdlib@1.0.0", "json", "data/cats.csv", "\x00", "a" * 300,
                     "%00", "<script>", "data/a", "0" * 33]))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(segments=st.lists(_SEGMENTS, max_size=5),
       query=st.lists(st.tuples(_KEYS, _VALUES), max_size=4),
       method=st.sampled_from(["GET", "GET", "GET", "HEAD", "POST"]))
def test_any_request_is_answered_and_stays_inside(demo: Demo, segments: list[str],
                                                  query: list[tuple[str, str]],
                                                  method: str) -> None:
    """Random paths and queries: an answer (200, 400, 404, 405), never an
    exception, never a script from a name, never a file from outside."""
    if demo.store_url.startswith("s3://"):
        return  # store-independent (a skip per example would be noise)
    vid, parent = demo.ids["1.0.1"], demo.ids["1.0.0"]

    def fill(text: str) -> str:
        return text.replace("VID", vid).replace("PARENT", parent)

    path = "/" + "/".join(fill(s) for s in segments)
    qs = "&".join(f"{k}={quote(fill(v).encode('utf-8', 'surrogatepass'), safe='')}"
                  for k, v in query)
    reply = _shared_client(demo).request(method, path, qs)
    assert reply.status in (200, 400, 404, 405), (path, qs, reply.status, reply.raw[:300])
    assert b"root:" not in reply.raw and b"<script" not in reply.raw.lower()


_clients: dict[str, Client] = {}


def _shared_client(demo: Demo) -> Client:
    if demo.store_url not in _clients:
        _clients[demo.store_url] = demo.client()
    return _clients[demo.store_url]
