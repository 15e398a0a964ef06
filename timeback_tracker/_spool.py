"""The durable outbox: a SQLite spool file that outlives crashes, power loss and restarts.

Events are committed (WAL, ``synchronous=FULL``) before ``put_many`` returns,
all of a tick's windows together in one commit; an entry is deleted only when
acknowledged, so delivery is at-least-once with the same event id.

Several trackers may share one spool file, each with its own *destination*
(sensor and endpoint): every row says whose it is, and a tracker sends only
its own destination's rows, holding ``<spool>.drain-<destination>.lock`` so
that one process at a time does. Each tracker also holds an owner lock
(``<spool>.owner-<token>.lock``) while it lives; it carries its sign of life.

The outbox's lifecycle and its public methods are here, longer than the ~600
lines other modules keep to: they share one lock and one open / in memory /
closed state, which read best in one place. The rows, the self-healing and
the recovery are in ``_spool_rows``, ``_spool_healing`` and ``_spool_recovery``.

Fork: the ``os.register_at_fork`` hook at the end of this module stays, where
a pid check at the next use would come too late. A forked child inherits the
owner and drain lock descriptors, and an ``flock`` lock belongs to the open
file, not the process: a child that never touches the spool would keep its
dead parent's owner lock held, and the parent's runs unrecoverable, for as
long as it lives. So the child closes them at once. The parent's SQLite
connection is only set aside (``_ABANDONED``), never closed or finalised in
the child: SQLite's documentation warns never to use a connection across
``fork`` (closing one is using it), which could disturb the parent's WAL.

Crash safety is nearly free. The accounting of a run is deterministic
between calls, so what a recovery needs is a run segment's template and its
accounting state: written durably with the tick's commit (``segments``), and
once a second, cheaply and without ``fsync``, into a file in memory (Linux;
elsewhere the owner lock file: :class:`~timeback_tracker._spool_file.AliveRecord`).
A process killed at any moment loses about a second; power loss up to one
heartbeat interval.
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
import logging
import os
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from timeback_tracker._events import RunTemplate
from timeback_tracker._locations import SpoolLocation, resolve_spool_path
from timeback_tracker._outbox import (
    Admission,
    AlreadyCompletedError,
    Checkpoint,
    Entry,
    MemoryOutbox,
    Outbox,
)
from timeback_tracker._spool_file import (
    AliveRecord,
    close_quietly,
    create_private,
    destination,
    memory_record,
    open_lock_file,
    open_private,
    prepare_directory,
    remove_alive,
    remove_lock_file,
    tighten,
    try_lock,
)
from timeback_tracker._spool_recovery import JOURNAL_LIMIT, SpoolRecovery, journal_item
from timeback_tracker._spool_rows import Damage, Drops, describe, now_ms
from timeback_tracker._spool_schema import (
    connect,
    is_busy,
    is_corrupt,
    is_full,
    move_aside,
    transaction,
)
from timeback_tracker._urls import safe_url

log = logging.getLogger("timeback_tracker.spool")

__all__ = ["BUSY_PATIENCE", "SqliteOutbox", "open_outbox"]

CLOSING_JOURNAL_LIMIT = 10_000
"""Most events left in the owner lock file when the spool refuses them at close."""

RECOUNT_EVERY = 0.5
"""Seconds between two counts of the rows, which cost a scan of an index."""

DEFERRED_DELETES = 64
"""Most delivered rows whose delete may wait for the next tick's commit (see ``ack``)."""

BUSY_PATIENCE = 0.25
"""Seconds a write waits for another process's write lock before the events wait in
memory instead (the app's thread may be the one writing: ``complete()``)."""


