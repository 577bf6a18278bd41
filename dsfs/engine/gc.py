"""Garbage collection: remove packs no manifest references.

Nothing younger than the grace period is touched, because a ``close`` in
progress uploads its packs before it writes the manifest that references
them.  Manifests without a claim (an interrupted close, or a deleted version)
older than the grace period are removed too, unless another manifest still
names them as a parent, and so are partial uploads of killed writers.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass

from dsfs import catalog as cat
from dsfs.errors import DsfsError, UsageError
from dsfs.format import manifest as mf
from dsfs.format.manifest import FILE
from dsfs.format.pack import pack_id_from_key
from dsfs.report import Reporter
from dsfs.repository import Repository

DEFAULT_GRACE = "24h"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not match:
        raise UsageError(f"cannot read duration {text!r}: use e.g. 30m, 24h, 7d")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def store_now(repo: Repository) -> float:
    """The store's own clock: ages of objects are measured against it, so a
    machine whose clock is off cannot shorten the grace period."""
    key = f"gc-clock/{secrets.token_hex(8)}"
    try:
        repo.store.put(key, b"")
        info = repo.store.stat(key)
    finally:
        repo.store.delete(key)
    return info.mtime if info is not None else time.time()


@dataclass
class GcResult:
    packs_removed: int = 0
    bytes_freed: int = 0
    packs_kept_young: int = 0
    manifests_removed: int = 0
    packs_in_use: int = 0
    stale_uploads_removed: int = 0


def collect(repo: Repository, grace_seconds: float, dry_run: bool = False,
            reporter: Reporter | None = None) -> GcResult:
    reporter = reporter or Reporter()
    result = GcResult()
    # A dry run writes nothing, not even the clock probe: it uses this machine's clock.
    now = time.time() if dry_run else store_now(repo)
    catalog = cat.Catalog(repo)
    manifest_infos = {info.key[len("versions/"):]: info for info in repo.store.list("versions/")}
    headers = {}
    for version_id in manifest_infos:
        try:
            headers[version_id] = repo.header(version_id)
        except DsfsError as exc:
            reporter.warn(f"gc: skipping unreadable manifest {version_id}: {exc}")
    parents = {p for h in headers.values() for p in h.parents}
    live = []
    for version_id, header in headers.items():
        old = now - manifest_infos[version_id].mtime >= grace_seconds
        if old and version_id not in parents and not catalog.is_visible(header):
            result.manifests_removed += 1
            if not dry_run:
                repo.store.delete(mf.manifest_key(version_id))
                repo.forget_manifest(version_id)
        else:
            live.append(version_id)
    referenced: set[str] = set()
    with reporter.progress("reading manifests", len(live)) as progress:
        for version_id in live:
            for entry in mf.iter_entries(repo.manifest_bytes(version_id)):
                if entry.kind == FILE:
                    referenced.update(ref.pack_id for ref in entry.chunks)
            progress.advance(1)
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
                repo.store.delete(info.key)
    if not dry_run:
        result.stale_uploads_removed = repo.store.remove_stale_uploads(grace_seconds)
        repo.sync_pack_index()
    return result
