"""``timeback-tracker demo``: an accelerated learning session, delivered and checked.

Starts a :class:`~timeback_tracker.testing.LocalCollector` on loopback (or
sends to ``--endpoint``), plays a short session that reads like a real one —
a student answers questions, looks away (pause), stops typing (idle), the
network drops and comes back, the activity completes — and ends with a table
built from what the collector received. Exits 1 if the collector's totals
disagree with the session's own, or if events could not be delivered (the
last failure is named).

Output fits 80 columns. On a terminal, a status area (one row under column
headers) is redrawn in place above a short log of what happened; otherwise
the log is printed as plain lines, one per happening.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

import attrs

from timeback_tracker._collector_cli import WIRE_LABELS
from timeback_tracker._serialization import parse_timestamp
from timeback_tracker.config import TrackerConfig
from timeback_tracker.models import (
    COMPLETED_TYPE,
    TIME_SPENT_TYPE,
    App,
    Subject,
    TimebackActivityContext,
    TimebackUser,
)
from timeback_tracker.session import Session
from timeback_tracker.testing import LocalCollector
from timeback_tracker.tracker import Tracker

if TYPE_CHECKING:
    from timeback_tracker import DeliveryFailure

__all__ = [
    "ACTIVITY",
    "QUESTIONS",
    "SENSOR",
    "TOLERANCE_SECONDS",
    "USER",
    "Demo",
    "Scene",
    "Screen",
    "run_demo",
]

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
WIDTH: Final = 79  # columns; an 80-column terminal never wraps a line
LOG_LINES: Final = 8  # the event log's height under the status area, on a terminal
_REDRAW_SECONDS: Final = 0.1
STATUS_HEADER: Final = (
    f"{'TIME':>6} {'SCENE':<22} {'STATE':<8} {'WINDOW':<10} {'ACTIVE':>7} "
    f"{'INACTIVE':>8} {'QUEUED':>6} {'SENT':>5}"
)
LOG_HEADER: Final = f"{'TIME':>6} {'EVENT':<24} DETAILS"
# What a failure usually means, to name the cause next to the library's reason.
_HINTS: Final = {
    None: "is the endpoint reachable?",
    401: "check the TIMEBACK_* client id and secret",
    403: "check the TIMEBACK_* client id and secret",
    404: "check the endpoint URL (it ends in /caliper/event)",
    405: "check the endpoint URL (it ends in /caliper/event)",
}


@attrs.define
class Scene:
    """One stretch of the story: what the student does, for what share of the time."""

    share: float
    caption: str  # <= 22 characters: the status area's SCENE column
    story: str  # the log line that tells what happens
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
        time.sleep(min(left, 0.1))
        tick()


class Screen:
    """The demo's output: a status area redrawn in place above a short log, or plain lines.

    Thread-safe: the collector's and the tracker's threads add log lines too.

    Args:
        out: Where to write.
        live: Redraw in place (a terminal) instead of printing plain lines.
        quiet: Print only what :meth:`say` is given (the summary).
    """

    def __init__(self, out: TextIO, *, live: bool, quiet: bool) -> None:
        self._out = out
        self._live = live and not quiet
        self._quiet = quiet
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._row = ""
        self._log: deque[str] = deque(maxlen=LOG_LINES)
        self._drawn = 0  # lines of the live block on screen
        self._drawn_at = 0.0
        self._width = WIDTH
        if self._live:
            columns = shutil.get_terminal_size((WIDTH + 1, 24)).columns or WIDTH + 1  # 0: unknown
            self._width = min(WIDTH, columns - 1)

    def say(self, text: str = "") -> None:
        """A plain line (title, report), printed even when quiet."""
        with self._lock:
            self._write(self._fit(text) + "\n")

    def begin(self) -> None:
        """Print the column headers; on a terminal, the live block starts here."""
        if self._quiet:
            return
        with self._lock:
            if self._live:
                self._draw()
            else:
                self._write(LOG_HEADER + "\n")

    def status(self, row: str) -> None:
        """Replace the status row (on a terminal only: the log tells the rest); 10 redraws/s."""
        with self._lock:
            self._row = row
            if self._live and time.monotonic() - self._drawn_at >= _REDRAW_SECONDS:
                self._draw()

    def log(self, event: str, details: str = "") -> None:
        """Add a line to the event log: the time since the start, what happened, details."""
        if self._quiet:
            return
        elapsed = time.monotonic() - self._started
        line = self._fit(f"{elapsed:5.1f}s {event:<24} {details}".rstrip())
        with self._lock:
            if self._live:
                self._log.append(line)
                self._draw()
            else:
                self._write(line + "\n")

    def end(self) -> None:
        """Draw the final state of the live block (it stays on screen above what follows)."""
        with self._lock:
            if self._live:
                self._draw()
            self._drawn = 0

    def elapsed(self) -> float:
        """Seconds since the screen was made."""
        return time.monotonic() - self._started

    def _draw(self) -> None:
        block = [STATUS_HEADER, self._row, "", LOG_HEADER, *self._log]
        # Up to the block's first line, clear to the end of the screen, write it again.
        up = f"\x1b[{self._drawn}F" if self._drawn else ""
        text = "\n".join(self._fit(line) for line in block)
        self._write(f"{up}\x1b[J{text}\n")
        self._drawn = len(block)
        self._drawn_at = time.monotonic()

    def _fit(self, text: str) -> str:
        return text if len(text) <= self._width else text[: self._width - 3] + "..."

    def _write(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # a closed pipe must not stop the demo
            self._out.write(text)
            self._out.flush()


class Demo:
    """Runs the story and reports.

    Args:
        duration: Wall-clock seconds of the session.
        interval: Heartbeat interval (seconds).
        endpoint: A real endpoint to send to (credentials from the environment);
            None runs the built-in collector.
        sensor: The sensor IRI to send as.
        out: Where to write.
        quiet: Only the summary, no live progress.
    """

    def __init__(
        self,
        *,
        duration: float,
        interval: float,
        endpoint: str | None,
        sensor: str,
        out: TextIO,
        quiet: bool,
    ) -> None:
        self.duration = duration
        self.interval = interval
        self.endpoint = endpoint
        self.sensor = sensor
        self.screen = Screen(out, live=_can_redraw(out), quiet=quiet)
        self.caption = "starting"
        self.failures: list[DeliveryFailure] = []
        self._windows_seen = 0
        self._tick: Callable[[], None] = lambda: None

    def run(self) -> int:
        """Play the session; 0 when everything arrived (and the totals agree), 1 otherwise."""
        with self._collector() as collector, tempfile.TemporaryDirectory() as scratch:
            url = collector.url if collector else self.endpoint
            assert url is not None
            # A scratch spool: nothing of another run mixes in, and nothing of the
            # demo stays behind to be sent later by an app with the same sensor.
            config = self._config(url, Path(scratch, "demo-spool.sqlite3"))
            where = "a local collector" if collector else "your endpoint"
            self.screen.say(f"timeback-tracker demo: a {self.duration:g} s session sent to {where}")
            self.screen.say(f"  events  {url}")
            if collector is not None:
                self.screen.say(f"  page    {collector.page_url}  (open it to watch live)")
            else:
                self.screen.say(f"  sensor  {self.sensor}")
            self.screen.say()
            self.screen.begin()
            tracker = Tracker(config)
            try:
                session, wall = self._play(tracker, collector)
                # The built-in collector is up at the end, so the flush is quick; a
                # real endpoint gets exit_timeout, as an app's exit would.
                delivered = tracker.flush(30.0 if collector else config.exit_timeout)
                self._tick()  # the status area's last word: what is still queued
                stats = tracker.stats()
            finally:
                tracker.close(timeout=0.0)
            self.screen.end()
            if collector is None:
                return self._endpoint_report(delivered, stats.sent, stats.queued)
            return self._report(collector, session, wall, stats.dead_lettered, delivered)

    @contextlib.contextmanager
    def _collector(self) -> Iterator[LocalCollector | None]:
        if self.endpoint:
            yield None
            return
        with LocalCollector(on_event=self._received) as collector:
            yield collector

    def _config(self, url: str, spool: Path) -> TrackerConfig:
        settings: dict[str, Any] = {
            "endpoint": url,
            "sensor": self.sensor,
            "spool_path": spool,
            "heartbeat_interval": self.interval,
            "idle_timeout": max(1.0, self.duration / 15),
            "request_timeout": (2.0, 5.0),
            "on_error": self._failed,
        }
        if self.endpoint:
            return TrackerConfig.from_env(**settings)
        return TrackerConfig(**settings)

    def _play(self, tracker: Tracker, collector: LocalCollector | None) -> tuple[Session, float]:
        share = self.duration / 10
        scenes = [
            Scene(2.5, "answering questions", "the student answers (touch() on input)", _answering),
            Scene(1.0, "looked away (paused)", "the window lost focus: pause()", _looking_away),
            Scene(1.5, "answering questions", "back: resume(), answering again", _answering),
            Scene(1.5, "stopped typing (idle)", "no input: idle after idle_timeout", _idle),
            Scene(1.0, "answering questions", "typing again: touch()", _answering),
        ]
        session = tracker.start_session(USER, ACTIVITY, course_id="DEMO-MATH-3")
        self.screen.log("start_session()", f"run {session.run_id[:8]}, window {self.interval:g} s")
        started = time.monotonic()
        answered = 0
        tick = self._tick = self._ticker(tracker, session)
        for index, scene in enumerate(scenes):
            if index == 4 and collector is not None:
                # The network drops for a while, mid-session, and comes back.
                collector.go_down()
                self._scene("network down: waiting", "the network drops: events wait in the spool")
                answered += scene.play(session, scene.share * share, tick)
                collector.come_back()
                self._scene("network back: draining", "the network is back: the backlog drains")
                answered += _answering(session, 2.5 * share, tick)
            else:
                self._scene(scene.caption, scene.story)
                answered += scene.play(session, scene.share * share, tick)
        if collector is None:  # the same length of session without the outage
            answered += _answering(session, 2.5 * share, tick)
        correct = min(QUESTIONS, max(answered, 1))
        xp = round(session.active_seconds / 60, 1)
        session.complete(xp, total_questions=QUESTIONS, correct_questions=correct, mastered_units=1)
        wall = time.monotonic() - started
        self._scene("completed", f"complete(): XP {xp:g}, {correct}/{QUESTIONS} correct")
        tick()
        return session, wall

    def _scene(self, caption: str, story: str) -> None:
        self.caption = caption
        self.screen.log("scene", story)

    def _ticker(self, tracker: Tracker, session: Session) -> Callable[[], None]:
        sent_before = 0

        def tick() -> None:
            nonlocal sent_before
            stats = tracker.stats()
            window = session.current_window
            shown = f"#{window[0]:<3d}{window[1]:5.1f}s" if window else "-"
            self.screen.status(
                f"{self.screen.elapsed():5.1f}s {self.caption:<22} {session.state:<8} "
                f"{shown:<10} {session.active_seconds:6.1f}s {session.inactive_seconds:7.1f}s "
                f"{stats.queued:>6} {stats.sent:>5}"
            )
            if self.endpoint and stats.sent > sent_before:  # no collector tells us: count
                self.screen.log(
                    "delivered", f"{stats.sent - sent_before} event(s), {stats.sent} in all"
                )
                sent_before = stats.sent

        return tick

    # -- what the tracker and the collector tell (from their threads) ---------------------

    def _failed(self, failure: DeliveryFailure) -> None:
        self.failures.append(failure)
        retry = "will retry" if failure.will_retry else "not retried"
        self.screen.log("delivery failed", f"{failure.reason} ({retry})")

    def _received(self, event: dict[str, Any], outcome: str) -> None:
        if outcome != "new":
            self.screen.log("re-send (same id)" if outcome == "duplicate" else "CONFLICT (same id)")
            return
        items = {item["type"]: item["value"] for item in event["generated"]["items"]}
        if event["type"] == TIME_SPENT_TYPE:
            self._windows_seen += 1
            self.screen.log(
                WIRE_LABELS[TIME_SPENT_TYPE],
                f"window {self._windows_seen}: active {items.get('active', 0):.2f} s, "
                f"inactive {items.get('inactive', 0):.2f} s",
            )
        else:
            questions = f", {items['correctQuestions']:g}/{items['totalQuestions']:g} correct"
            self.screen.log(
                WIRE_LABELS[COMPLETED_TYPE],
                f"XP {items['xpEarned']:g}" + (questions if "totalQuestions" in items else ""),
            )

    # -- reports --------------------------------------------------------------------------

    def _endpoint_report(self, delivered: bool, sent: int, queued: int) -> int:
        self.screen.say()
        if delivered:
            self.screen.say(f"delivered: all {sent} events were acknowledged by the endpoint")
            return 0
        self.screen.say(f"NOT delivered: {queued} events (sent {sent}); the demo discards them")
        if self.failures:
            last = self.failures[-1]
            self.screen.say(f"  cause: {last.reason}")
            hint = _HINTS.get(last.status)
            if hint is not None:
                self.screen.say(f"  hint:  {hint}")
        else:
            self.screen.say("  cause: no answer within exit_timeout (the endpoint is slow)")
        return 1

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
        counted = (session.active_seconds, session.inactive_seconds)
        checks = {
            "every event delivered": (delivered, f"{len(collector.events)} received"),
            "active matches the session": (
                abs(active - counted[0]) <= TOLERANCE_SECONDS,
                f"collector {active:.3f} s, session {counted[0]:.3f} s",
            ),
            "inactive matches the session": (
                abs(inactive - counted[1]) <= TOLERANCE_SECONDS,
                f"collector {inactive:.3f} s, session {counted[1]:.3f} s",
            ),
            "windows contiguous": (gaps == 0, f"{gaps} gap(s)"),
            "one completion, last": (
                len(completions) == 1 and collector.events[-1]["type"] == COMPLETED_TYPE,
                f"{len(completions)} completion(s)",
            ),
            "no id with two contents": (
                not collector.duplicate_conflicts,
                f"{len(collector.duplicate_conflicts)} conflicting id(s)",
            ),
        }
        rows = [
            ("run id", session.run_id),
            ("windows (TimeSpentEvents)", str(len(windows))),
            ("active seconds", f"{active:.3f}  (session counted {counted[0]:.3f})"),
            ("inactive seconds", f"{inactive:.3f}  (session counted {counted[1]:.3f})"),
            ("active + inactive", f"{active + inactive:.3f}  (wall clock {wall:.3f})"),
            ("XP earned", "-" if xp is None else f"{xp:g}"),
            ("envelopes received", str(len(collector.envelopes))),
            ("dead letters", str(dead_letters)),
            ("duplicates (re-sends, same id)", str(collector.duplicates)),
        ]
        width = max(len(name) for name, _ in rows)
        self.screen.say()
        self.screen.say("What the collector received")
        for name, value in rows:
            self.screen.say(f"  {name:<{width}}  {value}")
        self.screen.say()
        for name, (ok, detail) in checks.items():
            self.screen.say(f"  [{'ok' if ok else 'FAIL'}] {name}" + ("" if ok else f": {detail}"))
        if not delivered and self.failures:
            self.screen.say(f"  last delivery failure: {self.failures[-1].reason}")
        return 0 if all(ok for ok, _ in checks.values()) else 1


def _can_redraw(out: TextIO) -> bool:
    """Whether ``out`` is a terminal that understands cursor movement."""
    if not out.isatty() or os.environ.get("TERM") == "dumb":
        return False
    # The classic Windows console shows escape codes as text; Windows Terminal does not.
    return os.name != "nt" or "WT_SESSION" in os.environ


def _start(event: dict[str, Any]) -> Any:
    return parse_timestamp(event["generated"]["items"][0]["startDate"])


def _end(event: dict[str, Any]) -> Any:
    return parse_timestamp(event["generated"]["items"][0]["endDate"])


def run_demo(
    *,
    duration: float = 30.0,
    interval: float = 1.0,
    endpoint: str | None = None,
    sensor: str | None = None,
    quiet: bool = False,
    out: TextIO | None = None,
) -> int:
    """Run the demo; returns the process exit code.

    Args:
        duration: Seconds of the session.
        interval: Heartbeat interval.
        endpoint: Send here instead of to a built-in collector.
        sensor: The sensor IRI (the demo's own when None).
        quiet: Print the summary only.
        out: Where to write (stdout by default).

    Raises:
        ConfigurationError: The endpoint or the credentials in the environment are unusable.
    """
    demo = Demo(
        duration=duration,
        interval=interval,
        endpoint=endpoint,
        sensor=sensor or os.environ.get("TIMEBACK_SENSOR", "").strip() or SENSOR,
        out=out or sys.stdout,
        quiet=quiet,
    )
    # The demo reports failures itself (with their cause); the library's warnings
    # (such as "kept in the spool", of a spool the demo throws away) would mislead.
    quiet_logs = logging.NullHandler()
    library = logging.getLogger("timeback_tracker")
    library.addHandler(quiet_logs)
    try:
        return demo.run()
    finally:
        library.removeHandler(quiet_logs)
