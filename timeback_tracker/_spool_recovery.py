"""Crash recovery: the open windows of trackers that died, rebuilt with the ids they would have had.

A tracker leaves, for each running run segment, its accounting state: durably
in the spool at every tick (``segments``), and once a second in the sign of
life (:class:`~timeback_tracker._spool_file.AliveRecord`).
:class:`SpoolRecovery` finds the owners whose lock is free, takes the newer of
the two states of each segment (never one older than what the spool already
holds), replays the accounting up to the owner's last sign of life, and queues
the windows for the owner's destination. It also queues what can be read from
a corrupt spool moved aside, and the 0.1 format's checkpoints.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from timeback_tracker._accounting import RunAccounting
from timeback_tracker._events import RunTemplate
from timeback_tracker._outbox import Entry, admit
from timeback_tracker._rules import DAY_SECONDS
from timeback_tracker._spool_entries import payload_damage, rendered_window
from timeback_tracker._spool_file import close_quietly, read_alive, remove_alive, try_lock
from timeback_tracker._spool_healing import RETRY_BUSY, SpoolHealing
from timeback_tracker._spool_rows import describe, has_table
from timeback_tracker._spool_schema import WINDOW_NUMBERS, salvage, transaction

log = logging.getLogger("timeback_tracker.spool")

__all__ = [
    "JOURNAL_LIMIT",
    "MAX_REPLAY_MS",
    "Plan",
    "SpoolRecovery",
    "journal_entry",
    "journal_item",
    "owner_plans",
]


class SpoolRecovery(SpoolHealing):
    """Recovering dead owners' run segments and salvaged rows (see the module docstring)."""

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
            if self._closed:
                return []
            if not self._usable(force=False) or self._conn is None:
                self._postpone_recovery("the spool refuses writes for now")
                return []
            held: list[tuple[Path, int | None]] = []
            try:
                with transaction(self._conn):
                    owners = self._dead_owners(held)
                    added = [e for owner in owners for e in self._recover_owner(owner)]
                    added += self._recover_legacy(owners)
                    self._completions_last({e.run_id for e in added if e.kind == "time"})
                    self._forget_owners(owners)
            except (sqlite3.Error, OSError) as exc:
                self._forget_rolled_back()
                self._postpone_recovery(describe(exc))
                return []
            finally:
                for _, fd in held:
                    close_quietly(fd)
            for path, _ in held:
                remove_alive(path)
                with contextlib.suppress(OSError):
                    os.unlink(path)
            self._recovery_at = None
            self._owed_runs = frozenset()
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

    def _postpone_recovery(self, why: str) -> None:
        """The recovery cannot be written now: try it again from the delivery thread soon,
        and meanwhile hold back the completions of the runs it owes windows."""
        owed = self._runs_owed()
        if owed is not None and not owed:
            self._recovery_at = None  # nothing to recover: the next start tidies up
            return
        first = self._recovery_at is None
        self._recovery_at = time.monotonic() + RETRY_BUSY
        self._owed_runs = owed
        if first:
            log.warning(
                "spool %s: cannot recover the windows of crashed runs yet (%s); trying again "
                "while running, the completions of %s wait for them",
                self._path,
                why,
                "every run" if owed is None else f"{len(owed)} run{'' if len(owed) == 1 else 's'}",
            )

    def _runs_owed(self) -> frozenset[str] | None:
        """The runs a recovery would send windows of, read without writing (None: unreadable).

        Also while the spool could not be opened for writing (a full disk at start):
        read-only, so that only the completions of those runs wait, not every one.
        """
        conn = self._conn
        reader: sqlite3.Connection | None = None
        held: list[tuple[Path, int | None]] = []
        runs: set[str] = set()
        try:
            if conn is None:
                reader = conn = sqlite3.connect(
                    f"{self._path.absolute().as_uri()}?mode=ro", uri=True, timeout=0
                )
            dead = self._dead_owners(held, conn)
            for owner in dead:
                alive = read_alive(self._owner_lock(owner))
                runs.update(plan.run_id for plan in owner_plans(conn, owner, alive))
                journal = alive.get("journal") if alive is not None else None
                for item in journal if isinstance(journal, list) else ():
                    if isinstance(item, dict):
                        runs.add(str(item.get("run")))
            if dead and has_table(conn, "legacy_checkpoints"):
                marks = ", ".join("?" * len(dead))
                runs.update(
                    row[0]
                    for row in conn.execute(
                        f"SELECT run_id FROM legacy_checkpoints WHERE owner IN ({marks})",  # noqa: S608
                        dead,
                    )
                )
        except (sqlite3.Error, OSError):
            return None
        finally:
            for _, fd in held:
                close_quietly(fd)
            if reader is not None:
                reader.close()
        return frozenset(runs)

    def _completions_last(self, runs: set[str]) -> None:
        """Move the queued completions of ``runs`` behind the windows just recovered for
        them: a run resumed while its recovery was held up may have completed meanwhile."""
        conn = self._conn_()
        for run_id in sorted(runs):
            query = "SELECT slot FROM entries WHERE run_id = ? AND kind = 'completion'"
            for (slot,) in conn.execute(query, (run_id,)).fetchall():
                conn.execute(
                    "UPDATE entries SET slot = (SELECT max(slot) + 1 FROM entries) WHERE slot = ?",
                    (slot,),
                )

    def _dead_owners(
        self, held: list[tuple[Path, int | None]], conn: sqlite3.Connection | None = None
    ) -> list[str]:
        """Owners that wrote here and whose lock is free; their lock files go to ``held``."""
        conn = conn or self._conn_()
        owners = {row[0] for row in conn.execute("SELECT owner FROM owners")}
        owners |= {row[0] for row in conn.execute("SELECT DISTINCT owner FROM segments")}
        if has_table(conn, "legacy_checkpoints"):
            owners |= {r[0] for r in conn.execute("SELECT DISTINCT owner FROM legacy_checkpoints")}
        prefix = f"{self._path.name}.owner-"
        for path in self._path.parent.glob(f"{glob.escape(prefix)}*.lock"):
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
        """Rebuild the open windows of a dead owner's running segments, and queue what it
        held in memory only (completions, while its spool refused writes)."""
        alive = read_alive(self._owner_lock(owner))
        added = self._recover_journal(alive)
        for plan in owner_plans(self._conn_(), owner, alive):
            try:
                entries = plan.windows()
            except ValueError as exc:
                what = f"the checkpoint of run segment {plan.segment}"
                self._report_damage(what, f"damaged ({exc})")
                continue
            for entry in entries:
                if not self.holds(entry.id):
                    self._admit_recovered(entry, plan.dest or self.dest)
                    added.append(entry)
        return added

    def _recover_journal(self, alive: Mapping[str, Any] | None) -> list[Entry]:
        """Queue the entries a dead owner's sign of life carried (see ``_journal``)."""
        items = alive.get("journal") if alive is not None else None
        dest = str(alive.get("dest") or self.dest) if alive is not None else self.dest
        added = []
        for item in items if isinstance(items, list) else ():
            try:
                entry = journal_entry(item)
            except (KeyError, TypeError, ValueError):
                continue
            if entry.kind == "completion":
                self._conn_().execute(
                    "INSERT OR IGNORE INTO completed (run_id, completed_ms) VALUES (?, ?)",
                    (entry.run_id, entry.event_time_ms),
                )
            if not self.holds(entry.id) and not payload_damage(entry.id, entry.payload):
                self._admit_recovered(entry, dest)
                added.append(entry)
        return added

    def _admit_recovered(self, entry: Entry, dest: str) -> None:
        if self._count_rows() < self._max:
            self.insert(entry, dest)
            return
        admission = admit(self, entry, self._max)
        if dest != self.dest and self.holds(entry.id):
            # admit() inserts for this tracker's destination; the entry is another app's.
            self._conn_().execute("UPDATE entries SET dest = ? WHERE id = ?", (dest, entry.id))
        if admission.dropped:
            log.warning(
                "spool %s: full: dropped %d events while recovering",
                self._path,
                len(admission.dropped),
            )
            if self._on_drop is not None:
                try:
                    self._on_drop(tuple(dropped.id for dropped in admission.dropped))
                except Exception:
                    log.exception("reporting events dropped while recovering failed")

    def _recover_legacy(self, dead: list[str]) -> list[Entry]:
        """The 0.1 format's checkpoints (whole events) of dead owners become queued events."""
        conn = self._conn_()
        if not dead or not has_table(conn, "legacy_checkpoints"):
            return []
        added = []
        marks = ", ".join("?" * len(dead))
        for row in conn.execute(
            "SELECT id, run_id, kind, first_seq, last_seq, event_time_ms, payload "  # noqa: S608
            f"FROM legacy_checkpoints WHERE owner IN ({marks})",
            dead,
        ).fetchall():
            entry = Entry(row[0], row[1], "time", row[5], row[6], row[3], row[4])
            if payload_damage(entry.id, entry.payload) or self.holds(entry.id):
                continue
            self._admit_recovered(entry, self.dest)
            added.append(entry)
        conn.execute(f"DELETE FROM legacy_checkpoints WHERE owner IN ({marks})", dead)  # noqa: S608
        return added

    def _forget_owners(self, owners: list[str]) -> None:
        """After recovering ``owners``: their segments become tombstones (ended, no state),
        kept while their lock file (and its sign of life) may still exist; the
        tombstones of owners whose lock file is gone, and that no queued window
        needs as a template, are deleted."""
        conn = self._conn_()
        for owner in owners:
            conn.execute("UPDATE segments SET ended = 1, state = NULL WHERE owner = ?", (owner,))
            if self._owner_lock(owner).exists():
                continue  # unlinked after this transaction; its tombstones go next time
            conn.execute(
                "DELETE FROM segments WHERE owner = ? AND ended = 1 AND NOT EXISTS "
                "(SELECT 1 FROM entries WHERE entries.segment = segments.segment)",
                (owner,),
            )
            if not conn.execute("SELECT 1 FROM segments WHERE owner = ?", (owner,)).fetchone():
                conn.execute("DELETE FROM owners WHERE owner = ?", (owner,))

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
                        payload = row["payload"] or _rendered_salvage(row)
                        if not payload or self.holds(row["id"]):
                            continue
                        entry = Entry(
                            row["id"],
                            row["run_id"],
                            "completion" if row["kind"] == "completion" else "time",
                            int(row["event_time_ms"]),
                            payload,
                        )
                        self._admit_recovered(entry, row["dest"] or self.dest)
                        taken += 1
            except (sqlite3.Error, OSError, ValueError, TypeError) as exc:
                self._forget_rolled_back()
                log.warning("spool %s: salvage failed: %s", corrupt, describe(exc))
                return 0
            self._recount()
        if taken:
            log.warning("spool %s: salvaged %d events from %s", self._path, taken, corrupt.name)
        return taken


