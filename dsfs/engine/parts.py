"""Splitting a version's files into N deterministic shares ("parts").

``get --part K --num-parts N`` (and ``Dataset.get_local_copy(part=K,
num_parts=N)``, ``list_files(part=, num_parts=)``) lets N machines each take
about 1/N of a version, with no coordination: every machine computes the
same split from the version alone.

The rule, for files and symlinks taken in path order (the order of
``sorted(paths)``, which ``treewalk.iter_files`` streams):

* each file weighs ``size + 1`` (the ``+ 1`` spreads empty files too);
* ``total`` is the sum of the weights; a file whose weight starts at byte
  ``start`` of that running sum covers the interval ``[start, start + w)``;
* the file belongs to part ``min(N - 1, (2 * start + w) * N // (2 * total))``
  — the part whose slice ``[K * total / N, (K + 1) * total / N)`` holds the
  file's midpoint.

So every file is in exactly one part, parts are contiguous runs of paths
(a folder stays together unless it is bigger than a share: like ClearML's
split by chunk, neighbours travel together), and each part's weight is
within one file of ``total / N``.  Parts are numbered from 0, as in
ClearML (``part`` in ``0 .. num_parts - 1``); a part may be empty when
there are fewer files than parts.  Directories belong to no part (callers
that write a tree create every directory).  The split is a function of the
version's files only: the same version always splits the same way, and it
costs two streaming passes, never the whole listing in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from dsfs.errors import UsageError

T = TypeVar("T")


def check_part(part: int | None, num_parts: int | None, *, part_name: str = "part",
               num_name: str = "num_parts") -> tuple[int, int] | None:
    """``(part, num_parts)`` validated, or None when neither is given.

    The names are those of the caller's arguments (``part``/``num_parts`` in
    Python, ``--part``/``--num-parts`` on the command line), so messages
    speak the caller's language."""
    if part is None and num_parts is None:
        return None
    if num_parts is None:
        raise UsageError(f"{part_name} needs {num_name}")
    if part is None:
        raise UsageError(f"{num_name} needs {part_name}")
    if isinstance(num_parts, bool) or not isinstance(num_parts, int) or num_parts < 1:
        raise UsageError(f"{num_name} must be a whole number of at least 1, not {num_parts!r}")
    if isinstance(part, bool) or not isinstance(part, int) or not 0 <= part < num_parts:
        raise UsageError(f"{part_name} must be between 0 and {num_parts - 1} "
                         f"({num_name} - 1), not {part!r}")
    return part, num_parts


def part_index(start: int, weight: int, total: int, num_parts: int) -> int:
    """The part of a file of ``weight`` starting at ``start`` of ``total``."""
    return min(num_parts - 1, (2 * start + weight) * num_parts // (2 * total))


def select(items: Callable[[], Iterable[T]], size_of: Callable[[T], int], part: int,
           num_parts: int) -> Iterator[T]:
    """The items of one part, in their order.  ``items()`` must yield the same
    files in path order each time it is called (it is called twice: once to
    total the weights, once to select)."""
    check_part(part, num_parts)
    total = sum(size_of(item) + 1 for item in items())
    if total == 0:
        return
    start = 0
    for item in items():
        weight = size_of(item) + 1
        index = part_index(start, weight, total, num_parts)
        start += weight
        if index == part:
            yield item
        elif index > part:
            return  # parts are contiguous: nothing later belongs to this one


def assign(sizes: Iterable[int], num_parts: int) -> list[int]:
    """The part of each file, for sizes given in path order (for tests and
    small listings)."""
    sizes = list(sizes)
    total = sum(s + 1 for s in sizes)
    out, start = [], 0
    for size in sizes:
        out.append(part_index(start, size + 1, total, num_parts))
        start += size + 1
    return out
