"""Drafts: versions being built on this machine, before ``close`` publishes them.

A draft is local state (``<data dir>/drafts/<id>.json``): its header, the store
it belongs to, and the operations added so far.  The files themselves stay
where they are until ``close`` reads them.  ``<data dir>/current_draft`` names
the draft last created, so ``add``/``remove``/``close`` work without ``--id``.
Closing holds an exclusive lock on ``<id>.lock``, so two closes of one draft
cannot both run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dsfs import config
from dsfs.engine.scan import SourceItem
from dsfs.errors import AmbiguousError, ConflictError, NotFoundError, local_os_error
from dsfs.format.manifest import Header
from dsfs.fsutil import write_atomic


@dataclass
class Draft:
    header: Header
    store_url: str
    store_id: str
    #: Version string chosen by the user (True) or picked automatically (False).
    explicit_version: bool = False
    #: In order: {"op": "add", "items": [...]} or {"op": "remove", "pattern": P}.
    ops: list[dict[str, Any]] = field(default_factory=list)
    #: (version id, version string) of every publish attempt of ``close``.
    attempts: list[tuple[str, str]] = field(default_factory=list)

    def add_items(self, items: list[SourceItem]) -> None:
        self.ops.append({"op": "add", "items": [asdict(i) for i in items]})

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
