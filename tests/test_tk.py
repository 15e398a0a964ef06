"""The Tkinter integration, on a virtual X server: bind_session, end_on_close, the kiosk demo.

Everything that needs a display runs on an ``Xvfb`` started by the
``display`` fixture, and is skipped when Xvfb is not installed. There is no
window manager on it, which shapes some tests: a window only has the
keyboard focus when it takes it (``focus_force``), ``iconify()`` does nothing
(no one acts on the request), so hiding is tested with ``withdraw()``, and
the close button is pressed by running the ``WM_DELETE_WINDOW`` command
that Tk would run on the window manager's message. Focus losses are real:
another X client (a small Tk app in a subprocess) takes the focus.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

tkinter = pytest.importorskip("tkinter")

import timeback_tracker as tt  # noqa: E402 - after the tkinter check
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
    windows,
)
from timeback_tracker._serialization import parse_timestamp  # noqa: E402
from timeback_tracker.integrations.tk import TkBinding, bind_session, end_on_close  # noqa: E402
from timeback_tracker.testing import FakeClock, LocalCollector  # noqa: E402

KIOSK = Path(__file__).resolve().parent.parent / "demo" / "tk_kiosk.py"

# Another X client that takes the keyboard focus and keeps it until killed.
FOCUS_THIEF = textwrap.dedent(
    """
    import tkinter as tk
    r = tk.Tk(); r.geometry("120x60+500+10"); r.title("thief")
    r.after(50, r.focus_force); r.mainloop()
    """
)


@pytest.fixture
def root(display: str) -> Iterator[Any]:
    """A Tk window on the virtual display; fails the test if a callback raised."""
    window = tkinter.Tk()
    window.geometry("300x200+10+10")
    errors: list[BaseException] = []
    window.report_callback_exception = lambda _type, value, _tb: errors.append(value)
    window.update()
    yield window
    with contextlib.suppress(tkinter.TclError):  # some tests destroy it
        window.destroy()
    assert errors == []


@pytest.fixture
def session(collector: LocalCollector, clock: FakeClock) -> Iterator[tt.Session]:
    """A running session on a fake clock; idle after 1 s without input, no heartbeat."""
    config = tt.TrackerConfig(
        sensor=SENSOR, endpoint=collector.url, heartbeat_interval=3600, idle_timeout=1
    )
    with tt.Tracker(config, clock=clock) as tracker:
        yield tracker.start_session(USER, ACTIVITY)


def pump_until(root: Any, condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Run Tk's event loop until ``condition()`` holds; False on timeout."""

    def updated() -> bool:
        root.update()
        return condition()

    return eventually(updated, timeout)


def take_focus(root: Any, widget: Any) -> None:
    """Give ``widget`` the keyboard focus for real (no window manager does it here)."""
    widget.focus_force()
    assert pump_until(root, lambda: root.focus_get() is widget)


def watch(root: Any, sequence: str) -> list[str]:
    """Record ``sequence`` events of the root (bound after bind_session's, so they run after)."""
    seen: list[str] = []
    root.bind(sequence, lambda event: seen.append(str(event.widget)), add="+")
    return seen


@contextlib.contextmanager
def focus_elsewhere() -> Iterator[None]:
    """Another X client holds the keyboard focus inside the block."""
    thief = subprocess.Popen([sys.executable, "-c", FOCUS_THIEF])
    try:
        yield
    finally:
        thief.kill()
        thief.wait()


# -- input ------------------------------------------------------------------------


def test_key_press_touches_an_idle_session(
    root: Any, session: tt.Session, clock: FakeClock
) -> None:
    """A key press in any widget counts as input: an idle session runs again."""
    entry = tkinter.Entry(root)
    entry.pack()
    bind_session(root, session)
    take_focus(root, entry)
    clock.advance(5)
    assert session.state == "idle"
    entry.event_generate("<KeyPress>", keysym="a")
    assert session.state == "running"
    assert entry.get() == "a"  # the Entry's own binding still ran


def test_clicks_touch_and_mouse_moves_are_throttled(root: Any, session: tt.Session) -> None:
    """A storm of mouse moves costs one touch() per 100 ms; a later click touches again."""
    label = tkinter.Label(root, text="x")
    label.pack()
    root.update()  # pointer events only reach mapped windows
    calls = spy(session)
    bind_session(root, session)
    for n in range(200):
        label.event_generate("<Motion>", x=n % 20, y=n % 20)
    assert calls == ["touch"]
    time.sleep(0.12)  # past the 0.1 s touch gap (real time): next input not throttled
    label.event_generate("<Button-1>")
    assert calls == ["touch", "touch"]


