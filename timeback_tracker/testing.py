"""A real Caliper receiver on loopback, for the tests of timeback-tracker and of its users.

:class:`LocalCollector` is a small HTTP server (standard library only) that
answers like Timeback's Caliper endpoint: it checks the content type, the
bearer token and the body size, validates every envelope with the same rules
as :func:`timeback_tracker.load`, records what it accepts, and can be scripted
to fail, drop, delay or go away, so that retries, timeouts and outages can be
tested against real sockets::

    from timeback_tracker.testing import LocalCollector

    with LocalCollector(token="secret") as collector:
        collector.fail_next(503, retry_after=1)
        ...  # point the tracker at collector.url with tt.BearerToken("secret")
        assert collector.wait_for(3, timeout=5.0)
        assert collector.duplicate_conflicts == []

It also serves an OAuth2 client-credentials token endpoint at
:attr:`LocalCollector.token_url` for the tests of
:class:`~timeback_tracker.ClientCredentials`.

Every response is written in one piece, with ``Content-Length``, on sockets
with ``TCP_NODELAY``, so a loopback round trip takes well under a millisecond.
The collector never logs or prints request bodies, tokens or secrets.
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import email.message
import hmac
import http.server
import json
import math
import random
import secrets
import selectors
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any, Final, Literal
from urllib.parse import parse_qs, urlsplit

import attrs

from timeback_tracker._serialization import load
from timeback_tracker.exceptions import ValidationError
from timeback_tracker.models import CALIPER_CONTEXT, Envelope

__all__ = ["EventOutcome", "LocalCollector", "RequestRecord"]

_OAUTH_PATH: Final = "/oauth2/token"
_MAX_BODY: Final = 64 * 1024 * 1024  # hard ceiling, even without max_body_bytes
_CHUNK: Final = 64 * 1024
_JOIN_TIMEOUT: Final = 2.0
_NO_BODY_STATUSES: Final = frozenset({204, 304})

JSONObject = dict[str, Any]
"""A decoded JSON object, as received on the wire."""

EventOutcome = Literal["new", "duplicate", "conflict"]
"""What an accepted event was, as passed to ``on_event``: the first arrival of its
``id``; a re-send with the same content; or a re-send with DIFFERENT content."""


@attrs.frozen(kw_only=True)
class RequestRecord:
    """One request the collector answered (or dropped), for assertions on client behaviour.

    The record never holds the ``Authorization`` header or the body.

    Attributes:
        method: The HTTP method, e.g. ``"POST"``.
        path: The request path without its query string.
        status: The status answered, or ``None`` when the connection was dropped
            without a response (:meth:`LocalCollector.drop_next`, or an outage
            during :meth:`LocalCollector.delay_next`).
        event_count: Number of items in the envelope's ``data`` list (0 when the
            body is not an envelope).
        event_ids: The ``id`` of each event in ``data`` that has a string id.
        user_agent: The ``User-Agent`` request header, if sent.
        request_id: The ``X-Request-ID`` request header, if sent.
        connection: Sequence number of the TCP connection the request came on
            (equal numbers mean a reused keep-alive connection).
        at: When the request was received, on the :func:`time.monotonic` clock.
        reason: Why an error answer was given: its ``message`` (or OAuth2
            ``error``) and, for an invalid envelope, each problem as
            ``path: rule``; never a value from the request. None for 2xx
            answers and dropped requests.
    """

    method: str
    path: str
    status: int | None
    event_count: int
    event_ids: tuple[str, ...]
    user_agent: str | None
    request_id: str | None
    connection: int
    at: float
    reason: str | None = None


@attrs.frozen
class _Answer:
    status: int
    payload: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class _Fault:
    kind: Literal["fail", "drop", "delay"]
    answer: _Answer | None = None
    seconds: float = 0.0


@attrs.frozen
class _Request:
    method: str
    path: str
    headers: email.message.Message
    body: bytes | None  # None when larger than the limit (already drained)
    connection: int
    at: float


def _json_answer(status: int, payload: Mapping[str, Any], *headers: tuple[str, str]) -> _Answer:
    return _Answer(status, json.dumps(payload).encode(), "application/json", headers)


def _error(status: int, message: str, *headers: tuple[str, str]) -> _Answer:
    return _json_answer(status, {"status": "error", "message": message}, *headers)


def _check_status(status: int, name: str = "status") -> int:
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
        raise ValueError(f"{name} must be an HTTP status code between 200 and 599")
    return status


def _check_times(times: int) -> int:
    if isinstance(times, bool) or not isinstance(times, int) or times < 1:
        raise ValueError("times must be a whole number >= 1")
    return times


def _check_header_value(value: str, name: str) -> str:
    if any(char in value for char in "\r\n\0"):
        raise ValueError(f"{name} must not contain line breaks")
    return value


def _reason(answer: _Answer) -> str | None:
    """The message of an error answer, with the paths of an invalid envelope's problems."""
    if answer.status < 300:
        return None
    try:
        body = json.loads(answer.payload)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    message = body.get("message", body.get("error"))
    problems = [
        f"{error.get('path')}: {error.get('message')}"
        for error in body.get("errors") or ()
        if isinstance(error, dict)
    ]
    return "; ".join(([message] if isinstance(message, str) else []) + problems) or None


