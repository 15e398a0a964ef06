"""Reliability soak: live sessions under random faults, ``kill -9`` and restarts on one spool.

Run: ``.venv/bin/python benchmarks/soak.py`` (about 5 minutes on 2 cores;
``--iterations`` for shorter or longer runs, ``--seed`` to replay a schedule).

A few kiosk "machines" each run as a subprocess (``_soak_kiosk.py``) with its
own spool file, reused across restarts. A kiosk runs one or two live sessions
at a time, pausing, resuming, touching, going idle, and completing (with XP
and question counts) or ending them; after a restart it resumes some of the
runs its previous lifetime left unfinished (``start_session(run_id=...)``: a
new segment of the same run). It reports every run segment and its counted
seconds on stdout as it goes. All of them send, through OAuth2 client
credentials with a short token lifetime, to ONE
:class:`~timeback_tracker.testing.LocalCollector` in this process.

Two random fault schedules run meanwhile:

* on the collector: 5xx, 429 with ``Retry-After``, dropped connections (TCP
  reset), responses slower than the client's read timeout, outages
  (``go_down``/``come_back``), token revocation and token endpoint failures;
* on the machines (issue 11): another process (this one) holding the spool's
  write lock for seconds (``BEGIN IMMEDIATE``); a full small filesystem
  (``RLIMIT_FSIZE`` of 32 KiB set in the kiosk process, lifted seconds later:
  writes that would grow a file past it fail); a damaged row (a queued
  event's JSON cut short in the spool, behind the kiosk's back); the wall
  clock set by one to three hours either way (the kiosk's clock is the
  system's plus an offset that persists across its restarts).

At random moments a kiosk is killed with ``SIGKILL`` (now and then stopped
with ``SIGTERM`` instead, which closes its tracker, after its spool faults
are lifted) and started again on the same spool: the new process must
recover the dead one's open windows and deliver them. One iteration is one
kiosk lifetime.

At the end the faults stop, every machine is started once more to drain its
spool, and the collector's record is checked, run by run and segment by
segment:

* every window of every segment arrived: the window ids (deterministic per
  run, segment and window number) form an unbroken sequence 0..n, each window
  starting where the one before ended (or moved by exactly a clock step);
* per-window conservation: ``active + inactive == endDate - startDate`` (ms);
* no id was received with two different contents (re-sends of the same id
  are allowed and counted as duplicates);
* a completed run has exactly one ActivityCompletedEvent, with the metrics
  the kiosk gave, arriving after every window of the run and dated at or
  after its segment's last window; a run never completed has none;
* the totals of a finished segment equal what the kiosk counted, to the ms;
* a killed segment lost at most about a second: what the kiosk last reported
  before the kill minus what arrived; if the spool was unwritable during its
  life, plus that time (and the library's retry delay after it, and one
  heartbeat interval), reported apart;
* a damaged row is either delivered intact (it was on its way) or set aside
  as a dead letter with a "damaged" reason; its original content counts as
  arrived for the checks above, and no other event is set aside;
* every spool is empty afterwards: no queued events, no running segments,
  no dead letters but the damaged rows.

It prints one summary line and exits 1 if a check failed (with the seed, to
replay the same schedule; timings differ from run to run). Loopback only;
bounded by ``--time-limit``. In the summary, ``faults`` counts the faults that
took effect, ``kills`` the SIGKILLs, ``events_lost`` the windows missing from a
segment's sequence, the completions that did not arrive, the events left in a
spool, plus one per segment whose tail went missing (a finished one short of
its counted time, a killed one short by more than the limit): it must be 0.
``conflicts`` counts ids received with two contents (must be 0),
``duplicates_by_id`` re-sends of an id already received (allowed),
``max_lost_per_kill`` the most counted time a kill lost while the spool was
writable, ``max_lost_unwritable`` the most while it was not (with the largest
allowance). Progress and failures go to stderr; the work directory (spools,
kiosk logs) is kept on failure or with ``--keep``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _soak_check import Report, Segment, Verdict, check_run, describe_conflicts
from _soak_faults import (
    READ_TIMEOUT,
    SLOW_EXTRA,
    SPOOL_FAULT_WEIGHTS,
    Faults,
    SpoolFaults,
    retry_slack,
    spool_left,
)

from timeback_tracker._spool import BUSY_PATIENCE
from timeback_tracker.testing import LocalCollector

KIOSK = Path(__file__).resolve().parent / "_soak_kiosk.py"
CLIENT_ID = "soak-kiosk"  # the kiosk's, see _soak_kiosk.py
CLIENT_SECRET = "soak-client-secret"  # a test client of the LocalCollector, not a real secret
TOKEN_TTL = 4.0  # seconds: the client refreshes at half-life, revocations come on top
HEARTBEAT_INTERVALS = (0.2, 0.3, 0.5, 1.0, 2.5, 5.0)  # > 1 s: only the sign of life bounds loss
IDLE_TIMEOUT = 1.0  # the least the config allows
BATCH_SIZES = (5, 20, 50)
MACHINES = 3
DEFAULT_ITERATIONS = 290  # kiosk lifetimes: about 5 minutes with 3 machines on 2 cores
TIME_LIMIT = 900.0  # seconds: no new lifetime starts after this
DRAIN_TIMEOUT = 60.0
EXIT_LIMIT = 10.0  # seconds a SIGTERM-ed kiosk may take to close and exit
STOP_SHARE = 0.15  # lifetimes ended by SIGTERM (graceful close) instead of SIGKILL
RESUME_CANDIDATES = 2  # unfinished runs a new lifetime may resume


def arrival_order(collector: LocalCollector) -> dict[str, int]:
    """Each event's place in the order the collector *received* the requests it recorded.

    Not the order of recording: a slow answer's envelope is recorded after its delay,
    so a re-send made after the client's read timeout may be recorded first. The
    client keeps the order in which it sends; a server that answers late may store
    later requests first, and order by receipt is what the client can keep.
    """
    accepted = sorted(
        (r for r in collector.requests if r.status is not None and 200 <= r.status < 300),
        key=lambda record: record.at,
    )
    order: dict[str, int] = {}
    for place, record in enumerate(accepted):
        for index, event_id in enumerate(record.event_ids):
            order.setdefault(event_id, place * 100_000 + index)
    last = len(accepted) * 100_000
    for event in collector.events:  # recorded, its request not listed: after all the rest
        order.setdefault(event["id"], last + len(order))
    return {event_id: rank for rank, event_id in enumerate(sorted(order, key=order.__getitem__))}


class Kiosk:
    """One kiosk process (one lifetime of a machine), its stdin and its stdout reader."""

    def __init__(
        self,
        report: Report,
        machine: Machine,
        endpoint: str,
        token_url: str,
        *,
        mode: str,
        seed: float,
        interval: float,
        batch: int,
        resume: list[str],
    ) -> None:
        self.machine = machine
        self.life = machine.lives
        self.segments: list[Segment] = []
        # (monotonic time, ms) of each clock step told: a session starting while one
        # lands may read the clock before it, though its "run" line comes after.
        self.steps: list[tuple[float, int]] = []
        self.lines: list[list[str]] = []
        self.interval = interval
        self.started = time.monotonic()
        self.full = False  # its file size limit is on
        argv = [mode, endpoint, token_url, str(machine.spool), machine.sensor, str(seed)]
        argv += [str(interval), str(batch), str(READ_TIMEOUT), str(IDLE_TIMEOUT)]
        argv += [str(machine.offset_ms), ",".join(resume) or "-"]
        with machine.log.open("a") as log:
            log.write(
                f"--- life {self.life} ({mode}, interval {interval}, batch {batch}, clock "
                f"offset {machine.offset_ms} ms, may resume {len(resume)})\n"
            )
            log.flush()
            # stderr to the log file: while "full", the kiosk's own writes to it fail too.
            self.proc = subprocess.Popen(
                [sys.executable, str(KIOSK), *argv],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        self._report = report
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._report.on_line(self, line.split())

    def tell(self, command: str) -> bool:
        """Send a fault command; False when the process is gone."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            return False
        return True

    def finish(self, timeout: float = 10.0) -> None:
        """Wait for the process and for its last reported lines."""
        self.proc.wait(timeout)
        self._reader.join(timeout)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):  # the reader is gone: nothing to flush to
                self.proc.stdin.close()

    def said(self, kind: str) -> list[str] | None:
        """The last line of ``kind`` the process printed, if any."""
        for words in reversed(self.lines):
            if words and words[0] == kind:
                return words
        return None


