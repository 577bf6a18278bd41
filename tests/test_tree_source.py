"""The lazy LMDB tree source against ``TreeResolver``, the reference semantics.

Manifests are written straight into a local store (no content: the source
never reads chunks), then every version's tree is walked through
``LmdbTreeSource`` and compared, entry for entry and listing for listing, with
the tree ``TreeResolver`` builds in memory.
"""

from __future__ import annotations

import random
import time
import uuid
from pathlib import Path

import pytest

from dsfs.engine.tree import IMPLIED_DIR_MODE, Tree, TreeResolver, totals
from dsfs.errors import IntegrityError
from dsfs.format import manifest as mf
from dsfs.format.manifest import DIR, FILE, REMOVED, SYMLINK, ChunkRef, Entry, Header
from dsfs.repository import Repository
from dsfs.store import open_store
from dsfs.vfs import ROOT_INO, LmdbTreeSource, MemoryTreeSource, VersionFS, open_tree_source

PACK = "12" * 16


def cid(n: int) -> str:
    return "xxh3_128:" + f"{n:032x}"


def file(path: str, n: int = 1, mtime: int = 5, chunks: int = 1) -> Entry:
    refs = tuple(ChunkRef(cid(n + i), PACK, 100 * i, 10) for i in range(chunks))
    return Entry(path, FILE, 10 * chunks, 0o100644, mtime, cid(n), refs)


def folder(path: str, mode: int = 0o40750, mtime: int = 3) -> Entry:
    return Entry(path, DIR, 0, mode, mtime)


def link(path: str, target: str) -> Entry:
    return Entry(path, SYMLINK, len(target.encode()), 0o120777, 4, target=target)


def gone(path: str) -> Entry:
    return Entry(path, REMOVED)


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository(open_store(str(tmp_path / "store")), tmp_path / "cache")


def publish(repo: Repository, entries: list[Entry], parents: list[str] = (),  # type: ignore[assignment]
            snapshot: bool = False) -> Header:
    header = Header(id=uuid.uuid4().hex, project="p", name="n", version="1",
                    parents=list(parents), snapshot=snapshot,
                    stats={"files": 1, "size": 2})
    repo.store.put(mf.manifest_key(header.id), mf.encode(header, entries))
    return header


def walk(source: LmdbTreeSource | MemoryTreeSource) -> tuple[Tree, dict[str, list[str]]]:
    """Every entry below the root, and every directory's listing (names in order)."""
    tree: Tree = {}
    listings: dict[str, list[str]] = {}
    todo = [""]
    while todo:
        path = todo.pop()
        children = source.children(path)
        listings[path] = [name for name, _ in children]
        for name, entry in children:
            child = f"{path}/{name}" if path else name
            assert entry.path == child
            assert source.entry(child) == entry
            tree[child] = entry
            if entry.kind == DIR:
                todo.append(child)
    return tree, listings


def check_same(repo: Repository, header: Header) -> LmdbTreeSource:
    expected = TreeResolver(repo).tree(header.id)
    source = open_tree_source(repo, header)
    got, listings = walk(source)
    assert got == expected
    assert listings == walk(MemoryTreeSource(expected))[1]
    return source


def test_single_version_with_implied_dirs_and_every_kind(repo: Repository) -> None:
    h = publish(repo, [file("a/b/c.txt", chunks=3), folder("a", 0o40700), link("l", "a/b"),
                       file("top", 2), folder("empty")])
    source = check_same(repo, h)
    assert source.entry("a/b") == Entry("a/b", DIR, 0, IMPLIED_DIR_MODE, 0)
    assert source.entry("a/b/c.txt/x") is None and source.entry("nope/x") is None
    assert source.children("top") == [] and source.children("nope") == []
    assert source.entry("")is not None and source.entry("").mtime_ns == 5
    assert source.totals() == (1, 2)


def test_statfs_counts_agree_between_sources(repo: Repository) -> None:
    """Both tree sources, and so statfs's f_files on every mount, count what
    the version's stats count: files and symlinks (docs/semantics.md)."""
    entries = [file("a/b/c.txt", chunks=3), folder("a", 0o40700), link("l", "a/b"),
               file("top", 2), folder("empty"), link("a/dangling", "nowhere")]
    tree = {e.path: e for e in entries}
    stats = totals(tree)
    header = publish(repo, entries)
    header.stats = stats
    memory = MemoryTreeSource(TreeResolver(repo).tree(header.id))
    lmdb = open_tree_source(repo, header)
    assert memory.totals() == lmdb.totals() == (stats["files"], stats["size"]) == (4, 40)
    assert VersionFS(memory).statfs().files == VersionFS(lmdb).statfs().files == 4


