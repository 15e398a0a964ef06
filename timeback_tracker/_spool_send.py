"""``timeback-tracker spool send``: deliver what a spool holds now, without starting the app.

It does what the app's next start would, with the library's own code: a
:class:`~timeback_tracker.Tracker` whose ``spool_path`` is the spool first
queues the windows of runs a crash interrupted (its recovery), then its
delivery thread sends — retries, backoff, ``Retry-After``, dead letters and
all. One tracker per destination (sensor and endpoint) recorded in the
spool, one after the other, each sending only its own rows to its own
endpoint: the tool cannot send one app's students to another app's endpoint.
Credentials come from the ``TIMEBACK_*`` variables
(:meth:`~timeback_tracker.TrackerConfig.from_env`).
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

import attrs

from timeback_tracker._delivery import TrackerStats
from timeback_tracker._spool_admin import Destination, OpenRun, SpoolFile, lock_held
from timeback_tracker._spool_file import destination
from timeback_tracker._urls import safe_url
from timeback_tracker.config import TrackerConfig
from timeback_tracker.exceptions import ConfigurationError, DeliveryFailure
from timeback_tracker.tracker import Tracker

__all__ = ["run_send"]

PROG = "timeback-tracker spool send"
EXIT_OK = 0
EXIT_LEFT = 1
EXIT_UNUSABLE = 2
EXIT_DEAD = 3
EXIT_INTERRUPTED = 130

POLL = 0.1
"""Seconds between two looks at the sending tracker's counters."""

_MAX_QUEUE = 1_000_000
"""The config's upper bound: the sending tracker never merges or drops what the spool holds."""

_BAR = 20
"""Characters of the progress bar: with its counts and a retry reason, a line fits 80 columns."""

_WARNING_CHARS = 200
"""A library warning shown while sending is cut to this many characters."""


@attrs.define
class _Outcome:
    """What happened to one destination's events."""

    sensor: str
    endpoint: str
    sent: int = 0
    dead: int = 0
    left: int = 0
    note: str = ""


def run_send(
    path: Path,
    *,
    endpoint: str | None,
    sensor: str | None,
    filter_sensor: bool,
    timeout: float,
    max_event_age: float | None,
    out: TextIO | None = None,
) -> int:
    """Recover the spool's interrupted runs, then send each destination's events.

    Args:
        path: The spool file (it exists).
        endpoint: Send only the destinations with this endpoint; all when None.
        sensor: The sensor named by ``--sensor`` or ``$TIMEBACK_SENSOR``.
        filter_sensor: Send only ``sensor``'s destinations.
        timeout: Give up on a destination after this many seconds without progress.
        max_event_age: Older events become dead letters; the library's default when None.
        out: Where progress and the summary go; stdout when None.

    Returns:
        The exit code (see ``timeback-tracker spool --help``).
    """
    out = out or sys.stdout
    plan = _plan(path, endpoint, sensor, filter_sensor=filter_sensor)
    if plan is None:
        return EXIT_UNUSABLE
    targets, waiting = plan
    print(f"spool {path}", file=out)
    if not targets:
        print("nothing to send", file=out)
        return EXIT_OK
    if waiting:
        windows = sum(len(run.windows) for run in waiting)
        print(
            f"recovering {_count(len(waiting), 'interrupted run')} ({_count(windows, 'window')})",
            file=out,
        )
    settings: dict[str, Any] = {} if max_event_age is None else {"max_event_age": max_event_age}
    outcomes = [_Outcome(sensor, endpoint) for sensor, endpoint in targets]
    interrupted = False
    try:
        for outcome in outcomes:
            _send_destination(path, outcome, settings, timeout, out)
    except ConfigurationError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: what was not sent stays in the spool", file=out)
    unrecovered = _count_left(path, outcomes)
    _print_summary(outcomes, unrecovered, out)
    if interrupted:
        return EXIT_INTERRUPTED
    if unrecovered or any(outcome.left for outcome in outcomes):
        return EXIT_LEFT
    return EXIT_DEAD if any(outcome.dead for outcome in outcomes) else EXIT_OK


