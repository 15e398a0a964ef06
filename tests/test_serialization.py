"""The wire format: dump/load of events and envelopes, timestamps, and JSON type checks."""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import timeback_tracker as tt
from timeback_tracker._serialization import (
    format_timestamp,
    parse_timestamp,
    unknown_keys,
)

UTC = timezone.utc
CONTEXT = "http://purl.imsglobal.org/ctx/caliper/v1p2"
WIRE_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")

# The two examples of Timeback's event documentation, verbatim (the authority on shapes).
SEED_ACTIVITY_COMPLETED_EVENT = """\
{
	"@context": "http://purl.imsglobal.org/ctx/caliper/v1p2",
	"id": "urn:uuid:c51570e4-f8ed-4c18-bb3a-dfe51b2cc594",
	"type": "ActivityEvent",
	"action": "Completed",
	"profile": "TimebackProfile",
	"eventTime": "2026-01-27T10:03:00.000Z",
	"actor": {
		"id": "https://api.example.com/ims/oneroster/rostering/v1p2/users/student-123",
		"type": "TimebackUser",
		"email": "student@example.com"
	},
	"object": {
		"id": "https://myapp.example.com/activities/Math/g3/lesson-1",
		"type": "TimebackActivityContext",
		"subject": "Math",
		"app": { "name": "My App" }
	},
	"generated": {
		"id": "https://api.example.com/ims/metrics/collections/activity/abc-123",
		"type": "TimebackActivityMetricsCollection",
		"items": [
			{ "type": "xpEarned", "value": 80 },
			{ "type": "totalQuestions", "value": 10 },
			{ "type": "correctQuestions", "value": 8 },
			{ "type": "masteredUnits", "value": 1 }
		],
		"extensions": {
			"pctCompleteApp": 67
		}
	},
	"extensions": {
		"runId": "f47ac10b-58cc-4372-a567-0e02b2c3d479",
		"courseId": "MATH-3"
	}
}
"""

SEED_TIME_SPENT_EVENT = """\
{
	"@context": "http://purl.imsglobal.org/ctx/caliper/v1p2",
	"id": "urn:uuid:a1b2c3d4-e5f6-7890-abcd-ef1234567890",
	"type": "TimeSpentEvent",
	"action": "SpentTime",
	"profile": "TimebackProfile",
	"eventTime": "2026-01-27T10:00:15.000Z",
	"actor": {
		"id": "https://api.example.com/ims/oneroster/rostering/v1p2/users/student-123",
		"type": "TimebackUser",
		"email": "student@example.com"
	},
	"object": {
		"id": "https://myapp.example.com/activities/Math/g3/lesson-1",
		"type": "TimebackActivityContext",
		"subject": "Math",
		"app": { "name": "My App" }
	},
	"generated": {
		"id": "https://api.example.com/ims/metrics/collections/time-spent/def-456",
		"type": "TimebackTimeSpentMetricsCollection",
		"items": [
			{
				"type": "active",
				"value": 15,
				"startDate": "2026-01-27T10:00:00.000Z",
				"endDate": "2026-01-27T10:00:15.000Z"
			},
			{
				"type": "inactive",
				"value": 0
			}
		]
	},
	"extensions": {
		"runId": "f47ac10b-58cc-4372-a567-0e02b2c3d479",
		"courseId": "MATH-3"
	}
}
"""

SEEDS = [
    pytest.param(SEED_TIME_SPENT_EVENT, tt.TimeSpentEvent, id="TimeSpentEvent"),
    pytest.param(SEED_ACTIVITY_COMPLETED_EVENT, tt.ActivityCompletedEvent, id="ActivityEvent"),
]


def seed(text: str) -> dict[str, Any]:
    """A fresh decoded copy of a seed example."""
    data: dict[str, Any] = json.loads(text)
    return data


def envelope_json(*events: dict[str, Any]) -> dict[str, Any]:
    """The wire JSON of an envelope carrying ``events``."""
    return {
        "sensor": "https://kiosk.example.com/sensors/lab-3",
        "sendTime": "2026-01-27T10:03:01.000Z",
        "dataVersion": CONTEXT,
        "data": list(events),
    }


def load_errors(data: Any, cls: type[Any]) -> dict[str, str]:
    """The {path: message} of the ValidationError that load raises (it must raise)."""
    with pytest.raises(tt.ValidationError) as exc:
        tt.load(data, cls)
    errors = exc.value.errors
    paths = [error.path for error in errors]
    assert len(paths) == len(set(paths)), f"duplicate paths in {paths}"
    return {error.path: error.message for error in errors}


