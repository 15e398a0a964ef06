"""What the collector's page shows: the runs behind the accepted events, and the rejections.

:class:`RunBook` is fed every event the collector accepts (with its outcome:
new, a re-send, or a re-send with different content) and every request it
refuses, and answers the page's JSON API: an overview of every run
(``/api/runs``), one run's timeline (``/api/runs/<id>``) and one rejected
request with its body (``/api/rejections/<n>``). All times in the API are
wire timestamps (``...mmmZ``) or seconds.

The collector sees only what arrives, so a run's state is inferred:

* ``completed``: its ActivityEvent/Completed arrived.
* ``running``: an event of it arrived within the last two windows (+5 s), plus
  the time an app with a spool holds a running session's windows back to send
  several at once (3.5 windows, at most a minute).
* ``ended``: nothing since, and its last window was cut short, as ``end()``,
  closing the app or the inactive cutoff cut it: it stopped without completion.
* ``stale``: nothing since, and its last window was a full one: the app
  stopped reporting mid-run (a crash, no network, the machine asleep); what
  it still holds may arrive later.

Emails and names of students are replaced by ``"(hidden)"`` unless the book
was made with ``show_pii=True``.
"""

from __future__ import annotations

import collections
import json
import math
import statistics
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, Final

import attrs

from timeback_tracker._delivery import hold_seconds
from timeback_tracker._serialization import format_timestamp, parse_timestamp
from timeback_tracker.models import COMPLETED_TYPE

__all__ = ["HIDDEN", "NO_RUN_ID", "RunBook"]

HIDDEN: Final = "(hidden)"
NO_RUN_ID: Final = "-"  # the key of events that carry no extensions.runId
_MAX_REJECTIONS: Final = 100  # kept for the page; older ones are forgotten
_MAX_BODY_SHOWN: Final = 256 * 1024  # a rejected body larger than this is not kept
_SLACK: Final = 0.001  # seconds: wire timestamps have millisecond precision
_GRACE_WINDOWS: Final = 2
_GRACE_SECONDS: Final = 5.0
_DEFAULT_WINDOW: Final = 15.0  # the tracker's default heartbeat, when no window tells
_SHORT: Final = 0.9  # a last window below this share of the usual one was cut short

JSONObject = dict[str, Any]


@attrs.define
class _Copy:
    """One event id of a run: its first content, when it came, and what came again."""

    event: JSONObject
    run_key: str
    received: float
    resends: int = 0
    conflicting: list[JSONObject] = attrs.Factory(list)
    window: _Window | None = None  # its figures, worked out once (the content never changes)


@attrs.define
class _Window:
    """The figures of one TimeSpentEvent, in epoch seconds."""

    copy: _Copy
    start: float
    end: float
    active: float
    inactive: float
    other: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@attrs.define
class _Run:
    run_id: str
    first_received: float
    last_received: float
    windows: dict[str, _Copy] = attrs.Factory(dict)
    completions: dict[str, _Copy] = attrs.Factory(dict)
    version: int = 0


