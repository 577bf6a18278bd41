"""Power loss: what the overlay keeps when the machine stops, tested against a
model with a simulated disk that forgets what was not synced.

Random histories drive ``OverlayFS`` the way the writable adapter does (the
harness of ``test_overlay_model.py``: copy-up, block fills, writes,
truncations, renames of files and directories, ``fsync`` and ``fsyncdir``
requests, the mount's periodic journal sync, ``kill -9`` and remount) while
``power_loss.Recorder`` logs every file-system call below the overlay.  Then,
for several cut points in that log (between two calls, so also in the
middle of an operation), a disk image is built as a power loss may leave it
(what was fsynced is kept; every other write, truncation, allocation and
directory change is kept, dropped or torn, independently), the overlay is
opened on the image as a mount opens it (replay, its invariants,
``collect``, a new snapshot), and the tree must be what ``docs/semantics.md``
promises:

* names, kinds, modes and symlink targets equal the tree after some prefix
  of the operations begun before the cut, a prefix that contains every
  operation that ended before the last completed ``fsync``/``fsyncdir``
  (or remount) began; no record is skipped at replay;
* each file's contents are those it had at its last completed ``fsync`` or
  later: its size lies between the smallest and the largest it had since,
  and each byte is one it held at that position since, or a zero past the
  smallest size (bytes no write touched since the fsync are exactly kept).
"""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from power_loss import FIXED, Fate, Recorder
from test_overlay_model import (
    BLOCK,
    Harness,
    change_names,
    fresh,
    lower_model,
    pick,
    small_blocks,
)

from dsfs.overlay import upper as overlay_upper

# path -> ("file", file id, mode) | ("dir", mode) | ("link", target)
Names = dict[str, tuple]

KINDS = ["create", "write", "write", "write", "truncate", "unlink", "rmdir", "mkdir",
         "symlink", "rename", "rename", "chmod", "link", "fsync", "fsync", "fsyncdir",
         "chore", "kill"]

op_strategy = st.tuples(
    st.sampled_from(KINDS),
    st.integers(0, 1 << 16),
    st.integers(0, 1 << 16),
    st.integers(0, 4 * BLOCK + 50),
    st.binary(min_size=1, max_size=BLOCK + 20),
    st.sampled_from([0o600, 0o644, 0o755, 0o700]),
)


class History:
    """The operations run so far: the names after each, every file's contents
    after each change, and the fsyncs."""

    def __init__(self) -> None:
        lower = lower_model()
        self.names: Names = {}
        self.contents: dict[str, list[tuple[int, bytes]]] = {}  # id -> (op, bytes)
        for path, value in lower.items():
            if value[0] == "file":
                self.names[path] = ("file", f"L:{path}", value[2])
                self.contents[f"L:{path}"] = [(-1, value[1])]
            else:
                self.names[path] = value
        self.after: list[Names] = [dict(self.names)]  # after[n]: after n operations
        self.fsyncs: dict[str, list[int]] = {}  # id -> operations that fsynced it
        self.barriers: list[int] = []  # fsync, fsyncdir and remounts
        self.count = 0

    def content(self, fid: str) -> bytes:
        return self.contents[fid][-1][1]

    def changed(self, fid: str, data: bytes) -> None:
        self.contents.setdefault(fid, []).append((self.count, data))


def step(h: Harness, model: History, op: tuple) -> None:
    kind, i, j, number, data, mode = op
    names = model.names
    paths = sorted(names)
    files = [p for p in paths if names[p][0] == "file"]
    n = model.count
    chmodded = pick([p for p in paths if names[p][0] != "link"], i)  # as change_names
    if kind == "create":
        path = fresh(names, i)
        if path not in names:
            fid = f"N{n}"
            model.changed(fid, b"")
            h.create(path, mode, b"")
            names[path] = ("file", fid, mode)
            h.write(path, 0, data)
            model.changed(fid, data)
    elif kind == "write":
        path = pick(files, i)
        if path is not None:
            fid = names[path][1]
            old = bytearray(model.content(fid))
            if number > len(old):
                old += bytes(number - len(old))
            old[number:number + len(data)] = data
            h.write(path, number, data)
            model.changed(fid, bytes(old))
    elif kind == "truncate":
        path = pick(files, i)
        if path is not None:
            fid = names[path][1]
            h.truncate(path, number)
            model.changed(fid, model.content(fid)[:number].ljust(number, b"\0"))
    elif kind == "link":  # a hard link: both names are one file (one id)
        path, new = pick(files, i), fresh(names, j)
        if path is not None and new not in names:
            node = h.fs.resolve(path)
            if node.data is None:  # the adapter copies a file of the version up first
                h._copy_up(node, None)
            h.fs.link(node.ino, *h.where(new))
            names[new] = names[path]
    elif kind == "rename" and isinstance(i, int) and isinstance(j, int) and j % 2 \
            and paths and names[paths[i % len(paths)]][0] == "file" \
            and names[paths[i % len(paths)]] == names[paths[j % len(paths)]]:
        # two names of one file (a hard link): POSIX rename does nothing
        h.fs.rename(*h.where(paths[i % len(paths)]), *h.where(paths[j % len(paths)]))
    elif kind == "chmod" and chmodded in files:  # a file's mode is its inode's
        fid = names[chmodded][1]
        h.fs.setattr(h.fs.resolve(chmodded).ino, mode=mode)
        for path, value in names.items():
            if value[0] == "file" and value[1] == fid:
                names[path] = ("file", fid, mode)
    elif change_names(h, names, op):
        pass
    elif kind == "fsync":
        path = pick(files, i)
        if path is not None:
            node = h.fs.open(h.fs.resolve(path).ino)
            try:
                h.fs.fsync(node, datasync=bool(j % 2))
            finally:
                h.fs.release(node)
            model.fsyncs.setdefault(names[path][1], []).append(n)
            model.barriers.append(n)
    elif kind == "fsyncdir":
        h.fs.fsync(None)
        model.barriers.append(n)
    elif kind == "chore":  # the mount's sync of the journal, every second
        h.upper.sync()
    elif kind == "kill":  # kill -9 and mount again: a new snapshot, written durably
        h.crash()
        model.barriers.append(n)
    else:
        raise AssertionError(kind)


