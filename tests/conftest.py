"""Shared fixtures: a valid student, activity context, run id and window times."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import timeback_tracker as tt

EMAIL = "student.fixture@example.com"
"""The email of the ``user`` fixture, for tests that check it never leaks."""

RUN_ID = "f47ac10b-58cc-4372-a567-0e02b2c3d479"
START = datetime(2026, 1, 27, 10, 0, 0, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def private_data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test (and the processes it starts) gets its own default spool directory.

    Trackers spool to the per-user data directory by default; sharing it would
    let one test's undelivered events reach the next test's collector.
    """
    home = tmp_path / "data-home"
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    monkeypatch.setenv("LOCALAPPDATA", str(home))
    return home


@pytest.fixture
def user() -> tt.TimebackUser:
    """A valid student."""
    return tt.TimebackUser(
        id="https://sis.example.com/ims/oneroster/rostering/v1p2/users/student-123",
        email=EMAIL,
        name="Fixture Student",
        role=tt.Role.STUDENT,
    )


@pytest.fixture
def activity() -> tt.TimebackActivityContext:
    """A valid activity context (Math, with an app)."""
    return tt.TimebackActivityContext(
        id="https://myapp.example.com/activities/Math/g3/lesson-1",
        subject=tt.Subject.MATH,
        app=tt.App(name="My App", id="https://myapp.example.com"),
    )


@pytest.fixture
def run_id() -> str:
    """A fixed run id (a UUID string, as on the wire)."""
    return RUN_ID


@pytest.fixture
def start() -> datetime:
    """An aware UTC datetime: the start of a window."""
    return START


@pytest.fixture
def end(start: datetime) -> datetime:
    """An aware UTC datetime 15 s after ``start``: the end of a window."""
    return start + timedelta(seconds=15)


@pytest.fixture
def time_spent_event(
    user: tt.TimebackUser,
    activity: tt.TimebackActivityContext,
    run_id: str,
    start: datetime,
    end: datetime,
) -> tt.TimeSpentEvent:
    """A valid 15 s window: 12.5 s active, 2.5 s inactive."""
    return tt.TimeSpentEvent.for_window(
        user=user,
        activity=activity,
        run_id=run_id,
        start=start,
        end=end,
        active_seconds=12.5,
        inactive_seconds=2.5,
        course_id="MATH-3",
    )


@pytest.fixture
def activity_completed_event(
    user: tt.TimebackUser, activity: tt.TimebackActivityContext, run_id: str, end: datetime
) -> tt.ActivityCompletedEvent:
    """A valid completion with every metric and a course percentage."""
    return tt.ActivityCompletedEvent.for_completion(
        user=user,
        activity=activity,
        run_id=run_id,
        event_time=end,
        xp_earned=1,
        total_questions=10,
        correct_questions=8,
        mastered_units=1,
        pct_complete=67,
        course_id="MATH-3",
    )
