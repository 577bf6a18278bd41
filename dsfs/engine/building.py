"""Building a new version's delta in one streamed pass, in bounded memory.

``close``, ``sync`` and ``squash`` walk the new tree and the base tree (the
parents' merged tree, as a ``dsfs.engine.dirtree.DirTree``) side by side in
the same order, and hand each path to a ``DeltaBuilder``:

* ``keep(path, old)``: the path is unchanged (counted, and written only into
  a snapshot);
* ``removed(path, old)``: the base had it, the new tree does not;
* ``item(path, old, item)``: a local file, directory or symlink; a file is
  hashed and packed unless ``sync``'s quick check (size, mtime and mode equal
  to the base's) passes;
* ``encoded(path, old, enc)``: an entry of the base kept by a draft's
  operations, or a directory they imply.

The entries of the delta go, in walking order, into a ``DeltaSpool``: an
unlinked temporary file of manifest lines under the cache directory.  A
file's chunks placed in a pack still being filled have no pack id yet: they
are written with the pack's sequence number (``"@<n>"``) and resolved when
the manifest is encoded.  Totals and change counts (the header's stats) are
counted on the way, so a version of any size costs the directory listings
being walked, the packer's bounded state and the manifest's compressed bytes
at publish.

``sync_folder`` is ``sync``'s walk: the folder and the base tree are joined
directory by directory (each directory opened once, listed, and its
entries ``lstat``-ed relative to it, as ``find`` does, in name order); an
unchanged file costs a compare of its stat with the head of the base's
encoded entry, nothing else.  The
scan's rules are those of ``dsfs.engine.scan``: a partial scan is never
published (anything unreadable fails the command with ``InputError`` before
anything is published; packs uploaded until then are left to gc), special
files are skipped with a warning, a name vanishing mid-scan is skipped.
"""

from __future__ import annotations

import itertools
import operator
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from dsfs.engine import dirtree, external, statdigest
from dsfs.engine.dirtree import DirTree, VersionTree, file_head, same_content, same_file
from dsfs.engine.packer import Packer, PendingRef
from dsfs.engine.scan import SourceItem, readlink, skip_special, stat_listing
from dsfs.engine.treeindex import Decoder, encode_entry
from dsfs.errors import local_os_error
from dsfs.format.digest import id_to_bytes
from dsfs.format.manifest import DIR, FILE, REMOVED, SYMLINK, ChunkRef, Entry, entry_line
from dsfs.report import Progress, Reporter
from dsfs.repository import Repository

#: Base entries read between two releases of the cache index's mapped pages.
RELEASE_EVERY = 20_000
_PENDING = re.compile(rb'"@(\d+)"')
_CHUNKS_KEY = b',"c":[['


class DeltaSpool:
    """Manifest lines of a delta, in a temporary file; re-readable."""

    def __init__(self, directory: str) -> None:
        try:
            os.makedirs(directory, exist_ok=True)
            self._file: IO[bytes] = tempfile.TemporaryFile(  # noqa: SIM115 - closed by close()
                dir=directory, prefix=".spool-", buffering=1 << 20)
        except OSError as exc:
            raise local_os_error(exc, directory, "the cache") from None
        self.count = 0
        #: packs of earlier uploads the delta's files reference
        self.pack_ids: set[str] = set()
        self._pack_id: Any = None

    def write(self, entry: Entry) -> None:
        for ref in () if entry.url is not None else entry.chunks:  # external: no packs
            if not ref.pack_id.startswith("@"):
                self.pack_ids.add(ref.pack_id)
        self._file.write(entry_line(entry))
        self.count += 1

    def finish(self, pack_id: Any) -> None:
        """No more entries; ``pack_id(n)`` names the n-th pack of the run."""
        self._file.flush()
        self._pack_id = pack_id

    def lines(self) -> Iterator[bytes]:
        """The manifest lines, with every pack's sequence number resolved."""
        self._file.seek(0)
        resolve = self._pack_id

        def sub(match: re.Match[bytes]) -> bytes:
            return b'"' + resolve(int(match.group(1))).encode() + b'"'

        for line in self._file:
            start = line.rfind(_CHUNKS_KEY)
            if start >= 0 and b'"@' in line[start:]:
                line = line[:start] + _PENDING.sub(sub, line[start:])
            yield line

    def close(self) -> None:
        self._file.close()


