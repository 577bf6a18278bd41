"""Commands that change what exists: tag, set-description, rename, move,
delete, gc."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from dsfs.catalog import Ref
from dsfs.engine import attributes, deleting, versions
from dsfs.engine import gc as gc_engine
from dsfs.errors import UsageError

from ..completion import complete_name, complete_project
from ..context import AppContext, json_option, pass_app, ref_options, split_multi
from ..output import human_size, print_json, safe_path


@click.command()
@ref_options
@click.option("--add", "add_tags", multiple=True, metavar="T", help="Tag(s) to add.")
@click.option("--remove", "remove_tags", multiple=True, metavar="T", help="Tag(s) to remove.")
@json_option
@pass_app
def tag(app: AppContext, ref: Ref, add_tags: tuple[str, ...], remove_tags: tuple[str, ...],
        as_json: bool) -> None:
    """Add or remove tags of a version; prints the resulting tags."""
    header = app.resolve(ref)
    tags = versions.set_tags(app.repo, header, split_multi(add_tags), split_multi(remove_tags))
    if as_json:
        print_json({"id": header.id, "tags": tags})
        return
    click.echo(f"{header.id}: {', '.join(safe_path(t) for t in tags) or '(no tags)'}")


@click.command(name="set-description")
@ref_options
@click.option("--description", "-d", required=True, help="The new description.")
@pass_app
def set_description(app: AppContext, ref: Ref, description: str) -> None:
    """Replace the description of a published version."""
    header = app.resolve(ref)
    attributes.set_description(app.repo, header, description)
    if not app.quiet:
        click.echo(f"description of {header.id} set", err=True)


def _dataset_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--name", "-n", required=True, shell_complete=complete_name,
                        help="Name of the dataset.")(func)
    return click.option("--project", "-p", required=True, shell_complete=complete_project,
                        help="Project of the dataset.")(func)


@click.command()
@_dataset_options
@click.option("--new-name", required=True, metavar="NAME", help="The dataset's new name.")
@pass_app
def rename(app: AppContext, project: str, name: str, new_name: str) -> None:
    """Rename a dataset within its project (every version keeps its id).

    Refused if a dataset of the new name exists.  Interrupted, it can be run
    again; meanwhile a version may be listed under both names."""
    moved = attributes.rename_dataset(app.repo, project, name, project, new_name)
    if not app.quiet:
        click.echo(f"renamed {len(moved)} version(s) of {safe_path(project)}/{safe_path(name)} "
                   f"to {safe_path(project)}/{safe_path(new_name)}", err=True)


@click.command()
@_dataset_options
@click.option("--new-project", required=True, metavar="PROJECT",
              help="The project to move the dataset to.")
@pass_app
def move(app: AppContext, project: str, name: str, new_project: str) -> None:
    """Move a dataset to another project (every version keeps its id).

    Refused if that project has a dataset of the same name.  Interrupted, it
    can be run again."""
    moved = attributes.rename_dataset(app.repo, project, name, new_project, name)
    if not app.quiet:
        click.echo(f"moved {len(moved)} version(s) of {safe_path(project)}/{safe_path(name)} "
                   f"to {safe_path(new_project)}/{safe_path(name)}", err=True)


@click.command()
@ref_options
@click.option("--force", is_flag=True,
              help="Hide versions even though others are built on them (their data stays).")
@click.option("--entire-dataset", is_flag=True,
              help="Delete every version of the dataset named by --project/--name "
                   "(or PROJECT/NAME).")
@click.option("--dry-run", is_flag=True, help="Only print what would be deleted.")
@click.option("--yes", "-y", is_flag=True,
              help="Do not ask for confirmation (needed for --entire-dataset without "
                   "a terminal).")
@click.option("--wait", default=gc_engine.DEFAULT_WAIT, show_default=True, metavar="DURATION",
              help="How long to wait for closes and commits to finish (they hold "
                   "shared store locks) before giving up with exit code 5.")
@json_option
@pass_app
def delete(app: AppContext, ref: Ref, force: bool, entire_dataset: bool, dry_run: bool,
           yes: bool, wait: str, as_json: bool) -> None:
    """Delete a version, or with --entire-dataset every version of a dataset.

    Refuses while other versions depend on them (unless --force).  Takes the
    store's exclusive lock, as gc does, so it waits for closes and commits
    running elsewhere.  The data is freed by the next `dsfs gc`."""
    wait_seconds = gc_engine.parse_duration(wait)
    if entire_dataset:
        if ref.id or ref.version or ref.tag:
            raise UsageError("--entire-dataset takes a dataset: --project P --name N "
                             "(or PROJECT/NAME), not a version")
        assert ref.project is not None and ref.name is not None
        ordered = deleting.dataset_versions(app.repo, ref.project, ref.name)
        rows = [{"id": h.id, "project": h.project, "name": h.name, "version": h.version}
                for h in ordered]
        if not dry_run and not yes:
            if not sys.stdin.isatty():
                raise UsageError(f"--entire-dataset deletes {len(rows)} version(s): "
                                 "confirm with --yes (or see them with --dry-run)")
            click.confirm(f"delete all {len(rows)} version(s) of "
                          f"{safe_path(ref.project)}/{safe_path(ref.name)}?", abort=True,
                          err=True)
        deleting.delete_dataset(app.repo, ref.project, ref.name, force, dry_run,
                                wait_seconds, app.reporter)
    else:
        header = app.resolve(ref)
        rows = [{"id": header.id, "project": header.project, "name": header.name,
                 "version": header.version}]
        if not dry_run:
            message = versions.delete(app.repo, header, force, wait_seconds, app.reporter)
            if not as_json:
                if not app.quiet:
                    click.echo(message)
                return
    if as_json:
        print_json({"dry_run": dry_run, "deleted": rows})
        return
    verb = "would delete" if dry_run else "deleted"
    for row in rows:
        click.echo(f"{verb} {row['id']}  {safe_path(row['project'])}/{safe_path(row['name'])} "
                   f"{safe_path(row['version'])}")


@click.command()
@click.option("--grace", default=gc_engine.DEFAULT_GRACE, show_default=True, metavar="DURATION",
              help="Never remove anything younger than this (30m, 24h, 7d): keeps "
                   "uploads of writers that take no store lock (older dsfs) safe.")
@click.option("--wait", default=gc_engine.DEFAULT_WAIT, show_default=True, metavar="DURATION",
              help="How long to wait for closes and commits to finish (they hold "
                   "shared store locks) before giving up with exit code 5.")
@click.option("--dry-run", is_flag=True, help="Only report what would be removed.")
@json_option
@pass_app
def gc(app: AppContext, grace: str, wait: str, dry_run: bool, as_json: bool) -> None:
    """Remove packs that no version references (under the store's exclusive lock)."""
    result = gc_engine.collect(app.repo, gc_engine.parse_duration(grace), dry_run, app.reporter,
                               wait_seconds=gc_engine.parse_duration(wait))
    if as_json:
        print_json({"dry_run": dry_run, "packs_removed": result.packs_removed,
                    "bytes_freed": result.bytes_freed,
                    "manifests_removed": result.manifests_removed,
                    "packs_in_use": result.packs_in_use,
                    "packs_kept_young": result.packs_kept_young,
                    "stale_uploads_removed": result.stale_uploads_removed,
                    "manifests_kept_unreadable": result.manifests_kept_unreadable})
        return
    if app.quiet:
        return
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {result.packs_removed} pack(s) ({human_size(result.bytes_freed)}) and "
               f"{result.manifests_removed} unpublished manifest(s); {result.packs_in_use} in use, "
               f"{result.packs_kept_young} kept as younger than {grace}"
               + (f"; {result.stale_uploads_removed} partial upload(s) cleaned"
                  if result.stale_uploads_removed else "")
               + (f"; {result.manifests_kept_unreadable} manifest(s) with an unreadable header "
                  "kept (no manifest removed)" if result.manifests_kept_unreadable else ""))


COMMANDS = [tag, set_description, rename, move, delete, gc]
