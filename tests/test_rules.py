"""The rules of ``_rules.py``: one table per rule, judged by the rule and where it applies.

Each row is a value and the expected outcome: None when the value is accepted,
else the rule's message. A row is checked twice: by the rule itself, and by a
public constructor that applies it, whose error must be ``<field>: <rule>``
exactly, so a message that stops naming its field or its rule fails here.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest
import requests

import timeback_tracker as tt
import timeback_tracker.auth
import timeback_tracker.cli as cli
import timeback_tracker.exceptions
from tests.support import ACTIVITY, SENSOR, USER, closed_port
from timeback_tracker import _rules
from timeback_tracker._accounting import MAX_VALUE_MS
from timeback_tracker._locations import resolve_spool_path
from timeback_tracker.testing import FakeClock

# The limits as the README states them ("Security and privacy"), written out rather than
# imported: a changed constant in _rules.py must fail these tables, not move them along.
MAX_IRI_LENGTH = 2_048
MAX_TEXT_LENGTH = 1_024
MAX_EMAIL_LENGTH = 254
MAX_EXTENSIONS_BYTES = 16 * 1024
DAY_SECONDS = 86_400

RUN = "f47ac10b-58cc-4372-a567-0e02b2c3d479"
EVENT_ID = "urn:uuid:9b2d3c4e-5f60-4a7b-8c9d-0e1f2a3b4c5d"
ENDPOINT = "https://caliper.example.com/caliper/event"
T0 = datetime(2026, 1, 27, 10, 0, tzinfo=timezone.utc)
HOST = "https://example.com/"  # 20 characters: the head of IRIs of a chosen length
NOT_AN_IRI = "must be an absolute URL/IRI such as https://example.com/... (no spaces)"
NO_HOST = "must be an absolute URL with a host, such as https://example.com/..."
SURROGATE = "must be valid Unicode text (no lone surrogates)"
NOT_TEXT = "must be a non-empty string"
NOT_JSON = "must hold JSON values only: text, finite numbers, booleans, null, lists, objects"
STRING_KEYS = "must be a mapping with string keys"
NOT_EMAIL = "must be an email address (name@domain)"


def refusals(build: Callable[[Any], object], value: Any) -> list[str]:
    """What building with ``value`` is refused for, as ``field: rule`` lines ([] when accepted)."""
    try:
        build(value)
    except tt.ValidationError as exc:
        return [str(error) for error in exc.errors]
    except tt.ConfigurationError as exc:
        return [str(exc)]
    return []


def outcome(field: str, expected: str | None) -> list[str]:
    """The refusals expected of a row: none, or the one rule naming its field."""
    return [] if expected is None else [f"{field}: {expected}"]


def nested(depth: int) -> dict[str, Any]:
    """Objects nested ``depth`` deep: ``{"a": {"a": ... {}}}``."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def config(**settings: Any) -> tt.TrackerConfig:
    """A TrackerConfig with ``settings`` over a valid sensor and endpoint."""
    return tt.TrackerConfig(**{"sensor": SENSOR, "endpoint": ENDPOINT, **settings})


def window(**overrides: Any) -> tt.TimeSpentEvent:
    """The TimeSpentEvent of one valid 15 s window, with ``overrides`` of for_window()."""
    arguments: dict[str, Any] = {
        "user": USER,
        "activity": ACTIVITY,
        "run_id": RUN,
        "start": T0,
        "end": T0 + timedelta(seconds=15),
        "active_seconds": 10,
        "inactive_seconds": 5,
        "event_id": EVENT_ID,
        **overrides,
    }
    return tt.TimeSpentEvent.for_window(**arguments)


def cyclic() -> dict[str, Any]:
    """An object that holds itself."""
    value: dict[str, Any] = {}
    value["self"] = value
    return value


