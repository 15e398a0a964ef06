"""A running session's windows wait to share an envelope, but only while they are safe.

With the spool, a running session's windows are held back for up to ``hold``
seconds (3.5 heartbeat intervals, at most a minute; the heartbeat thread,
awake once a second anyway, lets them go), so that four windows travel in
one POST and leave the spool in one delete: the idle kiosk's cost (wake-ups,
CPU, disk) is the point. Whatever would make
waiting wrong ends it at once: a finished run, ``flush()``, ``close()``, a
full batch, and windows that are in memory only (no spool, or a spool that
refuses writes), which a crash would lose.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

import timeback_tracker as tt
from tests.support import (
    ACTIVITY,
    SENSOR,
    USER,
    assert_conserved,
    assert_contiguous,
    completion,
    eventually,
    rows,
    window,
    windows,
)
from timeback_tracker._delivery import MAX_HOLD, Counters, Delivery, DeliverySettings
from timeback_tracker._outbox import MemoryOutbox, Outbox
from timeback_tracker._spool import SqliteOutbox
from timeback_tracker.testing import FakeClock, LocalCollector

HOLD = 30.0  # far longer than any wait below: a window sent early was not held


def delivery(outbox: Outbox, collector: LocalCollector, hold: float = HOLD) -> Delivery:
    settings = DeliverySettings(
        endpoint=collector.url,
        sensor=SENSOR,
        auth=None,
        request_timeout=(5.0, 5.0),
        batch_size=50,
        max_queue=1000,
        max_event_age=86_400.0,
        hold=hold,
    )
    started = Delivery(outbox, settings, Counters(), lambda failure: None, FakeClock())
    started.start()
    return started


def nothing_sent_for(collector: LocalCollector, seconds: float) -> bool:
    """True when no request arrived for ``seconds`` (the hold is far longer)."""
    time.sleep(seconds)  # elapsed time on purpose: proving that nothing happens
    return not collector.requests


def test_held_windows_share_one_envelope_when_a_run_finishes(
    tmp_path: Path, collector: LocalCollector
) -> None:
    outbox = SqliteOutbox(tmp_path / "spool.db", 1000)
    sender = delivery(outbox, collector)
    run = uuid.uuid4()
    try:
        for seq in range(3):
            outbox.put_many([window(run, seq)])
            sender.notify(now=False)
        assert nothing_sent_for(collector, 0.5)
        outbox.put_many([completion(run)])
        sender.notify()  # a finished run: now
        assert eventually(lambda: len(outbox) == 0)
    finally:
        sender.stop(2)
        outbox.close()
    assert len(collector.requests) == 1
    assert [event["type"] for event in collector.events] == [
        "TimeSpentEvent",
        "TimeSpentEvent",
        "TimeSpentEvent",
        "ActivityEvent",
    ]


def test_the_heartbeat_sends_held_windows_once_the_oldest_is_due(
    tmp_path: Path, collector: LocalCollector
) -> None:
    outbox = SqliteOutbox(tmp_path / "spool.db", 1000)
    sender = delivery(outbox, collector, hold=0.5)
    run = uuid.uuid4()
    try:
        outbox.put_many([window(run, 0)])
        sender.notify(now=False)
        held_at = time.monotonic()
        outbox.put_many([window(run, 1)])
        sender.notify(now=False)  # the oldest window's wait counts, not this one's
        while not collector.requests and time.monotonic() - held_at < 10:
            sender.send_held()  # the heartbeat's once-a-second call, more often
            time.sleep(0.01)  # elapsed time on purpose: the hold runs out
        assert time.monotonic() - held_at >= 0.5
        assert eventually(lambda: len(outbox) == 0)
    finally:
        sender.stop(2)
        outbox.close()
    assert len(collector.requests) == 1
    assert len(collector.time_spent_events()) == 2


@pytest.mark.parametrize("ask", ["flush", "stop"])
def test_flush_and_close_send_held_windows_at_once(
    tmp_path: Path, collector: LocalCollector, ask: str
) -> None:
    outbox = SqliteOutbox(tmp_path / "spool.db", 1000)
    sender = delivery(outbox, collector)
    try:
        outbox.put_many([window(uuid.uuid4(), 0)])
        sender.notify(now=False)
        assert nothing_sent_for(collector, 0.3)
        started = time.monotonic()
        if ask == "flush":
            assert sender.wait_until_empty(10)
        else:
            assert sender.stop(10)
        assert time.monotonic() - started < HOLD / 2
    finally:
        sender.stop(2)
        outbox.close()
    assert len(collector.time_spent_events()) == 1


def test_windows_in_memory_are_sent_at_once(collector: LocalCollector) -> None:
    outbox = MemoryOutbox(1000)
    sender = delivery(outbox, collector)
    try:
        outbox.put_many([window(uuid.uuid4(), 0)])
        sender.notify(now=False)
        assert collector.wait_for(lambda c: len(c.time_spent_events()) == 1, timeout=HOLD / 2)
    finally:
        sender.stop(2)


def test_windows_the_spool_refused_are_sent_at_once(
    tmp_path: Path, collector: LocalCollector
) -> None:
    """A spool that cannot take a write keeps the window in memory: no waiting then."""
    outbox = SqliteOutbox(tmp_path / "spool.db", 1000)
    sender = delivery(outbox, collector)
    blocker = sqlite3.connect(tmp_path / "spool.db", isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock during the put
        outbox.put_many([window(uuid.uuid4(), 0)])
        assert outbox.in_memory == 1
        sender.notify(now=False)
        blocker.execute("COMMIT")
        assert collector.wait_for(lambda c: len(c.time_spent_events()) == 1, timeout=HOLD / 2)
    finally:
        sender.stop(2)
        outbox.close()
        blocker.close()


def test_a_full_batch_is_sent_without_waiting(tmp_path: Path, collector: LocalCollector) -> None:
    outbox = SqliteOutbox(tmp_path / "spool.db", 1000)
    sender = delivery(outbox, collector)
    run = uuid.uuid4()
    try:
        outbox.put_many([window(run, seq) for seq in range(50)])
        sender.notify(now=False)
        assert collector.wait_for(lambda c: len(c.time_spent_events()) == 50, timeout=HOLD / 2)
    finally:
        sender.stop(2)
        outbox.close()


def test_a_backlog_from_an_earlier_run_is_sent_at_once(
    tmp_path: Path, collector: LocalCollector
) -> None:
    outbox = SqliteOutbox(tmp_path / "spool.db", 1000)
    outbox.put_many([window(uuid.uuid4(), 0)])
    sender = delivery(outbox, collector)  # never notified: it finds the backlog itself
    try:
        assert collector.wait_for(lambda c: len(c.time_spent_events()) == 1, timeout=HOLD / 2)
    finally:
        sender.stop(2)
        outbox.close()


def test_the_hold_follows_the_heartbeat_interval() -> None:
    def hold(interval: float) -> float:
        config = tt.TrackerConfig(
            sensor=SENSOR, endpoint="https://example.test/e", heartbeat_interval=interval
        )
        return DeliverySettings.from_config(config).hold

    assert hold(15) == 52.5  # four windows of a running session in one envelope
    assert hold(1) == 3.5
    assert hold(3600) == MAX_HOLD


def test_a_running_session_on_the_spool_sends_its_windows_together(
    tmp_path: Path, collector: LocalCollector
) -> None:
    config = tt.TrackerConfig(
        sensor=SENSOR,
        endpoint=collector.url,
        heartbeat_interval=0.2,
        spool_path=tmp_path / "spool.db",
        batch_size=1000,  # no full batch within the test: only the hold lets windows go
    )
    with tt.Tracker(config) as tracker:
        session = tracker.start_session(USER, ACTIVITY)
        assert collector.wait_for(lambda c: len(c.time_spent_events()) >= 8, timeout=20)
        session.complete(0)
        assert tracker.flush(10)
    windows = len(collector.time_spent_events())
    # Windows every 0.2 s, held up to 0.7 s: about four to an envelope.
    assert len(collector.requests) <= windows / 2, (len(collector.requests), windows)


KIOSK = textwrap.dedent(
    """
    import sys, time
    import timeback_tracker as tt

    tracker = tt.Tracker(tt.TrackerConfig(
        sensor="https://kiosk.example.com/sensors/lab-3",
        endpoint=sys.argv[1],
        spool_path=sys.argv[2],
        heartbeat_interval=2.0,  # windows held up to 7 s
    ))
    session = tracker.start_session(
        tt.TimebackUser(id="https://sis.example.com/users/1", email="kid@example.com"),
        tt.TimebackActivityContext(
            id="https://app.example.com/a/1", subject="Math", app=tt.App(name="Kiosk")
        ),
    )
    print(session.run_id, flush=True)
    for line in sys.stdin:
        print(session.active_seconds, flush=True)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_windows_held_when_the_app_is_killed_arrive_after_the_next_start(
    tmp_path: Path, collector: LocalCollector
) -> None:
    """Held windows are already durable: a kill -9 while they wait loses none of them,
    and the next tracker on the spool sends them with the ids they had."""
    spool = tmp_path / "spool.db"
    kiosk = subprocess.Popen(
        [sys.executable, "-c", KIOSK, collector.url, str(spool)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert kiosk.stdin is not None
    assert kiosk.stdout is not None
    try:
        run_id = kiosk.stdout.readline().strip()
        assert eventually(
            lambda: spool.exists() and rows(spool, "SELECT count(*) FROM entries")[0][0] >= 2,
            timeout=30,
        )
        assert not collector.events  # two windows written, none sent: they are held
        held = {row[0] for row in rows(spool, "SELECT id FROM entries")}
        kiosk.stdin.write("active?\n")
        kiosk.stdin.flush()
        counted = float(kiosk.stdout.readline())
        os.kill(kiosk.pid, signal.SIGKILL)
    finally:
        kiosk.kill()
        kiosk.communicate()
    config = tt.TrackerConfig(sensor=SENSOR, endpoint=collector.url, spool_path=spool)
    with tt.Tracker(config) as tracker:
        assert tracker.flush(10)
    arrived = windows(collector, run_id)
    assert held <= {event["id"] for event in arrived}
    assert_conserved(arrived)
    assert_contiguous(arrived)
    assert collector.totals(run_id)[0] >= counted - 1.0
    assert collector.duplicate_conflicts == []
