"""Random histories of the merged tree against a dict model, without a mount.

``OverlayFS`` is driven directly, the way the writable adapter drives it
(copy-up, block fills, writes, truncations, renames, ...), over a small lower
tree held in memory and a real upper layer in a temporary directory.  Among
the operations, ``crash`` reopens the overlay from disk without closing it
(the journal and data files as a ``kill -9`` leaves them: spares not deleted,
no snapshot written) and ``fill`` fetches every missing block (what ``status``
and ``commit`` do first).  After every reopen, and at the end, the tree must
equal the model exactly: entries, kinds, bytes, sizes, modes, symlink
targets; ``replay`` checks its invariants itself.  The block size is cut to
4 KiB so that files of a few blocks exercise partial copy-up.

The second half uses a tiny tmpfs as the overlay's disk: a change that finds
no room for its journal record is refused with ENOSPC before the tree
changes, removals still work, and a reopen shows exactly the changes that
succeeded.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsfs.format.digest import file_hasher
from dsfs.format.manifest import DIR, FILE, SYMLINK, Entry
from dsfs.overlay import contents as overlay_contents
from dsfs.overlay import records as overlay_records
from dsfs.overlay import upper as overlay_upper
from dsfs.overlay.fs import OverlayFS, restore
from dsfs.overlay.nodes import Node
from dsfs.overlay.upper import Upper
from dsfs.vfs import ROOT_INO, MemoryTreeSource

BLOCK = 4096

Model = dict[str, tuple]  # path -> ("file", bytes, mode) | ("dir", mode) | ("link", target)


def digest(data: bytes) -> str:
    hasher = file_hasher()
    hasher.update(data)
    return hasher.digest_id()


def lower_model() -> Model:
    def body(n: int, seed: int) -> bytes:
        return bytes((i * 7 + seed) % 251 for i in range(n))

    return {
        "d": ("dir", 0o755),
        "d/a": ("file", body(3 * BLOCK + 100, 1), 0o644),
        "d/b": ("file", body(10, 2), 0o600),
        "d/e": ("dir", 0o750),
        "d/e/x": ("file", body(BLOCK, 3), 0o644),
        "top": ("file", body(2 * BLOCK, 4), 0o755),
        "empty": ("file", b"", 0o644),
        "l": ("link", "d/a"),
    }


def source_of(model: Model) -> MemoryTreeSource:
    tree = {}
    for path, value in model.items():
        if value[0] == "dir":
            tree[path] = Entry(path, DIR, 0, stat.S_IFDIR | value[1], 1)
        elif value[0] == "file":
            tree[path] = Entry(path, FILE, len(value[1]), stat.S_IFREG | value[2], 1,
                               digest(value[1]))
        else:
            tree[path] = Entry(path, SYMLINK, len(value[1]), stat.S_IFLNK | 0o777, 1,
                               target=value[1])
    return MemoryTreeSource(tree)


@contextlib.contextmanager
def small_blocks() -> Iterator[None]:
    # the modules that compute with the block size (nodes.BLOCK is their default)
    modules = (overlay_contents, overlay_records)
    saved = [module.BLOCK for module in modules]
    for module in modules:
        module.BLOCK = BLOCK
    try:
        yield
    finally:
        for module, value in zip(modules, saved, strict=True):
            module.BLOCK = value


class Harness:
    """An overlay opened like a mount opens it, and the adapter's steps."""

    def __init__(self, root: Path, lower: Model) -> None:
        self.root = root
        self.lower = {p: v[1] for p, v in lower.items() if v[0] == "file"}
        self.source = source_of(lower)
        self.upper: Upper
        self.fs: OverlayFS
        self.held: list[Node] = []  # files kept open for writing (a process's fds)
        self.open()

    def open(self) -> None:
        upper = Upper(self.root)
        upper.open()
        state = upper.load()
        fs, report, _removed = restore(self.source, upper, (state or {}).get("records", []),
                                       "0" * 32, "base")  # as a mount does
        assert not report.skipped, report.skipped
        self.upper, self.fs = upper, fs

    def crash(self) -> None:
        """What ``kill -9`` leaves: no snapshot, spares on disk, descriptors closed
        by the kernel (the lock with them)."""
        self.held = []  # the kernel closes the dead process's files
        upper = self.upper
        upper._stopping = True
        upper._want_spares.set()
        if upper._spare_thread is not None:
            upper._spare_thread.join()
        for _id, fd in upper._spares:
            os.close(fd)
        for node in self.fs.iter_nodes():
            if node.fd is not None:
                os.close(node.fd)
                node.fd = None
        for fd in (upper._journal_fd, upper._lock_fd):
            if fd is not None:
                os.close(fd)
        self.open()

    def close(self) -> None:
        self.release_held()
        self.upper.save("0" * 32, "base", self.fs.records())
        for node in self.fs.iter_nodes():
            if node.fd is not None:
                os.close(node.fd)
                node.fd = None
        self.upper.close()

    def hold(self, path: str) -> None:
        node = self.fs.open(self.fs.resolve(path).ino)
        self.held.append(node)

    def release_held(self) -> None:
        for node in self.held:
            self.fs.release(node)
        self.held = []

    def write_node(self, node: Node, offset: int, data: bytes) -> None:
        """A write through an open handle (the file may have been unlinked)."""
        if node.data is None or node.missing:
            self._copy_up(node, None)
            if node.fd is None:
                node.fd = os.open(self.fs.upper.data_file(node.data or ""), os.O_RDWR)
            self._fill(node, offset, offset + len(data), covered=True)
        self.fs.write(node, offset, data)

    def reopen(self) -> None:
        self.close()
        self.open()

    # -- the adapter's steps ----------------------------------------------------------

    def where(self, path: str) -> tuple[int, str]:
        return self.fs.resolve(posixpath.dirname(path)).ino, posixpath.basename(path)

    def _fill(self, node: Node, start: int, end: int, covered: bool) -> None:
        for block, lo, hi in self.fs.missing_blocks(node, start, end, covered):
            if hi > lo:
                assert node.lower is not None and node.data is not None
                data = self.lower[node.lower.path][lo:hi]
                fd = os.open(self.fs.upper.data_file(node.data), os.O_WRONLY)
                try:
                    os.pwrite(fd, data, lo)
                finally:
                    os.close(fd)
            self.fs.block_filled(node, block)

    def _copy_up(self, node: Node, keep: int | None) -> None:
        plan = self.fs.copy_up_plan(node, keep)
        if plan is not None:
            self.fs.copy_up_done(plan)

    def write(self, path: str, offset: int, data: bytes) -> None:
        node = self.fs.open(self.fs.resolve(path).ino)
        try:
            if node.data is None or node.missing:
                self._copy_up(node, None)
                if node.fd is None:
                    node.fd = os.open(self.fs.upper.data_file(node.data or ""), os.O_RDWR)
                self._fill(node, offset, offset + len(data), covered=True)
            self.fs.write(node, offset, data)
        finally:
            self.fs.release(node)

    def create(self, path: str, mode: int, data: bytes) -> None:
        parent, name = self.where(path)
        node = self.fs.create(parent, name, stat.S_IFREG | mode, opening=True)
        try:
            if data:
                self.fs.write(node, 0, data)
        finally:
            self.fs.release(node)

    def truncate(self, path: str, size: int) -> None:
        node = self.fs.resolve(path)
        if node.data is None:
            self._copy_up(node, size)
        self.fs.setattr(node.ino, size=size)

    def fill(self) -> None:
        for node in self.fs.iter_nodes():
            if node.missing and node.data is not None:
                self._fill(node, 0, node.lower_end, covered=False)

    def read(self, node: Node) -> bytes:
        if node.data is None:
            assert node.lower is not None
            return self.lower[node.lower.path][:node.size]
        with open(self.fs.upper.data_file(node.data), "rb") as f:
            local = f.read()
        out = bytearray()
        for from_lower, start, end in self.fs.read_plan(node, 0, node.size):
            if from_lower:
                assert node.lower is not None
                out += self.lower[node.lower.path][start:end]
            else:
                out += local[start:end].ljust(end - start, b"\0")
        return bytes(out)

    def tree(self) -> Model:
        out: Model = {}
        stack = [(self.fs.root, "")]
        while stack:
            node, path = stack.pop()
            for name, child in self.fs.children(node).items():
                child_path = f"{path}/{name}" if path else name
                attr = self.fs.attr(child)
                if child.kind == DIR:
                    out[child_path] = ("dir", attr.mode & 0o7777)
                    stack.append((child, child_path))
                elif child.kind == SYMLINK:
                    out[child_path] = ("link", self.fs.readlink(child.ino))
                else:
                    data = self.read(child)
                    assert attr.size == len(data), (child_path, attr.size, len(data))
                    out[child_path] = ("file", data, attr.mode & 0o7777)
        return out