# -- IRIs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://example.com/activities/1", None),
        ("http://localhost:8080/x", None),
        ("urn:uuid:f47ac10b-58cc-4372-a567-0e02b2c3d479", None),  # any scheme is an IRI
        ("https://例え.jp/レッスン", None),  # an IRI may hold non-ASCII text
        (HOST + "a" * (MAX_IRI_LENGTH - len(HOST)), None),
        (
            HOST + "a" * (MAX_IRI_LENGTH - len(HOST) + 1),
            f"must be at most {MAX_IRI_LENGTH} characters",
        ),
        ("example.com/activities/1", NOT_AN_IRI),
        ("https://example.com/has space", NOT_AN_IRI),
        ("1https://example.com/", NOT_AN_IRI),
        ("https:", NOT_AN_IRI),
        ("", NOT_AN_IRI),
        ("https:///no-host", NO_HOST),
        ("http://[::1/broken", NO_HOST),
        ("https://example.com/\ud800", SURROGATE),
        (42, "must be a string (an absolute URL/IRI)"),
        (None, "must be a string (an absolute URL/IRI)"),
    ],
)
def test_iri_rule(value: Any, expected: str | None) -> None:
    """An id, URL or IRI: a string, absolute, without spaces, a host for http(s), bounded."""
    assert _rules.iri_problem(value) == expected
    user = lambda v: tt.TimebackUser(id=v, email="kid@example.com")  # noqa: E731
    assert refusals(user, value) == outcome("TimebackUser.id", expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (EVENT_ID, None),
        (EVENT_ID.upper().replace("URN:UUID:", "urn:uuid:"), None),
        (EVENT_ID.removeprefix("urn:uuid:"), "must be 'urn:uuid:' followed by a UUID"),
        (EVENT_ID.upper(), "must be 'urn:uuid:' followed by a UUID"),
        ("urn:uuid:9b2d3c4e5f604a7b8c9d0e1f2a3b4c5d", "must be 'urn:uuid:' followed by a UUID"),
        (EVENT_ID + "0", "must be 'urn:uuid:' followed by a UUID"),
        ("urn:uuid:not-a-uuid", "must be 'urn:uuid:' followed by a UUID"),
        (42, "must be 'urn:uuid:' followed by a UUID"),
    ],
)
def test_urn_uuid_rule(value: Any, expected: str | None) -> None:
    """An event id: ``urn:uuid:`` (lower case) and a hyphenated UUID, nothing around it."""
    assert _rules.urn_uuid_problem(value) == expected
    assert refusals(lambda v: window(event_id=v), value) == outcome("TimeSpentEvent.id", expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (RUN, True),
        (RUN.upper(), True),
        (RUN.replace("-", ""), True),  # uuid.UUID's own spellings are UUIDs
        ("{" + RUN + "}", True),
        ("f47ac10b-58cc-4372-a567-0e02b2c3d47", False),
        ("f47ac10b-58cc-4372-a567-0e02b2c3d479-0", False),
        ("not-a-uuid", False),
        ("", False),
        (42, False),
    ],
)
def test_uuid_rule(value: Any, expected: bool) -> None:
    """A run id is anything ``uuid.UUID`` reads; anything else is refused as ``runId``."""
    assert _rules.is_uuid(value) is expected
    refused = outcome("extensions.runId", None if expected else "must be a UUID")
    assert refusals(lambda v: window(run_id=v), value) == refused


