"""The spool file on disk: created safely, locked, its schema, and the owners' signs of life.

Everything here is about files, not about the outbox that ``_spool.py`` builds
on them:

* private files: the directory is created ``0700`` level by level and the
  files ``0600``, whatever the umask; a symlink planted where a spool file
  goes is refused, never followed;
* lock files: ``<spool>.drain-<destination>.lock`` (one process at a time
  sends a destination's events) and ``<spool>.owner-<token>.lock`` (held
  while a tracker lives; it also carries the tracker's sign of life, see
  :class:`AliveRecord`);
* the SQLite schema, its upgrade from the 0.1 format, and salvaging what can
  be read from a corrupt file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import stat
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from timeback_tracker._locations import default_directory

if sys.platform == "win32":
    import msvcrt
else:
    import fcntl

log = logging.getLogger("timeback_tracker.spool")

__all__ = [
    "SCHEMA_VERSION",
    "AliveRecord",
    "CorruptSpoolError",
    "NewerSpoolError",
    "connect",
    "create_private",
    "destination",
    "is_busy",
    "is_corrupt",
    "move_aside",
    "open_lock_file",
    "prepare_directory",
    "remove_lock_file",
    "salvage",
    "transaction",
    "try_lock",
]

SCHEMA_VERSION = 2
PAGE_SIZE = 1024
"""Bytes per page of a new spool: small pages keep the bytes written per window small."""
WAL_LIMIT = 1 << 20
"""Bytes the write-ahead log is truncated to after a checkpoint."""

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)

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
    "CREATE INDEX entries_run ON entries (run_id, slot)",
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
    # One row per tracker that wrote here: alive_n is the number of its last
    # sign of life (AliveRecord) written before its last durable write, so a
    # recovery can tell whether the sign of life is newer than the spool.
    """CREATE TABLE owners (
        owner TEXT PRIMARY KEY,
        dest TEXT NOT NULL,
        alive_n INTEGER NOT NULL DEFAULT 0,
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
    "owners": {"owner", "dest", "alive_n"},
    "meta": {"key", "value"},
    "destinations": {"dest", "sensor", "endpoint"},
}


def destination(sensor: str, endpoint: str) -> str:
    """The key of a (sensor, endpoint) pair: whose events a row holds, without credentials."""
    return hashlib.sha256(f"{sensor}\n{endpoint}".encode()).hexdigest()[:16]


# -- private files --------------------------------------------------------------------------


def prepare_directory(directory: Path) -> None:
    """Create ``directory`` and missing parents owner-only (0700) whatever the umask.

    An existing directory keeps its mode, except the default one, which is
    made owner-only if it is looser.

    Raises:
        NotADirectoryError: Something else is in the way.
    """
    missing = []
    level = directory
    while not os.path.lexists(level):
        missing.append(level)
        if level.parent == level:
            break
        level = level.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass  # created meanwhile by another process
        else:
            if os.name == "posix":
                os.chmod(path, 0o700)  # mkdir's mode is subject to the umask
    if not directory.is_dir():
        raise NotADirectoryError(f"not a directory: {directory}")
    if directory == default_directory():
        tighten(directory, 0o700)


def tighten(path: Path, mode: int) -> None:
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


def refuse_symlink(path: Path) -> None:
    """Raise unless ``path`` is missing or a regular file (a planted symlink is refused).

    Raises:
        IsADirectoryError: ``path`` is a symlink, a directory or a device.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise IsADirectoryError(f"refusing a symlink where a spool file goes: {path}")
    if not stat.S_ISREG(mode):
        raise IsADirectoryError(f"not a regular file: {path}")


def create_private(path: Path) -> None:
    """Create ``path`` as an empty owner-only (0600) file, or tighten the existing one.

    Never follows a symlink.

    Raises:
        IsADirectoryError: ``path`` is a symlink or not a regular file.
    """
    refuse_symlink(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _CLOEXEC | _NOFOLLOW, 0o600)
    except FileExistsError:
        refuse_symlink(path)
        tighten(path, 0o600)
        return
    try:
        if os.name == "posix":
            os.fchmod(fd, 0o600)  # the umask may have taken bits the owner needs
    finally:
        os.close(fd)


def open_lock_file(path: Path) -> int:
    """An open descriptor of the owner-only lock file ``path`` (created if missing)."""
    create_private(path)
    return os.open(path, os.O_RDWR | _CLOEXEC | _NOFOLLOW)


if sys.platform == "win32":

    def try_lock(fd: int) -> bool:
        """Take the exclusive lock of an open lock file without waiting; False if held."""
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

else:

    def try_lock(fd: int) -> bool:
        """Take the exclusive lock of an open lock file without waiting; False if held."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def remove_lock_file(path: Path, fd: int | None) -> None:
    """Delete a lock file whose lock ``fd`` holds (POSIX), then let go of it."""
    with contextlib.suppress(OSError):
        os.unlink(path)  # Windows refuses while it is open: retried below
    if fd is not None:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(path)


