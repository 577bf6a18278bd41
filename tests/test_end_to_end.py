"""End to end on a real tree of a few thousand files, through the installed CLI:
sync, get, compare byte for byte; change some files, sync again; the new
manifest holds only the changes and ``diff`` reports exactly them."""

from __future__ import annotations

import filecmp
import json
import os
import random
import shutil
from pathlib import Path

from dsfs.format import manifest as mf
from dsfs.store import open_store


def build_tree(root: Path, count: int) -> None:
    rng = random.Random(7)
    for i in range(count):
        path = root / f"class{i % 20:02d}" / f"shard{i % 5}" / f"sample{i:05d}.dat"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randint(0, 16384)))
    (root / "big.bin").write_bytes(rng.randbytes(20 * 1024 * 1024))  # several chunks
    (root / "empty-dir").mkdir()
    os.symlink("class00", root / "alias")


def assert_same_tree(a: Path, b: Path) -> None:
    cmp = filecmp.dircmp(a, b)
    stack = [cmp]
    while stack:
        c = stack.pop()
        assert not c.left_only and not c.right_only, (c.left, c.left_only, c.right_only)
        _match, mismatch, errors = filecmp.cmpfiles(c.left, c.right, c.common_files,
                                                    shallow=False)
        assert not mismatch and not errors, (c.left, mismatch, errors)
        stack.extend(c.subdirs.values())


def test_few_thousand_files(run_dsfs, store_url: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    build_tree(src, 3000)
    out = run_dsfs("sync", str(src), "-p", "e2e", "-n", "data", check=True).stdout
    v1 = out.strip().splitlines()[-1]
    copy = Path(run_dsfs("get", v1, check=True).stdout.strip().splitlines()[-1])
    assert_same_tree(src, copy)
    assert os.readlink(copy / "alias") == "class00"
    assert (copy / "empty-dir").is_dir()

    # Change: modify 10, add 5, remove 5, rename 1.
    rng = random.Random(9)
    samples = sorted(src.rglob("sample*.dat"))
    modified = samples[:10]
    removed = samples[10:15]
    renamed_from = samples[15]
    for path in modified:
        path.write_bytes(rng.randbytes(100) + b"changed")
    for path in removed:
        path.unlink()
    added = [src / "new" / f"added{i}.dat" for i in range(5)]
    added[0].parent.mkdir()
    for path in added:
        path.write_bytes(rng.randbytes(500))
    renamed_to = src / "new" / "renamed.dat"
    shutil.move(renamed_from, renamed_to)

    out = run_dsfs("sync", str(src), "-p", "e2e", "-n", "data", check=True).stdout
    v2 = out.strip().splitlines()[-1]
    rel = lambda p: str(p.relative_to(src))  # noqa: E731
    expect_added = sorted([rel(p) for p in added] + [rel(renamed_to)])
    expect_removed = sorted([rel(p) for p in removed] + [rel(renamed_from)])
    expect_modified = sorted(rel(p) for p in modified)

    diff = json.loads(run_dsfs("diff", v1, v2, "--json", check=True).stdout)
    assert diff == {"added": expect_added, "removed": expect_removed,
                    "modified": expect_modified}

    # The child's manifest holds only the changes (plus the new directory).
    store = open_store(store_url)
    delta = list(mf.iter_entries(store.get(mf.manifest_key(v2))))
    changed_files = {e.path for e in delta if e.kind != mf.DIR}
    assert changed_files == set(expect_added) | set(expect_removed) | set(expect_modified)
    assert {e.path for e in delta if e.kind == mf.DIR} == {"new"}

    copy2 = Path(run_dsfs("get", v2, check=True).stdout.strip().splitlines()[-1])
    assert_same_tree(src, copy2)
    # The unchanged files of v2 share storage with v1's copy.
    unchanged = rel(samples[20])
    assert os.stat(copy / unchanged).st_ino == os.stat(copy2 / unchanged).st_ino
    run_dsfs("verify", v2, "--folder", str(src), check=True)
