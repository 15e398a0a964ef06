"""Recovery at the edges: a full shared spool, a recovery that cannot be written, a closed outbox.

The crash recovery runs at a tracker's start on a spool other apps may share,
maybe full, maybe refusing writes; and an outbox may be called after close
by a thread that has not noticed yet. Each test checks whose events go where,
in which order, and that nothing raises or writes where it must not.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

import timeback_tracker as tt
from tests.support import (
    SENSOR,
    checkpoint,
    closed_port_url,
    completion,
    eventually,
    rows,
    template,
    trash_entry_pages,
    window,
    window_id,
)
from timeback_tracker._spool import SqliteOutbox
from timeback_tracker._spool_file import close_quietly

APP_A = ("https://a.example.com/sensors/1", "https://a.example.com/caliper/event")
APP_B = ("https://b.example.com/sensors/1", "https://b.example.com/caliper/event")


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    """A spool file path in a fresh directory."""
    return tmp_path / "spool.sqlite3"


def kill(outbox: SqliteOutbox) -> None:
    """As if its process were killed: the owner lock is free, the lock file stays."""
    close_quietly(outbox._owner_fd)
    outbox._owner_fd = None
    if outbox._conn is not None:
        outbox._conn.close()


def test_a_window_recovered_into_a_full_shared_spool_keeps_its_owner_destination(
    spool: Path,
) -> None:
    """App A dies on a spool it shares with app B, and B's tracker recovers A's open window
    when the spool is full: room is made by merging B's windows, and the window still
    belongs to A, so B never sends A's student to B's endpoint."""
    run_a, run_b = uuid.uuid4(), uuid.uuid4()
    sensor, endpoint = APP_A
    dying = SqliteOutbox(spool, 2, sensor=sensor, endpoint=endpoint)
    dying.put_many([], {template(run_a).segment: checkpoint(run_a, 3)})
    kill(dying)
    sensor, endpoint = APP_B
    app_b = SqliteOutbox(spool, 2, sensor=sensor, endpoint=endpoint)
    try:
        app_b.put_many([window(run_b, 0), window(run_b, 1)])  # full: two mergeable windows

        recovered = app_b.recover()

        assert [e.id for e in recovered] == [window_id(run_a, 3)]
        assert rows(spool, "SELECT id, dest FROM entries ORDER BY slot") == [
            (window_id(run_b, 0, 1), app_b.dest),
            (window_id(run_a, 3), dying.dest),
        ]
        assert [e.id for e in app_b.take(10)] == [window_id(run_b, 0, 1)]
    finally:
        app_b.close()
    sensor, endpoint = APP_A
    restarted_a = SqliteOutbox(spool, 2, sensor=sensor, endpoint=endpoint)
    try:
        assert [e.id for e in restarted_a.take(10)] == [window_id(run_a, 3)]
    finally:
        restarted_a.close()


def test_a_recovery_that_cannot_be_written_holds_back_only_the_runs_it_owes(
    spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The spool refuses the recovery's write: the completion of the crashed run waits (its
    last window is not queued yet), another run's completion goes at once; once the
    recovery is written, the crashed run's window goes before its completion."""
    crashed, other = uuid.uuid4(), uuid.uuid4()
    dying = SqliteOutbox(spool, 100)
    dying.put_many([], {template(crashed).segment: checkpoint(crashed, 2)})
    kill(dying)
    survivor = SqliteOutbox(spool, 100)
    try:
        # The app resumed and completed the crashed run; another run completed too.
        survivor.put_many([completion(crashed)], completes=str(crashed))
        survivor.put_many([completion(other)], completes=str(other))
        assert survivor._conn is not None
        survivor._conn.execute("PRAGMA query_only = ON")  # every write fails
        with caplog.at_level(logging.WARNING, "timeback_tracker.spool"):
            assert survivor.recover() == []
        assert "the completions of 1 run wait for them" in caplog.text

        first = survivor.take(10)
        assert [e.id for e in first] == [completion(other).id]
        survivor.ack(first)

        survivor._conn.execute("PRAGMA query_only = OFF")
        assert [e.id for e in survivor.recover()] == [window_id(crashed, 2)]
        assert [e.id for e in survivor.take(10)] == [window_id(crashed, 2), completion(crashed).id]
    finally:
        survivor.close()


