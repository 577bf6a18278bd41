"""Publishing streams the manifest (issue 11, bounded memory at 10M entries).

A manifest is spooled to a file under the cache and uploaded from it
(``Store.put_file_if_absent``), so its bytes are never held whole; it is
visible only once whole, a failed upload publishes nothing and leaves no
spool behind, and the spool becomes the version's cached copy.  Checked on
every store kind, with injected store faults (``DSFS_FAULTS``).
"""

from __future__ import annotations

import os
import random
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsfs import catalog as cat
from dsfs.engine.publish import publish
from dsfs.engine.versions import new_header
from dsfs.errors import StoreError
from dsfs.format import manifest as mf
from dsfs.format.manifest import DIR, Entry
from dsfs.repository import Repository
from dsfs.store import open_store
from dsfs.store.faulty import FaultyStore, parse_rules


class Lines:
    """An encoded delta of ``count`` directory entries with long random names
    (gzip cannot shrink them much: the manifest is about as big as its lines)."""

    def __init__(self, count: int, seed: int, name_bytes: int = 96) -> None:
        self.count, self.seed, self.name_bytes = count, seed, name_bytes
        self.pack_ids: set[str] = set()

    def entries(self) -> Iterator[Entry]:
        rng = random.Random(self.seed)
        for i in range(self.count):
            yield Entry(f"d{i:07d}-{rng.randbytes(self.name_bytes).hex()}", DIR, mode=0o755)

    def lines(self) -> Iterator[bytes]:
        return (mf.entry_line(e) for e in self.entries())


def _repo(store_url: str, cache: Path, faults: str = "") -> Repository:
    store = open_store(store_url)
    if faults:
        store = FaultyStore(store, parse_rules(faults))
    return Repository(store, cache)


def _spools(cache: Path) -> list[str]:
    tmp = cache / "tmp"
    return sorted(os.listdir(tmp)) if tmp.exists() else []


def _published_peak(repo: Repository, delta: Lines, name: str) -> tuple[int, bytes, str]:
    """Python's peak memory while publishing ``delta``; the stored manifest; its id."""
    header = new_header(repo, "p", name)
    tracemalloc.start()
    try:
        published = publish(repo, header, delta, False)
        _size, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, repo.store.get(mf.manifest_key(published.id)), published.id


def test_publish_holds_no_whole_manifest_and_caches_it(store_url: str, tmp_path: Path) -> None:
    """Publishing a manifest four times bigger takes no more Python memory (the
    buffers of gzip and the spool are fixed); the manifest reads back entry
    for entry, and its cached copy is the stored object byte for byte."""
    repo = _repo(store_url, tmp_path / "cache")
    small_peak, small, _ = _published_peak(repo, Lines(10_000, seed=1), "small")
    delta = Lines(40_000, seed=2)
    big_peak, stored, version_id = _published_peak(repo, delta, "big")
    assert len(stored) - len(small) > 3_000_000
    assert big_peak - small_peak < (len(stored) - len(small)) // 10, (small_peak, big_peak)
    cached = repo.cache_root / "manifests" / repo.store_id.hex() / version_id
    assert cached.read_bytes() == stored
    assert list(mf.iter_entries(stored)) == list(delta.entries())
    assert _spools(repo.cache_root) == []


@pytest.mark.parametrize("faults", [
    "put_if_absent:versions/:error",      # the manifest upload fails
    "put_if_absent:versions/:deny",
    "put_if_absent:names/:error",         # manifest written, the claim fails
])
def test_a_failed_publish_publishes_nothing(store_url: str, tmp_path: Path, faults: str) -> None:
    """With the upload or the claim failing, no version is visible (no claim,
    no cached copy), the spool is gone, and publishing again works."""
    repo = _repo(store_url, tmp_path / "cache", faults)
    delta = Lines(2_000, seed=2)
    with pytest.raises(StoreError):
        publish(repo, new_header(repo, "p", "n"), delta, False)
    assert not cat.Catalog(repo).claimed_versions("p", "n")
    assert _spools(repo.cache_root) == []
    manifests = repo.cache_root / "manifests"
    assert not manifests.exists() or not any(p.is_file() for p in manifests.rglob("*"))
    clean = _repo(store_url, tmp_path / "cache")
    published = publish(clean, new_header(clean, "p", "n"), delta, False)
    assert list(mf.iter_entries(clean.store.get(mf.manifest_key(published.id)))) == list(
        delta.entries())


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(count=st.integers(0, 3000), seed=st.integers(0, 2**16),
       name_bytes=st.integers(1, 40))
def test_streamed_fetch_of_a_manifest_is_exact(store_url: str, tmp_path_factory:
                                               pytest.TempPathFactory, count: int, seed: int,
                                               name_bytes: int) -> None:
    """Published from one cache, read through another (fetched with
    ``Store.get_into`` into its cache): the same bytes and entries."""
    base = tmp_path_factory.mktemp("fetch")
    writer = _repo(store_url, base / "w")
    delta = Lines(count, seed, name_bytes)
    published = publish(writer, new_header(writer, "p", f"f{seed}-{count}"), delta, False)
    reader = _repo(store_url, base / "r")
    with reader.open_manifest(published.id) as f:
        fetched = f.read()
    assert fetched == writer.store.get(mf.manifest_key(published.id))
    assert list(mf.iter_entries(fetched)) == list(delta.entries())
    assert _spools(reader.cache_root) == []


def test_header_of_a_cached_manifest_reads_only_its_head(store_url: str, tmp_path: Path) -> None:
    """A published manifest is cached whole; asking for its header (every
    command does, for every version it names) reads the head of that file,
    not its entries."""
    repo = _repo(store_url, tmp_path / "cache")
    published = publish(repo, new_header(repo, "p", "h"), Lines(20_000, seed=5), False)
    size = len(repo.store.get(mf.manifest_key(published.id)))
    assert size > 2_000_000
    for read in (lambda r: r.header(published.id), lambda r: r.cached_header(published.id)):
        fresh = _repo(store_url, tmp_path / "cache")  # no in-memory copy
        tracemalloc.start()
        try:
            header = read(fresh)
            _size, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert header is not None and header.id == published.id
        assert peak < size // 10, (peak, size)
