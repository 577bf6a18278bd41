"""The life of a mount: check, build, mount, signal readiness, serve, unmount.

``serve`` runs a mount in the calling process until it is unmounted
(``fusermount3 -u``, ``dsfs umount``) or receives SIGTERM/SIGINT/SIGHUP, which
unmount it cleanly.  ``start_daemon`` runs ``serve`` in a new detached
process (``python -m dsfs ... mount --foreground --ready-fd N``) and returns
only once that process reports, through a pipe, that the mount is ready or
that it failed; a process that dies before reporting is a failure too.

Nothing is mounted before the version is resolved, its manifest chain loaded
and the mount point checked, so bad input fails early with a clear error and
no mount.  Store I/O happens in worker threads (``dsfs.content.reader``).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import trio

from dsfs.chore import describe
from dsfs.content import ChunkReader
from dsfs.content.spans import span_policy
from dsfs.errors import ConflictError, DsfsError, InputError, LocalError
from dsfs.format.manifest import Header
from dsfs.fuse import BaseOperations, ReadOnlyOperations
from dsfs.fuse.adapter import (
    DEFAULT_OPTIONS,
    PATCHED,
    end_session,
    pyfuse3_build,
    serve_requests,
    start_session,
    stop_serving,
)
from dsfs.fuse.writable import WritableOperations
from dsfs.logutil import rate_limit_repeats
from dsfs.mount import cachectl, table
from dsfs.mount.control import Session, socket_name
from dsfs.overlay.commit import open_upper
from dsfs.overlay.fs import restore
from dsfs.overlay.upper import Upper
from dsfs.repository import Repository
from dsfs.vfs import TreeSource, VersionFS, open_tree_source

log = logging.getLogger("dsfs.mount")

#: Concurrent FUSE request handlers.
MAX_TASKS = 64
#: (patched pyfuse3) requests handled in a row before other trio tasks get a turn
#: (a turn of trio's scheduler costs ~7 us, as much as a few cheap requests).
YIELD_EVERY = 128


def check_mountpoint(mountpoint: str | os.PathLike[str]) -> str:
    """The normalized mount point, or a clear error if it cannot be used."""
    path = table.normalize(mountpoint)
    if table.is_mountpoint(path):
        raise ConflictError(f"{path} is already a mount point (see `dsfs mounts`; "
                            f"`dsfs umount {path}` ends a dsfs mount)")
    if not os.path.lexists(path):
        raise InputError(f"mount point {path} does not exist: create the directory first")
    if not os.path.isdir(path):
        raise InputError(f"mount point {path} is not a directory")
    return path


def setup_logging(log_file: Path, debug: bool, to_stderr: bool) -> None:
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler: logging.Handler = logging.FileHandler(log_file)
    handler.setFormatter(fmt)
    root.addHandler(handler)
    if to_stderr:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(fmt)
        root.addHandler(handler)
    if not debug:
        logging.getLogger("pyfuse3").setLevel(logging.WARNING)
    rate_limit_repeats(root)  # one line per kind of repeated error per minute, counted


def _report(ready_fd: int | None, message: dict) -> None:
    if ready_fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(ready_fd, (json.dumps(message) + "\n").encode())
        os.close(ready_fd)


def fuse_options(header: Header, allow_other: bool, debug: bool, writable: bool = False
                 ) -> set[str]:
    """The mount options.  The kernel checks permissions (``default_permissions``)
    only on a mount other users may enter: without ``allow_other`` nobody but
    the mounting user (and root) can, and the check would cost a GETATTR of the
    parent after every create and rename."""
    options = set(DEFAULT_OPTIONS) - {"default_permissions"}
    options |= {"nodev", "nosuid", f"fsname=dsfs:{header.id}", "subtype=dsfs"}
    if not writable:
        options.add("ro")
    if allow_other:
        options |= {"allow_other", "default_permissions"}
    if debug:
        options.add("debug")
    return options


#: Allocations (less deallocations) between two young-generation collections
#: while serving (Python's default: 700).
GC_YOUNG = 10_000


def _quiet_collector() -> None:
    """What exists when serving starts (modules, the replayed tree) lives as
    long as the mount: kept out of the cyclic collector's passes, which then
    come more rarely.  Requests allocate much and keep little (a created file
    keeps a node), so with the default the collector ran every few hundred
    files, and its full passes walk every node a writable mount holds."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])


