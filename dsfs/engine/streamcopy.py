"""Writing a version whose tree is one manifest straight from that manifest.

The tree of a first version, or of a snapshot, is its manifest: nothing to
resolve against parents.  ``get`` and ``get --copy`` of such a version need
no tree index (``dsfs.engine.treeindex``: about 5 µs an entry to build, a
second for 200,000 files, before the first file is written).  Here the
command only decompresses the manifest and hands blocks of whole JSON lines
to the writers (``dsfs.engine.copywriter``'s pool: forked processes for a
local store); each writer decodes its block (``rawentries.decode_lines``,
every field checked as the indexer checks it), makes the directories its
files need, and writes the files in batches of consecutive paths
(``copywriter.write_batch``: chunks read from pack ranges and verified
before anything is written).  Symlinks, and the modes and times of
directories, are set by the command at the end, as ``write_tree`` does.

The directories the manifest lists are made first, by the command, before
any file (``_make_listed_dirs``: one more pass over the decompressed
manifest, decoding only the lines of directories), as ``write_tree`` makes
a directory's subdirectories before its files.  Where a directory is made
decides where its files' inodes go.  On ext4, a directory made when its
first file comes lands at the allocation front; after a big tree was
deleted (a copy replaced, a cache pruned) that front runs through the
inodes just freed, and ext4 without a journal scans past every inode freed
in the last seconds (minutes while its inode-table block is unwritten) for
each new file.  Made that way, a read-only copy of 200,000 files right
after another was deleted took 39-58 s, mostly kernel time, against 5-7 s
through the tree index (20,000 files: 5-7 s against 1.3-2 s; the kernel
profile was ext4's ``recently_deleted``); with its directories made first
it is as fast as through the index.  Directories the manifest does not list
(implied by a path) are still made by the writers, and so are all of them
on a file system kept in memory (tmpfs), where placement costs nothing and
the pass would (a tenth of a second per 200,000 entries, before the first
file).

Only a manifest in the plain form that ``close`` writes is streamed: each
path once, no removals, nothing below a file or a symlink.  Anything else
(a path listed twice — the last one wins —, a removal, an entry below a
file, a kind this module does not know, an entry the checks refuse) raises
``NotStreamable``: the caller removes what was written and writes the
version from the tree index, which applies every rule of the format and
reports a corrupt manifest as such.  Such a manifest is always noticed:
writers create files with ``O_EXCL`` and directories with ``mkdir``, so
two entries for one path collide whichever writer comes first.

Writes never leave the target: every path is checked when decoded (no
``..``, no absolute path), every directory on the way is one made here (or
found to be a real directory: nothing here makes a symlink before the
writers are done), files are opened with ``O_EXCL | O_NOFOLLOW``, and a
symlink is made only where a directory made here holds it.
"""

from __future__ import annotations

import contextlib
import os
import stat
import struct
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from dsfs import fsutil
from dsfs.engine import copywriter
from dsfs.engine.copywriter import FileJob, Settings
from dsfs.engine.tree import IMPLIED_DIR_MODE
from dsfs.engine.treeindex import KIND_DIR, KIND_FILE, KIND_SYMLINK, MAX_NAME_BYTES
from dsfs.errors import IntegrityError
from dsfs.format import rawentries as raw
from dsfs.format.manifest import Header
from dsfs.report import Reporter
from dsfs.repository import Repository

__all__ = ["BLOCK_BYTES", "NotStreamable", "can_stream", "write_block", "write_version"]

#: Decompressed manifest bytes per block handed to a writer: ~300 small
#: files.  Measured on ext4 (20,000 files, interleaved): 64 KiB blocks wrote
#: the copy in 1.0-1.5 s, 1 MiB blocks in 2.6-5 s and one block (a single
#: writer) in 6.5 s, against 2.2-2.4 s from the tree index; on tmpfs 64 KiB
#: is as fast as 1 MiB.  (A block's end also ends a batch: a read more.)
BLOCK_BYTES = 64 * 1024
# the tree index's encoded entries (layouts with the tables in dsfs.cache.index)
_HEAD = struct.Struct("<BIqQ")  # kind, mode, mtime ns, size
_FILE = struct.Struct("<16sI")  # digest, chunk count
_CHUNK = struct.Struct("<16s16sQQ")  # chunk id, pack id, offset, length
_U32, _U64, _I64 = 1 << 32, 1 << 64, -(1 << 63)  # the ranges of I, Q and q
_chunk_id, _pack_id = raw.CHUNK_ID.match, raw.PACK_ID.match


class NotStreamable(Exception):
    """The manifest is not in the plain form streamed here (see the module
    docstring); the version is written from the tree index instead."""


def can_stream(repo: Repository, header: Header) -> bool:
    """Whether ``header``'s tree is its own manifest (a first version or a
    snapshot) and the cache holds no chunks to read instead of the store."""
    return (not header.parents or header.snapshot) and not repo.cache.index.has_any_chunk()


