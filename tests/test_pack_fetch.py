"""Whole-pack fetches from S3 (``ChunkCache.fetch_pack`` over
``S3Store.get_buffered``, the shuffled-epoch path of issue 14) when the store
misbehaves mid-body: replies cut off part-way (resumed, or given up on), a
byte changed in transit (S3's own checksum is not asked for on this path, so
only the chunk digests can catch it), and read buffers reused between packs
of different sizes.  Whatever happens, every chunk in the cache holds exactly
its bytes, a failed fetch caches nothing of the pack, and no temporary file
is left.  Real moto server, the fault proxy in between."""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_proxy import FaultProxy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from s3_support import make_client, new_bucket

from dsfs.cache.chunks import ChunkCache
from dsfs.errors import DsfsError, IntegrityError
from dsfs.format.digest import chunk_id
from dsfs.format.manifest import ChunkRef
from dsfs.format.pack import PackBuilder, PackEntry, pack_key
from dsfs.fsutil import TMP_PREFIX
from dsfs.store import s3 as s3mod

#: Packs of different sizes, so a reused buffer is sometimes too big (a stale
#: tail must never be taken for the pack's end) and sometimes too small.
PACK_CHUNKS = (3, 9, 5, 14)


@pytest.fixture(scope="module")
def packs(s3_endpoint: str | None) -> Iterator[tuple[str, dict[str, list[PackEntry]],
                                                    dict[str, bytes]]]:
    """A bucket with a few packs: (bucket, entries by pack id, chunk bytes by id)."""
    if s3_endpoint is None:
        pytest.skip("needs the local moto server (faults from the proxy)")
    client = make_client(s3_endpoint)
    bucket = new_bucket(client)
    rng = random.Random(3)
    entries: dict[str, list[PackEntry]] = {}
    chunks: dict[str, bytes] = {}
    for count in PACK_CHUNKS:
        builder = PackBuilder()
        for _ in range(count):
            data = rng.randbytes(rng.randrange(20_000, 400_000))
            chunks[chunk_id(data)] = data
            builder.add(chunk_id(data), data)
        pid, blob, pack_entries = builder.finish()
        client.put_object(Bucket=bucket, Key=f"store/{pack_key(pid)}", Body=blob)
        entries[pid] = pack_entries
    client.close()
    yield bucket, entries, chunks


@pytest.fixture(scope="module")
def proxy(s3_endpoint: str | None) -> Iterator[FaultProxy]:
    if s3_endpoint is None:
        pytest.skip("needs the local moto server (faults from the proxy)")
    with FaultProxy(s3_endpoint, lifetime=600) as p:
        yield p


def _check_cache(cache: ChunkCache, chunks: dict[str, bytes]) -> set[str]:
    """Every chunk file holds exactly its chunk, the index knows only those, no
    temporary file is left; the ids cached."""
    found = set()
    for sub in cache.chunk_dir.iterdir():
        for f in sub.iterdir():
            assert not f.name.startswith(TMP_PREFIX), f"temporary file left: {f}"
            cid = "xxh3_128:" + f.name
            assert f.read_bytes() == chunks[cid], f"chunk {cid} cached with wrong bytes"
            found.add(cid)
    indexed = {"xxh3_128:" + raw.hex() for raw, _size, _atime in cache.index.iter_chunks()}
    assert indexed == found
    return found


