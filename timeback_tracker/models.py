"""The Caliper 1.2 entities and the two Timeback events, validated at construction.

Every class is a frozen attrs class whose fields mirror the wire JSON
(``snake_case`` here, ``camelCase`` on the wire; see :func:`timeback_tracker.dump`).
Constructing one with a value that breaks a rule of the Timeback Caliper API
raises :class:`~timeback_tracker.ValidationError` naming every bad field; the
rules themselves live in ``_rules.py``.

One module for the whole model, though longer than the ~600 lines other
modules keep to: the entities, the metrics and the two events are one
vocabulary, read together against the wire reference, and most of the length
is field declarations and docstrings.
"""

from __future__ import annotations

import enum
import math
import typing
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any, ClassVar, Final, Literal

import attrs

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
    wire_name,
)
from timeback_tracker.exceptions import FieldError, ValidationError

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


def _check(owner: str, *checks: tuple[str, str | None]) -> None:
    """Raise one ValidationError listing every failed check of ``owner``."""
    errors = [FieldError(f"{owner}.{name}", problem) for name, problem in checks if problem]
    if errors:
        raise ValidationError(errors)


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


_CONSTANTS: dict[type[Any], tuple[tuple[str, str, object], ...]] = {}


def _constants(cls: type[Any]) -> tuple[tuple[str, str, object], ...]:
    """(wire name, attribute, value) of the fields of ``cls`` typed ``Literal[...]``: the
    fields that hold a single allowed value (``type``, ``@context``, ...)."""
    found = _CONSTANTS.get(cls)
    if found is None:  # once per class: every event built goes through here
        hints = typing.get_type_hints(cls)
        found = _CONSTANTS[cls] = tuple(
            (wire_name(field.name), field.name, field.default)
            for field in attrs.fields(cls)
            if typing.get_origin(hints[field.name]) is Literal
        )
    return found


def _constant_problems(instance: Any) -> Iterator[tuple[str, str | None]]:
    """``type``, ``@context`` and the like hold their one allowed value (the wire checks them)."""
    for name, attribute, allowed in _constants(type(instance)):
        value = getattr(instance, attribute)
        yield name, None if isinstance(value, str) and value == allowed else f"must be {allowed!r}"


def _redacted(_: object) -> str:
    return "'<redacted>'"


# --------------------------------------------------------------------------
# Entities


@attrs.frozen(kw_only=True)
class TimebackUser:
    """The student (or other user) who performed the action: the event's ``actor``.

    Args:
        id: URL of the user, ideally their OneRoster user URL.
        email: The user's email address (masked in ``repr``).
        name: Display name.
        role: ``student``, ``teacher``, ``admin`` or ``guide`` (a :class:`Role` or string).
    """

    id: str
    type: Literal["TimebackUser"] = "TimebackUser"
    email: str = attrs.field(repr=_redacted)
    name: str | None = None
    role: Role | None = attrs.field(default=None, converter=_to_role)

    def __attrs_post_init__(self) -> None:
        _check(
            "TimebackUser",
            *_constant_problems(self),
            ("id", iri_problem(self.id)),
            ("email", email_problem(self.email)),
            ("name", None if self.name is None else text_problem(self.name)),
            ("role", None if self.role is None else enum_problem(Role, self.role)),
        )


