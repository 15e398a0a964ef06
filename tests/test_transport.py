"""The transport against hostile servers: redirects, huge and trickling replies, network causes."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import timeback_tracker as tt
from tests.hostile import (
    HostileServer,
    answer,
    endless_chunked,
    huge,
    redirect,
    silent,
    trickle_body,
    trickle_head,
)
from tests.support import SENSOR, bounded, closed_port, window
from timeback_tracker._http import REPLY_CAP, decode_body
from timeback_tracker._transport import Outcome, Transport, encode_envelope
from timeback_tracker.testing import LocalCollector

TIMEOUT = (1.0, 1.0)  # so the total deadline of a request is 2 s


@pytest.fixture
def server() -> Iterator[HostileServer]:
    """A hostile server on loopback."""
    with HostileServer() as running:
        yield running


@pytest.fixture
def other() -> Iterator[HostileServer]:
    """A second server: where a redirect points (it must never be reached)."""
    with HostileServer() as running:
        running.on("/caliper/event", answer(200))
        running.on("/oauth2/token", answer(200, b'{"access_token":"stolen","expires_in":60}'))
        yield running


@pytest.fixture
def make_transport() -> Iterator[Callable[..., Transport]]:
    """Transports to a URL, closed after the test."""
    made: list[Transport] = []

    def make(url: str, auth: tt.BearerToken | tt.ClientCredentials | None = None) -> Transport:
        transport = Transport(endpoint=url, sensor=SENSOR, auth=auth, timeout=TIMEOUT)
        made.append(transport)
        return transport

    yield make
    for transport in made:
        transport.close()


def wire_events(count: int = 2) -> list[str]:
    """``count`` valid events as wire JSON texts."""
    run = uuid.uuid4()
    return [json.dumps(window(run, seq).payload) for seq in range(count)]


def send_in_thread(transport: Transport, limit: float = 20.0) -> tuple[Outcome, float]:
    """Send from a daemon thread (so a hang fails the test instead of hanging it)."""
    started = time.monotonic()
    outcome: Outcome = bounded(lambda: transport.send(wire_events()), limit)
    return outcome, time.monotonic() - started


def test_envelope_wraps_the_wire_texts_as_they_are() -> None:
    """The envelope is built around the events' JSON text by joining, and parses back."""
    events = wire_events(3)
    body = encode_envelope(SENSOR, events)
    envelope = json.loads(body)
    assert envelope["sensor"] == SENSOR
    assert envelope["dataVersion"] == "http://purl.imsglobal.org/ctx/caliper/v1p2"
    assert envelope["sendTime"].endswith("Z")
    assert envelope["data"] == [json.loads(e) for e in events]
    assert body.endswith(("," + events[-1] + "]}").encode())


# -- 1. redirects ------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_never_followed(
    server: HostileServer,
    other: HostileServer,
    make_transport: Callable[..., Transport],
    status: int,
) -> None:
    """A 3xx is a misconfiguration: nothing goes to the Location, not even a GET."""
    server.on("/caliper/event", redirect(status, other.url()))
    server.on("/moved", answer(200))
    outcome = make_transport(server.url()).send(wire_events())
    assert (outcome.verdict, outcome.status) == ("misconfigured", status)
    assert f"answered HTTP {status}" in outcome.reason
    assert f"(to http://127.0.0.1:{other.port})" in outcome.reason
    assert "redirects are never followed" in outcome.reason
    assert other.seen == []
    assert [s.method for s in server.seen] == ["POST"]


def test_redirect_with_a_huge_body_is_not_read(
    server: HostileServer, make_transport: Callable[..., Transport]
) -> None:
    """requests reads a redirect's body even when not following it; the transport does not."""
    server.on("/caliper/event", endless_chunked(status=302))
    outcome, _ = send_in_thread(make_transport(server.url()))
    assert (outcome.verdict, outcome.status) == ("misconfigured", 302)
    assert server.body_bytes < 64 * 1024 * 1024


def test_token_request_is_never_redirected(
    server: HostileServer, other: HostileServer, make_transport: Callable[..., Transport]
) -> None:
    """A token URL that redirects does not carry the client secret anywhere else."""
    server.on("/oauth2/token", redirect(307, other.url("/oauth2/token")))
    server.on("/caliper/event", answer(200))
    auth = tt.ClientCredentials("kiosk", "s3cret-never-moves", server.url("/oauth2/token"))
    outcome = make_transport(server.url(), auth).send(wire_events())
    assert (outcome.verdict, outcome.status, outcome.reached) == ("misconfigured", 307, False)
    assert "token endpoint" in outcome.reason
    assert "s3cret" not in outcome.reason
    assert other.seen == []
    assert server.requests_to("/caliper/event") == []


# -- 3. bounded replies --------------------------------------------------------------------