def walk(value: Any) -> Iterator[tuple[str | None, Any]]:
    """Every (key, value) pair of a JSON document, recursively (key None for list items)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key, item
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield None, item
            yield from walk(item)


# --------------------------------------------------------------------------
# The seed examples


@pytest.mark.parametrize(("text", "cls"), SEEDS)
def test_seed_examples_round_trip_exactly(text: str, cls: type[tt.Event]) -> None:
    """Each documented example loads and dumps back to exactly the same JSON."""
    data = seed(text)
    event = tt.load(data, cls)
    assert isinstance(event, cls)
    assert json.dumps(tt.dump(event), sort_keys=True) == json.dumps(data, sort_keys=True)


@pytest.mark.parametrize(("text", "cls"), SEEDS)
def test_seed_examples_keep_integers_as_integers(text: str, cls: type[tt.Event]) -> None:
    """Whole-number values go back on the wire as JSON integers, not 15.0."""
    dumped = tt.dump(tt.load(seed(text), cls))
    values = [item["value"] for item in dumped["generated"]["items"]]
    assert values
    assert all(type(value) is int for value in values)
    assert '"value": 15.0' not in json.dumps(dumped)


def test_seed_time_spent_event_loads_into_the_models() -> None:
    """The TimeSpentEvent example becomes typed models with UTC datetimes."""
    event = tt.load(seed(SEED_TIME_SPENT_EVENT), tt.TimeSpentEvent)
    active, inactive = event.generated.items
    assert active.type is tt.TimeMetricType.ACTIVE
    assert active.start_date == datetime(2026, 1, 27, 10, 0, 0, tzinfo=UTC)
    assert active.end_date == datetime(2026, 1, 27, 10, 0, 15, tzinfo=UTC)
    assert (inactive.value, inactive.start_date) == (0, None)
    assert event.object.subject is tt.Subject.MATH
    assert event.run_id == "f47ac10b-58cc-4372-a567-0e02b2c3d479"


def test_seed_activity_event_loads_into_the_models() -> None:
    """The ActivityEvent example becomes an ActivityCompletedEvent with its metrics."""
    event = tt.load(seed(SEED_ACTIVITY_COMPLETED_EVENT), tt.ActivityCompletedEvent)
    assert event.generated.value("xpEarned") == 80
    assert event.generated.value(tt.ActivityMetricType.CORRECT_QUESTIONS) == 8
    assert event.generated.extensions == {"pctCompleteApp": 67}


# --------------------------------------------------------------------------
# dump


def test_dump_uses_camel_case_keys_only(user: tt.TimebackUser, run_id: str) -> None:
    """startDate/endDate/subType/eventTime/edApp are camelCase; no key has an underscore."""
    item = tt.TimeMetric(
        type="waste",
        value=3,
        sub_type="off-task",
        start_date=datetime(2026, 1, 27, 10, tzinfo=UTC),
        end_date=datetime(2026, 1, 27, 10, 0, 3, tzinfo=UTC),
    )
    event = tt.TimeSpentEvent(
        id="urn:uuid:a1b2c3d4-e5f6-7890-abcd-ef1234567890",
        event_time=datetime(2026, 1, 27, 10, 0, 3, tzinfo=UTC),
        actor=user,
        object=tt.TimebackActivityContext(
            id="https://example.com/a", subject="Reading", app=tt.App(name="A")
        ),
        generated=tt.TimeSpentMetricsCollection(id="https://example.com/g/1", items=[item]),
        ed_app="https://example.com/app",
        extensions={"runId": run_id},
    )
    envelope = tt.Envelope(
        sensor="https://example.com/s", send_time=datetime.now(UTC), data=[event]
    )
    dumped = tt.dump(envelope)
    keys = {key for key, _ in walk(dumped) if key is not None}
    assert {"sendTime", "dataVersion", "eventTime", "edApp", "@context"} <= keys
    assert {"subType", "startDate", "endDate"} <= set(dumped["data"][0]["generated"]["items"][0])
    assert not [key for key in keys if "_" in key]
    assert not {"sub_type", "start_date", "end_date", "event_time", "ed_app"} & keys


def test_dump_never_contains_none(user: tt.TimebackUser, run_id: str) -> None:
    """Absent optional fields are omitted and None inside extensions is dropped."""
    user_without_options = tt.TimebackUser(id=user.id, email=user.email)
    event = tt.ActivityCompletedEvent.for_completion(
        user=user_without_options,
        activity=tt.TimebackActivityContext(
            id="https://example.com/a",
            subject="Science",
            app=tt.App(name="A", extensions={"build": None, "nested": {"x": None, "y": [None, 1]}}),
        ),
        run_id=run_id,
        event_time=datetime(2026, 1, 27, tzinfo=UTC),
        xp_earned=2,
    )
    dumped = tt.dump(event)
    assert all(value is not None for _, value in walk(dumped))
    assert "null" not in json.dumps(dumped)
    assert set(dumped["actor"]) == {"id", "type", "email"}
    assert set(dumped["object"]) == {"id", "type", "subject", "app"}
    assert "extensions" not in dumped["generated"]
    assert dumped["object"]["app"]["extensions"] == {"nested": {"y": [1]}}


def test_dump_keeps_false_and_zero(user: tt.TimebackUser, run_id: str) -> None:
    """Only None is omitted: process=false and zero values stay on the wire."""
    event = tt.TimeSpentEvent.for_window(
        user=user,
        activity=tt.TimebackActivityContext(
            id="https://example.com/a", subject="Math", app=tt.App(name="A"), process=False
        ),
        run_id=run_id,
        start=datetime(2026, 1, 27, tzinfo=UTC),
        end=datetime(2026, 1, 27, tzinfo=UTC),
        active_seconds=0,
        inactive_seconds=0,
    )
    dumped = tt.dump(event)
    assert dumped["object"]["process"] is False
    assert [item["value"] for item in dumped["generated"]["items"]] == [0, 0]


def test_dump_writes_enum_values_and_constants(
    activity_completed_event: tt.ActivityCompletedEvent,
) -> None:
    """Enums go out as their wire strings, with @context, type, action and profile."""
    dumped = tt.dump(activity_completed_event)
    assert dumped["@context"] == CONTEXT
    assert (dumped["type"], dumped["action"], dumped["profile"]) == (
        "ActivityEvent",
        "Completed",
        "TimebackProfile",
    )
    assert dumped["object"]["subject"] == "Math"
    assert dumped["actor"]["role"] == "student"
    assert [item["type"] for item in dumped["generated"]["items"]] == [
        "xpEarned",
        "totalQuestions",
        "correctQuestions",
        "masteredUnits",
    ]
    json.dumps(dumped)  # plain JSON types only


def test_dump_timestamps_are_utc_milliseconds_with_z(
    user: tt.TimebackUser, activity: tt.TimebackActivityContext, run_id: str
) -> None:
    """A non-UTC aware datetime goes out as YYYY-MM-DDTHH:MM:SS.mmmZ in UTC."""
    pacific = timezone(timedelta(hours=-8))
    event = tt.TimeSpentEvent.for_window(
        user=user,
        activity=activity,
        run_id=run_id,
        start=datetime(2026, 1, 26, 23, 59, 50, 5_000, tzinfo=pacific),
        end=datetime(2026, 1, 27, 0, 0, 5, 123_987, tzinfo=pacific),
        active_seconds=15.118,
        inactive_seconds=0,
    )
    dumped = tt.dump(event)
    assert dumped["eventTime"] == "2026-01-27T08:00:05.123Z"
    assert dumped["generated"]["items"][0]["startDate"] == "2026-01-27T07:59:50.005Z"
    timestamps = [
        value for key, value in walk(dumped) if key in {"eventTime", "startDate", "endDate"}
    ]
    assert len(timestamps) == 5
    assert all(WIRE_TIMESTAMP.fullmatch(value) for value in timestamps)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2026, 1, 27, 10, 0, 15, tzinfo=UTC), "2026-01-27T10:00:15.000Z"),
        (datetime(2026, 1, 27, 10, 0, 15, 999_999, tzinfo=UTC), "2026-01-27T10:00:15.999Z"),
        (
            datetime(2026, 1, 1, 5, 29, 0, 1_000, tzinfo=timezone(timedelta(hours=5, minutes=30))),
            "2025-12-31T23:59:00.001Z",
        ),
        (datetime(999, 1, 2, tzinfo=UTC), "0999-01-02T00:00:00.000Z"),
    ],
)
def test_format_timestamp(value: datetime, expected: str) -> None:
    """Timestamps are UTC, truncated to ms, with a four-digit year and a Z."""
    assert format_timestamp(value) == expected


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.builds(
            timezone, st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timedelta(minutes=m))
        ),
    )
)
def test_format_then_parse_is_the_instant_to_the_millisecond(value: datetime) -> None:
    """Any aware datetime survives format -> parse, truncated to the millisecond."""
    text = format_timestamp(value)
    assert WIRE_TIMESTAMP.fullmatch(text)
    parsed = parse_timestamp(text)
    assert timedelta(0) <= value - parsed < timedelta(milliseconds=1)


# --------------------------------------------------------------------------
# Timestamp parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-27T10:00:15Z", datetime(2026, 1, 27, 10, 0, 15, tzinfo=UTC)),
        ("2026-01-27T10:00:15.000Z", datetime(2026, 1, 27, 10, 0, 15, tzinfo=UTC)),
        ("2026-01-27T10:00:15.5+00:00", datetime(2026, 1, 27, 10, 0, 15, 500_000, tzinfo=UTC)),
        ("2026-01-27T15:30:15.25+0530", datetime(2026, 1, 27, 10, 0, 15, 250_000, tzinfo=UTC)),
        ("2026-01-27T15:30:15+05:30", datetime(2026, 1, 27, 10, 0, 15, tzinfo=UTC)),
        ("2026-01-27T02:00:15.123-08:00", datetime(2026, 1, 27, 10, 0, 15, 123_000, tzinfo=UTC)),
        ("2026-01-27T10:00:15.123456Z", datetime(2026, 1, 27, 10, 0, 15, 123_456, tzinfo=UTC)),
        ("2026-01-27T10:00:15.123456789Z", datetime(2026, 1, 27, 10, 0, 15, 123_456, tzinfo=UTC)),
        ("0999-01-02T00:00:00.000Z", datetime(999, 1, 2, tzinfo=UTC)),
    ],
)
def test_parse_timestamp_accepts_z_and_offsets(text: str, expected: datetime) -> None:
    """Z, +00:00, +0530 and -08:00 offsets with 0-9 fractional digits all parse."""
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed.utcoffset() is not None


@pytest.mark.parametrize("digits", range(10))
def test_parse_timestamp_accepts_zero_to_nine_fraction_digits(digits: int) -> None:
    """Any number of fractional digits from 0 to 9 is accepted (beyond 6 truncated)."""
    fraction = "." + "123456789"[:digits] if digits else ""
    parsed = parse_timestamp(f"2026-01-27T10:00:15{fraction}Z")
    assert parsed.microsecond == int("123456789"[: min(digits, 6)].ljust(6, "0"))


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-27T10:00:15",  # naive: no Z, no offset
        "2026-01-27T10:00:15.000",
        "2026-01-27",
        "2026-01-27 10:00:15Z",
        "2026-01-27T10:00:15.1234567890Z",  # ten fractional digits
        "2026-01-27T10:00Z",
        "27/01/2026 10:00:15",
        "yesterday",
        "",
    ],
)
def test_parse_timestamp_rejects_naive_and_malformed(text: str) -> None:
    """Timestamps without a zone or not in ISO 8601 form are rejected."""
    with pytest.raises(ValueError, match="must be an ISO 8601 timestamp with a timezone"):
        parse_timestamp(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-13-27T10:00:15Z", "month must be in 1..12"),
        ("2026-02-30T10:00:15Z", "day is out of range for month"),
        ("2026-01-27T24:00:00Z", "hour must be in 0..23"),
        ("2026-01-27T10:00:15+24:00", "must have a UTC offset between -23:59 and +23:59"),
        ("2026-01-27T10:00:15+05:60", "must have a UTC offset between -23:59 and +23:59"),
        ("0001-01-01T00:00:00+01:00", "must be a date between years 1 and 9999 in UTC"),
        ("9999-12-31T23:00:00-01:00", "must be a date between years 1 and 9999 in UTC"),
    ],
)
def test_parse_timestamp_rejects_impossible_dates(text: str, message: str) -> None:
    """Impossible dates, offsets and instants outside years 1-9999 UTC are rejected."""
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_timestamp(text)


# --------------------------------------------------------------------------
# load: JSON types and paths


@pytest.mark.parametrize(
    ("edit", "path", "message"),
    [
        (lambda d: d["generated"]["items"][0].update(value="15"), "items[0].value", "number"),
        (lambda d: d["generated"]["items"][0].update(value=True), "items[0].value", "number"),
        (lambda d: d["generated"]["items"][0].update(value=None), "items[0].value", "number"),
        (lambda d: d["actor"].update(id=123), "actor.id", "string"),
        (lambda d: d["actor"].update(email=7), "actor.email", "string"),
        (lambda d: d["generated"].update(id=False), "generated.id", "string"),
        (lambda d: d["object"].update(process="true"), "object.process", "true or false"),
        (lambda d: d["object"].update(process=1), "object.process", "true or false"),
        (lambda d: d.update(eventTime=1769508015), "eventTime", "string"),
        (lambda d: d.update(extensions=["runId"]), "extensions", "must be a JSON object"),
        (lambda d: d["object"].update(app="My App"), "object.app", "must be a JSON object"),
        (lambda d: d["generated"].update(items="active"), "generated.items", "JSON array"),
        (lambda d: d["generated"].update(items={"0": {}}), "generated.items", "JSON array"),
    ],
)
def test_load_rejects_wrong_json_types(edit: Any, path: str, message: str) -> None:
    """A value of the wrong JSON type is reported at its JSON path; no coercion."""
    data = seed(SEED_TIME_SPENT_EVENT)
    edit(data)
    errors = load_errors(data, tt.TimeSpentEvent)
    full_path = "$." + path if not path.startswith("items") else "$.generated." + path
    assert list(errors) == [full_path]
    assert message in errors[full_path]


def test_load_lists_every_invalid_field_at_once() -> None:
    """Type errors and rule errors across the whole event come back together."""
    data = seed(SEED_ACTIVITY_COMPLETED_EVENT)
    data["id"] = "c51570e4"
    data["eventTime"] = "2026-01-27T10:03:00"
    data["actor"]["email"] = "student"
    data["object"]["subject"] = "Art"
    data["object"]["app"]["id"] = "my app"
    data["generated"]["items"][0]["value"] = "80"
    data["generated"]["extensions"]["pctCompleteApp"] = 150
    data["extensions"]["runId"] = "run-42"
    assert load_errors(data, tt.ActivityCompletedEvent) == {
        "$.id": "must be 'urn:uuid:' followed by a UUID",
        "$.eventTime": (
            "must be an ISO 8601 timestamp with a timezone, e.g. 2026-01-27T10:00:15.000Z"
        ),
        "$.actor.email": "must be an email address (name@domain)",
        "$.object.subject": (
            "must be one of 'Reading', 'Language', 'Vocabulary', 'Social Studies', 'Writing', "
            "'Science', 'FastMath', 'Math', 'None', 'Other'"
        ),
        "$.object.app.id": (
            "must be an absolute URL/IRI such as https://example.com/... (no spaces)"
        ),
        "$.generated.items[0].value": "must be a number",
        "$.generated.extensions.pctCompleteApp": "must be between 0 and 100",
        "$.extensions.runId": "must be a UUID",
    }


def test_load_reports_rules_of_the_collection(user: tt.TimebackUser) -> None:
    """Cross-field completion rules are reported with the collection's path."""
    data = seed(SEED_ACTIVITY_COMPLETED_EVENT)
    data["generated"]["items"] = [
        {"type": "totalQuestions", "value": 3},
        {"type": "correctQuestions", "value": 4},
    ]
    with pytest.raises(tt.ValidationError) as exc:
        tt.load(data, tt.ActivityCompletedEvent)
    assert [str(error) for error in exc.value.errors] == [
        "$.generated.items: must include 'xpEarned'",
        "$.generated.items: 'correctQuestions' must not exceed 'totalQuestions'",
    ]


