"""``dsfs.engine.parts``: the deterministic split of a version into N parts,
and ``get``/``list_files`` of one part."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import make_tree
from hypothesis import given, settings
from hypothesis import strategies as st

from dsfs import Dataset
from dsfs.engine import parts
from dsfs.errors import UsageError


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 10_000), max_size=60), st.integers(1, 12))
def test_every_file_in_exactly_one_contiguous_balanced_part(sizes: list[int], n: int) -> None:
    owner = parts.assign(sizes, n)
    assert all(0 <= k < n for k in owner)
    assert owner == sorted(owner)  # contiguous runs in path order
    weights = [0] * n
    for size, k in zip(sizes, owner, strict=True):
        weights[k] += size + 1
    total = sum(weights)
    biggest = max((s + 1 for s in sizes), default=0)
    for w in weights:
        assert abs(w - total / n) <= biggest
    # select() agrees with assign() for every part, and the parts cover all
    items = list(enumerate(sizes))
    chosen = []
    for k in range(n):
        got = list(parts.select(lambda: iter(items), lambda it: it[1], k, n))
        assert [owner[i] for i, _s in got] == [k] * len(got)
        chosen += [i for i, _s in got]
    assert chosen == list(range(len(sizes)))


@pytest.mark.parametrize(("part", "num", "text"), [
    (None, 2, "num_parts needs part"), (1, None, "part needs num_parts"),
    (2, 2, "part must be between 0 and 1"), (-1, 3, "part must be between 0 and 2"),
    (0, 0, "num_parts must be"), (True, 2, "part must be")])
def test_bad_parts_are_refused_by_argument_name(part, num, text) -> None:
    with pytest.raises(UsageError, match=text):
        parts.check_part(part, num)


def test_get_local_copy_parts_cover_the_version_once(store_url: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    expected = make_tree(src, files=30)
    (src / "empty.txt").write_bytes(b"")
    os.symlink("d0", src / "link")
    ds = Dataset.create("p", "n")
    ds.add_files(src)
    ds.finalize()
    all_files = ds.list_files()
    seen: list[str] = []
    for k in range(3):
        listed = ds.list_files(part=k, num_parts=3)
        folder = Path(Dataset.get(ds.id).get_local_copy(part=k, num_parts=3))
        got = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                     if p.is_file() or p.is_symlink())
        assert got == sorted(listed)
        for rel in got:
            if rel in expected:
                assert (folder / rel).read_bytes() == expected[rel]
        seen += listed
    assert sorted(seen) == sorted(all_files)
    # deterministic: the same again
    assert ds.list_files(part=1, num_parts=3) == ds.list_files(part=1, num_parts=3)
    copy = tmp_path / "copy"
    ds.get_mutable_local_copy(str(copy), part=0, num_parts=3)
    assert sorted(str(p.relative_to(copy)) for p in copy.rglob("*")
                  if p.is_file() or p.is_symlink()) == sorted(ds.list_files(part=0, num_parts=3))