# -- text ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Fractions 1", None),
        ("  padded  ", None),
        ("Ünïcödé 😀", None),
        ("x" * MAX_TEXT_LENGTH, None),
        ("x" * (MAX_TEXT_LENGTH + 1), f"must be at most {MAX_TEXT_LENGTH} characters"),
        ("", NOT_TEXT),
        ("   \t\n", NOT_TEXT),
        ("half a pair \udfff", SURROGATE),
        (None, NOT_TEXT),
        (7, NOT_TEXT),
    ],
)
def test_text_rule(value: Any, expected: str | None) -> None:
    """A name, sub-type or course id: non-empty, valid Unicode, bounded."""
    assert _rules.text_problem(value) == expected
    assert refusals(lambda v: tt.Course(name=v), value) == outcome("Course.name", expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", None),
        ("plain ASCII", None),
        ("é, 中文, 😀", None),
        ("\ud800", SURROGATE),
        ("a lone low \udfff surrogate", SURROGATE),
        ("😀\ud83d", SURROGATE),
    ],
)
def test_unicode_rule(value: str, expected: str | None) -> None:
    """Text must encode as UTF-8, the wire's encoding: no lone surrogates."""
    assert _rules.unicode_problem(value) == expected
    name = value or "x"  # an empty name breaks another rule
    user = lambda v: tt.TimebackUser(id=USER.id, email="kid@example.com", name=v)  # noqa: E731
    assert refusals(user, name) == outcome("TimebackUser.name", expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("kid@example.com", None),
        ("first.last+tag@school.example.org", None),
        ("é@exämple.com", None),
        ("k" * (MAX_EMAIL_LENGTH - len("@example.com")) + "@example.com", None),
        (
            "k" * (MAX_EMAIL_LENGTH - len("@example.com") + 1) + "@example.com",
            f"must be at most {MAX_EMAIL_LENGTH} characters",
        ),
        ("kid@example", NOT_EMAIL),
        ("kid@example.", NOT_EMAIL),
        ("@example.com", NOT_EMAIL),
        ("kid@@example.com", NOT_EMAIL),
        ("kid name@example.com", NOT_EMAIL),
        ("kid@exa\ud800mple.com", NOT_EMAIL),
        ("", NOT_EMAIL),
        (None, NOT_EMAIL),
    ],
)
def test_email_rule(value: Any, expected: str | None) -> None:
    """An email: name@domain.tld, no spaces, valid Unicode, at most 254 characters; the
    refusal never quotes the address."""
    assert _rules.email_problem(value) == expected
    refused = refusals(lambda v: tt.TimebackUser(id=USER.id, email=v), value)
    assert refused == outcome("TimebackUser.email", expected)
    if isinstance(value, str) and value:
        assert not any(value in line for line in refused)


# -- numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, None),
        (100, None),
        (67.5, None),
        (-0.0, None),
        (100.001, "must be between 0 and 100"),
        (-1, "must be between 0 and 100"),
        (math.nan, "must be finite (not NaN or infinity)"),
        (-math.inf, "must be finite (not NaN or infinity)"),
        (10**400, "must be within the range of a 64-bit float"),
        (True, "must be a number"),
        ("50", "must be a number"),
    ],
)
def test_number_rule(value: Any, expected: str | None) -> None:
    """A number in a range: a real int or float (not a bool), finite, between the bounds."""
    assert _rules.number_problem(value, 0, 100) == expected

    def metrics(pct: Any) -> tt.ActivityMetricsCollection:
        return tt.ActivityMetricsCollection(
            id="https://example.com/metrics/1",
            items=[tt.ActivityMetric(type="xpEarned", value=1)],
            extensions={"pctCompleteApp": pct},
        )

    expected_refusals = outcome("ActivityMetricsCollection.extensions.pctCompleteApp", expected)
    assert refusals(metrics, value) == expected_refusals


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, None),
        (12, None),
        (12.0, None),
        (10**15, None),
        (2.5, "must be a whole number >= 0"),
        (-1, "must be a whole number >= 0"),
        (-0.5, "must be a whole number >= 0"),
        (math.inf, "must be finite (not NaN or infinity)"),
        (False, "must be a number"),
        ("3", "must be a number"),
    ],
)
def test_count_rule(value: Any, expected: str | None) -> None:
    """A count of questions or units: a whole number >= 0."""
    assert _rules.count_problem(value) == expected
    metric = lambda v: tt.ActivityMetric(type="totalQuestions", value=v)  # noqa: E731
    assert refusals(metric, value) == outcome("ActivityMetric(totalQuestions).value", expected)


