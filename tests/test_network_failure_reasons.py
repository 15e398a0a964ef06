"""What a failed send says (on_error and the log read it) when the network or the server
breaks off: a reset, half an answer, something that is not HTTP, a TLS mismatch, and
whether the events may have reached the server."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator

import pytest

from tests.hostile import HostileServer, Reply, answer, trickle_body
from tests.support import SENSOR, wire_window
from timeback_tracker._transport import Outcome, Transport
from timeback_tracker.testing import LocalCollector


@pytest.fixture
def server() -> Iterator[HostileServer]:
    """A hostile server on loopback."""
    with HostileServer() as running:
        yield running


def send(url: str, timeout: float = 1.0) -> Outcome:
    """One envelope of one window through a fresh transport."""
    transport = Transport(endpoint=url, sensor=SENSOR, auth=None, timeout=(timeout, timeout))
    try:
        return transport.send([json.dumps(wire_window(str(uuid.uuid4())))])
    finally:
        transport.close()


def then_hang_up(data: bytes) -> Reply:
    """Write ``data``, then close the connection (a crash or a restart mid-answer)."""

    def reply(sock: socket.socket, server: HostileServer) -> None:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_RDWR)

    return reply


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",  # cut inside the body
        b"SSH-2.0-OpenSSH_9.6\r\n",  # not HTTP at all: a wrong port
    ],
    ids=["body-cut-short", "not-http"],
)
def test_half_an_answer_is_a_retry_that_may_have_reached_the_server(
    server: HostileServer, data: bytes
) -> None:
    """Even after "200 OK", an answer cut short is no delivery: the events are sent
    again (same ids), and the reason says what happened, naming only host and port."""
    server.on("/caliper/event", then_hang_up(data))
    outcome = send(server.url())
    where = f"127.0.0.1:{server.port}"
    assert outcome == Outcome(
        "retry", None, f"{where} closed the connection without a complete answer", reached=True
    )


def test_a_reset_connection_is_named_as_one() -> None:
    """The server reads the request and resets the connection: "connection reset by",
    and the events may have reached it."""
    with LocalCollector() as collector:
        collector.drop_next()
        outcome = send(collector.url)
        assert outcome == Outcome(
            "retry", None, f"connection reset by 127.0.0.1:{collector.port}", reached=True
        )
        assert collector.events == []
        assert send(collector.url).verdict == "ok"  # the next attempt goes through


def test_https_to_a_plain_http_port_is_a_tls_failure_that_never_reached(
    server: HostileServer,
) -> None:
    """A handshake that fails never sent the events: the attempt does not count as one
    that may have reached the server. The plain-text server either answers the
    ClientHello with garbage ("TLS failed with host:port") or waits for a request
    that never comes (the connect timeout): which one is its timing, not ours."""
    server.on("/caliper/event", answer(200))
    outcome = send(server.url().replace("http://", "https://", 1), timeout=3.0)
    where = f"127.0.0.1:{server.port}"
    assert (outcome.verdict, outcome.status, outcome.reached) == ("retry", None, False)
    assert outcome.reason in (f"TLS failed with {where}", f"timed out connecting to {where}")
    assert server.seen == []


def test_the_total_deadline_holds_through_an_http_proxy(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With http_proxy set (as on school networks), the request goes through the proxy,
    and a proxy trickling the answer is cut at the total deadline like a server would be."""
    endpoint = "http://127.0.0.1:9/caliper/event"  # nothing listens there: only the proxy
    for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, server.url(""))
    server.on(endpoint, trickle_body(0.1, length=1000))  # 100 s if nothing cuts it
    result: list[Outcome] = []
    # In a daemon thread: a send the deadline misses must fail the test, not hang it.
    worker = threading.Thread(target=lambda: result.append(send(endpoint)), daemon=True)
    worker.start()
    worker.join(30)
    assert result, "send() did not return: the deadline did not reach the proxy connection"
    assert result[0] == Outcome(
        "retry", None, "timed out: no complete answer from 127.0.0.1:9 within 2 s", reached=True
    )
    [seen] = server.seen
    assert (seen.method, seen.path) == ("POST", endpoint)
