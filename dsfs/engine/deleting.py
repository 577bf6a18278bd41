"""Deleting every version of a dataset (``delete --entire-dataset``,
``Dataset.delete(entire_dataset=True)``).

Versions are deleted children first, each as ``dsfs delete`` deletes one
(``versions.delete``: claim, attributes, metadata, manifest), so a version
whose children are gone loses its manifest too.  Before anything is deleted,
versions of *other* datasets built on this one are looked for: without
``force`` they make the whole command fail with nothing deleted; with
``force`` the versions they build on are hidden (their manifests stay for
those children), as ``delete --force`` does.  The data goes at the next
``gc``.  All of it runs under the store's exclusive lock, as one delete does.
"""

from __future__ import annotations

from dsfs import catalog as cat
from dsfs.engine import locks, versions
from dsfs.errors import ConflictError, NotFoundError
from dsfs.format.manifest import Header
from dsfs.report import Reporter
from dsfs.repository import Repository


def dataset_versions(repo: Repository, project: str, name: str) -> list[Header]:
    """The published versions of one dataset, children before their parents."""
    catalog = cat.Catalog(repo)
    headers = []
    for claim in catalog.claims(project, name):
        header = catalog._claimed_header(claim)
        if header is not None:
            headers.append(header)
    if not headers:
        raise NotFoundError(f"no dataset named {project}/{name} in {repo.store.url}")
    ordered: list[Header] = []
    remaining = {h.id: h for h in headers}
    while remaining:
        parents = {p for h in remaining.values() for p in h.parents}
        leaves = [h for vid, h in remaining.items() if vid not in parents]
        if not leaves:  # cannot happen with published versions; never loop
            leaves = list(remaining.values())
        leaves.sort(key=lambda h: cat.version_sort_key(h.version), reverse=True)
        for header in leaves:
            ordered.append(header)
            del remaining[header.id]
    return ordered


def delete_dataset(repo: Repository, project: str, name: str, force: bool = False,
                   dry_run: bool = False,
                   wait_seconds: float = versions.DELETE_WAIT_SECONDS,
                   reporter: Reporter | None = None) -> list[str]:
    """Delete every version of ``project/name``; returns their ids (children
    first).  ``dry_run``: only say which.  Under the store's exclusive lock
    (see ``versions.delete``), taken once for all of them."""
    if dry_run:
        return _delete_dataset(repo, project, name, force, dry_run=True)
    with locks.exclusive(repo, "delete", wait_seconds, reporter):
        return _delete_dataset(repo, project, name, force, dry_run=False)


def _delete_dataset(repo: Repository, project: str, name: str, force: bool,
                    dry_run: bool) -> list[str]:
    ordered = dataset_versions(repo, project, name)
    ours = {h.id for h in ordered}
    outside = [h for h in cat.Catalog(repo).visible_headers()
               if h.id not in ours and ours & set(h.parents)]
    if outside and not force:
        names = ", ".join(f"{h.project}/{h.name} {h.version}" for h in outside[:5])
        raise ConflictError(f"{len(outside)} version(s) of other datasets are built on "
                            f"{project}/{name}: {names}; delete them first or use force")
    if dry_run:
        return [h.id for h in ordered]
    for header in ordered:
        versions.delete_holding_the_store(repo, header, force=bool(outside))
    return [h.id for h in ordered]
