"""Commands that change what exists: tag, delete, gc."""

from __future__ import annotations

import click

from dsfs.catalog import Ref
from dsfs.engine import gc as gc_engine
from dsfs.engine import versions

from ..context import AppContext, pass_app, ref_options, split_multi
from ..output import human_size


@click.command()
@ref_options
@click.option("--add", "add_tags", multiple=True, metavar="T", help="Tag(s) to add.")
@click.option("--remove", "remove_tags", multiple=True, metavar="T", help="Tag(s) to remove.")
@pass_app
def tag(app: AppContext, ref: Ref, add_tags: tuple[str, ...], remove_tags: tuple[str, ...]
        ) -> None:
    """Add or remove tags of a version; prints the resulting tags."""
    header = app.resolve(ref)
    tags = versions.set_tags(app.repo, header, split_multi(add_tags), split_multi(remove_tags))
    click.echo(f"{header.id}: {', '.join(tags) or '(no tags)'}")


@click.command()
@ref_options
@click.option("--force", is_flag=True,
              help="Hide the version even though others are built on it (their data stays).")
@pass_app
def delete(app: AppContext, ref: Ref, force: bool) -> None:
    """Delete a version.  Refuses while other versions depend on it."""
    header = app.resolve(ref)
    click.echo(versions.delete(app.repo, header, force))


@click.command()
@click.option("--grace", default=gc_engine.DEFAULT_GRACE, show_default=True, metavar="DURATION",
              help="Never remove anything younger than this (30m, 24h, 7d): keeps "
                   "uploads of writers that take no store lock (older dsfs) safe.")
@click.option("--wait", default=gc_engine.DEFAULT_WAIT, show_default=True, metavar="DURATION",
              help="How long to wait for closes and commits to finish (they hold "
                   "shared store locks) before giving up with exit code 5.")
@click.option("--dry-run", is_flag=True, help="Only report what would be removed.")
@pass_app
def gc(app: AppContext, grace: str, wait: str, dry_run: bool) -> None:
    """Remove packs that no version references (under the store's exclusive lock)."""
    result = gc_engine.collect(app.repo, gc_engine.parse_duration(grace), dry_run, app.reporter,
                               wait_seconds=gc_engine.parse_duration(wait))
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {result.packs_removed} pack(s) ({human_size(result.bytes_freed)}) and "
               f"{result.manifests_removed} unpublished manifest(s); {result.packs_in_use} in use, "
               f"{result.packs_kept_young} kept as younger than {grace}"
               + (f"; {result.stale_uploads_removed} partial upload(s) cleaned"
                  if result.stale_uploads_removed else "")
               + (f"; {result.manifests_kept_unreadable} manifest(s) with an unreadable header "
                  "kept (no manifest removed)" if result.manifests_kept_unreadable else ""))


COMMANDS = [tag, delete, gc]
