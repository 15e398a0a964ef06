"""Side by side: the same 10,000 events through timeback-tracker, Segment and PostHog.

Run: ``.venv/bin/python -m pip install --group bench`` once (installs
``segment-analytics-python`` and ``posthog``, never runtime dependencies),
then ``.venv/bin/python benchmarks/side_by_side.py``.

Every client sends 10,000 events, one per call, from one thread, to the same
loopback sink: a stdlib HTTP server in a child process that answers any POST
200 at once and counts the events (``_bench.Sink``). Each client runs in a
fresh interpreter of its own. Per client it prints the import time, the
per-call cost on the caller's thread (each call timed alone with
``perf_counter_ns``: median, p99), and the time to drain (from the last call
returning until the client's ``flush()`` returns with the sink holding every
event), then ratios against timeback-tracker.

What is compared, since timeback-tracker has no ``track(event)``: the app
calls ``touch()``/``pause()`` (no event) and the heartbeat thread turns time
into events. The per-event counterpart of ``client.track(...)`` is what the
heartbeat thread does for each window: build the event (its wire JSON from a
per-run template and five integers) and put it in the outbox
(``Tracker._emit``). That is row ``timeback-tracker``, the base of the
ratios, memory outbox like the two SDKs. More rows: ``tt tick``, the
heartbeat's whole job for one window (``Tracker._tick`` with one session on
a fake clock: close the window in the accounting, build, enqueue); the same
into the durable spool (one commit, one fsync, per tick), and with 20
sessions (per window: one commit for the 20); and the app-facing call that
does produce events, ``session.complete()`` (a final window + the
completion: two events a call, 5,000 calls), memory and spool.

Fair settings: 100 events per request for everyone (the default of both SDKs;
``batch_size=100`` for timeback-tracker), no gzip (every default), queues of
10,000 (every default), background sending (``sync_mode`` off). Loopback
only. Takes about 20 s.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import _bench

CLIENTS = {
    "timeback-tracker": "build + enqueue one window (Entry.window + Tracker._emit), memory",
    "tt tick": "Tracker._tick, 1 session: accounting + build + enqueue, memory",
    "tt tick, spool": "the same into the durable spool (one commit a tick)",
    "tt tick x20, spool": "Tracker._tick, 20 sessions, spool: per window (one commit a tick)",
    "tt complete()": "session.complete(): final window + completion, memory",
    "tt complete(), spool": "the same into the durable spool",
    "segment": "analytics.Client.track()",
    "posthog": "Posthog.capture()",
}
BATCH = 100


def properties(number: int) -> dict[str, Any]:
    """What a Segment or PostHog event carries for window ``number``: what a window says."""
    start = _bench.T0 + timedelta(seconds=15 * number)
    return {
        "runId": "4c3a1f0e-9a57-4a8e-9b0e-3f5d2b7c8e11",
        "activityId": _bench.ACTIVITY.id,
        "subject": "Math",
        "app": "My App",
        "startDate": start.isoformat(),
        "endDate": (start + timedelta(seconds=15)).isoformat(),
        "activeSeconds": 10.0,
        "inactiveSeconds": 5.0,
    }


def timed_calls(call: Callable[[int], object], count: int) -> tuple[list[int], int, int, float]:
    """Time ``call(0..count-1)`` one by one.

    Returns:
        Per-call nanoseconds, perf_counter_ns before the first call and after
        the last, and the process's CPU time (s) before the first.
    """
    gc.collect()
    perf = time.perf_counter_ns
    samples = []
    cpu = time.process_time()
    first = perf()
    for number in range(count):
        started = perf()
        call(number)
        samples.append(perf() - started)
    return samples, first, perf(), cpu


def figures(samples: list[int], first: int, last: int, cpu: float, per: int = 1) -> dict[str, Any]:
    """The figures of a run whose flush() just returned with everything delivered.

    ``per``: events a call makes, when the figures are wanted per event (a
    tick of 20 sessions makes 20 windows).
    """
    now = time.perf_counter_ns()
    median, p99 = _bench.median_p99(samples)
    median, p99 = median / per, p99 / per
    return {
        "calls": len(samples) * per,
        "median": median,
        "p99": p99,
        "calls_s": (last - first) / 1e9,  # first call to last return, caller's thread
        "drain": (now - last) / 1e9,  # last return to everything delivered
        "total": (now - first) / 1e9,
        "cpu": time.process_time() - cpu,  # every thread of the process
    }


def run_timeback(kind: str, base_url: str, events: int) -> dict[str, Any]:
    """timeback-tracker: build + enqueue, a heartbeat tick, or complete()."""
    import timeback_tracker as tt
    from timeback_tracker._outbox import Entry
    from timeback_tracker.testing import FakeClock

    url = base_url + "/caliper/event"
    with tempfile.TemporaryDirectory() as name:
        spool = Path(name) / "side.sqlite3" if kind.endswith("spool") else None
        # Wall time starts now: the events are fresh, never older than max_event_age.
        clock = FakeClock(wall_ms=_bench.now_ms())
        config = _bench.config(url, batch_size=BATCH, spool_path=spool, heartbeat_interval=15)
        tracker = tt.Tracker(config, clock=clock)
        tracker._heartbeat.stop()  # no ticks but the timed ones: this script ticks
        per = 1
        if kind.startswith("tt complete()"):
            calls = events // 2
            sessions = [  # started untimed, 30 s each on the fake clock
                tracker.start_session(_bench.USER, _bench.ACTIVITY) for _ in range(calls)
            ]
            clock.advance(30)

            def call(number: int) -> None:
                sessions[number].complete(1, total_questions=10, correct_questions=8)

        elif kind.startswith("tt tick"):
            per = 20 if "x20" in kind else 1
            calls = events // per
            for _ in range(per):
                tracker.start_session(_bench.USER, _bench.ACTIVITY)
            tick = tracker._tick

            def call(number: int) -> None:
                clock.advance(15)
                tick(clock.monotonic_ms())

        else:
            calls = events
            tracker.start_session(_bench.USER, _bench.ACTIVITY)  # starts the delivery thread
            templates = [_bench.template() for _ in range(4)]
            emit = tracker._emit
            start = _bench.T0_MS

            def call(number: int) -> None:
                seq, begin = number // 4, start + 15_000 * (number // 4)
                entry = Entry.window(
                    templates[number % 4], seq, seq, begin, begin + 15_000, 10_000, 5_000
                )
                emit([entry], {})

        samples, first, last, cpu = timed_calls(call, calls)
        if not tracker.flush(timeout=120):
            raise SystemExit(f"not delivered in 120 s: {tracker.stats()}")
        result = figures(samples, first, last, cpu, per)
        result["coalesced"] = tracker.stats().coalesced
        tracker.close()
    return result


def run_segment(base_url: str, events: int) -> dict[str, Any]:
    """segment-analytics-python: ``Client.track()``."""
    from segment.analytics import Client

    client = Client(
        "bench-write-key",
        host=base_url,
        upload_size=BATCH,  # the default
        max_queue_size=10_000,  # the default
        gzip=False,  # the default
        sync_mode=False,  # the default
    )
    payloads = [properties(number) for number in range(events)]

    def call(number: int) -> None:
        client.track(user_id="student-123", event="Time Spent", properties=payloads[number])

    samples, first, last, cpu = timed_calls(call, events)
    client.flush()  # waits until every queued event was sent
    result = figures(samples, first, last, cpu)
    client.shutdown()
    return result


def run_posthog(base_url: str, events: int) -> dict[str, Any]:
    """posthog: ``Posthog.capture()``."""
    from posthog import Posthog

    client = Posthog(
        "phc_bench_project_key",
        host=base_url,
        flush_at=BATCH,  # the default
        max_queue_size=10_000,  # the default
        gzip=False,  # the default
        sync_mode=False,  # the default
    )
    payloads = [properties(number) for number in range(events)]

    def call(number: int) -> None:
        client.capture("Time Spent", distinct_id="student-123", properties=payloads[number])

    samples, first, last, cpu = timed_calls(call, events)
    client.flush(timeout_seconds=None)  # waits until the queue is drained
    result = figures(samples, first, last, cpu)
    client.shutdown()
    return result


def child(kind: str, base_url: str, events: int) -> None:
    """Run one client in this (fresh) interpreter; print its figures as one JSON line."""
    if kind == "segment":
        result = run_segment(base_url, events)
    elif kind == "posthog":
        result = run_posthog(base_url, events)
    else:
        result = run_timeback(kind, base_url, events)
    print(json.dumps(result))


IMPORT_PROBE = "import time; t = time.perf_counter(); import {}; print(time.perf_counter() - t)"


def import_seconds(module: str, runs: int = 5) -> float:
    """Median seconds a fresh interpreter takes to import ``module``."""
    return statistics.median(
        float(
            subprocess.run(
                [sys.executable, "-c", IMPORT_PROBE.format(module)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        for _ in range(runs)
    )


def main() -> None:
    """Run every client against one sink and print the table and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000, help="events per client (10000)")
    parser.add_argument("--client", choices=list(CLIENTS), help=argparse.SUPPRESS)
    parser.add_argument("--sink", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        child(args.client, args.sink, args.events)
        return
    missing = [name for name in ("segment", "posthog") if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(
            f"not installed: {', '.join(missing)}: .venv/bin/python -m pip install --group bench"
        )
    print(_bench.machine())
    versions = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlib.metadata import version as v; "
            "print(v('timeback-tracker'), v('segment-analytics-python'), v('posthog'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    print(
        f"timeback-tracker {versions[0]}, segment-analytics-python {versions[1]}, "
        f"posthog {versions[2]}; {args.events:,} events each, {BATCH} per request\n"
    )
    results: dict[str, dict[str, Any]] = {}
    with _bench.sink() as sink:
        for kind in CLIENTS:
            sink.reset()
            output = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--client",
                    kind,
                    "--sink",
                    sink.base_url,
                    "--events",
                    str(args.events),
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            results[kind] = json.loads(output.strip().splitlines()[-1])
            results[kind]["received"] = sink.counts()
    imports = {
        "timeback-tracker": import_seconds("timeback_tracker"),
        "segment": import_seconds("segment.analytics"),
        "posthog": import_seconds("posthog"),
    }
    later = import_seconds("timeback_tracker, timeback_tracker._transport")
    print(
        f"{'client':<28} {'events':>6} {'per event: median':>17} {'p99':>10} {'calls':>7}"
        f" {'drain':>6} {'total':>6} {'CPU/event':>9} {'received':>8} {'requests':>8}"
    )
    for kind, result in results.items():
        received = result["received"]
        print(
            f"{kind:<28} {result['calls']:>6} {_bench.us(result['median']):>17}"
            f" {_bench.us(result['p99']):>10} {result['calls_s']:>6.2f}s"
            f" {result['drain']:>5.2f}s {result['total']:>5.2f}s"
            f" {_bench.us(result['cpu'] * 1e9 / args.events):>9}"
            f" {received['events']:>8} {received['requests']:>8}"
        )
    print(
        "\ncalls: first call to last return; drain: last return to flush() returning with "
        "every event at the sink;\ntotal: both; CPU/event: the process's CPU time (all "
        "threads) over total, per event"
    )
    print(
        f"\nimport (fresh interpreter, median of 5): timeback_tracker "
        f"{imports['timeback-tracker'] * 1000:.0f} ms (+ requests/tenacity at the first send, on"
        f" the delivery thread: {later * 1000:.0f} ms together), segment.analytics "
        f"{imports['segment'] * 1000:.0f} ms, posthog {imports['posthog'] * 1000:.0f} ms"
    )
    base = results["timeback-tracker"]
    segment = results["segment"]
    # No ratio of drain times: they depend on how much was sent while the calls ran.
    print(
        "\nratios, same run (> 1 means slower): per-event median, p99, total time and CPU "
        "against timeback-tracker (build + enqueue, memory); per-event median and CPU "
        "against Segment"
    )
    print(
        f"{'client':<28} {'median':>7} {'p99':>7} {'total':>7} {'CPU':>7} {'import':>7}"
        f" {'median/Segment':>15} {'CPU/Segment':>12}"
    )
    for kind, result in results.items():
        sdk = kind if kind in imports else "timeback-tracker"
        print(
            f"{kind:<28} {result['median'] / base['median']:>6.2f}x"
            f" {result['p99'] / base['p99']:>6.2f}x {result['total'] / base['total']:>6.2f}x"
            f" {result['cpu'] / base['cpu']:>6.2f}x"
            f" {imports[sdk] / imports['timeback-tracker']:>6.2f}x"
            f" {result['median'] / segment['median']:>14.2f}x"
            f" {result['cpu'] / segment['cpu']:>11.2f}x"
        )
    print(
        f"\ntarget (issue 12): build + enqueue <= 10 µs and <= 1/4 of Segment track(): "
        f"{_bench.us(base['median'])}, {base['median'] / segment['median']:.2f}x Segment's "
        f"{_bench.us(segment['median'])}"
    )
    print("\nwhat each row does per call:")
    for kind, what in CLIENTS.items():
        paths = ", ".join(sorted(results[kind]["received"]["paths"]))
        print(f"  {kind:<28} {what} -> POST {paths}")


if __name__ == "__main__":
    main()
