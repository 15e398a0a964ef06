"""The pygame integration against real pygame 2 on SDL's dummy video driver, and its demo.

Events go through pygame's own queue (``pygame.event.post`` then
``pygame.event.get``), as a game's loop receives them; the dummy driver has no
window manager to generate focus or minimise events itself, so the test posts
the same events SDL would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
pygame = pytest.importorskip(
    "pygame", reason="pygame not installed (make test installs the gui extra)"
)

import timeback_tracker as tt  # noqa: E402
from tests.support import (  # noqa: E402
    ACTIVITY,
    SENSOR,
    USER,
    assert_conserved,
    assert_contiguous,
    closed_port_url,
    item,
    spy,
)
from tests.support import windows as run_windows  # noqa: E402
from timeback_tracker import _presence  # noqa: E402
from timeback_tracker.integrations.pygame import (  # noqa: E402
    PygameBinding,
    bind_session,
    end_on_close,
)
from timeback_tracker.testing import FakeClock, LocalCollector  # noqa: E402

DEMO = Path(__file__).resolve().parent.parent / "demo" / "pygame_quiz.py"


@pytest.fixture(scope="module")
def display() -> Iterator[Any]:
    """pygame's display on SDL's dummy driver (a display fixture of its own: no X needed)."""
    pygame.display.init()
    surface = pygame.display.set_mode((320, 200))
    pygame.event.clear()
    yield surface
    pygame.display.quit()


@pytest.fixture
def session(collector: LocalCollector, clock: FakeClock) -> Iterator[tt.Session]:
    """A running session on a fake clock; idle after 1 s without input, no heartbeat."""
    config = tt.TrackerConfig(
        sensor=SENSOR, endpoint=collector.url, heartbeat_interval=3600, idle_timeout=1
    )
    with tt.Tracker(config, clock=clock) as tracker:
        yield tracker.start_session(USER, ACTIVITY)


def deliver(binding: PygameBinding, *events: tuple[int, dict[str, Any]]) -> list[int]:
    """Post events to pygame's queue and run the game's loop over them; returns the types seen."""
    for kind, attributes in events:
        pygame.event.post(pygame.event.Event(kind, attributes))
    seen = []
    for event in pygame.event.get():
        binding.handle(event)
        seen.append(event.type)
    return seen


# -- input ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("display")
def test_a_key_press_touches_an_idle_session(session: tt.Session, clock: FakeClock) -> None:
    """KEYDOWN from pygame's queue counts as input."""
    binding = bind_session(session)
    clock.advance(5)
    assert session.state == "idle"
    assert deliver(binding, (pygame.KEYDOWN, {"key": pygame.K_a})) == [pygame.KEYDOWN]
    assert session.state == "running"


@pytest.mark.usefixtures("display")
def test_input_is_throttled_and_stick_drift_is_not_input(session: tt.Session) -> None:
    """200 mouse moves cost one touch(); a stick inside its dead zone never touches."""
    calls = spy(session)
    binding = bind_session(session)
    deliver(
        binding, *[(pygame.MOUSEMOTION, {"pos": (n % 50, 5), "rel": (1, 0)}) for n in range(200)]
    )
    assert calls == ["touch"]
    time.sleep(0.12)  # past the 0.1 s touch gap (real time): next input not throttled
    deliver(binding, *[(pygame.JOYAXISMOTION, {"value": 0.1, "axis": 0})] * 5)
    assert calls == ["touch"]
    deliver(binding, (pygame.JOYAXISMOTION, {"value": -0.8, "axis": 0}))
    time.sleep(0.12)  # past the 0.1 s touch gap (real time): next input not throttled
    deliver(binding, (pygame.CONTROLLERBUTTONDOWN, {"button": 0}))
    assert calls == ["touch", "touch", "touch"]


# -- focus and visibility ----------------------------------------------------------------------


@pytest.mark.usefixtures("display")
def test_focus_loss_and_minimise_pause_until_both_are_back(session: tt.Session) -> None:
    """Focus lost pauses; minimised too; only with focus back and the window restored it runs."""
    binding = bind_session(session)
    deliver(binding, (pygame.WINDOWFOCUSLOST, {}))
    assert session.state == "paused"
    assert binding.paused_by_binding
    deliver(binding, (pygame.WINDOWMINIMIZED, {}), (pygame.WINDOWFOCUSGAINED, {}))
    assert session.state == "paused"  # still minimised
    deliver(binding, (pygame.WINDOWRESTORED, {}))
    assert session.state == "running"
    assert not binding.paused_by_binding


