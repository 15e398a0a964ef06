"""Shared values, outbox entries, assertions and waiting helpers for the tests."""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import timeback_tracker as tt
from timeback_tracker._accounting import RunAccounting
from timeback_tracker._events import RunTemplate, completion_event_id, time_spent_event_id
from timeback_tracker._outbox import Checkpoint, Entry
from timeback_tracker._serialization import parse_timestamp
from timeback_tracker._spool_file import memory_record
from timeback_tracker.testing import FakeClock, LocalCollector

__all__ = [  # completion_event_id is re-exported for the tests
    "completion_event_id",
]

SENSOR = "https://kiosk.example.com/sensors/lab-3"
USER = tt.TimebackUser(id="https://sis.example.com/users/student-123", email="kid@example.com")
ACTIVITY = tt.TimebackActivityContext(
    id="https://myapp.example.com/activities/Math/g3/lesson-1",
    subject=tt.Subject.MATH,
    app=tt.App(name="My App"),
)


def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` seconds pass (False).

    Tests wait on what they expect to happen, not for a fixed time: fast when
    the machine is idle, and patient when it is loaded.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)  # the polling interval
    return True


def bounded(call: Callable[[], Any], limit: float = 15.0) -> Any:
    """``call()`` in a daemon thread: its result (or its exception), or a failed test
    if it has not returned within ``limit`` seconds (a hang fails instead of hanging)."""
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:
            outcome.append((False, exc))

    worker = threading.Thread(target=run, name="test-bounded-call", daemon=True)
    worker.start()
    worker.join(limit)
    assert not worker.is_alive(), f"{call!r} did not return within {limit} s"
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released): connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def closed_port_url(path: str = "/caliper/event") -> str:
    """A loopback URL where nothing listens: every connection is refused at once."""
    return f"http://127.0.0.1:{closed_port()}{path}"


def wait_ok_after(collector: LocalCollector, index: int, timeout: float = 10.0) -> bool:
    """Wait until an events request after the first ``index`` requests was answered 200."""
    return collector.wait_for(
        lambda c: any(r.status == 200 and r.path == "/caliper/event" for r in c.requests[index:]),
        timeout,
    )


def spy(session: tt.Session) -> list[str]:
    """Record the names of the session's touch/pause/resume calls, in order (still made)."""
    calls: list[str] = []
    for name in ("touch", "pause", "resume"):
        method = getattr(session, name)

        def recording(name: str = name, method: Callable[[], None] = method) -> None:
            calls.append(name)
            method()

        setattr(session, name, recording)
    return calls


MakeTracker = Callable[..., tt.Tracker]
"""``make(clock=None, **config overrides) -> Tracker``: what a ``make_tracker`` fixture gives."""


@contextlib.contextmanager
def tracker_factory(close_timeout: float = 1.0, **defaults: Any) -> Iterator[MakeTracker]:
    """Make trackers with :data:`SENSOR` and the config ``defaults`` (each call may override
    them, and pass a ``clock``); close every one, ``close_timeout`` seconds at most each, on exit.
    """
    made: list[tt.Tracker] = []

    def make(clock: Any = None, **overrides: Any) -> tt.Tracker:
        config = tt.TrackerConfig(**{"sensor": SENSOR, **defaults, **overrides})
        tracker = tt.Tracker(config, clock=clock)
        made.append(tracker)
        return tracker

    try:
        yield make
    finally:
        for tracker in made:
            tracker.close(timeout=close_timeout)


def complete_runs(tracker: tt.Tracker, count: int = 1, xp: float = 1) -> list[tt.Session]:
    """Start and complete ``count`` short sessions (two events each) of :data:`USER`."""
    sessions = [tracker.start_session(USER, ACTIVITY) for _ in range(count)]
    time.sleep(0.02)  # deliberate: a zero-length final window would not be sent
    for session in sessions:
        session.complete(xp)
    return sessions


def new_run() -> str:
    """A fresh run id (a UUID string, as on the wire)."""
    return str(uuid.uuid4())


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Query a spool file through a connection of its own."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def blocked_signals(tid: int, pid: int | None = None) -> set[int]:
    """The signals thread ``tid`` of process ``pid`` (this one by default) blocks: Linux's /proc."""
    status = Path(f"/proc/{pid or 'self'}/task/{tid}/status").read_text()
    [mask] = [line.split()[1] for line in status.splitlines() if line.startswith("SigBlk:")]
    bits = int(mask, 16)
    return {signum for signum in range(1, bits.bit_length() + 1) if bits & (1 << (signum - 1))}


HAS_PROC_TASKS = Path("/proc/self/task").is_dir()


def windows(collector: LocalCollector, run_id: str) -> list[dict[str, Any]]:
    """The run's TimeSpentEvents, in window order."""
    return sorted(collector.time_spent_events(run_id), key=lambda e: e["eventTime"])


def item(event: dict[str, Any], kind: str) -> dict[str, Any]:
    """One time metric of a TimeSpentEvent."""
    found: dict[str, Any] = next(i for i in event["generated"]["items"] if i["type"] == kind)
    return found


def assert_conserved(events: list[dict[str, Any]]) -> None:
    """Every window: active + inactive == end - start, to the millisecond."""
    for event in events:
        active, inactive = item(event, "active"), item(event, "inactive")
        start = parse_timestamp(active["startDate"])
        end = parse_timestamp(active["endDate"])
        span_ms = round((end - start).total_seconds() * 1000)
        assert round((active["value"] + inactive["value"]) * 1000) == span_ms
        assert (inactive["startDate"], inactive["endDate"]) == (
            active["startDate"],
            active["endDate"],
        )
        assert event["eventTime"] == active["endDate"]


def assert_contiguous(events: list[dict[str, Any]]) -> None:
    """Window k starts where window k-1 ended."""
    for before, after in itertools.pairwise(events):
        assert item(after, "active")["startDate"] == item(before, "active")["endDate"]


# -- public calls given hostile arguments ------------------------------------------------

ALLOWED = (tt.TimebackTrackerError, ValueError, TypeError)
"""What a public call may raise, whatever it is given."""


def attempt(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call; return its result, or the allowed error it raised (anything else propagates)."""
    try:
        return call(*args, **kwargs)
    except ALLOWED as exc:
        return exc


def canonical(data: Any) -> str:
    """Comparable JSON text (keys sorted, NaN allowed so that nothing is hidden)."""
    return json.dumps(json.loads(json.dumps(data)), sort_keys=True)


def wire_bytes(data: Any) -> bytes:
    """``data`` as a strict JSON UTF-8 body: what a real endpoint can parse (no NaN, no
    lone surrogates; either raises)."""
    return json.dumps(data, allow_nan=False, ensure_ascii=False).encode("utf-8")


def assert_round_trips(obj: Any) -> None:
    """What the library accepted goes on the wire as strict JSON and loads back the same."""
    sent = tt.dump(obj)
    again = tt.load(json.loads(wire_bytes(sent)), type(obj))
    assert canonical(tt.dump(again)) == canonical(sent)


def assert_no_email(error: BaseException, emails: tuple[str, ...]) -> None:
    """An error message never quotes an email address it was given."""
    text = str(error) + repr(getattr(error, "errors", ""))
    for email in emails:
        assert email not in text, f"the email {email!r} leaked into {type(error).__name__}"


# -- outbox entries of one run ------------------------------------------------------------

T0 = datetime(2026, 1, 27, 10, 0, tzinfo=timezone.utc)
T0_MS = round(T0.timestamp() * 1000)


def template(run: uuid.UUID) -> RunTemplate:
    """The template of ``run``'s one segment in these tests (its token derived from the run)."""
    return RunTemplate(
        user=USER, activity=ACTIVITY, run_id=run, course_id=None, segment=run.hex[:12]
    )


def window_id(run: uuid.UUID, first: int, last: int | None = None) -> str:
    """The id of window ``first`` (or windows first..last merged) of :func:`template`'s segment."""
    return time_spent_event_id(run, run.hex[:12], first, first if last is None else last)


def window(
    run: uuid.UUID, seq: int, active: float = 10, inactive: float = 5, gap: float = 0
) -> Entry:
    """The entry of window ``seq`` of ``run`` (15 s windows, optionally shifted by ``gap``)."""
    start = T0_MS + 15_000 * seq + round(gap * 1000)
    active_ms, inactive_ms = round(active * 1000), round(inactive * 1000)
    return Entry.window(
        template(run), seq, seq, start, start + active_ms + inactive_ms, active_ms, inactive_ms
    )


def completion(run: uuid.UUID) -> Entry:
    """The completion entry of ``run``."""
    return Entry.completion(template(run), T0_MS + 3_600_000, xp_earned=3)


def seconds(entry: Entry) -> float:
    """Active plus inactive seconds of a time entry."""
    return (entry.active_ms + entry.inactive_ms) / 1000


def checkpoint(run: uuid.UUID, seq: int, open_seconds: float = 5) -> Checkpoint:
    """The checkpoint of ``run`` (see :func:`template`) while window ``seq`` is open.

    Windows of 15 s, all active, from :data:`T0`; window ``seq`` has been open
    ``open_seconds``: a recovery rebuilds it as ``window(run, seq, open_seconds, 0)``.
    """
    clock = FakeClock(wall_ms=T0_MS)
    accounting = RunAccounting(now_ms=clock.monotonic_ms(), wall_ms=clock.wall_ms())
    for _ in range(seq):
        clock.advance(15)
        accounting.close_window(clock.monotonic_ms(), clock.wall_ms())
    clock.advance(open_seconds)
    return Checkpoint(template(run), accounting.snapshot(), clock.monotonic_ms(), clock.wall_ms())


def ended(run: uuid.UUID) -> dict[str, Checkpoint]:
    """The checkpoint change of ``run``'s segment ending."""
    return {template(run).segment: Checkpoint(template(run), None, 0, 0)}


# -- events as they arrive at a collector (wire JSON) -------------------------------------


def wire(model: Any) -> dict[str, Any]:
    """``tt.dump`` passed through JSON, exactly as a client sends it."""
    result: dict[str, Any] = json.loads(json.dumps(tt.dump(model)))
    return result


def wire_window(
    run_id: str,
    index: int = 0,
    active: float = 10.0,
    inactive: float = 5.0,
    *,
    at: float | None = None,
    user: tt.TimebackUser = USER,
    activity: tt.TimebackActivityContext = ACTIVITY,
) -> dict[str, Any]:
    """The wire JSON of window ``index`` of ``run_id``: it starts ``at`` seconds after
    :data:`T0` (by default ``15 * index``: 15 s windows)."""
    start = T0 + timedelta(seconds=15 * index if at is None else at)
    event = tt.TimeSpentEvent.for_window(
        user=user,
        activity=activity,
        run_id=run_id,
        start=start,
        end=start + timedelta(seconds=active + inactive),
        active_seconds=active,
        inactive_seconds=inactive,
        event_id=f"urn:uuid:{uuid.uuid5(uuid.UUID(run_id), str(index))}",
    )
    return wire(event)


def wire_completion(
    run_id: str,
    xp: float = 3,
    *,
    at: float = 300,
    user: tt.TimebackUser = USER,
    activity: tt.TimebackActivityContext = ACTIVITY,
    **metrics: Any,
) -> dict[str, Any]:
    """The wire JSON of the completion of ``run_id``, ``at`` seconds after :data:`T0`
    (8 of 10 questions right unless ``metrics`` say otherwise)."""
    event = tt.ActivityCompletedEvent.for_completion(
        user=user,
        activity=activity,
        run_id=run_id,
        event_time=T0 + timedelta(seconds=at),
        xp_earned=xp,
        **{"total_questions": 10, "correct_questions": 8, **metrics},
    )
    return wire(event)


def envelope(*events: dict[str, Any], sensor: str = SENSOR) -> dict[str, Any]:
    """A Caliper envelope holding ``events``."""
    return {
        "sensor": sensor,
        "sendTime": "2026-01-27T10:05:00.000Z",
        "dataVersion": "http://purl.imsglobal.org/ctx/caliper/v1p2",
        "data": list(events),
    }


def trash_entry_pages(path: Path, count: int) -> None:
    """Overwrite ``count`` leaf pages of a closed spool's ``entries`` table, from the middle:
    the rows on them are lost, the rest of the file still reads."""
    conn = sqlite3.connect(path)
    try:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        leaves = [
            row[0]
            for row in conn.execute(
                "SELECT pageno FROM dbstat WHERE name = 'entries' AND pagetype = 'leaf' "
                "ORDER BY pageno"
            )
        ]
    finally:
        conn.close()
    assert len(leaves) > count, f"only {len(leaves)} leaf pages"
    middle = len(leaves) // 2
    data = bytearray(path.read_bytes())
    for page in leaves[middle : middle + count]:
        start = (page - 1) * size
        data[start : start + size] = b"\x17" * size
    path.write_bytes(bytes(data))


def sign_of_life_file(lock: Path) -> Path:
    """Where the owner of the lock file ``lock`` keeps its sign of life: in memory on Linux
    (``memory_record``), else in the lock file itself."""
    return memory_record(lock) or lock
