"""The LocalCollector's HTTP server: sockets, threads, request parsing and one-piece answers.

It knows nothing about Caliper. :class:`CollectorServer` accepts connections
on its own thread, serves each on a thread of its own, reads each request
whole (``Content-Length`` or chunked, draining bodies above the limit), and
hands it to a :class:`RequestHandler` that returns an :class:`Answer` or a
:class:`Hangup`. Every answer is written with a single ``sendall`` on a
socket with ``TCP_NODELAY``: Nagle's algorithm and delayed ACKs would add
40 ms stalls to a loopback round trip otherwise. Nothing is ever logged.
"""

from __future__ import annotations

import contextlib
import email.message
import http.server
import json
import selectors
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import attrs

from timeback_tracker._threads import start_daemon

__all__ = [
    "MAX_BODY",
    "Answer",
    "CollectorServer",
    "Hangup",
    "IncomingRequest",
    "RequestHandler",
    "error_answer",
    "json_answer",
    "media_type",
]

MAX_BODY: Final = 64 * 1024 * 1024  # hard ceiling, whatever the handler's limit
_CHUNK: Final = 64 * 1024
_NO_BODY_STATUSES: Final = frozenset({204, 304})


@attrs.frozen
class Answer:
    """A whole HTTP answer.

    Attributes:
        status: The status code.
        payload: The body.
        content_type: Its ``Content-Type``.
        headers: More headers, as ``(name, value)`` pairs.
        problems: For an invalid envelope, each problem as ``(JSON path, rule)``;
            kept for the collector's page, not sent apart from ``payload``.
    """

    status: int
    payload: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    problems: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class Hangup:
    """No answer: close the connection, with a TCP reset when ``reset`` (a dropped request)."""

    reset: bool


@attrs.frozen
class IncomingRequest:
    """One request, read whole.

    Attributes:
        method: The HTTP method.
        path: The path, without the query string.
        query: The query string (without ``?``).
        headers: The request headers.
        body: The body, or None when it was larger than the limit (already drained).
        connection: Sequence number of its TCP connection.
        at: When it arrived, on the :func:`time.monotonic` clock.
        closing: Set when the server is closing (a delayed answer should give up).
    """

    method: str
    path: str
    query: str
    headers: email.message.Message
    body: bytes | None
    connection: int
    at: float
    closing: threading.Event


class RequestHandler(Protocol):
    """What the server serves: a body limit, connection numbers, and the answers."""

    @property
    def max_body(self) -> int:
        """Bodies larger than this are drained and passed on as None."""

    def next_connection(self) -> int:
        """The sequence number of a new TCP connection."""

    def handle(self, request: IncomingRequest) -> Answer | Hangup:
        """Answer one request (called from the connection's thread)."""


def json_answer(status: int, payload: Mapping[str, Any], *headers: tuple[str, str]) -> Answer:
    """An answer with a JSON body."""
    return Answer(status, json.dumps(payload).encode(), "application/json", headers)


def error_answer(status: int, message: str, *headers: tuple[str, str]) -> Answer:
    """An error answer shaped like Timeback's: ``{"status": "error", "message": ...}``."""
    return json_answer(status, {"status": "error", "message": message}, *headers)


