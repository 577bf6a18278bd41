"""The web application: a WSGI callable that routes GET requests to pages.

Read-only by construction: it answers GET and HEAD, and 405 to any other
method; no page changes the store or the cache beyond what reading does
(chunks fetched into the shared cache, tree-index records, saved statistics).
Files are found by looking their path up in the version's tree, never by
joining it to a directory, so no request can reach a file outside the
version.  Every response carries a Content-Security-Policy that allows no
script at all, and requests whose ``Host`` is not the address the server
listens on are refused (a web page elsewhere cannot use DNS rebinding to read
the store through the browser).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from dsfs.catalog import Catalog, Ref
from dsfs.catalog import parse_ref as catalog_parse_ref
from dsfs.errors import DsfsError, NotFoundError, UsageError
from dsfs.format.manifest import DIR, FILE, Header
from dsfs.repository import Repository
from dsfs.ui import model, svg
from dsfs.ui.links import Links
from dsfs.ui.render import render, static_files
from dsfs.ui.stats import Stats, StatsJobs

log = logging.getLogger("dsfs")

HEADERS = [
    ("Content-Security-Policy", "default-src 'none'; img-src 'self' data:; style-src 'self'; "
     "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cache-Control", "no-store"),
]
_HEX = re.compile(r"^[0-9a-fA-F]{1,32}$")
#: Refresh period (seconds) of a version page whose statistics are on their way.
STATS_REFRESH = 3
#: How long (seconds) the list of versions read from the store serves further
#: pages: on S3 it costs a few LISTs and a GET per version's tags.
CATALOGUE_SECONDS = 10.0

StartResponse = Callable[..., Any]


class Response:
    def __init__(self, body: bytes | Iterable[bytes], content_type: str = "text/html; "
                 "charset=utf-8", status: str = "200 OK",
                 headers: list[tuple[str, str]] | None = None, length: int | None = None
                 ) -> None:
        self.body, self.content_type, self.status = body, content_type, status
        self.headers = headers or []
        self.length = len(body) if isinstance(body, bytes) else length


def html(text: str, status: str = "200 OK") -> Response:
    # names that are not UTF-8 were shown escaped; a stray surrogate must not fail the page
    return Response(text.encode("utf-8", "backslashreplace"), status=status)


def parse_ref(text: str) -> Ref:
    """A version named as in the CLI (``catalog.parse_ref``): an id or id
    prefix, or PROJECT/NAME[@VERSION|#TAG]; a REF that names nothing is a 404."""
    text = text.strip()
    if _HEX.match(text):
        return Ref(id=text.lower())
    try:
        return catalog_parse_ref(text)
    except UsageError as error:
        raise NotFoundError(str(error)) from None


class App:
    """``App(repo)`` is a WSGI application over one repository.  One request
    at a time (tree sources serve one thread): serve it with a single-threaded
    server."""

    def __init__(self, repo: Repository, links: Links | None = None,
                 jobs: StatsJobs | None = None, allowed_hosts: set[str] | None = None
                 ) -> None:
        self.repo = repo
        self.links = links or Links()
        self.jobs = jobs or StatsJobs(repo.store.url, repo.cache_root)
        self.allowed_hosts = allowed_hosts
        self.static = static_files()
        self._catalogue: tuple[float, model.Catalogue] | None = None

    def catalogue(self) -> model.Catalogue:
        """The store's versions, re-read when older than CATALOGUE_SECONDS."""
        now = time.monotonic()
        if self._catalogue is None or now - self._catalogue[0] > CATALOGUE_SECONDS:
            self._catalogue = (now, model.Catalogue.read(self.repo))
        return self._catalogue[1]

    # -- WSGI --------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: StartResponse
                 ) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            response = Response(b"read-only: only GET and HEAD are answered\n",
                                "text/plain; charset=utf-8", "405 Method Not Allowed",
                                [("Allow", "GET, HEAD")])
        elif self.allowed_hosts is not None and environ.get("HTTP_HOST") not in self.allowed_hosts:
            response = Response(b"unknown Host header\n", "text/plain; charset=utf-8",
                                "421 Misdirected Request")
        else:
            response = self.respond(environ.get("PATH_INFO", "/"),
                                    environ.get("QUERY_STRING", ""))
        headers = [("Content-Type", response.content_type), *HEADERS, *response.headers]
        if response.length is not None:
            headers.append(("Content-Length", str(response.length)))
        start_response(response.status, headers)
        if method == "HEAD":
            return [b""]
        return [response.body] if isinstance(response.body, bytes) else response.body

    def respond(self, path: str, query_string: str) -> Response:
        query = {k: v[-1] for k, v in parse_qs(query_string, errors="surrogateescape").items()}
        try:
            return self.route(path, query)
        except NotFoundError as exc:
            return html(self.page("error.html", status="404 Not Found", message=str(exc)),
                        "404 Not Found")
        except UsageError as exc:
            return html(self.page("error.html", status="400 Bad Request", message=str(exc)),
                        "400 Bad Request")
        except DsfsError as exc:
            log.warning("dsfs ui: %s: %s", path, exc)
            return html(self.page("error.html", status="502 Bad Gateway", message=str(exc)),
                        "502 Bad Gateway")

    def route(self, path: str, query: dict[str, str]) -> Response:
        parts = path.strip("/").split("/") if path.strip("/") else []
        if not parts:
            return html(self.index(query.get("q", "")))
        if parts[0] == "static" and len(parts) == 2 and parts[1] in self.static:
            content_type = "text/css; charset=utf-8" if parts[1].endswith(".css") else (
                "application/octet-stream")
            return Response(self.static[parts[1]], content_type)
        if parts[0] == "ds" and len(parts) == 2:
            return html(self.dataset(*model.parse_dataset_key(parts[1])))
        if parts[0] == "v" and len(parts) == 2:
            return html(self.version(parts[1], query))
        if parts[0] == "v" and len(parts) == 3 and parts[2] == "file":
            return html(self.file(parts[1], query.get("path", "")))
        if parts[0] == "v" and len(parts) == 3 and parts[2] == "raw":
            return self.raw(parts[1], query.get("path", ""))
        if parts == ["diff"]:
            return html(self.diff(query.get("a", ""), query.get("b", ""),
                                  query.get("after", "")))
        raise NotFoundError(f"no page {path!r}")

    # -- pages -------------------------------------------------------------------------

    def page(self, template: str, **context: Any) -> str:
        return render(template, links=self.links, store_url=self.repo.store.url,
                      counts=model.counts_text, **context)

    def index(self, query: str = "") -> str:
        return self.page("index.html", projects=model.datasets(self.catalogue(), query),
                         query=query)

    def dataset(self, project: str, name: str, current: str | None = None) -> str:
        known = self.catalogue()
        nodes = model.lineage(self.repo, known, project, name, current)
        graph = svg.lineage(nodes, lambda vid: self.links.version(vid))
        versions = known.of(project, name)
        return self.page("dataset.html", project=project, name=name, graph=graph,
                         versions=versions)

    def _header(self, text: str) -> Header:
        return self.repo.header(model.check_id(text))

    def _resolve(self, text: str) -> Header:
        """A version named as on the command line; a whole id is read from the
        local copy of its manifest (as the version pages do), no store round trip."""
        text = text.strip().lower() if _HEX.match(text.strip()) else text
        if len(text) == 32 and _HEX.match(text):
            return self._header(text)
        return Catalog(self.repo).resolve(parse_ref(text))

    def version(self, version_id: str, query: dict[str, str]) -> str:
        known = self.catalogue()
        info = model.version(self.repo, known, version_id)
        header = info.header
        against_q = query.get("against") or None
        against, changes = model.changes(self.repo, header, against_q, query.get("c", ""))
        dir_q = query.get("dir", "").strip("/")
        dir_start = query.get("d", "")
        total, rows, dir_next = model.folder(self.repo, header, dir_q, dir_start)
        crumbs, acc = [], []
        for part in dir_q.split("/") if dir_q else []:
            acc.append(part)
            crumbs.append((part, "/".join(acc)))
        stats, stats_error = self._stats(header)
        others = [h for h in known.of(header.project, header.name) if h.id != header.id]
        return self.page(
            "version.html", info=info, against=against, against_q=against_q, changes=changes,
            changes_q=changes.after, dir_q=dir_q, dir_start=dir_start, crumbs=crumbs,
            folder_total=total, folder_rows=rows, folder_next=dir_next, stats=stats,
            stats_error=stats_error, plots=_plots(stats) if stats else {},
            previews=model.first_previews(self.repo, header), others=others[::-1],
            refresh=STATS_REFRESH if stats is None and not stats_error else 0)

    def _stats(self, header: Header) -> tuple[Stats | None, str]:
        failed = self.jobs.failed.get(header.id)
        if failed:
            return None, failed
        return self.jobs.get(self.repo, header), ""

    def file(self, version_id: str, path: str) -> str:
        info = model.version(self.repo, self.catalogue(), version_id)
        entry = model.entry(self.repo, info.header, path)
        if entry.kind == DIR:
            raise NotFoundError(f"{path!r} is a folder")
        return self.page("file.html", info=info, entry=entry,
                         preview=model.preview(self.repo, entry))

    def raw(self, version_id: str, path: str) -> Response:
        """A file's bytes, streamed chunk by chunk through the cache.  Images
        of the known kinds are shown inline; everything else is a download."""
        header = self._header(version_id)
        entry = model.entry(self.repo, header, path)
        if entry.kind != FILE:
            raise NotFoundError(f"{path!r} is not a file")
        ext = "." + path.rsplit(".", 1)[-1].lower() if "." in path else ""
        name = quote(Path(path).name.encode("utf-8", "surrogateescape"), safe="")
        if ext in model.IMAGE_TYPES:
            content_type, disposition = model.IMAGE_TYPES[ext], "inline"
        else:
            content_type, disposition = "application/octet-stream", "attachment"
        return Response(self._chunks(entry.chunks), content_type,
                        headers=[("Content-Disposition",
                                  f"{disposition}; filename*=UTF-8''{name}")],
                        length=entry.size)

    def _chunks(self, refs: Iterable[Any]) -> Iterator[bytes]:
        for ref in refs:
            self.repo.cache.fetch(self.repo.store, [ref])
            yield self.repo.cache.read(ref.chunk_id)

    def diff(self, a_text: str, b_text: str, after: str = "") -> str:
        if not a_text or not b_text:
            raise UsageError("a diff needs two versions: /diff?a=REF&b=REF")
        a, b = self._resolve(a_text), self._resolve(b_text)
        return self.page("diff.html", a=a, b=b, page=model.diff(self.repo, a, b, after))


def _plots(stats: Stats) -> dict[str, str]:
    def rows(table: str) -> list[tuple[str, float, str]]:
        return [(key, size, f"{svg.human_size(size)} · {files:,} file{'' if files == 1 else 's'}")
                for key, files, size in stats.top(table)]

    counts, labels = stats.histogram()
    return {
        "folders": svg.bars(rows("folders"), "bytes and files per top-level folder"),
        "extensions": svg.bars(rows("extensions"), "bytes and files per extension"),
        "histogram": svg.histogram(counts, labels, "files by size"),
    }
