"""The durable outbox: a SQLite spool file that outlives crashes, power loss and restarts.

Every ``put`` is committed (WAL, ``synchronous=FULL``) before it returns; an
entry is deleted only when acknowledged, so delivery is at-least-once with the
same event id. Any number of processes may append to one spool; one at a time
drains it, holding ``<spool>.drain.lock``. Every :class:`SqliteOutbox` also
holds an owner lock (``<spool>.owner-<token>.lock``) for as long as it is
open, which tells the others it is alive: :meth:`SqliteOutbox.recover` emits
only the crash checkpoints of owners whose lock is free.

The tracker never crashes because of its spool. :func:`open_outbox` moves a
corrupt file aside and starts afresh, and falls back to memory when the
location is unusable; when a write fails later (disk full, read-only), events
are kept in memory, a warning is logged, and the spool is tried again every
:data:`RETRY_INTERVAL` seconds and at close.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import re
import sqlite3
import stat
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from timeback_tracker._locations import SpoolLocation, default_directory, resolve_spool_path
from timeback_tracker._outbox import (
    Admission,
    Drop,
    Entry,
    MemoryOutbox,
    Merge,
    Outbox,
    merge_windows,
    plan_admission,
)

if sys.platform == "win32":
    import msvcrt
else:
    import fcntl

log = logging.getLogger("timeback_tracker.spool")

__all__ = ["SqliteOutbox", "open_outbox"]


BUSY_TIMEOUT = 5.0
"""Seconds a statement waits for another process's write lock before failing."""

RETRY_INTERVAL = 30.0
"""Seconds between two tries of a spool that refused a write, while events wait in memory."""

