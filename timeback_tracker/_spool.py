"""The durable outbox: a SQLite spool file that outlives crashes, power loss and restarts.

Events are committed (WAL, ``synchronous=FULL``) before ``put_many`` returns,
all of a tick's windows together in one commit; an entry is deleted only when
acknowledged, so delivery is at-least-once with the same event id.

Several trackers may share one spool file, each with its own *destination*
(sensor and endpoint): every row says whose it is, and a tracker sends only
its own destination's rows, holding ``<spool>.drain-<destination>.lock`` so
that one process at a time does. Each tracker also holds an owner lock
(``<spool>.owner-<token>.lock``) while it lives; it carries its sign of life.

Crash safety is nearly free. The accounting of a run is deterministic
between calls, so what a recovery needs is a run segment's template and its
accounting state: written durably with the tick's commit (``segments``), and
once a second, cheaply and without ``fsync``, into the owner lock file
(:class:`~timeback_tracker._spool_file.AliveRecord`). A process killed at any
moment loses about a second; power loss up to one heartbeat interval.
:meth:`SqliteOutbox.recover` rebuilds the open windows of owners whose lock is
free, with the ids they would have had.

The tracker never crashes because of its spool. A damaged row is set aside
as a dead letter; a corrupt file is moved aside, what can be read from it is
salvaged into a fresh one; a spool that is busy (another process holds its
write lock) or failing (disk full) keeps new events in memory and is tried
again soon, at every tick and at close; a spool file deleted or replaced
underneath is noticed and recreated with what was held.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from timeback_tracker._accounting import RunAccounting
from timeback_tracker._events import RunTemplate
from timeback_tracker._locations import SpoolLocation, resolve_spool_path
from timeback_tracker._outbox import (
    Admission,
    AlreadyCompletedError,
    Checkpoint,
    Entry,
    MemoryOutbox,
    Outbox,
    admit,
)
from timeback_tracker._spool_file import (
    AliveRecord,
    connect,
    create_private,
    destination,
    is_busy,
    is_corrupt,
    move_aside,
    open_lock_file,
    prepare_directory,
    remove_lock_file,
    salvage,
    tighten,
    transaction,
    try_lock,
)

log = logging.getLogger("timeback_tracker.spool")

__all__ = ["SqliteOutbox", "open_outbox"]

BUSY_PATIENCE = 0.25
"""Seconds a write waits for another process's write lock before the events wait in
memory instead (the app's thread may be the one writing: ``complete()``)."""

RETRY_BUSY = 1.0
"""Seconds before a busy spool is tried again."""

RETRY_FAILING = (5.0, 60.0)
"""First and longest pause (seconds) before a failing spool (disk full) is tried again."""

WAL_TRUNCATE_BYTES = 256 << 10
"""A WAL larger than this is truncated once the queue is empty."""

_ENTRY_COLUMNS = (
    "slot, id, run_id, segment, kind, first_seq, last_seq, start_ms, end_ms, active_ms, "
    "inactive_ms, attempts, event_time_ms, born_ms, payload"
)

Damage = Callable[[str, str], None]
"""Told about a damaged row set aside: (event id or segment, reason)."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class SqliteOutbox:
    """An outbox in a SQLite file: durable, bounded, FIFO, shared by processes.

    Implements :class:`~timeback_tracker._outbox.Outbox` with the semantics of
    :class:`~timeback_tracker._outbox.MemoryOutbox` (the same coalescing rule,
    through its :class:`~timeback_tracker._outbox.Store` methods below).
    Thread-safe. Open it through :func:`open_outbox`, which turns every
    failure into a fallback.

    Args:
        path: The spool file; created (owner-only) with its directory if missing.
        max_queue: Most events held in the spool.
        sensor: The tracker's sensor IRI.
        endpoint: The tracker's endpoint: with the sensor, whose rows are whose.
        on_damage: Told about every damaged row set aside.
        drain_wait: Seconds ``take`` waits before returning nothing while
            another process drains this destination, so a poller does not spin.

    Raises:
        sqlite3.DatabaseError: The file is corrupt or not a spool.
        sqlite3.OperationalError: The file cannot be opened or written.
        OSError: The directory or the lock files cannot be created.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_queue: int,
        *,
        sensor: str = "",
        endpoint: str = "",
        on_damage: Damage | None = None,
        drain_wait: float = 0.0,
    ) -> None:
        self._path = Path(path)
        self._max = max_queue
        self._sensor = sensor
        self._endpoint = endpoint
        self.dest = destination(sensor, endpoint)
        """This tracker's destination key: its rows carry it."""
        self._on_damage = on_damage
        self._drain_wait = drain_wait
        self._pid = os.getpid()
        self.owner = uuid.uuid4().hex
        """This instance's token in the spool and in its owner lock file's name."""
        # Re-entrant: a signal handler interrupting a write on this thread gets
        # an error from SQLite ("within a transaction") instead of a deadlock.
        self._lock = threading.RLock()
        self._in_flight: set[str] = set()
        self._delivered: set[str] = set()  # acknowledged, their delete not yet written
        self._overflow: MemoryOutbox | None = None  # events the spool could not take yet
        self._pending: dict[str, Checkpoint] = {}  # checkpoint changes not yet written
        self._completed_here: set[str] = set()  # completions not yet written
        self._ended: set[str] = set()  # segments ended by this tracker
        self._written_seq: dict[str, int] = {}  # segment -> open seq durably written
        self._known_segments: set[str] = set()
        self._templates: dict[str, RunTemplate | None] = {}
        self._retry_at = 0.0
        self._failures = 0
        self._take_failing = False
        self._closed = False
        self._woken = threading.Event()
        self._count = 0  # rows of every destination: the bound applies to the file
        self._mine = 0  # rows of this destination: what this tracker has to deliver
        self._alive_n = 0
        self._drain_fd: int | None = None
        self._owner_fd: int | None = None
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        prepare_directory(self._path.parent)
        self._owner_fd = open_lock_file(self._owner_lock(self.owner))
        if not try_lock(self._owner_fd):  # a fresh random name: never held
            raise BlockingIOError(f"lock held by another process: {self._owner_lock(self.owner)}")
        try:
            self._open()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                self._release_owner()
                raise
            # Another process holds the file: start in memory, open it soon.
            log.warning("spool %s is busy; keeping events in memory until it is free", path)
            self._degrade(exc)
        except BaseException:
            self._release_owner()
            raise
        _OPEN.add(self)

    def __repr__(self) -> str:
        overflow = self._overflow
        return (
            f"<SqliteOutbox path={str(self._path)!r} held={len(self)} "
            f"in_flight={len(self._in_flight)} in_memory={len(overflow) if overflow else 0} "
            f"closed={self._closed}>"
        )

    @property
    def path(self) -> Path:
        """The spool file."""
        return self._path

    def __len__(self) -> int:
        """Events of this tracker's destination held by the spool and in its memory overflow."""
        # Never wait long: the app thread asks (stats()), and a write may be
        # waiting for another process's write lock.
        overflow = self._overflow
        if self._lock.acquire(timeout=0.05):
            try:
                if self._conn is not None and not self._closed:
                    with contextlib.suppress(sqlite3.Error):
                        self._mine = self._count_mine() - len(self._delivered)
            finally:
                self._lock.release()
        return self._mine + (len(overflow) if overflow is not None else 0)

    # -- opening --------------------------------------------------------------------------

    def _open(self) -> None:
        """Connect (creating the file and its schema), adopt orphan rows, note who we are."""
        create_private(self._path)
        conn = connect(self._path, create=True, busy_seconds=BUSY_PATIENCE * 2)
        try:
            conn.execute(f"PRAGMA busy_timeout = {round(BUSY_PATIENCE * 1000)}")
            now = _now_ms()
            with transaction(conn):
                conn.execute(
                    "INSERT OR REPLACE INTO destinations (dest, sensor, endpoint, last_used_ms) "
                    "VALUES (?, ?, ?, ?)",
                    (self.dest, self._sensor, self._endpoint, now),
                )
                conn.execute(
                    "INSERT OR REPLACE INTO owners (owner, dest, alive_n, started_ms, "
                    "updated_ms) VALUES (?, ?, 0, ?, ?)",
                    (self.owner, self.dest, now, now),
                )
                # Rows of a 0.1 spool, or salvaged from a corrupt file, belong to
                # whoever opens the spool first.
                conn.execute("UPDATE entries SET dest = ? WHERE dest = ''", (self.dest,))
                conn.execute("UPDATE dead_letters SET dest = ? WHERE dest = ''", (self.dest,))
            for suffix in ("-wal", "-shm"):
                companion = Path(f"{self._path}{suffix}")
                if companion.exists():
                    tighten(companion, 0o600)
            stat = os.stat(self._path)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._identity = (stat.st_dev, stat.st_ino)
        self._recount()

    def _release_owner(self) -> None:
        if self._owner_fd is not None:
            remove_lock_file(self._owner_lock(self.owner), self._owner_fd)
            self._owner_fd = None

    # -- producers --------------------------------------------------------------------------

    def put(self, entry: Entry) -> Admission:
        """Add one entry (see :meth:`put_many`)."""
        return self.put_many([entry])

    def put_many(
        self,
        entries: Sequence[Entry],
        checkpoints: Mapping[str, Checkpoint] | None = None,
        *,
        completes: str | None = None,
    ) -> Admission:
        """Add entries and replace run segments' checkpoints in one durable transaction.

        Never raises for a spool problem: if the write fails, the entries are
        kept in memory (and the checkpoints and completion written when the
        spool works again), and a warning is logged.

        Args:
            entries: Entries to add, in order; ids already held are ignored.
            checkpoints: segment -> its checkpoint (``state`` None: it ended).
            completes: The run these entries complete.

        Raises:
            AlreadyCompletedError: ``completes`` is known to be completed already.
        """
        changes = dict(checkpoints or {})
        with self._lock:
            self._note_ended(changes)
            if completes is not None and completes in self._completed_here:
                raise AlreadyCompletedError(completes)
            if self._closed:
                log.warning(
                    "spool %s is closed: %d events kept in memory only", self._path, len(entries)
                )
            elif self._usable(force=False):
                try:
                    admission = self._write(entries, changes, completes)
                except AlreadyCompletedError:
                    raise
                except (sqlite3.Error, OSError) as exc:
                    self._degrade(exc)
                else:
                    self._failures = 0
                    return admission
            if completes is not None and self._known_completed(completes):
                raise AlreadyCompletedError(completes)
            self._pending.update(changes)
            admission = self._memory().put_many(entries, completes=completes)
            if completes is not None:
                self._completed_here.add(completes)
            return admission

    def mark_alive(self, mono_ms: int, wall_ms: int, checkpoints: Sequence[Checkpoint]) -> None:
        """Write this tracker's sign of life into its owner lock file (no fsync).

        Also the moment to retry a spool that refused a write.
        """
        with self._lock:
            if self._closed or self._owner_fd is None:
                return
            self._usable(force=False)  # retries the spool when due
            segments: dict[str, Any] = {}
            for checkpoint in checkpoints:
                segment = checkpoint.template.segment
                if segment in self._ended or checkpoint.state is None:
                    continue  # ended since the snapshot was taken
                if self._open_seq(checkpoint) < self._written_seq.get(segment, 0):
                    continue  # older than what the last tick wrote
                segments[segment] = {"t": checkpoint.template.to_json(), "s": checkpoint.state}
            for segment, checkpoint in self._pending.items():
                if checkpoint.state is None:
                    segments[segment] = None  # ended, not yet written: never recover it
            self._alive_n += 1
            record = {
                "n": self._alive_n,
                "dest": self.dest,
                "mono": mono_ms,
                "wall": wall_ms,
                "segments": segments,
            }
            try:
                AliveRecord.write(self._owner_fd, record)
            except OSError as exc:
                log.debug("spool %s: cannot write the sign of life: %s", self._path, exc)

    def recover(self) -> list[Entry]:
        """Emit the open windows of the run segments of dead owners, once.

        A dead owner (its lock is free) left its segments' states: durably at
        its last tick, and in its sign of life if that is newer. Each running
        segment's windows are rebuilt up to the owner's last sign of life,
        with the ids they would have had, and queued for the owner's
        destination; windows already held are kept as they are.

        Returns:
            The entries added.
        """
        with self._lock:
            if self._closed or not self._usable(force=False) or self._conn is None:
                return []
            held: list[tuple[Path, int | None]] = []
            try:
                with transaction(self._conn):
                    owners = self._dead_owners(held)
                    added = [e for owner in owners for e in self._recover_owner(owner)]
                    added += self._recover_legacy(owners)
                    self._forget_owners(owners)
            except (sqlite3.Error, OSError) as exc:
                log.warning(
                    "spool %s: recovery failed (%s); retried at the next start",
                    self._path,
                    _describe(exc),
                )
                return []
            finally:
                for _, fd in held:
                    _close_quietly(fd)
            for path, _ in held:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            self._recount()
        if added:
            runs = {entry.run_id for entry in added}
            log.info(
                "spool %s: recovered %d windows of %d runs cut short by a dead process",
                self._path,
                len(added),
                len(runs),
            )
        return added

    def rebase(self, delta_ms: int) -> None:
        """The wall clock was set by ``delta_ms``: move the age base of every row, once.

        Trackers sharing the spool notice the same step: the offset it led to
        is noted in the spool, so it is applied once.
        """
        with self._lock:
            if self._overflow is not None:
                self._overflow.rebase(delta_ms)
            if self._conn is None or self._closed:
                return
            offset = str(_now_ms() // 1000)  # the new wall clock, to the second
            try:
                with transaction(self._conn, durable=False):
                    row = self._conn.execute(
                        "SELECT value FROM meta WHERE key = 'rebased_at'"
                    ).fetchone()
                    if row is not None and abs(int(row[0]) - int(offset)) <= 2:
                        return  # another tracker applied this step already
                    self._conn.execute("UPDATE entries SET born_ms = born_ms + ?", (delta_ms,))
                    self._conn.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES ('rebased_at', ?)",
                        (offset,),
                    )
            except (sqlite3.Error, OSError) as exc:
                log.warning("spool %s: cannot note a clock step: %s", self._path, _describe(exc))

    def close(self, timeout: float | None = None) -> bool:
        """Write what waits in memory if possible, then let go of file and locks.

        Idempotent. Running segments' checkpoints stay recoverable by the next
        :meth:`recover`, since this owner is no longer alive.

        Args:
            timeout: Seconds to wait for a busy spool; :data:`BUSY_PATIENCE` when None.

        Returns:
            True when nothing was left in memory only.
        """
        with self._lock:
            if self._closed:
                return True
            if _in_transaction(self._conn):
                return False  # a signal handler interrupted a write here: not now
            self._check_identity()
            kept = True
            if self._overflow is not None:
                deadline = time.monotonic() + (BUSY_PATIENCE if timeout is None else timeout)
                while not self._restore() and time.monotonic() < deadline:
                    time.sleep(0.05)
                if self._overflow is not None:
                    kept = False
                    log.warning(
                        "spool %s: %d events could not be written before closing: they are lost",
                        self._path,
                        len(self._overflow),
                    )
            if self._conn is not None:
                self._tidy()
            self._closed = True
            self._woken.set()
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
            if self._drain_fd is not None:
                os.close(self._drain_fd)  # never unlink it: another process may be opening it
                self._drain_fd = None
            self._release_owner()
        _OPEN.discard(self)
        return kept

    # -- the delivery thread ----------------------------------------------------------------

    def take(self, limit: int) -> list[Entry]:
        """The oldest entries of this destination not in flight, now in flight.

        Only the process holding the destination's drain lock takes from the
        spool; any other gets ``[]`` (after ``drain_wait`` seconds). A row
        whose payload is damaged is set aside as a dead letter.
        """
        with self._lock:
            self._usable(force=False)
            draining = self._can_drain()
            batch = self._take_from_disk(limit) if draining else []
            if draining and self._overflow is not None and len(batch) < limit:
                batch += self._overflow.take(limit - len(batch))
        if not draining:
            self._woken.wait(self._drain_wait)
        return batch

    def ack(self, entries: Iterable[Entry]) -> None:
        """Delete delivered entries.

        A delete that fails (the spool busy) is remembered and retried with the
        next write; meanwhile those rows are not taken again. Only if the
        process dies first are they sent again (the same events, same ids).
        """
        batch = list(entries)
        with self._lock:
            self._settle(batch, reached=True)
            if self._overflow is not None:
                self._overflow.ack(batch)
            if self._closed or not batch or self._conn is None:
                return
            self._delivered.update(entry.id for entry in batch)
            try:
                with transaction(self._conn, durable=False):
                    deleted = self._forget_delivered()
                self._delivered -= deleted
                self._recount()
                if not self._mine:
                    self._shrink_wal()
            except (sqlite3.Error, OSError) as exc:
                log.debug(
                    "spool %s: could not delete %d delivered events yet (%s)",
                    self._path,
                    len(self._delivered),
                    _describe(exc),
                )

    def release(self, entries: Iterable[Entry], *, reached: bool = True) -> None:
        """Make entries takeable again, at their place.

        Args:
            entries: The entries.
            reached: False when the request provably never left: they count as
                never attempted again, so they stay mergeable.
        """
        batch = list(entries)
        with self._lock:
            self._settle(batch, reached=reached)
            if self._overflow is not None:
                self._overflow.release(batch, reached=reached)
            if reached or self._closed or self._conn is None:
                return
            with (
                contextlib.suppress(sqlite3.Error, OSError),
                transaction(self._conn, durable=False),
            ):
                self._conn.executemany(
                    "UPDATE entries SET attempts = max(0, attempts - 1) WHERE id = ?",
                    [(entry.id,) for entry in batch],
                )

    def dead_letter(self, entries: Iterable[Entry], reason: str) -> None:
        """Move entries to the ``dead_letters`` table with ``reason``, in one transaction."""
        batch = list(entries)
        with self._lock:
            self._settle(batch, reached=True)
            if self._overflow is not None:
                self._overflow.dead_letter(batch, reason)
            if self._closed or self._conn is None:
                return
            try:
                with transaction(self._conn, durable=False):
                    for entry in batch:
                        self._bury(entry.id, reason)
            except (sqlite3.Error, OSError) as exc:
                log.warning(
                    "spool %s: could not set aside %d events (%s)",
                    self._path,
                    len(batch),
                    _describe(exc),
                )

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

    # -- Store: what admit() works with (self._lock held, inside a transaction) ------------

    def count(self) -> int:
        """Entries held in the spool (every destination's)."""
        return self._count_rows()

    def newest_of_run(self, run_id: str) -> Entry | None:
        """The run's newest held entry."""
        row = (
            self._conn_()
            .execute(
                f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE run_id = ? ORDER BY slot DESC LIMIT 1",  # noqa: S608
                (run_id,),
            )
            .fetchone()
        )
        return None if row is None else self._row_entry(row)

    def adjacent_windows(self) -> Iterator[tuple[Entry, Entry]]:
        """Consecutive windows of one segment, never attempted and not in flight, oldest first."""
        rows = self._conn_().execute(
            f"SELECT {_prefixed('a')}, {_prefixed('b')} FROM entries a JOIN entries b "  # noqa: S608
            "ON b.segment = a.segment AND b.first_seq = a.last_seq + 1 "
            "WHERE a.kind = 'time' AND b.kind = 'time' AND a.attempts = 0 AND b.attempts = 0 "
            "AND b.start_ms = a.end_ms ORDER BY a.slot"
        )
        width = len(_ENTRY_COLUMNS.split(","))
        for row in rows:
            first, second = self._row_entry(row[:width]), self._row_entry(row[width:])
            if first.id not in self._in_flight and second.id not in self._in_flight:
                yield first, second

    def oldest_window(self) -> Entry | None:
        """The oldest time window not in flight."""
        for row in self._conn_().execute(
            f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE kind = 'time' ORDER BY slot"  # noqa: S608
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
                    _now_ms(),
                ),
            )
            self._known_segments.add(template.segment)
        self._conn_().execute(
            "INSERT INTO entries (id, dest, run_id, segment, kind, first_seq, last_seq, start_ms, "
            "end_ms, active_ms, inactive_ms, attempts, event_time_ms, born_ms, queued_ms, payload) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (entry.id, dest or self.dest, *self._values(entry), _now_ms(), entry.payload),
        )
        self._count += 1
        self._mine += (dest or self.dest) == self.dest

    def replace(self, old: Entry, new: Entry) -> None:
        """Put ``new`` in the place of ``old`` (its slot: its place in the queue)."""
        self._conn_().execute(
            "UPDATE entries SET id = ?, run_id = ?, segment = ?, kind = ?, first_seq = ?, "
            "last_seq = ?, start_ms = ?, end_ms = ?, active_ms = ?, inactive_ms = ?, "
            "attempts = ?, event_time_ms = ?, born_ms = ?, payload = ? WHERE id = ?",
            (new.id, *self._values(new), new.payload, old.id),
        )

    def remove(self, entry: Entry) -> None:
        """Remove ``entry``."""
        self._conn_().execute("DELETE FROM entries WHERE id = ?", (entry.id,))
        self._count -= 1
        self._mine -= 1  # an estimate (the row may be another destination's) until recounted

    # -- internals (self._lock held) ----------------------------------------------------------

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
        """The entry of a row of :data:`_ENTRY_COLUMNS` (payload unchecked)."""
        (
            _,
            entry_id,
            run_id,
            segment,
            kind,
            first_seq,
            last_seq,
            start_ms,
            end_ms,
            active_ms,
            inactive_ms,
            attempts,
            event_time_ms,
            born_ms,
            payload,
        ) = row
        return Entry(
            entry_id,
            run_id,
            "completion" if kind == "completion" else "time",
            event_time_ms,
            payload,
            first_seq,
            last_seq,
            start_ms,
            end_ms,
            active_ms,
            inactive_ms,
            attempts,
            self._template(segment),
            born_ms,
        )

    def _template(self, segment: str | None) -> RunTemplate | None:
        if segment is None:
            return None
        if segment not in self._templates:
            row = (
                self._conn_()
                .execute("SELECT template FROM segments WHERE segment = ?", (segment,))
                .fetchone()
            )
            template = None
            if row is not None:
                with contextlib.suppress(ValueError):
                    template = RunTemplate.from_json(row[0])
            self._templates[segment] = template
        return self._templates[segment]

    def _usable(self, *, force: bool) -> bool:
        """Whether writes may go to the spool now (retrying it, when due, if it failed)."""
        if self._overflow is None and self._conn is not None:
            return True
        return self._restore(force=force)

    def _write(
        self, entries: Sequence[Entry], changes: Mapping[str, Checkpoint], completes: str | None
    ) -> Admission:
        """One durable transaction: the completion's uniqueness, the entries, the checkpoints."""
        conn = self._conn_()
        admission = Admission()
        self._check_identity()
        with transaction(conn):
            deleted = self._forget_delivered()
            if completes is not None:
                try:
                    conn.execute(
                        "INSERT INTO completed (run_id, completed_ms) VALUES (?, ?)",
                        (completes, _now_ms()),
                    )
                except sqlite3.IntegrityError:
                    raise AlreadyCompletedError(completes) from None
            for entry in entries:
                if self.holds(entry.id):
                    continue
                if self._count < self._max:
                    self.insert(entry)
                else:
                    self._recount()
                    admission.add(admit(self, entry, self._max))
            self._write_checkpoints(changes)
            conn.execute(
                "UPDATE owners SET alive_n = ?, updated_ms = ? WHERE owner = ?",
                (self._alive_n, _now_ms(), self.owner),
            )
        self._delivered -= deleted
        for segment, checkpoint in changes.items():
            if checkpoint.state is None:
                self._written_seq.pop(segment, None)
                self._known_segments.discard(segment)
            else:
                self._written_seq[segment] = self._open_seq(checkpoint)
        return admission

    def _write_checkpoints(self, changes: Mapping[str, Checkpoint]) -> None:
        conn = self._conn_()
        now = _now_ms()
        for segment, checkpoint in changes.items():
            template = checkpoint.template
            if checkpoint.state is None:
                # Ended: no state to recover. The row stays while entries need its template.
                conn.execute(
                    "UPDATE segments SET ended = 1, state = NULL, updated_ms = ? WHERE segment = ?",
                    (now, segment),
                )
                conn.execute(
                    "DELETE FROM segments WHERE segment = ? AND NOT EXISTS "
                    "(SELECT 1 FROM entries WHERE entries.segment = segments.segment)",
                    (segment,),
                )
                continue
            conn.execute(
                "INSERT INTO segments (segment, run_id, dest, owner, template, state, mono_ms, "
                "wall_ms, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (segment) DO UPDATE SET state = excluded.state, "
                "mono_ms = excluded.mono_ms, wall_ms = excluded.wall_ms, "
                "updated_ms = excluded.updated_ms, owner = excluded.owner",
                (
                    segment,
                    template.run_id,
                    self.dest,
                    self.owner,
                    template.to_json(),
                    json.dumps(checkpoint.state, separators=(",", ":")),
                    checkpoint.mono_ms,
                    checkpoint.wall_ms,
                    now,
                ),
            )
            self._known_segments.add(segment)

    def _note_ended(self, changes: Mapping[str, Checkpoint]) -> None:
        for segment, checkpoint in changes.items():
            if checkpoint.state is None:
                self._ended.add(segment)
        if len(self._ended) > 10_000:  # only segments ended in the last seconds matter
            self._ended = set(list(self._ended)[-1000:])

    @staticmethod
    def _open_seq(checkpoint: Checkpoint) -> int:
        return RunAccounting.restore(list(checkpoint.state or [])).next_seq

    def _known_completed(self, run_id: str) -> bool:
        if self._conn is None or self._closed:
            return False
        try:
            found = self._conn.execute("SELECT 1 FROM completed WHERE run_id = ?", (run_id,))
            return found.fetchone() is not None
        except sqlite3.Error:
            return False

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
        prepare_directory(self._path.parent)
        if self._owner_fd is not None and not self._owner_lock(self.owner).exists():
            _close_quietly(self._owner_fd)
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

    def _owner_lock(self, owner: str) -> Path:
        return self._path.with_name(f"{self._path.name}.owner-{owner}.lock")

    def _can_drain(self) -> bool:
        if self._drain_fd is not None:
            return True
        if self._closed:
            return False
        lock = self._path.with_name(f"{self._path.name}.drain-{self.dest}.lock")
        try:
            fd = open_lock_file(lock)
        except OSError as exc:
            log.debug("spool %s: cannot open the drain lock: %s", self._path, _describe(exc))
            return False
        if not try_lock(fd):
            os.close(fd)
            return False
        self._drain_fd = fd
        log.debug("spool %s: this process sends destination %s now", self._path, self.dest)
        return True

    def _take_from_disk(self, limit: int) -> list[Entry]:
        if self._conn is None or self._closed:
            return []
        try:
            with transaction(self._conn, durable=False):
                rows = self._conn.execute(
                    f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE dest = ? "  # noqa: S608
                    "ORDER BY slot LIMIT ?",
                    (self.dest, limit + len(self._in_flight) + len(self._delivered)),
                ).fetchall()
                batch: list[Entry] = []
                for row in rows:
                    if row[1] in self._in_flight or row[1] in self._delivered:
                        continue
                    if len(batch) >= limit:
                        break
                    damage = _payload_damage(row[1], row[-1])
                    if damage:
                        self._bury(row[1], damage)
                        self._report_damage(row[1], damage)
                        continue
                    batch.append(self._row_entry(row))
                # Counted before anyone sends them: an attempted window is never merged.
                self._conn.executemany(
                    "UPDATE entries SET attempts = attempts + 1 WHERE id = ?",
                    [(entry.id,) for entry in batch],
                )
        except (sqlite3.Error, OSError) as exc:
            if not self._take_failing:
                log.warning("spool %s: cannot take events (%s)", self._path, _describe(exc))
            self._take_failing = True
            return []
        self._take_failing = False
        for entry in batch:
            entry.attempts += 1
        self._in_flight.update(entry.id for entry in batch)
        return batch

    def _report_damage(self, what: str, reason: str) -> None:
        log.warning("spool %s: set aside %s: %s", self._path, what, reason)
        if self._on_damage is not None:
            try:
                self._on_damage(what, reason)
            except Exception:
                log.exception("reporting a damaged spool row failed")

    def _bury(self, entry_id: str, reason: str) -> None:
        """Move a queued row to the dead letters (inside a transaction)."""
        conn = self._conn_()
        conn.execute(
            "INSERT INTO dead_letters (id, dest, run_id, kind, first_seq, last_seq, attempts, "
            "event_time_ms, queued_ms, payload, reason, dead_ms) "
            "SELECT id, dest, run_id, kind, first_seq, last_seq, attempts, "
            "event_time_ms, queued_ms, payload, ?, ? FROM entries WHERE id = ?",
            (reason, _now_ms(), entry_id),
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

    def _settle(self, batch: list[Entry], *, reached: bool) -> None:
        for entry in batch:
            if not reached and entry.id in self._in_flight:
                entry.attempts = max(0, entry.attempts - 1)
            self._in_flight.discard(entry.id)

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
        self._mine = self._count_mine() - len(self._delivered)

    def _count_rows(self) -> int:
        return int(self._conn_().execute("SELECT count(*) FROM entries").fetchone()[0])

    def _count_mine(self) -> int:
        found = self._conn_().execute("SELECT count(*) FROM entries WHERE dest = ?", (self.dest,))
        return int(found.fetchone()[0])

    def _shrink_wal(self) -> None:
        """Give back the disk space of a large WAL once the queue is empty."""
        try:
            size = os.path.getsize(f"{self._path}-wal")
        except OSError:
            return
        if size > WAL_TRUNCATE_BYTES:
            with contextlib.suppress(sqlite3.Error):
                self._conn_().execute("PRAGMA wal_checkpoint(TRUNCATE)")

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

    # -- recovery (inside its transaction) ---------------------------------------------------

    def _dead_owners(self, held: list[tuple[Path, int | None]]) -> list[str]:
        """Owners that wrote here and whose lock is free; their lock files go to ``held``."""
        conn = self._conn_()
        owners = {row[0] for row in conn.execute("SELECT owner FROM owners")}
        owners |= {row[0] for row in conn.execute("SELECT DISTINCT owner FROM segments")}
        if _has_table(conn, "legacy_checkpoints"):
            owners |= {r[0] for r in conn.execute("SELECT DISTINCT owner FROM legacy_checkpoints")}
        prefix = f"{self._path.name}.owner-"
        for path in self._path.parent.glob(f"{glob_escape(prefix)}*.lock"):
            token = path.name[len(prefix) : -len(".lock")]
            if len(token) == 32 and all(c in "0123456789abcdef" for c in token):
                owners.add(token)
        owners.discard(self.owner)
        owners.discard("")
        dead = []
        for owner in sorted(owners):
            path = self._owner_lock(owner)
            try:
                fd: int | None = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
            except OSError:
                fd = None
            if fd is not None and not try_lock(fd):
                os.close(fd)
                continue  # alive
            dead.append(owner)
            held.append((path, fd))
        return dead

    def _recover_owner(self, owner: str) -> list[Entry]:
        """Rebuild the open windows of a dead owner's running segments."""
        conn = self._conn_()
        rows = {
            row[0]: row
            for row in conn.execute(
                "SELECT segment, dest, ended, template, state, mono_ms, wall_ms FROM segments "
                "WHERE owner = ?",
                (owner,),
            )
        }
        found = conn.execute("SELECT alive_n, dest FROM owners WHERE owner = ?", (owner,))
        written = found.fetchone()
        alive = AliveRecord.read(self._owner_lock(owner))
        if alive is not None and written is not None and int(alive.get("n", 0)) <= written[0]:
            alive = None  # older than the owner's last durable write: the rows say more
        plans: dict[str, tuple[str, str, object, int, int]] = {}
        for segment, dest, ended, template, state, mono, wall in rows.values():
            if not ended and state is not None:
                plans[segment] = (dest, template, state, mono, wall)
        if alive is not None:
            # Newer than every durable row of this owner: it says which segments ran.
            running: dict[str, tuple[str, str, object, int, int]] = {}
            for segment, item in _alive_segments(alive):
                if item is None or (segment in rows and rows[segment][2]):
                    continue  # ended
                running[segment] = (
                    str(alive.get("dest", "")),
                    item["t"],
                    item["s"],
                    alive["mono"],
                    alive["wall"],
                )
                row_plan = plans.get(segment)
                if row_plan is not None and _seq_of(row_plan[2]) > _seq_of(item["s"]):
                    running[segment] = row_plan  # the row is further on: never go back
            plans = running
        added: list[Entry] = []
        for segment, (dest, template_text, stored, mono, wall) in plans.items():
            try:
                template = RunTemplate.from_json(str(template_text))
                state = json.loads(stored) if isinstance(stored, str) else stored
                accounting = RunAccounting.restore(state)
                windows = accounting.end(int(mono), int(wall))
            except (ValueError, TypeError, KeyError) as exc:
                self._report_damage(f"the checkpoint of run segment {segment}", f"damaged ({exc})")
                continue
            for window in windows:
                entry = Entry.window(
                    template,
                    window.seq,
                    window.seq,
                    window.start_wall_ms,
                    window.end_wall_ms,
                    window.active_ms,
                    window.inactive_ms,
                )
                if self.holds(entry.id):
                    continue
                self._admit_recovered(entry, dest or self.dest)
                added.append(entry)
        return added

    def _admit_recovered(self, entry: Entry, dest: str) -> None:
        if self._count_rows() < self._max:
            self.insert(entry, dest)
            return
        admission = admit(self, entry, self._max)
        if admission.dropped:
            log.warning(
                "spool %s: full: dropped %d events while recovering",
                self._path,
                len(admission.dropped),
            )

    def _recover_legacy(self, dead: list[str]) -> list[Entry]:
        """The 0.1 format's checkpoints (whole events) of dead owners become queued events."""
        conn = self._conn_()
        if not dead or not _has_table(conn, "legacy_checkpoints"):
            return []
        added = []
        marks = ", ".join("?" * len(dead))
        for row in conn.execute(
            "SELECT id, run_id, kind, first_seq, last_seq, event_time_ms, payload "  # noqa: S608
            f"FROM legacy_checkpoints WHERE owner IN ({marks})",
            dead,
        ).fetchall():
            entry = Entry(row[0], row[1], "time", row[5], row[6], row[3], row[4])
            if _payload_damage(entry.id, entry.payload) or self.holds(entry.id):
                continue
            self._admit_recovered(entry, self.dest)
            added.append(entry)
        conn.execute(f"DELETE FROM legacy_checkpoints WHERE owner IN ({marks})", dead)  # noqa: S608
        return added

    def _forget_owners(self, owners: list[str]) -> None:
        conn = self._conn_()
        for owner in owners:
            conn.execute(
                "DELETE FROM segments WHERE owner = ? AND NOT EXISTS "
                "(SELECT 1 FROM entries WHERE entries.segment = segments.segment)",
                (owner,),
            )
            # Kept for their templates (merges), no longer anyone's to recover.
            conn.execute(
                "UPDATE segments SET owner = '', ended = 1, state = NULL WHERE owner = ?",
                (owner,),
            )
            conn.execute("DELETE FROM owners WHERE owner = ?", (owner,))

    # -- failures ---------------------------------------------------------------------------

    def _degrade(self, error: BaseException) -> None:
        """After a failed write: keep new events in memory, try the spool again soon."""
        busy = is_busy(error)
        self._failures += 1
        delay = _retry_delay(error, self._failures)
        self._retry_at = time.monotonic() + delay
        if self._overflow is None:
            log.warning(
                "spool %s: a write failed (%s); keeping new events in memory and trying the "
                "spool again in %g s",
                self._path,
                _describe(error),
                delay,
            )
        self._memory()
        if not busy:
            self._check_identity_quietly()
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    # A full disk: give back what the WAL holds beyond the database.
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _check_identity_quietly(self) -> None:
        try:
            self._check_identity()
        except (sqlite3.Error, OSError) as exc:
            log.debug("spool %s: cannot recreate it yet: %s", self._path, _describe(exc))

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
                        (run_id, _now_ms()),
                    )
                for entry in held:
                    if not self.holds(entry.id):
                        admit(self, entry, self._max)
                self._write_checkpoints(self._pending)
                for entry, reason in overflow.dead_letters if overflow is not None else ():
                    self.insert(entry)
                    self._bury(entry.id, reason)
        except (sqlite3.Error, OSError) as exc:
            self._failures += 1
            first, longest = RETRY_FAILING
            delay = (
                RETRY_BUSY if is_busy(exc) else min(longest, first * 2 ** min(self._failures, 6))
            )
            self._retry_at = time.monotonic() + delay
            log.debug("spool %s: still unusable (%s)", self._path, _describe(exc))
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

    def salvage(self, corrupt: Path) -> int:
        """Queue the readable events of a corrupt spool moved aside; returns how many."""
        rows = list(salvage(corrupt))
        taken = 0
        with self._lock:
            if self._conn is None:
                return 0
            try:
                with transaction(self._conn):
                    for row in rows:
                        if self.holds(row["id"]):
                            continue
                        entry = Entry(
                            row["id"],
                            row["run_id"],
                            "completion" if row["kind"] == "completion" else "time",
                            int(row["event_time_ms"]),
                            row["payload"],
                        )
                        self._admit_recovered(entry, row["dest"] or self.dest)
                        taken += 1
            except (sqlite3.Error, OSError, ValueError, TypeError) as exc:
                log.warning("spool %s: salvage failed: %s", corrupt, _describe(exc))
                return 0
            self._recount()
        if taken:
            log.warning("spool %s: salvaged %d events from %s", self._path, taken, corrupt.name)
        return taken

    def _abandon(self) -> None:
        """In a forked child: let go of the parent's handles without touching its locks."""
        self._lock = threading.RLock()  # may have been held by a thread that did not fork
        self._closed = True
        if self._conn is not None:
            _ABANDONED.append(self._conn)  # closing it here could disturb the parent's use
        for fd in (self._drain_fd, self._owner_fd):
            if fd is not None:
                _close_quietly(fd)  # flock: the parent's lock stays, its descriptor is open
        self._drain_fd = self._owner_fd = None
        self._in_flight.clear()
        self._overflow = None


