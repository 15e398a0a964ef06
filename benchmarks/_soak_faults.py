"""The fault schedules of ``soak.py``: on the collector, and on the kiosk machines.

Not a benchmark itself: ``soak.py`` imports it.
"""

from __future__ import annotations

import collections
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from timeback_tracker._spool_entries import ENTRY_COLUMNS, row_entry, template_finder
from timeback_tracker._spool_healing import RETRY_BUSY, RETRY_FAILING
from timeback_tracker.testing import LocalCollector

if TYPE_CHECKING:
    from soak import Machine

READ_TIMEOUT = 1.0  # the kiosks' read timeout; "slow" faults answer later than this
FAULT_GAP = 0.8  # mean seconds between two collector faults
SLOW_EXTRA = (0.3, 1.5)  # a slow answer comes this much after the read timeout
FAULT_WEIGHTS = {
    "5xx": 3,
    "429": 2,
    "drop": 2,
    "slow": 2,
    "outage": 1,
    "revoke": 2,
    "token": 1,
}
OUTAGE_SECONDS = (0.5, 3.0)
SPOOL_FAULT_GAP = 1.5  # mean seconds between two faults on the machines
SPOOL_FAULT_WEIGHTS = {"lock": 3, "full": 2, "damage": 2, "step": 2}
LOCK_SECONDS = (0.5, 4.0)  # another process holds the spool's write lock this long
FULL_SECONDS = (1.0, 5.0)  # the filesystem is full this long
FULL_LIMIT = 32 << 10  # RLIMIT_FSIZE while "full": no file may grow past 32 KiB
STEP_HOURS = (1, 3)  # the wall clock is set by this many hours, either way
DAMAGED = '{"damaged'  # what a damaged row's payload becomes: not JSON


def retry_slack(kind: str, seconds: float, interval: float) -> float:
    """Seconds after an unwritable spool is writable again until the tracker writes to it.

    The library's own schedule (``_spool.py``): a busy spool is tried again
    after ``RETRY_BUSY``; a failing one after 5 s, then 20, 40, 60 s, each
    measured from the failed try; the tries happen at the sign of life (every
    second) or the tick, and the first failure at the first write after the
    fault began (within one heartbeat interval).
    """
    if kind == "lock":
        return RETRY_BUSY + 1.0
    first, longest = RETRY_FAILING
    tries, delay, failures = interval, first, 1
    while tries < seconds + 0.5:
        tries += delay + 1.0
        failures += 1
        delay = min(longest, first * 2 ** min(failures, 6))
    return tries - seconds + 1.0


class Faults:
    """The random fault schedule applied to the collector."""

    def __init__(self, collector: LocalCollector, rng: random.Random) -> None:
        self._collector = collector
        self._rng = rng
        self.scheduled: collections.Counter[str] = collections.Counter()
        self._last_scripted: tuple[str, int] | None = None
        self._next_at = time.monotonic() + rng.expovariate(1 / FAULT_GAP)
        self._up_at: float | None = None

    def step(self, now: float) -> None:
        collector, rng = self._collector, self._rng
        if self._up_at is not None:
            if now >= self._up_at:
                collector.come_back()
                self._up_at = None
            return
        if now < self._next_at:
            return
        self._next_at = now + rng.expovariate(1 / FAULT_GAP)
        kind = rng.choices(list(FAULT_WEIGHTS), list(FAULT_WEIGHTS.values()))[0]
        if kind in ("5xx", "429", "drop", "slow") and collector.pending_faults:
            return  # one scripted fault at a time: paced by requests, not by the clock
        times = 1
        if kind == "5xx":
            times = rng.randint(1, 3)
            collector.fail_next(rng.choice([500, 502, 503, 504]), times=times)
        elif kind == "429":
            times = rng.randint(1, 2)
            collector.fail_next(429, times=times, retry_after=rng.randint(1, 2))
        elif kind == "drop":
            times = rng.randint(1, 2)
            collector.drop_next(times=times)
        elif kind == "slow":
            collector.delay_next(READ_TIMEOUT + rng.uniform(*SLOW_EXTRA))
        elif kind == "outage":
            collector.go_down()
            self._up_at = now + rng.uniform(*OUTAGE_SECONDS)
        elif kind == "revoke":
            collector.revoke_tokens()
        elif kind == "token":
            collector.fail_token_next(rng.choice([500, 503]))
        self.scheduled[kind] += times
        if kind in ("5xx", "429", "drop", "slow"):
            self._last_scripted = (kind, times)

    def stop(self) -> collections.Counter[str]:
        """End every fault; returns the faults that took effect, by kind."""
        pending = self._collector.pending_faults
        self._collector.clear_faults()
        if self._up_at is not None:
            self._collector.come_back()
            self._up_at = None
        applied = collections.Counter(self.scheduled)
        if pending and self._last_scripted is not None:
            applied[self._last_scripted[0]] -= pending
        # Token faults are counted from the requests they answered.
        applied["token"] = sum(
            1
            for record in self._collector.requests
            if record.path.endswith("/oauth2/token") and record.status in (500, 503)
        )
        return +applied


