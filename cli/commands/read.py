"""Commands that read versions: search, list, diff, get."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterator
from typing import Any

import click

from dsfs.catalog import Catalog, Ref
from dsfs.dataset import Dataset
from dsfs.engine import drafts, materialize, treewalk
from dsfs.format.manifest import REMOVED, Entry

from ..context import AppContext, parse_ref_text, pass_app, ref_options, split_multi
from ..output import human_size, print_json, safe_path


def _dataset(app: AppContext, ref: Ref) -> Dataset:
    return Dataset(app.repo, app.resolve(ref), None, app.reporter)


@click.command()
@click.option("--project", "-p", help="Only this project.")
@click.option("--name", "-n", help="Only datasets of this name.")
@click.option("--tags", "-t", multiple=True, metavar="T", help="Only versions with all these tags.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@pass_app
def search(app: AppContext, project: str | None, name: str | None, tags: tuple[str, ...],
           as_json: bool) -> None:
    """List versions (and this machine's drafts) with their metadata."""
    wanted = split_multi(tags)
    rows: list[dict[str, Any]] = []
    for header in Dataset.search(project, name, wanted, app.store, app.cache_dir):
        rows.append({"id": header.id, "project": header.project, "name": header.name,
                     "version": header.version, "tags": header.tags, "status": "final",
                     "files": header.stats.get("files", 0), "size": header.stats.get("size", 0),
                     "created": header.created, "parents": header.parents})
    for draft in drafts.all_drafts():
        h = draft.header
        if draft.store_id != app.repo.store_id.hex():
            continue
        if (project and h.project != project) or (name and h.name != name) or (
                wanted and not set(wanted) <= set(h.tags)):
            continue
        rows.append({"id": h.id, "project": h.project, "name": h.name, "version": h.version,
                     "tags": h.tags, "status": "draft", "files": None, "size": None,
                     "created": "", "parents": h.parents})
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("no versions found", err=True)
        return
    click.echo(f"{'ID':32}  {'PROJECT/NAME':30}  {'VERSION':10}  {'STATUS':6}  "
               f"{'FILES':>7}  {'SIZE':>10}  {'CREATED':20}  TAGS")
    for r in rows:
        files = "-" if r["files"] is None else str(r["files"])
        size = "-" if r["size"] is None else human_size(r["size"])
        click.echo(f"{r['id']:32}  {r['project'] + '/' + r['name']:30}  {r['version']:10}  "
                   f"{r['status']:6}  {files:>7}  {size:>10}  {r['created'][:19]:20}  "
                   f"{','.join(r['tags'])}")


@click.command(name="list")
@ref_options
@click.option("--modified", is_flag=True, help="Only this version's own changes (its delta).")
@click.option("--filter", "pattern", metavar="GLOB", help="Only paths matching this glob.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@pass_app
def list_(app: AppContext, ref: Ref, modified: bool, pattern: str | None, as_json: bool) -> None:
    """List the files of a version."""
    ds = _dataset(app, ref)
    rows: Iterator[dict[str, Any]]
    if modified:
        rows = (_change_row(path, old, new) for path, old, new in ds.iter_own_changes())
    else:
        rows = ({"path": e.path, "type": e.kind, "size": e.size, "digest": e.digest,
                 "target": e.target} for e in ds.iter_files())
    if pattern:
        rows = (r for r in rows if fnmatch.fnmatchcase(r["path"], pattern))
    # rows come in path order, streamed: nothing holds the whole listing
    if as_json:
        _print_json_rows(rows)
        return
    for r in rows:
        prefix = f"{r['change'][0].upper()} " if modified else ""
        suffix = f" -> {safe_path(r['target'])}" if r.get("target") else ""
        click.echo(f"{prefix}{r['size']:>12}  {safe_path(r['path'])}{suffix}")


def _change_row(path: str, old: Entry | None, new: Entry | None) -> dict[str, Any]:
    if old is None:
        assert new is not None
        return {"path": path, "change": "added", "type": new.kind, "size": new.size}
    if new is None:
        return {"path": path, "change": "removed", "type": REMOVED, "size": 0}
    return {"path": path, "change": "modified", "type": new.kind, "size": new.size}


def _print_json_rows(rows: Iterator[dict[str, Any]]) -> None:
    """``print_json(list(rows))``, written one row at a time."""
    first = True
    for row in rows:
        text = json.dumps(row, indent=2, sort_keys=True, ensure_ascii=False, default=str)
        click.echo(("[\n" if first else ",\n") + "\n".join(
            "  " + line for line in text.split("\n")), nl=False)
        first = False
    click.echo("[]" if first else "\n]")


@click.command()
@click.argument("ref_a", metavar="REF_A")
@click.argument("ref_b", metavar="REF_B")
@click.option("--json", "as_json", is_flag=True,
              help="Print {added, removed, modified}: lists of file paths.")
@pass_app
def diff(app: AppContext, ref_a: str, ref_b: str, as_json: bool) -> None:
    """What changed from REF_A to REF_B (files and symlinks, not directories).

    A REF here is an id, an id prefix, or PROJECT/NAME[@VERSION|#TAG]."""
    catalog = Catalog(app.repo)
    a = catalog.resolve(parse_ref_text(ref_a))
    b = catalog.resolve(parse_ref_text(ref_b))
    # streamed from the cache's tree index: directories the two versions share
    # are skipped whole; only the changed entries are held
    changes = treewalk.changes(treewalk.diff(treewalk.open_tree(app.repo, a),
                                             treewalk.open_tree(app.repo, b)))
    if as_json:
        print_json({"added": [e.path for e in changes.added],
                    "removed": [e.path for e in changes.removed],
                    "modified": [new.path for _old, new in changes.modified]})
        return
    for e in changes.added:
        click.echo(f"+ {safe_path(e.path)}  ({human_size(e.size)})")
    for e in changes.removed:
        click.echo(f"- {safe_path(e.path)}  ({human_size(e.size)})")
    for old, new in changes.modified:
        click.echo(f"M {safe_path(new.path)}  ({human_size(old.size)} -> {human_size(new.size)})")
    counts = changes.counts
    click.echo(f"{counts['added']} added, {counts['removed']} removed, "
               f"{counts['modified']} modified", err=True)


@click.command()
@ref_options
@click.option("--copy", "copy_to", metavar="DIR", type=click.Path(readable=False),
              help="Write a mutable copy into DIR (new or empty) instead; if it "
                   "fails, what was written is removed, so it can be run again.")
@pass_app
def get(app: AppContext, ref: Ref, copy_to: str | None) -> None:
    """Print the path of a read-only local copy of a version.

    Built from the shared cache: a second get, or a get of a related version,
    downloads and writes only what is not there yet.  A get that fails leaves
    no partial copy behind."""
    header = app.resolve(ref)
    if copy_to is not None:
        click.echo(materialize.mutable_copy(app.repo, header, copy_to, app.reporter))
    else:
        click.echo(materialize.local_copy(app.repo, header, app.reporter))


COMMANDS = [search, list_, diff, get]
