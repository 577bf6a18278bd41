"""Python arguments as ``dsfs.Dataset`` takes them: paths as ``str`` or
``os.PathLike`` (one or a list), one word or several, the store and cache
given either way, ClearML keywords dsfs accepts only at their default, and
errors that name Python arguments rather than the CLI options the engine's
messages name (``in_python_words``)."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

from dsfs.errors import DsfsError, UsageError
from dsfs.repository import Repository

PathArg = str | os.PathLike[str]


def fspath(value: PathArg, argument: str) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise UsageError(f"{argument} must be a str or os.PathLike path, not "
                         f"{type(value).__name__}")
    return os.fspath(value)


def fspaths(value: PathArg | Sequence[PathArg], argument: str) -> list[str]:
    if isinstance(value, (str, os.PathLike)):
        return [fspath(value, argument)]
    return [fspath(v, argument) for v in value]


def open_repo(store: PathArg | None, cache_dir: PathArg | None) -> Repository:
    """The store (a URL, or a local path as str or os.PathLike) and the cache."""
    return Repository.open(None if store is None else fspath(store, "store"),
                           None if cache_dir is None else fspath(cache_dir, "cache_dir"))


def words(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def unsupported(argument: str, value: Any, default: Any, why: str) -> None:
    if value != default:
        raise UsageError(f"{argument}={value!r} is not supported by dsfs: {why}")


#: What the engine's messages say in command-line words, in Python words.
_PYTHON_WORDS = [
    ("delete them first or use --force", "delete them first or pass force=True"),
    ("automatically: give --version", "automatically: give dataset_version="),
    ("run 'dsfs create' first or pass --id", "call Dataset.create() first, or pass draft_id"),
    ("by --project and --name", "by dataset_project and dataset_name"),
    (": pass --store ", ": pass store="),
]


def in_python_words(method: Any) -> Any:
    """``method`` raising DsfsErrors whose messages name Python arguments
    instead of the command-line options the engine's messages name."""

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except DsfsError as exc:
            text = str(exc)
            for cli_words, python_words in _PYTHON_WORDS:
                text = text.replace(cli_words, python_words)
            if text == str(exc):
                raise
            exc.args = (text,)
            raise

    return call