def serve(repo: Repository, header: Header, mountpoint: str, *, allow_other: bool = False,
          debug: bool = False, ready_fd: int | None = None, log_file: Path | None = None,
          to_stderr: bool = True, cache_size: int | None = None,
          overlay: Path | None = None) -> None:
    """Mount ``header``'s version at ``mountpoint`` and serve it until unmounted;
    with ``overlay`` (an overlay directory) the mount is writable."""
    path = table.normalize(mountpoint)
    log_file = log_file or table.log_path(path)
    setup_logging(log_file, debug, to_stderr)
    session: Session | None = None
    upper: Upper | None = None
    notice = None
    try:
        path = check_mountpoint(path)
        started = time.monotonic()
        if overlay is not None:
            upper, header, records, notice = open_upper(repo, header, overlay)
        source = open_tree_source(repo, header)
        reader = ChunkReader(repo.cache, repo.store, limit=None if cache_size is None
                             else cachectl.CacheLimit(repo.cache, cache_size),
                             spans=span_policy(source.totals()[1], repo.cache.root, cache_size,
                                               scope=header.id))
        ops: BaseOperations
        if upper is not None:
            session = _writable(repo, header, source, upper, records, reader, path)
            ops = session.ops
        else:
            ops = ReadOnlyOperations(VersionFS(source), reader, no_open=PATCHED)
        # From the moment the kernel shows the mount, a SIGTERM must unmount
        # cleanly; until trio's receiver takes over, remember it here.
        for signum in _STOP_SIGNALS:
            signal.signal(signum, _remember_signal)
        try:
            start_session(ops, path, fuse_options(header, allow_other, debug,
                                                 writable=session is not None))
        except RuntimeError as exc:
            raise ConflictError(f"cannot mount at {path}: {exc} (see {log_file})") from None
        reader.mountpoint = path  # the reader raises the kernel's readahead
        try:
            table.write_state(path, {
                "pid": os.getpid(), "mountpoint": path, "version_id": header.id,
                "project": header.project, "name": header.name, "version": header.version,
                "store": repo.store.url, "log": str(log_file), "started": time.time(),
                **({"writable": True, "overlay": str(session.upper.root),
                    "control": socket_name(path)} if session is not None else {}),
            })
        except BaseException as exc:
            # the kernel shows the mount already: never leave it without a server
            end_session(unmount=True)
            if isinstance(exc, OSError):
                raise LocalError(f"cannot write the mount's state file "
                                 f"{table.state_path(path)}: {describe(exc)}") from None
            raise
    except DsfsError as exc:
        if upper is not None:
            upper.close()
        log.error("mount of %s at %s failed: %s", header.id, path, exc)
        _report(ready_fd, {"error": str(exc), "exit_code": exc.exit_code})
        raise
    except BaseException as exc:
        if upper is not None:
            upper.close()
        log.exception("mount of %s at %s failed", header.id, path)
        _report(ready_fd, {"error": f"{type(exc).__name__}: {exc}", "exit_code": 1})
        raise
    if notice:
        log.warning("%s", notice)
    log.info("mounted %s/%s %s (%s) at %s in %.2f s", header.project, header.name,
             header.version, header.id, path, time.monotonic() - started)
    log.info("%s", pyfuse3_build())
    unmount = True
    _quiet_collector()
    try:
        trio.run(_main, reader, ready_fd, session, notice)
        # main returns when the kernel ends the session (an unmount) or on a signal
        unmount = table.is_mountpoint(path)
    except BaseException:
        log.exception("the mount loop of %s ended with an error", path)
        raise
    finally:
        reader.close()
        end_session(unmount=unmount)
        if session is not None:
            _close_overlay(session)
        try:
            table.remove_state(path, os.getpid())
        except OSError as exc:
            log.warning("could not remove the state file of %s: %s", path, describe(exc))
        log.info("unmounted %s (%d chunk fetches)", path, reader.fetches)


