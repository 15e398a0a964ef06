"""Damaged crash state: a sign of life, a journal, a checkpoint or a row that cannot be trusted.

A dead tracker leaves its state in two places (the spool's ``segments`` rows
and the sign of life in its owner lock file); power loss or a stray write can
damage either. Each test damages one on purpose, the way the disk would, and
checks that the recovery takes the next best source, reports what it set
aside, and queues everything else.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import struct
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    checkpoint,
    completion,
    rows,
    sign_of_life_file,
    template,
    window,
    window_id,
)
from timeback_tracker._outbox import AlreadyCompletedError
from timeback_tracker._spool import SqliteOutbox
from timeback_tracker._spool_file import AliveRecord, close_quietly
from timeback_tracker._spool_recovery import journal_item


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    """A spool file path in a fresh directory."""
    return tmp_path / "spool.sqlite3"


@pytest.fixture
def survivor(spool: Path) -> Iterator[Callable[..., SqliteOutbox]]:
    """Opens the next tracker's outbox on the spool (with options); closed after the test."""
    opened: list[SqliteOutbox] = []

    def open_it(**options: Any) -> SqliteOutbox:
        opened.append(SqliteOutbox(spool, 100, **options))
        return opened[-1]

    yield open_it
    for outbox in opened:
        outbox.close()


def die(outbox: SqliteOutbox) -> Path:
    """As if the process were killed: its owner lock is free, the lock file stays; its path."""
    lock = outbox._owner_lock(outbox.owner)
    close_quietly(outbox._owner_fd)
    close_quietly(outbox._memory_fd)  # its sign of life stays where it is
    outbox._owner_fd = outbox._memory_fd = None
    if outbox._conn is not None:
        outbox._conn.close()
    return lock


def record(body: bytes) -> bytes:
    """A sign of life holding ``body``, with a correct header and checksum (the format
    before stamps, which is still read)."""
    return struct.pack(">4sII", b"TTA2", len(body), zlib.crc32(body)) + body


# -- the sign of life -----------------------------------------------------------------------


def _later_mono(data: bytes) -> bytes:
    """One digit of the monotonic time changed: valid JSON, but not what was written."""
    start = data.index(b'"m":') + 4
    digit = data[start]
    return data[:start] + bytes([digit + 1 if digit < ord("9") else digit - 1]) + data[start + 1 :]


DAMAGES: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda data: b"",
    "header cut short": lambda data: data[:6],
    "wrong magic": lambda data: b"TTA1" + data[4:],
    "absurd length": lambda data: data[:4] + struct.pack(">I", 1 << 31) + data[8:],
    "body cut short": lambda data: data[:-1],
    "a digit changed": _later_mono,
    "checksummed text that is not JSON": lambda data: record(b'{"segments": '),
    "checksummed JSON that is not an object": lambda data: record(b"[1, 2]"),
}


@pytest.mark.parametrize("damage", ["intact", *DAMAGES])
def test_a_damaged_sign_of_life_falls_back_to_the_last_tick(
    spool: Path, survivor: Callable[..., SqliteOutbox], damage: str
) -> None:
    """A sign of life that fails its checks (length, magic, checksum, JSON) is ignored: the
    open window is rebuilt from the spool's durable state at the last tick (5 s), never
    from damaged numbers; an intact one gives the later moment it describes (10 s)."""
    run = uuid.uuid4()
    dying = SqliteOutbox(spool, 100)
    dying.put_many([], {template(run).segment: checkpoint(run, 3, open_seconds=5)})
    seen = checkpoint(run, 3, open_seconds=10)
    dying.mark_alive(seen.mono_ms, seen.wall_ms, [seen])
    lock = die(dying)
    alive = sign_of_life_file(lock)
    if damage != "intact":
        alive.write_bytes(DAMAGES[damage](alive.read_bytes()))
        assert AliveRecord.read(alive) is None

    recovered = survivor().recover()

    assert [(e.id, e.active_ms, e.inactive_ms) for e in recovered] == [
        (window_id(run, 3), 10_000 if damage == "intact" else 5_000, 0)
    ]
    assert not lock.exists()  # recovered once: the next start does not do it again
    assert not alive.exists()


BODY_AT = 36  # where a sign of life's body starts, after its header and its stamp


