"""The models: every validation rule, the two event builders, and PII in repr."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

import timeback_tracker as tt

UTC = timezone.utc
IST = timezone(timedelta(hours=5, minutes=30))
NOW = datetime(2026, 1, 27, 10, 0, 0, tzinfo=UTC)
EVENT_ID = "urn:uuid:a1b2c3d4-e5f6-7890-abcd-ef1234567890"
GENERATED_ID = "https://api.example.com/ims/metrics/collections/time-spent/def-456"

NOT_A_URL = "must be an absolute URL/IRI such as https://example.com/... (no spaces)"
NO_HOST = "must be an absolute URL with a host, such as https://example.com/..."
NOT_EMAIL = "must be an email address (name@domain)"
NOT_URN_UUID = "must be 'urn:uuid:' followed by a UUID"
NOT_TEXT = "must be a non-empty string"
NOT_WHOLE = "must be a whole number >= 0"
NOT_FINITE = "must be finite (not NaN or infinity)"
NAIVE = "must be timezone-aware (a naive datetime is ambiguous)"


def problems(exc: pytest.ExceptionInfo[tt.ValidationError]) -> dict[str, str]:
    """The errors of a ValidationError as {path: message}."""
    return {error.path: error.message for error in exc.value.errors}


def time_metric(**overrides: Any) -> tt.TimeMetric:
    """A valid active TimeMetric, with some fields replaced."""
    fields: dict[str, Any] = {"type": "active", "value": 15}
    return tt.TimeMetric(**{**fields, **overrides})


def completion_items(**values: float) -> list[tt.ActivityMetric]:
    """ActivityMetric items from keyword arguments: xpEarned=3 -> [ActivityMetric(...)]."""
    return [tt.ActivityMetric(type=kind, value=value) for kind, value in values.items()]


def time_spent(
    user: tt.TimebackUser, activity: tt.TimebackActivityContext, **overrides: Any
) -> tt.TimeSpentEvent:
    """A valid TimeSpentEvent built field by field, with some fields replaced."""
    fields: dict[str, Any] = {
        "id": EVENT_ID,
        "event_time": NOW,
        "actor": user,
        "object": activity,
        "generated": tt.TimeSpentMetricsCollection(id=GENERATED_ID, items=[time_metric()]),
    }
    return tt.TimeSpentEvent(**{**fields, **overrides})


# --------------------------------------------------------------------------
# Errors


def test_validation_error_is_a_value_error_and_a_tracker_error() -> None:
    """ValidationError derives from both ValueError and the library's root error."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.App(name="")
    assert isinstance(exc.value, ValueError)
    assert isinstance(exc.value, tt.TimebackTrackerError)
    assert exc.value.errors == (tt.FieldError("App.name", NOT_TEXT),)
    assert str(exc.value) == f"App.name: {NOT_TEXT}"


def test_validation_error_single_builds_one_field_error() -> None:
    """ValidationError.single carries exactly one FieldError."""
    error = tt.ValidationError.single("x.y", "must be z")
    assert error.errors == (tt.FieldError("x.y", "must be z"),)
    assert str(error) == "x.y: must be z"


# --------------------------------------------------------------------------
# TimebackUser


def test_valid_user_keeps_its_fields(user: tt.TimebackUser) -> None:
    """A valid user is built with type TimebackUser and a Role."""
    assert user.type == "TimebackUser"
    assert user.role is tt.Role.STUDENT


@pytest.mark.parametrize(
    ("user_id", "message"),
    [
        ("student-123", NOT_A_URL),
        ("/users/student-123", NOT_A_URL),
        ("https://example.com/users/student 123", NOT_A_URL),
        ("", NOT_A_URL),
        ("https:///users/student-123", NO_HOST),
        ("http://", NO_HOST),
    ],
)
def test_user_id_must_be_an_absolute_url(user_id: str, message: str) -> None:
    """The actor id must be an absolute URL/IRI (with a host for http/https)."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.TimebackUser(id=user_id, email="a@example.com")
    assert problems(exc) == {"TimebackUser.id": message}


def test_user_id_must_be_a_string() -> None:
    """A non-string actor id is reported as such."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.TimebackUser(id=123, email="a@example.com")  # type: ignore[arg-type]
    assert problems(exc) == {"TimebackUser.id": "must be a string (an absolute URL/IRI)"}


@pytest.mark.parametrize(
    "user_id",
    [
        "https://api.example.com/ims/oneroster/rostering/v1p2/users/student-123",
        "http://localhost:8080/users/1",
        "urn:uuid:c51570e4-f8ed-4c18-bb3a-dfe51b2cc594",
    ],
)
def test_user_id_accepts_urls_and_iris(user_id: str) -> None:
    """http(s) URLs with a host and URN IRIs are accepted as ids."""
    assert tt.TimebackUser(id=user_id, email="a@example.com").id == user_id


@pytest.mark.parametrize(
    "email",
    [
        "student",
        "student@",
        "@example.com",
        "student@example",
        "student@@example.com",
        "stu dent@example.com",
        "student@example.",
        "",
    ],
)
def test_user_email_must_look_like_an_email(email: str) -> None:
    """A malformed email is reported, and the message never quotes it."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.TimebackUser(id="https://example.com/u/1", email=email)
    assert problems(exc) == {"TimebackUser.email": NOT_EMAIL}
    if email:
        assert email not in str(exc.value)


def test_user_email_must_be_a_string() -> None:
    """A non-string email is rejected."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.TimebackUser(id="https://example.com/u/1", email=None)  # type: ignore[arg-type]
    assert problems(exc) == {"TimebackUser.email": NOT_EMAIL}


