"""Fuzzing call sequences: random sessions, calls, flushes and closes on real trackers.

The constructors and ``load`` are fuzzed value by value elsewhere; what breaks a
tracker in the field is an order of calls nobody tried (complete() racing end(),
flush(nan) while a window closes, close() inside a ``with`` block, a tiny outbox
overflowing during an outage). A Hypothesis state machine drives four long-lived
trackers and up to two short-lived ones, all delivering to one real loopback
collector that fails now and then with retryable statuses, and checks after every
step and at the end (against ``tests/surface_oracle.py``): only allowed errors come
out of a public call, exactly when the documented rules say so; the background
threads survive; the collector is only ever sent what it accepts; and what it
accepted is valid, in order, contiguous, conserved and complete.

Derandomized by default (``conftest.py``'s ``ci`` profile): a failure prints the steps
and a ``@reproduce_failure`` blob. ``HYPOTHESIS_PROFILE=explore`` draws new examples,
ten times as many.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
from hypothesis import event, given, settings
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
from tests.strategies import (
    ACTIVITY,
    EMAIL,
    ENTITIES,
    EXTREME_NUMBERS,
    HOSTILE_APPS,
    OMIT,
    SURROGATES,
    USER,
    WEIRD,
    Fields,
    arguments,
    entity_fields,
    examples,
    opaque,
    setting,
)
from tests.support import ALLOWED, SENSOR, attempt, bounded
from tests.surface_oracle import (
    Box,
    Run,
    category,
    check_delivered,
    check_state,
    course_id_ok,
    metrics_valid,
    uuid_ok,
)
from timeback_tracker.testing import LocalCollector

# An unhandled exception in any thread (a background thread dying) fails the test.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

HEARTBEAT = 0.05
CALL_LIMIT = 15.0
"""Seconds a call may take here before it counts as hung (``bounded``'s default too)."""
THREAD_NAMES = ("timeback-tracker-heartbeat", "timeback-tracker-delivery")
RETRYABLE = (500, 502, 503, 429, 408)


# -- what the machine draws ---------------------------------------------------------------


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
                lambda app: attempt(
                    tt.TimebackActivityContext,
                    id="https://myapp.example.com/a/3",
                    subject="Math",
                    app=app,
                ),
                HOSTILE_APPS,
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


def metric_arguments(at_least: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """complete()'s keyword arguments, ``at_least`` of them hostile."""
    return arguments(METRIC_FIELDS, at_least=at_least).map(lambda drawn: _metrics(**drawn))


METRICS = st.deferred(metric_arguments)  # a short repr
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
"""TrackerConfig arguments of a short-lived tracker (sensor, endpoint and on_error fixed)."""


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
        time.sleep(seconds)  # deliberate: real time passes, windows close on the heartbeat

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
        elif not course_id_ok(course_id) or not uuid_ok(run_id):
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
        check_state(run)

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
        check_state(run)

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
        check_state(run)

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
        check_state(run)

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
                    check_state(run)
            for box in self.boxes:
                if not box.module and not box.closed:
                    bounded(lambda box=box: box.tracker.close(5.0))
                    box.closed = True
                elif box.module:
                    flushed = bounded(lambda box=box: box.tracker.flush(10.0))
                    assert flushed, box.tracker.stats()
            check_delivered(self.collector, self.runs, self.history)
        finally:
            self.collector.clear_faults()
            for box in self.boxes:
                if not box.module:
                    box.tracker.close(0)


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
        settings=settings(max_examples=examples(70), stateful_step_count=30, print_blob=True),
    )


@settings(max_examples=examples(120))
@given(
    data=st.data(),
    box_index=st.integers(0, 3),
    arguments=START_ARGUMENTS,
    seconds=st.sampled_from([0.0, 0.06]),
    metrics=st.deferred(lambda: metric_arguments(at_least=1)),
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
            time.sleep(seconds)  # deliberate: 0.06 s lets a 0.05 s window close first
            machine.complete(data, metrics)
        machine.threads_alive_and_no_internal_errors()
    finally:
        machine.teardown()