@pytest.mark.parametrize(
    ("remove", "path"),
    [
        (lambda d: d.pop("actor"), "$.actor"),
        (lambda d: d["actor"].pop("email"), "$.actor.email"),
        (lambda d: d.pop("@context"), "$.@context"),
        (lambda d: d.pop("profile"), "$.profile"),
        (lambda d: d.pop("action"), "$.action"),
        (lambda d: d["actor"].pop("type"), "$.actor.type"),
        (lambda d: d["object"].pop("type"), "$.object.type"),
        (lambda d: d["generated"].pop("type"), "$.generated.type"),
        (lambda d: d["generated"].pop("items"), "$.generated.items"),
        (lambda d: d["generated"]["items"][0].pop("value"), "$.generated.items[0].value"),
    ],
)
def test_load_requires_every_required_key(remove: Any, path: str) -> None:
    """A missing required key, constants like @context and type included, is reported."""
    data = seed(SEED_TIME_SPENT_EVENT)
    remove(data)
    assert load_errors(data, tt.TimeSpentEvent) == {path: "is required"}


def test_load_rejects_wrong_constants() -> None:
    """type, action, profile and @context must carry the exact wire constants."""
    data = seed(SEED_TIME_SPENT_EVENT)
    data["@context"] = "http://purl.imsglobal.org/ctx/caliper/v1p1"
    data["action"] = "Completed"
    data["generated"]["type"] = "TimebackActivityMetricsCollection"
    assert load_errors(data, tt.TimeSpentEvent) == {
        "$.@context": "must be 'http://purl.imsglobal.org/ctx/caliper/v1p2'",
        "$.action": "must be 'SpentTime'",
        "$.generated.type": "must be 'TimebackTimeSpentMetricsCollection'",
    }


