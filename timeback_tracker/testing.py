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
:class:`~timeback_tracker.ClientCredentials`, and a live page of the runs it
received at :attr:`LocalCollector.page_url`, with a JSON API behind it
(``/api/runs``, ``/api/runs/<run id>``) that tests may read too.

Every response is written in one piece, with ``Content-Length``, on sockets
with ``TCP_NODELAY``, so a loopback round trip takes well under a millisecond.
The collector never logs or prints request bodies, tokens or secrets.

This module is the fixture's public face, a little over 600 lines because
every public method carries its documentation. Its parts live in private
modules: the HTTP server (``_collector_server``),
the fault scripting (``_collector_faults``), the token endpoint
(``_collector_oauth``), the runs behind the page (``_collector_runs``) and the
page (``_collector_page``, with its files in ``_static/``).
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

import attrs

from timeback_tracker._collector_events import (
    RequestRecord,
    canonical,
    check_request,
    envelope_ids,
    reason,
)
from timeback_tracker._collector_faults import FaultScripting
from timeback_tracker._collector_oauth import OAUTH_PATH, TokenIssuer
from timeback_tracker._collector_page import Page
from timeback_tracker._collector_runs import RunBook
from timeback_tracker._collector_server import (
    MAX_BODY,
    Answer,
    CollectorServer,
    Hangup,
    IncomingRequest,
    error_answer,
    json_answer,
)
from timeback_tracker._fake_clock import FakeClock
from timeback_tracker.models import COMPLETED_TYPE, TIME_SPENT_TYPE

__all__ = ["EventOutcome", "FakeClock", "LocalCollector", "RequestRecord"]

_JOIN_TIMEOUT: Final = 2.0

JSONObject = dict[str, Any]
"""A decoded JSON object, as received on the wire."""

EventOutcome = Literal["new", "duplicate", "conflict"]
"""What an accepted event was, as passed to ``on_event``: the first arrival of its
``id``; a re-send with the same content; or a re-send with DIFFERENT content."""


def _run_id(event: JSONObject) -> object:
    extensions = event.get("extensions")
    return extensions.get("runId") if isinstance(extensions, dict) else None


