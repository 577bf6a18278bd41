"""What the upper layer changes, and turning that into a child version.

``collect`` walks only the directories that hold changes and returns two
partial trees over the same paths: ``old`` (the mounted version there) and
``new`` (the merged tree there).  A moved or replaced directory contributes
its whole subtree on both sides, so a rename shows as removals plus
additions whose entries reuse the lower chunks (nothing is fetched or
uploaded for it).  Everything else here works on those two partial trees:

* ``status`` compares them, hashing upper files whose size matches (a file
  rewritten with the same bytes is unchanged);
* ``build`` hashes and uploads the upper files through the engine's packer
  (content the store already holds is not uploaded), takes
  ``make_delta(old, new)`` as the delta and publishes it with the engine's
  crash-safe order (``dsfs.engine.publish``).  Its cost follows the edits,
  not the size of the version.

Each attempt is written to ``commit.json`` in the overlay before its manifest,
so a mount that restarts after a commit died can tell whether the version
got published (then the overlay is rebased onto it) or not (then the edits
are still pending and nothing is visible).  A live mount whose publish raised
asks the store again whether the claim is its own before reporting a failure
(``settle``), and checks ``commit.json`` before every new commit, so a claim
whose reply was lost never leads to a second, duplicate version.

Crash tests need no hooks here: ``DSFS_FAULTS`` (``dsfs.store.faulty``) makes
the mount's store kill the process before the manifest's write
(``put_if_absent:versions/:kill``), before the claim
(``put_if_absent:names/:kill``), right after it (``...:kill-after``), or lose
the claim's reply (``...:lose-reply``).
"""

from __future__ import annotations

import dataclasses
import posixpath
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsfs import catalog as cat
from dsfs import config
from dsfs.engine import locks
from dsfs.engine.draftops import SnapshotEntries
from dsfs.engine.publish import check_packs_exist, find_published, publish
from dsfs.engine.scan import SourceItem
from dsfs.engine.tree import MAX_CHAIN_DEPTH, Tree, compare, make_delta
from dsfs.engine.versions import build_tree, new_header
from dsfs.errors import ConflictError, DsfsError, NotFoundError, StoreError, UsageError
from dsfs.format.digest import CHUNK_SIZE, file_hasher
from dsfs.format.manifest import DIR, FILE, REMOVED, SYMLINK, Entry, Header
from dsfs.overlay.fs import OverlayFS
from dsfs.overlay.journal import Record
from dsfs.overlay.nodes import SPECIAL, Node, join
from dsfs.overlay.upper import Upper
from dsfs.report import Reporter
from dsfs.repository import Repository


class OutcomeUnknown(StoreError):
    """Publishing failed and the store could not say whether the claim got
    written; ``committed`` is what the attempt would have published."""

    def __init__(self, message: str, committed: Committed) -> None:
        super().__init__(message)
        self.committed = committed


def settle(repo: Repository, header: Header, attempts: list[list[str]],
           seconds: float | None = None) -> Header | None:
    """After publish raised: the attempt whose claim did get written, or None
    if none did; raises StoreError if the store cannot tell within ``seconds``
    (``DSFS_SETTLE_SECONDS``, 30 by default)."""
    deadline = time.monotonic() + (config.settle_seconds() if seconds is None else seconds)
    delay = 0.2
    while True:
        try:
            return find_published(repo, header, [(a[0], a[1]) for a in attempts])
        except (DsfsError, OSError) as exc:
            if time.monotonic() + delay > deadline:
                raise StoreError(f"cannot tell whether the commit got published ({exc})"
                                 ) from None
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


@dataclass
class Regions:
    """The changed part of the tree, before (``old``) and after (``new``).  New
    files whose bytes are in the upper layer are SourceItems (``nodes`` maps
    their paths to their nodes, for the digest memo)."""

    old: Tree = field(default_factory=dict)
    new: dict[str, Entry | SourceItem] = field(default_factory=dict)
    nodes: dict[str, tuple[Node, int]] = field(default_factory=dict)


