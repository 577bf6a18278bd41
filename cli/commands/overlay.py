"""Commands for writable mounts: status, commit, discard.

Each asks the mount process through its control socket
(``dsfs.mount.control``) and prints the answer; the work happens there."""

from __future__ import annotations

import click

from ..context import AppContext, json_option, pass_app, split_multi
from ..output import print_json, safe_path


def _ask(mountpoint: str, message: dict) -> dict:
    from dsfs.mount import control  # noqa: PLC0415 - trio/pyfuse3 only when needed

    return control.request(mountpoint, message)


@click.command()
@click.argument("mountpoint", type=click.Path())
@json_option
@pass_app
def status(app: AppContext, mountpoint: str, as_json: bool) -> None:
    """Paths a writable mount adds, modifies and removes.

    A directory added or removed as a whole is listed once (with a trailing
    '/'); a file rewritten with the same bytes is not modified."""
    answer = _ask(mountpoint, {"op": "status"})
    if as_json:
        print_json({k: answer[k] for k in ("added", "modified", "removed", "version_id")})
        return
    marks = {"added": "A", "modified": "M", "removed": "D"}
    lines = []
    for key, mark in marks.items():
        for item in answer[key]:
            slash = "/" if item["kind"] == "dir" else ""
            lines.append((item["path"], f"{mark} {safe_path(item['path'])}{slash}"))
    if not lines and not app.quiet:
        click.echo(f"no changes to {answer['project']}/{answer['name']} "
                   f"{answer['version']} ({answer['version_id']})", err=True)
    for _path, line in sorted(lines):
        click.echo(line)


@click.command()
@click.argument("mountpoint", type=click.Path())
@click.option("--message", "-m", default="", help="Description of the new version.")
@click.option("--version", "-v", "version_", metavar="V",
              help="Version string [default: the next patch version].")
@click.option("--tags", multiple=True, metavar="T", help="Tags (repeat or comma-separate).")
@json_option
@pass_app
def commit(app: AppContext, mountpoint: str, message: str, version_: str | None,
           tags: tuple[str, ...], as_json: bool) -> None:
    """Make the edits of a writable mount a child version; print its id last.

    The mount stays up and shows the new version with no pending edits.
    Changes made during the commit wait for it to finish."""
    answer = _ask(mountpoint, {"op": "commit", "message": message, "version": version_,
                               "tags": split_multi(tags)})
    if answer.get("notice"):
        click.echo(f"dsfs: note: {answer['notice']}", err=True)
    if as_json:
        print_json({k: answer.get(k) for k in ("id", "project", "name", "version", "counts",
                                               "uploaded_bytes")})
        return
    if not app.quiet:
        counts = answer["counts"]
        click.echo(f"committed {answer['project']}/{answer['name']} {answer['version']}: "
                   f"{counts['added']} added, {counts['modified']} modified, "
                   f"{counts['removed']} removed; {answer['uploaded_bytes']} bytes uploaded",
                   err=True)
    click.echo(answer["id"])


@click.command()
@click.argument("mountpoint", type=click.Path())
@pass_app
def discard(app: AppContext, mountpoint: str) -> None:
    """Drop every edit of a writable mount (files open meanwhile keep what they had)."""
    answer = _ask(mountpoint, {"op": "discard"})
    if not app.quiet:
        click.echo(f"discarded the edits of {mountpoint} ({answer['discarded']} paths)")


COMMANDS = [status, commit, discard]
