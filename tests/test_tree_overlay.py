"""Directories changed in many versions are memoized as overlays (issue 11):
a version that changes a directory with one base listing stores its changes
on that listing, not the merged listing whole.

Checked against ``TreeResolver`` (the reference semantics) on a long chain
and on random change sequences (hypothesis), with stacks of overlays deep
enough to be compacted; the stored records are counted.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_tree_source import check_same, file, folder, gone, link, walk

from dsfs.engine import treedirs
from dsfs.engine.tree import TreeResolver
from dsfs.engine.treeindex import dir_key
from dsfs.format import manifest as mf
from dsfs.format.manifest import Entry, Header
from dsfs.repository import Repository
from dsfs.store import open_store


def _publish(repo: Repository, entries: list[Entry], parent: Header | None) -> Header:
    header = Header(id=uuid.uuid4().hex, project="p", name="n", version="1",
                    parents=[parent.id] if parent else [], stats={"files": 1, "size": 2})
    repo.store.put(mf.manifest_key(header.id), mf.encode(header, entries))
    return header


def _stored(repo: Repository, headers: list[Header], path: str) -> int:
    """Records the versions' memoized listings of ``path`` hold in ``tree_listings``."""
    index = repo.cache.index
    return sum(index.tree_listing_size(bytes.fromhex(h.id), dir_key(path), delta=False)
               for h in headers)


def test_a_big_directory_changed_in_30_versions_is_not_stored_30_times(
        tmp_path: Path) -> None:
    repo = Repository(open_store(str(tmp_path / "store")), tmp_path / "cache")
    size = 1000
    chain = [_publish(repo, [file(f"big/f{i:05d}", i + 1) for i in range(size)], None)]
    for v in range(1, 31):
        delta = [file(f"big/f{(v * 37 + k) % size:05d}", 10_000 + v * 10 + k)
                 for k in range(5)]
        delta += [gone(f"big/f{(v * 91) % size:05d}"), file(f"big/new{v}", 50_000 + v),
                  file(f"big/sub{v % 3}/x{v}", 60_000 + v)]
        chain.append(_publish(repo, delta, chain[-1]))
    for header in chain:  # resolve "big" in every version, in chain order
        treedirs.open_tree_source(repo, header).children("big")
    for header in chain[::6] + [chain[-1]]:
        check_same(repo, header)
    stored = _stored(repo, chain[1:], "big")
    # whole listings each time would be about 30 x 2,000 records; overlays store
    # the changes, plus a whole listing every MAX_OVERLAY_DEPTH + 1 versions
    whole = 30 // (treedirs.MAX_OVERLAY_DEPTH + 1)
    assert stored <= whole * (size + 40) + 30 * 10, stored
    assert stored < 30 * size / 5
    # a fresh process reads the stacked overlays back the same
    fresh = Repository(repo.store, repo.cache_root)
    for header in chain[::10] + [chain[-1]]:
        source = treedirs.open_tree_source(fresh, header)
        assert walk(source)[0] == TreeResolver(repo).tree(header.id)


def test_overlays_off_stores_whole_listings(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The measurement's baseline: with no overlays allowed, every changed
    version stores its listing whole (what dsfs did before)."""
    monkeypatch.setattr(treedirs, "MAX_OVERLAY_DEPTH", 0)
    repo = Repository(open_store(str(tmp_path / "store")), tmp_path / "cache")
    chain = [_publish(repo, [file(f"big/f{i:04d}", i + 1) for i in range(300)], None)]
    for v in range(1, 6):
        chain.append(_publish(repo, [file(f"big/f{v:04d}", 9000 + v)], chain[-1]))
    for header in chain:
        check_same(repo, header)
    assert _stored(repo, chain[1:], "big") == 5 * 300


def test_paged_listing_and_counts_of_an_overlay(tmp_path: Path) -> None:
    repo = Repository(open_store(str(tmp_path / "store")), tmp_path / "cache")
    base = _publish(repo, [file(f"d/f{i:03d}", i + 1) for i in range(50)], None)
    child = _publish(repo, [gone("d/f010"), file("d/f010x", 99), file("d/f999", 98)], base)
    source = check_same(repo, child)
    record = source.dir_record("d")
    assert record is not None and record.form == treedirs.OVERLAY_FORM
    expected = [name for name, _ in source.children("d")]
    assert source.count_children("d") == len(expected) == 51
    paged, start = [], ""
    while True:
        items, more = source.encoded_children_range("d", start, 7)
        paged += [name for name, _ in items]
        if more is None:
            break
        start = more
    assert paged == expected


_names = st.sampled_from(["a", "b", "c", "d", "e"])
_paths = st.lists(_names, min_size=1, max_size=3).map(lambda parts: "d/" + "/".join(parts))
_change = st.tuples(st.sampled_from(["file", "gone", "dir", "link"]), _paths,
                    st.integers(1, 4))


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=st.lists(st.lists(_change, min_size=0, max_size=5), min_size=1, max_size=12),
       depth=st.integers(1, 4))
def test_random_changes_through_stacked_overlays_match_the_resolver(
        tmp_path_factory: pytest.TempPathFactory, history: list, depth: int) -> None:
    base = tmp_path_factory.mktemp("overlay")
    repo = Repository(open_store(str(base / "store")), base / "cache")
    old = treedirs.MAX_OVERLAY_DEPTH
    treedirs.MAX_OVERLAY_DEPTH = depth  # compaction every few versions
    try:
        head = _publish(repo, [file(f"d/{n}", i + 1) for i, n in enumerate("abcde")], None)
        chain = [head]
        for step, changes in enumerate(history):
            delta = []
            for kind, path, n in changes:
                if kind == "file":
                    delta.append(file(path, n, step))
                elif kind == "gone":
                    delta.append(gone(path))
                elif kind == "dir":
                    delta.append(folder(path, 0o40700 + n, step))
                else:
                    delta.append(link(path, "a"))
            header = _publish(repo, delta, chain[-1])
            try:
                TreeResolver(repo).tree(header.id)
            except Exception:  # a delta the resolver refuses: not a version to test
                repo.store.delete(mf.manifest_key(header.id))
                repo.forget_manifest(header.id)
                continue
            chain.append(header)
            check_same(repo, header)
        fresh = Repository(repo.store, repo.cache_root)
        for header in chain:
            assert walk(treedirs.open_tree_source(fresh, header))[0] == TreeResolver(
                repo).tree(header.id)
    finally:
        treedirs.MAX_OVERLAY_DEPTH = old
