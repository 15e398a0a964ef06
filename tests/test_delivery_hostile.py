"""Delivery that cannot be tricked: redirects, misconfiguration, trickling replies, Retry-After
at flush/close/exit, 413 recovery, and errors a user can act on — trackers against real servers."""

from __future__ import annotations

import logging
import math
import random
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import timeback_tracker as tt
from tests.hostile import HostileServer, answer, redirect, trickle_body
from tests.support import (
    SENSOR,
    MakeTracker,
    closed_port,
    complete_runs,
    eventually,
    tracker_factory,
)
from timeback_tracker.testing import LocalCollector


@pytest.fixture
def server() -> Iterator[HostileServer]:
    """A hostile server on loopback."""
    with HostileServer() as running:
        yield running


@pytest.fixture
def make_tracker(failures: list[tt.DeliveryFailure]) -> Iterator[MakeTracker]:
    """Memory-only trackers reporting into ``failures``, closed after the test."""
    with tracker_factory(
        close_timeout=0.5, heartbeat_interval=3600, spool_path=None, on_error=failures.append
    ) as make:
        yield lambda endpoint, **overrides: make(endpoint=endpoint, **overrides)


def timed_flush(tracker: tt.Tracker, timeout: float) -> tuple[bool, float]:
    """flush(timeout) and how long it took."""
    started = time.monotonic()
    return tracker.flush(timeout), time.monotonic() - started


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    """Messages logged by the tracker at ``level``."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("timeback_tracker") and r.levelno == level
    ]


# -- 1. redirects are never followed -------------------------------------------------------


def test_a_301_loses_nothing(
    server: HostileServer, make_tracker: MakeTracker, failures: list[tt.DeliveryFailure]
) -> None:
    """A 301 whose target answers a GET with 200 delivers nothing and deletes nothing."""
    server.on("/caliper/event", redirect(301, "/moved"))
    server.on("/moved", answer(200))
    tracker = make_tracker(server.url())
    complete_runs(tracker)
    delivered, elapsed = timed_flush(tracker, 30.0)
    assert not delivered
    assert elapsed < 10  # a configuration error ends the wait: no use waiting 30 s
    stats = tracker.stats()
    assert (stats.sent, stats.dead_lettered, stats.queued) == (0, 0, 2)
    assert server.requests_to("/moved") == []
    assert failures[0].configuration_error
    assert failures[0].will_retry
    assert failures[0].status == 301
    assert len(failures[0].event_ids) == 2


@pytest.mark.parametrize("status", [307, 308])
def test_a_307_never_carries_events_to_another_host(
    server: HostileServer, make_tracker: MakeTracker, status: int
) -> None:
    """A 307/308 to a plain-http server on another port: that server never sees a byte."""
    with HostileServer() as elsewhere:
        elsewhere.on("/caliper/event", answer(200))
        server.on("/caliper/event", redirect(status, elsewhere.url()))
        tracker = make_tracker(server.url())
        complete_runs(tracker)
        assert not tracker.flush(10.0)
        assert server.wait_for(1)
        assert elsewhere.seen == []
    assert tracker.stats().queued == 2


# -- 3. a trickling reply is a failed attempt; the same ids go again ------------------------


def test_a_trickling_reply_is_retried_with_the_same_ids(
    server: HostileServer, make_tracker: MakeTracker
) -> None:
    """A 200 trickled one byte per 0.1 s passes the total deadline; the events go again."""
    server.on("/caliper/event", trickle_body(0.1, length=600), answer(200))
    tracker = make_tracker(server.url(), request_timeout=(0.5, 0.5))
    complete_runs(tracker)
    assert tracker.flush(20.0)
    first, second = server.requests_to("/caliper/event")[:2]
    assert first.event_ids() == second.event_ids()
    assert len(first.event_ids()) == 2
    stats = tracker.stats()
    assert (stats.failed, stats.sent, stats.retried) == (1, 2, 2)


# -- 4. misconfiguration keeps the events, is reported as such, and ends flush() -------------


@pytest.mark.parametrize("status", [302, 401, 403, 404, 405, 415])
def test_misconfiguration_keeps_the_events(
    collector: LocalCollector,
    make_tracker: MakeTracker,
    failures: list[tt.DeliveryFailure],
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    """3xx/401/403/404/405/415: kept, reported as configuration, flush() False; fixed: delivered."""
    collector.fail_next(status, times=3)
    tracker = make_tracker(collector.url)
    with caplog.at_level(logging.DEBUG, logger="timeback_tracker"):
        complete_runs(tracker)
        delivered, elapsed = timed_flush(tracker, 30.0)
        assert not delivered
        assert elapsed < 10
        stats = tracker.stats()
        assert (stats.dead_lettered, stats.sent) == (0, 0)
        failure = failures[0]
        assert (failure.status, failure.will_retry, failure.configuration_error) == (
            status,
            True,
            True,
        )
        assert failure.reason.startswith(
            f"configuration problem: POST http://127.0.0.1:{collector.port}/caliper/event "
            f"answered HTTP {status}"
        )
        # The server is fixed after three answers: everything arrives, nothing was lost.
        assert eventually(lambda: len(failures) == 3)
        assert tracker.flush(15.0)
    assert len(collector.events) == 2
    assert tracker.stats().dead_lettered == 0
    assert len([f for f in failures if f.configuration_error]) == 3
    errors = [m for m in records(caplog, logging.ERROR) if "configuration problem" in m]
    assert len(errors) == 1  # once per distinct cause, not per attempt
    assert any("delivery works again" in m for m in records(caplog, logging.INFO))


def test_a_typo_in_the_path_loses_nothing_even_in_memory(
    collector: LocalCollector,
    make_tracker: MakeTracker,
    failures: list[tt.DeliveryFailure],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 404 for every request: the backlog stays, one ERROR log, close() does not linger."""
    tracker = make_tracker(collector.base_url + "/caliper/evnt", exit_timeout=20.0)
    with caplog.at_level(logging.DEBUG, logger="timeback_tracker"):
        complete_runs(tracker, 3)
        assert eventually(lambda: len(failures) >= 4)
        assert not tracker.flush(30.0)
        assert tracker.stats().queued == 6
        assert tracker.stats().dead_lettered == 0
        started = time.monotonic()
        tracker.close()
        assert time.monotonic() - started < 10  # not the whole exit_timeout of 20 s
    [error] = [m for m in records(caplog, logging.ERROR) if "configuration problem" in m]
    assert error.endswith(
        f" events failed: configuration problem: POST http://127.0.0.1:{collector.port}"
        "/caliper/evnt answered HTTP 404 Not Found; check TrackerConfig.endpoint "
        "(…/caliper/event); the events are kept and retried until the configuration is fixed"
    )
    assert collector.events == []


