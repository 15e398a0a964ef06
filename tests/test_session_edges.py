"""Session edges: the open window as the app sees it, a lock that is never freed,
an interrupted end(), and the heartbeat thread outliving a bug in its duties."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

import timeback_tracker as tt
from tests.support import ACTIVITY, SENSOR, USER, eventually, item
from timeback_tracker import session as session_module
from timeback_tracker._clock import SystemClock
from timeback_tracker._heartbeat import Heartbeat
from timeback_tracker._outbox import MemoryOutbox
from timeback_tracker.testing import FakeClock, LocalCollector


@pytest.fixture
def tracker(collector: LocalCollector, clock: FakeClock) -> Iterator[tt.Tracker]:
    """A memory-only tracker whose heartbeat never ticks in a test; a one-minute cutoff."""
    config = tt.TrackerConfig(
        sensor=SENSOR,
        endpoint=collector.url,
        heartbeat_interval=3600,
        inactive_cutoff=60,
        spool_path=None,
    )
    made = tt.Tracker(config, clock=clock)
    yield made
    made.close(timeout=1.0)


def test_current_window_follows_the_open_window_and_matches_what_is_sent(
    collector: LocalCollector, tracker: tt.Tracker, clock: FakeClock
) -> None:
    """current_window: None while empty, dormant or finished; else (number, seconds so far),
    paused time included; the numbers and lengths are those of the windows sent."""
    session = tracker.start_session(USER, ACTIVITY)
    assert session.current_window is None  # nothing counted yet
    clock.advance(2.5)
    assert session.current_window == (0, 2.5)
    session.pause()
    clock.advance(1)
    assert session.current_window == (0, 3.5)  # paused time is part of the window
    clock.advance(100)  # past the 60 s cutoff: the window closed there, nothing is open
    assert session.current_window is None
    session.resume()
    assert session.current_window is None  # a fresh window, still empty
    clock.advance(0.5)
    assert session.current_window == (1, 0.5)
    session.end()
    assert session.current_window is None
    assert tracker.flush(5.0)
    sent = collector.time_spent_events(session.run_id)
    spans = [(item(e, "active")["value"], item(e, "inactive")["value"]) for e in sent]
    assert spans == [(2.5, 60), (0.5, 0)]


def test_a_lock_that_is_never_freed_gives_a_clear_error_not_a_hang(
    tracker: tt.Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state change waiting for a held session lock gives up with SessionStateError
    naming the call and the wait; the session works again once the lock is free."""
    monkeypatch.setattr(session_module, "_LOCK_PATIENCE", 0.05)
    session = tracker.start_session(USER, ACTIVITY)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        # As a signal handler interrupting the session's own call would: the
        # lock's owner cannot go on until the waiter gives up.
        with session._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        for name in ("pause", "resume", "end"):
            with pytest.raises(tt.SessionStateError) as caught:
                getattr(session, name)()
            assert str(caught.value).startswith(
                f"{name}(): the session's lock was not free within 0.05 s"
            )
        with pytest.raises(tt.SessionStateError, match=r"^complete\(\): the session's lock"):
            session.complete(1)
    finally:
        release.set()
        holder.join(10)
    assert session.state == "running"
    session.pause()
    assert session.state == "paused"


def test_an_interrupted_end_records_nothing_and_the_session_runs_on(
    collector: LocalCollector,
    tracker: tt.Tracker,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C inside end(): nothing is sent, the time is kept and counts on; end() again
    sends one window holding all of it."""
    session = tracker.start_session(USER, ACTIVITY)
    clock.advance(4)
    original = MemoryOutbox.put_many

    def interrupted(self: MemoryOutbox, *args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(MemoryOutbox, "put_many", interrupted)
    with pytest.raises(KeyboardInterrupt):
        session.end()
    monkeypatch.setattr(MemoryOutbox, "put_many", original)
    assert session.state == "running"
    clock.advance(1)
    assert session.active_seconds == 5
    session.end()
    assert tracker.flush(5.0)
    [event] = collector.time_spent_events(session.run_id)
    assert item(event, "active")["value"] == 5
    assert tracker.stats().sent == 1


def test_the_heartbeat_thread_outlives_a_failing_tick_and_second_duty() -> None:
    """Whatever a tick or the per-second duty raises goes to crashed(); both keep running."""
    calls: list[str] = []
    crashes: list[BaseException] = []

    def tick(_scheduled: int) -> None:
        calls.append("tick")
        if calls.count("tick") == 1:
            raise ValueError("first tick")

    def every_second() -> None:
        calls.append("second")
        if calls.count("second") == 1:
            raise KeyError("first second")

    heartbeat = Heartbeat(
        50, SystemClock(), tick, crashes.append, every_second=every_second, second_ms=20
    )
    heartbeat.start()
    try:
        assert eventually(lambda: calls.count("tick") >= 3 and calls.count("second") >= 2)
    finally:
        heartbeat.stop()
    assert sorted(repr(exc) for exc in crashes) == [
        "KeyError('first second')",
        "ValueError('first tick')",
    ]
    assert "alive=False" in repr(heartbeat)
