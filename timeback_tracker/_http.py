"""Bounded HTTP for the delivery thread: no redirects, small replies, a total deadline per request.

``requests`` alone trusts the server too much for a library that must never
lose or leak a student's data:

* it follows redirects (turning a POST into a GET, or carrying the envelope to
  another host) and, even when told not to, reads a redirect's whole body;
* ``response.content`` reads a body of any size into memory;
* its read timeout applies to each read, so a reply trickled one byte at a
  time never times out.

:func:`new_session` returns a session that never follows a redirect, keeps no
cookies, and whose connections can be aborted by a :class:`Watchdog`: one
thread that shuts down the socket of a request that outlives its total
deadline (the urllib3 documentation's own advice for wall-clock limits).
:func:`read_capped` reads at most :data:`REPLY_CAP` bytes of a reply.
:func:`describe_failure` names the host and the cause of a network failure.
:func:`parse_retry_after` reads a ``Retry-After`` header (the events endpoint's
and the token endpoint's alike).

Imported by the delivery thread only, with ``requests``.
"""

from __future__ import annotations

import contextlib
import http.client
import http.cookiejar
import logging
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import requests
import requests.adapters
import urllib3
import urllib3.connection
import urllib3.exceptions
import urllib3.poolmanager

from timeback_tracker._threads import start_daemon
from timeback_tracker._urls import Url

REPLY_CAP = 64 * 1024
"""Most bytes of a reply body read (64 KiB). Timeback's replies are under 1 KiB; the
rest of a longer body is never read and its connection is dropped."""


class DeadlineExpired(Exception):  # noqa: N818 - named for what happened
    """The watchdog cut the request: whatever was read of the reply is not to be trusted."""


NETWORK_ERRORS = (
    DeadlineExpired,
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
)
"""What a request can raise when the network, the server or the deadline fails it."""

log = logging.getLogger("timeback_tracker.transport")

__all__ = [
    "MAX_RETRY_AFTER",
    "NETWORK_ERRORS",
    "REPLY_CAP",
    "Attempt",
    "DeadlineExpired",
    "Watchdog",
    "attempt_connected",
    "current_attempt",
    "decode_body",
    "describe_failure",
    "new_session",
    "parse_retry_after",
    "read_capped",
]

_local = threading.local()


class Attempt:
    """One request under a total deadline: what it connected, and whether time ran out.

    Attributes:
        seconds: The deadline, in seconds from the start.
        expired: True once the watchdog aborted the request.
        connected: True once a connection to the server was established (and
            TLS verified): from then on the request may have reached it.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires = time.monotonic() + seconds
        self.expired = False
        self.connected = False
        self._lock = threading.Lock()
        self._handles: list[socket.socket] = []

    def watch(self, handle: socket.socket) -> None:
        """Abort ``handle``'s connection when the deadline passes (at once if it has)."""
        with self._lock:
            if not self.expired:
                self._handles.append(handle)
                return
        _abort(handle)

    def expire(self) -> None:
        """The deadline passed: abort every connection the request uses."""
        with self._lock:
            self.expired = True
            handles, self._handles = self._handles, []
        for handle in handles:
            _abort(handle)


def _abort(handle: socket.socket) -> None:
    # shutdown() ends the connection for every descriptor of it, waking a blocked read.
    with contextlib.suppress(OSError):
        handle.shutdown(socket.SHUT_RDWR)


def current_attempt() -> Attempt | None:
    """The request under a deadline on this thread, if any."""
    attempt: Attempt | None = getattr(_local, "attempt", None)
    return attempt


