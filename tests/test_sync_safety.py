"""Bad input to the commands that make and get versions: one test per row of
the "Bad input" table of docs/cli.md, through the installed ``dsfs``.

Every row runs the real command in a subprocess and checks its exit code, its
one line on stderr (no traceback), and, for a failure, that nothing was
published: ``search`` and ``list`` answer exactly as before.

Tests run as root here, and root reads a ``chmod 000`` directory anyway.  The
rows about unreadable paths therefore run the command under ``setpriv``
without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH: still uid 0 (so the store,
cache and data directories stay writable), but bound by permission bits.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from dsfs.engine import versions
from dsfs.errors import ConflictError, InputError, NotFoundError, UsageError
from dsfs.repository import Repository
from dsfs_cli.main import cli

ROOT = Path(__file__).resolve().parent.parent
NO_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
          "--bounding-set=-dac_override,-dac_read_search"]


def permission_bits_apply() -> bool:
    return os.geteuid() != 0 or shutil.which("setpriv") is not None


class World:
    """A published p/n 1.0.0 made from ``data``, and a way to run ``dsfs``."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.data = root / "data"
        (self.data / "sub").mkdir(parents=True)
        (self.data / "a.txt").write_text("a")
        (self.data / "sub" / "b.txt").write_text("b")
        self.run("sync", str(self.data), "-p", "p", "-n", "n", check=True)

    def run(self, *args: str, no_dac: bool = False,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        exe = Path(sys.executable).with_name("dsfs")
        command = [str(exe)] if exe.exists() else [sys.executable, "-m", "dsfs"]
        if no_dac and os.geteuid() == 0:
            command = NO_DAC + command
        result = subprocess.run(command + list(args), capture_output=True, text=True,
                                env={**os.environ, **self.env}, timeout=120)
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def published(self) -> tuple[list, list]:
        """What the store shows: the final versions, and the files of p/n."""
        rows = json.loads(self.run("search", "--json", check=True).stdout)
        final = sorted((r["id"], r["version"]) for r in rows if r["status"] == "final")
        files = json.loads(self.run("list", "p/n", "--json", check=True).stdout)
        return final, files

    def folder(self, name: str, files: dict[str, str]) -> Path:
        path = self.root / name
        for rel, text in files.items():
            (path / rel).parent.mkdir(parents=True, exist_ok=True)
            (path / rel).write_text(text)
        return path


def _locked(w: World, mode: int) -> Path:
    folder = w.folder("locked", {"ok.txt": "ok", "sub/hidden.txt": "h"})
    os.chmod(folder / "sub", mode)
    return folder


def _fifo_folder(w: World) -> Path:
    folder = w.folder("special", {"real.txt": "r"})
    os.mkfifo(folder / "pipe")
    return folder


def _draft(w: World) -> None:
    w.run("create", "-p", "p", "-n", "n", check=True)


def _added_then(w: World, change: Callable[[Path], None]) -> list[str]:
    folder = w.folder("added", {"x.txt": "x", "sub/y.txt": "y"})
    _draft(w)
    w.run("add", str(folder), check=True)
    change(folder)
    return ["close"]


def _replace_by_link(folder: Path) -> None:
    """A file swapped for a symlink out of the tree after ``add``: ``close``
    must not follow it (it would store /etc/hostname's bytes)."""
    (folder / "sub" / "y.txt").unlink()
    os.symlink("/etc/hostname", folder / "sub" / "y.txt")


def _replace_by_fifo(folder: Path) -> None:
    """A file swapped for a fifo after ``add``: ``close`` used to wait forever."""
    (folder / "sub" / "y.txt").unlink()
    os.mkfifo(folder / "sub" / "y.txt")


def _outdated_draft(w: World) -> list[str]:
    """A draft of a child of 1.0.0, and 1.0.1 published by a sync meanwhile."""
    w.run("create", "-p", "p", "-n", "n", "--parents", "p/n", check=True)
    w.run("add", str(w.folder("extra", {"e.txt": "e"})), check=True)
    w.run(*_sync(w.folder("theirs", {"t.txt": "t"})), check=True)
    return ["close"]


def _link_to(w: World, name: str, target: str) -> Path:
    link = w.root / name
    os.symlink(target, link)
    return link


def _readonly(w: World) -> Path:
    path = w.root / "readonly"
    path.mkdir()
    path.chmod(0o555)
    return path


def _pack_gone(w: World) -> list[str]:
    packs = [p for p in (w.root / "store" / "packs").rglob("*") if p.is_file()]
    for pack in packs:
        pack.rename(pack.with_name(pack.name + ".away"))
    shutil.rmtree(w.env["DSFS_CACHE_DIR"])
    return ["get", "p/n", "--copy", str(w.root / "copy")]


@dataclass
class Row:
    """One row of the "Bad input" table (its ``id`` is in the table too)."""

    id: str
    prepare: Callable[[World], list[str]]
    code: int
    message: str  # a regex the one stderr line must match
    no_dac: bool = False
    publishes: bool = False  # a success row: the folder is published as it is

    def __str__(self) -> str:
        return self.id


def _sync(path: Path | str, *more: str) -> list[str]:
    return ["sync", str(path), "-p", "p", "-n", "n", *more]


ROWS = [
    Row("sync-symlink", lambda w: _sync(_link_to(w, "link", str(w.folder(
        "real", {"new.txt": "n", "d/e.txt": "e"})))), 0,
        r"dsfs: note: .*link is a symlink to the folder .*/real: using that folder",
        publishes=True),
    Row("sync-symlink-slash", lambda w: _sync(str(_link_to(w, "link", str(w.folder(
        "real", {"new.txt": "n"})))) + "/"), 0,
        r"dsfs: note: .*link/ is a symlink to the folder .*/real: using that folder",
        publishes=True),
    Row("sync-file", lambda w: _sync(w.data / "a.txt"), InputError.exit_code,
        r"dsfs: error: .*a\.txt: not a folder \(a regular file\)"),
    Row("sync-dev-null", lambda w: _sync("/dev/null"), InputError.exit_code,
        r"dsfs: error: /dev/null: not a folder \(a character device\)"),
    Row("sync-fifo", lambda w: _sync(_fifo_folder(w) / "pipe"), InputError.exit_code,
        r"dsfs: error: .*pipe: not a folder \(a fifo\)"),
    Row("sync-dangling-symlink", lambda w: _sync(_link_to(w, "dangling", "nowhere")),
        InputError.exit_code,
        r"dsfs: error: .*dangling: not a folder \(a dangling symlink to 'nowhere'\)"),
    Row("sync-symlink-loop", lambda w: _sync(_link_to(w, "loop", "loop")),
        InputError.exit_code, r"dsfs: error: .*loop: not a folder \(a symlink loop\)"),
    Row("sync-empty-path", lambda w: _sync(""), InputError.exit_code,
        r"dsfs: error: an empty path was given: name a folder \('\.' for the current one\)"),
    Row("sync-missing", lambda w: _sync(w.root / "nothere"), InputError.exit_code,
        r"dsfs: error: .*nothere: no such file or directory"),
    Row("sync-unreadable-dir", lambda w: _sync(_locked(w, 0)), InputError.exit_code,
        r"dsfs: error: cannot read .*/locked/sub: Permission denied", no_dac=True),
    Row("sync-unsearchable-dir", lambda w: _sync(_locked(w, 0o444)), InputError.exit_code,
        r"dsfs: error: cannot read .*/locked/sub/hidden\.txt: Permission denied",
        no_dac=True),
    Row("sync-unreadable-folder", lambda w: _sync(_locked(w, 0o755).chmod(0) or
                                                  w.root / "locked"),
        InputError.exit_code, r"dsfs: error: cannot read .*/locked: Permission denied",
        no_dac=True),
    Row("sync-unreadable-file", lambda w: _sync(_locked(w, 0o755).joinpath(
        "ok.txt").chmod(0) or w.root / "locked"), InputError.exit_code,
        r"dsfs: error: cannot read .*/locked/ok\.txt: Permission denied", no_dac=True),
    Row("sync-special-files", lambda w: _sync(_fifo_folder(w)), 0,
        r"dsfs: warning: skipped .*/pipe: a fifo \(only files, directories and symlinks "
        r"are versioned\)", publishes=True),
    Row("sync-require-latest", lambda w: (w.run(*_sync(w.folder("v2", {"c": "c"})),
                                                check=True)
                                          and _sync(w.data, "--parents", "p/n@1.0.0",
                                                    "--require-latest")),
        ConflictError.exit_code,
        r"dsfs: error: p/n 1\.0\.1 \([0-9a-f]{32}\) is the latest version, not the parent "
        r"1\.0\.0 \([0-9a-f]{32}\): nothing published \(--require-latest\)"),
    Row("sync-version-taken", lambda w: _sync(w.folder("v2", {"c": "c"}), "-v", "1.0.0"),
        ConflictError.exit_code, r"dsfs: error: version 1\.0\.0 of p/n already exists"),
    Row("add-missing", lambda w: _draft(w) or ["add", str(w.root / "nothere")],
        InputError.exit_code, r"dsfs: error: .*nothere: no such file or directory"),
    Row("add-unreadable-dir", lambda w: _draft(w) or ["add", str(_locked(w, 0))],
        InputError.exit_code, r"dsfs: error: cannot read .*/locked/sub: Permission denied",
        no_dac=True),
    Row("add-symlink-to-folder", lambda w: _draft(w) or [
        "add", str(_link_to(w, "link", str(w.data)))], 0,
        r"dsfs: note: .*link is a symlink to a folder: stored as a symlink; add .*link/ "
        r"to add the folder's contents"),
    Row("add-dotdot", lambda w: _draft(w) or ["add", str(w.data), "--dataset-folder", "../x"],
        UsageError.exit_code, r"dsfs: error: dataset path '\.\./x' may not contain '\.\.'"),
    Row("close-unreadable-file", lambda w: _added_then(
        w, lambda f: (f / "sub" / "y.txt").chmod(0)), InputError.exit_code,
        r"dsfs: error: cannot read .*/added/sub/y\.txt: Permission denied", no_dac=True),
    Row("close-vanished-file", lambda w: _added_then(
        w, lambda f: (f / "sub" / "y.txt").unlink()), InputError.exit_code,
        r"dsfs: error: .*/added/sub/y\.txt was added but no longer exists: add it again "
        r"or remove it"),
    Row("close-file-now-symlink", lambda w: _added_then(w, _replace_by_link), InputError.exit_code,
        r"dsfs: error: .*/added/sub/y\.txt was added as a file but is now a symlink: add it "
        r"again or remove it"),
    Row("close-file-now-fifo", lambda w: _added_then(w, _replace_by_fifo), InputError.exit_code,
        r"dsfs: error: .*/added/sub/y\.txt was added as a file but is now a fifo: add it "
        r"again or remove it"),
    Row("close-parent-not-latest", lambda w: _outdated_draft(w), 0,
        r"dsfs: note: the parent 1\.0\.0 \([0-9a-f]{32}\) is no longer the latest \(1\.0\.1, "
        r"[0-9a-f]{32}\): 1\.0\.2 is a child of 1\.0\.0 and does not hold what was "
        r"published since"),
    Row("get-copy-not-empty", lambda w: ["get", "p/n", "--copy", str(w.data)],
        InputError.exit_code, r"dsfs: error: .*/data is not empty: give a new or empty "
        r"directory \(or overwrite it\)"),
    Row("get-copy-file", lambda w: ["get", "p/n", "--copy", str(w.data / "a.txt")],
        InputError.exit_code, r"dsfs: error: .*a\.txt exists and is not a directory"),
    Row("get-copy-empty-path", lambda w: ["get", "p/n", "--copy", ""], InputError.exit_code,
        r"dsfs: error: an empty path was given for the copy: name a new or empty folder"),
    Row("get-copy-unwritable", lambda w: ["get", "p/n", "--copy", str(_readonly(w) / "copy")],
        InputError.exit_code, r"dsfs: error: cannot write .*/readonly/copy: Permission denied",
        no_dac=True),
    Row("get-copy-store-fails", _pack_gone, NotFoundError.exit_code,
        r"dsfs: error: packs/.* is not in the store .*"),
]


@pytest.fixture
def world(tmp_path: Path, dsfs_env: dict[str, str]) -> World:
    return World(tmp_path, {**dsfs_env, "DSFS_STORE": str(tmp_path / "store")})


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_bad_input_row(world: World, row: Row) -> None:
    if row.no_dac and not permission_bits_apply():
        pytest.skip("running as root without setpriv: permission bits do not apply")
    args = row.prepare(world)
    before = world.published()
    result = world.run(*args, no_dac=row.no_dac)
    assert result.returncode == row.code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and re.fullmatch(row.message, lines[0]), result.stderr
    if row.code == 0 and not row.publishes:
        return
    after = world.published()
    if not row.publishes:
        assert after == before
        return
    assert len(after[0]) == len(before[0]) + 1
    folder = Path(args[1].rstrip("/")).resolve()
    copy = world.root / "published-copy"
    world.run("get", "p/n", "--copy", str(copy), check=True)
    assert tree_of(copy) == {rel: v for rel, v in tree_of(folder).items()
                             if v[0] != "special"}


def tree_of(root: Path) -> dict[str, tuple]:
    """rel path → (kind, content or target), for comparing a copy with its folder."""
    found: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                found[rel] = ("dir", None)
            elif path.is_file():
                found[rel] = ("file", path.read_bytes())
            else:
                found[rel] = ("special", None)
    return found


def test_every_row_is_in_the_docs_table() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    section = text.split("## Bad input", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`([a-z0-9-]+)`\s*\|\s*$", section, re.M))
    elsewhere = {"sync-concurrent", "sync-concurrent-required", "get-copy-disk-full"}
    assert documented == {row.id for row in ROWS} | elsewhere


# -- a failed get --copy leaves nothing, and the same command then works -------------


def test_failed_get_copy_leaves_nothing_and_retry_works(store_url: str, tmp_path: Path,
                                                        run_dsfs) -> None:
    data = tmp_path / "data"
    for i in range(20):
        (data / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        (data / f"d{i % 4}" / f"f{i}.bin").write_bytes(os.urandom(1000 + i))
    run_dsfs("sync", str(data), "-p", "p", "-n", "n", check=True)
    repo = Repository.open()
    packs = [info.key for info in repo.store.list("packs/")]
    saved = {key: repo.store.get(key) for key in packs}
    for key in packs:
        repo.store.delete(key)
    shutil.rmtree(os.environ["DSFS_CACHE_DIR"])
    fresh, empty = tmp_path / "new" / "copy", tmp_path / "empty"
    empty.mkdir()
    for target in (fresh, empty):
        result = run_dsfs("get", "p/n", "--copy", str(target))
        assert result.returncode == NotFoundError.exit_code, result.stderr
        assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "new").exists()
    assert list(empty.iterdir()) == []
    for key, data_bytes in saved.items():  # the store is repaired
        repo.store.put(key, data_bytes)
    for target in (fresh, empty):
        run_dsfs("get", "p/n", "--copy", str(target), check=True)
        assert tree_of(target) == tree_of(data)


def test_interrupted_get_copy_leaves_nothing(store_url: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while the files are written: the files written so far go too."""
    from dsfs import Dataset
    from dsfs.engine import copywriter

    data = tmp_path / "data"
    for i in range(10):
        (data / "d").mkdir(parents=True, exist_ok=True)
        (data / "d" / f"f{i}").write_bytes(b"x" * i)
    version = versions.sync(Repository.open(), str(data), "p", "n").header
    written = []
    real = copywriter.write_file

    def interrupted(*args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        if len(written) == 5:
            raise KeyboardInterrupt
        real(*args, **kwargs)
        written.append(args[1])

    monkeypatch.setattr(copywriter, "write_file", interrupted)
    target = tmp_path / "copy"
    with pytest.raises(KeyboardInterrupt):
        Dataset.get(version.id).get_mutable_local_copy(str(target))
    assert written and not target.exists()


# -- two syncs of one dataset at once -----------------------------------------------


def _race(monkeypatch: pytest.MonkeyPatch, where: str, competitor: Path) -> list[str]:
    """Make another writer publish a version of p/n just before ``where`` runs in
    the sync under test (once); returns the competitor's version id."""
    published: list[str] = []
    real = getattr(versions, where)

    def racing(*args, **kwargs):  # type: ignore[no-untyped-def]
        if not published:
            published.append("busy")
            monkeypatch.setattr(versions, where, real)
            other = versions.sync(Repository.open(), str(competitor), "p", "n")
            published[0] = other.header.id
        return real(*args, **kwargs)

    monkeypatch.setattr(versions, where, racing)
    return published


@pytest.mark.parametrize("where", ["build_version", "finish_version"])
def test_concurrent_sync_keeps_both_and_warns(store_url: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              where: str) -> None:
    """Row ``sync-concurrent``: both versions stay, children of the same
    parent, and the second sync says the parent is no longer the latest."""
    repo = Repository.open()
    data, other = tmp_path / "data", tmp_path / "other"
    for folder in (data, other):
        folder.mkdir()
        (folder / "common.txt").write_text("c")
    parent = versions.sync(repo, str(data), "p", "n").header
    (data / "mine.txt").write_text("m")
    (other / "theirs.txt").write_text("t")
    competitor = _race(monkeypatch, where, other)
    result = CliRunner().invoke(cli, _sync(data))
    assert result.exit_code == 0, result.stderr
    ours = result.stdout.strip().splitlines()[-1]
    headers = {h.id: h for h in (repo.header(ours), repo.header(competitor[0]))}
    assert all(h.parents == [parent.id] for h in headers.values())
    warning = (rf"dsfs: warning: the parent 1\.0\.0 \({parent.id}\) is no longer the latest: "
               rf"1\.0\.[12] \({competitor[0]}\) was published while this ran; "
               rf"1\.0\.[12] is a child of 1\.0\.0 and does not hold its changes")
    assert re.fullmatch(warning, result.stderr.strip()), result.stderr


@pytest.mark.parametrize("where", ["build_version", "finish_version"])
def test_concurrent_sync_with_require_latest_fails(store_url: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   where: str) -> None:
    """Row ``sync-concurrent-required``: exit 5 and only the other version is
    published, whether the other writer won before the check (build_version) or
    in the claim race after it (finish_version)."""
    repo = Repository.open()
    data, other = tmp_path / "data", tmp_path / "other"
    for folder in (data, other):
        folder.mkdir()
        (folder / "common.txt").write_text("c")
    versions.sync(repo, str(data), "p", "n")
    (data / "mine.txt").write_text("m")
    (other / "theirs.txt").write_text("t")
    competitor = _race(monkeypatch, where, other)
    result = CliRunner().invoke(cli, [*_sync(data), "--require-latest"])
    assert result.exit_code == ConflictError.exit_code, result.stderr
    assert result.stderr.count("\n") == 1 and "nothing published (--require-latest)" in \
        result.stderr
    from dsfs import Dataset

    assert {h.version for h in Dataset.search("p", "n")} == {"1.0.0", "1.0.1"}
    assert Dataset.get(dataset_project="p", dataset_name="n").id == competitor[0]


def test_get_copy_on_a_full_disk_leaves_nothing(tmp_path: Path, world: World) -> None:
    """Row ``get-copy-disk-full``: exit 11, one line, and the copy is removed."""
    target = tmp_path / "small"
    target.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(target)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        big = world.folder("big", {"small.txt": "s"})
        for i in range(4):
            (big / f"f{i}.bin").write_bytes(os.urandom(400_000))
        world.run(*_sync(big), check=True)
        before = world.published()
        result = world.run("get", "p/n", "--copy", str(target / "copy"))
        assert result.returncode == 11, result.stderr
        assert re.fullmatch(r"dsfs: error: no space left on .*/small/copy(/f\d\.bin)? "
                            r"\(get --copy target\): .*", result.stderr.strip())
        assert list(target.iterdir()) == []
        assert world.published() == before
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_warning_names_a_non_utf8_path_with_escapes(world: World) -> None:
    """A name that is not UTF-8 is shown with \\x escapes, as everywhere else."""
    folder = world.folder("odd", {"real.txt": "r"})
    os.mkfifo(os.path.join(os.fsencode(folder), b"pipe-\xff"))
    result = world.run(*_sync(folder))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"dsfs: warning: skipped {folder}/pipe-\\xff: a fifo (only files, directories and "
        "symlinks are versioned)"]


@pytest.mark.parametrize("where, message", [
    ("build_version", r"p/n now has a version, 1\.0\.0 \([0-9a-f]{32}\)"),
    ("finish_version", r"another version of p/n was published at the same moment \(.*\)")])
def test_first_syncs_of_a_new_dataset_with_require_latest(store_url: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          where: str, message: str) -> None:
    """Two first versions at once: with --require-latest the second one fails
    rather than becoming a second version without a parent."""
    data, other = tmp_path / "data", tmp_path / "other"
    for folder in (data, other):
        folder.mkdir()
        (folder / f"{folder.name}.txt").write_text(folder.name)
    competitor = _race(monkeypatch, where, other)
    result = CliRunner().invoke(cli, [*_sync(data), "--require-latest"])
    assert result.exit_code == ConflictError.exit_code, result.stderr
    assert re.fullmatch(rf"dsfs: error: {message}: nothing published \(--require-latest\)",
                        result.stderr.strip()), result.stderr
    from dsfs import Dataset

    assert [h.id for h in Dataset.search("p", "n")] == [competitor[0]]


def _stop_while_reading(process: subprocess.Popen[str], folder: Path,
                        timeout: float = 60.0) -> bool:
    """SIGSTOP ``process`` as soon as it has a file of ``folder`` open (it is
    then hashing, past choosing its parent); False if it never did."""
    import signal
    import time

    fds = Path(f"/proc/{process.pid}/fd")
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            for fd in fds.iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd).startswith(f"{folder}/"):
                        process.send_signal(signal.SIGSTOP)
                        return True
        time.sleep(0.0005)
    return False


def test_two_sync_processes_of_one_dataset(world: World) -> None:
    """Row ``sync-concurrent`` with two real processes: A is stopped while it
    hashes, B syncs to the end, A goes on.  Both versions stay, both children
    of 1.0.0, and A warns that the parent is no longer the latest."""
    import signal

    mine = world.folder("mine", {"a.txt": "a"})
    (mine / "big.bin").write_bytes(os.urandom(64 << 20))
    theirs = world.folder("theirs", {"b.txt": "b"})
    exe = Path(sys.executable).with_name("dsfs")
    a = subprocess.Popen([str(exe), *_sync(mine)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**os.environ, **world.env})
    try:
        if not _stop_while_reading(a, mine):
            pytest.skip("the sync finished before it could be stopped while hashing")
        world.run(*_sync(theirs), check=True)
    finally:
        a.send_signal(signal.SIGCONT)
        out, err = a.communicate(timeout=300)
    assert a.returncode == 0, err
    rows = {r["version"]: r for r in json.loads(world.run("search", "--json").stdout)}
    assert sorted(rows) == ["1.0.0", "1.0.1", "1.0.2"]
    assert rows["1.0.1"]["parents"] == rows["1.0.2"]["parents"] == [rows["1.0.0"]["id"]]
    assert out.strip().splitlines()[-1] == rows["1.0.2"]["id"]
    assert re.fullmatch(
        rf"dsfs: warning: the parent 1\.0\.0 \({rows['1.0.0']['id']}\) is no longer the "
        rf"latest: 1\.0\.1 \({rows['1.0.1']['id']}\) was published while this ran; 1\.0\.2 "
        r"is a child of 1\.0\.0 and does not hold its changes", err.strip()), err


def test_sync_and_get_a_tree_deeper_than_the_recursion_limit(world: World) -> None:
    """The scan walks with a stack: 1,100 nested directories are no internal error."""
    deep = world.root / "deep"
    path = deep
    path.mkdir()
    for _ in range(1100):  # os.makedirs itself recurses
        path = path / "d"
        path.mkdir()
    (path / "f.txt").write_text("bottom")
    copy = world.root / "copy"
    try:
        world.run(*_sync(deep), check=True)
        world.run("get", "p/n", "--copy", str(copy), check=True)
        assert (copy / path.relative_to(deep) / "f.txt").read_text() == "bottom"
    finally:
        # pytest's own clean-up of old temporary folders uses a recursive
        # shutil.rmtree, which fails on these trees (it ended a CI run);
        # GNU rm walks iteratively.
        subprocess.run(["rm", "-rf", str(deep), str(copy)], check=True)


def test_store_failing_after_the_publish_is_a_warning(store_url: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The check for concurrent versions runs after the claim: if the store
    fails then, the version is published and the exit code must say success."""
    from dsfs import catalog
    from dsfs.errors import StoreUnavailableError

    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("a")
    versions.sync(Repository.open(), str(data), "p", "n")
    (data / "b.txt").write_text("b")
    published: list[bool] = []
    real_finish, real_claims = versions.finish_version, catalog.Catalog.claimed_versions

    def finish(*args, **kwargs):  # type: ignore[no-untyped-def]
        result = real_finish(*args, **kwargs)
        published.append(True)
        return result

    def claims(self, project: str, name: str) -> dict[str, str]:
        if published:
            raise StoreUnavailableError("the store went away")
        return real_claims(self, project, name)

    with monkeypatch.context() as patched:
        patched.setattr(versions, "finish_version", finish)
        patched.setattr(catalog.Catalog, "claimed_versions", claims)
        result = CliRunner().invoke(cli, _sync(data))
    assert result.exit_code == 0, result.stderr
    assert result.stderr.strip() == ("dsfs: warning: could not check for versions published "
                                     "meanwhile: the store went away")
    from dsfs import Dataset

    assert Dataset.get(result.stdout.strip().splitlines()[-1]).version == "1.0.1"
