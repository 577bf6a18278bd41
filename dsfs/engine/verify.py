"""Checking data against digests: a version's stored chunks, or a local
folder against a version.  Every mismatch is reported; nothing stops at the
first one."""

from __future__ import annotations

import os
import stat
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

from dsfs.engine.tree import TreeResolver
from dsfs.errors import DsfsError
from dsfs.format.digest import CHUNK_SIZE, chunk_id, file_hasher
from dsfs.format.manifest import DIR, FILE, SYMLINK, ChunkRef, Header
from dsfs.format.pack import pack_key
from dsfs.report import Reporter
from dsfs.repository import Repository

VERIFY_THREADS = 8


def verify_store(repo: Repository, header: Header, reporter: Reporter | None = None
                 ) -> list[str]:
    """Re-read and re-hash every chunk the version references, from the store."""
    reporter = reporter or Reporter()
    tree = TreeResolver(repo).tree(header.id)
    users: dict[str, list[str]] = defaultdict(list)
    by_pack: dict[str, dict[str, ChunkRef]] = defaultdict(dict)
    for entry in tree.values():
        if entry.kind == FILE:
            for ref in entry.chunks:
                users[ref.chunk_id].append(entry.path)
                by_pack[ref.pack_id][ref.chunk_id] = ref
    problems: list[str] = []

    def check_pack(item: tuple[str, dict[str, ChunkRef]]) -> list[str]:
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

    total = sum(len(r) for r in by_pack.values())
    with reporter.progress("verifying chunks", total) as progress, \
            ThreadPoolExecutor(max_workers=VERIFY_THREADS) as pool:
        for (_pack, refs), found in zip(by_pack.items(),
                                        pool.map(check_pack, by_pack.items()), strict=True):
            problems.extend(found)
            progress.advance(len(refs))
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
