"""The checks of the LocalCollector's events endpoint, and what its request log keeps.

:func:`check_request` answers what is wrong with a request (method, bearer
token, content type, size, JSON, ``dataVersion``, the envelope's rules) in
the order Timeback's API checks, or returns the decoded envelope to record.
:class:`RequestRecord` (public as ``timeback_tracker.testing.RequestRecord``)
and the small helpers describe requests and answers for the request log
without ever quoting a value.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

import attrs

from timeback_tracker._collector_oauth import TokenIssuer, bearer_token
from timeback_tracker._collector_server import (
    Answer,
    IncomingRequest,
    error_answer,
    json_answer,
    media_type,
)
from timeback_tracker._serialization import load
from timeback_tracker.exceptions import ValidationError
from timeback_tracker.models import CALIPER_CONTEXT, Envelope

__all__ = ["RequestRecord", "canonical", "check_request", "envelope_ids", "reason"]


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


def check_request(  # noqa: PLR0911 - a return per status, in the order the API checks
    request: IncomingRequest, *, token: str | None, tokens: TokenIssuer
) -> Answer | dict[str, Any]:
    """The error answer for a request to the events endpoint, or its valid envelope.

    Args:
        request: The request.
        token: The fixed bearer token accepted, if any.
        tokens: The token endpoint's issuer (its tokens are accepted too).

    Returns:
        An :class:`Answer` (405, 401, 415, 413, 400 or 422) when the request
        is refused; otherwise the decoded, valid envelope.
    """
    if request.method != "POST":
        return error_answer(405, "method not allowed", ("Allow", "POST"))
    denied = _authorize(request, token, tokens)
    if denied is not None:
        return denied
    if media_type(request.headers) != "application/json":
        return error_answer(415, "Content-Type must be application/json")
    if request.body is None:
        return error_answer(413, "request body too large")
    try:
        data = json.loads(request.body)
    except ValueError:
        return _invalid("body is not valid JSON", [("$", "must be a JSON object")])
    version = data.get("dataVersion") if isinstance(data, dict) else None
    if isinstance(version, str) and version != CALIPER_CONTEXT:
        return error_answer(422, f"unsupported dataVersion; expected {CALIPER_CONTEXT}")
    try:
        load(data, Envelope)
    except ValidationError as exc:
        problems = [(error.path, error.message) for error in exc.errors]
        return _invalid("invalid Caliper envelope", problems)
    envelope: dict[str, Any] = data
    return envelope


def _invalid(message: str, problems: list[tuple[str, str]]) -> Answer:
    """A 400 naming each problem in ``errors``; the problems ride along for the page."""
    errors = [{"path": path, "message": rule} for path, rule in problems]
    answer = json_answer(400, {"status": "error", "message": message, "errors": errors})
    return attrs.evolve(answer, problems=tuple(problems))


def _authorize(request: IncomingRequest, token: str | None, tokens: TokenIssuer) -> Answer | None:
    if token is None and not tokens.enabled:
        return None
    presented = bearer_token(request.headers)
    challenge = ("WWW-Authenticate", 'Bearer realm="caliper"')
    if presented is None:
        return error_answer(401, "missing bearer token", challenge)
    if token is not None and hmac.compare_digest(presented.encode(), token.encode()):
        return None
    if not tokens.accepts(presented):
        return error_answer(401, "invalid or expired token", challenge)
    return None


def reason(answer: Answer) -> str | None:
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


def canonical(event: object) -> str:
    """``event`` as canonical JSON text, to tell a re-send from a changed one."""
    return json.dumps(event, sort_keys=True, separators=(",", ":"))


def envelope_ids(data: object) -> tuple[int, tuple[str, ...]]:
    """How many items an envelope's ``data`` holds, and the ids of those that have one."""
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return 0, ()
    ids = tuple(
        item["id"] for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)
    )
    return len(items), ids