@pytest.mark.parametrize(
    ("build", "value", "expected"),
    [
        ("TimeMetric.value", DAY_SECONDS, None),
        ("TimeMetric.value", DAY_SECONDS + 0.001, f"must be between 0 and {DAY_SECONDS}"),
        ("TrackerConfig.idle_timeout", DAY_SECONDS, None),
        ("TrackerConfig.idle_timeout", DAY_SECONDS + 1, f"must be between 1 and {DAY_SECONDS}"),
        ("TrackerConfig.max_event_age", 3650 * DAY_SECONDS, None),
        (
            "TrackerConfig.max_event_age",
            3650 * DAY_SECONDS + 1,
            f"must be between 60 and {3650 * DAY_SECONDS}",
        ),
    ],
)
def test_day_seconds_rule(build: str, value: float, expected: str | None) -> None:
    """One value reports at most a day (a window's seconds, an idle timeout); the oldest
    event kept is counted in days too. The accounting's own cap is the same day."""
    builders: dict[str, Callable[[Any], object]] = {
        "TimeMetric.value": lambda v: tt.TimeMetric(type="active", value=v),
        "TrackerConfig.idle_timeout": lambda v: config(idle_timeout=v),
        "TrackerConfig.max_event_age": lambda v: config(max_event_age=v),
    }
    assert refusals(builders[build], value) == outcome(build, expected)
    assert MAX_VALUE_MS == DAY_SECONDS * 1000


# -- enums, datetimes ----------------------------------------------------------------------

ROLES = "must be one of 'student', 'teacher', 'admin', 'guide'"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (tt.Role.STUDENT, None),
        ("teacher", None),  # the exact wire string is read as the member
        ("Student", ROLES),
        ("parent", ROLES),
        ("", ROLES),
        (1, ROLES),
    ],
)
def test_enum_rule(value: Any, expected: str | None) -> None:
    """A member, or its exact wire string; the refusal lists every allowed value."""
    member = next((role for role in tt.Role if value in (role, role.value)), value)
    assert _rules.enum_problem(tt.Role, member) == expected
    user = lambda v: tt.TimebackUser(id=USER.id, email="kid@example.com", role=v)  # noqa: E731
    assert refusals(user, value) == outcome("TimebackUser.role", expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (T0, None),
        (datetime(2026, 1, 27, 12, 0, tzinfo=timezone(timedelta(hours=2))), None),
        (datetime(2026, 1, 27, 10, 0), "must be timezone-aware (a naive datetime is ambiguous)"),
        ("2026-01-27T10:00:00.000Z", "must be a datetime"),
        (1_769_508_000, "must be a datetime"),
    ],
)
def test_datetime_rule(value: Any, expected: str | None) -> None:
    """A datetime that knows its offset (a naive one could be any of 24 hours)."""
    assert _rules.datetime_problem(value) == expected
    metric = lambda v: tt.TimeMetric(type="active", value=1, start_date=v)  # noqa: E731
    assert refusals(metric, value) == outcome("TimeMetric.startDate", expected)


# -- extensions ----------------------------------------------------------------------------

