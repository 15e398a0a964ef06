"""The Caliper 1.2 entities and the two Timeback events, validated at construction.

Every class is a frozen attrs class whose fields mirror the wire JSON
(``snake_case`` here, ``camelCase`` on the wire; see :func:`timeback_tracker.dump`).
Constructing one with a value that breaks a rule of the Timeback Caliper API
raises :class:`~timeback_tracker.ValidationError` naming every bad field. Each
field names its rule (built from ``_rules.py``) in its attrs metadata, which
``_field_rules.py`` reads for both the constructor and
:func:`timeback_tracker.load`: building a model and loading one cannot differ.

One module for the whole model, though longer than the ~600 lines other
modules keep to: the entities, the metrics and the two events are one
vocabulary, read together against the wire reference, and most of the length
is field declarations and docstrings.
"""

from __future__ import annotations

import enum
import functools
import math
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any, Final, Literal

import attrs

from timeback_tracker._field_rules import Model, check, instance_of, rich_rule, rule
from timeback_tracker._rules import (
    DAY_SECONDS,
    count_problem,
    datetime_problem,
    email_problem,
    enum_problem,
    extensions_problem,
    iri_problem,
    is_uuid,
    number_problem,
    text_problem,
    urn_uuid_problem,
)
from timeback_tracker.exceptions import ValidationError

__all__ = [
    "CALIPER_CONTEXT",
    "Activity",
    "ActivityCompletedEvent",
    "ActivityMetric",
    "ActivityMetricType",
    "ActivityMetricsCollection",
    "App",
    "Course",
    "Envelope",
    "Event",
    "Role",
    "Subject",
    "TimeMetric",
    "TimeMetricType",
    "TimeSpentEvent",
    "TimeSpentMetricsCollection",
    "TimebackActivityContext",
    "TimebackUser",
]

CALIPER_CONTEXT: Final = "http://purl.imsglobal.org/ctx/caliper/v1p2"
TIME_SPENT_TYPE: Final = "TimeSpentEvent"
"""The wire ``type`` of a :class:`TimeSpentEvent`."""
COMPLETED_TYPE: Final = "ActivityEvent"
"""The wire ``type`` of an :class:`ActivityCompletedEvent` (its ``action`` is ``Completed``)."""
MAX_SECONDS: Final = DAY_SECONDS

_GENERATED_NAMESPACE: Final = uuid.UUID("6f1d8a52-3c4e-5b7a-9d2e-1a0b9c8d7e6f")


class Subject(str, enum.Enum):
    """The subject of an activity; values are the exact wire strings."""

    READING = "Reading"
    LANGUAGE = "Language"
    VOCABULARY = "Vocabulary"
    SOCIAL_STUDIES = "Social Studies"
    WRITING = "Writing"
    SCIENCE = "Science"
    FAST_MATH = "FastMath"
    MATH = "Math"
    NONE = "None"
    OTHER = "Other"


class Role(str, enum.Enum):
    """The role of a Timeback user; values are the exact wire strings."""

    STUDENT = "student"
    TEACHER = "teacher"
    ADMIN = "admin"
    GUIDE = "guide"


class TimeMetricType(str, enum.Enum):
    """Categories of time in a TimeSpentEvent."""

    ACTIVE = "active"
    INACTIVE = "inactive"
    WASTE = "waste"
    UNKNOWN = "unknown"
    ANTI_PATTERN = "anti-pattern"


class ActivityMetricType(str, enum.Enum):
    """Metrics of an ActivityCompletedEvent."""

    XP_EARNED = "xpEarned"
    TOTAL_QUESTIONS = "totalQuestions"
    CORRECT_QUESTIONS = "correctQuestions"
    MASTERED_UNITS = "masteredUnits"


# --------------------------------------------------------------------------
# Converters normalise what is unambiguous and leave anything else as it is,
# for __attrs_post_init__ to report together with every other bad field.


def _coerce_enum(enum_cls: type[enum.Enum], value: object) -> Any:
    try:
        return enum_cls(value)
    except ValueError:
        return value


def _to_role(value: Role | str | None) -> Role | None:
    return None if value is None else _coerce_enum(Role, value)


def _to_subject(value: Subject | str) -> Subject:
    return _coerce_enum(Subject, value)  # type: ignore[no-any-return]


