"""The collector's live page and its JSON API, served from the collector's root URL.

Routes (GET or HEAD):

* ``/`` — the page: plain HTML, CSS and JavaScript shipped in the package
  (``timeback_tracker/_static/``), nothing fetched from elsewhere, no build
  step. It polls ``/api/runs`` about once a second and fetches the timeline
  of each run it shows when that run changed.
* ``/api/runs`` — every run, newest first, with counts and the rejections.
* ``/api/runs/<run id>`` — one run with its timeline and events.
* ``/api/rejections/<n>`` — one rejected request, with its body when it was JSON.

See :mod:`timeback_tracker._collector_runs` for the shapes. The page and the
API answer only requests addressed to a loopback host name (a defence
against DNS rebinding: a web page elsewhere must not read student data off
the developer's machine), unless the collector itself listens elsewhere.
Every answer forbids caching, framing and inline scripts.
"""

from __future__ import annotations

import functools
import json
import re
import time
from importlib import resources
from typing import Any, Final

from timeback_tracker._collector_runs import RunBook
from timeback_tracker._collector_server import (
    Answer,
    IncomingRequest,
    error_answer,
)
from timeback_tracker._urls import is_loopback

__all__ = ["Page"]

_STATIC: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/page.css": ("page.css", "text/css; charset=utf-8"),
    "/page.js": ("page.js", "text/javascript; charset=utf-8"),
}
_RUN: Final = re.compile(r"/api/runs/([^/]+)")
_REJECTION: Final = re.compile(r"/api/rejections/(\d{1,9})")
_HOST: Final = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+)(?::(\d{1,5}))?")
_HEADERS: Final = (
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
)


@functools.cache
def _static(name: str) -> bytes:
    return (resources.files("timeback_tracker") / "_static" / name).read_bytes()


class Page:
    """Answers the page's routes from a :class:`RunBook`.

    Args:
        book: The runs and rejections to show.
        host: The host the collector listens on (the Host check is skipped
            when it is not loopback: the operator chose to serve others).
        events_path: The path of the events endpoint, shown on the page.
    """

    def __init__(self, book: RunBook, host: str, events_path: str) -> None:
        self._book = book
        self._check_host = is_loopback(host)
        self._events_path = events_path

    @staticmethod
    def serves(path: str) -> bool:
        """Whether ``path`` is one of the page's routes."""
        return path in _STATIC or path.startswith("/api/")

    def answer(self, request: IncomingRequest, port: int) -> Answer:
        """Answer a request to one of the page's routes."""
        if request.method not in ("GET", "HEAD"):
            return self._with_headers(error_answer(405, "method not allowed", ("Allow", "GET")))
        if self._check_host and not _loopback_host(request.headers.get("Host"), port):
            return self._with_headers(
                error_answer(403, "the page answers loopback host names only (127.0.0.1)")
            )
        return self._with_headers(self._route(request.path))

    def _route(self, path: str) -> Answer:
        if path in _STATIC:
            name, content_type = _STATIC[path]
            return Answer(200, _static(name), content_type)
        now = time.time()
        if path == "/api/runs":
            return _json({"eventsPath": self._events_path, **self._book.overview(now)})
        if match := _RUN.fullmatch(path):
            run = self._book.detail(match.group(1), now)
            return error_answer(404, "no such run") if run is None else _json(run)
        if match := _REJECTION.fullmatch(path):
            rejection = self._book.rejection(int(match.group(1)))
            return error_answer(404, "no such rejection") if rejection is None else _json(rejection)
        return error_answer(404, "not found")

    @staticmethod
    def _with_headers(answer: Answer) -> Answer:
        return Answer(answer.status, answer.payload, answer.content_type, answer.headers + _HEADERS)


def _json(document: dict[str, Any]) -> Answer:
    # allow_nan=False: a browser's JSON.parse refuses NaN, so never send it.
    payload = json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Answer(200, payload.encode(), "application/json; charset=utf-8")


def _loopback_host(header: str | None, port: int) -> bool:
    """Whether a ``Host`` header names a loopback host (and, if it has one, our port)."""
    if header is None:
        return True  # HTTP/1.0 clients (scripts, not browsers) send none
    match = _HOST.fullmatch(header.strip())
    if match is None:
        return False
    host, given = match.groups()
    return (given is None or int(given) == port) and is_loopback(host.strip("[]"))
