"""Publishing a version: the write order that keeps a store consistent.

1. packs (already uploaded by the packer), and a check that every older pack
   the version reuses still exists (gc may have removed an unreferenced one);
2. the manifest, with a conditional write;
3. the claim ``names/<project>/<name>/<version>``, with a conditional write.
   The claim is the commit point: until it exists the version is invisible,
   and a crash before it leaves only objects that gc may collect.

An automatically chosen version string that another writer claimed first is
bumped and the manifest written again; a version string the user chose is
reported as a conflict.
"""

from __future__ import annotations

from datetime import datetime, timezone

from dsfs import catalog as cat
from dsfs.errors import ConflictError, NotFoundError, StoreError
from dsfs.format import manifest as mf
from dsfs.format.manifest import Entry, Header
from dsfs.format.pack import pack_key
from dsfs.repository import Repository

MAX_VERSION_ATTEMPTS = 20


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_packs_exist(repo: Repository, pack_ids: set[str]) -> None:
    missing = [p for p in sorted(pack_ids) if not repo.store.exists(pack_key(p))]
    if missing:
        repo.sync_pack_index()
        raise StoreError(
            f"{len(missing)} pack(s) this version reuses were removed from the store "
            f"meanwhile (e.g. {missing[0]}); run the command again"
        )


def publish(repo: Repository, header: Header, delta: list[Entry], explicit_version: bool
            ) -> Header:
    """Write manifest then claim; return the header as published."""
    catalog = cat.Catalog(repo)
    store = repo.store
    for _attempt in range(MAX_VERSION_ATTEMPTS):
        claim = cat.claim_key(header.project, header.name, header.version)
        owner = _claim_owner(repo, claim)
        if owner == header.id:
            return header  # an earlier run of this close got all the way through
        if owner is not None:
            if explicit_version:
                raise ConflictError(
                    f"version {header.version} of {header.project}/{header.name} "
                    f"already exists ({owner})"
                )
            header.version = cat.next_patch_version(
                list(catalog.claimed_versions(header.project, header.name))
            )
            continue
        store.flush()  # packs durable before the manifest that references them
        header.created = header.created or now_iso()
        data = mf.encode(header, delta)
        key = mf.manifest_key(header.id)
        if not store.put_if_absent(key, data):
            # Ours from an interrupted run (ids are random and unclaimed): replace it.
            store.put(key, data)
        repo.forget_manifest(header.id)
        if store.put_if_absent(claim, header.id.encode()):
            return header
        if _claim_owner(repo, claim) == header.id:
            return header  # our own write, its reply lost
        store.delete(key)
        repo.forget_manifest(header.id)
        if explicit_version:
            raise ConflictError(
                f"version {header.version} of {header.project}/{header.name} was "
                "claimed by another writer at the same moment"
            )
        header.version = cat.next_patch_version(
            list(catalog.claimed_versions(header.project, header.name))
        )
    raise ConflictError(f"could not claim a version string for {header.project}/{header.name}")


def _claim_owner(repo: Repository, claim: str) -> str | None:
    try:
        return repo.store.get(claim).decode("ascii", "replace").strip()
    except NotFoundError:
        return None
