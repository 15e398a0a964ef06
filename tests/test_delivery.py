"""Delivery under faults: retries, Retry-After, resets, poison events, oversize batches."""

from __future__ import annotations

import email.utils
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import timeback_tracker as tt
from tests.support import (
    ACTIVITY,
    USER,
    MakeTracker,
    assert_conserved,
    complete_runs,
    completion_event_id,
    eventually,
    tracker_factory,
    windows,
)
from timeback_tracker import tracker as tracker_module
from timeback_tracker._delivery import Delivery
from timeback_tracker._transport import classify, parse_retry_after
from timeback_tracker.testing import LocalCollector


@pytest.fixture
def make_tracker(
    collector: LocalCollector, failures: list[tt.DeliveryFailure]
) -> Iterator[MakeTracker]:
    """Trackers pointed at the collector, reporting into ``failures``."""
    with tracker_factory(
        endpoint=collector.url, heartbeat_interval=3600, on_error=failures.append
    ) as make:
        yield make


def test_status_classification() -> None:
    """Statuses map to the documented verdicts; only 400/422 judge the events themselves."""
    assert [classify(s) for s in (200, 202, 204)] == ["ok"] * 3
    assert [classify(s) for s in (408, 425, 429, 500, 502, 503, 504)] == ["retry"] * 7
    assert classify(413) == "too_large"
    assert [classify(s) for s in (400, 422)] == ["reject"] * 2
    misconfigured = (301, 302, 303, 307, 308, 401, 403, 404, 405, 409, 410, 415)
    assert [classify(s) for s in misconfigured] == ["misconfigured"] * len(misconfigured)


def test_retry_after_parsing() -> None:
    """Retry-After is read as whole seconds or as an HTTP date (as urllib3 reads it), capped."""
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 7 ") == 7.0
    assert parse_retry_after("99999") == 600.0
    soon = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28.0 <= (parse_retry_after(soon) or 0) <= 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    for invalid in ("soon", "nan", "-4", "1.5", None, ""):
        assert parse_retry_after(invalid) is None, invalid


def test_server_errors_are_retried_until_delivered(
    collector: LocalCollector, make_tracker: Callable[..., tt.Tracker], failures: list[Any]
) -> None:
    """503s keep the batch at the head; it is delivered once the server recovers."""
    collector.fail_next(503, times=2)
    tracker = make_tracker()
    [session] = complete_runs(tracker, 1)
    assert tracker.flush(10.0)
    assert [e["type"] for e in collector.events] == ["TimeSpentEvent", "ActivityEvent"]
    stats = tracker.stats()
    assert (stats.failed, stats.sent, stats.dead_lettered) == (2, 2, 0)
    assert stats.retried == 4  # two events, sent again twice
    assert [f.status for f in failures] == [503, 503]
    assert all(f.will_retry and len(f.event_ids) == 2 for f in failures)
    assert collector.completions(session.run_id)


@pytest.mark.parametrize("retry_after", [2, "http-date"])
def test_retry_after_is_a_floor(
    collector: LocalCollector, make_tracker: Callable[..., tt.Tracker], retry_after: Any
) -> None:
    """After a 429 with Retry-After (seconds or HTTP date) the next attempt waits that long."""
    if retry_after == "http-date":
        from email.utils import formatdate

        retry_after = formatdate(time.time() + 3, usegmt=True)
    collector.fail_next(429, retry_after=retry_after)
    tracker = make_tracker()
    complete_runs(tracker, 1)
    assert collector.wait_for(lambda c: len(c.requests) >= 1, timeout=5)
    first = time.monotonic()
    assert collector.wait_for(2, timeout=10)
    # An HTTP date has one-second resolution: allow for the truncation.
    assert time.monotonic() - first >= 1.0
    assert tracker.flush(5.0)
    assert tracker.stats().sent == 2


def test_connection_reset_is_retried(
    collector: LocalCollector, make_tracker: Callable[..., tt.Tracker]
) -> None:
    """A dropped connection is a retryable network error."""
    collector.drop_next()
    tracker = make_tracker()
    complete_runs(tracker, 1)
    assert tracker.flush(10.0)
    assert len(collector.events) == 2
    assert tracker.stats().failed == 1


def test_read_timeout_resends_the_same_ids(
    collector: LocalCollector, make_tracker: Callable[..., tt.Tracker]
) -> None:
    """A response slower than the read timeout leads to a re-send with the same event ids."""
    collector.delay_next(1.0)
    tracker = make_tracker(request_timeout=(1.0, 0.3))
    complete_runs(tracker, 1)
    assert tracker.flush(10.0)
    assert collector.wait_for(lambda c: c.duplicates >= 2, timeout=5)
    assert len(collector.events) == 2
    assert collector.duplicate_conflicts == []


@pytest.mark.slow(15)
def test_poison_event_is_isolated_and_dead_lettered(
    collector: LocalCollector, make_tracker: Callable[..., tt.Tracker], failures: list[Any]
) -> None:
    """A 400 caused by one event dead-letters that event only; the rest are delivered."""
    tracker = make_tracker(batch_size=50)
    sessions = [tracker.start_session(USER, ACTIVITY) for _ in range(5)]
    poison_run = sessions[2].run_id
    collector.reject_events(
        lambda e: e["type"] == "ActivityEvent" and e["extensions"]["runId"] == poison_run
    )
    # Hold delivery until every event is queued, so they travel in one batch.
    collector.go_down()
    time.sleep(0.02)  # a zero-length final window would not be sent
    for session in sessions:
        session.complete(1)
    collector.come_back()
    assert tracker.flush(15.0)
    stats = tracker.stats()
    assert (stats.dead_lettered, stats.sent) == (1, 9)
    assert len(collector.events) == 9
    assert collector.completions(poison_run) == []
    dead = [f for f in failures if not f.will_retry]
    assert len(dead) == 1
    assert dead[0].status == 400
    assert dead[0].event_ids == (completion_event_id(uuid.UUID(sessions[2].run_id)),)