# {"k":"..."} is 8 bytes around the text as compact JSON.
AT_LIMIT = {"k": "x" * (MAX_EXTENSIONS_BYTES - 8)}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ({}, None),
        ({"a": [1, 2.5, "x", None, True, {"b": []}], "ü": "😀"}, None),
        (AT_LIMIT, None),
        (
            {"k": "x" * (MAX_EXTENSIONS_BYTES - 7)},
            f"must be at most {MAX_EXTENSIONS_BYTES} bytes as JSON",
        ),
        (
            {"k": "é" * (MAX_EXTENSIONS_BYTES // 2)},
            f"must be at most {MAX_EXTENSIONS_BYTES} bytes as JSON",
        ),
        (nested(64), None),
        (nested(65), "must not nest lists and objects more than 64 deep"),
        ({1: "x"}, STRING_KEYS),
        ({"a": [{"b": {2: "y"}}]}, STRING_KEYS),  # JSON would send the 2 as "2"
        (["a", "b"], STRING_KEYS),
        ("text", STRING_KEYS),
        ({"a": math.nan}, NOT_JSON),
        ({"a": object()}, NOT_JSON),
        ({"a": b"bytes"}, NOT_JSON),
        ({"a": "\ud800"}, NOT_JSON),
        (cyclic(), NOT_JSON),
    ],
    ids=lambda value: type(value).__name__ if not isinstance(value, str) else None,
)
def test_extensions_rule(value: Any, expected: str | None) -> None:
    """Extensions: an object with string keys at every level, JSON values only, at most
    64 deep and 16 KiB as compact UTF-8 JSON."""
    assert _rules.extensions_problem(value) == expected
    assert refusals(lambda v: tt.App(name="App", extensions=v), value) == outcome(
        "App.extensions", expected
    )


def test_the_extensions_limit_is_the_size_on_the_wire() -> None:
    """The limit row above sits exactly on the limit, counted as compact UTF-8 JSON."""
    compact = json.dumps(AT_LIMIT, separators=(",", ":"), ensure_ascii=False).encode()
    assert len(compact) == MAX_EXTENSIONS_BYTES


# -- credentials ---------------------------------------------------------------------------

TOKEN_TEXT = "must be a non-empty string without spaces"
TOKEN_ASCII = "must be printable ASCII (an HTTP header cannot carry it)"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("eyJhbGciOi.J9-_~+/=!", None),
        ("a" * 4096, None),
        ("", TOKEN_TEXT),
        ("   ", TOKEN_TEXT),
        ("two words", TOKEN_TEXT),
        ("tab\tinside", TOKEN_TEXT),
        ("trailing-newline\n", TOKEN_TEXT),
        ("tok€en", TOKEN_ASCII),
        ("nul\x00inside", TOKEN_ASCII),
        ("del\x7finside", TOKEN_ASCII),
        (None, TOKEN_TEXT),
    ],
)
def test_token_rule(value: Any, expected: str | None) -> None:
    """A bearer token: printable ASCII without spaces, as an HTTP header carries it; the
    refusal never quotes the token."""
    assert _rules.token_problem(value) == expected
    refused = refusals(lambda v: tt.BearerToken(token=v), value)
    assert refused == outcome("BearerToken.token", expected)
    if isinstance(value, str) and value.strip():
        assert not any(value.strip() in line for line in refused)


CREDENTIAL_LATIN1 = "must be Latin-1 text without control characters"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("s3cret-Zq9", None),
        ("sécret with spaces ÿ", None),  # Basic auth sends id:secret as Latin-1
        ("", NOT_TEXT),
        (" \t", NOT_TEXT),
        (None, NOT_TEXT),
        ("s3cret\n", CREDENTIAL_LATIN1),
        ("s3cret\x00", CREDENTIAL_LATIN1),
        ("s3cret\x85", CREDENTIAL_LATIN1),  # a C1 control character
        ("s3cret€", CREDENTIAL_LATIN1),
    ],
)
def test_credential_rule(value: Any, expected: str | None) -> None:
    """A client id or secret: non-empty Latin-1 without control characters; the refusal
    never quotes the secret."""
    assert _rules.credential_problem(value) == expected

    def credentials(secret: Any) -> timeback_tracker.auth.ClientCredentials:
        return tt.ClientCredentials(
            client_id="kiosk", client_secret=secret, token_url="https://auth.example.com/token"
        )

    refused = refusals(credentials, value)
    assert refused == outcome("ClientCredentials.client_secret", expected)
    if isinstance(value, str) and value.strip():
        assert not any(value.strip() in line for line in refused)


