"""Writing a version's tree to local disk: ``get`` and ``get --copy``.

A read-only copy lives in ``<cache>/copies/<version id>`` and is built under a
temporary name, then renamed, then marked complete, so a copy that exists is
whole.  Getting it again costs one ``stat``.  Files that an earlier copy
already holds with the same digest, mode and mtime are hard-linked instead of
written, so getting a related version writes only what changed.  Chunks come
from the shared cache, which fetches what it lacks from the store.

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
from pathlib import Path

from dsfs.engine.tree import Tree, TreeResolver
from dsfs.errors import DiskFullError, DsfsError, InputError, IntegrityError
from dsfs.format.digest import id_to_bytes
from dsfs.format.manifest import DIR, FILE, SYMLINK, ChunkRef, Entry, Header
from dsfs.report import Reporter
from dsfs.repository import Repository

_WRITE_BITS = 0o222


def copies_dir(repo: Repository) -> Path:
    return repo.cache_root / "copies"


def local_copy(repo: Repository, header: Header, reporter: Reporter | None = None) -> Path:
    """Path of a complete read-only copy of the version, built if needed."""
    reporter = reporter or Reporter()
    root = copies_dir(repo)
    final = root / header.id
    marker = root / f"{header.id}.complete"
    if marker.exists() and final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tree = TreeResolver(repo).tree(header.id)
    building = root / f".building-{header.id}-{secrets.token_hex(4)}"
    try:
        written = write_tree(repo, tree, building, reporter, read_only=True, reuse=True)
        if final.exists():
            remove_copy(final)  # a stale, unmarked leftover of an interrupted get
        os.rename(building, final)
    except BaseException:
        remove_copy(building)
        raise
    marker.write_text(json.dumps({"id": header.id, "files": len(written)}))
    repo.cache.index.add_copies(
        (id_to_bytes(e.digest or ""), e.mode, e.mtime_ns, str(final / e.path))
        for e in written
    )
    return final


def mutable_copy(repo: Repository, header: Header, target: str,
                 reporter: Reporter | None = None) -> Path:
    """Write the version into ``target`` (new or empty), with writable files.

    All or nothing: if the copy fails (a pack missing from the store, a full
    disk, Ctrl-C), everything written so far is removed again, so the target
    is as it was (absent, or empty) and the same command can simply be run
    again."""
    reporter = reporter or Reporter()
    if not target:
        raise InputError("an empty path was given for the copy: name a new or empty folder")
    path = Path(target).absolute()
    if path.exists():
        if not path.is_dir():
            raise InputError(f"{path} exists and is not a directory")
        if any(path.iterdir()):
            raise InputError(f"{path} is not empty: give a new or empty directory")
    tree = TreeResolver(repo).tree(header.id)
    created = _first_missing(path)
    try:
        write_tree(repo, tree, path, reporter, read_only=False, reuse=False)
    except OSError as exc:
        _undo_copy(path, created, reporter)
        raise _target_error(exc, path) from None
    except BaseException:
        _undo_copy(path, created, reporter)
        raise
    return path


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


def write_tree(repo: Repository, tree: Tree, root: Path, reporter: Reporter,
               read_only: bool, reuse: bool) -> list[Entry]:
    """Create every entry of ``tree`` below ``root``; return the files written."""
    root.mkdir(parents=True, exist_ok=True)
    ordered = sorted(tree.values(), key=lambda e: e.path)
    dirs = [e for e in ordered if e.kind == DIR]
    files = [e for e in ordered if e.kind == FILE]
    links = [e for e in ordered if e.kind == SYMLINK]
    for entry in dirs:
        os.mkdir(root / entry.path, 0o700)

    to_write: list[Entry] = []
    for entry in files:
        source = repo.cache.index.copy_of(id_to_bytes(entry.digest or ""), entry.mode,
                                          entry.mtime_ns) if reuse else None
        if source is not None:
            try:
                os.link(source, root / entry.path, follow_symlinks=False)
                continue
            except OSError:
                pass  # the older copy is gone: write the file
        to_write.append(entry)

    refs = [ref for entry in to_write for ref in entry.chunks]
    missing = repo.cache.missing(r.chunk_id for r in refs)
    if missing:
        missing_set = set(missing)
        wanted = {r.chunk_id: r for r in refs if r.chunk_id in missing_set}
        total = sum(r.length for r in wanted.values())
        with reporter.progress("downloading", total, unit="B") as progress:
            repo.cache.fetch(repo.store, wanted.values(), progress.advance)

    with reporter.progress("writing files", len(to_write)) as progress:
        for entry in to_write:
            _write_file(repo, root / entry.path, entry, read_only, reporter)
            progress.advance(1)
    repo.cache.index.touch_chunks(id_to_bytes(r.chunk_id) for r in refs)

    for entry in links:
        dst = root / entry.path
        os.symlink(entry.target or "", dst)
        with contextlib.suppress(OSError):
            os.utime(dst, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)
    for entry in reversed(dirs):
        dst = root / entry.path
        os.chmod(dst, (entry.mode & 0o7777) | 0o700)
        os.utime(dst, ns=(entry.mtime_ns, entry.mtime_ns))
    return files


def _chunk(repo: Repository, ref: ChunkRef, reporter: Reporter) -> bytes:
    """A chunk's verified bytes; a corrupt cached copy is replaced from the store."""
    try:
        return repo.cache.read(ref.chunk_id)
    except (IntegrityError, FileNotFoundError) as exc:
        reporter.warn(f"{exc}; fetching it again")
        repo.cache.fetch(repo.store, [ref])
        return repo.cache.read(ref.chunk_id)


def _write_file(repo: Repository, dst: Path, entry: Entry, read_only: bool,
                reporter: Reporter) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    fd = os.open(dst, flags, 0o600)
    try:
        for ref in entry.chunks:
            data = memoryview(_chunk(repo, ref, reporter))
            while data:
                data = data[os.write(fd, data):]
        mode = entry.mode & 0o7777
        os.fchmod(fd, mode & ~_WRITE_BITS if read_only else mode)
    finally:
        os.close(fd)
    os.utime(dst, ns=(entry.mtime_ns, entry.mtime_ns))
