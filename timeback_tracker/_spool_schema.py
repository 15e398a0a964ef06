"""The spool's SQLite file: its schema, its upgrade from 0.1, opening it, and salvaging it.

One write transaction at a time (``BEGIN IMMEDIATE``), in WAL mode; durable
transactions use ``synchronous=FULL``, the others ``NORMAL`` (they survive
the process being killed, and the next durable one makes them durable too).
A corrupt file is recognised, moved aside, and what still reads is salvaged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from timeback_tracker._spool_file import refuse_symlink

log = logging.getLogger("timeback_tracker.spool")

__all__ = [
    "SCHEMA_VERSION",
    "WINDOW_NUMBERS",
    "CorruptSpoolError",
    "NewerSpoolError",
    "connect",
    "is_busy",
    "is_corrupt",
    "is_full",
    "move_aside",
    "salvage",
    "transaction",
]

SCHEMA_VERSION = 2
PAGE_SIZE = 1024
"""Bytes per page of a new spool: small pages keep the bytes written per window small."""
WAL_LIMIT = 1 << 20
"""Bytes the write-ahead log is truncated to after a checkpoint."""


_TABLES = (
    """CREATE TABLE entries (
        slot INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        dest TEXT NOT NULL,
        run_id TEXT NOT NULL,
        segment TEXT,
        kind TEXT NOT NULL CHECK (kind IN ('time', 'completion')),
        first_seq INTEGER,
        last_seq INTEGER,
        start_ms INTEGER NOT NULL DEFAULT 0,
        end_ms INTEGER NOT NULL DEFAULT 0,
        active_ms INTEGER NOT NULL DEFAULT 0,
        inactive_ms INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        event_time_ms INTEGER NOT NULL,
        born_ms INTEGER NOT NULL,
        queued_ms INTEGER NOT NULL,
        payload TEXT NOT NULL
    )""",
    "CREATE INDEX entries_dest ON entries (dest, slot)",
    "CREATE INDEX entries_segment ON entries (segment, first_seq)",
    """CREATE TABLE dead_letters (
        n INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
        dest TEXT NOT NULL,
        run_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        first_seq INTEGER,
        last_seq INTEGER,
        attempts INTEGER NOT NULL,
        event_time_ms INTEGER NOT NULL,
        queued_ms INTEGER NOT NULL,
        payload TEXT NOT NULL,
        reason TEXT NOT NULL,
        dead_ms INTEGER NOT NULL
    )""",
    # One row per run segment (start_session()) that is or was running: its
    # template (for merges and recovery) and, while it runs, the accounting
    # state at the last tick, durable, for crash recovery.
    """CREATE TABLE segments (
        segment TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        dest TEXT NOT NULL,
        owner TEXT NOT NULL,
        ended INTEGER NOT NULL DEFAULT 0,
        template TEXT NOT NULL,
        state TEXT,
        mono_ms INTEGER,
        wall_ms INTEGER,
        updated_ms INTEGER NOT NULL
    )""",
    "CREATE INDEX segments_owner ON segments (owner)",
    "CREATE TABLE completed (run_id TEXT PRIMARY KEY, completed_ms INTEGER NOT NULL)",
    # One row per tracker that wrote here (for recovery and the spool tools).
    """CREATE TABLE owners (
        owner TEXT PRIMARY KEY,
        dest TEXT NOT NULL,
        started_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    )""",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE destinations (
        dest TEXT PRIMARY KEY,
        sensor TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        last_used_ms INTEGER NOT NULL
    )""",
)
_REQUIRED_COLUMNS = {
    "entries": {"slot", "id", "dest", "run_id", "segment", "kind", "attempts", "payload"},
    "dead_letters": {"n", "id", "dest", "payload", "reason", "dead_ms"},
    "segments": {"segment", "run_id", "dest", "owner", "ended", "template", "state"},
    "completed": {"run_id"},
    "owners": {"owner", "dest"},
    "meta": {"key", "value"},
    "destinations": {"dest", "sensor", "endpoint"},
}


class CorruptSpoolError(sqlite3.DatabaseError):
    """The file is not a usable spool: it fails the integrity check or has a foreign schema."""


class NewerSpoolError(sqlite3.OperationalError):
    """The spool was written by a newer version of the library; leave it alone."""


def is_corrupt(error: BaseException) -> bool:
    """Whether ``error`` says the file is damaged (rather than busy, full or unreadable)."""
    # "file is not a database" and "database disk image is malformed" are plain
    # DatabaseErrors; OperationalError and the others mean trouble elsewhere.
    return type(error) is sqlite3.DatabaseError or isinstance(error, CorruptSpoolError)


def is_busy(error: BaseException) -> bool:
    """Whether ``error`` is another process holding the spool's write lock."""
    return isinstance(error, sqlite3.OperationalError) and "locked" in str(error)


def is_full(error: BaseException) -> bool:
    """Whether ``error`` is a write the disk refused (full, over quota or a size limit)."""
    message = str(error)
    return isinstance(error, sqlite3.OperationalError) and (
        "disk is full" in message or "disk I/O error" in message
    )


