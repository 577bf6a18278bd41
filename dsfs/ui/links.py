"""The addresses of the pages, for the server and for a static export.

A served page can link anywhere (paging, folders, files, diffs); an exported
page links only to the pages an export writes (``index.html``,
``ds-<key>.html``, ``v-<id>.html``), and a method returns None for anything
else so that the template shows plain text instead of a dead link.  Values
in queries are percent-encoded from their UTF-8 bytes (names that are not
valid UTF-8 keep their bytes through ``surrogateescape``).
"""

from __future__ import annotations

from urllib.parse import quote

from dsfs.ui.model import dataset_key


def _q(value: str | int) -> str:
    return quote(str(value).encode("utf-8", "surrogateescape"), safe="")


def _query(params: dict[str, str | int | None]) -> str:
    pairs = [f"{k}={_q(v)}" for k, v in params.items() if v not in (None, "", 0)]
    return "?" + "&".join(pairs) if pairs else ""


class Links:
    def __init__(self, static: bool = False) -> None:
        self.static = static

    def home(self, q: str = "") -> str | None:
        if self.static:
            return None if q else "index.html"
        return "/" + _query({"q": q})

    def dataset(self, project: str, name: str) -> str:
        key = dataset_key(project, name)
        return f"ds-{key}.html" if self.static else f"/ds/{key}"

    def version(self, version_id: str, **query: str | int | None) -> str | None:
        if self.static:
            return None if any(v not in (None, "", 0) for v in query.values()) else (
                f"v-{version_id}.html")
        return f"/v/{version_id}" + _query(query)

    def file(self, version_id: str, path: str) -> str | None:
        return None if self.static else f"/v/{version_id}/file" + _query({"path": path})

    def raw(self, version_id: str, path: str) -> str | None:
        return None if self.static else f"/v/{version_id}/raw" + _query({"path": path})

    def diff(self, a: str, b: str, after: str = "") -> str | None:
        return None if self.static else "/diff" + _query({"a": a, "b": b, "after": after})

    def static_file(self, name: str) -> str:
        return name if self.static else f"/static/{name}"
