"""gc racing closes on one store (issue 9): nothing a version references is lost.

Each round, a "donor" version is published and then deleted while 8 writer
processes (separate machines: own data and cache directories) close versions
whose files include the donor's, so they reuse chunks of a version being
deleted; a ninth process runs gc with ``--grace 0`` in a loop the whole time.
Afterwards every published version must verify: every pack it references is
in the store and holds its chunks.  Without the store locks of
``dsfs/engine/locks.py`` gc deletes the donor's pack between a writer's check
that it exists and its claim, and versions come out referencing a missing
pack.

The same race with deletes (``test_deletes_beside_closes_lose_no_parent``):
while the writers run, a thread keeps deleting the newest version of one of
their names (plainly, or hidden with ``force`` when it has children), so syncs build
children on parents that vanish.  Each writer either publishes a
version whose whole chain resolves and verifies, or fails with exit 5 saying
its parent was deleted, and publishes nothing.

Other tests here: a crashed writer's lock blocks gc only until it is stale;
gc fails with exit code 5 while a writer holds a lock; a writer whose lock
expired publishes nothing; a claimed version is never collected.

Run as a script this module is a child: ``gc-loop STOPFILE`` (the gc loop),
or ``cli STEPS`` (a writer: dsfs commands given as a JSON list of argument
lists, run one after another in one interpreter).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import STORE_KINDS

#: Rounds of the CI run per store kind (S3 through moto costs about three times
#: as much); DSFS_GC_RACE_ROUNDS sets both.  The slow variant runs SLOW_ROUNDS.
_ROUNDS = os.environ.get("DSFS_GC_RACE_ROUNDS")
CI_ROUNDS = {"local": int(_ROUNDS or 4), "s3": int(_ROUNDS or 1)}
SLOW_ROUNDS = int(os.environ.get("DSFS_GC_RACE_SLOW_ROUNDS", "20"))
WRITERS = 8
DELETE_WAIT = ["--wait", "60s"]


def _dsfs() -> list[str]:
    exe = Path(sys.executable).with_name("dsfs")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "dsfs"]


def _machine(root: Path, store: str, **extra: str) -> dict[str, str]:
    """The environment of one machine: its own data and cache directories."""
    return {**os.environ, "DSFS_DATA_DIR": str(root / "data"),
            "DSFS_CACHE_DIR": str(root / "cache"), "DSFS_STORE": store, **extra}


def _run(args: list[str], env: dict[str, str], timeout: float = 300
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_dsfs() + args, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _write_files(folder: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _writer_command(mode: str, folder: Path, name: str) -> list[str]:
    """A writer process: ``dsfs sync`` of the folder, or ``dsfs create``, ``add``
    and ``close`` of it (the CLI's own code, run in one interpreter)."""
    if mode == "sync":
        steps = [["-q", "sync", str(folder), "-p", "race", "-n", name]]
    else:
        steps = [["-q", "create", "-p", "race", "-n", name], ["-q", "add", str(folder)],
                 ["-q", "close"]]
    return [sys.executable, os.path.abspath(__file__), "cli", json.dumps(steps)]


def _child(role: str, stop: Path, env: dict[str, str], *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), role, str(stop), *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def race(store: str, work: Path, rounds: int, seed: int = 0, deleter: bool = False) -> dict:
    """Run the race; return what happened (asserts nothing about verify).

    With ``deleter`` a thread deletes writers' newest versions while they run."""
    from dsfs.catalog import Catalog
    from dsfs.engine import versions
    from dsfs.repository import Repository

    rng = random.Random(seed)
    donor_repo = Repository.open(store, str(work / "donor-cache"))
    stop = work / "stop-gc"
    gc_proc = _child("gc-loop", stop, _machine(work / "gc", store))
    deletes: dict = {"deleted": [], "hidden": [], "refused": 0}
    outcomes: list[tuple[str, int, str, str]] = []
    try:
        for rnd in range(rounds):
            # The donor: files every writer of this round will hold too.
            donor_files = {f"shared/r{rnd}-{i}.bin": rng.randbytes(30_000) for i in range(8)}
            donor = work / f"donor-{rnd}"
            _write_files(donor, donor_files)
            junk = work / f"junk-{rnd}"
            _write_files(junk, {"junk.bin": rng.randbytes(20_000)})
            made = {what: versions.sync(donor_repo, str(folder), "race", f"{what}{rnd}").header
                    for what, folder in (("donor", donor), ("junk", junk))}
            # Junk: deleted at once, so gc has something to collect every round.
            versions.delete(donor_repo, made["junk"])
            # What the deleter may take: versions from before this round of
            # the names whose writers sync, so take the newest as parent.
            syncing = {f"w{i}" for i in range(0, WRITERS, 2)}
            earlier = ({h.id: h.name for h in Catalog(donor_repo).visible_headers()
                        if h.name in syncing} if deleter else {})
            procs = []
            for i in range(WRITERS):
                folder = work / f"w{i}-r{rnd}"
                _write_files(folder, {**donor_files,
                                      f"own/w{i}-r{rnd}.bin": rng.randbytes(10_000)})
                mode = "sync" if i % 2 == 0 else "close"
                # With deletes, writers upload slowly, so that deletes land
                # while a writer builds on the version they take, and write
                # their manifest slowly: the shared lock is then held for a
                # second or more, long enough for the deleter to see it.
                env = _machine(work / f"m{i}", store,
                               **({"DSFS_FAULTS": "put_if_absent:packs/:slow:*;"
                                                  "put_if_absent:versions/:slow:*"}
                                  if deleter else {}))
                procs.append((mode, subprocess.Popen(
                    _writer_command(mode, folder, f"w{i}"), env=env,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
            # The deleter starts with the writers: once a delete (the donor's
            # or its own) waits for the exclusive lock, writers that hold a
            # shared one finish and publish before any delete goes through,
            # so a deleter started after the donor's delete can find nothing
            # left to race (on a fast machine every writer holds its lock by
            # then).
            writers_done = threading.Event()
            deleting = threading.Thread(target=_delete_newest, args=(
                store, work / "deleter-cache", random.Random(rng.random()), earlier, deletes,
                writers_done))
            if deleter:
                deleting.start()
            # The donor goes while the writers are busy reusing its chunks.
            time.sleep(rng.uniform(0.3, 1.2))
            versions.delete(donor_repo, made["donor"])
            for mode, proc in procs:
                out, err = proc.communicate(timeout=600)
                outcomes.append((mode, proc.returncode, out, err))
            writers_done.set()
            if deleter:
                deleting.join()
    finally:
        stop.write_text("stop")
        gc_out, gc_err = gc_proc.communicate(timeout=600)
        donor_repo.store.close()
    assert gc_proc.returncode == 0, gc_err
    result = {"writers": outcomes, "gc": json.loads(gc_out.strip().splitlines()[-1])}
    if deleter:
        result["deleter"] = deletes
    return result


def _delete_newest(store: str, cache: Path, rng: random.Random, earlier: dict[str, str],
                   deletes: dict, writers_done: threading.Event) -> None:
    """Until the writers are done, delete the newest version of a random
    writer's name every tenth of a second or so if it is one of ``earlier``,
    forcing half the time (a version with children is then hidden, its
    manifest kept)."""
    from dsfs.catalog import Catalog, Ref
    from dsfs.engine import versions
    from dsfs.errors import ConflictError, NotFoundError
    from dsfs.repository import Repository

    repo = Repository.open(store, str(cache))
    names = sorted(set(earlier.values()))
    try:
        while names and not writers_done.wait(rng.uniform(0.02, 0.2)):
            # Deletes before a writer holds its lock (and chose its parent)
            # would only leave it without a parent.
            if not any(i.key.startswith("locks/shared") for i in repo.store.list("locks/")):
                continue
            try:
                header = Catalog(repo).resolve(Ref(project="race", name=rng.choice(names)))
                if header.id not in earlier:
                    continue
                said = versions.delete(repo, header, force=rng.random() < 0.5,
                                       wait_seconds=60)
            except NotFoundError:
                continue
            except ConflictError:
                deletes["refused"] += 1  # it has children and force was not drawn
                continue
            deletes["hidden" if said.startswith("hid ") else "deleted"].append(header.id)
    finally:
        repo.store.close()


def check_published(store: str, work: Path) -> tuple[int, list[str]]:
    """Verify every published version from a fresh machine: (versions, problems)."""
    from dsfs.catalog import Catalog
    from dsfs.engine.tree import TreeResolver
    from dsfs.engine.verify import verify_store
    from dsfs.format.manifest import FILE
    from dsfs.format.pack import pack_id_from_key
    from dsfs.repository import Repository

    repo = Repository.open(store, str(work / "reader-cache"))
    packs = {pack_id_from_key(i.key) for i in repo.store.list("packs/")}
    headers = Catalog(repo).visible_headers()
    problems = []
    for header in headers:
        tree = TreeResolver(repo).tree(header.id)
        used = {ref.pack_id for e in tree.values() if e.kind == FILE for ref in e.chunks}
        problems += [f"{header.name} {header.version} ({header.id}): pack {p} is missing"
                     for p in sorted(used - packs)]
        problems += [f"{header.name} {header.version}: {p}" for p in verify_store(repo, header)]
    repo.store.close()
    return len(headers), problems


def _store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "local":
        return str(tmp_path / "store")
    return str(request.getfixturevalue("s3_store_url"))


def _race_and_verify(store: str, work: Path, rounds: int) -> None:
    result = race(store, work, rounds)
    failed = [(mode, rc, err.strip()) for mode, rc, _out, err in result["writers"] if rc != 0]
    # With the locks every close succeeds (a gc only makes it wait).
    assert not failed, failed
    published, problems = check_published(store, work)
    assert not problems, problems
    assert published >= rounds * WRITERS
    gc = result["gc"]
    assert gc["runs"] >= 1 and gc["packs_removed"] >= 1, gc  # gc did collect meanwhile
    from dsfs.store import open_store

    left = open_store(store)
    assert not list(left.list("locks/")), "a finished writer or gc left its lock behind"
    left.close()


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_gc_beside_closes_loses_no_pack(kind: str, request: pytest.FixtureRequest,
                                        tmp_path: Path, dsfs_env: dict[str, str]) -> None:
    _race_and_verify(_store(kind, request, tmp_path), tmp_path, CI_ROUNDS[kind])


@pytest.mark.slow
@pytest.mark.parametrize("kind", STORE_KINDS)
def test_gc_beside_closes_loses_no_pack_slow(kind: str, request: pytest.FixtureRequest,
                                             tmp_path: Path, dsfs_env: dict[str, str]) -> None:
    _race_and_verify(_store(kind, request, tmp_path), tmp_path, SLOW_ROUNDS)


def _race_with_deletes_and_verify(store: str, work: Path, rounds: int, seed: int) -> None:
    from dsfs.catalog import Catalog
    from dsfs.repository import Repository

    result = race(store, work, rounds, seed=seed, deleter=True)
    deleter = result["deleter"]
    removed = set(deleter["deleted"]) | set(deleter["hidden"])
    published, refused = [], []
    for mode, rc, out, err in result["writers"]:
        if rc == 0:
            published.append(out.split()[-1])
        else:
            # The only failure allowed: a sync whose parent went meanwhile.
            assert rc == 5 and "was deleted meanwhile" in err, (mode, rc, err)
            refused.append(err)
    repo = Repository.open(store, str(work / "check-cache"))
    visible = {h.id for h in Catalog(repo).visible_headers()}
    repo.store.close()
    # Every acknowledged version is listed unless the deleter took it.
    lost = [v for v in published if v not in visible and v not in removed]
    assert not lost, lost
    _count, problems = check_published(store, work)
    assert not problems, problems
    # The race did happen: versions were deleted (or refused) while writers built.
    assert deleter["deleted"] or deleter["hidden"] or deleter["refused"], deleter
    print(f"deleter {len(deleter['deleted'])} deleted, {len(deleter['hidden'])} hidden, "
          f"{deleter['refused']} refused; writers {len(published)} published, "
          f"{len(refused)} refused")


@pytest.mark.parametrize("seed", [1])
def test_deletes_beside_closes_lose_no_parent(seed: int, tmp_path: Path,
                                              dsfs_env: dict[str, str]) -> None:
    _race_with_deletes_and_verify(str(tmp_path / "store"), tmp_path, 4, seed)


@pytest.mark.slow
@pytest.mark.parametrize("kind", STORE_KINDS)
def test_deletes_beside_closes_lose_no_parent_slow(kind: str, request: pytest.FixtureRequest,
                                                   tmp_path: Path,
                                                   dsfs_env: dict[str, str]) -> None:
    _race_with_deletes_and_verify(_store(kind, request, tmp_path), tmp_path, SLOW_ROUNDS, 7)


# -- the pieces of the protocol, one at a time -------------------------------------


def _seed_version(store: str, work: Path, name: str = "n", size: int = 40_000) -> str:
    folder = work / f"src-{name}"
    _write_files(folder, {"a.bin": os.urandom(size)})
    made = _run(["-q", "sync", str(folder), "-p", "p", "-n", name], _machine(work / "m", store))
    assert made.returncode == 0, made.stderr
    return made.stdout.split()[-1]


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_gc_waits_for_a_writer_and_fails_with_exit_5(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path,
        dsfs_env: dict[str, str]) -> None:
    from dsfs.engine import locks
    from dsfs.repository import Repository

    store = _store(kind, request, tmp_path)
    _seed_version(store, tmp_path)
    repo = Repository.open(store, str(tmp_path / "writer-cache"))
    env = _machine(tmp_path / "gc", store)
    with locks.shared(repo, "test writer"):
        started = time.monotonic()
        busy = _run(["gc", "--grace", "0", "--wait", "2s"], env)
        waited = time.monotonic() - started
    assert busy.returncode == 5, busy.stderr
    assert "in use" in busy.stderr and "test writer" in busy.stderr, busy.stderr
    assert waited >= 2
    assert not [i for i in repo.store.list("locks/") if "exclusive" in i.key]  # gc's went
    free = _run(["gc", "--grace", "0", "--wait", "0"], env)
    assert free.returncode == 0, free.stderr
    assert not list(repo.store.list("locks/"))


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_a_crashed_writer_blocks_gc_only_until_its_lock_is_stale(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path,
        dsfs_env: dict[str, str]) -> None:
    store = _store(kind, request, tmp_path)
    _seed_version(store, tmp_path)
    big = tmp_path / "big"
    _write_files(big, {"f.bin": os.urandom(100_000)})
    # Stale after 6 s: the check "blocked while fresh" below has 4 s at least
    # (less one refresh interval, 1 s, and the store's mtime granularity, 1 s)
    # between the kill and gc's look, which a busy machine needs (it had 1.5 s
    # with 3 s); how long staleness takes is waited for, not slept.
    writer_env = _machine(tmp_path / "w", store, DSFS_LOCK_STALE_SECONDS="6")
    # A writer that stalls while it holds its lock (in the packer's last upload),
    # then dies there with SIGKILL: nothing of it can clean up.
    stall = ("import sys, time; from dsfs.engine import packer; "
             "finish = packer.Packer.finish; "
             "packer.Packer.finish = lambda self: (time.sleep(600), finish(self))[1]; "
             "from dsfs_cli.main import main; "
             f"sys.argv = ['dsfs', '-q', 'sync', {str(big)!r}, '-p', 'p', '-n', 'big']; "
             "main()")
    writer = subprocess.Popen([sys.executable, "-c", stall], env=writer_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    from dsfs.engine import gc
    from dsfs.errors import ConflictError
    from dsfs.repository import Repository
    from dsfs.store import open_store

    seen = open_store(store)
    repo = Repository.open(store, str(tmp_path / "gc-cache"))
    deadline = time.monotonic() + 60
    while not list(seen.list("locks/")):  # it holds its shared lock: kill it there
        assert writer.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    writer.kill()
    writer.wait()
    killed = time.monotonic()
    assert [i.key for i in seen.list("locks/")], "the killed writer left its lock"
    with pytest.raises(ConflictError, match="in use"):  # at once: the lock is fresh
        gc.collect(repo, grace_seconds=0, wait_seconds=0)
    # the lock is stale 6 s (its own timeout) after its last refresh: gc gets
    # through then, not before
    deadline = time.monotonic() + 120
    while True:
        try:
            gc.collect(repo, grace_seconds=0, wait_seconds=0)
            break
        except ConflictError:
            assert time.monotonic() < deadline, "the dead writer's lock never went stale"
            time.sleep(0.2)
    assert time.monotonic() - killed >= 3
    repo.store.close()
    env = _machine(tmp_path / "gc", store)
    done = _run(["gc", "--grace", "0", "--wait", "0"], env)
    assert done.returncode == 0, done.stderr
    assert not list(seen.list("locks/"))


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_delete_waits_for_a_close_that_builds_on_the_version(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path,
        dsfs_env: dict[str, str]) -> None:
    """A close builds a child of V and has checked that V's manifest exists;
    ``delete V`` meanwhile must not remove that manifest (the child would be
    published without a tree): it waits for the close's lock, then sees the
    child and refuses."""
    store = _store(kind, request, tmp_path)
    parent = _seed_version(store, tmp_path)
    child_folder = tmp_path / "child"
    _write_files(child_folder, {"a.bin": os.urandom(1000), "b.bin": b"b"})
    marker = tmp_path / "publishing"
    stall = ("import pathlib, sys, time; from dsfs.engine import publish; "
             "inner = publish._publish; "
             f"publish._publish = lambda *a, **k: (pathlib.Path({str(marker)!r}).touch(), "
             "time.sleep(4), inner(*a, **k))[2]; "
             "from dsfs_cli.main import main; "
             f"sys.argv = ['dsfs', '-q', 'sync', {str(child_folder)!r}, '-p', 'p', '-n', 'n']; "
             "main()")
    writer = subprocess.Popen([sys.executable, "-c", stall],
                              env=_machine(tmp_path / "w", store),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists():  # past its check of the parents, before its claim
        assert writer.poll() is None, writer.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    deleted = _run(["delete", parent, *DELETE_WAIT], _machine(tmp_path / "d", store))
    out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    child = out.split()[-1]
    assert deleted.returncode == 5 and "depend on" in deleted.stderr, (
        deleted.returncode, deleted.stderr)
    listed = _run(["list", child], _machine(tmp_path / "r", store))
    assert listed.returncode == 0 and "a.bin" in listed.stdout, listed.stderr
    from dsfs.store import open_store

    assert not list(open_store(store).list("locks/"))


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_a_writer_whose_lock_expired_publishes_nothing(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, dsfs_env: dict[str, str]) -> None:
    from dsfs.engine import locks, versions
    from dsfs.errors import ConflictError
    from dsfs.repository import Repository

    store = _store(kind, request, tmp_path)
    folder = tmp_path / "src"
    _write_files(folder, {"a.bin": os.urandom(10_000)})
    repo = Repository.open(store, str(tmp_path / "cache"))
    monkeypatch.setenv(locks.STALE_ENV, "1.5")
    # A refresher that never gets through, as when the machine sleeps or the
    # store is unreachable: the lock runs out while the close goes on.
    monkeypatch.setattr(locks.StoreLock, "_refresh_loop", lambda self: None)
    original = versions.build_version

    def slow_build(*args, **kwargs):
        built = original(*args, **kwargs)
        time.sleep(1.5)
        return built

    monkeypatch.setattr(versions, "build_version", slow_build)
    with pytest.raises(ConflictError, match="lock .* expired"):
        versions.sync(repo, str(folder), "p", "n")
    assert not list(repo.store.list("versions/"))
    assert not list(repo.store.list("names/"))
    assert not list(repo.store.list("locks/"))


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_gc_never_collects_a_claimed_version(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path,
        dsfs_env: dict[str, str]) -> None:
    """A manifest whose header no longer matches its claim (changed in the
    store) is still claimed: gc keeps it and every pack it references."""
    from dsfs.engine import gc
    from dsfs.format import manifest as mf
    from dsfs.repository import Repository

    store = _store(kind, request, tmp_path)
    version_id = _seed_version(store, tmp_path)
    repo = Repository.open(store, str(tmp_path / "gc-cache"))
    key = mf.manifest_key(version_id)
    data = repo.store.get(key)
    header = mf.decode_header(data)
    header.version = "9.9.9"  # no claim names this string
    entries = list(mf.iter_entries(data))
    repo.store.put(key, mf.encode(header, entries))
    packs = {i.key for i in repo.store.list("packs/")}
    result = gc.collect(repo, grace_seconds=0)
    assert result.manifests_removed == 0 and result.packs_removed == 0
    assert repo.store.exists(key)
    assert {i.key for i in repo.store.list("packs/")} == packs


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_rewriting_an_object_moves_its_listed_mtime(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """What a lock refresh relies on: a plain ``put`` over an object gives it a
    new modification time, as ``list`` reports it, from the store's clock."""
    from dsfs.store import open_store

    store = open_store(_store(kind, request, tmp_path))
    assert store.put_if_absent("locks/x", b"1")
    first = {i.key: i.mtime for i in store.list("locks/")}["locks/x"]
    time.sleep(1.1)  # S3 keeps modification times to the second or millisecond
    store.put("locks/x", b"2")
    second = {i.key: i.mtime for i in store.list("locks/")}["locks/x"]
    assert second - first >= 1.0
    assert abs(second - time.time()) < 60  # the test's store runs on this machine
    store.close()


def _gc_loop(stop: Path) -> None:
    """Child: ``gc --grace 0`` again and again until ``stop`` exists."""
    from dsfs.engine import gc
    from dsfs.errors import ConflictError
    from dsfs.repository import Repository

    repo = Repository.open()
    summary = {"runs": 0, "busy": 0, "packs_removed": 0, "manifests_removed": 0}
    while not stop.exists():
        try:
            result = gc.collect(repo, grace_seconds=0, wait_seconds=5)
        except ConflictError:
            summary["busy"] += 1
            continue
        summary["runs"] += 1
        summary["packs_removed"] += result.packs_removed
        summary["manifests_removed"] += result.manifests_removed
        time.sleep(random.uniform(0.05, 0.5))  # writers get in between runs
    print(json.dumps(summary), flush=True)


def _cli_steps(steps: list[list[str]]) -> None:
    """Child: run ``dsfs`` commands one after another in this interpreter."""
    from dsfs_cli.main import cli

    for args in steps:
        try:
            cli.main(args=args, prog_name="dsfs", standalone_mode=False)
        except SystemExit as exc:
            if exc.code:
                sys.exit(exc.code)


if __name__ == "__main__" and sys.argv[1:2] == ["gc-loop"]:
    _gc_loop(Path(sys.argv[2]))
elif __name__ == "__main__" and sys.argv[1:2] == ["cli"]:
    _cli_steps(json.loads(sys.argv[2]))
