"""``dsfs ui``: the local read-only web view, served or exported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from dsfs.errors import UsageError

from ..context import AppContext, pass_app


def _ui() -> Any:
    try:
        from dsfs.ui import serve  # noqa: PLC0415 - jinja2 only for this command
    except ImportError as exc:
        raise UsageError(f"dsfs ui needs jinja2 ({exc}); install dsfs with the 'ui' extra"
                         ) from None
    return serve


@click.command()
@click.option("--port", "-P", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but a loopback address shows the "
                   "store to the network.")
@click.option("--export", "export_dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Write the pages as static HTML into DIR instead of serving them.")
@pass_app
def ui(app: AppContext, port: int, host: str, export_dir: str | None) -> None:
    """Browse the store in a web browser: datasets, lineage graphs, versions
    (changes, contents, statistics, previews) and diffs. Read-only.

    Prints the URL, then serves until interrupted (Ctrl-C)."""
    serve = _ui()
    repo = app.repo
    if export_dir:
        count = serve.export(repo, Path(export_dir))
        click.echo(f"wrote {count} files to {Path(export_dir).resolve() / 'index.html'}")
        return
    server = serve.make_server(repo, host, port)
    click.echo(serve.url_of(server), err=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


COMMANDS = [ui]