def test_seconds_in_which_nothing_changed_move_only_the_stamp(
    spool: Path, survivor: Callable[..., SqliteOutbox]
) -> None:
    """While a run's state does not change, a sign of life rewrites only its 24-byte stamp
    (the body stays byte for byte), and a recovery replays up to the stamp's moment."""
    run = uuid.uuid4()
    dying = SqliteOutbox(spool, 100)
    dying.put_many([], {template(run).segment: checkpoint(run, 3, open_seconds=5)})
    seen = checkpoint(run, 3, open_seconds=10)
    dying.mark_alive(seen.mono_ms, seen.wall_ms, [seen])
    alive = sign_of_life_file(dying._owner_lock(dying.owner))
    body = alive.read_bytes()[BODY_AT:]
    assert "at" not in _read(alive)
    later = checkpoint(run, 3, open_seconds=12)
    dying.mark_alive(later.mono_ms, later.wall_ms, [later])

    assert alive.read_bytes()[BODY_AT:] == body
    assert _read(alive)["at"] == [later.mono_ms, later.wall_ms]
    die(dying)
    recovered = survivor().recover()
    assert [(e.id, e.active_ms) for e in recovered] == [(window_id(run, 3), 12_000)]


def test_a_stamp_never_vouches_for_a_body_it_was_not_written_for(
    spool: Path, survivor: Callable[..., SqliteOutbox]
) -> None:
    """A changed state rewrites the body and clears the stamp in the same write; a stamp
    put back from before (or one with a damaged byte) is ignored, never replayed over."""
    run = uuid.uuid4()
    dying = SqliteOutbox(spool, 100)
    dying.put_many([], {template(run).segment: checkpoint(run, 3, open_seconds=5)})
    for seconds in (10, 14):
        seen = checkpoint(run, 3, open_seconds=seconds)
        dying.mark_alive(seen.mono_ms, seen.wall_ms, [seen])
    alive = sign_of_life_file(dying._owner_lock(dying.owner))
    old_stamp = alive.read_bytes()[12:BODY_AT]
    closed = checkpoint(run, 4, open_seconds=1)  # window 3 closed: another state
    dying.mark_alive(closed.mono_ms, closed.wall_ms, [closed])
    assert "at" not in _read(alive)
    with alive.open("r+b") as file:
        file.seek(12)
        file.write(old_stamp)
    assert "at" not in _read(alive)
    body_crc = int.from_bytes(alive.read_bytes()[8:12], "big")
    with alive.open("r+b") as file:  # a stamp for this body: taken; one byte damaged: not
        AliveRecord.stamp(file.fileno(), body_crc, 1, 2)
        assert _read(alive)["at"] == [1, 2]
        file.seek(20)
        file.write(b"\xff")
    assert "at" not in _read(alive)

    die(dying)
    recovered = survivor().recover()
    assert [(e.id, e.active_ms) for e in recovered] == [(window_id(run, 4), 1_000)]


def _read(alive: Path) -> dict[str, Any]:
    record = AliveRecord.read(alive)
    assert record is not None
    return record


# -- the journal of events a refusing spool kept in memory -----------------------------------


def test_damaged_journal_items_are_skipped_and_the_rest_queued(
    spool: Path, survivor: Callable[..., SqliteOutbox]
) -> None:
    """A dead owner's journal with items of the wrong shape or whose payload is another
    event's: those are skipped; its good window and completion are queued for its
    destination, and the run is known to be completed."""
    run = uuid.uuid4()
    good = [journal_item(window(run, 0)), journal_item(completion(run))]
    impostor = journal_item(window(run, 1)) | {"id": window_id(run, 7)}  # payload of seq 1
    garbage = [
        "not an item",
        {"id": window_id(run, 2), "run": str(run), "kind": "time"},  # no seq, time, payload
        journal_item(window(run, 3)) | {"seq": 3},  # not a pair
        journal_item(window(run, 4)) | {"time": "soon"},
        impostor,
    ]
    outbox = survivor(sensor="https://a.example.com/s", endpoint="https://a.example.com/e")
    # The lock file of an owner killed before its first tick: known by its name only.
    lock = spool.with_name(f"{spool.name}.owner-{uuid.uuid4().hex}.lock")
    with open(lock, "wb") as file:
        journal = [*garbage[:2], *good, *garbage[2:]]
        AliveRecord.write(file.fileno(), {"dest": outbox.dest, "segments": {}, "journal": journal})

    recovered = outbox.recover()

    assert [e.id for e in recovered] == [window_id(run, 0), completion(run).id]
    assert rows(spool, "SELECT dest FROM entries") == [(outbox.dest,), (outbox.dest,)]
    with pytest.raises(AlreadyCompletedError):
        outbox.put_many([completion(run)], completes=str(run))


# -- the durable checkpoint -----------------------------------------------------------------


