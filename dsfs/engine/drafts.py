"""Drafts: versions being built on this machine, before ``close`` publishes them.

A draft is local state (``<data dir>/drafts/<id>.json``): its header, the store
it belongs to, and the operations added so far.  The files themselves stay
where they are until ``close`` reads them.  ``<data dir>/current_draft`` names
the draft last created, so ``add``/``remove``/``close`` work without ``--id``.
Closing holds an exclusive lock on ``<id>.lock``, so two closes of one draft
cannot both run.

The items an ``add`` (or ``sync_folder``) recorded are not in the JSON: each
such operation writes them to ``<id>.items/<n>.jsonl``, one JSON array a line
(path, kind, source, size, mode, mtime ns, symlink target) in walking order
(``dsfs.engine.dirtree.dfs_key``), durably, before the draft that names the
file; ``close`` streams them.  Drafts written by an older dsfs, with the
items inline, are still read.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsfs import config
from dsfs.engine.dirtree import dfs_key
from dsfs.engine.scan import SourceItem
from dsfs.errors import AmbiguousError, ConflictError, NotFoundError, local_os_error
from dsfs.format.manifest import DIR, Header
from dsfs.fsutil import write_atomic


@dataclass
class Draft:
    header: Header
    store_url: str
    store_id: str
    #: Version string chosen by the user (True) or picked automatically (False).
    explicit_version: bool = False
    #: In order: {"op": "add", "items_file": F}, {"op": "mirror", "prefix": P,
    #: "items_file": F, "trust_mtime": true} or {"op": "remove", "pattern": P}
    #: (an older dsfs wrote "items": [...] instead of "items_file").
    ops: list[dict[str, Any]] = field(default_factory=list)
    #: (version id, version string) of every publish attempt of ``close``.
    attempts: list[tuple[str, str]] = field(default_factory=list)

    def add_items(self, items: Iterable[SourceItem]) -> int:
        """Record an ``add`` of ``items`` (in walking order); returns how many
        of them are files or symlinks."""
        name, files = write_items(self.header.id, items)
        self.ops.append({"op": "add", "items_file": name})
        return files

    def add_mirror(self, prefix: str, items: Iterable[SourceItem]) -> None:
        """Record that ``prefix`` becomes exactly ``items`` (in walking order)."""
        name, _files = write_items(self.header.id, items)
        self.ops.append({"op": "mirror", "prefix": prefix, "items_file": name,
                         "trust_mtime": True})

    def add_removal(self, pattern: str) -> None:
        self.ops.append({"op": "remove", "pattern": pattern})

    def to_json(self) -> dict[str, Any]:
        return {
            "header": self.header.to_json(),
            "store_url": self.store_url,
            "store_id": self.store_id,
            "explicit_version": self.explicit_version,
            "ops": self.ops,
            "attempts": [list(a) for a in self.attempts],
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Draft:
        return cls(Header.from_json(obj["header"]), obj["store_url"], obj["store_id"],
                   bool(obj.get("explicit_version")), list(obj.get("ops", [])),
                   [(str(a[0]), str(a[1])) for a in obj.get("attempts", [])])


def drafts_dir() -> Path:
    return config.data_dir() / "drafts"


def _items_dir(draft_id: str) -> Path:
    return drafts_dir() / f"{draft_id}.items"


def write_items(draft_id: str, items: Iterable[SourceItem]) -> tuple[str, int]:
    """Write one operation's items to a new file of the draft, durably;
    returns (its name, how many files and symlinks it holds)."""
    directory = _items_dir(draft_id)
    name = f"{uuid.uuid4().hex}.jsonl"
    files = 0
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise local_os_error(exc, config.data_dir(), "the data directory") from None
    try:
        with open(directory / name, "wb") as out:
            batch: list[bytes] = []
            for i in items:
                if i.kind != DIR:
                    files += 1
                # ensure_ascii keeps undecodable names (surrogate escapes) round-tripping
                batch.append(json.dumps([i.path, i.kind, i.source, i.size, i.mode,
                                         i.mtime_ns, i.target]).encode() + b"\n")
                if len(batch) >= 4096:
                    out.write(b"".join(batch))
                    batch.clear()
            out.write(b"".join(batch))
            out.flush()
            os.fsync(out.fileno())
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            (directory / name).unlink()
        if isinstance(exc, OSError):
            raise local_os_error(exc, config.data_dir(), "the data directory") from None
        raise
    return name, files


def iter_items(draft_id: str, op: dict[str, Any]) -> Iterator[SourceItem]:
    """The items of one ``add`` or ``mirror`` operation, in walking order."""
    if "items" in op:  # written by an older dsfs, in scan order
        inline = [SourceItem(**raw) for raw in op["items"]]
        inline.sort(key=lambda i: dfs_key(i.path))
        yield from inline
        return
    try:
        with open(_items_dir(draft_id) / op["items_file"], "rb") as lines:
            for line in lines:
                path, kind, source, size, mode, mtime, target = json.loads(line)
                yield SourceItem(path, kind, source, size, mode, mtime, target)
    except FileNotFoundError:
        raise NotFoundError(f"draft {draft_id} lost the file of its added items "
                            f"({op['items_file']}): create the draft again") from None


def _path(draft_id: str) -> Path:
    return drafts_dir() / f"{draft_id}.json"


def save(draft: Draft, make_current: bool = False) -> None:
    """Write the draft (and the current-draft pointer) durably: a draft is the
    only record of what the user added, so it must survive a crash."""
    try:
        # ensure_ascii keeps undecodable file names (surrogate escapes) round-tripping.
        write_atomic(_path(draft.header.id), json.dumps(draft.to_json()), durable=True)
        if make_current:
            write_atomic(config.data_dir() / "current_draft", draft.header.id + "\n",
                         durable=True)
    except OSError as exc:
        raise local_os_error(exc, config.data_dir(), "the data directory") from None


def current_id() -> str | None:
    try:
        text = (config.data_dir() / "current_draft").read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


def load(draft_id: str | None) -> Draft:
    """The named draft (id or unique prefix), or the current one."""
    if draft_id is None:
        draft_id = current_id()
        if draft_id is None:
            raise NotFoundError("no current draft: run 'dsfs create' first or pass --id")
    draft_id = draft_id.strip().lower()
    path = _path(draft_id)
    if not path.exists():
        matches = sorted(p.stem for p in drafts_dir().glob(f"{draft_id}*.json"))
        if len(matches) == 1:
            path = _path(matches[0])
        elif len(matches) > 1:
            raise AmbiguousError(
                f"draft id prefix {draft_id!r} matches {len(matches)} drafts: {', '.join(matches)}"
            )
        else:
            raise NotFoundError(
                f"no draft {draft_id!r} on this machine (already closed, or created elsewhere)"
            )
    return Draft.from_json(json.loads(path.read_text()))


def all_drafts() -> list[Draft]:
    found = []
    for path in sorted(drafts_dir().glob("*.json")) if drafts_dir().exists() else []:
        with contextlib.suppress(ValueError, KeyError, OSError):
            found.append(Draft.from_json(json.loads(path.read_text())))
    return found


def remove(draft_id: str) -> None:
    shutil.rmtree(_items_dir(draft_id), ignore_errors=True)
    _path(draft_id).unlink(missing_ok=True)
    (drafts_dir() / f"{draft_id}.lock").unlink(missing_ok=True)
    if current_id() == draft_id:
        (config.data_dir() / "current_draft").unlink(missing_ok=True)


@contextlib.contextmanager
def closing_lock(draft_id: str) -> Iterator[None]:
    """Exclusive right to close one draft; a second closer fails at once."""
    try:
        drafts_dir().mkdir(parents=True, exist_ok=True)
        fd = os.open(drafts_dir() / f"{draft_id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise local_os_error(exc, config.data_dir(), "the data directory") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConflictError(
                f"draft {draft_id} is being closed by another process; wait for it to finish"
            ) from None
        yield
    finally:
        os.close(fd)
