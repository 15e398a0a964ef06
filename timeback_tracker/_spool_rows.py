"""The rows of a spool: how its entries, dead letters and run segments are read and written.

:class:`SpoolRows` holds what :class:`~timeback_tracker._spool.SqliteOutbox`
does inside a transaction, with its lock held: the
:class:`~timeback_tracker._outbox.Store` methods that the coalescing rule
(:func:`~timeback_tracker._outbox.admit`) works with, the durable write of a
tick, taking rows to send (setting damaged ones aside), and the bookkeeping of
counts. It is a base class, not used alone: its state is set up by
``SqliteOutbox.__init__``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from timeback_tracker._accounting import RunAccounting
from timeback_tracker._events import RunTemplate
from timeback_tracker._outbox import Admission, AlreadyCompletedError, Checkpoint, Entry, admit
from timeback_tracker._spool_entries import (
    ENTRY_COLUMNS,
    payload_damage,
    read_template,
    row_entry,
)
from timeback_tracker._spool_schema import transaction

log = logging.getLogger("timeback_tracker.spool")

__all__ = [
    "Damage",
    "Drops",
    "SpoolRows",
    "describe",
    "has_table",
    "now_ms",
]


WAL_TRUNCATE_BYTES = 1 << 20
"""A WAL larger than this is truncated once the queue is empty (SQLite's own
checkpoints keep it near this size otherwise)."""

Damage = Callable[[str, str], None]
"""Told about a damaged row set aside: (event id or segment, reason)."""

Drops = Callable[[tuple[str, ...]], None]
"""Told about the events dropped to make room in a full spool outside a put (their ids)."""


def now_ms() -> int:
    """Wall time in epoch milliseconds, for the spool's bookkeeping columns."""
    return time.time_ns() // 1_000_000


def describe(error: BaseException) -> str:
    """An error as ``Type: message``, for logs (SQLite's messages carry no secrets)."""
    return f"{type(error).__name__}: {error}"


