"""Reliability soak: live sessions under random faults, ``kill -9`` and restarts on one spool.

Run: ``.venv/bin/python benchmarks/soak.py`` (about 5 minutes on 2 cores;
``--iterations`` for shorter or longer runs, ``--seed`` to replay a schedule).

A few kiosk "machines" each run as a subprocess (the embedded :data:`KIOSK`
script) with its own spool file, reused across restarts. A kiosk runs one or
two live sessions at a time, pausing, resuming, touching, going idle, and
completing (with XP and question counts) or ending them; it reports every run
id and its counted seconds on stdout as it goes. All of them send, through
OAuth2 client credentials with a short token lifetime, to ONE
:class:`~timeback_tracker.testing.LocalCollector` in this process, while this
process applies a random fault schedule to it: 5xx, 429 with ``Retry-After``,
dropped connections (TCP reset), responses slower than the client's read
timeout, outages (``go_down``/``come_back``), token revocation and token
endpoint failures. At random moments a kiosk is killed with ``SIGKILL`` (now
and then stopped with ``SIGTERM`` instead, which closes its tracker) and
started again on the same spool: the new process must recover the dead one's
checkpoints and deliver them. One iteration is one kiosk lifetime.

At the end the faults stop, every machine is started once more to drain its
spool, and the collector's record is checked:

* every window of every run arrived: the window ids (deterministic per run and
  window sequence) form an unbroken sequence 0..n, and each window starts where
  the one before ended;
* per-window conservation: ``active + inactive == endDate - startDate`` (ms);
* no id was received with two different contents (re-sends of the same id are
  allowed and counted as duplicates);
* a completed run has exactly one ActivityCompletedEvent, with the metrics the
  kiosk gave, arriving after (and dated at or after) every window of the run;
  an ended run has none;
* the totals of a finished run equal what the kiosk counted, to the ms;
* a killed run lost at most about a second: what the kiosk last reported
  before the kill minus what arrived (the checkpoint period is 1 s);
* every spool is empty afterwards: no queued events, dead letters or checkpoints.

It prints one summary line and exits 1 if a check failed (with the seed, to
replay the same schedule; timings differ from run to run). Loopback only;
bounded by ``--time-limit``. In the summary, ``faults`` counts the faults that
took effect, ``kills`` the SIGKILLs, ``events_lost`` the windows missing from a
run's sequence, the completions that did not arrive, the events left in a
spool, plus one per run whose tail went missing (a finished run short of its
counted time, a killed one short by more than the limit): it must be 0.
``duplicates_by_id`` counts re-sends of an id already received (allowed), and
``max_lost_per_kill`` the most counted time a killed run lost. Progress and
failures go to stderr; the work directory (spools, kiosk logs) is kept on
failure or with ``--keep``.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from timeback_tracker._outbox import completion_event_id, time_spent_event_id
from timeback_tracker.testing import LocalCollector

CLIENT_ID = "soak-kiosk"
CLIENT_SECRET = "soak-client-secret"
TOKEN_TTL = 4.0  # seconds: the client refreshes at half-life, revocations come on top
READ_TIMEOUT = 1.0  # the kiosks' read timeout; "slow" faults answer later than this
HEARTBEAT_INTERVALS = (0.2, 0.3, 0.5, 1.0, 2.5, 5.0)  # > 1 s: only checkpoints bound the loss
IDLE_TIMEOUT = 1.0  # the least the config allows
BATCH_SIZES = (5, 20, 50)
MACHINES = 3
DEFAULT_ITERATIONS = 290  # kiosk lifetimes: about 5 minutes with 3 machines on 2 cores
TIME_LIMIT = 900.0  # seconds: no new lifetime starts after this
LOST_LIMIT = 1.25  # seconds a kill may lose: the 1 s checkpoint period, plus scheduling slack
EXCESS_LIMIT = 0.5  # seconds more than the kiosk last reported: its reporting period, plus slack
DRAIN_TIMEOUT = 60.0
EXIT_LIMIT = 10.0  # seconds a SIGTERM-ed kiosk may take to close and exit
STOP_SHARE = 0.15  # lifetimes ended by SIGTERM (graceful close) instead of SIGKILL
FAULT_GAP = 0.8  # mean seconds between two faults
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

# One kiosk process. argv: mode endpoint token_url spool sensor seed interval batch
# read_timeout idle_timeout (drain mode: the flush timeout as seed). Prints, one line each:
#   ready | recovered N | run ID | t ID ACTIVE INACTIVE | done ID completed A I XP TOTAL CORRECT
#   MASTERED PCT | done ID ended A I | problem REASON | drained OK QUEUED SENT DEAD DROPPED
#   INTERNAL | bye
KIOSK = (
    textwrap.dedent(
        """
    import logging, random, signal, sys, threading, time, uuid
    import timeback_tracker as tt

    mode, endpoint, token_url, spool, sensor, seed = sys.argv[1:7]
    interval, batch, read_timeout, idle = sys.argv[7:11]
    lock = threading.Lock()
    stopping = False

    def on_term(signum, frame):
        global stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)  # before anything: a SIGTERM always closes cleanly

    def out(*words):
        line = " ".join(str(word) for word in words) + "\\n"
        with lock:
            sys.stdout.write(line)
            sys.stdout.flush()

    class Recovered(logging.Handler):
        def emit(self, record):
            if str(record.msg).startswith("recovered the last windows"):
                out("recovered", record.args[0])

    log = logging.getLogger("timeback_tracker")
    log.setLevel(logging.INFO)
    log.addHandler(Recovered(logging.INFO))
    warnings = logging.StreamHandler(sys.stderr)
    warnings.setLevel(logging.WARNING)
    warnings.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    log.addHandler(warnings)

    def on_error(failure):
        if not failure.will_retry:
            out("problem", failure.reason.replace(" ", "_"), len(failure.event_ids))

    tracker = tt.Tracker(tt.TrackerConfig(
        sensor=sensor,
        endpoint=endpoint,
        auth=tt.ClientCredentials(CLIENT_ID, CLIENT_SECRET, token_url),
        spool_path=spool,
        heartbeat_interval=float(interval),
        idle_timeout=float(idle),
        request_timeout=(1.0, float(read_timeout)),
        exit_timeout=1.0,
        batch_size=int(batch),
        on_error=on_error,
    ))
    out("ready")
    if mode == "drain":
        drained = tracker.flush(float(seed))
        stats = tracker.stats()
        tracker.close(0)
        out("drained", int(drained), stats.queued, stats.sent, stats.dead_lettered,
            stats.dropped, stats.internal_errors)
        sys.exit(0)

    rng = random.Random(int(seed))
    slots = rng.choice([1, 1, 2])
    live = {}

    def start(now):
        run_id = str(uuid.uuid4())
        out("run", run_id)  # before anything of it can be spooled
        student = rng.randrange(20)
        session = tracker.start_session(
            tt.TimebackUser(
                id=f"https://sis.example.com/users/student-{student}",
                email=f"student-{student}@example.com",
            ),
            tt.TimebackActivityContext(
                id=f"https://app.example.com/activities/Math/g3/lesson-{rng.randrange(5)}",
                subject="Math",
                app=tt.App(name="Soak Kiosk"),
            ),
            course_id=rng.choice([None, "MATH-3"]),
            run_id=run_id,
        )
        live[run_id] = {"session": session, "ends": now + rng.uniform(0.5, 8.0),
                        "paused_until": None, "away_until": 0.0}

    def finish(run_id, state):
        session = state["session"]
        if rng.random() < 0.6:
            total = rng.randint(1, 12)
            metrics = (rng.randint(0, 1), total, rng.randint(0, total), rng.randint(0, 2),
                       rng.randint(0, 100))
            session.complete(metrics[0], total_questions=metrics[1],
                             correct_questions=metrics[2], mastered_units=metrics[3],
                             pct_complete=metrics[4])
            out("done", run_id, "completed", session.active_seconds,
                session.inactive_seconds, *metrics)
        else:
            session.end()
            out("done", run_id, "ended", session.active_seconds, session.inactive_seconds)
        del live[run_id]

    while not stopping:
        now = time.monotonic()
        while len(live) < slots:
            start(now)
        for run_id, state in list(live.items()):
            session = state["session"]
            if now >= state["ends"]:
                finish(run_id, state)
                continue
            if state["paused_until"] is not None:
                if now >= state["paused_until"]:
                    session.resume()
                    state["paused_until"] = None
            elif rng.random() < 0.02:
                session.pause()
                state["paused_until"] = now + rng.uniform(0.1, 2.0)
            if now >= state["away_until"]:
                if rng.random() < 0.02:  # no input for a while: idle after the timeout
                    state["away_until"] = now + rng.uniform(0.5, 4.0)
                else:
                    session.touch()
            out("t", run_id, session.active_seconds, session.inactive_seconds)
        time.sleep(rng.uniform(0.01, 0.04))

    tracker.close()  # SIGTERM: ends the open sessions, delivers for exit_timeout at most
    for run_id, state in live.items():
        session = state["session"]
        out("done", run_id, "ended", session.active_seconds, session.inactive_seconds)
    out("bye")
    """
    )
    .replace("CLIENT_ID", repr(CLIENT_ID))
    .replace("CLIENT_SECRET", repr(CLIENT_SECRET))
)


@dataclass
class Run:
    """One activity run, as its kiosk reported it."""

    run_id: str
    machine: int
    life: int
    status: str = "open"  # open, completed, ended, killed
    active: float = 0.0
    inactive: float = 0.0
    metrics: tuple[int, ...] | None = None

    @property
    def total(self) -> float:
        return self.active + self.inactive


@dataclass
class Report:
    """What the kiosks reported, fed by their reader threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    runs: dict[str, Run] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    recovered: int = 0

    def on_line(self, kiosk: Kiosk, words: list[str]) -> None:
        if not words:
            return
        with self.lock:
            kind = words[0]
            if kind == "run":
                self.runs[words[1]] = Run(words[1], kiosk.machine, kiosk.life)
                kiosk.runs.append(words[1])
            elif kind == "t":
                run = self.runs[words[1]]
                if run.status == "open":
                    run.active, run.inactive = float(words[2]), float(words[3])
            elif kind == "done":
                run = self.runs[words[1]]
                run.status = words[2]
                run.active, run.inactive = float(words[3]), float(words[4])
                if run.status == "completed":
                    run.metrics = tuple(int(word) for word in words[5:10])
            elif kind == "recovered":
                self.recovered += int(words[1])
            elif kind == "problem":
                self.problems.append(
                    f"machine {kiosk.machine} life {kiosk.life}: {' '.join(words[1:])}"
                )
            kiosk.lines.append(words)


