"""How versions are named: REFs as users write them, the words they are made
of, version-string order, and the store keys of claims and attributes.

A REF is one word: a version id or a unique prefix of one, or
``PROJECT/NAME`` with an optional ``@VERSION`` or ``#TAG`` (not both; the
last ``/`` separates project and name).  Projects, names, version strings and
tags are checked here when they are stored, so that every stored one can be
reached by a REF.  ``dsfs.catalog`` resolves REFs against a store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

from dsfs.errors import UsageError


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


_ID_TEXT = re.compile(r"^[0-9a-fA-F]{1,32}$")


def parse_ref(text: str) -> Ref:
    """A REF given as one word: an id (or prefix), or PROJECT/NAME[@VERSION|#TAG]
    (the last ``/`` separates project and name)."""
    if _ID_TEXT.match(text):
        return Ref(id=text)
    if "/" not in text:
        raise UsageError(
            f"{text!r} is neither a version id nor PROJECT/NAME[@VERSION|#TAG]"
        )
    tag = version = None
    if "#" in text and "@" in text.rsplit("/", 1)[1]:
        raise UsageError(f"{text!r}: a REF names @VERSION or #TAG, not both")
    if "#" in text:
        text, tag = text.rsplit("#", 1)
        if not tag:
            raise UsageError(f"{text + '#'!r} names no tag: give PROJECT/NAME#TAG")
    elif "@" in text:
        text, version = text.rsplit("@", 1)
        if not version:
            raise UsageError(f"{text + '@'!r} names no version: give PROJECT/NAME@VERSION, "
                             "or PROJECT/NAME for the highest version")
    project, name = text.rsplit("/", 1)
    if not project or not name:
        raise UsageError(f"{text!r} needs both a project and a name: PROJECT/NAME")
    return Ref(project=project, name=name, version=version, tag=tag)


def check_word(value: str, what: str, slash: bool = True) -> str:
    """A project, name, version string or tag as stored: stripped, not empty,
    and free of what a one-word REF cannot carry (``@``, ``#``, and ``/`` in
    a name), of NUL and of newlines."""
    value = value.strip()
    if not value:
        raise UsageError(f"{what} may not be empty")
    if "\x00" in value or "\n" in value or "\r" in value:
        raise UsageError(f"{what} {value!r} may not contain NUL or newline characters")
    bad = [c for c in "@#" + ("" if slash else "/") if c in value]
    if bad:
        raise UsageError(f"{what} {value!r} may not contain {bad[0]!r}: no REF "
                         "(PROJECT/NAME@VERSION#TAG) could name it")
    return value
