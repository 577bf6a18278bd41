"""A writable mount's control socket: status, commit and discard, asked by
``dsfs status|commit|discard MOUNTPOINT`` and answered inside the mount
process, which holds the merged tree (so a commit costs what was edited,
never a resolve of the whole version).

The socket is a Linux abstract Unix socket named ``dsfs-<state key>`` (no
file to clean up after ``kill -9``, no path length limit); its name is in the
mount's state file.  Only the mount's own user (or root) is answered
(``SO_PEERCRED``).  Protocol: one JSON request line, one JSON answer line:
``{"ok": true, ...}`` or ``{"error": message, "exit_code": n}``.

A commit holds every change at the gate (``dsfs.fuse.writable.Gate``) from
before it reads the upper layer until the mount is rebased: the version
holds exactly what the tree showed when the commit began, and a change
issued meanwhile (a write to a file left open, say) waits and then becomes
an edit of the child.  Reads go on throughout.  The commit takes the store's
shared lock before the gate, so while it waits for a gc the mount still
takes changes.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import socket
import struct
from typing import Any

import trio

from dsfs.chore import Chore, describe
from dsfs.engine import locks
from dsfs.errors import (
    DiskFullError,
    DsfsError,
    InputError,
    LocalError,
    NotFoundError,
    UsageError,
)
from dsfs.format.manifest import Header
from dsfs.fuse.writable import WritableOperations
from dsfs.mount import table
from dsfs.overlay import commit as oc
from dsfs.overlay.fs import OverlayFS
from dsfs.overlay.source import DeltaSource
from dsfs.overlay.upper import COMPACT_BYTES, SYNC_INTERVAL, Upper
from dsfs.repository import Repository
from dsfs.vfs import TreeSource

log = logging.getLogger("dsfs.mount.control")

MAX_REQUEST = 1 << 20


def socket_name(mountpoint: str) -> str:
    return f"dsfs-{table.state_key(mountpoint)}"


class Session:
    """The writable state of one mount: version, merged tree, upper layer."""

    def __init__(self, repo: Repository, header: Header, fs: OverlayFS,
                 ops: WritableOperations, upper: Upper, mountpoint: str,
                 fresh_source: Any) -> None:
        self.repo = repo
        self.header = header
        self.fs = fs
        self.ops = ops
        self.upper = upper
        self.mountpoint = mountpoint
        self._fresh_source = fresh_source  # header -> TreeSource, for discard
        #: a commit whose publish failed and whose outcome the store could not tell
        self._unsettled: oc.Committed | None = None

    # -- requests ----------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        async with self.ops.gate.hold():
            await self.ops.blocks.fill_all()
            regions = oc.collect(self.fs)
            result = await trio.to_thread.run_sync(oc.status, regions)
        return {"ok": True, "version_id": self.header.id, "version": self.header.version,
                "project": self.header.project, "name": self.header.name,
                **result.to_json()}

    async def commit(self, message: str, version: str | None, tags: list[str]) -> dict:
        # The store lock first, the gate second: a gc holds the store for
        # minutes, and waiting for it at the gate would stop every change to
        # the mount meanwhile.  The build below reuses this process's hold.
        hold = await trio.to_thread.run_sync(locks.Hold, self.repo, "commit")
        try:
            return await self._commit_holding_the_store(message, version, tags)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(hold.release)

    async def _commit_holding_the_store(self, message: str, version: str | None,
                                        tags: list[str]) -> dict:
        async with self.ops.gate.hold():
            self.upper.sync()
            done = await self._earlier_attempt()
            if done is None:
                await self.ops.blocks.fill_all()
                regions = oc.collect(self.fs)
                try:
                    done = await trio.to_thread.run_sync(
                        oc.build, self.repo, self.header, regions, self.upper, message,
                        version, tags)
                except oc.OutcomeUnknown as exc:
                    self._unsettled = exc.committed
                    raise
                except UsageError:
                    if self.upper.recovered != self.header.id:
                        raise
                    return await self._recovered_answer()
            self._unsettled = None
            self.upper.recovered = None
            self._rebase(done)
        log.info("committed %s %s (%s): %s; %d bytes uploaded", done.header.name,
                 done.header.version, done.header.id, done.counts, done.uploaded)
        return {"ok": True, "id": done.header.id, "version": done.header.version,
                "project": done.header.project, "name": done.header.name,
                "parent": self.header_parent(done.header), "counts": done.counts,
                "uploaded_bytes": done.uploaded, "notice": done.notice}

    async def _earlier_attempt(self) -> oc.Committed | None:
        """A commit of this mount whose failure was not certain: if it did get
        published and nothing was edited since, it is the result (a rerun never
        publishes the same edits twice).  Clears a stale commit record."""
        pending = self.upper.read_commit()
        if pending is None:
            return None
        published = await trio.to_thread.run_sync(oc.finished_attempt, self.repo, self.upper)
        unsettled, self._unsettled = self._unsettled, None  # the store has answered
        if (published is not None and unsettled is not None
                and pending.get("parent") == self.header.id
                and oc.same_position(pending, self.upper)):
            log.info("an earlier commit attempt did get published: %s", published.id)
            return dataclasses.replace(unsettled, header=published,
                                       notice="an earlier attempt of this commit got "
                                              "published after all")
        if published is not None:
            log.warning("an earlier commit published %s (%s) but the tree changed since: "
                        "this commit is a sibling of it", published.version, published.id)
        self.upper.clear_commit()
        return None

    async def _recovered_answer(self) -> dict[str, Any]:
        """``dsfs commit`` again after the mount finished an interrupted commit:
        that commit's version (nothing was edited since)."""
        header, self.upper.recovered = self.header, None  # answered once
        return {"ok": True, "id": header.id, "version": header.version,
                "project": header.project, "name": header.name,
                "parent": self.header_parent(header),
                "counts": {k: header.stats.get(k, 0) for k in ("added", "modified", "removed")},
                "uploaded_bytes": header.stats.get("uploaded_bytes", 0),
                "notice": f"the interrupted commit was finished when the overlay was "
                          f"mounted: {header.version} ({header.id})"}

    @staticmethod
    def header_parent(header: Header) -> str:
        return header.parents[0] if header.parents else ""

    def _rebase(self, done: oc.Committed) -> None:
        """The mount now shows the child, with an empty upper layer (no await here:
        the tree and the overlay directory change together)."""
        stats = done.header.stats
        source: TreeSource = DeltaSource(self.fs.source, done.delta,
                                         (stats.get("files", 0), stats.get("size", 0)))
        self.fs.rebase(source, done.entries.get)
        self.header = done.header
        self.upper.save(self.repo.store_id.hex(), done.header.id, self.fs.records())
        self.upper.clear_commit()
        state = table.read_state(self.mountpoint)
        state.update({"version_id": done.header.id, "version": done.header.version})
        table.write_state(self.mountpoint, state)

    async def discard(self) -> dict[str, Any]:
        async with self.ops.gate.hold():
            # a file open meanwhile is left as if unlinked: it reads and writes
            # its discarded bytes until closed (``OverlayFS.reset``)
            regions = oc.collect(self.fs)
            count = len(regions.new) + len(regions.old)
            source = await trio.to_thread.run_sync(self._fresh_source, self.header)
            old_root, names = self.fs.reset(source)
            # names the old tree lacked may sit in the kernel as negative entries
            names = sorted(set(names) | set(self.fs.children(self.fs.root)))
            self.upper.save(self.repo.store_id.hex(), self.header.id, [])

        # the kernel must forget the old tree's names; not from the trio thread:
        # the kernel may call back into this file system while it forgets
        await trio.to_thread.run_sync(self.ops.invalidate_names, old_root.ino, names)
        return {"ok": True, "discarded": count}

    # -- background --------------------------------------------------------------------

    async def keep_durable(self) -> None:
        """Fsync the journal while edits arrive; fold a long journal into a snapshot.
        A failure (a full or failing disk under the overlay) is logged once and
        retried with back-off; it never ends the mount."""
        chore = Chore("making the overlay journal durable")
        while True:
            await trio.sleep(SYNC_INTERVAL + chore.delay)
            try:
                if self.upper.journal_bytes > COMPACT_BYTES:
                    async with self.ops.gate.hold():
                        self.upper.save(self.repo.store_id.hex(), self.header.id,
                                        self.fs.records())
                elif self.upper.unsynced:
                    await trio.to_thread.run_sync(self.upper.sync)
                else:
                    continue
                chore.succeeded()
            except Exception as exc:  # noqa: BLE001 - a background chore outlives failures
                chore.failed(exc)

    # -- the socket ------------------------------------------------------------------

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind("\0" + socket_name(self.mountpoint))
        sock.listen(8)
        task_status.started()
        chore = Chore("accepting on the control socket", first=0.1, longest=5.0)
        with sock:
            async with trio.open_nursery() as nursery:
                while True:
                    try:
                        conn, _addr = await sock.accept()
                    except OSError as exc:  # out of descriptors, say: the client waits
                        await trio.sleep(chore.failed(exc))
                        continue
                    chore.succeeded()
                    nursery.start_soon(self._handle, conn)

    async def _handle(self, conn: trio.socket.SocketType) -> None:
        with conn:
            try:
                creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                        struct.calcsize("3i"))
                _pid, uid, _gid = struct.unpack("3i", creds)
                if uid not in (0, os.getuid()):
                    answer: dict[str, Any] = {"error": "not your mount", "exit_code": 5}
                else:
                    answer = await self._dispatch(json.loads(await _read_line(conn)))
            except DsfsError as exc:
                answer = {"error": str(exc), "exit_code": exc.exit_code}
            except OSError as exc:  # the overlay's disk or the machine, not a bug
                log.warning("control request failed: %s", describe(exc))
                error: DsfsError = (
                    DiskFullError(self.upper.root, "the overlay")
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT)
                    else LocalError(f"the mount process could not do it: {describe(exc)}"))
                answer = {"error": str(error), "exit_code": error.exit_code}
            except Exception as exc:  # noqa: BLE001 - report, keep the mount up
                log.exception("control request failed")
                answer = {"error": f"{type(exc).__name__}: {exc}", "exit_code": 1}
            try:
                data = (json.dumps(answer) + "\n").encode()
                while data:
                    sent = await conn.send(data)
                    data = data[sent:]
            except OSError:
                log.info("the client left before its answer")

    async def _dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "status":
            return await self.status()
        if op == "commit":
            return await self.commit(str(request.get("message") or ""),
                                     request.get("version"), list(request.get("tags") or []))
        if op == "discard":
            return await self.discard()
        raise InputError(f"unknown control request {op!r}")


