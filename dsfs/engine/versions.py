"""Making versions: create a draft, add and remove files, close it; sync a
folder in one step; squash; tag; delete."""

from __future__ import annotations

import copy
import heapq
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from dsfs import catalog as cat
from dsfs.engine import attributes, dirtree, draftops, drafts, external, locks, treewalk
from dsfs.engine.building import DeltaBuilder, join, sync_folder
from dsfs.engine.dirtree import DirTree
from dsfs.engine.drafts import Draft
from dsfs.engine.latest import LatestWatch
from dsfs.engine.packer import Packer, PackStats
from dsfs.engine.publish import check_packs_exist, find_published, publish
from dsfs.engine.scan import (
    SourceItem,
    normalize_dataset_path,
    resolve_folder,
    scan,
    scan_folder,
)
from dsfs.engine.tree import (
    MAX_CHAIN_DEPTH,
    Tree,
    check_structure,
)
from dsfs.engine.treeindex import Decoder
from dsfs.errors import ConflictError, NotFoundError, UsageError
from dsfs.format.manifest import DIR, FILE, SYMLINK, Entry, Header, manifest_key
from dsfs.report import Reporter
from dsfs.repository import Repository


def _check_name(value: str, what: str) -> str:
    return cat.check_word(value, what, slash=what != "name")


def check_tags(tags: list[str] | None) -> list[str]:
    return sorted({cat.check_word(t, "tag") for t in tags or []})


def new_header(
    repo: Repository,
    project: str,
    name: str,
    version: str | None = None,
    tags: list[str] | None = None,
    parents: list[str] | None = None,
    description: str = "",
) -> Header:
    """The header of a version about to be built; ``parents`` are resolved ids."""
    project, name = _check_name(project, "project"), _check_name(name, "name")
    claims = cat.Catalog(repo).claimed_versions(project, name)
    if version is not None:
        version = _check_name(version, "version")
        if version in claims:
            raise ConflictError(f"version {version} of {project}/{name} already exists")
    else:
        version = cat.next_patch_version(list(claims))
    return Header(
        id=uuid.uuid4().hex,
        project=project,
        name=name,
        version=version,
        parents=[repo.header(p).id for p in parents or []],
        tags=check_tags(tags),
        description=description,
    )


def create(
    repo: Repository,
    project: str,
    name: str,
    version: str | None = None,
    tags: list[str] | None = None,
    parents: list[str] | None = None,
    description: str = "",
) -> Draft:
    """A new draft, saved on this machine and made the current one."""
    header = new_header(repo, project, name, version, tags, parents, description)
    draft = Draft(header, repo.store.url, repo.store_id.hex(), version is not None)
    drafts.save(draft, make_current=True)
    return draft


def add_files(draft: Draft, paths: list[str], dataset_folder: str = "",
              wildcard: str | list[str] | None = None, recursive: bool = True,
              reporter: Reporter | None = None) -> int:
    """Record local files for the draft (one operation per path, each
    streamed to a file of the draft, in walking order); returns how many
    entries were added.  Several wildcards: the files that match any of them."""
    wildcards = [wildcard] if wildcard is None or isinstance(wildcard, str) else wildcard
    added = 0
    start = 0
    while start < len(paths):
        if "://" in paths[start]:
            # a run of URLs (external objects, s3:// folders): listed in threads,
            # recorded as one operation (a later URL wins a path)
            end = start
            while end < len(paths) and "://" in paths[end]:
                end += 1
            added += draft.add_items(external.scan_many(
                paths[start:end], dataset_folder, [w for w in wildcards if w], recursive))
            draft.ops[-1]["external"] = True  # close hashes these ahead, in threads
            start = end
            continue
        scans = [scan(paths[start], dataset_folder, pattern, recursive, reporter)
                 for pattern in wildcards]
        added += draft.add_items(scans[0] if len(scans) == 1 else _union(scans))
        start += 1
    drafts.save(draft)
    return added


def _union(scans: list[Iterator[SourceItem]]) -> Iterator[SourceItem]:
    """Several scans of one path (one per wildcard) as one, in walking order,
    each path once."""
    last = None
    for item in heapq.merge(*scans, key=lambda i: dirtree.dfs_key(i.path)):
        if item.path != last:
            last = item.path
            yield item


def mirror_folder(draft: Draft, folder: str, dataset_folder: str = "",
                  reporter: Reporter | None = None) -> None:
    """Make ``dataset_folder`` of the draft an exact copy of ``folder``."""
    draft.add_mirror(normalize_dataset_path(dataset_folder),
                     scan_folder(folder, dataset_folder, reporter))
    drafts.save(draft)


