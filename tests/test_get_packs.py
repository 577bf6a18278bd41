"""``get`` and ``get --copy`` write files straight from grouped pack ranges
(issue 11): byte-exact copies of thousands of small files across several
packs, a handful of ranged reads, and a corrupt chunk fails whole."""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import pytest

from dsfs.engine import copywriter, materialize, packer, streamcopy, versions
from dsfs.errors import IntegrityError
from dsfs.format import rawentries
from dsfs.format.pack import pack_key
from dsfs.repository import Repository
from dsfs.store.base import Store

FILES = 3000


class CountingStore:
    """The real store, counting its reads in a log file (``get`` reads in
    worker processes forked from the test; each appends its own lines)."""

    def __init__(self, inner: Store, log: Path) -> None:
        self.inner = inner
        self.log = log
        log.write_text("")

    def _note(self, line: str) -> None:
        with open(self.log, "a") as f:  # O_APPEND: lines from processes do not mix
            f.write(line + "\n")

    @property
    def ranges(self) -> list[tuple[str, int, int]]:
        rows = [line.split() for line in self.log.read_text().splitlines()]
        return [(r[1], int(r[2]), int(r[3])) for r in rows if r[0] == "range"]

    @property
    def gets(self) -> list[str]:
        rows = [line.split() for line in self.log.read_text().splitlines()]
        return [r[1] for r in rows if r[0] == "get"]

    def clear(self) -> None:
        self.log.write_text("")

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        self._note(f"range {key} {offset} {length}")
        return self.inner.get_range(key, offset, length)

    def get(self, key: str) -> bytes:
        self._note(f"get {key}")
        return self.inner.get(key)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.inner, name)


def _tree(root: Path) -> dict[str, bytes]:
    rng = random.Random(7)
    files = {}
    for i in range(FILES):
        rel = f"d{i // 250:02d}/f{i:05d}.bin"
        data = rng.randbytes(rng.randrange(0, 400))
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        os.chmod(root / rel, 0o640 if i % 7 else 0o755)
        files[rel] = data
    return files


def _contents(root: Path) -> dict[str, tuple[bytes, int, int]]:
    out = {}
    for path in root.rglob("*"):
        if path.is_file():
            st = path.stat()
            out[str(path.relative_to(root))] = (path.read_bytes(), st.st_mode & 0o777,
                                                st.st_mtime_ns)
    return out


@pytest.fixture
def published(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    src = tmp_path / "src"
    _tree(src)
    monkeypatch.setattr(packer, "PACK_TARGET_SIZE", 64 * 1024)  # several packs
    header = versions.sync(Repository.open(), str(src), "p", "n").header
    return src, header


def test_get_copy_from_grouped_ranges_is_exact(published, tmp_path: Path) -> None:
    src, header = published
    repo = Repository.open()
    packs = {info.key for info in repo.store.list("packs/")}
    assert len(packs) >= 5
    counting = CountingStore(repo.store, tmp_path / "reads.log")
    repo.store = counting  # type: ignore[assignment]
    target = materialize.mutable_copy(repo, header, str(tmp_path / "copy"))
    assert _contents(target) == _contents(src)
    # one read per pack a batch touches, not one per file (a block of the
    # manifest streamed to a writer ends a batch too)
    with repo.open_manifest(header.id) as manifest:
        blocks = sum(1 for _ in rawentries.iter_line_blocks(manifest, streamcopy.BLOCK_BYTES))
    batches = math.ceil(FILES / copywriter.BATCH_FILES) + blocks - 1
    assert 0 < len(counting.ranges) <= len(packs) + batches, counting.ranges
    assert not counting.gets or all(not k.startswith("packs/") for k in counting.gets)
    # no chunk file was made for the copy
    assert not any(repo.cache.index.iter_chunks())

    counting.clear()
    copy = materialize.local_copy(repo, header)  # the read-only copy of `get`
    assert {k: v[0] for k, v in _contents(copy).items()} == {
        k: v[0] for k, v in _contents(src).items()}
    assert all(not os.stat(p).st_mode & 0o222 for p in copy.rglob("*.bin"))
    assert 0 < len(counting.ranges) <= len(packs) + batches


def test_corrupt_chunk_in_the_middle_fails_and_leaves_nothing(published, tmp_path: Path,
                                                              run_dsfs) -> None:
    _src, header = published
    repo = Repository.open()
    entry = next(e for e in materialize.treewalk.iter_files(
        materialize.treewalk.open_tree(repo, header)) if e.path == "d05/f01400.bin")
    assert entry.size > 0
    ref = entry.chunks[0]
    key = pack_key(ref.pack_id)
    data = bytearray(repo.store.get(key))
    data[ref.offset] ^= 0xFF
    repo.store.put(key, bytes(data))
    target = tmp_path / "new" / "copy"
    result = run_dsfs("get", "p/n", "--copy", str(target))
    assert result.returncode == IntegrityError.exit_code, result.stderr
    assert "corrupt" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "new").exists()
    result = run_dsfs("get", "p/n")
    assert result.returncode == IntegrityError.exit_code, result.stderr
    copies = materialize.copies_dir(repo)
    assert not copies.exists() or list(copies.iterdir()) == []
