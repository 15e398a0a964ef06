"""The event path: wire JSON rendered from integers is exactly what the validated models give."""

from __future__ import annotations

import calendar
import json
import uuid
from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import timeback_tracker as tt
from tests.strategies import examples
from tests.support import ACTIVITY, USER
from timeback_tracker._accounting import MAX_VALUE_MS
from timeback_tracker._events import (
    RunTemplate,
    _metrics_json,
    completion_event_id,
    format_ms,
    seconds_text,
    time_spent_event_id,
    uuid5_text,
)
from timeback_tracker._outbox import Entry, merge_windows

# Everything a run's constant part may hold: names with quotes, backslashes,
# non-ASCII, emoji; optional fields present or not; extensions of any JSON.
TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20
).filter(str.strip)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
EXTENSIONS = st.none() | st.dictionaries(TEXT, JSON_VALUES, max_size=3)


@st.composite
def run_parts(
    draw: st.DrawFn,
) -> tuple[tt.TimebackUser, tt.TimebackActivityContext, uuid.UUID, str | None]:
    """A valid student, activity context, run id and course id."""
    user = tt.TimebackUser(
        id=f"https://sis.example.com/users/{draw(st.integers(0, 10**6))}",
        email="student@example.com",
        name=draw(st.none() | TEXT),
        role=draw(st.none() | st.sampled_from(list(tt.Role))),
    )
    activity = tt.TimebackActivityContext(
        id="https://app.example.com/a/1",
        subject=draw(st.sampled_from(list(tt.Subject))),
        app=tt.App(name=draw(TEXT), extensions=draw(EXTENSIONS)),
        course=draw(st.none() | st.builds(tt.Course, name=TEXT, extensions=EXTENSIONS)),
        activity=draw(st.none() | st.builds(tt.Activity, name=TEXT)),
        process=draw(st.none() | st.booleans()),
    )
    return user, activity, draw(st.uuids()), draw(st.none() | TEXT)


# The namespace of the generated collection ids, as the wire contract fixes it.
GENERATED_NAMESPACE = uuid.UUID("6f1d8a52-3c4e-5b7a-9d2e-1a0b9c8d7e6f")


def model_json(event: tt.TimeSpentEvent | tt.ActivityCompletedEvent) -> str:
    """The compact wire JSON of a validated model, as ``tt.dump`` gives it."""
    return json.dumps(tt.dump(event), separators=(",", ":"), ensure_ascii=False)


def utc(epoch_ms: int) -> datetime:
    """The datetime of epoch milliseconds."""
    return datetime.fromtimestamp(epoch_ms // 1000, tz=timezone.utc).replace(
        microsecond=epoch_ms % 1000 * 1000
    )


@settings(max_examples=examples(300), deadline=None)
@given(
    parts=run_parts(),
    segment=st.text(alphabet="0123456789abcdef", min_size=12, max_size=12),
    first=st.integers(0, 10**6),
    extra=st.integers(0, 3),
    start=st.integers(0, 253_402_300_799_000 - 2 * MAX_VALUE_MS),
    active=st.integers(0, MAX_VALUE_MS),
    inactive=st.integers(0, MAX_VALUE_MS),
    after=st.sampled_from(["nothing", "the window before", "an earlier window", "a later one"]),
)
def test_a_rendered_window_is_byte_for_byte_the_models_dump(
    parts: tuple[tt.TimebackUser, tt.TimebackActivityContext, uuid.UUID, str | None],
    segment: str,
    first: int,
    extra: int,
    start: int,
    active: int,
    inactive: int,
    after: str,
) -> None:
    """For any run and window, the template gives exactly the JSON of the validated model."""
    user, activity, run, course_id = parts
    if active + inactive == 0:
        active = 1
    template = RunTemplate(
        user=user, activity=activity, run_id=run, course_id=course_id, segment=segment
    )
    # The start's text is reused from the window that ended there, if it was the last one.
    if after == "the window before" and start > 0:
        template.window(first + 9, first + 9, start - 1, start, 1, 0)
    elif after == "an earlier window" and start > 1:
        template.window(first + 9, first + 9, start - 2, start - 1, 1, 0)
    elif after == "a later one":
        template.window(first + 9, first + 9, start + 1, start + 2, 1, 0)
    end = start + active + inactive
    event_id, rendered = template.window(first, first + extra, start, end, active, inactive)
    model = tt.TimeSpentEvent.for_window(
        user=user,
        activity=activity,
        run_id=run,
        start=utc(start),
        end=utc(end),
        active_seconds=active / 1000,
        inactive_seconds=inactive / 1000,
        course_id=course_id,
        event_id=time_spent_event_id(run, segment, first, first + extra),
    )
    assert rendered == model_json(model)
    assert event_id == model.id
    assert model_json(tt.load(json.loads(rendered), tt.TimeSpentEvent)) == rendered  # valid