@pytest.mark.parametrize("email", ["a@example.com", "first.last+tag@sub.example.co.uk"])
def test_user_email_accepts_plain_addresses(email: str) -> None:
    """Ordinary addresses are accepted."""
    assert tt.TimebackUser(id="https://example.com/u/1", email=email).email == email


@pytest.mark.parametrize("name", ["", "   "])
def test_user_name_must_not_be_blank(name: str) -> None:
    """A blank display name is rejected (omit it instead)."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.TimebackUser(id="https://example.com/u/1", email="a@example.com", name=name)
    assert problems(exc) == {"TimebackUser.name": NOT_TEXT}


@pytest.mark.parametrize("role", list(tt.Role))
def test_user_role_accepts_each_role_as_string(role: tt.Role) -> None:
    """Each role's plain wire string is accepted and converted to the Role enum."""
    made = tt.TimebackUser(id="https://example.com/u/1", email="a@example.com", role=role.value)
    assert made.role is role


@pytest.mark.parametrize("role", ["Student", "parent", ""])
def test_user_role_must_be_a_known_role(role: str) -> None:
    """An unknown role (case matters) is reported with the allowed values."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.TimebackUser(id="https://example.com/u/1", email="a@example.com", role=role)
    assert problems(exc) == {
        "TimebackUser.role": "must be one of 'student', 'teacher', 'admin', 'guide'"
    }


def test_user_reports_every_bad_field_together() -> None:
    """All bad fields of a user are reported in one error."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.TimebackUser(id="nope", email="nope", name="", role="nope")
    assert set(problems(exc)) == {
        "TimebackUser.id",
        "TimebackUser.email",
        "TimebackUser.name",
        "TimebackUser.role",
    }


def test_user_repr_masks_the_email(user: tt.TimebackUser) -> None:
    """repr() of a user, and of an event carrying it, never shows the email."""
    assert user.email not in repr(user)
    assert "<redacted>" in repr(user)
    event = time_spent(
        user,
        tt.TimebackActivityContext(
            id="https://example.com/a", subject="Math", app=tt.App(name="A")
        ),
    )
    assert user.email not in repr(event)
    assert user.email not in str(event)


def test_validation_error_of_an_event_never_quotes_the_email(
    user: tt.TimebackUser, activity: tt.TimebackActivityContext
) -> None:
    """An event error message carries paths and rules, not the actor's email."""
    with pytest.raises(tt.ValidationError) as exc:
        time_spent(user, activity, id="bad", event_time=NOW.replace(tzinfo=None))
    assert user.email not in str(exc.value)


# --------------------------------------------------------------------------
# App, Course, Activity


@pytest.mark.parametrize("cls", [tt.App, tt.Course, tt.Activity])
def test_named_entities_need_a_name(cls: type[tt.App | tt.Course | tt.Activity]) -> None:
    """App, Course and Activity need a non-empty name."""
    with pytest.raises(tt.ValidationError) as exc:
        cls(name=" ")
    assert problems(exc) == {f"{cls.__name__}.name": NOT_TEXT}


@pytest.mark.parametrize("cls", [tt.App, tt.Course, tt.Activity])
def test_named_entities_id_must_be_a_url(cls: type[tt.App | tt.Course | tt.Activity]) -> None:
    """An id of App, Course or Activity must be an absolute URL/IRI."""
    with pytest.raises(tt.ValidationError) as exc:
        cls(name="X", id="courses/math-3")
    assert problems(exc) == {f"{cls.__name__}.id": NOT_A_URL}


@pytest.mark.parametrize("cls", [tt.App, tt.Course, tt.Activity])
def test_named_entities_extensions_need_string_keys(
    cls: type[tt.App | tt.Course | tt.Activity],
) -> None:
    """Extensions must be a mapping with string keys."""
    with pytest.raises(tt.ValidationError) as exc:
        cls(name="X", extensions={1: "a"})  # type: ignore[dict-item]
    assert problems(exc) == {f"{cls.__name__}.extensions": "must be a mapping with string keys"}


def test_extensions_are_copied_into_a_dict() -> None:
    """Extensions given as any mapping are kept as a fresh dict."""
    source = {"level": 3}
    app = tt.App(name="X", extensions=source)
    source["level"] = 4
    assert app.extensions == {"level": 3}


# --------------------------------------------------------------------------
# TimebackActivityContext


@pytest.mark.parametrize("subject", list(tt.Subject))
def test_context_subject_accepts_each_subject_as_string(subject: tt.Subject) -> None:
    """Each subject's exact wire string (incl. 'Social Studies' and 'None') becomes the enum."""
    context = tt.TimebackActivityContext(
        id="https://example.com/a", subject=subject.value, app=tt.App(name="A")
    )
    assert context.subject is subject


@pytest.mark.parametrize("subject", ["math", "Art", "SocialStudies", ""])
def test_context_subject_must_be_a_known_subject(subject: str) -> None:
    """An unknown subject is reported with every allowed value."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.TimebackActivityContext(
            id="https://example.com/a", subject=subject, app=tt.App(name="A")
        )
    message = problems(exc)["TimebackActivityContext.subject"]
    assert message.startswith("must be one of 'Reading', 'Language', ")
    assert "'Social Studies'" in message
    assert "'FastMath'" in message


def test_context_id_must_be_a_url() -> None:
    """The object id must be an absolute URL/IRI."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.TimebackActivityContext(id="lesson-1", subject="Math", app=tt.App(name="A"))
    assert problems(exc) == {"TimebackActivityContext.id": NOT_A_URL}


