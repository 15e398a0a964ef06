"""Disk written per running session-hour with the spool, at the default 15 s interval.

Run: ``.venv/bin/python benchmarks/disk_io.py`` (``--help`` for the sizes; about 6 minutes,
most of it the real-time check; ``--minutes 0`` skips that).

What is counted: ``/proc/<pid>/io`` of a process that runs one tracker, read
before and after (Linux):

* ``write_bytes``: what the process caused to be written to the disk: a page
  of the page cache counts when it turns dirty (4 KiB, however few bytes
  changed in it), so a page rewritten while it is still dirty counts once,
  and a page made dirty again after it was written back (or fsynced)
  counts again. This is the figure for SD-card wear and battery.
* ``wchar``: the bytes handed to ``write()``/``pwrite()`` (the page cache),
  whether or not they reach the disk; and ``syscw``, the number of such calls.

Two runs, each with 1 and with 20 running sessions, each session in a
separate process (so that the counters are its own):

1. **Accelerated**: a fake clock, and the script does the heartbeat's job
   itself, as the thread does in real time: 14 signs of life a second apart,
   then a tick, 15 s of simulated time per tick; after each tick it waits
   until the delivery thread (real, sending to a loopback sink in a child
   process) has delivered and deleted the windows. ``--hours`` simulated
   hours (2 by default: 480 ticks) take seconds. Every write the tracker
   makes in an hour is made, so ``wchar`` and the fsynced writes of the ticks
   scale honestly; what does not is the sign of life, written once a second
   without fsync into the same page of its lock file: in real time the
   kernel writes that page back every ~30 s (``vm.dirty_expire_centisecs``),
   which an accelerated run of seconds cannot show.
2. **Real time**: the real heartbeat thread at 15 s for ``--minutes`` minutes
   (4 by default), both session counts side by side, scaled to an hour. It
   checks the accelerated figure and counts the sign of life's write-backs.
   Beside them, ``life only``: the same with an interval of an hour, so that
   no tick falls in the minutes measured: what the sign of life alone costs.

The spool lives in a temporary directory on the disk of ``--dir`` (the system
temp dir by default); it must be a real disk, not tmpfs (which writes nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _bench

import timeback_tracker as tt
from timeback_tracker.testing import FakeClock

INTERVAL = 15
KEYS = ("write_bytes", "cancelled_write_bytes", "wchar", "syscw")


def accelerated(sink_url: str, spool: Path, sessions: int, hours: float) -> dict[str, Any]:
    """Child: ``hours`` simulated hours on a fake clock; the /proc/self/io deltas."""
    clock = FakeClock(wall_ms=_bench.now_ms())
    config = _bench.config(sink_url, heartbeat_interval=INTERVAL, spool_path=spool)
    tracker = tt.Tracker(config, clock=clock)
    tracker._heartbeat.stop()  # this script ticks instead, on the fake clock
    for _ in range(sessions):
        tracker.start_session(_bench.USER, _bench.ACTIVITY)
    ticks = round(hours * 3600 / INTERVAL)

    def run(count: int) -> None:
        for number in range(1, count + 1):
            for _ in range(INTERVAL - 1):
                clock.advance(1)
                tracker._every_second()
            clock.advance(1)
            tracker._tick(clock.monotonic_ms())
            # The delivery thread holds windows 3.5 intervals (DeliverySettings.hold):
            # four ticks' windows go in one envelope, as in real time.
            if number % 4 == 0 and not tracker.flush(timeout=30):
                raise SystemExit(f"not delivered within 30 s: {tracker.stats()}")

    run(4)  # warm up: the segments' first rows, the WAL file, the sink's connection
    os.sync()  # start from clean pages: what the warm-up dirtied is not counted
    before = _bench.proc_io()
    started = time.monotonic()
    _bench.mark("measured")  # for the strace breakdown by file
    run(ticks)
    _bench.mark("after")
    after = _bench.proc_io()
    stats = tracker.stats()
    tracker.close()
    return {
        **{key: after[key] - before[key] for key in KEYS},
        "hours": ticks * INTERVAL / 3600,
        "seconds": time.monotonic() - started,
        "sent": stats.sent,
        "queued": stats.queued,
        "spool_bytes": sum(
            path.stat().st_size for path in spool.parent.glob(spool.name + "*") if path.is_file()
        ),
    }


def real_time(
    sink_url: str, spool: Path, sessions: int, minutes: float, *, ticks: bool = True
) -> dict[str, Any]:
    """Child: the real heartbeat for ``minutes``; the /proc/self/io deltas.

    Without ``ticks`` the interval is an hour: in the minutes measured there is
    no tick, only the sign of life once a second.
    """
    interval = INTERVAL if ticks else 3600
    config = _bench.config(sink_url, heartbeat_interval=interval, spool_path=spool)
    tracker = tt.Tracker(config)
    for _ in range(sessions):
        tracker.start_session(_bench.USER, _bench.ACTIVITY)
    # Past the first tick (segments written, the sink connected), or the first signs of life.
    time.sleep(INTERVAL + 2 if ticks else 2)
    os.sync()
    before = _bench.proc_io()
    started = time.monotonic()
    time.sleep(minutes * 60)
    elapsed = time.monotonic() - started
    after = _bench.proc_io()  # before any sync: what the kernel has counted by itself
    stats = tracker.stats()
    tracker.close()
    return {
        **{key: after[key] - before[key] for key in KEYS},
        "hours": elapsed / 3600,
        "seconds": elapsed,
        "sent": stats.sent,
        "queued": stats.queued,
        "spool_bytes": 0,
    }


def child(args: argparse.Namespace) -> None:
    """Run one measurement in this fresh process and print it as one JSON line."""
    spool = Path(args.child_dir) / f"disk-{args.mode}-{args.sessions}.sqlite3"
    if args.mode == "accelerated":
        result = accelerated(args.sink, spool, args.sessions, args.hours)
    else:
        ticks = args.mode == "real"
        result = real_time(args.sink, spool, args.sessions, args.minutes, ticks=ticks)
    print(json.dumps(result))


def command(
    args: argparse.Namespace, mode: str, sessions: int, url: str, directory: str
) -> list[str]:
    """The command line of one measurement in a fresh interpreter."""
    return [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--sessions",
        str(sessions),
        "--sink",
        url,
        "--child-dir",
        directory,
        "--hours",
        str(args.hours),
        "--minutes",
        str(args.minutes),
    ]


def spawn(args: argparse.Namespace, mode: str, sessions: int, url: str, directory: str) -> Any:
    """Start one measurement in a fresh interpreter."""
    return subprocess.Popen(
        command(args, mode, sessions, url, directory), stdout=subprocess.PIPE, text=True
    )


def file_kind(path: str) -> str:
    """What a written file is to the spool."""
    for suffix, kind in (
        ("-wal", "WAL (commits)"),
        ("-shm", "WAL index (-shm)"),
        ("-journal", "rollback journal"),
        (".lock", "owner lock (sign of life)"),
        (".sqlite3", "database (checkpoints)"),
    ):
        if path.endswith(suffix):
            return kind
    return "socket/pipe" if "socket:" in path or "pipe:" in path else path or "?"


def by_file(args: argparse.Namespace, url: str, directory: str) -> None:
    """The accelerated run again under strace: bytes passed to write calls, by file."""
    if not _bench.strace_available():
        print("\nby file: skipped (strace is not installed or may not trace here)")
        return
    writes = ("write", "pwrite64", "writev", "pwritev", "pwritev2")
    print(f"\nwhere the write() bytes go (accelerated, strace -f -y -e trace={','.join(writes)}):")
    print(
        f"{'sessions':>8} {'file':<28} {'calls/tick':>10} {'bytes/tick':>11}"
        f" {'MB/session-hour':>16}"
    )
    for sessions in (1, 20):
        _, calls = _bench.traced_calls(
            command(args, "accelerated", sessions, url, directory), writes
        )
        ticks = args.hours * 3600 / INTERVAL
        totals: dict[str, list[int]] = {}
        for phase, _, _, path, result in calls:
            if phase != "measured" or result < 0:
                continue
            cell = totals.setdefault(file_kind(path), [0, 0])
            cell[0] += 1
            cell[1] += result
        for kind, (count, written) in sorted(totals.items(), key=lambda item: -item[1][1]):
            print(
                f"{sessions:>8} {kind:<28} {count / ticks:>10.1f} {written / ticks:>11,.0f}"
                f" {written / ticks * (3600 / INTERVAL) / sessions / 1e6:>16.2f}"
            )


def report(mode: str, sessions: int, result: dict[str, Any]) -> None:
    """One line: per session-hour figures of one run."""
    session_hours = result["hours"] * sessions
    mb = 1e6 * session_hours
    print(
        f"{mode:<11} {sessions:>8} {result['hours']:>6.2f} h {result['sent']:>7}"
        f" {result['write_bytes'] / mb:>11.2f} MB {result['cancelled_write_bytes'] / mb:>9.2f} MB"
        f" {result['wchar'] / mb:>8.2f} MB {result['syscw'] / session_hours:>9,.0f}"
        f" {result['seconds']:>7.0f} s"
    )


def main() -> None:
    """Run the accelerated and the real-time measurement, 1 and 20 sessions each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0, help="simulated hours (2)")
    parser.add_argument("--minutes", type=float, default=4.0, help="real-time minutes (4)")
    parser.add_argument("--dir", help="directory on the disk to measure (default: temp dir)")
    parser.add_argument("--child", choices=["accelerated", "real", "alive"], help=argparse.SUPPRESS)
    parser.add_argument("--sessions", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--sink", help=argparse.SUPPRESS)
    parser.add_argument("--child-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.mode = args.child
        child(args)
        return
    print(_bench.machine())
    print(
        f"vm.dirty_expire_centisecs={Path('/proc/sys/vm/dirty_expire_centisecs').read_text().strip()}"
        f" vm.dirty_writeback_centisecs="
        f"{Path('/proc/sys/vm/dirty_writeback_centisecs').read_text().strip()}"
    )
    print(
        "\nper running session-hour, 15 s interval, spool; write_bytes: to the disk, "
        "cancelled: of it, truncated before write-back; wchar/syscw: write() calls\n"
    )
    print(
        f"{'run':<11} {'sessions':>8} {'length':>8} {'sent':>7} {'write_bytes':>14}"
        f" {'cancelled':>12} {'wchar':>11} {'syscw':>9} {'took':>9}"
    )
    with _bench.sink() as sink, tempfile.TemporaryDirectory(dir=args.dir) as directory:
        url = sink.base_url + "/caliper/event"
        for sessions in (1, 20):
            process = spawn(args, "accelerated", sessions, url, directory)
            output, _ = process.communicate()
            report("accelerated", sessions, json.loads(output.strip().splitlines()[-1]))
        if args.minutes > 0:
            # Side by side: each process's counters are its own.
            processes = {
                (mode, n): spawn(args, mode, n, url, directory)
                for mode in ("real", "alive")
                for n in (1, 20)
            }
            for (mode, sessions), process in processes.items():
                output, _ = process.communicate()
                label = "real time" if mode == "real" else "life only"
                report(label, sessions, json.loads(output.strip().splitlines()[-1]))
        by_file(args, url, directory)
    print("\ntarget (issue 12, benchmarks/README.md): <= 5 MB written per running session-hour")


if __name__ == "__main__":
    main()