@settings(max_examples=examples(150), deadline=None)
@given(
    parts=run_parts(),
    when=st.integers(0, 253_402_300_799_000),
    xp=st.integers(0, 10**6) | st.floats(0, 1e6, allow_nan=False),
    questions=st.none() | st.tuples(st.integers(0, 500), st.integers(0, 500)).map(sorted),
    mastered=st.none() | st.integers(0, 50),
    pct=st.none() | st.integers(0, 100) | st.floats(0, 100),
)
def test_a_rendered_completion_is_byte_for_byte_the_models_dump(
    parts: tuple[tt.TimebackUser, tt.TimebackActivityContext, uuid.UUID, str | None],
    when: int,
    xp: float,
    questions: list[int] | None,
    mastered: int | None,
    pct: float | None,
) -> None:
    """The completion's rendering equals the validated ActivityCompletedEvent's JSON."""
    user, activity, run, course_id = parts
    correct, total = questions if questions is not None else (None, None)
    template = RunTemplate(
        user=user, activity=activity, run_id=run, course_id=course_id, segment="0" * 12
    )
    metrics = {
        "xp_earned": xp,
        "total_questions": total,
        "correct_questions": correct,
        "mastered_units": mastered,
        "pct_complete": pct,
    }
    event_id, rendered = template.completion(when, **metrics)
    model = tt.ActivityCompletedEvent.for_completion(
        user=user,
        activity=activity,
        run_id=run,
        event_time=utc(when),
        course_id=course_id,
        event_id=completion_event_id(run),
        **metrics,
    )
    assert rendered == model_json(model)
    assert event_id == model.id


def test_a_completion_with_a_bad_metric_is_refused_by_the_models_rules() -> None:
    """The template validates metrics with the models' own rules and their messages."""
    template = RunTemplate(
        user=USER, activity=ACTIVITY, run_id=uuid.uuid4(), course_id=None, segment="a" * 12
    )
    with pytest.raises(tt.ValidationError, match="'correctQuestions' must not exceed"):
        template.completion(0, xp_earned=1, total_questions=2, correct_questions=3)
    with pytest.raises(tt.ValidationError, match="finite"):
        template.completion(0, xp_earned=float("inf"))


class Half(float):
    """A float subclass, as numpy's float64 is."""


