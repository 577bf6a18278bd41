"""Logging helpers: repeated warnings and errors collapse into one line per
kind per interval, with a count.

A mount that cannot read a chunk fails every read of it, and a reader such as
``cp -r`` or a training loop asks again and again: without a limit one pass
wrote megabytes of identical tracebacks to the mount log.  ``RepeatFilter``
lets the first record of a kind through (with its traceback), drops the
others for ``interval`` seconds while counting them, and adds the count to the
first record of that kind after the interval ("... [37 more like this in the
last 60 s]").  Counts still pending at exit are logged as one line each.

A record's kind is its logger, level and message template (in a message
formatted before logging, numbers and hex ids are replaced, so that f-strings
group like ``%`` arguments).  Records below WARNING are never held back.
"""

from __future__ import annotations

import atexit
import logging
import re
import threading
import time

#: Seconds during which a kind of record is logged once.
INTERVAL = 60.0

_VARYING = re.compile(r"(?:xxh3_128:)?[0-9a-f]{16,}|0x[0-9a-fA-F]+|\d+")
_MAX_KINDS = 10_000


def _kind(record: logging.LogRecord) -> tuple[str, int, str]:
    template = record.msg if isinstance(record.msg, str) else repr(record.msg)
    if not record.args:  # a message formatted before logging: normalize its values
        template = _VARYING.sub("#", template)
    return record.name, record.levelno, template[:300]


class RepeatFilter(logging.Filter):
    """See the module docstring; thread-safe, one instance may serve many handlers."""

    def __init__(self, interval: float = INTERVAL, level: int = logging.WARNING) -> None:
        super().__init__()
        self.interval = interval
        self.level = level
        self._lock = threading.Lock()
        #: kind -> (start of its interval, records dropped in it)
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level:
            return True
        # one decision per record, also when several handlers share this filter
        decided = getattr(record, "_dsfs_repeat", None)
        if decided is not None:
            return bool(decided)
        kind = _kind(record)
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(kind)
            if seen is not None and now - seen[0] < self.interval:
                self._seen[kind] = (seen[0], seen[1] + 1)
                record._dsfs_repeat = False
                return False
            if len(self._seen) >= _MAX_KINDS:
                self._seen.clear()
            self._seen[kind] = (now, 0)
        if seen is not None and seen[1]:
            record.msg = (f"{record.getMessage()} [{seen[1]} more like this in the last "
                          f"{now - seen[0]:.0f} s]")
            record.args = None
        record._dsfs_repeat = True
        return True

    def pending(self) -> list[tuple[str, int, str, int]]:
        """(logger, level, template, count) of records dropped and not yet reported."""
        with self._lock:
            found = [(k[0], k[1], k[2], v[1]) for k, v in self._seen.items() if v[1]]
            self._seen = {k: (v[0], 0) for k, v in self._seen.items()}
        return found

    def report_pending(self) -> None:
        """Log one line per kind whose repeats were dropped since it was last logged."""
        for name, level, template, count in self.pending():
            logging.getLogger(name).log(
                level, "%d more like this were not logged: %s", count, template,
                extra={"_dsfs_repeat": True})


def rate_limit_repeats(logger: logging.Logger | None = None,
                       interval: float = INTERVAL) -> RepeatFilter:
    """Install one ``RepeatFilter`` on every handler of ``logger`` (the root
    logger by default), reporting pending counts at exit; returns it."""
    logger = logger or logging.getLogger()
    repeat = RepeatFilter(interval)
    for handler in logger.handlers:
        handler.addFilter(repeat)
    atexit.register(repeat.report_pending)
    return repeat
