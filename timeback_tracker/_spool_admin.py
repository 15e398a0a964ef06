"""Inspecting and repairing a spool file (``timeback-tracker spool ...``).

:class:`SpoolFile` opens a spool without taking its drain lock, so it can be
used while a tracker runs; it never creates a file. It also tells which run
segments were cut short by a crash (:meth:`SpoolFile.open_runs`), by probing
their trackers' owner locks without keeping them.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import attrs

from timeback_tracker._outbox import Entry
from timeback_tracker._spool_entries import (
    DEAD_LETTER_COLUMNS,
    ENTRY_COLUMNS,
    row_entry,
    template_finder,
)
from timeback_tracker._spool_file import read_alive, try_lock
from timeback_tracker._spool_recovery import Plan, owner_plans
from timeback_tracker._spool_schema import connect, transaction

if sys.platform == "win32":
    import msvcrt

__all__ = [
    "AGE_BUCKETS",
    "Destination",
    "OpenRun",
    "SpoolFile",
    "SpoolRow",
    "SpoolStatus",
    "lock_held",
]

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


@attrs.frozen
class Destination:
    """One destination of a spool (a sensor and an endpoint) and what the spool holds for it.

    Attributes:
        key: The destination key its rows carry.
        sensor: The sensor IRI; None when the spool does not record it (rows of
            a 0.1 spool, adopted by the next tracker that opens it).
        endpoint: The endpoint URL; None when not recorded.
        last_used_ms: When a tracker last opened the spool for it (epoch ms).
        queued: Entries waiting to be delivered.
        dead_letters: Entries set aside as undeliverable.
        oldest_event_ms: Event time of the oldest queued entry, None if none.
    """

    key: str
    sensor: str | None
    endpoint: str | None
    last_used_ms: int | None
    queued: int
    dead_letters: int
    oldest_event_ms: int | None


@attrs.frozen
class OpenRun:
    """A run segment with a crash checkpoint: running, or cut short by a crash.

    Attributes:
        segment: The run segment's token.
        run_id: The run id.
        dest: The destination key its windows go to.
        alive: True while its tracker lives (its owner lock is held), False
            once that tracker is gone: the run was interrupted and the next
            tracker on the spool (or ``spool send``) queues its windows.
            None when the lock cannot be probed.
        seen_ms: Wall time of the state shown (the tracker's last sign of
            life or tick), epoch ms; None if unknown.
        windows: What a recovery would queue now, with the ids it would get.
        problem: Why the checkpoint cannot be recovered; None when it can.
    """

    segment: str
    run_id: str
    dest: str
    alive: bool | None
    seen_ms: int | None
    windows: tuple[Entry, ...] = ()
    problem: str | None = None

    @property
    def interrupted(self) -> bool:
        """Whether the run's tracker is gone (a crash, a kill, power loss)."""
        return self.alive is False


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

    @property
    def path(self) -> Path:
        """The spool file."""
        return self._path

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
        templates = template_finder(self._conn)
        rows = [
            SpoolRow(row_entry(row[:-1], templates, mergeable=False), row[-1])
            for row in self._conn.execute(
                f"SELECT {ENTRY_COLUMNS}, queued_ms FROM entries ORDER BY slot"  # noqa: S608
            )
        ]
        if include_dead:
            rows += [
                SpoolRow(row_entry(row[:-3]), row[-3], row[-2], row[-1])
                for row in self._conn.execute(
                    f"SELECT {DEAD_LETTER_COLUMNS}, queued_ms, reason, dead_ms "  # noqa: S608
                    "FROM dead_letters ORDER BY n"
                )
            ]
        return rows

    def retry_dead(self) -> int:
        """Move every dead letter back to the tail of the queue, attempts reset.

        A dead letter whose id is queued already is dropped (the queued one
        goes). Their age for ``max_event_age`` counts from now: an event set
        aside as too old is sent when retried.

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

    def queued_ids(self) -> list[str]:
        """The ids of the queued entries, in delivery order."""
        return [row[0] for row in self._conn.execute("SELECT id FROM entries ORDER BY slot")]

    def purge_queued(self, ids: Sequence[str]) -> int:
        """Delete the queued entries of ``ids`` (they are never sent); returns how many.

        By id rather than "all", so that what a tracker queued since the
        count was shown is kept.
        """
        with transaction(self._conn):
            cursor = self._conn.executemany(
                "DELETE FROM entries WHERE id = ?", [(entry_id,) for entry_id in ids]
            )
            return int(cursor.rowcount)

    def destinations(self) -> list[Destination]:
        """Every destination recorded or found in the rows, with its counts.

        Recorded destinations come first, by sensor and endpoint; rows whose
        destination is not recorded follow, under their key.
        """
        conn = self._conn
        queued = {
            dest: (count, oldest)
            for dest, count, oldest in conn.execute(
                "SELECT dest, count(*), min(event_time_ms) FROM entries GROUP BY dest"
            )
        }
        dead = dict(conn.execute("SELECT dest, count(*) FROM dead_letters GROUP BY dest"))
        recorded = conn.execute(
            "SELECT dest, sensor, endpoint, last_used_ms FROM destinations "
            "ORDER BY sensor, endpoint"
        ).fetchall()
        known = {row[0] for row in recorded}
        unknown = sorted((set(queued) | set(dead)) - known)
        found = []
        for key, sensor, endpoint, last_used in [
            *recorded,
            *((k, None, None, None) for k in unknown),
        ]:
            count, oldest = queued.get(key, (0, None))
            found.append(
                Destination(key, sensor, endpoint, last_used, count, dead.get(key, 0), oldest)
            )
        return found

    def open_runs(self) -> list[OpenRun]:
        """Run segments with a crash checkpoint, each with what a recovery would queue.

        The spool's own recovery decides (``_spool_recovery.owner_plans``).
        Whether a segment's tracker lives is probed with a non-blocking lock
        on its owner file, released at once.
        """
        conn = self._conn
        owners = {row[0] for row in conn.execute("SELECT DISTINCT owner FROM segments")}
        owners |= {row[0] for row in conn.execute("SELECT owner FROM owners")}
        owners |= set(self._lock_file_owners())
        runs = []
        for owner in sorted(owners - {""}):
            lock = self._owner_lock(owner)
            alive = lock_held(lock)
            for plan in owner_plans(conn, owner, read_alive(lock)):
                runs.append(self._open_run(alive, plan))
        return sorted(runs, key=lambda run: (run.seen_ms or 0, run.segment))

    def _open_run(self, alive: bool | None, plan: Plan) -> OpenRun:
        seen = _int_or_none(plan.wall_ms)
        try:
            entries = plan.windows()
        except ValueError as exc:  # a damaged checkpoint must not stop the listing
            return OpenRun(
                plan.segment, plan.run_id, plan.dest, alive, seen, (), f"damaged ({exc})"
            )
        held = {row[0] for row in self._conn.execute("SELECT id FROM entries")}
        # A recovery keeps a window already queued as it is.
        kept = tuple(entry for entry in entries if entry.id not in held)
        return OpenRun(plan.segment, plan.run_id, plan.dest, alive, seen, kept)

    def _owner_lock(self, owner: str) -> Path:
        return self._path.with_name(f"{self._path.name}.owner-{owner}.lock")

    def _lock_file_owners(self) -> Iterator[str]:
        """Owners known only by their lock file (a tracker killed before its first tick)."""
        prefix = f"{self._path.name}.owner-"
        with contextlib.suppress(OSError):
            for path in self._path.parent.iterdir():
                name = path.name
                if name.startswith(prefix) and name.endswith(".lock"):
                    token = name[len(prefix) : -len(".lock")]
                    if len(token) == 32 and all(c in "0123456789abcdef" for c in token):
                        yield token


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def lock_held(path: Path) -> bool | None:
    """Whether another open file holds the lock of the lock file ``path``.

    Probes with a non-blocking lock, released at once; never creates the
    file (a missing lock file is held by nobody). A tracker recovering the
    spool at that very instant takes the owner for alive and leaves its runs
    to the next recovery: nothing is lost.

    Returns:
        True (held), False (free or missing), None (cannot be told).
    """
    flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        if not try_lock(fd):
            return True
        if sys.platform == "win32":  # POSIX releases a flock with its file; Windows wants it said
            with contextlib.suppress(OSError):
                os.lseek(fd, 0, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return False
    finally:
        os.close(fd)
