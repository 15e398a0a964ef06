"""One kiosk process of ``soak.py``: a tracker with live sessions, steered through stdin.

Not a benchmark itself: ``soak.py`` starts it as a script, once per kiosk
lifetime, and reads what it prints.

argv: ``mode endpoint token_url spool sensor seed interval batch read_timeout
idle_timeout clock_offset_ms resume`` where ``mode`` is ``live`` or ``drain``
(then ``seed`` is the flush timeout) and ``resume`` is a comma-separated list
of run ids it may resume (``-`` for none).

It prints one line per fact, as it happens (``SEG`` is a run segment's token):

* ``ready``; ``recovered N`` (crashed runs whose windows it recovered at start)
* ``run RUN SEG``: a session started (a resumed run keeps its RUN, with a new SEG)
* ``t SEG ACTIVE INACTIVE``: the session's counted seconds so far
* ``completing SEG XP TOTAL CORRECT MASTERED PCT``: about to call ``complete()``
* ``done SEG completed A I XP TOTAL CORRECT MASTERED PCT`` | ``done SEG ended A I``
* ``refused SEG``: ``complete()`` raised ``SessionStateError`` (completed before)
* ``problem REASON N``: ``on_error`` got a failure that will not be retried
* ``fsize LIMIT`` | ``stepped OFFSET_MS``: a fault command from stdin took effect
* ``drained OK QUEUED SENT DEAD DROPPED INTERNAL`` (drain mode) | ``bye`` (after SIGTERM)

Fault commands on stdin, one a line: ``fsize N`` limits the size of any file
this process writes to N bytes (``RLIMIT_FSIZE``: a full small filesystem;
Python ignores ``SIGXFSZ``, so such a write fails with ``EFBIG``), ``fsize -``
lifts the limit, ``step MS`` sets the wall clock by MS milliseconds (the
tracker's clock is the system's plus an offset; durations come from the
monotonic clock, which no step moves).
"""

from __future__ import annotations

import logging
import random
import resource
import signal
import sys
import threading
import time
import uuid
from typing import Any

import timeback_tracker as tt
import timeback_tracker.tracker as tracker_module
from timeback_tracker._clock import SystemClock

CLIENT_ID = "soak-kiosk"
CLIENT_SECRET = "soak-client-secret"  # the LocalCollector's test client, not a real secret

_lock = threading.Lock()
stopping = threading.Event()  # set by SIGTERM


def out(*words: object) -> None:
    """Print one fact on one line, whole, whatever thread prints."""
    line = " ".join(str(word) for word in words) + "\n"
    with _lock:
        sys.stdout.write(line)
        sys.stdout.flush()


class OffsetClock(SystemClock):
    """The system's clocks, with a wall clock that the soak can set (``step``)."""

    def __init__(self, offset_ms: int) -> None:
        self.offset_ms = offset_ms

    def wall_ms(self) -> int:  # type: ignore[override]
        """The system's wall clock plus the offset."""
        return time.time_ns() // 1_000_000 + self.offset_ms


def on_term(signum: int, frame: object) -> None:
    """SIGTERM: stop the main loop, which then closes the tracker."""
    stopping.set()


class Recovered(logging.Handler):
    """Turns the tracker's "recovered" log line into a ``recovered N`` line."""

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("recovered the last windows") and record.args:
            out("recovered", record.args[0])  # type: ignore[index]


def on_error(failure: tt.DeliveryFailure) -> None:
    """Report failures that will not be retried (the soak decides which are expected)."""
    if not failure.will_retry:
        out("problem", failure.reason.replace(" ", "_"), len(failure.event_ids))


