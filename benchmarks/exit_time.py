"""Exit: how long ``Tracker.close()`` takes to return, endpoint reachable or not.

Run: ``.venv/bin/python benchmarks/exit_time.py`` (``--repeat N``, default 3).

Each case runs a session for 0.6 s with a 0.1 s heartbeat (so windows are
produced), then times ``tracker.close()`` with the default
``exit_timeout=2.0``, memory-only and with a spool file:

* ``reachable``: the LocalCollector is up all along; at close only the final
  window is left to send.
* ``back after outage``: the collector is down while the windows pile up
  (the delivery thread backs off), and back just before ``close()``.
* ``refused``: nothing listens on the port (connection refused).
* ``black-holed``: the collector accepts the connection and holds every
  request 60 s without answering (``LocalCollector.delay_next``).

The collector runs in a child process. Loopback only. Takes about 45 s.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import _bench

import timeback_tracker as tt

CASES = ("reachable", "back after outage", "refused", "black-holed")


@contextlib.contextmanager
def endpoint(case: str) -> Iterator[tuple[str, _bench.RemoteCollector | None]]:
    """The URL for ``case`` and its collector (None when nothing listens)."""
    if case == "refused":
        yield _bench.closed_port_url(), None
        return
    with _bench.remote_collector(down=case == "back after outage") as collector:
        if case == "black-holed":
            collector.delay_next(60, times=1000)
        yield collector.url, collector


def close_once(case: str, spool: Path | None) -> tuple[float, int, int]:
    """Seconds ``close()`` took, events queued before it, events left after it."""
    with endpoint(case) as (url, collector):
        config = _bench.config(url, heartbeat_interval=0.1, spool_path=spool)
        tracker = tt.Tracker(config)
        tracker.start_session(_bench.USER, _bench.ACTIVITY)
        time.sleep(0.6)
        if case == "back after outage":
            assert collector is not None
            collector.come_back()
        queued = tracker.stats().queued
        started = time.perf_counter()
        tracker.close()
        took = time.perf_counter() - started
        left = tracker.stats().queued
    return took, queued, left


def main() -> None:
    """Time close() in every case, memory and spool, and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each case (3)")
    args = parser.parse_args()
    # "closed with N events undelivered" is expected here: the table reports it.
    logging.getLogger("timeback_tracker").setLevel(logging.ERROR)
    print(_bench.machine())
    print(f"close() with exit_timeout=2.0 (the default); median of {args.repeat} runs\n")
    print(
        f"{'endpoint':<18} {'outbox':<6} {'close() median':>14} {'max':>7}"
        f" {'queued before':>13} {'left after':>10}"
    )
    with tempfile.TemporaryDirectory() as name:
        for case in CASES:
            for spooled in (False, True):
                runs = [
                    close_once(
                        case, Path(name) / f"{uuid.uuid4().hex}.sqlite3" if spooled else None
                    )
                    for _ in range(args.repeat)
                ]
                times = [run[0] for run in runs]
                queued = statistics.median(run[1] for run in runs)
                left = statistics.median(run[2] for run in runs)
                fate = "" if not left else " (kept in spool)" if spooled else " (lost)"
                print(
                    f"{case:<18} {'spool' if spooled else 'memory':<6}"
                    f" {statistics.median(times):>12.3f} s {max(times):>5.2f} s"
                    f" {queued:>13.0f} {left:>10.0f}{fate}"
                )
    print(
        "\ncontract (README, 'Offline, crashes and exit'): "
        "close() returns within its timeout; the spool keeps the rest"
    )


if __name__ == "__main__":
    main()