# -- signs of life --------------------------------------------------------------------------


class AliveRecord:
    """A tracker's sign of life, kept in its owner lock file.

    Once a second, while sessions run, the tracker writes where each of its
    run segments is (template and accounting state) at offset 0 of its owner
    lock file, without ``fsync``: the page cache survives the process being
    killed, and costs next to nothing. Power loss may lose it; the record is
    then older than the spool's durable state, or fails its checksum, and
    the spool's state at the last tick is used instead.

    Layout: ``TTA2``, payload length (4 bytes), CRC-32 (4 bytes), JSON payload.
    """

    MAGIC = b"TTA2"
    _HEADER = struct.Struct(">4sII")

    @classmethod
    def write(cls, fd: int, payload: dict[str, Any]) -> None:
        """Replace the record in the lock file ``fd`` (one positioned write)."""
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        data = cls._HEADER.pack(cls.MAGIC, len(body), zlib.crc32(body)) + body
        if hasattr(os, "pwrite"):
            os.pwrite(fd, data, 0)
        else:  # Windows
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, data)

    @classmethod
    def read(cls, path: Path) -> dict[str, Any] | None:
        """The record in the lock file ``path``, or None when there is none or it is damaged."""
        try:
            with open(path, "rb") as file:
                header = file.read(cls._HEADER.size)
                if len(header) < cls._HEADER.size:
                    return None
                magic, length, crc = cls._HEADER.unpack(header)
                if magic != cls.MAGIC or length > 64 << 20:
                    return None
                body = file.read(length)
        except OSError:
            return None
        if len(body) != length or zlib.crc32(body) != crc:
            return None
        try:
            payload = json.loads(body)
        except ValueError:
            return None
        return payload if isinstance(payload, dict) else None


# -- the database ---------------------------------------------------------------------------


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
def transaction(conn: sqlite3.Connection, *, durable: bool = True) -> Iterator[None]:
    """One write transaction: all or nothing; with ``durable``, on disk once the block exits.

    A transaction that is not durable survives the process being killed (the
    page cache keeps it) but maybe not power loss; the next durable one
    makes it durable too. The connection never stays inside a transaction,
    even when the block is interrupted (Ctrl-C).
    """
    if conn.in_transaction:  # left open by an interruption at the worst moment
        conn.execute("ROLLBACK")
    conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
    conn.execute("BEGIN IMMEDIATE")
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


def salvage(path: Path) -> Iterator[dict[str, Any]]:
    """The queued rows that can still be read from a damaged spool, oldest first.

    Reads row by row, so a damaged page costs only the rows on it. Each row
    is a dict of ``id, dest, run_id, kind, event_time_ms, payload`` (``dest``
    is ``""`` in a 0.1 file) whose payload parses as a JSON object.
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
            for table in ("entries", "v1_entries"):
                yield from _salvage_table(conn, table)
        finally:
            conn.close()


def _salvage_table(conn: sqlite3.Connection, table: str) -> Iterator[dict[str, Any]]:
    try:
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    except sqlite3.Error:
        return
    if not {"slot", "id", "run_id", "kind", "event_time_ms", "payload"} <= columns:
        return
    wanted = ", ".join(c if c in columns else "''" for c in _SALVAGE_COLUMNS)
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
        found = dict(zip(_SALVAGE_COLUMNS, row, strict=True))
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