def test_app_bindings_stay_and_close_removes_only_ours(root: Any, session: tt.Session) -> None:
    """The app's own bindings keep running, before and after close()."""
    seen: list[str] = []
    root.bind_all("<Button>", lambda _e: seen.append("all"))
    root.bind("<Button>", lambda _e: seen.append("root"))
    calls = spy(session)
    binding = bind_session(root, session)
    root.event_generate("<Button-1>")
    assert (seen, calls) == (["root", "all"], ["touch"])
    commands = [command for *_, command in binding._bound]
    binding.close()
    binding.close()  # idempotent
    time.sleep(0.12)  # past the 0.1 s touch gap (real time): next input not throttled
    root.event_generate("<Button-1>")
    assert (seen, calls) == (["root", "all", "root", "all"], ["touch"])
    assert binding.closed
    scripts = [root.bind_all(s) for s in ("<Key>", "<Button>", "<FocusIn>", "<FocusOut>")]
    scripts += [root.bind(s) for s in ("<Map>", "<Unmap>")]
    assert not any(command in script for command in commands for script in scripts)
    assert all(root.tk.call("info", "commands", command) == "" for command in commands)


# -- focus and visibility ------------------------------------------------------------------


def test_focus_loss_pauses_and_focus_back_resumes(root: Any, session: tt.Session) -> None:
    """Focus going to another app pauses; moving focus inside the app does not."""
    first, second = tkinter.Entry(root), tkinter.Entry(root)
    first.pack()
    second.pack()
    binding = bind_session(root, session)
    take_focus(root, first)
    take_focus(root, second)
    dialog = tkinter.Toplevel(root)
    take_focus(root, dialog)
    assert not pump_until(root, lambda: session.state != "running", timeout=0.2)
    with focus_elsewhere():
        assert pump_until(root, lambda: session.state == "paused")
        assert binding.paused_by_binding
        take_focus(root, first)
        assert pump_until(root, lambda: session.state == "running")
    assert not binding.paused_by_binding


def test_focus_is_ignored_when_asked(root: Any, session: tt.Session) -> None:
    """pause_on_focus_loss=False: the session runs on while another app has the focus."""
    take_focus(root, root)
    bind_session(root, session, pause_on_focus_loss=False)
    with focus_elsewhere():
        assert pump_until(root, lambda: root.focus_get() is None)
        root.update()
        assert session.state == "running"


def test_withdraw_pauses_and_deiconify_resumes(root: Any, session: tt.Session) -> None:
    """Hiding the window (a real Unmap) pauses; showing it again resumes."""
    bind_session(root, session)
    root.withdraw()
    assert pump_until(root, lambda: session.state == "paused")
    root.deiconify()
    assert pump_until(root, lambda: session.state == "running")
    child = tkinter.Frame(root, width=20, height=20)
    child.pack()
    unmapped = watch(root, "<Unmap>")
    root.update()
    child.pack_forget()  # a child's Unmap reaches the root's bindings too: ignored
    assert pump_until(root, lambda: str(child) in unmapped)
    assert session.state == "running"


def test_a_pause_of_the_app_is_left_alone(root: Any, session: tt.Session) -> None:
    """The binding never resumes a session the app paused itself."""
    binding = bind_session(root, session)
    unmapped, mapped = watch(root, "<Unmap>"), watch(root, "<Map>")
    session.pause()
    root.withdraw()
    assert pump_until(root, lambda: "." in unmapped)
    root.deiconify()
    assert pump_until(root, lambda: "." in mapped)
    assert session.state == "paused"
    assert not binding.paused_by_binding


def test_events_after_the_end_are_ignored(root: Any, session: tt.Session) -> None:
    """After complete(), input, hiding and focus changes never call the session again."""
    entry = tkinter.Entry(root)
    entry.pack()
    binding = bind_session(root, session)
    calls = spy(session)
    session.complete(0, total_questions=1, correct_questions=1)
    take_focus(root, entry)
    entry.event_generate("<KeyPress>", keysym="a")
    assert pump_until(root, lambda: binding.closed)  # it unbinds itself
    assert calls == ["touch"]  # the one that found the session over
    time.sleep(0.12)  # past the 0.1 s touch gap (real time): next input not throttled
    entry.event_generate("<KeyPress>", keysym="b")
    unmapped, mapped = watch(root, "<Unmap>"), watch(root, "<Map>")
    root.withdraw()
    assert pump_until(root, lambda: "." in unmapped)
    root.deiconify()
    assert pump_until(root, lambda: "." in mapped)
    with focus_elsewhere():
        pump_until(root, lambda: root.focus_get() is None, timeout=3.0)
    assert calls == ["touch"]
    assert session.state == "completed"
    # The root fixture fails the test if any SessionStateError reached Tk.