@pytest.mark.parametrize("data", ["event", 42, None, [], True])
def test_load_rejects_a_document_that_is_not_an_object(data: Any) -> None:
    """The top level must be a JSON object."""
    assert load_errors(data, tt.TimeSpentEvent) == {"$": "must be a JSON object"}


@pytest.mark.parametrize("value", [1769508015, 17.5, True, ["2026-01-27T10:00:15.000Z"], {}])
@pytest.mark.parametrize(
    ("where", "path"),
    [
        (lambda d: d, "$.eventTime"),
        (lambda d: d["generated"]["items"][0], "$.generated.items[0].startDate"),
    ],
)
def test_a_non_string_timestamp_asks_for_an_iso_8601_string(
    value: Any, where: Any, path: str
) -> None:
    """A timestamp of another JSON type names the wire rule, not a Python type error."""
    data = seed(SEED_TIME_SPENT_EVENT)
    key = path.rsplit(".", 1)[1]
    where(data)[key] = value
    assert load_errors(data, tt.TimeSpentEvent) == {
        path: "must be an ISO 8601 string, e.g. 2026-01-27T10:00:15.000Z"
    }


# --------------------------------------------------------------------------
# load: one pass, each object judged by itself (no stand-in values)

NOT_AN_IRI = "must be an absolute URL/IRI such as https://example.com/... (no spaces)"
# One edit of a valid TimeSpentEvent per field, of the wrong JSON type or breaking a
# rule, at every depth: (JSON path, edit, what load says).
ONE_FIELD_EDITS: dict[str, tuple[Any, str]] = {
    "$.id": (lambda d: d.update(id="c51570e4"), "must be 'urn:uuid:' followed by a UUID"),
    "$.eventTime": (
        lambda d: d.update(eventTime=17),
        "must be an ISO 8601 string, e.g. 2026-01-27T10:00:15.000Z",
    ),
    "$.session": (lambda d: d.update(session="lab 3"), NOT_AN_IRI),
    "$.actor.id": (lambda d: d["actor"].update(id=123), "must be a string"),
    "$.actor.email": (
        lambda d: d["actor"].update(email="student"),
        "must be an email address (name@domain)",
    ),
    "$.object.id": (lambda d: d["object"].update(id=5), "must be a string"),
    "$.object.app.name": (
        lambda d: d["object"]["app"].update(name=" "),
        "must be a non-empty string",
    ),
    "$.generated.id": (lambda d: d["generated"].update(id="def-456"), NOT_AN_IRI),
    "$.generated.items[0].value": (
        lambda d: d["generated"]["items"][0].update(value="15"),
        "must be a number",
    ),
    "$.generated.items[1].endDate": (
        lambda d: d["generated"]["items"][1].update(
            startDate="2026-01-27T10:00:15.000Z", endDate="2026-01-27T10:00:14.999Z"
        ),
        "must not be before startDate",
    ),
    "$.extensions.runId": (lambda d: d["extensions"].update(runId="run-42"), "must be a UUID"),
}


