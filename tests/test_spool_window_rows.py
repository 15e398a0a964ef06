"""A window's row keeps its numbers, not its wire JSON: what is read back must be what was put.

The spool renders a window's payload from its segment's template and the
row's numbers when it reads the row (issue 12: a row without its 960 bytes
fits a leaf page beside others, and a tick's commit writes a third fewer
pages). These tests try to make that rendering drift from what was put, or
send a row whose numbers were damaged.
"""

from __future__ import annotations

import random
import sqlite3
import uuid
from pathlib import Path

from tests.support import (
    SENSOR,
    T0_MS,
    checkpoint,
    rows,
    template,
    trash_entry_pages,
    window,
)
from timeback_tracker._outbox import Entry
from timeback_tracker._spool import DEFERRED_DELETES, SqliteOutbox, open_outbox

ENDPOINT = "https://a.example.com/caliper/event"


def random_windows(rng: random.Random, count: int) -> list[Entry]:
    """Windows of a few segments: odd lengths, zero values, merged spans, clock-step gaps."""
    found = []
    for _ in range(3):
        segment = template(uuid.UUID(int=rng.getrandbits(128)))
        seq, start = 0, T0_MS + rng.randrange(10**9)
        for _ in range(count // 3):
            last = seq + rng.choice([0, 0, 0, 1, 7])  # some windows merged
            active = rng.choice([0, rng.randrange(86_400_000), 86_400_000])
            inactive = rng.choice([0, rng.randrange(15_001)])
            found.append(
                Entry.window(segment, seq, last, start, start + active + inactive, active, inactive)
            )
            seq = last + 1
            start += active + inactive + rng.choice([0, 0, rng.randrange(-5000, 10**7)])
    return found


def test_windows_read_back_byte_for_byte_from_rows_without_their_payload(tmp_path: Path) -> None:
    """Hundreds of random windows: no row keeps a payload, and each is taken back with the
    exact text it was put with (the completion keeps its own)."""
    spool = tmp_path / "spool.sqlite3"
    windows = random_windows(random.Random(12), 300)
    outbox = SqliteOutbox(spool, 10_000, drain_wait=0)
    try:
        outbox.put_many(windows)
        assert rows(spool, "SELECT count(*) FROM entries WHERE payload != ''") == [(0,)]
        taken = outbox.take(10_000)
    finally:
        outbox.close()
    assert [(e.id, e.payload) for e in taken] == [(e.id, e.payload) for e in windows]


def test_a_window_row_whose_numbers_were_damaged_is_set_aside_not_sent(tmp_path: Path) -> None:
    """A row whose numbers no longer add up, or no longer make its id, or whose segment's
    template is gone, is never sent with a text other than the one its id stood for."""
    spool = tmp_path / "spool.sqlite3"
    run = uuid.uuid4()
    windows = [window(run, seq) for seq in range(4)]
    outbox = SqliteOutbox(spool, 100, drain_wait=0)
    try:
        outbox.put_many(windows)
        conn = sqlite3.connect(spool)
        conn.execute("UPDATE entries SET active_ms = active_ms + 1 WHERE id = ?", (windows[0].id,))
        conn.execute(
            "UPDATE entries SET first_seq = 9, last_seq = 9 WHERE id = ?", (windows[1].id,)
        )
        conn.execute(
            "UPDATE entries SET active_ms = -5, inactive_ms = 15005 WHERE id = ?", (windows[2].id,)
        )
        conn.commit()
        conn.close()
        taken = outbox.take(10)
    finally:
        outbox.close()
    assert [(e.id, e.payload) for e in taken] == [(windows[3].id, windows[3].payload)]
    dead = rows(spool, "SELECT id, reason FROM dead_letters ORDER BY n")
    assert [entry_id for entry_id, _ in dead] == [w.id for w in windows[:3]]
    assert all("template and numbers do not make this event" in str(r) for _, r in dead)


def test_a_dead_letter_keeps_the_wire_json_of_a_window_whose_row_had_none(tmp_path: Path) -> None:
    """A window the server rejects becomes a dead letter with its whole payload: a dead
    letter is for a person to read and requeue, whatever happens to the templates."""
    spool = tmp_path / "spool.sqlite3"
    entry = window(uuid.uuid4(), 0)
    outbox = SqliteOutbox(spool, 100, drain_wait=0)
    try:
        outbox.put_many([entry])
        outbox.dead_letter(outbox.take(1), "rejected: 422")
    finally:
        outbox.close()
    assert rows(spool, "SELECT payload FROM dead_letters") == [(entry.payload,)]


def test_a_corrupt_spool_salvages_windows_from_their_numbers_and_templates(
    tmp_path: Path,
) -> None:
    """A corrupt spool is moved aside; its windows that still read are rendered from their
    segments' templates there, byte for byte, and queued again in the fresh spool."""
    spool = tmp_path / "spool.sqlite3"
    windows = random_windows(random.Random(5), 120)
    outbox = SqliteOutbox(spool, 10_000, sensor=SENSOR, endpoint=ENDPOINT)
    outbox.put_many(windows)
    outbox.close()
    trash_entry_pages(spool, 1)
    salvaged = open_outbox(spool, 10_000, sensor=SENSOR, endpoint=ENDPOINT)
    try:
        assert isinstance(salvaged, SqliteOutbox)
        taken = salvaged.take(10_000)
    finally:
        salvaged.close()
    assert any(".corrupt-" in path.name for path in tmp_path.iterdir())
    put = {e.id: e.payload for e in windows}
    assert 0 < len(taken) < len(windows)
    assert all(put[e.id] == e.payload for e in taken)


def test_a_delivered_window_is_deleted_by_the_next_tick_while_a_run_counts(
    tmp_path: Path,
) -> None:
    """While a run counts time (a sign of life this second), a delivered window's delete
    waits for the next tick's commit: never taken again nor counted meanwhile, gone with
    that commit. With no run counting, past DEFERRED_DELETES rows, or at close: at once."""
    spool = tmp_path / "spool.sqlite3"
    run = uuid.uuid4()
    segment = template(run).segment
    outbox = SqliteOutbox(spool, 1000, drain_wait=0)
    try:
        outbox.put_many([window(run, 0)])
        outbox.ack(outbox.take(10))  # no run counts: deleted at once
        assert rows(spool, "SELECT count(*) FROM entries") == [(0,)]

        outbox.put_many([window(run, 1)], {segment: checkpoint(run, 2)})
        outbox.mark_alive(0, 0, [checkpoint(run, 2)])
        outbox.ack(outbox.take(10))
        assert rows(spool, "SELECT id FROM entries") == [(window(run, 1).id,)]
        assert len(outbox) == 0
        assert outbox.take(10) == []
        outbox.put_many([window(run, 2)], {segment: checkpoint(run, 3)})  # the next tick
        assert rows(spool, "SELECT id FROM entries") == [(window(run, 2).id,)]

        backlog = [window(run, seq) for seq in range(3, 3 + DEFERRED_DELETES + 1)]
        outbox.put_many(backlog, {segment: checkpoint(run, 3 + len(backlog))})
        outbox.mark_alive(0, 0, [checkpoint(run, 3 + len(backlog))])
        outbox.ack(outbox.take(1000))  # more than DEFERRED_DELETES: deleted at once
        assert rows(spool, "SELECT count(*) FROM entries") == [(0,)]

        outbox.put_many([window(run, 100)], {segment: checkpoint(run, 101)})
        outbox.mark_alive(0, 0, [checkpoint(run, 101)])
        outbox.ack(outbox.take(10))
    finally:
        outbox.close()
    assert rows(spool, "SELECT count(*) FROM entries") == [(0,)]  # close deletes it


def test_two_runs_whose_segment_ids_collide_each_read_back_their_own_windows(
    tmp_path: Path,
) -> None:
    """A segment id is random (48 bits); if another run's segment row already holds it,
    the newcomer's windows keep their payloads, and neither run's window is rendered or
    merged with the other's template."""
    spool = tmp_path / "spool.sqlite3"
    first, second = uuid.UUID(int=1), uuid.UUID(int=2)  # both segments "000000000000"
    assert template(first).segment == template(second).segment
    put = [window(first, 0), window(second, 0), window(first, 1), window(second, 1)]
    outbox = SqliteOutbox(spool, 100, drain_wait=0)
    try:
        outbox.put_many(put)
        kept = rows(spool, "SELECT run_id, payload != '' FROM entries ORDER BY slot")
        taken = outbox.take(10)
    finally:
        outbox.close()
    assert kept == [(str(first), 0), (str(second), 1), (str(first), 0), (str(second), 1)]
    assert [(e.id, e.payload) for e in taken] == [(e.id, e.payload) for e in put]
    assert [e.template is not None for e in taken] == [True, False, True, False]


def test_rows_whose_delete_waits_for_the_tick_make_room_in_a_full_spool(tmp_path: Path) -> None:
    """A full spool (max_queue 2) delivers both windows while the run counts: their rows wait
    for the next tick's commit to be deleted, and that commit's window takes their room,
    neither merged nor dropped for them."""
    spool = tmp_path / "spool.sqlite3"
    run = uuid.uuid4()
    segment = template(run).segment
    outbox = SqliteOutbox(spool, 2, drain_wait=0)
    try:
        outbox.put_many([window(run, 0), window(run, 1)], {segment: checkpoint(run, 2)})
        outbox.mark_alive(0, 0, [checkpoint(run, 2)])
        outbox.ack(outbox.take(10))
        assert rows(spool, "SELECT count(*) FROM entries") == [(2,)]  # deletes wait
        admission = outbox.put_many([window(run, 2)], {segment: checkpoint(run, 3)})
        assert (admission.coalesced, admission.dropped) == (0, [])
        assert rows(spool, "SELECT id FROM entries") == [(window(run, 2).id,)]
        assert [e.id for e in outbox.take(10)] == [window(run, 2).id]
    finally:
        outbox.close()