SCHEMA_VERSION = 1
_TABLES = (
    """CREATE TABLE IF NOT EXISTS entries (
        slot INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        run_id TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('time', 'completion')),
        first_seq INTEGER,
        last_seq INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        event_time_ms INTEGER NOT NULL,
        queued_ms INTEGER NOT NULL,
        payload TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS dead_letters (
        n INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL,
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
    """CREATE TABLE IF NOT EXISTS checkpoints (
        run_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        id TEXT NOT NULL,
        kind TEXT NOT NULL,
        first_seq INTEGER,
        last_seq INTEGER,
        event_time_ms INTEGER NOT NULL,
        payload TEXT NOT NULL,
        updated_ms INTEGER NOT NULL
    )""",
)
_REQUIRED_COLUMNS = {
    "entries": {"slot", "id", "run_id", "kind", "first_seq", "last_seq", "attempts"}
    | {"event_time_ms", "queued_ms", "payload"},
    "dead_letters": {"n", "id", "payload", "reason", "dead_ms"},
    "checkpoints": {"run_id", "owner", "id", "payload", "updated_ms"},
}
_OWNER_LOCK = re.compile(r"\.owner-([0-9a-f]{32})\.lock\Z")
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _prepare_directory(directory: Path) -> None:
    """Create the spool's directory owner-only; tighten the default one if it is looser."""
    try:
        directory.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        if not directory.is_dir():
            raise NotADirectoryError(f"not a directory: {directory}") from None
        if directory == default_directory():
            _tighten(directory, 0o700)
    else:
        if os.name == "posix":
            os.chmod(directory, 0o700)  # mkdir's mode is subject to the umask


def _tighten(path: Path, mode: int) -> None:
    """Take away group and other permissions from an existing file or directory."""
    if os.name != "posix":
        return
    current = stat.S_IMODE(os.stat(path).st_mode)
    if current & 0o077:
        log.warning(
            "%s was accessible to other users (mode %o); made it owner-only (%o)",
            path,
            current,
            current & mode,
        )
        os.chmod(path, current & mode)


def _create_private(path: Path) -> None:
    """Create ``path`` as an empty owner-only (0600) file, or tighten the existing one."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _CLOEXEC, 0o600)
    except FileExistsError:
        if not path.is_file():
            raise IsADirectoryError(f"not a regular file: {path}") from None
        _tighten(path, 0o600)
        return
    try:
        if os.name == "posix":
            os.fchmod(fd, 0o600)  # the umask may have taken bits the owner needs
    finally:
        os.close(fd)


def _open_lock_file(path: Path) -> int:
    """An open descriptor of the owner-only lock file ``path`` (created if missing)."""
    _create_private(path)
    return os.open(path, os.O_RDWR | _CLOEXEC)


if sys.platform == "win32":

    def _try_lock(fd: int) -> bool:
        """Take the exclusive lock of an open lock file without waiting; False if held."""
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

else:

    def _try_lock(fd: int) -> bool:
        """Take the exclusive lock of an open lock file without waiting; False if held."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def _lock_or_fail(fd: int, path: Path) -> None:
    if not _try_lock(fd):
        raise BlockingIOError(f"lock held by another process: {path}")


def _remove_lock_file(path: Path, fd: int | None) -> None:
    """Delete a lock file whose lock ``fd`` holds (POSIX), then let go of it."""
    with contextlib.suppress(OSError):
        os.unlink(path)  # Windows refuses while it is open: retried below
    if fd is not None:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(path)


# -- the database ---------------------------------------------------------------------------


class _CorruptSpoolError(sqlite3.DatabaseError):
    """The file is not a usable spool: it fails the integrity check or has a foreign schema."""


class _NewerSpoolError(sqlite3.OperationalError):
    """The spool was written by a newer version of the library; leave it alone."""


def _is_corrupt(error: BaseException) -> bool:
    # "file is not a database" and "database disk image is malformed" are plain
    # DatabaseErrors; OperationalError and the others mean trouble elsewhere.
    return type(error) is sqlite3.DatabaseError or isinstance(error, _CorruptSpoolError)


def _connect(path: Path, *, create: bool) -> sqlite3.Connection:
    """Open a spool in WAL mode with power-loss durability, checked, with its schema."""
    conn = sqlite3.connect(
        str(path), timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {round(BUSY_TIMEOUT * 1000)}")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA fullfsync = ON")  # macOS: an fsync that reaches the disk itself
        _check_integrity(conn)
        _ensure_schema(conn, create=create)  # before any change to a file that may not be ours
        mode = _enable_wal(conn)
        if mode != "wal":
            log.warning("spool %s: WAL mode unavailable, using journal mode %s", path, mode)
    except BaseException:
        conn.close()
        raise
    return conn


def _enable_wal(conn: sqlite3.Connection) -> str:
    """Switch to WAL mode; returns the journal mode in force."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
        except sqlite3.OperationalError as exc:
            # The switch needs the file to itself and SQLite does not wait for it:
            # a process opening a fresh spool at the same moment makes it fail.
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _check_integrity(conn: sqlite3.Connection) -> None:
    problems = conn.execute("PRAGMA quick_check").fetchall()
    if problems != [("ok",)]:
        raise _CorruptSpoolError(f"integrity check failed ({len(problems)} problems)")


def _ensure_schema(conn: sqlite3.Connection, *, create: bool) -> None:
    with _transaction(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise _NewerSpoolError(f"spool format {version} is newer than {SCHEMA_VERSION}")
        if version == 0:
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables or not create:
                raise _CorruptSpoolError("not a timeback-tracker spool")
            for statement in _TABLES:
                conn.execute(statement)
            conn.execute("CREATE INDEX IF NOT EXISTS checkpoints_owner ON checkpoints (owner)")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        for table, required in _REQUIRED_COLUMNS.items():
            found = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            if not required <= found:
                raise _CorruptSpoolError(f"table {table} is missing or foreign")


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: all or nothing, and durable once the block exits."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def _json(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _entry(row: Sequence[Any], payload: str | None) -> Entry:
    """The Entry of a row of ``id, run_id, kind, first_seq, last_seq, attempts, event_time_ms``.

    An empty ``payload`` means: not loaded (the metadata-only rows of the full path).
    """
    entry_id, run_id, kind, first_seq, last_seq, attempts, event_time_ms = row
    return Entry(
        id=entry_id,
        run_id=run_id,
        kind="completion" if kind == "completion" else "time",
        event_time_ms=event_time_ms,
        payload=json.loads(payload) if payload else {},
        first_seq=first_seq,
        last_seq=last_seq,
        attempts=attempts,
    )


def _values(entry: Entry) -> tuple[Any, ...]:
    return (
        entry.id,
        entry.run_id,
        entry.kind,
        entry.first_seq,
        entry.last_seq,
        entry.attempts,
        entry.event_time_ms,
    )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


# -- the outbox -------------------------------------------------------------------------------


class SqliteOutbox:
    """An outbox in a SQLite file: durable, bounded, FIFO, shared by processes.

    Implements :class:`~timeback_tracker._outbox.Outbox` with the semantics of
    :class:`~timeback_tracker._outbox.MemoryOutbox` (the same coalescing rule
    when full). Thread-safe. Open it through :func:`open_outbox`, which turns
    every failure into a fallback.

    Args:
        path: The spool file; created (owner-only) with its directory if missing.
        max_queue: Most events held in the spool.
        drain_wait: Seconds ``take`` waits before returning nothing while
            another process drains the spool, so a caller that polls does not spin.

    Raises:
        sqlite3.DatabaseError: The file is corrupt or not a spool.
        sqlite3.OperationalError: The file cannot be opened or written.
        OSError: The directory or the lock files cannot be created.
    """

    def __init__(
        self, path: str | os.PathLike[str], max_queue: int, *, drain_wait: float = 0.0
    ) -> None:
        self._path = Path(path)
        self._max = max_queue
        self._drain_wait = drain_wait
        self._pid = os.getpid()
        self.owner = uuid.uuid4().hex
        """This instance's token in the checkpoints table and its owner lock file."""
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()
        self._overflow: MemoryOutbox | None = None  # set while the spool refuses writes
        self._pending_checkpoints: dict[str, Entry | None] = {}
        self._retry_at = 0.0
        self._take_failing = False
        self._closed = False
        self._woken = threading.Event()
        self._count = 0
        self._drain_fd: int | None = None
        self._owner_fd: int | None = None
        _prepare_directory(self._path.parent)
        _create_private(self._path)
        self._conn = _connect(self._path, create=True)
        try:
            # Inside a write transaction, so recover() in another process never
            # sees the lock file between its creation and its locking.
            with _transaction(self._conn):
                self._owner_fd = _open_lock_file(self._owner_lock(self.owner))
                _lock_or_fail(self._owner_fd, self._owner_lock(self.owner))
            for suffix in ("-wal", "-shm"):
                companion = Path(f"{self._path}{suffix}")
                if companion.exists():
                    _tighten(companion, 0o600)
            self._count = self._count_rows()
        except BaseException:
            self._conn.close()
            if self._owner_fd is not None:
                _remove_lock_file(self._owner_lock(self.owner), self._owner_fd)
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
        """Events held by the spool (every process's) and in this one's memory overflow."""
        # Never wait long: the app thread asks (stats()), and a put may be
        # waiting for another process's write lock.
        if self._lock.acquire(timeout=0.05):
            try:
                if not self._closed:
                    with contextlib.suppress(sqlite3.Error):
                        self._count = self._count_rows()
                memory = len(self._overflow) if self._overflow is not None else 0
            finally:
                self._lock.release()
            return self._count + memory
        overflow = self._overflow
        return self._count + (len(overflow) if overflow is not None else 0)

    # -- producers --------------------------------------------------------------------------

    def put(self, entry: Entry) -> Admission:
        """Add an entry, committed to disk before returning; if full, coalesce or drop."""
        return self.put_many([entry])

    def put_many(
        self, entries: Sequence[Entry], checkpoints: Mapping[str, Entry | None] | None = None
    ) -> Admission:
        """Add entries and replace run checkpoints in one durable transaction.

        Never raises for a spool problem: if the write fails, the entries are
        kept in memory (and the checkpoint changes applied when the spool
        works again), and a warning is logged.

        Args:
            entries: Entries to add, in order; ids already held are ignored.
            checkpoints: run id -> the run's open window (emitted by
                :meth:`recover` if this process dies), or None to clear it.
        """
        changes = dict(checkpoints or {})
        with self._lock:
            if self._closed:
                log.warning(
                    "spool %s is closed: %d events kept in memory only", self._path, len(entries)
                )
            elif self._overflow is None or self._restore(force=False):
                try:
                    with _transaction(self._conn):
                        admission = self._admit_all(entries)
                        self._write_checkpoints(changes)
                except (sqlite3.Error, OSError) as exc:
                    self._degrade(exc)
                else:
                    with contextlib.suppress(sqlite3.Error):
                        self._count = self._count_rows()
                    return admission
            self._pending_checkpoints.update(changes)
            return self._memory().put_many(entries)

    def recover(self) -> list[Entry]:
        """Emit the checkpoints of dead owners as entries at the tail, once.

        A checkpoint whose owner's lock is free (the process died, or closed
        without ending its runs) becomes a normal entry, unless an entry with
        its id is held already (that one wins); the checkpoint and the dead
        owner's lock file are then deleted. Checkpoints of live owners stay.

        Returns:
            The entries added.
        """
        added: list[Entry] = []
        dropped = 0
        runs: set[str] = set()
        held: list[tuple[Path, int | None]] = []
        with self._lock:
            if self._closed:
                return []
            try:
                with _transaction(self._conn):
                    rows = self._conn.execute(
                        "SELECT owner, id, run_id, kind, first_seq, last_seq, 0, event_time_ms, "
                        "payload FROM checkpoints WHERE owner != ? ORDER BY updated_ms",
                        (self.owner,),
                    ).fetchall()
                    dead = self._dead_owners({row[0] for row in rows}, held)
                    for row in rows:
                        if row[0] not in dead:
                            continue
                        entry = _entry(row[1:-1], row[-1])
                        runs.add(entry.run_id)
                        if self._holds(entry.id):
                            continue
                        admission = self._admit(entry)
                        dropped += len(admission.dropped)
                        if entry not in admission.dropped:
                            added.append(entry)
                    self._conn.executemany(
                        "DELETE FROM checkpoints WHERE owner = ?", [(owner,) for owner in dead]
                    )
                    for path, _ in held:
                        with contextlib.suppress(OSError):
                            os.unlink(path)
            except (sqlite3.Error, OSError) as exc:
                log.warning(
                    "spool %s: recovery failed (%s); retried at the next start",
                    self._path,
                    _describe(exc),
                )
                return []
            finally:
                for path, fd in held:
                    _remove_lock_file(path, fd)
            self._count = self._count_rows()
        if runs:
            log.info(
                "spool %s: recovered %d windows of %d runs cut short by a dead process",
                self._path,
                len(added),
                len(runs),
            )
        if dropped:
            log.warning("spool %s: full: dropped %d events while recovering", self._path, dropped)
        return added

    def close(self) -> None:
        """Move events kept in memory to the spool if possible, then let go of file and locks.

        Idempotent. Checkpoints still held become recoverable by the next
        :meth:`recover`, since this owner is no longer alive.
        """
        with self._lock:
            if self._closed:
                return
            overflow = self._overflow
            if overflow is not None and not self._restore(force=True) and len(overflow):
                log.warning(
                    "spool %s: closing with %d events that could not be written: they are lost",
                    self._path,
                    len(overflow),
                )
            self._closed = True
            self._woken.set()
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            if self._drain_fd is not None:
                os.close(self._drain_fd)  # never unlink it: another process may be opening it
                self._drain_fd = None
            if self._owner_fd is not None:
                _remove_lock_file(self._owner_lock(self.owner), self._owner_fd)
                self._owner_fd = None
        _OPEN.discard(self)

    # -- the delivery thread ----------------------------------------------------------------

    def take(self, limit: int) -> list[Entry]:
        """The oldest entries not in flight, now in flight, their attempts counted on disk.

        Only the process holding the drain lock takes from the spool; any
        other gets ``[]`` (after ``drain_wait`` seconds).
        """
        with self._lock:
            draining = self._can_drain()
            batch = self._take_from_disk(limit) if draining else []
            if draining and self._overflow is not None and len(batch) < limit:
                batch += self._overflow.take(limit - len(batch))
        if not draining:
            self._woken.wait(self._drain_wait)
        return batch

    def ack(self, entries: Iterable[Entry]) -> None:
        """Delete delivered entries."""
        batch = list(entries)
        with self._lock:
            self._settle(batch)
            if self._overflow is not None:
                self._overflow.ack(batch)
            if self._closed or not batch:
                return
            try:
                with _transaction(self._conn):
                    self._conn.executemany(
                        "DELETE FROM entries WHERE id = ?", [(entry.id,) for entry in batch]
                    )
            except (sqlite3.Error, OSError) as exc:
                log.warning(
                    "spool %s: could not delete %d delivered events (%s); they will be sent again",
                    self._path,
                    len(batch),
                    _describe(exc),
                )

    def release(self, entries: Iterable[Entry]) -> None:
        """Make entries takeable again, at their place."""
        batch = list(entries)
        with self._lock:
            self._settle(batch)
            if self._overflow is not None:
                self._overflow.release(batch)

    def dead_letter(self, entries: Iterable[Entry], reason: str) -> None:
        """Move entries to the ``dead_letters`` table with ``reason``, in one transaction."""
        batch = list(entries)
        with self._lock:
            self._settle(batch)
            if self._overflow is not None:
                self._overflow.dead_letter(batch, reason)
            if self._closed:
                return
            try:
                with _transaction(self._conn):
                    self._move_to_dead_letters(batch, reason, _now_ms())
            except (sqlite3.Error, OSError) as exc:
                log.warning(
                    "spool %s: could not set aside %d events (%s)",
                    self._path,
                    len(batch),
                    _describe(exc),
                )

    @property
    def dead_letters(self) -> list[tuple[Entry, str]]:
        """The dead letters, oldest first, with their reasons (as in MemoryOutbox)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, run_id, kind, first_seq, last_seq, attempts, event_time_ms, "
                "payload, reason FROM dead_letters ORDER BY n"
            ).fetchall()
            memory = list(self._overflow.dead_letters) if self._overflow is not None else []
        return [(_entry(row[:-2], row[-2]), row[-1]) for row in rows] + memory

    # -- internals (self._lock held) ----------------------------------------------------------

    def _owner_lock(self, owner: str) -> Path:
        return self._path.with_name(f"{self._path.name}.owner-{owner}.lock")

    def _can_drain(self) -> bool:
        if self._drain_fd is not None:
            return True
        if self._closed:
            return False
        try:
            fd = _open_lock_file(self._path.with_name(f"{self._path.name}.drain.lock"))
        except OSError as exc:
            log.debug("spool %s: cannot open the drain lock: %s", self._path, _describe(exc))
            return False
        if not _try_lock(fd):
            os.close(fd)
            return False
        self._drain_fd = fd
        log.debug("spool %s: this process drains it now", self._path)
        return True

    def _take_from_disk(self, limit: int) -> list[Entry]:
        try:
            with _transaction(self._conn):
                rows = self._conn.execute(
                    "SELECT slot, id, run_id, kind, first_seq, last_seq, attempts, event_time_ms, "
                    "payload FROM entries ORDER BY slot LIMIT ?",
                    (limit + len(self._in_flight),),
                ).fetchall()
                rows = [row for row in rows if row[1] not in self._in_flight][:limit]
                # Counted before anyone sends them: an attempted window is never merged.
                self._conn.executemany(
                    "UPDATE entries SET attempts = attempts + 1 WHERE slot = ?",
                    [(row[0],) for row in rows],
                )
        except (sqlite3.Error, OSError) as exc:
            if not self._take_failing:
                log.warning("spool %s: cannot take events (%s)", self._path, _describe(exc))
            self._take_failing = True
            return []
        self._take_failing = False
        batch = []
        for row in rows:
            entry = _entry(row[1:-1], row[-1])
            entry.attempts += 1
            batch.append(entry)
        self._in_flight.update(entry.id for entry in batch)
        return batch

    def _settle(self, batch: list[Entry]) -> None:
        self._in_flight.difference_update(entry.id for entry in batch)

    def _count_rows(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM entries").fetchone()[0])

    def _holds(self, entry_id: str) -> bool:
        return (
            self._conn.execute("SELECT 1 FROM entries WHERE id = ?", (entry_id,)).fetchone()
            is not None
        )

    def _admit_all(self, entries: Sequence[Entry]) -> Admission:
        admission = Admission()
        for entry in entries:
            one = self._admit(entry)
            admission.coalesced += one.coalesced
            admission.dropped += one.dropped
        return admission

    def _admit(self, entry: Entry) -> Admission:
        """Insert one entry inside the open transaction, making room as MemoryOutbox does."""
        if self._holds(entry.id):
            return Admission()
        if self._count_rows() < self._max:
            self._insert(entry)
            return Admission()
        # Full, the rare path: read every row's metadata; payloads only as merges need them.
        held = [
            _entry(row, None)
            for row in self._conn.execute(
                "SELECT id, run_id, kind, first_seq, last_seq, attempts, event_time_ms "
                "FROM entries ORDER BY slot"
            )
        ]
        plan = plan_admission(held, entry, self._max, self._in_flight, self._merge)
        for step in plan.steps:
            if isinstance(step, Merge):
                self._apply_merge(step)
            elif isinstance(step, Drop) and step.entry is not entry:
                self._with_payload(step.entry)  # the caller is told what was dropped
                self._conn.execute("DELETE FROM entries WHERE id = ?", (step.entry.id,))
        if plan.admit:
            self._insert(entry)
        return plan.admission()

    def _merge(self, first: Entry, second: Entry) -> Entry | None:
        if first.kind != "time" or second.kind != "time":
            return None
        return merge_windows(self._with_payload(first), self._with_payload(second))

    def _with_payload(self, entry: Entry) -> Entry:
        if not entry.payload:
            row = self._conn.execute(
                "SELECT payload FROM entries WHERE id = ?", (entry.id,)
            ).fetchone()
            entry.payload = json.loads(row[0])
        return entry

    def _apply_merge(self, step: Merge) -> None:
        if step.gone is not None:
            self._conn.execute("DELETE FROM entries WHERE id = ?", (step.gone.id,))
        merged = step.merged
        # The merged window takes over the older one's slot: its place in the queue.
        self._conn.execute(
            "UPDATE entries SET id = ?, run_id = ?, kind = ?, first_seq = ?, last_seq = ?, "
            "attempts = ?, event_time_ms = ?, payload = ? WHERE id = ?",
            (*_values(merged), _json(merged.payload), step.keep.id),
        )

    def _insert(self, entry: Entry) -> None:
        self._conn.execute(
            "INSERT INTO entries (id, run_id, kind, first_seq, last_seq, attempts, "
            "event_time_ms, queued_ms, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*_values(entry), _now_ms(), _json(entry.payload)),
        )

    def _write_checkpoints(self, changes: Mapping[str, Entry | None]) -> None:
        now = _now_ms()
        for run_id, entry in changes.items():
            if entry is None:
                self._conn.execute("DELETE FROM checkpoints WHERE run_id = ?", (run_id,))
                continue
            self._conn.execute(
                "INSERT OR REPLACE INTO checkpoints (run_id, owner, id, kind, first_seq, "
                "last_seq, event_time_ms, payload, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    self.owner,
                    entry.id,
                    entry.kind,
                    entry.first_seq,
                    entry.last_seq,
                    entry.event_time_ms,
                    _json(entry.payload),
                    now,
                ),
            )

    def _move_to_dead_letters(self, batch: Sequence[Entry], reason: str, now: int) -> None:
        for entry in batch:
            self._conn.execute(
                "INSERT INTO dead_letters (id, run_id, kind, first_seq, last_seq, attempts, "
                "event_time_ms, queued_ms, payload, reason, dead_ms) "
                "SELECT id, run_id, kind, first_seq, last_seq, attempts, "
                "event_time_ms, queued_ms, payload, ?, ? FROM entries WHERE id = ?",
                (reason, now, entry.id),
            )
            self._conn.execute("DELETE FROM entries WHERE id = ?", (entry.id,))
        self._cap_dead_letters()

    def _add_dead_letter(self, entry: Entry, reason: str, now: int) -> None:
        self._conn.execute(
            "INSERT INTO dead_letters (id, run_id, kind, first_seq, last_seq, attempts, "
            "event_time_ms, queued_ms, payload, reason, dead_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*_values(entry), now, _json(entry.payload), reason, now),
        )
        self._cap_dead_letters()

    def _cap_dead_letters(self) -> None:
        # Dead letters are kept for inspection, not forever: the newest max_queue stay.
        excess = self._conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0] - self._max
        if excess > 0:
            self._conn.execute(
                "DELETE FROM dead_letters WHERE n IN "
                "(SELECT n FROM dead_letters ORDER BY n LIMIT ?)",
                (excess,),
            )
            log.warning("spool %s: deleted the %d oldest dead letters", self._path, excess)

    def _dead_owners(self, owners: set[str], held: list[tuple[Path, int | None]]) -> set[str]:
        """The owners among ``owners`` not alive; their lock files (locked) go to ``held``.

        Stale lock files of other dead owners are collected as well.
        """
        candidates = set(owners)
        prefix = f"{self._path.name}.owner-"
        for path in self._path.parent.glob(f"{glob.escape(prefix)}*.lock"):
            match = _OWNER_LOCK.search(path.name)
            if match and path.name.startswith(prefix):
                candidates.add(match.group(1))
        candidates.discard(self.owner)
        dead = set()
        for owner in sorted(candidates):
            path = self._owner_lock(owner)
            try:
                fd = os.open(path, os.O_RDWR | _CLOEXEC)
            except FileNotFoundError:
                fd = None
            if fd is not None and not _try_lock(fd):
                os.close(fd)
                continue  # alive
            dead.add(owner)
            held.append((path, fd))
        return dead & owners

    def _degrade(self, error: BaseException) -> None:
        """After a failed write: keep new events in memory, try the spool again later."""
        self._retry_at = time.monotonic() + RETRY_INTERVAL
        if self._overflow is None:
            log.warning(
                "spool %s: a write failed (%s); keeping new events in memory and retrying "
                "every %g s",
                self._path,
                _describe(error),
                RETRY_INTERVAL,
            )
        self._memory()

    def _memory(self) -> MemoryOutbox:
        if self._overflow is None:
            # Room for what the spool cannot hold: max_queue stays the bound overall.
            self._overflow = MemoryOutbox(max(1, self._max - self._count))
        return self._overflow

    def _restore(self, *, force: bool) -> bool:
        """Move the memory overflow back to the spool; True when the spool took it."""
        overflow = self._overflow
        if overflow is None:
            return True
        if not force and time.monotonic() < self._retry_at:
            return False
        held, in_flight = overflow.snapshot()
        if in_flight and not force:
            return False  # the delivery thread has some: try again later
        try:
            with _transaction(self._conn):
                admission = self._admit_all(held)
                self._write_checkpoints(self._pending_checkpoints)
                for entry, reason in overflow.dead_letters:
                    self._add_dead_letter(entry, reason, _now_ms())
        except (sqlite3.Error, OSError) as exc:
            self._retry_at = time.monotonic() + RETRY_INTERVAL
            log.debug("spool %s: still unusable (%s)", self._path, _describe(exc))
            return False
        self._overflow = None
        self._pending_checkpoints = {}
        self._in_flight.difference_update(entry.id for entry in held)
        self._count = self._count_rows()
        log.warning(
            "spool %s: writable again: moved %d events from memory to it (%d dropped)",
            self._path,
            len(held),
            len(admission.dropped),
        )
        return True

    def _abandon(self) -> None:
        """In a forked child: let go of the parent's handles without touching its locks."""
        self._lock = threading.Lock()  # may have been held by a thread that did not fork
        self._closed = True
        _ABANDONED.append(self._conn)  # closing it here could disturb the parent's use
        for fd in (self._drain_fd, self._owner_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)  # flock: the parent's lock stays, its descriptor is open
        self._drain_fd = self._owner_fd = None
        self._in_flight.clear()
        self._overflow = None


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


def open_outbox(spool_path: SpoolLocation, sensor: str, max_queue: int) -> Outbox:
    """The outbox ``spool_path`` asks for, or the best fallback; never raises.

    A corrupt spool file is renamed ``<name>.corrupt-<UTC time>`` and a fresh
    one created; an unusable location (read-only, full, not a directory) gives
    a :class:`MemoryOutbox`. Both cases log a warning.

    Args:
        spool_path: None (memory), :data:`DEFAULT_SPOOL`, or the spool file.
        sensor: The sensor IRI (names the default spool file).
        max_queue: Most events held.
    """
    try:
        path = resolve_spool_path(spool_path, sensor)
    except (TypeError, ValueError, RuntimeError) as exc:  # RuntimeError: no home directory
        log.warning("no usable spool location (%s): keeping events in memory only", exc)
        return MemoryOutbox(max_queue)
    if path is None:
        return MemoryOutbox(max_queue)
    for first_try in (True, False):
        try:
            return SqliteOutbox(path, max_queue)
        except (sqlite3.Error, OSError) as exc:
            if first_try and _is_corrupt(exc):
                try:
                    aside = _move_aside(path)
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
    return MemoryOutbox(max_queue)


def _move_aside(path: Path) -> Path:
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
