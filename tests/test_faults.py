"""Acceptance: a live session under a scripted sequence of faults loses and doubles nothing."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import timeback_tracker as tt
from tests.support import (
    ACTIVITY,
    SENSOR,
    USER,
    assert_conserved,
    assert_contiguous,
    completion_event_id,
    wait_ok_after,
    windows,
)
from timeback_tracker._events import time_spent_event_id
from timeback_tracker.testing import LocalCollector, RequestRecord

CLIENT_ID = "kiosk"
SECRET = "s3cret"
EVENTS_PATH = "/caliper/event"
OUTAGE_SECONDS = 10.0


@pytest.fixture
def collector() -> Iterator[LocalCollector]:
    """A collector that requires tokens from its own token endpoint."""
    with LocalCollector(clients={CLIENT_ID: SECRET}) as running:
        yield running


def event_requests(collector: LocalCollector, start: int = 0) -> list[RequestRecord]:
    """Requests to the events endpoint, from the ``start``-th request on."""
    return [r for r in collector.requests[start:] if r.path == EVENTS_PATH]


def run_order(collector: LocalCollector, run_id: str) -> list[str]:
    """The run's event ids in order of first arrival."""
    return [e["id"] for e in collector.events if e["extensions"]["runId"] == run_id]


def assert_run_delivered(collector: LocalCollector, session: tt.Session) -> list[dict[str, Any]]:
    """Every window of the run arrived once, in order, contiguous, conserved, summing up."""
    events = windows(collector, session.run_id)
    run = uuid.UUID(session.run_id)
    # Ids are deterministic per window sequence: no window is missing or extra.
    segment = session._template.segment
    assert [e["id"] for e in events] == [
        time_spent_event_id(run, segment, k, k) for k in range(len(events))
    ]
    assert_conserved(events)
    assert_contiguous(events)
    active, inactive = collector.totals(session.run_id)
    assert abs(active - session.active_seconds) < 0.001
    assert abs(inactive - session.inactive_seconds) < 0.001
    # Delivered in order: first arrivals follow the window order.
    assert run_order(collector, session.run_id)[: len(events)] == [e["id"] for e in events]
    return events


@pytest.mark.slow(30)
def test_live_session_survives_scripted_faults(collector: LocalCollector) -> None:
    """503s, a 429, resets, a revoked token, a 10 s outage and a poison event: nothing lost."""
    failures: list[tt.DeliveryFailure] = []
    config = tt.TrackerConfig(
        sensor=SENSOR,
        endpoint=collector.url,
        auth=tt.ClientCredentials(CLIENT_ID, SECRET, collector.token_url),
        heartbeat_interval=0.2,
        on_error=failures.append,
    )
    tracker = tt.Tracker(config)
    try:
        collector.fail_next(503, times=3)
        main = tracker.start_session(USER, ACTIVITY, course_id="MATH-3")
        second = tracker.start_session(USER, ACTIVITY)
        # The second run's completion is the poison: the endpoint always answers 400.
        collector.reject_events(
            lambda e: e["type"] == "ActivityEvent" and e["extensions"]["runId"] == second.run_id
        )

        # 1. Three 503s in a row, then delivery goes through.
        assert wait_ok_after(collector, 0)
        assert collector.pending_faults == 0

        # 2. A 429 with Retry-After: 1.
        start = len(collector.requests)
        collector.fail_next(429, retry_after=1)
        assert wait_ok_after(collector, start)

        # 3. Two dropped connections.
        start = len(collector.requests)
        collector.drop_next(2)
        assert wait_ok_after(collector, start)

        # 4. The token is revoked mid-session.
        start = len(collector.requests)
        collector.revoke_tokens()
        assert wait_ok_after(collector, start)
        assert 401 in [r.status for r in event_requests(collector, start)]

        # 5. A long outage while the sessions keep producing windows.
        collector.go_down()
        down_at = time.monotonic()
        queued_before = tracker.stats().queued
        time.sleep(3.0)  # the outage, while windows keep closing
        main.pause()
        time.sleep(1.5)  # paused during the outage
        main.resume()
        second.complete(2, total_questions=3, correct_questions=2)
        # The rest of the outage: it lasts OUTAGE_SECONDS in all.
        time.sleep(max(0.0, down_at + OUTAGE_SECONDS - time.monotonic()))  # real time
        # About two windows a second for the main run alone.
        assert tracker.stats().queued - queued_before >= OUTAGE_SECONDS
        collector.come_back()

        time.sleep(0.4)  # the main run goes on once the endpoint is back
        main.complete(5, total_questions=10, correct_questions=8, mastered_units=1)
        assert tracker.flush(15.0)
        stats = tracker.stats()
    finally:
        tracker.close(timeout=1.0)

    # Nothing lost, nothing doubled: re-sends only ever carry the same content.
    assert collector.duplicate_conflicts == []
    main_windows = assert_run_delivered(collector, main)
    second_windows = assert_run_delivered(collector, second)
    assert len(main_windows) >= 50
    assert collector.totals(main.run_id)[1] >= 1.4
    assert stats.sent == len(collector.events) == len(main_windows) + len(second_windows) + 1
    assert (stats.queued, stats.dropped, stats.coalesced, stats.internal_errors) == (0, 0, 0, 0)
    assert stats.retried > 0

    # The completion comes last, after the run's last window.
    [completion] = collector.completions(main.run_id)
    assert collector.events[-1]["id"] == completion["id"]
    assert run_order(collector, main.run_id)[-1] == completion["id"]
    assert completion["eventTime"] >= main_windows[-1]["eventTime"]

    # The poison event is the one dead letter, and on_error was told.
    poison_id = completion_event_id(uuid.UUID(second.run_id))
    assert collector.completions(second.run_id) == []
    assert stats.dead_lettered == 1
    [dead] = [f for f in failures if not f.will_retry]
    assert (dead.status, dead.event_ids) == (400, (poison_id,))

    # Every fault was reported as retryable.
    statuses = [f.status for f in failures if f.will_retry]
    assert statuses.count(503) == 3
    assert statuses.count(429) == 1
    assert statuses.count(None) >= 3  # two resets and at least one refused connection
    assert 401 not in statuses  # the revoked token was replaced without bothering the app

    # Retry-After was a floor on the next attempt.
    requests = event_requests(collector)
    [limited] = [k for k, r in enumerate(requests) if r.status == 429]
    assert requests[limited + 1].at - requests[limited].at >= 1.0
    # One token at the start, one after the revocation.
    assert collector.token_requests == 2