def _plan(
    path: Path, endpoint: str | None, sensor: str | None, *, filter_sensor: bool
) -> tuple[list[tuple[str, str]], list[OpenRun]] | None:
    """The destinations to send and the interrupted runs to recover; None (said why) if unusable."""
    try:
        with SpoolFile(path) as spool:
            destinations = spool.destinations()
            waiting = [run for run in spool.open_runs() if run.interrupted and run.windows]
    except (sqlite3.Error, OSError) as exc:
        print(f"{PROG}: {path}: not a usable spool ({exc})", file=sys.stderr)
        return None
    targets = _targets(destinations, waiting, endpoint, sensor, filter_sensor=filter_sensor)
    if isinstance(targets, str):
        print(f"{PROG}: {path}: {targets}", file=sys.stderr)
        return None
    return targets, waiting


def _targets(
    destinations: list[Destination],
    waiting: list[OpenRun],
    endpoint: str | None,
    sensor: str | None,
    *,
    filter_sensor: bool,
) -> list[tuple[str, str]] | str:
    """The (sensor, endpoint) pairs to send, in order, or why there are none to choose from."""
    recorded = [
        d
        for d in destinations
        if d.sensor is not None and d.endpoint is not None
        if not filter_sensor or d.sensor == sensor
    ]
    # Rows of a 0.1 spool record no destination: the first tracker to open it adopts them.
    orphans = sum(d.queued for d in destinations if d.sensor is None)
    if endpoint is not None:
        # By the destination key: the spool records an endpoint without its query.
        matching = [
            (str(d.sensor), endpoint)
            for d in recorded
            if destination(str(d.sensor), endpoint) == d.key
        ]
        if matching:
            return matching
        if orphans and sensor:
            return [(sensor, endpoint)]
        if orphans:
            return (
                "its events record no destination (a 0.1 spool): name their sensor "
                "with --sensor IRI or $TIMEBACK_SENSOR"
            )
        known = ", ".join(sorted({safe_url(str(d.endpoint)) for d in recorded})) or "none"
        return f"no events recorded for endpoint {safe_url(endpoint)} (recorded: {known})"
    if orphans and not recorded:
        return (
            "its events record no destination (a 0.1 spool): give --endpoint URL, and their "
            "sensor with $TIMEBACK_SENSOR (or --sensor IRI)"
        )
    return _recorded_targets(recorded, waiting)


def _recorded_targets(
    recorded: list[Destination], waiting: list[OpenRun]
) -> list[tuple[str, str]] | str:
    """The recorded destinations with something to send, or why they need ``--endpoint``."""
    interrupted = {run.dest for run in waiting}
    wanted = [d for d in recorded if d.queued or d.key in interrupted]
    # An endpoint with a query is recorded without it (it may carry a key): its events
    # can only be sent with the whole endpoint given again.
    partial = [d for d in wanted if destination(str(d.sensor), str(d.endpoint)) != d.key]
    if partial:
        return "; ".join(
            f"the events for {safe_url(str(d.endpoint))} (sensor {d.sensor}) need "
            "--endpoint URL: the spool does not keep an endpoint's query (it may carry a key)"
            for d in partial
        )
    return [(str(d.sensor), str(d.endpoint)) for d in wanted]