def test_bad_arguments_are_refused(root: Any, session: tt.Session) -> None:
    """Wrong types and unknown event patterns raise, and leave nothing bound."""
    with pytest.raises(TypeError, match="root"):
        bind_session(tkinter.Frame(root), session)
    with pytest.raises(TypeError, match="session"):
        bind_session(root, object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="touch_events"):
        bind_session(root, session, touch_events="<Key>")
    with pytest.raises(ValueError, match="touch_events"):
        bind_session(root, session, touch_events=("<Key>", "<NoSuchEvent>"))
    assert root.bind_all("<Key>") == ""
    with pytest.raises(ValueError, match="flush_timeout"):
        end_on_close(root, session, flush_timeout=-1)
    with pytest.raises(TypeError, match="session"):
        end_on_close(root, "session")  # type: ignore[arg-type]


def test_binding_repr_and_context_manager(root: Any, session: tt.Session) -> None:
    """repr shows the run and counts; leaving the with block unbinds."""
    with bind_session(root, session) as binding:
        assert isinstance(binding, TkBinding)
        assert binding.root is root
        assert binding.session is session
        assert session.run_id in repr(binding)
        assert "kid@example.com" not in repr(binding)
    assert binding.closed
    assert root.bind_all("<Key>") == ""


def test_an_idle_timeout_is_applied_when_the_config_has_none(
    root: Any, collector: LocalCollector, clock: FakeClock
) -> None:
    """Walked-away time is idle by default (60 s); the config's own timeout wins; None opts out."""
    config = tt.TrackerConfig(sensor=SENSOR, endpoint=collector.url, heartbeat_interval=3600)
    with tt.Tracker(config, clock=clock) as tracker:
        defaulted, opted_out = (tracker.start_session(USER, ACTIVITY) for _ in range(2))
        bind_session(root, defaulted)
        bind_session(root, opted_out, idle_timeout=None)
        clock.advance(60)
        assert defaulted.state == "running"
        clock.advance(0.001)
        assert (defaulted.state, opted_out.state) == ("idle", "running")
    configured = tt.TrackerConfig(
        sensor=SENSOR, endpoint=collector.url, heartbeat_interval=3600, idle_timeout=5
    )
    with tt.Tracker(configured, clock=clock) as tracker:
        session = tracker.start_session(USER, ACTIVITY)
        bind_session(root, session, idle_timeout=600)
        clock.advance(5.001)
        assert session.state == "idle"
    with pytest.raises(ValueError, match="idle_timeout: must be None or seconds between 1"):
        bind_session(root, session, idle_timeout=0.5)


# -- closing the window ---------------------------------------------------------------


def press_close_button(root: Any) -> None:
    """Run the WM_DELETE_WINDOW command, as Tk does when the window manager asks."""
    root.tk.call(root.protocol("WM_DELETE_WINDOW"))


def window_exists(root: Any) -> bool:
    """Whether the Tk main window still exists."""
    try:
        return bool(root.winfo_exists())
    except tkinter.TclError:
        return False


def test_closing_the_window_ends_flushes_and_destroys(root: Any, collector: LocalCollector) -> None:
    """The close button ends an open session, delivers its window, then destroys the root."""
    config = tt.TrackerConfig(sensor=SENSOR, endpoint=collector.url, heartbeat_interval=3600)
    with tt.Tracker(config) as tracker:
        session = tracker.start_session(USER, ACTIVITY)
        binding = bind_session(root, session)
        close = end_on_close(root, session, tracker, flush_timeout=5.0)
        time.sleep(0.05)  # a zero-length final window would not be sent
        press_close_button(root)
        assert session.state == "ended"
        assert not window_exists(root)
        assert len(collector.time_spent_events(session.run_id)) == 1  # flushed already
        assert collector.completions(session.run_id) == []
        close()  # a second call does nothing
        binding.close()  # nothing left to unbind: no error either


