"""Authentication: ClientCredentials (OAuth2 token cache and refresh) and BearerToken."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests

import timeback_tracker as tt
from tests.support import (
    ACTIVITY,
    SENSOR,
    USER,
    MakeTracker,
    assert_conserved,
    assert_contiguous,
    complete_runs,
    eventually,
    tracker_factory,
    windows,
)
from timeback_tracker.auth import TokenError
from timeback_tracker.testing import LocalCollector

CLIENT_ID = "kiosk"
SECRET = "s3cret-Zq9-never-logged"
TIMEOUT = (2.0, 2.0)


@pytest.fixture
def collector() -> Iterator[LocalCollector]:
    """A collector that requires tokens from its own token endpoint."""
    with LocalCollector(clients={CLIENT_ID: SECRET}) as running:
        yield running


@pytest.fixture
def make_tracker(
    collector: LocalCollector, failures: list[tt.DeliveryFailure]
) -> Iterator[MakeTracker]:
    """Trackers pointed at the collector with ClientCredentials, closed after the test."""
    with tracker_factory(
        close_timeout=0.5,
        endpoint=collector.url,
        auth=tt.ClientCredentials(CLIENT_ID, SECRET, collector.token_url),
        heartbeat_interval=3600,
        on_error=failures.append,
    ) as make:
        yield make


def event_statuses(collector: LocalCollector) -> list[int | None]:
    """The status of each request to the events endpoint, in order."""
    return [r.status for r in collector.requests if r.path == "/caliper/event"]


class TokenServer:
    """A loopback token endpoint that records each request and answers a set reply."""

    def __init__(self, reply: tuple[int, dict[str, Any]]) -> None:
        self.reply = reply
        self.seen: list[tuple[dict[str, str], bytes]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                owner.seen.append((dict(self.headers.items()), self.rfile.read(length)))
                status, payload = owner.reply
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/oauth2/token"

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def token_server() -> Iterator[TokenServer]:
    """A recording token endpoint that issues ``tok-1``."""
    server = TokenServer((200, {"access_token": "tok-1", "expires_in": 3600}))
    yield server
    server.close()


# -- the token request -----------------------------------------------------------------


def test_token_request_is_basic_auth_and_client_credentials_grant(
    token_server: TokenServer, http: requests.Session
) -> None:
    """The token is requested with HTTP Basic id:secret and grant_type=client_credentials."""
    auth = tt.ClientCredentials(CLIENT_ID, SECRET, token_server.url)
    assert auth.authorization(http, TIMEOUT) == "Bearer tok-1"
    [(headers, body)] = token_server.seen
    expected = base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
    assert headers["Authorization"] == f"Basic {expected}"
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(body.decode()) == {"grant_type": ["client_credentials"]}
    assert SECRET not in body.decode()


def test_scope_is_sent_when_given(token_server: TokenServer, http: requests.Session) -> None:
    """A scope is added to the form."""
    auth = tt.ClientCredentials(CLIENT_ID, SECRET, token_server.url, scope="caliper/write")
    auth.authorization(http, TIMEOUT)
    [(_, body)] = token_server.seen
    assert parse_qs(body.decode()) == {
        "grant_type": ["client_credentials"],
        "scope": ["caliper/write"],
    }


@pytest.mark.parametrize(
    "payload",
    [{"token_type": "Bearer"}, {"access_token": ""}, {"access_token": 42}, ["not", "an", "object"]],
)
def test_answer_without_a_token_is_a_token_error(
    token_server: TokenServer, http: requests.Session, payload: Any
) -> None:
    """A 200 without a usable access_token raises TokenError, not a crash."""
    token_server.reply = (200, payload)
    auth = tt.ClientCredentials(CLIENT_ID, SECRET, token_server.url)
    with pytest.raises(TokenError, match="without an access_token"):
        auth.authorization(http, TIMEOUT)


def test_collector_issues_a_token_that_is_cached(
    collector: LocalCollector, http: requests.Session
) -> None:
    """Against the collector's token endpoint: one fetch, then the cached token."""
    auth = tt.ClientCredentials(CLIENT_ID, SECRET, collector.token_url)
    first = auth.authorization(http, TIMEOUT)
    assert first.startswith("Bearer ")
    assert len(first) > len("Bearer ") + 10
    assert all(auth.authorization(http, TIMEOUT) == first for _ in range(5))
    assert collector.token_requests == 1


def test_token_endpoint_refusal_is_a_token_error_without_the_secret(
    collector: LocalCollector, http: requests.Session
) -> None:
    """A wrong secret gives TokenError(status=401) whose message does not hold the secret."""
    auth = tt.ClientCredentials(CLIENT_ID, "wrong-" + SECRET, collector.token_url)
    with pytest.raises(TokenError) as caught:
        auth.authorization(http, TIMEOUT)
    assert caught.value.status == 401
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)


