"""Shared options and the objects every command gets: repository, reporter, refs."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from dsfs import config
from dsfs.catalog import Catalog, Ref, parse_ref
from dsfs.errors import UsageError
from dsfs.format.manifest import Header
from dsfs.repository import CACHE_ENV, Repository, cache_problem

from .completion import complete_name, complete_project, complete_ref, complete_tag
from .output import TerminalReporter


class FullHelpGroup(click.Group):
    """A group whose command list shows each command's whole first sentence
    (click would cut it with "...")."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=10_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@dataclass
class AppContext:
    store: str | None
    cache_dir: str | None
    quiet: bool
    _repo: Repository | None = None

    @property
    def repo(self) -> Repository:
        if self._repo is None:
            self._repo = Repository.open(self.store, self.cache_dir)
        return self._repo

    def temporary_cache_if_unusable(self, command: str) -> None:
        """For a command that only reads versions: when the cache cannot be
        used (read-only, another user's), run on a private temporary cache
        instead, with a warning.  The cache holds derived data only, so the
        answer is the same, just slower (manifests read and trees indexed
        again, then thrown away).  Other commands fail on the cache as before."""
        if command not in READ_ONLY_COMMANDS:
            return
        problem = cache_problem(Path(self.cache_dir) if self.cache_dir else config.cache_dir())
        if problem is None:
            return
        temp = tempfile.mkdtemp(prefix="dsfs-cache-")
        atexit.register(shutil.rmtree, temp, True)
        self.reporter.warn(f"{problem}; `{command}` uses a temporary cache instead")
        self.cache_dir = temp
        os.environ[CACHE_ENV] = temp  # for the library calls that open their own

    @property
    def reporter(self) -> TerminalReporter:
        return TerminalReporter(self.quiet)

    def resolve(self, ref: Ref) -> Header:
        return Catalog(self.repo).resolve(ref)


#: Commands that only read versions: they run on a temporary cache when the
#: cache cannot be used (``AppContext.temporary_cache_if_unusable``).
READ_ONLY_COMMANDS = frozenset({"search", "list", "diff", "lineage", "verify"})

pass_app = click.make_pass_decorator(AppContext)


def parse_ref_text(text: str) -> Ref:
    """A REF given as one word (``dsfs.catalog.parse_ref``)."""
    return parse_ref(text)


def build_ref(ref_text: str | None, project: str | None, name: str | None,
              version: str | None, tag: str | None) -> Ref:
    """The one set of rules for naming a version on the command line: a REF
    word, or --project/--name with at most one of --version/--tag."""
    if version and tag:
        raise UsageError("give --version or --tag, not both")
    if ref_text:
        if project or name or version or tag:
            raise UsageError("give a REF or --project/--name/--version/--tag, not both")
        return parse_ref_text(ref_text)
    if project and name:
        return Ref(project=project, name=name, version=version, tag=tag)
    raise UsageError("name a version: REF (id, id prefix or PROJECT/NAME[@VERSION]) "
                     "or --project P --name N [--version V | --tag T]")


def ref_option_set(func: Callable[..., Any]) -> Callable[..., Any]:
    """--project/--name/--version/--tag, passed as project, name, version_, tag."""
    func = click.option("--tag", "-t", metavar="T", shell_complete=complete_tag,
                        help="Highest version carrying this tag.")(func)
    func = click.option("--version", "-v", "version_", metavar="V",
                        help="Version string.")(func)
    func = click.option("--name", "-n", shell_complete=complete_name,
                        help="Name of the dataset (with --project).")(func)
    return click.option("--project", "-p", shell_complete=complete_project,
                        help="Project of the dataset (with --name).")(func)


def ref_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """REF argument plus --project/--name/--version/--tag; passes ``ref: Ref``."""

    @click.argument("ref_text", metavar="[REF]", required=False, shell_complete=complete_ref)
    @click.option("--id", "id_text", metavar="REF", shell_complete=complete_ref,
                  help="The version, as REF (clearml-data's spelling).")
    @ref_option_set
    @functools.wraps(func)
    def wrapper(*args: Any, ref_text: str | None, id_text: str | None, project: str | None,
                name: str | None, version_: str | None, tag: str | None, **kwargs: Any) -> Any:
        if id_text is not None:
            if ref_text is not None:
                raise UsageError("give REF or --id, not both")
            ref_text = id_text
        return func(*args, ref=build_ref(ref_text, project, name, version_, tag), **kwargs)

    return wrapper


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--json``, passed as ``as_json``."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Print the result as JSON on stdout.")(func)


def split_multi(values: tuple[str, ...]) -> list[str]:
    """``--tags a --tags b,c`` → ['a', 'b', 'c']."""
    out: list[str] = []
    for value in values:
        out.extend(v.strip() for v in value.split(",") if v.strip())
    return out