@pytest.mark.parametrize("process", ["yes", 1, 0])
def test_context_process_must_be_a_boolean(process: object) -> None:
    """process must be a real boolean: 'yes', 1 and 0 are rejected."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.TimebackActivityContext(
            id="https://example.com/a",
            subject="Math",
            app=tt.App(name="A"),
            process=process,  # type: ignore[arg-type]
        )
    assert problems(exc) == {"TimebackActivityContext.process": "must be a boolean"}


def test_context_checks_the_types_of_its_parts() -> None:
    """app, course and activity must be the matching classes; all are reported together."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.TimebackActivityContext(
            id="https://example.com/a",
            subject="Math",
            app={"name": "A"},  # type: ignore[arg-type]
            course=tt.App(name="C"),  # type: ignore[arg-type]
            activity="lesson",  # type: ignore[arg-type]
        )
    assert problems(exc) == {
        "TimebackActivityContext.app": "must be an App",
        "TimebackActivityContext.course": "must be a Course",
        "TimebackActivityContext.activity": "must be an Activity",
    }


# --------------------------------------------------------------------------
# TimeMetric


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-0.001, "must be between 0 and 86400"),
        (86_400.001, "must be between 0 and 86400"),
        (100_000, "must be between 0 and 86400"),
        (math.nan, NOT_FINITE),
        (math.inf, NOT_FINITE),
        ("15", "must be a number"),
        (True, "must be a number"),
        (None, "must be a number"),
    ],
)
def test_time_value_is_finite_seconds_within_a_day(value: object, message: str) -> None:
    """A time value is a finite number of seconds, 0 <= v <= 86400."""
    with pytest.raises(tt.ValidationError) as exc:
        time_metric(value=value)
    assert problems(exc) == {"TimeMetric.value": message}


@pytest.mark.parametrize("value", [0, 0.0, 0.001, 15, 86_400, 86_400.0])
def test_time_value_bounds_are_inclusive(value: float) -> None:
    """0 and 86400 seconds are both allowed."""
    assert time_metric(value=value).value == value


@pytest.mark.parametrize("kind", list(tt.TimeMetricType))
def test_time_type_accepts_each_category_as_string(kind: tt.TimeMetricType) -> None:
    """Each time category's wire string (incl. 'anti-pattern') becomes the enum."""
    assert time_metric(type=kind.value).type is kind


def test_time_type_must_be_a_known_category() -> None:
    """An unknown time category is rejected."""
    with pytest.raises(tt.ValidationError) as exc:
        time_metric(type="idle")
    assert problems(exc) == {
        "TimeMetric.type": (
            "must be one of 'active', 'inactive', 'waste', 'unknown', 'anti-pattern'"
        )
    }


def test_time_sub_type_must_not_be_blank() -> None:
    """An empty subType is rejected (omit it instead)."""
    with pytest.raises(tt.ValidationError) as exc:
        time_metric(sub_type="")
    assert problems(exc) == {"TimeMetric.subType": NOT_TEXT}


def test_time_dates_must_be_timezone_aware() -> None:
    """Naive startDate and endDate are both rejected."""
    with pytest.raises(tt.ValidationError) as exc:
        time_metric(start_date=datetime(2026, 1, 27, 10), end_date=datetime(2026, 1, 27, 11))
    assert problems(exc) == {"TimeMetric.startDate": NAIVE, "TimeMetric.endDate": NAIVE}


def test_time_dates_must_be_datetimes() -> None:
    """A string where a datetime belongs is rejected."""
    with pytest.raises(tt.ValidationError) as exc:
        time_metric(start_date="2026-01-27T10:00:00.000Z")
    assert problems(exc) == {"TimeMetric.startDate": "must be a datetime"}


def test_time_end_must_not_be_before_start() -> None:
    """endDate before startDate is rejected, comparing instants across offsets."""
    with pytest.raises(tt.ValidationError) as exc:
        # 10:00 UTC is 15:30 in IST: the end below is 10:00 UTC minus 1 s.
        time_metric(start_date=NOW, end_date=datetime(2026, 1, 27, 15, 29, 59, tzinfo=IST))
    assert problems(exc) == {"TimeMetric.endDate": "must not be before startDate"}


def test_time_dates_are_normalised_to_utc_milliseconds() -> None:
    """Aware dates in any offset are stored in UTC, truncated to the millisecond."""
    metric = time_metric(
        start_date=datetime(2026, 1, 27, 15, 30, 0, 123_999, tzinfo=IST),
        end_date=datetime(2026, 1, 27, 15, 30, 15, 999_999, tzinfo=IST),
    )
    assert metric.start_date == datetime(2026, 1, 27, 10, 0, 0, 123_000, tzinfo=UTC)
    assert metric.start_date is not None
    assert metric.start_date.tzinfo is UTC
    assert metric.end_date == datetime(2026, 1, 27, 10, 0, 15, 999_000, tzinfo=UTC)