@dataclass
class Totals:
    files: int = 0
    size: int = 0
    added: int = 0
    removed: int = 0
    modified: int = 0

    @property
    def counts(self) -> dict[str, int]:
        return {"added": self.added, "removed": self.removed, "modified": self.modified}


@dataclass
class DeltaBuilder:
    """Turns a joined walk of base and new tree into a spooled delta."""

    repo: Repository
    packer: Packer | None
    snapshot: bool
    trust_mtime: bool = False
    progress: Progress = field(default_factory=Progress)

    def __post_init__(self) -> None:
        self.totals = Totals()
        self.spool = DeltaSpool(str(self.repo.cache_root / "tmp"))
        self._decoder = Decoder()
        self._changes = 0
        #: chain depth of the version (1 for a snapshot); set by its maker
        self.depth = 1
        #: hashes the external objects of the walk ahead of it (set by its maker)
        self.prehasher: external.Prehasher | None = None

    # -- rows ----------------------------------------------------------------------

    def keep(self, path: str, old: bytes) -> None:
        if old[0] != dirtree.KIND_DIR:
            self.totals.files += 1
            self.totals.size += dirtree.file_size(old)
        if self.snapshot:
            self.spool.write(self._decoder.decode(path, old))

    def removed(self, path: str, old: bytes) -> None:
        self._changes += 1
        if old[0] != dirtree.KIND_DIR:
            self.totals.removed += 1
        if not self.snapshot:
            self.spool.write(Entry(path, REMOVED))

    def removed_below(self, tree: DirTree, node: Any, path: str) -> None:
        """Everything the base has below directory ``path`` is gone."""
        sub = _Subtree(tree, node)
        for rel, enc in dirtree.walk(sub):
            self.removed(f"{path}/{rel}", enc)

    def encoded(self, path: str, old: bytes | None, enc: bytes) -> None:
        if old is not None and (enc is old or same_content(old, enc)):
            self.keep(path, old)
        else:
            self._changed(old, self._decoder.decode(path, enc))

    def item(self, path: str, old: bytes | None, item: SourceItem) -> None:
        if item.kind == FILE and external.is_external(item.source):
            entry = (self.prehasher.entry(path, item) if self.prehasher is not None
                     else external.hash_object(path, item, self.progress,
                                               external.memo_dir(self.repo.cache_root)))
            if old is not None and old == encode_entry(entry):
                self.keep(path, old)
            else:
                self._changed(old, entry)
            return
        if item.kind == FILE:
            if (self.trust_mtime and old is not None
                    and old[:dirtree.HEAD_SIZE] == file_head(item.mode, item.mtime_ns,
                                                              item.size)):
                self.keep(path, old)
                return
            entry = self._hash(path, item.source)
            if old is not None and same_file(old, id_to_bytes(entry.digest or ""), entry.mode):
                self.keep(path, old)
                return
            self._changed(old, entry)
            return
        if item.kind == SYMLINK:
            entry = Entry(path, SYMLINK, item.size, item.mode, item.mtime_ns, target=item.target)
        else:
            entry = Entry(path, DIR, 0, item.mode, item.mtime_ns)
        if old is None or not same_content(old, encode_entry(entry)):
            self._changed(old, entry)
        elif self.snapshot:  # the whole tree is written: as it is now
            self.totals.files += entry.kind == SYMLINK
            self.spool.write(entry)
        else:
            self.keep(path, old)

    def _hash(self, path: str, source: str) -> Entry:
        assert self.packer is not None
        digest, size, refs, st = self.packer.hash_file(source, self.progress)
        chunks = tuple(ChunkRef(r.chunk_id, f"@{r.pack_seq}", r.offset, r.length)
                       if isinstance(r, PendingRef) else r for r in refs)
        return Entry(path, FILE, size, st.st_mode, st.st_mtime_ns, digest, chunks)

    def _changed(self, old: bytes | None, entry: Entry) -> None:
        self._changes += 1
        totals = self.totals
        if entry.kind != DIR:
            totals.files += 1
            if entry.kind == FILE:
                totals.size += entry.size
            if old is None or old[0] == dirtree.KIND_DIR:
                totals.added += 1
            else:
                totals.modified += 1
        elif old is not None and old[0] != dirtree.KIND_DIR:
            totals.removed += 1
        self.spool.write(entry)

    # -- the end -------------------------------------------------------------------------

    def finish(self) -> None:
        """Every row seen: upload the last pack and settle the spool."""
        if self.packer is not None:
            self.packer.finish()
            self.spool.finish(self.packer.pack_id)
        else:
            self.spool.finish(_no_pack)

    def close(self) -> None:
        self.spool.close()

    @property
    def changed(self) -> bool:
        """True when the new tree differs from the base (mtime-only edits aside)."""
        return self._changes > 0


