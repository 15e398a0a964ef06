"""Drain throughput: a backlog of spooled events, delivered once the endpoint is back.

Run: ``.venv/bin/python benchmarks/drain.py`` (``--help`` for the sizes).

The backlog (10,000 TimeSpentEvents by default, built by the library's own
builders) is written straight into a fresh spool file for each round, for the
round's endpoint, as a tracker leaves it after an outage (a tracker sends only
its own sensor's and endpoint's rows). A tracker is then opened on that spool
with the endpoint reachable: it finds the backlog at start and its delivery
thread sends it. The figure is the time from ``Tracker(...)`` to ``flush()`` returning True (every
event acknowledged and deleted from the spool), per batch size, against two
endpoints, each in a child process as a real endpoint would be:

* ``collector``: :class:`~timeback_tracker.testing.LocalCollector`, which
  validates every event of every envelope (cattrs) before it answers;
* ``fast``: a stdlib server that parses the JSON, counts and answers 200 at
  once, to show what the tracker itself can do.

Traffic goes to loopback only. Takes about 30 s.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _bench

import timeback_tracker as tt
from timeback_tracker._spool import SqliteOutbox


@contextlib.contextmanager
def endpoint(kind: str) -> Iterator[tuple[str, Any]]:
    """``(events URL, counts())`` of a fresh endpoint of ``kind``, stopped on exit."""
    if kind == "collector":
        with _bench.remote_collector() as collector:
            yield collector.url, collector.counts
    else:
        with _bench.sink() as sink:
            yield sink.base_url + "/caliper/event", sink.counts


def spool_backlog(path: Path, size: int, runs: int, url: str) -> float:
    """Write ``size`` windows of ``runs`` runs into a fresh spool; seconds it took.

    Written as a tracker sending to ``url`` leaves them: a tracker sends only
    the rows of its own sensor and endpoint.
    """
    started = time.perf_counter()
    outbox = SqliteOutbox(path, max(size, 10_000), sensor=_bench.SENSOR, endpoint=url)
    templates = [_bench.template() for _ in range(runs)]
    entries = [_bench.window(templates[n % runs], n // runs) for n in range(size)]
    for chunk in range(0, size, 1000):  # one durable transaction per 1,000 entries
        outbox.put_many(entries[chunk : chunk + 1000])
    assert len(outbox) == size
    outbox.close()
    return time.perf_counter() - started


def drain_once(directory: Path, size: int, batch: int, kind: str) -> dict[str, float]:
    """Time a tracker delivering a spooled backlog of ``size`` events; returns the figures."""
    path = directory / f"backlog-{uuid.uuid4().hex[:8]}.sqlite3"
    with endpoint(kind) as (url, counts):
        built = spool_backlog(path, size, max(1, size // 5760 + 1), url)  # untimed
        config = _bench.config(url, spool_path=path, batch_size=batch)
        started = time.perf_counter()
        tracker = tt.Tracker(config)  # finds the backlog and starts delivering
        opened = time.perf_counter()
        empty = tracker.flush(timeout=120)
        drained = time.perf_counter()
        stats = tracker.stats()
        tracker.close()
        received = counts()
    if not (empty and stats.sent == size and received["events"] >= size):
        raise SystemExit(f"drain incomplete: flush={empty} received={received} stats={stats}")
    return {
        "built": built,
        "open": opened - started,
        "total": drained - started,
        "requests": received["requests"],
        "events": received["events"],
    }


def main() -> None:
    """Run the drain for each endpoint and batch size and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000, help="backlog size (10000)")
    parser.add_argument(
        "--batch", type=int, nargs="+", default=[50, 200], help="batch sizes (50 200)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="runs of each (3)")
    parser.add_argument(
        "--endpoint",
        choices=["collector", "fast"],
        nargs="+",
        default=["collector", "fast"],
        help="where to deliver (both)",
    )
    args = parser.parse_args()
    print(_bench.machine())
    with tempfile.TemporaryDirectory() as name:
        print(
            f"backlog: {args.events:,} spooled TimeSpentEvents, written afresh for each round "
            f"(untimed); median of {args.rounds} rounds\n"
        )
        print(
            f"{'endpoint':<10} {'batch_size':>10} {'drain (s)':>10} {'min-max (s)':>12}"
            f" {'events/s':>9} {'requests':>8} {'tracker open (s)':>16}"
        )
        for kind in args.endpoint:
            for batch in args.batch:
                results = [
                    drain_once(Path(name), args.events, batch, kind) for _ in range(args.rounds)
                ]
                results.sort(key=lambda result: result["total"])
                middle = results[len(results) // 2]
                print(
                    f"{kind:<10} {batch:>10} {middle['total']:>10.3f}"
                    f" {results[0]['total']:>5.2f}-{results[-1]['total']:<5.2f}"
                    f" {args.events / middle['total']:>10,.0f} {middle['requests']:>8.0f}"
                    f" {middle['open']:>16.3f}"
                )
    print(
        "\nbudget (benchmarks/README.md): "
        "10,000 spooled events drain to a loopback endpoint in <= 2 s"
    )


if __name__ == "__main__":
    main()
