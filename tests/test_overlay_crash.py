"""Crashes of a writable mount: ``kill -9`` of the mount process, then remount.

After a kill, every operation the kernel acknowledged must be kept (each one
is in the journal before its reply, and the page cache outlives the process).
``test_kill_after_partial_copy_up_keeps_the_edit`` is the data loss of issue
10 (a replayed copy-up record left a detached node whose missing block
``status`` filled over the shared data file); the randomized trials mirror
random operations on a native directory (the model), kill the mount at a
random moment, and compare the remounted tree, ``status``, the commit and a
read-only mount of the child with the model.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from test_mount_support import is_mounted, mounted, needs_fuse, run

pytestmark = needs_fuse


BIG = 9 << 20  # two blocks of copy-up


def make_lower(src: Path) -> None:
    """The version every trial starts from: small files, a two-block file,
    nested directories, a symlink."""
    import random

    rng = random.Random(7)
    (src / "a" / "b").mkdir(parents=True)
    (src / "c").mkdir()
    (src / "f.txt").write_bytes(bytes(rng.randrange(32, 127) for _ in range(300)))
    (src / "big.bin").write_bytes(rng.randbytes(BIG))
    for rel in ("a/g", "a/b/h", "c/x", "c/y"):
        (src / rel).write_bytes(rng.randbytes(rng.randint(0, 5000)))
    (src / "c" / "x").chmod(0o600)
    os.symlink("a/g", src / "s")


# -- the model: a native directory that gets the same operations ---------------------

NAMES = ["f.txt", "big.bin", "g", "h", "x", "y", "n1", "n2", "d1", "d2", "a", "b", "c"]


def tree_paths(root: Path) -> tuple[list[str], list[str], list[str]]:
    """(files, directories, symlinks) below ``root`` (relative paths)."""
    files, dirs, links = [], [""], []
    for here, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(here, root)
        rel = "" if rel == "." else rel
        for name in dirnames + filenames:
            path = os.path.join(rel, name)
            st = os.lstat(root / path)
            if stat.S_ISLNK(st.st_mode):
                links.append(path)
            elif stat.S_ISDIR(st.st_mode):
                dirs.append(path)
            else:
                files.append(path)
    return sorted(files), sorted(dirs), sorted(links)


@dataclass
class Op:
    """One operation, applied the same way to the mount and to the model."""

    kind: str
    path: str
    other: str = ""
    offset: int = 0
    size: int = 0
    mode: int = 0
    data: bytes = b""
    keep_open: bool = False

    def __repr__(self) -> str:
        extra = {"other": self.other, "offset": self.offset, "size": self.size,
                 "mode": oct(self.mode) if self.mode else 0, "bytes": len(self.data),
                 "keep_open": self.keep_open}
        return f"{self.kind} {self.path!r} " + " ".join(
            f"{k}={v!r}" for k, v in extra.items() if v)

    def apply(self, root: Path, held: list[int]) -> int:
        """Run on the tree at ``root``; the errno it failed with, or 0."""
        p = str(root / self.path) if self.path else str(root)
        q = str(root / self.other)
        try:
            if self.kind == "create":
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, self.mode)
                self._write(fd, held)
            elif self.kind == "write":
                fd = os.open(p, os.O_WRONLY)
                self._write(fd, held)
            elif self.kind == "truncate":
                os.truncate(p, self.size)
            elif self.kind == "unlink":
                os.unlink(p)
            elif self.kind == "rmdir":
                os.rmdir(p)
            elif self.kind == "mkdir":
                os.mkdir(p, self.mode)
            elif self.kind == "symlink":
                os.symlink(self.other, p)
            elif self.kind == "rename":
                os.rename(p, q)
            elif self.kind == "chmod":
                os.chmod(p, self.mode)
            elif self.kind == "utime":
                os.utime(p, ns=(self.size, self.size), follow_symlinks=False)
            else:
                raise AssertionError(self.kind)
        except OSError as exc:
            return exc.errno or -1
        return 0

    def _write(self, fd: int, held: list[int]) -> None:
        try:
            if os.pwrite(fd, self.data, self.offset) != len(self.data):
                # the mount died between the write's requests (the kernel splits a
                # write that starts inside a page it does not cache)
                raise OSError(SHORT, "short write")
        finally:
            if self.keep_open:
                held.append(fd)
            else:
                os.close(fd)


def random_op(rng: random.Random, model: Path) -> Op:
    files, dirs, links = tree_paths(model)
    anything = files + dirs[1:] + links

    def somewhere() -> str:  # an existing directory and a name, often a taken one
        parent = rng.choice(dirs)
        return os.path.join(parent, rng.choice(NAMES)) if parent else rng.choice(NAMES)

    def existing(pool: list[str]) -> str:
        return rng.choice(pool) if pool and rng.random() < 0.9 else somewhere()

    kind = rng.choices(["create", "write", "truncate", "unlink", "rmdir", "mkdir",
                        "symlink", "rename", "chmod", "utime"],
                       [3, 6, 2, 2, 1, 2, 1, 4, 1, 1])[0]
    if kind == "create":
        return Op(kind, somewhere(), mode=rng.choice([0o644, 0o600, 0o755]),
                  data=rng.randbytes(rng.choice([0, 10, 3000, 70_000])),
                  keep_open=rng.random() < 0.2)
    if kind == "write":
        path = existing(files)
        size = os.lstat(model / path).st_size if os.path.lexists(model / path) else 0
        offset = rng.choice([0, rng.randint(0, max(size, 1)), size,
                             rng.randint(0, size + 20_000), (8 << 20) - 2])
        return Op(kind, path, offset=offset,
                  data=rng.randbytes(rng.choice([1, 3, 100, 5000, 70_000])),
                  keep_open=rng.random() < 0.2)
    if kind == "truncate":
        return Op(kind, existing(files), size=rng.choice([0, 1, 200, 5000, (8 << 20) + 5]))
    if kind == "unlink":
        return Op(kind, existing(files + links))
    if kind == "rmdir":
        return Op(kind, existing(dirs[1:]))
    if kind == "mkdir":
        return Op(kind, somewhere(), mode=rng.choice([0o755, 0o700, 0o750]))
    if kind == "symlink":
        return Op(kind, somewhere(), other=rng.choice(["f.txt", "../a/g", "nowhere", "a"]))
    if kind == "rename":
        source = existing(anything)
        # half the time over an existing entry
        target = rng.choice(anything) if rng.random() < 0.5 and anything else somewhere()
        return Op(kind, source, other=target)
    if kind == "chmod":
        path = existing(files + dirs[1:])
        modes = [0o700, 0o755, 0o750] if path in dirs else [0o600, 0o644, 0o755, 0o640]
        return Op(kind, path, mode=rng.choice(modes))
    return Op("utime", existing(anything), size=rng.randint(10**18, 2 * 10**18))


def compare_trees(mount: Path, model: Path, read_only: bool = False) -> None:
    """The same entries, kinds, bytes, sizes, symlink targets and modes (with
    ``read_only``, the model's modes without write bits, as a read-only mount
    shows them)."""
    got, want = tree_paths(mount), tree_paths(model)
    assert got == want, f"entries differ:\nmount {got}\nmodel {want}"
    for path in got[0] + got[1] + got[2]:
        a, b = os.lstat(mount / path), os.lstat(model / path)
        mode_b = b.st_mode & ~0o222 if read_only and not stat.S_ISLNK(b.st_mode) \
            else b.st_mode
        if not stat.S_ISLNK(b.st_mode):
            assert a.st_mode == mode_b, (path, oct(a.st_mode), oct(mode_b))
        if stat.S_ISREG(b.st_mode):
            assert a.st_size == b.st_size, (path, a.st_size, b.st_size)
            assert (mount / path).read_bytes() == (model / path).read_bytes(), path
        elif stat.S_ISLNK(b.st_mode):
            assert os.readlink(mount / path) == os.readlink(model / path), path


def expected_status(src: Path, model: Path) -> dict[str, list[str]]:
    """What ``dsfs status`` must list: the model against the version, with the
    rules of ``dsfs.overlay.commit.status`` (contents and modes; a directory
    added or removed as a whole once)."""

    def entries(root: Path) -> dict[str, tuple]:
        files, dirs, links = tree_paths(root)
        out: dict[str, tuple] = {}
        for path in files:
            out[path] = ("file", (root / path).read_bytes(), os.lstat(root / path).st_mode)
        for path in dirs[1:]:
            out[path] = ("dir", None, os.lstat(root / path).st_mode)
        for path in links:
            out[path] = ("symlink", os.readlink(root / path), 0)
        return out

    old, new = entries(src), entries(model)
    added, modified, removed = [], [], []
    for path, value in new.items():
        before = old.get(path)
        if before is None:
            added.append((path, value[0]))
        elif before[0] != value[0]:
            removed.append((path, before[0]))
            added.append((path, value[0]))
        elif before != value:
            modified.append(path)
    removed += [(p, v[0]) for p, v in old.items() if p not in new]

    def topmost(items: list[tuple[str, str]]) -> list[str]:
        dirs = {p for p, kind in items if kind == "dir"}
        out = []
        for path, _kind in items:
            parent = os.path.dirname(path)
            while parent and parent not in dirs:
                parent = os.path.dirname(parent)
            if not parent:
                out.append(path)
        return sorted(out)

    return {"added": topmost(added), "modified": sorted(modified),
            "removed": topmost(removed)}


@dataclass
class Trial:
    seed: int
    env: dict[str, str]
    version: str
    src: Path
    work: Path
    ops: int = 40
    commit: bool = True
    log: list[str] = field(default_factory=list)


def kill(proc: subprocess.Popen, env: dict[str, str], mnt: Path) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run(env, "umount", str(mnt))


#: What a request answers once the mount process is dead.
DEAD = (errno.ENOTCONN, errno.ECONNABORTED)
#: Op.apply's answer to a write that wrote less than asked.
SHORT = -5


def in_flight_models(op: Op, model: Path, work: Path) -> list[Path]:
    """The trees the model may be in when ``op`` was cut short by the kill:
    not applied, applied, and for a create, the file opened (created or
    truncated) but not written."""
    out = [model]
    if op.kind in ("write", "create"):
        out.append(work / "model-prefix")  # made after the remount: see prefix_model
    after = work / "model-after"
    shutil.copytree(model, after, symlinks=True)
    op.apply(after, [])
    out.append(after)
    if op.kind == "create":
        opened = work / "model-opened"
        shutil.copytree(model, opened, symlinks=True)
        Op(op.kind, op.path, mode=op.mode).apply(opened, [])
        out.append(opened)
    return out


def prefix_model(op: Op, model: Path, work: Path, shown: Path) -> None:
    """For a write or create cut short: the model with as many of its bytes
    written as the remounted file ``shown`` holds (a write the kernel split may
    have been done in part, whether or not that part was answered)."""
    target = work / "model-prefix"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(model, target, symlinks=True)
    try:
        got = shown.read_bytes()
    except OSError:
        return
    k = 0
    while (k < len(op.data) and op.offset + k < len(got)
           and got[op.offset + k] == op.data[k]):
        k += 1
    flags = os.O_WRONLY | (os.O_CREAT | os.O_TRUNC if op.kind == "create" else 0)
    with contextlib.suppress(OSError):
        fd = os.open(target / op.path, flags, op.mode or 0o644)
        try:
            os.pwrite(fd, op.data[:k], op.offset)
        finally:
            os.close(fd)


def run_trial(trial: Trial) -> None:
    """One seeded trial: random operations on a fresh overlay and on the model,
    then ``kill -9``: after a random number of operations (files possibly
    still open, a background fsync possibly running), or, in about a third of
    the trials, from a timer while operations run (the one cut short may or
    may not have happened: either is accepted, nothing else).  Remount,
    compare; then status, commit and a read-only mount of the child."""
    rng = random.Random(trial.seed)
    model = trial.work / "model"
    shutil.copytree(trial.src, model, symlinks=True)
    mnt = trial.work / "mnt"
    args = ("--writable", "--overlay", str(trial.work / "overlay"))
    count = rng.randint(1, trial.ops)
    timed = rng.random() < 0.35
    delay = rng.uniform(0.0, 0.4)
    held: list[int] = []
    candidates = [model]
    cut: Op | None = None
    with mounted(trial.env, trial.version, mnt, *args) as proc:
        killer = threading.Timer(delay, os.kill, (proc.pid, signal.SIGKILL))
        if timed:
            killer.start()
        try:
            for _ in range(count):
                op = random_op(rng, model)
                got = op.apply(mnt, held)
                if timed and (got in DEAD or got == SHORT):
                    trial.log.append(f"{op} -> {got} (killed)")
                    candidates = in_flight_models(op, model, trial.work)
                    cut = op
                    break
                want = op.apply(model, [])
                trial.log.append(f"{op} -> {got}")
                assert got == want, (f"seed {trial.seed}: {op} answered {got}, "
                                     f"natively {want}\n" + "\n".join(trial.log))
            if not timed and rng.random() < 0.5:
                time.sleep(rng.uniform(0, 1.2))  # a background fsync may be under way
            killer.cancel()
            kill(proc, trial.env, mnt)
        finally:
            killer.cancel()
            for fd in held:
                with contextlib.suppress(OSError):
                    os.close(fd)
    history = f"seed {trial.seed}:\n" + "\n".join(trial.log)
    with mounted(trial.env, trial.version, mnt, *args):
        if cut is not None and cut.kind in ("write", "create"):
            prefix_model(cut, model, trial.work, mnt / cut.path)
        errors = []
        for candidate in candidates:
            try:
                compare_trees(mnt, candidate)
            except AssertionError as exc:
                errors.append(str(exc))
            else:
                model = candidate
                break
        else:
            raise AssertionError("\n".join(errors) + f"\n{history}")
        status = json.loads(run(trial.env, "status", "--json", str(mnt), check=True).stdout)
        got_status = {k: sorted(e["path"] for e in status[k])
                      for k in ("added", "modified", "removed")}
        want_status = expected_status(trial.src, model)
        assert got_status == want_status, f"{got_status} != {want_status}\n{history}"
        if not trial.commit:
            return
        out = run(trial.env, "commit", str(mnt))
        if not any(want_status.values()):
            assert out.returncode == 2, out.stderr
            return
        assert out.returncode == 0, out.stderr + "\n" + history
        child = out.stdout.strip().splitlines()[-1]
        compare_trees(mnt, model)
    ro = trial.work / "ro"
    with mounted(trial.env, child, ro):
        try:
            compare_trees(ro, model, read_only=True)
        except AssertionError as exc:
            raise AssertionError(f"child {child}: {exc}\n{history}") from None


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("crash")
    env = {"DSFS_DATA_DIR": str(base / "data"), "DSFS_CACHE_DIR": str(base / "cache"),
           "DSFS_STORE": str(base / "store"), "DSFS_DEBUG": "1"}
    src = base / "src"
    make_lower(src)
    run(env, "sync", str(src), "-p", "proj", "-n", "crash", check=True)
    rows = json.loads(run(env, "search", "--json", check=True).stdout)
    return {"env": env, "src": src, "base": base, "id": rows[0]["id"]}


def dsfs(dataset: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(dataset["env"], *args, check=check)


def test_kill_after_partial_copy_up_keeps_the_edit(dataset: dict) -> None:
    """Three bytes overwritten in the middle of a file of the version, kill -9,
    ``dsfs umount``, mount again: status and commit keep the edit."""
    base = dataset["base"]
    mnt = base / "mnt-partial"
    args = ("--writable", "--overlay", str(base / "partial-overlay"))
    original = (dataset["src"] / "f.txt").read_bytes()
    expected = original[:100] + b"XYZ" + original[103:]
    with mounted(dataset["env"], dataset["id"], mnt, *args) as proc:
        subprocess.run(f"printf XYZ | dd of={mnt}/f.txt bs=1 seek=100 conv=notrunc",
                       shell=True, check=True, capture_output=True)
        assert (mnt / "f.txt").read_bytes() == expected
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        dsfs(dataset, "umount", str(mnt), check=False)
    assert not is_mounted(mnt)
    with mounted(dataset["env"], dataset["id"], mnt, *args):
        assert (mnt / "f.txt").read_bytes() == expected
        status = json.loads(dsfs(dataset, "status", "--json", str(mnt)).stdout)
        assert status["modified"] == [{"path": "f.txt", "kind": "file"}], status
        assert (mnt / "f.txt").read_bytes() == expected
        child = dsfs(dataset, "commit", str(mnt)).stdout.strip().splitlines()[-1]
        assert (mnt / "f.txt").read_bytes() == expected
    ro = base / "ro-partial"
    with mounted(dataset["env"], child, ro):
        assert (ro / "f.txt").read_bytes() == expected


def test_kill_during_commit_rebase_is_not_an_edit(dataset: dict) -> None:
    """A kill after the claim, while the mount writes its rebased snapshot: the
    remount finishes the commit and says nothing about later edits."""
    base = dataset["base"]
    mnt = base / "mnt-rebase"
    overlay = base / "rebase-overlay"
    args = ("--writable", "--overlay", str(overlay))
    with mounted({**dataset["env"], "DSFS_FAULTS": "put_if_absent:names/:kill-after"},
                 dataset["id"],
                 mnt, *args) as proc:
        (mnt / "new.txt").write_text("new\n")
        first = dsfs(dataset, "commit", str(mnt), check=False)
        assert first.returncode != 0
        proc.wait(timeout=30)
    # what a kill during ``_rebase`` leaves: the new snapshot (on the child,
    # empty) written, commit.json not yet removed
    from dsfs.overlay.upper import Upper

    pending = json.loads((overlay / "commit.json").read_text())
    child = pending["attempts"][-1][0]
    upper = Upper(overlay)
    upper.open()
    upper.load()
    upper.save(json.loads((overlay / "state.json").read_text())["store_id"], child, [])
    upper.close()
    with mounted(dataset["env"], dataset["id"], mnt, *args):
        assert (mnt / "new.txt").read_text() == "new\n"
        status = json.loads(dsfs(dataset, "status", "--json", str(mnt)).stdout)
        assert status["added"] == [] and status["modified"] == [], status
    log = (base / "mnt-rebase.stderr").read_text()
    assert "edited after it began" not in log, log


def test_full_overlay_disk_keeps_serving(dataset: dict, tmp_path: Path) -> None:
    """The overlay on a tiny tmpfs: writes that fill it answer ENOSPC, the mount
    goes on serving (reads, listings, a mkdir from the journal's reserve),
    removing the file makes room again, and a kill -9 afterwards keeps exactly
    what succeeded."""
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)],
                       check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    mnt = tmp_path / "mnt"
    args = ("--writable", "--overlay", str(disk / "o"))
    try:
        with mounted(dataset["env"], dataset["id"], mnt, *args) as proc:
            with pytest.raises(OSError) as full, open(mnt / "fill", "wb") as f:
                for _ in range(200):
                    f.write(b"z" * 65536)
                    f.flush()
            assert full.value.errno == errno.ENOSPC
            assert (mnt / "f.txt").read_bytes() == (dataset["src"] / "f.txt").read_bytes()
            assert "f.txt" in os.listdir(mnt)
            (mnt / "made-when-full").mkdir()
            os.unlink(mnt / "fill")
            deadline = time.monotonic() + 60
            while True:  # the data file goes once its removal is durable (<= 1 s)
                try:
                    (mnt / "later.txt").write_bytes(b"x" * 500_000)
                    break
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC and time.monotonic() < deadline
                    time.sleep(0.2)
            kill(proc, dataset["env"], mnt)
        log = (tmp_path / "mnt.stderr").read_text()
        assert log.count("Traceback") == 0, log  # a failure is one line, not a traceback
        assert "No space left" in log, log
        with mounted(dataset["env"], dataset["id"], mnt, *args):
            assert not (mnt / "fill").exists()
            assert (mnt / "made-when-full").is_dir()
            assert (mnt / "later.txt").read_bytes() == b"x" * 500_000
            dsfs(dataset, "discard", str(mnt))
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_full_journal_refuses_changes_but_removals_work(dataset: dict,
                                                       tmp_path: Path) -> None:
    """A 1 MiB tmpfs: the journal gets only a small allocation, a file fills the
    rest; then changes go on until the journal has no room, and the one that
    finds none is refused with ENOSPC without happening; removing still works,
    makes room again, and a kill -9 keeps exactly what succeeded."""
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                       check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    mnt = tmp_path / "mnt"
    args = ("--writable", "--overlay", str(disk / "o"))
    made: list[str] = []
    try:
        with mounted(dataset["env"], dataset["id"], mnt, *args) as proc:
            (mnt / "first").mkdir()  # allocates the journal's space while there is some
            with pytest.raises(OSError) as full, open(mnt / "fill", "wb") as f:
                for _ in range(100):
                    f.write(b"z" * 65536)
                    f.flush()
            assert full.value.errno == errno.ENOSPC
            with pytest.raises(OSError) as refused:
                for i in range(20_000):
                    name = f"dir-with-a-long-name-{i:05d}"
                    os.mkdir(mnt / name)
                    made.append(name)
            assert refused.value.errno == errno.ENOSPC
            assert len(made) > 50
            assert not (mnt / f"dir-with-a-long-name-{len(made):05d}").exists()
            assert len(os.listdir(mnt)) >= len(made)  # still serving
            os.rmdir(mnt / made.pop())  # removals go on
            os.unlink(mnt / "fill")
            deadline = time.monotonic() + 60
            while True:  # room again once the removal is durable (<= 1 s)
                try:
                    (mnt / "after").mkdir()
                    break
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC and time.monotonic() < deadline
                    time.sleep(0.2)
            kill(proc, dataset["env"], mnt)
        log = (tmp_path / "mnt.stderr").read_text()
        assert log.count("Traceback") == 0, log
        assert log.count("is full") == 1, log  # one line for the episode
        with mounted(dataset["env"], dataset["id"], mnt, *args):
            names = set(os.listdir(mnt))
            assert {"first", "after", *made} <= names
            assert "fill" not in names
            assert len([n for n in names if n.startswith("dir-with")]) == len(made)
            dsfs(dataset, "discard", str(mnt))
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@pytest.mark.parametrize("seed", range(int(os.environ.get("DSFS_CRASH_TRIALS", "20"))))
def test_random_crash_trial(dataset: dict, seed: int, tmp_path: Path) -> None:
    trial = Trial(seed=seed, env=dataset["env"], version=dataset["id"], src=dataset["src"],
                  work=tmp_path)
    run_trial(trial)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1000, 1200))
def test_random_crash_trial_slow(dataset: dict, seed: int, tmp_path: Path) -> None:
    trial = Trial(seed=seed, env=dataset["env"], version=dataset["id"], src=dataset["src"],
                  work=tmp_path)
    run_trial(trial)


def test_compare_trees_sees_differences(tmp_path: Path) -> None:
    """The comparison the trials rely on fails on each kind of difference."""
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        (root / "d").mkdir(parents=True)
        (root / "d" / "f").write_bytes(b"x" * 10)
        os.symlink("d/f", root / "s")
    compare_trees(a, b)
    (b / "d" / "f").chmod(0o600)
    with pytest.raises(AssertionError):
        compare_trees(a, b)
    (b / "d" / "f").chmod((a / "d" / "f").stat().st_mode & 0o7777)
    (b / "d" / "f").write_bytes(b"x" * 9 + b"y")
    with pytest.raises(AssertionError):
        compare_trees(a, b)