@pytest.mark.parametrize(
    "paths",
    [
        *([path] for path in ONE_FIELD_EDITS),
        *itertools.combinations(ONE_FIELD_EDITS, 2),
        list(ONE_FIELD_EDITS),
    ],
    ids="+".join,
)
def test_load_judges_each_field_by_itself(paths: list[str]) -> None:
    """A wrong JSON type and a broken rule, siblings or at any depth, are each reported.

    Whatever else is wrong in the document, each edit gives the same error as alone:
    a failed field hides no sibling, and no rule reports a value the document lacks.
    """
    data = seed(SEED_TIME_SPENT_EVENT)
    for path in paths:
        ONE_FIELD_EDITS[path][0](data)
    assert load_errors(data, tt.TimeSpentEvent) == {
        path: ONE_FIELD_EDITS[path][1] for path in paths
    }


def test_load_runs_a_rule_across_fields_beside_a_bad_sibling() -> None:
    """endDate is still checked against startDate when another field of the metric is bad."""
    data = seed(SEED_TIME_SPENT_EVENT)
    data["generated"]["items"][0].update(type=7, endDate="2026-01-27T09:59:59.000Z")
    data["generated"]["items"][1].update(type="idle", extensions={"n": 1.5e400})
    assert load_errors(data, tt.TimeSpentEvent) == {
        "$.generated.items[0].type": "must be a string",
        "$.generated.items[0].endDate": "must not be before startDate",
        "$.generated.items[1].type": (
            "must be one of 'active', 'inactive', 'waste', 'unknown', 'anti-pattern'"
        ),
        "$.generated.items[1].extensions": (
            "must hold JSON values only: text, finite numbers, booleans, null, lists, objects"
        ),
    }