@attrs.frozen(kw_only=True)
class _Named:
    """What App, Course and Activity share: a name, an optional URL, extensions."""

    name: str
    id: str | None = None
    extensions: dict[str, Any] | None = attrs.field(default=None, converter=_extensions)

    def __attrs_post_init__(self) -> None:
        _check(
            type(self).__name__,
            ("name", text_problem(self.name)),
            ("id", None if self.id is None else iri_problem(self.id)),
            ("extensions", extensions_problem(self.extensions)),
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


@attrs.frozen(kw_only=True)
class TimebackActivityContext:
    """Where the event was recorded: the event's ``object``.

    Args:
        id: URL of the activity.
        subject: A :class:`Subject` or its exact wire string (e.g. ``"Math"``).
        app: The application.
        course: The course, if any.
        activity: The specific activity, if any.
        process: Whether Timeback's ETL pipeline processes the event.
    """

    id: str
    type: Literal["TimebackActivityContext"] = "TimebackActivityContext"
    subject: Subject = attrs.field(converter=_to_subject)
    app: App
    course: Course | None = None
    activity: Activity | None = None
    process: bool | None = None

    def __attrs_post_init__(self) -> None:
        _check(
            "TimebackActivityContext",
            *_constant_problems(self),
            ("id", iri_problem(self.id)),
            ("subject", enum_problem(Subject, self.subject)),
            ("app", None if isinstance(self.app, App) else "must be an App"),
            (
                "course",
                None
                if self.course is None or isinstance(self.course, Course)
                else "must be a Course",
            ),
            (
                "activity",
                None
                if self.activity is None or isinstance(self.activity, Activity)
                else "must be an Activity",
            ),
            # `in (True, False)` would let 0 and 1 through, and they go on the wire as numbers.
            (
                "process",
                None
                if self.process is None or isinstance(self.process, bool)
                else "must be a boolean",
            ),
        )


# --------------------------------------------------------------------------
# Metrics


@attrs.frozen(kw_only=True)
class TimeMetric:
    """Seconds of one category of time within a window.

    Args:
        type: ``active``, ``inactive``, ``waste``, ``unknown`` or ``anti-pattern``.
        value: Seconds, 0 <= value <= 86400.
        sub_type: Optional finer classification.
        start_date: Start of the window (timezone-aware).
        end_date: End of the window (timezone-aware).
        extensions: Extra attributes, sent as given.
    """

    type: TimeMetricType = attrs.field(converter=_to_time_metric_type)
    value: float
    sub_type: str | None = None
    start_date: datetime | None = attrs.field(default=None, converter=_to_optional_utc_ms)
    end_date: datetime | None = attrs.field(default=None, converter=_to_optional_utc_ms)
    extensions: dict[str, Any] | None = attrs.field(default=None, converter=_extensions)

    def __attrs_post_init__(self) -> None:
        order = None
        if (
            datetime_problem(self.start_date) is None
            and datetime_problem(self.end_date) is None
            and self.start_date > self.end_date  # type: ignore[operator]
        ):
            order = "must not be before startDate"
        _check(
            "TimeMetric",
            ("type", enum_problem(TimeMetricType, self.type)),
            ("value", number_problem(self.value, 0, MAX_SECONDS)),
            ("subType", None if self.sub_type is None else text_problem(self.sub_type)),
            ("startDate", None if self.start_date is None else datetime_problem(self.start_date)),
            (
                "endDate",
                None if self.end_date is None else datetime_problem(self.end_date) or order,
            ),
            ("extensions", extensions_problem(self.extensions)),
        )


@attrs.frozen(kw_only=True)
class ActivityMetric:
    """One completion metric: XP earned, questions, or mastered units.

    Args:
        type: ``xpEarned``, ``totalQuestions``, ``correctQuestions`` or ``masteredUnits``.
        value: The metric's value (finite; counts are whole numbers >= 0).
        extensions: Extra attributes, sent as given.
    """

    type: ActivityMetricType = attrs.field(converter=_to_activity_metric_type)
    value: float
    extensions: dict[str, Any] | None = attrs.field(default=None, converter=_extensions)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.type, ActivityMetricType):
            _check("ActivityMetric", ("type", enum_problem(ActivityMetricType, self.type)))
        if self.type is ActivityMetricType.XP_EARNED:
            problem = number_problem(self.value, -math.inf, math.inf)
        else:
            problem = count_problem(self.value)
        _check(
            f"ActivityMetric({self.type.value})",
            ("value", problem),
            ("extensions", extensions_problem(self.extensions)),
        )


