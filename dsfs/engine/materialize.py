"""Writing a version's tree to local disk: ``get`` and ``get --copy``.

A read-only copy lives in ``<cache>/copies/<version id>`` and is built under a
temporary name, then renamed, then marked complete, so a copy that exists is
whole.  Getting it again costs one ``stat``.  Files that an earlier copy
already holds with the same digest, mode and mtime are hard-linked instead of
written, so getting a related version writes only what changed.

Files are written straight from their packs (``write_tree``): the tree is
streamed from the cache's tree index in path order, cut into batches of
consecutive files, and a few threads each read a batch's chunks with a few
ranged reads (``dsfs.engine.packranges``: ``close`` packs files in path
order, so a batch of small files is about one read), verify every chunk
against its digest, and write the files.  Chunks the cache already holds
are read from it.  Neither ``get --copy`` nor ``get`` makes chunk files:
the read-only copy is itself the local form of the version (counted in the
cache's size and evictable), a later ``get`` of a related version
hard-links from it, and a mount fetches the chunks it reads on demand, so
a chunk file per small file would only double the disk used and cost one
more file creation per file.  ``prefetch`` fills the chunk cache.

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
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from dsfs.engine import parts, treewalk
from dsfs.engine.packranges import plan_ranges, read_ranges
from dsfs.errors import DiskFullError, DsfsError, InputError, IntegrityError, local_os_error
from dsfs.format.digest import CHUNK_SIZE, id_to_bytes
from dsfs.format.manifest import DIR, FILE, SYMLINK, ChunkRef, Entry, Header
from dsfs.report import Progress, Reporter
from dsfs.repository import Repository

_WRITE_BITS = 0o222
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: Files are written in batches of consecutive paths: at most this many files...
BATCH_FILES = 1024
#: ... and this many bytes (a bigger file is a batch of its own, read in steps).
BATCH_BYTES = 16 * 1024 * 1024
#: Threads writing batches (file creation is mostly system calls, which run
#: outside the GIL).
WRITERS = 4


def copies_dir(repo: Repository) -> Path:
    return repo.cache_root / "copies"


def part_entries(repo: Repository, header: Header,
                 part: tuple[int, int] | None = None) -> Iterator[Entry]:
    """The version's entries in path order; with ``part=(K, N)`` only the
    files and symlinks of share K of N (``dsfs.engine.parts``) and every
    directory."""
    source = treewalk.open_tree(repo, header)
    if part is None:
        return treewalk.iter_entries(source)
    chosen = parts.select(lambda: treewalk.iter_files(source), _weight, *part)
    return _merge_dirs(treewalk.iter_entries(source), chosen)


def _weight(entry: Entry) -> int:
    return entry.size


def _merge_dirs(entries: Iterator[Entry], chosen: Iterator[Entry]) -> Iterator[Entry]:
    wanted = next(chosen, None)
    for entry in entries:
        if entry.kind == DIR:
            yield entry
        elif wanted is not None and entry.path == wanted.path:
            yield entry
            wanted = next(chosen, None)


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
        return final
    root.mkdir(parents=True, exist_ok=True)
    entries = part_entries(repo, header, part)
    building = root / f".building-{name}-{secrets.token_hex(4)}"

    def record(files: list[Entry]) -> None:
        # recorded under the final name as batches finish (bounded memory); a
        # record whose copy never appears is harmless: linking from it fails
        # and the file is written instead
        prefix = f"{final}/"
        repo.cache.index.add_copies(
            (id_to_bytes(e.digest or ""), e.mode, e.mtime_ns, prefix + e.path)
            for e in files)

    try:
        try:
            count = write_tree(repo, entries, building, reporter, read_only=True, reuse=True,
                               on_written=record)
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
    entries = part_entries(repo, header, part)
    created = _first_missing(path)
    try:
        write_tree(repo, entries, path, reporter, read_only=False, reuse=False)
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
        for child in list(path.iterdir()) if path.is_dir() else []:
            if child.is_dir() and not child.is_symlink():
                remove_copy(child)
            else:
                with contextlib.suppress(OSError):
                    child.unlink()
        leftover = path.is_dir() and any(path.iterdir())
    if leftover:
        reporter.warn(f"could not remove the partial copy in {path}: delete it before "
                      "running the command again")


def remove_copy(path: Path) -> None:
    """Delete a copy even where its directories were made read-only."""
    if not path.exists():
        return
    for dirpath, _dirs, _files in os.walk(path):
        with contextlib.suppress(OSError):
            os.chmod(dirpath, 0o700)
    shutil.rmtree(path, ignore_errors=True)


def write_tree(repo: Repository, entries: Iterable[Entry], root: Path, reporter: Reporter,
               read_only: bool, reuse: bool,
               on_written: Callable[[list[Entry]], None] | None = None) -> int:
    """Create every entry of a tree (given in path order) below ``root``;
    return how many files were written or linked.

    Streams: directories are made as they come, files are written in
    batches of consecutive paths by a few threads, each batch's chunks read
    with a few ranged reads of their packs (straight into the files: no
    chunk files are made), symlinks and directory modes are set at the end
    (the process keeps only the directories and symlinks).  Chunks the cache
    already holds are read from it instead of the store."""
    root.mkdir(parents=True, exist_ok=True)
    writer = _Writer(repo, str(root), read_only, reporter)
    dirs: list[Entry] = []
    links: list[Entry] = []
    prefix = f"{root}/"
    reuse = reuse and _has_copies(repo)

    def files() -> Iterator[Entry]:
        for entry in entries:
            if entry.kind == FILE:
                if reuse and _link_earlier_copy(repo, prefix, entry):
                    writer.linked.append(entry)
                    continue
                yield entry
            elif entry.kind == DIR:
                os.mkdir(prefix + entry.path, 0o700)
                dirs.append(entry)
            elif entry.kind == SYMLINK:
                links.append(entry)

    count = writer.write_all(files(), on_written)
    for entry in links:
        dst = root / entry.path
        os.symlink(entry.target or "", dst)
        with contextlib.suppress(OSError):
            os.utime(dst, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)
    for entry in reversed(dirs):
        dst = root / entry.path
        os.chmod(dst, (entry.mode & 0o7777) | 0o700)
        os.utime(dst, ns=(entry.mtime_ns, entry.mtime_ns))
    return count


def _has_copies(repo: Repository) -> bool:
    """Whether the cache records any finished copy (else no look-up per file)."""
    index = repo.cache.index
    with index.env.begin() as txn:
        return bool(txn.stat(index._copies)["entries"])


def _link_earlier_copy(repo: Repository, prefix: str, entry: Entry) -> bool:
    source = repo.cache.index.copy_of(id_to_bytes(entry.digest or ""), entry.mode,
                                      entry.mtime_ns)
    if source is None:
        return False
    try:
        os.link(source, prefix + entry.path, follow_symlinks=False)
        return True
    except OSError:
        return False  # the older copy is gone: write the file


def _batches(files: Iterable[Entry]) -> Iterator[list[Entry]]:
    """Consecutive files, cut at BATCH_FILES files or BATCH_BYTES bytes."""
    batch: list[Entry] = []
    size = 0
    for entry in files:
        if batch and (len(batch) >= BATCH_FILES or size + entry.size > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += entry.size
    if batch:
        yield batch


class _Writer:
    """Writes batches of files from pack ranges with a few threads."""

    def __init__(self, repo: Repository, root: str, read_only: bool,
                 reporter: Reporter) -> None:
        self.repo, self.root, self.read_only, self.reporter = repo, root, read_only, reporter
        self.stop = threading.Event()
        self.linked: list[Entry] = []
        umask = os.umask(0o022)
        os.umask(umask)
        self.umask = umask
        # a cache without chunks (the common case for a get) needs no look-ups
        self.use_cache = next(iter(repo.cache.index.iter_chunks()), None) is not None

    def write_all(self, files: Iterable[Entry],
                  on_written: Callable[[list[Entry]], None] | None) -> int:
        count = 0
        pending: deque[tuple[Future[None], list[Entry]]] = deque()

        def finish_one(progress: Progress) -> None:
            nonlocal count
            future, batch = pending.popleft()
            future.result()
            progress.advance(len(batch))
            done = self.linked + batch
            self.linked = []
            count += len(done)
            if on_written is not None:
                on_written(done)

        pool = ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="dsfs-get")
        try:
            with self.reporter.progress("writing files", 0) as progress:
                for batch in _batches(files):
                    pending.append((pool.submit(self._batch, batch), batch))
                    while len(pending) > 2 * WRITERS:
                        finish_one(progress)
                while pending:
                    finish_one(progress)
            if self.linked and on_written is not None:
                count += len(self.linked)
                on_written(self.linked)
        except BaseException:
            self.stop.set()
            for future, _batch in pending:
                future.cancel()
            raise
        finally:
            pool.shutdown(wait=True)  # no thread writes after a failure is handled
        return count

    def _chunks(self, refs: list[ChunkRef]) -> dict[str, memoryview]:
        out: dict[str, memoryview] = {}
        wanted = refs
        if self.use_cache:
            wanted = []
            cache = self.repo.cache
            for ref in refs:
                if ref.chunk_id in out:
                    continue
                if cache.index.chunk_size(id_to_bytes(ref.chunk_id)) is not None:
                    try:
                        out[ref.chunk_id] = memoryview(cache.read(ref.chunk_id))
                        continue
                    except (IntegrityError, FileNotFoundError) as exc:
                        self.reporter.warn(f"{exc}; fetching it again")
                wanted.append(ref)
        if wanted:
            read_ranges(self.repo.store, plan_ranges(wanted), out)
        return out

    def _batch(self, batch: list[Entry]) -> None:
        if self.stop.is_set():
            return
        if len(batch) == 1 and batch[0].size > BATCH_BYTES:
            self._big_file(batch[0])
            return
        chunks = self._chunks([ref for entry in batch for ref in entry.chunks])
        for entry in batch:
            if self.stop.is_set():
                return
            _write_file(self, self.root + "/" + entry.path, entry,
                        [chunks[ref.chunk_id] for ref in entry.chunks])

    def _big_file(self, entry: Entry) -> None:
        """A file larger than a batch: its chunks are read a few at a time."""
        fd = self._open(self.root + "/" + entry.path, entry)
        try:
            step = max(1, BATCH_BYTES // CHUNK_SIZE)
            for i in range(0, len(entry.chunks), step):
                if self.stop.is_set():
                    return
                refs = list(entry.chunks[i:i + step])
                chunks = self._chunks(refs)
                for ref in refs:
                    _write_all(fd, chunks[ref.chunk_id])
            self._finish(fd, entry)
        finally:
            os.close(fd)

    def _open(self, path: str, entry: Entry) -> int:
        return os.open(path, _OPEN_FLAGS, self._mode(entry))

    def _mode(self, entry: Entry) -> int:
        mode = entry.mode & 0o7777
        return mode & ~_WRITE_BITS if self.read_only else mode

    def _finish(self, fd: int, entry: Entry) -> None:
        mode = self._mode(entry)
        if mode & self.umask or mode & 0o7000:
            os.fchmod(fd, mode)  # the umask took bits the file must have
        os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data):]


def _write_file(writer: _Writer, dst: str, entry: Entry, chunks: list[memoryview]) -> None:
    """One file from its chunks' verified bytes (``O_EXCL | O_NOFOLLOW``)."""
    fd = writer._open(dst, entry)
    try:
        for data in chunks:
            _write_all(fd, data)
        writer._finish(fd, entry)
    finally:
        os.close(fd)
