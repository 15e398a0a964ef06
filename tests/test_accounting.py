"""Tests of the pure window accounting (`timeback_tracker._accounting`)."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies import examples
from timeback_tracker._accounting import MAX_VALUE_MS, RunAccounting, Window
from timeback_tracker.exceptions import SessionStateError, TimebackTrackerError
from timeback_tracker.testing import FakeClock

W0 = FakeClock().wall_ms()  # wall time of every run's start below
DAY = MAX_VALUE_MS


def start(
    clock: FakeClock,
    *,
    idle_timeout_ms: int | None = None,
    inactive_cutoff_ms: int | None = None,
    suspend_threshold_ms: int = 5_000,
) -> RunAccounting:
    """A run started now on ``clock``."""
    return RunAccounting(
        now_ms=clock.monotonic_ms(),
        wall_ms=clock.wall_ms(),
        idle_timeout_ms=idle_timeout_ms,
        inactive_cutoff_ms=inactive_cutoff_ms,
        suspend_threshold_ms=suspend_threshold_ms,
    )


def tick(run: RunAccounting, clock: FakeClock, **kwargs: int) -> list[Window]:
    """A heartbeat tick at the clock's current time."""
    return run.close_window(clock.monotonic_ms(), clock.wall_ms(), **kwargs)


def win(seq: int, start_s: float, end_s: float, active_s: float, inactive_s: float) -> Window:
    """A window given in seconds after W0, for readable expectations."""
    return Window(
        seq=seq,
        start_wall_ms=W0 + round(start_s * 1000),
        end_wall_ms=W0 + round(end_s * 1000),
        active_ms=round(active_s * 1000),
        inactive_ms=round(inactive_s * 1000),
    )


# -- rule 1: categories ---------------------------------------------------------------------


def test_running_window_is_all_active() -> None:
    """A window of plain running time is all active, dated from the anchor."""
    clock = FakeClock()
    run = start(clock)
    clock.advance(15)
    assert tick(run, clock) == [win(0, 0, 15, 15, 0)]
    clock.advance(15)
    assert tick(run, clock) == [win(1, 15, 30, 15, 0)]


def test_pause_and_resume_split_one_window() -> None:
    """Paused time inside a window is inactive; the rest is active."""
    clock = FakeClock()
    run = start(clock)
    clock.advance(4)
    run.pause(clock.monotonic_ms())
    clock.advance(6.5)
    run.resume(clock.monotonic_ms())
    clock.advance(4.5)
    assert tick(run, clock) == [win(0, 0, 15, 8.5, 6.5)]


def test_pause_and_resume_are_idempotent() -> None:
    """A second pause() keeps the first pause's start; resume() while running changes nothing."""
    clock = FakeClock()
    run = start(clock)
    run.resume(clock.monotonic_ms())
    clock.advance(2)
    run.pause(clock.monotonic_ms())
    clock.advance(3)
    run.pause(clock.monotonic_ms())
    clock.advance(5)
    assert tick(run, clock) == [win(0, 0, 10, 2, 8)]


def test_pause_spanning_windows_is_inactive_in_each() -> None:
    """A pause across ticks is inactive in every window it covers."""
    clock = FakeClock()
    run = start(clock)
    clock.advance(10)
    run.pause(clock.monotonic_ms())
    clock.advance(5)
    assert tick(run, clock) == [win(0, 0, 15, 10, 5)]
    clock.advance(15)
    assert tick(run, clock) == [win(1, 15, 30, 0, 15)]
    clock.advance(1)
    run.resume(clock.monotonic_ms())
    clock.advance(14)
    assert tick(run, clock) == [win(2, 30, 45, 14, 1)]


def test_idle_timeout_makes_time_inactive_until_touch() -> None:
    """Time after last touch + idle timeout is inactive until the next touch."""
    clock = FakeClock()
    run = start(clock, idle_timeout_ms=5_000)
    clock.advance(3)
    run.touch(clock.monotonic_ms())  # idle from 8 s
    clock.advance(7)
    run.touch(clock.monotonic_ms())  # at 10 s: 2 s idle, active again until 15 s
    clock.advance(5)
    assert tick(run, clock) == [win(0, 0, 15, 13, 2)]
    clock.advance(15)  # idle from 15 s (last touch at 10 s) to 30 s
    assert tick(run, clock) == [win(1, 15, 30, 0, 15)]


def test_idle_gap_is_kept_when_later_touches_overwrite_last_touch() -> None:
    """The idle span found by a touch survives the touches that follow it."""
    clock = FakeClock()
    run = start(clock, idle_timeout_ms=1_000)
    clock.advance(5)  # idle from 1 s to 5 s
    for _ in range(4):
        run.touch(clock.monotonic_ms())
        clock.advance(0.5)
    clock.advance(1)  # last touch at 6.5 s: idle from 7.5 s to 8 s
    assert tick(run, clock) == [win(0, 0, 8, 3.5, 4.5)]


def test_resume_counts_as_input() -> None:
    """resume() restarts the idle timeout."""
    clock = FakeClock()
    run = start(clock, idle_timeout_ms=2_000)
    run.pause(clock.monotonic_ms())
    clock.advance(5)
    run.resume(clock.monotonic_ms())
    clock.advance(3)  # active 5..7, idle 7..8
    assert tick(run, clock) == [win(0, 0, 8, 2, 6)]


def test_touch_while_paused_does_not_resume() -> None:
    """touch() while paused records input only: the time stays inactive."""
    clock = FakeClock()
    run = start(clock, idle_timeout_ms=2_000)
    run.pause(clock.monotonic_ms())
    for _ in range(3):
        clock.advance(3)
        run.touch(clock.monotonic_ms())
    assert run.state(clock.monotonic_ms()) == "paused"
    clock.advance(1)
    assert tick(run, clock) == [win(0, 0, 10, 0, 10)]


def test_no_idle_timeout_means_never_idle() -> None:
    """Without an idle timeout, untouched running time stays active."""
    clock = FakeClock()
    run = start(clock)
    clock.advance(3 * 3600)
    assert run.state(clock.monotonic_ms()) == "running"
    assert tick(run, clock) == [win(0, 0, 3 * 3600, 3 * 3600, 0)]


