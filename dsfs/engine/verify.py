"""Checking data against digests: a version's stored chunks, or a local
folder against a version.  Every mismatch is reported; nothing stops at the
first one."""

from __future__ import annotations

import os
import stat
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

from dsfs.engine import treewalk
from dsfs.engine.tree import TreeResolver
from dsfs.errors import DsfsError
from dsfs.format.digest import CHUNK_SIZE, chunk_id, file_hasher
from dsfs.format.manifest import DIR, FILE, SYMLINK, ChunkRef, Header
from dsfs.format.pack import pack_key
from dsfs.report import Reporter
from dsfs.repository import Repository

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
                data = repo.store.get_range(pack_key(pack_id), ref.offset, ref.length)
            except DsfsError as exc:
                found.append(f"{users[ref.chunk_id][0]}: chunk {ref.chunk_id} unreadable: {exc}")
                continue
            if chunk_id(data) != ref.chunk_id:
                for path in users[ref.chunk_id]:
                    found.append(f"{path}: chunk {ref.chunk_id} in pack {pack_id} is corrupt")
        return found

    total = int(header.stats.get("files", 0))
    with reporter.progress("verifying files", total) as progress, \
            ThreadPoolExecutor(max_workers=VERIFY_THREADS) as pool:
        users: dict[str, list[str]] = defaultdict(list)
        by_pack: dict[str, dict[str, ChunkRef]] = defaultdict(dict)
        refs = files = 0

        def check_window() -> None:
            for found in pool.map(lambda item: check_pack(item, users), by_pack.items()):
                problems.extend(found)
            progress.advance(files)

        for entry in treewalk.iter_files(source):
            files += 1
            if entry.kind != FILE:
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


def verify_folder(repo: Repository, header: Header, folder: str,
                  reporter: Reporter | None = None) -> list[str]:
    """Compare a local folder with the version: missing, extra and differing paths."""
    reporter = reporter or Reporter()
    tree = TreeResolver(repo).tree(header.id)
    problems: list[str] = []
    seen: set[str] = set()
    with reporter.progress("verifying files", len(tree)) as progress:
        for path in sorted(tree):
            entry = tree[path]
            local = os.path.join(folder, path)
            seen.add(path)
            progress.advance(1)
            try:
                st = os.lstat(local)
            except FileNotFoundError:
                problems.append(f"{path}: missing")
                continue
            if entry.kind == DIR:
                if not stat.S_ISDIR(st.st_mode):
                    problems.append(f"{path}: should be a directory")
            elif entry.kind == SYMLINK:
                if not stat.S_ISLNK(st.st_mode):
                    problems.append(f"{path}: should be a symlink")
                elif os.readlink(local) != entry.target:
                    problems.append(f"{path}: symlink target differs")
            elif not stat.S_ISREG(st.st_mode):
                problems.append(f"{path}: should be a regular file")
            elif st.st_size != entry.size or _file_digest(local) != entry.digest:
                problems.append(f"{path}: content differs")
    for dirpath, dirnames, filenames in os.walk(folder):
        rel = os.path.relpath(dirpath, folder)
        for name in dirnames + filenames:
            path = name if rel == "." else f"{rel}/{name}".replace(os.sep, "/")
            if path in seen:
                continue
            mode = os.lstat(os.path.join(dirpath, name)).st_mode
            # Special files are never part of a version (add skips them), so not a mismatch.
            if stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode):
                problems.append(f"{path}: not in the version")
    return sorted(problems)


def _file_digest(path: str) -> str:
    hasher = file_hasher()
    with open(path, "rb", buffering=0) as f:
        while data := f.read(CHUNK_SIZE):
            hasher.update(data)
    return hasher.digest_id()
