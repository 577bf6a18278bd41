"""The Python API: ``dsfs.Dataset``, with the verbs a ClearML Data user knows.

    ds = Dataset.create(dataset_project="vision", dataset_name="cats")
    ds.add_files("data/")
    ds.finalize()
    path = Dataset.get(dataset_project="vision", dataset_name="cats").get_local_copy()

The CLI is a thin layer over this class and ``dsfs.engine``.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from typing import Any

from dsfs import catalog as cat
from dsfs.engine import drafts, materialize, parts, treewalk, verify, versions
from dsfs.engine.latest import note_outdated_parent
from dsfs.engine.tree import Changes, TreeResolver
from dsfs.errors import UsageError
from dsfs.format.manifest import Entry, Header
from dsfs.report import Reporter
from dsfs.repository import Repository
from dsfs.shard import Shard


class Dataset:
    """One version of a dataset: a draft being built, or a published version."""

    def __init__(self, repo: Repository, header: Header, draft: drafts.Draft | None = None,
                 reporter: Reporter | None = None) -> None:
        self.repo = repo
        self._header = header
        self._draft = draft
        self.reporter = reporter or Reporter()

    # -- identity -------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._header.id

    @property
    def project(self) -> str:
        return self._header.project

    @property
    def name(self) -> str:
        return self._header.name

    @property
    def version(self) -> str:
        return self._header.version

    @property
    def tags(self) -> list[str]:
        return list(self._header.tags)

    @property
    def parents(self) -> list[str]:
        return list(self._header.parents)

    @property
    def header(self) -> Header:
        return self._header

    def is_final(self) -> bool:
        return self._draft is None

    def __repr__(self) -> str:
        state = "draft" if self._draft else "final"
        return f"<Dataset {self.project}/{self.name} {self.version} {self.id} ({state})>"

    # -- building a version ---------------------------------------------------------

    @classmethod
    def create(cls, dataset_project: str, dataset_name: str, dataset_version: str | None = None,
               dataset_tags: list[str] | None = None, parent_datasets: list[Any] | None = None,
               description: str = "", store: str | None = None, cache_dir: str | None = None,
               reporter: Reporter | None = None) -> Dataset:
        """A new draft.  ``parent_datasets``: ids, id prefixes or Dataset objects."""
        repo = Repository.open(store, cache_dir)
        catalog = cat.Catalog(repo)
        parent_ids = [
            p.id if isinstance(p, Dataset) else catalog.resolve(cat.Ref(id=str(p))).id
            for p in parent_datasets or []
        ]
        draft = versions.create(repo, dataset_project, dataset_name, dataset_version,
                                dataset_tags, parent_ids, description)
        return cls(repo, draft.header, draft, reporter)

    @classmethod
    def open_draft(cls, draft_id: str | None = None, store: str | None = None,
                   cache_dir: str | None = None, reporter: Reporter | None = None) -> Dataset:
        """A draft created earlier on this machine (the current one by default)."""
        draft = drafts.load(draft_id)
        repo = Repository.open(store or draft.store_url, cache_dir)
        return cls(repo, draft.header, draft, reporter)

    def _require_draft(self) -> drafts.Draft:
        if self._draft is None:
            raise UsageError(f"version {self.id} is final; create a child version to change it")
        return self._draft

    def add_files(self, path: str | os.PathLike[str] | list[str | os.PathLike[str]],
                  wildcard: str | None = None,
                  dataset_path: str | None = None, recursive: bool = True) -> int:
        paths = [os.fspath(path)] if isinstance(path, (str, os.PathLike)) else [
            os.fspath(p) for p in path]
        return versions.add_files(self._require_draft(), paths, dataset_path or "", wildcard,
                                  recursive, self.reporter)

    def remove_files(self, dataset_path: str) -> None:
        versions.remove_files(self._require_draft(), [dataset_path])

    def sync_folder(self, local_path: str, dataset_path: str | None = None) -> None:
        """Make the draft's ``dataset_path`` mirror ``local_path`` (adds, changes, removals)."""
        versions.mirror_folder(self._require_draft(), local_path, dataset_path or "",
                               self.reporter)

    def finalize(self) -> versions.CloseResult:
        """Upload what is new and publish the version (``dsfs close``), with a
        note if its parent is no longer the latest version of the dataset."""
        result = versions.close(self.repo, self.id, self.reporter)
        self._header, self._draft = result.header, None
        note_outdated_parent(self.repo, result.header, self.reporter)
        return result

    # -- reading a version ---------------------------------------------------------------

    @classmethod
    def get(cls, dataset_id: str | None = None, dataset_project: str | None = None,
            dataset_name: str | None = None, dataset_version: str | None = None,
            dataset_tag: str | None = None, store: str | None = None,
            cache_dir: str | None = None, reporter: Reporter | None = None) -> Dataset:
        repo = Repository.open(store, cache_dir)
        ref = cat.Ref(dataset_id, dataset_project, dataset_name, dataset_version, dataset_tag)
        return cls(repo, cat.Catalog(repo).resolve(ref), None, reporter)

    @classmethod
    def search(cls, project: str | None = None, name: str | None = None,
               tags: list[str] | None = None, store: str | None = None,
               cache_dir: str | None = None) -> list[Header]:
        """Headers of the published versions that match every given filter."""
        repo = Repository.open(store, cache_dir)
        found = []
        for header in cat.Catalog(repo).visible_headers():
            if project is not None and header.project != project:
                continue
            if name is not None and header.name != name:
                continue
            if tags and not set(tags) <= set(header.tags):
                continue
            found.append(header)
        return found

    def _tree(self) -> dict[str, Entry]:
        return TreeResolver(self.repo).tree(self.id)

    def get_local_copy(self, part: int | None = None, num_parts: int | None = None) -> str:
        """Path of a read-only copy, built from the shared cache (cheap when done
        before); with ``part``/``num_parts`` only that share of the files
        (``dsfs.engine.parts``; parts are numbered from 0)."""
        share = parts.check_part(part, num_parts)
        return str(materialize.local_copy(self.repo, self._final_header(), self.reporter,
                                          part=share))

    def get_mutable_local_copy(self, target_folder: str, overwrite: bool = False,
                               part: int | None = None, num_parts: int | None = None) -> str:
        share = parts.check_part(part, num_parts)
        return str(materialize.mutable_copy(self.repo, self._final_header(), target_folder,
                                            self.reporter, part=share, overwrite=overwrite))

    def _final_header(self) -> Header:
        if self._draft is not None:
            raise UsageError(f"version {self.id} is a draft: finalize it first")
        return self._header

    def list_files(self, dataset_path: str | None = None, part: int | None = None,
                   num_parts: int | None = None) -> list[str]:
        """Paths of the files and symlinks of this version, optionally matching a
        glob; with ``part``/``num_parts`` only that share (``dsfs.engine.parts``)."""
        share = parts.check_part(part, num_parts)
        if share is None:
            files: Iterator[Entry] = self.iter_files()
        else:
            files = parts.select(self.iter_files, lambda e: e.size, *share)
        return [e.path for e in files
                if dataset_path is None or fnmatch.fnmatchcase(e.path, dataset_path)]

    def shard(self, index: int, count: int) -> Shard:
        """Worker ``index``'s share of ``count`` (from 0): stable, disjoint,
        balanced by bytes (``dsfs.shard``; the split of ``get --part``)."""
        self._final_header()
        return Shard(self, index, count)

    def iter_files(self) -> Iterator[Entry]:
        """The files and symlinks of this version in path order, streamed from
        the cache's tree index (bounded memory at any size)."""
        return treewalk.iter_files(treewalk.open_tree(self.repo, self._final_header()))

    def iter_own_changes(self) -> Iterator[treewalk.Row]:
        """``own_changes`` as (path, old, new) rows in path order, streamed."""
        return treewalk.own_changes(self.repo, self._final_header())

    def entries(self) -> dict[str, Entry]:
        self._final_header()
        return self._tree()

    def own_changes(self) -> Changes:
        """What this version changed relative to its (merged) parents."""
        return treewalk.changes(treewalk.own_changes(self.repo, self._final_header()))

    def own_delta(self) -> list[Entry]:
        """The entries the manifest stores (the whole tree for a snapshot)."""
        return TreeResolver(self.repo).delta(self.id)

    def list_added_files(self) -> list[str]:
        return [e.path for e in self.own_changes().added]

    def list_removed_files(self) -> list[str]:
        return [e.path for e in self.own_changes().removed]

    def list_modified_files(self) -> list[str]:
        return [new.path for _old, new in self.own_changes().modified]

    def get_dependency_graph(self) -> dict[str, list[str]]:
        """Every ancestor (and this version): id → parent ids."""
        graph: dict[str, list[str]] = {}
        todo = [self.id]
        while todo:
            version_id = todo.pop()
            if version_id in graph:
                continue
            graph[version_id] = self.repo.header(version_id).parents
            todo.extend(graph[version_id])
        return graph

    def verify(self, folder: str | None = None) -> list[str]:
        """Problems found (empty when all is well): stored chunks, or a local folder."""
        if folder is None:
            return verify.verify_store(self.repo, self._final_header(), self.reporter)
        return verify.verify_folder(self.repo, self._final_header(), folder, self.reporter)


__all__ = ["Dataset"]