# -- random histories ---------------------------------------------------------------------

KINDS = ["hold", "write_held", "release",
         "create", "write", "write", "write", "truncate", "unlink", "rmdir", "mkdir",
         "symlink", "rename", "rename", "chmod", "crash", "fill", "reopen"]
NAMES = ["a", "b", "x", "n", "d", "e"]

op_strategy = st.tuples(
    st.sampled_from(KINDS),
    st.integers(0, 1 << 16),  # picks a path
    st.integers(0, 1 << 16),  # picks another path or a name
    st.integers(0, 4 * BLOCK + 50),  # offset or size
    st.binary(max_size=BLOCK + 20),
    st.sampled_from([0o600, 0o644, 0o755, 0o700]),
)


def below(path: str, top: str) -> bool:
    return path == top or path.startswith(top + "/")


def pick(pool: list[str], k: int | str) -> str | None:
    """A path of ``pool`` chosen by a number (a test may name the path)."""
    if isinstance(k, str):
        return k
    return pool[k % len(pool)] if pool else None


def fresh(model: dict[str, tuple], k: int | str) -> str:
    """A path in an existing directory of ``model`` chosen by a number (or named)."""
    if isinstance(k, str):
        return k
    dirs = [""] + sorted(p for p in model if model[p][0] == "dir")
    parent = dirs[k % len(dirs)]
    name = NAMES[(k // len(dirs)) % len(NAMES)]
    return f"{parent}/{name}" if parent else name


def change_names(h: Harness, model: dict[str, tuple], op: tuple) -> bool:
    """unlink, rmdir, mkdir, symlink, rename, chmod on both, if the model says
    it is valid (a file's value in ``model`` may be anything whose last item
    is its mode); False for another kind."""
    kind, i, j, _number, _data, mode = op
    paths = sorted(model)
    dirs = [""] + [p for p in paths if model[p][0] == "dir"]
    if kind == "unlink":
        path = pick([p for p in paths if model[p][0] != "dir"], i)
        if path is not None:
            h.fs.unlink(*h.where(path))
            del model[path]
    elif kind == "rmdir":
        path = pick([d for d in dirs[1:] if not any(posixpath.dirname(p) == d
                                                      for p in model)], i)
        if path is not None:
            h.fs.rmdir(*h.where(path))
            del model[path]
    elif kind == "mkdir":
        path = fresh(model, i)
        if path not in model:
            h.fs.mkdir(*h.where(path), mode)
            model[path] = ("dir", mode)
    elif kind == "symlink":
        path = fresh(model, i)
        if path not in model:
            target = ["d/a", "../top", "nowhere"][j % 3]
            h.fs.symlink(*h.where(path), target)
            model[path] = ("link", target)
    elif kind == "rename":
        src = pick(paths, i)
        if src is None:
            return True
        dst = pick(paths, j) if isinstance(j, str) or j % 2 else fresh(model, j)
        assert dst is not None
        if below(dst, src) or below(src, dst) or posixpath.dirname(dst) not in dirs:
            return True
        if dst in model:
            a, b = model[src][0], model[dst][0]
            if (a == "dir") != (b == "dir"):
                return True
            if b == "dir" and any(posixpath.dirname(p) == dst for p in model):
                return True
        h.fs.rename(*h.where(src), *h.where(dst))
        moved = {p: v for p, v in model.items() if below(p, src)}
        for p in moved:
            del model[p]
        if dst in model:
            del model[dst]
        for p, v in moved.items():
            model[dst + p[len(src):]] = v
    elif kind == "chmod":
        path = pick([p for p in paths if model[p][0] != "link"], i)
        if path is not None:
            h.fs.setattr(h.fs.resolve(path).ino, mode=mode)
            value = model[path]
            model[path] = (*value[:-1], mode)
    else:
        return False
    return True


def step(h: Harness, model: Model, op: tuple) -> None:
    """Apply one operation to both, if the model says it is valid."""
    kind, i, j, number, data, mode = op
    paths = sorted(model)
    files = [p for p in paths if model[p][0] == "file"]

    if kind == "crash":
        h.crash()
        assert h.tree() == model
    elif kind == "reopen":
        h.reopen()
        assert h.tree() == model
    elif kind == "hold":
        path = pick(files, i)
        if path is not None:
            h.hold(path)
    elif kind == "release":
        h.release_held()
    elif kind == "write_held":
        node = h.held[i % len(h.held)] if h.held else None
        if node is not None:
            h.write_node(node, number, data)
            if h.fs.attached(node):  # else: unlinked, only the handle sees it
                path = h.fs.path(node)
                old = bytearray(model[path][1])
                if number > len(old) and data:
                    old += b"\0" * (number - len(old))
                old[number:number + len(data)] = data
                model[path] = ("file", bytes(old), model[path][2])
    elif kind == "fill":
        h.fill()
    elif kind == "create":
        path = fresh(model, i)
        if path not in model:
            h.create(path, mode, data)
            model[path] = ("file", data, mode)
    elif kind == "write":
        path = pick(files, i)
        if path is not None:
            h.write(path, number, data)
            old = bytearray(model[path][1])
            if number > len(old) and data:
                old += b"\0" * (number - len(old))
            old[number:number + len(data)] = data
            model[path] = ("file", bytes(old), model[path][2])
    elif kind == "truncate":
        path = pick(files, i)
        if path is not None:
            h.truncate(path, number)
            old = model[path][1]
            model[path] = ("file", old[:number].ljust(number, b"\0"), model[path][2])
    elif not change_names(h, model, op):
        raise AssertionError(kind)


def run_history(ops: list[tuple]) -> None:
    root = Path(tempfile.mkdtemp(prefix="dsfs-model-"))
    try:
        with small_blocks():
            model = lower_model()
            h = Harness(root / "overlay", model)
            model = dict(model)
            for op in ops:
                step(h, model, op)
            assert h.tree() == model
            h.crash()
            assert h.tree() == model
            h.fill()
            h.crash()
            assert h.tree() == model
            h.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op_strategy, max_size=40))