def remove_files(draft: Draft, patterns: list[str]) -> None:
    for pattern in patterns:
        # an external file's URL is a pattern too (kept as given)
        draft.add_removal(pattern if "://" in pattern
                          else normalize_dataset_path(pattern) or pattern)
    drafts.save(draft)


@dataclass
class CloseResult:
    header: Header
    changes: dict[str, int] = field(default_factory=dict)
    stats: PackStats = field(default_factory=PackStats)
    created: bool = True


def preview(repo: Repository, draft: Draft) -> dict[str, Entry | SourceItem]:
    """What the draft's tree will be, without hashing: its parents' merged
    tree with the draft's operations applied (local files as scanned).  The
    result is a dict of every path: for callers that want the whole tree."""
    base = dirtree.tree_of(repo, [repo.header(p) for p in draft.header.parents])
    decoder = Decoder()
    return {path: decoder.decode(path, value) if isinstance(value, bytes) else value
            for path, value in draftops.new_tree(dirtree.walk(base), draft, Reporter())}


def build_tree(
    repo: Repository,
    base: Tree,
    desired: dict[str, Entry | SourceItem],
    reporter: Reporter,
    trust_mtime: bool = False,
) -> tuple[Tree, Packer]:
    """Hash and pack every file that needs it; return the new tree."""
    repo.sync_pack_index()
    packer = Packer(repo)
    to_hash = []
    tree: Tree = {}
    for path, value in desired.items():
        if isinstance(value, Entry):
            tree[path] = value
            continue
        old = base.get(path)
        if value.kind == FILE:
            if (trust_mtime and old is not None and old.kind == FILE and old.size == value.size
                    and old.mtime_ns == value.mtime_ns and old.mode == value.mode):
                tree[path] = old
            else:
                to_hash.append(value)
        elif value.kind == SYMLINK:
            tree[path] = Entry(path, SYMLINK, value.size, value.mode, value.mtime_ns,
                               target=value.target)
        else:
            tree[path] = Entry(path, DIR, 0, value.mode, value.mtime_ns)
    total = sum(i.size for i in to_hash)
    try:
        with reporter.progress("hashing and uploading", total, unit="B") as progress:
            pending = []
            for item in to_hash:
                pending.append((item, *packer.hash_file(item.source, progress)))
        packer.finish()
    except BaseException:
        packer.abort()
        raise
    for item, digest, size, refs, st in pending:
        entry = Entry(item.path, FILE, size, st.st_mode, st.st_mtime_ns, digest,
                      packer.resolve(refs))
        old = base.get(item.path)
        tree[item.path] = old if old is not None and old.same_content(entry) else entry
    check_structure(tree)
    return tree, packer


def build_version(repo: Repository, header: Header,
                  walk: Callable[[DeltaBuilder, DirTree], None], reporter: Reporter,
                  trust_mtime: bool = False, force_snapshot: bool = False,
                  packing: bool = True) -> DeltaBuilder:
    """Stream the new tree against the parents' merged tree: ``walk(builder,
    base)`` hands every path to the builder, which hashes, packs and spools
    the delta.  A snapshot (the whole tree) once the chain would pass
    ``MAX_CHAIN_DEPTH``.  The caller closes the builder."""
    parent_headers = [repo.header(p) for p in header.parents]
    depth = 1 + max((h.chain_depth for h in parent_headers), default=0)
    snapshot = force_snapshot or depth > MAX_CHAIN_DEPTH
    base = dirtree.tree_of(repo, parent_headers)
    packer = None
    if packing:
        repo.sync_pack_index()
        packer = Packer(repo)
    try:
        builder = DeltaBuilder(repo, packer, snapshot, trust_mtime)
    except BaseException:
        if packer is not None:
            packer.abort()
        raise
    builder.depth = 1 if snapshot else depth
    try:
        with reporter.progress("hashing and uploading", 0, unit="B") as progress:
            builder.progress = progress
            walk(builder, base)
        builder.finish()
    except BaseException:
        if packer is not None:
            packer.abort()
        builder.close()
        raise
    return builder