@dataclass
class BlockDone:
    """What a writer did with one block, for the command to finish."""

    files: int
    #: Directories it made (paths below the target).
    made: list[bytes]
    #: Directory entries: (path, mode, mtime ns), in manifest order.
    dirs: list[tuple[bytes, int, int]]
    #: Symlinks: (path, target, mtime ns), in manifest order.
    links: list[tuple[bytes, bytes, int]]


def write_version(repo: Repository, header: Header, root: Path, reporter: Reporter,
                  read_only: bool) -> int:
    """Write ``header``'s tree (its manifest, see ``can_stream``) below
    ``root``; return how many files were written.  Raises ``NotStreamable``
    (with what was written left for the caller to remove)."""
    root.mkdir(parents=True, exist_ok=True)
    prefix = os.fsencode(root) + b"/"
    settings = copywriter.new_settings(repo.store, read_only, str(repo.cache.chunk_dir))
    made: list[bytes] = []
    if not fsutil.in_memory(root):  # a tmpfs places nothing (~0.12 s per 200k entries)
        # before the pool: forked writers inherit the directories known to exist
        _make_listed_dirs(repo, header, settings, prefix, made)
    pool = copywriter.Pool(settings, int(header.stats.get("files", 0)))
    pending: deque[Future[BlockDone]] = deque()
    dir_attrs: dict[bytes, tuple[int, int]] = {}
    links: dict[bytes, tuple[bytes, int]] = {}
    count = 0
    try:
        with reporter.progress("writing files", 0) as progress:
            def finish_one() -> None:
                nonlocal count
                done = pending.popleft().result()
                made.extend(done.made)
                for path, mode, mtime in done.dirs:
                    dir_attrs[path] = (mode, mtime)
                for path, target, mtime in done.links:
                    links[path] = (target, mtime)  # listed twice: the last one wins
                count += done.files
                progress.advance(done.files)

            with repo.open_manifest(header.id) as source:
                for block in raw.iter_line_blocks(source, BLOCK_BYTES):
                    pending.append(pool.submit(write_block, prefix, block))
                    while len(pending) > pool.depth:
                        finish_one()
            while pending:
                finish_one()
    except BaseException:
        pool.stop()
        raise
    finally:
        pool.close()  # no writer writes after a failure is handled
    for path, (target, mtime) in links.items():
        try:
            os.symlink(target, prefix + path)
        except (FileExistsError, NotADirectoryError):
            raise NotStreamable(f"{path!r} is a symlink and has entries below it") from None
        with contextlib.suppress(OSError):
            os.utime(prefix + path, ns=(mtime, mtime), follow_symlinks=False)
    for path in sorted(made, reverse=True):  # a directory's children first
        mode, mtime = dir_attrs.get(path, (IMPLIED_DIR_MODE, 0))
        os.chmod(prefix + path, (mode & 0o7777) | 0o700)
        os.utime(prefix + path, ns=(mtime, mtime))
    return count


#: A directory line's kind as ``close`` writes it (``json.dumps`` with
#: compact separators; quotes in a name are escaped, so only the key matches).
#: A directory written otherwise is made by a writer, as an unlisted one is.
_DIR_KIND = b'"t":"d"'


def _make_listed_dirs(repo: Repository, header: Header, settings: Settings, prefix: bytes,
                      made: list[bytes]) -> None:
    """Make every directory the manifest lists, and those above it, in
    manifest order, before any file is written (see the module docstring);
    each is added to ``settings.dirs`` and ``made``."""
    with repo.open_manifest(header.id) as source:
        for block in raw.iter_line_blocks(source):
            lines = _dir_lines(block)
            if not lines:
                continue
            try:
                for e in raw.decode_lines(lines):
                    if e.t != "d":
                        continue
                    path = raw.quick_path(e).encode("utf-8", "surrogateescape")
                    if len(path.rpartition(b"/")[2]) > MAX_NAME_BYTES:
                        raise NotStreamable("a name is too long for the tree index")
                    _make_dirs(settings, prefix, path, made)
            except (IntegrityError, UnicodeEncodeError) as exc:
                raise NotStreamable(str(exc)) from None


def _dir_lines(block: bytes) -> bytes:
    """The lines of ``block`` (whole manifest lines) that hold a directory."""
    found = []
    find, rfind = block.find, block.rfind
    at = find(_DIR_KIND)
    while at >= 0:
        end = find(b"\n", at)
        if end < 0:
            end = len(block)
        found.append(block[rfind(b"\n", 0, at) + 1:end])
        at = find(_DIR_KIND, end)
    return b"\n".join(found)


# -- in the writers ------------------------------------------------------------------