class Kiosk:
    """One kiosk process (one lifetime of a machine) and its stdout reader."""

    def __init__(
        self,
        report: Report,
        machine: Machine,
        life: int,
        endpoint: str,
        token_url: str,
        *,
        mode: str,
        seed: float,
        interval: float,
        batch: int,
    ) -> None:
        self.machine = machine.index
        self.life = life
        self.runs: list[str] = []
        self.lines: list[list[str]] = []
        self.interval = interval
        self.started = time.monotonic()
        argv = [mode, endpoint, token_url, str(machine.spool), machine.sensor, str(seed)]
        argv += [str(interval), str(batch), str(READ_TIMEOUT), str(IDLE_TIMEOUT)]
        with machine.log.open("a") as log:
            log.write(f"--- life {life} ({mode}, interval {interval}, batch {batch})\n")
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-c", KIOSK, *argv],
                stdin=subprocess.DEVNULL,
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

    def finish(self, timeout: float = 10.0) -> None:
        """Wait for the process and for its last reported lines."""
        self.proc.wait(timeout)
        self._reader.join(timeout)
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    def said(self, kind: str) -> list[str] | None:
        """The last line of ``kind`` the process printed, if any."""
        for words in reversed(self.lines):
            if words and words[0] == kind:
                return words
        return None


