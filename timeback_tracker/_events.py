"""The event path: a run's events as wire JSON text, rendered once from integers.

A session's constant parts (student, activity, course, run, segment) are
validated once, at ``start_session()``, and rendered once into a
:class:`RunTemplate`. A window is then five integers (sequence, start, end,
active and inactive milliseconds); its wire JSON is the template with those
numbers filled in: no model objects, no validation, no ``json`` round trip.
The result is byte for byte what :func:`timeback_tracker.dump` of the
equivalent validated model gives, serialised compactly (a test compares them
over many random windows), so the fast path cannot drift from the model.

Event ids are deterministic, so that an event rebuilt after a crash, or sent
again after a timeout, keeps its id: a window's id is derived from its run,
the run's *segment* (one per ``start_session()``, so that a resumed run never
reuses the ids of its earlier segments) and its sequence number; a run's
completion id from the run alone, so a run has at most one.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from typing import Any, Protocol

from timeback_tracker._rules import count_problem, number_problem, wire_number
from timeback_tracker.models import (
    CALIPER_CONTEXT,
    ActivityMetric,
    ActivityMetricsCollection,
    ActivityMetricType,
    TimebackActivityContext,
    TimebackUser,
)

__all__ = [
    "RunTemplate",
    "completion_event_id",
    "format_ms",
    "new_segment",
    "time_spent_event_id",
    "uuid5_text",
]

_GENERATED_NAMESPACE = uuid.UUID("6f1d8a52-3c4e-5b7a-9d2e-1a0b9c8d7e6f").bytes
"""Namespace of the ``generated`` collection ids (as in :mod:`timeback_tracker.models`)."""


# The RFC 4122 variant bits (10xx) set on the first hex digit of the fourth group.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


class _Sha1(Protocol):
    """What the ids need of a ``hashlib`` SHA-1 object."""

    def copy(self) -> _Sha1: ...
    def update(self, data: bytes, /) -> None: ...
    def hexdigest(self) -> str: ...


def _uuid5_format(sha1_hex: str) -> str:
    """The UUID text of version 5 of a SHA-1 hex digest (RFC 4122 section 4.3)."""
    x = sha1_hex
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}"


def _uuid5_of(prefix: _Sha1, name: bytes) -> str:
    """The uuid5 text of ``name`` hashed after ``prefix`` (a SHA-1 fed the namespace).

    Copying a SHA-1 that already holds the namespace (and any constant start of
    the name) hashes only what differs, and gives the same digest as hashing it
    all. ``prefix`` is only copied, never updated, so threads may share it.
    """
    h = prefix.copy()
    h.update(name)
    return _uuid5_format(h.hexdigest())


def _sha1(data: bytes) -> _Sha1:
    return hashlib.sha1(data, usedforsecurity=False)


def uuid5_text(namespace: bytes, name: str) -> str:
    """``str(uuid.uuid5(UUID(bytes=namespace), name))``, without building UUID objects."""
    return _uuid5_format(_sha1(namespace + name.encode()).hexdigest())


def _time_spent_prefix(run_id: uuid.UUID, segment: str) -> _Sha1:
    """The SHA-1 fed the constant start of a run segment's window ids (see below)."""
    return _sha1(run_id.bytes + f"time-spent/{segment}/".encode())


def _span(first_seq: int, last_seq: int) -> bytes:
    """The end of a window id's name: ``7`` for window 7, ``7-9`` for windows 7..9 merged."""
    return b"%d" % first_seq if last_seq == first_seq else b"%d-%d" % (first_seq, last_seq)


def time_spent_event_id(run_id: uuid.UUID, segment: str, first_seq: int, last_seq: int) -> str:
    """The id of window ``first_seq`` of a run segment (or of windows first..last merged).

    It is ``urn:uuid:`` + uuid5(run id, ``time-spent/<segment>/<span>``), the
    same value whatever the path that computes it (a crash recovery rebuilds it).
    """
    name = f"time-spent/{segment}/".encode() + _span(first_seq, last_seq)
    return "urn:uuid:" + _uuid5_format(_sha1(run_id.bytes + name).hexdigest())


def completion_event_id(run_id: uuid.UUID) -> str:
    """The id of a run's ActivityCompletedEvent: one per run, whatever its segments."""
    return "urn:uuid:" + uuid5_text(run_id.bytes, "activity-completed")


_GENERATED = _sha1(_GENERATED_NAMESPACE)


def generated_id(event_id: str) -> str:
    """The id of an event's ``generated`` collection, derived from the event id."""
    return "urn:uuid:" + _uuid5_of(_GENERATED, (event_id + "#generated").encode())


def new_segment() -> str:
    """A fresh segment token: 12 random hex digits, unique per ``start_session()``."""
    return uuid.uuid4().hex[:12]