def commands(clock: OffsetClock) -> None:
    """Obey the fault commands coming on stdin."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "fsize":
            limit = soft if words[1] == "-" else int(words[1])
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
            out("fsize", words[1])
        elif words[0] == "step":
            clock.offset_ms += int(words[1])
            out("stepped", clock.offset_ms)


def main() -> None:
    """Run one kiosk lifetime."""
    signal.signal(signal.SIGTERM, on_term)  # before anything: a SIGTERM always closes cleanly
    mode, endpoint, token_url, spool, sensor, seed = sys.argv[1:7]
    interval, batch, read_timeout, idle, offset, resume = sys.argv[7:13]

    log = logging.getLogger("timeback_tracker")
    log.setLevel(logging.INFO)
    log.addHandler(Recovered(logging.INFO))
    warnings = logging.StreamHandler(sys.stderr)
    warnings.setLevel(logging.WARNING)
    warnings.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    log.addHandler(warnings)

    clock = OffsetClock(int(offset))
    threading.Thread(target=commands, args=(clock,), daemon=True).start()
    tracker = tt.Tracker(
        tt.TrackerConfig(
            sensor=sensor,
            endpoint=endpoint,
            auth=tt.ClientCredentials(CLIENT_ID, CLIENT_SECRET, token_url),
            spool_path=spool,
            heartbeat_interval=float(interval),
            idle_timeout=float(idle),
            request_timeout=(1.0, float(read_timeout)),
            exit_timeout=1.0,
            batch_size=int(batch),
            on_error=on_error,
        ),
        clock=clock,
    )
    out("ready")
    if mode == "drain":
        drained = tracker.flush(float(seed))
        stats = tracker.stats()
        tracker.close(0)
        out(
            "drained",
            int(drained),
            stats.queued,
            stats.sent,
            stats.dead_lettered,
            stats.dropped,
            stats.internal_errors,
        )
        return

    rng = random.Random(int(seed))
    slots = rng.choice([1, 1, 2])
    resumable = [run for run in resume.split(",") if run and run != "-"]
    live: dict[str, dict[str, Any]] = {}
    starting: list[str] = []  # the run start_session() is starting
    real_new_segment = tracker_module.new_segment

    def announced_segment() -> str:
        # The "run" line goes out before start_session() spools anything of the
        # segment: a kill inside the call must not leave windows of a segment the
        # harness never heard of.
        segment = real_new_segment()
        out("run", starting[-1], segment)
        return segment

    tracker_module.new_segment = announced_segment

    def start(now: float) -> None:
        run_id = str(uuid.uuid4())
        if resumable and rng.random() < 0.5:
            run_id = resumable.pop(0)  # the lesson goes on after the restart
        starting.append(run_id)
        student = rng.randrange(20)
        session = tracker.start_session(
            tt.TimebackUser(
                id=f"https://sis.example.com/users/student-{student}",
                email=f"student-{student}@example.com",
            ),
            tt.TimebackActivityContext(
                id=f"https://app.example.com/activities/Math/g3/lesson-{rng.randrange(5)}",
                subject="Math",
                app=tt.App(name="Soak Kiosk"),
            ),
            course_id=rng.choice([None, "MATH-3"]),
            run_id=run_id,
        )
        segment = session._template.segment
        live[segment] = {
            "session": session,
            "ends": now + rng.uniform(0.5, 8.0),
            "paused_until": None,
            "away_until": 0.0,
        }

    def finish(segment: str, state: dict[str, Any]) -> None:
        session = state["session"]
        if rng.random() < 0.6:
            total = rng.randint(1, 12)
            metrics = (
                rng.randint(0, 1),
                total,
                rng.randint(0, total),
                rng.randint(0, 2),
                rng.randint(0, 100),
            )
            out("completing", segment, *metrics)
            try:
                session.complete(
                    metrics[0],
                    total_questions=metrics[1],
                    correct_questions=metrics[2],
                    mastered_units=metrics[3],
                    pct_complete=metrics[4],
                )
            except tt.SessionStateError:
                out("refused", segment)
                session.end()
                out("done", segment, "ended", session.active_seconds, session.inactive_seconds)
            else:
                out(
                    "done",
                    segment,
                    "completed",
                    session.active_seconds,
                    session.inactive_seconds,
                    *metrics,
                )
        else:
            session.end()
            out("done", segment, "ended", session.active_seconds, session.inactive_seconds)
        del live[segment]

    while not stopping.is_set():
        now = time.monotonic()
        while len(live) < slots:
            start(now)
        for segment, state in list(live.items()):
            session = state["session"]
            if now >= state["ends"]:
                finish(segment, state)
                continue
            if state["paused_until"] is not None:
                if now >= state["paused_until"]:
                    session.resume()
                    state["paused_until"] = None
            elif rng.random() < 0.02:
                session.pause()
                state["paused_until"] = now + rng.uniform(0.1, 2.0)
            if now >= state["away_until"]:
                if rng.random() < 0.02:  # no input for a while: idle after the timeout
                    state["away_until"] = now + rng.uniform(0.5, 4.0)
                else:
                    session.touch()
            out("t", segment, session.active_seconds, session.inactive_seconds)
        time.sleep(rng.uniform(0.01, 0.04))

    tracker.close()  # SIGTERM: ends the open sessions, delivers for exit_timeout at most
    for segment, state in live.items():
        session = state["session"]
        out("done", segment, "ended", session.active_seconds, session.inactive_seconds)
    out("bye")


if __name__ == "__main__":
    main()