MAX_REPLAY_MS = DAY_SECONDS * 1000
"""Longest stretch a recovery replays a stored state over (see :meth:`Plan.windows`)."""


@attrs.frozen
class Plan:
    """What a recovery rebuilds one run segment from.

    Attributes:
        segment: The run segment.
        run_id: Its run.
        dest: The destination its windows go to.
        template: Its template, as stored.
        state: Its accounting snapshot, as stored (a JSON list, or its text).
        mono_ms: The owner's monotonic time the state is replayed up to.
        wall_ms: The wall time at that moment.
    """

    segment: str
    run_id: str
    dest: str
    template: object
    state: object
    mono_ms: object
    wall_ms: object

    def windows(self) -> list[Entry]:
        """The segment's windows up to ``mono_ms``, as entries with their ids.

        Raises:
            ValueError: The stored template or state is damaged.
        """
        try:
            template = RunTemplate.from_json(str(self.template))
            state = json.loads(self.state) if isinstance(self.state, str) else self.state
            run = RunAccounting.restore(state)
            until = int(self.mono_ms)  # type: ignore[call-overload]
            # A state is at most a heartbeat interval (an hour at most) older than its
            # moment: a longer replay means a damaged moment, and could run for ever.
            if until - run.counted_to > MAX_REPLAY_MS:
                raise ValueError(
                    f"the state would be replayed over {(until - run.counted_to) // 1000} s "
                    "(a day at most): its moment is damaged"
                )
            closed = run.end(until, int(self.wall_ms))  # type: ignore[call-overload]
        except (TypeError, KeyError) as exc:
            raise ValueError(f"{type(exc).__name__}: {exc}") from None
        return [
            Entry.window(
                template, w.seq, w.seq, w.start_wall_ms, w.end_wall_ms, w.active_ms, w.inactive_ms
            )
            for w in closed
        ]


