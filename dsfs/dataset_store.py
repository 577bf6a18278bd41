"""``Dataset``'s classmethods about the store's datasets, as ClearML has them:
``get``, ``search``, ``list_datasets``, ``rename``, ``move_to_project``,
``delete``, ``squash``; and how Python arguments name a version (``ref_of``,
``resolve``).  ``dsfs.dataset`` binds each function here as a classmethod of
``Dataset`` (its first parameter is the class), so ``Dataset.get(...)`` and
the others keep their ClearML spelling while the class stays small.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dsfs import catalog as cat
from dsfs.engine import attributes, deleting, versions
from dsfs.engine import search as searching
from dsfs.errors import NotFoundError, UsageError
from dsfs.format.manifest import Header
from dsfs.pyargs import PathArg, open_repo, unsupported, words
from dsfs.report import Reporter
from dsfs.repository import Repository

if TYPE_CHECKING:  # only for annotations: dsfs.dataset imports this module
    from dsfs.dataset import Dataset

def rename(cls: type[Dataset], new_dataset_name: str, dataset_project: str, dataset_name: str,
           store: PathArg | None = None, cache_dir: PathArg | None = None) -> list[str]:
    """Rename a dataset (every version); returns the ids renamed."""
    repo = open_repo(store, cache_dir)
    return attributes.rename_dataset(repo, dataset_project, dataset_name, dataset_project,
                                     new_dataset_name)


def move_to_project(cls: type[Dataset], new_dataset_project: str, dataset_project: str,
                    dataset_name: str, store: PathArg | None = None,
                    cache_dir: PathArg | None = None) -> list[str]:
    """Move a dataset (every version) to another project; returns the ids moved."""
    repo = open_repo(store, cache_dir)
    return attributes.rename_dataset(repo, dataset_project, dataset_name,
                                     new_dataset_project, dataset_name)


def delete(cls: type[Dataset], dataset_id: str | None = None, dataset_project: str | None = None,
           dataset_name: str | None = None, force: bool = False,
           dataset_version: str | None = None, entire_dataset: bool = False,
           shallow_search: bool = False, delete_files: bool = True,
           delete_external_files: bool = False, store: PathArg | None = None,
           cache_dir: PathArg | None = None, dry_run: bool = False) -> list[str]:
    """Delete one version, or with ``entire_dataset=True`` (and ``force=True``,
    as in ClearML) every version of a dataset; returns the ids deleted (or
    that would be, with ``dry_run``).  ``force`` also hides versions that
    other versions are built on.  The data goes at the next ``gc``."""
    unsupported("delete_external_files", delete_external_files, False,
                "dsfs never deletes objects it does not own")
    if dataset_id and (dataset_project or dataset_name):
        raise UsageError("give dataset_id, or dataset_project and dataset_name, not both")
    repo = open_repo(store, cache_dir)
    if entire_dataset:
        if not force:
            raise UsageError("Dataset.delete(entire_dataset=True) also needs force=True")
        if not dataset_project or not dataset_name:
            raise UsageError("entire_dataset=True needs dataset_project and dataset_name")
        return deleting.delete_dataset(repo, dataset_project, dataset_name, force, dry_run)
    header = cat.Catalog(repo).resolve(ref_of(dataset_id, dataset_project, dataset_name,
                                              dataset_version, None))
    if not dry_run:
        versions.delete(repo, header, force)
    return [header.id]


def squash(cls: type[Dataset], dataset_name: str, dataset_ids: Sequence[Any] | None = None,
           dataset_project_name_pairs: Sequence[tuple[str, str]] | None = None,
           output_url: str | None = None, dataset_project: str | None = None,
           store: PathArg | None = None, cache_dir: PathArg | None = None,
           reporter: Reporter | None = None) -> Dataset:
    """A new parentless version holding the merged trees (later wins) of
    the given versions, in the first one's project unless
    ``dataset_project`` is given."""
    repo = open_repo(store or output_url, cache_dir)
    catalog = cat.Catalog(repo)
    ids = [parent_id(catalog, d) for d in dataset_ids or []]
    ids += [catalog.resolve(cat.Ref(project=p, name=n)).id
            for p, n in dataset_project_name_pairs or []]
    if not ids:
        raise UsageError("Dataset.squash() needs dataset_ids or dataset_project_name_pairs")
    project = dataset_project or catalog.resolve(cat.Ref(id=ids[0])).project
    result = versions.squash(repo, ids, project, dataset_name)
    return cls(repo, result.header, None, reporter)


def list_datasets(cls: type[Dataset], dataset_project: str | None = None,
                  partial_name: str | None = None, tags: Sequence[str] | None = None,
                  ids: Sequence[str] | None = None, only_completed: bool = True,
                  recursive_project_search: bool = True, include_archived: bool = True,
                  store: PathArg | None = None, cache_dir: PathArg | None = None
                  ) -> list[dict[str, Any]]:
    """Published versions as ClearML's dicts: name, project, id, version,
    tags, created, status ("completed"), plus description, files, size.
    ``partial_name`` matches part of the name, case-insensitively (a
    regular expression); sub-projects are searched unless
    ``recursive_project_search=False``."""
    repo = open_repo(store, cache_dir)
    headers = searching.find_versions(repo, dataset_project, partial_name, words(tags),
                                      words(ids), partial_name=True,
                                      recursive=recursive_project_search)
    return [version_dict(h) for h in headers]


def get(cls: type[Dataset], dataset_id: str | None = None, dataset_project: str | None = None,
        dataset_name: str | None = None, dataset_version: str | None = None,
        dataset_tag: str | None = None, store: PathArg | None = None,
        cache_dir: PathArg | None = None, reporter: Reporter | None = None,
        dataset_tags: Sequence[str] | None = None, only_completed: bool = False,
        only_published: bool = False, include_archived: bool = False,
        auto_create: bool = False, writable_copy: bool = False, alias: str | None = None,
        overridable: bool = False, shallow_search: bool = False,
        silence_alias_warnings: bool = False) -> Dataset:
    """A published version: by ``dataset_id`` (an id, a unique prefix, or a
    reference ``PROJECT/NAME[@VERSION|#TAG]``), or by project and name
    with an optional version string and tag(s) (the highest version that
    matches).  ``auto_create``: a new draft if the dataset does not exist;
    ``writable_copy``: a new draft whose parent is the version found.
    Every version dsfs finds is completed; ClearML's ``alias`` and
    ``overridable`` are for tasks and change nothing here."""
    repo = open_repo(store, cache_dir)
    wanted_tags = words(dataset_tags) + words(dataset_tag)
    try:
        header = resolve(repo, dataset_id, dataset_project, dataset_name, dataset_version,
                         wanted_tags)
    except NotFoundError:
        if not auto_create or dataset_id or not (dataset_project and dataset_name):
            raise
        return cls.create(dataset_project, dataset_name, dataset_version, wanted_tags,
                          store=store, cache_dir=cache_dir, reporter=reporter)
    if writable_copy:
        return cls.create(header.project, header.name, dataset_tags=wanted_tags,
                          parent_datasets=[header.id], store=store, cache_dir=cache_dir,
                          reporter=reporter)
    return cls(repo, header, None, reporter)


def search(cls: type[Dataset], project: str | None = None, name: str | None = None,
           tags: list[str] | None = None, store: PathArg | None = None,
           cache_dir: PathArg | None = None, ids: Sequence[str] = (),
           partial_name: bool = False, recursive: bool = False) -> list[Header]:
    """Headers of the published versions that match every given filter
    (``dsfs.engine.search``)."""
    repo = open_repo(store, cache_dir)
    return searching.find_versions(repo, project, name, tags or [], ids,
                                   partial_name=partial_name, recursive=recursive)


def ref_of(dataset_id: str | None, project: str | None, name: str | None,
           version: str | None, tag: str | None) -> cat.Ref:
    """The Ref for Python arguments; ``dataset_id`` may be an id, a prefix or a
    one-word reference."""
    if dataset_id:
        if project or name:
            raise UsageError("give dataset_id, or dataset_project and dataset_name, not both")
        ref = cat.parse_ref(str(dataset_id))
        if (version and ref.version not in (None, version)) or (tag and ref.tag):
            raise UsageError(f"dataset_id {dataset_id!r} already names a version")
        if version or tag:
            if ref.id:
                raise UsageError("dataset_version and dataset_tags need a dataset name, "
                                 "not an id")
            ref.version, ref.tag = version or ref.version, tag or ref.tag
        return ref
    if not project or not name:
        raise UsageError("name a version: dataset_id, or dataset_project and dataset_name")
    if version and tag:
        raise UsageError("give dataset_version or dataset_tags, not both")
    return cat.Ref(project=project, name=name, version=version, tag=tag)


def resolve(repo: Repository, dataset_id: str | None, project: str | None, name: str | None,
            version: str | None, tags: list[str]) -> Header:
    """The version the Python arguments name.  A project without a name (as
    ClearML allows) names the most recently created version in that project
    (sub-projects aside) that has the version string and every tag given."""
    catalog = cat.Catalog(repo)
    if project and not name and not dataset_id:
        found = [h for h in searching.find_versions(repo, project, None, tags,
                                                    recursive=False)
                 if version in (None, h.version)]
        if not found:
            raise NotFoundError(f"no version in project {project!r}"
                                + (f" carries all of {tags}" if tags else ""))
        return max(found, key=lambda h: (h.created, cat.version_sort_key(h.version)))
    if len(tags) <= 1:
        return catalog.resolve(ref_of(dataset_id, project, name, version,
                                      tags[0] if tags else None))
    ref = ref_of(dataset_id, project, name, version, None)
    if ref.id:
        header = catalog.resolve(ref)
        if not set(tags) <= set(header.tags):
            raise NotFoundError(f"version {header.id} does not carry every tag of {tags}")
        return header
    found = [h for h in searching.find_versions(repo, ref.project, ref.name, tags,
                                                recursive=False)
             if ref.version in (None, h.version)]
    if not found:
        raise NotFoundError(f"no version of {ref.project}/{ref.name} carries all of {tags}")
    return max(found, key=lambda h: cat.version_sort_key(h.version))


def parent_id(catalog: cat.Catalog, parent: Any) -> str:
    """The id of a parent given as a Dataset, an id, a prefix or a reference."""
    if not isinstance(parent, str) and isinstance(getattr(parent, "id", None), str):
        return str(parent.id)
    return catalog.resolve(cat.parse_ref(str(parent))).id


def version_dict(header: Header) -> dict[str, Any]:
    """A version as ``list_datasets`` and ``search --json`` show it."""
    return {"id": header.id, "name": header.name, "project": header.project,
            "version": header.version, "tags": list(header.tags),
            "created": header.created, "status": "completed",
            "description": header.description, "parents": list(header.parents),
            "files": header.stats.get("files", 0), "size": header.stats.get("size", 0)}
