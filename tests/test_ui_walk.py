"""The web view's cursor walks (``dsfs.ui.walk``) against the engine's walks
(``dsfs.engine.treewalk``) on random histories: removals, replacements of
folders by files, symlinks, several parents, snapshots, and names that sort
around a folder's (``a``, ``a-b``, ``a.b``, ``a0``, ``A``), with listings read
two records at a time so that every batch boundary is crossed.  Manifests are
written straight into a local store, as ``test_tree_source.py`` does.
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pytest
from test_tree_source import file, folder, gone, link

from dsfs.engine import treewalk
from dsfs.engine.tree import TreeResolver
from dsfs.errors import IntegrityError
from dsfs.format import manifest as mf
from dsfs.format.manifest import Header
from dsfs.repository import Repository
from dsfs.store import open_store
from dsfs.ui import walk

#: Names that sort around a folder's, and names whose UTF-8 byte order and str
#: order disagree (an undecodable byte is a surrogate in str; an emoji is above it).
NAMES = ["a", "a-b", "a.b", "a0", "A", "b", "é", b"\xff".decode("utf-8", "surrogateescape"),
         "\U0001f600"]


def random_history(repo: Repository, rng: random.Random, steps: int) -> list[Header]:
    versions: list[Header] = []
    for step in range(steps):
        for _attempt in range(50):
            delta = []
            for _ in range(rng.randint(1, 8)):
                path = "/".join(rng.choice(NAMES) for _ in range(rng.randint(1, 3)))
                roll = rng.random()
                if roll < 0.2:
                    delta.append(gone(path))
                elif roll < 0.35:
                    delta.append(folder(path, 0o40700, step))
                elif roll < 0.45:
                    delta.append(link(path, "a"))
                else:
                    delta.append(file(path, rng.randint(1, 4), step))
            parents = rng.sample(versions, min(len(versions), rng.choice([0, 1, 1, 2])))
            h = Header(id=uuid.uuid4().hex, project="p", name="n", version=str(step),
                       parents=[p.id for p in parents], snapshot=rng.random() < 0.1,
                       stats={"files": 1, "size": 1})
            repo.store.put(mf.manifest_key(h.id), mf.encode(h, delta))
            try:
                TreeResolver(repo).tree(h.id)
            except IntegrityError:  # a history the engine refuses: try another
                repo.store.delete(mf.manifest_key(h.id))
                repo.forget_manifest(h.id)
                continue
            break
        versions.append(h)
    return versions


@pytest.mark.parametrize("seed", range(4))
def test_cursor_walks_match_the_engine(tmp_path: Path, seed: int,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(walk, "BATCH", 2)
    repo = Repository(open_store(str(tmp_path / "store")), tmp_path / "cache")
    rng = random.Random(seed)
    versions = random_history(repo, rng, 14)

    def tree(h: Header):  # noqa: ANN202 - a fresh source each time, as a page has
        return treewalk.open_tree(repo, h)

    cursors = ["", "a", "a/", "a-b", "a.b/a", "a/a/a", "A/b", "a0/", "b/b/b", "~", "é/",
               "\U0001f600", NAMES[7] + "/a"]
    for h in versions:
        files = [e for e in treewalk.iter_files(tree(h))]
        assert list(walk.files_after(tree(h))) == files
        for after in cursors + [e.path for e in rng.sample(files, min(4, len(files)))]:
            assert list(walk.files_after(tree(h), after)) == [
                e for e in files if e.path > after], after
    for _ in range(30):
        a, b = rng.choice(versions), rng.choice(versions)
        rows = list(treewalk.diff(tree(a), tree(b)))
        assert list(walk.diff_after(tree(a), tree(b))) == rows
        for after in rng.sample(cursors, 3) + [r[0] for r in rng.sample(rows, min(2, len(rows)))]:
            assert list(walk.diff_after(tree(a), tree(b), after)) == [
                r for r in rows if r[0] > after], after


def test_folder_pages_cover_a_folder_once(tmp_path: Path) -> None:
    repo = Repository(open_store(str(tmp_path / "store")), tmp_path / "cache")
    names = [f"f{i:04d}" for i in range(0, 2500, 3)] + ["a", "a-b", "a.b", "z/x"]
    h = Header(id=uuid.uuid4().hex, project="p", name="n", version="1",
               stats={"files": len(names), "size": 1})
    repo.store.put(mf.manifest_key(h.id), mf.encode(h, [file(f"d/{n}") for n in names]))
    source = treewalk.open_tree(repo, h)
    seen, start = [], ""
    while True:
        total, page, start_next = walk.folder_page(source, "d", start, 100)
        assert total == len(names) - 1 + 1  # "z/x" makes one folder "z"
        seen += [name for name, _e in page]
        if start_next is None:
            break
        start = start_next
    assert seen == [n for n, _e in source.children("d")]


def test_a_page_reads_a_page_not_the_folder(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Deep in a folder of 20,000 files, a folder page and a page of files
    read a few hundred index records and decode only what they show."""
    import itertools

    from dsfs.cache.index import CacheIndex
    from dsfs.engine.treedirs import LmdbTreeSource

    repo = Repository(open_store(str(tmp_path / "store")), tmp_path / "cache")
    h = Header(id=uuid.uuid4().hex, project="p", name="n", version="1",
               stats={"files": 20_001, "size": 1})
    entries = [file(f"d/f{i:05d}") for i in range(20_000)] + [file("e/x")]
    repo.store.put(mf.manifest_key(h.id), mf.encode(h, entries))
    source = treewalk.open_tree(repo, h)
    assert source.count_children("d") == 20_000
    read, decoded = [], []
    real_range, real_decode = CacheIndex.tree_listing_range, LmdbTreeSource.decode_entry

    def counting_range(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        got = real_range(self, *args, **kwargs)
        read.append(len(got))
        return got

    def counting_decode(self, path, encoded):  # noqa: ANN001, ANN202
        decoded.append(path)
        return real_decode(self, path, encoded)

    monkeypatch.setattr(CacheIndex, "tree_listing_range", counting_range)
    monkeypatch.setattr(LmdbTreeSource, "decode_entry", counting_decode)
    total, page, more = walk.folder_page(source, "d", "f12345", 100)
    assert total == 20_000 and [n for n, _e in page][:2] == ["f12346", "f12347"]
    assert more == "f12445" and sum(read) == 100 and len(decoded) == 100
    read.clear()
    decoded.clear()
    rows = list(itertools.islice(walk.files_after(source, "d/f17000"), 100))
    assert [e.path for e in rows][:1] == ["d/f17001"] and len(rows) == 100
    assert sum(read) <= 3 * walk.BATCH and len(decoded) == 100