def test_load_reports_a_metric_of_unknown_type_with_its_other_bad_fields() -> None:
    """An unknown metric type does not hide the metric's bad extensions or value."""
    data = seed(SEED_ACTIVITY_COMPLETED_EVENT)
    data["generated"]["items"][1].update(type="score", extensions=[1])
    data["generated"]["items"][2].update(type="grade", value=1e400)
    assert load_errors(data, tt.ActivityCompletedEvent) == {
        "$.generated.items[1].type": (
            "must be one of 'xpEarned', 'totalQuestions', 'correctQuestions', 'masteredUnits'"
        ),
        "$.generated.items[1].extensions": "must be a JSON object",
        "$.generated.items[2].type": (
            "must be one of 'xpEarned', 'totalQuestions', 'correctQuestions', 'masteredUnits'"
        ),
        "$.generated.items[2].value": "must be finite (not NaN or infinity)",
    }


def test_load_builds_models_only_from_the_document(monkeypatch: pytest.MonkeyPatch) -> None:
    """No model is built from a stand-in for a bad field: each one load builds is valid."""
    built: list[tt.TimeMetric] = []
    check = tt.TimeMetric.__attrs_post_init__

    def spy(self: tt.TimeMetric) -> None:
        built.append(self)
        check(self)

    monkeypatch.setattr(tt.TimeMetric, "__attrs_post_init__", spy)
    data = seed(SEED_TIME_SPENT_EVENT)
    data["generated"]["items"][0]["value"] = "15"
    data["generated"]["items"].append({"type": "waste", "value": 86_401})
    assert load_errors(data, tt.TimeSpentEvent) == {
        "$.generated.items[0].value": "must be a number",
        "$.generated.items[2].value": "must be between 0 and 86400",
    }
    assert [(metric.type, metric.value) for metric in built] == [(tt.TimeMetricType.INACTIVE, 0)]


def test_a_model_built_after_load_is_judged_again() -> None:
    """load() builds its models without judging them twice; nothing else skips the rules."""
    data = seed(SEED_TIME_SPENT_EVENT)
    actor = tt.load(data["actor"], tt.TimebackUser)
    with pytest.raises(tt.ValidationError, match="email"):
        tt.TimebackUser(id=actor.id, email="student")
    tt.load(data, tt.TimeSpentEvent)
    with pytest.raises(tt.ValidationError, match="items"):
        tt.TimeSpentMetricsCollection(id="https://example.com/c", items=[])


def unknown(data: Any, cls: Any) -> dict[str, str]:
    """``unknown_keys`` as ``{path: rule}``."""
    return {error.path: error.message for error in unknown_keys(data, cls)}


@pytest.mark.parametrize(("text", "cls"), SEEDS)
def test_unknown_keys_finds_none_in_the_seed_examples(text: str, cls: type[tt.Event]) -> None:
    """Timeback's own examples use only known keys."""
    assert unknown(seed(text), cls) == {}


def test_unknown_keys_names_each_typo_with_the_likely_key() -> None:
    """Case slips, snake_case and misspellings get a hint; other keys list the allowed ones."""
    data = seed(SEED_TIME_SPENT_EVENT)
    data["generated"]["items"][0]["startdate"] = "2026-01-27T10:00:00.000Z"
    data["generated"]["items"][1]["sub_type"] = "reading"
    data["actor"]["emial"] = "x"
    data["object"]["app"]["colour"] = "blue"
    data["event time"] = "later"
    assert unknown(data, tt.TimeSpentEvent) == {
        "$.generated.items[0].startdate": "unknown key; did you mean 'startDate'?",
        "$.generated.items[1].sub_type": "unknown key; did you mean 'subType'?",
        "$.actor.emial": "unknown key; did you mean 'email'?",
        "$.object.app.colour": "unknown key (allowed: 'name', 'id', 'extensions')",
        '$["event time"]': "unknown key; did you mean 'eventTime'?",
    }


def test_unknown_keys_leaves_extensions_free_and_skips_wrong_types() -> None:
    """Keys inside extensions are the app's; parts of the wrong JSON type are load()'s job."""
    data = seed(SEED_ACTIVITY_COMPLETED_EVENT)
    data["extensions"]["start_date"] = {"anything": [1]}
    data["generated"]["extensions"]["pctcomplete"] = 3
    data["object"]["app"]["extensions"] = {"colour": "blue"}
    data["actor"] = "not an object"
    data["generated"]["items"] = {"xpearned": 1}
    assert unknown(data, tt.ActivityCompletedEvent) == {}


def test_unknown_keys_reaches_into_envelopes_by_event_type() -> None:
    """In an envelope, each event is checked against the model its type names."""
    completed = seed(SEED_ACTIVITY_COMPLETED_EVENT)
    completed["generated"]["items"][0]["startDate"] = "2026-01-27T10:00:00.000Z"
    mystery = seed(SEED_TIME_SPENT_EVENT)
    mystery["type"] = "Mystery"
    mystery["whatever"] = 1
    data = envelope_json(seed(SEED_TIME_SPENT_EVENT), completed, mystery)
    data["send_time"] = data.pop("sendTime")
    assert unknown(data, tt.Envelope) == {
        "$.data[1].generated.items[0].startDate": "unknown key (allowed: 'type', 'value', "
        "'extensions')",
        "$.send_time": "unknown key; did you mean 'sendTime'?",
    }


