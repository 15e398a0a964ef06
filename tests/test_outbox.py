"""The bounded in-memory outbox: FIFO, acknowledgement, coalescing, drops."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

import timeback_tracker as tt
from tests.support import ACTIVITY, USER
from timeback_tracker._outbox import (
    Entry,
    MemoryOutbox,
    completion_event_id,
    time_spent_event_id,
)

T0 = datetime(2026, 1, 27, 10, 0, tzinfo=timezone.utc)


def window(
    run: uuid.UUID, seq: int, active: float = 10, inactive: float = 5, gap: float = 0
) -> Entry:
    """The entry of window ``seq`` of ``run`` (15 s windows, optionally shifted by ``gap``)."""
    start = T0 + timedelta(seconds=15 * seq + gap)
    event = tt.TimeSpentEvent.for_window(
        user=USER,
        activity=ACTIVITY,
        run_id=run,
        start=start,
        end=start + timedelta(seconds=active + inactive),
        active_seconds=active,
        inactive_seconds=inactive,
        event_id=time_spent_event_id(run, seq),
    )
    return Entry.of(event, seq, seq)


def completion(run: uuid.UUID) -> Entry:
    """The completion entry of ``run``."""
    event = tt.ActivityCompletedEvent.for_completion(
        user=USER,
        activity=ACTIVITY,
        run_id=run,
        event_time=T0 + timedelta(hours=1),
        xp_earned=3,
        event_id=completion_event_id(run),
    )
    return Entry.of(event)


def seconds(entry: Entry) -> float:
    """Active plus inactive seconds of a time entry."""
    generated = tt.load(entry.payload, tt.TimeSpentEvent).generated
    return generated.seconds("active") + generated.seconds("inactive")


def test_fifo_take_ack_release() -> None:
    """take() gives the oldest entries; released ones come back first; acked ones are gone."""
    run = uuid.uuid4()
    outbox = MemoryOutbox(100)
    entries = [window(run, n) for n in range(5)]
    for entry in entries:
        outbox.put(entry)
    first = outbox.take(2)
    assert first == entries[:2]
    assert outbox.take(2) == entries[2:4]  # in-flight entries are skipped
    outbox.release(first)
    assert outbox.take(10) == [*entries[:2], entries[4]]
    outbox.ack(entries)
    assert len(outbox) == 0
    assert [e.attempts for e in entries] == [2, 2, 1, 1, 1]


def test_put_of_a_held_id_is_ignored() -> None:
    """The same event put twice is held once."""
    run = uuid.uuid4()
    outbox = MemoryOutbox(10)
    outbox.put(window(run, 0))
    outbox.put(window(run, 0))
    assert len(outbox) == 1


def test_full_outbox_coalesces_contiguous_windows_of_a_run() -> None:
    """When full, a new window merges into its run's last one: sums and span preserved."""
    run = uuid.uuid4()
    outbox = MemoryOutbox(3)
    for n in range(3):
        outbox.put(window(run, n))
    admission = outbox.put(window(run, 3))
    assert (admission.coalesced, admission.dropped) == (1, [])
    held = outbox.take(10)
    assert len(held) == 3
    merged = tt.load(held[-1].payload, tt.TimeSpentEvent)
    assert merged.generated.seconds("active") == 20
    assert merged.generated.seconds("inactive") == 10
    items = merged.generated.items
    assert items[0].start_date == T0 + timedelta(seconds=30)
    assert items[0].end_date == T0 + timedelta(seconds=60)
    assert merged.id == time_spent_event_id(run, 2, 3)
    assert (held[-1].first_seq, held[-1].last_seq) == (2, 3)


def test_attempted_windows_are_never_merged() -> None:
    """A window that went out once may be at the endpoint already: it is not merged."""
    run = uuid.uuid4()
    outbox = MemoryOutbox(2)
    outbox.put(window(run, 0))
    outbox.put(window(run, 1))
    outbox.release(outbox.take(10))  # both were attempted
    admission = outbox.put(window(run, 2))
    assert admission.coalesced == 0
    assert [e.id for e in admission.dropped] == [time_spent_event_id(run, 0)]
    assert len(outbox) == 2