class RunBook:
    """The runs and rejections the collector's page shows; thread-safe.

    Args:
        show_pii: Show students' emails and names (hidden otherwise).
    """

    def __init__(self, *, show_pii: bool = False) -> None:
        self.show_pii = show_pii
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}
        self._copies: dict[str, _Copy] = {}
        self._rejections: collections.deque[JSONObject] = collections.deque(maxlen=_MAX_REJECTIONS)
        self._bodies: dict[int, Any] = {}
        self._rejected = 0
        self._version = 0

    def add(self, event: JSONObject, outcome: str, received: float) -> None:
        """Note one accepted event.

        Args:
            event: Its wire JSON (validated by the collector).
            outcome: ``"new"``, ``"duplicate"`` or ``"conflict"``.
            received: When it arrived, in epoch seconds.
        """
        extensions = event.get("extensions")
        run_id = extensions.get("runId") if isinstance(extensions, dict) else None
        key = run_id if isinstance(run_id, str) and run_id else NO_RUN_ID
        with self._lock:
            self._version += 1
            copy = self._copies.get(event["id"])
            if copy is not None and outcome != "new":
                copy.resends += 1
                if outcome == "conflict":
                    copy.conflicting.append(event)
                key = copy.run_key  # a re-send belongs to the run of its first copy
            run = self._runs.get(key)
            if run is None:
                run = self._runs[key] = _Run(key, received, received)
            run.last_received = max(run.last_received, received)
            run.version += 1
            if copy is None or outcome == "new":
                copy = self._copies[event["id"]] = _Copy(event, key, received)
                kind = run.completions if event.get("type") == COMPLETED_TYPE else run.windows
                kind[event["id"]] = copy

    def reject(
        self,
        *,
        received: float,
        status: int | None,
        reason: str | None,
        problems: tuple[tuple[str, str], ...],
        event_ids: tuple[str, ...],
        event_count: int,
        body: bytes | None,
    ) -> None:
        """Note a request to the events endpoint that was refused, failed or dropped.

        Args:
            received: When it arrived, in epoch seconds.
            status: The status answered; None when the connection was dropped.
            reason: Why, as in :attr:`RequestRecord.reason`.
            problems: For an invalid envelope, each ``(JSON path, rule)``.
            event_ids: The ids of its events.
            event_count: How many items its ``data`` held.
            body: The request body, kept (when small and JSON) for the page.
        """
        document = None
        if body is not None and len(body) <= _MAX_BODY_SHOWN:
            try:
                document = json.loads(body)
            except ValueError:
                document = None
        with self._lock:
            self._version += 1
            self._rejected += 1
            number = self._rejected
            self._rejections.appendleft(
                {
                    "number": number,
                    "received": _timestamp(received),
                    "status": status,
                    "reason": reason,
                    "problems": [{"path": path, "rule": rule} for path, rule in problems],
                    "eventIds": list(event_ids),
                    "eventCount": event_count,
                    "hasBody": document is not None,
                }
            )
            self._bodies[number] = document
            self._bodies.pop(number - _MAX_REJECTIONS, None)

    def reset(self) -> None:
        """Forget every run and rejection."""
        with self._lock:
            self._version += 1
            self._runs.clear()
            self._copies.clear()
            self._rejections.clear()
            self._bodies.clear()

    # ------------------------------------------------------------------ the API

    def overview(self, now: float) -> JSONObject:
        """The answer of ``GET /api/runs``: counts, every run newest first, the rejections.

        Args:
            now: The current time, in epoch seconds (states depend on it).
        """
        with self._lock:
            runs = sorted(self._runs.values(), key=lambda run: -run.first_received)
            figures = {run.run_id: _windows(run) for run in runs}
            usual = _usual_window(figures.values())
            copies = self._copies.values()
            return {
                "now": _timestamp(now),
                "version": self._version,
                "showPii": self.show_pii,
                "events": len(self._copies),
                "duplicates": sum(copy.resends for copy in copies),
                "conflicts": sum(1 for copy in copies if copy.conflicting),
                "rejected": self._rejected,
                "runs": [self._summary(run, figures[run.run_id], usual, now) for run in runs],
                "rejections": list(self._rejections),
            }

    def detail(self, run_id: str, now: float) -> JSONObject | None:
        """The answer of ``GET /api/runs/<id>``: a run's summary, timeline and events.

        Args:
            run_id: The run's ``extensions.runId`` (``-`` for events without one).
            now: The current time, in epoch seconds.

        Returns:
            The run, or None when the book has no such run.
        """
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                return None
            windows = _windows(run)
            usual = _usual_window(_windows(other) for other in self._runs.values())
            result = self._summary(run, windows, usual, now)
            result["timeline"] = _timeline(run, windows)
            copies = [*run.windows.values(), *run.completions.values()]
            result["events"] = {copy.event["id"]: self._shown(copy.event) for copy in copies}
            result["conflictingCopies"] = {
                copy.event["id"]: [self._shown(other) for other in copy.conflicting]
                for copy in copies
                if copy.conflicting
            }
            return result

    def rejection(self, number: int) -> JSONObject | None:
        """The answer of ``GET /api/rejections/<n>``: one rejection with its body, if kept."""
        with self._lock:
            found = next((r for r in self._rejections if r["number"] == number), None)
            if found is None:
                return None
            body = self._bodies.get(number)
            return {**found, "body": None if body is None else self._shown(body)}

    # ------------------------------------------------------------------ building

    def _summary(
        self, run: _Run, windows: list[_Window], usual: float | None, now: float
    ) -> JSONObject:
        copies = [*run.windows.values(), *run.completions.values()]
        first = copies[0].event
        completion = next(iter(run.completions.values()), None)
        own = _usual_window([windows[:-1]]) or usual
        state, why = _state(run, windows, own, now)
        return {
            "runId": run.run_id,
            "state": state,
            "stateReason": why,
            "student": self._student(first.get("actor")),
            "activity": _activity(first),
            "activeSeconds": round(math.fsum(w.active for w in windows), 3),
            "inactiveSeconds": round(math.fsum(w.inactive for w in windows), 3),
            "otherSeconds": round(math.fsum(w.other for w in windows), 3),
            "windows": len(windows),
            **_metrics(None if completion is None else completion.event),
            "completions": len(run.completions),
            "firstReceived": _timestamp(run.first_received),
            "lastReceived": _timestamp(run.last_received),
            "quietSeconds": round(max(0.0, now - run.last_received), 3),
            "usualWindowSeconds": None if own is None else round(own, 3),
            "duplicates": sum(copy.resends for copy in copies),
            "conflicts": sum(1 for copy in copies if copy.conflicting),
            "version": run.version,
        }

    def _student(self, actor: object) -> JSONObject:
        actor = actor if isinstance(actor, dict) else {}
        student = {"id": actor.get("id")}
        if self.show_pii:
            student |= {"email": actor.get("email"), "name": actor.get("name")}
        return student

    def _shown(self, value: Any) -> Any:
        return value if self.show_pii else _mask(value)


