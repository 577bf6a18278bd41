"""Reading a local folder: what is there, as dataset paths, without hashing.

Symlinks inside a tree are recorded as symlinks (their target text) and never
followed, so adding a tree never reads outside it.  Fifos, sockets and devices
are skipped with a warning: they hold no data.  Names that are not valid UTF-8
are kept byte for byte (they travel as surrogate escapes and are stored as raw
bytes).

A scan is all or nothing.  A version built from a partial scan would record
every file it could not see as removed, so anything that cannot be read (a
directory without permission, an entry that cannot be stat'ed, a link that
cannot be read) fails the whole command with ``InputError`` naming the path.
Only an entry that vanished between the listing and its ``stat`` is skipped
with a warning: it is gone, not hidden.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

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


def kind_name(mode: int) -> str:
    """What a file type is called in messages ("a fifo", "a character device")."""
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISLNK, "a symlink"), (stat.S_ISFIFO, "a fifo"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "a special file"


def readlink(source: str) -> str:
    try:
        return os.readlink(source)
    except OSError as exc:
        raise InputError(f"cannot read {source}: {exc.strerror}") from None


def open_recorded_file(source: str) -> BinaryIO:
    """Open a file that a scan recorded as a regular file, for reading.

    Files are read later than they are scanned (at ``close``, or after the
    whole tree is listed), and the path may have become something else
    meanwhile: a symlink is not followed (that would read outside the tree)
    and a fifo is not waited on (that would hang ``close`` forever); either
    fails with ``InputError``.  OSErrors of the open are the caller's."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise InputError(f"{source} was added as a file but is now a symlink: add it "
                         "again or remove it") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise InputError(f"{source} was added as a file but is now {kind_name(mode)}: add "
                         "it again or remove it")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb", buffering=0)


def _item(path: str, source: str, st: os.stat_result) -> SourceItem | None:
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return SourceItem(path, FILE, source, st.st_size, mode, st.st_mtime_ns)
    if stat.S_ISDIR(mode):
        return SourceItem(path, DIR, source, 0, mode, st.st_mtime_ns)
    if stat.S_ISLNK(mode):
        target = readlink(source)
        return SourceItem(path, SYMLINK, source, len(os.fsencode(target)), mode,
                          st.st_mtime_ns, target)
    return None


def skip_special(reporter: Reporter, source: str, st: os.stat_result) -> None:
    reporter.warn(f"skipped {source}: {kind_name(st.st_mode)} "
                  "(only files, directories and symlinks are versioned)")


def _absolute(path: str) -> str:
    """The absolute form of a path argument.  An empty one is refused: it
    would mean the current directory, and ``sync "$UNSET"`` would then
    publish whatever directory the command happened to run in."""
    if not path:
        raise InputError("an empty path was given: name a folder ('.' for the current one)")
    return os.path.abspath(path)


def resolve_folder(folder: str, reporter: Reporter) -> str:
    """The absolute directory that ``folder`` names, following a symlink.

    ``sync FOLDER`` mirrors a folder.  Given a symlink to one (``data`` or
    ``data/``), it mirrors the folder the link points to, as ``rsync -a
    LINK/`` does, and says so: recording the link itself would publish one
    symlink and every file as removed.  Anything that is not a folder in the
    end (a file, /dev/null, a dangling or looping link) is refused, since
    mirroring it would publish an empty tree."""
    path = _absolute(folder)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InputError(_not_a_folder(folder, path, exc)) from None
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{folder}: not a folder ({kind_name(st.st_mode)})")
    if os.path.islink(path):
        real = os.path.realpath(path)
        reporter.note(f"{folder} is a symlink to the folder {real}: using that folder")
        return real
    return path


def _not_a_folder(folder: str, path: str, exc: OSError) -> str:
    """The message for a folder argument that ``stat`` cannot follow."""
    if exc.errno == errno.ELOOP:
        return f"{folder}: not a folder (a symlink loop)"
    if os.path.islink(path):
        return f"{folder}: not a folder (a dangling symlink to {readlink(path)!r})"
    if exc.errno == errno.ENOENT:
        return f"{folder}: no such file or directory"
    if exc.errno == errno.ENOTDIR:
        return f"{folder}: not a folder"
    return f"{folder}: {exc.strerror}"


def scan_folder(folder: str, dataset_folder: str = "",
                reporter: Reporter | None = None) -> Iterator[SourceItem]:
    """Items for ``sync_folder``: the whole contents of one folder, in walking
    order.  The folder argument is checked before this returns; the rest
    fails (``InputError``) while it is iterated."""
    reporter = reporter or Reporter()
    root = resolve_folder(folder, reporter)
    return _scan_directory(root, normalize_dataset_path(dataset_folder), None, True, reporter)


