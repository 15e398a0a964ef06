"""Fuzzing the public surface: random configs, entities, call sequences and wire JSON.

Hypothesis drives the public API with random, often absurd, arguments (NaN,
infinities, huge integers and strings, lone surrogates, wrong types) and with
random call sequences on real trackers that deliver to one real loopback
collector. Only the library's errors, ``ValueError`` or ``TypeError`` may come
out of a public call; the background threads must survive; and everything the
collector accepted must be valid, conserved, in order and complete.

Derandomized by default (``conftest.py``'s ``ci`` profile): ``make test`` draws the same
examples every run, so a failure there is the code's. ``HYPOTHESIS_PROFILE=explore``
draws new ones, ten times as many, to hunt for bugs. A failure prints the falsifying
example (for the state machine, the steps) and a ``@reproduce_failure`` blob.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import pathlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

import timeback_tracker as tt
from tests.support import SENSOR, assert_conserved, assert_contiguous, item
from timeback_tracker.models import CALIPER_CONTEXT
from timeback_tracker.testing import LocalCollector

# An unhandled exception in any thread (a background thread dying) fails the test.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

ALLOWED = (tt.TimebackTrackerError, ValueError, TypeError)
"""What a public call may raise."""

HEARTBEAT = 0.05
CALL_LIMIT = 15.0
"""Seconds a flush() or close() may take here before it counts as hung."""
THREAD_NAMES = ("timeback-tracker-heartbeat", "timeback-tracker-delivery")
RETRYABLE = (500, 502, 503, 429, 408)
SECRET = "s3cr3t-token-value"
EMAIL = "kid.fuzz@example.com"

# -- values that break things ------------------------------------------------------------

HUGE_TEXT = "x" * 100_000
SURROGATES = ("\udc80", "\ud800", "a\udfffb")
# Characters that NFKC normalisation folds into URL delimiters (# ? / @ and "a/c").
NFKC_TRAPS = ("\uff03", "\uff1f", "\uff0f", "\uff20", "\u2100", "\ufe6b")
HUGE_INTS = (2**53 + 1, 2**63, 2**1024, 10**400, -(10**400))
ODD_FLOATS = (math.nan, math.inf, -math.inf, 1e308, -1e-308, 5e-324, -0.0)


def opaque(*values: Any) -> st.SearchStrategy[Any]:
    """Like sampled_from, with a short repr: some of these values print as megabytes."""
    return st.sampled_from(range(len(values))).map(values.__getitem__)


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def _cycle() -> dict[str, Any]:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    return loop


EXTREME_NUMBERS: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(HUGE_INTS + ODD_FLOATS),
    st.sampled_from([True, False, -1, 0.5, "5"]),
    st.floats(),
    st.integers(),
)
"""Numbers (and near-numbers) at and beyond every edge."""

WEIRD: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(HUGE_INTS),
    st.floats(),
    st.sampled_from(ODD_FLOATS),
    st.text(max_size=12),
    opaque("", " ", "\t\n", "NaN", "1e400", HUGE_TEXT, *SURROGATES, *NFKC_TRAPS),
    st.binary(max_size=6),
    st.lists(st.integers(), max_size=3),
    st.tuples(st.floats(), st.floats()),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.builds(object),
)
"""Wrong types and extreme values, for any argument."""

EXTENSIONS: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.dictionaries(
        st.text(max_size=5),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-1000, 1000),
            st.floats(allow_nan=False, allow_infinity=False),
            st.text(max_size=8),
        ),
        max_size=3,
    ),
    opaque(
        {"nan": math.nan},
        {"inf": [1, -math.inf]},
        {"set": {1, 2}},
        {"bytes": b"x"},
        {"when": datetime(2026, 1, 1, tzinfo=timezone.utc)},
        {"object": object()},
        {"nested-int-key": {1: "x"}},
        {"surrogate": "\udc80"},
        {"\ud800": "key"},
        {"huge": 10**400},
        {"deep": _nested(600)},
        {"cycle": _cycle()},
        {1: "int key"},
    ),
    WEIRD,
)
"""``extensions`` values: JSON objects, and things that are not JSON."""


def attempt(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call; return its result, or the allowed error it raised (anything else propagates)."""
    try:
        return call(*args, **kwargs)
    except ALLOWED as exc:
        return exc


def bounded(call: Callable[[], Any], limit: float = CALL_LIMIT) -> Any:
    """Run a blocking public call in a helper thread; fail if it does not return in time."""
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:
            outcome.append((False, exc))

    worker = threading.Thread(target=run, name="fuzz-bounded-call", daemon=True)
    worker.start()
    worker.join(limit)
    assert not worker.is_alive(), f"{call!r} did not return within {limit} s"
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


@contextlib.contextmanager
def _explained(context: str) -> Iterator[None]:
    """Add ``context`` to an AssertionError raised inside."""
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{context}") from exc


def canonical(data: Any) -> str:
    """Comparable JSON text (keys sorted, NaN allowed so that nothing is hidden)."""
    return json.dumps(json.loads(json.dumps(data)), sort_keys=True)


def wire_bytes(data: Any) -> bytes:
    """``data`` as a strict JSON UTF-8 body: what a real endpoint can parse."""
    return json.dumps(data, allow_nan=False, ensure_ascii=False).encode("utf-8")


def assert_round_trips(obj: Any) -> None:
    """What the library accepted goes on the wire as strict JSON and loads back the same."""
    wire = tt.dump(obj)
    again = tt.load(json.loads(wire_bytes(wire)), type(obj))
    assert canonical(tt.dump(again)) == canonical(wire)


def assert_no_email(error: BaseException, emails: tuple[str, ...]) -> None:
    """An error message never quotes an email address it was given."""
    text = str(error) + repr(getattr(error, "errors", ""))
    for email in emails:
        assert email not in text, f"the email {email!r} leaked into {type(error).__name__}"


# -- entities ------------------------------------------------------------------------------

OMIT: Any = object()
"""Stands for an argument left out."""