def kept(observed: bytes, window: list[bytes]) -> bool:
    """``observed`` is a possible content of a file whose contents since its
    last fsync were ``window`` (see the module docstring)."""
    if observed in window:
        return True
    sizes = [len(w) for w in window]
    if not min(sizes) <= len(observed) <= max(sizes):
        return False
    smallest = min(sizes)
    for b, value in enumerate(observed):
        if value == 0 and b >= smallest:
            continue
        if not any(b < len(w) and w[b] == value for w in window):
            return False
    return True


def check_image(image: Path, model: History, log: list[tuple], cut: int) -> None:
    begun = [e[2] for e in log[:cut] if e[:2] == ("mark", "begin")]
    ended = {e[2]: pos for pos, e in enumerate(log[:cut]) if e[:2] == ("mark", "end")}
    started = max(begun) + 1 if begun else 0
    # every operation that ended before a completed barrier began is in the prefix
    floor = max([b for b in model.barriers if b in ended], default=0)
    h = Harness(image, lower_model())  # replay (no record may be skipped), collect, save
    try:
        seen = h.tree()
        reasons = []
        for count in range(started, floor - 1, -1):
            why = matches(seen, model, model.after[count], started, ended)
            if why is None:
                return
            reasons.append(f"after {count} operations: {why}")
        raise AssertionError(f"power loss at log position {cut} (operations begun: "
                             f"{started}, kept at least: {floor}): the tree is no prefix:\n"
                             + "\n".join(reasons[:4]))
    finally:
        h.close()


def matches(seen: dict, model: History, names: Names, started: int,
            ended: dict[int, int]) -> str | None:
    """None if the tree ``seen`` is ``names`` with acceptable contents, else why not."""
    if set(seen) != set(names):
        return f"names differ: {sorted(set(seen) ^ set(names))}"
    for path, value in names.items():
        got = seen[path]
        if value[0] != "file":
            if got != value:
                return f"{path}: {got} is not {value}"
            continue
        if got[0] != "file" or got[2] != value[2]:
            return f"{path}: {got[0]} mode {got[2]:o} is not a file of mode {value[2]:o}"
        fid = value[1]
        states = [(op, data) for op, data in model.contents[fid] if op < started]
        synced = [op for op in model.fsyncs.get(fid, []) if op in ended]
        first = 0
        if synced:
            first = max(k for k, (op, _d) in enumerate(states) if op < max(synced))
        window = [data for _op, data in states[first:]]
        if not kept(got[1], window):
            return (f"{path}: {len(got[1])} bytes are not a content it had since its last "
                    f"fsync (sizes {[len(w) for w in window]})")
    return None