def test_unreachable_token_endpoint_is_a_token_error(http: requests.Session) -> None:
    """A network error at the token endpoint is a TokenError with no status."""
    with LocalCollector() as gone:
        url = gone.token_url
    auth = tt.ClientCredentials(CLIENT_ID, SECRET, url)
    with pytest.raises(TokenError, match="unreachable") as caught:
        auth.authorization(http, TIMEOUT)
    assert caught.value.status is None


# -- caching and refresh -----------------------------------------------------------------


def test_token_is_fetched_once_and_reused_across_requests(
    collector: LocalCollector, make_tracker: MakeTracker
) -> None:
    """Many envelopes, one token request."""
    tracker = make_tracker()
    for _ in range(4):
        complete_runs(tracker, xp=0)
        assert tracker.flush(5.0)
    assert event_statuses(collector) == [200] * 4
    assert len(collector.events) == 8
    assert collector.token_requests == 1


def test_token_is_refreshed_ahead_of_expiry(make_tracker: MakeTracker) -> None:
    """With a 2 s token, a request after ~1.1 s fetches a new one before the old expires."""
    with LocalCollector(clients={CLIENT_ID: SECRET}, token_ttl=2) as short:
        tracker = make_tracker(
            endpoint=short.url, auth=tt.ClientCredentials(CLIENT_ID, SECRET, short.token_url)
        )
        complete_runs(tracker, xp=0)
        assert tracker.flush(5.0)
        complete_runs(tracker, xp=0)
        assert tracker.flush(5.0)
        assert short.token_requests == 1
        time.sleep(1.1)  # past the refresh point (half of 2 s), well before expiry
        complete_runs(tracker, xp=0)
        assert tracker.flush(5.0)
        assert short.token_requests == 2
        # Refreshed proactively: the endpoint never had to refuse a token.
        assert event_statuses(short) == [200, 200, 200]
        assert len(short.events) == 6


def test_direct_refresh_gives_a_new_token(http: requests.Session) -> None:
    """authorization() returns a different token once the refresh point has passed."""
    with LocalCollector(clients={CLIENT_ID: SECRET}, token_ttl=2) as short:
        auth = tt.ClientCredentials(CLIENT_ID, SECRET, short.token_url)
        first = auth.authorization(http, TIMEOUT)
        assert auth.authorization(http, TIMEOUT) == first
        time.sleep(1.1)  # past the refresh point (half of 2 s): tokens age in real time
        second = auth.authorization(http, TIMEOUT)
        assert second != first
        assert short.token_requests == 2


@pytest.mark.parametrize(("ttl", "valid_for"), [(3600, 3540), (300, 240), (100, 50), (2, 1)])
def test_refresh_margin_is_60s_or_half_the_lifetime(
    http: requests.Session, ttl: float, valid_for: float
) -> None:
    """The token is used until expires_in - min(60, expires_in / 2)."""
    with LocalCollector(clients={CLIENT_ID: SECRET}, token_ttl=ttl) as issuer:
        auth = tt.ClientCredentials(CLIENT_ID, SECRET, issuer.token_url)
        before = time.monotonic()
        auth.authorization(http, TIMEOUT)
        after = time.monotonic()
    # The refresh point is private state; reading it avoids waiting a minute.
    refresh_at = auth._expires_at
    assert before + valid_for <= refresh_at <= after + valid_for


def test_concurrent_callers_share_one_fetch(collector: LocalCollector) -> None:
    """8 threads asking for the header at once cause exactly one token request."""
    auth = tt.ClientCredentials(CLIENT_ID, SECRET, collector.token_url)
    barrier = threading.Barrier(8)
    headers: list[str] = []
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            with requests.Session() as own:
                barrier.wait(5)
                headers.append(auth.authorization(own, TIMEOUT))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert len(headers) == 8
    assert len(set(headers)) == 1
    assert collector.token_requests == 1


# -- refusals --------------------------------------------------------------------------


