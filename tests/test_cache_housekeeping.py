"""Cache housekeeping (issue 11): ``get`` copies are counted in ``cache
stats`` and evicted least recently used by ``cache prune``, never a ``get
--copy`` folder; the cached manifests and tree records of deleted versions
are pruned, those of live versions (and of other stores) kept."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from dsfs.repository import Repository


def _folder(root: Path, files: int, salt: str) -> Path:
    for i in range(files):
        path = root / f"d{i % 3}" / f"f{i:03d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"{salt}-{i}-".encode() * 200)
    return root


def _sync(run_dsfs, folder: Path, name: str) -> str:  # type: ignore[no-untyped-def]
    out = run_dsfs("sync", str(folder), "-p", "p", "-n", name, check=True).stdout
    return out.strip().splitlines()[-1]


def _stats(run_dsfs) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(run_dsfs("cache", "stats", "--json", check=True).stdout)


def test_get_copies_are_evicted_least_recently_used_first(store_url: str, tmp_path: Path,
                                                          run_dsfs) -> None:
    a = _sync(run_dsfs, _folder(tmp_path / "a", 40, "a"), "a")
    b = _sync(run_dsfs, _folder(tmp_path / "b", 40, "b"), "b")
    copy_a = Path(run_dsfs("get", a, check=True).stdout.strip())
    copy_b = Path(run_dsfs("get", b, check=True).stdout.strip())
    mine = tmp_path / "mine"
    run_dsfs("get", b, "--copy", str(mine), check=True)
    # a is used again: b's copy is now the least recently used
    os.utime(copy_b.with_name(copy_b.name + ".complete"), (1, 1))
    assert Path(run_dsfs("get", a, check=True).stdout.strip()) == copy_a
    full = _stats(run_dsfs)
    assert full["copies_bytes"] > 2 * 40 * 1000
    # room for one copy, not both: b's goes
    limit = full["total_bytes"] - full["copies_bytes"] // 4
    result = run_dsfs("cache", "prune", "--size", str(limit), check=True)
    assert "removed" in result.stdout
    assert copy_a.is_dir() and not copy_b.exists()
    assert not copy_b.with_name(copy_b.name + ".complete").exists()
    assert _stats(run_dsfs)["total_bytes"] <= limit
    # the user's --copy folder is never the cache's to remove
    run_dsfs("cache", "prune", "--size", "1", check=True)
    assert not copy_a.exists()
    assert len(list(mine.rglob("*.bin"))) == 40
    assert _stats(run_dsfs)["copies_bytes"] == 0
    # a pruned copy is simply made again
    again = Path(run_dsfs("get", b, check=True).stdout.strip())
    assert again == copy_b and len(list(again.rglob("*.bin"))) == 40


def test_a_copy_sharing_files_with_another_frees_only_its_own(store_url: str, tmp_path: Path,
                                                              run_dsfs) -> None:
    folder = _folder(tmp_path / "src", 30, "x")
    v1 = _sync(run_dsfs, folder, "n")
    first = Path(run_dsfs("get", v1, check=True).stdout.strip())
    (folder / "d0" / "f000.bin").write_bytes(b"changed")
    v2 = _sync(run_dsfs, folder, "n")
    second = Path(run_dsfs("get", v2, check=True).stdout.strip())
    shared = Path("d1") / "f001.bin"
    assert os.stat(first / shared).st_ino == os.stat(second / shared).st_ino
    os.utime(first.with_name(first.name + ".complete"), (1, 1))  # v1 is the older
    before = _stats(run_dsfs)
    run_dsfs("cache", "prune", "--size", str(before["total_bytes"] - 1), check=True)
    assert not first.exists() and second.is_dir()
    assert (second / shared).read_bytes() == (folder / shared).read_bytes()


def test_prune_drops_manifests_and_trees_of_deleted_versions(store_url: str, tmp_path: Path,
                                                             run_dsfs) -> None:
    keep = _sync(run_dsfs, _folder(tmp_path / "k", 5, "k"), "keep")
    doomed = _sync(run_dsfs, _folder(tmp_path / "g", 5, "g"), "gone")
    for ref in (keep, doomed):
        run_dsfs("list", ref, check=True)  # indexes their trees
    repo = Repository.open()
    from dsfs.ui import stats as ui_stats

    for ref in (keep, doomed):  # what `dsfs ui` keeps of each version it showed
        ui_stats.compute(repo, repo.header(ref))
    stats_files = {ref: ui_stats.stats_path(repo, ref) for ref in (keep, doomed)}
    assert all(p.is_file() for p in stats_files.values())
    manifests = repo.cache_root / "manifests" / repo.store_id.hex()
    index = repo.cache.index
    assert index.tree_version(bytes.fromhex(doomed)) is not None
    assert any(p.name.startswith(doomed) for p in manifests.iterdir())
    # deleted from another machine (its own cache): this cache still holds it all
    run_dsfs("--cache-dir", str(tmp_path / "elsewhere"), "delete", doomed, check=True)
    assert any(p.name.startswith(doomed) for p in manifests.iterdir())
    # a second store sharing the cache: its trees are not this store's to forget
    other_store = str(tmp_path / "other-store")
    other_folder = _folder(tmp_path / "o", 3, "o")
    other = run_dsfs("--store", other_store, "sync", str(other_folder), "-p", "p", "-n", "o",
                     check=True).stdout.strip().splitlines()[-1]
    run_dsfs("--store", other_store, "list", other, check=True)
    result = run_dsfs("cache", "prune", "--size", "1T", check=True)
    assert "forgot the trees of 1 version(s)" in result.stdout
    assert "cached manifest file(s)" in result.stdout
    assert not [p.name for p in manifests.iterdir() if p.name.startswith(doomed)]
    assert any(p.name.startswith(keep) for p in manifests.iterdir())
    assert not stats_files[doomed].exists() and stats_files[keep].is_file()
    index = Repository.open().cache.index
    assert index.tree_version(bytes.fromhex(doomed)) is None
    assert index.tree_version(bytes.fromhex(keep)) is not None
    assert index.tree_version(bytes.fromhex(other)) is not None
    assert run_dsfs("list", keep, check=True).stdout
    stray = stats_files[keep].with_name("notes.txt")  # not a statistics file: stays
    stray.write_text("mine")
    run_dsfs("cache", "clear", check=True)
    assert not stats_files[keep].exists() and stray.read_text() == "mine"


def test_prune_drops_pack_runs_older_than_the_span_window(
        store_url: str, tmp_path: Path, run_dsfs, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The span policy's tables (a row per pack and per version ever read)
    shrink on prune: runs that began longer ago than DSFS_SPAN_SECONDS go,
    younger ones stay and keep counting."""
    _sync(run_dsfs, _folder(tmp_path / "a", 3, "a"), "a")  # makes the cache

    def miss(pack: bytes) -> tuple[int, int]:
        return Repository.open().cache.index.note_pack_miss(pack, 600, b"scope", evidence=True)

    assert miss(b"p" * 16) == (1, 1) and miss(b"q" * 16) == (1, 2)
    run_dsfs("cache", "prune", "--size", "1T", check=True)  # young runs: kept
    assert miss(b"p" * 16) == (2, 2)
    time.sleep(1.1)  # the table keeps whole seconds
    monkeypatch.setenv("DSFS_SPAN_SECONDS", "0")
    run_dsfs("cache", "prune", "--size", "1T", check=True)
    # both packs and the scope start again: their rows were removed
    assert miss(b"p" * 16) == (1, 1) and miss(b"q" * 16) == (1, 2)