def _writable(repo: Repository, header: Header, source: TreeSource, upper: Upper,
              records: list, reader: ChunkReader, path: str) -> Session:
    """The merged tree with the overlay's edits replayed, compacted into a fresh
    snapshot (which also starts a new journal)."""
    fs, replayed, removed = restore(source, upper, records, repo.store_id.hex(), header.id)
    for record, why in replayed.skipped:
        log.warning("overlay record %s no longer applies (%s): skipped", record, why)
    for where, kept in replayed.orphans:
        log.warning("the data of %s is kept in %s", where, kept)
    if removed:
        log.info("removed %d data file(s) no edit refers to", removed)
    ops = WritableOperations(fs, reader, no_open=PATCHED)

    def fresh(version: Header) -> TreeSource:
        return open_tree_source(repo, version)

    return Session(repo, header, fs, ops, upper, path, fresh)


def _close_overlay(session: Session) -> None:
    try:
        session.upper.save(session.repo.store_id.hex(), session.header.id,
                           session.fs.records())
    except OSError as exc:  # a full or failing disk: the journal still holds every edit
        log.warning("could not write the overlay snapshot (%s); the journal keeps the "
                    "edits", describe(exc))
    except Exception:  # noqa: BLE001 - a bug; the journal still holds every edit
        log.exception("could not write the overlay snapshot; the journal keeps the edits")
    try:
        session.upper.close()
    except OSError as exc:
        log.warning("could not close the overlay cleanly (%s); the next mount replays "
                    "its journal", describe(exc))


async def _main(reader: ChunkReader, ready_fd: int | None, session: Session | None = None,
                notice: str | None = None) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(reader.run)
        # The signal handlers must be in place before anyone learns we are ready:
        # a SIGTERM sent right after readiness would otherwise kill us uncleanly.
        await nursery.start(_on_signal)
        if session is not None:
            await nursery.start(session.serve)
            nursery.start_soon(session.keep_durable)
        _report(ready_fd, {"ready": True, "pid": os.getpid(), "notice": notice,
                           "version_id": session.header.id if session else None})
        # the patched build's loop takes how often it lets the other tasks run
        loop: dict[str, int] = {"yield_every": YIELD_EVERY} if PATCHED else {}
        await serve_requests(min_tasks=4, max_tasks=MAX_TASKS, **loop)
        nursery.cancel_scope.cancel()


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_early_signals: list[int] = []


def _remember_signal(signum: int, _frame: object) -> None:
    _early_signals.append(signum)


async def _on_signal(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    with trio.open_signal_receiver(*_STOP_SIGNALS) as signals:
        task_status.started()
        if _early_signals:  # arrived between the mount and this receiver
            log.info("received %s: unmounting", signal.Signals(_early_signals[0]).name)
            stop_serving()
            return
        async for signum in signals:
            log.info("received %s: unmounting", signal.Signals(signum).name)
            stop_serving()
            return


def start_daemon(command: Sequence[str], mountpoint: str) -> dict:
    """Run ``command`` (a foreground mount) detached; return once it is ready.

    ``command`` must accept ``--ready-fd N``.  Its output goes to the mount's
    log file.  Raises the error the mount process reported.
    """
    log_file = table.log_path(mountpoint)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    read_end, write_end = os.pipe()
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            [*command, "--ready-fd", str(write_end)], stdin=subprocess.DEVNULL,
            stdout=out, stderr=out, pass_fds=(write_end,), start_new_session=True, cwd="/",
        )
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        line = pipe.readline()
    try:
        message = json.loads(line) if line else {}
    except ValueError:
        message = {}
    if message.get("ready"):
        return {"pid": proc.pid, "log": str(log_file), "notice": message.get("notice"),
                "version_id": message.get("version_id")}
    if "error" in message:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        error = DsfsError(message["error"])
        error.exit_code = int(message.get("exit_code", 1))
        raise error
    code = proc.wait()
    raise DsfsError(f"the mount process exited (status {code}) before the mount was ready; "
                    f"see {log_file}")