def _mask(value: Any, *, in_actor: bool = False) -> Any:
    """A copy of ``value`` with every ``email`` (and an actor's ``name``) hidden."""
    if isinstance(value, dict):
        return {
            key: HIDDEN
            if key == "email" or (in_actor and key == "name")
            else _mask(item, in_actor=key == "actor")
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_mask(item) for item in value]
    return value


def _timestamp(epoch: float) -> str:
    return format_timestamp(datetime.fromtimestamp(epoch, tz=timezone.utc))


def _epoch(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return parse_timestamp(text).timestamp()
    except ValueError:
        return None


def _items(event: JSONObject) -> list[JSONObject]:
    generated = event.get("generated")
    items = generated.get("items") if isinstance(generated, dict) else None
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _value(item: JSONObject) -> float:
    value = item.get("value")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _windows(run: _Run) -> list[_Window]:
    """The run's windows in time order."""
    return sorted(map(_figures, run.windows.values()), key=lambda w: (w.start, w.end))


def _figures(copy: _Copy) -> _Window:
    """A TimeSpentEvent's figures (a window without dates ends at its eventTime)."""
    if copy.window is None:
        items = _items(copy.event)
        sums = {"active": 0.0, "inactive": 0.0, "other": 0.0}
        for item in items:
            kind = item.get("type")
            sums[kind if kind in ("active", "inactive") else "other"] += _value(item)
        dated = next((i for i in items if _epoch(i.get("startDate")) is not None), {})
        end = _epoch(dated.get("endDate")) or _epoch(copy.event.get("eventTime")) or copy.received
        start = _epoch(dated.get("startDate")) or end - math.fsum(sums.values())
        copy.window = _Window(copy, start, end, sums["active"], sums["inactive"], sums["other"])
    return copy.window


def _usual_window(runs: Iterator[list[_Window]] | Any) -> float | None:
    """The median length of windows: the heartbeat interval, as the collector sees it."""
    lengths = [window.seconds for windows in runs for window in windows if window.seconds > 0]
    return statistics.median(lengths) if lengths else None


def _state(run: _Run, windows: list[_Window], usual: float | None, now: float) -> tuple[str, str]:
    if run.completions:
        return "completed", "its completion arrived"
    interval = usual or _DEFAULT_WINDOW
    quiet = now - run.last_received
    if quiet <= hold_seconds(interval) + _GRACE_WINDOWS * interval + _GRACE_SECONDS:
        return "running", f"last event {quiet:.0f} s ago"
    last = max(windows, key=lambda window: window.end, default=None)
    if last is not None and usual is not None and last.seconds < _SHORT * usual:
        return "ended", (
            f"silent for {quiet:.0f} s after a window cut short (end(), the app closed, "
            "or the inactive cutoff), without completion"
        )
    return "stale", (
        f"silent for {quiet:.0f} s after a full window: a crash, no network or sleep? "
        "Queued events may still arrive"
    )


def _activity(event: JSONObject) -> JSONObject:
    context = event.get("object")
    context = context if isinstance(context, dict) else {}

    def name(key: str) -> object:
        part = context.get(key)
        return part.get("name") if isinstance(part, dict) else None

    extensions = event.get("extensions")
    course_id = extensions.get("courseId") if isinstance(extensions, dict) else None
    return {
        "id": context.get("id"),
        "subject": context.get("subject"),
        "app": name("app"),
        "course": name("course"),
        "activity": name("activity"),
        "courseId": course_id,
    }


def _metrics(completion: JSONObject | None) -> JSONObject:
    values: dict[str, Any] = {
        "xpEarned": None,
        "totalQuestions": None,
        "correctQuestions": None,
        "masteredUnits": None,
        "pctComplete": None,
    }
    if completion is None:
        return values
    for item in _items(completion):
        if item.get("type") in values:
            values[str(item["type"])] = item.get("value")
    generated = completion.get("generated")
    extensions = generated.get("extensions") if isinstance(generated, dict) else None
    if isinstance(extensions, dict):
        values["pctComplete"] = extensions.get("pctCompleteApp")
    return values


def _timeline(run: _Run, windows: list[_Window]) -> JSONObject:
    """Each window, gap and the completion placed on one axis, in seconds from its start."""
    completions = [
        (copy, _epoch(copy.event.get("eventTime")) or copy.received)
        for copy in run.completions.values()
    ]
    starts = [w.start for w in windows] + [at for _, at in completions]
    ends = [w.end for w in windows] + [at for _, at in completions]
    origin, finish = min(starts), max(ends)
    overlapping: set[int] = set()
    gaps = []
    reach = -math.inf  # the latest end so far: a window starting before it overlaps
    for index, window in enumerate(windows):
        if index and window.start < reach - _SLACK:
            overlapping |= {index, index - 1}
        elif index and window.start > reach + _SLACK:
            gaps.append(
                {
                    "start": _timestamp(reach),
                    "end": _timestamp(window.start),
                    "offset": round(reach - origin, 3),
                    "seconds": round(window.start - reach, 3),
                }
            )
        reach = max(reach, window.end)
    return {
        "start": _timestamp(origin),
        "end": _timestamp(finish),
        "seconds": round(finish - origin, 3),
        "windows": [
            {
                "id": window.copy.event["id"],
                "number": index + 1,
                "start": _timestamp(window.start),
                "end": _timestamp(window.end),
                "offset": round(window.start - origin, 3),
                "seconds": round(window.seconds, 3),
                "active": round(window.active, 3),
                "inactive": round(window.inactive, 3),
                "other": round(window.other, 3),
                "received": _timestamp(window.copy.received),
                "resends": window.copy.resends,
                "conflict": bool(window.copy.conflicting),
                "overlaps": index in overlapping,
            }
            for index, window in enumerate(windows)
        ],
        "gaps": gaps,
        "completions": [
            {
                "id": copy.event["id"],
                "at": _timestamp(at),
                "offset": round(at - origin, 3),
                "received": _timestamp(copy.received),
                "resends": copy.resends,
                "conflict": bool(copy.conflicting),
            }
            for copy, at in completions
        ],
    }