class SpoolFaults:
    """The random fault schedule applied to the machines (their spools and clocks)."""

    def __init__(
        self, machines: list[Machine], rng: random.Random, kinds: list[str] | None = None
    ) -> None:
        self._machines = machines
        self._rng = rng
        self._weights = {
            kind: weight
            for kind, weight in SPOOL_FAULT_WEIGHTS.items()
            if kinds is None or kind in kinds
        }
        self.applied: collections.Counter[str] = collections.Counter()
        self._next_at = time.monotonic() + rng.expovariate(1 / SPOOL_FAULT_GAP)

    def step(self, now: float) -> None:
        """Lift what is due; start a new fault when one is due."""
        for machine in self._machines:
            if machine.full_until is not None and now >= machine.full_until:
                self.lift_full(machine)
        if now < self._next_at or not self._weights:
            return
        rng = self._rng
        self._next_at = now + rng.expovariate(1 / SPOOL_FAULT_GAP)
        live = [m for m in self._machines if m.kiosk is not None and m.kiosk.proc.poll() is None]
        if not live:
            return
        machine = rng.choice(live)
        kind = rng.choices(list(self._weights), list(self._weights.values()))[0]
        if kind == "lock" and machine.lock_thread is None and machine.spool.exists():
            self.hold_lock(machine, rng.uniform(*LOCK_SECONDS))
        elif kind == "full" and machine.full_until is None:
            kiosk = machine.kiosk
            assert kiosk is not None
            if kiosk.tell(f"fsize {FULL_LIMIT}"):
                machine.note(f"fault: disk full (RLIMIT_FSIZE {FULL_LIMIT}) in life {kiosk.life}")
                machine.full_until = now + rng.uniform(*FULL_SECONDS)
                machine.unwritable.append(["full", now, None])
                self.applied["full"] += 1
        elif kind == "damage":
            if damage_row(machine, rng):
                self.applied["damage"] += 1
        elif kind == "step":
            hours = rng.uniform(*STEP_HOURS)
            sign = -1 if machine.offset_ms > 3 * 3_600_000 else 1
            if abs(machine.offset_ms) <= 3 * 3_600_000:
                sign = rng.choice([-1, 1])
            delta = sign * round(hours * 3_600_000)
            kiosk = machine.kiosk
            assert kiosk is not None
            if kiosk.tell(f"step {delta}"):
                machine.note(f"fault: clock set by {delta} ms in life {kiosk.life}")
                machine.offset_ms += delta
                kiosk.steps.append((time.monotonic(), delta))
                for segment in kiosk.segments:
                    if segment.status == "open":
                        segment.steps.append(delta)
                self.applied["step"] += 1

    def hold_lock(self, machine: Machine, seconds: float) -> None:
        """Hold the spool's write lock from a thread of this process for ``seconds``."""
        release = threading.Event()
        started = threading.Event()
        record: list[Any] = ["lock", 0.0, None]

        def hold() -> None:
            try:
                conn = sqlite3.connect(
                    f"file:{machine.spool}?mode=rw", uri=True, timeout=0.5, isolation_level=None
                )
            except sqlite3.Error:
                started.set()
                return
            try:
                conn.execute("BEGIN IMMEDIATE")
                record[1] = time.monotonic()
                machine.note(f"fault: write lock held for up to {seconds:.2f} s")
                machine.unwritable.append(record)
                self.applied["lock"] += 1
                started.set()
                release.wait(seconds)
                conn.execute("ROLLBACK")
                record[2] = time.monotonic()
                machine.note("fault: write lock released")
            except sqlite3.Error:
                if record[1] and record[2] is None:
                    record[2] = time.monotonic()
            finally:
                started.set()
                conn.close()

        machine.lock_release = release
        machine.lock_thread = threading.Thread(target=hold, daemon=True)
        machine.lock_thread.start()
        started.wait(5)

    def lift(self, machine: Machine) -> None:
        """End the machine's spool faults now (before a graceful stop, before draining)."""
        self.lift_full(machine)
        if machine.lock_release is not None:
            machine.lock_release.set()
        self.reap(machine)

    def reap(self, machine: Machine) -> None:
        """Forget a lock holder that is done."""
        if machine.lock_thread is not None:
            if machine.lock_release is not None and machine.lock_release.is_set():
                machine.lock_thread.join(5)
            if not machine.lock_thread.is_alive():
                machine.lock_thread = None
                machine.lock_release = None

    def lift_full(self, machine: Machine) -> None:
        """Lift the file size limit (the disk has room again)."""
        if machine.full_until is None:
            return
        machine.full_until = None
        machine.note("fault: disk has room again")
        if machine.kiosk is not None:
            machine.kiosk.tell("fsize -")
        for record in machine.unwritable:
            if record[0] == "full" and record[2] is None:
                record[2] = time.monotonic()

    def killed(self, machine: Machine, when: float) -> None:
        """The kiosk died: its file size limit died with it."""
        machine.full_until = None
        for record in machine.unwritable:
            if record[0] == "full" and record[2] is None:
                record[2] = when