def test_wrong_client_secret_is_a_configuration_error(failures: list[tt.DeliveryFailure]) -> None:
    """A token endpoint that refuses the secret: configuration error, secret never shown."""
    secret = "s3cret-Wrong-Zq9"
    with LocalCollector(clients={"kiosk": "right"}) as guarded:
        config = tt.TrackerConfig(
            sensor=SENSOR,
            endpoint=guarded.url,
            auth=tt.ClientCredentials("kiosk", secret, guarded.token_url),
            heartbeat_interval=3600,
            spool_path=None,
            on_error=failures.append,
        )
        with tt.Tracker(config) as tracker:
            complete_runs(tracker)
            delivered, elapsed = timed_flush(tracker, 30.0)
            assert not delivered
            assert elapsed < 10
            assert tracker.stats().queued == 2
    failure = failures[0]
    assert (failure.status, failure.configuration_error, failure.will_retry) == (401, True, True)
    assert f"POST http://127.0.0.1:{guarded.port}/oauth2/token (token endpoint)" in failure.reason
    assert "check the client id and secret" in failure.reason
    assert secret not in repr(failure)


# -- 5. Retry-After is a floor for flush(), close() and the exit hook ------------------------


def test_flush_does_not_cut_retry_after_short(
    collector: LocalCollector, make_tracker: MakeTracker
) -> None:
    """After a 429 with Retry-After: 2, a flush() waits the 2 s before the next attempt."""
    collector.fail_next(429, retry_after=2)
    tracker = make_tracker(collector.url)
    complete_runs(tracker)
    assert collector.wait_for(lambda c: len(c.requests) >= 1, timeout=5)
    assert tracker.flush(15.0)
    first, second = collector.requests[:2]
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 1.9


