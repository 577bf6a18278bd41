"""Writing a version's tree to local disk: ``get`` and ``get --copy``.

A read-only copy lives in ``<cache>/copies/<version id>`` and is built under a
temporary name, then renamed, then marked complete, so a copy that exists is
whole.  Getting it again costs one ``stat`` (and touches the marker: its
mtime is the copy's last use, ``cache prune``'s LRU order).  Files that the
copy of the nearest ancestor (else the copy used last) holds at the same
path with the same encoded entry are hard-linked instead of written, a whole
directory at once when both versions share its resolved listing, so getting
a related version writes only what changed.

Files are written straight from their packs (``write_tree``): the tree is
walked from the cache's tree index a directory at a time, entries left
encoded, cut into batches of consecutive files that ``dsfs.engine.copywriter``
writes in worker processes (each batch's chunks read with a few ranged
reads: ``close`` packs files in path order, so a batch of small files is
about one read; every chunk verified before anything is written).  Chunks
the cache already holds are read from it.  Neither ``get --copy`` nor
``get`` makes chunk files: the read-only copy is itself the local form of
the version (counted in the cache's size and evicted by ``cache prune``), a
later ``get`` of a related version hard-links from it, and a mount fetches
the chunks it reads on demand, so a chunk file per small file would only
double the disk used and cost one more file creation per file.
``prefetch`` fills the chunk cache.

A version whose tree is one manifest (a first version, a snapshot) is
written straight from that manifest instead (``dsfs.engine.streamcopy``:
the writers decode it block by block, no tree index is built) when no
earlier copy could lend files, no share is asked for and the cache holds no
chunks; an odd manifest falls back to the path above.

Writes never leave the target: manifest paths are checked when decoded, every
entry's parent is a directory created here, files are opened with
``O_EXCL | O_NOFOLLOW``, and symlinks are created last.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import struct
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from dsfs.engine import copywriter, parts, streamcopy, treewalk
from dsfs.engine.copywriter import Job
from dsfs.engine.treedirs import LmdbTreeSource
from dsfs.engine.treeindex import KIND_DIR, KIND_FILE, KIND_SYMLINK
from dsfs.errors import DiskFullError, DsfsError, InputError, local_os_error
from dsfs.format.digest import bytes_to_id
from dsfs.format.manifest import Entry, Header
from dsfs.report import Progress, Reporter
from dsfs.repository import Repository

_HEAD = struct.Struct("<BIqQ")  # kind, mode, mtime ns, size (treeindex's entry head)
_HEAD_SIZE = _HEAD.size


def copies_dir(repo: Repository) -> Path:
    return repo.cache_root / "copies"


def part_bounds(source: LmdbTreeSource, part: tuple[int, int] | None
                ) -> Callable[[bytes], bool] | None:
    """Which files and symlinks (by path) a copy of share ``part=(K, N)``
    holds (``dsfs.engine.parts``); None: all.  A share is a contiguous run of
    paths in path order, so it is kept as its first and last path (two
    streamed passes over the files, nothing held)."""
    if part is None:
        return None
    first = last = None
    for entry in parts.select(lambda: treewalk.iter_files(source), _weight, *part):
        if first is None:
            first = entry.path
        last = entry.path
    if first is None or last is None:
        return lambda _path: False

    def within(path: bytes) -> bool:
        return first <= path.decode("utf-8", "surrogateescape") <= last

    return within


def _weight(entry: Entry) -> int:
    return entry.size


def local_copy(repo: Repository, header: Header, reporter: Reporter | None = None,
               part: tuple[int, int] | None = None) -> Path:
    """Path of a complete read-only copy of the version (or of one part of
    it: ``part=(K, N)``, kept as ``<id>.part-K-of-N``), built if needed."""
    reporter = reporter or Reporter()
    root = copies_dir(repo)
    name = header.id if part is None else f"{header.id}.part-{part[0]}-of-{part[1]}"
    final = root / name
    marker = root / f"{name}.complete"
    if marker.exists() and final.is_dir():
        with contextlib.suppress(OSError):
            os.utime(marker)  # its last use, for `cache prune`'s LRU order
        return final
    root.mkdir(parents=True, exist_ok=True)
    building = root / f".building-{name}-{secrets.token_hex(4)}"
    try:
        try:
            count = _write_version(repo, header, building, reporter, read_only=True,
                                   part=part, reuse=True)
        except OSError as exc:
            raise local_os_error(exc, root, "the cache") from None
        if final.exists():
            remove_copy(final)  # a stale, unmarked leftover of an interrupted get
        os.rename(building, final)
    except BaseException:
        remove_copy(building)
        raise
    marker.write_text(json.dumps({"id": header.id, "files": count}))
    return final


def link_to(copy: Path, link: str) -> None:
    """Make ``link`` a symlink to ``copy`` (``get --link``): a new path, or an
    existing symlink, replaced atomically; anything else is refused."""
    path = Path(link).absolute()
    if path.exists() and not path.is_symlink():
        raise InputError(f"{path} exists and is not a symlink: give a new path for --link")
    temporary = path.with_name(f".{path.name}.dsfs-{secrets.token_hex(4)}")
    try:
        os.symlink(copy, temporary)
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise _target_error(exc, path) from None


def complete_copies(root: Path) -> dict[str, float]:
    """Name (a version id, or ``<id>.part-K-of-N``) -> last use (its
    marker's mtime, touched by every ``get`` of it) of every complete copy
    in the copies directory ``root``."""
    found: dict[str, float] = {}
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(root):
            if entry.name.endswith(".complete"):
                vid = entry.name[:-len(".complete")]
                with contextlib.suppress(OSError):
                    if os.path.isdir(root / vid):
                        found[vid] = entry.stat().st_mtime
    return found


def _write_version(repo: Repository, header: Header, root: Path, reporter: Reporter,
                   read_only: bool, part: tuple[int, int] | None, reuse: bool) -> int:
    """Write the version's tree (or share ``part`` of it) below ``root``; with
    ``reuse``, hard-link what an earlier read-only copy holds.  Straight from
    the manifest when the tree is one manifest and nothing can be reused
    (``dsfs.engine.streamcopy``), else from the tree index (``write_tree``)."""
    earlier = _other_copies(repo, header.id) if reuse else {}
    if part is None and not earlier and streamcopy.can_stream(repo, header):
        try:
            return streamcopy.write_version(repo, header, root, reporter, read_only)
        except streamcopy.NotStreamable:
            if _remove_contents(root):
                raise DsfsError(f"could not remove a partial copy in {root}") from None
    source = treewalk.open_tree(repo, header)
    return write_tree(repo, source, root, reporter, read_only,
                      reuse=_earlier_copy(repo, source, earlier) if earlier else None,
                      keep=part_bounds(source, part))


def _other_copies(repo: Repository, vid: str) -> dict[str, float]:
    """Whole complete copies of versions other than ``vid``: version id -> last use."""
    return {other: used for other, used in complete_copies(copies_dir(repo)).items()
            if len(other) == 32 and other != vid}


def _earlier_copy(repo: Repository, source: LmdbTreeSource, copies: dict[str, float]
                  ) -> tuple[LmdbTreeSource, bytes] | None:
    """A complete copy (of ``copies``) to hard-link unchanged files from: the
    nearest ancestor of the version that has one, else the copy used last;
    (its tree, its path prefix), or None."""
    if not copies:
        return None
    chosen = None
    queue, seen = deque([source.vid]), {source.vid}
    while queue and chosen is None:
        info = source.graph.get(queue.popleft())
        for parent in info.parents if info is not None else ():
            if parent.hex() in copies:
                chosen = parent.hex()
                break
            if parent not in seen:
                seen.add(parent)
                queue.append(parent)
    if chosen is None:
        chosen = max(copies, key=lambda vid: copies[vid])
    try:
        other = treewalk.open_tree(repo, repo.header(chosen))
    except DsfsError:
        return None  # its version is gone from the store: write every file
    return other, os.fsencode(copies_dir(repo) / chosen) + b"/"


def mutable_copy(repo: Repository, header: Header, target: str,
                 reporter: Reporter | None = None, part: tuple[int, int] | None = None,
                 overwrite: bool = False) -> Path:
    """Write the version into ``target`` (new or empty), with writable files.

    All or nothing: if the copy fails (a pack missing from the store, a full
    disk, Ctrl-C), everything written so far is removed again, so the target
    is as it was (absent, or empty) and the same command can simply be run
    again.  ``overwrite`` first empties an existing target folder (ClearML's
    ``overwrite``): its old contents are gone even if the copy then fails."""
    reporter = reporter or Reporter()
    if not target:
        raise InputError("an empty path was given for the copy: name a new or empty folder")
    path = Path(target).absolute()
    if path.exists():
        if not path.is_dir():
            raise InputError(f"{path} exists and is not a directory")
        if overwrite:
            _empty_folder(path)
        elif any(path.iterdir()):
            raise InputError(f"{path} is not empty: give a new or empty directory "
                             "(or overwrite it)")
    created = _first_missing(path)
    try:
        _write_version(repo, header, path, reporter, read_only=False, part=part, reuse=False)
    except OSError as exc:
        _undo_copy(path, created, reporter)
        raise _target_error(exc, path) from None
    except BaseException:
        _undo_copy(path, created, reporter)
        raise
    return path


def _empty_folder(path: Path) -> None:
    try:
        for child in list(path.iterdir()):
            if child.is_dir() and not child.is_symlink():
                remove_copy(child)
            else:
                child.unlink()
    except OSError as exc:
        raise _target_error(exc, path) from None
    if any(path.iterdir()):
        raise InputError(f"could not empty {path} to overwrite it")


def _target_error(exc: OSError, target: Path) -> DsfsError:
    """What an OSError while writing the user's target folder means: a full
    disk (exit 11), else a target that cannot be written (exit 10), naming
    the path rather than reporting an internal error."""
    where = exc.filename if exc.filename is not None else target
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(where, "get --copy target")
    return InputError(f"cannot write {where}: {exc.strerror or type(exc).__name__}")


def _first_missing(path: Path) -> Path | None:
    """The topmost directory of ``path`` that does not exist yet (None if it does):
    what a failed copy must remove to leave no trace."""
    missing = None
    for candidate in (path, *path.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing


def _undo_copy(path: Path, created: Path | None, reporter: Reporter) -> None:
    """Remove what a failed ``mutable_copy`` wrote: the directories it created,
    or the contents of the empty directory it was given."""
    if created is not None:
        remove_copy(created)
        leftover = created.exists()
    else:
        leftover = _remove_contents(path)
    if leftover:
        reporter.warn(f"could not remove the partial copy in {path}: delete it before "
                      "running the command again")


def _remove_contents(path: Path) -> bool:
    """Empty directory ``path`` (kept itself); True if something stayed."""
    for child in list(path.iterdir()) if path.is_dir() else []:
        if child.is_dir() and not child.is_symlink():
            remove_copy(child)
        else:
            with contextlib.suppress(OSError):
                child.unlink()
    return path.is_dir() and any(path.iterdir())


def remove_copy(path: Path) -> None:
    """Delete a copy even where its directories were made read-only."""
    if not path.exists():
        return
    for dirpath, _dirs, _files in os.walk(path):
        with contextlib.suppress(OSError):
            os.chmod(dirpath, 0o700)
    shutil.rmtree(path, ignore_errors=True)


def write_tree(repo: Repository, source: LmdbTreeSource, root: Path, reporter: Reporter,
               read_only: bool, reuse: tuple[LmdbTreeSource, bytes] | None = None,
               keep: Callable[[bytes], bool] | None = None) -> int:
    """Create every entry of a version's tree below ``root``; return how many
    files were written or linked.

    Streams: the tree is walked a directory at a time from the index without
    decoding entries (``treewalk.iter_listings``), directories are made as
    they come, files go to the writers (``dsfs.engine.copywriter``) in
    batches of consecutive files, symlinks and directory modes are set at the
    end (the process keeps only the directories and symlinks).

    ``reuse`` is an earlier read-only copy (its version's tree and path): a
    file whose encoded entry (content, mode, mtime) equals the one at the same
    path there is hard-linked from it.  A directory whose resolved listing
    both versions share (the same ``tree_dirs`` record) is linked whole,
    without comparing its entries; any other directory is compared name by
    name."""
    root.mkdir(parents=True, exist_ok=True)
    prefix = os.fsencode(root) + b"/"
    index = repo.cache.index
    settings = copywriter.new_settings(repo.store, read_only, str(repo.cache.chunk_dir))
    pool = copywriter.Pool(settings, source.totals()[0])
    # a cache without chunks (the common case for a get) needs no look-ups
    use_cache = index.has_any_chunk()
    dirs: list[Job] = []
    links: list[Job] = []
    linked = 0
    pending: deque[tuple[Future[list[bytes]], int]] = deque()
    count = 0

    def finish_one(progress: Progress) -> None:
        nonlocal count
        future, files = pending.popleft()
        bad = future.result()
        if bad:
            reporter.warn(f"{len(bad)} cached chunk(s) were corrupt; they were read from "
                          "the store and removed from the cache")
            repo.cache.discard(bytes_to_id(c) for c in bad)
        progress.advance(files)
        count += files

    def submit(batch: list[Job]) -> None:
        cached: frozenset[bytes] = frozenset()
        if use_cache:
            cached = frozenset(index.cached_chunks(
                {cid for _path, encoded in batch for cid in copywriter.chunk_ids(encoded)}))
        pending.append((pool.submit(copywriter.write_batch, batch, cached), len(batch)))

    try:
        with reporter.progress("writing files", 0) as progress:
            batch: list[Job] = []
            size = 0
            for dir_path, listing in treewalk.iter_listings(source):
                dir_prefix = prefix + dir_path + b"/" if dir_path else prefix
                earlier = _earlier_listing(source, reuse, dir_path)
                for name, encoded in listing:
                    kind = encoded[0]
                    if keep is not None and kind != KIND_DIR and not keep(
                            dir_path + b"/" + name if dir_path else name):
                        continue
                    path = dir_prefix + name
                    if kind == KIND_FILE:
                        if earlier is not None and _link(earlier, name, encoded, path):
                            linked += 1
                            continue
                        file_size = copywriter.file_size(encoded)
                        if batch and (len(batch) >= copywriter.BATCH_FILES
                                      or size + file_size > copywriter.BATCH_BYTES):
                            submit(batch)
                            batch, size = [], 0
                            while len(pending) > pool.depth:
                                finish_one(progress)
                        batch.append((path, encoded))
                        size += file_size
                    elif kind == KIND_DIR:
                        os.mkdir(path, 0o700)
                        dirs.append((path, encoded))
                    elif kind == KIND_SYMLINK:
                        links.append((path, encoded))
            if batch:
                submit(batch)
            while pending:
                finish_one(progress)
    except BaseException:
        pool.stop()
        raise
    finally:
        pool.close()  # no worker writes after a failure is handled
    for path, encoded in links:
        os.symlink(encoded[_HEAD_SIZE:], path)
        _kind, _mode, mtime = _head(encoded)
        with contextlib.suppress(OSError):
            os.utime(path, ns=(mtime, mtime), follow_symlinks=False)
    for path, encoded in reversed(dirs):
        _kind, mode, mtime = _head(encoded)
        os.chmod(path, (mode & 0o7777) | 0o700)
        os.utime(path, ns=(mtime, mtime))
    return count + linked


def _head(encoded: bytes) -> tuple[int, int, int]:
    kind, mode, mtime, _size = _HEAD.unpack_from(encoded)
    return kind, mode, mtime


#: An earlier copy's view of one directory: (its path prefix there, its
#: entries by name, or None when the whole listing is the same).
_Earlier = tuple[bytes, dict[bytes, bytes] | None]


def _earlier_listing(source: LmdbTreeSource, reuse: tuple[LmdbTreeSource, bytes] | None,
                     dir_path: bytes) -> _Earlier | None:
    if reuse is None:
        return None
    other, other_prefix = reuse
    path = dir_path.decode("utf-8", "surrogateescape")
    theirs = other.dir_record(path)
    if theirs is None:
        return None
    where = other_prefix + dir_path + b"/" if dir_path else other_prefix
    ours = source.dir_record(path)
    if ours is not None and (ours.form, ours.owner) == (theirs.form, theirs.owner):
        return where, None
    return where, dict(other.raw_children(path))


def _link(earlier: _Earlier, name: bytes, encoded: bytes, path: bytes) -> bool:
    where, entries = earlier
    if entries is not None and entries.get(name) != encoded:
        return False
    try:
        os.link(where + name, path, follow_symlinks=False)
        return True
    except OSError:
        return False  # the earlier copy lost it: write the file
