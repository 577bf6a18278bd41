"""What may change about a published version: its description, the name and
project of its dataset (rename, move), and named metadata.

Manifests never change, so these live beside them (docs/format.md):

* description, tags and the dataset's later names in the version's
  attributes object ``tags/<id>`` (``dsfs.catalog``);
* a rename or move writes, per version: the new name into the attributes
  object, then the claim under the new name (a conditional write), then
  deletes the old claim.  A crash in between leaves the version visible under
  both names, never under none; running the same rename again finishes it;
* metadata objects ``meta/<id>/<name>``: a JSON document
  ``{"type": "json", "value": ...}`` or ``{"type": "file", "filename": ...,
  "data": <base64>}`` (ClearML stores a table; dsfs stores any JSON value or
  a file, such as a CSV or Parquet file).  Metadata set on a draft is
  written under the draft's id at once (the id it is published with, unless
  a lost race for a version string gives it a new one: then it is copied).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from dsfs import catalog as cat
from dsfs.errors import ConflictError, InputError, NotFoundError, UsageError
from dsfs.format.manifest import Header
from dsfs.fsutil import write_atomic
from dsfs.repository import Repository

#: A metadata object larger than this is refused: metadata is for tables and
#: small files, the version's files are for data.
MAX_METADATA_BYTES = 64 << 20


def set_description(repo: Repository, header: Header, description: str) -> None:
    cat.Catalog(repo).update_attributes(header, description=str(description))


def rename_dataset(repo: Repository, project: str, name: str, new_project: str,
                   new_name: str) -> list[str]:
    """Give every version of ``project/name`` the name ``new_project/new_name``
    (a rename, a move, or both); returns the ids moved.  Refused (nothing
    changed) if a dataset of the new name already exists."""
    new_project = cat.check_word(new_project, "new project")
    new_name = cat.check_word(new_name, "new name", slash=False)
    catalog = cat.Catalog(repo)
    claims = catalog.claims(project, name)
    if not claims:
        raise NotFoundError(f"no dataset named {project}/{name} in {repo.store.url}")
    if (project, name) == (new_project, new_name):
        return []
    ours = {c.version_id for c in claims}
    target = catalog.claimed_versions(new_project, new_name)
    if any(version_id not in ours for version_id in target.values()):
        raise ConflictError(f"a dataset named {new_project}/{new_name} already exists; "
                            "delete it or choose another name")
    moved = []
    for claim in sorted(claims, key=lambda c: cat.version_sort_key(c.version)):
        header = catalog._claimed_header(claim)  # checks the claim against its manifest
        if header is None:
            continue  # deleted meanwhile
        names = [n for n in catalog.attributes(claim.version_id).get("names", [])
                 if n != [new_project, new_name]]
        catalog.update_attributes(header, names=[*names, [new_project, new_name]])
        new_key = cat.claim_key(new_project, new_name, claim.version)
        if (not repo.store.put_if_absent(new_key, claim.version_id.encode())
                and repo.store.get(new_key).decode("ascii", "replace").strip()
                != claim.version_id):
            raise ConflictError(f"{new_project}/{new_name} {claim.version} was claimed "
                                    "by another writer meanwhile; nothing more was moved")
        repo.store.delete(claim.key)
        moved.append(claim.version_id)
    repo.store.flush()
    return moved


# -- metadata ---------------------------------------------------------------------------

def metadata_prefix(version_id: str) -> str:
    return f"meta/{version_id}/"


def metadata_key(version_id: str, name: str) -> str:
    return metadata_prefix(version_id) + quote(name, safe="")


def encode_metadata(value: Any) -> bytes:
    """The stored form of ``value``: a path (``os.PathLike``, or a ``str``
    naming an existing file) is stored as that file; anything else must be
    JSON-able."""
    if isinstance(value, os.PathLike) or (isinstance(value, str) and os.path.isfile(value)):
        path = Path(value)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read metadata file {path}: {exc.strerror}") from None
        doc: dict[str, Any] = {"type": "file", "filename": path.name,
                               "data": base64.b64encode(data).decode("ascii")}
    else:
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"metadata must be JSON-able (dict, list, str, number, bool, "
                             f"None) or a path to a file: {exc}") from None
        doc = {"type": "json", "value": value}
    raw = json.dumps(doc, ensure_ascii=False).encode()
    if len(raw) > MAX_METADATA_BYTES:
        raise UsageError(f"metadata of {len(raw)} bytes is larger than the limit "
                         f"({MAX_METADATA_BYTES} bytes): add it to the version as a file")
    return raw


def check_metadata_name(name: str) -> str:
    if not isinstance(name, str) or not name or "\n" in name or "\x00" in name:
        raise UsageError(f"metadata_name must be a non-empty one-line string, not {name!r}")
    return name


def put_metadata(repo: Repository, version_id: str, name: str, raw: bytes) -> None:
    repo.store.put(metadata_key(version_id, check_metadata_name(name)), raw)
    repo.store.flush()


def list_metadata(repo: Repository, version_id: str) -> list[str]:
    prefix = metadata_prefix(version_id)
    return sorted(unquote(info.key[len(prefix):]) for info in repo.store.list(prefix))


def get_metadata(repo: Repository, version_id: str, name: str) -> Any:
    """The JSON value stored under ``name``, or for a file the path of a local
    copy (in the cache, under ``metadata/<id>/``)."""
    try:
        raw = repo.store.get(metadata_key(version_id, check_metadata_name(name)))
    except NotFoundError:
        known = ", ".join(list_metadata(repo, version_id)) or "none"
        raise NotFoundError(f"version {version_id} has no metadata {name!r} "
                            f"(it has: {known})") from None
    doc = json.loads(raw)
    if doc.get("type") == "json":
        return doc.get("value")
    filename = os.path.basename(str(doc.get("filename") or "metadata")) or "metadata"
    target = (repo.cache_root / "metadata" / version_id / quote(name, safe="") / filename)
    data = base64.b64decode(doc.get("data", ""))
    if not target.exists() or target.read_bytes() != data:
        write_atomic(target, data, durable=False)
    return str(target)


def copy_metadata(repo: Repository, from_id: str, to_id: str) -> None:
    for name in list_metadata(repo, from_id):
        put_metadata(repo, to_id, name, repo.store.get(metadata_key(from_id, name)))


def delete_metadata(repo: Repository, version_id: str) -> None:
    for info in list(repo.store.list(metadata_prefix(version_id))):
        repo.store.delete(info.key)