def test_load_tolerates_unknown_keys_and_null_optionals() -> None:
    """Unknown Caliper fields are ignored; null optionals load as absent."""
    data = seed(SEED_TIME_SPENT_EVENT)
    data["target"] = "https://example.com/target"
    data["actor"]["name"] = None
    event = tt.load(data, tt.TimeSpentEvent)
    assert event.actor.name is None
    assert "target" not in tt.dump(event)


def test_load_error_messages_never_quote_values() -> None:
    """No value of the payload (email, ids, bad strings) appears in the error."""
    data = seed(SEED_TIME_SPENT_EVENT)
    data["actor"]["email"] = "student.secret.example.com"
    data["eventTime"] = "2026-01-27T10:00:15.000+24:00"
    data["generated"]["items"][0]["type"] = "idle-secret"
    with pytest.raises(tt.ValidationError) as exc:
        tt.load(data, tt.TimeSpentEvent)
    text = str(exc.value)
    for value in ("student.secret.example.com", "+24:00", "idle-secret", "timedelta"):
        assert value not in text


# --------------------------------------------------------------------------
# The Envelope and its union of events


def test_envelope_dispatches_events_by_type() -> None:
    """data items become TimeSpentEvent or ActivityCompletedEvent by their type field."""
    data = envelope_json(seed(SEED_TIME_SPENT_EVENT), seed(SEED_ACTIVITY_COMPLETED_EVENT))
    envelope = tt.load(data, tt.Envelope)
    assert [type(event) for event in envelope.data] == [
        tt.TimeSpentEvent,
        tt.ActivityCompletedEvent,
    ]
    assert json.dumps(tt.dump(envelope), sort_keys=True) == json.dumps(data, sort_keys=True)


@pytest.mark.parametrize("kind", ["ActivityCompletedEvent", "Event", None, 3])
def test_envelope_rejects_unknown_event_types(kind: Any) -> None:
    """An item whose type is not TimeSpentEvent or ActivityEvent is named by index."""
    event = seed(SEED_ACTIVITY_COMPLETED_EVENT)
    event["type"] = kind
    data = envelope_json(seed(SEED_TIME_SPENT_EVENT), event)
    assert load_errors(data, tt.Envelope) == {
        "$.data[1]": "must be an event whose type is 'TimeSpentEvent' or 'ActivityEvent'"
    }


def test_envelope_error_paths_reach_into_events() -> None:
    """Errors inside an event of an envelope carry $.data[i]... paths, with the envelope's."""
    broken = seed(SEED_ACTIVITY_COMPLETED_EVENT)
    broken["actor"]["email"] = "nobody"
    data = envelope_json(seed(SEED_TIME_SPENT_EVENT), broken)
    data["sensor"] = "lab 3"
    data["sendTime"] = "now"
    assert set(load_errors(data, tt.Envelope)) == {
        "$.data[1].actor.email",
        "$.sensor",
        "$.sendTime",
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [([], "must hold at least one event"), ("events", "must be a JSON array")],
)
def test_envelope_data_must_be_a_non_empty_array(data: Any, message: str) -> None:
    """data must be a JSON array with at least one event."""
    document = envelope_json()
    document["data"] = data
    assert load_errors(document, tt.Envelope) == {"$.data": message}


def test_envelope_requires_the_data_version() -> None:
    """dataVersion is required and must be Caliper 1.2."""
    document = envelope_json(seed(SEED_TIME_SPENT_EVENT))
    del document["dataVersion"]
    assert load_errors(document, tt.Envelope) == {"$.dataVersion": "is required"}
    document["dataVersion"] = "http://purl.imsglobal.org/ctx/caliper/v1p1"
    assert load_errors(document, tt.Envelope) == {
        "$.dataVersion": "must be 'http://purl.imsglobal.org/ctx/caliper/v1p2'"
    }


# --------------------------------------------------------------------------
# Round trip of generated valid models

offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
aware_datetimes = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets
)
labels = st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True)
urls = st.builds(
    "https://{}.example.com/{}".format,
    labels,
    st.lists(labels, max_size=3).map("/".join),
)
urn_uuids = st.uuids().map(lambda value: f"urn:uuid:{value}")
iris = urls | urn_uuids
texts = st.text(min_size=1, max_size=20).filter(str.strip)
emails = st.from_regex(r"[a-z0-9._+-]{1,12}@[a-z0-9-]{1,10}\.[a-z]{2,6}", fullmatch=True)
json_leaves = (
    st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)


def free_extensions(reserved: frozenset[str] = frozenset()) -> st.SearchStrategy[Any]:
    """Optional free-form extensions (never None inside: the wire drops nulls)."""
    keys = st.text(max_size=8).filter(lambda key: key not in reserved)
    return st.none() | st.dictionaries(keys, json_values, max_size=3)


def named(cls: type[Any]) -> st.SearchStrategy[Any]:
    """An App, Course or Activity."""
    return st.builds(cls, name=texts, id=st.none() | urls, extensions=free_extensions())