# -- wire names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [
        ("id", "id"),
        ("context", "@context"),
        ("event_time", "eventTime"),
        ("ed_app", "edApp"),
        ("sub_type", "subType"),
        ("start_date", "startDate"),
        ("send_time", "sendTime"),
        ("data_version", "dataVersion"),
        ("pct_complete_app", "pctCompleteApp"),
    ],
)
def test_wire_name_rule(attribute: str, expected: str) -> None:
    """An attribute's JSON key is its camelCase name; ``context`` is ``@context``."""
    assert _rules.wire_name(attribute) == expected


@pytest.mark.parametrize(
    "model",
    [
        tt.TimeMetric(
            type="active", value=1, sub_type="x", start_date=T0, end_date=T0, extensions={}
        ),
        window(),
        tt.Envelope(sensor=SENSOR, send_time=T0, data=[window()]),
    ],
    ids=lambda model: type(model).__name__,
)
def test_dump_writes_each_field_under_its_wire_name(model: Any) -> None:
    """Every key ``dump`` writes is the wire name of a field of the model (no second map)."""
    names = {_rules.wire_name(field.name) for field in attrs.fields(type(model))}
    assert set(tt.dump(model)) <= names


# -- the length limits the README states, on every kind of field they cover --------------


def _tracker_course(course_id: Any) -> None:
    """Start (and at once end) a session with ``course_id``, on a clock that never moves."""
    with tt.Tracker(config(spool_path=None), clock=FakeClock()) as tracker:
        tracker.start_session(USER, ACTIVITY, course_id=course_id).end()


LIMITED: dict[str, tuple[Callable[[Any], object], Callable[[int], str], int]] = {
    # field: (build with a value, a value of n characters, the limit)
    "App.id": (lambda v: tt.App(name="A", id=v), lambda n: HOST + "a" * (n - 20), MAX_IRI_LENGTH),
    "TimebackUser.id": (
        lambda v: tt.TimebackUser(id=v, email="kid@example.com"),
        lambda n: HOST + "u" * (n - 20),
        MAX_IRI_LENGTH,
    ),
    "TimebackActivityContext.id": (
        lambda v: tt.TimebackActivityContext(id=v, subject="Math", app=tt.App(name="A")),
        lambda n: HOST + "c" * (n - 20),
        MAX_IRI_LENGTH,
    ),
    "TimeSpentEvent.edApp": (
        lambda v: attrs.evolve(window(), ed_app=v),
        lambda n: HOST + "e" * (n - 20),
        MAX_IRI_LENGTH,
    ),
    "TrackerConfig.sensor": (
        lambda v: config(sensor=v),
        lambda n: HOST + "s" * (n - 20),
        MAX_IRI_LENGTH,
    ),
    "TrackerConfig.endpoint": (
        lambda v: config(endpoint=v),
        lambda n: "https://caliper.example.com/" + "e" * (n - 28),
        MAX_IRI_LENGTH,
    ),
    "ClientCredentials.token_url": (
        lambda v: tt.ClientCredentials(client_id="kiosk", client_secret="s3cret", token_url=v),
        lambda n: "https://auth.example.com/" + "t" * (n - 25),
        MAX_IRI_LENGTH,
    ),
    "Course.name": (lambda v: tt.Course(name=v), lambda n: "c" * n, MAX_TEXT_LENGTH),
    "Activity.name": (lambda v: tt.Activity(name=v), lambda n: "a" * n, MAX_TEXT_LENGTH),
    "App.name": (lambda v: tt.App(name=v), lambda n: "p" * n, MAX_TEXT_LENGTH),
    "TimebackUser.name": (
        lambda v: tt.TimebackUser(id=USER.id, email="kid@example.com", name=v),
        lambda n: "n" * n,
        MAX_TEXT_LENGTH,
    ),
    "TimeMetric.subType": (
        lambda v: tt.TimeMetric(type="active", value=1, sub_type=v),
        lambda n: "s" * n,
        MAX_TEXT_LENGTH,
    ),
    "TimeSpentEvent.extensions.courseId": (
        lambda v: window(course_id=v),
        lambda n: "M" * n,
        MAX_TEXT_LENGTH,
    ),
    "course_id": (_tracker_course, lambda n: "M" * n, MAX_TEXT_LENGTH),
    "TimebackUser.email": (
        lambda v: tt.TimebackUser(id=USER.id, email=v),
        lambda n: "k" * (n - 12) + "@example.com",
        MAX_EMAIL_LENGTH,
    ),
}