def test_random_histories_survive_crashes(ops: list[tuple]) -> None:
    run_history(ops)


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op_strategy, max_size=80))
def test_random_histories_survive_crashes_slow(ops: list[tuple]) -> None:
    run_history(ops)


def test_the_kill_after_a_partial_copy_up(tmp_path: Path) -> None:
    """Issue 10's revert, without a mount: a write into the middle of a lower
    file, a crash, then the fill that status does must keep the write."""
    with small_blocks():
        model = lower_model()
        h = Harness(tmp_path / "o", model)
        h.write("d/a", 100, b"XYZ")
        h.crash()
        h.fill()
        data = h.read(h.fs.resolve("d/a"))
        assert data[100:103] == b"XYZ"
        h.crash()
        assert h.read(h.fs.resolve("d/a"))[100:103] == b"XYZ"


def test_a_record_that_no_longer_applies_keeps_its_data(tmp_path: Path) -> None:
    """A journal record below a path that is gone is skipped and reported; its
    data file moves to orphans/ instead of being deleted by ``collect``."""
    model = lower_model()
    h = Harness(tmp_path / "o", model)
    h.create("d/new", 0o644, b"precious")
    node = h.fs.resolve("d/new")
    data_id = node.data
    assert data_id is not None
    from dsfs.overlay.journal import File

    h.close()
    upper = Upper(tmp_path / "o")
    upper.open()
    upper.load()
    # what a damaged or foreign history looks like: a file below a missing directory
    upper.save("0" * 32, "base", [File("gone/new", None, data_id, 0o644, 1, 8)])
    upper.close()
    upper = Upper(tmp_path / "o")
    upper.open()
    state = upper.load()
    assert state is not None
    fs = OverlayFS(h.source, upper)
    report = fs.replay(state["records"])
    assert [r.path for r, _why in report.skipped] == ["gone/new"]
    assert report.orphans and report.orphans[0][0] == "gone/new"
    assert upper.collect(fs.data_ids()) == 0
    assert (tmp_path / "o" / "orphans" / data_id).read_bytes() == b"precious"
    upper.close()