def test_state_values() -> None:
    """state() reports running, idle, paused (over idle) and ended."""
    clock = FakeClock()
    run = start(clock, idle_timeout_ms=1_000)
    now = clock.monotonic_ms()
    assert run.state(now) == "running"
    assert run.state(now + 1_000) == "running"
    assert run.state(now + 1_001) == "idle"
    run.pause(now + 2_000)
    assert run.state(now + 2_000) == "paused"
    run.resume(now + 3_000)
    assert run.state(now + 3_500) == "running"
    run.end(now + 4_000, W0 + 4_000)
    assert run.state(now + 9_000) == "ended"


# -- rule 3: inactive cutoff ----------------------------------------------------------------


def test_cutoff_while_paused_with_ticks() -> None:
    """A long pause is reported up to the cutoff, then nothing until resume() opens a new window."""
    clock = FakeClock()
    run = start(clock, inactive_cutoff_ms=20_000)
    clock.advance(5)
    run.pause(clock.monotonic_ms())  # dormant at 25 s
    clock.advance(10)
    assert tick(run, clock) == [win(0, 0, 15, 5, 10)]
    clock.advance(15)
    assert tick(run, clock) == [win(1, 15, 25, 0, 10)]
    for _ in range(3):
        clock.advance(15)
        assert tick(run, clock) == []
    assert run.state(clock.monotonic_ms()) == "paused"
    assert run.open_window(clock.monotonic_ms()) is None
    clock.advance(2)  # resume at 77 s: a gap from 25 s
    run.resume(clock.monotonic_ms())
    clock.advance(13)
    assert tick(run, clock) == [win(2, 77, 90, 13, 0)]
    assert run.totals(clock.monotonic_ms()) == (18_000, 20_000)


def test_cutoff_while_paused_without_a_tick() -> None:
    """With no tick between pause and resume, the window ending at the cutoff is still emitted."""
    clock = FakeClock()
    run = start(clock, inactive_cutoff_ms=600_000)
    clock.advance(4)
    run.pause(clock.monotonic_ms())
    clock.advance(600 + 300)
    run.resume(clock.monotonic_ms())
    assert run.next_seq == 0
    clock.advance(6)
    assert tick(run, clock) == [win(0, 0, 604, 4, 600), win(1, 904, 910, 6, 0)]


def test_cutoff_pending_window_is_emitted_by_end() -> None:
    """end() hands out the window that closed at the cutoff."""
    clock = FakeClock()
    run = start(clock, inactive_cutoff_ms=10_000)
    run.pause(clock.monotonic_ms())
    clock.advance(50)
    assert run.end(clock.monotonic_ms(), clock.wall_ms()) == [win(0, 0, 10, 0, 10)]


def test_pause_of_exactly_the_cutoff_is_not_dormant() -> None:
    """Only a pause longer than the cutoff stops the reporting: no gap at exactly the cutoff."""
    clock = FakeClock()
    run = start(clock, inactive_cutoff_ms=10_000)
    run.pause(clock.monotonic_ms())
    clock.advance(10)
    run.resume(clock.monotonic_ms())
    clock.advance(5)
    assert tick(run, clock) == [win(0, 0, 15, 5, 10)]


def test_zero_cutoff_reports_no_paused_time() -> None:
    """A cutoff of zero reports nothing of a pause."""
    clock = FakeClock()
    run = start(clock, inactive_cutoff_ms=0)
    clock.advance(3)
    run.pause(clock.monotonic_ms())
    clock.advance(12)
    assert tick(run, clock) == [win(0, 0, 3, 3, 0)]
    run.resume(clock.monotonic_ms())
    clock.advance(15)
    assert tick(run, clock) == [win(1, 15, 30, 15, 0)]


def test_cutoff_while_idle_then_touch_opens_a_fresh_window() -> None:
    """An idle span past the cutoff goes dormant at idle start + cutoff; touch() wakes the run."""
    clock = FakeClock()
    run = start(clock, idle_timeout_ms=10_000, inactive_cutoff_ms=30_000)
    clock.advance(2)
    run.touch(clock.monotonic_ms())  # idle from 12 s, dormant from 42 s
    clock.advance(13)
    assert tick(run, clock) == [win(0, 0, 15, 12, 3)]
    clock.advance(45)
    assert tick(run, clock) == [win(1, 15, 42, 0, 27)]
    assert run.state(clock.monotonic_ms()) == "idle"
    clock.advance(100)
    assert tick(run, clock) == []
    run.touch(clock.monotonic_ms())  # at 160 s
    assert run.state(clock.monotonic_ms()) == "running"
    clock.advance(5)
    assert tick(run, clock) == [win(2, 160, 165, 5, 0)]


def test_cutoff_while_idle_then_touch_without_a_tick() -> None:
    """touch() long after an idle cutoff yields the cut window and a fresh one."""
    clock = FakeClock()
    run = start(clock, idle_timeout_ms=1_000, inactive_cutoff_ms=5_000)
    clock.advance(60)
    run.touch(clock.monotonic_ms())
    clock.advance(1)
    assert tick(run, clock) == [win(0, 0, 6, 1, 5), win(1, 60, 61, 1, 0)]


def test_idle_then_pause_is_one_inactive_stretch_for_the_cutoff() -> None:
    """Pausing while idle continues the idle span: the cutoff counts from the idle start."""
    clock = FakeClock()
    run = start(clock, idle_timeout_ms=1_000, inactive_cutoff_ms=10_000)
    clock.advance(5)  # idle since 1 s
    run.pause(clock.monotonic_ms())  # dormant at 11 s, not at 15 s
    clock.advance(20)
    assert tick(run, clock) == [win(0, 0, 11, 1, 10)]
    clock.advance(5)
    run.touch(clock.monotonic_ms())  # paused: no wake-up
    assert tick(run, clock) == []
    run.resume(clock.monotonic_ms())  # at 30 s
    clock.advance(1)
    assert tick(run, clock) == [win(1, 30, 31, 1, 0)]