def test_merges_removals_and_replacements(repo: Repository) -> None:
    base = publish(repo, [file("d/x"), file("d/sub/y"), file("d/sub/z"), file("keep"),
                          file("f"), folder("e")])
    child = publish(repo, [
        gone("d/sub"),          # removes the whole subtree
        file("d/sub2/new", 7),  # an implied directory
        file("d/x", 9),         # a change
        folder("f"),            # a file replaced by a directory
        file("f/inner"),
        file("e"),              # a directory replaced by a file
        gone("absent"),         # removing what is not there changes nothing
    ], [base.id])
    source = check_same(repo, child)
    assert source.entry("d/sub") is None and source.children("d/sub") == []
    grandchild = publish(repo, [gone("d"), file("d/again")], [child.id])
    source = check_same(repo, grandchild)
    # d was removed then re-created by an entry below it: nothing of the old d
    assert [n for n, _ in source.children("d")] == ["again"]
    assert source.entry("d").mode == IMPLIED_DIR_MODE


def test_a_directory_replaced_by_a_file_loses_its_subtree(repo: Repository) -> None:
    base = publish(repo, [file("a/b/c"), file("a/b/d"), file("z")])
    child = publish(repo, [file("a/b", 3)], [base.id])
    source = check_same(repo, child)
    assert source.entry("a/b/c") is None
    back = publish(repo, [folder("a/b"), file("a/b/new")], [child.id])
    assert [n for n, _ in check_same(repo, back).children("a/b")] == ["new"]


def test_later_parent_wins_unless_the_delta_names_the_path(repo: Repository) -> None:
    p1 = publish(repo, [file("same", 1), file("d/only1"), file("d/both", 1), file("x/y"),
                        folder("dir_then_file"), file("dir_then_file/gone")])
    p2 = publish(repo, [file("same", 2), file("d/only2"), file("d/both", 2), file("x", 4),
                        file("dir_then_file", 5)])
    merged = publish(repo, [], [p1.id, p2.id])
    source = check_same(repo, merged)
    assert source.entry("same").digest == cid(2)
    assert [n for n, _ in source.children("d")] == ["both", "only1", "only2"]
    assert source.entry("x").kind == FILE and source.entry("x/y") is None
    own = publish(repo, [file("same", 3), file("d/both", 3)], [p1.id, p2.id])
    assert check_same(repo, own).entry("d/both").digest == cid(3)
    reversed_order = publish(repo, [], [p2.id, p1.id])
    source = check_same(repo, reversed_order)
    assert source.entry("x").kind == DIR and source.entry("same").digest == cid(1)


def test_a_snapshot_ends_the_walk(repo: Repository) -> None:
    old = publish(repo, [file("old"), file("d/old")])
    snap = publish(repo, [file("d/new"), file("fresh")], [old.id], snapshot=True)
    source = check_same(repo, snap)
    assert source.entry("old") is None
    assert set(source.graph) == {bytes.fromhex(snap.id)}
    child = publish(repo, [file("d/more")], [snap.id])
    assert [n for n, _ in check_same(repo, child).children("d")] == ["more", "new"]


def test_names_that_are_not_utf8_and_a_large_directory(repo: Repository) -> None:
    odd = b"caf\xe9".decode("utf-8", "surrogateescape")
    entries = [file(f"big/{i:05d}") for i in range(3000)] + [file(odd), file("\u00e9t\u00e9")]
    base = publish(repo, entries)
    child = publish(repo, [file("big/01500", 8), gone("big/00000")], [base.id])
    check_same(repo, child)


def test_memoized_listings_serve_the_next_process(repo: Repository) -> None:
    base = publish(repo, [file(f"d{i}/f{j}") for i in range(5) for j in range(5)])
    child = publish(repo, [file("d1/new"), gone("d2/f0")], [base.id])
    first = check_same(repo, child)
    assert first.resolved > 0
    # a new source in a new "process" (a new repository object) resolves nothing
    again = Repository(repo.store, repo.cache_root)
    second = open_tree_source(again, child)
    assert walk(second)[0] == walk(first)[0]
    assert second.resolved == 0
    # the parent's directories were resolved on the way, and are shared as they are
    third = open_tree_source(again, base)
    walk(third)
    assert third.resolved == 0