def test_revoked_token_is_dropped_and_fetched_once_more(
    collector: LocalCollector, make_tracker: MakeTracker, failures: list[tt.DeliveryFailure]
) -> None:
    """A 401 mid-session drops the token, one new token is fetched, and nothing is lost."""
    tracker = make_tracker(heartbeat_interval=0.1)
    session = tracker.start_session(USER, ACTIVITY)
    assert collector.wait_for(2, timeout=5.0)
    assert collector.token_requests == 1
    collector.revoke_tokens()
    seen = len(collector.events)
    assert collector.wait_for(seen + 2, timeout=5.0)
    session.complete(1)
    assert tracker.flush(5.0)
    assert collector.token_requests == 2
    statuses = event_statuses(collector)
    assert statuses.count(401) == 1
    assert statuses[statuses.index(401) + 1] == 200
    assert failures == []
    stats = tracker.stats()
    assert (stats.failed, stats.dead_lettered, stats.queued) == (0, 0, 0)
    assert stats.sent == len(collector.events)
    events = windows(collector, session.run_id)
    assert_conserved(events)
    assert_contiguous(events)
    assert abs(collector.totals(session.run_id)[0] - session.active_seconds) < 0.001
    assert len(collector.completions(session.run_id)) == 1
    assert collector.duplicate_conflicts == []


def test_bad_secret_keeps_events_queued(
    collector: LocalCollector, make_tracker: MakeTracker, failures: list[tt.DeliveryFailure]
) -> None:
    """A token endpoint 401: events stay queued, nothing is dead-lettered, on_error is told."""
    bad_secret = "wrong-" + SECRET
    tracker = make_tracker(auth=tt.ClientCredentials(CLIENT_ID, bad_secret, collector.token_url))
    complete_runs(tracker, xp=0)
    assert eventually(lambda: len(failures) >= 2)
    stats = tracker.stats()
    assert stats.queued == 2
    assert (stats.sent, stats.dead_lettered, stats.dropped) == (0, 0, 0)
    assert collector.events == []
    assert event_statuses(collector) == []  # no token, no event request
    assert collector.token_requests >= 2  # it keeps trying
    for failure in failures:
        assert failure.will_retry
        assert len(failure.event_ids) == 2
        assert "401" in failure.reason
        assert SECRET not in repr(failure)
        assert bad_secret not in repr(failure)
    assert not tracker.flush(0.2)


def test_token_endpoint_503_is_retried_then_succeeds(
    collector: LocalCollector, make_tracker: MakeTracker, failures: list[tt.DeliveryFailure]
) -> None:
    """A 503 from the token endpoint is retried; the events then go out."""
    collector.fail_token_next(503)
    tracker = make_tracker()
    [session] = complete_runs(tracker, xp=0)
    assert tracker.flush(10.0)
    assert collector.token_requests == 2
    assert len(collector.completions(session.run_id)) == 1
    assert len(failures) == 1
    assert failures[0].will_retry
    assert "503" in failures[0].reason
    assert tracker.stats().dead_lettered == 0


# -- repr and validation ----------------------------------------------------------------


def test_repr_hides_the_secret_and_the_token(
    collector: LocalCollector, http: requests.Session
) -> None:
    """repr of ClientCredentials and BearerToken never shows the secret or a token."""
    auth = tt.ClientCredentials(CLIENT_ID, SECRET, collector.token_url)
    assert SECRET not in repr(auth)
    assert CLIENT_ID in repr(auth)
    token = auth.authorization(http, TIMEOUT).removeprefix("Bearer ")
    assert token not in repr(auth)
    assert SECRET not in repr(auth)
    config = tt.TrackerConfig(sensor=SENSOR, endpoint=collector.url, auth=auth)
    assert SECRET not in repr(config)
    assert token not in repr(config)
    bearer = tt.BearerToken("tok-Very-Private-123")
    assert "tok-Very-Private-123" not in repr(bearer)
    assert "tok-Very-Private-123" not in str(bearer)
    assert "tok-Very-Private-123" not in repr(
        tt.TrackerConfig(sensor=SENSOR, endpoint=collector.url, auth=bearer)
    )


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("", SECRET, "https://auth.example.com/oauth2/token"), "client_id"),
        (("   ", SECRET, "https://auth.example.com/oauth2/token"), "client_id"),
        ((None, SECRET, "https://auth.example.com/oauth2/token"), "client_id"),
        ((CLIENT_ID, "", "https://auth.example.com/oauth2/token"), "client_secret"),
        ((CLIENT_ID, " \t", "https://auth.example.com/oauth2/token"), "client_secret"),
        ((CLIENT_ID, 1234, "https://auth.example.com/oauth2/token"), "client_secret"),
        ((CLIENT_ID, SECRET, "http://auth.example.com/oauth2/token"), "token_url"),
        ((CLIENT_ID, SECRET, "auth.example.com/oauth2/token"), "token_url"),
        ((CLIENT_ID, SECRET, ""), "token_url"),
        ((CLIENT_ID, SECRET, None), "token_url"),
        (("kiosk€", SECRET, "https://auth.example.com/oauth2/token"), "client_id"),
        (("kiosk:2", SECRET, "https://auth.example.com/oauth2/token"), "client_id"),
        ((CLIENT_ID, "s3cret\x00", "https://auth.example.com/oauth2/token"), "client_secret"),
        ((CLIENT_ID, "s3cret€", "https://auth.example.com/oauth2/token"), "client_secret"),
        ((CLIENT_ID, SECRET, "https://user:pw@auth.example.com/oauth2/token"), "token_url"),
    ],
)
def test_client_credentials_validation_names_the_field(args: tuple[Any, ...], field: str) -> None:
    """Empty id or secret, or a non-https non-loopback token URL, raise naming the field."""
    with pytest.raises(tt.ConfigurationError, match=rf"^ClientCredentials\.{field}: ") as caught:
        tt.ClientCredentials(*args)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://auth.example.com/oauth2/token",
        "http://127.0.0.1:9/oauth2/token",
        "http://localhost:9/oauth2/token",
        "http://[::1]:9/oauth2/token",
    ],
)
def test_client_credentials_accepts_https_and_loopback(url: str) -> None:
    """https anywhere and http on loopback are valid token URLs."""
    assert tt.ClientCredentials(CLIENT_ID, SECRET, url).token_url == url