def test_closing_with_the_endpoint_unreachable_waits_exit_timeout_once(root: Any) -> None:
    """Close button, then the app's own tracker.close(): exit_timeout in total, not twice."""
    config = tt.TrackerConfig(
        sensor=SENSOR,
        endpoint=closed_port_url(),
        heartbeat_interval=3600,
        spool_path=None,
        exit_timeout=0.5,
    )
    tracker = tt.Tracker(config)
    session = tracker.start_session(USER, ACTIVITY)
    bind_session(root, session)
    end_on_close(root, session, tracker)
    time.sleep(0.05)  # a zero-length final window would not be sent
    started = time.monotonic()
    press_close_button(root)
    tracker.close()  # what the app (or the exit hook) does next
    took = time.monotonic() - started
    assert not window_exists(root)
    assert session.state == "ended"
    assert tracker.stats().queued == 1  # undelivered, kept for the next start (if spooled)
    assert 0.4 < took < 0.5 + 0.4, took


def test_closing_after_completion_sends_nothing_more(root: Any, collector: LocalCollector) -> None:
    """A completed session is not ended again: nothing follows the completion."""
    config = tt.TrackerConfig(sensor=SENSOR, endpoint=collector.url, heartbeat_interval=3600)
    with tt.Tracker(config) as tracker:
        session = tracker.start_session(USER, ACTIVITY)
        bind_session(root, session)
        end_on_close(root, session, tracker)
        time.sleep(0.05)  # a zero-length final window would not be sent
        session.complete(0, total_questions=2, correct_questions=1)
        press_close_button(root)
        assert not window_exists(root)
        assert [e["type"] for e in collector.events] == ["TimeSpentEvent", "ActivityEvent"]


# -- import cost ------------------------------------------------------------------------


def test_tkinter_is_not_imported_by_the_package() -> None:
    """import timeback_tracker leaves tkinter alone; the integration module imports it."""
    code = (
        "import sys, timeback_tracker, timeback_tracker.integrations\n"
        "assert 'tkinter' not in sys.modules\n"
        "import timeback_tracker.integrations.tk\n"
        "assert 'tkinter' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


# -- the kiosk demo ---------------------------------------------------------------------


def run_kiosk(*args: str) -> dict[str, Any]:
    """Run demo/tk_kiosk.py --auto --print-summary; return its summary line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIMEBACK_", "CALIPER_"))}
    done = subprocess.run(
        [sys.executable, str(KIOSK), "--auto", "--print-summary", "--interval", "0.5", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


@pytest.mark.slow(8)
def test_kiosk_demo_delivers_valid_events(display: str, collector: LocalCollector) -> None:
    """The kiosk plays itself: windows conserved and contiguous, one completion, last."""
    summary = run_kiosk("--endpoint", collector.url)
    run_id = summary["run_id"]
    events = windows(collector, run_id)
    assert len(events) >= 8  # about 7 s at 0.5 s per window
    assert_conserved(events)
    assert_contiguous(events)
    completions = collector.completions(run_id)
    assert len(completions) == 1
    assert collector.events[-1]["id"] == completions[0]["id"]
    metrics = {i["type"]: i["value"] for i in completions[0]["generated"]["items"]}
    assert metrics == {"xpEarned": 0, "totalQuestions": 5, "correctQuestions": 4}
    assert collector.duplicate_conflicts == []
    active, inactive = collector.totals(run_id)
    assert (active, inactive) == (summary["session"]["active"], summary["session"]["inactive"])
    assert inactive >= 0.5  # the focus loss paused the session
    first, last = item(events[0], "active"), item(events[-1], "active")
    span = parse_timestamp(last["endDate"]) - parse_timestamp(first["startDate"])
    assert round((active + inactive) * 1000) == round(span.total_seconds() * 1000)
    assert completions[0]["eventTime"] >= last["endDate"]


@pytest.mark.slow(8)
def test_kiosk_demo_with_its_own_collector(display: str) -> None:
    """Without --endpoint the kiosk reports what its built-in collector received."""
    summary = run_kiosk()
    received, session = summary["collector"], summary["session"]
    assert (received["active"], received["inactive"]) == (session["active"], session["inactive"])
    assert received["events"] == summary["windows"] + 1
    assert received["duplicates"] == 0
    assert summary["completion"] == {"xp": 0, "total_questions": 5, "correct_questions": 4}
    assert received["inactive"] >= 0.5