def test_flush_cuts_the_trackers_own_backoff_short(
    collector: LocalCollector, make_tracker: MakeTracker
) -> None:
    """Four refused attempts put the next one at least 2 s away (the backoff's fixed half);
    once the endpoint is back, flush() sends at once instead of waiting for it."""
    collector.go_down()
    tracker = make_tracker(collector.url)
    complete_runs(tracker)
    assert eventually(lambda: tracker.stats().failed >= 4, timeout=15), tracker.stats()
    collector.come_back()
    delivered, elapsed = timed_flush(tracker, 10.0)
    assert delivered
    assert elapsed < 1.5, elapsed
    assert len(collector.events) == 2


def test_close_returns_at_its_deadline_and_keeps_the_events(
    collector: LocalCollector, make_tracker: MakeTracker, tmp_path: Path
) -> None:
    """Retry-After past close()'s deadline: close() returns at it; the spool keeps the events."""
    spool = tmp_path / "spool.sqlite3"
    collector.fail_next(429, retry_after=30)
    tracker = make_tracker(collector.url, spool_path=spool)
    complete_runs(tracker)
    assert collector.wait_for(lambda c: len(c.requests) >= 1, timeout=5)
    started = time.monotonic()
    tracker.close(timeout=1.0)
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 5.0  # at its 1 s deadline, far from the server's 30 s
    assert len(collector.requests) == 1  # nothing went before the server's 30 s
    later = make_tracker(collector.url, spool_path=spool)
    assert later.flush(10.0)
    assert len(collector.events) == 2


EXIT_APP = textwrap.dedent(
    """
    import sys, time
    import timeback_tracker as tt

    tracker = tt.Tracker(tt.TrackerConfig(
        sensor="https://kiosk.example.com/sensors/1", endpoint=sys.argv[1],
        spool_path=sys.argv[2], heartbeat_interval=3600, exit_timeout=1.0,
    ))
    session = tracker.start_session(
        tt.TimebackUser(id="https://sis.example.com/users/1", email="kid@example.com"),
        tt.TimebackActivityContext(
            id="https://app.example.com/a/1", subject="Math", app=tt.App(name="App")
        ),
    )
    time.sleep(0.05)  # a zero-length final window would not be sent
    session.complete(1)
    deadline = time.monotonic() + 10
    while tracker.stats().failed == 0 and time.monotonic() < deadline:
        time.sleep(0.01)  # polls (the child script has no tests.support)
    print("exiting", flush=True)
    """
)