@dataclass
class Machine:
    """A kiosk machine: a spool file reused by all its lifetimes, and its clock offset."""

    index: int
    spool: Path
    log: Path
    sensor: str
    kiosk: Kiosk | None = None
    ends_at: float = 0.0
    ending: str = "kill"
    lives: int = 0
    offset_ms: int = 0  # its wall clock minus the system's: steps persist across restarts
    # (kind, start, end or None while it lasts): times its spool could not be written.
    unwritable: list[list[Any]] = field(default_factory=list)
    damaged: dict[str, str] = field(default_factory=dict)  # event id -> original payload
    lock_release: threading.Event | None = None
    lock_thread: threading.Thread | None = None
    full_until: float | None = None
    _facts_lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, fact: str) -> None:
        """Append a fact to ``machine-N.facts`` (kept with the logs): what happened when."""
        now = time.time()
        stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"
        with self._facts_lock, self.log.with_suffix(".facts").open("a") as facts:
            facts.write(f"{stamp} {fact}\n")

    def allowance(self, segment: Segment, killed_at: float) -> float:
        """Extra seconds a kill at ``killed_at`` may lose: the spool was unwritable."""
        extra = 0.0
        for kind, start, end in self.unwritable:
            seconds = (killed_at if end is None else end) - start
            until = min(start + seconds + retry_slack(kind, seconds, segment.interval), killed_at)
            overlap = until - max(start, segment.started)
            if overlap > 0:
                extra += overlap + segment.interval + BUSY_PATIENCE
        return extra


