"""Inspecting and repairing a spool file (``timeback-tracker spool ...``).

:class:`SpoolFile` opens a spool without taking its drain lock, so it can be
used while a tracker runs; it never creates a file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from timeback_tracker._outbox import Entry
from timeback_tracker._spool_schema import connect, transaction

__all__ = ["AGE_BUCKETS", "SpoolFile", "SpoolRow", "SpoolStatus"]

AGE_BUCKETS = ("<1h", "<1d", "<7d", "older")
"""The age classes of :attr:`SpoolStatus.by_age`, youngest first."""


@attrs.frozen
class SpoolStatus:
    """What a spool holds.

    Attributes:
        queued: Entries waiting to be delivered (in flight included).
        by_kind: ``"time"`` / ``"completion"`` -> entries.
        by_age: Age of the event (see :data:`AGE_BUCKETS`) -> entries.
        oldest_event_ms: Event time of the oldest entry (epoch ms), None if empty.
        dead_letters: Entries set aside as undeliverable.
        dead_reasons: Reason -> dead letters.
        checkpoints: Open windows of runs, kept for crash recovery.
    """

    queued: int
    by_kind: Mapping[str, int]
    by_age: Mapping[str, int]
    oldest_event_ms: int | None
    dead_letters: int
    dead_reasons: Mapping[str, int]
    checkpoints: int


@attrs.frozen
class SpoolRow:
    """One entry of a spool as listed: queued, or dead with its reason.

    Attributes:
        entry: The entry (payload included).
        queued_ms: When it was put (epoch ms).
        reason: Why it was set aside; None while queued.
        dead_ms: When it was set aside (epoch ms); None while queued.
    """

    entry: Entry
    queued_ms: int
    reason: str | None = None
    dead_ms: int | None = None

    @property
    def dead(self) -> bool:
        """Whether the entry is a dead letter."""
        return self.reason is not None


class SpoolFile:
    """A spool opened for inspection and repair, without draining it.

    It takes neither the drain lock nor an owner lock, so it may be used while
    trackers run; its writes are transactions like theirs.

    Args:
        path: An existing spool file.

    Raises:
        FileNotFoundError: There is no such file.
        sqlite3.DatabaseError: The file is not a readable spool.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        if not self._path.is_file():
            raise FileNotFoundError(f"no spool file at {self._path}")
        self._conn = connect(self._path, create=False)

    def __repr__(self) -> str:
        return f"<SpoolFile path={str(self._path)!r}>"

    def __enter__(self) -> SpoolFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file."""
        self._conn.close()

    def status(self, now_ms: int | None = None) -> SpoolStatus:
        """Counts by kind and by age, dead letters by reason, checkpoints.

        Args:
            now_ms: The time ages are counted from (epoch ms); now when None.
        """
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        hour = 3_600_000
        conn = self._conn
        by_kind = dict(conn.execute("SELECT kind, count(*) FROM entries GROUP BY kind"))
        ages = dict(
            conn.execute(
                "SELECT CASE WHEN event_time_ms >= ? THEN 0 WHEN event_time_ms >= ? THEN 1 "
                "WHEN event_time_ms >= ? THEN 2 ELSE 3 END AS bucket, count(*) "
                "FROM entries GROUP BY bucket",
                (now - hour, now - 24 * hour, now - 7 * 24 * hour),
            )
        )
        reasons = dict(
            conn.execute(
                "SELECT reason, count(*) FROM dead_letters GROUP BY reason ORDER BY count(*) DESC"
            )
        )
        return SpoolStatus(
            queued=sum(by_kind.values()),
            by_kind=by_kind,
            by_age={name: ages.get(index, 0) for index, name in enumerate(AGE_BUCKETS)},
            oldest_event_ms=conn.execute("SELECT min(event_time_ms) FROM entries").fetchone()[0],
            dead_letters=sum(reasons.values()),
            dead_reasons=reasons,
            checkpoints=conn.execute(
                "SELECT count(*) FROM segments WHERE ended = 0 AND state IS NOT NULL"
            ).fetchone()[0],
        )

    def list_entries(self, include_dead: bool = False) -> list[SpoolRow]:
        """The queued entries in delivery order, then (if asked) the dead letters, oldest first."""
        rows = [
            SpoolRow(_entry(row[:-1]), row[-1])
            for row in self._conn.execute(
                "SELECT id, run_id, kind, first_seq, last_seq, attempts, event_time_ms, "
                "payload, queued_ms FROM entries ORDER BY slot"
            )
        ]
        if include_dead:
            rows += [
                SpoolRow(_entry(row[:-3]), row[-3], row[-2], row[-1])
                for row in self._conn.execute(
                    "SELECT id, run_id, kind, first_seq, last_seq, attempts, event_time_ms, "
                    "payload, queued_ms, reason, dead_ms FROM dead_letters ORDER BY n"
                )
            ]
        return rows

    def retry_dead(self) -> int:
        """Move every dead letter back to the tail of the queue, attempts reset.

        A dead letter whose id is queued already is dropped (the queued one
        goes). Events older than the tracker's ``max_event_age`` are set aside
        again when taken; raise that limit to send them.

        Returns:
            How many entries went back to the queue.
        """
        now = time.time_ns() // 1_000_000
        with transaction(self._conn):
            moved = self._conn.execute(
                "INSERT OR IGNORE INTO entries (id, dest, run_id, kind, first_seq, last_seq, "
                "attempts, event_time_ms, born_ms, queued_ms, payload) SELECT id, dest, run_id, "
                "kind, first_seq, last_seq, 0, event_time_ms, ?, ?, payload FROM dead_letters "
                "ORDER BY n",
                (now, now),
            ).rowcount
            self._conn.execute("DELETE FROM dead_letters")
        return int(moved)

    def purge_dead(self) -> int:
        """Delete every dead letter; returns how many."""
        with transaction(self._conn):
            return int(self._conn.execute("DELETE FROM dead_letters").rowcount)


def _entry(row: Sequence[Any]) -> Entry:
    """The entry of a row of ``id, run_id, kind, first_seq, last_seq, attempts, event_time_ms,
    payload``."""
    entry_id, run_id, kind, first_seq, last_seq, attempts, event_time_ms, payload = row
    return Entry(
        entry_id,
        run_id,
        "completion" if kind == "completion" else "time",
        event_time_ms,
        payload,
        first_seq,
        last_seq,
        attempts=attempts,
    )
