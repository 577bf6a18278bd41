"""Where dsfs keeps things on this machine, from the environment.

``DSFS_STORE`` (or ``--store``) names the store; without it an embedded local
store lives under the XDG data directory.  ``DSFS_CACHE_DIR`` names the shared
chunk cache; without it, the XDG cache directory.  ``DSFS_DATA_DIR`` holds the
local state that belongs to no store object (drafts, the current draft).
``DSFS_SETTLE_SECONDS`` is how long a writable mount's commit keeps asking
the store whether a claim whose write failed got written after all.
``DSFS_SPAN_AFTER``, ``DSFS_SPAN_SHUFFLED``, ``DSFS_SPAN_SECONDS`` and
``DSFS_SPAN_SHARE`` set the pack span policy of readers
(``dsfs.content.spans``).  ``DSFS_PACK_SIZE`` and ``DSFS_PACK_MAX_SIZE`` set
the size of the packs writers make (``dsfs.engine.packer``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / fallback


def data_dir() -> Path:
    """Local state of this user: drafts, overlays, the embedded store."""
    override = os.environ.get("DSFS_DATA_DIR")
    if override:
        return Path(override)
    return _xdg("XDG_DATA_HOME", ".local/share") / "dsfs"


def cache_dir() -> Path:
    """The chunk cache shared by every command, mount and process of this user."""
    override = os.environ.get("DSFS_CACHE_DIR")
    if override:
        return Path(override)
    return _xdg("XDG_CACHE_HOME", ".cache") / "dsfs"


def default_store_url() -> str:
    """``DSFS_STORE`` if set, else the embedded local store."""
    return os.environ.get("DSFS_STORE") or str(data_dir() / "store")


#: Seconds a commit asks the store whether its claim got written (see
#: ``dsfs.overlay.commit.settle``), unless ``DSFS_SETTLE_SECONDS`` says otherwise.
SETTLE_SECONDS = 30.0


def settle_seconds() -> float:
    value = os.environ.get("DSFS_SETTLE_SECONDS", "")
    try:
        seconds = float(value)
    except ValueError:
        return SETTLE_SECONDS
    return seconds if seconds >= 0 else SETTLE_SECONDS


def mount_key(mountpoint: str) -> str:
    """A short stable name for a mount point: names its state file, log, control
    socket and default overlay, so every layer that needs it derives it here."""
    return hashlib.sha256(mountpoint.encode("utf-8", "surrogateescape")).hexdigest()[:20]


#: Cold lone reads in one pack after which a reader fetches the whole pack
#: (``DSFS_SPAN_AFTER``; 0 turns spans off), the packs of one version with
#: such a read after which every cold lone read of the version fetches its
#: whole pack at once (``DSFS_SPAN_SHUFFLED``; 0: never at the first read),
#: the seconds such runs of misses count for (``DSFS_SPAN_SECONDS``), and
#: the share of the cache limit (or of the cache disk's free space) a
#: version may fill for its readers to fetch whole packs (``DSFS_SPAN_SHARE``).
SPAN_AFTER = 2
SPAN_SHUFFLED = 8
SPAN_SECONDS = 600.0
SPAN_SHARE = 0.5


def _number(var: str, default: float) -> float:
    try:
        value = float(os.environ.get(var, ""))
    except ValueError:
        return default
    return value if value >= 0 else default


def span_settings() -> tuple[int, int, float, float]:
    """(misses in a pack before a whole-pack fetch, packs of a version missed
    before every miss fetches its pack, seconds a run counts, cache share)."""
    return (int(_number("DSFS_SPAN_AFTER", SPAN_AFTER)),
            int(_number("DSFS_SPAN_SHUFFLED", SPAN_SHUFFLED)),
            _number("DSFS_SPAN_SECONDS", SPAN_SECONDS),
            _number("DSFS_SPAN_SHARE", SPAN_SHARE))


def pack_sizes(target: int, most: int) -> tuple[int, int]:
    """(bytes at which a writer closes a pack, bytes up to which a pack of big
    chunks may grow): ``DSFS_PACK_SIZE`` (else ``target``) and
    ``DSFS_PACK_MAX_SIZE`` (else ``most``; never below the first)."""
    size = int(_number("DSFS_PACK_SIZE", 0)) or target
    return size, max(size, int(_number("DSFS_PACK_MAX_SIZE", 0)) or most)