@attrs.frozen(kw_only=True)
class TimeSpentMetricsCollection:
    """The ``generated`` object of a TimeSpentEvent: the window's time metrics.

    Args:
        id: Absolute IRI of this collection, unique per event.
        items: At least one :class:`TimeMetric`.
        extensions: Extra attributes, sent as given.
    """

    id: str
    type: Literal["TimebackTimeSpentMetricsCollection"] = "TimebackTimeSpentMetricsCollection"
    items: tuple[TimeMetric, ...] = attrs.field(converter=_to_time_metrics)
    extensions: dict[str, Any] | None = attrs.field(default=None, converter=_extensions)

    def __attrs_post_init__(self) -> None:
        items = None
        if not self.items:
            items = "must hold at least one time metric"
        elif not all(isinstance(item, TimeMetric) for item in self.items):
            items = "must hold TimeMetric items only"
        _check(
            "TimeSpentMetricsCollection",
            *_constant_problems(self),
            ("id", iri_problem(self.id)),
            ("items", items),
            ("extensions", extensions_problem(self.extensions)),
        )

    def seconds(self, kind: TimeMetricType | str) -> float:
        """The total seconds of one category (0 when absent)."""
        kind = TimeMetricType(kind)
        return sum(item.value for item in self.items if item.type is kind)


@attrs.frozen(kw_only=True)
class ActivityMetricsCollection:
    """The ``generated`` object of an ActivityCompletedEvent: the completion metrics.

    Args:
        id: Absolute IRI of this collection, unique per event.
        items: :class:`ActivityMetric` items; ``xpEarned`` is required.
        extensions: Extra attributes; ``pctCompleteApp`` (0-100) goes here.
    """

    id: str
    type: Literal["TimebackActivityMetricsCollection"] = "TimebackActivityMetricsCollection"
    items: tuple[ActivityMetric, ...] = attrs.field(converter=_to_activity_metrics)
    extensions: dict[str, Any] | None = attrs.field(default=None, converter=_extensions)

    def __attrs_post_init__(self) -> None:
        pct = self.extensions.get("pctCompleteApp") if isinstance(self.extensions, dict) else None
        pct_problem = None if pct is None else number_problem(pct, 0, 100)
        _check(
            "ActivityMetricsCollection",
            *_constant_problems(self),
            ("id", iri_problem(self.id)),
            # A bad pctCompleteApp is reported as such, not again as bad JSON.
            ("extensions", None if pct_problem else extensions_problem(self.extensions)),
            ("extensions.pctCompleteApp", pct_problem),
            *self._problems(),
        )

    def _problems(self) -> Iterator[tuple[str, str | None]]:
        if not all(isinstance(item, ActivityMetric) for item in self.items):
            yield "items", "must hold ActivityMetric items only"
            return
        values: dict[ActivityMetricType, float] = {}
        for item in self.items:
            if item.type in values:
                yield "items", f"must not repeat {item.type.value!r}"
            values[item.type] = item.value
        if ActivityMetricType.XP_EARNED not in values:
            yield "items", "must include 'xpEarned'"
        total = values.get(ActivityMetricType.TOTAL_QUESTIONS)
        correct = values.get(ActivityMetricType.CORRECT_QUESTIONS)
        if (total is None) != (correct is None):
            yield "items", "'totalQuestions' and 'correctQuestions' come together or not at all"
        elif total is not None and correct is not None and correct > total:
            yield "items", "'correctQuestions' must not exceed 'totalQuestions'"

    def value(self, kind: ActivityMetricType | str) -> float | None:
        """The value of one metric, or None when absent."""
        kind = ActivityMetricType(kind)
        return next((item.value for item in self.items if item.type is kind), None)


# --------------------------------------------------------------------------
# Events


def _event_extension_problems(extensions: object) -> Iterator[tuple[str, str | None]]:
    yield "extensions", extensions_problem(extensions)
    if not isinstance(extensions, dict):
        return
    run_id = extensions.get("runId")
    if run_id is not None:
        yield "extensions.runId", None if is_uuid(run_id) else "must be a UUID"
    course_id = extensions.get("courseId")
    if course_id is not None:
        yield "extensions.courseId", text_problem(course_id)


def _event_problems(
    event: TimeSpentEvent | ActivityCompletedEvent,
) -> Iterator[tuple[str, str | None]]:
    yield from _constant_problems(event)
    yield "id", urn_uuid_problem(event.id)
    yield "eventTime", datetime_problem(event.event_time)
    yield "actor", None if isinstance(event.actor, TimebackUser) else "must be a TimebackUser"
    yield (
        "object",
        None
        if isinstance(event.object, TimebackActivityContext)
        else "must be a TimebackActivityContext",
    )
    yield "edApp", None if event.ed_app is None else iri_problem(event.ed_app)
    yield "session", None if event.session is None else iri_problem(event.session)
    yield from _event_extension_problems(event.extensions)


