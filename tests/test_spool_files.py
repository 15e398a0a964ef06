"""The spool's files under attack: foreign tables, name clashes, WAL-only rows, planted things.

Each test puts something real on disk where the spool looks (a SQLite file of
our version with someone else's table, an earlier corrupt copy, a directory
where a lock goes, a FIFO where the spool goes) or takes something away (the
owner lock file, with the spool), and checks what is kept, moved or refused.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sqlite3
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.support import SENSOR, checkpoint, rows, template, window, window_id
from timeback_tracker._locations import resolve_spool_path
from timeback_tracker._outbox import MemoryOutbox
from timeback_tracker._spool import SqliteOutbox, open_outbox
from timeback_tracker._spool_admin import SpoolFile, lock_held
from timeback_tracker._spool_schema import (
    SCHEMA_VERSION,
    CorruptSpoolError,
    move_aside,
    salvage,
    transaction,
)


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    """A spool file path in a fresh directory."""
    return tmp_path / "spool.sqlite3"


def test_a_file_of_our_version_with_a_foreign_table_is_moved_aside(
    spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file that claims the current format but whose ``entries`` lacks our columns is
    not ours: the tools refuse it naming the table, a tracker moves it aside untouched and
    starts a fresh spool."""
    conn = sqlite3.connect(spool)
    conn.execute("CREATE TABLE entries (id TEXT, payload TEXT)")
    conn.execute("INSERT INTO entries VALUES ('a', '{}')")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.commit()
    conn.close()
    original = spool.read_bytes()

    with pytest.raises(CorruptSpoolError, match=r"^table entries is missing or foreign$"):
        SpoolFile(spool)
    with caplog.at_level(logging.WARNING, "timeback_tracker.spool"):
        outbox = open_outbox(spool, 10, sensor=SENSOR, endpoint="")
    try:
        assert isinstance(outbox, SqliteOutbox)
        (aside,) = [p for p in spool.parent.iterdir() if ".corrupt-" in p.name]
        assert aside.read_bytes() == original
        assert "CorruptSpoolError: table entries is missing or foreign" in caplog.text
        assert len(outbox) == 0
    finally:
        outbox.close()


def test_moving_aside_never_overwrites_an_earlier_corrupt_copy(spool: Path) -> None:
    """Corrupt copies from this second (and the next few) exist already: the new one gets
    a numbered name, the old ones keep their bytes, and the companions follow it (the WAL
    and rollback journal under the matching name, the shared-memory index deleted)."""
    now = datetime.now(timezone.utc)
    earlier = []
    for moment in (now + timedelta(seconds=n) for n in range(10)):  # a slow machine too
        copy = spool.with_name(f"{spool.name}.corrupt-{moment:%Y%m%dT%H%M%SZ}")
        copy.write_bytes(b"an earlier corrupt spool")
        earlier.append(copy)
    for suffix, content in (("", b"main"), ("-wal", b"wal"), ("-journal", b"journal")):
        Path(f"{spool}{suffix}").write_bytes(content)
    Path(f"{spool}-shm").write_bytes(b"shm")

    target = move_aside(spool)

    assert re.fullmatch(rf"{re.escape(spool.name)}\.corrupt-\d{{8}}T\d{{6}}Z-2", target.name)
    assert [p.read_bytes() for p in earlier] == [b"an earlier corrupt spool"] * 10
    assert target.read_bytes() == b"main"
    assert Path(f"{target}-wal").read_bytes() == b"wal"
    assert Path(f"{target}-journal").read_bytes() == b"journal"
    assert not [p for p in spool.parent.iterdir() if p.name.startswith(f"{spool.name}-")]
    assert not spool.exists()


def test_salvage_reads_the_rows_that_live_only_in_the_wal(spool: Path, tmp_path: Path) -> None:
    """A spool killed before a checkpoint has its recent rows in its WAL only: salvaging
    its copy reads them (a payload that is not a JSON object excepted); without the WAL
    they are not there to read."""
    run = uuid.uuid4()
    outbox = SqliteOutbox(spool, 100)
    try:
        outbox.put_many([window(run, n) for n in range(3)])
        assert outbox._conn is not None
        with transaction(outbox._conn):
            outbox._conn.execute(
                "UPDATE entries SET payload = '[1]' WHERE id = ?", (window_id(run, 1),)
            )
        with_wal, without = tmp_path / "with-wal", tmp_path / "without"
        for copy in (with_wal, without):
            shutil.copyfile(spool, copy)
        shutil.copyfile(f"{spool}-wal", f"{with_wal}-wal")
    finally:
        outbox.close()

    assert [row["id"] for row in salvage(with_wal)] == [window_id(run, 0), window_id(run, 2)]
    assert list(salvage(without)) == []