def test_the_exit_hook_honours_retry_after(collector: LocalCollector, tmp_path: Path) -> None:
    """A process told to come back in 30 s exits within exit_timeout without asking again."""
    collector.fail_next(429, retry_after=30)
    spool = tmp_path / "spool.sqlite3"
    process = subprocess.Popen(
        [sys.executable, "-c", EXIT_APP, collector.url, str(spool)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "exiting"
    said_exiting = time.monotonic()
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert time.monotonic() - said_exiting < 5.0  # exit_timeout is 1 s; Retry-After 30 s
    assert [r.status for r in collector.requests] == [429]
    config = tt.TrackerConfig(sensor="https://kiosk.example.com/sensors/1", endpoint=collector.url)
    with tt.Tracker(attrs_evolve(config, spool_path=spool)) as later:
        assert later.flush(10.0)
    assert len(collector.events) == 2


def attrs_evolve(config: tt.TrackerConfig, **changes: Any) -> tt.TrackerConfig:
    """``config`` with ``changes``."""
    import attrs

    return attrs.evolve(config, **changes)


# -- 6. one 413 is not forever ----------------------------------------------------------------


def test_batch_size_grows_back_after_a_transient_413(
    collector: LocalCollector, make_tracker: MakeTracker
) -> None:
    """A single 413 halves the batch size; after successes it is back to the configured 8."""
    tracker = make_tracker(collector.url, batch_size=8)
    collector.go_down()
    complete_runs(tracker, 40)  # 80 events, queued while the collector is away
    collector.fail_next(413)
    collector.come_back()
    assert tracker.flush(30.0)
    sizes = [len(envelope["data"]) for envelope in collector.envelopes]
    assert sum(sizes) == 80
    assert 4 in sizes  # halved after the 413
    assert sizes[-3:] == [8, 8, 8]  # and grown back
    assert tracker.stats().dead_lettered == 0


# -- 7. errors a user can act on ---------------------------------------------------------------


def test_network_failures_name_host_and_cause_once_per_change(
    make_tracker: MakeTracker,
    failures: list[tt.DeliveryFailure],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Connection refused, then 503, then recovery: one WARNING per cause, then an INFO."""
    port = closed_port()
    tracker = make_tracker(f"http://127.0.0.1:{port}/caliper/event", auth=tt.BearerToken("tok-Zq9"))
    with caplog.at_level(logging.DEBUG, logger="timeback_tracker"):
        complete_runs(tracker)
        assert eventually(lambda: len(failures) >= 3)
        assert {f.reason for f in failures} == {f"connection refused by 127.0.0.1:{port}"}
        with LocalCollector(port=port, token="tok-Zq9") as collector:
            collector.fail_next(503)
            assert tracker.flush(30.0)
    warnings = records(caplog, logging.WARNING)
    assert warnings == [
        f"delivery of 2 events failed: connection refused by 127.0.0.1:{port}; will retry",
        "delivery of 2 events failed: HTTP 503 Service Unavailable; will retry",
    ]
    assert any("delivery works again" in m for m in records(caplog, logging.INFO))
    assert "tok-Zq9" not in caplog.text
    assert "kid@example.com" not in caplog.text


def test_flush_from_on_error_returns_at_once(
    collector: LocalCollector, make_tracker: MakeTracker, caplog: pytest.LogCaptureFixture
) -> None:
    """on_error runs on the delivery thread: a flush(math.inf) there returns at once."""
    answers: list[tuple[bool, float]] = []
    holder: list[tt.Tracker] = []

    def on_error(failure: tt.DeliveryFailure) -> None:
        answers.append(timed_flush(holder[0], math.inf))

    collector.fail_next(500)
    tracker = make_tracker(collector.url, on_error=on_error)
    holder.append(tracker)
    with caplog.at_level(logging.ERROR, logger="timeback_tracker"):
        complete_runs(tracker)
        assert tracker.flush(10.0)
    assert len(answers) == 1
    assert answers[0][0] is False
    assert answers[0][1] < 1.0
    assert any("called from the delivery thread" in m for m in records(caplog, logging.ERROR))
    assert len(collector.events) == 2


def test_retries_leave_the_apps_random_generator_alone(
    collector: LocalCollector, make_tracker: MakeTracker
) -> None:
    """The backoff's jitter has a generator of its own: retrying never draws from the
    `random` module an app (or Hypothesis) seeds and replays."""
    collector.go_down()
    random.seed(7)
    state = random.getstate()
    tracker = make_tracker(collector.url)
    complete_runs(tracker)
    assert eventually(lambda: tracker.stats().failed >= 3)
    assert random.getstate() == state