def run(ops: list[tuple], seed: int, cuts: int, after_appends: int = 0,
        spares: int = overlay_upper.SPARES, during: int | None = None) -> None:
    """Run ``ops`` under the recorder, then check ``cuts`` power losses at
    random points (half of them just after an append to the journal), or,
    with ``after_appends``, after each append (and at the end) every fixed
    fate and that many random ones; with ``during``, the same at every log
    position of that operation.  ``spares``: how many empty data files
    the overlay keeps made ahead (0: each is made when needed, its name not
    yet durable)."""
    root = Path(tempfile.mkdtemp(prefix="dsfs-power-"))
    saved = overlay_upper.SPARES
    overlay_upper.SPARES = spares
    try:
        with small_blocks():
            model = History()
            recorder = Recorder(root / "overlay")
            with recorder:
                h = Harness(root / "overlay", lower_model())
                for number, op in enumerate(ops):
                    recorder.mark("begin", number)
                    step(h, model, op)
                    model.count += 1
                    model.after.append(dict(model.names))
                    recorder.mark("end", number)
            log = recorder.log
            rng = random.Random(seed)
            fates: list[Fate] = [Fate(rng)]
            journals = {e[3] for e in log if e[0] == "link" and e[2].startswith("journal.")}
            appends = [pos + 1 for pos, e in enumerate(log)
                       if e[0] == "write" and e[1] in journals] or [len(log)]
            if during is not None:
                first = log.index(("mark", "begin", during))
                points = list(range(first, log.index(("mark", "end", during)) + 2))
                fates = FIXED + [Fate(rng)] * after_appends
            elif after_appends:
                points = sorted(set(appends) | {len(log)})
                fates = FIXED + [Fate(rng)] * after_appends
            else:
                points = sorted({rng.randrange(len(log) + 1) for _ in range(cuts // 2)}
                                | {rng.choice(appends) for _ in range(cuts - cuts // 2)}
                                | {len(log)})
            for cut in points:
                for fate in fates:
                    image = root / "image"
                    recorder.image(cut, fate, image)
                    check_image(image, model, log, cut)
                    shutil.rmtree(image)
            h.close()
    finally:
        overlay_upper.SPARES = saved
        shutil.rmtree(root, ignore_errors=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op_strategy, max_size=30), st.integers(0, 1 << 32),
       st.sampled_from([0, 2, 64]))
def test_a_power_loss_keeps_a_prefix_and_what_fsync_covered(ops: list[tuple], seed: int,
                                                            spares: int) -> None:
    run(ops, seed, cuts=6, spares=spares)


@pytest.mark.slow
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op_strategy, max_size=60), st.integers(0, 1 << 32),
       st.sampled_from([0, 2, 64]))
def test_a_power_loss_keeps_a_prefix_and_what_fsync_covered_slow(ops: list[tuple], seed: int,
                                                                 spares: int) -> None:
    run(ops, seed, cuts=12, spares=spares)


def test_the_simulator_loses_what_was_not_synced(tmp_path: Path) -> None:
    """The disk model can fail: a file written without fsync may come back
    empty, and a rename not followed by a directory fsync may be undone."""
    import os

    root = tmp_path / "d"
    root.mkdir()
    recorder = Recorder(root)
    with recorder:
        fd = os.open(root / "f", os.O_WRONLY | os.O_CREAT, 0o600)
        os.pwrite(fd, b"hello", 0)
        os.close(fd)
        os.rename(root / "f", root / "g")
    outcomes = set()
    for seed in range(40):
        image = tmp_path / f"i{seed}"
        recorder.image(len(recorder.log), Fate(random.Random(seed)), image)
        outcomes.add(tuple(sorted((p.name, p.read_bytes()) for p in image.iterdir())))
    assert outcomes != ((), ) and (("g", b"hello"),) in outcomes
    assert any(o == () or o[0][1] != b"hello" for o in outcomes)
    assert any(o and o[0][0] == "f" for o in outcomes)


def test_a_rename_is_kept_whole() -> None:
    """A rename's records (the old name removed, the new one made) survive a
    power loss together: a cut between them must not lose the file."""
    run([("create", "a", 0, 0, b"precious", 0o644),
         ("fsync", "a", 0, 0, b"-", 0o644),
         ("rename", "a", "d/moved", 0, b"-", 0o644)], seed=1, cuts=0, after_appends=4)


def test_a_truncated_copy_shows_its_lower_bytes() -> None:
    """A truncate of a file of the version copies it up sparse (an ftruncate of
    the data file, then the record saying which blocks are still the
    version's); a power loss that keeps the record but not the ftruncate
    must not make the file empty."""
    run([("truncate", "d/a", 0, 5000, b"-", 0o644)], seed=2, cuts=0, after_appends=4)


def test_a_filled_block_keeps_its_data_file() -> None:
    """A write into a file of the version fills the block it touches, makes it
    durable, then records it: the data file's name must be durable too (the
    first data file of a mount is made on the spot, not a spare), or the
    file comes back empty."""
    run([("write", "d/a", 0, 100, b"XYZ", 0o644)], seed=3, cuts=0, after_appends=4,
        spares=0)


def test_a_power_loss_while_mounting_after_a_kill() -> None:
    """The first mount after a ``kill -9`` replays the journal as the page cache
    holds it, whose last records may not be on the disk yet; it must make them
    durable before it deletes the data files that tree no longer names, or a
    power loss brings back a fsynced file without its bytes."""
    run([("create", "a", 0, 0, b"fsynced", 0o644),
         ("fsync", "a", 0, 0, b"-", 0o644),
         ("unlink", "a", 0, 0, b"-", 0o644),
         ("kill", 0, 0, 0, b"-", 0o644)], seed=4, cuts=0, after_appends=2, spares=0,
        during=3)


def test_a_file_made_before_a_kill_is_kept_by_a_later_fsync() -> None:
    """A data file made on the spot by a mount that was then killed has a name
    nobody made durable; an fsync after the next mount must cover it (the
    mount fsyncs ``data/`` when it opens the overlay), or a power loss takes
    the fsynced file's bytes."""
    run([("create", "a", 0, 0, b"fsynced", 0o644),
         ("kill", 0, 0, 0, b"-", 0o644),
         ("fsync", "a", 0, 0, b"-", 0o644)], seed=5, cuts=0, after_appends=2, spares=0,
        during=2)
