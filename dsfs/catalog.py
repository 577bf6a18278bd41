"""Finding versions: by id or unique id prefix, or by project/name with an
optional version string or tag.

A version is *visible* when its manifest exists and the claim object
``names/<project>/<name>/<version>`` names its id (the claim is written last,
see docs/format.md).  Tags live in ``tags/<id>`` and override the tags the
manifest was created with, because manifests never change.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from dsfs.errors import AmbiguousError, IntegrityError, NotFoundError, StoreError, UsageError
from dsfs.format import manifest as mf
from dsfs.format.digest import digest_hex
from dsfs.fsutil import write_atomic
from dsfs.repository import Repository

_ID_RE = re.compile(r"^[0-9a-f]{32}$")
log = logging.getLogger("dsfs")


def _enc(value: str) -> str:
    """One key segment: percent-encoded, and never '.' or '..' (not valid as keys)."""
    encoded = quote(value, safe="")
    if encoded in ("", ".", ".."):
        encoded = encoded.replace(".", "%2E") or "%00"
    return encoded


def claim_prefix(project: str, name: str) -> str:
    return f"names/{_enc(project)}/{_enc(name)}/"


def claim_key(project: str, name: str, version: str) -> str:
    return claim_prefix(project, name) + _enc(version)


def tags_key(version_id: str) -> str:
    return f"tags/{version_id}"


def version_sort_key(version: str) -> tuple:
    """Orders '1.0.10' after '1.0.9' and '1.0.0-rc1' before '1.0.0' (as semver
    does); non-numeric parts sort after numeric ones."""
    main, _sep, pre = version.partition("-")

    def parts(text: str) -> tuple:
        return tuple((0, int(p), "") if p.isdigit() else (1, 0, p)
                     for p in re.split(r"[.+]", text))

    return (parts(main), (1,) if not pre else (0, parts(pre)))


def next_patch_version(existing: list[str]) -> str:
    if not existing:
        return "1.0.0"
    latest = max(existing, key=version_sort_key)
    parts = latest.split(".")
    if not parts[-1].isdigit():
        raise UsageError(
            f"cannot pick the version after {latest!r} automatically: give --version"
        )
    parts[-1] = str(int(parts[-1]) + 1)
    return ".".join(parts)


@dataclass
class Ref:
    """What a user wrote to name a version."""

    id: str | None = None
    project: str | None = None
    name: str | None = None
    version: str | None = None
    tag: str | None = None

    def describe(self) -> str:
        if self.id:
            return f"id {self.id!r}"
        text = f"{self.project}/{self.name}"
        if self.version:
            text += f" version {self.version}"
        if self.tag:
            text += f" tag {self.tag!r}"
        return text


class Catalog:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    # -- claims ------------------------------------------------------------------

    def claimed_versions(self, project: str, name: str) -> dict[str, str]:
        """version string → version id, for one dataset."""
        prefix = claim_prefix(project, name)
        found = {}
        for info in self.repo.store.list(prefix):
            rest = info.key[len(prefix) :]
            if "/" in rest:
                continue
            version_id = self.repo.store.get(info.key).decode("ascii", "replace").strip()

            found[unquote(rest)] = version_id
        return found

    def is_visible(self, header: mf.Header) -> bool:
        try:
            raw = self.repo.store.get(claim_key(header.project, header.name, header.version))
        except NotFoundError:
            return False
        return raw.decode("ascii", "replace").strip() == header.id

    def tags(self, header: mf.Header) -> list[str]:
        try:
            raw = self.repo.store.get(tags_key(header.id))
        except NotFoundError:
            return list(header.tags)
        try:
            tags = json.loads(raw)["tags"]
            return [str(t) for t in tags]
        except (ValueError, KeyError, TypeError):
            raise IntegrityError(f"tags object of {header.id} is malformed") from None

    def set_tags(self, version_id: str, tags: list[str]) -> None:
        self.repo.store.put(tags_key(version_id), json.dumps({"tags": sorted(set(tags))}).encode())
        self.repo.store.flush()

    # -- listing -------------------------------------------------------------------

    def visible_headers(self) -> list[mf.Header]:
        """Headers of every visible version, tags as currently set."""
        claims: dict[str, str] = {}
        for info in self.repo.store.list("names/"):
            claims[info.key] = ""
        headers = []
        for version_id in self.repo.version_ids():
            try:
                header = self.repo.header(version_id)
            except NotFoundError:
                continue  # deleted while we listed
            key = claim_key(header.project, header.name, header.version)
            if key in claims and self.is_visible(header):
                header.tags = self.tags(header)
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
        claims = self.claimed_versions(ref.project, ref.name)
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
            try:
                header = self.repo.header(claims[version])
            except NotFoundError:
                continue  # a claim whose manifest was deleted
            if header.version != version:
                continue
            header.tags = self.tags(header)
            if ref.tag and ref.tag not in header.tags:
                continue
            return header
        raise NotFoundError(f"no version matches {ref.describe()}")

    def _by_id(self, text: str) -> mf.Header:
        text = text.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{1,32}", text):
            raise NotFoundError(f"{text!r} is not a version id (ids are 32 hex digits)")
        if _ID_RE.match(text):
            matches = [text] if self.repo.store.exists(mf.manifest_key(text)) else []
        else:
            matches = [v for v in self.repo.version_ids() if v.startswith(text)]
        visible = []
        for version_id in matches:
            header = self.repo.header(version_id)
            if self.is_visible(header):
                header.tags = self.tags(header)
                visible.append(header)
        if not visible:
            raise NotFoundError(f"no version with id {text!r} in {self.repo.store.url}")
        if len(visible) > 1:
            listed = "; ".join(f"{h.id} ({h.project}/{h.name} {h.version})" for h in visible)
            raise AmbiguousError(f"id prefix {text!r} matches {len(visible)} versions: {listed}")
        return visible[0]

    def children(self, version_id: str) -> list[mf.Header]:
        """Versions that name ``version_id`` as a parent: the visible ones, and the
        hidden ones that visible versions still build on (leftovers of an
        interrupted close do not count; gc removes them)."""
        headers = {}
        for other in self.repo.version_ids():
            try:
                headers[other] = self.repo.header(other)
            except NotFoundError:
                continue
        needed = {h.id for h in headers.values() if self.is_visible(h)}
        todo = list(needed)
        while todo:  # hidden ancestors of visible versions are needed too
            for parent in headers[todo.pop()].parents:
                if parent in headers and parent not in needed:
                    needed.add(parent)
                    todo.append(parent)
        return [h for h in headers.values() if version_id in h.parents and h.id in needed]
