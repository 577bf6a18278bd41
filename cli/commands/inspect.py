"""Commands that look deeper: lineage, verify."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import click

from dsfs.catalog import Catalog, Ref
from dsfs.dataset import Dataset
from dsfs.engine import treewalk
from dsfs.errors import IntegrityError, NotFoundError
from dsfs.format.manifest import Header

from ..context import AppContext, json_option, pass_app, ref_options
from ..output import print_json, safe_path


def lineage_lines(app: AppContext, version_id: str) -> list[str]:
    """The version and its ancestors as an indented tree (parents below children)."""
    repo = app.repo
    catalog = Catalog(repo)
    claimed = catalog.claimed_version_ids()
    lines: list[str] = []
    seen: set[str] = set()

    def label(vid: str) -> str:
        try:
            header = catalog.checked_header(vid)
        except NotFoundError:
            return f"{vid[:12]}  (manifest missing)"
        except IntegrityError as exc:
            return f"{vid[:12]}  (corrupt: {exc})"
        counts = _own_counts(header)
        if vid in claimed:
            with contextlib.suppress(IntegrityError):
                catalog.apply_attributes(header)  # a renamed dataset's current name
        if vid not in claimed:
            state = "  [deleted]"
        elif not catalog.is_visible(header):
            state = "  [corrupt: its header disagrees with its claim]"
        else:
            state = ""
        return (f"{header.project}/{header.name} {header.version}  {vid[:12]}  "
                f"+{counts['added']} -{counts['removed']} ~{counts['modified']}{state}")

    def _own_counts(header: Header) -> dict[str, int]:
        rows = treewalk.own_changes(repo, header)  # streamed, any number of parents
        counts = {"added": 0, "removed": 0, "modified": 0}
        for _path, old, new in rows:
            counts["added" if old is None else "removed" if new is None else "modified"] += 1
        return counts

    def walk(vid: str, prefix: str, last: bool, top: bool) -> None:
        connector = "" if top else ("└── " if last else "├── ")
        repeat = "  (see above)" if vid in seen else ""
        lines.append(f"{prefix}{connector}{label(vid)}{repeat}")
        if repeat:
            return
        seen.add(vid)
        try:
            parents = catalog.checked_header(vid).parents
        except (NotFoundError, IntegrityError):
            return
        child_prefix = prefix if top else prefix + ("    " if last else "│   ")
        for i, parent in enumerate(parents):
            walk(parent, child_prefix, i == len(parents) - 1, False)

    walk(version_id, "", True, True)
    return lines


def lineage_graph(app: AppContext, version_id: str) -> list[dict[str, Any]]:
    """The version and its ancestors as rows (``lineage --json``), children first."""
    catalog = Catalog(app.repo)
    claimed = catalog.claimed_version_ids()
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    todo = [version_id]
    while todo:
        vid = todo.pop(0)
        if vid in seen:
            continue
        seen.add(vid)
        try:
            header = catalog.checked_header(vid)
        except (NotFoundError, IntegrityError) as exc:
            rows.append({"id": vid, "problem": str(exc)})
            continue
        if vid in claimed:
            catalog.apply_attributes(header)
        rows.append({"id": vid, "project": header.project, "name": header.name,
                     "version": header.version, "parents": header.parents,
                     "deleted": vid not in claimed})
        todo.extend(header.parents)
    return rows


@click.command()
@ref_options
@json_option
@pass_app
def lineage(app: AppContext, ref: Ref, as_json: bool) -> None:
    """Draw a version's parent graph, with +added -removed ~modified per version."""
    header = app.resolve(ref)
    if as_json:
        print_json(lineage_graph(app, header.id))
        return
    for line in lineage_lines(app, header.id):
        click.echo(safe_path(line))


@click.command()
@ref_options
@click.option("--folder", type=click.Path(), metavar="DIR",
              help="Check a local folder against the version instead of the store.")
@json_option
@pass_app
def verify(app: AppContext, ref: Ref, folder: str | None, as_json: bool) -> None:
    """Re-hash a version's stored chunks (or a folder) and report every mismatch.

    Exits with the integrity code (6) if anything differs."""
    ds = Dataset(app.repo, app.resolve(ref), None, app.reporter)
    problems = ds.verify(folder)
    if as_json:
        print_json({"id": ds.id, "checked": folder or "store", "ok": not problems,
                    "problems": problems})
        if problems:
            sys.exit(IntegrityError.exit_code)
        return
    for problem in problems:
        click.echo(safe_path(problem))
    if problems:
        click.echo(f"dsfs: error: {len(problems)} problem(s) found", err=True)
        sys.exit(IntegrityError.exit_code)
    what = folder or "stored data"
    if not app.quiet:
        click.echo(f"ok: {what} matches {ds.project}/{ds.name} {ds.version} ({ds.id})", err=True)


COMMANDS = [lineage, verify]