METRIC = (
    st.none()
    | st.integers(-5, 10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.floats(0, 150).map(Half)
    | st.booleans()
    | st.just("7")
)


@settings(max_examples=examples(500))
@given(xp=METRIC, total=METRIC, correct=METRIC, mastered=METRIC, pct=METRIC)
def test_the_completion_fast_path_renders_what_the_models_render_or_defers_to_them(
    xp: object, total: object, correct: object, mastered: object, pct: object
) -> None:
    """Metrics the shortcut renders, the models render alike; the rest the models refuse."""
    metrics = (xp, total, correct, mastered, pct)
    fast = _metrics_json("urn:uuid:" + str(uuid.UUID(int=1)), *metrics)  # type: ignore[arg-type]
    try:
        validated = RunTemplate._validated_metrics_json(
            "urn:uuid:" + str(uuid.UUID(int=1)),
            *metrics,  # type: ignore[arg-type]
        )
    except tt.ValidationError:
        assert fast is None
    else:
        assert fast == validated


def test_a_template_survives_storage() -> None:
    """A template rebuilt from its stored JSON renders the same windows."""
    template = RunTemplate(
        user=USER, activity=ACTIVITY, run_id=uuid.uuid4(), course_id="C-1", segment="b" * 12
    )
    again = RunTemplate.from_json(template.to_json())
    assert again.window(3, 4, 10, 30_010, 30_000, 0) == template.window(3, 4, 10, 30_010, 30_000, 0)
    assert (again.run_id, again.segment, again.course_id) == ("" + template.run_id, "b" * 12, "C-1")
    with pytest.raises(ValueError, match="not a stored run template"):
        RunTemplate.from_json('{"run": "nope"}')


@given(namespace=st.uuids(), name=st.text())
def test_uuid5_text_is_the_standard_uuid5(namespace: uuid.UUID, name: str) -> None:
    """The fast uuid5 is RFC 4122's, character for character."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return
    assert uuid5_text(namespace.bytes, name) == str(uuid.uuid5(namespace, name))


@given(st.integers(0, 253_402_300_799_999))
def test_format_ms_is_the_wire_timestamp(epoch_ms: int) -> None:
    """Milliseconds format as YYYY-MM-DDTHH:MM:SS.mmmZ, as the models send datetimes."""
    from timeback_tracker._serialization import format_timestamp

    assert format_ms(epoch_ms) == format_timestamp(utc(epoch_ms))


def stdlib_timestamp(epoch_ms: int) -> str:
    """The wire timestamp of epoch milliseconds by :mod:`datetime` alone (no library code)."""
    instant = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=epoch_ms)
    return f"{instant.year:04d}-{instant:%m-%dT%H:%M:%S}.{instant.microsecond // 1000:03d}Z"


def calendar_edges() -> list[int]:
    """Instants around every day that trips a calendar: leap days, month and year ends."""
    days = []
    for year in (1970, 1971, 1972, 1999, 2000, 2001, 2023, 2024, 2038, 2100, 2400, 9999):
        days += [date(year, 1, 1), date(year, 2, 28), date(year, 3, 1), date(year, 12, 31)]
        if calendar.isleap(year):
            days.append(date(year, 2, 29))
    instants = []
    for day in days:
        midnight = (day - date(1970, 1, 1)).days * 86_400_000
        instants += [midnight - 1, midnight, midnight + 1, midnight + 86_399_999]
    return [ms for ms in instants if ms >= 0]


def test_format_ms_is_datetimes_at_leap_days_and_year_ends() -> None:
    """Around leap days, month ends and year ends, in order (the day cache warm), as datetime."""
    edges = calendar_edges()
    assert len(edges) > 200
    for epoch_ms in edges:
        assert format_ms(epoch_ms) == stdlib_timestamp(epoch_ms), epoch_ms
    # Far apart: each call is the first of its day.
    for epoch_ms in reversed(edges):
        assert format_ms(epoch_ms) == stdlib_timestamp(epoch_ms), epoch_ms


@settings(max_examples=examples(300))
@given(
    start=st.integers(0, 253_402_300_799_999 - 10 * MAX_VALUE_MS),
    steps=st.lists(st.integers(0, MAX_VALUE_MS), min_size=1, max_size=10),
)
def test_format_ms_of_consecutive_windows_is_datetimes(start: int, steps: list[int]) -> None:
    """Window after window, as a session formats them (the caches warm), every field is right."""
    epoch_ms = start
    for step in steps:
        epoch_ms += step
        assert format_ms(epoch_ms) == stdlib_timestamp(epoch_ms)


@settings(max_examples=examples(300))
@given(
    run=st.uuids(),
    segment=st.text(alphabet="0123456789abcdef", min_size=12, max_size=12),
    first=st.integers(0, 10**9),
    extra=st.integers(0, 5),
)
def test_window_ids_are_the_standard_uuid5(
    run: uuid.UUID, segment: str, first: int, extra: int
) -> None:
    """A window's ids are uuid.uuid5's, from any path: so a recovery rebuilds the same ids."""
    last = first + extra
    span = str(first) if extra == 0 else f"{first}-{last}"
    expected = f"urn:uuid:{uuid.uuid5(run, f'time-spent/{segment}/{span}')}"
    template = RunTemplate(
        user=USER, activity=ACTIVITY, run_id=run, course_id=None, segment=segment
    )
    rebuilt = RunTemplate.from_json(template.to_json())
    for source in (template, rebuilt, template):  # the shared SHA-1 prefix is never consumed
        event_id, payload = source.window(first, last, 0, 1_000, 1_000, 0)
        assert event_id == expected
        collection = json.loads(payload)["generated"]["id"]
        assert collection == f"urn:uuid:{uuid.uuid5(GENERATED_NAMESPACE, expected + '#generated')}"
    assert time_spent_event_id(run, segment, first, last) == expected


@given(st.integers(0, MAX_VALUE_MS))
def test_seconds_text_is_the_models_number(ms: int) -> None:
    """Milliseconds go on the wire as the JSON number the models give for seconds."""
    assert json.loads(seconds_text(ms)) == ms / 1000
    assert seconds_text(ms) == json.dumps(
        tt.dump(tt.TimeMetric(type="active", value=round(ms / 1000, 3)))["value"]
    )


def test_merging_is_integer_arithmetic_and_one_render() -> None:
    """Two consecutive windows merge into sums and a widened span, rendered like any window."""
    template = RunTemplate(
        user=USER, activity=ACTIVITY, run_id=uuid.uuid4(), course_id=None, segment="c" * 12
    )
    first = Entry.window(template, 4, 4, 1_000, 16_001, 15_000, 1)
    second = Entry.window(template, 5, 5, 16_001, 31_002, 333, 14_668)
    merged = merge_windows(first, second)
    assert merged is not None
    assert (merged.first_seq, merged.last_seq, merged.start_ms, merged.end_ms) == (
        4,
        5,
        1_000,
        31_002,
    )
    assert (merged.active_ms, merged.inactive_ms) == (15_333, 14_669)
    assert merged.payload == Entry.window(template, 4, 5, 1_000, 31_002, 15_333, 14_669).payload
    # Not consecutive, not contiguous, another segment: never merged.
    assert merge_windows(first, Entry.window(template, 6, 6, 16_001, 17_001, 1_000, 0)) is None
    assert merge_windows(first, Entry.window(template, 5, 5, 16_002, 17_002, 1_000, 0)) is None
    other = RunTemplate(
        user=USER, activity=ACTIVITY, run_id=template.run, course_id=None, segment="d" * 12
    )
    assert merge_windows(first, Entry.window(other, 5, 5, 16_001, 17_001, 1_000, 0)) is None
