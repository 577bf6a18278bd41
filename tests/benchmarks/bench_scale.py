"""Wall time and peak memory of every engine command at scale (issue 11).

    python tests/benchmarks/bench_scale.py [--files 200000] [--per-dir 1000]
        [--synthetic 1000000,10000000] [--tmpfs] [--only real,synthetic]

* ``real``: a tree of --files tiny files (--per-dir to a folder) on disk, or
  with --tmpfs on one tmpfs holding the tree, the store and the cache.
  Commands: ``sync`` (first, unchanged three times interleaved with the
  stat walk, 10 files changed), ``create``+``add``+``close`` of the tree as
  a child, ``list``, ``list --modified``, ``diff``, ``lineage``, ``search``,
  ``squash`` of two versions, ``prefetch --dry-run``, ``get``, ``get
  --copy``, ``verify`` of the store and of the folder.  Baselines measured
  in the same run: a bare stat walk (``find DIR -printf '%s %T@\\n'``) and a
  ``tar -c | tar -x`` copy of the tree.
* ``sync``: only the ``sync`` rows of ``real`` (first, --rounds unchanged
  interleaved with the stat walk, 10 changed).
* ``synthetic``: versions of 1M and 10M entries written directly as
  manifests (no files; contents shared with a few seed files, as
  ``bench_mount.py``'s million), plus a child of each that changes 10
  files, and a version with both as parents.  Commands that do not move
  file data: ``list``, ``diff``, ``verify`` (store), ``search``,
  ``lineage`` (one parent and two), ``list --modified`` of two parents,
  ``squash`` (one version and two), ``gc --dry-run``, ``prefetch
  --dry-run``, and the first mount's indexing.
* ``dirchurn`` (not run by default): a directory of --dir-entries entries
  changed in each of 30 versions; the records and index bytes its memoized
  listings take with overlays and with whole listings (overlays off).

Each command runs as its own process; its peak RSS and CPU time are read
from ``wait4``, the load average is printed with each (on a shared machine
the CPU ratio is the steadier one).
Prints one JSON object: ``<label>_s`` and ``<label>_rss_mib`` per command,
and the ratios issue 11 sets aims for.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_mount import (  # noqa: E402
    DSFS,
    fuse_process,
    open_repo,
    publish_version,
    seed_entries,
)

#: ``--lock FILE``: every measured command (and the synthetic publish) runs
#: holding this lock, so a long run shares a machine one command at a time.
LOCK_PATH: str | None = None


@contextlib.contextmanager
def bench_lock() -> Iterator[None]:
    if LOCK_PATH is None:
        yield
        return
    with open(LOCK_PATH, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def run(command: list[str], env: dict[str, str], results: dict, label: str,
        check: bool = True) -> str:
    """Run one command under wait4 and record its time and peak RSS."""
    with bench_lock():
        return _run(command, env, results, label, check)


def _run(command: list[str], env: dict[str, str], results: dict, label: str,
         check: bool) -> str:
    start = time.perf_counter()
    # bytecode cached, as an installed dsfs runs: a harness's
    # PYTHONDONTWRITEBYTECODE would add ~0.15 s of compiling to every command
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = subprocess.Popen(command, env={**environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    # a reader thread per pipe would do; the outputs here are small or go to
    # files, so read stdout to EOF first, then reap with wait4 for the rusage
    assert proc.stdout is not None and proc.stderr is not None
    # keep only the tail: a parent holding 3M lines of list output would raise
    # the RSS floor of every later command (ru_maxrss counts the forker's RSS)
    out = b""
    while chunk := proc.stdout.read(1 << 16):
        out = (out + chunk)[-(1 << 16):]
    err = proc.stderr.read()[-(1 << 16):]
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    results[f"{label}_s"] = round(time.perf_counter() - start, 3)
    results[f"{label}_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 3)
    results[f"{label}_rss_mib"] = round(usage.ru_maxrss / 1024, 1)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{label}: {command} exited {proc.returncode}: "
                           f"{err.decode(errors='replace')[-2000:]}")
    print(f"{label}: {results[f'{label}_s']} s ({results[f'{label}_cpu_s']} s CPU), "
          f"{results[f'{label}_rss_mib']} MiB; load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    return out.decode(errors="replace")


def make_tree(root: Path, files: int, per_dir: int) -> None:
    for i in range(files):
        d = root / f"d{i // per_dir:05d}"
        if i % per_dir == 0:
            d.mkdir(parents=True)
        (d / f"f{i:07d}.txt").write_bytes(b"%d\n" % i)


@contextlib.contextmanager
def scratch(use_tmpfs: bool, where: str | None = None) -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=where))
    try:
        if use_tmpfs:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16g", "tmpfs", str(base)],
                           check=True)
        yield base
    finally:
        if use_tmpfs:
            subprocess.run(["umount", "-l", str(base)], check=False)
        shutil.rmtree(base, ignore_errors=True)


def bench_sync(args: argparse.Namespace, base: Path, env: dict[str, str], results: dict
               ) -> Path:
    """The tree, the first sync, --rounds unchanged syncs interleaved with the
    stat walk, a sync of 10 changes; the tree's path."""
    src = base / "src"
    start = time.perf_counter()
    make_tree(src, args.files, args.per_dir)
    results["real_files"] = args.files
    results["real_make_tree_s"] = round(time.perf_counter() - start, 3)
    os.sync()
    copies = "copies" not in args.skip  # tar and get: the data movers (long)
    if copies:
        run(["sh", "-c", f"mkdir {base}/tarcopy && tar -C {src} -cf - . | "
             f"tar -C {base}/tarcopy -xf -"], {}, results, "baseline_tar_copy")
        shutil.rmtree(base / "tarcopy")
    run([DSFS, "sync", str(src), "-p", "bench", "-n", "real"], env, results, "sync_first")
    # unchanged sync against the stat walk, interleaved, --rounds rounds each
    walks, syncs = [], []
    rounds, mid = args.rounds, args.rounds // 2
    for r in range(rounds):
        run(["sh", "-c", f"find {src} -printf '%s %T@\\n' > /dev/null"], {}, results,
            f"baseline_stat_walk_{r}")
        run([DSFS, "sync", str(src), "-p", "bench", "-n", "real"], env, results,
            f"sync_unchanged_{r}")
        walks.append(results[f"baseline_stat_walk_{r}_s"])
        syncs.append(results[f"sync_unchanged_{r}_s"])
    results["sync_unchanged_s"] = sorted(syncs)[mid]
    results["sync_unchanged_rss_mib"] = results["sync_unchanged_0_rss_mib"]
    results["stat_walk_median_s"] = sorted(walks)[mid]
    results["ratio_sync_unchanged_over_stat_walk_median"] = round(
        sorted(syncs)[mid] / sorted(walks)[mid], 2)
    results["ratio_sync_unchanged_over_stat_walk_cpu"] = round(
        sum(results[f"sync_unchanged_{r}_cpu_s"] for r in range(rounds))
        / sum(results[f"baseline_stat_walk_{r}_cpu_s"] for r in range(rounds)), 2)
    for i in range(10):
        (src / "d00000" / f"f{i:07d}.txt").write_bytes(b"changed %d\n" % i)
    run([DSFS, "sync", str(src), "-p", "bench", "-n", "real"], env, results, "sync_10_changed")
    return src