def test_a_huge_reply_is_read_up_to_the_cap_only(
    server: HostileServer, make_transport: Callable[..., Transport]
) -> None:
    """A 32 MB body to a 200: delivered, read up to 64 KiB, memory stays small."""
    size = 32 * 1024 * 1024
    server.on("/caliper/event", huge(size))
    transport = make_transport(server.url())
    tracemalloc.start()
    try:
        outcome = transport.send(wire_events())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (outcome.verdict, outcome.status) == ("ok", 200)
    assert peak < 4 * 1024 * 1024
    # What the server got rid of fits in the sockets' buffers, not the whole body.
    assert server.body_bytes < size


def test_an_endless_body_does_not_stall_or_fill_memory(
    server: HostileServer, make_transport: Callable[..., Transport]
) -> None:
    """An endless chunked 200: the transport reads the cap, hangs up and reports delivery."""
    server.on("/caliper/event", endless_chunked())
    outcome, _ = send_in_thread(make_transport(server.url()))
    assert (outcome.verdict, outcome.status) == ("ok", 200)
    assert server.body_bytes < 64 * 1024 * 1024


@pytest.mark.parametrize(
    "reply", [trickle_body(0.1, length=600), trickle_head(0.1)], ids=["body", "head"]
)
def test_a_trickling_reply_hits_the_total_deadline(
    server: HostileServer, make_transport: Callable[..., Transport], reply: Callable[..., None]
) -> None:
    """One byte every 0.1 s never trips the read timeout; the total deadline (2 s) does."""
    server.on("/caliper/event", reply)
    outcome, elapsed = send_in_thread(make_transport(server.url()), limit=30)
    assert outcome.verdict == "retry"
    assert outcome.status is None
    assert (
        outcome.reason == f"timed out: no complete answer from 127.0.0.1:{server.port} within 2 s"
    )
    assert outcome.reached
    assert elapsed < 10


def test_a_reply_over_the_cap_drops_its_connection(
    server: HostileServer, make_transport: Callable[..., Transport]
) -> None:
    """Replies within the cap keep the connection alive; the unread rest of a longer one is
    never drained: its connection is dropped and the next request connects anew."""
    server.on(
        "/caliper/event",
        answer(200, b"x" * REPLY_CAP),
        answer(200, b"x" * REPLY_CAP),
        answer(200, b"x" * (REPLY_CAP * 4)),
        answer(200),
    )
    transport = make_transport(server.url())
    assert [transport.send(wire_events()).verdict for _ in range(4)] == ["ok"] * 4
    assert [seen.connection for seen in server.seen] == [1, 1, 1, 2]


def test_reason_phrase_is_sanitised(
    server: HostileServer, make_transport: Callable[..., Transport]
) -> None:
    """A server's reason phrase reaches logs only as short printable ASCII."""
    server.on("/caliper/event", answer(503, reason="Busy \x1b[31m" + "A" * 500))
    outcome = make_transport(server.url()).send(wire_events())
    assert outcome.verdict == "retry"
    assert "\x1b" not in outcome.reason
    assert len(outcome.reason) < 80


def test_compressed_token_replies_are_decoded_within_the_cap() -> None:
    """A gzip token reply is decoded; a "zip bomb" is refused instead of expanded."""
    import gzip

    assert decode_body(gzip.compress(b'{"a":1}'), "gzip") == b'{"a":1}'
    assert decode_body(gzip.compress(b"0" * (REPLY_CAP + 1)), "gzip") is None
    assert decode_body(b"x", "br") is None
    assert decode_body(b"plain", None) == b"plain"


# -- reached, and the causes of network failures (point 7) ------------------------------------


def test_connection_refused_names_host_and_port_and_never_reached(
    make_transport: Callable[..., Transport],
) -> None:
    """Nothing listening: "connection refused by host:port", reached False."""
    port = closed_port()
    outcome = make_transport(f"http://127.0.0.1:{port}/caliper/event").send(wire_events())
    assert outcome == Outcome(
        "retry", None, f"connection refused by 127.0.0.1:{port}", None, reached=False
    )


