"""Footprint: import time, memory after import, and memory over a simulated 24-hour outage.

Run: ``.venv/bin/python benchmarks/footprint.py`` (``--help`` for the sizes).

* Import time: ``python -X importtime -c "import timeback_tracker"`` in 7
  fresh interpreters; the cumulative microseconds of the top-level
  ``timeback_tracker`` line, median (and the heaviest modules under it).
  The import loads no public name's module (they load on first use), so
  the same interpreters also time, wall clock, the import plus a first
  ``TrackerConfig``, ``Tracker`` and ``start_session()`` (memory outbox):
  what an app's start-up pays in all. Both with the bytecode cached, as an
  installed wheel has it (``PYTHONDONTWRITEBYTECODE`` is dropped for them: set,
  it makes every run compile the package's sources again, ~25 ms more).
* RSS after import: ``VmRSS`` of a fresh interpreter before and after
  ``import timeback_tracker`` (median of 3).
* Outage: in a fresh interpreter per outbox (memory, then spool), a tracker
  with the default ``max_queue`` (10,000) and ``--sessions`` running sessions
  (2 by default, so that 24 h of 15 s windows, 11,520, overflow the queue and
  it must coalesce) sends to a closed loopback port for ``--hours`` simulated
  hours. A fake clock stands in for time: the script stops the heartbeat
  thread and does its job itself, advancing the clock 15 s and calling
  ``tracker._tick()`` (what the thread calls) 5,760 times a day; the
  once-a-second signs of life between ticks are skipped (they go to the
  owner lock file, not the spool; ``disk_io.py`` measures them). The delivery
  thread is real: it tries, is refused and backs off. RSS and the queue length
  are printed every 3 hours.

Takes about 1-2 minutes, most of it the spool's full path (see spool_write.py).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _bench

import timeback_tracker as tt
from timeback_tracker.testing import FakeClock

RSS_PROBE = """
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
before = rss()
import timeback_tracker
after = rss()
import sys
heavy = [name for name in ("requests", "tenacity", "urllib3", "sqlite3") if name in sys.modules]
print(before, after, ",".join(heavy) or "-")
"""


FIRST_SESSION = """
import time
started = time.perf_counter()
import timeback_tracker as tt
config = tt.TrackerConfig(
    sensor="https://kiosk.example.com/sensors/1", endpoint="http://127.0.0.1:9/caliper",
    spool_path=None,
)
tracker = tt.Tracker(config)
tracker.start_session(
    user=tt.TimebackUser(id="https://kiosk.example.com/users/1", email="s@example.com"),
    activity=tt.TimebackActivityContext(
        id="https://kiosk.example.com/activities/1", subject=tt.Subject.MATH, app=tt.App(name="A")
    ),
)
print((time.perf_counter() - started) * 1000)
import os
os._exit(0)  # no exit hook: the figure is the start-up
"""

# Children run with the bytecode cache, as an installed package has it.
CACHED = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}


def import_times(runs: int) -> None:
    """Median cumulative import time of timeback_tracker over ``runs`` fresh interpreters."""
    cumulative = []
    first_session = []
    heaviest: dict[str, list[int]] = {}
    subprocess.run(
        [sys.executable, "-c", FIRST_SESSION], env=CACHED, capture_output=True, check=True
    )
    for _ in range(runs):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import timeback_tracker"],
            capture_output=True,
            text=True,
            check=True,
            env=CACHED,
        )
        first = subprocess.run(
            [sys.executable, "-c", FIRST_SESSION],
            env=CACHED,
            capture_output=True,
            text=True,
            check=True,
        )
        first_session.append(float(first.stdout))
        # Nested imports are printed before the module that imported them, indented.
        lines = [
            (int(match[0]), int(match[1]), len(match[2]), match[3])
            for match in re.findall(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", result.stderr)
        ]
        top = next(n for n, line in enumerate(lines) if line[3] == "timeback_tracker")
        cumulative.append(lines[top][1])
        below = top - 1
        while below >= 0 and lines[below][2] > 1:
            heaviest.setdefault(lines[below][3], []).append(lines[below][0])
            below -= 1
    baseline = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        baseline.append(time.perf_counter() - started)
    print(
        f"import timeback_tracker: {statistics.median(cumulative) / 1000:.1f} ms cumulative "
        f"(median of {runs}; min {min(cumulative) / 1000:.1f}, max {max(cumulative) / 1000:.1f})"
    )
    print(f"  for scale: a bare interpreter starts in {statistics.median(baseline) * 1000:.0f} ms")
    print(
        f"import + TrackerConfig + Tracker + start_session(): "
        f"{statistics.median(first_session):.1f} ms wall (median of {runs}; "
        f"min {min(first_session):.1f}, max {max(first_session):.1f})"
    )
    top = sorted(heaviest.items(), key=lambda item: -statistics.median(item[1]))[:6]
    listed = ", ".join(f"{name} {statistics.median(own) / 1000:.1f}" for name, own in top)
    print(f"  heaviest modules imported by it (own ms): {listed}")


def import_rss(runs: int) -> None:
    """RSS of a fresh interpreter before and after importing timeback_tracker."""
    samples = []
    for _ in range(runs):
        output = subprocess.run(
            [sys.executable, "-c", RSS_PROBE], capture_output=True, text=True, check=True
        ).stdout.split()
        samples.append((int(output[0]), int(output[1]), output[2]))
    before = statistics.median(sample[0] for sample in samples)
    after = statistics.median(sample[1] for sample in samples)
    print(
        f"RSS: bare interpreter {before / 1024:.1f} MiB, after import {after / 1024:.1f} MiB "
        f"(+{(after - before) / 1024:.1f} MiB); loaded by the import: {samples[0][2]}"
    )


def outage(kind: str, hours: float, sessions: int) -> None:
    """The child process: ``hours`` of simulated outage, printing RSS and queue length."""
    import requests  # noqa: F401 - loaded up front, as after the first send attempt

    # "closed with N events undelivered" at the end is the point of the outage.
    logging.getLogger("timeback_tracker").setLevel(logging.ERROR)

    with tempfile.TemporaryDirectory() as name:
        spool = Path(name) / "outage.sqlite3" if kind == "spool" else None
        clock = FakeClock(wall_ms=_bench.now_ms())
        config = _bench.config(_bench.closed_port_url(), heartbeat_interval=15, spool_path=spool)
        tracker = tt.Tracker(config, clock=clock)
        tracker._heartbeat.stop()  # this script ticks instead, on the fake clock
        for _ in range(sessions):
            tracker.start_session(_bench.USER, _bench.ACTIVITY)
        gc.collect()
        first = _bench.rss_kib()
        print(f"{kind:<6} {0:>5.0f} h {first / 1024:>9.1f} MiB {tracker.stats().queued:>7}")
        ticks = round(hours * 3600 / 15)
        started = time.perf_counter()
        for tick in range(1, ticks + 1):
            clock.advance(15)
            tracker._tick(clock.monotonic_ms())
            if tick % (3 * 240) == 0 or tick == ticks:
                gc.collect()
                stats = tracker.stats()
                print(
                    f"{kind:<6} {tick / 240:>5.0f} h {_bench.rss_kib() / 1024:>9.1f} MiB"
                    f" {stats.queued:>7} {stats.coalesced:>9} {stats.dropped:>7}"
                    f" {time.perf_counter() - started:>8.1f} s",
                    flush=True,
                )
        last = _bench.rss_kib()
        tracker.close(timeout=0)
    print(f"{kind:<6} growth over {hours:g} h: {(last - first) / 1024:+.1f} MiB\n")


def main() -> None:
    """Print the import figures, then run each outage in a fresh interpreter."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0, help="simulated outage (24)")
    parser.add_argument("--sessions", type=int, default=2, help="running sessions (2)")
    parser.add_argument("--runs", type=int, default=7, help="interpreters for import time (7)")
    parser.add_argument("--import-only", action="store_true", help="skip the outage")
    parser.add_argument("--outage", choices=["memory", "spool"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.outage:
        outage(args.outage, args.hours, args.sessions)
        return
    print(_bench.machine())
    import_times(args.runs)
    import_rss(3)
    if args.import_only:
        return
    print(
        f"\noutage of {args.hours:g} simulated hours, {args.sessions} sessions, 15 s windows, "
        "max_queue 10,000, endpoint refusing connections"
    )
    print(
        f"{'outbox':<6} {'time':>7} {'RSS':>13} {'queued':>7} {'coalesced':>9} {'dropped':>7}"
        f" {'real time':>10}"
    )
    for kind in ("memory", "spool"):
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--outage",
                kind,
                "--hours",
                str(args.hours),
                "--sessions",
                str(args.sessions),
            ],
            check=True,
        )
    print(
        "budget (issue 12, benchmarks/README.md): import <= 70 ms; "
        "memory stays flat however long the outage"
    )


if __name__ == "__main__":
    main()
