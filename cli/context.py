"""Shared options and the objects every command gets: repository, reporter, refs."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from dsfs.catalog import Catalog, Ref
from dsfs.errors import UsageError
from dsfs.format.manifest import Header
from dsfs.repository import Repository

from .output import TerminalReporter

_ID_TEXT = re.compile(r"^[0-9a-fA-F]{1,32}$")


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

    @property
    def reporter(self) -> TerminalReporter:
        return TerminalReporter(self.quiet)

    def resolve(self, ref: Ref) -> Header:
        return Catalog(self.repo).resolve(ref)


pass_app = click.make_pass_decorator(AppContext)


def parse_ref_text(text: str) -> Ref:
    """A REF given as one word: an id (or prefix), or PROJECT/NAME[@VERSION|#TAG]."""
    if _ID_TEXT.match(text):
        return Ref(id=text)
    if "/" not in text:
        raise UsageError(
            f"{text!r} is neither a version id nor PROJECT/NAME[@VERSION|#TAG]"
        )
    tag = version = None
    if "#" in text:
        text, tag = text.rsplit("#", 1)
    elif "@" in text:
        text, version = text.rsplit("@", 1)
    project, name = text.rsplit("/", 1)
    return Ref(project=project, name=name, version=version, tag=tag)


def ref_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """REF argument plus --project/--name/--version/--tag; passes ``ref: Ref``."""

    @click.argument("ref_text", metavar="[REF]", required=False)
    @click.option("--project", "-p", help="Project of the dataset (with --name).")
    @click.option("--name", "-n", help="Name of the dataset (with --project).")
    @click.option("--version", "-v", "version_", metavar="V", help="Version string.")
    @click.option("--tag", "-t", metavar="T", help="Highest version carrying this tag.")
    @functools.wraps(func)
    def wrapper(*args: Any, ref_text: str | None, project: str | None, name: str | None,
                version_: str | None, tag: str | None, **kwargs: Any) -> Any:
        if version_ and tag:
            raise UsageError("give --version or --tag, not both")
        if ref_text:
            if project or name or version_ or tag:
                raise UsageError("give a REF or --project/--name/--version/--tag, not both")
            ref = parse_ref_text(ref_text)
        elif project and name:
            ref = Ref(project=project, name=name, version=version_, tag=tag)
        else:
            raise UsageError("name a version: REF (id, id prefix or PROJECT/NAME[@VERSION]) "
                             "or --project P --name N [--version V | --tag T]")
        return func(*args, ref=ref, **kwargs)

    return wrapper


def split_multi(values: tuple[str, ...]) -> list[str]:
    """``--tags a --tags b,c`` → ['a', 'b', 'c']."""
    out: list[str] = []
    for value in values:
        out.extend(v.strip() for v in value.split(",") if v.strip())
    return out
