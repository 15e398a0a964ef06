"""Fuzzing ``tt.load``: arbitrary JSON, and valid wire JSON with random mutations.

``load`` is what the collector (and an app reading its own events back) runs on
whatever arrives, so it must never raise anything but a ``ValidationError`` whose
every error has a JSON path (``$...``) and a message; no message may quote an email
from the document; and what it does load must dump to strict JSON that loads back
the same. Random JSON tests the shape checks; mutations of valid events and
envelopes (one to three values replaced, deleted or added, at any depth) reach the
rules behind them.

Derandomized by default (``conftest.py``'s ``ci`` profile); ``HYPOTHESIS_PROFILE=explore``
draws new examples, ten times as many.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import timeback_tracker as tt
from tests.strategies import (
    ACTIVITY,
    EMAIL,
    HUGE_INTS,
    SURROGATES,
    VALID_EVENT,
    VALID_IRIS,
    examples,
    trap_iris,
)
from tests.support import SENSOR, assert_no_email, assert_round_trips, attempt, wire
from timeback_tracker.models import CALIPER_CONTEXT

# The wire format's keys and values, so that random JSON and mutations hit real fields.
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
    """The container that holds the value at ``path``."""
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
    return wire(built), type(built)


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
@settings(max_examples=examples(400))
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