def bench_real(args: argparse.Namespace, base: Path, env: dict[str, str], results: dict) -> None:
    src = bench_sync(args, base, env, results)
    copies = "copies" not in args.skip
    # add + close of the same tree as a child (every file read: add records no content)
    draft = run([DSFS, "create", "-p", "bench", "-n", "real", "--parents", "bench/real"],
                env, results, "create").strip().splitlines()[-1]
    run([DSFS, "add", str(src), "--id", draft], env, results, "add")
    run([DSFS, "close", "--id", draft], env, results, "close")
    run([DSFS, "list", "bench/real"], env, results, "list")
    run([DSFS, "list", "bench/real@1.0.2", "--modified"], env, results, "list_modified")
    run([DSFS, "diff", "bench/real@1.0.0", "bench/real"], env, results, "diff")
    run([DSFS, "lineage", "bench/real"], env, results, "lineage")
    run([DSFS, "search"], env, results, "search")
    run([DSFS, "squash", "bench/real@1.0.0", "bench/real@1.0.2", "-p", "bench", "-n",
         "real-squashed"], env, results, "squash_two")
    run([DSFS, "prefetch", "bench/real", "--dry-run"], env, results, "prefetch_dry_run",
        check=False)
    if copies:
        run([DSFS, "get", "bench/real"], env, results, "get")
        run([DSFS, "get", "bench/real", "--copy", str(base / "copy")], env, results,
            "get_copy")
    run([DSFS, "verify", "bench/real"], env, results, "verify_store")
    run([DSFS, "verify", "bench/real", "--folder", str(src)], env, results, "verify_folder")
    if copies:
        tar = results["baseline_tar_copy_s"]
        results["ratio_get_speed_over_tar"] = round(tar / results["get_s"], 3)
        results["ratio_get_copy_speed_over_tar"] = round(tar / results["get_copy_s"], 3)