@pytest.mark.parametrize("over", [0, 1], ids=["at-the-limit", "one-over"])
@pytest.mark.parametrize("field", sorted(LIMITED))
def test_length_limits(field: str, over: int) -> None:
    """Each limited field takes a value of exactly its limit and refuses one character
    more, naming the field and the limit."""
    build, value_of, limit = LIMITED[field]
    value = value_of(limit + over)
    assert len(value) == limit + over
    expected = f"must be at most {limit} characters" if over else None
    assert refusals(build, value) == outcome(field, expected)


# -- the command line judges its numbers as the configuration does -------------------------

MIRRORED: dict[str, tuple[list[str], str]] = {
    # option: (the command line before the value, the TrackerConfig field it feeds)
    "spool send --max-event-age": (["spool", "send", "--max-event-age"], "max_event_age"),
    "demo --interval": (["demo", "--interval"], "heartbeat_interval"),
}


def cli_accepts(words: list[str]) -> bool:
    """Whether the command line's parser takes ``words`` (it exits on a refused value)."""
    try:
        cli._build_parser().parse_args(words)
    except SystemExit:
        return False
    return True


@pytest.mark.parametrize(
    ("option", "value", "accepted"),
    [
        ("spool send --max-event-age", "59", False),
        ("spool send --max-event-age", "60", True),
        ("spool send --max-event-age", str(3650 * DAY_SECONDS), True),
        ("spool send --max-event-age", str(3650 * DAY_SECONDS + 1), False),
        ("spool send --max-event-age", "nan", False),
        ("spool send --max-event-age", "inf", False),
        ("demo --interval", "0.049", False),
        ("demo --interval", "0.05", True),
        ("demo --interval", "3600", True),
        ("demo --interval", "3600.5", False),
        ("demo --interval", "nan", False),
    ],
)
def test_command_line_ranges_are_the_configs(
    option: str, value: str, accepted: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """An option that feeds a TrackerConfig field takes exactly the values the field
    takes, so a value the command line lets through is never refused later."""
    words, field = MIRRORED[option]
    assert cli_accepts([*words, value]) is accepted
    refused = refusals(lambda v: config(**{field: float(v)}), value)
    assert (refused == []) is accepted
    if not accepted:
        said = capsys.readouterr().err
        assert "must be between" in said or "must be finite" in said, said


# -- the timeout argument of flush() and close() ---------------------------------------------

NOT_SECONDS = (TypeError, "timeout: must be a number of seconds")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, None),
        (2.5, None),
        (-5, None),  # waits 0
        (math.inf, None),  # waits as long as the platform's locks can
        (10**400, None),
        (math.nan, (ValueError, "timeout: must be a number of seconds, not NaN")),
        ("1", NOT_SECONDS),
        (True, NOT_SECONDS),
        ([1], NOT_SECONDS),
    ],
)
def test_timeout_argument_rule(value: Any, expected: tuple[type[Exception], str] | None) -> None:
    """flush() and close() take any number of seconds (negatives wait 0, infinity waits
    for ever); NaN and non-numbers are refused, naming the argument."""
    with tt.Tracker(config(spool_path=None), clock=FakeClock()) as tracker:
        for call in (tracker.flush, tracker.close):
            if expected is None:
                call(value)  # nothing is queued: returns at once, however long it may wait
            else:
                kind, message = expected
                with pytest.raises(kind) as refused:
                    call(value)
                assert str(refused.value) == message