def _send_destination(
    path: Path, outcome: _Outcome, settings: dict[str, Any], timeout: float, out: TextIO
) -> None:
    """Send one destination's events with a tracker of its own, showing progress.

    Raises:
        ConfigurationError: The ``TIMEBACK_*`` settings are unusable.
        KeyboardInterrupt: Ctrl-C; the tracker is closed first.
    """
    where = f"{safe_url(outcome.endpoint)} (sensor {outcome.sensor})"
    try:
        TrackerConfig(sensor=outcome.sensor, endpoint=outcome.endpoint, spool_path=None)
    except ConfigurationError as exc:
        # The destination itself, not the TIMEBACK_* settings: skip it, send the others.
        outcome.note = f"not sent: the spool records an unusable destination ({exc})"
        print(f"skipping {where}: {exc}", file=out)
        return
    drain_lock = path.with_name(
        f"{path.name}.drain-{destination(outcome.sensor, outcome.endpoint)}.lock"
    )
    if lock_held(drain_lock):
        outcome.note = "not sent: another process (the app?) is sending these events now"
        print(f"skipping {where}: another process is sending its events now", file=out)
        return
    failures = _Failures()
    config = TrackerConfig.from_env(
        sensor=outcome.sensor,
        endpoint=outcome.endpoint,
        spool_path=path,
        max_queue=_MAX_QUEUE,
        on_error=failures.note,
        **settings,
    )
    progress = _Progress(out)
    handler = _WarningsAbove(progress)
    library = logging.getLogger("timeback_tracker")
    library.addHandler(handler)
    started = time.monotonic()
    tracker = Tracker(config)  # recovers interrupted runs, starts sending what is queued
    done = sending = False
    try:
        stats = tracker.stats()
        if not stats.queued:
            print(f"nothing to send to {where}", file=out)
            done = True
            return
        print(f"sending {_count(stats.queued, 'event')} to {where}", file=out)
        sending = True
        done = _wait(tracker, progress, failures, timeout, outcome, started)
    finally:
        tracker.close(timeout=2.0 if done else 0.0)
        stats = tracker.stats()
        outcome.sent, outcome.dead = stats.sent, stats.dead_lettered
        if sending:
            progress.finish(_progress_text(stats, None))
        library.removeHandler(handler)


def _wait(  # noqa: PLR0917 - one destination's sending, in the caller's order
    tracker: Tracker,
    progress: _Progress,
    failures: _Failures,
    timeout: float,
    outcome: _Outcome,
    started: float,
) -> bool:
    """Show progress until the destination is empty (True) or stalls for ``timeout`` (False).

    ``started`` (monotonic seconds) is when the tracker began sending.
    """
    done_before = 0
    progress_at = started
    while True:
        stats = tracker.stats()
        if not stats.queued:
            return True
        now = time.monotonic()
        if stats.sent + stats.dead_lettered != done_before:
            done_before = stats.sent + stats.dead_lettered
            progress_at = now
        elif now - progress_at >= timeout:
            reason = failures.reason_since(progress_at)
            outcome.note = f"gave up after {timeout:g} s without progress" + (
                f" (last error: {reason})" if reason else ""
            )
            return False
        progress.show(stats, failures.reason_since(progress_at))
        time.sleep(POLL)


def _progress_text(stats: TrackerStats, retrying: str | None) -> str:
    text = f"sent {stats.sent}, dead letters {stats.dead_lettered}, left {stats.queued}"
    return text + (f"; retrying: {retrying}" if retrying else "")


def _count_left(path: Path, outcomes: list[_Outcome]) -> int:
    """Note what each destination has left in the spool; returns the runs still unrecovered."""
    try:
        with SpoolFile(path) as spool:
            left = {d.key: d.queued for d in spool.destinations()}
            runs = [run for run in spool.open_runs() if run.interrupted and run.windows]
    except (sqlite3.Error, OSError) as exc:
        print(f"{PROG}: {path}: cannot count what is left ({exc})", file=sys.stderr)
        for outcome in outcomes:
            outcome.left = max(outcome.left, 1)  # unknown: never report success
        return 0
    for outcome in outcomes:
        outcome.left = left.get(destination(outcome.sensor, outcome.endpoint), 0)
    return len(runs)


