"""``timeback-tracker demo``: an accelerated learning session, delivered and checked.

Starts a :class:`~timeback_tracker.testing.LocalCollector` on loopback (or
sends to ``--endpoint``), plays a short session that reads like a real one —
a student answers questions, looks away (pause), stops typing (idle), the
network drops and comes back, the activity completes — shows live progress,
and ends with a table built from what the collector received. Exits 1 if the
collector's totals disagree with the session's own.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import attrs

from timeback_tracker._locations import DEFAULT_SPOOL, SpoolLocation
from timeback_tracker._serialization import parse_timestamp
from timeback_tracker.config import TrackerConfig
from timeback_tracker.models import App, Subject, TimebackActivityContext, TimebackUser
from timeback_tracker.session import Session
from timeback_tracker.testing import LocalCollector
from timeback_tracker.tracker import Tracker

USER = TimebackUser(
    id="https://sis.example.com/ims/oneroster/rostering/v1p2/users/demo-student",
    email="demo.student@example.com",
    name="Demo Student",
    role="student",
)
ACTIVITY = TimebackActivityContext(
    id="https://demo.example.com/activities/Math/g3/multiplication",
    subject=Subject.MATH,
    app=App(name="timeback-tracker demo"),
)
SENSOR = "https://demo.example.com/sensors/timeback-tracker-demo"
QUESTIONS = 10
TOLERANCE_SECONDS = 0.001


@attrs.define
class Scene:
    """One stretch of the story: what the student does, for what share of the time."""

    share: float
    caption: str
    play: Callable[[Session, float, Callable[[], None]], int]


def _answering(session: Session, seconds: float, tick: Callable[[], None]) -> int:
    """Typing answers: a touch() every 0.2-0.6 s; returns the questions answered."""
    answered = 0
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(left, random.uniform(0.2, 0.6)))
        session.touch()
        answered += random.random() < 0.35
        tick()
    return answered


def _looking_away(session: Session, seconds: float, tick: Callable[[], None]) -> int:
    session.pause()
    _wait(seconds, tick)
    session.resume()
    return 0


def _idle(session: Session, seconds: float, tick: Callable[[], None]) -> int:
    _wait(seconds, tick)
    session.touch()
    return 0


def _wait(seconds: float, tick: Callable[[], None]) -> None:
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(left, 0.25))
        tick()


class Demo:
    """Runs the story and reports.

    Args:
        duration: Wall-clock seconds of the session.
        interval: Heartbeat interval (seconds).
        endpoint: A real endpoint to send to (credentials from the environment);
            None runs the built-in collector.
        out: Where to write.
        quiet: Only the summary, no live progress.
    """

    def __init__(
        self, *, duration: float, interval: float, endpoint: str | None, out: TextIO, quiet: bool
    ) -> None:
        self.duration = duration
        self.interval = interval
        self.endpoint = endpoint
        self.out = out
        self.quiet = quiet
        self.caption = ""

    def run(self) -> int:
        """Play the session; 0 when the delivered totals agree, 1 otherwise."""
        with self._collector() as collector, tempfile.TemporaryDirectory() as scratch:
            url = collector.url if collector else self.endpoint
            assert url is not None
            # Against the built-in collector, a spool of its own: nothing left
            # over from another run can mix in, and nothing is left behind.
            spool = Path(scratch, "demo-spool.sqlite3") if collector else DEFAULT_SPOOL
            config = self._config(url, spool)
            self._say(f"sending to {url}, heartbeat every {self.interval:g} s")
            tracker = Tracker(config)
            try:
                session, wall = self._play(tracker, collector)
                delivered = tracker.flush(timeout=30.0)
                stats = tracker.stats()
            finally:
                tracker.close(timeout=5.0)
            self._clear_progress()
            if collector is None:
                self._say(
                    f"delivered: {delivered}; sent {stats.sent}, failed {stats.failed}, "
                    f"dead letters {stats.dead_lettered}"
                )
                return 0 if delivered else 1
            return self._report(collector, session, wall, stats.dead_lettered, delivered)

    @contextlib.contextmanager
    def _collector(self) -> Iterator[LocalCollector | None]:
        if self.endpoint:
            yield None
            return
        with LocalCollector() as collector:
            yield collector

    def _config(self, url: str, spool: Path | SpoolLocation) -> TrackerConfig:
        settings: dict[str, Any] = {
            "endpoint": url,
            "spool_path": spool,
            "heartbeat_interval": self.interval,
            "idle_timeout": max(1.0, self.duration / 15),
            "request_timeout": (2.0, 5.0),
        }
        if self.endpoint:
            return TrackerConfig.from_env(**settings)
        return TrackerConfig(sensor=SENSOR, **settings)

    def _play(self, tracker: Tracker, collector: LocalCollector | None) -> tuple[Session, float]:
        share = self.duration / 10
        scenes = [
            Scene(2.5, "answering questions", _answering),
            Scene(1.0, "looked away: window lost focus (paused)", _looking_away),
            Scene(1.5, "answering questions", _answering),
            Scene(1.5, "stopped typing (idle after the idle timeout)", _idle),
            Scene(1.0, "answering questions", _answering),
        ]
        session = tracker.start_session(USER, ACTIVITY, course_id="DEMO-MATH-3")
        started = time.monotonic()
        answered = 0
        tick = self._progress_printer(tracker, session)
        for index, scene in enumerate(scenes):
            self.caption = scene.caption
            if index == 4 and collector is not None:
                # The network drops for a while, mid-session, and comes back.
                collector.go_down()
                self.caption = "network down: events wait in the outbox"
                answered += scene.play(session, scene.share * share, tick)
                collector.come_back()
                self.caption = "network back: the backlog drains"
                answered += _answering(session, 2.5 * share, tick)
            else:
                answered += scene.play(session, scene.share * share, tick)
        correct = min(QUESTIONS, max(answered, 1))
        xp = round(session.active_seconds / 60, 1)
        session.complete(xp, total_questions=QUESTIONS, correct_questions=correct, mastered_units=1)
        wall = time.monotonic() - started
        self.caption = "completed"
        tick()
        return session, wall

    def _progress_printer(self, tracker: Tracker, session: Session) -> Callable[[], None]:
        live = self.out.isatty()
        last_key: tuple[object, ...] = ()

        def tick() -> None:
            nonlocal last_key
            if self.quiet:
                return
            stats = tracker.stats()
            window = session.current_window
            shown = f"window {window[0]:3d} {window[1]:4.1f}s" if window else "no window      "
            line = (
                f"  {shown}  {session.state:<8} active {session.active_seconds:6.1f}s  "
                f"inactive {session.inactive_seconds:5.1f}s  queued {stats.queued:3d}  "
                f"sent {stats.sent:3d}  | {self.caption}"
            )
            if live:  # one line, redrawn in place
                self.out.write("\r" + line[:130].ljust(130))
            elif (key := (session.state, self.caption, window and window[0])) != last_key:
                last_key = key  # a log: a line when something changed
                self.out.write(line + "\n")
            self.out.flush()

        return tick

    def _clear_progress(self) -> None:
        if not self.quiet and self.out.isatty():
            self.out.write("\n")

    def _report(
        self,
        collector: LocalCollector,
        session: Session,
        wall: float,
        dead_letters: int,
        delivered: bool,
    ) -> int:
        windows = sorted(collector.time_spent_events(session.run_id), key=_start)
        completions = collector.completions(session.run_id)
        active, inactive = collector.totals(session.run_id)
        gaps = sum(1 for a, b in itertools.pairwise(windows) if _end(a) != _start(b))
        xp = completions[0]["generated"]["items"][0]["value"] if completions else None
        checks = {
            "every event delivered": delivered,
            "active matches the session": abs(active - session.active_seconds) <= TOLERANCE_SECONDS,
            "inactive matches the session": abs(inactive - session.inactive_seconds)
            <= TOLERANCE_SECONDS,
            "windows contiguous": gaps == 0,
            "one completion, last": len(completions) == 1
            and collector.events[-1]["type"] == "ActivityEvent",
            "no id with two contents": not collector.duplicate_conflicts,
        }
        rows = [
            ("run id", session.run_id),
            ("windows (TimeSpentEvents)", str(len(windows))),
            ("active seconds", f"{active:.3f}  (session counted {session.active_seconds:.3f})"),
            (
                "inactive seconds",
                f"{inactive:.3f}  (session counted {session.inactive_seconds:.3f})",
            ),
            ("active + inactive", f"{active + inactive:.3f}  (wall clock {wall:.3f})"),
            ("XP earned", "-" if xp is None else f"{xp:g}"),
            ("envelopes received", str(len(collector.envelopes))),
            ("dead letters", str(dead_letters)),
            ("duplicates (re-sends, same id)", str(collector.duplicates)),
        ]
        width = max(len(name) for name, _ in rows)
        self._say("\nWhat the collector received")
        for name, value in rows:
            self._say(f"  {name:<{width}}  {value}")
        self._say("")
        for name, ok in checks.items():
            self._say(f"  [{'ok' if ok else 'FAIL'}] {name}")
        return 0 if all(checks.values()) else 1

    def _say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


def _start(event: dict[str, Any]) -> Any:
    return parse_timestamp(event["generated"]["items"][0]["startDate"])


def _end(event: dict[str, Any]) -> Any:
    return parse_timestamp(event["generated"]["items"][0]["endDate"])


def run_demo(
    *,
    duration: float = 30.0,
    interval: float = 1.0,
    endpoint: str | None = None,
    quiet: bool = False,
    out: TextIO | None = None,
) -> int:
    """Run the demo; returns the process exit code."""
    demo = Demo(
        duration=duration,
        interval=interval,
        endpoint=endpoint,
        out=out or sys.stdout,
        quiet=quiet,
    )
    return demo.run()
