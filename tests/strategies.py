"""Hypothesis strategies the fuzz tests share: hostile values, entities and their arguments.

Three fuzz modules draw from here (``test_fuzz_constructors``, ``test_fuzz_load``,
``test_fuzz_call_sequences``), so that a value found to break one public call is
tried on every other: the hostile pools below are the project's memory of what
once broke something (NaN, huge integers, lone surrogates, characters that NFKC
folds into URL delimiters, cyclic or 600-deep extensions).
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st

import timeback_tracker as tt
from tests.support import attempt


def examples(count: int) -> int:
    """``count`` examples in the ``ci`` profile; ten times as many under ``explore``.

    A test that sets ``max_examples`` overrides the profile's: scaling it here
    keeps ``HYPOTHESIS_PROFILE=explore`` exploring those tests too (the
    profile's 1000 against Hypothesis' default of 100).
    """
    profile = settings.default
    assert profile is not None  # conftest.py has loaded one
    return count * max(1, profile.max_examples // 100)


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

PLAIN_EXTENSIONS: st.SearchStrategy[dict[str, Any]] = st.dictionaries(
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
"""``extensions`` objects an app plausibly sends: small, JSON, finite."""

EXTENSIONS: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    PLAIN_EXTENSIONS,
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

HOSTILE_APPS: st.SearchStrategy[Any] = st.builds(
    lambda ext: attempt(tt.App, name="My App", extensions=ext), EXTENSIONS
)
"""An App built with hostile extensions: the instance if the library took them, else the error.

An App the library accepted with such extensions would spoil every event of
every session that names it, so both the entity and the session fuzzers pass it on.
"""

# -- plausible identities: one student, activity and event every fuzzer starts from ------

EMAIL = "kid.fuzz@example.com"
"""The email of :data:`USER`; no error, repr or log may ever show it."""

USER = tt.TimebackUser(id="https://sis.example.com/users/student-123", email=EMAIL, name="Kid")
ACTIVITY = tt.TimebackActivityContext(
    id="https://myapp.example.com/activities/Math/g3/lesson-1",
    subject=tt.Subject.MATH,
    app=tt.App(name="My App", id="https://myapp.example.com", extensions={"v": 1}),
    course=tt.Course(name="Math 3", id="https://sis.example.com/courses/math-3"),
    activity=tt.Activity(name="Lesson 1"),
    process=True,
)
"""An activity context with every optional part set."""

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


# -- keyword arguments, mostly plausible --------------------------------------------------

OMIT: Any = object()
"""Stands for an argument left out."""

Fields = dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]]
"""Per argument: (plausible values or OMIT, hostile values)."""


@st.composite
def arguments(
    draw: st.DrawFn, fields: Fields, hostile: int = 2, at_least: int = 0
) -> dict[str, Any]:
    """Keyword arguments, plausible except for ``at_least`` to ``hostile`` hostile ones.

    Mostly plausible, so that one hostile value meets code that has got past
    every other check: an all-hostile call is refused by the first rule it meets.
    """
    count = draw(st.integers(at_least, hostile), label="hostile arguments")
    spoiled = draw(st.permutations(sorted(fields)), label="order")[:count]
    chosen = {
        name: draw(bad if name in spoiled else good, label=name)
        for name, (good, bad) in fields.items()
    }
    return {name: value for name, value in chosen.items() if value is not OMIT}


def setting(*good: Any) -> tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]:
    """A TrackerConfig field: left out or a sensible value; or junk."""
    return st.sampled_from([OMIT, *good]), WEIRD


ENTITIES = {
    "TimebackUser": tt.TimebackUser,
    "App": tt.App,
    "Course": tt.Course,
    "Activity": tt.Activity,
    "TimebackActivityContext": tt.TimebackActivityContext,
}
"""The public entities, by class name."""


def entity_fields(kind: str, email: str) -> Fields:
    """The constructor arguments of the entity ``ENTITIES[kind]``; ``email`` is the student's."""
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
    if kind in ("App", "Course", "Activity"):
        return {
            "name": (text, bad_text),
            "id": (st.one_of(omitted, st.none(), iri), bad_iri),
            "extensions": (st.one_of(omitted, st.none(), PLAIN_EXTENSIONS), EXTENSIONS),
        }
    return {
        "id": (iri, bad_iri),
        "subject": (st.sampled_from([*tt.Subject, "Math", "Social Studies"]), WEIRD),
        "app": (
            st.builds(tt.App, name=st.just("My App"), extensions=st.none() | PLAIN_EXTENSIONS),
            st.one_of(HOSTILE_APPS, WEIRD),
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