def _to_time_metric_type(value: TimeMetricType | str) -> TimeMetricType:
    return _coerce_enum(TimeMetricType, value)  # type: ignore[no-any-return]


def _to_activity_metric_type(value: ActivityMetricType | str) -> ActivityMetricType:
    return _coerce_enum(ActivityMetricType, value)  # type: ignore[no-any-return]


def _to_utc_ms(value: datetime) -> datetime:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        return value
    # The wire carries milliseconds; normalising here keeps load(dump(e)) == e.
    value = value.astimezone(timezone.utc)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _to_optional_utc_ms(value: datetime | None) -> datetime | None:
    return None if value is None else _to_utc_ms(value)


def _to_time_metrics(items: Iterable[TimeMetric]) -> tuple[TimeMetric, ...]:
    return tuple(items)


def _to_activity_metrics(items: Iterable[ActivityMetric]) -> tuple[ActivityMetric, ...]:
    return tuple(items)


def _to_events(items: Iterable[Event]) -> tuple[Event, ...]:
    return tuple(items)


def _extensions(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, Mapping) else value


def _redacted(_: object) -> str:
    return "'<redacted>'"


# --------------------------------------------------------------------------
# Entities


@attrs.frozen(kw_only=True)
class TimebackUser(Model):
    """The student (or other user) who performed the action: the event's ``actor``.

    Args:
        id: URL of the user, ideally their OneRoster user URL.
        email: The user's email address (masked in ``repr``).
        name: Display name.
        role: ``student``, ``teacher``, ``admin`` or ``guide`` (a :class:`Role` or string).
    """

    id: str = attrs.field(metadata=rule(iri_problem))
    type: Literal["TimebackUser"] = "TimebackUser"
    email: str = attrs.field(repr=_redacted, metadata=rule(email_problem))
    name: str | None = attrs.field(default=None, metadata=rule(text_problem))
    role: Role | None = attrs.field(
        default=None, converter=_to_role, metadata=rule(functools.partial(enum_problem, Role))
    )


@attrs.frozen(kw_only=True)
class _Named(Model):
    """What App, Course and Activity share: a name, an optional URL, extensions."""

    name: str = attrs.field(metadata=rule(text_problem))
    id: str | None = attrs.field(default=None, metadata=rule(iri_problem))
    extensions: dict[str, Any] | None = attrs.field(
        default=None, converter=_extensions, metadata=rule(extensions_problem)
    )


@attrs.frozen(kw_only=True)
class App(_Named):
    """The application the activity runs in.

    Args:
        name: Display name of the app (required).
        id: URL of the app.
        extensions: Extra attributes, sent as given.
    """


@attrs.frozen(kw_only=True)
class Course(_Named):
    """The course an activity belongs to.

    Args:
        name: Display name of the course (required).
        id: URL of the course.
        extensions: Extra attributes, sent as given.
    """


@attrs.frozen(kw_only=True)
class Activity(_Named):
    """The specific activity (lesson, quiz, ...) inside an app.

    Args:
        name: Display name of the activity (required).
        id: URL of the activity.
        extensions: Extra attributes, sent as given.
    """


def _boolean_problem(value: object) -> str | None:
    # `in (True, False)` would let 0 and 1 through, and they go on the wire as numbers.
    return None if isinstance(value, bool) else "must be a boolean"


@attrs.frozen(kw_only=True)
class TimebackActivityContext(Model):
    """Where the event was recorded: the event's ``object``.

    Args:
        id: URL of the activity.
        subject: A :class:`Subject` or its exact wire string (e.g. ``"Math"``).
        app: The application.
        course: The course, if any.
        activity: The specific activity, if any.
        process: Whether Timeback's ETL pipeline processes the event.
    """

    id: str = attrs.field(metadata=rule(iri_problem))
    type: Literal["TimebackActivityContext"] = "TimebackActivityContext"
    subject: Subject = attrs.field(
        converter=_to_subject, metadata=rule(functools.partial(enum_problem, Subject))
    )
    app: App = attrs.field(metadata=rule(instance_of(App)))
    course: Course | None = attrs.field(default=None, metadata=rule(instance_of(Course)))
    activity: Activity | None = attrs.field(default=None, metadata=rule(instance_of(Activity)))
    process: bool | None = attrs.field(default=None, metadata=rule(_boolean_problem))


