"""Serving the application on a local port, and exporting it as static files.

``serve`` runs the standard library's WSGI server, one request at a time,
bound to 127.0.0.1 unless told otherwise.  ``export`` writes the index, every
dataset's lineage page and every version's page into a folder, with links
between them and the stylesheet beside them; what needs a server (paging,
folders below the top, file pages, diffs) is left out of the export.
"""

from __future__ import annotations

import logging
import wsgiref.simple_server
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dsfs.errors import InputError, LocalError
from dsfs.fsutil import write_atomic
from dsfs.repository import Repository
from dsfs.ui import model
from dsfs.ui.app import App
from dsfs.ui.links import Links
from dsfs.ui.stats import compute

log = logging.getLogger("dsfs")


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base name
        log.info("dsfs ui: " + format, *args)


def make_server(repo: Repository, host: str = "127.0.0.1", port: int = 8765
                ) -> wsgiref.simple_server.WSGIServer:
    """A server bound to ``host:port`` (port 0: any free one), not yet serving."""
    try:
        server = wsgiref.simple_server.make_server(host, port, App(repo),
                                                   handler_class=_QuietHandler)
    except OSError as exc:
        raise LocalError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    port = server.server_port
    app = server.get_app()
    assert isinstance(app, App)
    if host not in ("0.0.0.0", "::", ""):
        app.allowed_hosts = {f"{h}:{port}" for h in (host, "127.0.0.1", "localhost", "[::1]")}
    return server


def url_of(server: wsgiref.simple_server.WSGIServer) -> str:
    host = str(server.server_address[0])
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{server.server_port}/"


def export(repo: Repository, folder: Path,
           progress: Callable[[str], None] | None = None) -> int:
    """Write the static pages into ``folder``; returns how many were written."""
    app = App(repo, Links(static=True))
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} exists and is not a directory")
    written = 0

    def put(name: str, text: str | bytes) -> None:
        nonlocal written
        data = text if isinstance(text, bytes) else text.encode("utf-8", "backslashreplace")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_atomic(folder / name, data, durable=False)
        except (PermissionError, NotADirectoryError, FileExistsError) as exc:
            raise InputError(f"cannot write {folder}: {exc.strerror}") from None
        written += 1
        if progress is not None:
            progress(name)

    for name, data in app.static.items():
        put(name, data)
    put("index.html", app.index())
    known = app.catalogue()
    datasets = sorted({(h.project, h.name) for h in known.headers})
    versions: dict[str, None] = {}
    for project, name in datasets:
        put(app.links.dataset(project, name), app.dataset(project, name))
        for node in model.lineage(repo, known, project, name):
            if node.state != "missing":
                versions[node.id] = None
    for vid in versions:
        compute(repo, repo.header(vid))  # statistics in full, not "on their way"
        put(f"v-{vid}.html", app.version(vid, {}))
    return written
