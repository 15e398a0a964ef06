"""The event path: what one window costs, from integers to the outbox, and its fsyncs.

Run: ``.venv/bin/python benchmarks/event_path.py`` (``--help`` for the sizes).

Part 1, timings (this process). A tracker on a fake clock, whose heartbeat
thread is stopped: the script does the heartbeat's job itself, as the thread
would, one simulated second at a time. Between two ticks (15 s apart, the
default interval) it calls ``Tracker._alive()`` 14 times (the spool's sign
of life, once a second) and times each; at the tick it times
``Tracker._tick()``, which closes every running session's window (the
accounting), renders each window's wire JSON from its integers, and puts
them all into the outbox in one call (one commit with the spool). After each
tick it waits, untimed, until the delivery thread (real, sending to a
loopback sink in a child process) has delivered everything, as happens
between two real ticks. That is done with 1 and with 20 running sessions,
memory outbox and spool; "per window" is the tick's time divided by the
sessions.

The parts of a window's cost are also timed alone, without threads: the
render (``RunTemplate.window``), the entry (``Entry.window``: render + id),
the admission into a ``MemoryOutbox``, and build + ``Tracker._emit`` (the
row ``side_by_side.py`` compares with Segment's ``track()``).

Part 2, fsyncs (``strace -f -e trace=fsync,fdatasync`` of a child process
running the same loop on a spool, with markers between phases): fsync and
fdatasync calls per tick, per sign of life and per ``complete()``, by the
thread that made them (the ticking thread, or the delivery thread deleting
what was delivered). Skipped, and said so, when ``strace`` is missing or may
not trace.

Loopback only. Takes about a minute.
"""

from __future__ import annotations

import argparse
import collections
import gc
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import _bench

import timeback_tracker as tt
from timeback_tracker._outbox import Entry, MemoryOutbox
from timeback_tracker.testing import FakeClock

INTERVAL = 15  # seconds between ticks: the default heartbeat interval
ALIVE_PER_TICK = INTERVAL - 1  # signs of life between two ticks, one a second


def each_ns(action: Callable[[int], object], calls: int) -> list[int]:
    """Nanoseconds of each of ``calls`` calls ``action(0..calls-1)``, each timed alone."""
    perf = time.perf_counter_ns
    samples = []
    gc.collect()
    for number in range(calls):
        started = perf()
        action(number)
        samples.append(perf() - started)
    return samples


def row(name: str, samples: list[int], loop: float | None = None, per: int = 1) -> None:
    """Print one figure: median and p99 of ``samples`` (divided by ``per``), and the loop."""
    median, p99 = _bench.median_p99(samples)
    loop_cell = _bench.us(loop) if loop is not None else "-"
    print(
        f"{name:<58} {_bench.us(median / per):>11} {_bench.us(p99 / per):>11}"
        f" {loop_cell:>10} {len(samples):>7}"
    )


def parts(calls: int, sink_url: str) -> None:
    """The parts of one window's cost, each timed alone."""
    template = _bench.template()
    start = _bench.T0_MS

    def render(n: int) -> object:
        begin = start + 15_000 * n
        return template.window(n, n, begin, begin + 15_000, 10_000, 5_000)

    def entry(n: int) -> Entry:
        begin = start + 15_000 * n
        return Entry.window(template, n, n, begin, begin + 15_000, 10_000, 5_000)

    counter = iter(range(10**9))
    row(
        "render the wire JSON (RunTemplate.window)",
        each_ns(render, calls),
        _bench.loop_ns(lambda: render(next(counter)), calls),
    )
    counter = iter(range(10**9))
    row(
        "build the entry (Entry.window: render + id)",
        each_ns(entry, calls),
        _bench.loop_ns(lambda: entry(next(counter)), calls),
    )
    outbox = MemoryOutbox(10**6)
    entries = [entry(n) for n in range(calls)]
    row(
        "admit into MemoryOutbox (put_many([entry]))",
        each_ns(lambda n: outbox.put_many([entries[n]]), calls),
    )

    # Build + Tracker._emit: what side_by_side.py compares with Segment's track().
    clock = FakeClock(wall_ms=_bench.now_ms())
    tracker = tt.Tracker(_bench.config(sink_url, heartbeat_interval=3600), clock=clock)
    tracker._heartbeat.stop()  # no ticks: the calls below are the only events
    tracker.start_session(_bench.USER, _bench.ACTIVITY)  # starts the delivery thread
    emit = tracker._emit
    samples: list[int] = []
    perf = time.perf_counter_ns
    for first in range(0, calls, 100):
        # Delivered between rounds of 100, untimed: the outbox stays small, as in production.
        for n in range(first, min(calls, first + 100)):
            started = perf()
            emit([entry(n)], {})
            samples.append(perf() - started)
        tracker.flush(timeout=30)
    tracker.close()
    row("build + enqueue (Entry.window + Tracker._emit), memory", samples)


