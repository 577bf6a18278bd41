"""The single format version constant and the check every reader applies."""

from __future__ import annotations

from dsfs.errors import FormatVersionError, IntegrityError

#: Bumped whenever a reader of the previous version could misread new objects;
#: the highest format this dsfs reads.  Format 2 added external files.
FORMAT_VERSION = 2
#: What dsfs writes into the config, packs, and manifests without external
#: files: their layout did not change, so readers of format 1 still read them.
BASE_FORMAT = 1
#: A manifest holding an external file (docs/format.md, "External files").
EXTERNAL_FORMAT = 2


def check_format_version(found: object, what: str) -> None:
    """Refuse objects written by a newer dsfs with a message that says so."""
    if not isinstance(found, int) or found < 1:
        raise IntegrityError(f"{what} has no valid format version ({found!r})")
    if found > FORMAT_VERSION:
        raise FormatVersionError(
            f"{what} uses store format {found}, but this dsfs reads format "
            f"{FORMAT_VERSION} at most: upgrade dsfs"
        )
