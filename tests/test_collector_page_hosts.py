"""The collector page's Host check (its guard against DNS rebinding) on headers a
browser would never send, and on HTTP/1.0 clients that send none."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import requests

from timeback_tracker.testing import LocalCollector


@pytest.fixture
def collector() -> Iterator[LocalCollector]:
    """A collector on loopback."""
    with LocalCollector() as running:
        yield running


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1:{port}:{port}", "[::1", "127.0.0.1:port", "127.0.0.1:{port}0", "[evil]:{port}",
     "localhost.:{port}", ":{port}", "127.0.0.1 :{port}x"],
)  # fmt: skip
def test_a_malformed_host_header_is_refused(collector: LocalCollector, host: str) -> None:
    """A Host the check cannot read as loopback[:our port] gets 403, never the runs."""
    response = requests.get(
        collector.base_url + "/api/runs",
        headers={"Host": host.format(port=collector.port)},
        timeout=5,
    )
    assert response.status_code == 403
    assert "runs" not in response.json()


def test_an_ipv6_loopback_host_header_is_accepted(collector: LocalCollector) -> None:
    """[::1]:port names this machine as well as 127.0.0.1 does."""
    response = requests.get(
        collector.base_url + "/api/runs", headers={"Host": f"[::1]:{collector.port}"}, timeout=5
    )
    assert response.status_code == 200


def test_an_http_1_0_request_without_host_is_answered(collector: LocalCollector) -> None:
    """Scripts speaking HTTP/1.0 send no Host; no browser does, so no rebinding is possible."""
    with socket.create_connection(("127.0.0.1", collector.port), timeout=5) as sock:
        sock.sendall(b"GET /api/runs HTTP/1.0\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith((b"HTTP/1.0 200 ", b"HTTP/1.1 200 "))
    assert b'"runs"' in reply


def test_an_unknown_api_path_is_a_404(collector: LocalCollector) -> None:
    """/api/ paths the page does not know answer 404, not the overview."""
    response = requests.get(collector.base_url + "/api/nothing", timeout=5)
    assert response.status_code == 404