def test_time_metric_reports_every_bad_field_together() -> None:
    """Bad type, value, subType and dates are reported in one error."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.TimeMetric(
            type="idle",
            value=-1,
            sub_type="",
            start_date=datetime(2026, 1, 1),
            extensions={2: 3},  # type: ignore[dict-item]
        )
    assert set(problems(exc)) == {
        "TimeMetric.type",
        "TimeMetric.value",
        "TimeMetric.subType",
        "TimeMetric.startDate",
        "TimeMetric.extensions",
    }


# --------------------------------------------------------------------------
# ActivityMetric and ActivityMetricsCollection


@pytest.mark.parametrize(
    ("value", "message"),
    [(math.nan, NOT_FINITE), (math.inf, NOT_FINITE), (-math.inf, NOT_FINITE)],
)
def test_xp_must_be_finite(value: float, message: str) -> None:
    """xpEarned must be a finite number."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.ActivityMetric(type="xpEarned", value=value)
    assert problems(exc) == {"ActivityMetric(xpEarned).value": message}


@pytest.mark.parametrize("value", ["80", True, None])
def test_xp_must_be_a_number(value: object) -> None:
    """xpEarned must be a number, not a string, boolean or None."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.ActivityMetric(type="xpEarned", value=value)  # type: ignore[arg-type]
    assert problems(exc) == {"ActivityMetric(xpEarned).value": "must be a number"}


@pytest.mark.parametrize("value", [0, 2.5, 80])
def test_xp_may_be_fractional(value: float) -> None:
    """XP is a number of focused minutes: fractions are allowed."""
    assert tt.ActivityMetric(type="xpEarned", value=value).value == value


@pytest.mark.parametrize("kind", ["totalQuestions", "correctQuestions", "masteredUnits"])
@pytest.mark.parametrize(
    ("value", "message"),
    [(-1, NOT_WHOLE), (2.5, NOT_WHOLE), (math.nan, NOT_FINITE), ("3", "must be a number")],
)
def test_counts_are_whole_numbers_at_least_zero(kind: str, value: object, message: str) -> None:
    """Question counts and mastered units are whole numbers >= 0."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.ActivityMetric(type=kind, value=value)  # type: ignore[arg-type]
    assert problems(exc) == {f"ActivityMetric({kind}).value": message}


@pytest.mark.parametrize("value", [0, 3, 3.0])
def test_counts_accept_whole_floats(value: float) -> None:
    """3.0 is a whole number and accepted as a count."""
    assert tt.ActivityMetric(type="masteredUnits", value=value).value == value


def test_activity_metric_type_must_be_known() -> None:
    """An unknown completion metric is rejected."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.ActivityMetric(type="score", value=1)
    assert problems(exc) == {
        "ActivityMetric.type": (
            "must be one of 'xpEarned', 'totalQuestions', 'correctQuestions', 'masteredUnits'"
        )
    }


def test_activity_metric_of_unknown_type_names_its_other_bad_fields() -> None:
    """An unknown type does not hide a bad value or bad extensions of the same metric."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.ActivityMetric(type="score", value=math.nan, extensions={1: 2})  # type: ignore[dict-item]
    assert problems(exc) == {
        "ActivityMetric.type": (
            "must be one of 'xpEarned', 'totalQuestions', 'correctQuestions', 'masteredUnits'"
        ),
        "ActivityMetric.value": NOT_FINITE,
        "ActivityMetric.extensions": "must be a mapping with string keys",
    }


def test_activity_metrics_require_xp() -> None:
    """A completion without xpEarned is rejected."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.ActivityMetricsCollection(id=GENERATED_ID, items=completion_items(masteredUnits=1))
    assert problems(exc) == {"ActivityMetricsCollection.items": "must include 'xpEarned'"}


@pytest.mark.parametrize(
    "values", [{"totalQuestions": 10}, {"correctQuestions": 8}], ids=["total", "correct"]
)
def test_question_counts_come_together(values: dict[str, float]) -> None:
    """totalQuestions and correctQuestions come both or neither."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.ActivityMetricsCollection(id=GENERATED_ID, items=completion_items(xpEarned=1, **values))
    assert problems(exc) == {
        "ActivityMetricsCollection.items": (
            "'totalQuestions' and 'correctQuestions' come together or not at all"
        )
    }


def test_correct_questions_must_not_exceed_total() -> None:
    """correctQuestions > totalQuestions is rejected."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.ActivityMetricsCollection(
            id=GENERATED_ID,
            items=completion_items(xpEarned=1, totalQuestions=10, correctQuestions=11),
        )
    assert problems(exc) == {
        "ActivityMetricsCollection.items": "'correctQuestions' must not exceed 'totalQuestions'"
    }


def test_correct_questions_may_equal_total() -> None:
    """A perfect score (correct == total) is valid."""
    collection = tt.ActivityMetricsCollection(
        id=GENERATED_ID, items=completion_items(xpEarned=1, totalQuestions=4, correctQuestions=4)
    )
    assert collection.value("correctQuestions") == 4
    assert collection.value(tt.ActivityMetricType.MASTERED_UNITS) is None


def test_activity_metrics_must_not_repeat() -> None:
    """A metric may appear only once."""
    items = [*completion_items(xpEarned=1), *completion_items(xpEarned=2)]
    with pytest.raises(tt.ValidationError) as exc:
        tt.ActivityMetricsCollection(id=GENERATED_ID, items=items)
    assert problems(exc) == {"ActivityMetricsCollection.items": "must not repeat 'xpEarned'"}


@pytest.mark.parametrize(
    ("pct", "message"),
    [
        (-1, "must be between 0 and 100"),
        (100.5, "must be between 0 and 100"),
        (math.nan, NOT_FINITE),
        ("67", "must be a number"),
        (True, "must be a number"),
    ],
)
def test_pct_complete_is_a_percentage(pct: object, message: str) -> None:
    """pctCompleteApp is a number from 0 to 100."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.ActivityMetricsCollection(
            id=GENERATED_ID,
            items=completion_items(xpEarned=1),
            extensions={"pctCompleteApp": pct},
        )
    assert problems(exc) == {"ActivityMetricsCollection.extensions.pctCompleteApp": message}