def finish_version(repo: Repository, header: Header, built: DeltaBuilder,
                   explicit_version: bool,
                   on_attempt: Callable[[str, str], None] | None = None) -> CloseResult:
    """Publish what ``build_version`` built (the caller closes ``built``)."""
    header.snapshot, header.chain_depth = built.snapshot, built.depth
    packer = built.packer
    if packer is not None:
        check_packs_exist(repo, packer.reused_packs)
    totals = built.totals
    header.stats = {"files": totals.files, "size": totals.size, **totals.counts,
                    "uploaded_bytes": packer.stats.bytes_uploaded if packer else 0}
    published = publish(repo, header, built.spool, explicit_version, on_attempt)
    return CloseResult(published, totals.counts, packer.stats if packer else PackStats())


@locks.holding_shared("close")
def close(repo: Repository, draft_id: str | None = None,
          reporter: Reporter | None = None) -> CloseResult:
    """Hash, dedup, pack, upload and publish a draft, streamed: the parents'
    tree with the draft's operations applied (``draftops``) is joined with
    the parents' tree, in bounded memory."""
    reporter = reporter or Reporter()
    draft = drafts.load(draft_id)
    with drafts.closing_lock(draft.header.id):
        draft = drafts.load(draft.header.id)  # re-read: another closer may have finished
        _check_store(repo, draft)
        done = find_published(repo, draft.header, draft.attempts)
        if done is not None:  # an earlier run got through but died before cleaning up
            drafts.remove(draft.header.id)
            return CloseResult(done, {}, PackStats())
        header = copy.deepcopy(draft.header)
        built = _build_draft(repo, draft, header, reporter)
        try:
            def remember(version_id: str, version: str) -> None:
                draft.attempts.append((version_id, version))
                drafts.save(draft)

            result = finish_version(repo, header, built, draft.explicit_version,
                                    on_attempt=remember)
        finally:
            built.close()
        drafts.remove(draft.header.id)
    return result


@locks.holding_shared("upload")
def upload(repo: Repository, draft_id: str | None = None,
           reporter: Reporter | None = None) -> PackStats:
    """Hash, pack and upload what the draft adds, without publishing it
    (ClearML's ``upload()``); ``close`` then uploads nothing again.  The packs
    are unreferenced until the version is published, so a ``gc`` after the
    grace period (24 h by default) may remove them: close the draft before."""
    reporter = reporter or Reporter()
    draft = drafts.load(draft_id)
    with drafts.closing_lock(draft.header.id):
        draft = drafts.load(draft.header.id)
        _check_store(repo, draft)
        built = _build_draft(repo, draft, copy.deepcopy(draft.header), reporter)
        built.close()
    assert built.packer is not None
    return built.packer.stats


def _build_draft(repo: Repository, draft: Draft, header: Header,
                 reporter: Reporter) -> DeltaBuilder:
    """Hash, pack and spool a draft's version (``build_version``): the
    parents' tree with the draft's operations applied, joined with it."""
    trust = bool(draft.ops) and all(op.get("trust_mtime") for op in draft.ops
                                    if op["op"] != "remove")

    def walk(builder: DeltaBuilder, base: DirTree) -> None:
        rows = draftops.new_tree(dirtree.walk(base), draft, reporter)
        if not any(op.get("external") for op in draft.ops):
            join(builder, base, rows)
            return
        builder.prehasher = external.Prehasher(rows, builder.progress,
                                               external.memo_dir(repo.cache_root))
        try:
            join(builder, base, builder.prehasher.rows())
        finally:
            builder.prehasher.close()

    return build_version(repo, header, walk, reporter, trust_mtime=trust)


def _check_store(repo: Repository, draft: Draft) -> None:
    if draft.store_id != repo.store_id.hex():
        raise UsageError(
            f"draft {draft.header.id} belongs to the store {draft.store_url}, not "
            f"{repo.store.url}: pass --store {draft.store_url}"
        )


@locks.holding_shared("sync")
def sync(repo: Repository, folder: str, project: str, name: str,
         parents: list[str] | None = None, version: str | None = None,
         tags: list[str] | None = None, description: str = "",
         reporter: Reporter | None = None, checksum: bool = False,
         require_latest: bool = False) -> CloseResult:
    """Mirror ``folder`` into a child of the latest version (or of ``parents``).

    The folder is walked once, joined with the parents' tree directory by
    directory (``building.sync_folder``), in bounded memory.  Versions of the
    dataset published meanwhile are reported (see ``engine/latest.py``);
    ``require_latest`` fails instead (ConflictError)."""
    reporter = reporter or Reporter()
    root = resolve_folder(folder, reporter)
    watch = LatestWatch.start(repo, project, name, parents, require_latest)
    parents = watch.parents
    header = new_header(repo, project, name, version, tags, parents, description)

    def walk(builder: DeltaBuilder, base: DirTree) -> None:
        sync_folder(builder, base, root, reporter)

    built = build_version(repo, header, walk, reporter, trust_mtime=not checksum)
    try:
        watch.check()
        if parents and not built.changed:
            watch.report(None, reporter)
            assert built.packer is not None
            return CloseResult(repo.header(parents[0]), built.totals.counts,
                               built.packer.stats, created=False)
        with watch.publishing(version is not None) as strict:
            result = finish_version(repo, header, built, strict)
    finally:
        built.close()
    watch.report(result.header, reporter)
    return result