FETCH = st.tuples(st.integers(0, len(PACK_CHUNKS) - 1), st.integers(0, 13),
                  st.sampled_from(["none", "cut", "flip"]), st.integers(1, 7))


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fetches=st.lists(FETCH, min_size=3, max_size=6))
def test_fetch_pack_caches_exact_chunks_or_nothing(
        packs, proxy: FaultProxy, tmp_path_factory: pytest.TempPathFactory,
        monkeypatch: pytest.MonkeyPatch, fetches: list[tuple[int, int, str, int]]) -> None:
    bucket, entries, chunks = packs
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    monkeypatch.setattr(s3mod, "backoff", lambda attempt: 0.0)  # no waits between attempts
    store = s3mod.S3Store(bucket, "store")
    cache = ChunkCache(tmp_path_factory.mktemp("cache"))
    pack_ids = list(entries)
    try:
        for pack_no, chunk_no, fault, times in fetches:
            pid = pack_ids[pack_no]
            entry = entries[pid][chunk_no % len(entries[pid])]
            wanted = ChunkRef(entry.chunk_id, pid, entry.offset, entry.length)
            proxy.clear()
            if fault != "none":
                proxy.add(fault, "GET", path_contains=pid, times=times)
            size = entries[pid][-1].offset + entries[pid][-1].length
            flipped = {e.chunk_id for e in entries[pid]
                       if fault == "flip" and e.offset <= _body_middle(pid, entries) < e.offset
                       + e.length}
            gave_up = fault == "cut" and times >= s3mod.STREAM_ATTEMPTS
            cached: list[str] = []
            try:
                fetched = cache.fetch_pack(store, wanted, cached)
            except IntegrityError:
                assert wanted.chunk_id in flipped, "a sound chunk was refused"
                assert _check_cache(cache, chunks) == set(), "a failed fetch cached chunks"
            except DsfsError:
                assert gave_up, "a body cut fewer times than the attempts was not resumed"
                assert _check_cache(cache, chunks) == set(), "a failed fetch cached chunks"
            else:
                assert not gave_up and wanted.chunk_id not in flipped
                assert fetched > size  # the whole pack: header, chunks, index
                expected = {e.chunk_id for e in entries[pid]} - flipped
                assert _check_cache(cache, chunks) == expected == set(cached)
            cache.discard(list(chunks))  # the next fetch starts cold (same buffers)
    finally:
        proxy.clear()
        store.close()


def _body_middle(pid: str, entries: dict[str, list[PackEntry]]) -> int:
    """The offset of the byte the proxy's ``flip`` changes: the body's middle."""
    last = entries[pid][-1]
    count = len(entries[pid])
    size = last.offset + last.length + count * 32 + 40  # index entries and trailer
    return size // 2


def test_buffers_are_reused_and_let_go(packs, proxy: FaultProxy, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Consecutive whole-pack fetches read into the same buffer; the pool lets
    go of its buffers once idle."""
    bucket, entries, _chunks = packs
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    store = s3mod.S3Store(bucket, "store")
    cache = ChunkCache(tmp_path / "cache")
    try:
        by_size = sorted(entries, key=lambda p: entries[p][-1].offset, reverse=True)
        seen = set()
        for pid in by_size:  # the biggest first: the others fit in its buffer
            entry = entries[pid][0]
            cache.fetch_pack(store, ChunkRef(entry.chunk_id, pid, entry.offset, entry.length))
            buffer = cache.buffers.take()
            assert buffer is not None
            seen.add(id(buffer))
            cache.buffers.give(buffer)
        assert len(seen) == 1, "each fetch made a new buffer"
        assert cache.buffers.held > 0
        cache.buffers.idle = 0.0
        assert cache.buffers.trim() > 0 and cache.buffers.held == 0
    finally:
        store.close()


def test_local_store_default_path(tmp_path: Path) -> None:
    """A store without its own ``get_buffered`` (the local one) serves whole
    packs through ``get``."""
    from dsfs.store.local import LocalStore

    store = LocalStore(tmp_path / "store")
    builder = PackBuilder()
    data = os.urandom(50_000)
    entry = builder.add(chunk_id(data), data)
    pid, blob, _ = builder.finish()
    store.put(pack_key(pid), blob)
    cache = ChunkCache(tmp_path / "cache")
    assert cache.fetch_pack(store, ChunkRef(entry.chunk_id, pid, entry.offset,
                                            entry.length)) == len(blob)
    assert cache.read(entry.chunk_id) == data


def test_forked_child_starts_with_an_empty_pool() -> None:
    """A lock held by a parent's thread at the fork must not hang the child."""
    from dsfs.cache.buffers import BufferPool

    pool = BufferPool(keep=2)
    pool.give(bytearray(1024))
    with pool._lock:  # as if a fetch thread were inside the pool at the fork
        pid = os.fork()
        if pid == 0:  # the child: must neither hang nor see the parent's buffers
            signal.alarm(10)  # a child stuck on the inherited lock dies of it
            os._exit(0 if pool.take() is None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert pool.held == 1024
