"""Bad input: each case gets a clear error and loses nothing."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import make_tree

from dsfs import Dataset
from dsfs.catalog import claim_key
from dsfs.engine import drafts, versions
from dsfs.errors import (
    AmbiguousError,
    ConflictError,
    FormatVersionError,
    InputError,
    IntegrityError,
    NotFoundError,
)
from dsfs.format import manifest as mf
from dsfs.format.pack import pack_key
from dsfs.repository import Repository
from dsfs.store import open_store


def publish_version(src: Path, name: str = "n") -> Dataset:
    ds = Dataset.create("p", name)
    ds.add_files(str(src))
    ds.finalize()
    return ds


def test_unknown_id_and_name(store_url: str, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no version with id"):
        Dataset.get("0123abcd")
    with pytest.raises(NotFoundError, match="no dataset named"):
        Dataset.get(dataset_project="p", dataset_name="missing")
    src = tmp_path / "src"
    make_tree(src, files=2)
    publish_version(src)
    with pytest.raises(NotFoundError, match="has no version 9.9"):
        Dataset.get(dataset_project="p", dataset_name="n", dataset_version="9.9")


def test_ambiguous_prefix_lists_candidates(store_url: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, files=2)
    ids = []
    for i in range(17):  # 17 random ids: two at least share a first hex digit
        (src / "n.txt").write_text(str(i))
        ids.append(publish_version(src, name=f"n{i}").id)
    first_digits = [i[0] for i in ids]
    common = max(set(first_digits), key=first_digits.count)
    assert first_digits.count(common) > 1
    with pytest.raises(AmbiguousError) as info:
        Dataset.get(common)
    for version_id in ids:
        if version_id.startswith(common):
            assert version_id in str(info.value)


def test_adding_missing_path(store_url: str, tmp_path: Path) -> None:
    ds = Dataset.create("p", "n")
    with pytest.raises(InputError, match="no such file"):
        ds.add_files(str(tmp_path / "nope"))


def test_special_files_skipped_with_warning(store_url: str, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "real.txt").write_text("x")
    os.mkfifo(src / "fifo")
    if os.getuid() == 0:
        os.mknod(src / "chardev", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock"))
    try:
        with caplog.at_level("WARNING", logger="dsfs"):
            ds = publish_version(src)
    finally:
        sock.close()
    assert ds.list_files() == ["real.txt"]
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "fifo" in warned and "sock" in warned
    assert os.getuid() != 0 or "chardev" in warned


def test_symlinks_stored_not_followed(store_url: str, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    src = tmp_path / "src"
    src.mkdir()
    (src / "file.txt").write_text("in")
    os.symlink("file.txt", src / "rel-link")
    os.symlink(str(outside), src / "dir-link")
    ds = publish_version(src)
    entries = ds.entries()
    assert entries["rel-link"].kind == mf.SYMLINK and entries["rel-link"].target == "file.txt"
    assert entries["dir-link"].kind == mf.SYMLINK
    assert not any("secret" in p for p in entries)
    copy = Path(ds.get_local_copy())
    assert os.readlink(copy / "rel-link") == "file.txt"
    assert (copy / "rel-link").read_text() == "in"


def test_non_utf8_names_kept_exactly(store_url: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    raw = b"caf\xe9-latin1.txt"
    with open(os.path.join(os.fsencode(src), raw), "wb") as f:
        f.write(b"bytes")
    ds = publish_version(src)
    copy = Path(ds.get_local_copy())
    assert raw in os.listdir(os.fsencode(copy))
    with open(os.path.join(os.fsencode(copy), raw), "rb") as f:
        assert f.read() == b"bytes"


def _forge_version(repo: Repository, path: str) -> str:
    """Publish a hand-made manifest whose entry path is ``path``."""
    header = mf.Header(id="ab" * 16, project="evil", name="n", version="1.0.0")
    entry = mf.Entry(path, mf.DIR, 0, 0o40755, 0)
    repo.store.put(mf.manifest_key(header.id), mf.encode(header, [entry]))
    repo.store.put(claim_key("evil", "n", "1.0.0"), header.id.encode())
    return header.id


@pytest.mark.parametrize("bad_path", ["../escape", "/etc/evil", "a/../../x", "a//b", "./x"])
def test_manifest_with_unsafe_path_is_refused(store_url: str, tmp_path: Path,
                                              bad_path: str) -> None:
    repo = Repository.open()
    version_id = _forge_version(repo, bad_path)
    ds = Dataset.get(version_id)
    with pytest.raises(IntegrityError, match="not a safe relative path"):
        ds.get_local_copy()
    with pytest.raises(IntegrityError):
        ds.get_mutable_local_copy(str(tmp_path / "target" / "inner"))
    assert not (tmp_path / "escape").exists()
    assert not (tmp_path / "target" / "x").exists()


def test_entry_below_symlink_is_refused(store_url: str, tmp_path: Path) -> None:
    repo = Repository.open()
    header = mf.Header(id="cd" * 16, project="evil", name="n", version="1.0.0")
    link = mf.Entry("link", mf.SYMLINK, 4, 0o120777, 0, target=str(tmp_path))
    below = mf.Entry("link/planted", mf.DIR, 0, 0o40755, 0)
    repo.store.put(mf.manifest_key(header.id), mf.encode(header, [link, below]))
    repo.store.put(claim_key("evil", "n", "1.0.0"), header.id.encode())
    with pytest.raises(IntegrityError, match="below"):  # the tree index's words
        Dataset.get(header.id).get_local_copy()
    assert not (tmp_path / "planted").exists()


def test_corrupt_chunk_in_store_detected(store_url: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, files=5, size=5000)
    ds = publish_version(src)
    repo = Repository.open()
    entry = next(e for e in ds.entries().values() if e.kind == mf.FILE and e.size > 10)
    ref = entry.chunks[0]
    key = pack_key(ref.pack_id)
    data = bytearray(repo.store.get(key))
    data[ref.offset] ^= 0xFF
    repo.store.put(key, bytes(data))
    problems = ds.verify()
    assert any(entry.path in p and "corrupt" in p for p in problems)
    with pytest.raises(IntegrityError, match="corrupt"):
        ds.get_local_copy()
    assert not (repo.cache_root / "copies" / ds.id).exists()


def test_corrupt_chunk_in_cache_refetched(store_url: str, tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "src"
    expected = make_tree(src, files=5, size=5000)
    ds = publish_version(src)
    repo = Repository.open()
    refs = [r for e in ds.entries().values() for r in e.chunks]
    repo.cache.fetch(repo.store, refs)
    victim = repo.cache.chunk_path(refs[0].chunk_id)
    victim.write_bytes(b"garbage" + victim.read_bytes()[7:])
    with caplog.at_level("WARNING", logger="dsfs"):
        copy = Path(ds.get_local_copy())
    assert any("corrupt" in r.getMessage() for r in caplog.records)
    for rel, data in expected.items():
        assert (copy / rel).read_bytes() == data


def test_store_from_newer_format_refused(store_url: str, tmp_path: Path) -> None:
    store = open_store(store_url)
    store.put("config", json.dumps({"format_version": 99, "store_id": "0" * 32}).encode())
    with pytest.raises(FormatVersionError, match="format 99"):
        Dataset.get(dataset_project="p", dataset_name="n")
    with pytest.raises(FormatVersionError):
        Dataset.create("p", "n")


def test_manifest_from_newer_format_refused() -> None:
    header = mf.Header(id="ef" * 16, project="p", name="n", version="1")
    data = bytearray(mf.encode(header, []))
    data[8] = 42  # format version field of the prefix
    with pytest.raises(FormatVersionError):
        mf.decode_header(bytes(data))


def test_two_closes_of_one_draft(store_url: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, files=3)
    ds = Dataset.create("p", "n")
    ds.add_files(str(src))
    with drafts.closing_lock(ds.id), pytest.raises(ConflictError, match="being closed"):
        versions.close(Repository.open(), ds.id)
    ds.finalize()
    with pytest.raises(NotFoundError, match="already closed"):
        versions.close(Repository.open(), ds.id)


def test_two_close_processes_at_once(store_url: str, tmp_path: Path,
                                     dsfs_env: dict[str, str]) -> None:
    src = tmp_path / "src"
    make_tree(src, files=200, size=200_000)
    ds = Dataset.create("p", "n")
    ds.add_files(str(src))
    env = {**os.environ, **dsfs_env, "DSFS_STORE": store_url}
    command = [sys.executable, "-m", "dsfs", "close", "--id", ds.id]
    barrier = threading.Barrier(2)
    results: list[subprocess.CompletedProcess[str]] = []

    def run() -> None:
        barrier.wait()
        results.append(subprocess.run(command, capture_output=True, text=True, env=env))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.returncode for r in results)
    assert codes[0] == 0 and codes[1] in (ConflictError.exit_code, NotFoundError.exit_code)
    loser = next(r for r in results if r.returncode != 0)
    assert "Traceback" not in loser.stderr and loser.stderr.count("\n") == 1
    assert len(Dataset.search("p", "n")) == 1


def test_interrupted_close_resumes_without_reuploading(store_url: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    # packs of 16 MiB, as many as flushes to interrupt (big chunks would grow them)
    monkeypatch.setenv("DSFS_PACK_MAX_SIZE", str(16 * 1024 * 1024))
    for i in range(6):  # ~6 packs of 16 MiB
        (src / f"big{i}.bin").write_bytes(os.urandom(16 * 1024 * 1024))
    ds = Dataset.create("p", "n")
    ds.add_files(str(src))
    from dsfs.engine import packer

    real_put_count = {"n": 0}
    original = packer.Packer._flush

    def flaky_flush(self: packer.Packer) -> None:
        real_put_count["n"] += 1
        if real_put_count["n"] == 4:
            raise KeyboardInterrupt
        original(self)

    monkeypatch.setattr(packer.Packer, "_flush", flaky_flush)
    with pytest.raises(KeyboardInterrupt):
        ds.finalize()
    monkeypatch.setattr(packer.Packer, "_flush", original)
    repo = Repository.open()
    stored_before = len(list(repo.store.list("packs/")))
    assert stored_before >= 2
    assert Dataset.search("p", "n") == []  # nothing visible after the interruption
    result = versions.close(repo, ds.id)
    total_packs = len(list(repo.store.list("packs/")))
    assert result.stats.packs_uploaded == total_packs - stored_before
    assert result.stats.chunks_reused >= stored_before
    assert not Dataset.get(result.header.id).verify(str(src))


def test_ambiguous_draft_prefix(store_url: str) -> None:
    created = [Dataset.create("p", f"n{i}").id for i in range(17)]  # a shared first digit
    firsts = [c[0] for c in created]
    common = max(set(firsts), key=firsts.count)
    with pytest.raises(AmbiguousError, match="drafts"):
        drafts.load(common)


def test_malformed_pack_id_in_manifest_is_integrity_error(store_url: str) -> None:
    repo = Repository.open()
    header = mf.Header(id="12" * 16, project="evil", name="n", version="1.0.0")
    good = mf.Entry("f", mf.FILE, 1, 0o100644, 0, "xxh3_128:" + "0" * 32,
                    (mf.ChunkRef("xxh3_128:" + "0" * 32, "../../etc", 0, 1),))
    repo.store.put(mf.manifest_key(header.id), mf.encode(header, [good]))
    repo.store.put(claim_key("evil", "n", "1.0.0"), header.id.encode())
    with pytest.raises(IntegrityError, match="pack id"):
        Dataset.get(header.id).list_files()
