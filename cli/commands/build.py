"""Commands that make versions: create, add, remove, close, sync, squash."""

from __future__ import annotations

import click

from dsfs.catalog import Catalog
from dsfs.dataset import Dataset
from dsfs.engine import versions
from dsfs.errors import UsageError

from ..completion import complete_ref
from ..context import AppContext, json_option, parse_ref_text, pass_app, split_multi
from ..output import human_size, print_json, safe_path


def _resolve_parents(app: AppContext, parents: tuple[str, ...]) -> list[str]:
    catalog = Catalog(app.repo)
    return [catalog.resolve(parse_ref_text(p)).id for p in split_multi(parents)]


@click.command()
@click.option("--project", "-p", required=True, help="Project the dataset belongs to.")
@click.option("--name", "-n", required=True, help="Name of the dataset.")
@click.option("--version", "-v", "version_", metavar="V",
              help="Version string [default: next patch version after the latest, or 1.0.0].")
@click.option("--tags", "-t", multiple=True, metavar="T",
              help="Tag(s); repeat the option or separate with commas.")
@click.option("--parents", multiple=True, metavar="REF", shell_complete=complete_ref,
              help="Parent version(s), merged in order (a later parent wins a conflict).")
@click.option("--description", "-d", default="", help="Free text stored with the version.")
@json_option
@pass_app
def create(app: AppContext, project: str, name: str, version_: str | None,
           tags: tuple[str, ...], parents: tuple[str, ...], description: str,
           as_json: bool) -> None:
    """Start a draft version; add/remove/close act on it until it is closed.

    Prints the draft's id on the last line."""
    draft = versions.create(app.repo, project, name, version_, split_multi(tags),
                            _resolve_parents(app, parents), description)
    header = draft.header
    if as_json:
        print_json({"id": header.id, "project": header.project, "name": header.name,
                    "version": header.version, "tags": header.tags,
                    "parents": header.parents, "status": "draft"})
        return
    parents_text = ", ".join(p[:12] for p in header.parents) or "none"
    if not app.quiet:
        click.echo(f"draft {safe_path(header.project)}/{safe_path(header.name)} "
                   f"{safe_path(header.version)} (parents: {parents_text})")
    click.echo(header.id)


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(readable=False))
@click.option("--id", "draft_id", metavar="ID", help="Draft to add to [default: the current one].")
@click.option("--links", "links", multiple=True, metavar="URL",
              help="External objects (s3://, https://) to reference, not copy (repeat).")
@click.option("--dataset-folder", default="", metavar="D",
              help="Place the files below this folder of the dataset.")
@click.option("--wildcard", "wildcards", multiple=True, metavar="GLOB",
              help="Only files whose name or path matches (repeat: any of them).")
@click.option("--non-recursive", is_flag=True, help="Do not descend into subdirectories.")
@json_option
@pass_app
def add(app: AppContext, paths: tuple[str, ...], draft_id: str | None, links: tuple[str, ...],
        dataset_folder: str, wildcards: tuple[str, ...], non_recursive: bool,
        as_json: bool) -> None:
    """Add files or folders to a draft (a folder's contents, not the folder itself).

    Symlinks are stored as symlinks and never followed (LINK/ with a slash
    adds the folder LINK points to); fifos, sockets and devices are skipped
    with a warning.  A directory that cannot be read fails the whole add.
    Files are read when the draft is closed.  A URL (s3://BUCKET/KEY, an
    s3://BUCKET/PREFIX/ folder, https://...) is an external file: referenced
    by URL, read once at close for its digests, never copied to the store."""
    if not paths and not links:
        raise UsageError("add needs PATHS or --links URL")
    ds = Dataset.open_draft(draft_id, app.store, app.cache_dir, app.reporter)
    count = ds.add_files(list(paths) + list(links), list(wildcards) or None, dataset_folder,
                         not non_recursive)
    if as_json:
        print_json({"draft": ds.id, "added": count})
    elif not app.quiet:
        click.echo(f"added {count} file(s) to draft {ds.id}")


@click.command()
@click.argument("patterns", nargs=-1, required=True)
@click.option("--id", "draft_id", metavar="ID", help="Draft to change [default: the current one].")
@pass_app
def remove(app: AppContext, patterns: tuple[str, ...], draft_id: str | None) -> None:
    """Remove dataset paths (glob patterns; a directory removes all below it)."""
    ds = Dataset.open_draft(draft_id, app.store, app.cache_dir, app.reporter)
    for pattern in patterns:
        versions.remove_files(ds._require_draft(), [pattern])
    if not app.quiet:
        click.echo(f"removal of {len(patterns)} pattern(s) recorded in draft {ds.id}")


