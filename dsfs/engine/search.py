"""Finding versions by name, project, tags and ids, and files by a dataset
path pattern, with ClearML Data's matching rules.

* A project matches itself and, unless ``recursive`` is off, its
  sub-projects: ``vision`` matches ``vision`` and ``vision/faces``.
* A name pattern matches partially and case-insensitively, as a regular
  expression (``Dataset.list_datasets(partial_name=...)``, ``search --name``);
  text that is not a valid expression matches as plain text.
* A dataset path pattern (``list_files(dataset_path=...)``, ``list --filter``)
  matches a file whose path matches it as a glob, or that lies in a folder
  that matches it: ``train`` and ``train/*`` both select the files below
  ``train/`` (only those directly in it when ``recursive`` is off).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable

from dsfs import catalog as cat
from dsfs.format.manifest import Header
from dsfs.repository import Repository


def project_matches(project: str, wanted: str, recursive: bool = True) -> bool:
    wanted = wanted.strip("/")
    return project == wanted or (recursive and project.startswith(wanted + "/"))


def name_matcher(pattern: str) -> Callable[[str], bool]:
    try:
        expression = re.compile(pattern, re.IGNORECASE)
    except re.error:
        lowered = pattern.lower()
        return lambda name: lowered in name.lower()
    return lambda name: expression.search(name) is not None


def find_versions(repo: Repository, project: str | None = None, name: str | None = None,
                  tags: Iterable[str] = (), ids: Iterable[str] = (), *,
                  partial_name: bool = False, recursive: bool = True) -> list[Header]:
    """Published versions matching every filter given, in (project, name,
    version) order.  ``name`` is exact unless ``partial_name``; ``ids`` are
    full ids or prefixes (a version matches any of them)."""
    wanted_tags = set(tags)
    id_prefixes = [i.strip().lower() for i in ids if i.strip()]
    match_name = name_matcher(name) if name is not None and partial_name else None
    found = []
    for header in cat.Catalog(repo).visible_headers():
        if project is not None and not project_matches(header.project, project, recursive):
            continue
        if name is not None and not (match_name(header.name) if match_name
                                     else header.name == name):
            continue
        if wanted_tags and not wanted_tags <= set(header.tags):
            continue
        if id_prefixes and not any(header.id.startswith(p) for p in id_prefixes):
            continue
        found.append(header)
    return found


def path_matcher(pattern: str | None, recursive: bool = True) -> Callable[[str], bool]:
    """A test of dataset paths for a ClearML-style dataset path pattern."""
    if pattern is None:
        return lambda path: recursive or "/" not in path
    pattern = pattern.strip("/")
    if pattern in ("", "*"):
        return lambda path: recursive or "/" not in path

    def matches(path: str) -> bool:
        if fnmatch.fnmatchcase(path, pattern) and (
                recursive or path.count("/") == pattern.count("/")):
            return True
        parts = path.split("/")
        # the folders holding the file: all of them, or only its own folder
        depths = range(1, len(parts)) if recursive else range(len(parts) - 1, len(parts))
        return any(depth > 0 and fnmatch.fnmatchcase("/".join(parts[:depth]), pattern)
                   for depth in depths)

    return matches
