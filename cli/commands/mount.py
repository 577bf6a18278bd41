"""Commands that mount versions: mount, umount, mounts."""

from __future__ import annotations

import os
import sys

import click

from dsfs.catalog import Ref
from dsfs.errors import UsageError

from ..completion import complete_ref
from ..context import AppContext, build_ref, json_option, pass_app, ref_option_set
from ..output import print_json, safe_path


def _ref_and_mountpoint(words: tuple[str, ...], project: str | None, name: str | None,
                        version: str | None, tag: str | None) -> tuple[Ref, str]:
    """``REF MOUNTPOINT`` or ``--project P --name N [...] MOUNTPOINT``."""
    if len(words) not in (1, 2):
        raise UsageError("usage: dsfs mount REF MOUNTPOINT, or dsfs mount --project P "
                         "--name N [--version V | --tag T] MOUNTPOINT")
    ref_text = words[0] if len(words) == 2 else None
    return build_ref(ref_text, project, name, version, tag), words[-1]


@click.command()
@click.argument("words", nargs=-1, metavar="[REF] MOUNTPOINT", shell_complete=complete_ref)
@ref_option_set
@click.option("--foreground", "-f", is_flag=True,
              help="Stay attached until unmounted (for systemd and tests).")
@click.option("--cache-size", metavar="SIZE",
              help="Bound the shared cache to SIZE (e.g. 20G); least recently used "
                   "chunks are evicted.")
@click.option("--allow-other", is_flag=True, help="Let other users see the mount.")
@click.option("--writable", "-w", is_flag=True,
              help="Keep edits in a persistent overlay; `dsfs commit` makes them a version.")
@click.option("--overlay", metavar="NAME|DIR",
              help="With --writable: the overlay to use, a name under the data directory "
                   "or a directory path [default: one per mount point].")
@click.option("--debug", is_flag=True, help="Verbose log, including every FUSE request.")
@click.option("--ready-fd", type=int, hidden=True)
@pass_app
def mount(app: AppContext, words: tuple[str, ...], project: str | None, name: str | None,
          version_: str | None, tag: str | None, foreground: bool, cache_size: str | None,
          allow_other: bool, writable: bool, overlay: str | None, debug: bool,
          ready_fd: int | None) -> None:
    """Mount a version at MOUNTPOINT (read-only unless --writable); returns once
    it is ready.

    REF is an id, an id prefix or PROJECT/NAME[@VERSION|#TAG].  File contents
    are fetched on first read into the shared cache.  With --writable, edits go
    to an overlay that survives unmounts and crashes; an overlay holding edits
    always mounts the version they were made on."""
    from dsfs.mount import cachectl, lifecycle  # noqa: PLC0415 - pyfuse3 only when mounting
    from dsfs.overlay.upper import overlay_dir  # noqa: PLC0415

    ref, mountpoint = _ref_and_mountpoint(words, project, name, version_, tag)
    if overlay and not writable:
        raise UsageError("--overlay needs --writable")
    size = cachectl.parse_size(cache_size) if cache_size else cachectl.default_limit()
    path = lifecycle.check_mountpoint(mountpoint)
    if ready_fd is None and _has_entries(path):
        app.reporter.warn(f"{path} is not empty: its files are hidden while the version is "
                          "mounted over them")
    header = app.resolve(ref)
    upper = overlay_dir(overlay, path) if writable else None
    if foreground or ready_fd is not None:
        lifecycle.serve(app.repo, header, path, allow_other=allow_other, debug=debug,
                        ready_fd=ready_fd, to_stderr=ready_fd is None, cache_size=size,
                        overlay=upper)
        return
    command = [sys.executable, "-m", "dsfs", "--store", app.repo.store.url,
               "--cache-dir", str(app.repo.cache_root), "mount", header.id, path]
    command += ["--allow-other"] * allow_other + ["--debug"] * debug
    if cache_size:
        command += ["--cache-size", cache_size]
    if upper is not None:
        command += ["--writable", "--overlay", str(upper)]
    info = lifecycle.start_daemon(command, path)
    if info.get("notice"):
        click.echo(f"dsfs: note: {info['notice']}", err=True)
    if info.get("version_id") and info["version_id"] != header.id:
        header = app.repo.header(info["version_id"])
    if not app.quiet:
        how = f" writable (overlay {upper})" if upper is not None else ""
        click.echo(f"mounted {header.project}/{header.name} {header.version} ({header.id}) "
                   f"at {path}{how}; log: {info['log']}")


def _has_entries(path: str) -> bool:
    try:
        with os.scandir(path) as entries:
            return next(entries, None) is not None
    except OSError:
        return False


@click.command()
@click.argument("mountpoint", type=click.Path())
@click.option("--lazy", "-z", is_flag=True,
              help="Detach now even if busy; finish when the last file is closed.")
@pass_app
def umount(app: AppContext, mountpoint: str, lazy: bool) -> None:
    """Unmount a dsfs mount (also one whose process has died)."""
    from dsfs.mount import table  # noqa: PLC0415

    record = table.unmount(mountpoint, lazy)
    if not app.quiet:
        click.echo(f"unmounted {record.mountpoint}" + (" (lazily)" if lazy else ""))


@click.command()
@json_option
def mounts(as_json: bool) -> None:
    """List dsfs mounts with their versions."""
    from dsfs.mount import table  # noqa: PLC0415

    rows = []
    for record in table.dsfs_mounts():
        state = record.state
        rows.append({
            "mountpoint": record.mountpoint, "version_id": record.current_version_id,
            "project": state.get("project"), "name": state.get("name"),
            "version": state.get("version"), "pid": record.pid,
            "alive": record.alive, "log": state.get("log"),
        })
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("no dsfs mounts", err=True)
        return
    for r in rows:
        what = f"{r['project']}/{r['name']} {r['version']}" if r["project"] else "?"
        status = "" if r["alive"] else "  (process gone: `dsfs umount` cleans up)"
        pid = f"pid {r['pid']}" if r["pid"] is not None else "pid ? (not started by dsfs)"
        click.echo(f"{safe_path(str(r['mountpoint']))}  {r['version_id']}  {safe_path(what)}  "
                   f"{pid}{status}")


COMMANDS = [mount, umount, mounts]
