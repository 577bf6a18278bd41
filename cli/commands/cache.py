"""Commands that look after the shared chunk cache: cache stats|prune|clear|verify, prefetch."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import click

from dsfs import config
from dsfs.catalog import drop_cached_manifests
from dsfs.engine import parts
from dsfs.engine import prefetch as prefetch_plan
from dsfs.errors import StoreError, UsageError
from dsfs.format.manifest import FILE
from dsfs.mount import cachectl
from dsfs.shard import part_files
from dsfs.ui import stats as ui_stats

from ..completion import complete_ref
from ..context import (
    AppContext,
    FullHelpGroup,
    build_ref,
    json_option,
    pass_app,
    ref_option_set,
)
from ..output import human_size, print_json


@click.group(cls=FullHelpGroup)
def cache() -> None:
    """Inspect and manage the shared chunk cache ($DSFS_CACHE_DIR)."""


@cache.command()
@json_option
@pass_app
def stats(app: AppContext, as_json: bool) -> None:
    """How much the cache holds: chunks, index, `get` copies, temporary files;
    their total is what the size limit applies to."""
    chunk_cache = app.repo.cache
    found = cachectl.stats(chunk_cache)
    limit = cachectl.default_limit()
    row = {"path": str(chunk_cache.root), "chunks": found.chunks, "bytes": found.bytes,
           "limit": limit, "index_bytes": found.index_bytes,
           "copies_bytes": found.copies_bytes, "temp_files": found.temp_files,
           "temp_bytes": found.temp_bytes, "total_bytes": found.total_bytes,
           "oldest_access": found.oldest_access, "newest_access": found.newest_access,
           **{name: found.counters.get(name, 0) for name in cachectl.COUNTERS}}
    if as_json:
        print_json(row)
        return
    click.echo(f"cache:   {row['path']}")
    click.echo(f"chunks:  {found.chunks} ({human_size(found.bytes)})")
    click.echo(f"index:   {human_size(found.index_bytes)}")
    click.echo(f"copies:  {human_size(found.copies_bytes)} (made by `dsfs get`)")
    if found.temp_files:
        click.echo(f"temporary files: {found.temp_files} ({human_size(found.temp_bytes)})")
    click.echo(f"total:   {human_size(found.total_bytes)}")
    click.echo(f"limit:   {human_size(limit) if limit else 'none'}")
    counts = found.counters
    click.echo(f"fetched: {counts.get('gets', 0)} GET(s), "
               f"{human_size(counts.get('fetched_bytes', 0))} "
               f"({counts.get('span_fetches', 0)} whole pack(s), "
               f"{counts.get('shuffled_spans', 0)} of them at a first read of shuffled reads); "
               f"read: {human_size(counts.get('read_bytes', 0))} (since the last clear)")
    after, shuffled, seconds, share = config.span_settings()
    click.echo("spans:   " + ("off" if after <= 0 else
               f"a pack whole after {after} cold reads in it"
               + (f", or at the first once {shuffled} packs of a version had one"
                  if shuffled > 0 else "")
               + f" (within {seconds:g} s; for versions up to {share:g} of the "
               "limit or free space)"))
    if found.oldest_access:
        when = time.localtime(found.oldest_access)
        click.echo(f"oldest access: {time.strftime('%Y-%m-%d %H:%M', when)}")


@cache.command()
@click.option("--size", "size_text", metavar="SIZE",
              help=f"Shrink to this size (e.g. 20G) [default: ${cachectl.SIZE_ENV}].")
@json_option
@pass_app
def prune(app: AppContext, size_text: str | None, as_json: bool) -> None:
    """Evict least recently used chunks and `dsfs get` copies until the cache
    fits SIZE; forget the memoized trees, cached manifests and `dsfs ui`
    statistics of versions the store no longer holds.  `get --copy` folders
    are never touched."""
    limit = cachectl.parse_size(size_text) if size_text else cachectl.default_limit()
    if limit is None:
        raise UsageError(f"give --size or set ${cachectl.SIZE_ENV}")
    removed, freed = cachectl.prune(app.repo.cache, limit, copies=True)
    left = cachectl.stats(app.repo.cache)
    forgotten: int | None
    manifests: int | None
    try:
        forgotten = cachectl.forget_gone_trees(app.repo)
        manifests = cachectl.forget_gone_manifests(app.repo)
        manifests += ui_stats.forget_gone(app.repo.cache_root, set(app.repo.version_ids()))
    except StoreError as exc:
        forgotten = manifests = None
        click.echo(f"version trees not checked (store unreachable: {exc})", err=True)
    if as_json:
        print_json({"chunks_removed": removed, "bytes_freed": freed, "limit": limit,
                    "total_bytes": left.total_bytes, "trees_forgotten": forgotten,
                    "manifests_removed": manifests})
        return
    if not app.quiet:
        click.echo(f"removed {removed} chunk(s) and `dsfs get` copies, {human_size(freed)}")
    if left.total_bytes > limit:
        click.echo(f"the cache still takes {human_size(left.total_bytes)}: its index "
                   f"({human_size(left.index_bytes)}) is not evicted", err=True)
    if forgotten and not app.quiet:
        click.echo(f"forgot the trees of {forgotten} version(s) gone from the store")
    if manifests and not app.quiet:
        click.echo(f"removed {manifests} cached manifest file(s) of versions gone "
                   "from the store")


@cache.command()
@json_option
@pass_app
def clear(app: AppContext, as_json: bool) -> None:
    """Remove every cached chunk, manifest, memoized version tree and
    statistics of `dsfs ui`, and reset the counters of GETs and bytes.

    Version trees are kept while a dsfs mount is running."""
    removed, freed = cachectl.clear(app.repo.cache)
    manifests = drop_cached_manifests(app.repo.cache_root)
    manifests += ui_stats.drop_all(app.repo.cache_root)
    forgotten = cachectl.clear_trees(app.repo.cache)
    if as_json:
        print_json({"chunks_removed": removed, "bytes_freed": freed,
                    "manifests_removed": manifests, "trees_forgotten": forgotten})
        return
    if app.quiet:
        return
    click.echo(f"removed {removed} chunk(s), {human_size(freed)}")
    click.echo(f"removed {manifests} cached manifest file(s)")
    if forgotten is None:
        click.echo("version trees kept: a dsfs mount is running")
    else:
        click.echo(f"forgot the trees of {forgotten} version(s)")


@cache.command(name="verify")
@json_option
@pass_app
def verify_(app: AppContext, as_json: bool) -> None:
    """Re-hash every cached chunk; corrupt ones are removed (fetched again on use).

    Exits 6 when any chunk was corrupt."""
    checked, bad = cachectl.verify(app.repo.cache)
    if as_json:
        print_json({"checked": checked, "bad": list(bad)})
        if bad:
            raise SystemExit(6)
        return
    for cid in bad:
        click.echo(f"corrupt or missing, removed: {cid}", err=True)
    if not app.quiet or bad:
        click.echo(f"checked {checked} chunk(s): {len(bad)} bad")
    if bad:
        raise SystemExit(6)


@click.command()
@click.argument("words", nargs=-1, metavar="REF [PATH ...]", shell_complete=complete_ref)
@ref_option_set
@click.option("--part", type=int, metavar="K",
              help="Only share K (from 0) of --num-parts: one training worker's files.")
@click.option("--num-parts", type=int, metavar="N",
              help="Split the files into N shares balanced by bytes (as get --part).")
@click.option("--dry-run", is_flag=True,
              help="Only count what would be fetched; fetch nothing.")
@json_option
@pass_app
def prefetch(app: AppContext, words: tuple[str, ...], project: str | None, name: str | None,
             version_: str | None, tag: str | None, part: int | None,
             num_parts: int | None, dry_run: bool, as_json: bool) -> None:
    """Fill the cache with a version's files (all, those at or below PATHs, or
    one worker's share with --part/--num-parts), in parallel, so that a later
    mount, get or dsfs:// reader reads locally.

    The tree is streamed and fetched a window of chunks at a time (bounded
    memory at any size)."""
    share = parts.check_part(part, num_parts, part_name="--part", num_name="--num-parts")
    # With --project/--name every word is a PATH; otherwise the first is the REF.
    named = bool(project or name)
    ref = build_ref(None if named else (words[0] if words else None),
                    project, name, version_, tag)
    paths = words if named else words[1:]
    header = app.resolve(ref)
    repo = app.repo
    if share is not None and paths:
        raise UsageError("give PATHs or --part/--num-parts, not both")

    def windows() -> Iterator[prefetch_plan.Window]:
        if share is None:
            return prefetch_plan.windows(repo, header, paths)
        return prefetch_plan.chunk_windows(
            repo, (r for e in part_files(repo, header, share) if e.kind == FILE
                   for r in e.chunks))

    wanted = missing = size = 0
    for window in windows():  # a first pass for the total
        wanted += window.wanted
        missing += len(window.missing)
        size += sum(r.length for r in window.missing)
    if dry_run:
        if as_json:
            print_json({"id": header.id, "chunks_wanted": wanted, "chunks_missing": missing,
                        "bytes_missing": size, "dry_run": True})
        elif not app.quiet:
            click.echo(f"{wanted} chunk(s) wanted, {missing} not cached "
                       f"({human_size(size)}); nothing fetched (--dry-run)")
        return
    lock = threading.Lock()
    fetched = count = 0
    with app.reporter.progress("prefetch", size, "B") as bar:
        def advance(amount: int) -> None:
            with lock:
                bar.advance(amount)

        started = time.monotonic()
        for window in windows():
            count += len(window.missing)
            fetched += cachectl.prefetch(repo, window.missing, advance)
        took = max(time.monotonic() - started, 1e-6)
    if as_json:
        print_json({"id": header.id, "chunks_wanted": wanted, "chunks_fetched": count,
                    "bytes_downloaded": fetched, "seconds": round(took, 3)})
    elif not app.quiet:
        click.echo(f"{wanted} chunk(s) wanted, {count} fetched "
                   f"({human_size(fetched)} downloaded in {took:.1f} s, "
                   f"{human_size(int(fetched / took))}/s)")


COMMANDS = [cache, prefetch]
