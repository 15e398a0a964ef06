"""HTTP: one keep-alive ``requests.Session``, envelope POSTs, and what a response means.

Imported by the delivery thread when it first sends, so that ``import
timeback_tracker`` does not pay for ``requests``.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import time
import uuid
from datetime import datetime, timezone
from typing import Literal

import attrs
import requests

from timeback_tracker._serialization import format_timestamp
from timeback_tracker._version import __version__
from timeback_tracker.auth import Auth, TokenError
from timeback_tracker.models import CALIPER_CONTEXT

log = logging.getLogger("timeback_tracker.transport")

MAX_RETRY_AFTER = 600.0
"""A ``Retry-After`` longer than this (seconds) is capped: a kiosk must not go quiet for days."""

Verdict = Literal["ok", "retry", "reject", "too_large", "auth"]

_RETRYABLE_STATUSES = frozenset({408, 425, 429})


@attrs.frozen
class Outcome:
    """What one POST achieved.

    Attributes:
        verdict: ``ok`` (2xx), ``retry`` (network error, 408/425/429/5xx),
            ``reject`` (other 4xx: some event is bad), ``too_large`` (413),
            ``auth`` (401/403 even after a fresh token).
        status: The HTTP status, or None when no response arrived.
        reason: A short description, free of secrets and payloads.
        retry_after: The server's ``Retry-After`` in seconds, if any.
    """

    verdict: Verdict
    status: int | None
    reason: str
    retry_after: float | None = None


def classify(status: int) -> Verdict:
    """The verdict for an HTTP status code."""
    if 200 <= status < 300:
        return "ok"
    if status in _RETRYABLE_STATUSES or status >= 500:
        return "retry"
    if status == 413:
        return "too_large"
    if status in (401, 403):
        return "auth"
    return "reject"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or HTTP date), capped.

    Args:
        value: The header value.
        now: The current Unix time (for HTTP dates); ``time.time()`` by default.

    Returns:
        Seconds (0 to :data:`MAX_RETRY_AFTER`), or None when absent or unparseable.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def encode_envelope(sensor: str, events: list[str]) -> bytes:
    """The JSON body of an envelope carrying ``events`` (their wire JSON text), written
    around them as they are: no parsing, no re-encoding."""
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


class Transport:
    """Posts envelopes to the endpoint over one keep-alive session."""

    def __init__(
        self, *, endpoint: str, sensor: str, auth: Auth | None, timeout: tuple[float, float]
    ) -> None:
        self._endpoint = endpoint
        self._sensor = sensor
        self._auth = auth
        self._timeout = timeout
        self._http = requests.Session()
        self._http.headers.update(
            {
                "User-Agent": f"timeback-tracker/{__version__}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            }
        )

    def __repr__(self) -> str:
        return f"<Transport endpoint={self._endpoint!r}>"

    def close(self) -> None:
        """Close pooled connections."""
        self._http.close()

    def send(self, events: list[str], *, timeout: tuple[float, float] | None = None) -> Outcome:
        """POST one envelope holding ``events``; never raises for HTTP or network failures.

        Args:
            events: The events' wire JSON, in delivery order.
            timeout: (connect, read) seconds; the configured timeout by default.

        Returns:
            The :class:`Outcome`.
        """
        body = encode_envelope(self._sensor, events)
        timeout = timeout or self._timeout
        outcome = self._post(body, timeout)
        # An expired or revoked token: fetch a fresh one and try once more.
        if outcome.status == 401 and self._auth is not None and self._auth.invalidate():
            outcome = self._post(body, timeout)
        return outcome

    def _post(self, body: bytes, timeout: tuple[float, float]) -> Outcome:
        request_id = str(uuid.uuid4())
        headers = {"X-Request-ID": request_id}
        try:
            if self._auth is not None:
                headers["Authorization"] = self._auth.authorization(self._http, timeout)
            response = self._http.post(self._endpoint, data=body, headers=headers, timeout=timeout)
        except TokenError as exc:
            log.debug("request %s: no token: %s", request_id, exc)
            refused = exc.status in (400, 401, 403)
            return Outcome("auth" if refused else "retry", None, str(exc))
        except requests.RequestException as exc:
            log.debug("request %s failed: %s", request_id, type(exc).__name__)
            return Outcome("retry", None, f"network error: {type(exc).__name__}")
        except Exception as exc:  # noqa: BLE001 - a custom auth plugin failed: retry later
            log.debug("request %s: auth failed: %s", request_id, type(exc).__name__)
            return Outcome("retry", None, f"authentication failed: {type(exc).__name__}")
        status = response.status_code
        # Read (and so release) the body; it is never logged.
        response.content  # noqa: B018
        verdict = classify(status)
        log.debug("request %s answered %d (%s)", request_id, status, verdict)
        return Outcome(
            verdict,
            status,
            f"HTTP {status} {response.reason or ''}".strip(),
            parse_retry_after(response.headers.get("Retry-After")),
        )
