"""How long engine operations talk to whoever called them.

The engine never prints.  It tells a ``Reporter`` about warnings and progress;
the CLI passes one that draws progress bars on a terminal, the Python API a
silent one that sends warnings to the ``dsfs`` logger.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("dsfs")


class Progress:
    """A running count towards a total; ``advance`` may be called from threads."""

    def advance(self, amount: int = 1) -> None:  # noqa: B027 - silent by default
        """Count ``amount`` more units as done."""


class Reporter:
    """Silent reporter: warnings go to the log, progress nowhere."""

    def warn(self, message: str) -> None:
        log.warning(message)

    def info(self, message: str) -> None:
        log.info(message)

    def note(self, message: str) -> None:
        """Something done differently from what was literally asked; shown even
        with -q, since it changes what was published."""
        log.warning(message)

    @contextmanager
    def progress(self, label: str, total: int, unit: str = "") -> Iterator[Progress]:
        yield Progress()