def test_manifests_are_indexed_once(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    h = publish(repo, [file("a")])
    open_tree_source(repo, h)
    fresh = Repository(repo.store, repo.cache_root)

    def refuse(version_id: str) -> bytes:
        raise AssertionError("a manifest was read again")

    monkeypatch.setattr(fresh, "manifest_bytes", refuse)
    assert open_tree_source(fresh, h).entry("a") is not None


def test_an_entry_below_its_own_file_is_refused(repo: Repository) -> None:
    h = publish(repo, [file("a"), file("a/b"), file("ok")])
    source = open_tree_source(repo, h)
    with pytest.raises(IntegrityError):
        source.children("")
    # listed twice, the later entry wins: a directory after all
    h = publish(repo, [file("a"), file("a/b"), folder("a")])
    check_same(repo, h)


def test_a_depth_40_chain(repo: Repository) -> None:
    head = publish(repo, [file(f"dir{i}/f{j}") for i in range(10) for j in range(20)])
    chain = [head]
    for depth in range(1, 40):
        delta = [file(f"dir{depth % 10}/f{depth % 20}", 100 + depth),
                 file(f"new/level{depth}")]
        if depth % 7 == 0:
            delta.append(gone(f"dir{(depth + 3) % 10}"))
        chain.append(publish(repo, delta, [chain[-1].id]))
    tip = chain[-1]
    source = check_same(repo, tip)
    assert len(source.graph) == 40
    # after memoization a lookup costs the same at the tip as at the bottom
    fresh = Repository(repo.store, repo.cache_root)

    def cost(header: Header) -> float:
        fs = VersionFS(open_tree_source(fresh, header))
        start = time.perf_counter()
        for _ in range(3):
            for name, attr, _pos in fs.readdir(ROOT_INO, 0):
                if name.startswith("dir"):
                    list(fs.readdir(attr.ino, 0))
        return time.perf_counter() - start

    walk(open_tree_source(fresh, head))
    cost(head), cost(tip)  # warm
    assert cost(tip) < 3 * cost(head) + 0.05


@pytest.mark.parametrize("seed", range(8))
def test_random_histories_match_the_resolver(repo: Repository, seed: int) -> None:
    rng = random.Random(seed)
    names = ["a", "b", "c"]
    versions: list[Header] = []
    for step in range(40):
        for _attempt in range(50):
            delta = []
            for _ in range(rng.randint(0, 6)):
                path = "/".join(rng.choice(names) for _ in range(rng.randint(1, 3)))
                roll = rng.random()
                if roll < 0.25:
                    delta.append(gone(path))
                elif roll < 0.45:
                    delta.append(folder(path, 0o40700 + rng.randint(0, 7), step))
                elif roll < 0.55:
                    delta.append(link(path, "a"))
                else:
                    delta.append(file(path, rng.randint(1, 5), step))
            parents = rng.sample(versions, min(len(versions), rng.choice([0, 1, 1, 1, 2, 3])))
            h = Header(id=uuid.uuid4().hex, project="p", name="n", version=str(step),
                       parents=[p.id for p in parents], snapshot=rng.random() < 0.1)
            data = mf.encode(h, delta)
            repo.store.put(mf.manifest_key(h.id), data)
            try:
                TreeResolver(repo).tree(h.id)
            except IntegrityError:
                repo.store.delete(mf.manifest_key(h.id))
                repo.forget_manifest(h.id)
                continue
            break
        versions.append(h)
        check_same(repo, h)
    # and all over again from the memo, in a fresh process
    fresh = Repository(repo.store, repo.cache_root)
    for h in versions:
        assert walk(open_tree_source(fresh, h))[0] == TreeResolver(repo).tree(h.id)


def test_forgetting_trees_takes_dependents_and_spares_what_mounts_use(
        repo: Repository) -> None:
    from dsfs.engine.treeindex import forget_trees

    base = publish(repo, [file("a/f"), file("b/g", 2)])
    child = publish(repo, [file("a/h", 3)], [base.id])
    other = publish(repo, [file("x", 4)])
    for header in (child, other):
        walk(open_tree_source(repo, header))
    index = repo.cache.index
    raw = {h.id: bytes.fromhex(h.id) for h in (base, child, other)}
    assert index.tree_version_ids() == set(raw.values())
    # a mounted child keeps its base
    assert forget_trees(index, {raw[base.id]}, keep=[raw[child.id]]) == 0
    assert index.tree_version_ids() == set(raw.values())
    # unmounted: the base goes, and the child whose listings point into it
    assert forget_trees(index, {raw[base.id]}) == 2
    assert index.tree_version_ids() == {raw[other.id]}
    assert index.tree_version(raw[child.id]) is None
    # indexed again on the next use, and the same tree
    check_same(repo, child)
    assert forget_trees(index, None) == 3
    assert index.tree_version_ids() == set()


def test_cache_housekeeping_forgets_trees_of_gone_versions(
        repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    from dsfs.mount import cachectl

    mounts: list[object] = []
    monkeypatch.setattr(cachectl.table, "dsfs_mounts", lambda: mounts)

    keep = publish(repo, [file("a/f")])
    gone_version = publish(repo, [file("b/g", 2)])
    for header in (keep, gone_version):
        walk(open_tree_source(repo, header))
    repo.store.delete(mf.manifest_key(gone_version.id))
    assert cachectl.forget_gone_trees(repo) == 1
    assert repo.cache.index.tree_version_ids() == {bytes.fromhex(keep.id)}
    assert cachectl.forget_gone_trees(repo) == 0
    mounts.append(object())  # while a mount runs, clear keeps every tree
    assert cachectl.clear_trees(repo.cache) is None
    mounts.clear()
    assert cachectl.clear_trees(repo.cache) == 1
    assert repo.cache.index.tree_version_ids() == set()
