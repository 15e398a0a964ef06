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

import functools
import hashlib
import json
import math
import time
import uuid
from typing import Any

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


def uuid5_text(namespace: bytes, name: str) -> str:
    """``str(uuid.uuid5(UUID(bytes=namespace), name))``, without building UUID objects."""
    h = hashlib.sha1(namespace + name.encode(), usedforsecurity=False).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


def time_spent_event_id(run_id: uuid.UUID, segment: str, first_seq: int, last_seq: int) -> str:
    """The id of window ``first_seq`` of a run segment (or of windows first..last merged)."""
    span = str(first_seq) if last_seq == first_seq else f"{first_seq}-{last_seq}"
    return "urn:uuid:" + uuid5_text(run_id.bytes, f"time-spent/{segment}/{span}")


def completion_event_id(run_id: uuid.UUID) -> str:
    """The id of a run's ActivityCompletedEvent: one per run, whatever its segments."""
    return "urn:uuid:" + uuid5_text(run_id.bytes, "activity-completed")


def generated_id(event_id: str) -> str:
    """The id of an event's ``generated`` collection, derived from the event id."""
    return "urn:uuid:" + uuid5_text(_GENERATED_NAMESPACE, event_id + "#generated")


def new_segment() -> str:
    """A fresh segment token: 12 random hex digits, unique per ``start_session()``."""
    return uuid.uuid4().hex[:12]


@functools.lru_cache(maxsize=256)
def _second_text(epoch_seconds: int) -> str:
    # Consecutive windows share most of their seconds: a small cache halves the cost.
    t = time.gmtime(epoch_seconds)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
        f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    )


def format_ms(epoch_ms: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` of epoch milliseconds (UTC), as the wire carries it."""
    seconds, millis = divmod(epoch_ms, 1000)
    return f"{_second_text(seconds)}.{millis:03d}Z"


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

    __slots__ = ("_head", "_tail", "course_id", "run", "run_id", "segment")

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
        event_id = time_spent_event_id(self.run, self.segment, first_seq, last_seq)
        start, end = format_ms(start_ms), format_ms(end_ms)
        span = f'"startDate":"{start}","endDate":"{end}"'
        return event_id, (
            f'{{"@context":"{CALIPER_CONTEXT}","id":"{event_id}","type":"TimeSpentEvent",'
            f'"action":"SpentTime","profile":"TimebackProfile","eventTime":"{end}",'
            f'{self._head},"generated":{{"id":"{generated_id(event_id)}",'
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