class Watchdog:
    """One daemon thread that aborts the request in flight once its deadline passes.

    It sleeps without waking while no request is in flight.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._attempt: Attempt | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    @contextlib.contextmanager
    def deadline(self, seconds: float) -> Iterator[Attempt]:
        """Run the request made inside the block under a total deadline of ``seconds``."""
        attempt = Attempt(seconds)
        with self._condition:
            self._attempt = attempt
            if self._thread is None or not self._thread.is_alive():
                try:
                    self._thread = start_daemon(self._run, "timeback-tracker-deadline")
                except RuntimeError:
                    # At interpreter shutdown new threads may be refused: the last
                    # requests go out bounded by their per-read timeouts only.
                    log.debug("no deadline watchdog: new threads are refused")
            self._condition.notify_all()
        previous, _local.attempt = current_attempt(), attempt
        try:
            yield attempt
        finally:
            _local.attempt = previous
            with self._condition:
                if self._attempt is attempt:
                    self._attempt = None  # no wake-up needed: the thread finds it gone

    def close(self) -> None:
        """Stop the thread."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def _run(self) -> None:
        with self._condition:
            while not self._closed:
                attempt = self._attempt
                if attempt is None:
                    self._condition.wait()
                    continue
                left = attempt.expires - time.monotonic()
                if left > 0:
                    self._condition.wait(left)
                    continue
                self._attempt = None
                attempt.expire()


if TYPE_CHECKING:
    _Connection = urllib3.connection.HTTPConnection
else:
    _Connection = object