users = st.builds(
    tt.TimebackUser,
    id=iris,
    email=emails,
    name=st.none() | texts,
    role=st.none() | st.sampled_from(tt.Role) | st.sampled_from([role.value for role in tt.Role]),
)
contexts = st.builds(
    tt.TimebackActivityContext,
    id=urls,
    subject=st.sampled_from(tt.Subject) | st.sampled_from([s.value for s in tt.Subject]),
    app=named(tt.App),
    course=st.none() | named(tt.Course),
    activity=st.none() | named(tt.Activity),
    process=st.none() | st.booleans(),
)
seconds = st.integers(0, 86_400) | st.floats(0, 86_400)


@st.composite
def time_metrics(draw: st.DrawFn) -> tt.TimeMetric:
    """A valid TimeMetric; when both dates are present, start <= end."""
    dates = sorted(draw(st.lists(aware_datetimes, min_size=2, max_size=2)))
    start = draw(st.sampled_from([None, dates[0]]))
    end = draw(st.sampled_from([None, dates[1]]))
    return tt.TimeMetric(
        type=draw(st.sampled_from(tt.TimeMetricType)),
        value=draw(seconds),
        sub_type=draw(st.none() | texts),
        start_date=start,
        end_date=end,
        extensions=draw(free_extensions()),
    )


@st.composite
def activity_metrics(draw: st.DrawFn) -> list[tt.ActivityMetric]:
    """Valid completion metrics: xpEarned, maybe both question counts, maybe units."""
    counts = st.integers(0, 10_000)
    values: dict[str, float] = {"xpEarned": draw(st.floats(-1e6, 1e6) | st.integers(-1000, 10_000))}
    if draw(st.booleans()):
        total = draw(counts)
        values["totalQuestions"] = total
        values["correctQuestions"] = draw(st.integers(0, total))
    if draw(st.booleans()):
        values["masteredUnits"] = draw(counts)
    order = draw(st.permutations(list(values)))
    return [tt.ActivityMetric(type=kind, value=values[kind]) for kind in order]


def event_extensions() -> st.SearchStrategy[dict[str, Any] | None]:
    """None, or runId (a UUID) with maybe courseId and other keys."""
    reserved = frozenset({"runId", "courseId"})
    return st.none() | st.builds(
        lambda run, course, extra: {
            **(extra or {}),
            "runId": str(run),
            **({"courseId": course} if course else {}),
        },
        st.uuids(),
        st.none() | texts,
        free_extensions(reserved),
    )


def event_fields() -> dict[str, st.SearchStrategy[Any]]:
    """The strategies of the fields both events share."""
    return {
        "id": urn_uuids,
        "event_time": aware_datetimes,
        "actor": users,
        "object": contexts,
        "ed_app": st.none() | urls,
        "session": st.none() | urn_uuids,
        "extensions": event_extensions(),
    }


time_spent_events = st.builds(
    tt.TimeSpentEvent,
    generated=st.builds(
        tt.TimeSpentMetricsCollection,
        id=iris,
        items=st.lists(time_metrics(), min_size=1, max_size=4),
        extensions=free_extensions(),
    ),
    **event_fields(),
)
pct = st.integers(0, 100) | st.floats(0, 100)
activity_completed_events = st.builds(
    tt.ActivityCompletedEvent,
    generated=st.builds(
        tt.ActivityMetricsCollection,
        id=iris,
        items=activity_metrics(),
        extensions=st.none()
        | st.builds(
            lambda value, extra: {**(extra or {}), "pctCompleteApp": value},
            pct,
            free_extensions(frozenset({"pctCompleteApp"})),
        ),
    ),
    **event_fields(),
)
envelopes = st.builds(
    tt.Envelope,
    sensor=iris,
    send_time=aware_datetimes,
    data=st.lists(time_spent_events | activity_completed_events, min_size=1, max_size=3),
)


@given(st.one_of(time_spent_events, activity_completed_events, envelopes))
def test_load_of_dump_is_the_same_model(model: tt.Envelope | tt.Event) -> None:
    """load(dump(e), type(e)) == e, through real JSON text, for any valid model."""
    text = json.dumps(tt.dump(model), allow_nan=False)
    assert tt.load(json.loads(text), type(model)) == model


@given(st.one_of(time_spent_events, activity_completed_events))
def test_dump_of_any_event_is_clean_wire_json(event: tt.Event) -> None:
    """Any valid event dumps with no None, no snake_case key and ms-Z timestamps."""
    dumped = tt.dump(event)
    reserved = {"extensions"}
    stack: list[tuple[Any, bool]] = [(dumped, False)]
    while stack:
        value, free = stack.pop()
        assert value is not None
        if isinstance(value, dict):
            for key, item in value.items():
                if not free:
                    assert "_" not in key
                    if key in {"eventTime", "startDate", "endDate"}:
                        assert WIRE_TIMESTAMP.fullmatch(item)
                stack.append((item, free or key in reserved))
        elif isinstance(value, list):
            stack.extend((item, free) for item in value)


@given(st.one_of(time_spent_events, activity_completed_events, envelopes))
def test_dump_never_writes_a_key_unknown_keys_would_report(model: tt.Envelope | tt.Event) -> None:
    """What the library writes passes its own unknown-key check."""
    assert unknown(tt.dump(model), type(model)) == {}


def test_round_trip_keeps_a_copy_independent(time_spent_event: tt.TimeSpentEvent) -> None:
    """Editing dumped JSON never changes the model it came from."""
    dumped = tt.dump(time_spent_event)
    before = copy.deepcopy(dumped)
    dumped["extensions"]["runId"] = "changed"
    assert tt.dump(time_spent_event) == before