def bench_synthetic(args: argparse.Namespace, base: Path, results: dict) -> None:
    versions, envs = {}, {}
    for count in args.synthetic:
        label = f"n{count}"
        # a store and cache per size: gc and search of one size see its versions only
        home = base / label
        home.mkdir()
        env = envs[label] = {"DSFS_STORE": str(home / "store"),
                             "DSFS_DATA_DIR": str(home / "data"),
                             "DSFS_CACHE_DIR": str(home / "cache")}

        def dsfs(*a: str, env: dict[str, str] = env) -> None:
            subprocess.run([DSFS, *a], env={**os.environ, **env}, check=True,
                           capture_output=True)

        seed_entries(dsfs, home, env)
        start = time.perf_counter()
        # Published by a child process: this one stays small, because a
        # command's ru_maxrss (from wait4) includes the RSS of the process that
        # forked it (vfork, then exec), which for 10M entries held here is GBs.
        with bench_lock():
            ids = subprocess.run([sys.executable, __file__, "--publish-synthetic", str(count)],
                                 env={**os.environ, **env}, check=True, capture_output=True,
                                 text=True).stdout.split()
        results[f"{label}_publish_s"] = round(time.perf_counter() - start, 3)
        versions[label] = ids
        print(f"{label}: published in {results[f'{label}_publish_s']} s", file=sys.stderr)
        # first, while the version is not indexed yet (list would index it)
        mnt = base / f"mnt-{label}"
        with bench_lock(), fuse_process([DSFS, "mount", "--foreground", ids[0], str(mnt)],
                                        mnt, env) as (ready, _proc):
            results[f"{label}_first_mount_index_s"] = round(ready, 3)
        print(f"{label}: first mount (indexing) {ready:.1f} s", file=sys.stderr)

    def commands(label: str, version: str, child: str, merge: str) -> dict[str, list[str]]:
        return {
            "list": ["list", version],
            "diff": ["diff", version, child],
            "verify_store": ["verify", version],
            "search": ["search"],
            "squash": ["squash", child, "-p", "bench", "-n", f"{label}-squashed"],
            "squash_two": ["squash", version, child, "-p", "bench", "-n",
                           f"{label}-squashed2"],
            "prefetch_dry_run": ["prefetch", version, "--dry-run"],
            "gc_dry_run": ["gc", "--dry-run"],
            "lineage": ["lineage", child],
            "lineage_two_parents": ["lineage", merge],
            "list_modified_two_parents": ["list", merge, "--modified"],
        }

    # Interleaved: each command at every size before the next command, so that
    # a run cut short still has same-run pairs.
    for name in commands("", "", "", ""):
        if name in args.skip_commands:
            continue
        for label, ids in versions.items():
            run([DSFS, *commands(label, *ids)[name]], envs[label], results,
                f"{label}_{name}", check=name != "prefetch_dry_run")
    if len(args.synthetic) >= 2:
        small, big = (f"n{c}" for c in args.synthetic[:2])
        for command in ("list", "diff", "verify_store", "squash", "squash_two", "gc_dry_run",
                        "search", "prefetch_dry_run", "lineage_two_parents"):
            if f"{big}_{command}_rss_mib" not in results:
                continue
            results[f"rss_ratio_{command}_{big}_over_{small}"] = round(
                results[f"{big}_{command}_rss_mib"] / results[f"{small}_{command}_rss_mib"], 2)


