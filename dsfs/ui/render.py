"""Templates to HTML: the one module that imports jinja2.

Autoescaping is on for every template, so every value a template prints
(names, paths, tags, descriptions, file heads) is HTML-escaped; only the SVG
that ``svg.py`` built (which escapes its own text) is marked safe.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import jinja2

from dsfs.store import external
from dsfs.ui.svg import human_size

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = Path(__file__).resolve().parent / "static"


def _show(text: str) -> str:
    """A name for display: bytes that are not UTF-8 as \\x escapes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _mtime(ns: int) -> str:
    if not ns:
        return ""
    stamp = datetime.datetime.fromtimestamp(ns / 1e9, tz=datetime.timezone.utc)
    return stamp.strftime("%Y-%m-%d %H:%M")


def _created(text: str) -> str:
    return text.replace("T", " ")[:19] if text else ""


_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
# ``shown_url``: an external file's URL without its query string, which may
# hold a signature (as in every message of dsfs)
_env.filters.update(size=human_size, show=_show, mtime=_mtime, created=_created,
                    shown_url=external.shown)


def render(template: str, **context: Any) -> str:
    return _env.get_template(template).render(**context)


def static_files() -> dict[str, bytes]:
    """The files under ``/static/`` by name (the only files served from disk)."""
    return {p.name: p.read_bytes() for p in STATIC.iterdir() if p.is_file()}
