"""What the durable spool costs: one ``put`` commit, crash recovery, the full path, a drain.

Run: ``.venv/bin/python benchmarks/spool_write.py`` (``--help`` for the sizes).
Prints medians and 99th percentiles in milliseconds. Uses a temporary
directory on the disk of ``--dir`` (the system temp dir by default): the
figure is the disk's fsync latency as much as the library's.

The full path (``max_queue`` reached while the endpoint is unreachable) is
measured in three situations, each on a fresh spool filled to ``--size``:

* ``fold``: the spool holds the windows of two running sessions (what a long
  outage leaves); each put is the next window of one of them and is folded
  into that run's newest held window. This is what happens every tick of a
  long outage.
* ``merge pair``: the same spool, but each put is a window of a run the spool
  does not hold (a new lesson): the oldest pair of consecutive windows of a
  run is merged to make room.
* ``drop``: nothing can be merged (every held window was attempted: the
  endpoint timed out on all of them); the oldest window is dropped, counted.
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import _bench

from timeback_tracker import _spool
from timeback_tracker._accounting import RunAccounting
from timeback_tracker._outbox import Checkpoint, Entry, MemoryOutbox, Outbox
from timeback_tracker._spool import SqliteOutbox


def summary(name: str, seconds: list[float]) -> None:
    """Print the median and 99th percentile of ``seconds`` in milliseconds."""
    median, p99 = _bench.median_p99(seconds)
    print(
        f"{name:<50} median {median * 1000:8.3f} ms   p99 {p99 * 1000:8.3f} ms   (n={len(seconds)})"
    )


def timed(action: Callable[[], object]) -> float:
    """Seconds ``action`` takes."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def put_latency(outbox: Outbox, entries: list[Entry]) -> list[float]:
    """Time one ``put_many([entry])`` per entry (what a tick with one session does)."""
    return [timed(lambda entry=entry: outbox.put_many([entry])) for entry in entries]  # type: ignore[misc]


def fill(outbox: SqliteOutbox, entries: list[Entry]) -> None:
    """Put ``entries`` in chunks of 1,000 (one durable transaction each), untimed."""
    for chunk in range(0, len(entries), 1000):
        outbox.put_many(entries[chunk : chunk + 1000])


def bench_puts(directory: Path, count: int) -> None:
    """One small put: synchronous=FULL (the default), NORMAL, and memory."""
    for mode in ("FULL", "NORMAL"):
        outbox = SqliteOutbox(directory / f"put-{mode}.sqlite3", 1_000_000)
        template = _bench.template()
        # The spool picks FULL or NORMAL per transaction: NORMAL makes every one non-durable.
        _spool.transaction = _durable if mode == "FULL" else _not_durable
        put_latency(outbox, [_bench.window(template, seq) for seq in range(20)])  # warm up
        entries = [_bench.window(template, seq) for seq in range(20, 20 + count)]
        summary(f"put, one window, synchronous={mode}", put_latency(outbox, entries))
        outbox.close()
    _spool.transaction = _durable
    template = _bench.template()
    entries = [_bench.window(template, seq) for seq in range(count)]
    summary("put, one window, MemoryOutbox", put_latency(MemoryOutbox(1_000_000), entries))


_durable = _spool.transaction


@contextlib.contextmanager
def _not_durable(conn: sqlite3.Connection, *, durable: bool = True) -> Iterator[None]:
    """``transaction`` with ``synchronous=NORMAL`` always (survives a crash, not power loss)."""
    with _durable(conn, durable=False):
        yield


def bench_full_path(directory: Path, size: int, count: int) -> None:
    """A put into a full spool of ``size`` entries, in the three situations of the docstring."""
    for case in ("fold", "merge pair", "drop"):
        path = directory / f"full-{case.replace(' ', '-')}.sqlite3"
        outbox = SqliteOutbox(path, size)
        runs = [_bench.template(), _bench.template()]
        fill(outbox, [_bench.window(runs[n % 2], n // 2) for n in range(size)])
        if case == "drop":
            # Every held window may have reached the server: none can be merged.
            with outbox._lock:
                outbox._conn_().execute("UPDATE entries SET attempts = 1")
        if case == "fold":
            entries = [_bench.window(runs[n % 2], size // 2 + n // 2) for n in range(count)]
        else:
            # A window of a run the spool does not hold: its own run has nothing to fold into.
            entries = [_bench.window(_bench.template(), 0) for _ in range(count)]
        times = put_latency(outbox, entries)
        stats = (len(outbox), outbox.count())
        outbox.close()
        summary(f"put into a full spool of {size:,} ({case})", times)
        if stats[1] > size:
            print(f"{'':<50} (held {stats[1]:,}: more than max_queue)")
    summary(
        f"open a spool of {size:,} (quick_check)",
        [
            timed(lambda: SqliteOutbox(directory / "full-fold.sqlite3", size).close())
            for _ in range(5)
        ],
    )


def bench_recover(directory: Path, segments: int, rounds: int) -> None:
    """recover() of ``segments`` running run segments left by an owner that is gone."""
    times = []
    wall = _bench.T0_MS
    for round_ in range(rounds):
        path = directory / f"recover-{round_}.sqlite3"
        crashed = SqliteOutbox(path, 100_000)
        checkpoints = {}
        for _ in range(segments):
            template = _bench.template()
            accounting = RunAccounting(now_ms=0, wall_ms=wall)
            accounting.close_window(15_000, wall + 15_000)  # one window sent, one open
            checkpoints[template.segment] = Checkpoint(
                template, accounting.snapshot(), 20_000, wall + 20_000
            )
        crashed.put_many([], checkpoints)
        crashed.close()  # its owner lock is gone, as after a crash
        starting = SqliteOutbox(path, 100_000)
        times.append(timed(starting.recover))
        assert len(starting) >= segments, len(starting)
        starting.close()
    summary(f"recover() of {segments} crashed run segments", times)


def bench_drain(directory: Path, size: int, batch: int) -> None:
    """take(batch) + ack until ``size`` spooled entries are gone (no network)."""
    outbox = SqliteOutbox(directory / "drain.sqlite3", size)
    runs = [_bench.template(), _bench.template()]
    fill(outbox, [_bench.window(runs[n % 2], n // 2) for n in range(size)])
    times = []
    while len(outbox):
        start = time.perf_counter()
        outbox.ack(outbox.take(batch))
        times.append(time.perf_counter() - start)
    summary(f"take({batch}) + ack, {size:,} spooled", times)
    print(f"{'':<50} total  {sum(times):8.3f} s")
    outbox.close()


def main() -> None:
    """Run every measurement and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puts", type=int, default=2000, help="puts per mode (default 2000)")
    parser.add_argument("--full-puts", type=int, default=200, help="puts per full case (200)")
    parser.add_argument("--segments", type=int, default=100, help="to recover (default 100)")
    parser.add_argument("--size", type=int, default=10_000, help="full/drained spool size")
    parser.add_argument("--dir", help="directory on the disk to measure (default: temp dir)")
    args = parser.parse_args()
    print(_bench.machine())
    with tempfile.TemporaryDirectory(dir=args.dir) as name:
        directory = Path(name)
        bench_puts(directory, args.puts)
        bench_recover(directory, args.segments, rounds=20)
        bench_full_path(directory, args.size, count=args.full_puts)
        bench_drain(directory, args.size, batch=50)
    print("\ntarget (issue 12): a put into a full spool of 10,000 entries <= 1 ms")


if __name__ == "__main__":
    main()