def damage_row(machine: Machine, rng: random.Random) -> bool:
    """Cut a queued event's JSON short in the machine's spool; False if none could be."""
    if not machine.spool.exists():
        return False
    try:
        conn = sqlite3.connect(
            f"file:{machine.spool}?mode=rw", uri=True, timeout=0.5, isolation_level=None
        )
    except sqlite3.Error:
        return False
    try:
        conn.execute("BEGIN IMMEDIATE")
        rows = conn.execute(
            f"SELECT {ENTRY_COLUMNS} FROM entries WHERE payload NOT LIKE ? ORDER BY slot",
            (DAMAGED + "%",),
        ).fetchall()
        if not rows:
            conn.execute("ROLLBACK")
            return False
        row = rng.choice(rows)
        # What it held: a window's row keeps only its numbers, rendered with its template.
        payload = row_entry(row, template_finder(conn)).payload
        conn.execute("UPDATE entries SET payload = ? WHERE slot = ?", (DAMAGED, row[0]))
        conn.execute("COMMIT")
    except sqlite3.Error:
        return False
    finally:
        conn.close()
    machine.damaged.setdefault(row[1], payload)
    machine.note(f"fault: damaged the row of {row[1]}")
    return True


def spool_left(spool: Path) -> dict[str, Any]:
    """What a spool still holds: queued events, running segments, dead letters by id."""
    if not spool.exists():
        return {"queued": 0, "running": 0, "dead": {}}
    conn = sqlite3.connect(f"file:{spool}?mode=ro", uri=True, timeout=5)
    try:
        return {
            "queued": conn.execute("SELECT count(*) FROM entries").fetchone()[0],
            "running": conn.execute(
                "SELECT count(*) FROM segments WHERE ended = 0 AND state IS NOT NULL"
            ).fetchone()[0],
            "dead": dict(conn.execute("SELECT id, reason FROM dead_letters").fetchall()),
        }
    finally:
        conn.close()