def test_idle_dormant_run_paused_needs_resume() -> None:
    """Once paused, a dormant run is woken by resume() only, not by touch()."""
    clock = FakeClock()
    run = start(clock, idle_timeout_ms=1_000, inactive_cutoff_ms=1_000)
    clock.advance(5)
    run.pause(clock.monotonic_ms())
    run.touch(clock.monotonic_ms())
    assert run.state(clock.monotonic_ms()) == "paused"
    clock.advance(5)
    run.resume(clock.monotonic_ms())
    clock.advance(0.5)
    assert tick(run, clock) == [win(0, 0, 2, 1, 1), win(1, 10, 10.5, 0.5, 0)]


# -- rule 4: suspend ------------------------------------------------------------------------


def test_wall_jump_is_a_suspend_and_reanchors() -> None:
    """Sleep as a wall jump (Linux, macOS): durations untouched, next window at the real time."""
    clock = FakeClock()
    run = start(clock)
    clock.advance(10)
    clock.suspend(3600)
    clock.advance(5)
    assert tick(run, clock) == [win(0, 0, 15, 15, 0)]
    clock.advance(15)
    assert tick(run, clock) == [win(1, 3615, 3630, 15, 0)]
    assert run.totals(clock.monotonic_ms()) == (30_000, 0)


def test_small_wall_jumps_are_ignored_and_large_ones_reanchor_both_ways() -> None:
    """Wall jumps up to the threshold keep the anchor; a larger one either way moves it."""
    clock = FakeClock()
    run = start(clock, suspend_threshold_ms=5_000)
    clock.advance(15)
    clock.suspend(5)  # exactly the threshold: not a suspend
    assert tick(run, clock) == [win(0, 0, 15, 15, 0)]
    mono = clock.monotonic_ms() + 15_000
    # The clock set back 3 hours: closed on the old anchor, then dated by the clock as it is.
    assert run.close_window(mono, W0 - 3 * 3_600_000) == [win(1, 15, 30, 15, 0)]
    back = -3 * 3600
    assert run.close_window(mono + 1_000, W0 - 3 * 3_600_000 + 1_000) == [
        win(2, back, back + 1, 1, 0)
    ]
    # A forward jump past the threshold: closed on the old anchor, then re-anchored.
    assert run.close_window(mono + 2_000, W0 + 40_000) == [win(3, back + 1, back + 2, 1, 0)]
    assert run.close_window(mono + 3_000, W0 + 41_000) == [win(4, 40, 41, 1, 0)]
    assert run.totals(mono + 3_000) == (33_000, 0)  # durations never moved


def test_a_backward_step_mid_run_keeps_durations_exact() -> None:
    """After a -3 h step the next windows are dated 3 h earlier, not 3 h in the future."""
    clock = FakeClock()
    run = start(clock)
    clock.advance(10)
    clock.set_wall(-3 * 3600)
    clock.advance(5)
    assert tick(run, clock) == [win(0, 0, 15, 15, 0)]
    clock.advance(15)
    after = tick(run, clock)
    assert after == [win(1, 15 - 3 * 3600, 30 - 3 * 3600, 15, 0)]
    assert after[0].end_wall_ms == clock.wall_ms()


def test_late_tick_cuts_the_sleep_out() -> None:
    """Sleep as a late tick (Windows): the span since last seen is neither active nor inactive."""
    clock = FakeClock()
    run = start(clock)
    clock.advance(15)
    assert tick(run, clock) == [win(0, 0, 15, 15, 0)]
    clock.advance(4)
    run.touch(clock.monotonic_ms())  # last seen at 19 s
    clock.advance(3600)
    late = tick(run, clock, scheduled_ms=clock.monotonic_ms() - 3600_000 + 11_000)
    assert late == [win(1, 15, 19, 4, 0)]
    clock.advance(15)
    assert tick(run, clock, scheduled_ms=clock.monotonic_ms()) == [win(2, 3619, 3634, 15, 0)]
    assert run.totals(clock.monotonic_ms()) == (34_000, 0)


def test_late_tick_does_not_count_sleep_toward_idle_or_cutoff() -> None:
    """After a late tick, idle timeout and cutoff resume where they stood at the sleep."""
    clock = FakeClock()
    run = start(clock, idle_timeout_ms=10_000, inactive_cutoff_ms=20_000)
    clock.advance(8)
    run.touch(clock.monotonic_ms())  # idle would start at 18 s
    clock.advance(100)
    assert tick(run, clock, scheduled_ms=clock.monotonic_ms() - 100_000) == [win(0, 0, 8, 8, 0)]
    assert run.state(clock.monotonic_ms()) == "running"
    clock.advance(12)  # 10 s active, then 2 s idle
    assert tick(run, clock) == [win(1, 108, 120, 10, 2)]
    run.pause(clock.monotonic_ms())
    clock.advance(1)
    run.touch(clock.monotonic_ms())  # last seen: 121 s
    clock.advance(500)  # asleep; without the shift the pause would be long dormant
    assert tick(run, clock, scheduled_ms=clock.monotonic_ms() - 490_000) == [win(2, 120, 121, 0, 1)]
    clock.advance(5)
    assert tick(run, clock) == [win(3, 621, 626, 0, 5)]


def test_late_tick_with_a_backward_wall_is_dated_by_the_clock_as_it_is() -> None:
    """A late tick whose wall reading went backwards re-anchors there: the clock was set back."""
    clock = FakeClock()
    run = start(clock)
    mono = clock.monotonic_ms()
    assert run.close_window(mono + 5_000, W0 + 5_000) == [win(0, 0, 5, 5, 0)]
    assert run.close_window(mono + 60_000, W0 - 1_000, scheduled_ms=mono + 20_000) == []
    assert run.close_window(mono + 61_000, W0) == [win(1, -1, 0, 1, 0)]