@pytest.mark.usefixtures("display")
def test_focus_is_ignored_when_asked(session: tt.Session) -> None:
    """pause_on_focus_loss=False: focus loss changes nothing, minimising still pauses."""
    binding = bind_session(session, pause_on_focus_loss=False)
    deliver(binding, (pygame.WINDOWFOCUSLOST, {}))
    assert session.state == "running"
    deliver(binding, (pygame.WINDOWHIDDEN, {}))
    assert session.state == "paused"
    deliver(binding, (pygame.WINDOWSHOWN, {}))
    assert session.state == "running"


@pytest.mark.usefixtures("display")
def test_a_pause_of_the_app_is_left_alone(session: tt.Session) -> None:
    """The binding never resumes a session the game paused itself."""
    binding = bind_session(session)
    session.pause()
    deliver(binding, (pygame.WINDOWFOCUSLOST, {}), (pygame.WINDOWFOCUSGAINED, {}))
    assert session.state == "paused"
    assert not binding.paused_by_binding


@pytest.mark.usefixtures("display")
def test_a_locked_screen_and_focus_loss_each_keep_their_pause(
    collector: LocalCollector, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OS lock and the binding's focus pause overlap; the run resumes only when both ended,
    and the window counts exactly: running 0-2 s and 8-12 s, locked or unfocused between."""

    class Locked:
        name = "fake lock"
        value = False

        def read(self) -> bool:
            return self.value

        def close(self) -> None:
            pass

    lock = Locked()
    monkeypatch.setattr(_presence, "candidates", lambda: ([], [lambda: lock]))
    config = tt.TrackerConfig(
        sensor=SENSOR,
        endpoint=collector.url,
        heartbeat_interval=3600,
        presence="os",
        spool_path=None,
    )
    with tt.Tracker(config, clock=clock) as tracker:
        session = tracker.start_session(USER, ACTIVITY)
        tracker._heartbeat.stop()  # the test polls by hand
        binding = bind_session(session)
        clock.advance(2)
        lock.value = True
        tracker._poll_presence()
        assert session.state == "paused"
        clock.advance(3)
        deliver(binding, (pygame.WINDOWFOCUSLOST, {}))
        assert binding.paused_by_binding  # the lock is not the game's pause: the binding's own
        clock.advance(1)
        lock.value = False
        tracker._poll_presence()
        assert session.state == "paused"  # still unfocused
        clock.advance(2)
        deliver(binding, (pygame.WINDOWFOCUSGAINED, {}))
        assert session.state == "running"
        clock.advance(4)
        session.end()
        assert tracker.flush(5)
    [event] = run_windows(collector, session.run_id)
    assert_conserved([event])
    assert (item(event, "active")["value"], item(event, "inactive")["value"]) == (6, 6)


@pytest.mark.usefixtures("display")
def test_exact_windows_with_minimise_focus_and_idle(
    collector: LocalCollector, clock: FakeClock
) -> None:
    """One call; minimised 2-5 s, unfocused 7-8 s, idle 13-15 s (5 s timeout): 9 s / 6 s."""
    config = tt.TrackerConfig(
        sensor=SENSOR, endpoint=collector.url, heartbeat_interval=3600, idle_timeout=5
    )
    with tt.Tracker(config, clock=clock) as tracker:
        session = tracker.start_session(USER, ACTIVITY)
        binding = bind_session(session)
        clock.advance(2)
        deliver(binding, (pygame.WINDOWMINIMIZED, {}))
        clock.advance(3)
        deliver(binding, (pygame.WINDOWRESTORED, {}))
        clock.advance(2)
        deliver(binding, (pygame.WINDOWFOCUSLOST, {}))
        clock.advance(1)
        deliver(binding, (pygame.WINDOWFOCUSGAINED, {}))
        clock.advance(7)  # idle from 13 s
        session.end()
        assert tracker.flush(5)
    [event] = run_windows(collector, session.run_id)
    assert_conserved([event])
    assert (item(event, "active")["value"], item(event, "inactive")["value"]) == (9, 6)


@pytest.mark.usefixtures("display")
def test_an_idle_timeout_is_applied_when_the_config_has_none(
    collector: LocalCollector, clock: FakeClock
) -> None:
    """60 s without input makes the session idle by default; the config's timeout wins."""
    config = tt.TrackerConfig(sensor=SENSOR, endpoint=collector.url, heartbeat_interval=3600)
    with tt.Tracker(config, clock=clock) as tracker:
        session = tracker.start_session(USER, ACTIVITY)
        bind_session(session)
        clock.advance(60)
        assert session.state == "running"
        clock.advance(0.001)
        assert session.state == "idle"


@pytest.mark.usefixtures("display")
def test_events_after_the_end_are_ignored(session: tt.Session) -> None:
    """After complete(), nothing calls the session again; handle() never raises."""
    binding = bind_session(session)
    calls = spy(session)
    session.complete(0, total_questions=1, correct_questions=1)
    deliver(binding, (pygame.KEYDOWN, {"key": pygame.K_a}))
    assert binding.closed
    assert calls == ["touch"]  # the one that found the session over
    time.sleep(0.12)  # past the 0.1 s touch gap (real time): next input not throttled
    deliver(
        binding,
        (pygame.KEYDOWN, {"key": pygame.K_b}),
        (pygame.WINDOWFOCUSLOST, {}),
        (pygame.WINDOWFOCUSGAINED, {}),
    )
    binding.handle(object())  # not even an event: ignored
    binding.handle(pygame.event.Event(pygame.JOYAXISMOTION))  # no value: logged, not raised
    assert calls == ["touch"]
    assert session.state == "completed"


def test_bad_arguments_are_refused(session: tt.Session) -> None:
    """Wrong types and values raise with the parameter's name."""
    with pytest.raises(TypeError, match="session"):
        bind_session(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="idle_timeout"):
        bind_session(session, idle_timeout=0)
    with pytest.raises(TypeError, match="binding"):
        end_on_close(session)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="flush_timeout"):
        end_on_close(bind_session(session), flush_timeout=float("inf"))
    assert "kid@example.com" not in repr(bind_session(session))