def test_a_checkpoint_of_the_wrong_shape_is_reported_and_the_others_recovered(
    spool: Path, survivor: Callable[..., SqliteOutbox]
) -> None:
    """Valid JSON in the wrong shape (no monotonic time) and a sign of life whose template
    is garbage: each is reported as the damaged checkpoint of its segment; the dead owner's
    other segment is recovered all the same."""
    broken, fine = uuid.uuid4(), uuid.uuid4()
    dying = SqliteOutbox(spool, 100)
    dying.put_many(
        [],
        {template(run).segment: checkpoint(run, 1) for run in (broken, fine)},
    )
    seen = checkpoint(fine, 1)
    dying.mark_alive(seen.mono_ms, seen.wall_ms, [seen])
    lock = die(dying)
    alive = AliveRecord.read(sign_of_life_file(lock))
    assert alive is not None
    alive["segments"]["stranger"] = {"t": "{not a template", "s": seen.state, "m": 1, "w": 2}
    with open(sign_of_life_file(lock), "r+b") as file:
        AliveRecord.write(file.fileno(), alive)
    conn = sqlite3.connect(spool)
    with conn:
        conn.execute(
            "UPDATE segments SET mono_ms = NULL WHERE segment = ?", (template(broken).segment,)
        )
    conn.close()
    reports: list[tuple[str, str]] = []

    recovered = survivor(on_damage=lambda what, why: reports.append((what, why))).recover()

    assert [e.id for e in recovered] == [window_id(fine, 1)]
    why = dict(reports)
    assert len(why) == len(reports) == 2
    assert why[f"the checkpoint of run segment {template(broken).segment}"].startswith(
        "damaged (TypeError: "
    )
    assert why["the checkpoint of run segment stranger"] == (
        "damaged (not a stored run template (JSONDecodeError))"
    )


# -- rows -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "reason"),
    [
        (b"{}", "damaged row: the payload is not text"),  # a BLOB, as a stray write leaves
        ("[1, 2]", "damaged row: the payload is not this event"),
        (json.dumps({"id": "urn:uuid:someone-else"}), "damaged row: the payload is not this event"),
        ('{"id": ', "damaged row: the payload is not JSON (JSONDecodeError)"),
    ],
)
def test_a_row_that_is_not_its_event_becomes_a_dead_letter(
    spool: Path, survivor: Callable[..., SqliteOutbox], stored: object, reason: str
) -> None:
    """A payload that is not text, not an object, or another event's is never sent: it is
    set aside with the reason, reported, and the rows around it go in order."""
    run = uuid.uuid4()
    reports: list[tuple[str, str]] = []
    outbox = survivor(on_damage=lambda what, why: reports.append((what, why)))
    outbox.put_many([window(run, 0), window(run, 1), window(run, 2)])
    conn = sqlite3.connect(spool)
    with conn:
        conn.execute("UPDATE entries SET payload = ? WHERE id = ?", (stored, window_id(run, 1)))
    conn.close()

    taken = outbox.take(10)

    assert [e.id for e in taken] == [window_id(run, 0), window_id(run, 2)]
    assert reports == [(window_id(run, 1), reason)]
    assert rows(spool, "SELECT id, reason FROM dead_letters") == [(window_id(run, 1), reason)]
    assert [(e.id, why) for e, why in outbox.dead_letters] == [(window_id(run, 1), reason)]


def test_an_on_damage_callback_that_raises_costs_nothing_but_a_log_line(
    spool: Path, survivor: Callable[..., SqliteOutbox], caplog: pytest.LogCaptureFixture
) -> None:
    """The app's damage callback raising must not stop the delivery thread's take(): the
    row is set aside all the same, the good rows come, and the error is logged."""
    run = uuid.uuid4()

    def broken(what: str, why: str) -> None:
        raise RuntimeError("the app's handler is broken")

    outbox = survivor(on_damage=broken)
    outbox.put_many([window(run, 0), window(run, 1)])
    conn = sqlite3.connect(spool)
    with conn:
        conn.execute("UPDATE entries SET payload = '{' WHERE id = ?", (window_id(run, 0),))
    conn.close()

    with caplog.at_level(logging.WARNING, "timeback_tracker.spool"):
        taken = outbox.take(10)

    assert [e.id for e in taken] == [window_id(run, 1)]
    assert rows(spool, "SELECT id FROM dead_letters") == [(window_id(run, 0),)]
    failed = [r for r in caplog.records if r.getMessage() == "reporting a damaged spool row failed"]
    assert len(failed) == 1
    assert failed[0].exc_info is not None
    assert "the app's handler is broken" in str(failed[0].exc_info[1])
