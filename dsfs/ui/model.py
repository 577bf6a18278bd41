"""What the pages show, gathered through the engine's public functions.

Nothing here knows HTML.  Lists that can be long (a version's changes, a
folder's entries, a diff) are read a page at a time: a diff or a walk of the
tree index is a stream, so page ``k`` costs the rows before it and no more;
a folder's listing comes whole from its memoized tree-index record (one
cursor range) and is sliced.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from dsfs.catalog import Catalog, version_sort_key
from dsfs.engine import treewalk
from dsfs.engine.treedirs import LmdbTreeSource
from dsfs.errors import DsfsError, NotFoundError
from dsfs.format.manifest import DIR, FILE, Entry, Header
from dsfs.repository import Repository
from dsfs.ui import walk
from dsfs.ui.svg import Node

PAGE = 100
_ID = re.compile(r"^[0-9a-f]{32}$")
_SQUASH = re.compile(r"^squash of ([0-9a-f]{32}(?:, [0-9a-f]{32})*)$")

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
               ".gif": "image/gif", ".webp": "image/webp", ".bmp": "image/bmp"}
TEXT_EXTS = {".txt", ".md", ".rst", ".py", ".c", ".h", ".cfg", ".ini", ".toml", ".yaml",
             ".yml", ".log", ".xml", ".html", ".sh", ".js", ".css", ".tsv", ".csv", ".json",
             ".jsonl", ".ndjson"}
#: Bytes read for a text head and the largest image shown inline.
TEXT_HEAD = 4096
IMAGE_LIMIT = 1 << 20
JSON_LIMIT = 256 * 1024
#: Previews on a version page, and files looked at to find them.
PREVIEWS, PREVIEW_SCAN = 6, 2000


def check_id(text: str) -> str:
    if not _ID.match(text):
        raise NotFoundError(f"no version {text!r}")
    return text


# -- datasets ---------------------------------------------------------------------

def dataset_key(project: str, name: str) -> str:
    """A URL-safe, reversible name for a dataset."""
    raw = f"{project}\x00{name}".encode("utf-8", "surrogateescape")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_dataset_key(key: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))
        project, name = raw.decode("utf-8", "surrogateescape").split("\x00")
    except (ValueError, binascii.Error):
        raise NotFoundError(f"no dataset {key!r}") from None
    return project, name


@dataclass
class Catalogue:
    """What the store holds, read once for several pages: every visible
    version's header (tags as currently set) and the ids of all claimed
    versions (a version not among them is deleted)."""

    headers: list[Header]
    claimed: set[str]

    @classmethod
    def read(cls, repo: Repository) -> Catalogue:
        catalog = Catalog(repo)
        return cls(catalog.visible_headers(), catalog.claimed_version_ids())

    def of(self, project: str, name: str) -> list[Header]:
        return [h for h in self.headers if (h.project, h.name) == (project, name)]


@dataclass
class DatasetRow:
    project: str
    name: str
    key: str
    versions: list[Header] = field(default_factory=list)

    @property
    def latest(self) -> Header:
        return self.versions[-1]

    @property
    def tags(self) -> list[str]:
        return sorted({t for h in self.versions for t in h.tags})


def matches(row: DatasetRow, query: str) -> bool:
    """``query`` words all found (case-insensitively) in the project, the name,
    a tag or a version string; ``tag:T`` asks for a tag exactly."""
    for word in query.lower().split():
        if word.startswith("tag:"):
            if word[4:] not in {t.lower() for t in row.tags}:
                return False
            continue
        hay = [row.project.lower(), row.name.lower(), *(t.lower() for t in row.tags),
               *(h.version.lower() for h in row.versions)]
        if not any(word in h for h in hay):
            return False
    return True


def datasets(known: Catalogue, query: str = "") -> dict[str, list[DatasetRow]]:
    """Datasets by project (both sorted), filtered by ``query``."""
    rows: dict[tuple[str, str], DatasetRow] = {}
    for header in known.headers:
        key = (header.project, header.name)
        if key not in rows:
            rows[key] = DatasetRow(header.project, header.name, dataset_key(*key))
        rows[key].versions.append(header)  # visible_headers sorts by version
    out: dict[str, list[DatasetRow]] = {}
    for key in sorted(rows):
        if not query or matches(rows[key], query):
            out.setdefault(key[0], []).append(rows[key])
    return out


# -- lineage ----------------------------------------------------------------------------

def squash_sources(header: Header) -> list[str]:
    """The versions a squash was made of, when its description says so (the
    description ``dsfs squash`` writes unless given another)."""
    found = _SQUASH.match(header.description)
    return found.group(1).split(", ") if found else []


def counts_text(header: Header) -> str:
    s = header.stats
    return f"+{s.get('added', 0)} -{s.get('removed', 0)} ~{s.get('modified', 0)}"


def lineage(repo: Repository, known: Catalogue, project: str, name: str,
            current: str | None = None) -> list[Node]:
    """The dataset's versions and every ancestor they have (deleted ones, and
    versions of other datasets, marked), as graph nodes."""
    claimed = known.claimed
    own = known.of(project, name)
    if not own:
        raise NotFoundError(f"no dataset {project}/{name}")
    nodes: dict[str, Node] = {}
    todo: list[tuple[str, Header | None]] = [(h.id, h) for h in own]
    while todo:
        vid, header = todo.pop()
        if vid in nodes:
            continue
        if header is None:
            try:
                header = repo.header(vid)
            except DsfsError:
                nodes[vid] = Node(vid, "(missing)", vid[:12], state="missing")
                continue
        state = ("deleted" if vid not in claimed
                 else "ok" if (header.project, header.name) == (project, name) else "other")
        title = header.version if state != "other" else (
            f"{header.project}/{header.name} {header.version}")
        sources = squash_sources(header)
        node = Node(vid, title, f"{vid[:12]} · {counts_text(header)}", state=state,
                    squash=bool(sources), current=vid == current,
                    parents=list(header.parents), created=header.created)
        nodes[vid] = node
        todo.extend((p, None) for p in header.parents)
        for source in sources:
            if repo.cached_header(source) is not None or source in claimed:
                node.squashed_from.append(source)
                todo.append((source, None))
    return list(nodes.values())


# -- a version ------------------------------------------------------------------------

@dataclass
class VersionInfo:
    header: Header
    tags: list[str]
    deleted: bool
    parents: list[Header | None]
    squashed_from: list[str]


def version(repo: Repository, known: Catalogue, version_id: str) -> VersionInfo:
    header = repo.header(check_id(version_id))
    parents: list[Header | None] = []
    for p in header.parents:
        try:
            parents.append(repo.header(p))
        except DsfsError:
            parents.append(None)
    deleted = header.id not in known.claimed
    current = [h.tags for h in known.headers if h.id == header.id]
    tags = current[0] if current else header.tags
    return VersionInfo(header, tags, deleted, parents, squash_sources(header))


@dataclass
class Page:
    """One page of a long list in path order: ``rows`` after the cursor
    ``after`` (the last path of the page before; "" for the first page)."""

    rows: list
    after: str
    more: bool

    @property
    def next_after(self) -> str:
        return self.rows[-1][0] if self.rows else self.after


def page_of(rows: Iterator, after: str, size: int | None = None) -> Page:
    got = list(itertools.islice(rows, (size or PAGE) + 1))
    return Page(got[:size or PAGE], after, len(got) > (size or PAGE))


def tree(repo: Repository, header: Header) -> LmdbTreeSource:
    return treewalk.open_tree(repo, header)


def changes(repo: Repository, header: Header, against: str | None, after: str
            ) -> tuple[str | None, Page]:
    """What ``header`` changed against one of its parents (the first unless
    ``against`` names another); every file added for a version without one.
    One page, from the first path after ``after``."""
    if not header.parents:
        files = walk.files_after(tree(repo, header), after)
        return None, page_of(((e.path, None, e) for e in files), after)
    parent = against if against in header.parents else header.parents[0]
    rows = walk.diff_after(tree(repo, repo.header(parent)), tree(repo, header), after)
    return parent, page_of(rows, after)


def diff(repo: Repository, a: Header, b: Header, after: str) -> Page:
    return page_of(walk.diff_after(tree(repo, a), tree(repo, b), after), after)


def folder(repo: Repository, header: Header, path: str, start: str
           ) -> tuple[int, list[tuple[str, Entry]], str | None]:
    """(number of entries, one page of them: those after the name ``start``,
    the cursor of the next page or None) of folder ``path``; NotFound if the
    version has no such folder.  Reads and decodes only the page."""
    source = tree(repo, header)
    found = source.entry(path)
    if found is None or found.kind != DIR:
        raise NotFoundError(f"no folder {path!r} in version {header.id}")
    return walk.folder_page(source, path, start, PAGE)


def entry(repo: Repository, header: Header, path: str) -> Entry:
    """The entry at ``path`` in the version: looked up in its tree, never on
    a local file system, so no path can name anything outside the version."""
    found = tree(repo, header).entry(path) if path else None
    if found is None:
        raise NotFoundError(f"no file {path!r} in version {header.id}")
    return found


# -- contents ---------------------------------------------------------------------------

def read_head(repo: Repository, entry: Entry, limit: int) -> bytes:
    """The first ``limit`` bytes of a file, through the shared chunk cache
    (fetched into it on a miss, verified against their digests)."""
    refs, covered = [], 0
    for ref in entry.chunks:
        if covered >= limit:
            break
        refs.append(ref)
        covered += ref.length
    repo.cache.fetch(repo.store, refs)
    data = b"".join(repo.cache.read(ref.chunk_id) for ref in refs)
    return data[:limit]


@dataclass
class Preview:
    path: str
    kind: str                 # image, csv, json, text, binary, none
    size: int
    text: str = ""
    rows: list[list[str]] = field(default_factory=list)
    data_uri: str = ""
    note: str = ""


def _ext(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def previewable(entry: Entry) -> bool:
    ext = _ext(entry.path)
    return entry.kind == FILE and (ext in TEXT_EXTS or (ext in IMAGE_TYPES
                                                       and entry.size <= IMAGE_LIMIT))


def preview(repo: Repository, entry: Entry) -> Preview:
    ext, size = _ext(entry.path), entry.size
    if entry.kind != FILE:
        target = f" → {entry.target}" if entry.target is not None else ""
        return Preview(entry.path, "none", size, note=f"a {entry.kind}{target}")
    if ext in IMAGE_TYPES:
        if size > IMAGE_LIMIT:
            return Preview(entry.path, "none", size, note="image too large to show inline")
        data = read_head(repo, entry, size)
        uri = f"data:{IMAGE_TYPES[ext]};base64,{base64.b64encode(data).decode()}"
        return Preview(entry.path, "image", size, data_uri=uri)
    if ext == ".json" and size <= JSON_LIMIT:
        data = read_head(repo, entry, size)
        try:
            pretty = json.dumps(json.loads(data), indent=2, ensure_ascii=False)
            lines = pretty.splitlines()
            note = f"first 200 of {len(lines)} lines" if len(lines) > 200 else ""
            return Preview(entry.path, "json", size, text="\n".join(lines[:200]), note=note)
        except (ValueError, UnicodeDecodeError):
            pass  # shown as text
    head = read_head(repo, entry, TEXT_HEAD)
    if b"\x00" in head:
        return Preview(entry.path, "binary", size, note="binary content")
    text = head.decode("utf-8", "replace")
    if size > len(head):
        text = text.rsplit("\n", 1)[0] if "\n" in text else text
    lines = text.splitlines()[:40]
    if ext in (".csv", ".tsv"):
        dialect = "excel-tab" if ext == ".tsv" else "excel"
        rows = list(itertools.islice(csv.reader(io.StringIO("\n".join(lines)), dialect), 15))
        return Preview(entry.path, "csv", size, rows=rows)
    return Preview(entry.path, "text", size, text="\n".join(lines),
                   note="head of the file" if size > len(head) or len(lines) == 40 else "")


def first_previews(repo: Repository, header: Header) -> list[Preview]:
    """Previews of the first files (in path order) of kinds worth showing."""
    out: list[Preview] = []
    per_kind: dict[str, int] = {}
    files = walk.files_after(tree(repo, header))
    for entry in itertools.islice(files, PREVIEW_SCAN):
        if not previewable(entry):
            continue
        ext = _ext(entry.path)
        kind = "image" if ext in IMAGE_TYPES else ext if ext in (".csv", ".json") else "text"
        if per_kind.get(kind, 0) >= 2:  # a mix of kinds rather than six of one
            continue
        per_kind[kind] = per_kind.get(kind, 0) + 1
        out.append(preview(repo, entry))
        if len(out) >= PREVIEWS:
            break
    return out


def sorted_versions(headers: list[Header]) -> list[Header]:
    return sorted(headers, key=lambda h: version_sort_key(h.version))
