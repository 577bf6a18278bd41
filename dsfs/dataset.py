"""The Python API: ``dsfs.Dataset``, with the verbs a ClearML Data user knows.

    ds = Dataset.create(dataset_project="vision", dataset_name="cats")
    ds.add_files("data/")
    ds.finalize()
    path = Dataset.get(dataset_project="vision", dataset_name="cats").get_local_copy()

The CLI is a thin layer over this class and ``dsfs.engine``.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from dsfs import catalog as cat
from dsfs import dataset_store
from dsfs.dataset_store import parent_id
from dsfs.engine import (
    attributes,
    drafts,
    materialize,
    parts,
    search,
    treewalk,
    verify,
    versions,
)
from dsfs.engine.latest import note_outdated_parent
from dsfs.engine.scan import SourceItem
from dsfs.engine.tree import Changes, TreeResolver
from dsfs.errors import UsageError
from dsfs.format.manifest import DIR, FILE, Entry, Header
from dsfs.pyargs import (
    PathArg,
    fspath,
    fspaths,
    in_python_words,
    open_repo,
    unsupported,
    words,
)
from dsfs.report import Reporter
from dsfs.repository import Repository
from dsfs.shard import Shard


class Dataset:
    """One version of a dataset: a draft being built, or a published version.

    Method names and arguments follow ClearML's ``clearml.Dataset``, so a
    script written for it runs with ``from dsfs import Dataset`` wherever it
    uses no server, task or UI feature (docs/cli.md, "From ClearML Data")."""

    def __init__(self, repo: Repository, header: Header, draft: drafts.Draft | None = None,
                 reporter: Reporter | None = None) -> None:
        self.repo = repo
        self._header = header
        self._draft = draft
        self.reporter = reporter or Reporter()
        #: For ``is_dirty``: the draft changed since its last ``upload()``.
        self._dirty = draft is not None and bool(draft.ops)

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

    @tags.setter
    def tags(self, values: Sequence[str]) -> None:
        self.remove_tags(self.tags)
        self.add_tags(list(values))

    @property
    def description(self) -> str:
        return self._header.description

    @property
    def parents(self) -> list[str]:
        return list(self._header.parents)

    @property
    def header(self) -> Header:
        return self._header

    def is_final(self) -> bool:
        return self._draft is None

    def is_dirty(self) -> bool:
        """Whether the draft has changes that ``upload()`` has not uploaded yet
        (False for a published version)."""
        return self._draft is not None and self._dirty

    def get_default_storage(self) -> str:
        """The store this version lives in (its data and its manifest)."""
        return self.repo.store.url

    def __repr__(self) -> str:
        state = "draft" if self._draft else "final"
        return f"<Dataset {self.project}/{self.name} {self.version} {self.id} ({state})>"

    # -- building a version ---------------------------------------------------------

    @classmethod
    def create(cls, dataset_project: str | None = None, dataset_name: str | None = None,
               dataset_version: str | None = None, dataset_tags: Sequence[str] | None = None,
               parent_datasets: Sequence[Any] | None = None, description: str | None = None,
               store: PathArg | None = None, cache_dir: PathArg | None = None,
               reporter: Reporter | None = None, use_current_task: bool = False,
               output_uri: str | None = None) -> Dataset:
        """A new draft.  ``parent_datasets``: ids, id prefixes, references
        ``PROJECT/NAME[@VERSION|#TAG]`` or Dataset objects; without
        ``dataset_project`` the last parent's project is used (as ClearML
        does).  ``output_uri``, ClearML's storage location, is the store when
        ``store`` is not given: dsfs keeps a version's data and manifest in
        one store."""
        unsupported("use_current_task", use_current_task, False,
                    "dsfs has no ClearML tasks")
        repo = open_repo(store or output_uri, cache_dir)
        catalog = cat.Catalog(repo)
        parent_ids = [parent_id(catalog, p) for p in parent_datasets or []]
        if dataset_project is None and parent_ids:
            dataset_project = catalog.resolve(cat.Ref(id=parent_ids[-1])).project
        if not dataset_project or not dataset_name:
            raise UsageError("Dataset.create() needs dataset_project and dataset_name "
                             "(dataset_project may come from parent_datasets)")
        draft = versions.create(repo, dataset_project, dataset_name, dataset_version,
                                words(dataset_tags), parent_ids, description or "")
        return cls(repo, draft.header, draft, reporter)

    @classmethod
    def open_draft(cls, draft_id: str | None = None, store: PathArg | None = None,
                   cache_dir: PathArg | None = None, reporter: Reporter | None = None) -> Dataset:
        """A draft created earlier on this machine (the current one by default)."""
        draft = drafts.load(draft_id)
        repo = open_repo(store or draft.store_url, cache_dir)
        return cls(repo, draft.header, draft, reporter)

    def _require_draft(self) -> drafts.Draft:
        if self._draft is None:
            raise UsageError(f"version {self.id} is final; create a child version to change it")
        return self._draft

    def _changed(self) -> None:
        self._dirty = True

    def add_files(self, path: PathArg | Sequence[PathArg],
                  wildcard: str | Sequence[str] | None = None,
                  dataset_path: str | None = None, recursive: bool = True,
                  local_base_folder: PathArg | None = None, verbose: bool = False,
                  max_workers: int | None = None) -> int:
        """Record files (read when the draft is uploaded or finalized); returns
        how many were added.  ``wildcard``: one glob or several; a folder's
        contents go below ``dataset_path``, or, with ``local_base_folder``, at
        their path relative to that folder."""
        draft = self._require_draft()
        paths = fspaths(path, "path")
        patterns = None if wildcard is None else (
            wildcard if isinstance(wildcard, str) else list(wildcard))
        if local_base_folder is None:  # one call: one draft save, URLs listed together
            count = versions.add_files(draft, paths, dataset_path or "", patterns, recursive,
                                       self.reporter)
            self._changed()
            return count
        count = 0
        for one in paths:
            folder = dataset_path or ""
            if local_base_folder is not None:
                base = os.path.abspath(fspath(local_base_folder, "local_base_folder"))
                where = os.path.abspath(one)
                where = where if os.path.isdir(where) else os.path.dirname(where)
                rel = os.path.relpath(where, base)
                if rel.startswith(".."):
                    raise UsageError(f"path {one!r} is not inside local_base_folder {base!r}")
                folder = "/".join(p for p in (folder, "" if rel == "." else rel) if p)
            count += versions.add_files(draft, [one], folder, patterns, recursive,
                                        self.reporter)
        self._changed()
        return count

    def add_external_files(self, source_url: str | Sequence[str],
                           wildcard: str | Sequence[str] | None = None,
                           dataset_path: str | None = None, recursive: bool = True,
                           verbose: bool = False, max_workers: int | None = None) -> int:
        """Record objects by URL without storing them (ClearML's links):
        ``s3://bucket/key``, an ``s3://bucket/prefix/`` folder (its objects
        below ``dataset_path`` at their relative paths), or ``https://``;
        ``finalize`` reads each once for its digests and reads later fetch
        from the URL.  Returns how many were added."""
        draft = self._require_draft()
        urls = [source_url] if isinstance(source_url, str) else list(source_url)
        for url in urls:
            if not isinstance(url, str) or "://" not in url:
                raise UsageError(f"source_url {url!r} is not a URL (s3://, https:// or "
                                 "http://); add local files with add_files()")
        patterns = None if wildcard is None else (
            wildcard if isinstance(wildcard, str) else list(wildcard))
        count = versions.add_files(draft, urls, dataset_path or "", patterns, recursive,
                                   self.reporter)
        self._changed()
        return count

    def remove_files(self, dataset_path: str | None = None, recursive: bool = True,
                     verbose: bool = False) -> int:
        """Remove dataset paths matching a glob (a folder removes all below it);
        returns how many files and symlinks that removes."""
        draft = self._require_draft()
        if not dataset_path:
            raise UsageError("remove_files() needs dataset_path (a path or glob in the dataset)")
        before = versions.preview(self.repo, draft)
        versions.remove_files(draft, [dataset_path])
        after = versions.preview(self.repo, draft)
        self._changed()
        return sum(1 for p, e in before.items() if p not in after and e.kind != DIR)

    def sync_folder(self, local_path: PathArg, dataset_path: str | None = None,
                    verbose: bool = False) -> tuple[int, int, int]:
        """Make the draft's ``dataset_path`` mirror ``local_path``; returns
        ClearML's ``(removed, added, modified)`` counts.  Here a file counts
        as modified when its size or mtime changed; ``finalize`` hashes it and
        keeps it unchanged if its bytes are the same."""
        draft = self._require_draft()
        before = versions.preview(self.repo, draft)
        versions.mirror_folder(draft, fspath(local_path, "local_path"), dataset_path or "",
                               self.reporter)
        after = versions.preview(self.repo, draft)
        self._changed()
        removed = sum(1 for p, e in before.items() if p not in after and e.kind != DIR)
        added = sum(1 for p, e in after.items() if p not in before and e.kind != DIR)
        modified = sum(1 for p, e in after.items()
                       if p in before and e.kind != DIR and _differs(before[p], e))
        return removed, added, modified

    def upload(self, show_progress: bool = True, verbose: bool = False,
               output_url: str | None = None, compression: str | None = None,
               chunk_size: int | None = None, max_workers: int | None = None,
               retries: int = 3, preview: bool = True) -> None:
        """Hash, deduplicate, pack and upload the draft's new files without
        publishing (resumable: packs already stored are not uploaded again).
        ``finalize()`` publishes; it reads the files again to check them but
        uploads nothing more."""
        draft = self._require_draft()
        if output_url is not None and output_url.rstrip("/") != self.repo.store.url.rstrip("/"):
            raise UsageError(f"upload(output_url={output_url!r}): this draft's data goes to "
                             f"its store {self.repo.store.url}; give store= to "
                             "Dataset.create() to choose another")
        versions.upload(self.repo, draft.header.id, self.reporter)
        self._dirty = False

    def finalize(self, verbose: bool = False, raise_on_error: bool = True,
                 auto_upload: bool = False) -> versions.CloseResult:
        """Upload what is new (if ``upload()`` did not) and publish the version
        (``dsfs close``), with a note if its parent is no longer the latest
        version of the dataset.  The result is true (ClearML returns True)."""
        draft_id = self.id
        result = versions.close(self.repo, draft_id, self.reporter)
        if result.header.id != draft_id:  # a lost race for the version string
            attributes.copy_metadata(self.repo, draft_id, result.header.id)
        self._header, self._draft, self._dirty = result.header, None, False
        note_outdated_parent(self.repo, result.header, self.reporter)
        return result

    # -- attributes -------------------------------------------------------------------

    def add_tags(self, tags: str | Sequence[str]) -> None:
        wanted = words(tags)
        if self._draft is not None:
            self._draft.header.tags = sorted(set(self._draft.header.tags)
                                             | set(versions.check_tags(wanted)))
            drafts.save(self._draft)
            self._header = self._draft.header
            return
        new = versions.set_tags(self.repo, self._header, wanted, [])
        self._header.tags = new

    def remove_tags(self, tags: str | Sequence[str]) -> None:
        """Remove tags the version has (others are ignored, as in ClearML)."""
        gone = [t for t in words(tags) if t in self.tags]
        if self._draft is not None:
            self._draft.header.tags = sorted(set(self._draft.header.tags) - set(gone))
            drafts.save(self._draft)
            self._header = self._draft.header
            return
        self._header.tags = versions.set_tags(self.repo, self._header, [], gone)

    def set_description(self, description: str) -> None:
        if self._draft is not None:
            self._draft.header.description = str(description)
            drafts.save(self._draft)
            self._header = self._draft.header
            return
        attributes.set_description(self.repo, self._header, description)
        self._header.description = str(description)

    def set_metadata(self, metadata: Any, metadata_name: str = "metadata",
                     ui_visible: bool = True) -> None:
        """Store a JSON-able value (dict, list, ...) or a file (a path: a CSV or
        Parquet table, ...) with this version under ``metadata_name``."""
        raw = attributes.encode_metadata(metadata)
        attributes.put_metadata(self.repo, self.id, metadata_name, raw)

    def get_metadata(self, metadata_name: str = "metadata") -> Any:
        """The value stored by ``set_metadata``; for a file, the path of a
        local copy."""
        return attributes.get_metadata(self.repo, self.id, metadata_name)

    def list_metadata(self) -> list[str]:
        return attributes.list_metadata(self.repo, self.id)

    # -- the store's datasets: classmethods, as in ClearML (dsfs.dataset_store) -----------

    get = classmethod(dataset_store.get)
    search = classmethod(dataset_store.search)
    list_datasets = classmethod(dataset_store.list_datasets)
    rename = classmethod(dataset_store.rename)
    move_to_project = classmethod(dataset_store.move_to_project)
    delete = classmethod(dataset_store.delete)
    squash = classmethod(dataset_store.squash)

    def _tree(self) -> dict[str, Entry]:
        return TreeResolver(self.repo).tree(self.id)

    def get_local_copy(self, use_soft_links: bool | None = None, part: int | None = None,
                       num_parts: int | None = None, raise_on_error: bool = True,
                       max_workers: int | None = None) -> str:
        """Path of a read-only copy, built from the shared cache (cheap when done
        before); with ``part``/``num_parts`` only that share of the files
        (``dsfs.engine.parts``; parts are numbered from 0)."""
        share = parts.check_part(part, num_parts)
        return str(materialize.local_copy(self.repo, self._final_header(), self.reporter,
                                          part=share))

    def get_mutable_local_copy(self, target_folder: PathArg, overwrite: bool = False,
                               part: int | None = None, num_parts: int | None = None,
                               raise_on_error: bool = True,
                               max_workers: int | None = None) -> str:
        """A writable copy in ``target_folder`` (new or empty; ``overwrite``
        empties it first)."""
        target_folder = fspath(target_folder, "target_folder")
        share = parts.check_part(part, num_parts)
        return str(materialize.mutable_copy(self.repo, self._final_header(), target_folder,
                                            self.reporter, part=share, overwrite=overwrite))

    def _final_header(self) -> Header:
        if self._draft is not None:
            raise UsageError(f"version {self.id} is a draft: finalize it first")
        return self._header

    def list_files(self, dataset_path: str | None = None, recursive: bool = True,
                   dataset_id: str | None = None, part: int | None = None,
                   num_parts: int | None = None) -> list[str]:
        """Paths of the files and symlinks of this version (or of ``dataset_id``)
        in a folder or matching a glob, as ClearML matches them
        (``dsfs.engine.search.path_matcher``); with ``part``/``num_parts``
        only that share (``dsfs.engine.parts``)."""
        if dataset_id is not None and dataset_id != self.id:
            other = Dataset(self.repo, cat.Catalog(self.repo).resolve(cat.parse_ref(dataset_id)),
                            None, self.reporter)
            return other.list_files(dataset_path, recursive, None, part, num_parts)
        share = parts.check_part(part, num_parts)
        if share is None:
            files: Iterator[Entry] = self.iter_files()
        else:
            files = parts.select(self.iter_files, lambda e: e.size, *share)
        matches = search.path_matcher(dataset_path, recursive)
        return [e.path for e in files if matches(e.path)]

    @property
    def file_entries_dict(self) -> dict[str, Entry]:
        """Path → entry (size, digest, mode, chunks) of every file held in the
        store (external files are in ``link_entries_dict``, as in ClearML)."""
        return {e.path: e for e in self.iter_files() if e.kind == FILE and e.url is None}

    @property
    def file_entries(self) -> list[Entry]:
        return list(self.file_entries_dict.values())

    @property
    def link_entries_dict(self) -> dict[str, Entry]:
        """Path → entry of every external file (ClearML's links): ``entry.url``
        is the object's URL, ``entry.etag`` its ETag when it was added."""
        return {e.path: e for e in self.iter_files() if e.kind == FILE and e.url is not None}

    def get_num_chunks(self, include_parents: bool = True) -> int:
        """How many distinct chunks hold this version's files (with
        ``include_parents=False``, only those of the files it changed)."""
        if include_parents:
            entries: Iterable[Entry] = self.iter_files()
        else:
            entries = (new for _path, _old, new in self.iter_own_changes() if new is not None)
        return len({ref.chunk_id for e in entries for ref in e.chunks})

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

    def verify_dataset_hash(self, local_copy_path: PathArg | None = None,
                            skip_hash: bool = False, verbose: bool = False) -> list[str]:
        """ClearML's check of a local copy: the paths that are missing or differ
        (an empty list when all is well)."""
        folder = (self.get_local_copy() if local_copy_path is None
                  else fspath(local_copy_path, "local_copy_path"))
        return sorted({p.rsplit(": ", 1)[0] for p in self.verify(folder)})

    def verify(self, folder: str | None = None) -> list[str]:
        """Problems found (empty when all is well): stored chunks, or a local folder."""
        if folder is not None:
            folder = fspath(folder, "folder")
        if folder is None:
            return verify.verify_store(self.repo, self._final_header(), self.reporter)
        return verify.verify_folder(self.repo, self._final_header(), folder, self.reporter)


def _differs(old: Entry | SourceItem, new: Entry | SourceItem) -> bool:
    """Whether a path of a draft's preview changed, judged as ``sync`` first
    judges it: kind, size, and mtime for a local file, target for a symlink."""
    if old.kind != new.kind or old.size != new.size:
        return True
    if new.kind == FILE:
        return isinstance(new, SourceItem) and old.mtime_ns != new.mtime_ns
    return old.target != new.target


for _name, _member in list(vars(Dataset).items()):
    if _name.startswith("_"):
        continue
    if isinstance(_member, classmethod):
        setattr(Dataset, _name, classmethod(in_python_words(_member.__func__)))
    elif inspect.isfunction(_member):
        setattr(Dataset, _name, in_python_words(_member))


__all__ = ["Dataset"]
