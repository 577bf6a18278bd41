"""SVG drawn on the server: the lineage graph and the statistics plots.

Every function returns a complete ``<svg>`` element as text.  Every piece of
text that came from the store (names, versions, paths, extensions) goes
through ``esc``; numbers are formatted here.  No scripts, no external
references: the pages embed the result inline.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape

NODE_W, NODE_H = 210, 46
GAP_X, GAP_Y = 28, 44
PAD = 12


def esc(text: str) -> str:
    """Text for an SVG/HTML text node or attribute (quotes too)."""
    return escape(text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"),
                  quote=True)


def human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass
class Node:
    """A version in a lineage graph."""

    id: str
    title: str          # e.g. "1.0.2"
    subtitle: str       # e.g. "a05068c2c5b6 · +3 -1 ~0"
    #: "ok", "deleted" (hidden, no claim), "missing" (no manifest), "other"
    #: (a version of another dataset).
    state: str = "ok"
    squash: bool = False
    current: bool = False
    parents: list[str] = field(default_factory=list)
    #: Versions this one was squashed from (dashed edges).
    squashed_from: list[str] = field(default_factory=list)
    created: str = ""


def _generations(nodes: dict[str, Node]) -> dict[str, int]:
    """Row of each node: one more than its lowest-drawn parent (iterative)."""
    row: dict[str, int] = {}
    for start in sorted(nodes):
        stack = [(start, False)]
        active: set[str] = set()
        while stack:
            nid, expanded = stack.pop()
            if nid in row:
                continue
            node = nodes[nid]
            ups = [p for p in node.parents + node.squashed_from if p in nodes]
            if expanded:
                active.discard(nid)
                row[nid] = 1 + max((row.get(p, -1) for p in ups), default=-1)
                continue
            if nid in active:  # a cycle in a damaged store: draw it anyway
                row[nid] = 0
                continue
            active.add(nid)
            stack.append((nid, True))
            stack.extend((p, False) for p in ups if p not in row)
    return row


def lineage(nodes: Sequence[Node], href: Callable[[str], str | None]) -> str:
    """Versions top (oldest) to bottom, one row per generation, an arrow from
    each parent to its child; squash sources dashed; deleted versions grey
    and dashed; each drawable node a link to ``href(id)``."""
    by_id = {n.id: n for n in nodes}
    if not by_id:
        return '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>'
    rows = _generations(by_id)
    layout: dict[int, list[Node]] = {}
    for node in sorted(by_id.values(), key=lambda n: (n.created, n.id)):
        layout.setdefault(rows[node.id], []).append(node)
    pos: dict[str, tuple[int, int]] = {}
    width = max(len(v) for v in layout.values()) * (NODE_W + GAP_X) - GAP_X + 2 * PAD
    height = (max(layout) + 1) * (NODE_H + GAP_Y) - GAP_Y + 2 * PAD
    for r, members in layout.items():
        span = len(members) * (NODE_W + GAP_X) - GAP_X
        left = (width - span) // 2
        for i, node in enumerate(members):
            pos[node.id] = (left + i * (NODE_W + GAP_X), PAD + r * (NODE_H + GAP_Y))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="lineage" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="lineage graph of {len(by_id)} versions">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
           'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
           'fill="#667"/></marker></defs>']
    for node in by_id.values():
        cx, cy = pos[node.id]
        for kind, ups in (("parent", node.parents), ("squash", node.squashed_from)):
            for p in ups:
                if p not in pos:
                    continue
                px, py = pos[p]
                x1, y1 = px + NODE_W // 2, py + NODE_H
                x2, y2 = cx + NODE_W // 2, cy - 2
                mid = (y1 + y2) / 2
                dash = ' stroke-dasharray="5 4"' if kind == "squash" else ""
                out.append(f'<path class="edge edge-{kind}" d="M{x1},{y1} C{x1},{mid} {x2},'
                           f'{mid} {x2},{y2}" fill="none" stroke="#667" stroke-width="1.5"'
                           f'{dash} marker-end="url(#arrow)"/>')
    for node in by_id.values():
        x, y = pos[node.id]
        classes = f"node node-{node.state}" + (" node-squash" if node.squash else "") + (
            " node-current" if node.current else "")
        fill = {"ok": "#eef4ff", "deleted": "#f2f2f2", "missing": "#fff0f0",
                "other": "#f5f0ff"}.get(node.state, "#eef4ff")
        stroke = "#d9480f" if node.current else "#3b5bdb" if node.state == "ok" else "#888"
        dash = ' stroke-dasharray="4 3"' if node.state in ("deleted", "missing") else ""
        width_attr = "3" if node.current else "1.5"
        title = node.title + ("  [deleted]" if node.state == "deleted" else "") + (
            "  [missing]" if node.state == "missing" else "") + (
            "  [squash]" if node.squash else "")
        body = (f'<g class="{classes}" data-id="{esc(node.id)}">'
                f'<title>{esc(node.id)}</title>'
                f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="7" '
                f'fill="{fill}" stroke="{stroke}" stroke-width="{width_attr}"{dash}/>'
                f'<text x="{x + 10}" y="{y + 19}" font-size="13" font-weight="bold" '
                f'fill="#222">{esc(_clip(title, 28))}</text>'
                f'<text x="{x + 10}" y="{y + 36}" font-size="11" fill="#555">'
                f'{esc(_clip(node.subtitle, 34))}</text></g>')
        link = href(node.id) if node.state != "missing" else None
        out.append(f'<a href="{esc(link)}">{body}</a>' if link else body)
    out.append("</svg>")
    return "".join(out)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def bars(rows: Sequence[tuple[str, float, str]], title: str) -> str:
    """A horizontal bar chart: one bar per (label, value, text shown beside it)."""
    label_w, bar_w, row_h = 190, 240, 20
    height = 28 + row_h * max(len(rows), 1) + 6
    width = label_w + bar_w + 170
    top = max((v for _l, v, _t in rows), default=0) or 1
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="{esc(title)}">',
           f'<text x="4" y="16" font-size="13" font-weight="bold">{esc(title)}</text>']
    for i, (label, value, text) in enumerate(rows):
        y = 28 + i * row_h
        w = max(1, round(bar_w * value / top)) if value else 0
        out.append(f'<text x="{label_w - 6}" y="{y + 14}" font-size="12" text-anchor="end">'
                   f'{esc(_clip(label, 26))}</text>'
                   f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w}" height="{row_h - 6}"'
                   f' fill="#4c6ef5"/>'
                   f'<text x="{label_w + w + 6}" y="{y + 14}" font-size="11" fill="#444">'
                   f'{esc(text)}</text>')
    if not rows:
        out.append('<text x="4" y="42" font-size="12" fill="#777">no files</text>')
    out.append("</svg>")
    return "".join(out)


def histogram(counts: Sequence[int], labels: Sequence[str], title: str) -> str:
    """Vertical bars of ``counts`` (file sizes by power-of-two bucket), the
    heights on a square-root scale so that small buckets stay visible."""
    col_w, plot_h = 22, 150
    width = 50 + col_w * max(len(counts), 1) + 50  # room for the last rotated label
    height = plot_h + 90
    top = max(counts, default=0) or 1
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot histogram" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="{esc(title)}">',
           f'<text x="4" y="16" font-size="13" font-weight="bold">{esc(title)}</text>']
    base = 26 + plot_h
    for i, count in enumerate(counts):
        h = round(plot_h * math.sqrt(count / top)) if count else 0
        x = 50 + i * col_w
        out.append(f'<rect class="bar" x="{x}" y="{base - h}" width="{col_w - 3}" height="{h}" '
                   f'fill="#2f9e44"><title>{esc(labels[i])}: {count:,} files</title></rect>')
        if count:
            out.append(f'<text x="{x + (col_w - 3) / 2}" y="{base - h - 3}" font-size="9" '
                       f'text-anchor="middle" fill="#333">{_short(count)}</text>')
        out.append(f'<text x="{x + 8}" y="{base + 8}" font-size="10" '
                   f'transform="rotate(60 {x + 8} {base + 8})">{esc(labels[i])}</text>')
    out.append(f'<line x1="48" y1="{base}" x2="{width - 6}" y2="{base}" stroke="#999"/>')
    out.append("</svg>")
    return "".join(out)


def _short(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 10_000:
        return f"{n // 1000}k"
    return str(n)
