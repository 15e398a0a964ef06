"""Self-healing at the edges: a spool that works again while events from memory are in flight.

When the spool refuses writes, events wait in memory and the delivery
thread sends from there; when the spool takes writes again, what waits in
memory moves to it. A batch being sent from memory at that moment must not
move (it would be taken, and sent, a second time, ahead of its order).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.support import checkpoint, completion, rows, template, window, window_id
from timeback_tracker._outbox import AlreadyCompletedError
from timeback_tracker._spool import SqliteOutbox


def test_memory_waits_to_move_to_the_spool_until_nothing_of_it_is_in_flight(
    tmp_path: Path,
) -> None:
    """The spool is writable again while a batch from memory is being sent: the rest stays
    in memory (each event is taken once, in order); once the batch is acknowledged, the
    next write moves what is left to the spool."""
    spool = tmp_path / "spool.sqlite3"
    run = uuid.uuid4()
    outbox = SqliteOutbox(spool, 100)
    try:
        assert outbox._conn is not None
        outbox._conn.execute("PRAGMA query_only = ON")  # the disk refuses writes
        outbox.put_many([window(run, 0), window(run, 1)])
        sending = outbox.take(1)
        assert [e.id for e in sending] == [window_id(run, 0)]

        outbox._conn.execute("PRAGMA query_only = OFF")
        outbox._retry_at = 0.0  # the spool is due for another try
        outbox.put_many([window(run, 2)])
        assert rows(spool, "SELECT count(*) FROM entries") == [(0,)]
        following = outbox.take(10)
        assert [e.id for e in following] == [window_id(run, 1), window_id(run, 2)]

        outbox.ack(sending + following)
        outbox.put_many([window(run, 3)])
        assert rows(spool, "SELECT id FROM entries") == [(window_id(run, 3),)]
        assert [e.id for e in outbox.take(10)] == [window_id(run, 3)]
        assert len(outbox) == 1
    finally:
        outbox.close()


def test_an_owner_lock_that_cannot_be_taken_again_leaves_no_stale_descriptor(
    tmp_path: Path,
) -> None:
    """The spool's directory is emptied and a dangling symlink planted where the owner lock
    goes: the lock cannot be taken again, and the sign of life must then go nowhere, never
    through the old descriptor's number into whatever file this process opens next."""
    spool = tmp_path / "spool.sqlite3"
    run = uuid.uuid4()
    segment = template(run).segment
    outbox = SqliteOutbox(spool, 100)
    victims: list[int] = []
    try:
        outbox.put_many([], {segment: checkpoint(run, 1)})
        stale = outbox._owner_fd
        for path in list(tmp_path.iterdir()):
            path.unlink()
        outbox._owner_lock(outbox.owner).symlink_to(tmp_path / "nowhere")

        outbox.put_many([window(run, 1)], {segment: checkpoint(run, 2)})  # kept in memory

        while stale not in victims and len(victims) < 64:  # the app opens its own files
            victims.append(os.open(tmp_path / f"app-{len(victims)}", os.O_RDWR | os.O_CREAT))
            os.write(victims[-1], b"the app's own data")
        assert stale in victims  # the old number was reused: the test can tell
        seen = checkpoint(run, 2, open_seconds=7)
        outbox.mark_alive(seen.mono_ms, seen.wall_ms, [seen])
        assert [os.pread(fd, 100, 0) for fd in victims] == [b"the app's own data"] * len(victims)
    finally:
        outbox.close()
        for fd in victims:
            os.close(fd)


def test_a_run_has_one_completion_even_while_the_spool_refuses_writes(tmp_path: Path) -> None:
    """The spool refuses writes but can still be read: completing a run another tracker
    completed is refused, and so is completing twice a run completed in memory meanwhile;
    neither leaves an event behind."""
    spool = tmp_path / "spool.sqlite3"
    elsewhere, here = uuid.uuid4(), uuid.uuid4()
    other = SqliteOutbox(spool, 100)
    other.put_many([completion(elsewhere)], completes=str(elsewhere))
    other.close()
    outbox = SqliteOutbox(spool, 100)
    try:
        assert outbox._conn is not None
        outbox._conn.execute("PRAGMA query_only = ON")
        with pytest.raises(AlreadyCompletedError):
            outbox.put_many([completion(elsewhere)], completes=str(elsewhere))
        outbox.put_many([completion(here)], completes=str(here))
        with pytest.raises(AlreadyCompletedError):
            outbox.put_many([completion(here)], completes=str(here))
        assert [e.id for e in outbox.take(10)] == [completion(elsewhere).id, completion(here).id]
        outbox._conn.execute("PRAGMA query_only = OFF")  # the disk is back before close
    finally:
        outbox.close()
    assert rows(spool, "SELECT run_id FROM completed ORDER BY run_id") == sorted(
        [(str(elsewhere),), (str(here),)]
    )