class _EventRules:
    """What the two events share besides their fields: their rules and ``run_id``."""

    __slots__ = ()
    extensions: dict[str, Any] | None
    generated: object
    # The class of ``generated`` (not type[...]: the annotations are read where
    # ``type`` names the events' own field).
    _GENERATED: ClassVar[Any]

    def __attrs_post_init__(self) -> None:
        kind = self._GENERATED.__name__
        article = "an" if kind[0] in "AEIOU" else "a"
        _check(
            type(self).__name__,
            *_event_problems(self),  # type: ignore[arg-type]
            (
                "generated",
                None
                if isinstance(self.generated, self._GENERATED)
                else f"must be {article} {kind}",
            ),
        )

    @property
    def run_id(self) -> str | None:
        """The run id from ``extensions.runId``, if any."""
        return _run_id(self.extensions)


@attrs.frozen(kw_only=True)
class TimeSpentEvent(_EventRules):
    """How a window of one activity run was spent (``TimeSpentEvent`` / ``SpentTime``).

    Build one with :meth:`for_window`; construct directly only to mirror
    existing wire data.
    """

    _GENERATED: ClassVar[Any] = TimeSpentMetricsCollection

    context: Literal["http://purl.imsglobal.org/ctx/caliper/v1p2"] = CALIPER_CONTEXT
    id: str
    type: Literal["TimeSpentEvent"] = TIME_SPENT_TYPE
    action: Literal["SpentTime"] = "SpentTime"
    profile: Literal["TimebackProfile"] = "TimebackProfile"
    event_time: datetime = attrs.field(converter=_to_utc_ms)
    actor: TimebackUser
    object: TimebackActivityContext
    generated: TimeSpentMetricsCollection
    ed_app: str | None = None
    session: str | None = None
    extensions: dict[str, Any] | None = attrs.field(default=None, converter=_extensions)

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
class ActivityCompletedEvent(_EventRules):
    """The completion of one activity run (``ActivityEvent`` / ``Completed``).

    Build one with :meth:`for_completion`; construct directly only to mirror
    existing wire data.
    """

    _GENERATED: ClassVar[Any] = ActivityMetricsCollection

    context: Literal["http://purl.imsglobal.org/ctx/caliper/v1p2"] = CALIPER_CONTEXT
    id: str
    type: Literal["ActivityEvent"] = COMPLETED_TYPE
    action: Literal["Completed"] = "Completed"
    profile: Literal["TimebackProfile"] = "TimebackProfile"
    event_time: datetime = attrs.field(converter=_to_utc_ms)
    actor: TimebackUser
    object: TimebackActivityContext
    generated: ActivityMetricsCollection
    ed_app: str | None = None
    session: str | None = None
    extensions: dict[str, Any] | None = attrs.field(default=None, converter=_extensions)

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


@attrs.frozen(kw_only=True)
class Envelope:
    """The Caliper envelope that carries events to the endpoint.

    Args:
        sensor: IRI of the sensor (this app installation).
        send_time: When the envelope is sent (timezone-aware).
        data: At least one event.
    """

    sensor: str
    send_time: datetime = attrs.field(converter=_to_utc_ms)
    data_version: Literal["http://purl.imsglobal.org/ctx/caliper/v1p2"] = CALIPER_CONTEXT
    data: tuple[Event, ...] = attrs.field(converter=_to_events)

    def __attrs_post_init__(self) -> None:
        data = None
        if not self.data:
            data = "must hold at least one event"
        elif not all(isinstance(e, (TimeSpentEvent, ActivityCompletedEvent)) for e in self.data):
            data = "must hold TimeSpentEvent or ActivityCompletedEvent items only"
        _check(
            "Envelope",
            *_constant_problems(self),
            ("sensor", iri_problem(self.sensor)),
            ("sendTime", datetime_problem(self.send_time)),
            ("data", data),
        )