def tick_loop(
    tracker: tt.Tracker, clock: FakeClock, ticks: int, *, marks: str = ""
) -> tuple[list[int], list[int]]:
    """Run ``ticks`` heartbeat intervals by hand; the ns of each tick and each sign of life.

    With ``marks``, each phase is marked for strace as ``<marks>/alive``,
    ``<marks>/tick`` and ``<marks>/delivery``.
    """
    perf = time.perf_counter_ns
    tick_ns: list[int] = []
    alive_ns: list[int] = []
    gc.collect()
    for _ in range(ticks):
        if marks:
            _bench.mark(f"{marks}/alive")
        for _ in range(ALIVE_PER_TICK):
            clock.advance(1)
            started = perf()
            tracker._every_second()
            alive_ns.append(perf() - started)
        clock.advance(1)
        if marks:
            _bench.mark(f"{marks}/tick")
        started = perf()
        tracker._tick(clock.monotonic_ms())
        tick_ns.append(perf() - started)
        if marks:
            _bench.mark(f"{marks}/delivery")
        if not tracker.flush(timeout=30):
            raise SystemExit(f"not delivered within 30 s: {tracker.stats()}")
    return tick_ns, alive_ns


def ticking_tracker(
    sink_url: str, spool: Path | None, sessions: int
) -> tuple[tt.Tracker, FakeClock, list[tt.Session]]:
    """A tracker on a fake clock with ``sessions`` running sessions, heartbeat thread stopped."""
    clock = FakeClock(wall_ms=_bench.now_ms())
    config = _bench.config(sink_url, heartbeat_interval=INTERVAL, spool_path=spool)
    tracker = tt.Tracker(config, clock=clock)
    tracker._heartbeat.stop()  # this script ticks instead, on the fake clock
    started = [tracker.start_session(_bench.USER, _bench.ACTIVITY) for _ in range(sessions)]
    return tracker, clock, started


