"""A small hostile HTTP server on loopback: redirects, huge, endless and trickling replies.

Each path has a script of replies (the last one repeats); every request is
recorded with its method, path, headers and body. Replies are functions that
write whatever they like to the socket, so a test can misbehave in ways a
well-mannered server (``LocalCollector``) never would.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs

from tests.support import eventually

SAFETY_CAP = 256 * 1024 * 1024
"""Most bytes an "endless" reply writes, so a client that reads everything cannot fill memory."""


@attrs.define
class Seen:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    connection: int

    def event_ids(self) -> list[str]:
        """The ids of the events of the envelope in the body."""
        return [event["id"] for event in json.loads(self.body)["data"]]


Reply = Callable[[socket.socket, "HostileServer"], None]
"""Writes a reply (or not) to the client socket."""


def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} Whatever"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def answer(
    status: int,
    body: bytes = b'{"status":"success"}',
    headers: tuple[tuple[str, str], ...] = (),
    reason: str = "Whatever",
) -> Reply:
    """A plain reply, written in one piece."""

    def reply(sock: socket.socket, server: HostileServer) -> None:
        head = _head(status, [*headers, ("Content-Length", str(len(body)))])
        head = head.replace(b"Whatever", reason.encode("latin-1"), 1)
        sock.sendall(head + body)

    return reply


def redirect(status: int, location: str) -> Reply:
    """A redirect to ``location``."""
    return answer(status, b"", (("Location", location),))


def huge(size: int, status: int = 200) -> Reply:
    """A ``size``-byte body announced with Content-Length, written as fast as the client reads."""

    def reply(sock: socket.socket, server: HostileServer) -> None:
        sock.sendall(_head(status, [("Content-Length", str(size))]))
        block = b"x" * 65536
        left = size
        while left > 0:
            chunk = block[: min(left, len(block))]
            sock.sendall(chunk)
            server.body_bytes += len(chunk)
            left -= len(chunk)

    return reply


def endless_chunked(status: int = 200) -> Reply:
    """A chunked body that never ends (until :data:`SAFETY_CAP`)."""

    def reply(sock: socket.socket, server: HostileServer) -> None:
        sock.sendall(_head(status, [("Transfer-Encoding", "chunked")]))
        chunk = b"10000\r\n" + b"y" * 65536 + b"\r\n"
        while server.body_bytes < SAFETY_CAP:
            sock.sendall(chunk)
            server.body_bytes += 65536

    return reply


def trickle_body(interval: float, length: int = 1000, status: int = 200) -> Reply:
    """Headers at once, then the body one byte every ``interval`` seconds."""

    def reply(sock: socket.socket, server: HostileServer) -> None:
        sock.sendall(_head(status, [("Content-Length", str(length))]))
        for _ in range(length):
            time.sleep(interval)  # the trickle's pace: real time between bytes
            sock.sendall(b"z")
            server.body_bytes += 1

    return reply


def trickle_head(interval: float) -> Reply:
    """The status line and headers one byte every ``interval`` seconds, never finishing."""

    def reply(sock: socket.socket, server: HostileServer) -> None:
        head = b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"s" * 60000
        for byte in head:
            time.sleep(interval)  # the trickle's pace: real time between bytes
            sock.sendall(bytes([byte]))

    return reply


def silent() -> Reply:
    """Read the request and never answer (until the client hangs up)."""

    def reply(sock: socket.socket, server: HostileServer) -> None:
        with contextlib.suppress(OSError):
            sock.recv(1)  # returns when the client closes

    return reply


class HostileServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 with a scripted reply per path.

    Args:
        tls: An SSL context to serve https with, or None for plain http.
    """

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._tls = tls
        self.port: int = self._listener.getsockname()[1]
        self.seen: list[Seen] = []
        self.connections = 0
        self.body_bytes = 0  # body bytes written by huge/endless/trickle replies
        self._routes: dict[str, list[Reply]] = {}
        self._lock = threading.Lock()
        self._clients: list[socket.socket] = []
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def url(self, path: str = "/caliper/event") -> str:
        """The URL of ``path`` on this server."""
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def on(self, path: str, *replies: Reply) -> None:
        """Script the replies to ``path``: one per request, the last one repeating."""
        with self._lock:
            self._routes[path] = list(replies)

    def requests_to(self, path: str) -> list[Seen]:
        """The requests received for ``path``."""
        with self._lock:
            return [seen for seen in self.seen if seen.path == path]

    def wait_for(self, count: int, path: str = "/caliper/event", timeout: float = 10.0) -> bool:
        """Wait until ``count`` requests to ``path`` arrived."""
        return eventually(lambda: len(self.requests_to(path)) >= count, timeout)

    def close(self) -> None:
        """Stop serving and hang up on every client."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            client.close()
        self._thread.join(5)

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
                number = self.connections
            threading.Thread(target=self._serve, args=(client, number), daemon=True).start()

    def _serve(self, client: socket.socket, number: int) -> None:
        try:
            if self._tls is not None:
                client = self._tls.wrap_socket(client, server_side=True)
            with self._lock:
                self._clients.append(client)
            reader = client.makefile("rb")
            while not self._closed:
                seen = self._read(reader, number)
                if seen is None:
                    return
                with self._lock:
                    self.seen.append(seen)
                    script = self._routes.get(seen.path) or [answer(404, b"")]
                    reply = script.pop(0) if len(script) > 1 else script[0]
                reply(client, self)
        except (OSError, ssl.SSLError, ValueError):
            pass  # the client hung up, or refused our certificate
        finally:
            with contextlib.suppress(OSError):
                client.close()

    @staticmethod
    def _read(reader: Any, number: int) -> Seen | None:
        line = reader.readline(65537)
        if not line:
            return None
        method, path, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            header = reader.readline(65537).decode("latin-1").rstrip("\r\n")
            if not header:
                break
            name, _, value = header.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = reader.read(int(headers.get("content-length", "0")))
        return Seen(method, path, headers, body, number)
