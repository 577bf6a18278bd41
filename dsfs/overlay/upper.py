"""The upper layer on disk: identity, snapshot, journal, data files, lock.

Layout of an overlay directory (``<data dir>/overlays/<name>/`` or a
directory the user names)::

    state.json        snapshot: {"format": 2, "store_id", "base", "gen", "records"}
    journal.<gen>     records appended since that snapshot, one JSON object a line
    commit.json       attempts of a commit in progress (see ``dsfs.overlay.commit``)
    data/<16 hex>     contents of created or copied-up files
    orphans/<16 hex>  data files of records that no longer applied at a mount
                      (kept, never deleted by dsfs; the mount's log names them)
    lock              flock'ed by the one mount process using the overlay

Records and their JSON are ``dsfs.overlay.journal``'s; applying the
snapshot's records, then the journal's, in order, rebuilds the upper layer
(``OverlayFS.replay``).  Format 1 overlays are read and rewritten as format 2
at the next snapshot.

Write order (why a crash loses nothing): a change is written to the journal
before the request that made it returns (the page cache outlives a killed
process; the journal is fsynced every ``SYNC_INTERVAL`` seconds, on ``fsync``
requests and on unmount, which bounds what a power loss can take; an fsync
finds nothing to do when no record was appended since the last one, as after
writes and truncates of a file already changed: its data file holds those).
The records of one change are one journal line (``encode_line``), so a
power loss keeps each change whole or not at all, and a prefix of them: a
journal is read up to its first line that is not whole.  A
snapshot is written to a temporary file, fsynced and renamed over
``state.json`` with ``gen`` one higher; only then is the old journal removed,
so a crash between the two leaves a journal the new snapshot ignores.  Data
files of removed paths are deleted only after the journal saying so is
durable (``retire``; a sync deletes only what was retired before its fsync
began), so a journal never names a data file that is gone.

Journal space is allocated ahead (``JOURNAL_STEP`` bytes at a time), and every
change first asks ``reserve`` for room: on a full disk the change is refused
with ENOSPC before anything moves, instead of changing the tree and then
failing to record it.  Reading a journal stops at the first line that is not
a whole record (a torn tail, or the zeros of the space allocated ahead).

Spare data files: creating a file is the costliest step of a ``create``
request (an inode allocation that can take a millisecond on a busy disk), so
a worker thread keeps up to ``SPARES`` empty data files created and open
ahead of need, and ``new_data`` hands one out.  No record names a spare, so
a crash leaves them to ``collect``; ``close`` deletes them.  Their names are
made durable (the directory fsynced, once a batch) before they are handed
out; a data file made on the spot is covered by the next sync, before the
journal that names it: a power loss never leaves a record of a file whose
name is gone.
"""

from __future__ import annotations

import errno
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
from dsfs.fsutil import fsync_dir, write_atomic, write_json_atomic
from dsfs.overlay.journal import (
    FORMAT,
    READABLE_FORMATS,
    Record,
    decode,
    decode_lines,
    encode,
    encode_line,
)

STATE = "state.json"
COMMIT = "commit.json"
ORPHANS = "orphans"
#: Seconds between journal fsyncs while edits arrive.
SYNC_INTERVAL = 1.0
#: A journal longer than this is folded into a new snapshot.
COMPACT_BYTES = 32 << 20
#: Empty data files kept ready for ``new_data`` (refilled below half).
SPARES = 64
#: Spares are made this many at a time, then their directory is fsynced once.
SPARE_BATCH = 16
#: Journal space allocated at a time; more is allocated when less than
#: ``JOURNAL_LOW`` is left, and a change is refused (ENOSPC) when less than
#: ``JOURNAL_MIN`` is left and no more can be had.
JOURNAL_STEP = 1 << 20
JOURNAL_LOW = 64 << 10
JOURNAL_MIN = 4 << 10
JOURNAL_MIN_REMOVE = 512

log = logging.getLogger("dsfs.overlay")

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


