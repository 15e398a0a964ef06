"""What the durable spool costs: one ``put`` commit, crash recovery, the full path, a drain.

Run: ``.venv/bin/python benchmarks/spool_write.py`` (``--help`` for the sizes).
Prints medians and 99th percentiles in milliseconds. Uses a temporary
directory on the disk of ``--dir`` (the system temp dir by default): the
figure is the disk's fsync latency as much as the library's.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import timeback_tracker as tt
from timeback_tracker._outbox import Entry, MemoryOutbox, Outbox, time_spent_event_id
from timeback_tracker._spool import SqliteOutbox

USER = tt.TimebackUser(id="https://sis.example.com/users/student-123", email="kid@example.com")
ACTIVITY = tt.TimebackActivityContext(
    id="https://myapp.example.com/activities/Math/g3/lesson-1",
    subject=tt.Subject.MATH,
    app=tt.App(name="My App"),
)
T0 = datetime(2026, 1, 27, 10, 0, tzinfo=timezone.utc)


def window(run: uuid.UUID, seq: int) -> Entry:
    """Window ``seq`` of ``run``: a 15 s TimeSpentEvent (about 930 bytes of JSON)."""
    start = T0 + timedelta(seconds=15 * seq)
    event = tt.TimeSpentEvent.for_window(
        user=USER,
        activity=ACTIVITY,
        run_id=run,
        start=start,
        end=start + timedelta(seconds=15),
        active_seconds=10,
        inactive_seconds=5,
        event_id=time_spent_event_id(run, seq),
    )
    return Entry.of(event, seq, seq)


def summary(name: str, seconds: list[float]) -> None:
    """Print the median and 99th percentile of ``seconds`` in milliseconds."""
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    print(
        f"{name:<44} median {statistics.median(ordered) * 1000:8.3f} ms"
        f"   p99 {p99 * 1000:8.3f} ms   (n={len(ordered)})"
    )


def timed(action: Callable[[], object]) -> float:
    """Seconds ``action`` takes."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def put_latency(outbox: Outbox, count: int) -> list[float]:
    """Time ``count`` single puts of fresh windows."""
    run = uuid.uuid4()
    entries = [window(run, seq) for seq in range(count)]
    return [timed(lambda entry=entry: outbox.put(entry)) for entry in entries]  # type: ignore[misc]


def bench_puts(directory: Path, count: int) -> None:
    """One small put: synchronous=FULL (the default), NORMAL, and memory."""
    for mode in ("FULL", "NORMAL"):
        outbox = SqliteOutbox(directory / f"put-{mode}.sqlite3", 1_000_000)
        outbox._conn.execute(f"PRAGMA synchronous = {mode}")
        put_latency(outbox, 20)  # warm up: schema pages, WAL file
        summary(f"put, one window, synchronous={mode}", put_latency(outbox, count))
        outbox.close()
    summary("put, one window, MemoryOutbox", put_latency(MemoryOutbox(1_000_000), count))


def bench_full_path(directory: Path, size: int, count: int) -> None:
    """A put into a full spool of ``size`` entries (coalescing reads every row's metadata)."""
    outbox = SqliteOutbox(directory / "full.sqlite3", size)
    outbox.put_many([window(uuid.uuid4(), seq) for seq in range(size)])
    run = uuid.uuid4()
    entries = [window(run, seq) for seq in range(count)]
    times = [timed(lambda entry=entry: outbox.put(entry)) for entry in entries]  # type: ignore[misc]
    summary(f"put into a full spool of {size:,} (coalesces)", times)
    outbox.close()
    summary(
        f"open a spool of {size:,} (quick_check)",
        [timed(lambda: SqliteOutbox(directory / "full.sqlite3", size).close()) for _ in range(5)],
    )


def bench_recover(directory: Path, checkpoints: int, rounds: int) -> None:
    """recover() of ``checkpoints`` checkpoints left by an owner that is gone."""
    times = []
    for round_ in range(rounds):
        path = directory / f"recover-{round_}.sqlite3"
        crashed = SqliteOutbox(path, 100_000)
        runs = [uuid.uuid4() for _ in range(checkpoints)]
        crashed.put_many([], {str(run): window(run, 3) for run in runs})
        crashed.close()  # its owner lock is gone, as after a crash
        starting = SqliteOutbox(path, 100_000)
        times.append(timed(starting.recover))
        assert len(starting) == checkpoints
        starting.close()
    summary(f"recover() of {checkpoints} checkpoints", times)


def bench_drain(directory: Path, size: int, batch: int) -> None:
    """take(batch) + ack until ``size`` spooled entries are gone (no network)."""
    outbox = SqliteOutbox(directory / "drain.sqlite3", size)
    outbox.put_many([window(uuid.uuid4(), seq) for seq in range(size)])
    times = []
    while len(outbox):
        start = time.perf_counter()
        outbox.ack(outbox.take(batch))
        times.append(time.perf_counter() - start)
    summary(f"take({batch}) + ack, {size:,} spooled", times)
    print(f"{'':<44} total  {sum(times):8.3f} s")
    outbox.close()


def main() -> None:
    """Run every measurement and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puts", type=int, default=2000, help="puts per mode (default 2000)")
    parser.add_argument("--checkpoints", type=int, default=100, help="to recover (default 100)")
    parser.add_argument("--size", type=int, default=10_000, help="full/drained spool size")
    parser.add_argument("--dir", help="directory on the disk to measure (default: temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as name:
        directory = Path(name)
        bench_puts(directory, args.puts)
        bench_recover(directory, args.checkpoints, rounds=20)
        bench_full_path(directory, args.size, count=50)
        bench_drain(directory, args.size, batch=50)


if __name__ == "__main__":
    main()