def media_type(headers: email.message.Message) -> str:
    """The request's ``Content-Type`` without parameters, lower-cased."""
    return (headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()


class CollectorServer(http.server.ThreadingHTTPServer):
    """One listening incarnation: its own accept thread and its connections.

    Args:
        address: ``(host, port)`` to bind; port 0 picks a free one.
        family: ``AF_INET`` or ``AF_INET6``.
        handler: What answers the requests.
    """

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], family: socket.AddressFamily, handler: RequestHandler
    ) -> None:
        self.address_family = family
        self.handler = handler
        self.closing = threading.Event()
        self._guard = threading.Lock()
        self._open: dict[socket.socket, int] = {}
        self._workers: set[threading.Thread] = set()
        self._aborted: set[socket.socket] = set()
        self._wake_r, self._wake_w = socket.socketpair()
        try:
            super().__init__(address, _Handler)
        except BaseException:
            self._wake_r.close()
            self._wake_w.close()
            raise
        self.socket.setblocking(False)
        self._acceptor: threading.Thread | None = None

    def server_bind(self) -> None:
        """Bind without ``HTTPServer``'s reverse DNS lookup (``getfqdn``), which can stall."""
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def start(self) -> None:
        """Start accepting connections.

        The accepting thread blocks the app's signals, and so do the connection
        threads it starts (they take its mask): a Ctrl-C reaches the main thread.
        """
        self._acceptor = start_daemon(self._accept_loop, "timeback-collector-accept")

    def connection_number(self, request: socket.socket) -> int:
        """The sequence number of an open connection (0 once closed)."""
        with self._guard:
            return self._open.get(request, 0)

    def abort(self, request: socket.socket) -> None:
        """Close ``request`` with a TCP reset instead of a FIN, once its handler returns."""
        with self._guard:
            self._aborted.add(request)

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self.closing.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self._wake_r or self.closing.is_set():
                        return
                    try:
                        request, client_address = self.socket.accept()
                    except OSError:
                        continue
                    self._serve(request, client_address)

    def _serve(self, request: socket.socket, client_address: Any) -> None:
        request.setblocking(True)
        with contextlib.suppress(OSError):
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        number = self.handler.next_connection()
        worker = threading.Thread(
            target=self._connection,
            args=(request, client_address),
            name=f"timeback-collector-conn-{number}",
            daemon=True,
        )
        with self._guard:
            if self.closing.is_set():
                request.close()
                return
            self._open[request] = number
            self._workers.add(worker)
        worker.start()

    def _connection(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001, S110 - a client hanging up mid-request is routine
            pass
        finally:
            with self._guard:
                aborted = request in self._aborted
                self._aborted.discard(request)
                self._open.pop(request, None)
                self._workers.discard(threading.current_thread())
            _close(request, reset=aborted)

    def close(self, timeout: float) -> None:
        """Stop accepting, drop every open connection, join the threads within ``timeout``."""
        deadline = time.monotonic() + timeout
        self.closing.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._acceptor is not None and self._acceptor.is_alive():
            self._acceptor.join(timeout)
        self.server_close()
        with self._guard:
            connections = list(self._open)
            workers = list(self._workers)
        for request in connections:
            with contextlib.suppress(OSError):
                request.shutdown(socket.SHUT_RDWR)
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        self._wake_r.close()
        self._wake_w.close()


def _close(request: socket.socket, *, reset: bool) -> None:
    try:
        if reset:
            linger = struct.pack("HH" if sys.platform == "win32" else "ii", 1, 0)
            request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        else:
            request.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    request.close()


class _UnusableRequestError(Exception):
    """The request cannot be served; ``answer`` (if any) is sent before hanging up."""

    def __init__(self, answer: Answer | None) -> None:
        super().__init__()
        self.answer = answer


class _Handler(http.server.BaseHTTPRequestHandler):
    """Parses one request at a time and writes each response with a single send."""

    protocol_version = "HTTP/1.1"
    server_version = "timeback-tracker-LocalCollector"
    sys_version = ""
    server: CollectorServer

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: request lines and errors never reach stderr."""

    def do_POST(self) -> None:
        """Handle a POST."""
        self._dispatch()

    def do_GET(self) -> None:
        """Handle a GET."""
        self._dispatch()

    def do_HEAD(self) -> None:
        """Handle a HEAD."""
        self._dispatch()

    def do_PUT(self) -> None:
        """Handle a PUT."""
        self._dispatch()

    def do_PATCH(self) -> None:
        """Handle a PATCH."""
        self._dispatch()

    def do_DELETE(self) -> None:
        """Handle a DELETE."""
        self._dispatch()

    def do_OPTIONS(self) -> None:
        """Handle an OPTIONS."""
        self._dispatch()

    def _dispatch(self) -> None:
        request = self._read_request()
        if request is None:
            return
        reply = self.server.handler.handle(request)
        if isinstance(reply, Hangup):
            if reply.reset:
                self.server.abort(self.connection)
            self.close_connection = True
            return
        self._send(reply)

    def _read_request(self) -> IncomingRequest | None:
        """Read the body (draining it when too large); None when the request is unusable."""
        at = time.monotonic()
        limit = self.server.handler.max_body
        try:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                body = self._read_chunked(limit)
            else:
                body = self._read_sized(limit)
        except _UnusableRequestError as exc:
            self.close_connection = True
            if exc.answer is not None:
                self._send(exc.answer)
            return None
        target = urlsplit(self.path)
        return IncomingRequest(
            method=self.command,
            path=target.path,
            query=target.query,
            headers=self.headers,
            body=body,
            connection=self.server.connection_number(self.connection),
            at=at,
            closing=self.server.closing,
        )

    def _read_sized(self, limit: int) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            raise _UnusableRequestError(error_answer(400, "invalid Content-Length"))
        if length > MAX_BODY:
            # Too big to drain: answer and hang up (the client may see a reset instead).
            raise _UnusableRequestError(error_answer(413, "request body too large"))
        return self._read_exactly(length, keep=length <= limit)

    def _read_exactly(self, length: int, *, keep: bool) -> bytes | None:
        parts: list[bytes] = []
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, _CHUNK))
            if not chunk:
                raise _UnusableRequestError(None)  # the client hung up mid-body
            if keep:
                parts.append(chunk)
            remaining -= len(chunk)
        return b"".join(parts) if keep else None

    def _read_chunked(self, limit: int) -> bytes | None:
        parts: list[bytes] = []
        size = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                chunk_size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _UnusableRequestError(error_answer(400, "invalid chunked encoding")) from None
            if chunk_size == 0:
                break
            size += chunk_size
            if size > MAX_BODY:
                raise _UnusableRequestError(error_answer(413, "request body too large"))
            chunk = self._read_exactly(chunk_size, keep=size <= limit)
            if chunk is not None:
                parts.append(chunk)
            self.rfile.readline(1024)  # the CRLF after the chunk
        while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(parts) if size <= limit else None

    def _send(self, answer: Answer) -> None:
        """Write the whole response (status line, headers, body) with one ``sendall``."""
        payload = b"" if answer.status in _NO_BODY_STATUSES else answer.payload
        try:
            reason = HTTPStatus(answer.status).phrase
        except ValueError:
            reason = "Status"
        lines = [
            f"{self.protocol_version} {answer.status} {reason}",
            f"Server: {self.server_version}",
            f"Date: {self.date_time_string()}",
        ]
        if answer.status not in _NO_BODY_STATUSES:
            lines += [f"Content-Type: {answer.content_type}", f"Content-Length: {len(payload)}"]
        lines += [f"{name}: {value}" for name, value in answer.headers]
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if self.command == "HEAD":
            payload = b""
        try:
            self.wfile.write(head + payload)
        except OSError:
            self.close_connection = True