@locks.holding_shared("squash")
def squash(repo: Repository, version_ids: list[str], project: str, name: str,
           version: str | None = None, description: str = "") -> CloseResult:
    """A parentless snapshot holding the merged trees of ``version_ids``."""
    if not version_ids:
        raise UsageError("squash needs at least one version")
    project, name = _check_name(project, "project"), _check_name(name, "name")
    claims = cat.Catalog(repo).claimed_versions(project, name)
    header = Header(id=uuid.uuid4().hex, project=project, name=name,
                    version=version or cat.next_patch_version(list(claims)),
                    description=description or f"squash of {', '.join(version_ids)}")
    if len(version_ids) == 1:  # streamed from the tree index, in bounded memory
        entries = treewalk.TreeEntries(repo, repo.header(version_ids[0]))
        files = size = 0
        for entry in entries:
            if entry.kind != DIR:
                files += 1
                size += entry.size if entry.kind == FILE else 0
        counts = {"added": files, "removed": 0, "modified": 0}
        header.snapshot, header.chain_depth = True, 1
        header.stats = {"files": files, "size": size, **counts, "uploaded_bytes": 0}
        published = publish(repo, header, entries, version is not None)
        return CloseResult(published, counts, PackStats())
    tree = dirtree.MergedTree([dirtree.open_version_tree(repo, repo.header(v))
                               for v in version_ids])

    def walk(builder: DeltaBuilder, _base: DirTree) -> None:
        for path, enc in dirtree.walk(tree):
            builder.keep(path, enc)
        builder.totals.added = builder.totals.files

    built = build_version(repo, header, walk, Reporter(), force_snapshot=True, packing=False)
    try:
        return finish_version(repo, header, built, version is not None)
    finally:
        built.close()


def set_tags(repo: Repository, header: Header, add: list[str], remove: list[str]) -> list[str]:
    catalog = cat.Catalog(repo)
    tags = set(catalog.tags(header))
    tags |= set(check_tags(add))
    unknown = [t for t in remove if t not in tags]
    if unknown:
        raise NotFoundError(f"version {header.id} has no tag {unknown[0]!r}")
    tags -= set(remove)
    catalog.set_tags(header.id, sorted(tags))
    return sorted(tags)


#: How long ``delete`` waits, by default, for closes and commits to finish.
DELETE_WAIT_SECONDS = 600.0


def delete(repo: Repository, header: Header, force: bool = False,
           wait_seconds: float = DELETE_WAIT_SECONDS, reporter: Reporter | None = None) -> str:
    """Remove a version; returns a sentence saying what was done.

    Under the store's exclusive lock, as gc: a close or commit building a child
    of this version holds a shared lock from before it checks that its parents
    exist until its claim is written, so the children seen here are all there
    will be, and no child can be published on a manifest deleted meanwhile."""
    with locks.exclusive(repo, "delete", wait_seconds, reporter):
        return delete_holding_the_store(repo, header, force)


def delete_holding_the_store(repo: Repository, header: Header, force: bool = False) -> str:
    """``delete`` for a caller that holds the store's exclusive lock."""
    catalog = cat.Catalog(repo)
    children = catalog.children(header.id)
    if children and not force:
        names = ", ".join(f"{c.id[:12]} ({c.version})" for c in children[:5])
        raise ConflictError(
            f"{len(children)} version(s) depend on {header.id}: {names}; "
            "delete them first or use --force"
        )
    repo.store.delete(cat.claim_key(header.project, header.name, header.version))
    repo.store.delete(cat.tags_key(header.id))
    if children:
        return (f"hid {header.id}; its manifest stays because {len(children)} version(s) "
                "are built on it")
    attributes.delete_metadata(repo, header.id)
    repo.store.delete(manifest_key(header.id))
    repo.forget_manifest(header.id)
    return f"deleted {header.id}; run 'dsfs gc' to free its data"

