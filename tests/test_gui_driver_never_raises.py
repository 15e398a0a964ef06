"""The GUI integrations' shared driver and close handler, without a display: whatever
the app's hooks raise is logged, the rest still happens, and nothing reaches the
toolkit's event loop."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import timeback_tracker as tt
from tests.support import ACTIVITY, SENSOR, USER
from timeback_tracker.integrations._common import SessionDriver, close_handler
from timeback_tracker.testing import FakeClock, LocalCollector


@pytest.fixture
def tracker(collector: LocalCollector, clock: FakeClock) -> Iterator[tt.Tracker]:
    """A memory-only tracker whose heartbeat never ticks in a test."""
    config = tt.TrackerConfig(
        sensor=SENSOR, endpoint=collector.url, heartbeat_interval=3600, spool_path=None
    )
    made = tt.Tracker(config, clock=clock)
    yield made
    made.close(timeout=1.0)


class Hooks:
    """A binding's methods, counting their calls; some raise."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def retire(self) -> None:
        self.calls.append("retire")
        raise RuntimeError("the toolkit object is gone")

    def hide(self) -> None:
        self.calls.append("hide")
        raise RuntimeError("no window to hide")

    def after(self) -> None:
        self.calls.append("after")
        raise RuntimeError("already destroyed")


def test_a_close_whose_hooks_raise_still_ends_closes_and_sends_once(
    collector: LocalCollector,
    tracker: tt.Tracker,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """hide() and after() raising are logged; the session is ended, the tracker closed
    and the window delivered anyway; a second close does nothing."""
    session = tracker.start_session(USER, ACTIVITY)
    clock.advance(3)
    hooks = Hooks()
    close = close_handler(session, tracker, 5.0, hide=hooks.hide, after=hooks.after)
    close()
    close()
    assert hooks.calls == ["hide", "after"]
    assert session.state == "ended"
    assert len(collector.time_spent_events(session.run_id)) == 1  # close() delivered it
    assert "closing the window: hide failed; ignored" in caplog.text
    assert "closing the window: after failed; ignored" in caplog.text


def test_input_on_a_run_ended_elsewhere_retires_the_driver_once(
    tracker: tt.Tracker, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The tracker ended the run (close(), a signal): the next input makes the driver go
    quiet and unhook itself, once; the unhook raising is logged, never raised."""
    session = tracker.start_session(USER, ACTIVITY)
    hooks = Hooks()
    driver = SessionDriver(
        session, pause_on_focus_loss=True, idle_timeout=None, retire=hooks.retire
    )
    session.end()
    driver.input()
    assert (driver.live, hooks.calls) == (False, ["retire"])
    assert "the GUI integration failed to unhook itself; ignored" in caplog.text
    clock.advance(1)
    driver.input()
    driver.focus(False)
    driver.hidden(True)
    driver.over()
    assert hooks.calls == ["retire"]
    assert driver.paused_here is False
    assert "live=False" in repr(driver)
