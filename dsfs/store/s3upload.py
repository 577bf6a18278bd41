"""What an S3 upload sends, and the multipart upload, without boto3.

A ``Payload`` is the body of one write: bytes in memory or the contents of
an open file.  Every request gets a fresh reader over just its range
(``body``), which botocore can seek back for a retry and checksum without
the bytes ever being held whole: a manifest of ten million entries (hundreds
of MiB) goes up a part at a time, read from its spool file.

``multipart`` drives an upload through a boto3 client passed in (the only
module importing boto3 is ``dsfs.store.s3``, which maps the errors that
escape from here): parts in parallel, then one ``complete`` that makes the
object visible whole; on any failure the upload is aborted, so nothing is
published from a partial write.
"""

from __future__ import annotations

import contextlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

from dsfs.store.base import file_size

#: Bytes compared per request when a stored object is checked against a payload.
COMPARE_BLOCK = 8 * 1024 * 1024


class FileRange(io.RawIOBase):
    """A read-only, seekable view of ``length`` bytes of a file at ``offset``
    (``pread``: readers in several threads share the descriptor).  It has no
    ``fileno``, so that botocore sizes it by seeking, not by the whole file."""

    def __init__(self, fd: int, offset: int, length: int) -> None:
        super().__init__()
        self._fd, self._offset, self._length = fd, offset, length
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._length}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        left = self._length - self._pos
        if size is None or size < 0 or size > left:
            size = max(0, left)
        if size == 0:
            return b""
        data = os.pread(self._fd, size, self._offset + self._pos)
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


class Payload:
    """The bytes of one write: ``data`` in memory, or the whole of ``source``."""

    def __init__(self, data: bytes | None = None, source: BinaryIO | None = None) -> None:
        if (data is None) == (source is None):
            raise ValueError("a payload is either bytes or a file")
        self._data = memoryview(data) if data is not None else None
        self._fd = -1
        if source is not None:
            self._fd, self.size = source.fileno(), file_size(source)
        else:
            self.size = len(self._data)  # type: ignore[arg-type]

    def body(self, offset: int = 0, length: int | None = None) -> BinaryIO:
        """A fresh reader of ``length`` bytes from ``offset`` (to the end by default)."""
        length = self.size - offset if length is None else min(length, self.size - offset)
        if self._data is not None:
            return io.BytesIO(self._data[offset:offset + length])
        return io.BufferedReader(FileRange(self._fd, offset, length))

    def read_at(self, offset: int, length: int) -> bytes:
        with self.body(offset, length) as body:
            return body.read()


def same_bytes(payload: Payload, read_range: Any) -> bool:
    """Whether ``read_range(offset, length)`` (the stored object) returns the
    payload's bytes, compared a block at a time."""
    for offset in range(0, payload.size, COMPARE_BLOCK):
        length = min(COMPARE_BLOCK, payload.size - offset)
        if read_range(offset, length) != payload.read_at(offset, length):
            return False
    return True


def multipart(client: Any, bucket: str, key: str, payload: Payload, part_size: int,
              threads: int, extra: dict[str, Any]) -> dict[str, Any]:
    """Upload ``payload`` to ``key`` in parts; return the reply of ``complete``.

    ``extra`` holds ``Metadata`` (given at creation) and ``IfNoneMatch`` (given
    at completion, where S3 checks it).  Errors are the client's own."""
    create_args = {k: v for k, v in extra.items() if k == "Metadata"}
    upload = client.create_multipart_upload(Bucket=bucket, Key=key, **create_args)
    upload_id = upload["UploadId"]
    offsets = range(0, payload.size, part_size)

    def send(number_offset: tuple[int, int]) -> dict[str, Any]:
        number, offset = number_offset
        with payload.body(offset, part_size) as body:
            reply = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id,
                                       PartNumber=number, Body=body)
        return {"PartNumber": number, "ETag": reply["ETag"]}

    try:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            parts = list(pool.map(send, enumerate(offsets, start=1)))
        complete_args = {k: v for k, v in extra.items() if k == "IfNoneMatch"}
        reply: dict[str, Any] = client.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id,
            MultipartUpload={"Parts": parts}, **complete_args)
        return reply
    except BaseException:
        # An abandoned upload keeps costing storage until a lifecycle rule ends it.
        with contextlib.suppress(Exception):
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise


__all__ = ["FileRange", "Payload", "multipart", "same_bytes"]
