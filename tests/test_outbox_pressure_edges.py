"""Outbox edges under pressure: windows being sent are never merged away, and a memory
outbox's memory of completed runs is bounded."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from tests.support import completion, ended, window, window_id
from timeback_tracker import _outbox
from timeback_tracker._outbox import AlreadyCompletedError, MemoryOutbox, Outbox


def test_windows_in_flight_are_never_merged_to_make_room(make: Callable[[int], Outbox]) -> None:
    """A full outbox whose only adjacent windows are being sent neither merges nor drops
    them: the completion is held beyond the bound, and the send's ack removes exactly
    the two windows it carried."""
    run, other = uuid.uuid4(), uuid.uuid4()
    outbox = make(2)
    outbox.put(window(run, 0))
    outbox.put(window(run, 1))
    sending = outbox.take(10)
    assert [e.id for e in sending] == [window_id(run, 0), window_id(run, 1)]
    admission = outbox.put(completion(other))
    assert (admission.coalesced, admission.dropped) == (0, [])
    assert len(outbox) == 3
    outbox.ack(sending)
    [left] = outbox.take(10)
    assert left.id == completion(other).id


def test_adjacent_windows_beside_one_in_flight_merge_only_among_themselves(
    make: Callable[[int], Outbox],
) -> None:
    """With the first window of a run in flight, room is made by merging the two after
    it, never by folding the one being sent into its neighbour."""
    run, other = uuid.uuid4(), uuid.uuid4()
    outbox = make(3)
    for seq in range(3):
        outbox.put(window(run, seq))
    [sending] = outbox.take(1)
    admission = outbox.put(completion(other))
    assert (admission.coalesced, admission.dropped) == (1, [])
    outbox.ack([sending])
    held = outbox.take(10)
    assert [(e.first_seq, e.last_seq) for e in held if e.kind == "time"] == [(1, 2)]


def test_a_memory_outbox_remembers_the_newest_completed_runs_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Completed runs are remembered up to the limit (memory stays flat on a kiosk
    running for months); the oldest is forgotten first, the newer ones still refuse a
    second completion."""
    monkeypatch.setattr(_outbox, "COMPLETED_RUNS_REMEMBERED", 3)
    outbox = MemoryOutbox(100)
    runs = [uuid.uuid4() for _ in range(4)]
    for run in runs:
        outbox.put_many([completion(run)], ended(run), completes=str(run))
    for run in runs[1:]:
        with pytest.raises(AlreadyCompletedError):
            outbox.put_many([completion(run)], ended(run), completes=str(run))
    # The first run fell out of memory: without a spool, nothing can tell any more.
    outbox.put_many([completion(runs[0])], ended(runs[0]), completes=str(runs[0]))
