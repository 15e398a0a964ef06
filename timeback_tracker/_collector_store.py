"""The ``--store`` of ``timeback-tracker collector``: each accepted event, recorded once.

A file ending in ``.sqlite``, ``.sqlite3`` or ``.db`` gets a SQLite table
``events`` (id, run_id, type, event_time, received_at, json); any other file
gets JSON lines (one event per line, appended), which ``timeback-tracker
validate`` reads. Either is created owner-only (0600) by the spool's own rule,
and a symlink planted where it goes is refused. ``sqlite3`` is
imported only when a SQLite store is opened.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from timeback_tracker._spool_file import open_private

if TYPE_CHECKING:
    import sqlite3

__all__ = ["Store", "StoreError", "open_store"]

_SQLITE_SUFFIXES: Final = (".sqlite", ".sqlite3", ".db")
_STORE_COLUMNS: Final = ("id", "run_id", "type", "event_time", "received_at", "json")


class StoreError(Exception):
    """The store file cannot be used; the message says why."""


class Store(Protocol):
    """Where the collector records each accepted event."""

    def add(self, event: dict[str, Any]) -> None:
        """Record ``event`` unless its id is recorded already."""

    def close(self) -> None:
        """Close the file."""


def open_store(path: Path) -> Store:
    """Open (or create) the store at ``path``, SQLite or JSON lines by its suffix.

    Raises:
        StoreError: It cannot be opened or is not a store of this shape.
    """
    import sqlite3

    try:
        if path.suffix.lower() in _SQLITE_SUFFIXES:
            return _SqliteStore(path)
        return _JsonLinesStore(path)
    except (OSError, sqlite3.Error) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise StoreError(f"--store {path}: cannot use it: {reason}") from None


def _received_at() -> str:
    from datetime import datetime, timezone

    from timeback_tracker._serialization import format_timestamp

    return format_timestamp(datetime.now(timezone.utc))


class _JsonLinesStore:
    """Appends each event (its wire JSON, one line) the first time its id is seen."""

    def __init__(self, path: Path) -> None:
        descriptor = open_private(path, os.O_WRONLY | os.O_APPEND)
        self._file = os.fdopen(descriptor, "a", encoding="utf-8")
        self._lock = threading.Lock()
        self._stored: set[object] = set()

    def add(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            if event.get("id") in self._stored:
                return
            self._file.write(line)
            self._file.flush()
            self._stored.add(event.get("id"))

    def close(self) -> None:
        with self._lock:
            self._file.close()


class _SqliteStore:
    """Inserts each event into the ``events`` table, keyed (and so deduplicated) by id."""

    def __init__(self, path: Path) -> None:
        import sqlite3

        os.close(open_private(path))
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False)
        try:
            # WAL: a commit per event without an fsync each; readers see the table meanwhile.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self._db:
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS events ("
                    " id TEXT PRIMARY KEY, run_id TEXT, type TEXT NOT NULL,"
                    " event_time TEXT NOT NULL, received_at TEXT NOT NULL, json TEXT NOT NULL)"
                )
            _check_columns(self._db)
        except BaseException:
            self._db.close()
            raise

    def add(self, event: dict[str, Any]) -> None:
        extensions = event.get("extensions")
        run = extensions.get("runId") if isinstance(extensions, dict) else None
        row = (
            event.get("id"),
            run,
            event.get("type"),
            event.get("eventTime"),
            _received_at(),
            json.dumps(event, ensure_ascii=False, separators=(",", ":")),
        )
        with self._lock, self._db:
            self._db.execute("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?)", row)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _check_columns(db: sqlite3.Connection) -> None:
    import sqlite3

    columns = tuple(row[1] for row in db.execute("PRAGMA table_info(events)"))
    if columns != _STORE_COLUMNS:
        raise sqlite3.DatabaseError(
            "its table 'events' has other columns than the collector's "
            f"({', '.join(_STORE_COLUMNS)})"
        )
