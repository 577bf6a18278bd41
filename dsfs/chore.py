"""Background chores of a mount that must outlive their failures.

(Below every layer: the reader, the overlay and the mount all run chores.)

A mount runs a few tasks beside the FUSE loop: the overlay journal's fsync
and compaction, the reader's access-time flushes and cache eviction, the
control socket's ``accept``.  In one trio nursery with ``pyfuse3.main``, an
exception escaping any of them would cancel the loop and end the mount, so
each catches its own failures and reports them to a ``Chore``: one log line
for the first failure of a streak (and again only when the error changes),
a back-off before the next attempt (doubling up to ``longest``), and one line
when the chore works again.  The requests that need what failed get their
own errno from the adapter.
"""

from __future__ import annotations

import logging

log = logging.getLogger("dsfs.mount")


class Chore:
    """The failure streak of one background chore."""

    def __init__(self, what: str, first: float = 1.0, longest: float = 60.0) -> None:
        #: what the chore does, for the log ("making the overlay journal durable")
        self.what = what
        self.first = first
        self.longest = longest
        self.failures = 0
        self._last = ""

    @property
    def delay(self) -> float:
        """Seconds to wait before the next attempt (0 while all is well)."""
        if not self.failures:
            return 0.0
        return min(self.longest, self.first * 2 ** (self.failures - 1))

    def failed(self, exc: BaseException) -> float:
        """Note a failure (logged once per streak and kind); the back-off delay."""
        self.failures += 1
        reason = describe(exc)
        if self.failures == 1 or reason != self._last:
            # the chore in the template: the log's repeat filter groups by template
            log.warning(self.what.replace("%", "%%") + " failed: %s (retrying, backing "
                        "off up to %.0f s; the mount keeps serving)", reason, self.longest)
        self._last = reason
        return self.delay

    def succeeded(self) -> None:
        if self.failures:
            log.info(self.what.replace("%", "%%") + " works again after %d failed "
                     "attempt(s)", self.failures)
        self.failures = 0
        self._last = ""


def describe(exc: BaseException) -> str:
    """An exception on one line: its type and message, no traceback."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename is not None else ""
        return f"{exc.strerror}{where}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