def scan(
    source: str,
    dataset_folder: str = "",
    wildcard: str | None = None,
    recursive: bool = True,
    reporter: Reporter | None = None,
) -> Iterator[SourceItem]:
    """Items for one ``add`` argument, in walking order: a file goes to
    ``dataset_folder/<name>``, a directory's contents go below ``dataset_folder``.

    A symlink argument is a symlink (stored as one), unless it is written with
    a trailing slash (``LINK/``), which names the folder it points to.  The
    argument is checked before this returns; the rest fails (``InputError``)
    while it is iterated."""
    reporter = reporter or Reporter()
    prefix = normalize_dataset_path(dataset_folder)
    if source.endswith(("/", "/.")) and os.path.islink(_absolute(source)):
        root = resolve_folder(source, reporter)
        return _scan_directory(root, prefix, wildcard, recursive, reporter)
    source = _absolute(source)
    try:
        top = os.lstat(source)
    except FileNotFoundError:
        raise InputError(f"{source}: no such file or directory") from None
    except OSError as exc:
        raise InputError(f"{source}: {exc.strerror}") from None
    if stat.S_ISDIR(top.st_mode):
        return _scan_directory(source, prefix, wildcard, recursive, reporter)
    name = os.path.basename(source)
    if wildcard and not fnmatch.fnmatch(name, wildcard):
        return iter(())
    item = _item(_join(prefix, name), source, top)
    if item is None:
        skip_special(reporter, source, top)
        return iter(())
    if item.kind == SYMLINK and os.path.isdir(source):
        reporter.note(f"{source} is a symlink to a folder: stored as a symlink; "
                      f"add {source}/ to add the folder's contents")
    return iter((item,))


def list_dir(directory: str, reporter: Reporter, is_root: bool) -> list[os.DirEntry[str]]:
    """A directory's entries by name; none if a subdirectory vanished since
    its parent was listed (the root vanishing fails: nothing would be left)."""
    try:
        with os.scandir(directory) as it:
            return sorted(it, key=lambda e: e.name)
    except FileNotFoundError:
        if is_root:
            raise InputError(f"{directory}: no such file or directory") from None
        reporter.warn(f"skipped {directory}: it vanished during the scan")
        return []
    except OSError as exc:
        raise InputError(f"cannot read {directory}: {exc.strerror}") from None


def lstat_entry(entry: os.DirEntry[str], reporter: Reporter) -> os.stat_result | None:
    """An entry's own stat; None if it vanished since its directory was listed."""
    try:
        return entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        reporter.warn(f"skipped {entry.path}: it vanished during the scan")
        return None
    except OSError as exc:
        raise InputError(f"cannot read {entry.path}: {exc.strerror}") from None


def _scan_directory(root: str, prefix: str, wildcard: str | None, recursive: bool,
                    reporter: Reporter) -> Iterator[SourceItem]:
    """Every item below ``root`` (and ``prefix`` itself as a directory), in
    walking order: a directory's contents right after it, names in str order
    (``dsfs.engine.dirtree``), so that ``close`` can join them with a tree."""
    try:
        top = os.stat(root)
    except OSError as exc:
        raise InputError(f"cannot read {root}: {exc.strerror}") from None
    if prefix:
        yield SourceItem(prefix, DIR, root, 0, top.st_mode, top.st_mtime_ns)

    # depth first with an explicit stack, not recursion: a tree may be nested
    # deeper than Python's recursion limit
    stack: list[tuple[str, Iterator[os.DirEntry[str]]]] = [
        ("", iter(list_dir(root, reporter, is_root=True)))]
    while stack:
        rel, entries = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        entry_rel = f"{rel}/{entry.name}" if rel else entry.name
        st = lstat_entry(entry, reporter)
        if st is None:
            continue
        if stat.S_ISDIR(st.st_mode):
            if not recursive:
                continue
            if wildcard is None:
                yield SourceItem(_join(prefix, entry_rel), DIR, entry.path, 0,
                                 st.st_mode, st.st_mtime_ns)
            stack.append((entry_rel, iter(list_dir(entry.path, reporter, is_root=False))))
            continue
        if wildcard and not (fnmatch.fnmatch(entry.name, wildcard)
                             or fnmatch.fnmatch(entry_rel, wildcard)):
            continue
        item = _item(_join(prefix, entry_rel), entry.path, st)
        if item is None:
            skip_special(reporter, entry.path, st)
        else:
            yield item


_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def stat_listing(directory: str, reporter: Reporter, is_root: bool
                 ) -> tuple[list[str], list[os.stat_result]]:
    """A directory's names, sorted, and each one's own ``lstat``, taken
    relative to the open directory (as ``find`` does: no path walk per
    entry).  Empty if the directory vanished (or stopped being one) since its
    parent was listed; anything unreadable fails the scan."""
    try:
        fd = os.open(directory, _OPEN_DIR)
    except OSError as exc:
        if is_root or exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            if exc.errno == errno.ENOENT:
                raise InputError(f"{directory}: no such file or directory") from None
            raise InputError(f"cannot read {directory}: {exc.strerror}") from None
        reporter.warn(f"skipped {directory}: it vanished during the scan")
        return [], []
    try:
        try:
            names = os.listdir(fd)
        except OSError as exc:
            raise InputError(f"cannot read {directory}: {exc.strerror}") from None
        names.sort()
        lstat = os.lstat
        try:
            # a comprehension passes dir_fd without the keyword dict a
            # functools.partial builds per call (~15% of a stat here)
            return names, [lstat(name, dir_fd=fd) for name in names]
        except OSError:
            pass  # one failed: go one by one to say which
        kept, stats = [], []
        for name in names:
            try:
                stats.append(lstat(name, dir_fd=fd))
                kept.append(name)
            except FileNotFoundError:
                reporter.warn(f"skipped {directory}/{name}: it vanished during the scan")
            except OSError as exc:
                raise InputError(f"cannot read {directory}/{name}: {exc.strerror}") from None
        return kept, stats
    finally:
        os.close(fd)
