"""Reading a local folder: what is there, as dataset paths, without hashing.

Symlinks are recorded as symlinks (their target text) and never followed, so
adding a tree never reads outside it.  Fifos, sockets and devices are skipped
with a warning.  Names that are not valid UTF-8 are kept byte for byte (they
travel as surrogate escapes and are stored as raw bytes).
"""

from __future__ import annotations

import fnmatch
import os
import stat
from dataclasses import dataclass

from dsfs.errors import InputError, UsageError
from dsfs.format.manifest import DIR, FILE, SYMLINK
from dsfs.report import Reporter


@dataclass(frozen=True, slots=True)
class SourceItem:
    """A local file, directory or symlink that will become an entry."""

    path: str  # dataset path
    kind: str
    source: str  # absolute local path
    size: int
    mode: int
    mtime_ns: int
    target: str | None = None


def normalize_dataset_path(text: str | None) -> str:
    """'/a//b/' → 'a/b'; refuse '..' so a dataset path stays inside the dataset."""
    if not text:
        return ""
    parts = [p for p in text.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UsageError(f"dataset path {text!r} may not contain '..'")
    return "/".join(parts)


def _join(prefix: str, rel: str) -> str:
    return f"{prefix}/{rel}" if prefix and rel else (prefix or rel)


def _item(path: str, source: str, st: os.stat_result) -> SourceItem | None:
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return SourceItem(path, FILE, source, st.st_size, mode, st.st_mtime_ns)
    if stat.S_ISDIR(mode):
        return SourceItem(path, DIR, source, 0, mode, st.st_mtime_ns)
    if stat.S_ISLNK(mode):
        target = os.readlink(source)
        return SourceItem(path, SYMLINK, source, len(os.fsencode(target)), mode,
                          st.st_mtime_ns, target)
    return None


def scan(
    source: str,
    dataset_folder: str = "",
    wildcard: str | None = None,
    recursive: bool = True,
    reporter: Reporter | None = None,
) -> list[SourceItem]:
    """Items for one ``add`` argument: a file goes to ``dataset_folder/<name>``,
    a directory's contents go below ``dataset_folder``."""
    reporter = reporter or Reporter()
    prefix = normalize_dataset_path(dataset_folder)
    source = os.path.abspath(source)
    try:
        top = os.lstat(source)
    except FileNotFoundError:
        raise InputError(f"{source}: no such file or directory") from None
    except OSError as exc:
        raise InputError(f"{source}: {exc.strerror}") from None
    if not stat.S_ISDIR(top.st_mode):
        name = os.path.basename(source)
        if wildcard and not fnmatch.fnmatch(name, wildcard):
            return []
        item = _item(_join(prefix, name), source, top)
        if item is None:
            reporter.warn(f"skipped {source}: not a regular file, directory or symlink")
            return []
        return [item]

    items: list[SourceItem] = []
    if prefix:
        items.append(SourceItem(prefix, DIR, source, 0, top.st_mode, top.st_mtime_ns))

    def walk(directory: str, rel: str) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            reporter.warn(f"skipped {directory}: {exc.strerror}")
            return
        for entry in entries:
            entry_rel = f"{rel}/{entry.name}" if rel else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                reporter.warn(f"skipped {entry.path}: {exc.strerror}")
                continue
            if stat.S_ISDIR(st.st_mode):
                if not recursive:
                    continue
                if wildcard is None:
                    items.append(SourceItem(_join(prefix, entry_rel), DIR, entry.path, 0,
                                            st.st_mode, st.st_mtime_ns))
                walk(entry.path, entry_rel)
                continue
            if wildcard and not (fnmatch.fnmatch(entry.name, wildcard)
                                 or fnmatch.fnmatch(entry_rel, wildcard)):
                continue
            item = _item(_join(prefix, entry_rel), entry.path, st)
            if item is None:
                reporter.warn(f"skipped {entry.path}: not a regular file, directory or symlink")
            else:
                items.append(item)

    walk(source, "")
    return items