# --------------------------------------------------------------------------
# Metrics


def _window_end_problems(end: Any, valid: Mapping[str, Any]) -> Iterator[tuple[str, str | None]]:
    problem = datetime_problem(end)
    start = valid.get("start_date")
    if problem is None and start is not None and start > end:
        problem = "must not be before startDate"
    yield "", problem


@attrs.frozen(kw_only=True)
class TimeMetric(Model):
    """Seconds of one category of time within a window.

    Args:
        type: ``active``, ``inactive``, ``waste``, ``unknown`` or ``anti-pattern``.
        value: Seconds, 0 <= value <= 86400.
        sub_type: Optional finer classification.
        start_date: Start of the window (timezone-aware).
        end_date: End of the window (timezone-aware).
        extensions: Extra attributes, sent as given.
    """

    type: TimeMetricType = attrs.field(
        converter=_to_time_metric_type,
        metadata=rule(functools.partial(enum_problem, TimeMetricType)),
    )
    value: float = attrs.field(metadata=rule(lambda value: number_problem(value, 0, MAX_SECONDS)))
    sub_type: str | None = attrs.field(default=None, metadata=rule(text_problem))
    start_date: datetime | None = attrs.field(
        default=None, converter=_to_optional_utc_ms, metadata=rule(datetime_problem)
    )
    end_date: datetime | None = attrs.field(
        default=None, converter=_to_optional_utc_ms, metadata=rich_rule(_window_end_problems)
    )
    extensions: dict[str, Any] | None = attrs.field(
        default=None, converter=_extensions, metadata=rule(extensions_problem)
    )


def _metric_value_problems(
    value: Any, valid: Mapping[str, Any]
) -> Iterator[tuple[str, str | None]]:
    # XP is any finite number; the other metrics count. Without a valid type, the rule all share.
    kind = valid.get("type", ActivityMetricType.XP_EARNED)
    counts = kind is not ActivityMetricType.XP_EARNED
    yield "", count_problem(value) if counts else number_problem(value, -math.inf, math.inf)


@attrs.frozen(kw_only=True)
class ActivityMetric(Model):
    """One completion metric: XP earned, questions, or mastered units.

    Args:
        type: ``xpEarned``, ``totalQuestions``, ``correctQuestions`` or ``masteredUnits``.
        value: The metric's value (finite; counts are whole numbers >= 0).
        extensions: Extra attributes, sent as given.
    """

    type: ActivityMetricType = attrs.field(
        converter=_to_activity_metric_type,
        metadata=rule(functools.partial(enum_problem, ActivityMetricType)),
    )
    value: float = attrs.field(metadata=rich_rule(_metric_value_problems))
    extensions: dict[str, Any] | None = attrs.field(
        default=None, converter=_extensions, metadata=rule(extensions_problem)
    )

    def __attrs_post_init__(self) -> None:
        # The type names the rule of the value, so it names the errors: ActivityMetric(xpEarned).
        kind = self.type
        check(
            self, f"ActivityMetric({kind.value})" if isinstance(kind, ActivityMetricType) else None
        )


def _time_metrics_problem(items: Any) -> str | None:
    if not items:
        return "must hold at least one time metric"
    if not all(isinstance(item, TimeMetric) for item in items):
        return "must hold TimeMetric items only"
    return None


@attrs.frozen(kw_only=True)
class TimeSpentMetricsCollection(Model):
    """The ``generated`` object of a TimeSpentEvent: the window's time metrics.

    Args:
        id: Absolute IRI of this collection, unique per event.
        items: At least one :class:`TimeMetric`.
        extensions: Extra attributes, sent as given.
    """

    id: str = attrs.field(metadata=rule(iri_problem))
    type: Literal["TimebackTimeSpentMetricsCollection"] = "TimebackTimeSpentMetricsCollection"
    items: tuple[TimeMetric, ...] = attrs.field(
        converter=_to_time_metrics, metadata=rule(_time_metrics_problem)
    )
    extensions: dict[str, Any] | None = attrs.field(
        default=None, converter=_extensions, metadata=rule(extensions_problem)
    )

    def seconds(self, kind: TimeMetricType | str) -> float:
        """The total seconds of one category (0 when absent)."""
        kind = TimeMetricType(kind)
        return sum(item.value for item in self.items if item.type is kind)