# -- quitting ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("display")
def test_quit_ends_the_run_and_closes_the_tracker(collector: LocalCollector) -> None:
    """QUIT through the binding ends the session, delivers it and closes the tracker."""
    config = tt.TrackerConfig(sensor=SENSOR, endpoint=collector.url, heartbeat_interval=3600)
    tracker = tt.Tracker(config)
    session = tracker.start_session(USER, ACTIVITY)
    binding = bind_session(session)
    close = end_on_close(binding, tracker)
    time.sleep(0.05)  # a zero-length final window would not be sent
    deliver(binding, (pygame.QUIT, {}))
    assert session.state == "ended"
    assert len(collector.time_spent_events(session.run_id)) == 1
    with pytest.raises(tt.SessionStateError, match="closed"):
        tracker.start_session(USER, ACTIVITY)
    close()  # again: nothing


@pytest.mark.usefixtures("display")
def test_quitting_with_the_endpoint_unreachable_waits_exit_timeout_once() -> None:
    """QUIT, then the game's own tracker.close(): exit_timeout in total, not twice."""
    config = tt.TrackerConfig(
        sensor=SENSOR,
        endpoint=closed_port_url(),
        heartbeat_interval=3600,
        spool_path=None,
        exit_timeout=0.5,
    )
    tracker = tt.Tracker(config)
    session = tracker.start_session(USER, ACTIVITY)
    binding = bind_session(session)
    end_on_close(binding, tracker)
    time.sleep(0.05)  # a zero-length final window would not be sent
    started = time.monotonic()
    deliver(binding, (pygame.QUIT, {}))
    tracker.close()
    took = time.monotonic() - started
    assert session.state == "ended"
    assert 0.4 < took < 0.5 + 0.4, took


# -- import and the demo --------------------------------------------------------------------


def test_pygame_is_not_imported_by_the_package() -> None:
    """import timeback_tracker leaves pygame alone; the integration module imports it."""
    code = (
        "import sys, timeback_tracker, timeback_tracker.integrations\n"
        "assert 'pygame' not in sys.modules\n"
        "import timeback_tracker.integrations.pygame\n"
        "assert 'pygame' in sys.modules\n"
    )
    env = {**os.environ, "PYGAME_HIDE_SUPPORT_PROMPT": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30, env=env)


@pytest.mark.slow(8)
def test_the_demo_delivers_valid_events(collector: LocalCollector) -> None:
    """The pygame quiz plays itself (dummy driver): conserved windows, paused while unfocused."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TIMEBACK_", "CALIPER_"))}
    done = subprocess.run(
        [
            sys.executable,
            str(DEMO),
            "--auto",
            "--print-summary",
            "--interval",
            "0.5",
            "--endpoint",
            collector.url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        env={**clean, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    run_id = summary["run_id"]
    events = run_windows(collector, run_id)
    assert len(events) >= 6
    assert_conserved(events)
    assert_contiguous(events)
    assert len(collector.completions(run_id)) == 1
    active, inactive = collector.totals(run_id)
    assert (active, inactive) == (summary["session"]["active"], summary["session"]["inactive"])
    assert inactive >= 0.5  # the focus loss paused it
    metrics = {
        i["type"]: i["value"] for i in collector.completions(run_id)[0]["generated"]["items"]
    }
    assert metrics == {"xpEarned": 0, "totalQuestions": 5, "correctQuestions": 4}