def _retry_delay(error: BaseException, failures: int) -> float:
    """Seconds before the spool is tried again after ``failures`` failures in a row."""
    if is_busy(error):
        return RETRY_BUSY
    first, longest = RETRY_FAILING
    return float(min(longest, first * 2 ** min(failures - 1, 6)))


def glob_escape(text: str) -> str:
    """``glob.escape`` without importing glob's dependencies twice."""
    import glob

    return glob.escape(text)


def _prefixed(alias: str) -> str:
    return ", ".join(f"{alias}.{column.strip()}" for column in _ENTRY_COLUMNS.split(","))


def _in_transaction(conn: sqlite3.Connection | None) -> bool:
    try:
        return conn is not None and conn.in_transaction
    except sqlite3.Error:  # closed
        return False


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return found.fetchone() is not None


def _close_quietly(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def _payload_damage(entry_id: str, payload: object) -> str | None:
    """Why a stored payload cannot be sent, or None when it is a JSON object with its id."""
    if not isinstance(payload, str):
        return "damaged row: the payload is not text"
    try:
        event = json.loads(payload)
    except ValueError as exc:
        return f"damaged row: the payload is not JSON ({exc.__class__.__name__})"
    if not isinstance(event, dict) or event.get("id") != entry_id:
        return "damaged row: the payload is not this event"
    return None


def _alive_segments(record: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    segments = record.get("segments")
    if isinstance(segments, dict):
        yield from segments.items()


def _seq_of(state: object) -> int:
    try:
        if isinstance(state, str):
            state = json.loads(state)
        return RunAccounting.restore(state).next_seq
    except (ValueError, TypeError):
        return -1


_OPEN: weakref.WeakSet[SqliteOutbox] = weakref.WeakSet()
_ABANDONED: list[sqlite3.Connection] = []


def _after_fork_in_child() -> None:
    # Only the parent's outboxes: another fork hook (a tracker's) may already
    # have opened a fresh one in this child.
    for outbox in list(_OPEN):
        if outbox._pid != os.getpid():
            outbox._abandon()
            _OPEN.discard(outbox)


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)


def open_outbox(
    spool_path: SpoolLocation,
    max_queue: int,
    *,
    sensor: str,
    endpoint: str,
    on_damage: Damage | None = None,
) -> Outbox:
    """The outbox ``spool_path`` asks for, or the best fallback; never raises.

    A corrupt spool file is renamed ``<name>.corrupt-<UTC time>``, a fresh one
    created, and what can still be read from the corrupt one is queued in it;
    a busy one is opened as soon as it is free; an unusable location
    (read-only, full, not a directory, a symlink) gives a :class:`MemoryOutbox`.
    Each case logs a warning.

    Args:
        spool_path: None (memory), :data:`DEFAULT_SPOOL`, or the spool file.
        max_queue: Most events held.
        sensor: The sensor IRI (names the default spool file; owns its rows).
        endpoint: The endpoint (with the sensor, owns its rows).
        on_damage: Told about damaged rows set aside.
    """
    try:
        path = resolve_spool_path(spool_path, sensor)
    except (TypeError, ValueError, RuntimeError) as exc:  # RuntimeError: no home directory
        log.warning("no usable spool location (%s): keeping events in memory only", exc)
        return MemoryOutbox(max_queue)
    if path is None:
        return MemoryOutbox(max_queue)
    aside: Path | None = None
    for first_try in (True, False):
        try:
            outbox = SqliteOutbox(
                path, max_queue, sensor=sensor, endpoint=endpoint, on_damage=on_damage
            )
        except (sqlite3.Error, OSError) as exc:
            if first_try and is_corrupt(exc):
                try:
                    aside = move_aside(path)
                except OSError as move_error:
                    exc = move_error
                else:
                    log.warning(
                        "spool %s is corrupt (%s): moved it to %s; starting a fresh spool",
                        path,
                        _describe(exc),
                        aside.name,
                    )
                    continue
            log.warning(
                "spool %s is unusable (%s): keeping events in memory only", path, _describe(exc)
            )
            break
        if aside is not None:
            outbox.salvage(aside)
        return outbox
    return MemoryOutbox(max_queue)