def _canonical(event: object) -> str:
    return json.dumps(event, sort_keys=True, separators=(",", ":"))


def _run_id(event: JSONObject) -> object:
    extensions = event.get("extensions")
    return extensions.get("runId") if isinstance(extensions, dict) else None


def _envelope_ids(data: object) -> tuple[int, tuple[str, ...]]:
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return 0, ()
    ids = tuple(
        item["id"] for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)
    )
    return len(items), ids


def _media_type(headers: email.message.Message) -> str:
    return (headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()


def _bearer(headers: email.message.Message) -> str | None:
    scheme, _, credentials = (headers.get("Authorization") or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


def _basic(headers: email.message.Message) -> tuple[str, str] | None:
    scheme, _, credentials = (headers.get("Authorization") or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, colon, secret = decoded.partition(":")
    return (client_id, secret) if colon else None


class LocalCollector:
    """A Caliper receiver on loopback that records envelopes and injects faults.

    The events endpoint (``POST {path}``) answers like Timeback's: 415 unless
    the body is ``application/json``; 401 without a valid bearer token (when
    ``token`` or ``clients`` is set); 413 above ``max_body_bytes``; 422 for
    another ``dataVersion``; 400 with ``errors`` (JSON paths) for an invalid
    envelope, recording nothing; otherwise 200 and the envelope is recorded.
    Unknown paths answer 404. Scripted faults (:meth:`fail_next`,
    :meth:`drop_next`, :meth:`delay_next`, :meth:`fail_rate`) are applied to
    a request before any of those checks, like a failing proxy would.

    Every method and property is thread-safe; properties return snapshots.

    Args:
        host: Address to listen on (``"::1"`` for IPv6 loopback).
        port: Port to listen on; 0 picks a free one (kept across
            :meth:`go_down`/:meth:`come_back` and a restart).
        token: A bearer token the events endpoint accepts; ``None`` with no
            ``clients`` means no authentication.
        path: Path of the events endpoint.
        max_body_bytes: Larger bodies are answered 413 (``None``: no limit
            below the 64 MiB ceiling).
        clients: OAuth2 clients, ``client_id -> client_secret``, allowed to get
            tokens from :attr:`token_url`; when set, the events endpoint
            requires a token.
        token_ttl: Seconds an issued token stays valid (``expires_in``).
        on_event: Called with each event of every accepted envelope and its
            :data:`EventOutcome`, in the order of recording, from the handler
            thread and before the client gets its answer (so a 200 means the
            hook has run). Calls never overlap. If it raises, the request is
            answered 500; the envelope stays recorded, so the client's re-send
            counts as a duplicate and is passed to the hook again.
        on_request: Called with the :class:`RequestRecord` of every request as
            soon as it is logged, before its answer is sent, from the handler
            thread; calls may overlap. Exceptions it raises are ignored.

    Raises:
        ValueError: An argument is out of range; the message names it.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        path: str = "/caliper/event",
        max_body_bytes: int | None = None,
        clients: Mapping[str, str] | None = None,
        token_ttl: float = 3600.0,
        on_event: Callable[[JSONObject, EventOutcome], None] | None = None,
        on_request: Callable[[RequestRecord], None] | None = None,
    ) -> None:
        if not path.startswith("/") or path == _OAUTH_PATH or "?" in path:
            raise ValueError(f"path must start with '/', have no query and not be {_OAUTH_PATH!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError("port must be between 0 and 65535")
        if max_body_bytes is not None and (
            isinstance(max_body_bytes, bool)
            or not isinstance(max_body_bytes, int)
            or max_body_bytes < 1
        ):
            raise ValueError("max_body_bytes must be a whole number >= 1 or None")
        if isinstance(token_ttl, bool) or not isinstance(token_ttl, (int, float)):
            raise TypeError("token_ttl must be a number of seconds > 0")
        if not (math.isfinite(token_ttl) and token_ttl > 0):
            raise ValueError("token_ttl must be a number of seconds > 0")
        if token is not None and not (isinstance(token, str) and token):
            raise ValueError("token must be a non-empty string or None")
        self._host = host
        self._family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._port = port
        self._token = token
        self._path = path
        self._max_body = min(max_body_bytes or _MAX_BODY, _MAX_BODY)
        self._clients = dict(clients or {})
        self._token_ttl = float(token_ttl)
        self._on_event = on_event
        self._on_request = on_request

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._hooks = threading.Lock()  # keeps on_event calls in recording order, one at a time
        self._envelopes: list[JSONObject] = []
        self._events: list[JSONObject] = []
        self._seen: dict[str, str] = {}
        self._duplicates = 0
        self._conflicts: list[str] = []
        self._requests: list[RequestRecord] = []
        self._token_requests = 0
        self._issued: dict[str, float] = {}
        self._faults: collections.deque[_Fault] = collections.deque()
        self._token_faults: collections.deque[int] = collections.deque()
        self._poison: list[Callable[[JSONObject], bool]] = []
        self._fail_rate = 0.0
        self._fail_statuses: tuple[int, ...] = (500, 503)
        self._random = random.Random()
        self._connections = 0

        self._lifecycle = threading.Lock()
        self._started = False
        self._server: _Server | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> LocalCollector:
        """Start listening (no-op when already listening).

        Returns:
            The collector itself, so ``collector = LocalCollector().start()`` works.

        Raises:
            OSError: The address cannot be bound.
        """
        with self._lifecycle:
            if self._server is None:
                self._listen()
            self._started = True
        return self

    def stop(self) -> None:
        """Stop: close the listening socket and every open connection, join the threads.

        Requests being delayed are abandoned without a response. Idempotent;
        :meth:`start` may listen again afterwards, on the same port. Recorded
        data is kept.
        """
        with self._lifecycle:
            self._started = False
            self._unlisten()

    def go_down(self) -> None:
        """Simulate an outage: stop listening and drop every open connection.

        New connections are refused until :meth:`come_back`. Idempotent.

        Raises:
            RuntimeError: The collector is not started.
        """
        with self._lifecycle:
            if not self._started:
                raise RuntimeError("LocalCollector is not started")
            self._unlisten()

    def come_back(self) -> None:
        """End an outage: listen again on the same port (no-op when listening).

        Raises:
            RuntimeError: The collector is not started.
            OSError: The port was taken by someone else meanwhile.
        """
        with self._lifecycle:
            if not self._started:
                raise RuntimeError("LocalCollector is not started")
            if self._server is None:
                self._listen()

    def __enter__(self) -> LocalCollector:
        """Start the collector.

        Returns:
            The started collector.
        """
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        """Stop the collector."""
        self.stop()

    def _listen(self) -> None:
        server = _Server((self._host, self._port), self._family, self)
        self._port = server.server_address[1]
        server.start()
        self._server = server

    def _unlisten(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close(_JOIN_TIMEOUT)

    # ------------------------------------------------------------------ addresses

    @property
    def port(self) -> int:
        """The TCP port (the bound one once started).

        Raises:
            RuntimeError: Never started and no fixed port was given.
        """
        if self._port == 0:
            raise RuntimeError("LocalCollector is not started (no port bound yet)")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the collector, without a path."""
        host = f"[{self._host}]" if self._family == socket.AF_INET6 else self._host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The full URL of the events endpoint, e.g. ``http://127.0.0.1:54321/caliper/event``."""
        return self.base_url + self._path

    @property
    def token_url(self) -> str:
        """The URL of the OAuth2 token endpoint, e.g. ``http://127.0.0.1:54321/oauth2/token``."""
        return self.base_url + _OAUTH_PATH

    @property
    def is_up(self) -> bool:
        """Whether the collector is listening (started and not down)."""
        return self._server is not None

    # ------------------------------------------------------------------ recordings

    @property
    def envelopes(self) -> list[JSONObject]:
        """Every accepted envelope, as received, in arrival order."""
        with self._lock:
            return list(self._envelopes)

    @property
    def events(self) -> list[JSONObject]:
        """Every accepted event once, in order of first arrival (deduplicated by ``id``)."""
        with self._lock:
            return list(self._events)

    @property
    def duplicates(self) -> int:
        """How many times an already recorded event ``id`` was received again."""
        with self._lock:
            return self._duplicates

    @property
    def duplicate_conflicts(self) -> list[str]:
        """Ids received again with DIFFERENT content; empty for a correct client."""
        with self._lock:
            return list(self._conflicts)

    @property
    def requests(self) -> list[RequestRecord]:
        """One :class:`RequestRecord` per request answered or dropped, in order."""
        with self._lock:
            return list(self._requests)

    @property
    def pending_faults(self) -> int:
        """How many scripted faults (fail, drop, delay) are still waiting for a request."""
        with self._lock:
            return len(self._faults)

    @property
    def token_requests(self) -> int:
        """How many requests reached the token endpoint."""
        with self._lock:
            return self._token_requests

    def time_spent_events(self, run_id: str | None = None) -> list[JSONObject]:
        """The recorded TimeSpentEvents, optionally of one run.

        Args:
            run_id: Keep only events whose ``extensions.runId`` equals it.

        Returns:
            The events in order of first arrival.
        """
        return self._select("TimeSpentEvent", run_id)

    def completions(self, run_id: str | None = None) -> list[JSONObject]:
        """The recorded ActivityCompletedEvents (``ActivityEvent``), optionally of one run.

        Args:
            run_id: Keep only events whose ``extensions.runId`` equals it.

        Returns:
            The events in order of first arrival.
        """
        return self._select("ActivityEvent", run_id)

    def _select(self, kind: str, run_id: str | None) -> list[JSONObject]:
        with self._lock:
            return [
                event
                for event in self._events
                if event.get("type") == kind and (run_id is None or _run_id(event) == run_id)
            ]

    def run_ids(self) -> list[str]:
        """The distinct ``extensions.runId`` values of recorded events.

        Returns:
            The run ids in order of first appearance.
        """
        with self._lock:
            found = (_run_id(event) for event in self._events)
            return list(dict.fromkeys(run for run in found if isinstance(run, str)))

    def totals(self, run_id: str) -> tuple[float, float]:
        """Seconds of one run summed over its TimeSpentEvents.

        Args:
            run_id: The run's ``extensions.runId``.

        Returns:
            ``(active_seconds, inactive_seconds)``, rounded to milliseconds.
        """
        active: list[float] = []
        inactive: list[float] = []
        for event in self.time_spent_events(run_id):
            generated = event.get("generated")
            items = generated.get("items") if isinstance(generated, dict) else None
            for item in items if isinstance(items, list) else ():
                if not isinstance(item, dict):
                    continue
                value = item.get("value")
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue
                if item.get("type") == "active":
                    active.append(value)
                elif item.get("type") == "inactive":
                    inactive.append(value)
        return round(math.fsum(active), 3), round(math.fsum(inactive), 3)

    def reset(self) -> None:
        """Forget every recording: envelopes, events, duplicates, the request log and counts.

        Faults, poison rules and issued tokens stay; see :meth:`clear_faults`
        and :meth:`revoke_tokens`.
        """
        with self._changed:
            self._envelopes.clear()
            self._events.clear()
            self._seen.clear()
            self._duplicates = 0
            self._conflicts.clear()
            self._requests.clear()
            self._token_requests = 0
            self._changed.notify_all()

    def wait_for(
        self,
        predicate_or_count: int | Callable[[LocalCollector], bool],
        timeout: float = 5.0,
    ) -> bool:
        """Block until enough events arrived or a condition holds.

        The condition is checked whenever a request has been handled; there is
        no polling.

        Args:
            predicate_or_count: A number of distinct events to wait for, or a
                function called with the collector that returns True when done.
            timeout: Seconds to wait at most.

        Returns:
            True when the condition holds, False on timeout.
        """
        if isinstance(predicate_or_count, int):
            count = predicate_or_count

            def done() -> bool:
                return len(self._events) >= count

        else:
            check = predicate_or_count

            def done() -> bool:
                return bool(check(self))

        with self._changed:
            return self._changed.wait_for(done, timeout)

    # ------------------------------------------------------------------ faults

    def fail_next(
        self,
        status: int,
        times: int = 1,
        retry_after: int | str | None = None,
        body: Mapping[str, Any] | str | bytes | None = None,
    ) -> None:
        """Answer the next requests to the events endpoint with an error; nothing is recorded.

        Args:
            status: The status to answer (200-599), e.g. 429 or 503.
            times: How many consecutive requests get it.
            retry_after: A ``Retry-After`` header: whole seconds, or a string
                sent as is (such as an HTTP date).
            body: The body: a mapping (sent as JSON), or text/bytes (sent as
                JSON if it parses, else as text). Default:
                ``{"status": "error", "message": ...}``.

        Raises:
            ValueError: An argument is out of range.
        """
        _check_status(status)
        headers: tuple[tuple[str, str], ...] = ()
        if retry_after is not None:
            if isinstance(retry_after, bool) or not isinstance(retry_after, (int, str)):
                raise ValueError("retry_after must be whole seconds (int), a string or None")
            if isinstance(retry_after, int) and retry_after < 0:
                raise ValueError("retry_after must be >= 0 seconds")
            headers = (("Retry-After", _check_header_value(str(retry_after), "retry_after")),)
        if body is None:
            answer = _error(status, f"injected failure (HTTP {status})", *headers)
        elif isinstance(body, Mapping):
            answer = _json_answer(status, body, *headers)
        else:
            raw = body.encode() if isinstance(body, str) else bytes(body)
            try:
                json.loads(raw)
            except ValueError:
                answer = _Answer(status, raw, "text/plain; charset=utf-8", headers)
            else:
                answer = _Answer(status, raw, "application/json", headers)
        self._script(_Fault("fail", answer=answer), _check_times(times))

    def drop_next(self, times: int = 1) -> None:
        """Reset the connection of the next requests to the events endpoint without answering.

        The body is read first, then the connection is closed with a TCP
        reset: the client sees a connection error. Nothing is recorded.

        Args:
            times: How many consecutive requests are dropped.

        Raises:
            ValueError: ``times`` is below 1.
        """
        self._script(_Fault("drop"), _check_times(times))

    def delay_next(self, seconds: float, times: int = 1) -> None:
        """Wait before answering the next requests to the events endpoint, then answer normally.

        Use it to provoke client read timeouts: the envelope is still recorded
        after the delay (so the client's re-send shows up as duplicates),
        unless the collector goes down or stops meanwhile.

        Args:
            seconds: How long to wait before answering.
            times: How many consecutive requests are delayed.

        Raises:
            ValueError: An argument is out of range.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError("seconds must be a number >= 0")
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError("seconds must be a number >= 0")
        self._script(_Fault("delay", seconds=float(seconds)), _check_times(times))

    def reject_events(self, predicate: Callable[[JSONObject], bool]) -> None:
        """Add a poison rule: envelopes holding a matching event are answered 400.

        The 400 body names the JSON path of the first matching event
        (``$.data[2]``) in ``errors``; nothing of that envelope is recorded.
        A predicate that raises makes the request answer 500.

        Args:
            predicate: Called with each event dict of a valid envelope; True
                rejects the envelope.
        """
        with self._lock:
            self._poison.append(predicate)

    def fail_rate(
        self,
        rate: float,
        statuses: Iterable[int] = (500, 503),
        seed: int | None = None,
    ) -> None:
        """Fail a random share of requests to the events endpoint (after scripted faults).

        Args:
            rate: Probability, 0-1, that a request fails; 0 turns it off.
            statuses: The statuses to pick from at random.
            seed: Seed of the random generator, for reproducible runs.

        Raises:
            ValueError: An argument is out of range.
        """
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ValueError("rate must be a number between 0 and 1")
        chosen = tuple(_check_status(status, "statuses") for status in statuses)
        if not chosen:
            raise ValueError("statuses must name at least one status")
        with self._lock:
            self._fail_rate = float(rate)
            self._fail_statuses = chosen
            self._random = random.Random(seed)

    def fail_token_next(self, status: int, times: int = 1) -> None:
        """Answer the next requests to the token endpoint with an error.

        Args:
            status: The status to answer (200-599).
            times: How many consecutive token requests get it.

        Raises:
            ValueError: An argument is out of range.
        """
        _check_status(status)
        with self._lock:
            self._token_faults.extend([status] * _check_times(times))

    def clear_faults(self) -> None:
        """Forget every scripted fault, poison rule, failure rate and token fault."""
        with self._lock:
            self._faults.clear()
            self._poison.clear()
            self._fail_rate = 0.0
            self._token_faults.clear()

    def revoke_tokens(self) -> None:
        """Invalidate every token issued by the token endpoint (not the fixed ``token``)."""
        with self._lock:
            self._issued.clear()

    def _script(self, fault: _Fault, times: int) -> None:
        with self._lock:
            self._faults.extend([fault] * times)

    def _take_fault(self) -> _Fault | None:
        with self._changed:
            if self._faults:
                self._changed.notify_all()  # wait_for(lambda c: c.pending_faults == 0)
                return self._faults.popleft()
            if self._fail_rate and self._random.random() < self._fail_rate:
                status = self._random.choice(self._fail_statuses)
                return _Fault("fail", answer=_error(status, f"injected failure (HTTP {status})"))
            return None

    # ------------------------------------------------------------------ request handling

    def _next_connection(self) -> int:
        with self._lock:
            self._connections += 1
            return self._connections

    def _log(self, request: _Request, status: int | None, reason: str | None = None) -> None:
        count: int = 0
        ids: tuple[str, ...] = ()
        if request.body:
            with contextlib.suppress(ValueError):
                count, ids = _envelope_ids(json.loads(request.body))
        record = RequestRecord(
            method=request.method,
            path=request.path,
            status=status,
            event_count=count,
            event_ids=ids,
            user_agent=request.headers.get("User-Agent"),
            request_id=request.headers.get("X-Request-ID"),
            connection=request.connection,
            at=request.at,
            reason=reason,
        )
        with self._changed:
            self._requests.append(record)
            self._changed.notify_all()
        if self._on_request is not None:
            with contextlib.suppress(Exception):  # an observer must not break the answer
                self._on_request(record)

    def _authorized(self, headers: email.message.Message) -> _Answer | None:
        if self._token is None and not self._clients:
            return None
        presented = _bearer(headers)
        challenge = ("WWW-Authenticate", 'Bearer realm="caliper"')
        if presented is None:
            return _error(401, "missing bearer token", challenge)
        if self._token is not None and hmac.compare_digest(
            presented.encode(), self._token.encode()
        ):
            return None
        with self._lock:
            expiry = self._issued.get(presented)
            if expiry is not None and time.monotonic() >= expiry:
                del self._issued[presented]
                expiry = None
        if expiry is None:
            return _error(401, "invalid or expired token", challenge)
        return None

    def _answer_events(self, request: _Request) -> _Answer:  # noqa: PLR0911 - a return per status
        """Check, validate and record one request to the events endpoint."""
        if request.method != "POST":
            return _error(405, "method not allowed", ("Allow", "POST"))
        denied = self._authorized(request.headers)
        if denied is not None:
            return denied
        if _media_type(request.headers) != "application/json":
            return _error(415, "Content-Type must be application/json")
        if request.body is None:
            return _error(413, "request body too large")
        try:
            data = json.loads(request.body)
        except ValueError:
            return _json_answer(
                400,
                {
                    "status": "error",
                    "message": "body is not valid JSON",
                    "errors": [{"path": "$", "message": "must be a JSON object"}],
                },
            )
        version = data.get("dataVersion") if isinstance(data, dict) else None
        if isinstance(version, str) and version != CALIPER_CONTEXT:
            return _error(422, f"unsupported dataVersion; expected {CALIPER_CONTEXT}")
        try:
            load(data, Envelope)
        except ValidationError as exc:
            errors = [{"path": error.path, "message": error.message} for error in exc.errors]
            return _json_answer(
                400, {"status": "error", "message": "invalid Caliper envelope", "errors": errors}
            )
        with self._hooks:
            with self._changed:
                poisoned = self._poisoned(data["data"])
                if poisoned is not None:
                    return poisoned
                outcomes = self._record(data)
            if self._on_event is not None:
                try:
                    for event, outcome in zip(data["data"], outcomes, strict=True):
                        self._on_event(event, outcome)
                except Exception:  # noqa: BLE001 - the client should retry, as after a server bug
                    return _error(500, "the collector's on_event hook failed")
        count = len(data["data"])
        return _json_answer(200, {"status": "success", "message": f"{count} event(s) received"})

    def _poisoned(self, events: list[JSONObject]) -> _Answer | None:
        for index, event in enumerate(events):
            for predicate in self._poison:
                try:
                    rejected = predicate(event)
                except Exception:  # noqa: BLE001 - a broken rule is the test's bug: say so loudly
                    return _error(500, "a reject_events rule raised")
                if rejected:
                    error = {
                        "path": f"$.data[{index}]",
                        "message": f"event {event['id']} rejected by a reject_events rule",
                    }
                    return _json_answer(
                        400,
                        {"status": "error", "message": "event rejected", "errors": [error]},
                    )
        return None

    def _record(self, envelope: JSONObject) -> list[EventOutcome]:
        outcomes: list[EventOutcome] = []
        with self._changed:
            self._envelopes.append(envelope)
            for event in envelope["data"]:
                event_id = event["id"]
                content = _canonical(event)
                first = self._seen.get(event_id)
                if first is None:
                    self._seen[event_id] = content
                    self._events.append(event)
                    outcomes.append("new")
                    continue
                self._duplicates += 1
                outcomes.append("duplicate" if first == content else "conflict")
                if first != content and event_id not in self._conflicts:
                    self._conflicts.append(event_id)
            self._changed.notify_all()
        return outcomes

    def _answer_token(self, request: _Request) -> _Answer:  # noqa: PLR0911 - a return per status
        """Answer one request to the OAuth2 token endpoint."""
        with self._lock:
            self._token_requests += 1
            status = self._token_faults.popleft() if self._token_faults else None
        if status is not None:
            kind = "invalid_client" if status == 401 else "invalid_request"
            return _json_answer(status, {"error": "server_error" if status >= 500 else kind})
        if request.method != "POST":
            return _json_answer(405, {"error": "invalid_request"}, ("Allow", "POST"))
        no_store = ("Cache-Control", "no-store")
        if (
            _media_type(request.headers) != "application/x-www-form-urlencoded"
            or request.body is None
        ):
            return _json_answer(400, {"error": "invalid_request"}, no_store)
        try:
            form = parse_qs(request.body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            return _json_answer(400, {"error": "invalid_request"}, no_store)
        credentials = _basic(request.headers)
        if credentials is None and "client_id" in form:
            # client_secret_post, which Cognito accepts as well as HTTP Basic.
            credentials = (form["client_id"][0], form.get("client_secret", [""])[0])
        if credentials is None or not self._client_ok(*credentials):
            challenge = ("WWW-Authenticate", 'Basic realm="oauth2"')
            return _json_answer(401, {"error": "invalid_client"}, no_store, challenge)
        grant = form.get("grant_type", [None])[0]
        if grant is None:
            return _json_answer(400, {"error": "invalid_request"}, no_store)
        if grant != "client_credentials":
            return _json_answer(400, {"error": "unsupported_grant_type"}, no_store)
        access_token = secrets.token_urlsafe(32)
        with self._lock:
            self._issued[access_token] = time.monotonic() + self._token_ttl
        ttl = self._token_ttl
        expires_in: float = int(ttl) if ttl.is_integer() else ttl
        payload = {"access_token": access_token, "expires_in": expires_in, "token_type": "Bearer"}
        return _json_answer(200, payload, no_store)

    def _client_ok(self, client_id: str, secret: str) -> bool:
        expected = self._clients.get(client_id)
        return expected is not None and hmac.compare_digest(secret.encode(), expected.encode())

    # ------------------------------------------------------------------ repr

    def __repr__(self) -> str:
        """Counts and state only: never tokens, secrets or recorded contents."""
        with self._lock:
            state = "up" if self._server else ("down" if self._started else "stopped")
            where = f"{self._host}:{self._port}" if self._port else self._host
            return (
                f"<LocalCollector {where} {state} envelopes={len(self._envelopes)}"
                f" events={len(self._events)} duplicates={self._duplicates}"
                f" conflicts={len(self._conflicts)} requests={len(self._requests)}"
                f" token_requests={self._token_requests} faults={len(self._faults)}>"
            )


class _Server(http.server.ThreadingHTTPServer):
    """One listening incarnation: its own accept thread and its connections."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], family: socket.AddressFamily, collector: LocalCollector
    ) -> None:
        self.address_family = family
        self.collector = collector
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
        self._acceptor = threading.Thread(
            target=self._accept_loop, name="timeback-collector-accept", daemon=True
        )

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def start(self) -> None:
        self._acceptor.start()

    def connection_number(self, request: socket.socket) -> int:
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
        number = self.collector._next_connection()
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
        if self._acceptor.is_alive():
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

    def __init__(self, answer: _Answer | None) -> None:
        super().__init__()
        self.answer = answer


class _Handler(http.server.BaseHTTPRequestHandler):
    """Parses one request at a time and writes each response with a single send."""

    protocol_version = "HTTP/1.1"
    server_version = "timeback-tracker-LocalCollector"
    sys_version = ""
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: request lines and errors never reach stderr."""

    def do_POST(self) -> None:
        """Handle a POST."""
        self._dispatch()

    def do_GET(self) -> None:
        """Handle a GET (405 on the endpoints, 404 elsewhere)."""
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
        collector = self.server.collector
        request = self._read_request()
        if request is None:
            return
        if request.path == collector._path:
            self._events(request)
            return
        if request.path == _OAUTH_PATH:
            answer = collector._answer_token(request)
        else:
            answer = _error(404, "not found")
        collector._log(request, answer.status, _reason(answer))
        self._send(answer)

    def _events(self, request: _Request) -> None:
        collector = self.server.collector
        fault = collector._take_fault()
        if fault is not None and fault.kind == "drop":
            collector._log(request, None)
            self.server.abort(self.connection)
            self.close_connection = True
            return
        if fault is not None and fault.kind == "delay" and self.server.closing.wait(fault.seconds):
            collector._log(request, None)
            self.close_connection = True
            return
        if fault is not None and fault.answer is not None:
            answer = fault.answer
        else:
            try:
                answer = collector._answer_events(request)
            except Exception:  # noqa: BLE001 - answer like a server bug would, never crash
                answer = _error(500, "internal error in LocalCollector")
        collector._log(request, answer.status, _reason(answer))
        self._send(answer)

    def _read_request(self) -> _Request | None:
        """Read the body (draining it when too large); None when the request is unusable."""
        at = time.monotonic()
        limit = self.server.collector._max_body
        try:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                body = self._read_chunked(limit)
            else:
                body = self._read_sized(limit)
        except _UnusableRequestError as exc:
            if exc.answer is not None:
                self.close_connection = True
                self._send(exc.answer)
            self.close_connection = True
            return None
        return _Request(
            method=self.command,
            path=urlsplit(self.path).path,
            headers=self.headers,
            body=body,
            connection=self.server.connection_number(self.connection),
            at=at,
        )

    def _read_sized(self, limit: int) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            raise _UnusableRequestError(_error(400, "invalid Content-Length"))
        if length > _MAX_BODY:
            # Too big to drain: answer and hang up (the client may see a reset instead).
            raise _UnusableRequestError(_error(413, "request body too large"))
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
                raise _UnusableRequestError(_error(400, "invalid chunked encoding")) from None
            if chunk_size == 0:
                break
            size += chunk_size
            if size > _MAX_BODY:
                raise _UnusableRequestError(_error(413, "request body too large"))
            chunk = self._read_exactly(chunk_size, keep=size <= limit)
            if chunk is not None:
                parts.append(chunk)
            self.rfile.readline(1024)  # the CRLF after the chunk
        while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(parts) if size <= limit else None

    def _send(self, answer: _Answer) -> None:
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
