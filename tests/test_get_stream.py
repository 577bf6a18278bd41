"""``get`` and ``get --copy`` straight from a manifest (``dsfs.engine.streamcopy``).

Random hand-made manifests — paths listed twice, removals, entries below
files and below symlinks pointing out of the target, unsafe paths — are
copied twice, streamed and from the tree index: both must give the same
tree, or both the same error with nothing left, and nothing may appear
outside the target; writable copies (``get --copy``) and read-only ones
(plain ``get``) alike.  Writers are forked and blocks are tiny, so the
entries of one manifest land in different processes.  Then: a plain version
is really streamed (no tree index is built), a streamed copy interrupted by
a store error leaves nothing, and every listed directory is made before the
first file.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tree_snapshot import snapshot

from dsfs import fsutil
from dsfs.engine import copywriter, materialize, streamcopy, treewalk, versions
from dsfs.errors import DsfsError, StoreError
from dsfs.format import manifest as mf
from dsfs.format.manifest import DIR, FILE, REMOVED, SYMLINK, Entry, Header
from dsfs.repository import Repository
from dsfs.store import open_store
from dsfs.store.faulty import FaultyStore, parse_rules

NAMES = ["a", "b", "a.b"]
paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join)
ops = st.lists(st.tuples(st.sampled_from([FILE, FILE, FILE, DIR, SYMLINK, REMOVED]), paths,
                         st.integers(0, 3), st.sampled_from([0o644, 0o755, 0o600, 0o700]),
                         st.integers(0, 2**40)),
               min_size=1, max_size=10)


#: What a hand-made manifest may add to a plain tree: a path listed twice, a
#: removal, an entry below a file or symlink (or a file where a directory
#: is), a path leading out of the target.
ODDITIES = ["twice", "removal", "below", "unsafe"]


def _plain(ops: list) -> list:
    """The ops that form a plain tree, as ``close`` writes one: each path
    once, nothing below a file or a symlink, no removal."""
    kinds: dict[str, str] = {}
    kept = []
    for op in ops:
        kind, path = op[0], op[1]
        parts = path.split("/")
        above = ["/".join(parts[:i]) for i in range(1, len(parts))]
        if (kind == REMOVED or path in kinds or any(kinds.get(a, DIR) != DIR for a in above)
                or (kind != DIR and any(k.startswith(path + "/") for k in kinds))):
            continue
        kinds[path] = kind
        kept.append(op)
    return kept


def _add_oddity(ops: list, odd: str, i: int, where: int) -> None:
    kind, path, n, mode, mtime = ops[i % len(ops)]
    if odd == "twice":
        new = (kind, path, (n + 1) % 4, mode ^ 0o100, mtime + 1)
    elif odd == "removal":
        new = (REMOVED, path, 0, 0, 0)
    elif odd == "below":
        new = (FILE, path + "/x", n, mode, mtime) if kind != DIR else (FILE, path, n, mode, 0)
    else:
        new = (FILE, ["../up", "a/../../up"][n % 2], n, mode, mtime)
    ops.insert(where % (len(ops) + 1), new)


def _templates(repo: Repository, base: Path) -> list[Entry]:
    """Four files with real chunks in the store, for hand-made entries to point at."""
    src = base / "content"
    src.mkdir()
    for i in range(4):
        (src / f"t{i}").write_bytes(bytes([65 + i]) * (i * 700 + 1))
    header = versions.sync(repo, str(src), "content", "c").header
    return list(treewalk.iter_files(treewalk.open_tree(repo, header)))


def _entry(kind: str, path: str, n: int, mode: int, mtime: int, templates: list[Entry],
           outside: Path) -> Entry:
    if kind == FILE:
        t = templates[n]
        return Entry(path, FILE, t.size, 0o100000 | mode, mtime, t.digest, t.chunks)
    if kind == DIR:
        return Entry(path, DIR, 0, 0o40000 | mode, mtime)
    if kind == SYMLINK:
        target = str(outside) if n % 2 else f"t{n}"
        return Entry(path, SYMLINK, len(target), 0o120777, mtime, target=target)
    return Entry(path, REMOVED)


def _publish(repo: Repository, entries: list[Entry]) -> Header:
    header = Header(id=uuid.uuid4().hex, project="p", name="n", version="1",
                    stats={"files": len(entries), "size": 0})
    repo.store.put(mf.manifest_key(header.id), mf.encode(header, entries))
    return header


def _copy(repo: Repository, header: Header, target: Path, read_only: bool = False) -> tuple:
    """A writable copy in ``target``, or (``read_only``) the read-only copy of
    plain ``get`` in a new cache ``target``: its snapshot, or the error."""
    if read_only:
        repo = Repository(repo.store, target)
        copies = materialize.copies_dir(repo)
        try:
            copy = materialize.local_copy(repo, header)
        except DsfsError as exc:
            assert not copies.exists() or list(copies.iterdir()) == [], (
                "a failed copy left files behind")
            return ("error", type(exc).__name__)
        return ("ok", snapshot(copy))
    try:
        materialize.mutable_copy(repo, header, str(target))
    except DsfsError as exc:
        assert not target.exists(), "a failed copy left files behind"
        return ("error", type(exc).__name__)
    return ("ok", snapshot(target))


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=ops, odd=st.one_of(st.none(), st.tuples(st.sampled_from(ODDITIES), st.integers(0, 20),
                                                  st.integers(0, 20))),
       read_only=st.booleans())
def test_streamed_copy_is_the_indexed_copy(tmp_path_factory: pytest.TempPathFactory,
                                           monkeypatch: pytest.MonkeyPatch, ops: list,
                                           odd: tuple[str, int, int] | None,
                                           read_only: bool) -> None:
    base = tmp_path_factory.mktemp("stream")
    repo = Repository(open_store(str(base / "store")), base / "cache")
    templates = _templates(repo, base)
    outside = base / "outside"
    outside.mkdir()
    work = base / "work"  # targets live here; "../up" from a target is work/up
    work.mkdir()
    ops = _plain(ops)
    if odd is not None and ops:  # an oddity needs an entry to be odd about
        _add_oddity(ops, *odd)
    header = _publish(repo, [_entry(*op, templates, outside) for op in ops])
    with monkeypatch.context() as patch:
        patch.setattr(copywriter, "PARALLEL_MIN_FILES", 1)  # fork writers
        patch.setattr(copywriter, "BATCH_FILES", 2)
        patch.setattr(streamcopy, "BLOCK_BYTES", 16)  # one entry a block
        assert streamcopy.can_stream(repo, header)
        streamed = _copy(repo, header, work / "streamed", read_only)
        patch.setattr(streamcopy, "can_stream", lambda _repo, _header: False)
        indexed = _copy(repo, header, work / "indexed", read_only)
    assert streamed == indexed
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in work.iterdir()) == (  # (read-only: the caches)
        ["indexed", "streamed"] if streamed[0] == "ok" or read_only else [])


#: Oddities spelled out (the random test finds them too, but not every run).
CASES = [[(FILE, "a"), (DIR, "a")], [(DIR, "a"), (FILE, "a")],
         [(SYMLINK, "a"), (FILE, "a/x")], [(FILE, "a/x"), (SYMLINK, "a")],
         [(FILE, "a"), (FILE, "a/x")], [(FILE, "a"), (FILE, "a")], [(DIR, "a"), (DIR, "a")],
         [(SYMLINK, "a"), (SYMLINK, "a")], [(FILE, "a"), (REMOVED, "a")],
         [(DIR, "a"), (SYMLINK, "a")]]


@pytest.mark.parametrize("case", CASES, ids=lambda case: "-".join(k for k, _p in case))
def test_odd_manifests_are_copied_as_the_index_copies_them(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           case: list) -> None:
    repo = Repository(open_store(str(tmp_path / "store")), tmp_path / "cache")
    templates = _templates(repo, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    ops = [(kind, path, i % 4, 0o640 + i, i) for i, (kind, path) in enumerate(case)]
    header = _publish(repo, [_entry(*op, templates, outside) for op in ops])
    # one entry a block, written in order by this process: each entry is on
    # disk before the next one is looked at
    monkeypatch.setattr(streamcopy, "BLOCK_BYTES", 16)
    streamed = _copy(repo, header, tmp_path / "streamed")
    streamed_ro = _copy(repo, header, tmp_path / "streamed-ro", read_only=True)
    monkeypatch.setattr(streamcopy, "can_stream", lambda _repo, _header: False)
    assert streamed == _copy(repo, header, tmp_path / "indexed")
    assert streamed_ro == _copy(repo, header, tmp_path / "indexed-ro", read_only=True)
    assert list(outside.iterdir()) == []


def _plain_tree(root: Path) -> None:
    for i in range(copywriter.PARALLEL_MIN_FILES + 300):
        path = root / f"d{i // 700}" / f"f{i:05d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"%d\n" % i)
    os.symlink("d0/f00000", root / "link")
    (root / "empty").mkdir()
    os.chmod(root / "d1", 0o750)


def test_a_first_version_is_streamed_without_a_tree_index(tmp_path: Path) -> None:
    repo = Repository(open_store(str(tmp_path / "store")), tmp_path / "cache")
    _plain_tree(tmp_path / "src")
    header = versions.sync(repo, str(tmp_path / "src"), "p", "n").header
    repo = Repository(open_store(str(tmp_path / "store")), tmp_path / "fresh-cache")
    copy = materialize.mutable_copy(repo, header, str(tmp_path / "copy"))
    ro = materialize.local_copy(repo, header)
    assert repo.cache.index.tree_version(bytes.fromhex(header.id)) is None  # not indexed
    want = snapshot(tmp_path / "src")
    assert snapshot(copy) == want
    got = snapshot(ro)
    assert got.keys() == want.keys()
    for rel, (kind, *rest) in want.items():
        if kind == "file":
            assert got[rel] == ("file", rest[0], rest[1] & ~0o222, rest[2])
        else:
            assert got[rel] == (kind, *rest)


def test_a_store_error_while_streaming_leaves_nothing(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(str(tmp_path / "store"))
    _plain_tree(tmp_path / "src")
    header = versions.sync(Repository(store, tmp_path / "cache"), str(tmp_path / "src"),
                           "p", "n").header
    faulty = FaultyStore(store, parse_rules("get_range:packs/:error:1:2"))  # a third read
    repo = Repository(faulty, tmp_path / "fresh-cache")
    monkeypatch.setattr(streamcopy, "BLOCK_BYTES", 4096)  # many blocks, several writers
    with pytest.raises(StoreError):
        materialize.mutable_copy(repo, header, str(tmp_path / "new" / "copy"))
    assert not (tmp_path / "new").exists()
    # a read-only copy fails as cleanly
    repo = Repository(FaultyStore(store, parse_rules("get_range:packs/:error:1:2")),
                      tmp_path / "fresh-cache")
    with pytest.raises(StoreError):
        materialize.local_copy(repo, header)
    assert list(materialize.copies_dir(repo).iterdir()) == []
    assert repo.cache.index.tree_version(bytes.fromhex(header.id)) is None  # it streamed


def test_listed_directories_are_made_before_any_file(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Where ext4 puts a file's inode follows where its directory was made:
    made as the files come, the directories follow the allocation front into
    the inodes of a tree deleted just before, which ext4 without a journal
    scans past one by one for every new file (streamcopy's docstring).  So
    every directory the manifest lists exists before the first file is
    written, as through the tree index."""
    repo = Repository(open_store(str(tmp_path / "store")), tmp_path / "cache")
    _plain_tree(tmp_path / "src")
    for i in range(3):  # deeper ones too, and one with no file
        (tmp_path / "src" / "d0" / f"sub{i}" / "deeper").mkdir(parents=True)
    (tmp_path / "src" / "d0" / "sub1" / "deeper" / "f").write_bytes(b"x")
    header = versions.sync(repo, str(tmp_path / "src"), "p", "n").header
    dirs = sorted(os.path.relpath(d, tmp_path / "src")
                  for d, _subdirs, _files in os.walk(tmp_path / "src"))[1:]
    repo = Repository(open_store(str(tmp_path / "store")), tmp_path / "fresh-cache")
    monkeypatch.setattr(fsutil, "in_memory", lambda _path: False)  # a tmp_path on tmpfs
    monkeypatch.setattr(copywriter, "PARALLEL_MIN_FILES", 10**9)  # write in this process
    monkeypatch.setattr(streamcopy, "BLOCK_BYTES", 4096)  # many blocks
    seen: list[list[str]] = []
    write_files = copywriter.write_files

    def spy(settings: copywriter.Settings, files: list, *args: object) -> None:
        path = Path(os.fsdecode(files[0][0]))
        root = next(p for p in path.parents if p.name.startswith(".building-"))
        seen.append([d for d in dirs if not (root / d).is_dir()])
        write_files(settings, files, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(copywriter, "write_files", spy)
    copy = materialize.local_copy(repo, header)
    assert repo.cache.index.tree_version(bytes.fromhex(header.id)) is None  # it streamed
    assert len(seen) > 3
    assert seen == [[]] * len(seen), "a listed directory was made after a file"
    assert snapshot(copy).keys() == snapshot(tmp_path / "src").keys()


def test_in_memory_tells_a_tmpfs_from_other_file_systems(tmp_path: Path) -> None:
    """The pass above is skipped on tmpfs only: ``in_memory`` must know one."""
    mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
    kinds = {fields[1]: fields[2] for fields in mounts if len(fields) > 2}
    tmpfs = [point for point in ("/dev/shm", "/run", "/tmp") if kinds.get(point) == "tmpfs"]
    disk = [point for point in ("/", "/tmp", "/home")
            if kinds.get(point) in ("ext4", "ext3", "xfs", "btrfs")]
    if not tmpfs or not disk:
        pytest.skip("needs a tmpfs and a disk file system mounted")
    assert fsutil.in_memory(Path(tmpfs[0]))
    assert not fsutil.in_memory(Path(disk[0]))
    assert not fsutil.in_memory(Path("/proc"))
    assert not fsutil.in_memory(tmp_path / "missing")  # unknown: not in memory
