"""Self-healing: a spool that is busy, full, deleted or replaced never costs the app its events.

When a write fails, :class:`SpoolHealing` keeps new events (and the checkpoint
changes and completions that came with them) in memory and tries the spool
again soon: after a second when another process held its lock, after 5 s to a
minute when it failed (disk full, read-only), and at every tick and at close.
A full disk gets its WAL truncated. A spool file deleted or replaced
underneath is noticed by its identity (device and inode) and recreated with
every row the old file still held.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from typing import Any

from timeback_tracker._outbox import Checkpoint, Entry, MemoryOutbox, admit
from timeback_tracker._spool_file import close_quietly, open_lock_file, prepare_directory, try_lock
from timeback_tracker._spool_rows import SpoolRows, describe, now_ms
from timeback_tracker._spool_schema import is_busy, transaction

log = logging.getLogger("timeback_tracker.spool")

__all__ = ["RETRY_BUSY", "RETRY_FAILING", "SpoolHealing"]

RETRY_BUSY = 1.0
"""Seconds before a busy spool is tried again."""

RETRY_FAILING = (5.0, 60.0)
"""First and longest pause (seconds) before a failing spool (disk full) is tried again."""


class SpoolHealing(SpoolRows):
    """Failing over to memory and back, recreating a vanished file (see the module docstring)."""

    _overflow: MemoryOutbox | None
    _pending: dict[str, Checkpoint]
    _completed_here: set[str]
    _retry_at: float
    _failures: int
    _identity: tuple[int, int] | None
    _owner_fd: int | None

    @property
    def dead_letters(self) -> list[tuple[Entry, str]]:
        """The dead letters of every destination, oldest first, with their reasons."""
        with self._lock:
            rows = []
            if self._conn is not None and not self._closed:
                rows = self._conn.execute(
                    "SELECT id, run_id, kind, first_seq, last_seq, attempts, event_time_ms, "
                    "payload, reason FROM dead_letters ORDER BY n"
                ).fetchall()
            memory = list(self._overflow.dead_letters) if self._overflow is not None else []
        found = [
            (
                Entry(
                    r[0],
                    r[1],
                    "completion" if r[2] == "completion" else "time",
                    r[6],
                    r[7],
                    r[3],
                    r[4],
                    attempts=r[5],
                ),
                r[8],
            )
            for r in rows
        ]
        return found + memory

    def _open(self) -> None:
        raise NotImplementedError  # SqliteOutbox opens the file

    def _usable(self, *, force: bool) -> bool:
        """Whether writes may go to the spool now (retrying it, when due, if it failed)."""
        if self._overflow is None and self._conn is not None:
            return True
        return self._restore(force=force)

    def _degrade(self, error: BaseException) -> None:
        """After a failed write: keep new events in memory, try the spool again soon."""
        busy = is_busy(error)
        self._forget_rolled_back()
        self._failures += 1
        delay = _retry_delay(error, self._failures)
        self._retry_at = time.monotonic() + delay
        if self._overflow is None:
            log.warning(
                "spool %s: a write failed (%s); keeping new events in memory and trying the "
                "spool again in %g s",
                self._path,
                describe(error),
                delay,
            )
        self._memory()
        if not busy:
            self._check_identity_quietly()
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    # A full disk: give back what the WAL holds beyond the database.
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _forget_rolled_back(self) -> None:
        """After a failed transaction: the segment rows it wrote were rolled back, so the
        sign of life must carry their templates again until a write succeeds (and an index
        it created is gone)."""
        self._known_segments.clear()
        self._rendering.clear()
        self._mergeable_indexed = False

    def _check_identity_quietly(self) -> None:
        try:
            self._check_identity()
        except (sqlite3.Error, OSError) as exc:
            log.debug("spool %s: cannot recreate it yet: %s", self._path, describe(exc))

    def _memory(self) -> MemoryOutbox:
        if self._overflow is None:
            self._overflow = MemoryOutbox(self._max)
        return self._overflow

    def _restore(self, *, force: bool = True) -> bool:
        """Write what waits in memory to the spool; True when it took everything."""
        if not force and time.monotonic() < self._retry_at:
            return False
        try:
            if self._conn is None:
                self._open()
            overflow = self._overflow
            held, in_flight = overflow.snapshot() if overflow is not None else ([], 0)
            if in_flight and not force:
                return False  # the delivery thread has some: try again later
            conn = self._conn_()
            with transaction(conn):
                for run_id in self._completed_here:
                    conn.execute(
                        "INSERT OR IGNORE INTO completed (run_id, completed_ms) VALUES (?, ?)",
                        (run_id, now_ms()),
                    )
                for entry in held:
                    if not self.holds(entry.id):
                        admit(self, entry, self._max)
                self._write_checkpoints(self._pending)
                for entry, reason in overflow.dead_letters if overflow is not None else ():
                    self.insert(entry)
                    self._bury(entry.id, reason, entry.payload)
        except (sqlite3.Error, OSError) as exc:
            self._forget_rolled_back()
            self._failures += 1
            first, longest = RETRY_FAILING
            delay = (
                RETRY_BUSY if is_busy(exc) else min(longest, first * 2 ** min(self._failures, 6))
            )
            self._retry_at = time.monotonic() + delay
            log.debug("spool %s: still unusable (%s)", self._path, describe(exc))
            return False
        for segment, checkpoint in self._pending.items():
            if checkpoint.state is not None:
                self._written_seq[segment] = self._open_seq(checkpoint)
        self._overflow = None
        self._pending = {}
        self._completed_here = set()
        self._failures = 0
        self._in_flight.difference_update(entry.id for entry in held)
        self._recount()
        if held:
            log.warning(
                "spool %s: writable again: moved %d events from memory to it", self._path, len(held)
            )
        return True

    def _check_identity(self) -> None:
        """Notice the spool file deleted or replaced underneath; recreate it with what was held."""
        if self._conn is None or self._identity is None:
            return
        try:
            stat = os.stat(self._path)
            same = (stat.st_dev, stat.st_ino) == self._identity
        except OSError:
            same = False
        if same:
            return
        log.warning(
            "spool %s was deleted or replaced by something else: recreating it with the "
            "events held",
            self._path,
        )
        old = self._conn
        rows = self._readable_rows(old)
        with contextlib.suppress(sqlite3.Error):
            old.close()
        self._conn = None
        self._templates.clear()
        self._known_segments.clear()
        self._rendering.clear()
        prepare_directory(self._path.parent)
        if self._owner_fd is not None and not self._owner_lock(self.owner).exists():
            close_quietly(self._owner_fd)
            # Never keep a closed descriptor: its number goes to the next file opened here,
            # which the sign of life would overwrite, if taking the lock again fails.
            self._owner_fd = None
            self._owner_fd = open_lock_file(self._owner_lock(self.owner))
            try_lock(self._owner_fd)
        self._open()
        conn = self._conn_()
        with transaction(conn):
            for table, values in rows.items():
                for row in values:
                    marks = ", ".join("?" * len(row))
                    conn.execute(f"INSERT OR IGNORE INTO {table} VALUES ({marks})", row)  # noqa: S608
        self._recount()

    @staticmethod
    def _readable_rows(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
        """Every row the (deleted) file still holds, by table."""
        rows: dict[str, list[tuple[Any, ...]]] = {}
        for table in ("segments", "entries", "dead_letters", "completed"):
            with contextlib.suppress(sqlite3.Error):
                rows[table] = conn.execute(f"SELECT * FROM {table}").fetchall()  # noqa: S608
        return rows

    def _tidy(self) -> None:
        """At close: drop this tracker's bookkeeping that nothing needs any more."""
        with contextlib.suppress(sqlite3.Error, OSError):
            with transaction(self._conn_(), durable=False):
                self._forget_delivered()
                self._conn_().execute(
                    "DELETE FROM segments WHERE owner = ? AND ended = 1 AND NOT EXISTS "
                    "(SELECT 1 FROM entries WHERE entries.segment = segments.segment)",
                    (self.owner,),
                )
                open_segments = (
                    self._conn_()
                    .execute("SELECT count(*) FROM segments WHERE owner = ?", (self.owner,))
                    .fetchone()[0]
                )
                if not open_segments:
                    self._conn_().execute("DELETE FROM owners WHERE owner = ?", (self.owner,))
            self._shrink_wal()


def _retry_delay(error: BaseException, failures: int) -> float:
    """Seconds before the spool is tried again after ``failures`` failures in a row."""
    if is_busy(error):
        return RETRY_BUSY
    first, longest = RETRY_FAILING
    return float(min(longest, first * 2 ** min(failures - 1, 6)))
