"""App-thread cost of ``touch()``, ``pause()+resume()``, ``start_session()``, ``complete()``.

Run: ``.venv/bin/python benchmarks/app_thread.py`` (``--calls N``, default 20,000).

Each call is timed on its own with ``time.perf_counter_ns`` (the figure
includes the timer's own cost, printed as the first floor line); ``touch()``
and ``pause()+resume()`` are also timed in plain loops, which leaves the timer
out: the best of 5 loops of twice as many calls, as ``timeit`` reports it.
Everything runs twice: memory only (``spool_path=None``) and with a spool
file in a temporary directory. The LocalCollector runs in a child process.

* ``touch()`` and ``pause()+resume()``: one running session, heartbeat
  interval 3600 s so the heartbeat never ticks (with the spool it still
  writes its sign of life once a second, as it does in production).
* ``start_session()`` and ``complete()``: many short sessions, each 30 s long
  on a fake clock so that ``complete()`` always sends a final window and the
  completion (two events). The heartbeat thread is not started (the fake
  clock would make it spin). The LocalCollector is down while calls are
  timed, so the delivery thread sits in its back-off instead of competing for
  the GIL; it comes back between rounds of 1,000 sessions, when the queue is
  flushed (untimed), so the outbox never holds more than 2,000 events.

The floor lines put the figures in context: the cheapest thing a Python
method guarded by a ``threading.Lock`` can cost on this machine. Loopback
only. Takes about 45 s.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import threading
import time
from pathlib import Path

import _bench

import timeback_tracker as tt
from timeback_tracker.testing import FakeClock

ROUND = 1000  # sessions per round, between two flushes

Row = tuple[str, str, list[int], float | None]  # name, mode, per-call ns, loop ns per call


def floor(calls: int) -> list[Row]:
    """The timer's own cost and an empty function that takes a lock."""
    perf = time.perf_counter_ns
    lock = threading.Lock()

    def empty_locked() -> None:
        with lock:
            pass

    timer, locked = [], []
    for _ in range(calls):
        started = perf()
        timer.append(perf() - started)
    for _ in range(calls):
        started = perf()
        empty_locked()
        locked.append(perf() - started)
    return [
        ("perf_counter_ns() pair (timer overhead)", "-", timer, None),
        ("empty function with `with lock:`", "-", locked, _bench.loop_ns(empty_locked, calls * 2)),
        ("time.monotonic_ns()", "-", [], _bench.loop_ns(time.monotonic_ns, calls * 2)),
    ]


def hot_calls(url: str, spool: Path | None, calls: int) -> list[Row]:
    """touch() and pause()+resume() on one running session."""
    mode = "memory" if spool is None else "spool"
    tracker = tt.Tracker(_bench.config(url, heartbeat_interval=3600, spool_path=spool))
    session = tracker.start_session(_bench.USER, _bench.ACTIVITY)
    perf = time.perf_counter_ns
    touch = session.touch
    for _ in range(1000):  # warm up
        touch()
    gc.collect()
    touches = []
    for _ in range(calls):
        started = perf()
        touch()
        touches.append(perf() - started)
    touch_loop = _bench.loop_ns(touch, calls * 2)

    pause, resume = session.pause, session.resume
    pairs = []
    for _ in range(calls):
        started = perf()
        pause()
        resume()
        pairs.append(perf() - started)

    def pair() -> None:
        pause()
        resume()

    pair_loop = _bench.loop_ns(pair, calls * 2)
    session.end()
    tracker.close()
    return [
        ("touch()", mode, touches, touch_loop),
        ("pause() + resume()", mode, pairs, pair_loop),
    ]