class SpoolRows:
    """Reading and writing a spool's rows (see the module docstring); the caller holds the lock."""

    _conn: sqlite3.Connection | None
    _path: Path
    _max: int
    dest: str
    owner: str
    _count: int
    _mine: int
    _in_flight: set[str]
    _delivered: set[str]
    _templates: dict[str, RunTemplate | None]
    _known_segments: set[str]
    _rendering: dict[str, RunTemplate]
    _written_seq: dict[str, int]
    _ended: set[str]
    _on_damage: Damage | None
    _on_drop: Drops | None
    _take_failing: bool
    _damaged: dict[str, str]  # damaged rows not yet set aside -> why
    _closed: bool
    _lock: threading.RLock
    _recovery_at: float | None
    _mergeable_indexed: bool
    _owed_runs: frozenset[str] | None

    def _owner_lock(self, owner: str) -> Path:
        """The lock file of owner ``owner`` (its sign of life)."""
        return self._path.with_name(f"{self._path.name}.owner-{owner}.lock")

    def count(self) -> int:
        """Entries held in the spool (every destination's), as counted at the last look."""
        return self._count

    def newest_of(self, entry: Entry) -> Entry | None:
        """The newest held window of ``entry``'s run segment (by the segment index)."""
        if entry.template is None:
            return None
        row = (
            self._conn_()
            .execute(
                f"SELECT {ENTRY_COLUMNS} FROM entries WHERE segment = ? "  # noqa: S608
                "ORDER BY first_seq DESC LIMIT 1",
                (entry.template.segment,),
            )
            .fetchone()
        )
        return None if row is None else self._row_entry(row)

    def adjacent_windows(self) -> Iterator[tuple[Entry, Entry]]:
        """Consecutive windows of one segment, never attempted and not in flight, oldest first."""
        self._index_mergeable(wanted=True)
        rows = self._conn_().execute(
            f"SELECT {_prefixed('a')}, {_prefixed('b')} FROM entries a JOIN entries b "  # noqa: S608
            "ON b.segment = a.segment AND b.first_seq = a.last_seq + 1 "
            "WHERE a.kind = 'time' AND b.kind = 'time' AND a.attempts = 0 AND b.attempts = 0 "
            "AND b.start_ms = a.end_ms ORDER BY a.slot"
        )
        width = len(ENTRY_COLUMNS.split(","))
        for row in rows:
            first, second = self._row_entry(row[:width]), self._row_entry(row[width:])
            if first.id not in self._in_flight and second.id not in self._in_flight:
                yield first, second

    def _index_mergeable(self, *, wanted: bool) -> None:
        """Create (or drop) an index of the windows a full spool may merge (inside a transaction).

        Only a full spool looks for mergeable pairs: with the index, it reads the
        never-attempted windows only, not every row (a put stays under a
        millisecond at 10,000 rows when nothing can merge). Kept only while it
        is needed: maintaining it costs every window two page writes.
        """
        if wanted == self._mergeable_indexed:
            return
        if wanted:
            self._conn_().execute(
                "CREATE INDEX IF NOT EXISTS entries_mergeable ON entries (slot) "
                "WHERE kind = 'time' AND attempts = 0"
            )
        else:
            self._conn_().execute("DROP INDEX IF EXISTS entries_mergeable")
        self._mergeable_indexed = wanted

    def oldest_window(self) -> Entry | None:
        """The oldest time window not in flight."""
        for row in self._conn_().execute(
            f"SELECT {ENTRY_COLUMNS} FROM entries WHERE kind = 'time' ORDER BY slot"  # noqa: S608
        ):
            if row[1] not in self._in_flight:
                return self._row_entry(row)
        return None

    def holds(self, entry_id: str) -> bool:
        """Whether an entry of that id is held."""
        found = self._conn_().execute("SELECT 1 FROM entries WHERE id = ?", (entry_id,))
        return found.fetchone() is not None

    def in_flight(self, entry: Entry) -> bool:
        """Whether ``entry`` is taken and not yet settled."""
        return entry.id in self._in_flight

    def insert(self, entry: Entry, dest: str | None = None) -> None:
        """Add ``entry`` at the tail (for ``dest``, this tracker's by default)."""
        template = entry.template
        if template is not None and template.segment not in self._known_segments:
            self._conn_().execute(
                "INSERT OR IGNORE INTO segments (segment, run_id, dest, owner, template, "
                "updated_ms) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    template.segment,
                    template.run_id,
                    dest or self.dest,
                    self.owner,
                    template.to_json(),
                    now_ms(),
                ),
            )
            self._known_segments.add(template.segment)
        self._conn_().execute(
            "INSERT INTO entries (id, dest, run_id, segment, kind, first_seq, last_seq, start_ms, "
            "end_ms, active_ms, inactive_ms, attempts, event_time_ms, born_ms, queued_ms, payload) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (entry.id, dest or self.dest, *self._values(entry), now_ms(), self._stored(entry)),
        )
        self._count += 1
        self._mine += (dest or self.dest) == self.dest

    def replace(self, old: Entry, new: Entry) -> None:
        """Put ``new`` in the place of ``old`` (its slot: its place in the queue)."""
        self._conn_().execute(
            "UPDATE entries SET id = ?, run_id = ?, segment = ?, kind = ?, first_seq = ?, "
            "last_seq = ?, start_ms = ?, end_ms = ?, active_ms = ?, inactive_ms = ?, "
            "attempts = ?, event_time_ms = ?, born_ms = ?, payload = ? WHERE id = ?",
            (new.id, *self._values(new), self._stored(new), old.id),
        )

    def _stored(self, entry: Entry) -> str:
        """What a row keeps of ``entry``'s wire JSON: nothing for a window whose segment's
        row holds its template.

        The template (kept while any row needs it) and the row's numbers rebuild
        the same text byte for byte (:func:`row_entry`), and a row without its
        960 bytes fits a leaf page beside others instead of spilling into an
        overflow page of its own: a tick's commit writes a quarter fewer pages
        (issue 12). A segment id is random; one already taken by another
        segment's row (never seen, but cheap to rule out) keeps its payloads.
        """
        template = entry.template
        if entry.kind != "time" or template is None:
            return entry.payload
        if self._rendering.get(template.segment) is not template:
            row = (
                self._conn_()
                .execute("SELECT template FROM segments WHERE segment = ?", (template.segment,))
                .fetchone()
            )
            if row is None or row[0] != template.to_json():
                return entry.payload
            self._rendering[template.segment] = template
        return ""

    def remove(self, entry: Entry) -> None:
        """Remove ``entry``."""
        self._conn_().execute("DELETE FROM entries WHERE id = ?", (entry.id,))
        self._count -= 1
        self._mine = max(0, self._mine - 1)  # an estimate (another destination's?) until recounted

    def _conn_(self) -> sqlite3.Connection:
        assert self._conn is not None
        return self._conn

    @staticmethod
    def _values(entry: Entry) -> tuple[Any, ...]:
        return (
            entry.run_id,
            entry.template.segment if entry.template is not None else None,
            entry.kind,
            entry.first_seq,
            entry.last_seq,
            entry.start_ms,
            entry.end_ms,
            entry.active_ms,
            entry.inactive_ms,
            entry.attempts,
            entry.event_time_ms,
            entry.born_ms,
        )

    def _row_entry(self, row: Sequence[Any]) -> Entry:
        """The entry of a row of :data:`ENTRY_COLUMNS` (payload unchecked), mergeable."""
        return row_entry(row, self._template)

    def _template(self, segment: str | None) -> RunTemplate | None:
        if segment is None:
            return None
        if segment not in self._templates:
            self._templates[segment] = read_template(self._conn_(), segment)
        return self._templates[segment]

    def _write_checkpoints(self, changes: Mapping[str, Checkpoint]) -> None:
        """Write each changed segment's state; an ended segment keeps its row, without a
        state, for as long as its tracker lives: a sign of life older than the end must
        never bring it back (the row goes at close, or with the owner's recovery)."""
        conn = self._conn_()
        now = now_ms()
        for segment, checkpoint in changes.items():
            template = checkpoint.template
            ended = checkpoint.state is None
            conn.execute(
                "INSERT INTO segments (segment, run_id, dest, owner, ended, template, state, "
                "mono_ms, wall_ms, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (segment) DO UPDATE SET ended = excluded.ended, "
                "state = excluded.state, mono_ms = excluded.mono_ms, "
                "wall_ms = excluded.wall_ms, updated_ms = excluded.updated_ms",
                (
                    segment,
                    template.run_id,
                    self.dest,
                    self.owner,
                    int(ended),
                    template.to_json(),
                    None if ended else json.dumps(checkpoint.state, separators=(",", ":")),
                    checkpoint.mono_ms,
                    checkpoint.wall_ms,
                    now,
                ),
            )
            # Apart, and only when it changes: an UPDATE naming the column rewrites
            # its index entry (a page written each tick) even to the same value.
            conn.execute(
                "UPDATE segments SET owner = ? WHERE segment = ? AND owner != ?",
                (self.owner, segment, self.owner),
            )
            self._known_segments.add(segment)

    def _bury(self, entry_id: str, reason: str, payload: str = "") -> None:
        """Move a queued row to the dead letters (inside a transaction), with ``payload``
        if the row keeps none: a dead letter keeps its wire JSON, not a template's key."""
        conn = self._conn_()
        conn.execute(
            "INSERT INTO dead_letters (id, dest, run_id, kind, first_seq, last_seq, attempts, "
            "event_time_ms, queued_ms, payload, reason, dead_ms) "
            "SELECT id, dest, run_id, kind, first_seq, last_seq, attempts, event_time_ms, "
            "queued_ms, CASE payload WHEN '' THEN ? ELSE payload END, ?, ? FROM entries "
            "WHERE id = ?",
            (payload, reason, now_ms(), entry_id),
        )
        if conn.execute("DELETE FROM entries WHERE id = ?", (entry_id,)).rowcount:
            self._count -= 1
        # Dead letters are kept for inspection, not forever: the newest max_queue stay.
        excess = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0] - self._max
        if excess > 0:
            conn.execute(
                "DELETE FROM dead_letters WHERE n IN (SELECT n FROM dead_letters ORDER BY n "
                "LIMIT ?)",
                (excess,),
            )

    def _forget_delivered(self) -> set[str]:
        """Delete the rows acknowledged so far (inside a transaction); returns their ids,
        to be dropped from ``_delivered`` once the transaction is committed."""
        done = set(self._delivered)
        if done:
            self._conn_().executemany(
                "DELETE FROM entries WHERE id = ?", [(entry_id,) for entry_id in done]
            )
        return done

    def _recount(self) -> None:
        self._count = self._count_rows()
        self._mine = max(0, self._count_mine() - len(self._delivered))

    def _count_rows(self) -> int:
        return int(self._conn_().execute("SELECT count(*) FROM entries").fetchone()[0])

    def _count_mine(self) -> int:
        found = self._conn_().execute("SELECT count(*) FROM entries WHERE dest = ?", (self.dest,))
        return int(found.fetchone()[0])

    def _report_damage(self, what: str, reason: str) -> None:
        log.warning("spool %s: set aside %s: %s", self._path, what, reason)
        if self._on_damage is not None:
            try:
                self._on_damage(what, reason)
            except Exception:
                log.exception("reporting a damaged spool row failed")

    def _held_back(self, entry: Entry) -> bool:
        """Whether ``entry`` must wait: a completion of a run that a recovery which failed
        still owes windows (they go first, or the run's last window follows its completion)."""
        if entry.kind != "completion" or self._recovery_at is None:
            return False
        return self._owed_runs is None or entry.run_id in self._owed_runs

    def _takeable(self) -> tuple[str, list[str]]:
        """The rows a take may choose from, as a WHERE clause and its parameters: this
        destination's, held-back completions left out (so that they never fill its LIMIT)."""
        if self._recovery_at is None:
            return "dest = ?", [self.dest]
        if self._owed_runs is None:
            return "dest = ? AND kind != 'completion'", [self.dest]
        owed = sorted(self._owed_runs)
        marks = ", ".join("?" * len(owed))
        return (
            f"dest = ? AND NOT (kind = 'completion' AND run_id IN ({marks}))",
            [self.dest, *owed],
        )

    def _take_from_disk(self, limit: int) -> list[Entry] | None:
        """The oldest rows of this destination not in flight (damaged ones and held-back
        completions left), now in flight, their attempts counted on disk; None when the
        spool cannot be read."""
        if self._conn is None or self._closed:
            return None
        skip = len(self._in_flight) + len(self._delivered) + len(self._damaged)
        where, params = self._takeable()
        try:
            rows = self._conn.execute(
                f"SELECT {ENTRY_COLUMNS} FROM entries WHERE {where} "  # noqa: S608
                "ORDER BY slot LIMIT ?",
                (*params, limit + skip),
            ).fetchall()
        except (sqlite3.Error, OSError) as exc:
            if not self._take_failing:
                log.warning("spool %s: cannot take events (%s)", self._path, describe(exc))
            self._take_failing = True
            return None
        self._take_failing = False
        batch: list[Entry] = []
        damaged: list[tuple[str, str]] = []
        for row in rows:
            if row[1] in self._in_flight or row[1] in self._delivered or row[1] in self._damaged:
                continue
            if len(batch) >= limit:
                break
            entry = self._row_entry(row)
            damage = payload_damage(entry.id, entry.payload)
            if damage:
                damaged.append((entry.id, damage))
            else:
                batch.append(entry)
        for entry_id, reason in damaged:
            self._damaged[entry_id] = reason
            self._report_damage(entry_id, reason)  # once: it is skipped until set aside
        try:
            with transaction(self._conn, durable=False, wait=False):
                for entry_id, reason in list(self._damaged.items()):
                    self._bury(entry_id, reason)
                # Counted before anyone sends them: an attempted window is never merged.
                self._conn.executemany(
                    "UPDATE entries SET attempts = attempts + 1 WHERE id = ?",
                    [(entry.id,) for entry in batch],
                )
            self._damaged.clear()
        except (sqlite3.Error, OSError) as exc:
            # Busy or full: sent all the same, in order; the attempts are counted in
            # memory only (so only another process sharing this destination could
            # still merge them, if its outbox fills up meanwhile).
            log.debug("spool %s: attempts not written (%s)", self._path, describe(exc))
        for entry in batch:
            entry.attempts += 1
        self._in_flight.update(entry.id for entry in batch)
        return batch

    def _settle(self, batch: list[Entry], *, reached: bool) -> None:
        for entry in batch:
            if not reached and entry.id in self._in_flight:
                entry.attempts = max(0, entry.attempts - 1)
            self._in_flight.discard(entry.id)

    def _shrink_wal(self) -> None:
        """Give back the disk space of a large WAL once the queue is empty."""
        try:
            size = os.path.getsize(f"{self._path}-wal")
        except OSError:
            return
        if size > WAL_TRUNCATE_BYTES:
            with contextlib.suppress(sqlite3.Error):
                self._conn_().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _write(
        self, entries: Sequence[Entry], changes: Mapping[str, Checkpoint], completes: str | None
    ) -> Admission:
        """One durable transaction: the completion's uniqueness, the entries, the checkpoints."""
        deleted: set[str] = set()
        try:
            with transaction(self._conn_()):
                deleted = self._forget_delivered()
                # Delivered rows left for this commit to delete (see ``ack``) make no room
                # in the count of the bound, or a put would merge or drop for them.
                self._count -= len(deleted)
                admission = self._write_rows(entries, changes, completes, bool(deleted))
        except BaseException:
            self._count += len(deleted)
            raise
        self._delivered -= deleted
        for segment, checkpoint in changes.items():
            if checkpoint.state is None:
                self._written_seq.pop(segment, None)
            else:
                self._written_seq[segment] = self._open_seq(checkpoint)
        return admission

    def _write_rows(
        self,
        entries: Sequence[Entry],
        changes: Mapping[str, Checkpoint],
        completes: str | None,
        deleted: bool,
    ) -> Admission:
        """The inside of :meth:`_write`'s transaction, after the delivered rows' delete."""
        conn = self._conn_()
        admission = Admission()
        if deleted and not self._mine:
            self._index_mergeable(wanted=False)
        if completes is not None:
            try:
                conn.execute(
                    "INSERT INTO completed (run_id, completed_ms) VALUES (?, ?)",
                    (completes, now_ms()),
                )
            except sqlite3.IntegrityError:
                raise AlreadyCompletedError(completes) from None
        for entry in entries:
            if self.holds(entry.id):
                continue
            if self._count < self._max:
                self.insert(entry)
            else:
                admission.add(admit(self, entry, self._max))
        self._write_checkpoints(changes)
        return admission

    def _note_ended(self, changes: Mapping[str, Checkpoint]) -> None:
        for segment, checkpoint in changes.items():
            if checkpoint.state is None:
                self._ended.add(segment)
        if len(self._ended) > 10_000:  # only segments ended in the last seconds matter
            self._ended = set(list(self._ended)[-1000:])

    @staticmethod
    def _open_seq(checkpoint: Checkpoint) -> int:
        return RunAccounting.snapshot_seq(checkpoint.state)

    def _known_completed(self, run_id: str) -> bool:
        if self._conn is None or self._closed:
            return False
        try:
            found = self._conn.execute("SELECT 1 FROM completed WHERE run_id = ?", (run_id,))
            return found.fetchone() is not None
        except sqlite3.Error:
            return False


def _prefixed(alias: str) -> str:
    return ", ".join(f"{alias}.{column.strip()}" for column in ENTRY_COLUMNS.split(","))


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return found.fetchone() is not None
