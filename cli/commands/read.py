"""Commands that read versions: search, list, diff, get."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import click

from dsfs.catalog import Catalog, Ref
from dsfs.dataset import Dataset
from dsfs.engine import drafts, materialize, parts, treewalk
from dsfs.engine import search as search_engine
from dsfs.errors import UsageError
from dsfs.format.manifest import REMOVED, Entry
from dsfs.store.external import shown

from ..completion import complete_name, complete_project, complete_ref, complete_tag
from ..context import (
    AppContext,
    json_option,
    parse_ref_text,
    pass_app,
    ref_options,
    split_multi,
)
from ..output import human_size, print_json, safe_path


def _dataset(app: AppContext, ref: Ref) -> Dataset:
    return Dataset(app.repo, app.resolve(ref), None, app.reporter)


@click.command()
@click.option("--project", "-p", shell_complete=complete_project,
              help="Only this project and its sub-projects (vision includes vision/faces).")
@click.option("--non-recursive-project-search", is_flag=True,
              help="With --project: not its sub-projects.")
@click.option("--name", "-n", shell_complete=complete_name,
              help="Only datasets whose name contains this (case-insensitive; a "
                   "regular expression).")
@click.option("--tags", "-t", multiple=True, metavar="T", shell_complete=complete_tag,
              help="Only versions with all these tags.")
@click.option("--ids", multiple=True, metavar="ID",
              help="Only these versions (ids or id prefixes; repeat or comma-separate).")
@json_option
@pass_app
def search(app: AppContext, project: str | None, non_recursive_project_search: bool,
           name: str | None, tags: tuple[str, ...], ids: tuple[str, ...], as_json: bool
           ) -> None:
    """List versions (and this machine's drafts) with their metadata."""
    wanted = split_multi(tags)
    wanted_ids = split_multi(ids)
    recursive = not non_recursive_project_search
    rows: list[dict[str, Any]] = []
    for header in Dataset.search(project, name, wanted, app.store, app.cache_dir,
                                 ids=wanted_ids, partial_name=True, recursive=recursive):
        rows.append({"id": header.id, "project": header.project, "name": header.name,
                     "version": header.version, "tags": header.tags, "status": "final",
                     "files": header.stats.get("files", 0), "size": header.stats.get("size", 0),
                     "created": header.created, "parents": header.parents,
                     "description": header.description})
    match_name = search_engine.name_matcher(name) if name is not None else None
    for draft in drafts.all_drafts():
        h = draft.header
        if draft.store_id != app.repo.store_id.hex():
            continue
        if (project and not search_engine.project_matches(h.project, project, recursive)) or (
                match_name and not match_name(h.name)) or (
                wanted and not set(wanted) <= set(h.tags)) or (
                wanted_ids and not any(h.id.startswith(i.lower()) for i in wanted_ids)):
            continue
        rows.append({"id": h.id, "project": h.project, "name": h.name, "version": h.version,
                     "tags": h.tags, "status": "draft", "files": None, "size": None,
                     "created": "", "parents": h.parents, "description": h.description})
    if as_json:
        print_json(rows)
        return
    if not rows:
        if not app.quiet:
            click.echo("no versions found", err=True)
        return
    click.echo(f"{'ID':32}  {'PROJECT/NAME':30}  {'VERSION':10}  {'STATUS':6}  "
               f"{'FILES':>7}  {'SIZE':>10}  {'CREATED':20}  TAGS")
    for r in rows:
        files = "-" if r["files"] is None else str(r["files"])
        size = "-" if r["size"] is None else human_size(r["size"])
        dataset = safe_path(r["project"] + "/" + r["name"])
        click.echo(f"{r['id']:32}  {dataset:30}  {safe_path(r['version']):10}  "
                   f"{r['status']:6}  {files:>7}  {size:>10}  {r['created'][:19]:20}  "
                   f"{safe_path(','.join(r['tags']))}")


@click.command(name="list")
@ref_options
@click.option("--modified", is_flag=True, help="Only this version's own changes (its delta).")
@click.option("--filter", "patterns", multiple=True, metavar="GLOB",
              help="Only paths matching this glob or in a folder matching it "
                   "(repeat: any of them).")
@click.option("--non-recursive", is_flag=True,
              help="With --filter: only files directly in the folders matched.")
@click.option("--part", type=int, metavar="K",
              help="Only the files of part K (0 to N-1), as `get --part` gets them.")
@click.option("--num-parts", type=int, metavar="N", help="With --part: how many parts.")
@json_option
@pass_app
def list_(app: AppContext, ref: Ref, modified: bool, patterns: tuple[str, ...],
          non_recursive: bool, part: int | None, num_parts: int | None, as_json: bool) -> None:
    """List the files of a version.

    --filter train lists the files below train/, as ClearML's list_files
    does; --filter '*.csv' the CSV files anywhere."""
    share = parts.check_part(part, num_parts, part_name="--part", num_name="--num-parts")
    if share is not None and modified:
        raise UsageError("--part lists a share of the version's files, not of --modified")
    ds = _dataset(app, ref)
    rows: Iterator[dict[str, Any]]
    if share is not None:
        rows = (_file_row(e) for e in parts.select(ds.iter_files, lambda e: e.size, *share))
    elif modified:
        rows = (_change_row(path, old, new) for path, old, new in ds.iter_own_changes())
    else:
        rows = (_file_row(e) for e in ds.iter_files())
    if patterns:
        tests = [search_engine.path_matcher(p, not non_recursive) for p in patterns]
        rows = (r for r in rows if any(test(r["path"]) for test in tests))
    # rows come in path order, streamed: nothing holds the whole listing
    if as_json:
        _print_json_rows(rows)
        return
    for r in rows:
        prefix = f"{r['change'][0].upper()} " if modified else ""
        suffix = f" -> {safe_path(r['target'])}" if r.get("target") else ""
        click.echo(f"{prefix}{r['size']:>12}  {safe_path(r['path'])}{suffix}")


def _file_row(e: Entry) -> dict[str, Any]:
    """A file of ``list --json``; an external file also names its URL (without
    a query string, which may hold a signature)."""
    row: dict[str, Any] = {"path": e.path, "type": e.kind, "size": e.size,
                           "digest": e.digest, "target": e.target}
    if e.url is not None:
        row["url"] = shown(e.url)
    return row


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
@click.argument("ref_a", metavar="REF_A", shell_complete=complete_ref)
@click.argument("ref_b", metavar="REF_B", shell_complete=complete_ref)
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
        click.echo(f"M {safe_path(new.path)}  ({size_change(old.size, new.size)})")
    counts = changes.counts
    click.echo(f"{counts['added']} added, {counts['removed']} removed, "
               f"{counts['modified']} modified", err=True)


def size_change(old: int, new: int) -> str:
    """``16.8 KiB -> 16.8 KiB, +7 B``: human sizes, and the exact difference."""
    return f"{human_size(old)} -> {human_size(new)}, {new - old:+,d} B"


@click.command()
@ref_options
@click.option("--copy", "copy_to", metavar="DIR", type=click.Path(readable=False),
              help="Write a mutable copy into DIR (new or empty) instead; if it "
                   "fails, what was written is removed, so it can be run again.")
@click.option("--overwrite", is_flag=True,
              help="With --copy: empty DIR first if it holds files.")
@click.option("--link", "link_to", metavar="DIR", type=click.Path(readable=False),
              help="Also make DIR a symlink to the read-only copy (replacing an "
                   "earlier symlink there).")
@click.option("--part", type=int, metavar="K",
              help="Only part K (0 to N-1) of the files: contiguous runs of paths, "
                   "balanced by bytes, the same on every machine.")
@click.option("--num-parts", type=int, metavar="N", help="With --part: how many parts.")
@json_option
@pass_app
def get(app: AppContext, ref: Ref, copy_to: str | None, overwrite: bool, link_to: str | None,
        part: int | None, num_parts: int | None, as_json: bool) -> None:
    """Print the path of a read-only local copy of a version.

    Built from the shared cache: a second get, or a get of a related version,
    downloads and writes only what is not there yet.  A get that fails leaves
    no partial copy behind.  With --part K --num-parts N, N machines each
    get one share of the files (see `dsfs list --part`)."""
    share = parts.check_part(part, num_parts, part_name="--part", num_name="--num-parts")
    if overwrite and copy_to is None:
        raise UsageError("--overwrite needs --copy DIR")
    if copy_to is not None and link_to is not None:
        raise UsageError("give --copy or --link, not both")
    header = app.resolve(ref)
    if copy_to is not None:
        path = materialize.mutable_copy(app.repo, header, copy_to, app.reporter, part=share,
                                        overwrite=overwrite)
    else:
        path = materialize.local_copy(app.repo, header, app.reporter, part=share)
        if link_to is not None:
            materialize.link_to(path, link_to)
    if as_json:
        print_json({"id": header.id, "path": str(path),
                    "link": None if link_to is None else os.path.abspath(link_to),
                    "part": None if share is None else share[0],
                    "num_parts": None if share is None else share[1]})
        return
    click.echo(os.path.abspath(link_to) if link_to is not None else path)


COMMANDS = [search, list_, diff, get]
