"""Token endpoint replies a careless or hostile server gives, custom auth plugins that
fail, and where a redirect's reason says it points."""

from __future__ import annotations

import gzip
import json
import logging
import time
import uuid
from collections.abc import Iterator

import pytest
import requests

import timeback_tracker as tt
from tests.hostile import HostileServer, answer, redirect
from tests.support import SENSOR, window
from timeback_tracker._http import REPLY_CAP
from timeback_tracker._transport import Outcome, Transport
from timeback_tracker.auth import Auth, TokenError

TIMEOUT = (1.0, 1.0)
TOKEN_PATH = "/oauth2/token"
SECRET = "s3cret-in-a-plugin-message"


@pytest.fixture
def server() -> Iterator[HostileServer]:
    """A hostile server on loopback."""
    with HostileServer() as running:
        yield running


def token_reply(
    body: bytes, encoding: str | None = None
) -> tuple[bytes, tuple[tuple[str, str], ...]]:
    """A 200 token reply's body and headers, optionally with a Content-Encoding."""
    headers = [("Content-Type", "application/json")]
    if encoding is not None:
        headers.append(("Content-Encoding", encoding))
    return body, tuple(headers)


def send(url: str, auth: Auth | None = None) -> Outcome:
    """One envelope of two windows through a fresh transport."""
    transport = Transport(endpoint=url, sensor=SENSOR, auth=auth, timeout=TIMEOUT)
    run = uuid.uuid4()
    try:
        return transport.send([json.dumps(window(run, seq).payload) for seq in range(2)])
    finally:
        transport.close()


def test_a_gzip_token_reply_is_decoded(server: HostileServer, http: requests.Session) -> None:
    """A token endpoint behind a compressing proxy still gives its token."""
    body, headers = token_reply(gzip.compress(b'{"access_token":"tok-gz","expires_in":60}'), "gzip")
    server.on(TOKEN_PATH, answer(200, body, headers))
    auth = tt.ClientCredentials("kiosk", "s3cret", server.url(TOKEN_PATH))
    assert auth.authorization(http, TIMEOUT) == "Bearer tok-gz"


@pytest.mark.parametrize(
    ("body", "encoding"),
    [
        (gzip.compress(b'{"access_token":"tok","expires_in":60}')[:-12], "gzip"),  # cut short
        (b"not gzip at all", "gzip"),  # zlib refuses the header
        (b'{"access_token":"tok","expires_in":60}', "br"),  # an encoding never asked for
        (b'{"access_token":"tok"}' + b" " * REPLY_CAP, None),  # over the cap, valid JSON
    ],
    ids=["truncated-gzip", "damaged-gzip", "unknown-encoding", "over-the-cap"],
)
def test_a_token_reply_that_cannot_be_read_safely_is_a_token_error(
    server: HostileServer, http: requests.Session, body: bytes, encoding: str | None
) -> None:
    """An undecodable or oversized 200 is "without an access_token", never a crash or a
    token taken from half a reply."""
    server.on(TOKEN_PATH, answer(200, *token_reply(body, encoding)))
    auth = tt.ClientCredentials("kiosk", "s3cret", server.url(TOKEN_PATH))
    with pytest.raises(TokenError, match=r"\(token endpoint\) answered without an access_token"):
        auth.authorization(http, TIMEOUT)


@pytest.mark.parametrize("expires_in", [b"NaN", b"Infinity", b'"nan"', b"1e999"])
def test_a_lifetime_that_is_not_a_finite_number_means_an_hour(
    server: HostileServer, http: requests.Session, expires_in: bytes
) -> None:
    """NaN or infinite expires_in would keep a token forever: it is taken as 3600 s,
    refreshed 60 s ahead like any other."""
    body = b'{"access_token":"tok","expires_in":' + expires_in + b"}"
    server.on(TOKEN_PATH, answer(200, *token_reply(body)))
    auth = tt.ClientCredentials("kiosk", "s3cret", server.url(TOKEN_PATH))
    before = time.monotonic()
    assert auth.authorization(http, TIMEOUT) == "Bearer tok"
    after = time.monotonic()
    # The refresh point is private state; reading it avoids waiting an hour.
    assert before + 3540 <= auth._expires_at <= after + 3540


def test_a_failing_custom_auth_plugin_is_retried_and_its_message_never_repeated(
    server: HostileServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A plugin raising is a retry that never reached the server; only the exception's
    type is reported, since its message may carry a secret."""

    class Broken:
        def authorization(self, http: object, timeout: object) -> str:
            raise RuntimeError(f"vault refused {SECRET}")

        def invalidate(self) -> bool:
            return False

    server.on("/caliper/event", answer(200))
    caplog.set_level(logging.DEBUG, logger="timeback_tracker")
    outcome = send(server.url(), Broken())
    assert outcome == Outcome("retry", None, "authentication failed: RuntimeError", reached=False)
    assert server.seen == []
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    ("location", "hint"),
    [
        (None, ""),  # no Location at all
        ("/caliper/v2/event", " (to another path)"),
        ("http://127.0.0.1:{port}/elsewhere", " (to another path)"),
        ("https://127.0.0.1:{port}/caliper/event", " (to https://127.0.0.1:{port})"),
        ("//other.example:8443/x?key=secret", " (to http://other.example:8443)"),
        ("http://[::1/broken", ""),  # unparseable: no hint rather than a crash
    ],
    ids=["none", "relative", "same-origin", "other-scheme", "scheme-relative", "broken"],
)
def test_a_redirect_names_only_where_it_points(
    server: HostileServer, location: str | None, hint: str
) -> None:
    """The misconfiguration reason names scheme://host[:port] of a redirect's target, or
    "another path"; never its path or query (they may carry a key)."""
    if location is None:
        server.on("/caliper/event", answer(307, b""))
    else:
        server.on("/caliper/event", redirect(307, location.format(port=server.port)))
    outcome = send(server.url())
    assert outcome.verdict == "misconfigured"
    reason = outcome.reason
    where = f"POST http://127.0.0.1:{server.port}/caliper/event"
    said = f"{where} answered HTTP 307 Whatever{hint.format(port=server.port)}"
    assert reason.startswith(f"configuration problem: {said}; redirects are never followed")
    assert "secret" not in reason
