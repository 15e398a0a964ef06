"""Shared values, outbox entries and assertions for the tests."""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import timeback_tracker as tt
from timeback_tracker._outbox import Entry, completion_event_id, time_spent_event_id
from timeback_tracker._serialization import parse_timestamp
from timeback_tracker.testing import LocalCollector

SENSOR = "https://kiosk.example.com/sensors/lab-3"
USER = tt.TimebackUser(id="https://sis.example.com/users/student-123", email="kid@example.com")
ACTIVITY = tt.TimebackActivityContext(
    id="https://myapp.example.com/activities/Math/g3/lesson-1",
    subject=tt.Subject.MATH,
    app=tt.App(name="My App"),
)


def windows(collector: LocalCollector, run_id: str) -> list[dict[str, Any]]:
    """The run's TimeSpentEvents, in window order."""
    return sorted(collector.time_spent_events(run_id), key=lambda e: e["eventTime"])


def item(event: dict[str, Any], kind: str) -> dict[str, Any]:
    """One time metric of a TimeSpentEvent."""
    found: dict[str, Any] = next(i for i in event["generated"]["items"] if i["type"] == kind)
    return found


def assert_conserved(events: list[dict[str, Any]]) -> None:
    """Every window: active + inactive == end - start, to the millisecond."""
    for event in events:
        active, inactive = item(event, "active"), item(event, "inactive")
        start = parse_timestamp(active["startDate"])
        end = parse_timestamp(active["endDate"])
        span_ms = round((end - start).total_seconds() * 1000)
        assert round((active["value"] + inactive["value"]) * 1000) == span_ms
        assert (inactive["startDate"], inactive["endDate"]) == (
            active["startDate"],
            active["endDate"],
        )
        assert event["eventTime"] == active["endDate"]


def assert_contiguous(events: list[dict[str, Any]]) -> None:
    """Window k starts where window k-1 ended."""
    for before, after in itertools.pairwise(events):
        assert item(after, "active")["startDate"] == item(before, "active")["endDate"]


T0 = datetime(2026, 1, 27, 10, 0, tzinfo=timezone.utc)


def window(
    run: uuid.UUID, seq: int, active: float = 10, inactive: float = 5, gap: float = 0
) -> Entry:
    """The entry of window ``seq`` of ``run`` (15 s windows, optionally shifted by ``gap``)."""
    start = T0 + timedelta(seconds=15 * seq + gap)
    event = tt.TimeSpentEvent.for_window(
        user=USER,
        activity=ACTIVITY,
        run_id=run,
        start=start,
        end=start + timedelta(seconds=active + inactive),
        active_seconds=active,
        inactive_seconds=inactive,
        event_id=time_spent_event_id(run, seq),
    )
    return Entry.of(event, seq, seq)


def completion(run: uuid.UUID) -> Entry:
    """The completion entry of ``run``."""
    event = tt.ActivityCompletedEvent.for_completion(
        user=USER,
        activity=ACTIVITY,
        run_id=run,
        event_time=T0 + timedelta(hours=1),
        xp_earned=3,
        event_id=completion_event_id(run),
    )
    return Entry.of(event)


def seconds(entry: Entry) -> float:
    """Active plus inactive seconds of a time entry."""
    generated = tt.load(entry.payload, tt.TimeSpentEvent).generated
    return generated.seconds("active") + generated.seconds("inactive")