def _no_pack(seq: int) -> str:
    raise AssertionError(f"pack {seq} without a packer")


class _Subtree:
    """The part of a ``DirTree`` below one of its directories."""

    def __init__(self, tree: DirTree, node: Any) -> None:
        self.tree, self.root = tree, node

    def listing(self, node: Any) -> dirtree.Listing:
        return self.tree.listing(node)


# -- sync: a folder joined with the base, directory by directory ---------------------------


#: One path of a directory that needs more than a quick check:
#: (name, its lstat or None if only the base has it, base entry or None, base node or None)
_Step = tuple[str, "os.stat_result | None", "bytes | None", Any]


_NAME = operator.itemgetter(0)
_ENC = operator.itemgetter(1)
_HEAD_FIELDS = operator.attrgetter("st_mode", "st_mtime_ns", "st_size")
_SIZE = operator.attrgetter("st_size")


def _steps(names: list[str], stats: list[os.stat_result], base: dirtree.Listing,
           trust: bool) -> tuple[list[_Step], int, int]:
    """The paths of one directory, folder against base, that fail the quick
    check (changed, new, gone, directories, symlinks), in name order; and the
    count and size of the files that pass it."""
    if trust and len(names) == len(base) and names == list(map(_NAME, base)):
        # the usual case, same names: compare heads in bulk (C-level loops)
        heads = itertools.starmap(dirtree.fast_file_head, map(_HEAD_FIELDS, stats))
        same = list(map(bytes.startswith, map(_ENC, base), heads))
        sizes = list(map(_SIZE, stats))
        if all(same):
            return [], len(same), sum(sizes)
        steps: list[_Step] = []
        files = size = 0
        for k, ok in enumerate(same):
            if ok:
                files += 1
                size += sizes[k]
            else:
                name, enc, child = base[k]
                steps.append((name, stats[k], enc, child))
        return steps, files, size
    steps = []
    files = size = 0
    i = j = 0
    nl, nb = len(names), len(base)
    while i < nl or j < nb:
        if j >= nb or (i < nl and names[i] < base[j][0]):
            steps.append((names[i], stats[i], None, None))
            i += 1
        elif i >= nl or base[j][0] < names[i]:
            name, enc, child = base[j]
            steps.append((name, None, enc, child))
            j += 1
        else:
            st = stats[i]
            name, enc, child = base[j]
            i += 1
            j += 1
            if trust and enc.startswith(dirtree.file_head(st.st_mode, st.st_mtime_ns,
                                                          st.st_size)):
                files += 1
                size += st.st_size
            else:
                steps.append((name, st, enc, child))
    return steps, files, size