def _print_summary(outcomes: list[_Outcome], unrecovered: int, out: TextIO) -> None:
    print(file=out)
    print(f"{'SENT':>6}  {'DEAD':>6}  {'LEFT':>6}  DESTINATION", file=out)
    for outcome in outcomes:
        print(
            f"{outcome.sent:>6}  {outcome.dead:>6}  {outcome.left:>6}  "
            f"{safe_url(outcome.endpoint)} (sensor {outcome.sensor})",
            file=out,
        )
        if outcome.note:
            print(f"{'':>24}{outcome.note}", file=out)
    if unrecovered:
        print(
            f"{_count(unrecovered, 'interrupted run')} still to recover: the next "
            "`timeback-tracker spool send` or start of the app queues their windows",
            file=out,
        )
    if any(outcome.dead for outcome in outcomes):
        print("dead letters: `timeback-tracker spool list --dead` shows why", file=out)


class _Failures:
    """The last delivery failure that will be retried, as ``on_error`` reports it."""

    def __init__(self) -> None:
        self._reason: str | None = None
        self._at = 0.0

    def note(self, failure: DeliveryFailure) -> None:
        """``on_error``: called from the delivery thread."""
        if failure.will_retry:
            self._reason, self._at = failure.reason, time.monotonic()

    def reason_since(self, moment: float) -> str | None:
        """The last failure's reason if it came after ``moment``."""
        return self._reason if self._at > moment else None


class _Progress:
    """One destination's progress: a bar redrawn in place on a terminal, plain lines otherwise.

    Plain lines come at most once a second, when something changed.
    """

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._tty = out.isatty()
        self._lock = threading.Lock()  # warnings come from the delivery thread
        self._bar = ""  # the line on screen (terminal)
        self._text = ""  # the last plain line printed
        self._printed_at = 0.0

    def show(self, stats: TrackerStats, retrying: str | None) -> None:
        """Show the counters now, and the reason of the failure being retried, if any."""
        with self._lock:
            if self._tty:
                done = stats.sent + stats.dead_lettered
                total = done + stats.queued
                filled = _BAR * done // total if total else _BAR
                line = f"  [{'#' * filled}{'-' * (_BAR - filled)}] {done}/{total}"
                if stats.dead_lettered:
                    line += f", {stats.dead_lettered} dead"
                if retrying:
                    line += f"  retrying: {retrying}"
                self._bar = line[: max(20, _terminal_columns() - 1)]
                self._out.write(f"\r{self._bar}\x1b[K")
                self._out.flush()
            else:
                text = _progress_text(stats, retrying)
                if text != self._text and time.monotonic() - self._printed_at >= 1.0:
                    self._plain(text)

    def message(self, text: str) -> None:
        """Print a line (a warning) to stderr, above the bar."""
        with self._lock:
            if self._tty and self._bar:
                self._out.write("\r\x1b[K")
                self._out.flush()
            print(text, file=sys.stderr, flush=True)
            if self._tty and self._bar:
                self._out.write(self._bar)
                self._out.flush()

    def finish(self, text: str) -> None:
        """Show the final counters and end the bar's line."""
        with self._lock:
            if self._tty:
                if self._bar:
                    self._out.write(f"\r  {text}\x1b[K\n")
                    self._out.flush()
                    self._bar = ""
            elif text != self._text:
                self._plain(text)

    def _plain(self, text: str) -> None:
        print(f"  {text}", file=self._out, flush=True)
        self._text, self._printed_at = text, time.monotonic()


class _WarningsAbove(logging.Handler):
    """The library's warnings while sending, printed above the progress bar."""

    def __init__(self, progress: _Progress) -> None:
        super().__init__(logging.WARNING)
        self._progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        """Print the record's message as ``warning: ...``."""
        try:
            text = record.getMessage()
            if len(text) > _WARNING_CHARS:  # the library lists every event id
                text = text[: _WARNING_CHARS - 1] + "…"
            self._progress.message(f"warning: {text}")
        except Exception:  # noqa: BLE001 - logging must never raise into the library
            self.handleError(record)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _terminal_columns() -> int:
    """The terminal's width; 80 when it says 0 (a new pseudo-terminal; Python 3.10 passes
    that 0 on, later versions fall back)."""
    return shutil.get_terminal_size().columns or 80