VALID_IRIS = (
    "https://sis.example.com/users/student-123",
    "https://myapp.example.com/activities/Math/g3/lesson-1",
    "urn:uuid:f47ac10b-58cc-4372-a567-0e02b2c3d479",
    "http://[::1]:8080/x",
    "tag:example.com,2026:app",
)


def trap_iris(email: str) -> st.SearchStrategy[str]:
    """IRIs that embed an email where URL parsers trip over them."""
    return st.builds(
        lambda shape, trap: shape.format(email=email, trap=trap),
        st.sampled_from(
            [
                "https://{email}{trap}/x",
                "http://{email}{trap}",
                "http://[{email}",
                "https://[{email}]{trap}",
                "mailto:{email}",
                "https://x.example.com/{email}",
                "{email}:x{trap}",
                "https://{email}/{trap}",
            ]
        ),
        st.sampled_from(NFKC_TRAPS + SURROGATES + ("", " ", "[", "]", "%zz")),
    )


Fields = dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]]
"""Per argument: (plausible values or OMIT, hostile values)."""


@st.composite
def arguments(
    draw: st.DrawFn, fields: Fields, hostile: int = 2, at_least: int = 0
) -> dict[str, Any]:
    """Keyword arguments, plausible except for ``at_least`` to ``hostile`` hostile ones."""
    count = draw(st.integers(at_least, hostile), label="hostile arguments")
    spoiled = draw(st.permutations(sorted(fields)), label="order")[:count]
    chosen = {
        name: draw(bad if name in spoiled else good, label=name)
        for name, (good, bad) in fields.items()
    }
    return {name: value for name, value in chosen.items() if value is not OMIT}


def entity_fields(kind: str, email: str) -> Fields:
    """The constructor arguments of one public entity."""
    iri = st.one_of(
        st.sampled_from(VALID_IRIS), st.builds("https://example.com/{}".format, st.text(max_size=9))
    )
    bad_iri = st.one_of(trap_iris(email), WEIRD)
    text = st.one_of(st.sampled_from(["Kid", "My App", "Ünïcødé 学习"]), st.text(max_size=20))
    bad_text = st.one_of(st.sampled_from(SURROGATES), WEIRD)
    omitted = st.just(OMIT)
    if kind == "TimebackUser":
        return {
            "id": (iri, bad_iri),
            "email": (st.just(email), st.one_of(st.sampled_from(["no-at", "a@b", " "]), WEIRD)),
            "name": (st.one_of(omitted, st.none(), text), bad_text),
            "role": (st.sampled_from([OMIT, None, *tt.Role, "student"]), WEIRD),
            "type": (st.sampled_from([OMIT, "TimebackUser"]), WEIRD),
        }
    extensions = st.dictionaries(
        st.text(max_size=5),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-(2**60), 2**60),
            st.floats(allow_nan=False, allow_infinity=False),
            st.text(max_size=8),
            st.lists(st.integers(), max_size=2),
        ),
        max_size=3,
    )
    if kind in ("App", "Course", "Activity"):
        return {
            "name": (text, bad_text),
            "id": (st.one_of(omitted, st.none(), iri), bad_iri),
            "extensions": (st.one_of(omitted, st.none(), extensions), EXTENSIONS),
        }
    # An App the library accepted with hostile extensions would spoil every event.
    hostile_app = st.builds(lambda ext: attempt(tt.App, name="My App", extensions=ext), EXTENSIONS)
    return {
        "id": (iri, bad_iri),
        "subject": (st.sampled_from([*tt.Subject, "Math", "Social Studies"]), WEIRD),
        "app": (
            st.builds(tt.App, name=st.just("My App"), extensions=st.none() | extensions),
            st.one_of(hostile_app, WEIRD),
        ),
        "course": (
            st.one_of(omitted, st.none(), st.builds(tt.Course, name=st.just("Math 3"))),
            WEIRD,
        ),
        "activity": (
            st.one_of(omitted, st.none(), st.builds(tt.Activity, name=st.just("Quiz 1"))),
            WEIRD,
        ),
        "process": (st.sampled_from([OMIT, None, True, False]), WEIRD),
        "type": (st.sampled_from([OMIT, "TimebackActivityContext"]), WEIRD),
    }


ENTITIES = {
    "TimebackUser": tt.TimebackUser,
    "App": tt.App,
    "Course": tt.Course,
    "Activity": tt.Activity,
    "TimebackActivityContext": tt.TimebackActivityContext,
}


@settings(max_examples=400, deadline=None)
@given(data=st.data(), kind=st.sampled_from(sorted(ENTITIES)), email=st.emails())
def test_entities_accept_or_reject_cleanly(data: st.DataObject, kind: str, email: str) -> None:
    """Entities from random values raise an allowed error, or go on the wire and back intact."""
    kwargs = data.draw(arguments(entity_fields(kind, email)), label="kwargs")
    built = attempt(ENTITIES[kind], **kwargs)
    if isinstance(built, BaseException):
        assert_no_email(built, (email,))
        return
    if isinstance(built, tt.TimebackUser):
        assert "email='<redacted>'" in repr(built)
        if email not in f"{built.id}{built.name}":
            assert email not in repr(built)
    assert_round_trips(built)


# -- configuration -------------------------------------------------------------------------

ENDPOINTS = (
    "https://caliper.example.com/caliper/event",
    "http://127.0.0.1:9/caliper/event",
    "http://localhost:9/caliper/event",
    "http://[::1]:9/caliper/event",
)
BAD_ENDPOINTS = (
    "http://example.com/caliper/event",
    "https://",
    "http://[abc",
    "ftp://example.com/x",
    "http://127.0.0.1:9/caliper/\udc80",
    "https://example.com/\ud800",
)
BAD_SENSORS = ("x:y", "1:x", "https://", "http:", "::", "a b:c", "urn:x:\udc80", "https://[x")


def setting(*good: Any) -> tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]:
    """A TrackerConfig field: left out or a sensible value; or junk."""
    return st.sampled_from([OMIT, *good]), WEIRD