class SqliteOutbox(SpoolRecovery):
    """An outbox in a SQLite file: durable, bounded, FIFO, shared by processes.

    Implements :class:`~timeback_tracker._outbox.Outbox` with the semantics of
    :class:`~timeback_tracker._outbox.MemoryOutbox` (the same coalescing rule).
    Thread-safe. Open it through :func:`open_outbox`, which turns every
    failure into a fallback.

    One class in four layers, each in its own module: ``SpoolRows`` (reading
    and writing rows, inside a transaction) < ``SpoolHealing`` (memory while
    the file fails; recreating it) < ``SpoolRecovery`` (dead owners' windows)
    < this one (the lifecycle, locks, and the Outbox methods).

    Args:
        path: The spool file; created (owner-only) with its directory if missing.
        max_queue: Most events held in the spool.
        sensor: The tracker's sensor IRI.
        endpoint: The tracker's endpoint: with the sensor, whose rows are whose.
        on_damage: Told about every damaged row set aside.
        on_drop: Told about events dropped to make room for recovered windows.
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
        on_drop: Drops | None = None,
        drain_wait: float = 0.0,
    ) -> None:
        self._path = Path(path)
        self._max = max_queue
        self._sensor = sensor
        self._endpoint = endpoint
        self.dest = destination(sensor, endpoint)
        """This tracker's destination key: its rows carry it."""
        self._on_damage = on_damage
        self._on_drop = on_drop
        self._drain_wait = drain_wait
        self._pid = os.getpid()
        self.owner = uuid.uuid4().hex
        """This instance's token in the spool and in its owner lock file's name."""
        # Re-entrant: a signal handler interrupting a write on this thread gets
        # an error from SQLite ("within a transaction") instead of a deadlock.
        self._lock = threading.RLock()
        self._start_bookkeeping()
        self._drain_fd: int | None = None
        self._owner_fd: int | None = None
        self._memory_fd: int | None = None  # the sign of life, when kept in memory
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        prepare_directory(self._path.parent)
        self._owner_fd = open_lock_file(self._owner_lock(self.owner))
        if not try_lock(self._owner_fd):  # a fresh random name: never held
            raise BlockingIOError(f"lock held by another process: {self._owner_lock(self.owner)}")
        self._memory_fd = self._open_memory_record()
        try:
            self._open()
        except sqlite3.OperationalError as exc:
            if not (is_busy(exc) or is_full(exc)):
                self._release_owner()
                raise
            # Another process holds the file, or the disk is full for now: start in
            # memory and open it soon. Until then the windows of crashed runs may be
            # waiting in it, so every completion waits for its recovery (recover()).
            if is_busy(exc):
                log.warning("spool %s is busy; keeping events in memory until it is free", path)
            self._degrade(exc)
        except BaseException:
            self._release_owner()
            raise
        _OPEN.add(self)

    def _start_bookkeeping(self) -> None:
        """What this instance keeps in memory about the rows, the segments and failures."""
        self._in_flight: set[str] = set()
        self._delivered: set[str] = set()  # acknowledged, their delete not yet written
        self._damaged: dict[str, str] = {}  # damaged rows reported, not yet set aside
        self._overflow: MemoryOutbox | None = None  # events the spool could not take yet
        self._pending: dict[str, Checkpoint] = {}  # checkpoint changes not yet written
        self._completed_here: set[str] = set()  # completions not yet written
        self._ended: set[str] = set()  # segments ended by this tracker
        self._written_seq: dict[str, int] = {}  # segment -> open seq durably written
        self._known_segments: set[str] = set()  # segments with a row in the spool
        self._rendering: dict[str, RunTemplate] = {}  # templates their segments' rows hold
        self._templates: dict[str, RunTemplate | None] = {}
        self._alive: dict[str, Any] = {}  # segment -> its last sign of life (None: ended)
        self._alive_states: dict[str, Any] | None = None  # what the body written holds
        self._alive_crc: int | None = None  # the body's checksum, for its stamps
        self._count = 0  # rows of every destination: the bound applies to the file
        self._mine = 0  # rows of this destination: what this tracker has to deliver
        self._recount_at = 0.0
        self._retry_at = 0.0
        self._failures = 0
        self._recovery_at: float | None = None  # when a recovery that failed is tried again
        self._owed_runs: frozenset[str] | None = frozenset()  # runs it owes windows (None: all)
        self._take_failing = False
        self._mergeable_indexed = False  # entries_mergeable created by this instance
        self._closed = False
        self._woken = threading.Event()
        self._counting_until = 0.0  # monotonic: until then a tick's commit is expected

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

    @property
    def in_memory(self) -> int:
        """Events the spool could not take yet, waiting in memory."""
        overflow = self._overflow
        return len(overflow) if overflow is not None else 0

    def __len__(self) -> int:
        """Events of this tracker's destination held by the spool and in its memory overflow."""
        # Never wait long: the app thread asks (stats()), and a write may be
        # waiting for another process's write lock.
        # Counted from the file at most every RECOUNT_EVERY seconds (other processes
        # may add rows of this destination); kept up to date in between.
        overflow = self._overflow
        now = time.monotonic()
        if now >= self._recount_at and self._lock.acquire(timeout=0.05):
            try:
                if self._conn is not None and not self._closed:
                    with contextlib.suppress(sqlite3.Error):
                        self._recount()
                        self._recount_at = now + RECOUNT_EVERY
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
            now = now_ms()
            with transaction(conn):
                conn.execute(
                    "INSERT OR REPLACE INTO destinations (dest, sensor, endpoint, last_used_ms) "
                    "VALUES (?, ?, ?, ?)",
                    # Without its query, which may carry a key: nothing secret on disk.
                    (self.dest, self._sensor, self._endpoint and safe_url(self._endpoint), now),
                )
                conn.execute(
                    "INSERT OR REPLACE INTO owners (owner, dest, started_ms, updated_ms) "
                    "VALUES (?, ?, ?, ?)",
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

    def _open_memory_record(self) -> int | None:
        """The file in memory for this owner's sign of life (see ``memory_record``), or None."""
        path = memory_record(self._owner_lock(self.owner))
        if path is None:
            return None
        try:
            return open_private(path)
        except OSError as exc:
            log.debug("spool %s: sign of life kept in the lock file (%s)", self._path, exc)
            return None

    def _forget_memory_record(self) -> None:
        if self._memory_fd is not None:
            close_quietly(self._memory_fd)
            self._memory_fd = None
            remove_alive(self._owner_lock(self.owner))

    def _release_owner(self) -> None:
        self._forget_memory_record()
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
                    self._check_identity()
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
            # The sign of life must never lag behind what was closed in memory: a
            # kill now would otherwise rebuild a window that was sent already.
            for segment, checkpoint in changes.items():
                self._alive[segment] = (
                    None if checkpoint.state is None else self._alive_item(checkpoint)
                )
            self._write_alive()
            return admission

    def mark_alive(self, mono_ms: int, wall_ms: int, checkpoints: Sequence[Checkpoint]) -> None:
        """Write this tracker's sign of life (no fsync; see ``memory_record``).

        Also the moment to retry a spool that refused a write.
        """
        with self._lock:
            if self._closed or self._owner_fd is None:
                return
            self._usable(force=False)  # retries the spool when due
            if checkpoints:
                # A run counts time: a tick writes within an interval (see ack()).
                self._counting_until = time.monotonic() + 1.5
            segments: dict[str, Any] = {}
            moments: list[tuple[int, int]] = []  # when each snapshot was taken
            for checkpoint in checkpoints:
                segment = checkpoint.template.segment
                if segment in self._ended or checkpoint.state is None:
                    continue  # ended since the snapshot was taken
                if self._open_seq(checkpoint) < self._written_seq.get(segment, 0):
                    continue  # older than what the last tick wrote
                segments[segment] = self._alive_item(checkpoint)
                moments.append((checkpoint.mono_ms, checkpoint.wall_ms))
            for segment, checkpoint in self._pending.items():
                if checkpoint.state is None:
                    segments[segment] = None  # ended, not yet written: never recover it
            self._alive = segments
            states = {
                segment: None if item is None else (item["s"], "t" in item)
                for segment, item in segments.items()
            }
            if states != self._alive_states or self._overflow is not None:
                self._write_alive()
                if self._alive_crc is not None:
                    self._alive_states = states
            elif moments:
                # Nothing but the time changed since the body was written: only say so,
                # as of the earliest snapshot (every one held then).
                self._stamp_alive(*min(moments))

    def _alive_item(self, checkpoint: Checkpoint) -> dict[str, Any]:
        """A running segment in the sign of life: its state, and the moment it describes."""
        item: dict[str, Any] = {
            "s": checkpoint.state,
            "m": checkpoint.mono_ms,
            "w": checkpoint.wall_ms,
        }
        if checkpoint.template.segment not in self._known_segments:
            item["t"] = checkpoint.template.to_json()  # not in the spool yet
        return item

    def _write_alive(self) -> None:
        """Write the sign of life: the segments as last seen, and what waits in memory only."""
        self._alive_states = None  # what the body holds is known to mark_alive only
        self._alive_crc = None
        if self._owner_fd is None:
            return
        record = {"dest": self.dest, "segments": self._alive, "journal": self._journal()}
        if self._memory_fd is not None:
            try:
                self._alive_crc = AliveRecord.write(self._memory_fd, record)
            except OSError as exc:  # memory full: the lock file again, for good
                log.debug("spool %s: sign of life back in the lock file (%s)", self._path, exc)
                self._forget_memory_record()
            else:
                return
        try:
            self._alive_crc = AliveRecord.write(self._owner_fd, record)
        except OSError as exc:
            log.debug("spool %s: cannot write the sign of life: %s", self._path, exc)

    def _stamp_alive(self, mono_ms: int, wall_ms: int) -> None:
        """Vouch that the body written last still holds at ``mono_ms`` (see AliveRecord)."""
        fd = self._memory_fd if self._memory_fd is not None else self._owner_fd
        if fd is None or self._alive_crc is None:
            return
        try:
            AliveRecord.stamp(fd, self._alive_crc, mono_ms, wall_ms)
        except OSError:
            self._write_alive()  # the whole record, where it can go

    def _journal(self) -> list[dict[str, Any]]:
        """Completions waiting in memory, with their runs' windows: a kill must not lose them.

        Written (and so kept across a kill) only while the spool refuses writes.
        """
        if self._overflow is None:
            return []
        held, _ = self._overflow.snapshot()
        completed = {entry.run_id for entry in held if entry.kind == "completion"}
        return [journal_item(entry) for entry in held if entry.run_id in completed][:JOURNAL_LIMIT]

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
            offset = str(now_ms() // 1000)  # the new wall clock, to the second
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
                log.warning("spool %s: cannot note a clock step: %s", self._path, describe(exc))

    def close(self, timeout: float | None = None) -> int:
        """Write what waits in memory if possible, then let go of file and locks.

        Idempotent. Running segments' checkpoints stay recoverable by the next
        :meth:`recover`, since this owner is no longer alive. Events the spool
        still refuses are left in the owner lock file (its sign of life), which
        then stays behind for the next start to queue them.

        Args:
            timeout: Seconds to wait for a busy spool; :data:`BUSY_PATIENCE` when None.

        Returns:
            How many events could be kept nowhere (lost).
        """
        with self._lock:
            if self._closed:
                return 0
            if _in_transaction(self._conn):
                return 0  # a signal handler interrupted a write here: not now
            self._check_identity_quietly()
            if self._overflow is not None:
                deadline = time.monotonic() + (BUSY_PATIENCE if timeout is None else timeout)
                while True:
                    if self._conn is not None:
                        # Never wait for another process's lock past the deadline.
                        patience = max(0.0, min(BUSY_PATIENCE, deadline - time.monotonic()))
                        with contextlib.suppress(sqlite3.Error):
                            self._conn.execute(f"PRAGMA busy_timeout = {round(patience * 1000)}")
                    if self._restore() or time.monotonic() >= deadline:
                        break
                    time.sleep(0.05)
            lost = 0
            left = self._overflow
            if left is not None:
                lost = self._leave_in_lock_file(left)
            elif self._conn is not None:
                # The sign of life first: it must not outlive the tombstones of the
                # segments it still lists as running.
                self._alive = {}
                self._write_alive()
                self._tidy()
            self._closed = True
            self._woken.set()
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
            if self._drain_fd is not None:
                os.close(self._drain_fd)  # never unlink it: another process may be opening it
                self._drain_fd = None
            if left is None:
                self._release_owner()
            else:  # kept, unlocked, for the next recovery (which reads it, not memory)
                self._forget_memory_record()
                close_quietly(self._owner_fd)
                self._owner_fd = None
        _OPEN.discard(self)
        return lost

    def _leave_in_lock_file(self, left: MemoryOutbox) -> int:
        """Write what the spool refused into the sign of life; returns how many did not fit."""
        held, _ = left.snapshot()
        journal = [journal_item(entry) for entry in held[:CLOSING_JOURNAL_LIMIT]]
        self._alive = dict.fromkeys(self._ended)  # every segment ended
        record = {"dest": self.dest, "segments": self._alive, "journal": journal}
        try:
            AliveRecord.write(_required(self._owner_fd), record)
        except OSError as exc:
            log.warning(
                "spool %s: %d events could not be written before closing: they are lost (%s)",
                self._path,
                len(held),
                describe(exc),
            )
            return len(held)
        log.warning(
            "spool %s: %d events could not be written before closing: left in %s for the "
            "next start%s",
            self._path,
            len(journal),
            self._owner_lock(self.owner).name,
            "" if len(journal) == len(held) else f" ({len(held) - len(journal)} lost: too many)",
        )
        return len(held) - len(journal)

    # -- the delivery thread ----------------------------------------------------------------

    def take(self, limit: int) -> list[Entry]:
        """The oldest entries of this destination not in flight, now in flight.

        Only the process holding the destination's drain lock takes from the
        spool; any other gets ``[]`` (after ``drain_wait`` seconds). A row
        whose payload is damaged is set aside as a dead letter. While a failed
        recovery still owes a run windows, it is tried again here, and that
        run's completion is held back.
        """
        with self._lock:
            self._usable(force=False)
            if self._recovery_at is not None and time.monotonic() >= self._recovery_at:
                self.recover()
            draining = self._can_drain()
            from_disk = self._take_from_disk(limit) if draining else []
            batch = from_disk or []
            # What waits in memory is newer than every row on disk: it goes only when
            # the spool has nothing more (or cannot be read), so a run stays in order.
            if draining and self._overflow is not None and len(batch) < limit:
                batch += self._overflow.take(limit - len(batch), hold=self._held_back)
        if not draining:
            self._woken.wait(self._drain_wait)
        return batch

    def ack(self, entries: Iterable[Entry]) -> None:
        """Delete delivered entries (a commit without fsync: if it is lost, the same
        events go again with the same ids).

        While a run counts time, a few deletes wait for the next tick's commit
        instead (within an interval): one commit where there were two, and the
        disk written per session-hour drops by about a fifth. A kill meanwhile
        sends those events again, with the same ids and contents. A delete that
        fails (the spool busy) is likewise retried with the next write.
        Meanwhile those rows are never taken again.
        """
        batch = list(entries)
        with self._lock:
            from_disk = [entry.id for entry in batch if entry.id in self._in_flight]
            self._settle(batch, reached=True)
            if self._overflow is not None:
                self._overflow.ack(batch)
            if self._closed or self._conn is None or not from_disk:
                return
            self._delivered.update(from_disk)
            self._mine = max(0, self._mine - len(from_disk))
            if len(self._delivered) <= DEFERRED_DELETES and time.monotonic() < self._counting_until:
                return
            try:
                # Waits for another process's lock (0.25 s at most): a delete that fails
                # here is only retried with this process's next write.
                with transaction(self._conn, durable=False):
                    deleted = self._forget_delivered()
                    if not self._mine:
                        self._index_mergeable(wanted=False)
                self._delivered -= deleted
                self._count = max(0, self._count - len(deleted))
                if not self._mine:
                    self._shrink_wal()
            except (sqlite3.Error, OSError) as exc:
                log.debug(
                    "spool %s: could not delete %d delivered events yet (%s)",
                    self._path,
                    len(self._delivered),
                    describe(exc),
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
                transaction(self._conn, durable=False, wait=False),
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
                        self._bury(entry.id, reason, entry.payload)
            except (sqlite3.Error, OSError) as exc:
                log.warning(
                    "spool %s: could not set aside %d events (%s)",
                    self._path,
                    len(batch),
                    describe(exc),
                )

    # -- internals (self._lock held) ----------------------------------------------------------

    def _can_drain(self) -> bool:
        if self._drain_fd is not None:
            return True
        if self._closed:
            return False
        lock = self._path.with_name(f"{self._path.name}.drain-{self.dest}.lock")
        try:
            fd = open_lock_file(lock)
        except OSError as exc:
            log.debug("spool %s: cannot open the drain lock: %s", self._path, describe(exc))
            return False
        if not try_lock(fd):
            os.close(fd)
            return False
        self._drain_fd = fd
        log.debug("spool %s: this process sends destination %s now", self._path, self.dest)
        return True

    def _abandon(self) -> None:
        """In a forked child: let go of the parent's handles without touching its locks."""
        self._lock = threading.RLock()  # may have been held by a thread that did not fork
        self._closed = True
        if self._conn is not None:
            _ABANDONED.append(self._conn)  # closing it here could disturb the parent's use
        for fd in (self._drain_fd, self._owner_fd, self._memory_fd):
            if fd is not None:
                close_quietly(fd)  # flock: the parent's lock stays, its descriptor is open
        self._drain_fd = self._owner_fd = self._memory_fd = None
        self._in_flight.clear()
        self._overflow = None


def _required(fd: int | None) -> int:
    if fd is None:
        raise OSError("no owner lock file")
    return fd


def _in_transaction(conn: sqlite3.Connection | None) -> bool:
    try:
        return conn is not None and conn.in_transaction
    except sqlite3.Error:  # closed
        return False


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
    on_drop: Drops | None = None,
) -> Outbox:
    """The outbox ``spool_path`` asks for, or the best fallback; never raises.

    A corrupt spool file is renamed ``<name>.corrupt-<UTC time>``, a fresh one
    created, and what can still be read from the corrupt one is queued in it;
    a busy one is opened as soon as it is free, and one the full disk will not
    let grow as soon as it has room (events wait in memory meanwhile, and every
    completion waits for the windows of crashed runs the spool may hold); an
    unusable location (read-only, not a directory, a symlink) gives a
    :class:`MemoryOutbox`.
    Each case logs a warning.

    Args:
        spool_path: None (memory), :data:`DEFAULT_SPOOL`, or the spool file.
        max_queue: Most events held.
        sensor: The sensor IRI (names the default spool file; owns its rows).
        endpoint: The endpoint (with the sensor, owns its rows).
        on_damage: Told about damaged rows set aside.
        on_drop: Told about events dropped to make room for recovered windows.
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
                path,
                max_queue,
                sensor=sensor,
                endpoint=endpoint,
                on_damage=on_damage,
                on_drop=on_drop,
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
                        describe(exc),
                        aside.name,
                    )
                    continue
            log.warning(
                "spool %s is unusable (%s): keeping events in memory only", path, describe(exc)
            )
            break
        if aside is not None:
            outbox.salvage(aside)
        return outbox
    return MemoryOutbox(max_queue)
