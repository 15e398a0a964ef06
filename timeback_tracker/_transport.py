"""Envelope POSTs and what an answer means.

Imported by the delivery thread when it first sends, so that ``import
timeback_tracker`` does not pay for ``requests``. The HTTP itself is bounded by
``_http.py``: redirects are never followed, at most ``REPLY_CAP`` bytes of a
reply are read, and every request has a total deadline.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime, timezone
from typing import Literal
from urllib.parse import urlsplit

import attrs

from timeback_tracker import _http
from timeback_tracker._http import MAX_RETRY_AFTER, parse_retry_after
from timeback_tracker._serialization import format_timestamp
from timeback_tracker._urls import Url, parse_url
from timeback_tracker._version import __version__
from timeback_tracker.auth import Auth, TokenError
from timeback_tracker.models import CALIPER_CONTEXT

log = logging.getLogger("timeback_tracker.transport")

__all__ = [
    "MAX_RETRY_AFTER",
    "Outcome",
    "Transport",
    "Verdict",
    "classify",
    "encode_envelope",
    "parse_retry_after",
]

Verdict = Literal["ok", "retry", "reject", "too_large", "misconfigured"]

_RETRYABLE_STATUSES = frozenset({408, 425, 429})
# Statuses that judge the events themselves; every other 4xx (and any 3xx) judges
# the configuration, and must never turn a backlog into dead letters.
_REJECTED_STATUSES = frozenset({400, 422})
_AUTH_STATUSES = frozenset({401, 403})


@attrs.frozen
class Outcome:
    """What one POST achieved.

    Attributes:
        verdict: ``ok`` (2xx); ``retry`` (network error, deadline, 408/425/429/5xx);
            ``reject`` (400/422: some event is bad); ``too_large`` (413);
            ``misconfigured`` (3xx, 401/403 even after a fresh token, 404, 405
            and any other 4xx: the configuration is wrong, the events are fine).
        status: The HTTP status, or None when no response arrived.
        reason: A short description, free of secrets, queries and payloads.
        retry_after: The server's ``Retry-After`` in seconds, if any.
        reached: False when the request provably never reached the server
            (connection refused, name not resolved, connect timeout, TLS
            failure, no token), True otherwise.
    """

    verdict: Verdict
    status: int | None
    reason: str
    retry_after: float | None = None
    reached: bool = True


def classify(status: int) -> Verdict:
    """The verdict for an HTTP status code (401/403 before any token refresh)."""
    if 200 <= status < 300:
        return "ok"
    if status in _RETRYABLE_STATUSES or status >= 500:
        return "retry"
    if status == 413:
        return "too_large"
    if status in _REJECTED_STATUSES:
        return "reject"
    return "misconfigured"


def encode_envelope(sensor: str, events: list[str]) -> bytes:
    """The JSON body of an envelope around ``events``, each already its wire JSON text.

    The events are joined in as they are: serialised once, never parsed again.
    """
    head = json.dumps(
        {
            "sensor": sensor,
            "sendTime": format_timestamp(datetime.now(timezone.utc)),
            "dataVersion": CALIPER_CONTEXT,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return f'{head[:-1]},"data":[{",".join(events)}]}}'.encode()


def _printable(text: str, limit: int = 60) -> str:
    # A server's reason phrase is its own text: keep it short and free of control bytes.
    return "".join(c for c in text if " " <= c <= "~")[:limit].strip()


def _redirect_hint(location: str | None, url: Url) -> str:
    """Where a redirect points, as scheme://host[:port] only (its path may carry a key)."""
    try:
        target = urlsplit((location or "").strip())
        host, port = target.hostname, target.port
    except ValueError:
        return ""
    if not host:
        return " (to another path)" if location else ""
    scheme = target.scheme if target.scheme in ("http", "https") else url.scheme
    if (host, port or url.port) == (url.host, url.port) and scheme == url.scheme:
        return " (to another path)"
    where = _printable(host, 100) + (f":{port}" if port else "")
    return f" (to {scheme}://{where})"


def _misconfigured_reason(url: Url, status: int, phrase: str, hint: str) -> str:
    answer = f"HTTP {status} {phrase}".strip()
    return f"configuration problem: POST {url.display} answered {answer}{hint}"