def test_format_1_overlays_are_read(tmp_path: Path) -> None:
    """An overlay written before the typed records (``p``, ``from``, ``lend``)."""
    import json

    root = tmp_path / "o"
    (root / "data").mkdir(parents=True)
    (root / "data" / "0123456789abcdef").write_bytes(b"x" * 20)
    state = {"format": 1, "store_id": "0" * 32, "base": "base", "gen": 1, "records": [
        {"op": "del", "p": "d/b"},
        {"op": "dir", "p": "new", "lower": None, "mode": 0o700, "mtime": 5},
        {"op": "file", "p": "new/f", "from": None, "data": "0123456789abcdef",
         "mode": 0o600, "mtime": 6, "size": 20}]}
    (root / "state.json").write_text(json.dumps(state))
    (root / "journal.1").write_text(json.dumps({"op": "link", "p": "s", "target": "t",
                                                "mtime": 7}) + "\n")
    h = Harness(root, lower_model())
    tree = h.tree()
    assert "d/b" not in tree
    assert tree["new"] == ("dir", 0o700)
    assert tree["new/f"] == ("file", b"x" * 20, 0o600)
    assert tree["s"] == ("link", "t")
    h.close()
    assert json.loads((root / "state.json").read_text())["format"] == 3
    (root / "state.json").write_text(json.dumps({**state, "format": 9}))
    with pytest.raises(Exception, match="format 9"):
        Harness(root, lower_model())