class LocalCollector(FaultScripting):
    """A Caliper receiver on loopback that records envelopes and injects faults.

    The events endpoint (``POST {path}``) answers like Timeback's: 415 unless
    the body is ``application/json``; 401 without a valid bearer token (when
    ``token`` or ``clients`` is set); 413 above ``max_body_bytes``; 422 for
    another ``dataVersion``; 400 with ``errors`` (JSON paths) for an invalid
    envelope, recording nothing; otherwise 200 and the envelope is recorded.
    Scripted faults (:meth:`fail_next`, :meth:`drop_next`, :meth:`delay_next`,
    :meth:`fail_rate`) are applied to a request before any of those checks,
    like a failing proxy would. ``GET /`` serves the live page of runs
    (:attr:`page_url`) and ``/api/...`` its JSON; other paths answer 404.

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
        on_request: Called with the :class:`RequestRecord` of every request
            (but those for the page) as soon as it is logged, before its answer
            is sent, from the handler thread; calls may overlap. Exceptions it
            raises are ignored.
        show_pii: Show students' emails and names on the page and in its JSON
            API; hidden (``"(hidden)"``) by default.

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
        show_pii: bool = False,
    ) -> None:
        if not path.startswith("/") or path == OAUTH_PATH or "?" in path:
            raise ValueError(f"path must start with '/', have no query and not be {OAUTH_PATH!r}")
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
        self._max_body = min(max_body_bytes or MAX_BODY, MAX_BODY)
        self._tokens = TokenIssuer(clients or {}, float(token_ttl))
        self._on_event = on_event
        self._on_request = on_request
        self._book = RunBook(show_pii=bool(show_pii))
        self._page = Page(self._book, host, path)

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._hooks = threading.Lock()  # keeps on_event calls in recording order, one at a time
        self._envelopes: list[JSONObject] = []
        self._events: list[JSONObject] = []
        self._seen: dict[str, str] = {}
        self._duplicates = 0
        self._conflicts: list[str] = []
        self._requests: list[RequestRecord] = []
        self._connections = 0
        self._init_faults()

        self._lifecycle = threading.Lock()
        self._started = False
        self._server: CollectorServer | None = None

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
        server = CollectorServer(
            (self._host, self._port),
            self._family,
            _Routes(self._max_body, self._next_connection, self._handle),
        )
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
    def page_url(self) -> str:
        """The URL of the live page of runs, e.g. ``http://127.0.0.1:54321/``.

        Its JSON API is at ``page_url + "api/runs"`` and ``page_url + "api/runs/<run id>"``.
        """
        return self.base_url + "/"

    @property
    def token_url(self) -> str:
        """The URL of the OAuth2 token endpoint, e.g. ``http://127.0.0.1:54321/oauth2/token``."""
        return self.base_url + OAUTH_PATH

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
        """One :class:`RequestRecord` per request answered or dropped, in order.

        Requests for the page and its JSON API (:attr:`page_url`) are left out.
        """
        with self._lock:
            return list(self._requests)

    @property
    def token_requests(self) -> int:
        """How many requests reached the token endpoint."""
        return self._tokens.requests

    def time_spent_events(self, run_id: str | None = None) -> list[JSONObject]:
        """The recorded TimeSpentEvents, optionally of one run.

        Args:
            run_id: Keep only events whose ``extensions.runId`` equals it.

        Returns:
            The events in order of first arrival.
        """
        return self._select(TIME_SPENT_TYPE, run_id)

    def completions(self, run_id: str | None = None) -> list[JSONObject]:
        """The recorded ActivityCompletedEvents (``ActivityEvent``), optionally of one run.

        Args:
            run_id: Keep only events whose ``extensions.runId`` equals it.

        Returns:
            The events in order of first arrival.
        """
        return self._select(COMPLETED_TYPE, run_id)

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
        sums: dict[str, list[float]] = {"active": [], "inactive": []}
        for event in self.time_spent_events(run_id):
            # Only valid events are recorded: every item is a metric with a number.
            for item in event["generated"]["items"]:
                if item["type"] in sums:
                    sums[item["type"]].append(item["value"])
        return round(math.fsum(sums["active"]), 3), round(math.fsum(sums["inactive"]), 3)

    def reset(self) -> None:
        """Forget every recording: envelopes, events, duplicates, the request log and counts.

        The page forgets its runs and rejections too. Faults, poison rules and
        issued tokens stay; see :meth:`clear_faults` and :meth:`revoke_tokens`.
        """
        with self._changed:
            self._envelopes.clear()
            self._events.clear()
            self._seen.clear()
            self._duplicates = 0
            self._conflicts.clear()
            self._requests.clear()
            self._tokens.forget_requests()
            self._book.reset()
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

    def revoke_tokens(self) -> None:
        """Invalidate every token issued by the token endpoint (not the fixed ``token``)."""
        self._tokens.revoke()

    # ------------------------------------------------------------------ request handling

    def _next_connection(self) -> int:
        with self._lock:
            self._connections += 1
            return self._connections

    def _handle(self, request: IncomingRequest) -> Answer | Hangup:
        """Answer one request (the HTTP server calls it from the connection's thread)."""
        if request.path == self._path:
            return self._events_endpoint(request)
        if Page.serves(request.path):
            # Not logged: a browser polling the page is no client behaviour to assert on.
            return self._page.answer(request, self._port)
        if request.path == OAUTH_PATH:
            answer = self._tokens.answer(request)
        else:
            answer = error_answer(404, "not found")
        self._log(request, answer.status, reason(answer))
        return answer

    def _events_endpoint(self, request: IncomingRequest) -> Answer | Hangup:
        fault = self._take_fault()
        if fault is not None and fault.kind == "drop":
            self._log(request, None)
            return Hangup(reset=True)
        if fault is not None and fault.kind == "delay" and request.closing.wait(fault.seconds):
            self._log(request, None)
            return Hangup(reset=False)
        if fault is not None and fault.answer is not None:
            answer = fault.answer
        else:
            try:
                answer = self._answer_events(request)
            except Exception:  # noqa: BLE001 - answer like a server bug would, never crash
                answer = error_answer(500, "internal error in LocalCollector")
        self._log(request, answer.status, reason(answer), answer.problems)
        return answer

    def _log(
        self,
        request: IncomingRequest,
        status: int | None,
        reason: str | None = None,
        problems: tuple[tuple[str, str], ...] = (),
    ) -> None:
        count: int = 0
        ids: tuple[str, ...] = ()
        if request.body:
            with contextlib.suppress(ValueError):
                count, ids = envelope_ids(json.loads(request.body))
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
        if request.path == self._path and (status is None or status >= 300):
            self._book.reject(
                received=time.time() - (time.monotonic() - request.at),
                status=status,
                reason=reason,
                problems=problems,
                event_ids=ids,
                event_count=count,
                body=request.body if problems else None,
            )
        with self._changed:
            self._requests.append(record)
            self._changed.notify_all()
        if self._on_request is not None:
            with contextlib.suppress(Exception):  # an observer must not break the answer
                self._on_request(record)

    def _answer_events(self, request: IncomingRequest) -> Answer:
        """Check, validate and record one request to the events endpoint."""
        data = check_request(request, token=self._token, tokens=self._tokens)
        if isinstance(data, Answer):
            return data
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
                    return error_answer(500, "the collector's on_event hook failed")
        count = len(data["data"])
        return json_answer(200, {"status": "success", "message": f"{count} event(s) received"})

    def _record(self, envelope: JSONObject) -> list[EventOutcome]:
        outcomes: list[EventOutcome] = []
        received = time.time()
        with self._changed:
            self._envelopes.append(envelope)
            for event in envelope["data"]:
                event_id = event["id"]
                content = canonical(event)
                first = self._seen.get(event_id)
                outcome: EventOutcome
                if first is None:
                    self._seen[event_id] = content
                    self._events.append(event)
                    outcome = "new"
                else:
                    self._duplicates += 1
                    outcome = "duplicate" if first == content else "conflict"
                    if outcome == "conflict" and event_id not in self._conflicts:
                        self._conflicts.append(event_id)
                outcomes.append(outcome)
                self._book.add(event, outcome, received)
            self._changed.notify_all()
        return outcomes

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
                f" token_requests={self._tokens.requests} faults={len(self._faults)}>"
            )


@attrs.frozen
class _Routes:
    """What the HTTP server serves (a :class:`RequestHandler`): the collector's answers,
    handed over explicitly so that they stay off its public API."""

    max_body: int
    """Bodies above this many bytes are drained unread and answered 413."""
    next_connection: Callable[[], int]
    """The sequence number of a new TCP connection (for :attr:`RequestRecord.connection`)."""
    handle: Callable[[IncomingRequest], Answer | Hangup]
    """Answer one request."""