def test_late_tick_while_dormant_stays_dormant() -> None:
    """A late tick during a cutoff neither wakes the run nor emits anything."""
    clock = FakeClock()
    run = start(clock, inactive_cutoff_ms=1_000)
    run.pause(clock.monotonic_ms())
    clock.advance(5)
    assert tick(run, clock) == [win(0, 0, 1, 0, 1)]
    clock.advance(600)
    assert tick(run, clock, scheduled_ms=clock.monotonic_ms() - 600_000) == []
    run.resume(clock.monotonic_ms())
    clock.advance(1)
    assert tick(run, clock) == [win(1, 605, 606, 1, 0)]


# -- rules 2, 5, 6: windows -----------------------------------------------------------------


def test_zero_length_windows_are_not_emitted() -> None:
    """Ticks and end() at the same instant as the last close emit nothing and use no seq."""
    clock = FakeClock()
    run = start(clock)
    assert tick(run, clock) == []
    clock.advance(1)
    assert tick(run, clock) == [win(0, 0, 1, 1, 0)]
    assert tick(run, clock) == []
    assert run.next_seq == 1
    assert run.end(clock.monotonic_ms(), clock.wall_ms()) == []


def test_end_closes_a_short_window() -> None:
    """end() closes the open window at once, however short."""
    clock = FakeClock()
    run = start(clock)
    clock.advance(15)
    tick(run, clock)
    clock.advance(0.001)
    assert run.end(clock.monotonic_ms(), clock.wall_ms()) == [win(1, 15, 15.001, 0.001, 0)]
    assert run.totals(clock.monotonic_ms() + 99_000) == (15_001, 0)


@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("pause", lambda run: run.pause(10)),
        ("resume", lambda run: run.resume(10)),
        ("touch", lambda run: run.touch(10)),
        ("close_window", lambda run: run.close_window(10, W0 + 10)),
        ("end", lambda run: run.end(10, W0 + 10)),
        ("set_locked", lambda run: run.set_locked(10, True)),
        ("input_at", lambda run: run.input_at(8, 10)),
        ("set_idle_timeout", lambda run: run.set_idle_timeout(10, 5)),
    ],
)
def test_calls_after_end_raise(name: str, call: Callable[[RunAccounting], object]) -> None:
    """Every mutating call after end() raises SessionStateError naming the call."""
    run = RunAccounting(now_ms=0, wall_ms=W0, idle_timeout_ms=1_000_000)
    run.end(5, W0 + 5)
    with pytest.raises(SessionStateError, match=rf"^session ended: {name}\(\)") as info:
        call(run)
    assert isinstance(info.value, TimebackTrackerError)
    assert run.state(20) == "ended"
    assert run.totals(20) == (5, 0)


def test_totals_and_open_window_do_not_close_anything() -> None:
    """totals() and open_window() read up to now without closing or consuming the window."""
    clock = FakeClock()
    run = start(clock, idle_timeout_ms=5_000)
    clock.advance(8)
    now = clock.monotonic_ms()
    assert run.totals(now) == (5_000, 3_000)
    assert run.open_window(now) == win(0, 0, 8, 5, 3)
    assert run.open_window(now) == win(0, 0, 8, 5, 3)
    assert run.next_seq == 0
    clock.advance(2)
    assert tick(run, clock) == [win(0, 0, 10, 5, 5)]
    assert run.open_window(clock.monotonic_ms()) is None
    assert run.totals(clock.monotonic_ms()) == (5_000, 5_000)


def test_reading_totals_before_a_late_tick_does_not_count_the_sleep() -> None:
    """A read during an undetected sleep does not stop the late tick from cutting it out."""
    clock = FakeClock()
    run = start(clock)
    clock.advance(5)
    run.touch(clock.monotonic_ms())
    clock.advance(100)
    assert run.totals(clock.monotonic_ms()) == (105_000, 0)
    assert tick(run, clock, scheduled_ms=clock.monotonic_ms() - 90_000) == [win(0, 0, 5, 5, 0)]
    assert run.totals(clock.monotonic_ms()) == (5_000, 0)


def test_open_window_skips_a_window_closed_at_the_cutoff() -> None:
    """open_window() shows the open window only; next_seq shows what close_window() emits first."""
    clock = FakeClock()
    run = start(clock, inactive_cutoff_ms=1_000)
    run.pause(clock.monotonic_ms())
    clock.advance(5)
    run.resume(clock.monotonic_ms())
    clock.advance(2)
    assert run.next_seq == 0
    assert run.open_window(clock.monotonic_ms()) == win(1, 5, 7, 2, 0)
    assert run.totals(clock.monotonic_ms()) == (2_000, 1_000)


def test_a_window_over_a_day_is_split() -> None:
    """No window reports over 86400 s of one category; splits keep conservation and contiguity."""
    clock = FakeClock()
    run = start(clock)
    clock.advance(2 * 86_400 + 1)
    assert tick(run, clock) == [
        win(0, 0, 86_400, 86_400, 0),
        win(1, 86_400, 2 * 86_400, 86_400, 0),
        win(2, 2 * 86_400, 2 * 86_400 + 1, 1, 0),
    ]


def test_a_mixed_window_is_split_only_where_a_value_would_exceed_a_day() -> None:
    """A window of a day active and 1.5 days paused splits when inactive passes a day."""
    clock = FakeClock()
    run = start(clock)
    clock.advance(86_400)
    run.pause(clock.monotonic_ms())
    clock.advance(129_600)
    assert run.open_window(clock.monotonic_ms()) == win(1, 172_800, 216_000, 0, 43_200)
    assert run.end(clock.monotonic_ms(), clock.wall_ms()) == [
        win(0, 0, 172_800, 86_400, 86_400),
        win(1, 172_800, 216_000, 0, 43_200),
    ]


def test_repr_shows_state_not_contents() -> None:
    """repr() shows counts and flags."""
    run = RunAccounting(now_ms=0, wall_ms=W0)
    assert repr(run) == (
        "<RunAccounting paused=False dormant=False ended=False next_seq=0 pending=0>"
    )


# -- OS presence: input reported later, screen lock, idle timeout set later -------------------


