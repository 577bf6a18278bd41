"""A small fault-injecting HTTP proxy for S3 tests, listening on 127.0.0.1.

It forwards every request to an upstream endpoint (the moto server) and, at a
given rate or by script, answers with a fault instead:

``500`` / ``503``   an S3 error reply (InternalError / SlowDown), not forwarded;
``reset``           the connection is reset before the request is forwarded;
``drop_reply``      the request is forwarded (a write happens), then the
                    connection is reset: the client never learns it succeeded;
``cut``             the reply is forwarded with its full Content-Length but
                    only half of its body, then the connection is closed;
``delay``           the request is forwarded after ``delay`` seconds;
``flip``            (scripted only) the reply is forwarded whole, with one byte
                    in the middle of its body changed: corruption in transit.

It is bounded (``max_faults``) and self-stopping (``lifetime`` seconds), so a
test that forgets it cannot hang the run.  It also counts requests, methods,
bytes, faults and pack GETs, which the tests and benchmarks read from ``stats``.
``strip_headers`` removes request headers before forwarding (e.g.
``If-None-Match``, to play an endpoint that ignores conditional writes).

Replies are streamed: the proxy sends a body on as it reads it, a block at a
time, so a big object costs it neither the time to hold it whole nor the
copies (the benchmarks read 32 MiB packs through it).
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

RANDOM_KINDS = ("500", "503", "reset", "drop_reply", "cut", "delay")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te",
               "trailer", "upgrade"}
#: Bytes of a streamed reply read from upstream and sent on at a time.
STREAM_BLOCK = 1 << 20
_ERRORS = {
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "503": (503, "SlowDown", "Please reduce your request rate."),
}


@dataclass
class ScriptedFault:
    """A fault for the next ``times`` requests matching method and path text."""

    kind: str
    method: str | None = None
    path_contains: str | None = None
    times: int = 1
    #: scripted once this fault has been used (a store that goes down after a write)
    then: ScriptedFault | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.times > 0 and (self.method is None or self.method == method)
                and (self.path_contains is None or self.path_contains in path))


@dataclass
class ProxyStats:
    requests: int = 0
    methods: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    bytes_up: int = 0  # request bodies sent by clients
    bytes_down: int = 0  # reply bodies sent to clients
    pack_gets: int = 0  # GETs of pack objects (the data reads of a mount)
    pack_bytes_down: int = 0  # reply bodies of those GETs
    #: GETs by what they asked for: the path's first segment under the store
    #: (``packs``, ``versions`` ...), ``list`` for a listing, ``other``.
    gets_by_kind: Counter[str] = field(default_factory=Counter)


class FaultProxy:
    def __init__(self, upstream: str, rate: float = 0.0, kinds: tuple[str, ...] = RANDOM_KINDS,
                 seed: int = 0, max_faults: int | None = 1000, lifetime: float = 300.0,
                 delay: float = 0.2, strip_headers: tuple[str, ...] = ()) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("the fault proxy forwards to plain http:// endpoints only")
        self.upstream = (parts.hostname, parts.port or 80)
        self.rate = rate
        self.kinds = kinds
        self.max_faults = max_faults
        self.lifetime = lifetime
        self.delay = delay
        self.strip_headers = {h.lower() for h in strip_headers}
        self.stats = ProxyStats()
        self.script: list[ScriptedFault] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start the proxy first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, kind: str, method: str | None = None, path_contains: str | None = None,
            times: int = 1, then: ScriptedFault | None = None) -> None:
        """Script a fault; scripted faults are used before random ones.  ``then``
        is scripted (ahead of the others) once this one has been used."""
        with self._lock:
            self.script.append(ScriptedFault(kind, method, path_contains, times, then))

    def randomize(self, rate: float, seed: int) -> None:
        """Fail ``rate`` of the requests from now on, drawn from ``seed``."""
        with self._lock:
            self.rate = rate
            self._rng.seed(seed)

    def clear(self) -> None:
        with self._lock:
            self.script.clear()
            self.rate = 0.0

    def choose(self, method: str, path: str) -> str | None:
        """The fault for this request, or None to forward it untouched."""
        with self._lock:
            self.stats.requests += 1
            self.stats.methods[method] += 1
            for fault in self.script:
                if fault.matches(method, path):
                    fault.times -= 1
                    self.stats.faults[fault.kind] += 1
                    if fault.then is not None:
                        self.script.insert(0, fault.then)
                        fault.then = None
                    return fault.kind
            if self.max_faults is not None and sum(self.stats.faults.values()) >= self.max_faults:
                return None
            if self.rate and self._rng.random() < self.rate:
                kind = self._rng.choice(self.kinds)
                self.stats.faults[kind] += 1
                return kind
        return None

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()
        # Self-stopping: a forgotten proxy ends on its own.
        self._timer = threading.Timer(self.lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def get_kind(path: str) -> str:
    """What a GET of ``path`` (``/BUCKET/KEY?QUERY``) asked for: ``list`` for a
    listing, else the segment of the key before its last two (``packs`` for
    ``PREFIX/packs/ab/abcd...``, ``versions`` for ``PREFIX/versions/ID``: the
    key's last segment is the object's name, and a 2-hex-digit fan-out folder
    before it is skipped)."""
    key, _, query = path.partition("?")
    parts = [p for p in key.split("/") if p][1:]  # the bucket dropped
    if not parts or "list-type" in query or "prefix=" in query:
        return "list"
    folders = parts[:-1]
    if folders and len(folders[-1]) == 2 and len(folders) > 1:
        folders = folders[:-1]  # a fan-out folder
    return folders[-1] if folders else "other"


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore expects
    #: A streamed body goes out a block at a time: Nagle's algorithm would hold
    #: each block's last partial segment until the client's delayed ACK.
    disable_nagle_algorithm = True
    #: A connection's buffer for streamed replies, made at its first one.
    _buffer: memoryview | None = None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _reset(self) -> None:
        # SO_LINGER 0: close sends RST, as a crashed middlebox would.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def _send_head(self, status: int, headers: list[tuple[str, str]], length: int) -> None:
        """The status line and headers; ``length`` is the body's (a HEAD reply
        keeps the object's Content-Length from ``headers`` and has no body)."""
        self.send_response_only(status)
        head = self.command == "HEAD"
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP and (head or name.lower() != "content-length"):
                self.send_header(name, value)
        if not head:
            self.send_header("Content-Length", str(length))
        elif not any(n.lower() == "content-length" for n, _ in headers):
            self.send_header("Content-Length", "0")
        self.end_headers()
        self.wfile.flush()

    def _count_down(self, sent: int, first: bool) -> None:
        with self.owner._lock:
            self.owner.stats.bytes_down += sent
            if self.command == "GET" and first:
                self.owner.stats.gets_by_kind[get_kind(self.path)] += 1
            if self.command == "GET" and "/packs/" in self.path:
                self.owner.stats.pack_gets += first
                self.owner.stats.pack_bytes_down += sent

    def _cut(self) -> None:
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes,
              cut: bool = False) -> None:
        """A reply held whole (the proxy's own errors, chunked upstream replies)."""
        self._send_head(status, headers, len(body))
        payload = body[: len(body) // 2] if cut else body
        self._count_down(len(payload), first=True)
        self.wfile.write(payload)
        self.wfile.flush()
        if cut:
            self._cut()

    def _stream(self, reply: http.client.HTTPResponse, length: int, cut: bool,
                flip: bool = False) -> None:
        """Forward ``length`` body bytes of ``reply`` as they arrive (half of
        them if ``cut``), through one reused buffer, never the whole body at
        once: a big object then costs the proxy no latency and no copies but
        the socket reads and writes.  Each block is counted before it is sent,
        so a client that has a whole reply sees it counted."""
        self._send_head(reply.status, reply.getheaders(), length)
        self._count_down(0, first=True)
        left = length // 2 if cut else length
        flip_at = length // 2 if flip else -1  # the body offset of the byte changed
        sent = 0
        if self._buffer is None:
            self._buffer = memoryview(bytearray(STREAM_BLOCK))
        view = self._buffer
        while left:
            got = reply.readinto(view[:min(left, len(view))])
            if not got:
                break  # upstream broke off: the client sees a short body
            if sent <= flip_at < sent + got:
                view[flip_at - sent] ^= 0xFF
            self._count_down(got, first=False)
            self.connection.sendall(view[:got])
            left -= got
            sent += got
        if cut or left:
            self._cut()

    def _forward(self, body: bytes) -> tuple[http.client.HTTPConnection,
                                              http.client.HTTPResponse]:
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in _HOP_BY_HOP and k.lower() not in self.owner.strip_headers}
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(*self.owner.upstream, timeout=120)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            return conn, conn.getresponse()
        except BaseException:
            conn.close()
            raise

    def _handle(self) -> None:
        body = self._read_body()
        with self.owner._lock:
            self.owner.stats.bytes_up += len(body)
        fault = self.owner.choose(self.command, self.path)
        if fault in _ERRORS:
            status, code, message = _ERRORS[fault]
            xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                   f"<Message>{message}</Message></Error>").encode()
            self._send(status, [("Content-Type", "application/xml")],
                       b"" if self.command == "HEAD" else xml)
            return
        if fault == "reset":
            self._reset()
            return
        if fault == "delay":
            time.sleep(self.owner.delay)
        conn, reply = self._forward(body)
        try:
            length = None if self.command == "HEAD" else reply.length
            if fault == "drop_reply" or (fault == "cut" and not length):
                self._reset()
            elif length is not None:
                self._stream(reply, length, cut=fault == "cut", flip=fault == "flip")
            else:  # HEAD, or an upstream reply of unknown length: held whole
                self._send(reply.status, reply.getheaders(), reply.read(), cut=fault == "cut")
        finally:
            conn.close()

    def do_GET(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler's naming
        self._handle()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET  # noqa: N815