CONFIG_FIELDS: Fields = {
    "sensor": (
        st.sampled_from([SENSOR, "urn:example:kiosk-3"]),
        st.one_of(st.sampled_from(BAD_SENSORS), WEIRD),
    ),
    "endpoint": (st.sampled_from(ENDPOINTS), st.one_of(st.sampled_from(BAD_ENDPOINTS), WEIRD)),
    "heartbeat_interval": setting(0.05, 15.0, 3600, 0.049, 3600.01),
    "idle_timeout": setting(None, 1, 30.0, 86400, 0.5),
    "inactive_cutoff": setting(None, 1, 600.0, 86401),
    "spool_path": (
        st.sampled_from([OMIT, None, "/tmp/timeback-fuzz.sqlite3", pathlib.Path("x.db")]),
        WEIRD,
    ),
    "max_queue": setting(1, 10_000, 1_000_000, 0, 1_000_001, 10.0),
    "batch_size": setting(1, 50, 1000, 0, 1001),
    "exit_timeout": setting(0, 2.0, 600, -0.1),
    "request_timeout": (
        st.sampled_from([OMIT, (5.0, 15.0), [1, 2], 3, (0, 1), (1, 601), (1, 2, 3)]),
        st.one_of(st.tuples(WEIRD, WEIRD), WEIRD),
    ),
    "max_event_age": setting(60, 30 * 86400, 59, 3650 * 86400),
    "on_error": (st.sampled_from([OMIT, None, print]), WEIRD),
}


@settings(max_examples=400, deadline=None)
@given(data=st.data(), auth_kind=st.sampled_from(["none", "bearer", "client", "junk"]))
def test_tracker_config_accepts_or_rejects_cleanly(data: st.DataObject, auth_kind: str) -> None:
    """TrackerConfig from random values: an allowed error, or a config whose values work."""
    auth: Any = None
    if auth_kind == "bearer":
        auth = attempt(tt.BearerToken, data.draw(st.one_of(st.just(SECRET), WEIRD)))
    elif auth_kind == "client":
        secret = data.draw(st.one_of(st.just(SECRET), WEIRD))
        url = data.draw(st.one_of(st.sampled_from(ENDPOINTS + BAD_ENDPOINTS), WEIRD))
        auth = attempt(tt.ClientCredentials, "client-1", secret, url)
    elif auth_kind == "junk":
        auth = data.draw(WEIRD)
    if isinstance(auth, BaseException):
        assert SECRET not in str(auth)
    fields = data.draw(arguments(CONFIG_FIELDS), label="fields")
    if data.draw(st.integers(0, 19)) == 0:
        fields["no_such_field"] = 1
    config = attempt(tt.TrackerConfig, auth=auth, **fields)
    if isinstance(config, BaseException):
        assert SECRET not in str(config)
        assert isinstance(attempt(tt.Tracker, config), TypeError)
        return
    assert SECRET not in repr(config)
    assert not isinstance(config.heartbeat_interval, bool)
    assert 0.05 <= config.heartbeat_interval <= 3600
    assert isinstance(config.max_queue, int)
    assert 1 <= config.max_queue <= 1_000_000
    assert isinstance(config.batch_size, int)
    assert 1 <= config.batch_size <= 1000
    assert isinstance(config.request_timeout, tuple)
    assert len(config.request_timeout) == 2
    assert all(0 < value <= 600 for value in config.request_timeout)
    for value in (config.idle_timeout, config.inactive_cutoff):
        assert value is None or (math.isfinite(value) and value >= 1)
    # The sensor goes into every envelope: the endpoint must accept envelopes carrying it.
    envelope = {
        "sensor": config.sensor,
        "sendTime": "2026-01-27T10:00:15.000Z",
        "dataVersion": CALIPER_CONTEXT,
        "data": [tt.dump(VALID_EVENT)],
    }
    tt.load(json.loads(wire_bytes(envelope)), tt.Envelope)
    config.endpoint.encode("utf-8")  # requests must be able to send to it
    if config.spool_path is None:  # a spool would create files
        # No session: no thread and no network, whatever the endpoint.
        with tt.Tracker(config) as tracker:
            assert tracker.stats() == tt.TrackerStats()


# -- wire JSON -----------------------------------------------------------------------------

USER = tt.TimebackUser(id="https://sis.example.com/users/student-123", email=EMAIL, name="Kid")
ACTIVITY = tt.TimebackActivityContext(
    id="https://myapp.example.com/activities/Math/g3/lesson-1",
    subject=tt.Subject.MATH,
    app=tt.App(name="My App", id="https://myapp.example.com", extensions={"v": 1}),
    course=tt.Course(name="Math 3", id="https://sis.example.com/courses/math-3"),
    activity=tt.Activity(name="Lesson 1"),
    process=True,
)
START = datetime(2026, 1, 27, 10, 0, 0, tzinfo=timezone.utc)
VALID_EVENT = tt.TimeSpentEvent.for_window(
    user=USER,
    activity=ACTIVITY,
    run_id=uuid.UUID("f47ac10b-58cc-4372-a567-0e02b2c3d479"),
    start=START,
    end=START + timedelta(seconds=15),
    active_seconds=12.5,
    inactive_seconds=2.5,
    event_id="urn:uuid:0b5c1c0e-7a8d-4f57-9b0a-2f4c6d8e0a11",
)

WIRE_KEYS = (
    "@context",
    "id",
    "type",
    "action",
    "profile",
    "eventTime",
    "actor",
    "object",
    "generated",
    "items",
    "value",
    "email",
    "name",
    "role",
    "subject",
    "app",
    "course",
    "activity",
    "extensions",
    "runId",
    "courseId",
    "pctCompleteApp",
    "startDate",
    "endDate",
    "sensor",
    "sendTime",
    "dataVersion",
    "data",
)
WIRE_STRINGS = (
    "TimeSpentEvent",
    "ActivityEvent",
    "SpentTime",
    "Completed",
    "TimebackProfile",
    "TimebackUser",
    "TimebackActivityContext",
    "TimebackTimeSpentMetricsCollection",
    "TimebackActivityMetricsCollection",
    "active",
    "xpEarned",
    "Math",
    CALIPER_CONTEXT,
    "urn:uuid:f47ac10b-58cc-4372-a567-0e02b2c3d479",
    "2026-01-27T10:00:15.000Z",
    "2026-02-30T10:00:00Z",
    "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59-23:59",
    "2026-01-27T10:00:15.123456789+05:30",
    "2026-01-27T10:00:15",
)


