"""Garbage collection: remove packs no manifest references.

gc holds the store's exclusive lock (``dsfs.engine.locks``) while it works:
closes and commits hold shared locks from the moment they may reuse a chunk
already in the store until their claim is written, so no pack gc deletes can
be one that a version is about to reference.  gc marks (lists manifests and
reads what they reference), checks that its lock is still held and that no
manifest appeared meanwhile, then sweeps.

Nothing younger than the grace period is touched either: writers that do not
take locks (an older dsfs) upload packs before the manifest that references
them.  Manifests without a claim (an interrupted close, or a deleted version)
older than the grace period are removed too, unless a claim names them (a
claimed version is never collected, whatever its header says) or another
manifest names them as a parent; and so are partial uploads of killed writers.
"""

from __future__ import annotations

import contextlib
import io
import re
import time
from dataclasses import dataclass
from typing import BinaryIO

from dsfs import catalog as cat
from dsfs.engine import locks
from dsfs.errors import DsfsError, IntegrityError, NotFoundError, UsageError
from dsfs.format import manifest as mf
from dsfs.format import rawentries
from dsfs.format.pack import pack_id_from_key
from dsfs.report import Reporter
from dsfs.repository import Repository

DEFAULT_GRACE = "24h"
#: How long gc waits, by default, for closes and commits to release their locks.
DEFAULT_WAIT = "10m"
DEFAULT_WAIT_SECONDS = 600.0
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not match:
        raise UsageError(f"cannot read duration {text!r}: use e.g. 30m, 24h, 7d")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


@dataclass
class GcResult:
    packs_removed: int = 0
    bytes_freed: int = 0
    packs_kept_young: int = 0
    manifests_removed: int = 0
    packs_in_use: int = 0
    stale_uploads_removed: int = 0
    manifests_kept_unreadable: int = 0


def claimed_ids(repo: Repository) -> set[str]:
    """Ids named by any claim: a claimed version is never collected, whatever
    its manifest header says (list them after the manifests)."""
    return cat.Catalog(repo).claimed_version_ids()


def _references(repo: Repository, version_id: str) -> set[str]:
    """Packs a manifest references, read without trusting its header (streamed
    from the manifest's local copy: bounded memory at any size)."""
    try:
        source: BinaryIO = repo.open_manifest(version_id)
    except IntegrityError:  # a bad header: the entries
        source = io.BytesIO(repo.store.get(mf.manifest_key(version_id)))
    with source:
        return rawentries.pack_ids(source)


def collect(repo: Repository, grace_seconds: float, dry_run: bool = False,
            reporter: Reporter | None = None,
            wait_seconds: float = DEFAULT_WAIT_SECONDS) -> GcResult:
    """Remove what no version needs.  Holds the store's exclusive lock (waiting
    up to ``wait_seconds`` for writers; ConflictError if they still hold
    theirs), except for a dry run, which writes nothing and uses this
    machine's clock."""
    reporter = reporter or Reporter()
    if dry_run:
        return _collect(repo, grace_seconds, True, reporter, None, time.time())
    with locks.exclusive(repo, "gc", wait_seconds, reporter) as lock:
        # Ages are measured against the store's clock: our own lock's mtime.
        return _collect(repo, grace_seconds, False, reporter, lock, lock.store_time)


def _collect(repo: Repository, grace_seconds: float, dry_run: bool, reporter: Reporter,
             lock: locks.StoreLock | None, now: float) -> GcResult:
    result = GcResult()

    def still_locked() -> None:
        if lock is not None:
            lock.check()

    # -- mark --------------------------------------------------------------------
    manifest_infos = {info.key[len("versions/"):]: info for info in repo.store.list("versions/")}
    claimed = claimed_ids(repo)
    headers = {}
    unreadable: list[str] = []
    catalog = cat.Catalog(repo)  # checks cached headers against the listed objects
    for version_id, info in manifest_infos.items():
        try:
            headers[version_id] = catalog.checked_header(version_id, info)
        except NotFoundError:
            continue  # deleted while we listed (by `dsfs delete`)
        except DsfsError as exc:
            unreadable.append(version_id)
            reporter.warn(f"gc: manifest {version_id} has an unreadable header ({exc}): "
                          "it is kept, and no manifest is removed in this run")
    parents = {p for h in headers.values() for p in h.parents}
    live = []
    doomed = []
    for version_id in manifest_infos:
        header = headers.get(version_id)
        old = now - manifest_infos[version_id].mtime >= grace_seconds
        if (old and header is not None and not unreadable and version_id not in claimed
                and version_id not in parents):
            doomed.append(version_id)
        else:
            live.append(version_id)
    result.manifests_kept_unreadable = len(unreadable)
    referenced: set[str] = set()
    with reporter.progress("reading manifests", len(live)) as progress:
        for version_id in live:
            try:
                referenced |= _references(repo, version_id)
            except NotFoundError:
                pass  # deleted while we read; its packs are garbage now or next time
            except DsfsError as exc:
                raise IntegrityError(
                    f"gc: cannot read the entries of manifest versions/{version_id} ({exc}): "
                    "gc removes nothing while it cannot tell which packs a version uses; "
                    "repair or remove that object first"
                ) from None
            progress.advance(1)
    # -- re-check: a manifest that appeared since the listing keeps its packs --------
    # (none can while we hold the exclusive lock; this also covers writers that
    # do not follow the lock protocol, such as an older dsfs)
    still_locked()
    for info in repo.store.list("versions/"):
        version_id = info.key[len("versions/"):]
        if version_id not in manifest_infos:
            with contextlib.suppress(NotFoundError):
                referenced |= _references(repo, version_id)
    # -- sweep -------------------------------------------------------------------
    for version_id in doomed:
        result.manifests_removed += 1
        if not dry_run:
            still_locked()
            repo.store.delete(mf.manifest_key(version_id))
            repo.forget_manifest(version_id)
    for info in repo.store.list("packs/"):
        pack_id = pack_id_from_key(info.key)
        if pack_id is None:
            continue
        if pack_id in referenced:
            result.packs_in_use += 1
        elif now - info.mtime < grace_seconds:
            result.packs_kept_young += 1
        else:
            result.packs_removed += 1
            result.bytes_freed += info.size
            if not dry_run:
                still_locked()
                repo.store.delete(info.key)
    if not dry_run:
        # Partial uploads belong to writes that take no lock too (tags, claims):
        # they are left alone for at least a lock's stale timeout.
        result.stale_uploads_removed = repo.store.remove_stale_uploads(
            max(grace_seconds, locks.stale_seconds()))
        repo.sync_pack_index()
    return result
