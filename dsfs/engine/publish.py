"""Publishing a version: the write order that keeps a store consistent.

1. packs (already uploaded by the packer), made durable with ``Store.flush``,
   and a check that every older pack the version reuses still exists (gc may
   have removed an unreferenced one);
2. the manifest, with a conditional write, uploaded from a spool file under
   the cache (never held in memory; the store makes it visible only whole,
   ``Store.put_file_if_absent``), which becomes its cached copy;
3. the claim ``names/<project>/<name>/<version>``, with a conditional write.
   The claim is the commit point: until it exists the version is invisible,
   and a crash before it leaves only objects that gc may collect.

A manifest key is never written twice: whenever an attempt cannot use its
(id, version) pair — the version string was claimed by another writer, or a
manifest with that id is already there from an interrupted run — the next
attempt takes a fresh id, so a manifest cached anywhere never goes stale.
Every attempt is reported to ``on_attempt`` before its manifest is written, so
a rerun after a crash can find an attempt that did get through.

All of it runs under a shared store lock (``dsfs.engine.locks``; the commands
that call it hold one from before they look at the store's packs): gc, which
takes the exclusive lock, cannot delete a pack between the check of step 1
and the claim.  The lock is checked to be still held right before the
manifest and right before the claim, and every parent's manifest is checked
to still exist (a deleted, collected parent would leave a child without a
tree).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from typing import Protocol

from dsfs import catalog as cat
from dsfs.engine import locks
from dsfs.errors import ConflictError, DsfsError, NotFoundError, StoreError
from dsfs.format import manifest as mf
from dsfs.format.manifest import FILE, Entry, Header
from dsfs.format.pack import pack_id_from_key, pack_key
from dsfs.repository import Repository

MAX_VERSION_ATTEMPTS = 20


class EncodedDelta(Protocol):
    """A delta already in manifest lines (``dsfs.engine.building.DeltaSpool``)."""

    pack_ids: set[str]  # packs of earlier uploads its files reference

    def lines(self) -> Iterator[bytes]: ...


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


#: Up to this many packs are checked one by one (HEAD); more by one listing.
CHECK_ONE_BY_ONE = 64


def check_packs_exist(repo: Repository, pack_ids: set[str]) -> None:
    if len(pack_ids) <= CHECK_ONE_BY_ONE:
        missing = [p for p in sorted(pack_ids) if not repo.store.exists(pack_key(p))]
    else:
        listed = {pack_id_from_key(i.key) for i in repo.store.list("packs/")}
        missing = sorted(pack_ids - listed)
    if missing:
        repo.sync_pack_index()
        raise StoreError(
            f"{len(missing)} pack(s) this version reuses were removed from the store "
            f"meanwhile (e.g. {missing[0]}); run the command again"
        )


def claim_owner(repo: Repository, project: str, name: str, version: str) -> str | None:
    try:
        raw = repo.store.get(cat.claim_key(project, name, version))
    except NotFoundError:
        return None
    return raw.decode("ascii", "replace").strip()


def find_published(repo: Repository, header: Header,
                   attempts: Iterable[tuple[str, str]]) -> Header | None:
    """The header of an earlier attempt whose claim got written, if any."""
    for version_id, version in attempts:
        if claim_owner(repo, header.project, header.name, version) == version_id:
            return repo.header(version_id)
    return None


def check_parents_exist(repo: Repository, header: Header) -> None:
    gone = [p for p in header.parents if not repo.store.exists(mf.manifest_key(p))]
    if gone:
        raise ConflictError(
            f"the parent version {gone[0]} was deleted meanwhile: nothing was published; "
            "choose another parent"
        )


def publish(repo: Repository, header: Header, delta: Iterable[Entry] | EncodedDelta,
            explicit_version: bool,
            on_attempt: Callable[[str, str], None] | None = None) -> Header:
    """Write manifest then claim under a shared store lock; return the header as
    published."""
    try:
        with locks.shared(repo, "publish") as lock:
            # Under the lock nothing can be collected any more: whatever was
            # chosen before it was held is checked here, once.
            check_parents_exist(repo, header)
            if isinstance(delta, Iterable):
                reused = {ref.pack_id for entry in delta if entry.kind == FILE
                          and entry.url is None for ref in entry.chunks}
            else:
                reused = set(delta.pack_ids)
            check_packs_exist(repo, reused - lock.fresh_packs)
            return _publish(repo, header, delta, explicit_version, on_attempt, lock)
    finally:
        locks.end_holds_until_publish(repo)


def _publish(repo: Repository, header: Header, delta: Iterable[Entry] | EncodedDelta,
             explicit_version: bool,
             on_attempt: Callable[[str, str], None] | None, lock: locks.StoreLock) -> Header:
    store = repo.store
    for _attempt in range(MAX_VERSION_ATTEMPTS):
        owner = claim_owner(repo, header.project, header.name, header.version)
        if owner is not None:
            if explicit_version:
                raise ConflictError(
                    f"version {header.version} of {header.project}/{header.name} "
                    f"already exists ({owner})"
                )
            _next_attempt(repo, header)
            continue
        key = mf.manifest_key(header.id)
        if store.exists(key):
            header.id = uuid.uuid4().hex  # left by an interrupted run: never rewrite it
            continue
        if on_attempt is not None:
            on_attempt(header.id, header.version)
        store.flush()  # packs durable before the manifest that references them
        header.created = now_iso()
        with repo.manifest_spool() as spool:
            # spooled to a file and uploaded from it: a manifest of millions of
            # entries (~35 bytes each) is never held in memory
            mf.write_lines(spool, header, (mf.entry_line(entry) for entry in delta)
                           if isinstance(delta, Iterable) else delta.lines())
            spool.flush()
            lock.check()  # gc cannot have run since the packs were checked
            if not store.put_file_if_absent(key, spool):
                header.id = uuid.uuid4().hex
                continue
            if _claim(repo, header, key, lock):
                # its local copy, not fetched again; published whether or not it fits
                with contextlib.suppress(DsfsError):
                    repo.adopt_manifest(header.id, spool)
                return header
        if explicit_version:
            raise ConflictError(
                f"version {header.version} of {header.project}/{header.name} was "
                "claimed by another writer at the same moment"
            )
        _next_attempt(repo, header)
    raise ConflictError(f"could not claim a version string for {header.project}/{header.name}")


def _claim(repo: Repository, header: Header, key: str, lock: locks.StoreLock) -> bool:
    """Write the claim of the manifest at ``key``; False (and the manifest,
    never visible, deleted) when another writer claimed the version first."""
    store = repo.store
    claim = cat.claim_key(header.project, header.name, header.version)
    try:
        lock.check()
    except ConflictError:
        store.delete(key)  # never claimed: nobody can depend on it
        raise
    if store.put_if_absent(claim, header.id.encode()):
        return True
    if claim_owner(repo, header.project, header.name, header.version) == header.id:
        return True  # our own write, its reply lost
    store.delete(key)  # never visible: nobody can depend on it
    return False


def _next_attempt(repo: Repository, header: Header) -> None:
    claims = cat.Catalog(repo).claimed_versions(header.project, header.name)
    header.version = cat.next_patch_version(list(claims))
    header.id = uuid.uuid4().hex
