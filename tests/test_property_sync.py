"""Property: after every ``sync`` or ``close``, ``get`` gives back the folder
exactly, or the command failed with a documented error and published nothing.

Hypothesis draws a random folder (nested directories, empty files, symlinks
inside and outside the tree and dangling ones, fifos, odd names: spaces,
unicode, leading dashes, bytes that are not UTF-8; file and directory modes
including unreadable ones) and a short history of edits (files modified,
added, removed, modes changed, a path replaced by another kind).  After each
step the folder is published, by ``sync`` or by create/``sync_folder``/close,
(a ``sync`` is repeated unchanged, which must publish nothing and memoizes
the stat digests the next ``sync`` passes unchanged directories by), and a
fresh ``get --copy`` of the latest version is compared with the model
of what the folder holds: kinds, bytes, symlink targets, file modes, and
directory modes as a copy keeps them (``mode | 0o700``).  Fifos hold no data
and are skipped.

The tests run as root, which reads any file whatever its mode.  The publish
step therefore runs with CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH dropped from
the effective set of the calling thread (threads it starts inherit that), so
a directory or file without read permission really cannot be read; the
capabilities come back afterwards.  A step with such a path may fail, but
only with ``InputError`` naming a path of the folder, and nothing published;
a step without one must succeed.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import s3_available
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dsfs import Dataset
from dsfs.engine import drafts, versions
from dsfs.errors import DsfsError, InputError
from dsfs.repository import Repository

# -- root without its DAC capabilities, for one thread ---------------------------------

_CAP_V3 = 0x20080522
_DAC_CAPS = (1 << 1) | (1 << 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _set_dac(enabled: bool) -> bool:
    """Raise or drop the DAC capabilities of this thread; False if impossible."""
    libc = ctypes.CDLL(None, use_errno=True)
    header, data = _CapHeader(_CAP_V3, 0), (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        return False
    if enabled:
        data[0].effective |= data[0].permitted & _DAC_CAPS
    else:
        data[0].effective &= ~_DAC_CAPS
    return libc.capset(ctypes.byref(header), data) == 0


def can_enforce_permissions() -> bool:
    if os.geteuid() != 0:
        return True
    if not _set_dac(False):
        return False
    return _set_dac(True)


@contextlib.contextmanager
def permission_bits_enforced() -> Iterator[None]:
    """Inside, this thread (and threads it starts) obeys permission bits."""
    if os.geteuid() != 0:
        yield
        return
    assert _set_dac(False)
    try:
        yield
    finally:
        assert _set_dac(True)


ENFORCED = can_enforce_permissions()

# -- the model: relative path → node -------------------------------------------------

FILE_MODES = [0o644, 0o600, 0o755, 0o444, 0o640, 0o4755, 0o2755]
DIR_MODES = [0o755, 0o700, 0o750, 0o555, 0o1777, 0o2755]
UNREADABLE_FILE_MODES = [0o000, 0o200]
UNREADABLE_DIR_MODES = [0o000, 0o300, 0o600]
ODD_NAMES = ["a b", " lead", "trail ", "-rf", "--help", "-", "ünïcødé", "日本語", "😀",
             "x" * 200, "tab\tname", "new\nline", "back\\slash", "*?[", ".hidden",
             os.fsdecode(b"caf\xe9"), os.fsdecode(b"\xff\xfe-raw")]
OUTSIDE_TARGETS = ["/etc/hostname", "../outside", "../../..", "/", "nowhere",
                   os.fsdecode(b"dangling-\xff")]

name_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
                    min_size=1, max_size=8)
names = st.one_of(name_text, st.sampled_from(ODD_NAMES)).filter(
    lambda n: n not in (".", "..") and len(os.fsencode(n)) <= 255)


def file_modes(enforced: bool) -> st.SearchStrategy[int]:
    """Mostly readable: a tree with one unreadable path is refused whole."""
    return st.sampled_from(FILE_MODES * 8 + (UNREADABLE_FILE_MODES if enforced else []))


def dir_modes(enforced: bool) -> st.SearchStrategy[int]:
    return st.sampled_from(DIR_MODES * 6 + (UNREADABLE_DIR_MODES if enforced else []))


Node = tuple  # ("file", bytes, mode) | ("dir", mode) | ("link", target) | ("fifo",)


@st.composite
def subtree(draw: st.DrawFn, depth: int = 0) -> dict[str, Node]:
    """A flat model of a random tree (paths relative to its own root)."""
    tree: dict[str, Node] = {}
    for name in draw(st.lists(names, max_size=4, unique=True)):
        kind = draw(st.sampled_from(["file", "file", "empty", "dir", "link", "fifo"]
                                    if depth < 3 else ["file", "empty", "link"]))
        if kind == "dir":
            tree[name] = ("dir", draw(dir_modes(ENFORCED)))
            for rel, node in draw(subtree(depth + 1)).items():
                tree[f"{name}/{rel}"] = node
        elif kind == "link":
            tree[name] = ("link", draw(st.sampled_from(OUTSIDE_TARGETS)))
        elif kind == "fifo":
            tree[name] = ("fifo",)
        else:
            data = b"" if kind == "empty" else draw(st.binary(min_size=1, max_size=300))
            tree[name] = ("file", data, draw(file_modes(ENFORCED)))
    return tree


def below(tree: dict[str, Node], path: str) -> list[str]:
    return [p for p in tree if p == path or p.startswith(path + "/")]


def is_dir(tree: dict[str, Node], path: str) -> bool:
    return path == "" or (path in tree and tree[path][0] == "dir")


@st.composite
def edit(draw: st.DrawFn, tree: dict[str, Node]) -> dict[str, Node]:
    """The tree after one random round of edits."""
    new = dict(tree)
    paths = sorted(new)
    for path in draw(st.lists(st.sampled_from(paths), max_size=3, unique=True)) if paths else []:
        for gone in below(new, path):  # removed (a directory with all below it)
            new.pop(gone, None)
    files = sorted(p for p, n in new.items() if n[0] == "file")
    for path in draw(st.lists(st.sampled_from(files), max_size=3, unique=True)) if files else []:
        _kind, data, mode = new[path]
        change = draw(st.sampled_from(["bytes", "same-size", "mode", "append"]))
        if change == "bytes":
            data = draw(st.binary(max_size=300))
        elif change == "same-size" and data:
            data = bytes(b ^ 0x5A for b in data)
        elif change == "append":
            data += b"+"
        else:
            mode = draw(file_modes(ENFORCED))
        new[path] = ("file", data, mode)
    dirs = [""] + sorted(p for p in new if is_dir(new, p))
    for _ in range(draw(st.integers(0, 2))):
        where = draw(st.sampled_from(dirs))
        for rel, node in draw(subtree(depth=where.count("/") + 1 if where else 0)).items():
            path = f"{where}/{rel}" if where else rel
            for gone in below(new, path):  # a path replaced by another kind
                new.pop(gone)
            new[path] = node
    links = sorted(p for p, n in new.items() if n[0] == "link")
    if links and draw(st.booleans()):  # one link pointing inside the tree
        link = draw(st.sampled_from(links))
        inside = sorted(p for p in new if p != link)
        if inside:
            target = draw(st.sampled_from(inside))
            new[link] = ("link", os.path.relpath(target, os.path.dirname(link) or "."))
    return new


# -- writing the model to disk ---------------------------------------------------------

_clock = itertools.count(1_600_000_000)


def unlock(root: Path) -> None:
    """Owner access to everything, so the test itself can edit and delete."""
    for dirpath, dirnames, _files in os.walk(root):
        os.chmod(dirpath, 0o700)
        for name in dirnames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, 0o700)


def write(root: Path, old: dict[str, Node], new: dict[str, Node]) -> None:
    """Edit the folder in place from ``old`` to ``new`` (unchanged files are
    left alone, so their mtime stays and sync may skip reading them)."""
    unlock(root)
    for path in sorted(old, reverse=True):
        if path not in new or new[path][:1] != old[path][:1] or (
                new[path][0] in ("link", "fifo") and new[path] != old[path]):
            target = root / path
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
    for path in sorted(new):
        node, target = new[path], root / path
        if node[0] == "dir":
            target.mkdir(exist_ok=True)
        elif node[0] == "link" and not target.is_symlink():
            os.symlink(node[1], target)
        elif node[0] == "fifo" and not target.exists():
            os.mkfifo(target)
        elif node[0] == "file" and old.get(path) != node:
            if target.exists():
                os.chmod(target, 0o600)
            if old.get(path, ("",))[0] != "file" or old[path][1] != node[1]:
                target.write_bytes(node[1])
                tick = next(_clock) * 1_000_000_000
                os.utime(target, ns=(tick, tick))
    for path in sorted(new, reverse=True):  # modes last, deepest first
        node = new[path]
        if node[0] == "file":
            os.chmod(root / path, node[2])
        elif node[0] == "dir":
            os.chmod(root / path, node[1])


def expected(tree: dict[str, Node]) -> dict[str, tuple]:
    """What a copy of a version of this folder holds (fifos are skipped)."""
    out: dict[str, tuple] = {}
    for path, node in tree.items():
        if node[0] == "file":
            out[path] = ("file", node[1], node[2] & 0o7777)
        elif node[0] == "dir":
            out[path] = ("dir", node[1] | 0o700)
        elif node[0] == "link":
            out[path] = ("link", node[1])
    return out


def read_copy(root: Path) -> dict[str, tuple]:
    found: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st_ = os.lstat(path)
            if stat.S_ISLNK(st_.st_mode):
                found[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st_.st_mode):
                found[rel] = ("dir", stat.S_IMODE(st_.st_mode))
            else:
                os.chmod(path, 0o600)
                found[rel] = ("file", Path(path).read_bytes(), stat.S_IMODE(st_.st_mode))
    return found


def readable(tree: dict[str, Node]) -> bool:
    """Whether every directory can be listed and entered and every file read."""
    for node in tree.values():
        if node[0] == "dir" and node[1] & 0o500 != 0o500:
            return False
        if node[0] == "file" and not node[2] & 0o400:
            return False
    return True


# -- one history ----------------------------------------------------------------------


class History:
    """A folder, a fresh local store and cache, and the versions published."""

    def __init__(self, base: Path, store: str | None = None) -> None:
        self.base = base
        self.folder = base / "folder"
        self.folder.mkdir()
        self.store, self.cache = store or str(base / "store"), str(base / "cache")
        self.repo = Repository.open(self.store, self.cache)
        self.copies = itertools.count()

    def versions(self) -> list[str]:
        return sorted(h.id for h in Dataset.search("p", "n", store=self.store,
                                                   cache_dir=self.cache))

    def latest(self) -> Dataset | None:
        if not self.versions():
            return None
        return Dataset.get(dataset_project="p", dataset_name="n", store=self.store,
                           cache_dir=self.cache)

    def publish(self, how: str, checksum: bool) -> None:
        """``sync``, or create + ``sync_folder`` + close, obeying permission bits."""
        if how == "sync":
            with permission_bits_enforced():
                versions.sync(self.repo, str(self.folder), "p", "n", checksum=checksum)
            return
        latest = self.latest()
        draft = Dataset.create("p", "n", parent_datasets=[latest] if latest else [],
                               store=self.store, cache_dir=self.cache)
        try:
            with permission_bits_enforced():
                draft.sync_folder(str(self.folder))
                draft.finalize()
        except BaseException:
            with contextlib.suppress(DsfsError):
                drafts.remove(draft.id)
            raise

    def check_latest(self, tree: dict[str, Node]) -> None:
        latest = self.latest()
        assert latest is not None
        copy = self.base / f"copy{next(self.copies)}"
        latest.get_mutable_local_copy(str(copy))
        assert read_copy(copy) == expected(tree)

    def step(self, tree: dict[str, Node], how: str, checksum: bool) -> None:
        before = self.versions()
        try:
            self.publish(how, checksum)
        except InputError as exc:
            event(f"{how}: refused ({str(exc).split(':')[-1].strip()})")
            assert not readable(tree), f"refused a readable folder: {exc}"
            assert str(self.folder) in str(exc)
            assert self.versions() == before, "a failed publish left a version"
            return
        event(f"{how}: published, {'readable' if readable(tree) else 'not all readable'}")
        self.check_latest(tree)
        if how == "sync" and not checksum and "://" not in self.store:
            # again, unchanged: publishes nothing, and memoizes the stat
            # digests the next step's sync judges unchanged directories by
            # (cache-side only: the S3 run, slow on moto, leaves it out)
            published = self.versions()
            with permission_bits_enforced():
                versions.sync(self.repo, str(self.folder), "p", "n")
            assert self.versions() == published, "an unchanged sync published"


def run_history(base: Path, data: st.DataObject, store: str | None = None) -> None:
    history = History(base, store)
    tree: dict[str, Node] = {}
    try:
        for _step in range(data.draw(st.integers(1, 3), label="steps")):
            new = data.draw(edit(tree), label="tree")
            write(history.folder, tree, new)
            tree = new
            history.step(tree, data.draw(st.sampled_from(["sync", "close"]), label="how"),
                         data.draw(st.booleans(), label="checksum"))
    finally:
        unlock(base)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def scratch(tmp_path: Path, dsfs_env: dict[str, str]) -> Path:
    return tmp_path


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_get_gives_back_what_sync_and_close_published(scratch: Path,
                                                      data: st.DataObject) -> None:
    run_history(Path(tempfile.mkdtemp(dir=scratch)), data)


@pytest.mark.skipif(not s3_available(), reason="no S3 endpoint (moto) available")
@settings(max_examples=3, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_get_gives_back_what_sync_and_close_published_on_s3(scratch: Path, s3_store_url: str,
                                                            data: st.DataObject) -> None:
    """The same on S3 (moto), fewer examples: a fresh prefix for each."""
    base = Path(tempfile.mkdtemp(dir=scratch))
    run_history(base, data, f"{s3_store_url}/{base.name}")


@pytest.fixture
def long_trials(request: pytest.FixtureRequest) -> None:
    """The long trial runs only when asked for (``pytest -m slow``): ~2 minutes."""
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("a long randomized trial: run it with -m slow")


@pytest.mark.slow
@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_get_gives_back_what_sync_and_close_published_long(long_trials: None, scratch: Path,
                                                           data: st.DataObject) -> None:
    run_history(Path(tempfile.mkdtemp(dir=scratch)), data)