class Upper:
    """One overlay directory, opened (and locked) by one mount process."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_dir = root / "data"
        self._data_prefix = f"{self.data_dir}/"
        self._lock_fd: int | None = None
        self._journal_fd: int | None = None
        self.gen = 0
        #: bytes of whole records in the current journal (its write position)
        self.journal_bytes = 0
        self._allocated = 0  # journal bytes allocated ahead (>= journal_bytes)
        self._short_logged = False
        self._unsynced = False
        #: ``_fd_lock`` keeps the journal's descriptor open while a sync in a
        #: worker thread fsyncs it; ``_lock`` guards ``_retired``
        self._fd_lock = threading.Lock()
        self._lock = threading.Lock()
        #: data files to delete, each with the number of appends after which
        #: the record that dropped it is in the journal (see ``retire``)
        self._retired: list[tuple[str, int]] = []
        self._appends = 0
        #: data files made on the spot, and how many of them data/'s last fsync covers
        self._names_made = 0
        self._names_synced = 0
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
            with self._fd_lock:
                self._trim()
                os.close(self._journal_fd)
                self._journal_fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def load(self) -> dict[str, Any] | None:
        """The snapshot with the journal's records appended (``records``: typed
        records, see ``dsfs.overlay.journal``), or None if new."""
        try:
            state = json.loads((self.root / STATE).read_bytes().decode("utf-8",
                                                                        "surrogateescape"))
        except FileNotFoundError:
            return None
        except ValueError:
            raise IntegrityError(f"{self.root / STATE} is not valid JSON") from None
        if not isinstance(state, dict) or state.get("format") not in READABLE_FORMATS:
            found = state.get("format") if isinstance(state, dict) else None
            raise IntegrityError(
                f"{self.root / STATE} has overlay format {found}, which this dsfs does not "
                f"know (it reads {', '.join(map(str, READABLE_FORMATS))}): use the dsfs that "
                f"wrote it")
        try:
            self.gen = int(state["gen"])
            records = [decode(r) for r in state.get("records", [])]
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"{self.root / STATE} is damaged: {exc}") from None
        journal = self.root / f"journal.{self.gen}"
        tail: list[Record] = []
        self.journal_bytes = 0
        try:
            fd = os.open(journal, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            pass
        else:
            try:
                # what is replayed must be on the disk before anything acts on it:
                # after a kill -9 the journal's last records may be in the page
                # cache only, and ``collect`` deletes the data files they dropped
                os.fsync(fd)
            finally:
                os.close(fd)
            # and so must the names of data files the killed mount made on the spot
            # (this process would never fsync data/ for them: an fsync of such a
            # file would keep its bytes but not its name)
            fsync_dir(self.data_dir)
            tail, self.journal_bytes = decode_lines(journal.read_bytes())
        state["records"] = records + tail
        return state

    def save(self, store_id: str, base: str, records: list[Record]) -> None:
        """A new snapshot; starts a new, empty journal."""
        new = self.gen + 1
        text = json.dumps({"format": FORMAT, "store_id": store_id, "base": base, "gen": new,
                           "records": [encode(r) for r in records]},
                          ensure_ascii=False, separators=(",", ":"))
        write_atomic(self.root / STATE, text.encode("utf-8", "surrogateescape"),
                     durable=True, mode=0o600)
        fd = os.open(self.root / f"journal.{new}",
                     os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        fsync_dir(self.root)  # the new journal's name, before records go into it
        with self._fd_lock, self._lock:
            if self._journal_fd is not None:
                self._trim()
                os.close(self._journal_fd)
            self._journal_fd, self.gen = fd, new
            self.journal_bytes = self._allocated = 0
            self._unsynced = False
            retired = [data_id for data_id, _after in self._retired]
            self._retired = []
        self._allocate(JOURNAL_STEP)
        for stale in self.root.glob("journal.*"):
            if stale.name != f"journal.{self.gen}":
                stale.unlink(missing_ok=True)
        self._delete(retired)  # the snapshot is durable and names none of them

    # -- the journal -----------------------------------------------------------------

    def _allocate(self, size: int) -> bool:
        """Allocate ``size`` more journal bytes; False on a full disk."""
        assert self._journal_fd is not None
        try:
            os.posix_fallocate(self._journal_fd, self._allocated, size)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise
            return False
        self._allocated += size
        return True

    def _trim(self) -> None:
        """Give back the journal space allocated ahead (a clean close or a switch)."""
        assert self._journal_fd is not None
        try:
            os.ftruncate(self._journal_fd, self.journal_bytes)
            self._allocated = self.journal_bytes
        except OSError:
            pass  # zeros after the records are read as the journal's end anyway

    def reserve(self, minimum: int = JOURNAL_MIN) -> None:
        """Room for the records of one change, or OSError(ENOSPC) before the
        change is made (call first thing in every request that changes the tree).
        Removals ask for less (``JOURNAL_MIN_REMOVE``): on a full disk, deleting
        is how the user makes room, so it goes on after other changes stop."""
        if self._journal_fd is None:
            return
        left = self._allocated - self.journal_bytes
        if left >= JOURNAL_LOW:
            return
        if self._allocate(JOURNAL_STEP) or self._allocate(JOURNAL_LOW):
            self._short_logged = False
            return
        if not self._short_logged:
            self._short_logged = True
            log.warning("the disk of overlay %s is full: changes are refused (ENOSPC) "
                        "once its journal has no room left", self.root)
        if left < minimum:
            raise OSError(errno.ENOSPC, "no room left for the overlay's journal")

    def append(self, records: list[Record]) -> None:
        if not records:
            return
        assert self._journal_fd is not None, "save() starts the journal"
        data = encode_line(records)  # one line: a power loss keeps all or none
        if self.journal_bytes + len(data) > self._allocated:
            # more than reserved (a rename of a large changed tree): allocate
            # what it needs; a full disk here is the one case left to the OS
            self._allocate(max(JOURNAL_STEP, len(data)))
        written = os.pwrite(self._journal_fd, data, self.journal_bytes)
        if written != len(data):
            raise OSError(errno.ENOSPC, "the overlay's journal was written short")
        self.journal_bytes += written
        self._appends += 1
        self._unsynced = True

    def sync(self) -> None:
        """Make the journal durable, then delete the data files whose removal
        records were written before the fsync began (one retired meanwhile,
        or whose record is still to come, waits for the next sync)."""
        with self._fd_lock:
            covered = self._appends  # records written so far: this fsync covers them
            self.make_names_durable()  # data files the journal names must exist
            fd = self._journal_fd
            if fd is not None and self._unsynced:
                self._unsynced = False
                try:
                    os.fsync(fd)
                except BaseException:
                    self._unsynced = True
                    raise
        with self._lock:
            ready = [data_id for data_id, after in self._retired if after <= covered]
            self._retired = [(d, after) for d, after in self._retired if after > covered]
        self._delete(ready)

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
            self._names_made += 1  # the next sync makes its name durable
        if len(self._spares) < SPARES // 2 and not self._want_spares.is_set():
            self._want_spares.set()  # (set() takes a lock: not at every file)
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
                batch: list[tuple[str, int]] = []
                try:
                    while len(batch) < SPARE_BATCH and len(self._spares) + len(batch) < SPARES:
                        batch.append(self._make_data())
                except OSError as exc:  # new_data makes its own; say why once
                    log.warning("could not create a spare data file: %s", exc)
                    break
                finally:
                    if batch:  # their names survive a power loss before they are used
                        fsync_dir(self.data_dir)
                        self._spares.extend(batch)
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

    def make_names_durable(self) -> None:
        """fsync ``data/`` if a data file was made there on the spot since its
        last fsync (spares are made durable before they are handed out)."""
        made = self._names_made
        if made != self._names_synced:
            fsync_dir(self.data_dir)
            self._names_synced = made

    def data_path(self, data_id: str) -> Path:
        return self.data_dir / data_id

    def data_file(self, data_id: str) -> str:
        """``data_path`` as a string, for the requests' system calls."""
        return self._data_prefix + data_id

    def retire(self, data_id: str, recorded: bool = False) -> None:
        """Delete a data file once the journal that dropped it is durable: the
        caller appends the record that drops it next, in the same step (or,
        ``recorded``, did so already), so the file goes at the first sync whose
        fsync began after that append, or at the next snapshot."""
        with self._lock:
            self._retired.append((data_id, self._appends + (0 if recorded else 1)))

    def _delete(self, data_ids: list[str]) -> None:
        for data_id in data_ids:
            self.data_path(data_id).unlink(missing_ok=True)

    def keep_orphan(self, data_id: str) -> Path | None:
        """Move a data file no record can use any more to ``orphans/`` (kept for
        the user; dsfs never deletes it); its new path, or None if it is gone."""
        target = self.root / ORPHANS / data_id
        target.parent.mkdir(exist_ok=True)
        try:
            os.rename(self.data_path(data_id), target)
        except FileNotFoundError:
            return None
        fsync_dir(target.parent)  # before the snapshot that no longer names it
        fsync_dir(self.data_dir)
        return target

    def collect(self, keep: set[str]) -> int:
        """Remove data files no record names (left by a crash); return how many.
        Only once the records of ``keep`` are on the disk (``load`` fsyncs the
        journal it reads: see ``dsfs.overlay.fs.restore``), and before the
        first ``new_data`` (a spare being made in the worker thread is named by
        nothing yet)."""
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
        write_json_atomic(self.root / COMMIT, value, durable=True)

    def clear_commit(self) -> None:
        (self.root / COMMIT).unlink(missing_ok=True)