@pytest.mark.parametrize("pct", [0, 67, 99.5, 100])
def test_pct_complete_bounds_are_inclusive(pct: float) -> None:
    """0 and 100 percent are both allowed."""
    collection = tt.ActivityMetricsCollection(
        id=GENERATED_ID, items=completion_items(xpEarned=1), extensions={"pctCompleteApp": pct}
    )
    assert collection.extensions == {"pctCompleteApp": pct}


def test_metrics_collection_ids_must_be_iris() -> None:
    """generated.id must be an absolute IRI in both collections."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.ActivityMetricsCollection(id="abc-123", items=completion_items(xpEarned=1))
    assert problems(exc) == {"ActivityMetricsCollection.id": NOT_A_URL}
    with pytest.raises(tt.ValidationError) as exc:
        tt.TimeSpentMetricsCollection(id="def-456", items=[time_metric()])
    assert problems(exc) == {"TimeSpentMetricsCollection.id": NOT_A_URL}


def test_time_metrics_collection_needs_an_item() -> None:
    """A TimeSpent collection holds at least one metric."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.TimeSpentMetricsCollection(id=GENERATED_ID, items=[])
    assert problems(exc) == {
        "TimeSpentMetricsCollection.items": "must hold at least one time metric"
    }


def test_collections_hold_only_their_own_metrics() -> None:
    """A time collection rejects activity metrics and the other way round."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.TimeSpentMetricsCollection(id=GENERATED_ID, items=completion_items(xpEarned=1))  # type: ignore[arg-type]
    assert problems(exc) == {"TimeSpentMetricsCollection.items": "must hold TimeMetric items only"}
    with pytest.raises(tt.ValidationError) as exc:
        tt.ActivityMetricsCollection(id=GENERATED_ID, items=[time_metric()])  # type: ignore[list-item]
    assert problems(exc) == {
        "ActivityMetricsCollection.items": "must hold ActivityMetric items only"
    }


def test_time_collection_sums_seconds_by_category() -> None:
    """seconds() sums one category and is 0 for an absent one."""
    collection = tt.TimeSpentMetricsCollection(
        id=GENERATED_ID,
        items=[
            time_metric(value=10),
            time_metric(value=2.5),
            time_metric(type="inactive", value=1),
        ],
    )
    assert collection.seconds("active") == 12.5
    assert collection.seconds(tt.TimeMetricType.INACTIVE) == 1
    assert collection.seconds("waste") == 0


# --------------------------------------------------------------------------
# Events and the envelope


@pytest.mark.parametrize(
    "event_id",
    [
        "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
        "urn:uuid:not-a-uuid",
        "urn:uuid:a1b2c3d4e5f67890abcdef1234567890",
        "https://example.com/events/1",
        "",
    ],
)
def test_event_id_must_be_a_urn_uuid(
    user: tt.TimebackUser, activity: tt.TimebackActivityContext, event_id: str
) -> None:
    """An event id is 'urn:uuid:' followed by a hyphenated UUID."""
    with pytest.raises(tt.ValidationError) as exc:
        time_spent(user, activity, id=event_id)
    assert problems(exc) == {"TimeSpentEvent.id": NOT_URN_UUID}


def test_event_time_must_be_timezone_aware(
    user: tt.TimebackUser, activity: tt.TimebackActivityContext
) -> None:
    """A naive eventTime is rejected."""
    with pytest.raises(tt.ValidationError) as exc:
        time_spent(user, activity, event_time=datetime(2026, 1, 27, 10))
    assert problems(exc) == {"TimeSpentEvent.eventTime": NAIVE}


def test_event_time_is_normalised_to_utc_milliseconds(
    user: tt.TimebackUser, activity: tt.TimebackActivityContext
) -> None:
    """An aware eventTime in any offset is stored as UTC, truncated to ms."""
    event = time_spent(
        user, activity, event_time=datetime(2026, 1, 27, 15, 30, 0, 5_999, tzinfo=IST)
    )
    assert event.event_time == datetime(2026, 1, 27, 10, 0, 0, 5_000, tzinfo=UTC)
    assert event.event_time.tzinfo is UTC


@pytest.mark.parametrize("run_id", ["run-42", "", "f47ac10b58cc", 42])
def test_event_run_id_must_be_a_uuid(
    user: tt.TimebackUser, activity: tt.TimebackActivityContext, run_id: object
) -> None:
    """extensions.runId, when present, must be a UUID string."""
    with pytest.raises(tt.ValidationError) as exc:
        time_spent(user, activity, extensions={"runId": run_id})
    assert problems(exc) == {"TimeSpentEvent.extensions.runId": "must be a UUID"}


def test_event_course_id_must_not_be_blank(
    user: tt.TimebackUser, activity: tt.TimebackActivityContext
) -> None:
    """extensions.courseId, when present, must be a non-empty string."""
    with pytest.raises(tt.ValidationError) as exc:
        time_spent(user, activity, extensions={"courseId": ""})
    assert problems(exc) == {"TimeSpentEvent.extensions.courseId": NOT_TEXT}


def test_event_ed_app_and_session_must_be_iris(
    user: tt.TimebackUser, activity: tt.TimebackActivityContext
) -> None:
    """edApp and session must be absolute IRIs."""
    with pytest.raises(tt.ValidationError) as exc:
        time_spent(user, activity, ed_app="my app", session="session-1")
    assert problems(exc) == {"TimeSpentEvent.edApp": NOT_A_URL, "TimeSpentEvent.session": NOT_A_URL}


def test_event_parts_must_have_the_right_types(
    user: tt.TimebackUser, activity: tt.TimebackActivityContext
) -> None:
    """actor, object and generated must be the matching model classes."""
    with pytest.raises(tt.ValidationError) as exc:
        time_spent(
            user,
            activity,
            actor={"id": "x"},
            object=user,
            generated=tt.ActivityMetricsCollection(
                id=GENERATED_ID, items=completion_items(xpEarned=1)
            ),
        )
    assert problems(exc) == {
        "TimeSpentEvent.actor": "must be a TimebackUser",
        "TimeSpentEvent.object": "must be a TimebackActivityContext",
        "TimeSpentEvent.generated": "must be a TimeSpentMetricsCollection",
    }


def test_event_reports_every_bad_field_together(
    user: tt.TimebackUser, activity: tt.TimebackActivityContext
) -> None:
    """Several bad fields of one event come back in a single ValidationError."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.ActivityCompletedEvent(
            id="1",
            event_time=datetime(2026, 1, 27),
            actor=user,
            object=activity,
            generated="xp",  # type: ignore[arg-type]
            ed_app="app",
            extensions={"runId": "run", "courseId": " "},
        )
    assert problems(exc) == {
        "ActivityCompletedEvent.id": NOT_URN_UUID,
        "ActivityCompletedEvent.eventTime": NAIVE,
        "ActivityCompletedEvent.generated": "must be an ActivityMetricsCollection",
        "ActivityCompletedEvent.edApp": NOT_A_URL,
        "ActivityCompletedEvent.extensions.runId": "must be a UUID",
        "ActivityCompletedEvent.extensions.courseId": NOT_TEXT,
    }