def owner_plans(
    conn: sqlite3.Connection, owner: str, alive: Mapping[str, Any] | None
) -> list[Plan]:
    """What a recovery of ``owner`` would rebuild: one plan per run segment still running.

    Segment by segment, the newer of two states wins: the durable row of the
    owner's last tick, or the sign of life (``alive``), never going back
    behind the row. A segment that ended is never rebuilt: its row says so
    once the end is on disk, its sign of life until then. Used by the
    recovery itself and by ``spool list``.
    """
    rows = {
        row[0]: row
        for row in conn.execute(
            "SELECT segment, run_id, dest, ended, template, state, mono_ms, wall_ms "
            "FROM segments WHERE owner = ?",
            (owner,),
        )
    }
    signs = alive.get("segments") if alive is not None else None
    signs = signs if isinstance(signs, dict) else {}
    dest = str(alive.get("dest", "")) if alive is not None else ""
    stamp = alive.get("at") if alive is not None else None  # every state still held then
    plans = []
    for segment in sorted(set(rows) | set(signs)):
        row = rows.get(segment)
        if row is not None and row[3]:
            continue  # ended, on disk
        if segment in signs and signs[segment] is None:
            continue  # ended, not yet on disk when it died
        from_row = None
        if row is not None and row[5] is not None:
            _, run_id, row_dest, _, template, state, mono, wall = row
            from_row = Plan(segment, run_id, row_dest, template, state, mono, wall)
        item = signs.get(segment)
        from_sign = None
        if isinstance(item, dict):
            template = item.get("t") or (row[4] if row is not None else None)
            moment = [item.get("m"), item.get("w")]
            if isinstance(stamp, list) and len(stamp) == 2 and _int(stamp[0]) > _int(moment[0]):
                moment = stamp
            from_sign = Plan(
                segment,
                row[1] if row is not None else _run_of(template),
                row[2] if row is not None else dest,
                template,
                item.get("s"),
                *moment,
            )
        if from_sign is not None and (from_row is None or _newer(from_sign, from_row)):
            plans.append(from_sign)
        elif from_row is not None:
            plans.append(from_row)
    return plans