def test_os_input_counts_at_the_instant_it_happened() -> None:
    """Input reported 0.4 s late ends the idle span when it happened, not when reported."""
    clock = FakeClock()
    run = start(clock, idle_timeout_ms=2_000)
    clock.advance(5)  # idle from 2 s
    assert run.state(clock.monotonic_ms()) == "idle"
    run.input_at(clock.monotonic_ms() - 400, clock.monotonic_ms())  # input at 4.6 s
    assert run.state(clock.monotonic_ms()) == "running"
    clock.advance(1)
    assert tick(run, clock) == [win(0, 0, 6, 3.4, 2.6)]


def test_os_input_while_running_restarts_the_timeout_from_its_instant() -> None:
    """Input at 1.5 s, reported at 2.5 s, keeps the run active until 1.5 s + timeout."""
    clock = FakeClock()
    run = start(clock, idle_timeout_ms=2_000)
    clock.advance(2.5)
    now = clock.monotonic_ms()
    run.input_at(now - 1_000, now)
    assert run.state(now + 1_000) == "running"
    assert run.state(now + 1_001) == "idle"
    clock.advance(2.5)
    assert tick(run, clock) == [win(0, 0, 5, 3.5, 1.5)]


def test_os_input_older_than_the_last_touch_changes_nothing() -> None:
    """A report of input before the app's last touch() does not shorten the timeout."""
    clock = FakeClock()
    run = start(clock, idle_timeout_ms=2_000)
    clock.advance(3)
    run.touch(clock.monotonic_ms())  # at 3 s (idle since 2 s): running until 5 s
    clock.advance(0.5)
    run.input_at(clock.monotonic_ms() - 2_000, clock.monotonic_ms())  # input at 1.5 s
    assert run.state(clock.monotonic_ms() + 1_500) == "running"
    clock.advance(2.5)
    assert tick(run, clock) == [win(0, 0, 6, 4, 2)]


def test_os_input_before_a_tick_counts_from_the_tick() -> None:
    """Time a tick already sent as idle stays idle: the input counts from the tick on."""
    clock = FakeClock()
    run = start(clock, idle_timeout_ms=1_000)
    clock.advance(4)
    assert tick(run, clock) == [win(0, 0, 4, 1, 3)]
    clock.advance(1)
    run.input_at(clock.monotonic_ms() - 3_000, clock.monotonic_ms())  # at 2 s: before the tick
    clock.advance(0.5)  # active from the tick at 4 s until 5 s, idle to 5.5 s
    assert tick(run, clock) == [win(1, 4, 5.5, 1, 0.5)]


def test_os_input_before_a_pause_or_resume_counts_from_that_call() -> None:
    """A resume after the input (counted already) is where the reported input counts from."""
    clock = FakeClock()
    run = start(clock, idle_timeout_ms=1_000)
    run.pause(clock.monotonic_ms())
    clock.advance(2)
    run.resume(clock.monotonic_ms())  # at 2 s: active until 3 s
    clock.advance(2)
    run.input_at(clock.monotonic_ms() - 3_500, clock.monotonic_ms())  # at 0.5 s: before resume
    clock.advance(1)
    assert tick(run, clock) == [win(0, 0, 5, 1, 4)]


def test_os_input_in_the_future_counts_as_now() -> None:
    """A reading that puts the input after the report (clock skew) counts at the report."""
    clock = FakeClock()
    run = start(clock, idle_timeout_ms=1_000)
    clock.advance(3)
    run.input_at(clock.monotonic_ms() + 5_000, clock.monotonic_ms())
    assert run.state(clock.monotonic_ms() + 1_000) == "running"
    assert run.state(clock.monotonic_ms() + 1_001) == "idle"
    clock.advance(1)
    assert tick(run, clock) == [win(0, 0, 4, 2, 2)]


def test_os_input_while_paused_records_input_only() -> None:
    """Input the OS saw while the app paused the run does not resume it."""
    clock = FakeClock()
    run = start(clock, idle_timeout_ms=1_000)
    run.pause(clock.monotonic_ms())
    clock.advance(3)
    run.input_at(clock.monotonic_ms() - 500, clock.monotonic_ms())
    assert run.state(clock.monotonic_ms()) == "paused"
    clock.advance(1)
    assert tick(run, clock) == [win(0, 0, 4, 0, 4)]


def test_os_input_after_an_idle_cutoff_opens_a_window_at_the_input() -> None:
    """Past the cutoff, reported input opens the fresh window when it happened."""
    clock = FakeClock()
    run = start(clock, idle_timeout_ms=1_000, inactive_cutoff_ms=2_000)
    clock.advance(10)  # idle from 1 s, dormant from 3 s
    assert tick(run, clock) == [win(0, 0, 3, 1, 2)]
    clock.advance(5)
    run.input_at(clock.monotonic_ms() - 800, clock.monotonic_ms())  # at 14.2 s
    clock.advance(0.5)
    assert tick(run, clock) == [win(1, 14.2, 15.5, 1, 0.3)]


def test_os_input_after_an_idle_cutoff_never_starts_before_the_last_tick() -> None:
    """Input reported from before the last tick of a dormant run counts from that tick."""
    clock = FakeClock()
    run = start(clock, idle_timeout_ms=1_000, inactive_cutoff_ms=2_000)
    clock.advance(10)
    assert tick(run, clock) == [win(0, 0, 3, 1, 2)]
    clock.advance(1)
    run.input_at(clock.monotonic_ms() - 4_000, clock.monotonic_ms())  # at 7 s: before the tick
    clock.advance(1)
    assert tick(run, clock) == [win(1, 10, 12, 1, 1)]


def test_lock_pauses_until_unlock_which_counts_as_input() -> None:
    """A locked screen is inactive; unlocking runs again and restarts the idle timeout."""
    clock = FakeClock()
    run = start(clock, idle_timeout_ms=5_000)
    clock.advance(2)
    run.set_locked(clock.monotonic_ms(), True)
    run.set_locked(clock.monotonic_ms(), True)  # idempotent
    assert run.state(clock.monotonic_ms()) == "paused"
    assert (run.locked, run.paused_by_app) == (True, False)
    clock.advance(10)
    run.set_locked(clock.monotonic_ms(), False)  # at 12 s: active until 17 s
    assert run.state(clock.monotonic_ms()) == "running"
    clock.advance(7)
    assert tick(run, clock) == [win(0, 0, 19, 7, 12)]