def paced_pairs(url: str, calls: int) -> list[Row]:
    """pause() and resume() with time passing between them, as an app makes them.

    Back to back (``hot_calls``) the two calls mostly fall in the same
    millisecond and count nothing; here a fake clock moves 1 s before each, so
    each call counts the stretch before it. Timed: the two calls, not the
    clock's moves between them.
    """
    clock = FakeClock(wall_ms=_bench.now_ms())
    tracker = tt.Tracker(_bench.config(url, heartbeat_interval=3600, spool_path=None), clock=clock)
    tracker._heartbeat.stop()  # never started: a fake clock would make it spin
    session = tracker.start_session(_bench.USER, _bench.ACTIVITY)
    perf = time.perf_counter_ns
    pause, resume, advance = session.pause, session.resume, clock.advance
    pairs = []
    for _ in range(calls):
        advance(1)
        started = perf()
        pause()
        paused = perf()
        advance(1)
        resumed = perf()
        resume()
        pairs.append(paused - started + perf() - resumed)
    session.end()
    tracker.close()
    return [("pause() + resume(), 1 s apart (fake clock)", "memory", pairs, None)]


def session_calls(
    collector: _bench.RemoteCollector, spool: Path | None, sessions: int
) -> list[Row]:
    """start_session() and complete() of many 30 s sessions (fake clock)."""
    mode = "memory" if spool is None else "spool"
    clock = FakeClock(wall_ms=_bench.now_ms())
    config = _bench.config(collector.url, heartbeat_interval=3600, spool_path=spool)
    tracker = tt.Tracker(config, clock=clock)
    tracker._heartbeat.stop()  # never started: a fake clock would make it spin
    perf = time.perf_counter_ns
    starts: list[int] = []
    completes: list[int] = []
    before = collector.counts()["events"]
    done = 0
    while done < sessions:
        collector.go_down()
        gc.collect()
        for _ in range(min(ROUND, sessions - done)):
            started = perf()
            session = tracker.start_session(_bench.USER, _bench.ACTIVITY)
            starts.append(perf() - started)
            clock.advance(30)
            started = perf()
            session.complete(1, total_questions=10, correct_questions=8, pct_complete=50)
            completes.append(perf() - started)
            done += 1
        collector.come_back()
        if not tracker.flush(timeout=60):
            raise SystemExit(f"flush timed out: {tracker.stats()}")
    tracker.close()
    received = collector.counts()["events"] - before
    if received != 2 * sessions:
        raise SystemExit(f"expected {2 * sessions} events, the collector has {received}")
    return [
        ("start_session()", mode, starts, None),
        ("complete() (final window + completion)", mode, completes, None),
    ]


def print_rows(rows: list[Row]) -> None:
    """One line per measurement: per-call median and p99, the loop figure."""
    print(f"{'call':<42} {'mode':<7} {'median':>10} {'p99':>10} {'loop':>10} {'n':>7}")
    for name, mode, samples, loop in rows:
        median, p99 = _bench.median_p99(samples) if samples else (None, None)
        cells = [_bench.us(value) if value is not None else "-" for value in (median, p99, loop)]
        print(
            f"{name:<42} {mode:<7} {cells[0]:>10} {cells[1]:>10} {cells[2]:>10} {len(samples):>7}"
        )


def main() -> None:
    """Measure every call in both modes and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="timed calls of each (20000)")
    args = parser.parse_args()
    print(_bench.machine())
    print(f"{args.calls:,} calls of each, each timed alone; 'loop': best of 5 loops of 2x that\n")
    rows = floor(args.calls)
    with tempfile.TemporaryDirectory() as name, _bench.remote_collector() as collector:
        for spool in (None, Path(name) / "hot.sqlite3"):
            rows += hot_calls(collector.url, spool, args.calls)
        rows += paced_pairs(collector.url, args.calls)
        for spool in (None, Path(name) / "sessions.sqlite3"):
            rows += session_calls(collector, spool, args.calls)
    print_rows(rows)
    print("\nbudget (benchmarks/README.md): touch() <= 0.3 µs, pause()+resume() <= 2 µs (median)")


if __name__ == "__main__":
    main()
