"""Shell completion: ``dsfs completion bash|zsh|fish`` prints the script that
a shell sources, and REFs, projects, names and tags complete from the store.

Click drives the completion itself (the script calls ``dsfs`` back with
``_DSFS_COMPLETE`` set); this module adds the words that come from the store.
Listing a store can be slow (S3), so the words are kept in the cache
directory for ``TTL_SECONDS``; a store that cannot be read completes nothing
rather than print an error into the user's command line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import click
from click.shell_completion import CompletionItem, get_completion_class

from dsfs import config
from dsfs.catalog import Catalog
from dsfs.fsutil import write_atomic
from dsfs.repository import Repository

TTL_SECONDS = 120


def _words(ctx: click.Context) -> dict[str, list[str]]:
    root = ctx.find_root()
    store = root.params.get("store") or os.environ.get("DSFS_STORE")
    cache_dir = root.params.get("cache_dir") or os.environ.get("DSFS_CACHE_DIR")
    base = Path(cache_dir) if cache_dir else config.cache_dir()
    memo = base / "completion" / (hashlib.sha256(str(store).encode()).hexdigest()[:16] + ".json")
    try:
        if time.time() - memo.stat().st_mtime < TTL_SECONDS:
            loaded: dict[str, list[str]] = json.loads(memo.read_text())
            return loaded
    except (OSError, ValueError):
        pass
    refs: set[str] = set()
    projects: set[str] = set()
    names: set[str] = set()
    tags: set[str] = set()
    for header in Catalog(Repository.open(store, cache_dir)).visible_headers():
        dataset = f"{header.project}/{header.name}"
        refs.update({dataset, f"{dataset}@{header.version}"})
        refs.update(f"{dataset}#{t}" for t in header.tags)
        projects.add(header.project)
        names.add(header.name)
        tags.update(header.tags)
    words = {"ref": sorted(refs), "project": sorted(projects), "name": sorted(names),
             "tag": sorted(tags)}
    with contextlib.suppress(OSError):
        write_atomic(memo, json.dumps(words), durable=False)
    return words


def _completer(kind: str) -> Any:
    def complete(ctx: click.Context, param: click.Parameter,
                 incomplete: str) -> list[CompletionItem]:
        try:
            words = _words(ctx)[kind]
        except Exception:  # noqa: BLE001 - completion must never print an error
            return []
        return [CompletionItem(w) for w in words if w.startswith(incomplete)]

    return complete


complete_ref = _completer("ref")
complete_project = _completer("project")
complete_name = _completer("name")
complete_tag = _completer("tag")


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the completion script for SHELL (commands, options, REFs).

    \b
    bash:  echo 'eval "$(dsfs completion bash)"' >> ~/.bashrc
    zsh:   echo 'eval "$(dsfs completion zsh)"' >> ~/.zshrc
    fish:  dsfs completion fish > ~/.config/fish/completions/dsfs.fish

    REFs, projects, names and tags complete from the store, remembered for
    two minutes in the cache directory."""
    root = click.get_current_context().find_root().command
    shell_class = get_completion_class(shell)
    assert shell_class is not None  # the choices are the shells click supports
    click.echo(shell_class(root, {}, "dsfs", "_DSFS_COMPLETE").source())


COMMANDS = [completion]
