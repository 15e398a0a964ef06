"""Idle cost: CPU time of the tracker's threads while a session just runs.

Run: ``.venv/bin/python benchmarks/idle_cpu.py`` (``--seconds N``, default 60).

Four trackers run side by side for ``--seconds``, each with one running
session: heartbeat interval 15 s (the default) and 1 s, each memory-only and
with a spool file. The main thread sleeps. For each tracker's two threads
(``timeback-tracker-heartbeat`` and ``-delivery``) the script reads the
thread's own CPU clock (``time.pthread_getcpuclockid``, nanoseconds) and its
voluntary context switches (``/proc/self/task/<tid>/status``: how often it
went to sleep, i.e. its wake-ups) at the start and at the end.

``requests`` and ``tenacity`` are imported by the main thread beforehand:
that one-off cost (printed) otherwise lands on the delivery thread at its
first send. The LocalCollector runs in a child process. Loopback only.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import threading
import time
from pathlib import Path

import _bench

import timeback_tracker as tt


def cpu_ns(thread: threading.Thread) -> int:
    """CPU time ``thread`` has used so far, nanoseconds."""
    assert thread.ident is not None
    return time.clock_gettime_ns(time.pthread_getcpuclockid(thread.ident))


def wakeups(thread: threading.Thread) -> int:
    """Voluntary context switches of ``thread`` so far (Linux)."""
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    for line in status.splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    return 0


def threads_of(tracker: tt.Tracker) -> dict[str, threading.Thread]:
    """The tracker's running threads by role."""
    found = {"heartbeat": tracker._heartbeat._thread, "delivery": tracker._delivery._thread}
    return {role: thread for role, thread in found.items() if thread is not None}


def main() -> None:
    """Run the four trackers for ``--seconds`` and print each thread's CPU time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long (60)")
    args = parser.parse_args()
    print(_bench.machine())

    before = time.process_time()
    import tenacity  # noqa: F401 - imported here so the delivery thread does not pay it

    import timeback_tracker._transport  # noqa: F401 - imports requests

    print(
        f"one-off: importing requests + tenacity (done at the first send) "
        f"{(time.process_time() - before) * 1000:.0f} ms CPU\n"
    )

    setups = [(15.0, False), (15.0, True), (1.0, False), (1.0, True)]
    with tempfile.TemporaryDirectory() as name, _bench.remote_collector() as collector:
        trackers = []
        for number, (interval, spooled) in enumerate(setups):
            spool = Path(name) / f"idle-{number}.sqlite3" if spooled else None
            config = _bench.config(collector.url, heartbeat_interval=interval, spool_path=spool)
            tracker = tt.Tracker(config)
            tracker.start_session(_bench.USER, _bench.ACTIVITY)
            trackers.append(tracker)
        time.sleep(0.2)  # let the threads reach their first wait
        start = {
            (index, role): (cpu_ns(thread), wakeups(thread))
            for index, tracker in enumerate(trackers)
            for role, thread in threads_of(tracker).items()
        }
        process_start = resource.getrusage(resource.RUSAGE_SELF)
        started = time.monotonic()
        time.sleep(args.seconds)
        elapsed = time.monotonic() - started
        process_end = resource.getrusage(resource.RUSAGE_SELF)
        end = {
            (index, role): (cpu_ns(thread), wakeups(thread))
            for index, tracker in enumerate(trackers)
            for role, thread in threads_of(tracker).items()
        }
        sent = [tracker.stats().sent for tracker in trackers]
        for tracker in trackers:
            tracker.close()

    print(f"over {elapsed:.1f} s of one running session per tracker (main thread asleep)\n")
    print(
        f"{'interval':>8} {'spool':>5} {'heartbeat CPU':>14} {'wake-ups':>8}"
        f" {'delivery CPU':>13} {'wake-ups':>8} {'windows sent':>12} {'CPU % of a core':>15}"
    )
    for index, (interval, spooled) in enumerate(setups):
        cells = []
        total = 0
        for role in ("heartbeat", "delivery"):
            if (index, role) not in start or (index, role) not in end:
                cells += ["-", "-"]
                continue
            cpu = end[index, role][0] - start[index, role][0]
            total += cpu
            cells += [f"{cpu / 1e6:.1f} ms", str(end[index, role][1] - start[index, role][1])]
        print(
            f"{interval:>7.0f}s {'yes' if spooled else 'no':>5} {cells[0]:>14} {cells[1]:>8}"
            f" {cells[2]:>13} {cells[3]:>8} {sent[index]:>12} {total / 1e9 / elapsed:>14.4%}"
        )
    process = (
        process_end.ru_utime
        + process_end.ru_stime
        - process_start.ru_utime
        - process_start.ru_stime
    )
    print(f"\nwhole process (4 trackers, main thread included): {process * 1000:.0f} ms CPU")
    print("budget (DESIGN.md): idle uses no CPU (threads sleep on a timed wait, no polling)")


if __name__ == "__main__":
    main()
