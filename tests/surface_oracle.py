"""The oracle of the public-surface fuzzer: what trackers and sessions must do, decided
independently of the library.

``test_fuzz_call_sequences`` drives real trackers at random; this module holds what it
checks them against: a model of each tracker (:class:`Box`) and session (:class:`Run`),
the documented input rules written again here (never imported from the package, or a
wrong rule would agree with itself), and the checks on what the
loopback collector received: valid, in order, contiguous, conserved and, when nothing
was dropped, adding up to what the session counted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import uuid
from collections.abc import Iterator
from typing import Any

import timeback_tracker as tt
from tests.strategies import EMAIL
from tests.support import assert_conserved, assert_contiguous, canonical, item, wire_bytes
from timeback_tracker.testing import LocalCollector


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


def number_ok(value: Any, low: float = -math.inf, high: float = math.inf) -> bool:
    """A finite int or float (not a bool) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int beyond the range of a float
        return False
    return finite and low <= value <= high


def count_ok(value: Any) -> bool:
    """None, or a whole number >= 0 (``7.0`` counts)."""
    return value is None or (number_ok(value) and value >= 0 and float(value).is_integer())


def metrics_valid(metrics: dict[str, Any]) -> bool:
    """The documented rules of complete()'s metrics, independently of the library."""
    total, correct = metrics["total_questions"], metrics["correct_questions"]
    return (
        number_ok(metrics["xp_earned"], 0)
        and all(count_ok(metrics[name]) for name in ("total_questions", "correct_questions"))
        and count_ok(metrics["mastered_units"])
        and (total is None) == (correct is None)
        and (total is None or correct <= total)
        and (metrics["pct_complete"] is None or number_ok(metrics["pct_complete"], 0, 100))
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


def uuid_ok(value: Any) -> bool:
    """A run id start_session() takes: None, a UUID, or any text ``uuid.UUID`` parses."""
    if value is None or isinstance(value, uuid.UUID):
        return True
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def course_id_ok(value: Any) -> bool:
    """A course id start_session() takes: None, or non-blank UTF-8 text of 1,024 at most."""
    if value is None:
        return True
    if not isinstance(value, str) or not value.strip() or len(value) > 1024:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_state(run: Run) -> None:
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


@contextlib.contextmanager
def explained(context: str) -> Iterator[None]:
    """Add ``context`` to an AssertionError raised inside."""
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{context}") from exc


def check_delivered(collector: LocalCollector, runs: list[Run], history: dict[str, int]) -> None:
    """Everything the collector accepted is valid, complete, conserved and in order.

    ``history`` holds the events recorded per run of earlier examples: a finished
    run must get nothing more. Updated with ``runs``.
    """
    assert collector.duplicate_conflicts == []
    by_run: dict[str, list[dict[str, Any]]] = {}
    for recorded in collector.events:
        by_run.setdefault(recorded["extensions"]["runId"], []).append(recorded)
    for run_id, count in history.items():  # nothing after complete()/end()
        assert len(by_run.get(run_id, [])) == count, run_id
    for run in runs:
        events = by_run.get(run.session.run_id, [])
        check_run(run, events)
        history[run.session.run_id] = len(events)


def check_run(run: Run, events: list[dict[str, Any]]) -> None:
    """The events a collector recorded for one run (``events``) against the model of the run."""
    session = run.session
    extensions = {"runId": session.run_id}
    if run.course_id is not None:
        extensions["courseId"] = run.course_id
    for recorded in events:
        wire_bytes(recorded)  # strict JSON: no NaN, no lone surrogates
        cls = (
            tt.TimeSpentEvent if recorded["type"] == "TimeSpentEvent" else tt.ActivityCompletedEvent
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
        check_metrics(run, completions[0])
    spent = [recorded for recorded in events if recorded["type"] == "TimeSpentEvent"]
    starts = [item(window, "active")["startDate"] for window in spent]
    assert starts == sorted(starts)  # delivered in window order
    assert_conserved(spent)
    stats = run.box.tracker.stats()
    # A full outbox may drop events, counted and reported (see _outbox.plan_admission:
    # even a completion, when everything held is a completion or in flight).
    dropped = stats.dropped != run.box.dropped_before
    spans = [(item(w, "active")["startDate"], item(w, "active")["endDate"]) for w in spent]
    with explained(f"windows of run {session.run_id} on {run.box.name}: {spans}; {stats}"):
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


def check_metrics(run: Run, completion: dict[str, Any]) -> None:
    """The completion carries exactly the metrics the successful complete() was given."""
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