def _node_entry(fs: OverlayFS, node: Node, path: str, regions: Regions) -> Entry | SourceItem:
    if node.kind == DIR:
        return Entry(path, DIR, 0, stat.S_IFDIR | node.mode, node.mtime_ns)
    if node.kind == SYMLINK:
        return Entry(path, SYMLINK, node.size, stat.S_IFLNK | 0o777, node.mtime_ns,
                     target=node.target)
    if node.data is not None:
        regions.nodes[path] = (node, node.version)
        return SourceItem(path, FILE, str(fs.upper.data_path(node.data)), node.size,
                          stat.S_IFREG | node.mode, node.mtime_ns)
    assert node.lower is not None
    return dataclasses.replace(node.lower, path=path, mode=stat.S_IFREG | node.mode,
                               mtime_ns=node.mtime_ns)


def collect(fs: OverlayFS) -> Regions:
    """Both sides of every change (call with changes held: reads the model)."""
    regions = Regions()
    source = fs.source

    def old_subtree(path: str) -> None:
        entry = source.entry(path)
        if entry is None:
            return
        regions.old[path] = entry
        if entry.kind == DIR:
            stack = [path]
            while stack:
                current = stack.pop()
                for name, child in source.children(current):
                    regions.old[join(current, name)] = child
                    if child.kind == DIR:
                        stack.append(join(current, name))

    def new_subtree(node: Node, path: str) -> None:
        if node.kind == SPECIAL:
            return  # FIFOs, sockets and devices stay in the overlay: a version has none
        regions.new[path] = _node_entry(fs, node, path, regions)
        if node.kind != DIR:
            return
        if node.children is not None:
            for name, child in node.children.items():
                new_subtree(child, join(path, name))
            return
        if node.lower_dir is None:
            return
        stack = [(node.lower_dir, path)]
        while stack:  # a moved directory nobody opened: its lower entries, renamed
            lower, here = stack.pop()
            for name, entry in source.children(lower):
                target = join(here, name)
                regions.new[target] = dataclasses.replace(entry, path=target)
                if entry.kind == DIR:
                    stack.append((join(lower, name), target))

    def walk(node: Node, path: str) -> None:
        # invariant: node.lower_dir == path (the directory is where it was)
        if node.children is None or not node.marked:
            return
        lower = dict(source.children(path))
        for name in sorted(lower.keys() - node.children.keys()):
            old_subtree(join(path, name))
        for name, child in sorted(node.children.items()):
            child_path = join(path, name)
            if child.kind == DIR and child.lower_dir == child_path and name in lower:
                if child.dirty:
                    regions.old[child_path] = lower[name]
                    regions.new[child_path] = _node_entry(fs, child, child_path, regions)
                walk(child, child_path)
            elif fs._clean_at(child, child_path if name in lower else None):
                continue
            else:
                old_subtree(child_path)
                new_subtree(child, child_path)

    walk(fs.root, "")
    return regions


def digest_of(path: str) -> str:
    hasher = file_hasher()
    with open(path, "rb", buffering=0) as f:
        while True:
            data = f.read(CHUNK_SIZE)
            if not data:
                return hasher.digest_id()
            hasher.update(data)


@dataclass
class Status:
    added: list[tuple[str, str]] = field(default_factory=list)
    modified: list[tuple[str, str]] = field(default_factory=list)
    removed: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {k: [{"path": p, "kind": kind} for p, kind in getattr(self, k)]
                for k in ("added", "modified", "removed")}

    @property
    def empty(self) -> bool:
        return not (self.added or self.modified or self.removed)