def test_a_transaction_left_open_by_an_interruption_is_rolled_back_first(spool: Path) -> None:
    """Ctrl-C between BEGIN and the block: the next transaction does not fail "within a
    transaction", and the half-done write is not committed with it."""
    SqliteOutbox(spool, 10).close()
    conn = sqlite3.connect(spool, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO meta (key, value) VALUES ('half-done', 'x')")
        with transaction(conn):
            conn.execute("INSERT INTO meta (key, value) VALUES ('whole', 'y')")
        assert not conn.in_transaction
    finally:
        conn.close()
    assert rows(spool, "SELECT key FROM meta WHERE key IN ('half-done', 'whole')") == [("whole",)]


def test_a_directory_where_the_drain_lock_goes_holds_sending_back_until_it_is_gone(
    spool: Path,
) -> None:
    """Something planted where the drain lock goes: take() gives nothing and raises
    nothing (no process may send without the lock); once it is gone, sending starts."""
    run = uuid.uuid4()
    outbox = SqliteOutbox(spool, 10)
    try:
        outbox.put_many([window(run, 0)])
        blocker = spool.with_name(f"{spool.name}.drain-{outbox.dest}.lock")
        blocker.mkdir()
        assert outbox.take(10) == []
        assert outbox.take(10) == []
        blocker.rmdir()
        assert [e.id for e in outbox.take(10)] == [window_id(run, 0)]
    finally:
        outbox.close()


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (42, "spool_path: must be a file path, DEFAULT_SPOOL or None"),
        ("", "spool_path: must be a file path, DEFAULT_SPOOL or None"),
    ],
)
def test_open_outbox_turns_an_unusable_location_into_memory(
    where: object, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    """open_outbox never raises: a location that is no path gives memory and a warning that
    names the field and the rule (resolve_spool_path itself raises with that message)."""
    with pytest.raises((TypeError, ValueError), match=f"^{re.escape(message)}$"):
        resolve_spool_path(where, SENSOR)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, "timeback_tracker.spool"):
        outbox = open_outbox(where, 10, sensor=SENSOR, endpoint="")  # type: ignore[arg-type]
    assert isinstance(outbox, MemoryOutbox)
    assert f"no usable spool location ({message}): keeping events in memory only" in caplog.text


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_where_the_spool_goes_is_refused_without_blocking(
    spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A FIFO planted at the spool path would block an open() for ever: it is refused as
    not a regular file, and the tracker keeps its events in memory."""
    os.mkfifo(spool)
    with caplog.at_level(logging.WARNING, "timeback_tracker.spool"):
        outbox = open_outbox(spool, 10, sensor=SENSOR, endpoint="")
    assert isinstance(outbox, MemoryOutbox)
    assert f"IsADirectoryError: not a regular file: {spool}" in caplog.text


def test_an_owner_lock_deleted_with_the_spool_is_taken_again(spool: Path) -> None:
    """Someone empties the spool's directory while the app runs: the spool is recreated,
    and so is the app's owner lock, held, so that another tracker on the spool does not
    take the running app for dead and send its open window a second time."""
    run = uuid.uuid4()
    segment = template(run).segment
    running = SqliteOutbox(spool, 100)
    other: SqliteOutbox | None = None
    try:
        running.put_many([], {segment: checkpoint(run, 1)})
        lock = running._owner_lock(running.owner)
        for path in list(spool.parent.iterdir()):
            path.unlink()

        running.put_many([window(run, 1)], {segment: checkpoint(run, 2)})

        assert lock_held(lock) is True
        other = SqliteOutbox(spool, 100)
        assert other.recover() == []
        assert rows(spool, "SELECT id FROM entries") == [(window_id(run, 1),)]
    finally:
        running.close()
        if other is not None:
            other.close()
