"""Process exit: the atexit hook delivers what is pending, within exit_timeout."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from tests.support import assert_conserved, assert_contiguous, closed_port, windows
from timeback_tracker.testing import LocalCollector

APP = textwrap.dedent(
    """
    import sys, time
    import timeback_tracker as tt

    endpoint, exit_timeout, action = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    tracker = tt.Tracker(tt.TrackerConfig(
        sensor="https://kiosk.example.com/sensors/1",
        endpoint=endpoint,
        heartbeat_interval=0.1,
        exit_timeout=exit_timeout,
        request_timeout=(0.5, 0.5),
    ))
    session = tracker.start_session(
        tt.TimebackUser(id="https://sis.example.com/users/1", email="kid@example.com"),
        tt.TimebackActivityContext(
            id="https://app.example.com/a/1", subject="Math", app=tt.App(name="App")
        ),
    )
    time.sleep(0.35)  # the session runs: windows to deliver at exit
    if action == "complete":
        session.complete(2, total_questions=2, correct_questions=2)
    print(session.run_id, session.active_seconds, flush=True)
    # No close(), no flush(): the exit hook must deliver.
    """
)


def run_app(endpoint: str, exit_timeout: float, action: str) -> tuple[str, float, float]:
    """Run the app in a fresh interpreter; return its run id, the active seconds it counted
    and how long it took to exit."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", APP, endpoint, str(exit_timeout), action],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "Traceback" not in done.stderr, done.stderr
    run_id, active = done.stdout.split()
    return run_id, float(active), time.monotonic() - started


def test_completed_session_is_delivered_at_exit(collector: LocalCollector) -> None:
    """A process that completes a session and simply exits still delivers every event."""
    run_id, counted, _ = run_app(collector.url, 5.0, "complete")
    events = windows(collector, run_id)
    assert events
    assert_conserved(events)
    assert_contiguous(events)
    assert len(collector.completions(run_id)) == 1
    assert collector.events[-1]["type"] == "ActivityEvent"
    active, inactive = collector.totals(run_id)
    # Every window arrived: together they hold all the time the app counted. (Not a
    # count of windows: on a busy machine a late heartbeat makes fewer, longer ones.)
    assert abs(active - counted) < 0.001
    assert 0.3 <= active <= 1.0
    assert inactive == 0


def test_open_session_is_ended_at_exit(collector: LocalCollector) -> None:
    """An open session is ended by the exit hook: its final window arrives, no completion."""
    run_id, _, _ = run_app(collector.url, 5.0, "leave-open")
    assert collector.time_spent_events(run_id)
    assert collector.completions(run_id) == []


def test_exit_is_bounded_when_the_endpoint_is_unreachable() -> None:
    """With nothing listening, the process still exits within about exit_timeout."""
    dead_port = closed_port()
    baseline = time.monotonic()
    subprocess.run([sys.executable, "-c", "import timeback_tracker"], check=True)
    startup = time.monotonic() - baseline
    _, _, elapsed = run_app(f"http://127.0.0.1:{dead_port}/caliper/event", 1.0, "complete")
    # start-up + 0.35 s of session + at most exit_timeout (1 s), with slack for a busy machine
    assert elapsed < startup + 0.35 + 1.0 + 1.5


def test_exit_is_bounded_when_the_endpoint_hangs(collector: LocalCollector) -> None:
    """A server that never answers in time cannot hold the process past exit_timeout."""
    collector.delay_next(10.0, times=100)
    _, _, elapsed = run_app(collector.url, 1.0, "complete")
    assert elapsed < 5.0
