"""Noticing that a dataset moved on while a version was being built.

Two ``sync``s of one dataset that start from the same latest version both
publish: claims never overwrite each other, so neither loses its version.  But
the one published second is a sibling, not a child, of the first, and the
latest version then silently lacks the other's files.  ``dsfs commit`` says so
with a note; ``sync`` does the same through a ``LatestWatch``:

- ``start`` remembers the claims of the dataset before anything is built;
- ``check`` (just before publishing) fails with ``ConflictError`` when the
  caller asked for ``require_latest`` and a parent is no longer the latest;
- ``publishing`` makes the claim strict in that mode, so of two writers that
  pass ``check`` at the same moment with the same automatic version string,
  the second fails instead of taking the next string;
- ``report`` (after publishing) warns about every version claimed meanwhile.

Without a server this cannot be airtight: two writers that pass ``check`` at
the same instant and claim different version strings both publish, and the
warning of ``report`` is then the only trace.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from dsfs import catalog as cat
from dsfs.errors import ConflictError, DsfsError, NotFoundError
from dsfs.format.manifest import Header
from dsfs.report import Reporter
from dsfs.repository import Repository


@dataclass
class LatestWatch:
    repo: Repository
    project: str
    name: str
    parents: list[str]
    require_latest: bool = False
    claims_before: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, repo: Repository, project: str, name: str, parents: list[str] | None,
              require_latest: bool = False) -> LatestWatch:
        """Remember the dataset's versions, then take its latest version as the
        parent unless ``parents`` are given; with ``require_latest``, fail at
        once if a given parent is not the latest (before anything is hashed)."""
        catalog = cat.Catalog(repo)
        claims = catalog.claimed_versions(project, name)
        watch = cls(repo, project, name, [], require_latest, claims)
        if parents is None:
            latest = watch._latest()
            parents = [latest.id] if latest is not None else []
        watch.parents = list(parents)
        watch.check()
        return watch

    def _latest(self) -> Header | None:
        try:
            return cat.Catalog(self.repo).resolve(cat.Ref(project=self.project, name=self.name))
        except NotFoundError:
            return None

    def check(self) -> None:
        """With ``require_latest``: fail unless a parent is the latest version
        (or, for a new dataset, unless the dataset still has no version)."""
        if not self.require_latest:
            return
        latest = self._latest()
        if (latest.id in self.parents) if latest is not None else not self.parents:
            return
        dataset = f"{self.project}/{self.name}"
        if latest is None:
            wanted = "its parent is no longer visible"
        elif not self.parents:
            wanted = f"{dataset} now has a version, {latest.version} ({latest.id})"
        else:
            parent = self.repo.header(self.parents[-1])
            wanted = (f"{dataset} {latest.version} ({latest.id}) is the latest version, "
                      f"not the parent {parent.version} ({parent.id})")
        raise ConflictError(f"{wanted}: nothing published (--require-latest)")

    @contextlib.contextmanager
    def publishing(self, explicit_version: bool) -> Iterator[bool]:
        """Around the publish: yields whether the claim must be strict, and
        words a lost claim race of ``require_latest`` as the conflict it is."""
        strict = explicit_version or self.require_latest
        try:
            yield strict
        except ConflictError as exc:
            if explicit_version or not self.require_latest:
                raise
            raise ConflictError(
                f"another version of {self.project}/{self.name} was published at the same "
                f"moment ({exc}): nothing published (--require-latest)"
            ) from None

    def newcomers(self, published: Header | None) -> dict[str, str]:
        """Versions claimed since ``start``, other than ``published``."""
        now = cat.Catalog(self.repo).claimed_versions(self.project, self.name)
        return {version: vid for version, vid in now.items()
                if self.claims_before.get(version) != vid
                and (published is None or vid != published.id)}

    def report(self, published: Header | None, reporter: Reporter) -> None:
        """Warn when versions of the dataset appeared while this one was built:
        the latest version then lacks some of the files that were given.
        Best effort: the version is published already, so a store that fails
        now is a warning, never an error that would suggest otherwise."""
        try:
            message = self._concurrent_message(published)
        except DsfsError as exc:
            reporter.warn(f"could not check for versions published meanwhile: {exc}")
            return
        if message:
            reporter.warn(message)

    def _concurrent_message(self, published: Header | None) -> str | None:
        others = self.newcomers(published)
        if not others:
            return None
        order = sorted(others.items(), key=lambda kv: cat.version_sort_key(kv[0]))
        listed = ", ".join(f"{version} ({vid})" for version, vid in order)
        verb, its = ("was", "its") if len(others) == 1 else ("were", "their")
        parent = self.repo.header(self.parents[-1]) if self.parents else None
        start = (f"the parent {parent.version} ({parent.id}) is no longer the latest: "
                 if parent else "")
        if published is None:
            outcome = "the folder matches the parent; no version created"
        elif parent is None:
            outcome = f"{published.version} has no parent and does not hold {its} changes"
        else:
            outcome = (f"{published.version} is a child of {parent.version} and does not "
                       f"hold {its} changes")
        return f"{start}{listed} {verb} published while this ran; {outcome}"


def note_outdated_parent(repo: Repository, header: Header, reporter: Reporter) -> None:
    """After ``close``: note, as ``dsfs commit`` does, when the draft's parent
    was no longer the latest version of the dataset (someone published while
    the draft was open), since the new version then lacks what they published.
    Best effort, like ``LatestWatch.report``; a draft without parents was made
    so on purpose and gets no note."""
    if not header.parents:
        return
    try:
        claims = cat.Catalog(repo).claimed_versions(header.project, header.name)
        others = {version: vid for version, vid in claims.items() if vid != header.id}
        if not others:
            return
        top = max(others, key=cat.version_sort_key)
        if others[top] in header.parents:
            return
        parent = repo.header(header.parents[-1])
    except DsfsError as exc:
        reporter.warn(f"could not check for versions published meanwhile: {exc}")
        return
    reporter.note(f"the parent {parent.version} ({parent.id}) is no longer the latest "
                  f"({top}, {others[top]}): {header.version} is a child of "
                  f"{parent.version} and does not hold what was published since")