class Transport:
    """Posts envelopes to the endpoint over one keep-alive session.

    Args:
        endpoint: The envelope POST URL (already checked by ``TrackerConfig``).
        sensor: The envelope's sensor IRI.
        auth: Gives the ``Authorization`` header, or None.
        timeout: (connect, read) seconds; their sum is each request's total deadline.
    """

    def __init__(
        self, *, endpoint: str, sensor: str, auth: Auth | None, timeout: tuple[float, float]
    ) -> None:
        self._endpoint = endpoint
        self._url = parse_url("endpoint", endpoint)
        self._sensor = sensor
        self._auth = auth
        self._timeout = timeout
        self._watchdog = _http.Watchdog()
        self._http = _http.new_session()
        self._http.headers.update(
            {
                "User-Agent": f"timeback-tracker/{__version__}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                # Replies are read raw and capped: ask for them uncompressed.
                "Accept-Encoding": "identity",
            }
        )

    def __repr__(self) -> str:
        return f"<Transport endpoint={self._url.display!r}>"

    def close(self) -> None:
        """Close pooled connections and stop the deadline watchdog."""
        self._http.close()
        self._watchdog.close()

    def send(
        self,
        events: list[str],
        *,
        timeout: tuple[float, float] | None = None,
        total: float | None = None,
    ) -> Outcome:
        """POST one envelope holding ``events``; never raises for HTTP or network failures.

        Args:
            events: The events' wire JSON texts, in delivery order.
            timeout: (connect, read) seconds; the configured timeout by default.
            total: The request's total deadline in seconds; connect + read by default.

        Returns:
            The :class:`Outcome`.
        """
        body = encode_envelope(self._sensor, events)
        timeout = timeout or self._timeout
        total = sum(timeout) if total is None else total
        outcome = self._post(body, timeout, total)
        if outcome.status not in _AUTH_STATUSES or not outcome.reached:
            return outcome  # (a token endpoint's refusal never reached the events endpoint)
        # An expired or revoked token: fetch a fresh one and try once more.
        if self._auth is not None and self._auth.invalidate():
            retried = self._post(body, timeout, total)
            if retried.status not in _AUTH_STATUSES:
                return retried
            outcome, hint = retried, "; the credentials were refused even with a fresh token"
        elif self._auth is None:
            hint = "; the endpoint asks for credentials: set TrackerConfig.auth"
        else:
            hint = "; the token was refused: check TrackerConfig.auth"
        return attrs.evolve(outcome, reason=outcome.reason + hint)

    def _authorization(self, timeout: tuple[float, float], total: float) -> str | Outcome:
        assert self._auth is not None
        try:
            with self._watchdog.deadline(total):
                header = self._auth.authorization(self._http, timeout)
        except TokenError as exc:
            log.debug("no token: %s", exc)
            if exc.status is not None and classify(exc.status) != "retry":
                # A refused secret, a wrong or redirecting token URL: for people to fix.
                reason = f"configuration problem: {exc}"
                return Outcome("misconfigured", exc.status, reason, reached=False)
            return Outcome("retry", exc.status, str(exc), exc.retry_after, reached=False)
        except Exception as exc:  # noqa: BLE001 - a custom auth plugin failed: retry later
            log.debug("auth failed: %s", type(exc).__name__)
            reason = f"authentication failed: {type(exc).__name__}"
            return Outcome("retry", None, reason, reached=False)
        if not isinstance(header, str) or not header.isascii() or not header.isprintable():
            reason = "configuration problem: the auth gave a value an HTTP header cannot carry"
            return Outcome("misconfigured", None, reason, reached=False)
        return header

    def _post(self, body: bytes, timeout: tuple[float, float], total: float) -> Outcome:
        request_id = str(uuid.uuid4())
        headers = {"X-Request-ID": request_id}
        if self._auth is not None:
            header = self._authorization(timeout, total)
            if isinstance(header, Outcome):
                return header
            headers["Authorization"] = header
        with self._watchdog.deadline(total) as attempt:
            try:
                response = self._http.post(
                    self._endpoint,
                    data=body,
                    headers=headers,
                    timeout=timeout,
                    allow_redirects=False,  # a redirect is a misconfiguration, never followed
                    stream=True,
                )
                # The body is never used (nor logged): read a little, for keep-alive.
                _http.read_capped(response)
            except _http.NETWORK_ERRORS as exc:
                reason = _http.describe_failure(exc, self._url, attempt)
                log.debug("request %s failed: %s", request_id, reason)
                return Outcome("retry", None, reason, reached=attempt.connected)
        status = response.status_code
        verdict = classify(status)
        log.debug("request %s answered %d (%s)", request_id, status, verdict)
        phrase = _printable(response.reason or "")
        if verdict == "misconfigured":
            hint = ""
            if 300 <= status < 400:
                hint = _redirect_hint(response.headers.get("Location"), self._url)
                hint += "; redirects are never followed: set the endpoint to the final URL"
            elif status in (404, 405):
                hint = "; check TrackerConfig.endpoint (…/caliper/event)"
            reason = _misconfigured_reason(self._url, status, phrase, hint)
        else:
            reason = f"HTTP {status} {phrase}".strip()
        return Outcome(
            verdict, status, reason, parse_retry_after(response.headers.get("Retry-After"))
        )