def connect(path: Path, *, create: bool, busy_seconds: float = 5.0) -> sqlite3.Connection:
    """Open a spool in WAL mode, checked, with its schema (created or upgraded).

    Raises:
        CorruptSpoolError: The file is damaged or not a spool.
        NewerSpoolError: The file was written by a newer version.
        sqlite3.OperationalError: The file cannot be opened, or is busy.
    """
    for companion in ("-wal", "-shm", "-journal"):
        refuse_symlink(Path(f"{path}{companion}"))
    conn = sqlite3.connect(
        str(path), timeout=busy_seconds, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {round(busy_seconds * 1000)}")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA fullfsync = ON")  # macOS: an fsync that reaches the disk itself
        conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")
        if create and os.path.getsize(path) == 0:
            # Small pages: a window's row and its index entries fill a few KiB,
            # not a few times 4 KiB. Only possible before anything is written.
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        _check_integrity(conn)
        _ensure_schema(conn, create=create)  # before any change to a file that may not be ours
        mode = _enable_wal(conn, busy_seconds)
        if mode != "wal":
            log.warning("spool %s: WAL mode unavailable, using journal mode %s", path, mode)
    except BaseException:
        conn.close()
        raise
    return conn


def _enable_wal(conn: sqlite3.Connection, busy_seconds: float) -> str:
    """Switch to WAL mode; returns the journal mode in force."""
    deadline = time.monotonic() + busy_seconds
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
        except sqlite3.OperationalError as exc:
            # The switch needs the file to itself and SQLite does not wait for it:
            # a process opening a fresh spool at the same moment makes it fail.
            if not is_busy(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _check_integrity(conn: sqlite3.Connection) -> None:
    problems = conn.execute("PRAGMA quick_check").fetchall()
    if problems != [("ok",)]:
        raise CorruptSpoolError(f"integrity check failed ({len(problems)} problems)")


def _ensure_schema(conn: sqlite3.Connection, *, create: bool) -> None:
    with transaction(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise NewerSpoolError(f"spool format {version} is newer than {SCHEMA_VERSION}")
        if version == 0:
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables or not create:
                raise CorruptSpoolError("not a timeback-tracker spool")
            for statement in _TABLES:
                conn.execute(statement)
        elif version == 1:
            _upgrade_from_1(conn)
        if version != SCHEMA_VERSION:  # only then: a mere look (the spool tools) writes nothing
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        for table, required in _REQUIRED_COLUMNS.items():
            found = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            if not required <= found:
                raise CorruptSpoolError(f"table {table} is missing or foreign")


def _upgrade_from_1(conn: sqlite3.Connection) -> None:
    """Move the rows of a 0.1 spool into the current tables (inside a transaction).

    Their destination is unknown (""): the first tracker that opens the spool
    adopts them. Their windows are not merged (no template), and the 0.1
    crash checkpoints become queued events when their owner is dead, as 0.1
    itself would have done (``legacy_checkpoints``).
    """
    for old in ("entries", "dead_letters", "checkpoints"):
        conn.execute(f"ALTER TABLE {old} RENAME TO v1_{old}")
    conn.execute("DROP INDEX IF EXISTS checkpoints_owner")
    for statement in _TABLES:
        conn.execute(statement)
    conn.execute(
        "INSERT INTO entries (slot, id, dest, run_id, kind, first_seq, last_seq, attempts, "
        "event_time_ms, born_ms, queued_ms, payload) SELECT slot, id, '', run_id, kind, "
        "first_seq, last_seq, attempts, event_time_ms, event_time_ms, queued_ms, payload "
        "FROM v1_entries ORDER BY slot"
    )
    conn.execute(
        "INSERT INTO dead_letters (id, dest, run_id, kind, first_seq, last_seq, attempts, "
        "event_time_ms, queued_ms, payload, reason, dead_ms) SELECT id, '', run_id, kind, "
        "first_seq, last_seq, attempts, event_time_ms, queued_ms, payload, reason, dead_ms "
        "FROM v1_dead_letters ORDER BY n"
    )
    conn.execute("ALTER TABLE v1_checkpoints RENAME TO legacy_checkpoints")
    conn.execute("DROP TABLE v1_entries")
    conn.execute("DROP TABLE v1_dead_letters")


@contextlib.contextmanager
def transaction(
    conn: sqlite3.Connection, *, durable: bool = True, wait: bool = True
) -> Iterator[None]:
    """One write transaction: all or nothing; with ``durable``, on disk once the block exits.

    A transaction that is not durable survives the process being killed (the
    page cache keeps it) but maybe not power loss; the next durable one
    makes it durable too. The connection never stays inside a transaction,
    even when the block is interrupted (Ctrl-C). Without ``wait``, it fails
    at once (busy) instead of waiting for another process's write lock: for
    bookkeeping that may as well be written next time.
    """
    if conn.in_transaction:  # left open by an interruption at the worst moment
        conn.execute("ROLLBACK")
    conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
    if wait:
        conn.execute("BEGIN IMMEDIATE")
    else:
        patience = conn.execute("PRAGMA busy_timeout").fetchone()[0]
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            conn.execute("BEGIN IMMEDIATE")
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(patience)}")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        raise


def move_aside(path: Path) -> Path:
    """Rename a corrupt spool (and its WAL) to ``<name>.corrupt-<UTC time>``."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    number = 1
    while target.exists():
        number += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{number}")
    os.replace(path, target)
    # Kept beside it under the matching name, so the two open together; a stale
    # WAL left next to a fresh file would be replayed into it.
    for suffix in ("-wal", "-journal"):
        companion = Path(f"{path}{suffix}")
        if companion.exists():
            os.replace(companion, Path(f"{target}{suffix}"))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"{path}-shm")
    return target


_SALVAGE_COLUMNS = ("id", "dest", "run_id", "kind", "event_time_ms", "payload")
WINDOW_NUMBERS = ("first_seq", "last_seq", "start_ms", "end_ms", "active_ms", "inactive_ms")
"""The columns that, with its segment's template, make a window's payload."""


def salvage(path: Path) -> Iterator[dict[str, Any]]:
    """The queued rows that can still be read from a damaged spool, oldest first.

    Reads row by row, so a damaged page costs only the rows on it. Each row
    is a dict of ``id, dest, run_id, kind, event_time_ms, payload`` (``dest``
    is ``""`` in a 0.1 file) whose payload parses as a JSON object; or, for a
    window whose row keeps no payload, ``payload`` ``""`` with its
    :data:`WINDOW_NUMBERS` and ``template``, its segment's template (JSON
    text), to render it from.
    """
    # On a copy: reading a file with a WAL needs write access, and closing it
    # would checkpoint into the damaged file.
    with tempfile.TemporaryDirectory(prefix="timeback-salvage-") as scratch:
        copy = Path(scratch) / "spool"
        try:
            shutil.copyfile(path, copy)
            if Path(f"{path}-wal").exists():
                shutil.copyfile(f"{path}-wal", f"{copy}-wal")
            conn = sqlite3.connect(copy, check_same_thread=False)
        except (OSError, sqlite3.Error):
            return
        try:
            templates = _readable_templates(conn)
            for table in ("entries", "v1_entries"):
                yield from _salvage_table(conn, table, templates)
        finally:
            conn.close()


def _readable_templates(conn: sqlite3.Connection) -> dict[str, str]:
    """The segments' templates that can still be read (segment -> JSON text)."""
    found: dict[str, str] = {}
    with contextlib.suppress(sqlite3.Error):
        for segment, template in conn.execute("SELECT segment, template FROM segments"):
            found[str(segment)] = str(template)
    return found