def test_a_negative_timeout_waits_for_nothing() -> None:
    """With an event held and the endpoint unreachable, flush(-1) and flush(0) report
    False at once, and close(-1) returns at once."""
    port = closed_port()
    clock = FakeClock()
    endpoint = f"http://127.0.0.1:{port}/caliper/event"
    tracker = tt.Tracker(config(endpoint=endpoint, spool_path=None), clock=clock)
    try:
        session = tracker.start_session(USER, ACTIVITY)
        clock.advance(5)
        session.complete(1)
        for timeout in (-1, 0):
            started = time.monotonic()
            assert tracker.flush(timeout) is False
            assert time.monotonic() - started < 1.0
        started = time.monotonic()
        tracker.close(-1)
        assert time.monotonic() - started < 1.0
    finally:
        tracker.close(0)


# -- the error root ------------------------------------------------------------------------


def test_token_error_is_a_tracker_error_exported_with_the_others() -> None:
    """TokenError sits under TimebackTrackerError (via DeliveryError), and is the one
    class under tt and timeback_tracker.auth, as the README's "Errors" says."""
    assert issubclass(tt.TokenError, tt.DeliveryError)
    assert issubclass(tt.TokenError, tt.TimebackTrackerError)
    assert tt.TokenError is timeback_tracker.exceptions.TokenError
    assert tt.TokenError is timeback_tracker.auth.TokenError
    assert {"TokenError", "DeliveryError", "TimebackTrackerError"} <= set(tt.__all__)
    assert "TokenError" in timeback_tracker.auth.__all__
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "`TokenError` (also `timeback_tracker.auth.TokenError`)" in readme


def test_a_failed_token_fetch_is_caught_as_a_tracker_error() -> None:
    """An unreachable token endpoint raises TokenError, which ``except
    TimebackTrackerError`` catches, with no secret in its message."""
    port = closed_port()
    credentials = tt.ClientCredentials(
        client_id="kiosk",
        client_secret="s3cret-never-shown",
        token_url=f"http://127.0.0.1:{port}/token",
    )
    with requests.Session() as http, pytest.raises(tt.TimebackTrackerError) as caught:
        credentials.authorization(http, (2.0, 2.0))
    assert isinstance(caught.value, tt.TokenError)
    assert caught.value.status is None  # a network error, not an answer
    assert "s3cret-never-shown" not in str(caught.value)


@pytest.mark.parametrize(
    ("spool_path", "allowed"),
    [
        (None, True),
        (tt.DEFAULT_SPOOL, True),
        ("kiosk.sqlite3", True),
        (Path("kiosk.sqlite3"), True),
        ("", False),
        (42, False),
        (b"kiosk.sqlite3", False),
        (["kiosk.sqlite3"], False),
    ],
)
def test_the_spool_path_rule_is_one_rule_for_the_config_and_the_spool(
    spool_path: Any, allowed: bool
) -> None:
    """TrackerConfig and the spool's own resolver apply the same rule, with the same words."""
    rule = "spool_path: must be a file path, DEFAULT_SPOOL or None"
    if allowed:
        tt.TrackerConfig(sensor=SENSOR, endpoint="https://e.example.com/e", spool_path=spool_path)
        resolve_spool_path(spool_path, SENSOR)
        return
    with pytest.raises(tt.ConfigurationError, match=f"^TrackerConfig.{rule}$"):
        tt.TrackerConfig(sensor=SENSOR, endpoint="https://e.example.com/e", spool_path=spool_path)
    with pytest.raises((TypeError, ValueError), match=f"^{rule}$"):
        resolve_spool_path(spool_path, SENSOR)