@pytest.mark.parametrize(
    "token",
    ["", "   ", "has space", "line\nbreak", None, 42, "tok€en", "tok\x01en", "tok\x7fen", "tökén"],
)
def test_bearer_token_validation(token: Any) -> None:
    """A bearer token must be a non-empty string without whitespace; the value is not echoed."""
    with pytest.raises(tt.ConfigurationError, match=r"^BearerToken\.token: ") as caught:
        tt.BearerToken(token)
    if isinstance(token, str) and token.strip():
        assert token not in str(caught.value)


# -- BearerToken end to end ----------------------------------------------------------------


def test_bearer_token_delivers(failures: list[tt.DeliveryFailure]) -> None:
    """The right fixed token is accepted by the endpoint."""
    with LocalCollector(token="right-token") as guarded:
        config = tt.TrackerConfig(
            sensor=SENSOR,
            endpoint=guarded.url,
            auth=tt.BearerToken("right-token"),
            heartbeat_interval=3600,
            on_error=failures.append,
        )
        with tt.Tracker(config) as tracker:
            [session] = complete_runs(tracker, xp=0)
            assert tracker.flush(5.0)
        assert len(guarded.completions(session.run_id)) == 1
        assert guarded.token_requests == 0
    assert failures == []


def test_wrong_bearer_token_keeps_events_and_tells_on_error(
    failures: list[tt.DeliveryFailure],
) -> None:
    """A refused fixed token: events stay queued; on_error gets status 401, will_retry True."""
    with LocalCollector(token="right-token") as guarded:
        config = tt.TrackerConfig(
            sensor=SENSOR,
            endpoint=guarded.url,
            auth=tt.BearerToken("wrong-token"),
            heartbeat_interval=3600,
            on_error=failures.append,
        )
        tracker = tt.Tracker(config)
        try:
            complete_runs(tracker, xp=0)
            assert eventually(lambda: len(failures) >= 2)
            requests_made, reported = len(guarded.requests), len(failures)
            stats = tracker.stats()
            assert (stats.queued, stats.sent, stats.dead_lettered) == (2, 0, 0)
            assert guarded.events == []
        finally:
            tracker.close(timeout=0.2)
    # A fixed token cannot be refreshed: one request per attempt (at most one more in
    # flight), not a second try after each 401.
    assert reported <= requests_made <= reported + 1
    failure = failures[0]
    assert (failure.status, failure.will_retry) == (401, True)
    assert len(failure.event_ids) == 2
    assert "wrong-token" not in repr(failure)


def test_a_token_the_header_cannot_carry_is_refused_at_construction() -> None:
    """ "tok€en" fails at construction (naming the rule, not the value), not on every send."""
    with pytest.raises(
        tt.ConfigurationError, match=r"^BearerToken\.token: .*HTTP header"
    ) as caught:
        tt.BearerToken("tok€en")
    assert "tok€en" not in str(caught.value)


def test_a_token_endpoint_answer_the_header_cannot_carry_is_a_token_error(
    token_server: TokenServer, http: requests.Session
) -> None:
    """An access_token with characters a header cannot carry is refused, not sent."""
    token_server.reply = (200, {"access_token": "tok€en", "expires_in": 60})
    auth = tt.ClientCredentials(CLIENT_ID, SECRET, token_server.url)
    with pytest.raises(TokenError, match="without an access_token"):
        auth.authorization(http, TIMEOUT)