def test_unlock_leaves_a_run_the_app_paused_paused() -> None:
    """App pause, lock, unlock: still paused until the app resumes."""
    clock = FakeClock()
    run = start(clock)
    clock.advance(1)
    run.pause(clock.monotonic_ms())
    clock.advance(1)
    run.set_locked(clock.monotonic_ms(), True)
    clock.advance(1)
    run.set_locked(clock.monotonic_ms(), False)
    assert run.state(clock.monotonic_ms()) == "paused"
    assert (run.locked, run.paused_by_app) == (False, True)
    clock.advance(1)
    run.resume(clock.monotonic_ms())
    clock.advance(1)
    assert tick(run, clock) == [win(0, 0, 5, 2, 3)]


def test_app_resume_during_a_lock_waits_for_the_unlock() -> None:
    """Lock, app pause, app resume: inactive until the screen unlocks."""
    clock = FakeClock()
    run = start(clock)
    clock.advance(1)
    run.set_locked(clock.monotonic_ms(), True)
    clock.advance(1)
    run.pause(clock.monotonic_ms())
    clock.advance(1)
    run.resume(clock.monotonic_ms())
    assert run.state(clock.monotonic_ms()) == "paused"
    assert (run.locked, run.paused_by_app) == (True, False)
    clock.advance(1)
    run.set_locked(clock.monotonic_ms(), False)
    clock.advance(1)
    assert tick(run, clock) == [win(0, 0, 5, 2, 3)]


def test_lock_after_idle_is_one_stretch_for_the_cutoff() -> None:
    """Idle, then locked: the cutoff counts from the start of the idle span."""
    clock = FakeClock()
    run = start(clock, idle_timeout_ms=1_000, inactive_cutoff_ms=4_000)
    clock.advance(3)  # idle from 1 s
    run.set_locked(clock.monotonic_ms(), True)
    clock.advance(10)  # dormant from 5 s
    assert tick(run, clock) == [win(0, 0, 5, 1, 4)]
    run.set_locked(clock.monotonic_ms(), False)  # at 13 s: a fresh window
    clock.advance(2)
    assert tick(run, clock) == [win(1, 13, 15, 1, 1)]


def test_set_idle_timeout_applies_from_now_only() -> None:
    """A 3 s timeout set at 10 s on a run untouched since 0 s: idle from 10 s, not from 3 s."""
    clock = FakeClock()
    run = start(clock)
    assert run.idle_timeout_ms is None
    clock.advance(10)
    run.set_idle_timeout(clock.monotonic_ms(), 3_000)
    assert run.idle_timeout_ms == 3_000
    clock.advance(2)
    run.touch(clock.monotonic_ms())  # at 12 s: active until 15 s
    clock.advance(5)
    assert tick(run, clock) == [win(0, 0, 17, 13, 4)]


def test_set_idle_timeout_counts_from_the_last_input() -> None:
    """A timeout set 1 s after a touch runs from that touch; None turns idle detection off."""
    clock = FakeClock()
    run = start(clock)
    clock.advance(5)
    run.touch(clock.monotonic_ms())
    clock.advance(1)
    run.set_idle_timeout(clock.monotonic_ms(), 2_000)  # idle from 7 s
    clock.advance(3)
    assert run.state(clock.monotonic_ms()) == "idle"
    run.set_idle_timeout(clock.monotonic_ms(), None)  # at 9 s: never idle again
    assert run.idle_timeout_ms is None
    clock.advance(3)
    assert run.state(clock.monotonic_ms()) == "running"
    assert tick(run, clock) == [win(0, 0, 12, 10, 2)]


# -- properties -----------------------------------------------------------------------------


class Reference:
    """Per-millisecond reference model of the rules, on a timeline with the sleeps cut out."""

    def __init__(self, idle_timeout: int | None, cutoff: int | None) -> None:
        self.idle_timeout = idle_timeout
        self.cutoff = cutoff
        self.t = 0  # next millisecond to classify
        self.app_paused = False
        self.locked = False
        self.last_touch = 0
        self.inactive_since: int | None = None  # first ms of the current inactive stretch
        self.dormant = False
        self.category: dict[int, str] = {}  # reported ms -> "a" or "i"
        self.counts = {"a": 0, "i": 0}

    def run_to(self, t: int) -> None:
        """Classify every millisecond before ``t``."""
        for ms in range(self.t, t):
            idle = self.idle_timeout is not None and ms >= self.last_touch + self.idle_timeout
            if self.dormant:
                continue
            if not (self.paused or idle):
                self.report(ms, "a")
                continue
            if self.inactive_since is None:
                self.inactive_since = ms
            if self.cutoff is not None and ms >= self.inactive_since + self.cutoff:
                self.dormant = True
            else:
                self.report(ms, "i")
        self.t = max(self.t, t)

    def report(self, ms: int, category: str) -> None:
        """Millisecond ``ms`` is reported as ``category``."""
        self.category[ms] = category
        self.counts[category] += 1

    @property
    def paused(self) -> bool:
        """Inactive by rule: paused by the app or locked."""
        return self.app_paused or self.locked

    def input(self, t: int) -> None:
        """Input seen while running: active again, and awake."""
        self.last_touch = t
        self.inactive_since = None
        self.dormant = False

    def pause(self, t: int) -> None:
        """The app paused."""
        self.run_to(t)
        self.app_paused = True

    def resume(self, t: int) -> None:
        """The app resumed: input, and running unless the screen is locked."""
        self.run_to(t)
        self.app_paused = False
        if not self.locked:
            self.input(t)

    def lock(self, t: int) -> None:
        """The screen was locked (a report of a lock already known changes nothing)."""
        if not self.locked:
            self.run_to(t)
            self.locked = True

    def unlock(self, t: int) -> None:
        """The screen was unlocked (if it was): input, and running unless the app paused."""
        if self.locked:
            self.run_to(t)
            self.locked = False
            if not self.app_paused:
                self.input(t)

    def touch(self, t: int) -> None:
        """The app saw input."""
        self.run_to(t)
        if not self.paused:
            self.input(t)

    def state(self, t: int) -> str:
        """What state() should say at ``t``."""
        if self.paused:
            return "paused"
        if self.idle_timeout is not None and t > self.last_touch + self.idle_timeout:
            return "idle"
        return "running"

    def totals(self, t: int) -> tuple[int, int]:
        """Active and inactive ms reported up to ``t``, leaving the model where it is
        (a late tick may still cut the time since the last call out)."""
        probe = copy.copy(self)
        probe.category, probe.counts = {}, dict(self.counts)
        probe.run_to(t)
        return probe.counts["a"], probe.counts["i"]