def _activity_metrics_problems(items: Any, _: object) -> Iterator[tuple[str, str | None]]:
    if not all(isinstance(item, ActivityMetric) for item in items):
        yield "", "must hold ActivityMetric items only"
        return
    values: dict[ActivityMetricType, float] = {}
    for item in items:
        if item.type in values:
            yield "", f"must not repeat {item.type.value!r}"
        values[item.type] = item.value
    if ActivityMetricType.XP_EARNED not in values:
        yield "", "must include 'xpEarned'"
    total = values.get(ActivityMetricType.TOTAL_QUESTIONS)
    correct = values.get(ActivityMetricType.CORRECT_QUESTIONS)
    if (total is None) != (correct is None):
        yield "", "'totalQuestions' and 'correctQuestions' come together or not at all"
    elif total is not None and correct is not None and correct > total:
        yield "", "'correctQuestions' must not exceed 'totalQuestions'"


def _completion_extensions_problems(extensions: Any, _: object) -> Iterator[tuple[str, str | None]]:
    pct = extensions.get("pctCompleteApp") if isinstance(extensions, dict) else None
    pct_problem = None if pct is None else number_problem(pct, 0, 100)
    # A bad pctCompleteApp is reported as such, not again as bad JSON.
    yield "", None if pct_problem else extensions_problem(extensions)
    yield "pctCompleteApp", pct_problem


@attrs.frozen(kw_only=True)
class ActivityMetricsCollection(Model):
    """The ``generated`` object of an ActivityCompletedEvent: the completion metrics.

    Args:
        id: Absolute IRI of this collection, unique per event.
        items: :class:`ActivityMetric` items; ``xpEarned`` is required.
        extensions: Extra attributes; ``pctCompleteApp`` (0-100) goes here.
    """

    id: str = attrs.field(metadata=rule(iri_problem))
    type: Literal["TimebackActivityMetricsCollection"] = "TimebackActivityMetricsCollection"
    items: tuple[ActivityMetric, ...] = attrs.field(
        converter=_to_activity_metrics, metadata=rich_rule(_activity_metrics_problems)
    )
    extensions: dict[str, Any] | None = attrs.field(
        default=None, converter=_extensions, metadata=rich_rule(_completion_extensions_problems)
    )

    def value(self, kind: ActivityMetricType | str) -> float | None:
        """The value of one metric, or None when absent."""
        kind = ActivityMetricType(kind)
        return next((item.value for item in self.items if item.type is kind), None)


# --------------------------------------------------------------------------
# Events


def _event_extensions_problems(extensions: Any, _: object) -> Iterator[tuple[str, str | None]]:
    yield "", extensions_problem(extensions)
    if not isinstance(extensions, dict):
        return
    run_id = extensions.get("runId")
    if run_id is not None:
        yield "runId", None if is_uuid(run_id) else "must be a UUID"
    course_id = extensions.get("courseId")
    if course_id is not None:
        yield "courseId", text_problem(course_id)


class _Event(Model):
    """What the two events share besides their fields (and their fields' rules): ``run_id``."""

    __slots__ = ()
    extensions: dict[str, Any] | None

    @property
    def run_id(self) -> str | None:
        """The run id from ``extensions.runId``, if any."""
        return _run_id(self.extensions)