class _Frame:
    __slots__ = ("dir", "k", "prefix", "steps")

    def __init__(self, prefix: str, directory: str, steps: list[_Step]) -> None:
        self.prefix, self.dir, self.steps, self.k = prefix, directory, steps, 0


def sync_folder(builder: DeltaBuilder, base: DirTree, root: str, reporter: Reporter) -> None:
    """Walk ``root`` (an absolute folder) against ``base``; every path goes to
    ``builder``.  Files that pass the quick check are only counted (and, in a
    snapshot, written as the base has them)."""
    # a snapshot writes every entry: no quick path that skips unchanged ones
    trust = builder.trust_mtime and not builder.snapshot

    # a directory whose stat digest equals its base listing's memoized one
    # passes whole, without reading that listing (one parent's tree only)
    digests = base if trust and isinstance(base, VersionTree) else None
    read = 0

    def frame(prefix: str, directory: str, node: Any, is_root: bool) -> _Frame:
        nonlocal read
        names, stats = stat_listing(directory, reporter, is_root)
        known = None
        if digests is not None and node is not None:
            known = digests.stat_digest(node)
            if known is not None and known == statdigest.of_stats(names, stats):
                builder.totals.files += len(names)
                builder.totals.size += sum(map(_SIZE, stats))
                return _Frame(prefix, directory, [])
        listing = base.listing(node) if node is not None else []
        if digests is not None and known is None and node is not None:
            digest = statdigest.of_listing(listing)
            if digest is not None:
                digests.remember_stat_digest(node, digest)
        read += len(listing)
        if read >= RELEASE_EVERY:  # the base's listings are read once each
            read = 0
            builder.repo.cache.index.release_pages()
        steps, files, size = _steps(names, stats, listing, trust)
        builder.totals.files += files
        builder.totals.size += size
        return _Frame(prefix, directory, steps)

    frames = [frame("", root, base.root, True)]
    while frames:
        top = frames[-1]
        pushed = None
        steps, prefix = top.steps, top.prefix
        while top.k < len(steps):
            name, st, old, child = steps[top.k]
            top.k += 1
            path = prefix + name
            if st is None:  # only the base has it
                assert old is not None
                builder.removed(path, old)
                if child is not None:
                    builder.removed_below(base, child, path)
                continue
            mode = st.st_mode
            source = f"{top.dir}/{name}"
            if stat.S_ISREG(mode):
                builder.item(path, old, SourceItem(path, FILE, source, st.st_size, mode,
                                                   st.st_mtime_ns))
            elif stat.S_ISDIR(mode):
                builder.item(path, old, SourceItem(path, DIR, source, 0, mode, st.st_mtime_ns))
                pushed = frame(path + "/", source, child, False)
                break
            elif stat.S_ISLNK(mode):
                target = readlink(source)
                builder.item(path, old, SourceItem(path, SYMLINK, source,
                                                   len(os.fsencode(target)), mode,
                                                   st.st_mtime_ns, target))
            else:
                skip_special(reporter, source, st)
                if old is not None:
                    builder.removed(path, old)
                    if child is not None:
                        builder.removed_below(base, child, path)
                continue
            if child is not None:  # a directory replaced by a file or symlink
                builder.removed_below(base, child, path)
        if pushed is not None:
            frames.append(pushed)
        else:
            frames.pop()
    if digests is not None:
        digests.flush()


# -- close: a flat stream of the new tree joined with the base ------------------------------


def join(builder: DeltaBuilder, base: DirTree,
         new: Iterable[tuple[str, bytes | SourceItem]]) -> None:
    """``new`` (paths in walking order, each an encoded entry or a local item)
    joined with the base's walk; every path goes to ``builder``."""
    for path, before, value in dirtree.outer_join(dirtree.walk(base), new):
        if value is None:
            assert before is not None
            builder.removed(path, before)
        elif isinstance(value, bytes):
            builder.encoded(path, before, value)
        else:
            builder.item(path, before, value)