def test_event_constants_match_the_wire(
    time_spent_event: tt.TimeSpentEvent, activity_completed_event: tt.ActivityCompletedEvent
) -> None:
    """The two events carry Timeback's type, action, profile and @context."""
    assert (time_spent_event.type, time_spent_event.action) == ("TimeSpentEvent", "SpentTime")
    assert (activity_completed_event.type, activity_completed_event.action) == (
        "ActivityEvent",
        "Completed",
    )
    for event in (time_spent_event, activity_completed_event):
        assert event.profile == "TimebackProfile"
        assert event.context == "http://purl.imsglobal.org/ctx/caliper/v1p2"


def test_envelope_reports_every_bad_field_together() -> None:
    """An envelope needs an IRI sensor, an aware sendTime and at least one event."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.Envelope(sensor="lab 3", send_time=datetime(2026, 1, 27), data=[])
    assert problems(exc) == {
        "Envelope.sensor": NOT_A_URL,
        "Envelope.sendTime": NAIVE,
        "Envelope.data": "must hold at least one event",
    }


def test_envelope_holds_only_events(time_spent_event: tt.TimeSpentEvent) -> None:
    """Anything but the two events in data is rejected."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.Envelope(sensor="https://example.com/s", send_time=NOW, data=[time_spent_event, {}])  # type: ignore[list-item]
    assert problems(exc) == {
        "Envelope.data": "must hold TimeSpentEvent or ActivityCompletedEvent items only"
    }


def test_envelope_keeps_events_in_order(
    time_spent_event: tt.TimeSpentEvent, activity_completed_event: tt.ActivityCompletedEvent
) -> None:
    """data becomes a tuple in the given order; dataVersion is Caliper 1.2."""
    envelope = tt.Envelope(
        sensor="https://kiosk.example.com/sensors/lab-3",
        send_time=NOW,
        data=iter([time_spent_event, activity_completed_event]),
    )
    assert envelope.data == (time_spent_event, activity_completed_event)
    assert envelope.data_version == "http://purl.imsglobal.org/ctx/caliper/v1p2"


# --------------------------------------------------------------------------
# TimeSpentEvent.for_window


def test_for_window_builds_active_and_inactive_items(
    user: tt.TimebackUser,
    activity: tt.TimebackActivityContext,
    run_id: str,
    start: datetime,
    end: datetime,
) -> None:
    """One active and one inactive item, both carrying the window's start and end."""
    event = tt.TimeSpentEvent.for_window(
        user=user,
        activity=activity,
        run_id=run_id,
        start=start,
        end=end,
        active_seconds=15,
        inactive_seconds=0,
    )
    assert [(item.type, item.value) for item in event.generated.items] == [
        (tt.TimeMetricType.ACTIVE, 15),
        (tt.TimeMetricType.INACTIVE, 0),
    ]
    for item in event.generated.items:
        assert (item.start_date, item.end_date) == (start, end)
    assert event.event_time == end
    assert (event.actor, event.object) == (user, activity)