class Driver:
    """Applies random calls to one run and checks the invariants after each.

    Durations are multiplied by ``scale``; the per-millisecond model runs only at scale 1.
    """

    def __init__(self, scale: int, idle: int | None, cutoff: int | None) -> None:
        self.scale = scale
        self.clock = FakeClock(wall_ms=W0, monotonic_ms=1_000_000)
        self.start_mono = self.clock.monotonic_ms()
        self.run = start(
            self.clock,
            idle_timeout_ms=None if idle is None else idle * scale,
            inactive_cutoff_ms=None if cutoff is None else cutoff * scale,
            suspend_threshold_ms=100 * scale,
        )
        self.cutoff = cutoff
        self.emitted: list[Window] = []
        self.slept = False  # a wall jump or a late tick happened
        self.last_call = self.start_mono  # when the run was last seen alive
        self.cut_out = 0  # ms of sleep cut out by late ticks
        self.model = Reference(idle, cutoff) if scale == 1 else None

    def now(self) -> int:
        """The monotonic time now."""
        return self.clock.monotonic_ms()

    def logical(self) -> int:
        """The model's time now: monotonic time since the start, sleeps cut out."""
        return self.now() - self.start_mono - self.cut_out

    def unemitted(self) -> list[Window]:
        """What a tick now would emit, without ticking."""
        return copy.deepcopy(self.run).close_window(self.now(), self.clock.wall_ms())

    def apply(self, name: str, value: int) -> None:
        """Perform one random step."""
        if name == "advance":
            self.clock.advance(value * self.scale / 1000)
        elif name == "wall_suspend":
            self.clock.suspend(value * self.scale / 1000)
            self.slept = self.slept or value > 0
        elif name in {"pause", "resume", "touch"}:
            getattr(self.run, name)(self.now())
            if self.model is not None:
                getattr(self.model, name)(self.logical())
            self.last_call = self.now()
        elif name in {"lock", "unlock"}:
            changed = self.run.locked != (name == "lock")
            self.run.set_locked(self.now(), name == "lock")
            if self.model is not None:
                getattr(self.model, name)(self.logical())
            if changed:  # a report of the state it is in already is not a sign of life
                self.last_call = self.now()
        elif name == "os_input":  # input `value` ms ago, as a poll reports it
            at = max(self.now() - value * self.scale, self.last_call)
            self.run.input_at(at, self.now())
            if self.model is not None:
                self.model.touch(at - self.start_mono - self.cut_out)
            self.last_call = at
        else:
            late = name == "close_window_late"
            if late:  # asleep for `value` with the monotonic clock running (Windows)
                self.clock.advance(value * self.scale / 1000)
                if self.model is not None:
                    self.model.run_to(self.logical() - (self.now() - self.last_call))
                self.cut_out += self.now() - self.last_call
                self.slept = True
            scheduled = self.now() - value * self.scale
            self.emitted += tick(self.run, self.clock, scheduled_ms=scheduled)
            self.last_call = self.now()
            if self.model is not None:
                self.model.run_to(self.logical())

    def check(self) -> None:
        """Check every invariant of the windows, totals, state and model."""
        windows = self.emitted + self.unemitted()
        for seq, window in enumerate(windows):
            assert window.seq == seq
            assert window.end_wall_ms > window.start_wall_ms
            assert (
                window.active_ms + window.inactive_ms == window.end_wall_ms - window.start_wall_ms
            )
            assert 0 <= window.active_ms <= DAY
            assert 0 <= window.inactive_ms <= DAY
        for previous, window in itertools.pairwise(windows):
            assert window.start_wall_ms >= previous.end_wall_ms
            if window.start_wall_ms != previous.end_wall_ms:
                assert self.cutoff is not None or self.slept
        active, inactive = self.run.totals(self.now())
        assert sum(w.active_ms for w in windows) == active
        assert sum(w.inactive_ms for w in windows) == inactive
        assert active + inactive <= self.now() - self.start_mono
        pending = windows[len(self.emitted) :]
        assert self.run.next_seq == (pending[0].seq if pending else len(self.emitted))
        opened = self.run.open_window(self.now())
        assert opened is None or opened == windows[-1]
        if self.model is not None:
            assert (active, inactive) == self.model.totals(self.logical())
            assert self.run.state(self.now()) == self.model.state(self.logical())

    def end(self) -> None:
        """End the run and check that it is final."""
        final = self.unemitted()
        before = self.run.totals(self.now())
        assert self.run.end(self.now(), self.clock.wall_ms()) == final
        self.emitted += final
        if self.model is not None:
            self.model.run_to(self.logical())
        self.clock.advance(self.scale)
        assert self.run.totals(self.now()) == before
        assert self.run.state(self.now()) == "ended"
        assert self.run.open_window(self.now()) is None
        for call in (self.run.pause, self.run.resume, self.run.touch):
            with pytest.raises(SessionStateError):
                call(self.now())
        with pytest.raises(SessionStateError):
            self.run.set_locked(self.now(), True)
        with pytest.raises(SessionStateError):
            self.run.input_at(self.now(), self.now())
        with pytest.raises(SessionStateError):
            tick(self.run, self.clock)

    def check_windows_against_model(self) -> None:
        """Without sleeps, the windows cover exactly the reported ms, with the model's split."""
        assert self.model is not None
        assert not self.slept
        covered: list[int] = []
        for window in self.emitted:
            span = range(window.start_wall_ms - W0, window.end_wall_ms - W0)
            assert sum(self.model.category.get(ms) == "a" for ms in span) == window.active_ms
            covered.extend(span)
        assert covered == sorted(self.model.category)


