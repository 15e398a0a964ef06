"""Shared fixtures: a loopback collector, a fake clock, a valid student, activity context,
run id and window times. A test module that needs another kind (a collector that
requires tokens, one per module) defines its own under the same name."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, settings

import timeback_tracker as tt
from tests.support import eventually
from timeback_tracker._outbox import MemoryOutbox, Outbox
from timeback_tracker._spool import SqliteOutbox
from timeback_tracker.testing import FakeClock, LocalCollector

# `make test` (and CI) run the same examples every time: a failure there is
# the code's, not the draw's. HYPOTHESIS_PROFILE=explore draws new examples,
# ten times as many, for a session spent hunting bugs. Neither profile lets
# time decide a result (no per-example deadline, no "too slow" health check):
# on a shared 2-core machine with 4 workers, a slow moment is not a bug.
TIMELESS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", derandomize=True, print_blob=True, **TIMELESS)
settings.register_profile("explore", derandomize=False, max_examples=1000, **TIMELESS)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

EMAIL = "student.fixture@example.com"
"""The email of the ``user`` fixture, for tests that check it never leaks."""

RUN_ID = "f47ac10b-58cc-4372-a567-0e02b2c3d479"
START = datetime(2026, 1, 27, 10, 0, 0, tzinfo=timezone.utc)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests marked ``slow(seconds)`` first, longest first; the rest in collection order.

    Under pytest-xdist (``make test`` runs ``-n 4 --maxschedchunk 1``) each
    idle worker takes the next test, so the long ones start at once, spread
    over the workers, and the many short ones fill in around them: no worker
    is left with a minute-long test when the others are done. The seconds are
    a scheduling hint (rough, from ``--durations``), never asserted.
    """

    def expected_seconds(item: pytest.Item) -> float:
        marker = item.get_closest_marker("slow")
        return float(marker.args[0]) if marker is not None and marker.args else 0.0

    items.sort(key=expected_seconds, reverse=True)


@pytest.fixture(autouse=True)
def private_data_home(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Each test (and the processes it starts) gets its own default spool directory.

    Trackers spool to the per-user data directory by default; sharing it would
    let one test's undelivered events reach the next test's collector.
    """
    home = tmp_path / "data-home"
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    monkeypatch.setenv("LOCALAPPDATA", str(home))
    # Signs of life go to memory (Linux): the test's own, not /dev/shm, which would keep
    # those of the processes tests kill until the machine restarts.
    # (Beside tmp_path, not in it: tests look at everything in their directory.)
    runtime = tmp_path_factory.mktemp("runtime")
    runtime.chmod(0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    return home


@pytest.fixture
def collector() -> Iterator[LocalCollector]:
    """A collector on loopback (no authentication, emails hidden: the defaults)."""
    with LocalCollector() as running:
        yield running


@pytest.fixture
def failures() -> list[tt.DeliveryFailure]:
    """What on_error received (pass ``failures.append`` as ``on_error``)."""
    return []


@pytest.fixture
def http() -> Iterator[requests.Session]:
    """A requests session (keep-alive), closed after the test."""
    with requests.Session() as session:
        yield session


@pytest.fixture
def clock() -> FakeClock:
    """Time that moves only when told to."""
    return FakeClock()


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


def _read_line(fd: int, timeout: float) -> str:
    """Read from ``fd`` up to a newline or EOF, for ``timeout`` seconds at most; then close it."""
    data = b""
    deadline = time.monotonic() + timeout
    try:
        # Xvfb writes the number and the newline separately, and dies if the
        # newline cannot be written: read both before closing.
        while not data.endswith(b"\n"):
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(fd, 64) if ready else b""
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    return data.decode().strip()


@pytest.fixture(scope="session")
def display() -> Iterator[str]:
    """A private Xvfb server for the session; DISPLAY points at it."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("Xvfb not installed")
    # -displayfd: Xvfb picks a free display number itself and writes it to the
    # pipe once it listens, so parallel runs never race for a number.
    read_end, write_end = os.pipe()
    server = subprocess.Popen(
        [xvfb, "-displayfd", str(write_end), "-nolisten", "tcp", "-screen", "0", "800x600x24"],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    try:
        number = _read_line(read_end, timeout=10.0)
        socket_path = Path(f"/tmp/.X11-unix/X{number}")
        if not (number and eventually(socket_path.exists, timeout=10.0)):
            pytest.fail("Xvfb did not start")
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("DISPLAY", f":{number}")
            yield f":{number}"
    finally:
        server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(params=["memory", "sqlite"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[int], Outbox]]:
    """Outboxes of each kind (closed after the test): both must behave the same."""
    made: list[Outbox] = []

    def make_outbox(max_queue: int) -> Outbox:
        outbox: Outbox
        if request.param == "memory":
            outbox = MemoryOutbox(max_queue)
        else:
            outbox = SqliteOutbox(tmp_path / f"spool-{len(made)}.sqlite3", max_queue)
        made.append(outbox)
        return outbox

    yield make_outbox
    for outbox in made:
        outbox.close()
