"""The upper layer on disk: identity, snapshot, journal, data files, lock.

Layout of an overlay directory (``<data dir>/overlays/<name>/`` or a
directory the user names)::

    state.json        snapshot: {"format": 1, "store_id", "base", "gen", "records"}
    journal.<gen>     records appended since that snapshot, one JSON object a line
    commit.json       attempts of a commit in progress (see ``dsfs.overlay.commit``)
    data/<16 hex>     contents of created or copied-up files
    lock              flock'ed by the one mount process using the overlay

A *record* says what one path of the merged tree is (``dsfs.overlay.fs``
defines them); applying the snapshot's records, then the journal's, in order,
rebuilds the upper layer.  Records are whole values ("path p is this file"),
never increments, so a record applied twice changes nothing.

Write order (why a crash loses nothing): a change is appended to the journal
before the request that made it returns (``write`` without fsync survives a
killed process; the journal is fsynced every ``SYNC_INTERVAL`` seconds, on
``fsync`` requests and on unmount, which bounds what a power loss can take).
A snapshot is written to a temporary file, fsynced and renamed over
``state.json`` with ``gen`` one higher; only then is the old journal removed,
so a crash between the two leaves a journal the new snapshot ignores.  Data
files of removed paths are deleted only after the journal saying so is
durable (``retire``), so a journal never names a data file that is gone.

Spare data files: creating a file is the costliest step of a ``create``
request (an inode allocation that can take a millisecond on a busy disk), so
a worker thread keeps up to ``SPARES`` empty data files created and open
ahead of need, and ``new_data`` hands one out.  No record names a spare, so
a crash leaves them to ``collect``; ``close`` deletes them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import threading
from collections import deque
from pathlib import Path
from typing import Any

from dsfs import config
from dsfs.errors import ConflictError, IntegrityError, UsageError

FORMAT = 1
STATE = "state.json"
COMMIT = "commit.json"
#: Seconds between journal fsyncs while edits arrive.
SYNC_INTERVAL = 1.0
#: A journal longer than this is folded into a new snapshot.
COMPACT_BYTES = 32 << 20
#: Empty data files kept ready for ``new_data`` (refilled below half).
SPARES = 64

Record = dict[str, Any]

log = logging.getLogger("dsfs.overlay")

#: One encoder for every journal line (``json.dumps`` with options builds one a call).
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def overlay_dir(name: str | None, mountpoint: str) -> Path:
    """Where an overlay lives: a path (contains '/'), a name under the data dir,
    or, without a name, one derived from the mount point."""
    if name is None:
        base = os.path.basename(mountpoint.rstrip("/")) or "root"
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in base)[:40]
        return config.data_dir() / "overlays" / f"{safe}-{config.mount_key(mountpoint)[:8]}"
    if "/" in name:
        return Path(os.path.abspath(name))
    if name in ("", ".", "..") or "\x00" in name:
        raise UsageError(f"{name!r} is not a usable overlay name")
    return config.data_dir() / "overlays" / name


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, value: Any) -> None:
    """Temp file, fsync, rename, fsync the directory: old or new, never half."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class Upper:
    """One overlay directory, opened (and locked) by one mount process."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_dir = root / "data"
        self._data_prefix = f"{self.data_dir}/"
        self._lock_fd: int | None = None
        self._journal_fd: int | None = None
        self.gen = 0
        self.journal_bytes = 0
        self._unsynced = False
        self._retired: list[str] = []
        #: the version an interrupted commit published, finished when this was opened
        self.recovered: str | None = None
        self._spares: deque[tuple[str, int]] = deque()  # (id, open fd), made ahead
        self._want_spares = threading.Event()
        self._stopping = False
        self._spare_thread: threading.Thread | None = None

    # -- opening -----------------------------------------------------------------

    def open(self) -> None:
        """Create the directory if needed and take its lock."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConflictError(f"overlay {self.root} is in use by another mount") from None
        self._lock_fd = fd

    def close(self) -> None:
        self._stop_spares()
        if self._journal_fd is not None:
            self.sync()
            os.close(self._journal_fd)
            self._journal_fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def load(self) -> dict[str, Any] | None:
        """The snapshot with the journal's records appended, or None if new."""
        try:
            state = json.loads((self.root / STATE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError:
            raise IntegrityError(f"{self.root / STATE} is not valid JSON") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise IntegrityError(f"{self.root / STATE} has an unknown format")
        self.gen = int(state["gen"])
        records = list(state.get("records", []))
        journal = self.root / f"journal.{self.gen}"
        self.journal_bytes = 0
        with contextlib.suppress(FileNotFoundError), open(journal, "rb") as f:
            self.journal_bytes = os.fstat(f.fileno()).st_size
            for line in f:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    break  # the torn tail of a crash: everything before it counts
        state["records"] = records
        return state

    def save(self, store_id: str, base: str, records: list[Record]) -> None:
        """A new snapshot; starts a new, empty journal."""
        old = self.gen
        self.gen = old + 1
        write_json_atomic(self.root / STATE, {
            "format": FORMAT, "store_id": store_id, "base": base, "gen": self.gen,
            "records": records})
        if self._journal_fd is not None:
            os.close(self._journal_fd)
        self._journal_fd = os.open(self.root / f"journal.{self.gen}",
                                   os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND
                                   | os.O_CLOEXEC, 0o600)
        self.journal_bytes = 0
        for stale in self.root.glob("journal.*"):
            if stale.name != f"journal.{self.gen}":
                stale.unlink(missing_ok=True)
        self._delete_retired()

    # -- the journal -----------------------------------------------------------------

    def append(self, records: list[Record]) -> None:
        if not records:
            return
        assert self._journal_fd is not None, "save() starts the journal"
        data = "".join([_encode(r) + "\n" for r in records]).encode(
            "utf-8", "surrogateescape")
        os.write(self._journal_fd, data)
        self.journal_bytes += len(data)
        self._unsynced = True

    def sync(self) -> None:
        """Make the journal durable, then delete the data files it retired."""
        if self._journal_fd is not None and self._unsynced:
            self._unsynced = False
            os.fsync(self._journal_fd)
        self._delete_retired()

    @property
    def unsynced(self) -> bool:
        return self._unsynced or bool(self._retired)

    # -- data files --------------------------------------------------------------------

    def new_data(self) -> tuple[str, int]:
        """A new, empty data file: (id, fd open for reading and writing); a spare
        when one is ready."""
        if self._spare_thread is None and not self._stopping:
            self._spare_thread = threading.Thread(target=self._make_spares,
                                                  name="dsfs-spares", daemon=True)
            self._spare_thread.start()
        try:
            spare = self._spares.popleft()
        except IndexError:
            spare = self._make_data()
        if len(self._spares) < SPARES // 2:
            self._want_spares.set()
        return spare

    def _make_data(self) -> tuple[str, int]:
        data_id = secrets.token_hex(8)
        fd = os.open(self.data_file(data_id), os.O_RDWR | os.O_CREAT | os.O_EXCL
                     | os.O_CLOEXEC, 0o600)
        return data_id, fd

    def _make_spares(self) -> None:
        """The worker thread: refill the spares whenever they run low."""
        while True:
            self._want_spares.wait()
            self._want_spares.clear()
            while not self._stopping and len(self._spares) < SPARES:
                try:
                    self._spares.append(self._make_data())
                except OSError as exc:  # new_data makes its own; say why once
                    log.warning("could not create a spare data file: %s", exc)
                    break
            if self._stopping:
                return

    def _stop_spares(self) -> None:
        """End the worker thread and delete the spares nobody took."""
        self._stopping = True
        self._want_spares.set()
        if self._spare_thread is not None:
            self._spare_thread.join()
            self._spare_thread = None
        while self._spares:
            data_id, fd = self._spares.popleft()
            os.close(fd)
            self.data_path(data_id).unlink(missing_ok=True)

    def data_path(self, data_id: str) -> Path:
        return self.data_dir / data_id

    def data_file(self, data_id: str) -> str:
        """``data_path`` as a string, for the requests' system calls."""
        return self._data_prefix + data_id

    def retire(self, data_id: str) -> None:
        """Delete a data file once the journal that dropped it is durable."""
        self._retired.append(data_id)

    def _delete_retired(self) -> None:
        retired, self._retired = self._retired, []
        for data_id in retired:
            self.data_path(data_id).unlink(missing_ok=True)

    def collect(self, keep: set[str]) -> int:
        """Remove data files no record names (left by a crash); return how many.
        Only before the first ``new_data``: a spare being made in the worker
        thread is named by nothing yet, and must not be deleted under it."""
        if self._spare_thread is not None:
            raise RuntimeError("collect() runs before the overlay hands out data files")
        removed = 0
        for path in self.data_dir.iterdir():
            if path.name not in keep:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    # -- a commit in progress ----------------------------------------------------------

    def read_commit(self) -> dict[str, Any] | None:
        try:
            value = json.loads((self.root / COMMIT).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def write_commit(self, value: dict[str, Any]) -> None:
        write_json_atomic(self.root / COMMIT, value)

    def clear_commit(self) -> None:
        (self.root / COMMIT).unlink(missing_ok=True)