@attrs.frozen(kw_only=True)
class TimeSpentEvent(_Event):
    """How a window of one activity run was spent (``TimeSpentEvent`` / ``SpentTime``).

    Build one with :meth:`for_window`; construct directly only to mirror
    existing wire data.
    """

    context: Literal["http://purl.imsglobal.org/ctx/caliper/v1p2"] = CALIPER_CONTEXT
    id: str = attrs.field(metadata=rule(urn_uuid_problem))
    type: Literal["TimeSpentEvent"] = TIME_SPENT_TYPE
    action: Literal["SpentTime"] = "SpentTime"
    profile: Literal["TimebackProfile"] = "TimebackProfile"
    event_time: datetime = attrs.field(converter=_to_utc_ms, metadata=rule(datetime_problem))
    actor: TimebackUser = attrs.field(metadata=rule(instance_of(TimebackUser)))
    object: TimebackActivityContext = attrs.field(
        metadata=rule(instance_of(TimebackActivityContext))
    )
    generated: TimeSpentMetricsCollection = attrs.field(
        metadata=rule(instance_of(TimeSpentMetricsCollection))
    )
    ed_app: str | None = attrs.field(default=None, metadata=rule(iri_problem))
    session: str | None = attrs.field(default=None, metadata=rule(iri_problem))
    extensions: dict[str, Any] | None = attrs.field(
        default=None, converter=_extensions, metadata=rich_rule(_event_extensions_problems)
    )

    @classmethod
    def for_window(
        cls,
        *,
        user: TimebackUser,
        activity: TimebackActivityContext,
        run_id: str | uuid.UUID,
        start: datetime,
        end: datetime,
        active_seconds: float,
        inactive_seconds: float,
        course_id: str | None = None,
        event_id: str | None = None,
    ) -> TimeSpentEvent:
        """Build the TimeSpentEvent of one window of an activity run.

        Args:
            user: The student.
            activity: The activity context.
            run_id: The UUID shared by every event of the run.
            start: Window start (timezone-aware).
            end: Window end (timezone-aware); also the ``eventTime``.
            active_seconds: Seconds active in the window (rounded to ms).
            inactive_seconds: Seconds inactive in the window (rounded to ms).
            course_id: Sent as ``extensions.courseId`` when given.
            event_id: ``urn:uuid:...``; a random one when omitted.

        Returns:
            The event, with ``extensions.runId`` and ``session = urn:uuid:<runId>``.

        Raises:
            ValidationError: A value breaks a rule; the message names the field.
        """
        run = _run_uuid(run_id)
        event_id = event_id or f"urn:uuid:{uuid.uuid4()}"
        items = tuple(
            TimeMetric(type=kind, value=round(seconds, 3), start_date=start, end_date=end)
            for kind, seconds in (
                (TimeMetricType.ACTIVE, active_seconds),
                (TimeMetricType.INACTIVE, inactive_seconds),
            )
        )
        return cls(
            id=event_id,
            event_time=end,
            actor=user,
            object=activity,
            generated=TimeSpentMetricsCollection(id=_generated_id(event_id), items=items),
            session=f"urn:uuid:{run}",
            extensions=_run_extensions(run, course_id),
        )


@attrs.frozen(kw_only=True)
class ActivityCompletedEvent(_Event):
    """The completion of one activity run (``ActivityEvent`` / ``Completed``).

    Build one with :meth:`for_completion`; construct directly only to mirror
    existing wire data.
    """

    context: Literal["http://purl.imsglobal.org/ctx/caliper/v1p2"] = CALIPER_CONTEXT
    id: str = attrs.field(metadata=rule(urn_uuid_problem))
    type: Literal["ActivityEvent"] = COMPLETED_TYPE
    action: Literal["Completed"] = "Completed"
    profile: Literal["TimebackProfile"] = "TimebackProfile"
    event_time: datetime = attrs.field(converter=_to_utc_ms, metadata=rule(datetime_problem))
    actor: TimebackUser = attrs.field(metadata=rule(instance_of(TimebackUser)))
    object: TimebackActivityContext = attrs.field(
        metadata=rule(instance_of(TimebackActivityContext))
    )
    generated: ActivityMetricsCollection = attrs.field(
        metadata=rule(instance_of(ActivityMetricsCollection))
    )
    ed_app: str | None = attrs.field(default=None, metadata=rule(iri_problem))
    session: str | None = attrs.field(default=None, metadata=rule(iri_problem))
    extensions: dict[str, Any] | None = attrs.field(
        default=None, converter=_extensions, metadata=rich_rule(_event_extensions_problems)
    )

    @classmethod
    def for_completion(
        cls,
        *,
        user: TimebackUser,
        activity: TimebackActivityContext,
        run_id: str | uuid.UUID,
        event_time: datetime,
        xp_earned: float,
        total_questions: int | None = None,
        correct_questions: int | None = None,
        mastered_units: int | None = None,
        pct_complete: float | None = None,
        course_id: str | None = None,
        event_id: str | None = None,
    ) -> ActivityCompletedEvent:
        """Build the ActivityCompletedEvent that closes an activity run.

        Args:
            user: The student.
            activity: The activity context.
            run_id: The UUID shared by every event of the run.
            event_time: When the activity was completed (timezone-aware).
            xp_earned: XP for this run (1 XP = 1 focused minute); required.
            total_questions: Questions in the activity (with ``correct_questions``).
            correct_questions: Questions answered correctly (<= total).
            mastered_units: NEW units mastered in this run (incremental, not a total).
            pct_complete: Course completion percentage, 0-100 (``pctCompleteApp``).
            course_id: Sent as ``extensions.courseId`` when given.
            event_id: ``urn:uuid:...``; a random one when omitted.

        Returns:
            The event, with ``extensions.runId`` and ``session = urn:uuid:<runId>``.

        Raises:
            ValidationError: A value breaks a rule; the message names the field.
        """
        run = _run_uuid(run_id)
        event_id = event_id or f"urn:uuid:{uuid.uuid4()}"
        metrics = (
            (ActivityMetricType.XP_EARNED, xp_earned),
            (ActivityMetricType.TOTAL_QUESTIONS, total_questions),
            (ActivityMetricType.CORRECT_QUESTIONS, correct_questions),
            (ActivityMetricType.MASTERED_UNITS, mastered_units),
        )
        items = [
            ActivityMetric(type=kind, value=value) for kind, value in metrics if value is not None
        ]
        return cls(
            id=event_id,
            event_time=event_time,
            actor=user,
            object=activity,
            generated=ActivityMetricsCollection(
                id=_generated_id(event_id),
                items=items,
                extensions=None if pct_complete is None else {"pctCompleteApp": pct_complete},
            ),
            session=f"urn:uuid:{run}",
            extensions=_run_extensions(run, course_id),
        )