def _report(app: AppContext, result: versions.CloseResult, as_json: bool) -> None:
    """The summary line (not with -q), then the version id alone on the last
    line; or, with --json, one object."""
    header, stats = result.header, result.stats
    changes = result.changes
    if as_json:
        print_json({"id": header.id, "project": header.project, "name": header.name,
                    "version": header.version, "created": result.created,
                    "added": changes.get("added", 0), "modified": changes.get("modified", 0),
                    "removed": changes.get("removed", 0),
                    "files": header.stats.get("files", 0), "size": header.stats.get("size", 0),
                    "bytes_uploaded": stats.bytes_uploaded,
                    "packs_uploaded": stats.packs_uploaded,
                    "chunks_reused": stats.chunks_reused})
        return
    if app.quiet:
        click.echo(header.id)
        return
    click.echo(
        f"{safe_path(header.project)}/{safe_path(header.name)} {safe_path(header.version)}: "
        f"{changes.get('added', 0)} added, {changes.get('modified', 0)} modified, "
        f"{changes.get('removed', 0)} removed; {header.stats.get('files', 0)} files, "
        f"{human_size(header.stats.get('size', 0))}; uploaded "
        f"{human_size(stats.bytes_uploaded)} in {stats.packs_uploaded} pack(s), "
        f"{stats.chunks_reused} chunk(s) already stored"
    )
    click.echo(header.id)


@click.command()
@click.option("--id", "draft_id", metavar="ID",
              help="Draft to upload [default: the current one].")
@pass_app
def upload(app: AppContext, draft_id: str | None) -> None:
    """Hash, deduplicate, pack and upload a draft's files without publishing it.

    `dsfs close` then publishes (it re-reads the files to check them, and
    uploads nothing again).  Close the draft within the gc grace period
    (24 h): until then its packs belong to no version."""
    ds = Dataset.open_draft(draft_id, app.store, app.cache_dir, app.reporter)
    stats = versions.upload(ds.repo, ds.id, app.reporter)
    if not app.quiet:
        click.echo(f"uploaded {human_size(stats.bytes_uploaded)} in {stats.packs_uploaded} "
                   f"pack(s) for draft {ds.id}; {stats.chunks_reused} chunk(s) already stored",
                   err=True)


@click.command()
@click.option("--id", "draft_id", metavar="ID", help="Draft to close [default: the current one].")
@json_option
@pass_app
def close(app: AppContext, draft_id: str | None, as_json: bool) -> None:
    """Hash, deduplicate, pack, upload and publish a draft.

    Interrupted, it can be run again: packs already in the store are not
    uploaded again.  Prints the version id on the last line."""
    ds = Dataset.open_draft(draft_id, app.store, app.cache_dir, app.reporter)
    _report(app, ds.finalize(), as_json)


@click.command()
@click.argument("folder", type=click.Path(readable=False))
@click.option("--project", "-p", required=True, help="Project of the dataset.")
@click.option("--name", "-n", required=True, help="Name of the dataset.")
@click.option("--parents", multiple=True, metavar="REF",
              help="Parent version(s) [default: the latest version of the dataset].")
@click.option("--version", "-v", "version_", metavar="V", help="Version string of the new version.")
@click.option("--tags", "-t", multiple=True, metavar="T", help="Tag(s) of the new version.")
@click.option("--description", "-d", default="", help="Free text stored with the version.")
@click.option("--checksum", is_flag=True,
              help="Hash every file instead of trusting unchanged size and mtime.")
@click.option("--require-latest", is_flag=True,
              help="Fail (exit 5, nothing published) unless the parent is still the "
                   "latest version when the new one is published.")
@json_option
@pass_app
def sync(app: AppContext, folder: str, project: str, name: str, parents: tuple[str, ...],
         version_: str | None, tags: tuple[str, ...], description: str, checksum: bool,
         require_latest: bool, as_json: bool) -> None:
    """Make a new version that mirrors FOLDER: adds, modifies and removes.

    A symlink FOLDER (or FOLDER/) means the folder it points to; anything
    that is not a folder, or a folder that cannot be read in full, fails with
    nothing published.  A version of the dataset published by someone else
    meanwhile is reported with a warning (both versions stay).  A folder with
    no changes creates no version.  Prints the new version id on the last
    line."""
    result = versions.sync(app.repo, folder, project, name,
                           _resolve_parents(app, parents) if parents else None, version_,
                           split_multi(tags), description, app.reporter, checksum,
                           require_latest)
    if not result.created:
        header = result.header
        if as_json:
            _report(app, result, as_json)
        elif not app.quiet:
            click.echo(f"no changes: {safe_path(folder)} matches {safe_path(header.project)}/"
                       f"{safe_path(header.name)} {header.version} ({header.id}); "
                       "no version created")
        return
    _report(app, result, as_json)


@click.command()
@click.argument("refs", nargs=-1, required=True, metavar="REF...", shell_complete=complete_ref)
@click.option("--project", "-p", required=True, help="Project of the new version.")
@click.option("--name", "-n", required=True, help="Name of the new version.")
@click.option("--version", "-v", "version_", metavar="V", help="Version string.")
@json_option
@pass_app
def squash(app: AppContext, refs: tuple[str, ...], project: str, name: str,
           version_: str | None, as_json: bool) -> None:
    """Merge versions (later wins) into a new version with no parents."""
    catalog = Catalog(app.repo)
    ids = [catalog.resolve(parse_ref_text(r)).id for r in refs]
    _report(app, versions.squash(app.repo, ids, project, name, version_), as_json)


COMMANDS = [create, add, remove, upload, close, sync, squash]