def _newer(sign: Plan, row: Plan) -> bool:
    """Whether a sign of life describes a later moment than the row (same process clock)."""
    return _int(sign.mono_ms) >= _int(row.mono_ms) and _seq_of(sign.state) >= _seq_of(row.state)


JOURNAL_LIMIT = 500
"""Most entries a sign of life carries for a spool that refuses writes."""


def journal_item(entry: Entry) -> dict[str, Any]:
    """An entry as the sign of life carries it (see :func:`journal_entry`)."""
    return {
        "id": entry.id,
        "run": entry.run_id,
        "kind": entry.kind,
        "seq": [entry.first_seq, entry.last_seq],
        "time": entry.event_time_ms,
        "born": entry.born_ms,
        "payload": entry.payload,
    }


def journal_entry(item: Mapping[str, Any]) -> Entry:
    """The entry a :func:`journal_item` describes (not mergeable: it has no template).

    Raises:
        KeyError, TypeError, ValueError: ``item`` is not a journal item.
    """
    first, last = item["seq"]
    return Entry(
        str(item["id"]),
        str(item["run"]),
        "completion" if item["kind"] == "completion" else "time",
        int(item["time"]),
        str(item["payload"]),
        first,
        last,
        born_ms=int(item["born"]),
    )


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _run_of(template: object) -> str:
    try:
        return RunTemplate.from_json(str(template)).run_id
    except ValueError:
        return "?"


def _seq_of(state: object) -> int:
    try:
        return RunAccounting.snapshot_seq(json.loads(state) if isinstance(state, str) else state)
    except ValueError:
        return -1


def _rendered_salvage(row: dict[str, Any]) -> str:
    """The payload of a salvaged window row that kept none, from its segment's template;
    "" when the template or the numbers are damaged."""
    try:
        template = RunTemplate.from_json(row["template"])
    except (ValueError, TypeError):
        return ""
    return rendered_window(template, row["id"], [row[name] for name in WINDOW_NUMBERS])