@pytest.mark.slow(10)
def test_oversize_batches_are_halved(
    collector: LocalCollector, make_tracker: Callable[..., tt.Tracker]
) -> None:
    """413 halves the batch until it fits; a single event still too large is dead-lettered."""
    collector.stop()
    with LocalCollector(port=collector.port, max_body_bytes=6_000) as small:
        tracker = make_tracker(endpoint=small.url)
        small.go_down()
        complete_runs(tracker, 4)
        small.come_back()
        assert tracker.flush(10.0)
        assert len(small.events) == 8
        assert max(len(e["data"]) for e in small.envelopes) < 8
        assert tracker.stats().dead_lettered == 0
    tracker.close()  # it drains the shared spool until closed
    with LocalCollector(port=collector.port, max_body_bytes=100) as tiny:
        tracker = make_tracker(endpoint=tiny.url)
        complete_runs(tracker, 1)
        assert tracker.flush(10.0)
        assert tiny.events == []
        assert tracker.stats().dead_lettered == 2
    collector.start()


def test_outage_during_live_session_loses_nothing(
    collector: LocalCollector, make_tracker: Callable[..., tt.Tracker]
) -> None:
    """The endpoint goes away for a while mid-session; every window arrives afterwards."""
    tracker = make_tracker(heartbeat_interval=0.1)
    session = tracker.start_session(USER, ACTIVITY)
    # Mid-session: windows were delivered before the outage.
    assert eventually(lambda: len(collector.time_spent_events(session.run_id)) >= 2)
    collector.go_down()
    time.sleep(1.5)  # the outage, while windows keep closing
    collector.come_back()
    time.sleep(0.3)  # the session runs on after it
    session.complete(3)
    assert tracker.flush(15.0)
    events = windows(collector, session.run_id)
    assert len(events) == tracker.stats().sent - 1
    assert_conserved(events)
    active, inactive = collector.totals(session.run_id)
    assert abs(active - session.active_seconds) < 0.001
    assert inactive == 0
    assert collector.events[-1]["type"] == "ActivityEvent"
    assert collector.duplicate_conflicts == []


def test_on_error_exceptions_are_swallowed(
    collector: LocalCollector, make_tracker: Callable[..., tt.Tracker]
) -> None:
    """A callback that raises does not stop delivery."""
    calls: list[tt.DeliveryFailure] = []

    def explode(failure: tt.DeliveryFailure) -> None:
        calls.append(failure)
        raise RuntimeError("app bug")

    collector.fail_next(500)
    tracker = make_tracker(on_error=explode)
    complete_runs(tracker, 1)
    assert tracker.flush(10.0)
    assert len(calls) == 1
    assert len(collector.events) == 2


def test_on_error_runs_off_the_app_thread(
    collector: LocalCollector, make_tracker: Callable[..., tt.Tracker]
) -> None:
    """on_error is called from the delivery thread."""
    threads: list[str] = []
    collector.fail_next(500)
    tracker = make_tracker(on_error=lambda _: threads.append(threading.current_thread().name))
    complete_runs(tracker, 1)
    assert tracker.flush(10.0)
    assert threads == ["timeback-tracker-delivery"]


def test_delivery_thread_survives_unexpected_errors(
    collector: LocalCollector,
    make_tracker: Callable[..., tt.Tracker],
    monkeypatch: pytest.MonkeyPatch,
    failures: list[Any],
) -> None:
    """A bug inside the delivery loop is logged and counted; the thread goes on delivering."""
    original = Delivery._send
    calls = {"n": 0}

    def flaky(self: Delivery, batch: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyError("injected")
        original(self, batch)

    monkeypatch.setattr(Delivery, "_send", flaky)
    tracker = make_tracker()
    complete_runs(tracker, 1)
    assert tracker.flush(10.0)
    assert len(collector.events) == 2
    assert tracker.stats().internal_errors == 1
    assert any("internal error: KeyError" in f.reason for f in failures)


def test_heartbeat_survives_unexpected_errors(
    collector: LocalCollector,
    make_tracker: Callable[..., tt.Tracker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug in a tick is counted and the next ticks still close windows."""
    tracker = make_tracker(heartbeat_interval=0.1)
    session = tracker.start_session(USER, ACTIVITY)
    original = tracker_module.close_tick_window
    calls = {"n": 0}

    def flaky(session: tt.Session, late_ms: int, durable: bool) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise ValueError("injected")
        return original(session, late_ms, durable)

    monkeypatch.setattr(tracker_module, "close_tick_window", flaky)
    # Ticks after the injected error: they must still close windows.
    assert eventually(lambda: calls["n"] >= 5)
    session.complete(1)
    assert tracker.flush(5.0)
    assert tracker.stats().internal_errors == 1
    events = windows(collector, session.run_id)
    assert len(events) >= 4
    assert_conserved(events)