def steps(*, sleeps: bool) -> st.SearchStrategy[list[tuple[str, int]]]:
    """Random call sequences; time advances most often."""
    step = st.one_of(
        st.tuples(st.just("advance"), st.integers(0, 400)),
        st.tuples(st.just("advance"), st.integers(0, 50)),
        st.tuples(st.sampled_from(["pause", "resume", "touch", "touch"]), st.just(0)),
        st.tuples(st.sampled_from(["lock", "unlock"]), st.just(0)),
        st.tuples(st.just("os_input"), st.integers(0, 400)),
        st.tuples(st.just("close_window"), st.integers(0, 100)),  # on time or a little late
        *(
            [
                st.tuples(st.just("close_window_late"), st.integers(101, 1_000)),
                st.tuples(st.just("wall_suspend"), st.integers(0, 1_000)),
            ]
            if sleeps
            else []
        ),
    )
    return st.lists(step, min_size=10, max_size=80)


IDLE = st.none() | st.integers(0, 300)
CUTOFF = st.none() | st.integers(0, 600)


@settings(max_examples=examples(300), deadline=None)
@given(idle=IDLE, cutoff=CUTOFF, calls=steps(sleeps=False))
def test_random_runs_match_the_model_window_by_window(
    idle: int | None, cutoff: int | None, calls: list[tuple[str, int]]
) -> None:
    """Without sleeps, every window holds exactly the model's reported milliseconds."""
    driver = Driver(1, idle, cutoff)
    for name, value in calls:
        driver.apply(name, value)
        driver.check()
    driver.end()
    driver.check_windows_against_model()


@settings(max_examples=examples(300), deadline=None)
@given(idle=IDLE, cutoff=CUTOFF, calls=steps(sleeps=True))
def test_random_runs_with_sleeps_keep_the_invariants(
    idle: int | None, cutoff: int | None, calls: list[tuple[str, int]]
) -> None:
    """With sleeps, windows stay well-formed and totals equal the model's with sleeps cut out."""
    driver = Driver(1, idle, cutoff)
    for name, value in calls:
        driver.apply(name, value)
        driver.check()
    driver.end()


@settings(max_examples=examples(150), deadline=None)
@given(idle=IDLE, cutoff=CUTOFF, calls=steps(sleeps=True))
def test_random_runs_over_days_keep_the_invariants(
    idle: int | None, cutoff: int | None, calls: list[tuple[str, int]]
) -> None:
    """With durations a million times longer, windows split at a day and stay well-formed."""
    driver = Driver(1_000_000, idle, cutoff)
    for name, value in calls:
        driver.apply(name, value)
        driver.check()
    driver.end()


def test_a_snapshot_restores_to_the_same_accounting_and_tells_its_seq() -> None:
    """snapshot() -> restore() gives back the same state; snapshot_seq reads next_seq from it."""
    clock = FakeClock()
    run = start(clock, idle_timeout_ms=2_000, inactive_cutoff_ms=3_000)
    for step in range(6):
        clock.advance(4)
        if step == 2:
            run.pause(clock.monotonic_ms())
        if step == 4:
            run.resume(clock.monotonic_ms())
        run.close_window(clock.monotonic_ms(), clock.wall_ms())
    clock.advance(5)
    run.touch(clock.monotonic_ms())
    run.pause(clock.monotonic_ms())
    clock.advance(4)  # past the cutoff, inside the open window: a pending window
    snapshot = run.snapshot()
    copy = RunAccounting.restore(snapshot)
    assert copy.snapshot() == snapshot
    assert RunAccounting.snapshot_seq(snapshot) == run.next_seq
    now, wall = clock.monotonic_ms(), clock.wall_ms()
    assert copy.end(now, wall) == run.end(now, wall)
    assert RunAccounting.snapshot_seq(["garbage"]) == -1
    with pytest.raises(ValueError, match="snapshot"):
        RunAccounting.restore([*snapshot[:-1], "x"])


@settings(max_examples=examples(100), deadline=None)
@given(
    idle=IDLE,
    cutoff=CUTOFF,
    calls=steps(sleeps=True),
    ahead=st.lists(st.integers(0, 1_500), min_size=1, max_size=4),
    scale=st.sampled_from([1, 1_000_000]),
)
def test_the_fast_path_of_accrue_counts_as_the_general_loop(
    idle: int | None,
    cutoff: int | None,
    calls: list[tuple[str, int]],
    ahead: list[int],
    scale: int,
) -> None:
    """_accrue()'s shortcut for one plain stretch leaves exactly the state the loop leaves."""
    driver = Driver(scale, idle, cutoff)
    for name, value in calls:
        driver.apply(name, value)
        run = driver.run
        # Around the edges too: the idle timeout, the cutoff, a day's worth in a value.
        edges = [run._idle_at, run._inactive_since + (cutoff or 0) * scale]
        edges += [
            run._accrued_to + MAX_VALUE_MS - value for value in (run._win_active, run._win_inactive)
        ]
        for to in sorted(
            {driver.now() + step * scale for step in ahead}
            | {
                edge + d
                for edge in edges
                for d in (-1, 0, 1)
                # (no idle timeout puts _idle_at out of reach: not an edge)
                if driver.now() <= edge + d <= driver.now() + 2 * MAX_VALUE_MS
            }
        ):
            fast, general = copy.deepcopy(run), copy.deepcopy(run)
            step = to - driver.now()
            fast._accrue(to)
            general._accrue_stretches(to)
            assert fast.snapshot() == general.snapshot()
            assert fast.close_window(to, driver.clock.wall_ms() + step) == general.close_window(
                to, driver.clock.wall_ms() + step
            )