_MS_PER_DAY = 86_400_000
_DATES: dict[int, str] = {}
"""``YYYY-MM-DDT`` of recent days since the epoch (the only part that needs a calendar)."""
_DATES_KEPT = 64
# The time of day as table look-ups: 1,144 short strings (about 60 KB), built once.
_HOURS = tuple(f"{n:02d}:" for n in range(24))
_MINUTES = tuple(f"{n:02d}:" for n in range(60))
_SECONDS = tuple(f"{n:02d}" for n in range(60))
_MILLIS = tuple(f".{n:03d}Z" for n in range(1000))


def _date_text(day: int) -> str:
    t = time.gmtime(day * 86_400)
    text = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
    if len(_DATES) >= _DATES_KEPT:
        _DATES.clear()  # a process sees a few days; random dates in tests, many
    _DATES[day] = text
    return text


def format_ms(epoch_ms: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` of epoch milliseconds (UTC), as the wire carries it.

    Integer arithmetic and table look-ups (0.4 µs; ``time.gmtime`` and
    formatting took 2.5); only the date needs a calendar, once per day. A test
    pins it to :mod:`datetime` over random instants, leap days and year ends.
    """
    day, rest = divmod(epoch_ms, _MS_PER_DAY)
    hour, rest = divmod(rest, 3_600_000)
    minute, rest = divmod(rest, 60_000)
    second, millis = divmod(rest, 1000)
    date = _DATES.get(day) or _date_text(day)
    return f"{date}{_HOURS[hour]}{_MINUTES[minute]}{_SECONDS[second]}{_MILLIS[millis]}"


def seconds_text(ms: int) -> str:
    """Milliseconds as the JSON number of seconds the models send (``15``, ``12.5``, ``0.001``)."""
    whole, part = divmod(ms, 1000)
    return str(whole) if not part else repr(ms / 1000)


def _json_number(value: float) -> str:
    """A finite number as ``json.dumps`` writes it (a tenth of its time): it writes
    ints and floats, subclasses too, with ``int.__repr__`` and ``float.__repr__``."""
    return int.__repr__(value) if isinstance(value, int) else float.__repr__(value)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class RunTemplate:
    """The wire JSON of one run segment's events, with only the numbers left to fill in.

    Args:
        user: The student (validated).
        activity: The activity context (validated).
        run_id: The run's UUID.
        course_id: ``extensions.courseId``, if any.
        segment: This segment's token (see :func:`new_segment`).
    """

    __slots__ = ("_head", "_ids", "_last_end", "_tail", "course_id", "run", "run_id", "segment")

    def __init__(
        self,
        *,
        user: TimebackUser,
        activity: TimebackActivityContext,
        run_id: uuid.UUID,
        course_id: str | None,
        segment: str,
    ) -> None:
        self.run = run_id
        self.run_id = str(run_id)
        self.course_id = course_id
        self.segment = segment
        self._ids = _time_spent_prefix(run_id, segment)
        self._last_end = (-1, "")  # the end of the last window rendered, and its text
        from timeback_tracker._serialization import dump  # cattrs: at the first session

        extensions: dict[str, Any] = {"runId": self.run_id}
        if course_id is not None:
            extensions["courseId"] = course_id
        actor_object = f'"actor":{_compact(dump(user))},"object":{_compact(dump(activity))}'
        self._head = actor_object
        self._tail = f'"session":"urn:uuid:{self.run_id}","extensions":{_compact(extensions)}}}'

    def __repr__(self) -> str:
        return f"<RunTemplate run_id={self.run_id} segment={self.segment}>"

    # -- storage: a template is rebuilt from what the spool keeps --------------------------

    def to_json(self) -> str:
        """The template's constant parts as JSON text (for the spool)."""
        return _compact(
            {
                "run": self.run_id,
                "segment": self.segment,
                "course": self.course_id,
                "head": self._head,
                "tail": self._tail,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> RunTemplate:
        """The template :meth:`to_json` stored.

        Raises:
            ValueError: ``text`` is not a stored template.
        """
        try:
            parts = json.loads(text)
            template = cls.__new__(cls)
            template.run = uuid.UUID(parts["run"])
            template.run_id = str(template.run)
            template.segment = str(parts["segment"])
            template._ids = _time_spent_prefix(template.run, template.segment)
            template._last_end = (-1, "")
            template.course_id = parts["course"]
            template._head = str(parts["head"])
            template._tail = str(parts["tail"])
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a stored run template ({type(exc).__name__})") from None
        return template

    # -- events -------------------------------------------------------------------------

    def window(  # noqa: PLR0917 - the numbers of a window, in their natural order
        self,
        first_seq: int,
        last_seq: int,
        start_ms: int,
        end_ms: int,
        active_ms: int,
        inactive_ms: int,
    ) -> tuple[str, str]:
        """The id and wire JSON of the TimeSpentEvent of one window (or merged windows).

        The caller guarantees ``active_ms + inactive_ms == end_ms - start_ms``
        and each value within a day: the accounting and the merge rule do.
        """
        # time_spent_event_id() and generated_id(), from SHA-1s already fed their
        # constant parts: copied, never updated, so threads may share them.
        h = self._ids.copy()
        h.update(_span(first_seq, last_seq))
        event_id = "urn:uuid:" + _uuid5_format(h.hexdigest())
        h = _GENERATED.copy()
        h.update((event_id + "#generated").encode())
        collection_id = "urn:uuid:" + _uuid5_format(h.hexdigest())
        # A window starts where the segment's last one ended: its text is at hand.
        last_ms, last_text = self._last_end
        start = last_text if start_ms == last_ms else format_ms(start_ms)
        end = format_ms(end_ms)
        self._last_end = (end_ms, end)
        span = f'"startDate":"{start}","endDate":"{end}"'
        return event_id, (
            f'{{"@context":"{CALIPER_CONTEXT}","id":"{event_id}","type":"TimeSpentEvent",'
            f'"action":"SpentTime","profile":"TimebackProfile","eventTime":"{end}",'
            f'{self._head},"generated":{{"id":"{collection_id}",'
            f'"type":"TimebackTimeSpentMetricsCollection","items":['
            f'{{"type":"active","value":{seconds_text(active_ms)},{span}}},'
            f'{{"type":"inactive","value":{seconds_text(inactive_ms)},{span}}}]}},'
            f"{self._tail}"
        )

    def completion(
        self,
        event_time_ms: int,
        *,
        xp_earned: float,
        total_questions: int | None = None,
        correct_questions: int | None = None,
        mastered_units: int | None = None,
        pct_complete: float | None = None,
    ) -> tuple[str, str]:
        """The id and wire JSON of the run's ActivityCompletedEvent.

        The metrics are validated by the models' own rules.

        Raises:
            ValidationError: A metric breaks a rule; the message names it.
        """
        event_id = completion_event_id(self.run)
        generated = _metrics_json(
            generated_id(event_id),
            xp_earned,
            total_questions,
            correct_questions,
            mastered_units,
            pct_complete,
        )
        if generated is None:
            generated = self._validated_metrics_json(
                generated_id(event_id),
                xp_earned,
                total_questions,
                correct_questions,
                mastered_units,
                pct_complete,
            )
        return event_id, (
            f'{{"@context":"{CALIPER_CONTEXT}","id":"{event_id}","type":"ActivityEvent",'
            f'"action":"Completed","profile":"TimebackProfile",'
            f'"eventTime":"{format_ms(event_time_ms)}",{self._head},'
            f'"generated":{generated},{self._tail}'
        )

    @staticmethod
    def _validated_metrics_json(  # noqa: PLR0917 - the metrics, in their natural order
        collection_id: str,
        xp_earned: float,
        total_questions: int | None,
        correct_questions: int | None,
        mastered_units: int | None,
        pct_complete: float | None,
    ) -> str:
        """The ``generated`` collection through the models: raises their ValidationError."""
        from timeback_tracker._serialization import dump

        metrics = (
            (ActivityMetricType.XP_EARNED, xp_earned),
            (ActivityMetricType.TOTAL_QUESTIONS, total_questions),
            (ActivityMetricType.CORRECT_QUESTIONS, correct_questions),
            (ActivityMetricType.MASTERED_UNITS, mastered_units),
        )
        generated = ActivityMetricsCollection(
            id=collection_id,
            items=[
                ActivityMetric(type=kind, value=value)
                for kind, value in metrics
                if value is not None
            ],
            extensions=None if pct_complete is None else {"pctCompleteApp": pct_complete},
        )
        return _compact(dump(generated))


def _metrics_json(  # noqa: PLR0917 - the metrics, in their natural order
    collection_id: str,
    xp_earned: float,
    total_questions: int | None,
    correct_questions: int | None,
    mastered_units: int | None,
    pct_complete: float | None,
) -> str | None:
    """The ``generated`` collection of a completion, straight from valid metrics.

    The models' rules, checked without building the models (a third of
    ``complete()``'s time went to them and to cattrs). Returns None when any
    metric breaks a rule: the models then build the collection and raise
    their error, with its message. A test compares the two over random metrics.
    """
    counts = (
        ("totalQuestions", total_questions),
        ("correctQuestions", correct_questions),
        ("masteredUnits", mastered_units),
    )
    if (
        number_problem(xp_earned, -math.inf, math.inf)
        or any(value is not None and count_problem(value) for _, value in counts)
        or (total_questions is None) != (correct_questions is None)
        or (pct_complete is not None and number_problem(pct_complete, 0, 100))
    ):
        return None
    if total_questions is not None and correct_questions > total_questions:  # type: ignore[operator]
        return None
    # Metric values are float-typed in the model (80.0 goes as 80); pctCompleteApp,
    # an extension, goes as given.
    items = f'{{"type":"xpEarned","value":{_json_number(wire_number(xp_earned))}}}' + "".join(
        f',{{"type":"{name}","value":{_json_number(wire_number(value))}}}'
        for name, value in counts
        if value is not None
    )
    extensions = (
        ""
        if pct_complete is None
        else f',"extensions":{{"pctCompleteApp":{_json_number(pct_complete)}}}'
    )
    return (
        f'{{"id":"{collection_id}","type":"TimebackActivityMetricsCollection",'
        f'"items":[{items}]{extensions}}}'
    )