async def _read_line(conn: trio.socket.SocketType) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        part = await conn.recv(65536)
        if not part:
            break
        data += part
        if len(data) > MAX_REQUEST:
            raise InputError("control request too long")
    return data


def request(mountpoint: str, message: dict[str, Any], timeout: float | None = None
            ) -> dict[str, Any]:
    """Ask the writable mount at ``mountpoint``; raise its error as a DsfsError."""
    path = table.normalize(mountpoint)
    if not table.is_mountpoint(path):
        raise NotFoundError(f"{path} is not mounted (mount it with `dsfs mount --writable`)")
    state = table.read_state(path)
    if not state.get("writable"):
        raise InputError(f"{path} is not a writable dsfs mount")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect("\0" + socket_name(path))
            sock.sendall((json.dumps(message) + "\n").encode())
            data = b""
            while not data.endswith(b"\n"):
                part = sock.recv(65536)
                if not part:
                    break
                data += part
        except OSError as exc:
            raise LocalError(f"cannot reach the mount process of {path}: {exc}") from None
    try:
        answer = json.loads(data)
    except ValueError:
        raise LocalError(f"the mount process of {path} ended without answering; see "
                         f"{state.get('log')}") from None
    if "error" in answer:
        error = DsfsError(answer["error"])
        error.exit_code = int(answer.get("exit_code", 1))
        raise error
    return dict(answer)
