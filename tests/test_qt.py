"""The Qt integration against real PySide6: bind_session, end_on_close, the Qt quiz demo.

In-process tests run on Qt's ``offscreen`` platform: real widgets, real
events through the application's event filters, real minimise and close.
Losing the focus to another application cannot happen offscreen, so that is
tested in a subprocess on the ``xcb`` platform under Xvfb, where another X
client takes the focus for real (skipped when Qt's xcb plugin cannot load).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

QtWidgets = pytest.importorskip(
    "PySide6.QtWidgets", reason="PySide6 not installed (make test installs the gui extra)"
)
from PySide6 import QtCore, QtGui, QtTest  # noqa: E402

import timeback_tracker as tt  # noqa: E402
from tests.support import (  # noqa: E402
    ACTIVITY,
    SENSOR,
    USER,
    assert_conserved,
    assert_contiguous,
    closed_port_url,
    eventually,
    item,
    spy,
)
from tests.support import windows as run_windows  # noqa: E402
from timeback_tracker import _presence  # noqa: E402
from timeback_tracker.integrations.qt import QtBinding, bind_session, end_on_close  # noqa: E402
from timeback_tracker.testing import FakeClock, LocalCollector  # noqa: E402

DEMO = Path(__file__).resolve().parent.parent / "demo" / "qt_quiz.py"


@pytest.fixture(scope="module")
def qapp() -> Any:
    """The one QApplication of this process, on the offscreen platform."""
    app = QtWidgets.QApplication.instance()
    if app is None:
        app = QtWidgets.QApplication(["tests", "-platform", "offscreen"])
    return app


@pytest.fixture
def errors(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[BaseException]]:
    """Exceptions that reached Qt (PySide reports them through sys.excepthook); must stay none."""
    seen: list[BaseException] = []
    monkeypatch.setattr(sys, "excepthook", lambda _type, value, _tb: seen.append(value))
    yield seen
    assert seen == []


@pytest.fixture
def window(qapp: Any, errors: list[BaseException]) -> Iterator[Any]:
    """A shown, active top-level widget with a line edit that has the focus."""
    widget = QtWidgets.QWidget()
    widget.resize(300, 200)
    widget.edit = QtWidgets.QLineEdit(widget)
    widget.show()
    widget.activateWindow()
    widget.edit.setFocus()
    pump(qapp)
    yield widget
    with contextlib.suppress(RuntimeError):  # some tests delete it
        widget.close()
        widget.deleteLater()
    pump(qapp)


@pytest.fixture
def session(collector: LocalCollector, clock: FakeClock) -> Iterator[tt.Session]:
    """A running session on a fake clock; idle after 1 s without input, no heartbeat."""
    config = tt.TrackerConfig(
        sensor=SENSOR, endpoint=collector.url, heartbeat_interval=3600, idle_timeout=1
    )
    with tt.Tracker(config, clock=clock) as tracker:
        yield tracker.start_session(USER, ACTIVITY)


def pump(app: Any, seconds: float = 0.0) -> None:
    """Run Qt's event loop for a moment (posted events and zero timers included)."""
    deadline = time.monotonic() + seconds
    while True:
        app.processEvents()
        QtCore.QCoreApplication.sendPostedEvents()
        app.processEvents()
        if time.monotonic() >= deadline:
            return
        time.sleep(0.01)  # pump()'s pace: real time between event loop runs


