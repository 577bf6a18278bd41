"""The ``dsfs`` command: global options, the command list, and the one place
where errors become a message on stderr and an exit code."""

from __future__ import annotations

import errno
import os
import sys
import traceback
from typing import Any, NoReturn

import click

from dsfs import __version__, config
from dsfs.errors import EXIT_CODES, DiskFullError, DsfsError, local_os_error

from .commands import build, cache, inspect, maintain, mount, overlay, read, ui
from .context import AppContext
from .output import safe_path

EPILOG = "\b\nExit codes:\n" + "\n".join(
    f"  {code:>3}  {text}" for code, text in {**EXIT_CODES, 130: "interrupted"}.items()
)


class DsfsGroup(click.Group):
    """Turns every expected failure into one line and its documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DsfsError as exc:
            click.echo(f"dsfs: error: {one_line(str(exc))}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("dsfs: interrupted; rerun the command to finish", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:
            sys.exit(1)
        except OSError as exc:
            error = local_failure(exc)
            if error is None:
                internal_error(exc)
            else:
                if os.environ.get("DSFS_DEBUG"):
                    traceback.print_exc()
                click.echo(f"dsfs: error: {one_line(str(error))}", err=True)
                sys.exit(error.exit_code)
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            internal_error(exc)


def one_line(message: str) -> str:
    """An error as one printable line: a path's undecodable bytes as \\x escapes,
    a newline or carriage return inside a name escaped, so the message stays
    one line and never fails to print."""
    return safe_path(message).replace("\n", "\\n").replace("\r", "\\r")


def internal_error(exc: BaseException) -> NoReturn:
    if os.environ.get("DSFS_DEBUG"):
        traceback.print_exc()
    click.echo(f"dsfs: internal error: {type(exc).__name__}: {exc} "
               "(set DSFS_DEBUG=1 to see the traceback)", err=True)
    sys.exit(1)


#: errno values that say the machine (not dsfs) is the problem, for an OSError
#: that no layer below turned into a DsfsError.
_LOCAL_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
                 errno.ENOTDIR, errno.EISDIR}


def local_failure(exc: OSError) -> DsfsError | None:
    """The DsfsError for a full disk or a permission problem on this machine
    that escaped the engine as a bare OSError; None for anything else."""
    if exc.errno not in _LOCAL_ERRNOS:
        return None
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) and exc.filename is None:
        return DiskFullError(fullest_local_dir())
    return local_os_error(exc, exc.filename, "a local file")


def fullest_local_dir() -> str:
    """Of the places dsfs writes by itself (cache, data directory), the one
    whose file system is (almost) full: where a write that failed for lack of
    space without naming its file most likely went; else "a local disk"."""
    for path in (config.cache_dir(), config.data_dir()):
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            st = os.statvfs(probe)
        except OSError:
            continue
        if st.f_bavail * st.f_frsize < _NEARLY_FULL:
            return str(path)
    return "a local disk"


#: Free bytes below which a file system counts as the full one.
_NEARLY_FULL = 4 << 20


@click.group(cls=DsfsGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--store", envvar="DSFS_STORE", metavar="URL",
              help="Store: a directory path, file:///path or s3://bucket/prefix. "
                   "[env DSFS_STORE; default: an embedded store in $DSFS_DATA_DIR/store, "
                   "else $XDG_DATA_HOME/dsfs/store]")
@click.option("--cache-dir", envvar="DSFS_CACHE_DIR", metavar="DIR",
              help="Local chunk cache shared by all commands. "
                   "[env DSFS_CACHE_DIR; default: $XDG_CACHE_HOME/dsfs]")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or informational lines.")
@click.version_option(__version__, prog_name="dsfs")
@click.pass_context
def cli(ctx: click.Context, store: str | None, cache_dir: str | None, quiet: bool) -> None:
    """Versioned datasets: create versions that store only their changes, find
    them by project/name/version/tag, and get any version back."""
    ctx.obj = AppContext(store, cache_dir, quiet)


for module in (build, read, inspect, maintain, mount, overlay, cache, ui):
    for command in module.COMMANDS:
        cli.add_command(command)


def main() -> None:
    cli(prog_name="dsfs")
