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
from dsfs.errors import EXIT_CODES, DiskFullError, DsfsError, LocalError, local_os_error

from . import completion
from .commands import build, cache, inspect, maintain, mount, overlay, read, ui
from .context import AppContext, FullHelpGroup
from .output import safe_path

EPILOG = "\b\nExit codes:\n" + "\n".join(
    f"  {code:>3}  {text}" for code, text in {**EXIT_CODES, 130: "interrupted"}.items()
)


#: Global options that may also come after the command name, and whether
#: they take a value.
GLOBAL_OPTIONS = {"--store": True, "--cache-dir": True, "--quiet": False, "-q": False}

#: Optional modules and the extra of dsfs that installs them.
EXTRAS = {"pyfuse3": "mount", "trio": "mount", "boto3": "s3", "botocore": "s3"}


def hoist_global_options(args: list[str]) -> list[str]:
    """``dsfs search --store X`` as ``dsfs --store X search``: global options
    found after the command name (and before a ``--``) move in front of it."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    command_seen = False
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        name = arg.split("=", 1)[0]
        if not command_seen:
            command_seen = not arg.startswith("-")
            (rest if command_seen else front).append(arg)
            if name in GLOBAL_OPTIONS and GLOBAL_OPTIONS[name] and "=" not in arg:
                if i + 1 < len(args):
                    front.append(args[i + 1])
                i += 2
                continue
        elif name in GLOBAL_OPTIONS:
            front.append(arg)
            if GLOBAL_OPTIONS[name] and "=" not in arg and i + 1 < len(args):
                front.append(args[i + 1])
                i += 1
        else:
            rest.append(arg)
        i += 1
    return front + rest


class DsfsGroup(FullHelpGroup):
    """Turns every expected failure into one line and its documented exit code."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(args))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:
            missing_extra(exc)
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


def missing_extra(exc: ModuleNotFoundError) -> NoReturn:
    """An optional dependency that is not installed: name the extra (exit 12)."""
    module = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(module)
    if extra is None:
        internal_error(exc)
    click.echo(f"dsfs: error: this needs the {extra!r} extra of dsfs, which is not "
               f"installed (no module {module!r}): pip install 'dsfs[{extra}]'", err=True)
    sys.exit(LocalError.exit_code)


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
@click.option("--quiet", "-q", is_flag=True,
              help="No progress bars, summaries or informational lines (ids, paths, "
                   "listings and errors are still printed).")
@click.version_option(__version__, prog_name="dsfs")
@click.pass_context
def cli(ctx: click.Context, store: str | None, cache_dir: str | None, quiet: bool) -> None:
    """Versioned datasets: create versions that store only their changes, find
    them by project/name/version/tag, and get any version back.

    Global options may also follow the command (dsfs search --store URL)."""
    ctx.obj = AppContext(store, cache_dir, quiet)
    if ctx.invoked_subcommand is not None:
        ctx.obj.temporary_cache_if_unusable(ctx.invoked_subcommand)


for module in (build, read, inspect, maintain, mount, overlay, cache, ui, completion):
    for command in module.COMMANDS:
        cli.add_command(command)


def main() -> None:
    cli(prog_name="dsfs")