def pump_until(app: Any, condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Run Qt's event loop until ``condition()`` holds; False on timeout."""

    def pumped() -> bool:
        pump(app)
        return condition()

    return eventually(pumped, timeout)


# -- input ------------------------------------------------------------------------------


def test_a_key_press_touches_an_idle_session(
    qapp: Any, window: Any, session: tt.Session, clock: FakeClock
) -> None:
    """A key press in any widget counts as input; the widget still gets it."""
    bind_session(window, session)
    clock.advance(5)
    assert session.state == "idle"
    QtTest.QTest.keyClick(window.edit, "a")
    assert session.state == "running"
    assert window.edit.text() == "a"


def test_mouse_moves_are_throttled_and_clicks_touch(
    qapp: Any, window: Any, session: tt.Session
) -> None:
    """200 mouse moves cost one touch() per 100 ms; a later click touches again."""
    calls = spy(session)
    bind_session(window, session)
    for n in range(200):
        QtTest.QTest.mouseMove(window, QtCore.QPoint(n % 50 + 5, n % 40 + 5))
    assert calls == ["touch"]
    time.sleep(0.12)  # past the 0.1 s touch gap (real time): next input not throttled
    QtTest.QTest.mouseClick(window.edit, QtCore.Qt.MouseButton.LeftButton)
    assert calls == ["touch", "touch"]


# -- visibility and focus ------------------------------------------------------------------


def test_minimising_pauses_and_restoring_resumes(
    qapp: Any, window: Any, session: tt.Session
) -> None:
    """showMinimized() pauses, showNormal() resumes; hide()/show() too."""
    binding = bind_session(window, session)
    window.showMinimized()
    assert pump_until(qapp, lambda: session.state == "paused")
    assert binding.paused_by_binding
    window.showNormal()
    assert pump_until(qapp, lambda: session.state == "running")
    window.hide()
    assert pump_until(qapp, lambda: session.state == "paused")
    window.show()
    assert pump_until(qapp, lambda: session.state == "running")
    assert not binding.paused_by_binding


def test_a_qwindow_works_too(qapp: Any, session: tt.Session, errors: list[BaseException]) -> None:
    """A QWindow (as a QML app has) pauses when minimised, resumes when shown."""
    qwindow = QtGui.QWindow()
    qwindow.show()
    pump(qapp)
    try:
        bind_session(qwindow, session)
        qwindow.showMinimized()
        assert pump_until(qapp, lambda: session.state == "paused")
        qwindow.showNormal()
        assert pump_until(qapp, lambda: session.state == "running")
    finally:
        qwindow.destroy()


def test_focus_moving_between_the_apps_windows_does_not_pause(
    qapp: Any, window: Any, session: tt.Session
) -> None:
    """Another window of the same app taking the focus is not the student leaving."""
    bind_session(window, session)
    dialog = QtWidgets.QDialog(window)
    dialog.show()
    dialog.activateWindow()
    pump(qapp, 0.2)
    window.activateWindow()
    pump(qapp, 0.2)
    assert session.state == "running"
    dialog.close()


def test_a_pause_of_the_app_is_left_alone(qapp: Any, window: Any, session: tt.Session) -> None:
    """The binding never resumes a session the app paused itself."""
    binding = bind_session(window, session)
    session.pause()
    window.showMinimized()
    pump(qapp, 0.1)
    window.showNormal()
    pump(qapp, 0.1)
    assert session.state == "paused"
    assert not binding.paused_by_binding


def test_an_idle_timeout_is_applied_when_the_config_has_none(
    qapp: Any, window: Any, collector: LocalCollector, clock: FakeClock
) -> None:
    """60 s without input makes the session idle by default; the config's timeout wins."""
    config = tt.TrackerConfig(sensor=SENSOR, endpoint=collector.url, heartbeat_interval=3600)
    with tt.Tracker(config, clock=clock) as tracker:
        session = tracker.start_session(USER, ACTIVITY)
        bind_session(window, session)
        clock.advance(60.001)
        assert session.state == "idle"


def test_events_after_the_end_are_ignored(qapp: Any, window: Any, session: tt.Session) -> None:
    """After complete(), input, minimising and restoring never call the session again."""
    binding = bind_session(window, session)
    calls = spy(session)
    session.complete(0, total_questions=1, correct_questions=1)
    QtTest.QTest.keyClick(window.edit, "a")
    assert pump_until(qapp, lambda: binding.closed)  # it removed itself
    assert calls == ["touch"]  # the one that found the session over
    time.sleep(0.12)  # past the 0.1 s touch gap (real time): next input not throttled
    QtTest.QTest.keyClick(window.edit, "b")
    window.showMinimized()
    pump(qapp, 0.1)
    window.showNormal()
    pump(qapp, 0.1)
    assert calls == ["touch"]
    assert session.state == "completed"


def test_errors_in_the_binding_never_reach_qt(
    qapp: Any,
    window: Any,
    session: tt.Session,
    errors: list[BaseException],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A session call that fails is logged; Qt's event loop never sees the exception."""

    def broken() -> None:
        raise RuntimeError("boom")

    session.pause = broken  # type: ignore[method-assign]
    bind_session(window, session)
    window.showMinimized()
    pump(qapp, 0.1)
    window.showNormal()
    pump(qapp, 0.1)
    assert errors == []
    assert any("broken failed" in r.getMessage() for r in caplog.records)


def test_bad_arguments_are_refused(qapp: Any, window: Any, session: tt.Session) -> None:
    """Wrong types and values raise with the parameter's name."""
    with pytest.raises(TypeError, match="window: must be a QWidget or QWindow of PySide6"):
        bind_session(object(), session)
    with pytest.raises(TypeError, match="window: must be a QWidget or QWindow, not QTimer"):
        bind_session(QtCore.QTimer(), session)
    with pytest.raises(TypeError, match="session"):
        bind_session(window, object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="idle_timeout"):
        bind_session(window, session, idle_timeout=float("nan"))
    with pytest.raises(ValueError, match="flush_timeout"):
        end_on_close(window, session, flush_timeout=-1)


def test_binding_repr_close_and_context_manager(
    qapp: Any, window: Any, session: tt.Session
) -> None:
    """repr names the binding and run; close() stops it; with-blocks close it."""
    calls = spy(session)
    with bind_session(window, session) as binding:
        assert isinstance(binding, QtBinding)
        assert binding.session is session
        assert "PySide6" in repr(binding)
        assert session.run_id in repr(binding)
        assert "kid@example.com" not in repr(binding)
    assert binding.closed
    binding.close()  # idempotent
    QtTest.QTest.keyClick(window.edit, "a")
    window.showMinimized()
    pump(qapp, 0.1)
    assert calls == []


def test_the_binding_goes_away_with_the_window(qapp: Any, session: tt.Session) -> None:
    """Deleting the window deletes the filter; the app goes on without errors."""
    widget = QtWidgets.QWidget()
    widget.show()
    binding = bind_session(widget, session)
    widget.deleteLater()
    pump(qapp, 0.05)
    other = QtWidgets.QWidget()
    other.show()
    QtTest.QTest.keyClick(other, "x")
    binding.close()  # after the window: no error
    other.close()


def test_exact_windows_with_minimise_idle_and_a_locked_screen(
    qapp: Any,
    window: Any,
    collector: LocalCollector,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One call; minimised 2-5 s, idle 10-15 s, locked 15-19 s: the window says 8 s / 12 s."""
    lock = FakeLock()
    monkeypatch.setattr(_presence, "candidates", lambda: ([], [lambda: lock]))
    config = tt.TrackerConfig(
        sensor=SENSOR,
        endpoint=collector.url,
        heartbeat_interval=3600,
        idle_timeout=5,
        presence="os",
        spool_path=None,
    )
    with tt.Tracker(config, clock=clock) as tracker:
        session = tracker.start_session(USER, ACTIVITY)
        tracker._heartbeat.stop()  # presence is polled by hand, on the fake clock
        bind_session(window, session)
        clock.advance(2)
        window.showMinimized()
        assert pump_until(qapp, lambda: session.state == "paused")
        clock.advance(3)
        window.showNormal()
        assert pump_until(qapp, lambda: session.state == "running")
        clock.advance(10)
        assert session.state == "idle"
        QtTest.QTest.keyClick(window.edit, "a")
        lock.value = True
        tracker._poll_presence()
        clock.advance(4)
        lock.value = False
        tracker._poll_presence()
        clock.advance(1)
        session.end()
        assert tracker.flush(5)
    [event] = run_windows(collector, session.run_id)
    assert_conserved([event])
    assert (item(event, "active")["value"], item(event, "inactive")["value"]) == (8, 12)


class FakeLock:
    """A screen-lock source whose state the test sets."""

    name = "fake lock"
    value = False

    def read(self) -> bool:
        """The state."""
        return self.value

    def close(self) -> None:
        """Nothing to release."""


# -- closing the window ---------------------------------------------------------------------


def test_closing_ends_the_run_and_closes_the_tracker(
    qapp: Any, window: Any, collector: LocalCollector
) -> None:
    """Closing the window ends the session, delivers it and closes the tracker."""
    config = tt.TrackerConfig(sensor=SENSOR, endpoint=collector.url, heartbeat_interval=3600)
    tracker = tt.Tracker(config)
    session = tracker.start_session(USER, ACTIVITY)
    bind_session(window, session)
    close = end_on_close(window, session, tracker)
    time.sleep(0.05)  # a zero-length final window would not be sent
    window.close()
    assert pump_until(qapp, lambda: session.state == "ended")
    assert len(collector.time_spent_events(session.run_id)) == 1  # delivered already
    with pytest.raises(tt.SessionStateError, match="closed"):
        tracker.start_session(USER, ACTIVITY)
    close()  # again: nothing


def test_closing_with_the_endpoint_unreachable_waits_exit_timeout_once(
    qapp: Any, window: Any
) -> None:
    """Close, then the app's own tracker.close(): exit_timeout in total, not twice."""
    config = tt.TrackerConfig(
        sensor=SENSOR,
        endpoint=closed_port_url(),
        heartbeat_interval=3600,
        spool_path=None,
        exit_timeout=0.5,
    )
    tracker = tt.Tracker(config)
    session = tracker.start_session(USER, ACTIVITY)
    bind_session(window, session)
    end_on_close(window, session, tracker)
    time.sleep(0.05)  # a zero-length final window would not be sent
    started = time.monotonic()
    window.close()
    assert pump_until(qapp, lambda: session.state == "ended")
    tracker.close()  # what the app (or the exit hook) does next
    took = time.monotonic() - started
    assert not window.isVisible()
    assert 0.4 < took < 0.5 + 0.4, took


def test_a_close_the_app_refuses_changes_nothing(qapp: Any, session: tt.Session) -> None:
    """A closeEvent that ignores the close keeps the run going, even through a later hide()."""

    class Careful(QtWidgets.QWidget):
        def closeEvent(self, event: Any) -> None:
            event.ignore()

    widget = Careful()
    widget.show()
    pump(qapp)
    end_on_close(widget, session)
    widget.close()
    pump(qapp, 0.1)
    assert widget.isVisible()
    widget.hide()
    pump(qapp, 0.1)
    assert session.state == "running"
    widget.deleteLater()


def test_quitting_the_app_ends_the_run(qapp: Any, window: Any, session: tt.Session) -> None:
    """If the event loop ends before the window closes (app.quit()), the run ends then."""
    end_on_close(window, session)
    QtCore.QTimer.singleShot(50, qapp.quit)
    qapp.exec()
    assert session.state == "ended"


# -- import cost and the demo ---------------------------------------------------------------


def test_no_qt_binding_is_imported_by_the_module() -> None:
    """Importing the integration imports no Qt binding: the app's own is found from its window."""
    code = (
        "import sys, timeback_tracker.integrations.qt\n"
        "assert not [m for m in sys.modules if m.startswith(('PySide', 'PyQt'))], sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


def run_demo(*args: str, platform: str = "offscreen", **env: str) -> dict[str, Any]:
    """Run demo/qt_quiz.py --auto --print-summary; return its summary line."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TIMEBACK_", "CALIPER_"))}
    done = subprocess.run(
        [sys.executable, str(DEMO), "--auto", "--print-summary", "--interval", "0.5", *args],
        capture_output=True,
        text=True,
        timeout=90,
        env={**clean, "QT_QPA_PLATFORM": platform, **env},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


@pytest.mark.slow(8)
def test_the_demo_delivers_valid_events(collector: LocalCollector) -> None:
    """The Qt quiz plays itself offscreen: windows conserved, one completion, minimised = paused."""
    summary = run_demo("--endpoint", collector.url)
    run_id = summary["run_id"]
    events = run_windows(collector, run_id)
    assert len(events) >= 6
    assert_conserved(events)
    assert_contiguous(events)
    completions = collector.completions(run_id)
    assert len(completions) == 1
    assert collector.events[-1]["id"] == completions[0]["id"]
    active, inactive = collector.totals(run_id)
    assert (active, inactive) == (summary["session"]["active"], summary["session"]["inactive"])
    assert inactive >= 0.5  # minimised for a while
    metrics = {
        i["type"]: i["value"] for i in collector.completions(run_id)[0]["generated"]["items"]
    }
    assert metrics == {"xpEarned": 0, "totalQuestions": 5, "correctQuestions": 4}


def xcb_works(display: str) -> str | None:
    """Why Qt's xcb platform cannot run here, or None."""
    probe = subprocess.run(
        [sys.executable, "-c", "from PySide6.QtWidgets import QApplication; QApplication([])"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "QT_QPA_PLATFORM": "xcb", "DISPLAY": display},
        check=False,
    )
    return None if probe.returncode == 0 else probe.stderr.strip().splitlines()[0]


def test_focus_lost_to_another_application_pauses(display: str) -> None:
    """On X11 (xcb under Xvfb), another X client taking the focus pauses; focus back resumes."""
    reason = xcb_works(display) or (None if shutil.which("xdotool") else "xdotool not installed")
    if reason is not None:
        pytest.skip(f"Qt's xcb platform does not load here: {reason}")
    script = textwrap.dedent(
        """
        import json, subprocess, sys, time
        from PySide6 import QtCore, QtWidgets
        import timeback_tracker as tt
        from timeback_tracker.integrations.qt import bind_session
        from timeback_tracker.testing import LocalCollector

        THIEF = (
            "import tkinter as tk; r = tk.Tk(); r.geometry('100x50+400+10');"
            "r.after(50, r.focus_force); r.mainloop()"
        )
        app = QtWidgets.QApplication([])
        window = QtWidgets.QWidget(); window.resize(200, 100); window.show()
        states = []

        def pump(seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                app.processEvents(); time.sleep(0.01)  # pump's pace

        def pump_until(condition):
            end = time.monotonic() + 5
            while time.monotonic() < end and not condition():
                app.processEvents(); time.sleep(0.01)  # polls (no tests.support in the child)
            return condition()

        with LocalCollector() as collector:
            config = tt.TrackerConfig(sensor="https://k.example.com/s", endpoint=collector.url,
                                      spool_path=None, heartbeat_interval=3600)
            with tt.Tracker(config) as tracker:
                session = tracker.start_session(
                    tt.TimebackUser(id="https://sis.example.com/u/1", email="kid@example.com"),
                    tt.TimebackActivityContext(id="https://app.example.com/a/1", subject="Math",
                                               app=tt.App(name="Qt")))
                binding = bind_session(window, session)
                window.activateWindow()
                states.append(pump_until(lambda: app.focusWindow() is not None))
                states.append(session.state)
                thief = subprocess.Popen([sys.executable, "-c", THIEF])
                states.append(pump_until(lambda: session.state == "paused"))
                states.append(binding.paused_by_binding)
                thief.kill(); thief.wait()
                # The student clicks back into the quiz (no window manager does it here).
                subprocess.run(["xdotool", "windowfocus", str(int(window.winId()))], check=True)
                states.append(pump_until(lambda: session.state == "running"))
                pump(0.1)
                states.append(session.inactive_seconds > 0)
        print(json.dumps(states))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "QT_QPA_PLATFORM": "xcb", "DISPLAY": display},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [
        True,
        "running",
        True,
        True,
        True,
        True,
    ]