def _topmost(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drop entries below a directory of the same list (it says it all)."""
    dirs = {p for p, kind in items if kind == DIR}
    out = []
    for path, kind in sorted(items):
        parent = posixpath.dirname(path)
        while parent and parent not in dirs:
            parent = posixpath.dirname(parent)
        if not parent:
            out.append((path, kind))
    return out


def resolve_digests(regions: Regions) -> dict[str, Entry]:
    """``regions.new`` with every upper file hashed (in a worker thread; the
    digest of a node is memoized until its next write)."""
    new: dict[str, Entry] = {}
    for path, value in regions.new.items():
        if isinstance(value, Entry):
            new[path] = value
            continue
        node, version = regions.nodes[path]
        old = regions.old.get(path)
        if old is not None and (old.kind != FILE or old.size != value.size):
            digest = "differs"  # no need to read it: it cannot be the same
        elif node.digest is not None and node.digest[0] == version:
            digest = node.digest[1]
        else:
            digest = digest_of(value.source)
            node.digest = (version, digest)
        new[path] = Entry(path, FILE, value.size, value.mode, value.mtime_ns, digest)
    return new


def status(regions: Regions) -> Status:
    new = resolve_digests(regions)
    result = Status()
    for path, entry in new.items():
        old = regions.old.get(path)
        if old is None:
            result.added.append((path, entry.kind))
        elif old.kind != entry.kind:
            result.removed.append((path, old.kind))
            result.added.append((path, entry.kind))
        elif not old.same_content(entry):
            result.modified.append((path, entry.kind))
    for path, entry in regions.old.items():
        if path not in new:
            result.removed.append((path, entry.kind))
    result.added = _topmost(result.added)
    result.removed = _topmost(result.removed)
    result.modified.sort()
    return result


@dataclass
class Committed:
    header: Header
    delta: list[Entry]
    entries: dict[str, Entry]
    counts: dict[str, int]
    uploaded: int
    notice: str | None = None


def _prune_removals(delta: list[Entry]) -> list[Entry]:
    """One removal per removed directory: apply_delta sweeps what is below it."""
    removed_dirs: set[str] = set()
    out = []
    for entry in delta:  # make_delta lists removals sorted: parents come first
        if entry.kind == REMOVED:
            parent = posixpath.dirname(entry.path)
            below = False
            while parent:
                if parent in removed_dirs:
                    below = True
                    break
                parent = posixpath.dirname(parent)
            if below:
                continue
            removed_dirs.add(entry.path)
        out.append(entry)
    return out


@locks.holding_shared("commit")
def build(repo: Repository, base: Header, regions: Regions, upper: Upper,
          message: str = "", version: str | None = None, tags: list[str] | None = None,
          reporter: Reporter | None = None) -> Committed:
    """Upload the upper files and publish the child version (a worker thread;
    changes are held meanwhile, so the files do not move under it)."""
    reporter = reporter or Reporter()
    notice = None
    try:
        latest = cat.Catalog(repo).resolve(cat.Ref(project=base.project, name=base.name))
        if latest.id != base.id:
            notice = (f"the mounted version {base.version} ({base.id}) is no longer the "
                      f"latest ({latest.version}, {latest.id}): the commit is a child of "
                      f"{base.version}")
    except NotFoundError:
        pass
    items = {p: v for p, v in regions.new.items() if isinstance(v, SourceItem)}
    built, packer = build_tree(repo, {}, dict(items), reporter)
    new: dict[str, Entry] = {}
    for path, value in regions.new.items():
        if isinstance(value, SourceItem):
            # the data file's own mode and mtime are the upper layer's, not the user's
            new[path] = dataclasses.replace(built[path], mode=value.mode,
                                            mtime_ns=value.mtime_ns)
        else:
            new[path] = value
    delta = _prune_removals(make_delta(regions.old, new))
    if not delta:
        raise UsageError("nothing to commit: the mounted version has no changes")
    changes = compare(regions.old, new)
    header = new_header(repo, base.project, base.name, version, tags, [base.id], message)
    depth = base.chain_depth + 1
    manifest_entries: Iterable[Entry]
    if depth > MAX_CHAIN_DEPTH:
        # streamed from the tree index, the delta laid over it (bounded memory)
        header.snapshot, header.chain_depth = True, 1
        manifest_entries = SnapshotEntries(repo, base, delta)
    else:
        header.snapshot, header.chain_depth = False, depth
        manifest_entries = delta
    check_packs_exist(repo, packer.reused_packs)
    header.stats = {**_totals(base, regions.old, new), **changes.counts,
                    "uploaded_bytes": packer.stats.bytes_uploaded}
    attempts: list[list[str]] = []
    # where the journal stood when the commit began: a restart finds the same
    # position only if nothing was edited after it (see open_upper)
    position = {"gen": upper.gen, "journal": upper.journal_bytes}

    def remember(version_id: str, version_text: str) -> None:
        attempts.append([version_id, version_text])
        upper.write_commit({"parent": base.id, "project": base.project, "name": base.name,
                            **position, "attempts": attempts})

    done = Committed(header, delta, new, changes.counts, packer.stats.bytes_uploaded, notice)
    try:
        done.header = publish(repo, header, manifest_entries, version is not None,
                              remember)
    except Exception as exc:
        if not attempts:
            raise
        try:
            published = settle(repo, header, attempts)
        except StoreError as unknown:
            raise OutcomeUnknown(f"{exc}; {unknown}: `dsfs commit` checks again first",
                                 done) from exc
        if published is None:
            raise
        done.header = published  # the claim got written; its reply did not come back
    return done


def _totals(base: Header, old: Tree, new: dict[str, Entry]) -> dict[str, int]:
    files = base.stats.get("files", 0)
    size = base.stats.get("size", 0)
    for entry in old.values():
        if entry.kind in (FILE, SYMLINK):
            files -= 1
            size -= entry.size if entry.kind == FILE else 0
    for entry in new.values():
        if entry.kind in (FILE, SYMLINK):
            files += 1
            size += entry.size if entry.kind == FILE else 0
    return {"files": files, "size": size}


def finished_attempt(repo: Repository, upper: Upper) -> Header | None:
    """After a restart: the version an interrupted commit did publish, if any."""
    record = upper.read_commit()
    if not record:
        return None
    attempts = [(a[0], a[1]) for a in record.get("attempts", [])]
    stub = Header(id="0" * 32, project=record.get("project", ""),
                  name=record.get("name", ""), version="")
    return find_published(repo, stub, attempts)


def same_position(record: dict[str, Any], upper: Upper) -> bool:
    """Whether nothing was edited since the commit ``record`` describes began."""
    return record.get("gen") == upper.gen and record.get("journal") == upper.journal_bytes


def open_upper(repo: Repository, header: Header, root: Path
               ) -> tuple[Upper, Header, list[Record], str | None]:
    """Open (and lock) the overlay at ``root`` for a mount of ``header``; returns
    the upper layer, the version to mount, the records to replay and a notice.

    An overlay with edits keeps the version they were made on (mounting another
    would silently apply them to different files); an interrupted commit that
    did publish is finished here (the overlay moves onto the child)."""
    upper = Upper(root)
    upper.open()
    try:
        state = upper.load()
        store_id = repo.store_id.hex()
        if state is not None and state.get("store_id") != store_id:
            if state["records"] or upper.read_commit() is not None:
                raise ConflictError(f"overlay {root} holds edits of a version of another "
                                    f"store ({state.get('store_id')}); use another --overlay")
            state = None  # no edits: nothing ties it to its old store (issue 13)
        notice = None
        recovered = False
        records: list[Record] = list(state["records"]) if state else []
        base_id = state["base"] if state else header.id
        pending = upper.read_commit()
        if pending is not None:
            published = finished_attempt(repo, upper)
            if published is not None and published.id == base_id:
                # killed after the rebase wrote its snapshot: already on the child
                notice = (f"finished an interrupted commit: the overlay is now on "
                          f"{published.version} ({published.id})")
                recovered = True
                upper.recovered = published.id
            elif (published is not None and pending.get("parent") == base_id
                    and same_position(pending, upper)):
                notice = (f"finished an interrupted commit: the overlay is now on "
                          f"{published.version} ({published.id})")
                base_id, records, recovered = published.id, [], True
                upper.recovered = published.id
            elif published is not None:
                notice = (f"an interrupted commit published {published.version} "
                          f"({published.id}) but the overlay was edited after it began: "
                          f"the edits stay on {base_id}")
            upper.clear_commit()
        if records and base_id != header.id:
            notice = (f"overlay {root} holds edits of version {base_id}: mounting that "
                      f"version, not {header.id} (commit or discard the edits first)")
        if base_id != header.id and (records or recovered):
            header = repo.header(base_id)
            header.tags = cat.Catalog(repo).tags(header)
        return upper, header, records, notice
    except BaseException:
        upper.close()
        raise