Event = TimeSpentEvent | ActivityCompletedEvent
"""Either of the two Timeback events."""
EVENT_TYPES: Final[dict[str, type[TimeSpentEvent] | type[ActivityCompletedEvent]]] = {
    TIME_SPENT_TYPE: TimeSpentEvent,
    COMPLETED_TYPE: ActivityCompletedEvent,
}
"""The model of each wire ``type``."""


def _run_uuid(run_id: str | uuid.UUID) -> uuid.UUID:
    if isinstance(run_id, uuid.UUID):
        return run_id
    if isinstance(run_id, str) and is_uuid(run_id):
        return uuid.UUID(run_id)
    raise ValidationError.single("extensions.runId", "must be a UUID")


def _run_id(extensions: dict[str, Any] | None) -> str | None:
    run_id = (extensions or {}).get("runId")
    return run_id if isinstance(run_id, str) else None


def _run_extensions(run: uuid.UUID, course_id: str | None) -> dict[str, Any]:
    extensions: dict[str, Any] = {"runId": str(run)}
    if course_id is not None:
        extensions["courseId"] = course_id
    return extensions


def _generated_id(event_id: str) -> str:
    # Derived from the event id so that a rebuilt event is identical, and unique per event.
    # Formatted, not added to: an id that is not a string is reported by the event's own
    # rule ("id: must be 'urn:uuid:'..."), not as a TypeError from here.
    return f"urn:uuid:{uuid.uuid5(_GENERATED_NAMESPACE, f'{event_id}#generated')}"


def _events_problem(data: Any) -> str | None:
    if not data:
        return "must hold at least one event"
    if not all(isinstance(event, (TimeSpentEvent, ActivityCompletedEvent)) for event in data):
        return "must hold TimeSpentEvent or ActivityCompletedEvent items only"
    return None


@attrs.frozen(kw_only=True)
class Envelope(Model):
    """The Caliper envelope that carries events to the endpoint.

    Args:
        sensor: IRI of the sensor (this app installation).
        send_time: When the envelope is sent (timezone-aware).
        data: At least one event.
    """

    sensor: str = attrs.field(metadata=rule(iri_problem))
    send_time: datetime = attrs.field(converter=_to_utc_ms, metadata=rule(datetime_problem))
    data_version: Literal["http://purl.imsglobal.org/ctx/caliper/v1p2"] = CALIPER_CONTEXT
    data: tuple[Event, ...] = attrs.field(converter=_to_events, metadata=rule(_events_problem))
