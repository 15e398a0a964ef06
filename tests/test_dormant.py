"""A run past its inactive cutoff counts nothing, so nothing needs to wake for it.

While every session of a tracker is dormant (paused or idle longer than
``inactive_cutoff``), the heartbeat's once-a-second duty (the sign of life)
has nothing to record: it runs only with the ticks, and the ticks write
nothing. Input that wakes a run (``touch()``, ``resume()``) hurries the
heartbeat, so the sign of life resumes at once and a ``kill -9`` still loses
at most about a second. Each link of that chain is checked here on its own,
deterministically: the accounting says when input woke a run, the session
passes it on, the tracker's duty says whether it is needed, and the heartbeat
follows what the duty says.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import timeback_tracker as tt
from tests.support import ACTIVITY, SENSOR, USER, closed_port_url, eventually, sign_of_life_file
from timeback_tracker._accounting import RunAccounting
from timeback_tracker._clock import SystemClock
from timeback_tracker._heartbeat import Heartbeat
from timeback_tracker.testing import FakeClock

WALL = 1_769_508_000_000


def test_the_accounting_says_when_input_wakes_a_dormant_run() -> None:
    run = RunAccounting(now_ms=0, wall_ms=WALL, idle_timeout_ms=1_000, inactive_cutoff_ms=1_000)
    assert run.touch(500) is False  # counting: the hot path
    run.close_window(5_000, WALL + 5_000)  # idle at 1.5 s, past the cutoff at 2.5 s
    assert run.dormant
    assert run.touch(6_000) is True
    assert not run.dormant
    assert run.touch(6_100) is False

    run.pause(7_000)
    assert run.resume(7_500) is False  # paused, not yet past the cutoff
    run.pause(8_000)
    run.close_window(10_000, WALL + 10_000)  # paused since 8 s: dormant at 9 s
    assert run.dormant
    assert run.touch(10_100) is False  # input while paused wakes nothing
    assert run.resume(10_200) is True

    run.set_locked(11_000, True)
    run.close_window(13_000, WALL + 13_000)
    assert run.dormant
    assert run.resume(13_100) is False  # still locked: the unlock wakes it (OS presence)


def spooled(tmp_path: Path, clock: FakeClock) -> tt.Tracker:
    """A spooled tracker on a fake clock whose heartbeat the test drives by hand."""
    config = tt.TrackerConfig(
        sensor=SENSOR,
        endpoint=closed_port_url(),
        spool_path=tmp_path / "spool.sqlite3",
        idle_timeout=1,
        inactive_cutoff=1,
    )
    tracker = tt.Tracker(config, clock=clock)
    tracker._heartbeat.stop()  # the test ticks instead
    return tracker


def owner_file(tmp_path: Path) -> bytes:
    """The tracker's sign of life, as written."""
    [lock] = tmp_path.glob("spool.sqlite3.owner-*.lock")
    return sign_of_life_file(lock).read_bytes()


def test_the_duty_rests_while_every_run_is_dormant_and_input_hurries_it(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    tracker = spooled(tmp_path, clock)
    try:
        session = tracker.start_session(USER, ACTIVITY)
        tracker._heartbeat._hurried = False  # what start_session() asked is not the point
        clock.advance(1)
        assert tracker._every_second() is True  # counting: a sign of life every second
        clock.advance(4)
        tracker._tick(clock.monotonic_ms())  # past idle (1 s) and cutoff (1 s): dormant
        recorded = owner_file(tmp_path)
        for _ in range(3):
            clock.advance(1)
            assert tracker._every_second() is False
            tracker._tick(clock.monotonic_ms())
        assert owner_file(tmp_path) == recorded  # nothing written while nothing counts
        assert not tracker._heartbeat._hurried

        session.touch()  # the student is back

        assert tracker._heartbeat._hurried  # the heartbeat runs the duty at once
        assert tracker._every_second() is True
        assert owner_file(tmp_path) != recorded
    finally:
        tracker.close(timeout=0.5)


def test_a_tick_of_a_run_that_stays_dormant_writes_nothing(tmp_path: Path) -> None:
    clock = FakeClock()
    tracker = spooled(tmp_path, clock)
    try:
        tracker.start_session(USER, ACTIVITY)
        clock.advance(5)
        tracker._tick(clock.monotonic_ms())  # the tick that finds it dormant writes it so
        wal = tmp_path / "spool.sqlite3-wal"
        size = wal.stat().st_size
        data = wal.read_bytes()
        for _ in range(4):
            clock.advance(15)
            tracker._tick(clock.monotonic_ms())
        assert (wal.stat().st_size, wal.read_bytes()) == (size, data)
    finally:
        tracker.close(timeout=0.5)


@pytest.mark.slow(6)
def test_the_heartbeat_runs_a_resting_duty_with_the_ticks_until_hurried() -> None:
    calls: list[str] = []
    wanted = threading.Event()
    wanted.set()

    def duty() -> bool:
        calls.append("duty")
        return wanted.is_set()

    heartbeat = Heartbeat(
        1000,
        SystemClock(),
        lambda _scheduled: calls.append("tick"),
        lambda exc: calls.append(repr(exc)),
        every_second=duty,
        second_ms=50,
    )
    heartbeat.start()
    try:
        assert eventually(lambda: calls.count("tick") >= 2)
        assert between_ticks(calls)[-1] >= 5  # wanted: every 50 ms
        wanted.clear()
        resting_from = calls.count("tick") + 1
        assert eventually(lambda: calls.count("tick") >= resting_from + 2)
        # Resting: one call just before each tick (which says it is still not wanted).
        assert between_ticks(calls)[-2:] == [1, 1], calls
        assert eventually(lambda: calls[-1] == "tick")  # just ticked: the next is a second away
        mark = len(calls)
        wanted.set()
        heartbeat.hurry()
        assert eventually(lambda: len(calls) >= mark + 3)
        assert calls[mark : mark + 3] == ["duty"] * 3  # at once, and every 50 ms again
    finally:
        heartbeat.stop()


def between_ticks(calls: list[str]) -> list[int]:
    """The number of duty calls between consecutive ticks."""
    counts, current = [], 0
    for call in calls:
        if call == "tick":
            counts.append(current)
            current = 0
        elif call == "duty":
            current += 1
    return counts[1:]


def test_resume_after_the_cutoff_hurries_the_heartbeat(tmp_path: Path) -> None:
    clock = FakeClock()
    tracker = spooled(tmp_path, clock)
    try:
        session = tracker.start_session(USER, ACTIVITY)
        session.pause()
        tracker._heartbeat._hurried = False
        clock.advance(3)
        tracker._tick(clock.monotonic_ms())  # paused beyond the cutoff
        session.resume()
        assert tracker._heartbeat._hurried
    finally:
        tracker.close(timeout=0.5)