def test_for_window_sets_run_id_and_session(
    user: tt.TimebackUser, activity: tt.TimebackActivityContext, run_id: str, end: datetime
) -> None:
    """extensions.runId is the run; session is urn:uuid:<runId>; no courseId unless given."""
    event = tt.TimeSpentEvent.for_window(
        user=user,
        activity=activity,
        run_id=run_id,
        start=end,
        end=end,
        active_seconds=0,
        inactive_seconds=0,
    )
    assert event.extensions == {"runId": run_id}
    assert event.run_id == run_id
    assert event.session == f"urn:uuid:{run_id}"


def test_for_window_adds_course_id_when_given(
    user: tt.TimebackUser, activity: tt.TimebackActivityContext, run_id: str, end: datetime
) -> None:
    """course_id goes to extensions.courseId next to runId."""
    event = tt.TimeSpentEvent.for_window(
        user=user,
        activity=activity,
        run_id=uuid.UUID(run_id),
        start=end,
        end=end,
        active_seconds=0,
        inactive_seconds=0,
        course_id="MATH-3",
    )
    assert event.extensions == {"runId": run_id, "courseId": "MATH-3"}


def test_for_window_rounds_values_to_milliseconds(
    user: tt.TimebackUser, activity: tt.TimebackActivityContext, run_id: str, start: datetime
) -> None:
    """Seconds are rounded to 3 decimals."""
    event = tt.TimeSpentEvent.for_window(
        user=user,
        activity=activity,
        run_id=run_id,
        start=start,
        end=start + timedelta(seconds=15),
        active_seconds=10.123_456,
        inactive_seconds=4.876_544,
    )
    assert event.generated.seconds("active") == 10.123
    assert event.generated.seconds("inactive") == 4.877


@given(seconds=st.floats(min_value=0, max_value=86_400))
def test_for_window_values_never_have_more_than_three_decimals(seconds: float) -> None:
    """Any valid number of seconds comes out with at most millisecond precision."""
    user = tt.TimebackUser(id="https://example.com/u/1", email="a@example.com")
    activity = tt.TimebackActivityContext(
        id="https://example.com/a", subject="Math", app=tt.App(name="A")
    )
    event = tt.TimeSpentEvent.for_window(
        user=user,
        activity=activity,
        run_id=uuid.UUID(int=1),
        start=NOW,
        end=NOW + timedelta(days=1),
        active_seconds=seconds,
        inactive_seconds=0,
    )
    value = event.generated.seconds("active")
    assert value == round(value, 3)
    assert abs(value - seconds) <= 0.0005 + 1e-9


def test_for_window_generated_id_is_unique_and_deterministic(
    user: tt.TimebackUser, activity: tt.TimebackActivityContext, run_id: str, end: datetime
) -> None:
    """generated.id is an absolute IRI, derived from (and only from) the event id."""

    def build(event_id: str | None = None) -> tt.TimeSpentEvent:
        return tt.TimeSpentEvent.for_window(
            user=user,
            activity=activity,
            run_id=run_id,
            start=end,
            end=end,
            active_seconds=0,
            inactive_seconds=0,
            event_id=event_id,
        )

    first, second = build(), build()
    assert first.id != second.id
    assert first.generated.id != second.generated.id
    assert first.generated.id != first.id
    assert urlsplit(first.generated.id).scheme
    assert build(EVENT_ID).generated.id == build(EVENT_ID).generated.id
    assert build(EVENT_ID) == build(EVENT_ID)


def test_for_window_generates_a_urn_uuid_event_id(
    user: tt.TimebackUser, activity: tt.TimebackActivityContext, run_id: str, end: datetime
) -> None:
    """Without event_id, the event gets a fresh urn:uuid id."""
    event = tt.TimeSpentEvent.for_window(
        user=user,
        activity=activity,
        run_id=run_id,
        start=end,
        end=end,
        active_seconds=0,
        inactive_seconds=0,
    )
    assert event.id.startswith("urn:uuid:")
    uuid.UUID(event.id.removeprefix("urn:uuid:"))


def test_for_window_rejects_a_bad_run_id(
    user: tt.TimebackUser, activity: tt.TimebackActivityContext, end: datetime
) -> None:
    """A run id that is not a UUID is reported as extensions.runId."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.TimeSpentEvent.for_window(
            user=user,
            activity=activity,
            run_id="run-1",
            start=end,
            end=end,
            active_seconds=0,
            inactive_seconds=0,
        )
    assert problems(exc) == {"extensions.runId": "must be a UUID"}


def test_for_window_rejects_naive_and_reversed_windows(
    user: tt.TimebackUser, activity: tt.TimebackActivityContext, run_id: str, end: datetime
) -> None:
    """A naive start, or an end before the start, is rejected."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.TimeSpentEvent.for_window(
            user=user,
            activity=activity,
            run_id=run_id,
            start=end.replace(tzinfo=None),
            end=end,
            active_seconds=1,
            inactive_seconds=0,
        )
    assert problems(exc) == {"TimeMetric.startDate": NAIVE}
    with pytest.raises(tt.ValidationError) as exc:
        tt.TimeSpentEvent.for_window(
            user=user,
            activity=activity,
            run_id=run_id,
            start=end,
            end=end - timedelta(seconds=1),
            active_seconds=1,
            inactive_seconds=0,
        )
    assert problems(exc) == {"TimeMetric.endDate": "must not be before startDate"}