# -- the soak ---------------------------------------------------------------------------------


class Soak:
    """One soak run."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.report = Report()
        self.verdict = Verdict()
        self.collector = LocalCollector(
            clients={CLIENT_ID: CLIENT_SECRET}, token_ttl=TOKEN_TTL
        ).start()
        self.faults = Faults(self.collector, self.rng)
        self.machines = [
            Machine(
                index,
                workdir / f"machine-{index}.sqlite3",
                workdir / f"machine-{index}.log",
                f"https://kiosk.example.com/sensors/soak-{index}",
            )
            for index in range(args.machines)
        ]
        self.spool_faults = SpoolFaults(self.machines, self.rng, args.machine_faults)
        self.kills = 0
        self.stops = 0
        self.started = 0
        self.began = time.monotonic()

    def say(self, message: str) -> None:
        """Progress, on stderr."""
        if not self.args.quiet:
            print(f"soak [{time.monotonic() - self.began:6.1f}s] {message}", file=sys.stderr)

    def resumable(self, machine: Machine) -> list[str]:
        """The newest runs of ``machine`` left unfinished: no segment completed or completing."""
        with self.report.lock:
            found = []
            for run_id, segments in reversed(self.report.runs.items()):
                if segments[0].machine != machine.index:
                    continue
                if all(s.status in ("killed", "ended") and not s.completing for s in segments):
                    found.append(run_id)
                if len(found) == RESUME_CANDIDATES:
                    break
            return found

    def spawn(self, machine: Machine, *, mode: str = "live", seed: float | None = None) -> Kiosk:
        """Start a lifetime of ``machine``."""
        machine.lives += 1
        return Kiosk(
            self.report,
            machine,
            self.collector.url,
            self.collector.token_url,
            mode=mode,
            seed=self.rng.randrange(1 << 30) if seed is None else seed,
            interval=self.rng.choice(HEARTBEAT_INTERVALS),
            batch=self.rng.choice(BATCH_SIZES),
            resume=self.resumable(machine) if mode == "live" else [],
        )

    def start_life(self, machine: Machine, now: float) -> None:
        """Start a lifetime and choose how and when it ends."""
        machine.kiosk = self.spawn(machine)
        self.started += 1
        # Now and then a kill during start-up (recovery, first session), mostly mid-run.
        if self.rng.random() < 0.1:
            lifetime = self.rng.uniform(0.05, 0.6)
        else:
            lifetime = self.rng.uniform(0.6, 6.0)
        machine.ends_at = now + lifetime
        machine.ending = "stop" if self.rng.random() < STOP_SHARE else "kill"

    def end_life(self, machine: Machine) -> None:
        """End the machine's lifetime as chosen (SIGKILL or SIGTERM)."""
        kiosk = machine.kiosk
        assert kiosk is not None
        where = f"machine {machine.index} life {kiosk.life}"
        if machine.ending == "stop" and kiosk.proc.poll() is None:
            # A graceful close writes what it holds: first the disk gets room and the
            # lock is freed (the kiosk must still be the machine's to be told).
            lifting = machine.full_until is not None
            self.spool_faults.lift(machine)
            waited = time.monotonic() + 2.0
            while lifting and time.monotonic() < waited and kiosk.proc.poll() is None:
                said = kiosk.said("fsize")
                if said is not None and said[1] == "-":
                    break  # the kiosk's file size limit is lifted
                time.sleep(0.01)
            if lifting and (kiosk.said("fsize") or ["", ""])[1] != "-":
                self.say(f"{where}: the file size limit was not lifted before SIGTERM")
        machine.kiosk = None
        if kiosk.proc.poll() is not None:
            self.spool_faults.killed(machine, time.monotonic())
            kiosk.finish()
            self.verdict.fail(f"{where}: the kiosk exited by itself (rc {kiosk.proc.returncode})")
        elif machine.ending == "stop":
            self.stops += 1
            asked = time.monotonic()
            machine.note(f"life {kiosk.life}: SIGTERM")
            kiosk.proc.send_signal(signal.SIGTERM)
            try:
                kiosk.finish(EXIT_LIMIT)
            except subprocess.TimeoutExpired:
                self.verdict.fail(f"{where}: still running {EXIT_LIMIT:.0f} s after SIGTERM")
                kiosk.proc.kill()
                kiosk.finish()
            else:
                took = time.monotonic() - asked
                if kiosk.said("bye") is None and kiosk.said("ready") is not None:
                    self.verdict.fail(f"{where}: exited after SIGTERM without closing cleanly")
                if took > 5.0:
                    self.say(f"{where}: took {took:.1f} s to close after SIGTERM")
        else:
            self.kills += 1
            os.kill(kiosk.proc.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            machine.note(f"life {kiosk.life}: SIGKILL")
            self.spool_faults.killed(machine, killed_at)
            kiosk.finish()
        killed_at = time.monotonic()
        with self.report.lock:
            for segment in kiosk.segments:
                if machine.ending == "kill" or segment.status == "open":
                    # Finished segments too: what waited in memory for the spool dies with it.
                    segment.allowance = machine.allowance(segment, killed_at)
                if segment.status == "open":
                    segment.status = "killed"
                    segment.killed_at = killed_at

    def live_phase(self) -> None:
        """Lifetimes, kills and faults until the iterations (or the time) are used up."""
        args = self.args
        deadline = self.began + args.time_limit
        next_progress = self.began + 30.0
        while True:
            now = time.monotonic()
            self.faults.step(now)
            self.spool_faults.step(now)
            more = self.started < args.iterations and now < deadline
            more = more and len(self.verdict.failures) < 20  # broken: stop early
            for machine in self.machines:
                self.spool_faults.reap(machine)
                if machine.kiosk is not None and (
                    now >= machine.ends_at or machine.kiosk.proc.poll() is not None
                ):
                    self.end_life(machine)
                if machine.kiosk is None and more and self.started < args.iterations:
                    self.start_life(machine, time.monotonic())
            if not more and all(machine.kiosk is None for machine in self.machines):
                break
            if now >= next_progress:
                next_progress += 30.0
                self.say(
                    f"{self.started}/{args.iterations} lifetimes, {self.kills} kills, "
                    f"{len(self.collector.events)} events, "
                    f"{sum(self.faults.scheduled.values())} collector faults scheduled, "
                    f"{sum(self.spool_faults.applied.values())} machine faults"
                )
            time.sleep(0.02)
        if self.started < args.iterations:
            self.say(f"time limit reached after {self.started} lifetimes")

    def drain_phase(self) -> collections.Counter[str]:
        """Stop every fault, drain every machine, check that the spools are empty."""
        applied = self.faults.stop()
        for machine in self.machines:
            self.spool_faults.lift(machine)
        self.say("faults stopped; draining every machine")
        drains = [
            (machine, self.spawn(machine, mode="drain", seed=DRAIN_TIMEOUT))
            for machine in self.machines
        ]
        for machine, kiosk in drains:
            try:
                kiosk.finish(DRAIN_TIMEOUT + 20)
            except subprocess.TimeoutExpired:
                kiosk.proc.kill()
                kiosk.finish()
            said = kiosk.said("drained")
            if said is None or said[1] != "1":
                self.verdict.fail(f"machine {machine.index}: the final drain failed: {said}")
        # Let slow answers still pending in the collector land (they are re-sends).
        time.sleep(READ_TIMEOUT + SLOW_EXTRA[1] + 0.2)
        delivered = {event["id"] for event in self.collector.events}
        for machine in self.machines:
            left = spool_left(machine.spool)
            expected = {i for i in machine.damaged if i not in delivered}
            dead = left["dead"]
            # A damaged row may also have been delivered: taken intact just before the
            # damage, sent, not acknowledged (a timeout), then read again damaged.
            wrong = {
                i: r for i, r in dead.items() if i not in machine.damaged or "damaged" not in r
            }
            missing = expected - set(dead)
            if left["queued"] or left["running"] or wrong or missing:
                self.verdict.lost_events += left["queued"] + len(wrong) + len(missing)
                self.verdict.fail(
                    f"machine {machine.index}: spool not empty at the end: {left['queued']} "
                    f"queued, {left['running']} running segments, dead letters not damaged "
                    f"on purpose {wrong}, damaged rows neither delivered nor set aside "
                    f"{sorted(missing)}"
                )
        return applied + self.spool_faults.applied

    def check(self) -> None:
        """Check every run against the collector's record."""
        collector = self.collector
        events = collector.events
        order = arrival_order(collector)
        arrived = {event["id"] for event in events}
        # A damaged row set aside on purpose counts as arrived, with its original content.
        extra: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for machine in self.machines:
            for event_id, payload in machine.damaged.items():
                if event_id not in arrived:
                    event = json.loads(payload)
                    extra[event["extensions"]["runId"]].append(event)
                    if event["type"] != "TimeSpentEvent":
                        order[event_id] = len(events) + 1  # no order to check
        runs = self.report.runs
        for run_id in collector.run_ids():
            if run_id not in runs:
                self.verdict.fail(f"run {run_id} arrived, but no kiosk ran it")
        for run_id, segments in runs.items():
            mine = collector.time_spent_events(run_id) + [
                e for e in extra[run_id] if e["type"] == "TimeSpentEvent"
            ]
            done = collector.completions(run_id) + [
                e for e in extra[run_id] if e["type"] != "TimeSpentEvent"
            ]
            check_run(self.verdict, run_id, segments, mine, done, order)
        conflicts = collector.duplicate_conflicts
        if conflicts:
            self.verdict.fail(f"{len(conflicts)} ids received with different contents")
            for line in describe_conflicts(collector, conflicts, self.report):
                self.verdict.fail(line)
        for problem in self.report.problems:
            self.verdict.fail(f"delivery problem: {problem}")


def main(argv: list[str] | None = None) -> int:
    """Run the soak; 0 when every check passed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--iterations",
        type=int,
        default=DEFAULT_ITERATIONS,
        metavar="N",
        help=f"kiosk lifetimes (default {DEFAULT_ITERATIONS}: about 5 minutes)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the random schedule")
    parser.add_argument("--machines", type=int, default=MACHINES, help="kiosk machines (spools)")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=TIME_LIMIT,
        metavar="SECONDS",
        help="start no lifetime after this many seconds",
    )
    parser.add_argument(
        "--machine-faults",
        type=lambda text: [] if text == "none" else text.split(","),
        default=None,
        metavar="KINDS",
        help=f"comma-separated machine faults to inject, of {','.join(SPOOL_FAULT_WEIGHTS)} "
        "(default: all), or none",
    )
    parser.add_argument("--quiet", action="store_true", help="print the summary line only")
    parser.add_argument("--keep", action="store_true", help="keep the spools and kiosk logs")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)
    if args.iterations < 1 or args.machines < 1:
        parser.error("--iterations and --machines must be at least 1")
    unknown = set(args.machine_faults or ()) - set(SPOOL_FAULT_WEIGHTS)
    if unknown:
        parser.error(f"--machine-faults: unknown {', '.join(sorted(unknown))}")

    workdir = Path(tempfile.mkdtemp(prefix="timeback-soak-"))
    soak = Soak(args, workdir)
    soak.say(f"seed {args.seed}, {args.machines} machines, work dir {workdir}")
    try:
        soak.live_phase()
        applied = soak.drain_phase()
        soak.check()
    except BaseException:
        print(f"soak: seed {args.seed}; spools and kiosk logs kept in {workdir}", file=sys.stderr)
        raise
    finally:
        for machine in soak.machines:
            if machine.kiosk is not None:
                machine.kiosk.proc.kill()
            if machine.lock_release is not None:
                machine.lock_release.set()
        soak.collector.stop()
    verdict = soak.verdict
    elapsed = time.monotonic() - soak.began
    collector = soak.collector
    ok = not verdict.failures
    segments = list(soak.report.segments.values())
    soak.say(
        "faults by kind: "
        + ", ".join(f"{kind} {count}" for kind, count in applied.items())
        + f"; graceful stops {soak.stops}; crashed runs recovered at restart "
        f"{soak.report.recovered}; runs {len(soak.report.runs)}, segments {len(segments)} "
        f"({sum(1 for s in segments if s is not soak.report.runs[s.run_id][0])} resumed); "
        f"kills measured {verdict.kills_measured} with the spool writable, "
        f"{verdict.kills_unwritable} while not; damaged rows set aside and reported "
        f"{soak.report.damage_reports}; requests {len(collector.requests)}; max excess over "
        f"the last report {verdict.max_excess:.3f}s"
    )
    for failure in verdict.failures[:30]:
        print(f"FAIL: {failure}", file=sys.stderr)
    if len(verdict.failures) > 30:
        print(f"FAIL: ... and {len(verdict.failures) - 30} more", file=sys.stderr)
    print(
        f"soak: iterations={soak.started} events={len(collector.events)} "
        f"faults={sum(applied.values())} kills={soak.kills} events_lost={verdict.lost_events} "
        f"conflicts={len(collector.duplicate_conflicts)} "
        f"duplicates_by_id={collector.duplicates} "
        f"max_lost_per_kill={max(verdict.max_lost, 0.0):.3f}s "
        f"max_lost_unwritable={max(verdict.max_lost_unwritable, 0.0):.3f}s"
        f"(allowed<={verdict.max_allowance + 1.25:.1f}s) "
        f"elapsed={elapsed:.0f}s seed={args.seed} {'PASS' if ok else 'FAIL'}"
    )
    if ok and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"soak: spools and kiosk logs kept in {workdir}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
