"""Printing: progress bars on a terminal, one-line errors, JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from dsfs.report import Progress, Reporter


class _BarProgress(Progress):
    def __init__(self, bar: Any) -> None:
        self._bar = bar

    def advance(self, amount: int = 1) -> None:
        self._bar.update(amount)


class TerminalReporter(Reporter):
    """Warnings on stderr; progress bars on stderr when it is a terminal."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet

    def warn(self, message: str) -> None:
        click.echo(f"dsfs: warning: {safe_path(message)}", err=True)

    def info(self, message: str) -> None:
        if not self.quiet:
            click.echo(message, err=True)

    def note(self, message: str) -> None:
        click.echo(f"dsfs: note: {safe_path(message)}", err=True)

    @contextmanager
    def progress(self, label: str, total: int, unit: str = "") -> Iterator[Progress]:
        if self.quiet or total <= 0 or not sys.stderr.isatty():
            yield Progress()
            return
        with click.progressbar(length=total, label=label, file=sys.stderr,
                               show_pos=unit != "B", show_percent=True) as bar:
            yield _BarProgress(bar)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False,
                          default=str))


def human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


_CONTROL = {c: f"\\x{c:02x}" for c in range(32) if c not in (9,)}
_CONTROL.update({10: "\\n", 13: "\\r", 0x7F: "\\x7f"})


def safe_path(path: str) -> str:
    """A name for display on one line: undecodable bytes shown as \\x escapes,
    a newline as \\n, a carriage return as \\r and other control characters
    as \\x escapes (so a name can never fake or split an output line); never
    a crash.  ``--json`` keeps names exact."""
    raw = path.encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "backslashreplace").translate(_CONTROL)