class _Synthetic:
    """``count`` entries as manifest lines made on the fly (an encoded delta,
    ``dsfs.engine.publish.EncodedDelta``): each seed's line is encoded once
    with a placeholder path, so 10M lines cost string formatting, not JSON."""

    PLACEHOLDER = "@@PATH@@"

    def __init__(self, seeds: list, count: int) -> None:
        from dsfs.format import manifest as mf

        self.count = count
        self.pack_ids = {ref.pack_id for seed in seeds for ref in seed.chunks}
        self.templates = [mf.entry_line(replace(seed, path=self.PLACEHOLDER)).split(
            self.PLACEHOLDER.encode()) for seed in seeds]
        for template in self.templates:
            assert len(template) == 2, "the placeholder path must appear once"

    def lines(self) -> Iterator[bytes]:
        templates = self.templates
        seeds = len(templates)
        for i in range(self.count):
            before, after = templates[i % seeds]
            yield b"%sm%03d/d%02d/f%08d%s" % (before, i // 100_000, (i // 1000) % 100, i,
                                               after)


def publish_synthetic(count: int) -> None:
    """Publish a synthetic version of ``count`` files and a child changing 10;
    print their ids (run as a child process, see ``bench_synthetic``)."""
    from dsfs.catalog import Catalog, Ref
    from dsfs.engine.publish import publish
    from dsfs.engine.tree import TreeResolver
    from dsfs.engine.versions import new_header

    env = {k: os.environ[k] for k in ("DSFS_STORE", "DSFS_DATA_DIR", "DSFS_CACHE_DIR")}
    repo = open_repo(env)
    seed = Catalog(repo).resolve(Ref(project="bench", name="seed"))
    seeds = sorted((e for e in TreeResolver(repo).tree(seed.id).values() if e.kind == "file"),
                   key=lambda e: e.path)
    header = new_header(repo, "bench", f"n{count}")
    header.stats = {"files": count,
                    "size": sum(seeds[i % len(seeds)].size for i in range(count))}
    header = publish(repo, header, _Synthetic(seeds, count), False)
    changed = [replace(seeds[(i + 1) % len(seeds)], path=f"m000/d00/f{i:08d}")
               for i in range(10)]
    child = publish_version(repo, f"n{count}", changed, parents=[header.id], depth=2)
    again = [replace(seeds[(i + 2) % len(seeds)], path=f"m000/d01/f{i:08d}")
             for i in range(10)]
    merge = publish_version(repo, f"n{count}", again, parents=[header.id, child.id], depth=3)
    print(header.id, child.id, merge.id)