def _salvage_table(
    conn: sqlite3.Connection, table: str, templates: dict[str, str]
) -> Iterator[dict[str, Any]]:
    try:
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    except sqlite3.Error:
        return
    if not {"slot", "id", "run_id", "kind", "event_time_ms", "payload"} <= columns:
        return
    names = (*_SALVAGE_COLUMNS, "segment", *WINDOW_NUMBERS)
    wanted = ", ".join(c if c in columns else "NULL" for c in names)
    for slot in sorted(_readable_slots(conn, table)):
        try:
            row = conn.execute(
                f"SELECT {wanted} FROM {table} WHERE slot = ?",  # noqa: S608 - names are ours
                (slot,),
            ).fetchone()
        except sqlite3.Error:
            continue  # on a damaged page
        if row is None:
            continue
        found = dict(zip(names, row, strict=True))
        found["dest"] = found["dest"] or ""
        if found["payload"] == "" and found["kind"] == "time":
            template = templates.get(str(found["segment"]))
            if template is not None:
                yield {**found, "template": template}
            continue
        try:
            if isinstance(json.loads(found["payload"]), dict):
                yield found
        except (TypeError, ValueError):
            continue


def _readable_slots(conn: sqlite3.Connection, table: str) -> set[int]:
    """Row numbers of a damaged table, found every way that still works.

    A scan of the table stops at its first damaged page; each index is a
    separate tree that may still list the rows after it; as a last resort,
    numbers are tried one by one.
    """
    slots: set[int] = set()
    queries = [f"SELECT slot FROM {table}"]  # noqa: S608 - names are ours
    try:
        indexes = [row[1] for row in conn.execute(f"PRAGMA index_list({table})")]
    except sqlite3.Error:
        indexes = []
    queries += [f"SELECT slot FROM {table} INDEXED BY {name}" for name in indexes]  # noqa: S608
    for query in queries:
        try:
            for (slot,) in conn.execute(query):
                slots.add(slot)
        except sqlite3.Error:
            continue  # as far as it went
    if not slots:
        slots = set(_probe_slots(conn, table))
    return slots


def _probe_slots(conn: sqlite3.Connection, table: str) -> Iterator[int]:
    """Row numbers tried one by one, until many in a row are missing."""
    missing = 0
    slot = 0
    while missing < 1000 and slot < 1_000_000:
        slot += 1
        try:
            found = conn.execute(f"SELECT 1 FROM {table} WHERE slot = ?", (slot,)).fetchone()  # noqa: S608
        except sqlite3.Error:
            found = None
        if found is None:
            missing += 1
            continue
        missing = 0
        yield slot