def ticks(sink_url: str, directory: Path, windows: int) -> None:
    """Per-window cost of a tick with 1 and 20 sessions, memory and spool; signs of life."""
    for spooled in (False, True):
        for sessions in (1, 20):
            spool = directory / f"tick-{sessions}.sqlite3" if spooled else None
            tracker, clock, _ = ticking_tracker(sink_url, spool, sessions)
            tick_loop(tracker, clock, 5)  # warm up: segments written, caches filled
            tick_ns, alive_ns = tick_loop(tracker, clock, max(20, windows // sessions))
            stats = tracker.stats()
            tracker.close()
            mode = "spool" if spooled else "memory"
            row(f"tick, {sessions} sessions, {mode}: per window", tick_ns, per=sessions)
            if sessions > 1:
                row(f"tick, {sessions} sessions, {mode}: the whole tick", tick_ns)
            if spooled:
                row(f"sign of life (_alive), {sessions} sessions, spool", alive_ns)
            if stats.dropped or stats.dead_lettered or stats.queued:
                print(f"  unexpected: {stats}")


def traced_child(sink_url: str, directory: Path, ticks_traced: int, completes: int) -> None:
    """Child run under strace: the tick loop on a spool, then complete() calls, with markers."""
    for sessions in (1, 20):
        spool = directory / f"traced-{sessions}.sqlite3"
        tracker, clock, _ = ticking_tracker(sink_url, spool, sessions)
        tick_loop(tracker, clock, 3)  # warm up
        tick_loop(tracker, clock, ticks_traced, marks=f"s{sessions}")
        _bench.mark("done")
        tracker.close()
        print(f"main {sessions} {threading.get_native_id()}", flush=True)
    tracker, clock, started = ticking_tracker(sink_url, directory / "complete.sqlite3", completes)
    clock.advance(30)
    tracker._tick(clock.monotonic_ms())
    tracker.flush(timeout=30)
    for session in started:
        _bench.mark("complete/call")
        session.complete(1, total_questions=10, correct_questions=8)
        _bench.mark("complete/delivery")
        tracker.flush(timeout=30)
    _bench.mark("done")
    tracker.close()
    print(f"main complete {threading.get_native_id()}", flush=True)


def fsyncs(sink_url: str, ticks_traced: int, completes: int) -> None:
    """Count fsync/fdatasync per tick, sign of life and complete() under strace."""
    if not _bench.strace_available():
        print("fsync counts: skipped (strace is not installed or may not trace here)")
        return
    with tempfile.TemporaryDirectory() as name:
        stdout, calls = _bench.traced_calls(
            [
                sys.executable,
                __file__,
                "--traced-child",
                name,
                "--sink",
                sink_url,
                "--ticks",
                str(ticks_traced),
                "--completes",
                str(completes),
            ]
        )
    main_tids = set()
    for line in stdout.splitlines():
        words = line.split()
        if words and words[0] == "main":
            main_tids.add(int(words[2]))
    # Phases: s1/..., s20/... (alive, tick, delivery) and complete/... (call, delivery).
    counted: collections.Counter[tuple[str, str]] = collections.Counter()
    files: collections.Counter[tuple[str, str]] = collections.Counter()
    for phase, tid, _, path, _ in calls:
        counted[phase, "main" if tid in main_tids else "delivery thread"] += 1
        kind = "WAL" if path.endswith("-wal") else "database" if path.endswith(".sqlite3") else path
        files[phase, kind or "?"] += 1
    print(
        f"fsync + fdatasync calls (strace -f), {ticks_traced} traced ticks per case, "
        f"{completes} complete() calls; by phase and thread"
    )

    def per(phase: str, count: int) -> str:
        main, other = counted[phase, "main"], counted[phase, "delivery thread"]
        where = ", ".join(f"{n} {kind}" for (p, kind), n in sorted(files.items()) if p == phase)
        return (
            f"{(main + other) / count:.2f} ({main} by the caller + {other} by the delivery "
            f"thread; {where or 'none'})"
        )

    for sessions in (1, 20):
        print(
            f"  {sessions} sessions, per tick:            {per(f's{sessions}/tick', ticks_traced)}"
        )
        print(
            f"  {sessions} sessions, per sign of life:    "
            f"{per(f's{sessions}/alive', ticks_traced * ALIVE_PER_TICK)}"
        )
        delivery = per(f"s{sessions}/delivery", ticks_traced)
        print(f"  {sessions} sessions, delivering a tick:   {delivery}")
    print(f"  complete(), per call:              {per('complete/call', completes)}")
    print(f"  complete(), delivering its events: {per('complete/delivery', completes)}")


def main() -> None:
    """Print the timings, then the fsync counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per part (20000)")
    parser.add_argument("--windows", type=int, default=2000, help="windows per tick case (2000)")
    parser.add_argument("--ticks", type=int, default=100, help="ticks traced for fsyncs (100)")
    parser.add_argument("--completes", type=int, default=100, help="complete() traced (100)")
    parser.add_argument("--dir", help="directory on the disk to measure (default: temp dir)")
    parser.add_argument("--traced-child", help=argparse.SUPPRESS)
    parser.add_argument("--sink", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.traced_child:
        traced_child(args.sink, Path(args.traced_child), args.ticks, args.completes)
        return
    print(_bench.machine())
    with _bench.sink() as sink, tempfile.TemporaryDirectory(dir=args.dir) as name:
        url = sink.base_url + "/caliper/event"
        print(f"\n{'':<58} {'median':>11} {'p99':>11} {'loop':>10} {'n':>7}")
        parts(args.calls, url)
        ticks(url, Path(name), args.windows)
        print()
        fsyncs(url, args.ticks, args.completes)
    print(
        "\ntargets (issue 12): build + enqueue <= 10 µs (memory); with the spool <= 1 fsync "
        "per tick for all sessions; complete() <= 50 µs (memory), <= 1 fsync (spool)"
    )


if __name__ == "__main__":
    main()
