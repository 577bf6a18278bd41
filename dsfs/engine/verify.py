"""Checking data against digests: a version's stored chunks, or a local
folder against a version.  Every mismatch is reported; nothing stops at the
first one."""

from __future__ import annotations

import os
import stat
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dsfs.engine import dirtree, treewalk
from dsfs.engine.dirtree import counts_as_file
from dsfs.engine.scan import stat_listing
from dsfs.engine.treeindex import Decoder
from dsfs.errors import DsfsError
from dsfs.format.digest import CHUNK_SIZE, chunk_id, file_hasher
from dsfs.format.manifest import FILE, SYMLINK, ChunkRef, Entry, Header
from dsfs.report import Reporter
from dsfs.repository import Repository
from dsfs.store import external

VERIFY_THREADS = 8


#: Chunk references checked per round: the memory a round holds is about this
#: many references and the paths of their files.
WINDOW_CHUNKS = 20_000


def verify_store(repo: Repository, header: Header, reporter: Reporter | None = None
                 ) -> list[str]:
    """Re-read and re-hash every chunk the version references, from the store.

    Streams the tree (``treewalk.iter_files``) and checks its chunks a window
    of ``WINDOW_CHUNKS`` references at a time, grouped by pack, in threads: a
    chunk shared by several files of one window is read once (one shared by
    files of two windows, twice)."""
    reporter = reporter or Reporter()
    source = treewalk.open_tree(repo, header)
    problems: list[str] = []

    def check_pack(item: tuple[str, dict[str, ChunkRef]],
                   users: dict[str, list[str]]) -> list[str]:
        pack_id, refs = item
        found = []
        for ref in sorted(refs.values(), key=lambda r: r.offset):
            try:
                data = external.read_pack_range(repo.store, pack_id, ref.offset, ref.length)
            except DsfsError as exc:
                found.append(f"{users[ref.chunk_id][0]}: chunk {ref.chunk_id} unreadable: {exc}")
                continue
            if chunk_id(data) != ref.chunk_id:
                for path in users[ref.chunk_id]:
                    found.append(f"{path}: {external.corrupt_chunk(ref.chunk_id, pack_id)}")
        return found

    total = int(header.stats.get("files", 0))
    with reporter.progress("verifying files", total) as progress, \
            ThreadPoolExecutor(max_workers=VERIFY_THREADS) as pool:
        users: dict[str, list[str]] = defaultdict(list)
        by_pack: dict[str, dict[str, ChunkRef]] = defaultdict(dict)
        refs = files = 0

        outside: list[Entry] = []

        def check_window() -> None:
            for found in pool.map(lambda item: check_pack(item, users), by_pack.items()):
                problems.extend(found)
            problems.extend(p for p in pool.map(_check_external, outside) if p)
            outside.clear()
            progress.advance(files)

        for entry in treewalk.iter_files(source):
            files += 1
            if entry.kind != FILE:
                continue
            if entry.url is not None:
                outside.append(entry)
                refs += 1
                if entry.etag:  # the ETag vouches for the bytes: no need to read them
                    continue
            for ref in entry.chunks:
                users[ref.chunk_id].append(entry.path)
                by_pack[ref.pack_id][ref.chunk_id] = ref
            refs += len(entry.chunks)
            if refs >= WINDOW_CHUNKS:
                check_window()
                users, by_pack = defaultdict(list), defaultdict(dict)
                refs = files = 0
        check_window()
    return sorted(problems)


def _check_external(entry: Entry) -> str | None:
    """An external file's object as it is now against what close recorded:
    gone, another size or another ETag is a problem (the bytes are not read)."""
    url = entry.url or ""
    try:
        now = external.stat(url)
    except DsfsError as exc:
        return f"{entry.path}: external object {external.shown(url)} unreadable: {exc}"
    if now is None:
        return f"{entry.path}: external object {external.shown(url)} is gone"
    if now.size != entry.size:
        return (f"{entry.path}: external object {external.shown(url)} changed "
                f"(size {entry.size} -> {now.size})")
    if entry.etag and now.etag != entry.etag:
        return (f"{entry.path}: external object {external.shown(url)} changed "
                f"(ETag {entry.etag} -> {now.etag or 'none'})")
    return None


def verify_folder(repo: Repository, header: Header, folder: str,
                  reporter: Reporter | None = None) -> list[str]:
    """Compare a local folder with the version: missing, extra and differing
    paths.  The folder and the version's tree (from the tree index) are
    walked side by side, one directory at a time; every file is read."""
    reporter = reporter or Reporter()
    tree = dirtree.open_version_tree(repo, header)
    decoder = Decoder()
    problems: list[str] = []
    total = int(header.stats.get("files", 0))
    with reporter.progress("verifying files", total) as progress:
        # (dataset path prefix, local directory or None, tree node or None)
        stack: list[tuple[str, str | None, Any]] = [("", folder, tree.root)]
        while stack:
            prefix, local_dir, node = stack.pop()
            names, stats = (stat_listing(local_dir, reporter, not prefix)
                            if local_dir is not None else ([], []))
            listing = tree.listing(node) if node is not None else []
            local = dict(zip(names, stats, strict=True))
            below: list[tuple[str, str | None, Any]] = []
            for name, enc, child in listing:
                path = prefix + name
                st = local.pop(name, None)
                if counts_as_file(enc):
                    progress.advance(1)
                if st is None:
                    problems.append(f"{path}: missing")
                    if child is not None:
                        below.append((path + "/", None, child))
                    continue
                local_path = f"{local_dir}/{name}"
                if child is not None:
                    if stat.S_ISDIR(st.st_mode):
                        below.append((path + "/", local_path, child))
                    else:
                        problems.append(f"{path}: should be a directory")
                        below.append((path + "/", None, child))
                    continue
                if stat.S_ISDIR(st.st_mode):  # its contents are not in the version
                    below.append((path + "/", local_path, None))
                problem = _compare(decoder.decode(path, enc), local_path, st)
                if problem:
                    problems.append(f"{path}: {problem}")
            for name, st in local.items():
                # Special files are never part of a version (add skips them).
                if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                    problems.append(f"{prefix}{name}: not in the version")
                elif stat.S_ISDIR(st.st_mode):
                    problems.append(f"{prefix}{name}: not in the version")
                    below.append((f"{prefix}{name}/", f"{local_dir}/{name}", None))
            stack.extend(reversed(below))
    return sorted(problems)


def _compare(entry: Entry, local: str, st: os.stat_result) -> str | None:
    """What differs between a (non-directory) entry and the local path."""
    if entry.kind == SYMLINK:
        if not stat.S_ISLNK(st.st_mode):
            return "should be a symlink"
        if os.readlink(local) != entry.target:
            return "symlink target differs"
        return None
    if not stat.S_ISREG(st.st_mode):
        return "should be a regular file"
    if st.st_size != entry.size or _file_digest(local) != entry.digest:
        return "content differs"
    return None


def _file_digest(path: str) -> str:
    hasher = file_hasher()
    with open(path, "rb", buffering=0) as f:
        while data := f.read(CHUNK_SIZE):
            hasher.update(data)
    return hasher.digest_id()