def test_sync_deletes_only_what_was_retired_before_it(tmp_path: Path) -> None:
    """A data file retired while a sync is under way waits for the next sync
    (its removal record may have missed the fsync)."""
    h = Harness(tmp_path / "o", lower_model())
    h.create("f1", 0o644, b"1")
    h.create("f2", 0o644, b"2")
    upper = h.upper
    first = h.fs.resolve("f1").data
    second = h.fs.resolve("f2").data
    assert first and second
    h.fs.unlink(ROOT_INO, "f1")
    real_fsync = os.fsync

    def fsync_while_unlinking(fd: int) -> None:  # another request arrives meanwhile
        if "f2" in h.fs.children(h.fs.root):
            h.fs.unlink(ROOT_INO, "f2")
        real_fsync(fd)

    os_fsync, os.fsync = os.fsync, fsync_while_unlinking
    try:
        upper.sync()
    finally:
        os.fsync = os_fsync
    assert not upper.data_path(first).exists()
    assert upper.data_path(second).exists()  # its record was not covered
    upper.sync()
    assert not upper.data_path(second).exists()
    # retired before the record that drops it is written: kept by a sync between
    h.create("f3", 0o644, b"3")
    third = h.fs.resolve("f3").data
    assert third
    upper.retire(third)
    upper.sync()
    assert upper.data_path(third).exists()
    h.fs.mkdir(ROOT_INO, "any-record", 0o755)
    upper.sync()
    assert not upper.data_path(third).exists()
    h.close()


