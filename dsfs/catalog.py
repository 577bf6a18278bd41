"""Finding versions: by id or unique id prefix, or by project/name with an
optional version string or tag.

A version is *published* when a claim ``names/<project>/<name>/<version>``
names its id: the claim is written last and is the commit point (see
docs/format.md).  Its manifest's header must then say the same project, name,
version string and id; a header that disagrees, that cannot be parsed, or a
manifest that is missing, is corruption (IntegrityError, naming the object),
never a reason to treat the version as absent.  ``claimed_version_ids`` is
what gc keeps.

Headers are cached locally (``Repository.header``).  A cached header is used
only while the store object it came from is unchanged: the catalog records
each object's size and ETag (or mtime) in a ``<id>.stamp`` file beside the
cached copy and compares it with what ``list``/``stat`` report, so a manifest
repaired (or damaged) in the store is seen without clearing the cache.

A version's *attributes object* ``tags/<id>`` (named for its first use)
holds what may change after publishing, because manifests never change:
``tags`` (override the manifest's), ``description`` (overrides it), and
``names``: the [project, name] pairs the dataset was renamed or moved to, in
order.  A claim is consistent with a manifest whose header names the claim's
project and name, or one of those pairs; a renamed version is shown under the
name of the claim that publishes it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from dsfs.errors import (
    AmbiguousError,
    FormatVersionError,
    IntegrityError,
    NotFoundError,
    StoreError,
    UsageError,
)
from dsfs.format import manifest as mf
from dsfs.format.digest import digest_hex
from dsfs.fsutil import write_atomic
from dsfs.refs import (  # noqa: F401  (re-exported: the catalog's callers name them here)
    Ref,
    check_word,
    claim_key,
    claim_prefix,
    next_patch_version,
    parse_ref,
    tags_key,
    version_sort_key,
)
from dsfs.repository import Repository
from dsfs.store.base import ObjectInfo

_ID_RE = re.compile(r"^[0-9a-f]{32}$")
log = logging.getLogger("dsfs")


def _claim_text(raw: bytes) -> str:
    return raw.decode("ascii", "replace").strip()


def _stamp(info: ObjectInfo) -> str:
    """What identifies one state of a store object, cheaply: size and ETag, or
    size and mtime where the backend has no ETag."""
    return f"{info.size} {info.etag}" if info.etag else f"{info.size} {info.mtime!r}"


def drop_cached_manifests(cache_root: Path) -> int:
    """Remove every cached manifest and header (of every store) under a cache
    root; returns how many files went.  They are read again from the store."""
    root = cache_root / "manifests"
    if not root.is_dir():
        return 0
    count = sum(1 for p in root.rglob("*") if p.is_file() and not p.name.startswith(".tmp-"))
    shutil.rmtree(root, ignore_errors=True)
    return count


@dataclass(frozen=True)
class Claim:
    """One claim object: ``names/<project>/<name>/<version>`` holding an id."""

    key: str
    project: str
    name: str
    version: str
    version_id: str


class Catalog:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    # -- claims ------------------------------------------------------------------

    def claimed_versions(self, project: str, name: str) -> dict[str, str]:
        """version string → version id, for one dataset."""
        return {c.version: c.version_id for c in self.claims(project, name)}

    def claims(self, project: str | None = None, name: str | None = None) -> list[Claim]:
        """Every claim in the store, or those of one dataset."""
        prefix = "names/" if project is None or name is None else claim_prefix(project, name)
        found = []
        for info in self.repo.store.list(prefix):
            parts = info.key[len("names/") :].split("/")
            if len(parts) != 3:
                continue
            try:
                version_id = _claim_text(self.repo.store.get(info.key))
            except NotFoundError:
                continue  # deleted while we listed
            decoded = [unquote(p) for p in parts]
            found.append(Claim(info.key, decoded[0], decoded[1], decoded[2], version_id))
        return found

    def claimed_version_ids(self) -> set[str]:
        """Ids named by a claim: the published versions, whatever their manifests
        say.  gc MUST NOT remove their manifests (nor anything they reference);
        list the claims *after* the manifests, so that a version published in
        between is seen (its manifest is young, and the grace period covers it)."""
        return {c.version_id for c in self.claims()}

    def _claim_holds(self, claim: Claim) -> bool:
        try:
            return _claim_text(self.repo.store.get(claim.key)) == claim.version_id
        except NotFoundError:
            return False

    def _claimed_header(self, claim: Claim, info: ObjectInfo | None = None) -> mf.Header | None:
        """The header of the version ``claim`` publishes, checked against the
        claim; None if the claim went away meanwhile (a delete)."""
        where = self.repo.store.url
        if not _ID_RE.match(claim.version_id):
            raise IntegrityError(f"claim {claim.key} in {where} is corrupt: it holds "
                                 f"{claim.version_id[:40]!r}, not a version id")
        key = mf.manifest_key(claim.version_id)
        try:
            header = self.checked_header(claim.version_id, info)
        except NotFoundError:
            if not self._claim_holds(claim):
                return None  # deleted: the claim goes first, then the manifest
            raise IntegrityError(f"claim {claim.key} names version {claim.version_id}, but "
                                 f"its manifest {key} is missing from {where}") from None
        except IntegrityError:
            if not self._claim_holds(claim):
                return None
            raise
        named = (header.project, header.name, header.version)
        if named != (claim.project, claim.name, claim.version) and not (
                header.version == claim.version
                and [claim.project, claim.name] in self.attributes(header.id).get("names", [])):
            if not self._claim_holds(claim):
                return None
            raise IntegrityError(
                f"manifest {key} in {where} is corrupt: its header names "
                f"{header.project}/{header.name} {header.version}, but the claim "
                f"{claim.key} names it")
        header.project, header.name = claim.project, claim.name  # renamed: the claim's name
        return header

    # -- headers, checked against the store ------------------------------------------

    def _stamp_path(self, version_id: str) -> Path:
        return (self.repo.cache_root / "manifests" / self.repo.store_id.hex()
                / f"{version_id}.stamp")

    def checked_header(self, version_id: str, info: ObjectInfo | None = None) -> mf.Header:
        """The header of ``versions/<id>``, from the local cache only if the
        cached copy came from the store object as it is now (``info``: the
        object's listing, or None to stat it).  NotFoundError if the manifest is
        missing; IntegrityError naming the object if it cannot be parsed."""
        key = mf.manifest_key(version_id)
        if info is None:
            info = self.repo.store.stat(key)
            if info is None:
                raise NotFoundError(f"no manifest {key} in {self.repo.store.url}")
        stamp = _stamp(info)
        path = self._stamp_path(version_id)
        try:
            known = path.read_text()
        except OSError:
            known = None
        try:
            if known is None:
                self._adopt_cached(version_id)
                _write_small(path, stamp)
            elif known != stamp:  # rewritten in the store: nothing cached is trusted
                self.repo.forget_manifest(version_id)
                _write_small(path, stamp)
            return self.repo.header(version_id)
        except IntegrityError as exc:
            self.repo.forget_manifest(version_id)  # read it again once repaired
            with contextlib.suppress(OSError):
                path.unlink()
            raise IntegrityError(
                f"manifest {key} in {self.repo.store.url} is corrupt: {exc}") from None
        except FormatVersionError as exc:
            raise FormatVersionError(f"manifest {key} in {self.repo.store.url}: {exc}") from None

    def _adopt_cached(self, version_id: str) -> None:
        """A cached copy without a stamp (from an older dsfs, or a lost stamp
        file): keep it only if its header is the one the store holds now, so
        that a big cached manifest is not fetched again for nothing."""
        try:
            cached = self.repo.cached_header(version_id)
        except IntegrityError:
            cached = None
        if cached is None:
            self.repo.forget_manifest(version_id)
            return
        key = mf.manifest_key(version_id)
        data = self.repo.store.get_head(key, mf.HEADER_PROBE_SIZE)
        needed = mf.header_length(data)
        if len(data) < needed:
            data = self.repo.store.get_head(key, needed)
        try:
            fresh = mf.decode_header(data)
        except IntegrityError:
            self.repo.forget_manifest(version_id)
            raise
        if fresh != cached:
            self.repo.forget_manifest(version_id)

    def is_visible(self, header: mf.Header) -> bool:
        """Whether the claim that ``header`` names (or, for a renamed version,
        the claim of its latest name) holds its id."""
        project, name = header.project, header.name
        try:
            raw = self.repo.store.get(claim_key(project, name, header.version))
        except NotFoundError:
            names = self.attributes(header.id).get("names")
            if not names or [project, name] == names[-1]:
                return False
            try:
                raw = self.repo.store.get(claim_key(names[-1][0], names[-1][1], header.version))
            except NotFoundError:
                return False
        return _claim_text(raw) == header.id

    def attributes(self, version_id: str) -> dict[str, Any]:
        """The version's attributes object (``{}`` if it has none)."""
        try:
            raw = self.repo.store.get(tags_key(version_id))
        except NotFoundError:
            return {}
        try:
            attrs = json.loads(raw)
            if not isinstance(attrs, dict):
                raise TypeError
            tags = attrs.get("tags", [])
            names = attrs.get("names", [])
            if (not isinstance(tags, list) or not isinstance(names, list)
                    or not isinstance(attrs.get("description", ""), str)
                    or any(not isinstance(n, list) or len(n) != 2 for n in names)):
                raise TypeError
            attrs["tags"] = [str(t) for t in tags]
            attrs["names"] = [[str(n[0]), str(n[1])] for n in names]
            return attrs
        except (ValueError, TypeError):
            raise IntegrityError(f"tags object {tags_key(version_id)} in {self.repo.store.url} "
                                 "is malformed") from None

    def apply_attributes(self, header: mf.Header) -> mf.Header:
        """``header`` with its current tags, description and (if renamed) its
        dataset's latest project and name (one read)."""
        attrs = self.attributes(header.id)
        if attrs.get("names"):
            header.project, header.name = attrs["names"][-1]
        if "tags" in attrs:
            header.tags = attrs["tags"]
        if "description" in attrs:
            header.description = attrs["description"]
        return header

    def tags(self, header: mf.Header) -> list[str]:
        attrs = self.attributes(header.id)
        return list(attrs["tags"]) if "tags" in attrs else list(header.tags)

    def update_attributes(self, header: mf.Header, **changes: Any) -> dict[str, Any]:
        """Change some attributes of a published version (read, change, write
        whole: the last writer wins, as for tags)."""
        attrs = self.attributes(header.id)
        if "tags" not in attrs:
            attrs["tags"] = list(header.tags)
        attrs.update(changes)
        attrs["tags"] = sorted(set(attrs["tags"]))
        if not attrs.get("names"):
            attrs.pop("names", None)
        self.repo.store.put(tags_key(header.id), json.dumps(attrs).encode())
        self.repo.store.flush()
        return attrs

    def set_tags(self, version_id: str, tags: list[str]) -> None:
        self.update_attributes(self.repo.header(version_id), tags=tags)

    # -- listing -------------------------------------------------------------------

    def visible_headers(self, on_problem: Callable[[str], None] | None = None
                        ) -> list[mf.Header]:
        """Headers of every published version, tags as currently set.

        A claimed version whose manifest is corrupt or missing is left out and
        reported to ``on_problem`` (default: a warning in the log), so that one
        damaged object hides nothing else."""
        report = on_problem or (lambda text: log.warning("dsfs: warning: %s", text))
        infos = {info.key[len("versions/"):]: info for info in self.repo.store.list("versions/")}
        headers = []
        for claim in self.claims():
            try:
                header = self._claimed_header(claim, infos.get(claim.version_id))
                if header is None:
                    continue
                self.apply_attributes(header)
            except (IntegrityError, FormatVersionError) as exc:
                report(f"{exc} (listing the other versions)")
                continue
            headers.append(header)
        headers.sort(key=lambda h: (h.project, h.name, version_sort_key(h.version)))
        return headers

    # -- resolving -------------------------------------------------------------------

    def resolve(self, ref: Ref) -> mf.Header:
        """The one visible version ``ref`` names, or NotFound / Ambiguous errors.

        With the store unreachable, a reference this machine resolved before
        (or a full id whose manifest is cached) still resolves, so cached
        versions can be read offline."""
        try:
            header = self._resolve_online(ref)
        except StoreError:
            cached = self._resolve_offline(ref)
            if cached is None:
                raise
            log.warning("store %s unreachable: using the cached %s for %s",
                        self.repo.store.url, cached.id, ref.describe())
            return cached
        self._remember(ref, header.id)
        return header

    def _ref_cache_path(self, ref: Ref) -> Path:
        key = json.dumps([ref.id, ref.project, ref.name, ref.version, ref.tag])
        return (self.repo.cache_root / "refs" / self.repo.store_id.hex()
                / digest_hex(key.encode()))

    def _remember(self, ref: Ref, version_id: str) -> None:
        with contextlib.suppress(OSError):
            path = self._ref_cache_path(ref)
            if not path.exists() or path.read_text() != version_id:
                write_atomic(path, version_id, durable=False)

    def _resolve_offline(self, ref: Ref) -> mf.Header | None:
        try:
            version_id = self._ref_cache_path(ref).read_text().strip()
        except (OSError, StoreError):
            version_id = ref.id.strip().lower() if ref.id else ""
        return self.repo.cached_header(version_id) if _ID_RE.match(version_id) else None

    def _resolve_online(self, ref: Ref) -> mf.Header:
        self.repo.check_readable()
        if ref.id:
            return self._by_id(ref.id)
        if not ref.project or not ref.name:
            raise UsageError("name a version by id, or by --project and --name")
        claims = {c.version: c for c in self.claims(ref.project, ref.name)}
        if not claims:
            raise NotFoundError(
                f"no dataset named {ref.project}/{ref.name} in {self.repo.store.url}"
            )
        if ref.version:
            if ref.version not in claims:
                known = ", ".join(sorted(claims, key=version_sort_key)[-5:])
                raise NotFoundError(
                    f"{ref.project}/{ref.name} has no version {ref.version} (latest: {known})"
                )
            candidates = [ref.version]
        else:
            candidates = sorted(claims, key=version_sort_key, reverse=True)
        for version in candidates:
            # A corrupt candidate is reported, not skipped: it may be the
            # version the user means.
            header = self._claimed_header(claims[version])
            if header is None:
                continue  # deleted meanwhile
            self.apply_attributes(header)
            if ref.tag and ref.tag not in header.tags:
                continue
            return header
        raise NotFoundError(f"no version matches {ref.describe()}")

    def _by_id(self, text: str) -> mf.Header:
        text = text.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{1,32}", text):
            raise NotFoundError(f"{text!r} is not a version id (ids are 32 hex digits)")
        if _ID_RE.match(text):
            info = self.repo.store.stat(mf.manifest_key(text))
            matches = [info] if info is not None else []
        else:
            matches = [i for i in self.repo.store.list("versions/" + text)
                       if _ID_RE.match(i.key[len("versions/"):])]
        all_claims: list[Claim] | None = None
        visible = []
        for info in matches:
            version_id = info.key[len("versions/"):]
            try:
                header: mf.Header | None = self.checked_header(version_id, info)
            except (IntegrityError, NotFoundError):
                header = None  # decided by its claim below
            if header is None or not self.is_visible(header):
                # Published under another name than its header says, or not at all?
                if all_claims is None:
                    all_claims = self.claims()
                claim = next((c for c in all_claims if c.version_id == version_id), None)
                if claim is None:
                    continue  # not published: a leftover, or a hidden parent
                header = self._claimed_header(claim, info)  # raises: it is corrupt
                if header is None:
                    continue
            self.apply_attributes(header)
            visible.append(header)
        if not visible:
            raise NotFoundError(f"no version with id {text!r} in {self.repo.store.url}")
        if len(visible) > 1:
            listed = "; ".join(f"{h.id} ({h.project}/{h.name} {h.version})" for h in visible)
            raise AmbiguousError(f"id prefix {text!r} matches {len(visible)} versions: {listed}")
        return visible[0]

    def children(self, version_id: str) -> list[mf.Header]:
        """Versions that name ``version_id`` as a parent: the published ones, and
        the hidden ones that published versions still build on (leftovers of an
        interrupted close do not count; gc removes them).  A published version
        whose header cannot be read raises IntegrityError: nobody can tell
        whether it builds on ``version_id``."""
        infos = {info.key[len("versions/"):]: info for info in self.repo.store.list("versions/")}
        needed: set[str] = set()
        headers: dict[str, mf.Header] = {}
        todo = [v for v in self.claimed_version_ids() if v in infos]
        while todo:  # hidden ancestors of published versions are needed too
            other = todo.pop()
            if other in needed:
                continue
            needed.add(other)
            try:
                headers[other] = self.checked_header(other, infos[other])
            except NotFoundError:
                continue  # deleted while we looked
            todo.extend(p for p in headers[other].parents if p in infos)
        return [h for h in headers.values() if version_id in h.parents]


def _write_small(path: Path, text: str) -> None:
    """A small cache file, replaced whole (a lost one is only re-checked)."""
    with contextlib.suppress(OSError):
        write_atomic(path, text, durable=False)
