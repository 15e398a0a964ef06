"""The clock seam: the public FakeClock, the system clocks, and how a clock step is told
from time passing."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone

import pytest

import timeback_tracker as tt
from tests.support import ACTIVITY, SENSOR, USER
from timeback_tracker._clock import STEP_THRESHOLD_MS, SystemClock, WallClockWatch, utc_from_ms
from timeback_tracker.testing import FakeClock

JAN_27 = 1_769_508_000_000  # 2026-01-27T10:00:00Z: FakeClock's default wall time


def readings(clock: FakeClock) -> tuple[int, int, int]:
    """(monotonic, wall, elapsed) milliseconds."""
    return clock.monotonic_ms(), clock.wall_ms(), clock.elapsed_ms()


@pytest.mark.parametrize(
    ("move", "expected"),
    [
        # what happens:  how (monotonic, wall, elapsed) move, in milliseconds
        (lambda c: c.advance(1.5), (1_500, 1_500, 1_500)),  # awake: all three
        (lambda c: c.advance(0.0004), (0, 0, 0)),  # below the wire's millisecond
        (lambda c: c.advance(0.0015), (2, 2, 2)),
        (lambda c: c.suspend(3600), (0, 3_600_000, 3_600_000)),  # asleep: no monotonic
        (lambda c: c.set_wall(-7200), (0, -7_200_000, 0)),  # the clock set: wall only
        (lambda c: c.set_wall(40 * 86400), (0, 3_456_000_000, 0)),
    ],
    ids=["advance", "sub-ms", "1.5-ms", "suspend", "set-back", "set-forward"],
)
def test_fake_clock_moves_each_clock_as_the_machine_would(
    move: Callable[[FakeClock], None], expected: tuple[int, int, int]
) -> None:
    """advance() moves every clock, suspend() all but the monotonic one, set_wall() only
    the wall clock; each in whole milliseconds."""
    clock = FakeClock()
    before = readings(clock)
    move(clock)
    after = readings(clock)
    assert tuple(a - b for a, b in zip(after, before, strict=True)) == expected
    assert clock.monotonic_ns() == clock.monotonic_ms() * 1_000_000


def test_fake_clock_starts_where_it_is_told() -> None:
    """By default 2026-01-27T10:00:00Z; both starting points can be given."""
    assert readings(FakeClock()) == (1_000_000, JAN_27, 1_000_000)
    assert readings(FakeClock(wall_ms=5, monotonic_ms=7)) == (7, 5, 7)
    assert utc_from_ms(FakeClock().wall_ms()) == datetime(2026, 1, 27, 10, tzinfo=timezone.utc)


@pytest.mark.parametrize("move", ["advance", "suspend"])
def test_fake_clock_refuses_to_go_back(move: str) -> None:
    """Time passing cannot be negative (set_wall() is how a wall clock goes back)."""
    clock = FakeClock()
    with pytest.raises(ValueError, match=r"^seconds: must be >= 0$"):
        getattr(clock, move)(-1)
    assert readings(clock) == readings(FakeClock())


@pytest.mark.parametrize(
    ("wall_step_ms", "elapsed_ms", "expected"),
    [
        (0, 0, 0),
        (STEP_THRESHOLD_MS, 0, 0),  # NTP's small corrections are not steps
        (-STEP_THRESHOLD_MS, 0, 0),
        (STEP_THRESHOLD_MS + 1, 0, STEP_THRESHOLD_MS + 1),
        (-STEP_THRESHOLD_MS - 1, 0, -STEP_THRESHOLD_MS - 1),
        (-3 * 3_600_000, 0, -3 * 3_600_000),  # a user setting the clock back 3 h
        (40 * 86_400_000, 0, 40 * 86_400_000),  # NTP fixing a dead battery
        (3_600_000, 3_600_000, 0),  # an hour passed (asleep or not): no step
        (3_600_000 + 2_500, 3_600_000, 2_500),  # an hour passed, and the clock was set
    ],
)
def test_a_wall_clock_step_is_told_from_time_passing(
    wall_step_ms: int, elapsed_ms: int, expected: int
) -> None:
    """A step is the wall clock moving against real time (which runs during sleep) by more
    than 2 s either way; time passing, awake or asleep, is never a step."""
    assert STEP_THRESHOLD_MS == 2_000
    clock = FakeClock()
    watch = WallClockWatch(clock)
    clock.suspend(elapsed_ms / 1000)
    clock.set_wall((wall_step_ms - elapsed_ms) / 1000)
    assert watch.step(clock) == expected
    assert watch.step(clock) == 0  # reported once: the watch moves on


def test_small_corrections_add_up_to_a_step() -> None:
    """Corrections of 1.5 s each are ignored one by one, and reported once they add up past
    the threshold, so a clock drifting in small steps is still caught."""
    clock = FakeClock()
    watch = WallClockWatch(clock)
    clock.set_wall(1.5)
    assert watch.step(clock) == 0
    clock.set_wall(1.5)
    assert watch.step(clock) == 3_000


def test_the_system_clocks_move_forward_together() -> None:
    """The real monotonic, wall and elapsed clocks count the same milliseconds (loose
    bounds: a loaded machine may pause the test between two readings), and the wall
    clock is the epoch time."""
    clock = SystemClock()

    def now() -> tuple[int, int, int]:
        return clock.monotonic_ms(), clock.wall_ms(), clock.elapsed_ms()

    assert abs(clock.wall_ms() - time.time() * 1000) < 1_000
    assert abs(clock.monotonic_ns() // 1_000_000 - clock.monotonic_ms()) < 1_000
    start = now()
    time.sleep(0.2)  # real time passes: the clock must see it
    moved = [after - before for before, after in zip(start, now(), strict=True)]
    assert all(200 <= m < 5_000 for m in moved), moved  # milliseconds, not s or ns
    assert max(moved) - min(moved) < 1_000, moved


@pytest.mark.parametrize(
    ("epoch_ms", "expected"),
    [
        (0, "1970-01-01T00:00:00.000000+00:00"),
        (JAN_27, "2026-01-27T10:00:00.000000+00:00"),
        (JAN_27 + 1, "2026-01-27T10:00:00.001000+00:00"),
        (-1, "1969-12-31T23:59:59.999000+00:00"),
        (4_102_444_800_000, "2100-01-01T00:00:00.000000+00:00"),
    ],
)
def test_epoch_milliseconds_become_utc_datetimes(epoch_ms: int, expected: str) -> None:
    """Wall time in ms reads as an aware UTC datetime, exact to the millisecond."""
    assert utc_from_ms(epoch_ms).isoformat(timespec="microseconds") == expected


def test_a_tracker_on_a_fake_clock_counts_only_what_the_clock_says() -> None:
    """The README's promise: with FakeClock, a session counts exactly the time the test
    moves it by, asleep time counts as neither, and a set clock changes no duration."""
    clock = FakeClock()
    config = tt.TrackerConfig(
        sensor=SENSOR, endpoint="http://127.0.0.1:9/caliper/event", spool_path=None
    )
    with tt.Tracker(config, clock=clock) as tracker:
        session = tracker.start_session(USER, ACTIVITY)
        clock.advance(30)
        session.pause()
        clock.advance(10)
        clock.suspend(600)  # the machine sleeps: neither active nor inactive
        clock.set_wall(-3600)  # and its clock is set back an hour
        session.resume()
        clock.advance(5)
        assert (session.active_seconds, session.inactive_seconds) == (35, 10)
        session.end()
        tracker.close(timeout=0)