def json_values(emails: tuple[str, ...]) -> st.SearchStrategy[Any]:
    """Arbitrary decoded JSON (as json.loads can return it), often wire-shaped."""
    email_texts = st.sampled_from(emails).flatmap(
        lambda email: st.one_of(st.just(email), trap_iris(email))
    )
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.sampled_from(HUGE_INTS),
        st.floats(),
        st.text(max_size=12),
        st.sampled_from(WIRE_STRINGS + SURROGATES),
        email_texts,
    )
    keys = st.one_of(st.sampled_from(WIRE_KEYS), st.text(max_size=6))
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=6)
        ),
        max_leaves=25,
    )


def _positions(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every position inside a decoded JSON document (the root excluded)."""
    children: Any = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, child in children:
        yield (*path, key)
        yield from _positions(child, (*path, key))


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


@st.composite
def valid_documents(draw: st.DrawFn, email: str) -> tuple[Any, type[Any]]:
    """The wire JSON of a random valid event or envelope, and its class."""
    user = tt.TimebackUser(
        id=draw(st.sampled_from(VALID_IRIS)),
        email=email,
        name=draw(st.sampled_from([None, "Kid"])),
        role=draw(st.sampled_from([None, *tt.Role])),
    )
    activity = draw(st.sampled_from([ACTIVITY, VALID_EVENT.object]))
    run_id = draw(st.uuids())
    course_id = draw(st.sampled_from([None, "MATH-3"]))
    start = draw(
        st.datetimes(
            min_value=datetime(1, 1, 2),
            max_value=datetime(9999, 12, 30),
            timezones=st.just(timezone.utc),
        )
    )

    def event() -> tt.TimeSpentEvent | tt.ActivityCompletedEvent:
        event_id = f"urn:uuid:{draw(st.uuids())}"
        if draw(st.booleans()):
            active = draw(st.floats(0, 43_200))
            inactive = draw(st.floats(0, 43_200))
            return tt.TimeSpentEvent.for_window(
                user=user,
                activity=activity,
                run_id=run_id,
                start=start,
                end=start + timedelta(seconds=round(active, 3) + round(inactive, 3)),
                active_seconds=active,
                inactive_seconds=inactive,
                course_id=course_id,
                event_id=event_id,
            )
        total = draw(st.none() | st.integers(0, 10**6))
        return tt.ActivityCompletedEvent.for_completion(
            user=user,
            activity=activity,
            run_id=run_id,
            event_time=start,
            xp_earned=draw(st.floats(-1e9, 1e9) | st.integers(0, 10**6)),
            total_questions=total,
            correct_questions=None if total is None else draw(st.integers(0, total)),
            mastered_units=draw(st.none() | st.integers(0, 100)),
            pct_complete=draw(st.none() | st.floats(0, 100)),
            course_id=course_id,
            event_id=event_id,
        )

    if draw(st.booleans()):
        built: Any = tt.Envelope(
            sensor=SENSOR, send_time=start, data=[event() for _ in range(draw(st.integers(1, 3)))]
        )
    else:
        built = event()
    return json.loads(json.dumps(tt.dump(built))), type(built)


@st.composite
def wire_documents(draw: st.DrawFn) -> tuple[Any, type[Any], tuple[str, ...]]:
    """(decoded JSON, class to load it as, emails it contains): random or a mutated valid one."""
    emails = (draw(st.emails()), EMAIL)
    classes = st.sampled_from([tt.TimeSpentEvent, tt.ActivityCompletedEvent, tt.Envelope])
    values = json_values(emails)
    if draw(st.integers(0, 3)) == 0:
        return draw(values, label="random JSON"), draw(classes), emails
    doc, cls = draw(valid_documents(emails[0]))
    for _ in range(draw(st.integers(1, 3))):
        positions = list(_positions(doc))
        if not positions:
            break
        path = draw(st.sampled_from(positions), label="position")
        parent = _parent(doc, path)
        operation = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if operation == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif operation == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(WIRE_KEYS))] = draw(values)
        else:
            parent[path[-1]] = draw(values, label="new value")
    if draw(st.integers(0, 4)) == 0:
        cls = draw(classes)
    return doc, cls, emails


@pytest.mark.slow(15)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=wire_documents())
def test_load_raises_only_validation_errors_without_emails(
    document: tuple[Any, type[Any], tuple[str, ...]],
) -> None:
    """tt.load on arbitrary or mutated JSON: a clean ValidationError, or a value that loads back."""
    data, cls, emails = document
    loaded = attempt(tt.load, data, cls)
    if not isinstance(loaded, BaseException):
        assert_round_trips(loaded)
        return
    assert isinstance(loaded, tt.ValidationError), repr(loaded)
    assert loaded.errors
    for error in loaded.errors:
        assert isinstance(error.path, str), error
        assert error.path.startswith("$"), error
        assert isinstance(error.message, str), error
        assert error.message.strip(), error
    assert_no_email(loaded, emails)


# -- the state machine: random call sequences on real trackers ----------------------------


@dataclasses.dataclass(eq=False)
class Box:
    """One tracker and what the test knows of it."""

    tracker: tt.Tracker
    name: str  # for failure messages
    module: bool  # shared by the module: never closed by the machine
    gaps: bool  # a short inactive cutoff: windows may leave gaps
    closed: bool = False
    started: bool = False
    dropped_before: int = 0
    dead_before: int = 0


@dataclasses.dataclass(eq=False)
class Run:
    """One session and the model of its state."""

    session: tt.Session
    box: Box
    course_id: str | None
    done: bool = False
    paused: bool = False
    completion: dict[str, Any] | None = None  # the metrics of a successful complete()
    active: float = 0.0  # the last values read
    inactive: float = 0.0
    final: tuple[float, float] | None = None  # the values read first once done


def _number_ok(value: Any, low: float = -math.inf, high: float = math.inf) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int beyond the range of a float
        return False
    return finite and low <= value <= high


def _count_ok(value: Any) -> bool:
    return value is None or (_number_ok(value) and value >= 0 and float(value).is_integer())


def metrics_valid(metrics: dict[str, Any]) -> bool:
    """The documented rules of complete()'s metrics, independently of the library."""
    total, correct = metrics["total_questions"], metrics["correct_questions"]
    return (
        _number_ok(metrics["xp_earned"], 0)
        and all(_count_ok(metrics[name]) for name in ("total_questions", "correct_questions"))
        and _count_ok(metrics["mastered_units"])
        and (total is None) == (correct is None)
        and (total is None or correct <= total)
        and (metrics["pct_complete"] is None or _number_ok(metrics["pct_complete"], 0, 100))
    )


def category(value: Any) -> str:
    """A short class of a value, for Hypothesis' statistics (--hypothesis-show-statistics)."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**64:
        return "huge int"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "negative" if value < 0 else "number"
    return type(value).__name__


def _uuid_ok(value: Any) -> bool:
    if value is None or isinstance(value, uuid.UUID):
        return True
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _course_id_ok(value: Any) -> bool:
    if value is None:
        return True
    if not isinstance(value, str) or not value.strip() or len(value) > 1024:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def built(kind: str, hostile: int) -> st.SearchStrategy[Any]:
    """An entity from random arguments: the instance, or the error that refused them."""
    return arguments(entity_fields(kind, EMAIL), hostile).map(
        lambda kwargs: attempt(ENTITIES[kind], **kwargs)
    )


def entities(kind: str, *pool: Any) -> tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]:
    """(valid instances, anything: hostile ones the library accepted, errors, junk)."""
    valid = built(kind, hostile=0).filter(lambda value: isinstance(value, ENTITIES[kind]))
    hostile = [built(kind, hostile=2), st.sampled_from([None, "x", {"id": "x"}])]
    if kind == "TimebackActivityContext":  # the one way to an App with odd extensions
        hostile.append(
            st.builds(
                lambda ext: attempt(
                    tt.TimebackActivityContext,
                    id="https://myapp.example.com/a/3",
                    subject="Math",
                    app=attempt(tt.App, name="My App", extensions=ext),
                ),
                EXTENSIONS,
            )
        )
    return st.one_of(st.sampled_from(pool), valid), st.one_of(*hostile)


START_FIELDS: Fields = {
    "user": entities(
        "TimebackUser",
        USER,
        tt.TimebackUser(id="urn:example:u-2", email="b@example.org", role="student"),
    ),
    "activity": entities(
        "TimebackActivityContext",
        ACTIVITY,
        tt.TimebackActivityContext(
            id="https://myapp.example.com/a/2", subject="Reading", app=tt.App(name="Reader")
        ),
    ),
    "course_id": (
        opaque(None, "MATH-3", "Mathé 3", "x" * 5000),
        st.one_of(st.sampled_from([*SURROGATES, "MATH\udc80", "é\ud800"]), st.just(" "), WEIRD),
    ),
    "run_id": (
        st.sampled_from(["none", "str", "uuid", "braced", "urn", "upper", "open"]),
        st.tuples(st.just("junk"), WEIRD),
    ),
}
START_ARGUMENTS = st.deferred(lambda: arguments(START_FIELDS, hostile=1))  # a short repr
"""start_session() arguments, at most one of them hostile (run_id is a recipe, see _run_id)."""

HOSTILE_NUMBERS = st.one_of(EXTREME_NUMBERS, WEIRD)
COUNT = st.one_of(st.integers(0, 60), st.sampled_from([0.0, 7.0, 2**60]))
QUESTIONS = st.one_of(
    st.just((None, None)),
    st.tuples(COUNT, COUNT).map(sorted).map(lambda pair: (pair[1], pair[0])),  # correct <= total
)


def _metrics(questions: tuple[Any, Any], **others: Any) -> dict[str, Any]:
    return {"total_questions": questions[0], "correct_questions": questions[1], **others}


METRIC_FIELDS: Fields = {
    "xp_earned": (st.one_of(st.integers(0, 200), st.floats(-10, 500)), HOSTILE_NUMBERS),
    "questions": (
        QUESTIONS,
        st.one_of(st.tuples(COUNT, COUNT), st.tuples(HOSTILE_NUMBERS, HOSTILE_NUMBERS)),
    ),
    "mastered_units": (st.one_of(st.none(), COUNT), HOSTILE_NUMBERS),
    "pct_complete": (st.one_of(st.none(), st.floats(0, 100)), HOSTILE_NUMBERS),
}
METRICS = st.deferred(lambda: arguments(METRIC_FIELDS).map(lambda drawn: _metrics(**drawn)))
TIMEOUTS = st.one_of(
    st.sampled_from([0, 0.0, -1, 1e-9, 0.05, 0.2, 1e300, math.inf, -math.inf, math.nan, 10**400]),
    WEIRD,
)
_EXTRA_CONFIG = arguments(
    {
        "heartbeat_interval": setting(0.05, 0.1, 3600),
        "idle_timeout": setting(None, 1, 5, 86400),
        "inactive_cutoff": setting(None, 1, 600),
        "max_queue": setting(1, 2, 10, 10_000),
        "batch_size": setting(1, 2, 50),
        "exit_timeout": setting(0, 0.5, 2.0),
        "request_timeout": (st.sampled_from([OMIT, (5.0, 15.0), 1, (0.5, 2)]), WEIRD),
        "max_event_age": setting(60, 86400),
    }
)
EXTRA_CONFIG = st.deferred(lambda: _EXTRA_CONFIG)  # a short repr


class PublicSurface(RuleBasedStateMachine):
    """Random calls on trackers and sessions, checked against a model of their state."""

    trackers = Bundle("trackers")

    def __init__(
        self,
        collector: LocalCollector,
        boxes: list[Box],
        history: dict[str, int],
        failures: list[tt.DeliveryFailure],
    ):
        super().__init__()
        self.collector = collector
        self.boxes = list(boxes)
        self.history = history  # run id -> events recorded, across examples
        self.runs: list[Run] = []
        self.failures = failures  # what every tracker reported to on_error
        self.faults = 0  # injected by this example

    # -- trackers -----------------------------------------------------------------------

    @initialize(target=trackers)
    def module_trackers(self) -> Any:
        for box in self.boxes:
            stats = box.tracker.stats()
            box.dropped_before, box.dead_before = stats.dropped, stats.dead_lettered
        return multiple(*self.boxes)

    @precondition(lambda self: sum(not box.closed for box in self.boxes if not box.module) < 2)
    @rule(target=trackers, fields=EXTRA_CONFIG)
    def open_tracker(self, fields: dict[str, Any]) -> Any:
        config = attempt(
            tt.TrackerConfig,
            sensor=SENSOR,
            endpoint=self.collector.url,
            spool_path=None,
            on_error=self.failures.append,
            **fields,
        )
        if isinstance(config, BaseException):
            return multiple()
        cutoff = config.inactive_cutoff
        box = Box(
            tt.Tracker(config),
            name=f"extra {fields}",
            module=False,
            gaps=cutoff is not None and cutoff < 60,
        )
        self.boxes.append(box)
        return box

    @rule(box=trackers, timeout=st.one_of(st.none(), TIMEOUTS), via_with=st.booleans())
    def close(self, box: Box, timeout: Any, via_with: bool) -> None:
        if box.module:
            return
        tracker = box.tracker
        if via_with:
            outcome = bounded(lambda: attempt(tracker.__exit__, None, None, None))
        else:
            outcome = bounded(lambda: attempt(tracker.close, timeout))
        event(f"close({'with' if via_with else category(timeout)}) -> {type(outcome).__name__}")
        if isinstance(outcome, BaseException):
            assert not isinstance(outcome, tt.SessionStateError)
            assert timeout is not None
            assert not via_with
            return
        box.closed = True
        for run in self.runs:
            if run.box is box:
                run.done = True
                assert run.session.state == ("completed" if run.completion is not None else "ended")
        assert bounded(lambda: attempt(tracker.close)) is None  # idempotent
        assert isinstance(attempt(tracker.start_session, USER, ACTIVITY), tt.SessionStateError)

    @rule(box=trackers, timeout=TIMEOUTS)
    def flush(self, box: Box, timeout: Any) -> None:
        outcome = bounded(lambda: attempt(box.tracker.flush, timeout))
        event(f"flush({category(timeout)}) -> {type(outcome).__name__}")
        numeric = isinstance(timeout, (int, float)) and not isinstance(timeout, bool)
        if numeric and not (isinstance(timeout, float) and math.isnan(timeout)):
            assert isinstance(outcome, bool), outcome  # any number of seconds, even inf
        else:
            assert isinstance(outcome, (bool, *ALLOWED)), outcome

    # Few faults: flush() skips one backoff only, and a fault storm would make it time out.
    @precondition(lambda self: self.faults < 2)
    @rule(status=st.sampled_from(RETRYABLE))
    def endpoint_fails(self, status: int) -> None:
        self.collector.fail_next(status)
        self.faults += 1

    @rule(seconds=st.sampled_from([0.0, 0.01, 0.03, 0.07]))  # a window is 0.05 s
    def wait(self, seconds: float) -> None:
        time.sleep(seconds)

    # -- sessions -----------------------------------------------------------------------

    @rule(box=trackers, arguments=START_ARGUMENTS)
    def start(self, box: Box, arguments: dict[str, Any]) -> None:
        user, activity, course_id = arguments["user"], arguments["activity"], arguments["course_id"]
        run_id = self._run_id(box, arguments["run_id"])
        open_ids = {run.session.run_id for run in self.runs if run.box is box and not run.done}
        expected: type[BaseException] | None = None
        if not isinstance(user, tt.TimebackUser) or not isinstance(
            activity, tt.TimebackActivityContext
        ):
            expected = TypeError
        elif not _course_id_ok(course_id) or not _uuid_ok(run_id):
            expected = tt.ValidationError
        elif box.closed:
            expected = tt.SessionStateError
        elif run_id is not None and str(uuid.UUID(str(run_id))) in open_ids:
            expected = tt.ValidationError
        session = attempt(
            box.tracker.start_session, user, activity, course_id=course_id, run_id=run_id
        )
        event(f"start_session -> {type(session).__name__}")
        if expected is not None:
            assert isinstance(session, expected), (expected, session)
            return
        assert isinstance(session, tt.Session), session
        assert session.state == "running"
        assert session.run_id not in self.history
        if run_id is not None:
            assert session.run_id == str(uuid.UUID(str(run_id)))
        box.started = True
        self.runs.append(Run(session, box, course_id))

    def pick(self, data: st.DataObject) -> Run:
        """A session: mostly one still open, sometimes any (a finished one must refuse calls)."""
        live = [run for run in self.runs if not run.done]
        if live and data.draw(st.integers(0, 3), label="open one?"):
            return data.draw(st.sampled_from(live), label="open session")
        return data.draw(st.sampled_from(self.runs), label="session")

    def _run_id(self, box: Box, choice: Any) -> Any:
        # Never the id of a finished run: see the report on run id reuse.
        fresh = uuid.uuid4()
        if isinstance(choice, tuple):
            return choice[1]
        if choice == "open":
            open_runs = [run for run in self.runs if run.box is box and not run.done]
            return open_runs[0].session.run_id if open_runs else None
        return {
            "none": None,
            "str": str(fresh),
            "uuid": fresh,
            "braced": f"{{{fresh}}}",
            "urn": fresh.urn,
            "upper": str(fresh).upper(),
        }[choice]

    @precondition(lambda self: self.runs)
    @rule(data=st.data(), call=st.sampled_from(["touch", "pause", "resume", "end"]))
    def call(self, data: st.DataObject, call: str) -> None:
        run = self.pick(data)
        outcome = attempt(getattr(run.session, call))
        if run.done:
            if call == "touch":  # input after the end is ignored, never an error
                assert outcome is None, outcome
            else:
                assert isinstance(outcome, tt.SessionStateError), outcome
                assert ("completed" if run.completion else "ended") in str(outcome)
            return
        assert outcome is None, outcome
        if call == "pause":
            run.paused = True
        elif call == "resume":
            run.paused = False
        elif call == "end":
            run.done = True
        self.check_state(run)

    @precondition(lambda self: self.runs)
    @rule(data=st.data(), metrics=METRICS)
    def complete(self, data: st.DataObject, metrics: dict[str, Any]) -> None:
        run = self.pick(data)
        before = run.session.state
        outcome = attempt(run.session.complete, **metrics)
        event(f"complete -> {type(outcome).__name__}")
        if run.done:
            assert isinstance(outcome, tt.SessionStateError), outcome
            return
        if metrics_valid(metrics):
            assert outcome is None, (metrics, outcome)
            run.done = True
            run.completion = metrics
        else:
            assert isinstance(outcome, ALLOWED), (metrics, outcome)
            assert not isinstance(outcome, tt.SessionStateError), outcome
            assert (before == "paused") == (run.session.state == "paused") == run.paused
        self.check_state(run)

    @precondition(lambda self: self.runs)
    @rule(data=st.data(), raise_inside=st.booleans())
    def leave_with_block(self, data: st.DataObject, raise_inside: bool) -> None:
        run = self.pick(data)

        class Leave(Exception):
            pass

        with contextlib.suppress(Leave), run.session:
            if raise_inside:
                raise Leave
        run.done = True
        self.check_state(run)

    @precondition(lambda self: self.runs)
    @rule(data=st.data())
    def race_complete_and_end(self, data: st.DataObject) -> None:
        run = self.pick(data)
        barrier = threading.Barrier(2)
        outcomes: dict[str, Any] = {}

        def racer(name: str, method: Callable[[], None]) -> None:
            barrier.wait()
            outcomes[name] = attempt(method)

        workers = [
            threading.Thread(target=racer, args=("complete", lambda: run.session.complete(1))),
            threading.Thread(target=racer, args=("end", run.session.end)),
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(CALL_LIMIT)
        failed = [name for name, outcome in outcomes.items() if outcome is not None]
        assert len(outcomes) == 2
        assert all(isinstance(outcomes[name], tt.SessionStateError) for name in failed)
        if run.done:
            assert len(failed) == 2
            return
        assert len(failed) == 1, outcomes
        run.done = True
        if failed == ["end"]:
            run.completion = {
                "xp_earned": 1,
                "total_questions": None,
                "correct_questions": None,
                "mastered_units": None,
                "pct_complete": None,
            }
        self.check_state(run)

    def check_state(self, run: Run) -> None:
        """What a session reports (state, seconds, ids) agrees with the model."""
        session = run.session
        assert session.run_id == str(uuid.UUID(session.run_id))
        assert session.course_id == run.course_id
        assert EMAIL not in repr(session)
        state = session.state
        if run.done:
            assert state == ("completed" if run.completion is not None else "ended")
        elif run.paused:
            assert state == "paused"
        else:
            assert state in ("running", "idle")
        active, inactive = run.session.active_seconds, run.session.inactive_seconds
        for value in (active, inactive):
            assert isinstance(value, float)
            assert math.isfinite(value)
            assert value >= 0
        assert active >= run.active  # never decrease
        assert inactive >= run.inactive
        run.active, run.inactive = active, inactive
        if run.done:
            run.final = run.final or (active, inactive)
            assert (active, inactive) == run.final  # frozen once ended

    # -- invariants and the final check -----------------------------------------------------

    @invariant()
    def threads_alive_and_no_internal_errors(self) -> None:
        running = [box for box in self.boxes if box.started and not box.closed]
        alive = [thread.name for thread in threading.enumerate() if thread.is_alive()]
        for name in THREAD_NAMES:
            assert alive.count(name) >= len(running), (name, alive)
        for box in self.boxes:
            stats = box.tracker.stats()
            assert stats.internal_errors == 0
            for name, value in attrs.asdict(stats).items():
                assert isinstance(value, int), (name, value)
                assert value >= 0, (name, value)
            assert "@" not in repr(box.tracker) + repr(stats)
        # The collector only ever fails with retryable statuses: anything else (a 400, a
        # dead letter, an internal error) means the tracker sent what it must not.
        unexpected = [
            failure
            for failure in self.failures
            if failure.reason != "outbox full"  # a tiny max_queue may drop (and says so)
            and not (failure.will_retry and failure.status in (None, *RETRYABLE))
        ]
        assert unexpected == []

    def teardown(self) -> None:
        self.collector.clear_faults()
        try:
            for run in self.runs:
                if not run.done:
                    run.session.end()
                    run.done = True
                    self.check_state(run)
            for box in self.boxes:
                if not box.module and not box.closed:
                    bounded(lambda box=box: box.tracker.close(5.0))
                    box.closed = True
                elif box.module:
                    flushed = bounded(lambda box=box: box.tracker.flush(10.0))
                    assert flushed, box.tracker.stats()
            self.check_delivered()
        finally:
            self.collector.clear_faults()
            for box in self.boxes:
                if not box.module:
                    box.tracker.close(0)

    def check_delivered(self) -> None:
        """Everything the collector accepted is valid, complete, conserved and in order."""
        assert self.collector.duplicate_conflicts == []
        by_run: dict[str, list[dict[str, Any]]] = {}
        for recorded in self.collector.events:
            by_run.setdefault(recorded["extensions"]["runId"], []).append(recorded)
        for run_id, count in self.history.items():  # nothing after complete()/end()
            assert len(by_run.get(run_id, [])) == count, run_id
        for run in self.runs:
            events = by_run.get(run.session.run_id, [])
            self.check_run(run, events)
            self.history[run.session.run_id] = len(events)

    def check_run(self, run: Run, events: list[dict[str, Any]]) -> None:
        session = run.session
        extensions = {"runId": session.run_id}
        if run.course_id is not None:
            extensions["courseId"] = run.course_id
        for recorded in events:
            wire_bytes(recorded)  # strict JSON: no NaN, no lone surrogates
            cls = (
                tt.TimeSpentEvent
                if recorded["type"] == "TimeSpentEvent"
                else tt.ActivityCompletedEvent
            )
            assert canonical(tt.dump(tt.load(recorded, cls))) == canonical(recorded)
            assert recorded["extensions"] == extensions
            assert recorded["session"] == f"urn:uuid:{session.run_id}"
            assert recorded["actor"] == tt.dump(session.user)
            assert recorded["object"] == tt.dump(session.activity)
        completions = [recorded for recorded in events if recorded["type"] == "ActivityEvent"]
        assert len(completions) <= 1
        if completions:
            assert events[-1] is completions[0]  # the completion comes last
            self.check_metrics(run, completions[0])
        spent = [recorded for recorded in events if recorded["type"] == "TimeSpentEvent"]
        starts = [item(window, "active")["startDate"] for window in spent]
        assert starts == sorted(starts)  # delivered in window order
        assert_conserved(spent)
        stats = run.box.tracker.stats()
        # A full outbox may drop events, counted and reported (see _outbox.plan_admission:
        # even a completion, when everything held is a completion or in flight).
        dropped = stats.dropped != run.box.dropped_before
        spans = [(item(w, "active")["startDate"], item(w, "active")["endDate"]) for w in spent]
        with _explained(f"windows of run {session.run_id} on {run.box.name}: {spans}; {stats}"):
            if run.box.gaps or dropped:
                for before, after in itertools.pairwise(spent):
                    assert item(after, "active")["startDate"] >= item(before, "active")["endDate"]
            else:
                assert_contiguous(spent)
        if stats.queued or stats.dead_lettered != run.box.dead_before or dropped:
            return  # a close() timed out, or an outbox overflowed: not everything arrived
        assert (run.completion is not None) == bool(completions)
        # Nothing lost: the windows add up to what the session counted.
        active = math.fsum(item(window, "active")["value"] for window in spent)
        inactive = math.fsum(item(window, "inactive")["value"] for window in spent)
        assert abs(active - session.active_seconds) < 0.0005, (active, session.active_seconds)
        assert abs(inactive - session.inactive_seconds) < 0.0005

    def check_metrics(self, run: Run, completion: dict[str, Any]) -> None:
        assert run.completion is not None
        generated = completion["generated"]
        values = {metric["type"]: metric["value"] for metric in generated["items"]}
        expected = {
            "xpEarned": run.completion["xp_earned"],
            "totalQuestions": run.completion["total_questions"],
            "correctQuestions": run.completion["correct_questions"],
            "masteredUnits": run.completion["mastered_units"],
        }
        assert values == {key: value for key, value in expected.items() if value is not None}
        pct = run.completion["pct_complete"]
        assert generated.get("extensions", {}).get("pctCompleteApp") == pct


@pytest.fixture(scope="module")
def collector() -> Iterator[LocalCollector]:
    """One loopback collector for the module."""
    with LocalCollector() as running:
        yield running


@pytest.fixture(scope="module")
def failures() -> list[tt.DeliveryFailure]:
    """What the trackers of the module reported to ``on_error``."""
    return []


@pytest.fixture(scope="module")
def module_boxes(
    collector: LocalCollector,
    failures: list[tt.DeliveryFailure],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[Box]]:
    """Long-lived trackers: plain, idle/cutoff with one-event batches, a tiny outbox, a spool."""
    spool = tmp_path_factory.mktemp("fuzz-spool") / "spool.sqlite3"
    variants: list[dict[str, Any]] = [
        {"spool_path": None},
        {"spool_path": None, "idle_timeout": 1, "inactive_cutoff": 1, "batch_size": 1},
        {"spool_path": None, "max_queue": 3, "batch_size": 2},
        {"spool_path": spool},
    ]
    boxes = [
        Box(
            tt.Tracker(
                tt.TrackerConfig(
                    sensor=SENSOR,
                    endpoint=collector.url,
                    heartbeat_interval=HEARTBEAT,
                    on_error=failures.append,
                    **variant,
                )
            ),
            name=f"module {variant}",
            module=True,
            gaps="inactive_cutoff" in variant,
        )
        for variant in variants
    ]
    yield boxes
    for box in boxes:
        box.tracker.close(2.0)


@pytest.fixture(scope="module")
def history() -> dict[str, int]:
    """Events recorded per finished run, to check that nothing comes after the end."""
    return {}


@pytest.mark.slow(15)
def test_random_call_sequences_keep_every_invariant(
    collector: LocalCollector,
    module_boxes: list[Box],
    history: dict[str, int],
    failures: list[tt.DeliveryFailure],
) -> None:
    """Random sessions, calls, flushes and closes: allowed errors only, valid deliveries."""
    run_state_machine_as_test(
        lambda: PublicSurface(collector, module_boxes, history, failures),
        settings=settings(
            max_examples=70,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            print_blob=True,
        ),
    )


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    box_index=st.integers(0, 3),
    arguments=START_ARGUMENTS,
    seconds=st.sampled_from([0.0, 0.06]),
    metrics=st.deferred(
        lambda: arguments(METRIC_FIELDS, at_least=1).map(lambda drawn: _metrics(**drawn))
    ),
)
def test_one_session_with_hostile_arguments(
    collector: LocalCollector,
    module_boxes: list[Box],
    history: dict[str, int],
    failures: list[tt.DeliveryFailure],
    data: st.DataObject,
    box_index: int,
    arguments: dict[str, Any],
    seconds: float,
    metrics: dict[str, Any],
) -> None:
    """start_session(), often with a hostile argument; then complete() with a hostile metric."""
    machine = PublicSurface(collector, module_boxes, history, failures)
    machine.module_trackers()
    try:
        machine.start(module_boxes[box_index], arguments)
        if machine.runs:
            time.sleep(seconds)
            machine.complete(data, metrics)
        machine.threads_alive_and_no_internal_errors()
    finally:
        machine.teardown()