# -- a full disk under the overlay -------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "tiny"
    where.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)],
                       check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_full_disk_refuses_changes_before_they_happen(tiny_disk: Path,
                                                      caplog: pytest.LogCaptureFixture
                                                      ) -> None:
    saved = overlay_upper.JOURNAL_STEP
    overlay_upper.JOURNAL_STEP = 16 << 10  # tmpfs of 256 KiB: allocate in small steps
    try:
        model = lower_model()
        h = Harness(tiny_disk / "o", model)
        model = dict(model)
        filler = b"z" * 4096
        with pytest.raises(OSError) as full:  # a file's bytes fill the disk
            h.create("big", 0o644, b"")
            model["big"] = ("file", b"", 0o644)
            offset = 0
            while True:
                h.write("big", offset, filler)
                offset += len(filler)
                model["big"] = ("file", filler * (offset // len(filler)), 0o644)
        assert full.value.errno == errno.ENOSPC
        made = 0
        with pytest.raises(OSError) as refused:  # then the journal's space runs out
            while True:
                h.fs.mkdir(ROOT_INO, f"dir{made:05d}", 0o755)
                model[f"dir{made:05d}"] = ("dir", 0o755)
                made += 1
        assert refused.value.errno == errno.ENOSPC
        assert made > 10
        assert f"dir{made:05d}" not in h.fs.children(h.fs.root)  # refused before the change
        assert sum("is full" in r.getMessage() for r in caplog.records) == 1
        h.fs.unlink(ROOT_INO, "big")  # removing still works on a full disk
        del model["big"]
        h.crash()
        assert h.tree() == model
        h.upper.sync()
        h.fs.mkdir(ROOT_INO, "after", 0o700)  # space is back
        model["after"] = ("dir", 0o700)
        h.crash()
        assert h.tree() == model
        h.close()
    finally:
        overlay_upper.JOURNAL_STEP = saved


def test_a_partly_copied_file_without_its_lower_entry_is_not_shown_as_zeros(
        tmp_path: Path) -> None:
    """A record of a partly copied file whose lower entry is gone cannot be
    shown (its holes would read as zeros): it is skipped, its data kept."""
    from dsfs.overlay.journal import File

    h = Harness(tmp_path / "o", lower_model())
    h.close()
    upper = Upper(tmp_path / "o")
    upper.open()
    upper.load()
    (tmp_path / "o" / "data" / "00000000000000aa").write_bytes(b"\0" * 100 + b"XYZ")
    upper.save("0" * 32, "base", [File("d/a", "no/such/file", "00000000000000aa", 0o644, 1,
                                       103, (0,), 103)])
    upper.close()
    upper = Upper(tmp_path / "o")
    upper.open()
    state = upper.load()
    assert state is not None
    fs = OverlayFS(h.source, upper)
    report = fs.replay(state["records"])
    assert [r.path for r, _why in report.skipped] == ["d/a"]
    assert (tmp_path / "o" / "orphans" / "00000000000000aa").exists()
    upper.close()


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 1 << 30))
def test_delta_sources_flatten_and_answer_like_the_applied_deltas(seed: int) -> None:
    """Each commit's DeltaSource over the previous one is one layer over the
    version, and answers exactly like the deltas applied to the tree."""
    import random

    from dsfs.engine.tree import apply_delta, make_delta
    from dsfs.format.manifest import REMOVED
    from dsfs.overlay.commit import _prune_removals
    from dsfs.overlay.source import DeltaSource

    rng = random.Random(seed)

    def file(path: str) -> Entry:
        return Entry(path, FILE, 1, stat.S_IFREG | 0o644, 1, f"xxh:{rng.random()}")

    def folder(path: str) -> Entry:
        return Entry(path, DIR, 0, stat.S_IFDIR | 0o755, 1)

    tree = {"a": folder("a"), "a/x": file("a/x"), "a/b": folder("a/b"),
            "a/b/y": file("a/b/y"), "c": file("c"), "e": folder("e")}
    base = MemoryTreeSource(dict(tree))
    layered: MemoryTreeSource | DeltaSource = base
    seen = set(tree)
    for _commit in range(rng.randint(1, 6)):
        new = dict(tree)
        for _change in range(rng.randint(1, 4)):
            paths = sorted(new)
            dirs = [""] + [p for p in paths if new[p].kind == DIR]
            kind = rng.choice(["remove", "file", "dir", "replace"])
            if kind == "remove" and paths:
                gone = rng.choice(paths)
                new = {p: e for p, e in new.items()
                       if p != gone and not p.startswith(gone + "/")}
            elif kind in ("file", "dir"):
                parent = rng.choice(dirs)
                path = (parent + "/" if parent else "") + rng.choice("abcxyz")
                if path not in new:
                    new[path] = file(path) if kind == "file" else folder(path)
            elif kind == "replace" and paths:
                path = rng.choice(paths)
                new = {p: e for p, e in new.items() if not p.startswith(path + "/")}
                new[path] = file(path) if new[path].kind == DIR else folder(path)
        delta = _prune_removals(make_delta(tree, new))
        assert apply_delta(tree, delta) == new
        layered = DeltaSource(layered, delta, (0, 0))
        assert layered.below is base  # one layer, however many commits
        tree = new
        seen |= set(tree)
        for path in seen:
            assert layered.entry(path) == tree.get(path), path
        for path in [""] + [p for p, e in tree.items() if e.kind == DIR]:
            want = sorted((p.rsplit("/", 1)[-1], e) for p, e in tree.items()
                          if p != "" and p.rpartition("/")[0] == path)
            assert layered.children(path) == want, path
        assert all(e.kind != REMOVED for e in tree.values())


def test_data_file_names_are_durable_before_the_journal_names_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A data file made on the spot (no spare ready) gets its directory fsynced
    by the next sync before the journal that names it is fsynced; so does a
    new journal's name when a snapshot starts it."""
    calls: list[tuple[str, object]] = []
    real_fsync = os.fsync
    monkeypatch.setattr(overlay_upper, "fsync_dir", lambda p: calls.append(("dir", Path(p))))
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(("fsync", fd)), real_fsync(fd))[1])
    monkeypatch.setattr(overlay_upper, "SPARES", 0)  # every data file is made on the spot
    h = Harness(tmp_path / "o", lower_model())
    assert ("dir", tmp_path / "o") in calls  # the journal save() started
    calls.clear()
    h.create("new", 0o644, b"x")
    h.upper.sync()
    journal = ("fsync", h.upper._journal_fd)
    assert ("dir", tmp_path / "o" / "data") in calls and journal in calls, calls
    assert calls.index(("dir", tmp_path / "o" / "data")) < calls.index(journal), calls
    h.close()