def test_for_window_rejects_values_out_of_range(
    user: tt.TimebackUser, activity: tt.TimebackActivityContext, run_id: str, end: datetime
) -> None:
    """Negative or over-a-day seconds are rejected."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.TimeSpentEvent.for_window(
            user=user,
            activity=activity,
            run_id=run_id,
            start=end,
            end=end,
            active_seconds=86_401,
            inactive_seconds=0,
        )
    assert problems(exc) == {"TimeMetric.value": "must be between 0 and 86400"}


# --------------------------------------------------------------------------
# ActivityCompletedEvent.for_completion


def test_for_completion_builds_every_given_metric(
    activity_completed_event: tt.ActivityCompletedEvent, run_id: str
) -> None:
    """Every given metric becomes one item; pct_complete goes to generated.extensions."""
    generated = activity_completed_event.generated
    assert [(item.type.value, item.value) for item in generated.items] == [
        ("xpEarned", 1),
        ("totalQuestions", 10),
        ("correctQuestions", 8),
        ("masteredUnits", 1),
    ]
    assert generated.extensions == {"pctCompleteApp": 67}
    assert activity_completed_event.extensions == {"runId": run_id, "courseId": "MATH-3"}
    assert activity_completed_event.session == f"urn:uuid:{run_id}"
    assert activity_completed_event.run_id == run_id


def test_for_completion_with_xp_only(
    user: tt.TimebackUser, activity: tt.TimebackActivityContext, run_id: str, end: datetime
) -> None:
    """Only xpEarned is required; absent metrics and courseId are left out."""
    event = tt.ActivityCompletedEvent.for_completion(
        user=user, activity=activity, run_id=run_id, event_time=end, xp_earned=0
    )
    assert [item.type for item in event.generated.items] == [tt.ActivityMetricType.XP_EARNED]
    assert event.generated.extensions is None
    assert event.extensions == {"runId": run_id}
    assert event.event_time == end


def test_for_completion_generated_id_is_unique_and_deterministic(
    user: tt.TimebackUser, activity: tt.TimebackActivityContext, run_id: str, end: datetime
) -> None:
    """generated.id is an absolute IRI that depends on the event id only."""

    def build(event_id: str | None = None) -> tt.ActivityCompletedEvent:
        return tt.ActivityCompletedEvent.for_completion(
            user=user,
            activity=activity,
            run_id=run_id,
            event_time=end,
            xp_earned=3,
            event_id=event_id,
        )

    first, second = build(), build()
    assert first.generated.id != second.generated.id
    assert urlsplit(first.generated.id).scheme
    assert build(EVENT_ID).generated.id == build(EVENT_ID).generated.id


def test_completion_and_window_with_one_event_id_differ_from_other_ids(
    user: tt.TimebackUser, activity: tt.TimebackActivityContext, run_id: str, end: datetime
) -> None:
    """Different event ids of one run give different generated ids in both builders."""
    window = tt.TimeSpentEvent.for_window(
        user=user,
        activity=activity,
        run_id=run_id,
        start=end,
        end=end,
        active_seconds=0,
        inactive_seconds=0,
        event_id="urn:uuid:00000000-0000-4000-8000-000000000001",
    )
    completion = tt.ActivityCompletedEvent.for_completion(
        user=user,
        activity=activity,
        run_id=run_id,
        event_time=end,
        xp_earned=1,
        event_id="urn:uuid:00000000-0000-4000-8000-000000000002",
    )
    assert window.generated.id != completion.generated.id


@pytest.mark.parametrize(
    ("metrics", "path", "message"),
    [
        (
            {"total_questions": 10},
            "ActivityMetricsCollection.items",
            "'totalQuestions' and 'correctQuestions' come together or not at all",
        ),
        (
            {"total_questions": 5, "correct_questions": 6},
            "ActivityMetricsCollection.items",
            "'correctQuestions' must not exceed 'totalQuestions'",
        ),
        ({"mastered_units": -1}, "ActivityMetric(masteredUnits).value", NOT_WHOLE),
        ({"xp_earned": math.nan}, "ActivityMetric(xpEarned).value", NOT_FINITE),
        (
            {"pct_complete": 101},
            "ActivityMetricsCollection.extensions.pctCompleteApp",
            "must be between 0 and 100",
        ),
    ],
)
def test_for_completion_rejects_broken_metrics(
    user: tt.TimebackUser,
    activity: tt.TimebackActivityContext,
    run_id: str,
    end: datetime,
    metrics: dict[str, Any],
    path: str,
    message: str,
) -> None:
    """The builder applies every completion rule and names the field."""
    arguments: dict[str, Any] = {"xp_earned": 1, **metrics}
    with pytest.raises(tt.ValidationError) as exc:
        tt.ActivityCompletedEvent.for_completion(
            user=user, activity=activity, run_id=run_id, event_time=end, **arguments
        )
    assert problems(exc) == {path: message}


def test_for_completion_rejects_a_naive_event_time(
    user: tt.TimebackUser, activity: tt.TimebackActivityContext, run_id: str
) -> None:
    """A naive completion time is rejected."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.ActivityCompletedEvent.for_completion(
            user=user,
            activity=activity,
            run_id=run_id,
            event_time=datetime(2026, 1, 27, 10),
            xp_earned=1,
        )
    assert problems(exc) == {"ActivityCompletedEvent.eventTime": NAIVE}