@dataclass
class Machine:
    """A kiosk machine: a spool file reused by all its lifetimes."""

    index: int
    spool: Path
    log: Path
    sensor: str
    kiosk: Kiosk | None = None
    ends_at: float = 0.0
    ending: str = "kill"
    lives: int = 0


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


# -- the checks -------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _ms(timestamp: str) -> int:
    when = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return (when - _EPOCH) // timedelta(milliseconds=1)


def _items(event: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["type"]: item for item in event["generated"]["items"]}


@dataclass
class Verdict:
    """The outcome of the checks."""

    failures: list[str] = field(default_factory=list)
    lost_events: int = 0
    max_lost: float = 0.0
    max_excess: float = 0.0
    kills_measured: int = 0

    def fail(self, message: str) -> None:
        self.failures.append(message)


def check_run(verdict: Verdict, collector: LocalCollector, run: Run, order: dict[str, int]) -> None:
    """Every check of one run against the collector's record."""
    name = f"run {run.run_id} (machine {run.machine} life {run.life}, {run.status})"
    run_uuid = uuid.UUID(run.run_id)
    windows = collector.time_spent_events(run.run_id)
    completions = collector.completions(run.run_id)

    # Window ids -> sequence numbers (deterministic ids): an unbroken 0..n.
    wanted = {event["id"]: event for event in windows}
    by_seq: dict[int, dict[str, Any]] = {}
    seq = 0
    while wanted and seq <= len(windows) + 10_000:
        event = wanted.pop(time_spent_event_id(run_uuid, seq), None)
        if event is not None:
            by_seq[seq] = event
        seq += 1
    if wanted:
        verdict.fail(f"{name}: {len(wanted)} windows with ids of no window sequence")
    if by_seq:
        missing = sorted(set(range(max(by_seq) + 1)) - set(by_seq))
        if missing:
            verdict.lost_events += len(missing)
            verdict.fail(f"{name}: windows {missing} missing (of 0..{max(by_seq)})")

    # Conservation and contiguity.
    previous: dict[str, Any] | None = None
    for seq, event in sorted(by_seq.items()):
        items = _items(event)
        active, inactive = items["active"], items["inactive"]
        start, end = _ms(active["startDate"]), _ms(active["endDate"])
        if round((active["value"] + inactive["value"]) * 1000) != end - start:
            verdict.fail(f"{name}: window {seq} not conserved")
        for value in (active["value"], inactive["value"]):
            if value < 0 or abs(value * 1000 - round(value * 1000)) > 1e-6:
                verdict.fail(f"{name}: window {seq} has a value {value!r} (not whole ms >= 0)")
        if (inactive["startDate"], inactive["endDate"]) != (
            active["startDate"],
            active["endDate"],
        ) or event["eventTime"] != active["endDate"]:
            verdict.fail(f"{name}: window {seq} has inconsistent dates")
        if end <= start:
            verdict.fail(f"{name}: window {seq} is empty or reversed")
        if (
            previous is not None
            and (seq - 1 in by_seq)
            and _items(previous)["active"]["endDate"] != active["startDate"]
        ):
            verdict.fail(f"{name}: window {seq} does not start where window {seq - 1} ended")
        previous = event

    # Completion: one per completed run, last, with the kiosk's metrics.
    if len(completions) > 1:
        verdict.fail(f"{name}: {len(completions)} completion events")
    if run.status == "completed" and not completions:
        verdict.lost_events += 1
        verdict.fail(f"{name}: its completion event did not arrive")
    if run.status == "ended" and completions:
        verdict.fail(f"{name}: ended without completion, yet a completion arrived")
    if completions:
        completion = completions[0]
        if completion["id"] != completion_event_id(run_uuid):
            verdict.fail(f"{name}: the completion has an unexpected id")
        last = max((order[event["id"]] for event in windows), default=-1)
        if order[completion["id"]] < last:
            verdict.fail(f"{name}: the completion arrived before a window of its run")
        if by_seq and _ms(completion["eventTime"]) < _ms(by_seq[max(by_seq)]["eventTime"]):
            verdict.fail(f"{name}: the completion is dated before the run's last window")
        if run.metrics is not None:
            items = {item["type"]: item["value"] for item in completion["generated"]["items"]}
            got = (
                items.get("xpEarned"),
                items.get("totalQuestions"),
                items.get("correctQuestions"),
                items.get("masteredUnits"),
                (completion["generated"].get("extensions") or {}).get("pctCompleteApp"),
            )
            if got != run.metrics:
                verdict.fail(f"{name}: completion metrics {got} != the kiosk's {run.metrics}")

    # Time: exact for finished runs, at most about a second lost for killed ones.
    active, inactive = collector.totals(run.run_id)
    if run.status in ("completed", "ended"):
        if abs(active - run.active) > 0.0015 or abs(inactive - run.inactive) > 0.0015:
            if active + inactive < run.total:
                verdict.lost_events += 1
            verdict.fail(
                f"{name}: arrived {active:.3f} s active + {inactive:.3f} s inactive, "
                f"the kiosk counted {run.active:.3f} + {run.inactive:.3f}"
            )
    elif run.status == "killed":
        verdict.kills_measured += 1
        lost = run.total - (active + inactive)
        verdict.max_lost = max(verdict.max_lost, lost)
        verdict.max_excess = max(verdict.max_excess, -lost)
        if lost > LOST_LIMIT:
            verdict.lost_events += 1  # at least: the tail window, or the checkpoint's
            verdict.fail(
                f"{name}: lost {lost:.3f} s (reported {run.total:.3f} s before the kill, "
                f"{active + inactive:.3f} s arrived in {len(windows)} windows)"
            )
        if -lost > EXCESS_LIMIT:
            verdict.fail(
                f"{name}: {-lost:.3f} s more arrived than it reported before the kill "
                f"({run.total:.3f} s reported, {active + inactive:.3f} s arrived)"
            )
    else:
        verdict.fail(f"{name}: its kiosk never said how it ended")