class _Guarded(_Connection):
    """Connection hooks that let the current :class:`Attempt` abort this connection."""

    _handle: socket.socket | None = None

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        self._drop_handle()
        # A second descriptor of the same connection: it stays valid when TLS
        # takes the first one over, and shutting it down ends the connection.
        self._handle = sock.dup()
        attempt = current_attempt()
        if attempt is not None:
            attempt.watch(self._handle)
        return sock

    def connect(self) -> None:
        super().connect()
        attempt = current_attempt()
        if attempt is not None:
            attempt.connected = True

    def request(self, *args: Any, **kwargs: Any) -> None:
        attempt = current_attempt()
        if attempt is not None and self.sock is not None:  # a kept-alive connection
            attempt.connected = True
            if self._handle is not None:
                attempt.watch(self._handle)
        super().request(*args, **kwargs)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._drop_handle()

    def _drop_handle(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()


class _HTTPConnection(_Guarded, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_Guarded, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class _Adapter(requests.adapters.HTTPAdapter):
    """An adapter whose connections (direct or through an HTTP proxy) obey the watchdog."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if isinstance(manager, urllib3.poolmanager.ProxyManager):  # SOCKS has its own pools
            manager.pool_classes_by_scheme = _POOLS
        return manager


class _Session(requests.Session):
    def get_redirect_target(self, resp: requests.Response) -> str | None:
        # Never a redirect: requests would otherwise read the redirect's whole
        # body (of any size) even with allow_redirects=False.
        return None


def new_session() -> requests.Session:
    """A session that never follows redirects, keeps no cookies, and obeys the watchdog."""
    session = _Session()
    # A server's cookies would grow without bound and mean nothing to an API client.
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    adapter = _Adapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def read_capped(response: requests.Response, cap: int = REPLY_CAP) -> tuple[bytes, bool]:
    """Read at most ``cap`` bytes of the body, then release the connection.

    A body that ended within the cap leaves the connection to be kept alive; a
    longer one is not read further and its connection is closed.

    Returns:
        (the bytes read, True when the body was complete).

    Raises:
        Exception: One of :data:`NETWORK_ERRORS` when the connection failed or
            the watchdog aborted it (:class:`DeadlineExpired`).
    """
    chunks: list[bytes] = []
    size = 0
    try:
        # A short read may only mean the connection was cut: read on until the
        # body ends (b"" — or an error if it ended early) or passes the cap.
        while size <= cap:
            chunk: bytes = response.raw.read(cap + 1 - size, decode_content=False)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        response.close()  # returns a finished connection to the pool, else closes it
    attempt = current_attempt()
    if attempt is not None and attempt.expired:
        # A cut connection reads like an ending: "HTTP/1.1 200 OK\r\nX-Hal" parses
        # as a complete 200. Nothing read under an expired deadline counts.
        raise DeadlineExpired
    declared = response.headers.get("Content-Length", "")
    if size <= cap and declared.isdigit() and size < int(declared):
        # The body ended before its declared length: the connection was cut. urllib3
        # 2 raises this itself; 1.26 (which we support) returns the short body.
        raise urllib3.exceptions.ProtocolError("Connection broken: the body ended early")
    return b"".join(chunks)[:cap], size <= cap


def decode_body(data: bytes, encoding: str | None, cap: int = REPLY_CAP) -> bytes | None:
    """``data`` decompressed per ``Content-Encoding`` into at most ``cap`` bytes.

    Returns:
        The bytes, or None for an unknown encoding or output beyond the cap.
    """
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return data
    if encoding not in ("gzip", "x-gzip", "deflate"):
        return None
    # A bounded decompression: a small "zip bomb" must not expand in memory.
    decompressor = zlib.decompressobj(wbits=zlib.MAX_WBITS | 32)
    try:
        out = decompressor.decompress(data, cap)
    except zlib.error:
        return None
    return None if decompressor.unconsumed_tail else out


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it wraps (causes, contexts, urllib3 reasons, args)."""
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        wrapped = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        wrapped += list(current.args)
        pending += [e for e in wrapped if isinstance(e, BaseException)]


# urllib3 2 wraps a failed lookup in NameResolutionError; 1.26 (requests 2.28's) does not.
_NAME_RESOLUTION_ERROR: type[BaseException] = getattr(
    urllib3.exceptions, "NameResolutionError", socket.gaierror
)


def describe_failure(exc: BaseException, url: Url, attempt: Attempt | None) -> str:  # noqa: PLR0911 - a return per cause
    """What failed, naming the host and the cause — never a URL's query, a header or a body.

    Args:
        exc: What the request raised.
        url: Where it went.
        attempt: Its deadline, to tell a watchdog abort from a server's hang-up.
    """
    where = url.netloc
    if attempt is not None and attempt.expired:
        return f"timed out: no complete answer from {where} within {attempt.seconds:g} s"
    causes = list(_causes(exc))

    def find(*kinds: type[BaseException]) -> BaseException | None:
        return next((e for e in causes if isinstance(e, kinds)), None)

    verify = find(ssl.SSLCertVerificationError)
    if isinstance(verify, ssl.SSLCertVerificationError):
        detail = verify.verify_message or "untrusted certificate"
        return f"certificate verify failed for {where}: {detail}"
    if find(socket.gaierror, _NAME_RESOLUTION_ERROR):
        return f"name not resolved: {url.host}"
    if find(ConnectionRefusedError):
        return f"connection refused by {where}"
    # urllib3's NewConnectionError derives from its TimeoutError, but is not one.
    timeout = next(
        (
            e
            for e in causes
            if isinstance(e, (TimeoutError, requests.Timeout, urllib3.exceptions.TimeoutError))
            and not isinstance(e, urllib3.exceptions.NewConnectionError)
        ),
        None,
    )
    if timeout is not None and not attempt_connected(attempt):
        return f"timed out connecting to {where}"
    if timeout is not None:
        return f"timed out: {where} did not answer in time"
    refused = find(urllib3.exceptions.NewConnectionError)
    if refused is not None:
        error = find(OSError)
        reason = error.strerror if isinstance(error, OSError) and error.strerror else "refused"
        return f"could not connect to {where}: {reason}"
    if find(ssl.SSLError, urllib3.exceptions.SSLError):
        return f"TLS failed with {where}"
    if find(ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
        return f"connection reset by {where}"
    if find(http.client.RemoteDisconnected, urllib3.exceptions.ProtocolError):
        return f"{where} closed the connection without a complete answer"
    return f"network error with {where}: {type(exc).__name__}"


def attempt_connected(attempt: Attempt | None) -> bool:
    """Whether the request may have reached the server (True when unknown)."""
    return True if attempt is None else attempt.connected


MAX_RETRY_AFTER = 600.0
"""A ``Retry-After`` longer than this (seconds) is capped: a kiosk must not go quiet for days."""


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or HTTP date), capped.

    Parsed by urllib3, as requests itself would (RFC 9110: whole seconds, or a date).

    Args:
        value: The header value.

    Returns:
        Seconds (0 to :data:`MAX_RETRY_AFTER`), or None when absent or not valid.
    """
    if not value:
        return None
    from urllib3.exceptions import InvalidHeader
    from urllib3.util.retry import Retry

    try:
        seconds = Retry(0).parse_retry_after(value)
    except (InvalidHeader, OverflowError, ValueError):
        return None
    return min(max(float(seconds), 0.0), MAX_RETRY_AFTER)