def test_a_closed_outbox_raises_nothing_and_writes_nothing(
    spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A thread that calls the outbox after close() (the tracker shut down under it) gets
    no exception and no write to the file: nothing is taken (the drain lock is not taken
    again), a late put is kept in memory with one warning, and the rest does nothing."""
    run = uuid.uuid4()
    outbox = SqliteOutbox(spool, 100)
    outbox.put_many([window(run, 0)])
    taken = outbox.take(10)
    assert outbox.close() == 0
    drain_lock = spool.with_name(f"{spool.name}.drain-{outbox.dest}.lock")
    before = {p.name: p.read_bytes() for p in spool.parent.iterdir() if p != drain_lock}

    with caplog.at_level(logging.DEBUG, "timeback_tracker.spool"):
        assert outbox.take(10) == []
        outbox.ack(taken)
        outbox.release(taken, reached=False)
        outbox.dead_letter(taken, "HTTP 400")
        outbox.rebase(86_400_000)
        seen = checkpoint(run, 1)
        outbox.mark_alive(seen.mono_ms, seen.wall_ms, [seen])
        assert outbox.recover() == []
        outbox.put_many([window(run, 1)])
        assert outbox.close() == 0

    after = {p.name: p.read_bytes() for p in spool.parent.iterdir() if p != drain_lock}
    assert after == before
    assert outbox._drain_fd is None
    assert [r.getMessage() for r in caplog.records] == [
        f"spool {spool} is closed: 1 events kept in memory only"
    ]


def test_windows_dropped_for_a_recovered_window_are_counted_and_reported(spool: Path) -> None:
    """A tracker starting on a full spool recovers a crashed run's window by dropping the
    oldest window that cannot merge: stats() counts it and on_error hears of it, as for a
    put into a full outbox."""
    crashed, first, second = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    sensor, endpoint = SENSOR, closed_port_url()  # nothing is delivered meanwhile
    dying = SqliteOutbox(spool, 2, sensor=sensor, endpoint=endpoint)
    dying.put_many([window(first, 0), window(second, 0)])  # two runs: nothing can merge
    dying.put_many([], {template(crashed).segment: checkpoint(crashed, 3)})
    kill(dying)
    failures: list[tt.DeliveryFailure] = []
    config = tt.TrackerConfig(
        sensor=sensor, endpoint=endpoint, spool_path=spool, max_queue=2, on_error=failures.append
    )
    with tt.Tracker(config) as tracker:
        assert eventually(lambda: bool(failures))
        assert tracker.stats().dropped == 1
    assert [(f.reason, f.event_ids) for f in failures if f.reason == "outbox full"] == [
        ("outbox full", (window_id(first, 0),))
    ]


def test_what_a_corrupt_spools_salvage_drops_is_reported_once_the_tracker_runs(
    spool: Path,
) -> None:
    """Opening the tracker salvages a corrupt spool into a smaller queue: the windows it
    drops are counted and handed to on_error, although the delivery thread did not
    exist yet when they were dropped."""
    endpoint = closed_port_url()
    outbox = SqliteOutbox(spool, 100, sensor=SENSOR, endpoint=endpoint)
    outbox.put_many([window(uuid.uuid4(), 0) for _ in range(24)])
    outbox.close()
    trash_entry_pages(spool, 1)  # a few events' page trashed: corrupt
    failures: list[tt.DeliveryFailure] = []
    config = tt.TrackerConfig(
        sensor=SENSOR, endpoint=endpoint, spool_path=spool, max_queue=2, on_error=failures.append
    )
    with tt.Tracker(config) as tracker:
        assert any(".corrupt-" in path.name for path in spool.parent.iterdir())
        assert eventually(lambda: any(f.reason == "outbox full" for f in failures))
        dropped = tracker.stats().dropped
    assert dropped == sum(len(f.event_ids) for f in failures if f.reason == "outbox full") > 0