def test_name_not_resolved_is_named(
    make_transport: Callable[..., Transport], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unknown host: "name not resolved", reached False (the resolver is the OS's: faked)."""
    real = socket.getaddrinfo

    def resolve(host: object, *args: object, **kwargs: object) -> object:
        if host == "caliper.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    outcome = make_transport("https://caliper.invalid/caliper/event").send(wire_events())
    assert (outcome.verdict, outcome.reason, outcome.reached) == (
        "retry",
        "name not resolved: caliper.invalid",
        False,
    )


def test_server_errors_and_silence_have_reached_the_server(
    server: HostileServer, make_transport: Callable[..., Transport]
) -> None:
    """A 503 and a read timeout both reached the server: reached True."""
    server.on("/caliper/event", answer(503), silent())
    transport = make_transport(server.url())
    first, second = transport.send(wire_events()), transport.send(wire_events())
    assert (first.verdict, first.status, first.reached) == ("retry", 503, True)
    assert (second.verdict, second.reached) == ("retry", True)
    assert "timed out" in second.reason


def test_connect_timeout_never_reached(make_transport: Callable[..., Transport]) -> None:
    """A listener whose backlog is full never completes the handshake: reached False."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):  # fill the accept queue; later SYNs are dropped
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.1)  # the kernel queues the fillers' handshakes: no state to wait on
        outcome = make_transport(f"http://127.0.0.1:{port}/caliper/event").send(wire_events())
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
    if "refused" in outcome.reason:
        pytest.skip("this system refuses instead of dropping SYNs to a full backlog")
    assert (outcome.verdict, outcome.reached) == ("retry", False)
    assert outcome.reason in (
        f"timed out connecting to 127.0.0.1:{port}",
        f"timed out: no complete answer from 127.0.0.1:{port} within 2 s",
    )


def test_no_token_never_reached(make_transport: Callable[..., Transport]) -> None:
    """When the token endpoint is down the events request is never made: reached False."""
    port = closed_port()
    auth = tt.ClientCredentials("kiosk", "s3cret", f"http://127.0.0.1:{port}/oauth2/token")
    outcome = make_transport(f"http://127.0.0.1:{port}/caliper/event", auth).send(wire_events())
    assert (outcome.verdict, outcome.reached) == ("retry", False)
    assert outcome.reason == (f"token endpoint unreachable: connection refused by 127.0.0.1:{port}")


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A server TLS context with a self-signed certificate (made with the openssl tool)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    where: Path = tmp_path_factory.mktemp("tls")
    key, cert = where / "key.pem", where / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def test_untrusted_certificate_is_named_and_never_reached(
    self_signed: ssl.SSLContext, make_transport: Callable[..., Transport]
) -> None:
    """A self-signed certificate: "certificate verify failed for host:port: ...", reached False."""
    with HostileServer(tls=self_signed) as tls_server:
        tls_server.on("/caliper/event", answer(200))
        outcome = make_transport(tls_server.url()).send(wire_events())
        assert tls_server.seen == []
    assert (outcome.verdict, outcome.reached) == ("retry", False)
    assert outcome.reason.startswith(f"certificate verify failed for 127.0.0.1:{tls_server.port}")
    assert "self" in outcome.reason  # OpenSSL's own words: "self-signed certificate"


def test_fresh_token_then_persistent_401_is_misconfigured(
    make_transport: Callable[..., Transport],
) -> None:
    """401 after one token refresh: misconfigured, naming method, host and path, never a token."""
    with LocalCollector(clients={"kiosk": "s3cret"}) as collector:
        collector.fail_next(401, times=2)
        auth = tt.ClientCredentials("kiosk", "s3cret", collector.token_url)
        outcome = make_transport(collector.url, auth).send(wire_events())
        assert collector.token_requests == 2
    assert (outcome.verdict, outcome.status) == ("misconfigured", 401)
    assert outcome.reason.startswith(
        f"configuration problem: POST http://127.0.0.1:{collector.port}/caliper/event "
        "answered HTTP 401"
    )
    assert "even with a fresh token" in outcome.reason
    assert "s3cret" not in outcome.reason


def test_token_endpoint_retry_after_is_passed_on(
    server: HostileServer, make_transport: Callable[..., Transport]
) -> None:
    """A 429 from the token endpoint is retried no sooner than its Retry-After."""
    server.on("/oauth2/token", answer(429, headers=(("Retry-After", "7"),)))
    auth = tt.ClientCredentials("kiosk", "s3cret", server.url("/oauth2/token"))
    outcome = make_transport(server.url(), auth).send(wire_events())
    assert (outcome.verdict, outcome.status, outcome.retry_after) == ("retry", 429, 7.0)
    assert not outcome.reached
    assert server.requests_to("/caliper/event") == []


def test_a_custom_auth_header_that_http_cannot_carry_is_a_configuration_error(
    server: HostileServer, make_transport: Callable[..., Transport]
) -> None:
    """A custom auth plugin's non-ASCII header value is reported, never sent."""

    class Custom:
        def authorization(self, http: object, timeout: object) -> str:
            return "Bearer tök"

        def invalidate(self) -> bool:
            return False

    outcome = make_transport(server.url(), Custom()).send(wire_events())
    assert (outcome.verdict, outcome.reached) == ("misconfigured", False)
    assert "HTTP header cannot carry" in outcome.reason
    assert server.seen == []


def test_without_a_watchdog_thread_requests_still_go(
    server: HostileServer, make_transport: Callable[..., Transport], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where new threads are refused (interpreter shutdown), sending still works."""
    server.on("/caliper/event", answer(200))
    transport = make_transport(server.url())

    class Refused(threading.Thread):
        def start(self) -> None:
            raise RuntimeError("can't create new thread at interpreter shutdown")

    import types

    from timeback_tracker import _threads

    shutting_down = types.SimpleNamespace(**vars(threading))
    shutting_down.Thread = Refused
    monkeypatch.setattr(_threads, "threading", shutting_down)
    masks = hasattr(signal, "pthread_sigmask")  # not on Windows
    before = signal.pthread_sigmask(signal.SIG_BLOCK, []) if masks else None
    assert transport.send(wire_events()).verdict == "ok"
    assert transport._watchdog._thread is None
    if masks:  # the refused start left this thread's signal mask as it was
        assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