def write_block(settings: Settings, prefix: bytes, block: bytes) -> BlockDone:
    """Decode a block of manifest lines and write its files below ``prefix``
    (the target, ending in ``/``); directories are made, symlinks returned."""
    done = BlockDone(0, [], [], [])
    if settings.stop.is_set():
        return done
    try:
        entries = raw.decode_lines(block)
    except IntegrityError as exc:
        raise NotStreamable(str(exc)) from None
    files: list[FileJob] = []
    size = 0
    last_parent = None
    batch_files, batch_bytes = copywriter.BATCH_FILES, copywriter.BATCH_BYTES
    quick_path, fromhex = raw.quick_path, bytes.fromhex
    try:
        for e in entries:
            path = quick_path(e).encode("utf-8", "surrogateescape")
            parent, _, name = path.rpartition(b"/")
            if len(name) > MAX_NAME_BYTES:
                raise NotStreamable("a name is too long for the tree index")
            if parent != last_parent:
                _make_dirs(settings, prefix, parent, done.made)
                last_parent = parent
            kind = e.t
            if kind == "f":
                # the common case (one chunk in a pack) checked inline, as
                # treeindex.index_version checks it; anything else in full
                c, h, mode, mtime, file_size = e.c, e.h, e.m, e.mt, e.s
                job: FileJob | None = None
                if (c is not None and len(c) == 1 and h is not None and mtime is not None
                        and e.u is None and 0 <= mode < _U32 and _I64 <= mtime < -_I64):
                    cid, pid, offset, length = c[0]
                    if (cid == h and length == file_size and 0 <= length < _U64
                            and 0 <= offset < _U64 and _chunk_id(h) and _pack_id(pid)):
                        job = (prefix + path, mode & 0o7777, mtime,
                               [(fromhex(h[9:]), fromhex(pid), offset, length)])
                if job is None:
                    encoded = _encoded_file(e)
                    if file_size > copywriter.BIG_FILE:  # a batch of its own, read in steps
                        done.files += _write(settings, files)
                        files, size = [], 0
                        copywriter.write_batch(settings, [(prefix + path, encoded)], frozenset())
                        done.files += 1
                        continue
                    assert mtime is not None  # _encoded_file checked it
                    job = (prefix + path, mode & 0o7777, mtime, copywriter.file_refs(encoded))
                if files and (len(files) >= batch_files or size + file_size > batch_bytes):
                    done.files += _write(settings, files)
                    files, size = [], 0
                    if settings.stop.is_set():
                        return done
                files.append(job)
                size += file_size
            elif kind == "d":
                raw.check_attrs(e)
                _HEAD.pack(KIND_DIR, e.m, e.mt, 0)  # in range, as the index needs
                _make_dirs(settings, prefix, path, done.made)
                done.dirs.append((path, e.m, e.mt))  # type: ignore[arg-type]
            elif kind == "l":
                raw.check_attrs(e)
                target = raw.symlink_target(e).encode("utf-8", "surrogateescape")
                _HEAD.pack(KIND_SYMLINK, e.m, e.mt, len(target))
                done.links.append((path, target, e.mt))  # type: ignore[arg-type]
            else:
                raise NotStreamable(f"the manifest has an entry of kind {kind!r}")
        done.files += _write(settings, files)
    except (IntegrityError, UnicodeEncodeError, struct.error) as exc:
        raise NotStreamable(str(exc)) from None
    except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
        # a path listed twice, or as a file and as a directory
        raise NotStreamable(f"{exc.filename!r}: {exc.strerror}") from None
    return done


def _write(settings: Settings, files: list[FileJob]) -> int:
    if files:
        copywriter.write_files(settings, files, frozenset(), [])
    return len(files)


def _make_dirs(settings: Settings, prefix: bytes, path: bytes, made: list[bytes]) -> None:
    """Make directory ``path`` (below ``prefix``) and those above it, unless
    known to exist; one found there must be a real directory."""
    known = settings.dirs
    if not path or path in known:
        return
    _make_dirs(settings, prefix, path.rpartition(b"/")[0], made)
    try:
        os.mkdir(prefix + path, 0o700)
        made.append(path)
    except FileExistsError:
        if not stat.S_ISDIR(os.lstat(prefix + path).st_mode):
            raise NotStreamable(f"{path!r} is a file and has entries below it") from None
    except NotADirectoryError:
        raise NotStreamable(f"{path!r} lies below a file") from None
    known.add(path)


def _encoded_file(e: raw.RawEntry) -> bytes:
    """A file entry in the tree index's encoded form (``treeindex``), checked
    as the indexer checks it."""
    raw.check_attrs(e)
    digest, chunks = raw.file_digests(e)
    return b"".join([_HEAD.pack(KIND_FILE, e.m, e.mt, e.s), _FILE.pack(digest, len(chunks)),
                     *(_CHUNK.pack(*ch) for ch in chunks), raw.external_trailer(e)])
