"""LocalCollector edges: its token endpoint under malformed requests, fault scripting
with wrong arguments, a poison rule that raises, and totals over waste time."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from tests.support import envelope, new_run, wire_window
from timeback_tracker.testing import LocalCollector

BASIC = "Basic " + base64.b64encode(b"app-id:app-secret").decode()
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def collector() -> Iterator[LocalCollector]:
    """A collector with one OAuth2 client."""
    with LocalCollector(clients={"app-id": "app-secret"}) as running:
        yield running


@pytest.fixture
def http() -> Iterator[requests.Session]:
    """A plain HTTP session."""
    with requests.Session() as session:
        yield session


@pytest.mark.parametrize(
    ("method", "headers", "body", "status", "error"),
    [
        ("GET", {"Authorization": BASIC}, None, 405, "invalid_request"),
        ("POST", {"Authorization": BASIC, "Content-Type": "application/json"},
         b'{"grant_type":"client_credentials"}', 400, "invalid_request"),
        ("POST", {"Authorization": BASIC, "Content-Type": FORM}, b"grant_type=\xff\xfe", 400,
         "invalid_request"),
        ("POST", {"Authorization": "Basic %%%not-base64", "Content-Type": FORM},
         b"grant_type=client_credentials", 401, "invalid_client"),
        ("POST", {"Authorization": "Basic " + base64.b64encode(b"\xff:x").decode(),
                  "Content-Type": FORM}, b"grant_type=client_credentials", 401, "invalid_client"),
        ("POST", {"Authorization": "Bearer app-secret", "Content-Type": FORM},
         b"grant_type=client_credentials", 401, "invalid_client"),
        ("POST", {"Authorization": BASIC, "Content-Type": FORM}, b"scope=x", 400,
         "invalid_request"),
    ],
    ids=["get", "json-body", "not-utf8", "bad-base64", "basic-not-utf8", "not-basic",
         "no-grant"],
)  # fmt: skip
def test_token_endpoint_answers_malformed_requests_like_an_oauth2_server(
    collector: LocalCollector,
    http: requests.Session,
    method: str,
    headers: dict[str, str],
    body: bytes | None,
    status: int,
    error: str,
) -> None:
    """Each malformed token request gets its RFC 6749 error (never a 500 or a token)."""
    response = http.request(method, collector.token_url, headers=headers, data=body, timeout=5)
    assert (response.status_code, response.json()) == (status, {"error": error})
    assert "access_token" not in response.text
    if status == 405:
        assert response.headers["Allow"] == "POST"
    if status == 401:
        assert response.headers["WWW-Authenticate"] == 'Basic realm="oauth2"'


def test_a_well_formed_token_request_still_gets_a_token(
    collector: LocalCollector, http: requests.Session
) -> None:
    """The cases above fail for their own fault: the same request done right succeeds."""
    response = http.post(
        collector.token_url,
        headers={"Authorization": BASIC, "Content-Type": FORM},
        data=b"grant_type=client_credentials",
        timeout=5,
    )
    assert response.status_code == 200
    assert response.json()["token_type"] == "Bearer"


@pytest.mark.parametrize(
    ("call", "kind", "message"),
    [
        (lambda c: c.fail_next(503, retry_after=1.5), ValueError, "retry_after must be whole"),
        (lambda c: c.fail_next(503, retry_after=True), ValueError, "retry_after must be whole"),
        (lambda c: c.fail_next(503, retry_after=-1), ValueError, "retry_after must be >= 0"),
        (lambda c: c.delay_next("1"), TypeError, "seconds must be a number >= 0"),
        (lambda c: c.delay_next(float("nan")), ValueError, "seconds"),
        (lambda c: c.fail_rate(0.5, statuses=()), ValueError, "statuses must name at least one"),
        (lambda c: LocalCollector(token_ttl="60"), TypeError, "token_ttl must be a number"),
        (lambda c: LocalCollector(token=""), ValueError, "token must be a non-empty string"),
        (lambda c: LocalCollector(max_body_bytes=True), ValueError, "max_body_bytes"),
    ],
    ids=["retry-after-float", "retry-after-bool", "retry-after-negative", "delay-text",
         "delay-nan", "no-statuses", "ttl-text", "empty-token", "body-cap-bool"],
)  # fmt: skip
def test_fault_and_constructor_arguments_are_refused_naming_the_argument(
    collector: LocalCollector,
    call: Callable[[LocalCollector], Any],
    kind: type[Exception],
    message: str,
) -> None:
    """A wrong argument raises at once, naming it; nothing is scripted."""
    with pytest.raises(kind, match=message):
        call(collector)
    assert collector.pending_faults == 0


def test_a_poison_rule_that_raises_answers_500_and_records_nothing(
    collector: LocalCollector, http: requests.Session
) -> None:
    """A broken reject_events rule is the test's bug: the client sees a 500 (and retries),
    nothing is recorded; once the rules are cleared the same envelope is accepted."""
    collector.reject_events(lambda event: event["no such key"] == 1)
    body = envelope(wire_window(new_run()))
    token = http.post(
        collector.token_url,
        headers={"Authorization": BASIC, "Content-Type": FORM},
        data=b"grant_type=client_credentials",
        timeout=5,
    ).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    response = http.post(collector.url, json=body, headers=auth, timeout=5)
    assert response.status_code == 500
    assert response.json()["message"] == "a reject_events rule raised"
    assert collector.events == []
    collector.clear_faults()
    assert http.post(collector.url, json=body, headers=auth, timeout=5).status_code == 200
    assert len(collector.events) == 1


def test_totals_sum_active_and_inactive_only(http: requests.Session) -> None:
    """Waste or unknown time a client reports is not active or inactive time."""
    run = new_run()
    first = wire_window(run, 0, active=10, inactive=5)
    second = wire_window(run, 1, active=1.25, inactive=0)
    second["generated"]["items"].append({**second["generated"]["items"][0], "type": "waste"})
    with LocalCollector() as plain:
        for event in (first, second):
            assert http.post(plain.url, json=envelope(event), timeout=5).status_code == 200
        assert plain.totals(run) == (11.25, 5)
        assert plain.totals(new_run()) == (0, 0)