def spool_status(spool: Path) -> dict[str, int]:
    """``queued``, ``dead letters`` and ``checkpoints`` of a spool, from the public CLI."""
    if not spool.exists():
        return {"queued": 0, "dead letters": 0, "checkpoints": 0}
    done = subprocess.run(
        [sys.executable, "-m", "timeback_tracker", "spool", "status", str(spool)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition(":")
        if key in ("queued", "dead letters", "checkpoints"):
            found[key] = int(value.split()[0])
    if done.returncode or len(found) != 3:
        raise RuntimeError(f"spool status of {spool} failed: {done.stderr.strip()}")
    return found


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
        self.kills = 0
        self.stops = 0
        self.started = 0
        self.began = time.monotonic()

    def say(self, message: str) -> None:
        if not self.args.quiet:
            print(f"soak [{time.monotonic() - self.began:6.1f}s] {message}", file=sys.stderr)

    def spawn(self, machine: Machine, *, mode: str = "live", seed: float | None = None) -> Kiosk:
        machine.lives += 1
        return Kiosk(
            self.report,
            machine,
            machine.lives,
            self.collector.url,
            self.collector.token_url,
            mode=mode,
            seed=self.rng.randrange(1 << 30) if seed is None else seed,
            interval=self.rng.choice(HEARTBEAT_INTERVALS),
            batch=self.rng.choice(BATCH_SIZES),
        )

    def start_life(self, machine: Machine, now: float) -> None:
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
        kiosk = machine.kiosk
        assert kiosk is not None
        machine.kiosk = None
        where = f"machine {machine.index} life {kiosk.life}"
        if kiosk.proc.poll() is not None:
            kiosk.finish()
            self.verdict.fail(f"{where}: the kiosk exited by itself (rc {kiosk.proc.returncode})")
        elif machine.ending == "stop":
            self.stops += 1
            asked = time.monotonic()
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
            kiosk.finish()
        with self.report.lock:
            for run_id in kiosk.runs:
                run = self.report.runs[run_id]
                if run.status == "open":
                    run.status = "killed"

    def live_phase(self) -> None:
        args = self.args
        deadline = self.began + args.time_limit
        next_progress = self.began + 30.0
        while True:
            now = time.monotonic()
            self.faults.step(now)
            more = self.started < args.iterations and now < deadline
            more = more and len(self.verdict.failures) < 20  # broken: stop early
            for machine in self.machines:
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
                    f"{len(self.collector.events)} events, {sum(self.faults.scheduled.values())} "
                    f"faults scheduled"
                )
            time.sleep(0.02)
        if self.started < args.iterations:
            self.say(f"time limit reached after {self.started} lifetimes")

    def drain_phase(self) -> collections.Counter[str]:
        applied = self.faults.stop()
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
        for machine in self.machines:
            status = spool_status(machine.spool)
            left = status["queued"] + status["dead letters"]
            if left or status["checkpoints"]:
                self.verdict.lost_events += left
                self.verdict.fail(f"machine {machine.index}: spool not empty at the end: {status}")
        return applied

    def check(self) -> None:
        collector = self.collector
        events = collector.events
        order = {event["id"]: index for index, event in enumerate(events)}
        runs = self.report.runs
        for run_id in collector.run_ids():
            if run_id not in runs:
                self.verdict.fail(f"run {run_id} arrived, but no kiosk ran it")
        for run in runs.values():
            check_run(self.verdict, collector, run, order)
        conflicts = collector.duplicate_conflicts
        if conflicts:
            self.verdict.fail(f"{len(conflicts)} ids received with different contents")
        for problem in self.report.problems:
            self.verdict.fail(f"delivery problem: {problem}")


def main(argv: list[str] | None = None) -> int:
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
    parser.add_argument("--quiet", action="store_true", help="print the summary line only")
    parser.add_argument("--keep", action="store_true", help="keep the spools and kiosk logs")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)
    if args.iterations < 1 or args.machines < 1:
        parser.error("--iterations and --machines must be at least 1")

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
        soak.collector.stop()
    verdict = soak.verdict
    elapsed = time.monotonic() - soak.began
    collector = soak.collector
    ok = not verdict.failures
    soak.say(
        "faults by kind: "
        + ", ".join(f"{kind} {count}" for kind, count in applied.items())
        + f"; graceful stops {soak.stops}; crashed runs recovered at restart "
        f"{soak.report.recovered}; runs {len(soak.report.runs)}; requests "
        f"{len(collector.requests)}; max excess over the last report {verdict.max_excess:.3f}s"
    )
    for failure in verdict.failures[:30]:
        print(f"FAIL: {failure}", file=sys.stderr)
    if len(verdict.failures) > 30:
        print(f"FAIL: ... and {len(verdict.failures) - 30} more", file=sys.stderr)
    print(
        f"soak: iterations={soak.started} events={len(collector.events)} "
        f"faults={sum(applied.values())} kills={soak.kills} events_lost={verdict.lost_events} "
        f"duplicates_by_id={collector.duplicates} "
        f"max_lost_per_kill={max(verdict.max_lost, 0.0):.3f}s "
        f"elapsed={elapsed:.0f}s seed={args.seed} {'PASS' if ok else 'FAIL'}"
    )
    if ok and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"soak: spools and kiosk logs kept in {workdir}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
