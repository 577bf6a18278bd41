"""Where the body of an S3 GET goes, a block at a time: a file
(``get_into``) or one reusable buffer (``get_buffered``).  Both count what
they hold, so that a body that breaks off is resumed from there.  No boto3:
a body is anything with ``read``/``readinto``.
"""

from __future__ import annotations

from typing import Any, BinaryIO, TypeVar

#: Bytes read from a body at a time.
READ_BLOCK = 1024 * 1024


class FileSink:
    """Writes a body to a file-like target, a block at a time."""

    def __init__(self, target: BinaryIO) -> None:
        self.target = target
        self.written = 0

    def begin(self, size: int | None) -> None:
        pass

    def fill(self, body: Any) -> None:
        while block := body.read(READ_BLOCK):
            self.target.write(block)
            self.written += len(block)


class BufferSink:
    """Reads a body into one buffer (the caller's when it is big enough), a
    block at a time, each block where it belongs: nothing is joined or copied
    again, and a reused buffer has no fresh pages to fault in."""

    def __init__(self, buffer: bytearray | None) -> None:
        self.buffer = buffer if buffer is not None else bytearray()
        self.written = 0
        self.size: int | None = None

    def begin(self, size: int | None) -> None:
        self.size = size
        if size is not None and size > len(self.buffer):
            self.buffer = bytearray(size)

    def fill(self, body: Any) -> None:
        if self.size is None:  # no length given (not S3's way): read it whole
            self.buffer = bytearray(body.read())
            self.written = len(self.buffer)
            return
        view = memoryview(self.buffer)
        while self.written < self.size:
            end = min(self.size, self.written + READ_BLOCK)
            got = body.readinto(view[self.written:end])
            if not got:
                return  # broke off: the caller sees a short count
            self.written += got


SinkT = TypeVar("SinkT", FileSink, BufferSink)