def bench_dirchurn(args: argparse.Namespace, base: Path, results: dict) -> None:
    """A directory of --dir-entries entries changed (10 files) in each of 30
    versions: records and bytes its memoized listings take in the cache
    index, with overlays (now) and with whole listings (before: overlays
    off), resolved in the same run into two fresh caches."""
    from dsfs.cache.chunks import ChunkCache  # noqa: F401 - the cache package loads first
    from dsfs.engine import treedirs
    from dsfs.engine.treeindex import dir_key
    from dsfs.format import manifest as mf
    from dsfs.format.manifest import FILE, ChunkRef, Entry, Header
    from dsfs.repository import Repository
    from dsfs.store import open_store

    pack = "ab" * 16

    def entry(i: int, salt: int) -> Entry:
        cid = f"xxh3_128:{(salt * 1_000_003 + i):032x}"
        return Entry(f"big/f{i:07d}", FILE, 10, 0o100644, 5, cid,
                     (ChunkRef(cid, pack, 10 * i, 10),))

    size = args.dir_entries
    store = str(base / "churn-store")
    writer = open_store(store)

    def manifest(entries: list[Entry], parents: list[str]) -> Header:
        # written straight into the store (no packs: the tree index never reads them)
        header = Header(id=uuid.uuid4().hex, project="bench", name="churn", version="1",
                        parents=parents, stats={"files": size, "size": 10 * size})
        writer.put(mf.manifest_key(header.id), mf.encode(header, entries))
        return header

    chain = [manifest([entry(i, 0) for i in range(size)], [])]
    for v in range(1, 31):
        chain.append(manifest([entry((v * 7919 + k * 31) % size, v) for k in range(10)],
                              [chain[-1].id]))
    for label, depth in (("overlay", treedirs.MAX_OVERLAY_DEPTH), ("whole", 0)):
        treedirs.MAX_OVERLAY_DEPTH = depth
        repo = Repository(open_store(store), base / f"churn-cache-{label}")
        start = time.perf_counter()
        for header in chain:
            treedirs.open_tree_source(repo, header).children("big")
        results[f"dirchurn_{label}_resolve_s"] = round(time.perf_counter() - start, 3)
        index = repo.cache.index
        results[f"dirchurn_{label}_listing_records"] = sum(
            index.tree_listing_size(bytes.fromhex(h.id), dir_key("big"), delta=False)
            for h in chain)
        data = base / f"churn-cache-{label}" / "index" / "data.mdb"
        results[f"dirchurn_{label}_index_mib"] = round(
            os.stat(data).st_blocks * 512 / 2**20, 1)
        tip = treedirs.open_tree_source(Repository(open_store(store), repo.cache_root),
                                        chain[-1])
        start = time.perf_counter()
        assert len(tip.children("big")) == size
        results[f"dirchurn_{label}_tip_listing_s"] = round(time.perf_counter() - start, 3)
    results["dirchurn_entries"] = size
    print(json.dumps({k: v for k, v in results.items() if k.startswith("dirchurn")}),
          file=sys.stderr)


def main() -> None:
    if sys.argv[1:2] == ["--publish-synthetic"]:
        publish_synthetic(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--per-dir", type=int, default=1000)
    parser.add_argument("--synthetic", default="1000000,10000000",
                        help="entry counts of the synthetic versions, comma-separated")
    parser.add_argument("--tmpfs", action="store_true",
                        help="tree, store and cache on one tmpfs (takes the disk out)")
    parser.add_argument("--only", default="real,synthetic",
                        help="comma-separated sections: real, synthetic, dirchurn; sync (the "
                             "first rows of real alone)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="unchanged syncs interleaved with stat walks (median of them)")
    parser.add_argument("--dir-entries", type=int, default=100_000,
                        help="entries of dirchurn's directory changed in 30 versions")
    parser.add_argument("--skip", default="",
                        help="'copies': leave out tar, get and get --copy (real section)")
    parser.add_argument("--base", default=None,
                        help="directory for the scratch space (default: the system's temp)")
    parser.add_argument("--skip-commands", default="",
                        help="synthetic section: comma-separated commands to leave out "
                             "(list, diff, verify_store, search, squash, squash_two, "
                             "prefetch_dry_run, gc_dry_run, lineage, lineage_two_parents, "
                             "list_modified_two_parents)")
    parser.add_argument("--lock", default=None,
                        help="hold this lock file (flock) while each command runs")
    args = parser.parse_args()
    global LOCK_PATH
    LOCK_PATH = args.lock
    args.synthetic = [int(x) for x in args.synthetic.split(",") if x]
    sections = set(args.only.split(","))
    results: dict = {"tmpfs": args.tmpfs}
    args.skip = set(args.skip.split(","))
    args.skip_commands = set(args.skip_commands.split(","))
    with scratch(args.tmpfs, args.base) as base:
        env = {"DSFS_STORE": str(base / "store"), "DSFS_DATA_DIR": str(base / "data"),
               "DSFS_CACHE_DIR": str(base / "cache")}
        try:
            if "real" in sections:
                bench_real(args, base, env, results)
            elif "sync" in sections:
                bench_sync(args, base, env, results)
            if "synthetic" in sections:
                bench_synthetic(args, base, results)
            if "dirchurn" in sections:
                bench_dirchurn(args, base, results)
        finally:
            print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