def test_windows_across_a_gap_are_not_merged() -> None:
    """Merging across a cutoff or suspend gap would break conservation: drop instead."""
    run = uuid.uuid4()
    outbox = MemoryOutbox(2)
    outbox.put(window(run, 0))
    outbox.put(window(run, 1, gap=100))
    admission = outbox.put(window(run, 2, gap=300))
    assert admission.coalesced == 0
    assert len(admission.dropped) == 1


def test_merge_never_exceeds_a_day() -> None:
    """Windows whose sum would exceed 86400 s are not merged."""
    run = uuid.uuid4()
    outbox = MemoryOutbox(1)
    big = window(run, 0, active=50_000, inactive=0)
    outbox.put(big)
    event = tt.TimeSpentEvent.for_window(
        user=USER,
        activity=ACTIVITY,
        run_id=run,
        start=T0 + timedelta(seconds=50_000),
        end=T0 + timedelta(seconds=90_000),
        active_seconds=40_000,
        inactive_seconds=0,
        event_id=time_spent_event_id(run, 1),
    )
    admission = outbox.put(Entry.of(event, 1, 1))
    assert admission.coalesced == 0
    assert admission.dropped == [big]


def test_completions_are_never_dropped() -> None:
    """A full outbox drops the oldest time window, never a completion."""
    runs = [uuid.uuid4() for _ in range(3)]
    outbox = MemoryOutbox(3)
    outbox.put(completion(runs[0]))
    outbox.put(window(runs[1], 0))
    outbox.put(completion(runs[1]))
    admission = outbox.put(completion(runs[2]))
    assert [e.id for e in admission.dropped] == [time_spent_event_id(runs[1], 0)]
    assert {e.kind for e in outbox.take(10)} == {"completion"}


def test_dead_letters_leave_the_queue() -> None:
    """dead_letter() removes entries and keeps them aside with the reason."""
    run = uuid.uuid4()
    outbox = MemoryOutbox(10)
    entry = window(run, 0)
    outbox.put(entry)
    outbox.dead_letter(outbox.take(1), "HTTP 400")
    assert len(outbox) == 0
    assert outbox.dead_letters == [(entry, "HTTP 400")]


@settings(max_examples=50, deadline=None)
@given(
    max_queue=st.integers(1, 8),
    script=st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["window", "done", "take"]))),
)
def test_bounded_and_time_conserved(max_queue: int, script: list[tuple[int, str]]) -> None:
    """Whatever arrives, the outbox never exceeds max_queue, keeps every completion it
    can, and held + dropped time always equals the time put in."""
    runs = [uuid.UUID(int=n + 1) for n in range(3)]
    outbox = MemoryOutbox(max_queue)
    seq = [0, 0, 0]
    finished = [False, False, False]
    put_seconds = dropped_seconds = 0.0
    completions = 0
    for run_index, action in script:
        run = runs[run_index]
        if action == "take":
            outbox.release(outbox.take(1))
            continue
        if finished[run_index]:
            continue
        if action == "window":
            entry = window(run, seq[run_index])
            seq[run_index] += 1
            put_seconds += 15
        else:
            entry = completion(run)
            finished[run_index] = True
            completions += 1
        admission = outbox.put(entry)
        for dropped in admission.dropped:
            assert dropped.kind == "time" or len(outbox) == max_queue
            if dropped.kind == "time":
                dropped_seconds += seconds(dropped)
            else:
                completions -= 1
        assert len(outbox) <= max_queue
    held = outbox.take(100)
    held_seconds = sum(seconds(e) for e in held if e.kind == "time")
    assert held_seconds + dropped_seconds == put_seconds
    assert sum(1 for e in held if e.kind == "completion") == completions
