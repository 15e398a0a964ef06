"""The spool under attack: resumed runs, shared files, damaged rows, locks, deletion, symlinks."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any, cast

import pytest

import timeback_tracker as tt
from tests.support import (
    ACTIVITY,
    SENSOR,
    USER,
    assert_conserved,
    eventually,
    rows,
    trash_entry_pages,
    window,
    windows,
)
from timeback_tracker._outbox import MemoryOutbox
from timeback_tracker._spool import SqliteOutbox, open_outbox
from timeback_tracker._spool_file import close_quietly
from timeback_tracker.testing import FakeClock, LocalCollector

ROOT = Path(__file__).resolve().parent.parent
needs_kill = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    """A spool file path in a fresh directory."""
    return tmp_path / "spool.sqlite3"


def config(endpoint: str, spool_path: Path | None, **overrides: Any) -> tt.TrackerConfig:
    """A tracker config for the tests (fast heartbeat)."""
    settings: dict[str, Any] = {
        "sensor": SENSOR,
        "endpoint": endpoint,
        "spool_path": spool_path,
        "heartbeat_interval": 0.2,
    }
    settings.update(overrides)
    return tt.TrackerConfig(**settings)


# Holds a spool's write lock for a while, as another process's long transaction would.
LOCKER = textwrap.dedent(
    """
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))  # holds the lock this long
    conn.execute("COMMIT")
    print("released", flush=True)
    """
)


def hold_lock(path: Path, seconds: float) -> subprocess.Popen[str]:
    """Start a process holding ``path``'s write lock for ``seconds``; returns once it holds it."""
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert locker.stdout is not None
    assert locker.stdout.readline().strip() == "locked"
    return locker


def finish(process: subprocess.Popen[str]) -> None:
    """Wait for a helper process and close its pipes."""
    process.wait(30)
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()


# -- 1. resumed runs ---------------------------------------------------------------------------


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "spool"])
def test_a_resumed_run_never_reuses_an_id_and_its_time_adds_up(
    collector: LocalCollector, spool: Path, durable: bool
) -> None:
    """Two segments of one run (an app restart resuming the lesson): distinct window ids, one
    runId, time summed, one completion; a second completion of the run is refused."""
    path = spool if durable else None
    clock = FakeClock()
    first_active = 0.0
    with tt.Tracker(config(collector.url, path, heartbeat_interval=3600), clock=clock) as tracker:
        first = tracker.start_session(USER, ACTIVITY)
        clock.advance(20)
        first_active = first.active_seconds
        first.end()
        assert tracker.flush(5)
    with tt.Tracker(config(collector.url, path, heartbeat_interval=3600), clock=clock) as tracker:
        resumed = tracker.start_session(USER, ACTIVITY, run_id=first.run_id)
        clock.advance(7)
        resumed.complete(1)
        assert tracker.flush(5)
        again = tracker.start_session(USER, ACTIVITY, run_id=first.run_id)
        clock.advance(1)
        with pytest.raises(tt.SessionStateError, match="completed before"):
            again.complete(2)
        assert again.state == "running"  # nothing was recorded: it can still end
        again.end()
        assert tracker.flush(5)
    events = windows(collector, first.run_id)
    assert len(events) == 3
    assert len({e["id"] for e in events}) == 3
    assert collector.duplicate_conflicts == []
    assert_conserved(events)
    assert collector.totals(first.run_id)[0] == first_active + 7 + 1
    assert len(collector.completions(first.run_id)) == 1


def test_a_completed_run_is_known_to_the_next_tracker_on_the_spool(
    collector: LocalCollector, spool: Path
) -> None:
    """The spool remembers completed runs: a tracker started later refuses a second one."""
    with tt.Tracker(config(collector.url, spool)) as tracker:
        session = tracker.start_session(USER, ACTIVITY)
        session.complete(1)
    with tt.Tracker(config(collector.url, spool)) as tracker:
        resumed = tracker.start_session(USER, ACTIVITY, run_id=session.run_id)
        with pytest.raises(tt.SessionStateError, match="completed before"):
            resumed.complete(1)
        resumed.end()
        assert tracker.flush(5)
    assert len(collector.completions(session.run_id)) == 1
    assert collector.duplicate_conflicts == []


def test_a_run_running_here_cannot_be_started_again(collector: LocalCollector) -> None:
    """Starting a run id that is running in this tracker is refused, naming the field."""
    with tt.Tracker(config(collector.url, None)) as tracker:
        session = tracker.start_session(USER, ACTIVITY)
        with pytest.raises(tt.ValidationError, match="run_id"):
            tracker.start_session(USER, ACTIVITY, run_id=session.run_id)
        session.end()
        tracker.start_session(USER, ACTIVITY, run_id=session.run_id).end()  # ended: may resume


# -- 2, 7. a spool held by another process ---------------------------------------------------

KIOSK = textwrap.dedent(
    """
    import sys, time
    import timeback_tracker as tt

    endpoint, spool, interval = sys.argv[1], sys.argv[2], float(sys.argv[3])
    exit_timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 2.0
    tracker = tt.Tracker(tt.TrackerConfig(
        sensor="https://kiosk.example.com/sensors/lab-3",
        endpoint=endpoint,
        spool_path=spool,
        heartbeat_interval=interval,
        exit_timeout=exit_timeout,
        request_timeout=(0.5, 0.5),
    ))
    session = tracker.start_session(
        tt.TimebackUser(id="https://sis.example.com/users/1", email="kid@example.com"),
        tt.TimebackActivityContext(
            id="https://app.example.com/a/1", subject="Math", app=tt.App(name="Kiosk")
        ),
    )
    print("run", session.run_id, flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "active":
            print("active", session.active_seconds, flush=True)
        elif command == "exit":
            break
    print("exiting", flush=True)
    """
)


def start_kiosk(
    endpoint: str, spool: Path, interval: float, exit_timeout: float = 2.0
) -> tuple[subprocess.Popen[str], str]:
    """A kiosk process with one running session; returns it and the run id."""
    kiosk = subprocess.Popen(
        [sys.executable, "-c", KIOSK, endpoint, str(spool), str(interval), str(exit_timeout)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert kiosk.stdout is not None
    first = kiosk.stdout.readline().split()
    assert first[:1] == ["run"], first
    return kiosk, first[1]


def ask_active(kiosk: subprocess.Popen[str]) -> float:
    """The kiosk's counted active seconds now."""
    assert kiosk.stdin is not None
    assert kiosk.stdout is not None
    kiosk.stdin.write("active\n")
    kiosk.stdin.flush()
    return float(kiosk.stdout.readline().split()[1])


@needs_kill
def test_a_kill_while_the_spool_is_locked_never_sends_an_id_twice(
    collector: LocalCollector, spool: Path
) -> None:
    """Killed while another process held the spool's lock for 3 s: after a restart no id
    arrives with two contents, and what is lost is at most ~1 s plus the locked time."""
    kiosk, run_id = start_kiosk(collector.url, spool, 0.3)
    time.sleep(1.2)  # the kiosk runs: windows reach the spool
    locker = hold_lock(spool, 3.0)
    lock_started = time.monotonic()
    time.sleep(2.0)  # windows close while the spool refuses writes
    last = ask_active(kiosk)
    os.kill(kiosk.pid, signal.SIGKILL)
    finish(kiosk)
    finish(locker)
    locked_for = time.monotonic() - lock_started
    with tt.Tracker(config(collector.url, spool)) as tracker:
        assert tracker.flush(10)
    assert collector.duplicate_conflicts == []
    events = windows(collector, run_id)
    assert_conserved(events)
    delivered = collector.totals(run_id)[0]
    assert last - delivered <= 1.0 + locked_for, (last, delivered)


def test_exit_is_bounded_while_another_process_holds_the_lock(
    collector: LocalCollector, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """close() returns within exit_timeout though the spool is locked for 10 s, and says
    exactly what could not be kept."""
    tracker = tt.Tracker(config(collector.url, spool, exit_timeout=1.0))
    session = tracker.start_session(USER, ACTIVITY)
    time.sleep(0.3)  # the session runs before the outage
    collector.go_down()
    locker = hold_lock(spool, 10.0)
    try:
        with caplog.at_level(logging.WARNING):
            started = time.monotonic()
            tracker.close()
            took = time.monotonic() - started
    finally:
        locker.kill()
        finish(locker)
    assert took < 1.0 + 0.8, took
    assert session.state == "ended"
    assert "left in" in caplog.text  # kept for the next start, and said so
    assert "lost" not in caplog.text


@needs_kill
def test_the_exit_hook_is_bounded_while_another_process_holds_the_lock(
    collector: LocalCollector, spool: Path
) -> None:
    """An app that exits without close() while another process holds the spool for 10 s:
    the exit hook returns within exit_timeout, says what it kept, and the next start
    sends the run's last window."""
    collector.go_down()
    kiosk, run_id = start_kiosk(collector.url, spool, 0.2, exit_timeout=1.0)
    assert eventually(lambda: rows(spool, "SELECT count(*) FROM entries")[0][0] >= 2)
    counted = ask_active(kiosk)
    locker = hold_lock(spool, 10.0)
    try:
        assert kiosk.stdin is not None
        assert kiosk.stdout is not None
        kiosk.stdin.write("exit\n")
        kiosk.stdin.flush()
        assert kiosk.stdout.readline().strip() == "exiting"
        started = time.monotonic()
        kiosk.wait(30)
        took = time.monotonic() - started
    finally:
        locker.kill()
        finish(locker)
    assert kiosk.stderr is not None
    said = kiosk.stderr.read()
    finish(kiosk)
    # exit_timeout, plus the interpreter's own exit on a loaded machine; not the lock's 10 s
    assert took < 1.0 + 2.0, took
    assert kiosk.returncode == 0, said
    assert "left in" in said
    assert "lost" not in said
    collector.come_back()
    with tt.Tracker(config(collector.url, spool)) as again:
        assert again.flush(10)
    events = windows(collector, run_id)
    assert_conserved(events)
    assert collector.totals(run_id)[0] >= counted
    assert collector.duplicate_conflicts == []


def test_a_spool_busy_at_start_is_used_once_it_is_free(
    collector: LocalCollector, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A tracker that starts while another process holds the spool keeps events in memory,
    then writes them to the spool as soon as it is free: never memory-only for life."""
    SqliteOutbox(spool, 10).close()  # the file exists, in WAL mode
    locker = hold_lock(spool, 1.5)
    collector.go_down()
    with caplog.at_level(logging.WARNING, "timeback_tracker.spool"):
        tracker = tt.Tracker(config(collector.url, spool, heartbeat_interval=0.1))
    try:
        session = tracker.start_session(USER, ACTIVITY)
        assert "busy" in caplog.text or "a write failed" in caplog.text
        finish(locker)
        assert eventually(lambda: rows(spool, "SELECT count(*) FROM entries")[0][0] >= 3, 10)
        session.complete(1)
        collector.come_back()
        assert tracker.flush(10)
    finally:
        tracker.close()
    assert len(collector.completions(session.run_id)) == 1


# -- 3. shared spools ------------------------------------------------------------------------


def test_trackers_sharing_a_spool_send_only_their_own_events(tmp_path: Path) -> None:
    """Two apps with different endpoints and sensors on one spool file: each endpoint gets
    its own app's events only, even while the other endpoint is down."""
    spool = tmp_path / "shared.sqlite3"
    with LocalCollector() as first, LocalCollector() as second:
        second.go_down()
        one = tt.Tracker(config(first.url, spool))
        two = tt.Tracker(config(second.url, spool, sensor=SENSOR + "-two"))
        try:
            mine = one.start_session(USER, ACTIVITY)
            theirs = two.start_session(USER, ACTIVITY)
            time.sleep(0.5)  # both sessions run
            theirs.complete(1)
            mine.complete(2)
            assert one.flush(5)
            assert not two.flush(0.5)
            second.come_back()
            assert two.flush(10)
        finally:
            one.close()
            two.close()
        assert {e["extensions"]["runId"] for e in first.events} == {mine.run_id}
        assert {e["extensions"]["runId"] for e in second.events} == {theirs.run_id}
        assert {env["sensor"] for env in first.envelopes} == {SENSOR}
        assert {env["sensor"] for env in second.envelopes} == {SENSOR + "-two"}


@needs_kill
def test_a_crashed_apps_windows_wait_for_their_own_endpoint(tmp_path: Path) -> None:
    """An app killed on a shared spool: another app's tracker recovers its open window but
    never sends it; the crashed app's next start sends it to its own endpoint."""
    spool = tmp_path / "shared.sqlite3"
    with LocalCollector() as home, LocalCollector() as elsewhere:
        home.go_down()
        kiosk, run_id = start_kiosk(home.url, spool, 0.2)
        time.sleep(1.5)  # the kiosk runs: its windows wait in the spool
        os.kill(kiosk.pid, signal.SIGKILL)
        finish(kiosk)
        with tt.Tracker(config(elsewhere.url, spool, sensor=SENSOR + "-other")) as other:
            assert other.flush(2)  # nothing of its own to send
        assert elsewhere.events == []
        home.come_back()
        with tt.Tracker(config(home.url, spool)) as again:
            assert again.flush(10)
        assert {e["extensions"]["runId"] for e in home.events} == {run_id}
        assert home.duplicate_conflicts == []


# -- 4. damaged rows -------------------------------------------------------------------------


@pytest.mark.slow(13)
def test_a_damaged_row_is_set_aside_and_everything_else_delivered(
    collector: LocalCollector, spool: Path
) -> None:
    """A row whose JSON is broken (the file passes quick_check) becomes a dead letter with a
    reason, is counted and reported; the rest is delivered."""
    collector.go_down()
    with tt.Tracker(config(collector.url, spool)) as tracker:
        session = tracker.start_session(USER, ACTIVITY)
        assert eventually(lambda: tracker.stats().queued >= 3)  # windows in the spool
        session.complete(1)
    conn = sqlite3.connect(spool)
    conn.execute(
        "UPDATE entries SET payload = '{\"broken' WHERE slot = (SELECT min(slot) FROM entries)"
    )
    conn.commit()
    conn.close()
    collector.come_back()
    failures: list[tt.DeliveryFailure] = []
    with tt.Tracker(config(collector.url, spool, on_error=failures.append)) as tracker:
        assert tracker.flush(10)
        assert tracker.stats().dead_lettered == 1
    assert [f.will_retry for f in failures] == [False]
    assert "damaged row" in failures[0].reason
    assert len(collector.completions(session.run_id)) == 1
    assert rows(spool, "SELECT reason FROM dead_letters")[0][0].startswith("damaged row")


def test_a_damaged_checkpoint_does_not_stop_the_start(
    collector: LocalCollector, spool: Path
) -> None:
    """A crashed run's checkpoint that cannot be read is set aside; Tracker() starts."""
    tracker = tt.Tracker(config(collector.url, spool, heartbeat_interval=0.1))
    session = tracker.start_session(USER, ACTIVITY)
    assert eventually(lambda: rows(spool, "SELECT count(*) FROM segments")[0][0] == 1)
    owner = tracker._outbox.owner  # type: ignore[attr-defined]
    # As if it had died: no more ticks, its owner lock gone.
    tracker._heartbeat.stop()
    tracker._outbox._release_owner()  # type: ignore[attr-defined]
    conn = sqlite3.connect(spool)
    conn.execute("UPDATE segments SET state = '[1, \"garbage'")
    conn.commit()
    conn.close()
    failures: list[tt.DeliveryFailure] = []
    with tt.Tracker(config(collector.url, spool, on_error=failures.append)) as again:
        assert again.flush(5)
        assert again.stats().dead_lettered == 1
    assert any("damaged" in f.reason for f in failures)
    assert owner not in str(failures)
    del session


# -- 5, 6. a full disk, a file deleted underneath --------------------------------------------

FULL_DISK = textwrap.dedent(
    """
    import os, resource, signal, sys, time, logging
    import timeback_tracker as tt

    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    endpoint, spool = sys.argv[1], sys.argv[2]
    tracker = tt.Tracker(tt.TrackerConfig(
        sensor="https://kiosk.example.com/sensors/lab-3", endpoint=endpoint, spool_path=spool,
        heartbeat_interval=0.05, exit_timeout=5, max_queue=100_000,
    ))
    session = tracker.start_session(
        tt.TimebackUser(id="https://sis.example.com/users/1", email="kid@example.com"),
        tt.TimebackActivityContext(id="https://app.example.com/a/1", subject="Math",
                                   app=tt.App(name="Kiosk " + "x" * 900)),
    )
    time.sleep(0.3)  # windows reach the spool before the disk fills
    # The disk fills up: no file may grow beyond what it is now.
    size = max(os.path.getsize(spool), os.path.getsize(spool + "-wal"))
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 4096, resource.RLIM_INFINITY))
    time.sleep(2.0)  # windows close while the disk is full
    print("full", flush=True)
    sys.stdin.readline()
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    time.sleep(1.5)  # the spool is tried again
    session.complete(1)
    print("wal", os.path.getsize(spool + "-wal"), flush=True)
    tracker.close()
    print("closed", len(tracker._outbox), flush=True)
    """
)


@pytest.mark.slow(9)
@pytest.mark.skipif(sys.platform == "win32", reason="needs RLIMIT_FSIZE")
def test_a_full_disk_keeps_events_in_memory_and_recovers_when_freed(
    collector: LocalCollector, spool: Path
) -> None:
    """While no file may grow, windows wait in memory; once space is back they reach the spool,
    the WAL stays bounded, and the close says either "kept" or "lost", never both."""
    collector.go_down()
    app = subprocess.Popen(
        [sys.executable, "-c", FULL_DISK, collector.url, str(spool)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert app.stdout is not None
    assert app.stdin is not None
    assert app.stdout.readline().strip() == "full"
    queued_while_full = rows(spool, "SELECT count(*) FROM entries")[0][0]
    app.stdin.write("freed\n")
    app.stdin.flush()
    wal = int(app.stdout.readline().split()[1])
    assert app.stdout.readline().split()[0] == "closed"
    _, errors = app.communicate(timeout=30)
    assert app.returncode == 0, errors
    assert "a write failed" in errors
    assert not ("kept in the spool" in errors and "they are lost" in errors)
    assert wal <= 2 << 20
    total = rows(spool, "SELECT count(*) FROM entries")[0][0]
    assert total > queued_while_full + 30  # the windows of the full-disk time reached the disk
    collector.come_back()
    with tt.Tracker(config(collector.url, spool)) as tracker:
        assert tracker.flush(20)
    events = collector.time_spent_events()
    assert_conserved(events)
    assert len(collector.completions()) == 1
    assert collector.duplicate_conflicts == []


def test_a_large_wal_is_given_back_once_the_queue_is_empty(spool: Path) -> None:
    """A WAL grown past 1 MiB by one large transaction (a backlog delivered at once) is
    truncated to nothing once the queue is empty, not kept at its largest on the disk."""
    outbox = SqliteOutbox(spool, 100_000, drain_wait=0)
    wal = Path(f"{spool}-wal")
    try:
        run = uuid.uuid4()
        # A window's row is ~150 bytes: 8,000 of them grow the WAL past 1 MiB.
        outbox.put_many([window(run, seq) for seq in range(8_000)])
        assert wal.stat().st_size > 1 << 20
        batch = outbox.take(8_000)
        assert len(batch) == 8_000
        outbox.ack(batch)  # one transaction deleting every row: a WAL of megabytes
        assert len(outbox) == 0
        assert wal.stat().st_size == 0
    finally:
        outbox.close()
    assert rows(spool, "SELECT count(*) FROM entries") == [(0,)]


def test_a_spool_file_deleted_underneath_is_recreated_with_what_was_held(
    collector: LocalCollector, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Someone deletes the spool while the app runs: noticed, recreated, nothing lost."""
    collector.go_down()
    tracker = tt.Tracker(config(collector.url, spool, heartbeat_interval=0.1))
    session = tracker.start_session(USER, ACTIVITY)
    assert eventually(lambda: tracker.stats().queued >= 3)  # windows on disk, to be deleted
    for suffix in ("", "-wal", "-shm"):
        Path(f"{spool}{suffix}").unlink(missing_ok=True)
    with caplog.at_level(logging.WARNING, "timeback_tracker.spool"):
        # The next window's write notices, while the session runs (not at complete()).
        assert eventually(lambda: "deleted or replaced" in caplog.text)
        session.complete(1)
        tracker.close()
    assert "deleted or replaced" in caplog.text
    assert "lost" not in caplog.text
    collector.come_back()
    with tt.Tracker(config(collector.url, spool)) as again:
        assert again.flush(10)
    events = windows(collector, session.run_id)
    assert_conserved(events)
    assert abs(collector.totals(session.run_id)[0] - session.active_seconds) < 0.002
    assert len(collector.completions(session.run_id)) == 1


def test_a_spool_file_replaced_underneath_is_recreated_with_what_was_held(
    collector: LocalCollector, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Someone puts another file where the spool is while the app runs (an old backup
    restored over it): the new inode is noticed, and the new file gets every event the
    replaced one held; nothing is lost or sent twice."""
    count = "SELECT count(*) FROM entries"
    collector.go_down()
    tracker = tt.Tracker(config(collector.url, spool, heartbeat_interval=0.1))
    session = tracker.start_session(USER, ACTIVITY)
    assert eventually(lambda: rows(spool, count)[0][0] >= 2)
    backup = spool.with_name("backup.sqlite3")
    source, copy = sqlite3.connect(spool), sqlite3.connect(backup)
    source.backup(copy)
    source.close()
    copy.close()
    in_backup = rows(backup, count)[0][0]
    assert eventually(lambda: rows(spool, count)[0][0] > in_backup)  # the spool moved on
    with caplog.at_level(logging.WARNING, "timeback_tracker.spool"):
        os.replace(backup, spool)  # a new inode at the same path, as restore tools do
        for suffix in ("-wal", "-shm"):  # the old file's, which the new one must not read
            Path(f"{spool}{suffix}").unlink(missing_ok=True)
        assert eventually(lambda: "deleted or replaced" in caplog.text)
        session.complete(1)
        tracker.close()
    assert "lost" not in caplog.text
    collector.come_back()
    with tt.Tracker(config(collector.url, spool)) as again:
        assert again.flush(10)
    events = windows(collector, session.run_id)
    assert len(events) > in_backup
    assert_conserved(events)
    assert abs(collector.totals(session.run_id)[0] - session.active_seconds) < 0.002
    assert len(collector.completions(session.run_id)) == 1
    assert collector.duplicates == 0
    assert collector.duplicate_conflicts == []


def test_a_corrupt_spool_gives_up_only_what_cannot_be_read(spool: Path) -> None:
    """A spool with trashed pages is moved aside; the rows that still read are queued again."""
    with LocalCollector() as collector:
        collector.go_down()
        with tt.Tracker(config(collector.url, spool, heartbeat_interval=0.05)) as tracker:
            for _ in range(40):
                tracker.start_session(USER, ACTIVITY).complete(1)
        held = rows(spool, "SELECT count(*) FROM entries")[0][0]
        trash_entry_pages(spool, 2)  # the pages of some events in the middle of the queue
        outbox = open_outbox(spool, 1000, sensor=SENSOR, endpoint=collector.url)
        try:
            assert isinstance(outbox, SqliteOutbox)
            salvaged = len(outbox)
        finally:
            outbox.close()
        assert any(".corrupt-" in p.name for p in spool.parent.iterdir())
        assert 0 < salvaged < held
        collector.come_back()
        with tt.Tracker(config(collector.url, spool)) as tracker:
            assert tracker.flush(10)
        assert len(collector.events) == salvaged
        assert collector.duplicate_conflicts == []


# -- 8. complete() is exception-safe ----------------------------------------------------------


@pytest.mark.slow(5)
@pytest.mark.parametrize("durable", [False, True], ids=["memory", "spool"])
def test_an_interrupted_complete_records_nothing_and_can_be_retried(
    collector: LocalCollector, spool: Path, durable: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C inside complete(): nothing recorded, the connection is not left in a
    transaction, the session runs on, and complete() again records it once."""
    tracker = tt.Tracker(config(collector.url, spool if durable else None))
    session = tracker.start_session(USER, ACTIVITY)
    time.sleep(0.3)  # the session runs before the interrupt
    outbox = tracker._outbox
    target = type(outbox)
    name = "_write_checkpoints" if durable else "insert"
    original = getattr(target, name)
    calls = {"n": 0}

    def interrupted(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2 if not durable else True:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(target, name, interrupted)
    with pytest.raises(KeyboardInterrupt):
        session.complete(3)
    monkeypatch.setattr(target, name, original)
    assert session.state == "running"
    if durable:
        assert isinstance(outbox, SqliteOutbox)
        assert not outbox._conn.in_transaction  # type: ignore[union-attr]
        # Another process can write: the lock was given back.
        conn = sqlite3.connect(spool, timeout=0.5)
        conn.execute("CREATE TABLE IF NOT EXISTS probe (x)")
        conn.commit()
        conn.close()
    session.complete(3)
    assert tracker.flush(5)
    tracker.close()
    assert len(collector.completions(session.run_id)) == 1
    assert collector.duplicate_conflicts == []
    assert_conserved(windows(collector, session.run_id))


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")
@pytest.mark.parametrize("durable", [False, True], ids=["memory", "spool"])
def test_a_signal_handler_ending_the_session_inside_complete_fails_fast(
    collector: LocalCollector, spool: Path, monkeypatch: pytest.MonkeyPatch, durable: bool
) -> None:
    """A handler calling end() while the main thread is inside complete() gets a clear
    SessionStateError at once; complete() finishes; nothing deadlocks."""
    tracker = tt.Tracker(config(collector.url, spool if durable else None))
    session = tracker.start_session(USER, ACTIVITY)
    seen: list[BaseException] = []
    outbox_class: Any = SqliteOutbox if durable else MemoryOutbox
    original = outbox_class.put_many

    def slow(self: Any, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.3)  # the signal arrives here, inside complete()
        return original(self, *args, **kwargs)

    def handler(signum: int, frame: object) -> None:
        try:
            session.end()
        except tt.SessionStateError as exc:
            seen.append(exc)

    monkeypatch.setattr(outbox_class, "put_many", slow)
    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        session.complete(1)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert len(seen) == 1
    assert "signal handler" in str(seen[0])
    assert session.state == "completed"
    assert tracker.flush(5)
    tracker.close()
    assert len(collector.completions(session.run_id)) == 1


# -- 9. the bound ----------------------------------------------------------------------------


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "spool"])
def test_refused_connections_never_cost_a_window_that_could_merge(
    collector: LocalCollector, spool: Path, durable: bool
) -> None:
    """max_queue 20 below batch_size 50, connections refused for 3 s at a 0.05 s heartbeat:
    the attempts never reached the server, so the windows merge instead of being dropped,
    and every millisecond arrives."""
    failures: list[tt.DeliveryFailure] = []
    tracker = tt.Tracker(
        config(
            collector.url,
            spool if durable else None,
            heartbeat_interval=0.05,
            max_queue=20,
            batch_size=50,
            on_error=failures.append,
        )
    )
    try:
        session = tracker.start_session(USER, ACTIVITY)
        time.sleep(0.3)  # the session runs before the outage
        collector.go_down()
        time.sleep(3.0)  # the outage: more windows than max_queue=20
        collector.come_back()
        time.sleep(0.3)  # the endpoint is back for a moment
        session.complete(1)
        assert tracker.flush(10)
        stats = tracker.stats()
    finally:
        tracker.close()
    assert stats.dropped == 0, stats
    assert stats.coalesced > 0, stats
    assert any(f.will_retry and "refused" in f.reason for f in failures)
    events = windows(collector, session.run_id)
    assert_conserved(events)
    active, inactive = collector.totals(session.run_id)
    assert abs(active + inactive - (session.active_seconds + session.inactive_seconds)) < 0.002
    assert collector.duplicate_conflicts == []


def test_memory_dead_letters_are_capped() -> None:
    """The memory outbox keeps the newest max_queue dead letters, not all of them."""
    from tests.support import window

    outbox = MemoryOutbox(100)
    run = uuid.uuid4()
    for seq in range(500):
        outbox.put(window(run, seq, gap=seq))
        outbox.dead_letter(outbox.take(1), "HTTP 400")
    assert len(outbox.dead_letters) == 100


# -- 10. files are opened safely --------------------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions and symlinks")
def test_a_planted_symlink_is_refused_and_never_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A symlink where the spool goes: refused (memory, warning); its target is untouched."""
    target = tmp_path / "precious.txt"
    target.write_text("do not touch")
    target.chmod(0o644)
    spool = tmp_path / "spool.sqlite3"
    spool.symlink_to(target)
    with caplog.at_level(logging.WARNING, "timeback_tracker.spool"):
        outbox = open_outbox(spool, 10, sensor=SENSOR, endpoint="")
    assert isinstance(outbox, MemoryOutbox)
    assert "symlink" in caplog.text
    assert target.read_text() == "do not touch"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    # A symlinked WAL is refused too.
    other = tmp_path / "other.sqlite3"
    Path(f"{other}-wal").symlink_to(target)
    assert isinstance(open_outbox(other, 10, sensor=SENSOR, endpoint=""), MemoryOutbox)
    assert target.read_text() == "do not touch"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_missing_parents_are_created_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    """Every directory the spool creates is 0700, even under umask 000."""
    old = os.umask(0)
    try:
        outbox = SqliteOutbox(tmp_path / "a" / "b" / "c" / "spool.sqlite3", 10)
        outbox.close()
    finally:
        os.umask(old)
    for level in ("a", "a/b", "a/b/c"):
        assert stat.S_IMODE((tmp_path / level).stat().st_mode) == 0o700, level


# -- 11. limits --------------------------------------------------------------------------------


def test_huge_inputs_are_refused_at_construction() -> None:
    """A 10 MB app name is refused at once, naming the field and the limit."""
    started = time.monotonic()
    with pytest.raises(tt.ValidationError, match=r"App\.name: must be at most 1024 characters"):
        tt.App(name="x" * 10_000_000)
    with pytest.raises(tt.ValidationError, match="at most 16384 bytes"):
        tt.App(name="App", extensions={"blob": "x" * 20_000})
    with pytest.raises(tt.ValidationError, match="at most 254 characters"):
        tt.TimebackUser(id="https://a.example.com/u", email="a" * 250 + "@b.co")
    assert time.monotonic() - started < 5


# -- 12. clocks ----------------------------------------------------------------------------


def test_a_clock_set_back_dates_what_follows_by_the_clock_as_it_is(
    collector: LocalCollector,
) -> None:
    """After a -3 h step, the next windows are dated by the corrected clock, durations exact."""
    clock = FakeClock()
    with tt.Tracker(config(collector.url, None, heartbeat_interval=3600), clock=clock) as tracker:
        session = tracker.start_session(USER, ACTIVITY)
        clock.advance(10)
        tracker._tick(clock.monotonic_ms())
        clock.set_wall(-3 * 3600)
        clock.advance(10)
        tracker._tick(clock.monotonic_ms())
        clock.advance(10)
        session.end()
        assert tracker.flush(5)
    events = windows(collector, session.run_id)
    assert_conserved(events)
    ends = sorted(e["eventTime"] for e in events)
    # Closed on the old dates at the tick that saw the step, then dated 3 hours earlier.
    assert ends == [
        "2026-01-27T07:00:30.000Z",
        "2026-01-27T10:00:10.000Z",
        "2026-01-27T10:00:20.000Z",
    ]
    assert collector.totals(session.run_id)[0] == 30


def test_a_clock_set_forward_does_not_age_what_is_queued(collector: LocalCollector) -> None:
    """NTP moving a dead-battery clock 40 days ahead does not dead-letter the queue."""
    clock = FakeClock()
    collector.go_down()
    tracker = tt.Tracker(config(collector.url, None, heartbeat_interval=3600), clock=clock)
    try:
        session = tracker.start_session(USER, ACTIVITY)
        clock.advance(10)
        tracker._tick(clock.monotonic_ms())
        clock.set_wall(40 * 86400)
        clock.advance(1)
        tracker._tick(clock.monotonic_ms())
        session.complete(1)
        collector.come_back()
        assert tracker.flush(10)
        assert tracker.stats().dead_lettered == 0
    finally:
        tracker.close()
    assert len(collector.completions(session.run_id)) == 1
    assert collector.totals(session.run_id)[0] == 11


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "spool"])
def test_a_retry_right_after_a_clock_step_does_not_age_the_queue(
    collector: LocalCollector, spool: Path, durable: bool
) -> None:
    """The clock jumps 40 days ahead and the delivery thread retries before the heartbeat's
    next tick has noticed: it notices itself, so nothing queued becomes a dead letter."""
    clock = FakeClock()
    collector.go_down()
    spooled = spool if durable else None
    tracker = tt.Tracker(config(collector.url, spooled, heartbeat_interval=3600), clock=clock)
    try:
        session = tracker.start_session(USER, ACTIVITY)
        clock.advance(10)
        session.complete(1)  # sent at once, refused: the delivery thread backs off
        assert eventually(lambda: tracker.stats().failed >= 1)
        clock.set_wall(40 * 86400)  # no tick after it: only the delivery thread can notice
        collector.come_back()
        assert tracker.flush(10)
        assert tracker.stats().dead_lettered == 0
    finally:
        tracker.close()
    assert len(collector.completions(session.run_id)) == 1
    assert collector.totals(session.run_id)[0] == 10


def test_a_clock_set_forward_does_not_age_what_is_spooled(
    collector: LocalCollector, spool: Path
) -> None:
    """NTP moving the clock 40 days ahead with windows in the spool file of two trackers:
    the rows' age base moves by the step once (not once per tracker), nothing is
    dead-lettered and every duration arrives exact."""
    clock = FakeClock()
    collector.go_down()
    settings = {"heartbeat_interval": 3600}
    one = tt.Tracker(config(collector.url, spool, **settings), clock=clock)
    two = tt.Tracker(config(collector.url, spool, sensor=SENSOR + "-two", **settings), clock=clock)
    try:
        sessions = [one.start_session(USER, ACTIVITY), two.start_session(USER, ACTIVITY)]
        for _ in range(3):
            clock.advance(5)
            one._tick(clock.monotonic_ms())
            two._tick(clock.monotonic_ms())
        # Three windows of each, in the file (a write that met the other tracker's lock
        # waits in memory, and is moved to the file within a second).
        assert eventually(lambda: len(rows(spool, "SELECT id FROM entries")) == 6)
        born = rows(spool, "SELECT id, born_ms FROM entries")
        clock.set_wall(40 * 86400)
        clock.advance(1)
        one._tick(clock.monotonic_ms())
        two._tick(clock.monotonic_ms())  # sees the same step: already applied
        moved = dict(rows(spool, "SELECT id, born_ms FROM entries"))
        assert {moved[id_] - born_ms for id_, born_ms in born} == {40 * 86400 * 1000}
        for session in sessions:
            session.complete(1)
        collector.come_back()
        assert one.flush(10)
        assert two.flush(10)
        assert one.stats().dead_lettered == two.stats().dead_lettered == 0
    finally:
        one.close()
        two.close()
    for session in sessions:
        assert len(collector.completions(session.run_id)) == 1
        assert collector.totals(session.run_id) == (16, 0)
        assert_conserved(windows(collector, session.run_id))


# -- found by the soak: failures of the spool meeting kills, order and counts -----------------


def test_a_busy_spool_never_makes_the_queue_length_negative(
    collector: LocalCollector, spool: Path
) -> None:
    """Events delivered from memory while another process holds the spool never count
    against the rows on disk: len() and stats() stay sane, the delivery thread lives."""
    tracker = tt.Tracker(config(collector.url, spool, heartbeat_interval=0.1))
    try:
        session = tracker.start_session(USER, ACTIVITY)
        time.sleep(0.3)  # the session runs before the lock
        locker = hold_lock(spool, 2.0)
        time.sleep(1.5)  # windows go to memory and are delivered from there
        assert tracker.stats().queued >= 0
        finish(locker)
        session.complete(1)
        assert tracker.flush(10)
        assert tracker.stats().internal_errors == 0
        assert len(tracker._outbox) == 0
    finally:
        tracker.close()
    assert_conserved(windows(collector, session.run_id))
    assert collector.duplicate_conflicts == []


def test_a_run_stays_in_order_while_the_spool_is_busy(
    collector: LocalCollector, spool: Path
) -> None:
    """A completion made while the spool is locked never overtakes its run's windows that
    are on disk: what waits in memory goes after them."""
    collector.go_down()
    tracker = tt.Tracker(config(collector.url, spool, heartbeat_interval=0.1))
    try:
        session = tracker.start_session(USER, ACTIVITY)
        assert eventually(lambda: tracker.stats().queued >= 3)  # windows on disk, undelivered
        locker = hold_lock(spool, 1.5)
        session.complete(1)  # into memory: the spool is locked
        collector.come_back()
        finish(locker)
        assert tracker.flush(10)
    finally:
        tracker.close()
    order = [e["id"] for e in collector.events if e["extensions"]["runId"] == session.run_id]
    [completion] = collector.completions(session.run_id)
    assert order[-1] == completion["id"]
    assert len(order) == len(set(order))


@needs_kill
def test_a_completion_made_while_the_spool_is_locked_survives_a_kill(
    collector: LocalCollector, spool: Path
) -> None:
    """The spool refuses writes, complete() returns, the process is killed before anything
    is written or sent: the next start still delivers the completion, once."""
    collector.go_down()
    app = subprocess.Popen(
        [sys.executable, "-c", COMPLETE_WHILE_LOCKED, collector.url, str(spool)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert app.stdout is not None
    run_id = app.stdout.readline().split()[1]
    locker = hold_lock(spool, 3.0)
    assert app.stdin is not None
    app.stdin.write("complete\n")
    app.stdin.flush()
    assert app.stdout.readline().strip() == "completed"
    os.kill(app.pid, signal.SIGKILL)
    finish(app)
    finish(locker)
    collector.come_back()
    with tt.Tracker(config(collector.url, spool)) as tracker:
        assert tracker.flush(10)
    assert len(collector.completions(run_id)) == 1
    assert collector.duplicate_conflicts == []
    assert_conserved(windows(collector, run_id))


def arrival_types(collector: LocalCollector, run_id: str) -> list[str]:
    """The types of a run's events, in order of first arrival."""
    return [
        event["type"]
        for event in collector.events
        if cast("dict[str, Any]", event.get("extensions", {})).get("runId") == run_id
    ]


@needs_kill
def test_a_run_resumed_before_its_crash_is_recovered_completes_after_its_windows(
    collector: LocalCollector, spool: Path
) -> None:
    """A kiosk dies mid-window; the next start cannot recover it (another process holds the
    spool), resumes the run and completes it: the completion waits, the recovery is tried
    again while the tracker runs, and the completion arrives after the run's last window."""
    kiosk, run_id = start_kiosk(collector.url, spool, 5.0)
    time.sleep(1.5)  # an open window, in the sign of life
    counted = ask_active(kiosk)
    os.kill(kiosk.pid, signal.SIGKILL)
    finish(kiosk)
    locker = hold_lock(spool, 2.0)
    with tt.Tracker(config(collector.url, spool)) as tracker:
        resumed = tracker.start_session(USER, ACTIVITY, run_id=run_id)
        resumed.complete(1)
        assert tracker.flush(10)
    finish(locker)
    with tt.Tracker(config(collector.url, spool)) as tracker:  # the next start, as the soak's
        assert tracker.flush(10)
    arrived = arrival_types(collector, run_id)
    assert arrived[-1] == "ActivityEvent", arrived  # the completion, after every window
    assert arrived.count("ActivityEvent") == 1
    assert collector.totals(run_id)[0] >= counted - 1.0
    assert collector.duplicate_conflicts == []


RESUME_ON_A_FULL_DISK = textwrap.dedent(
    """
    import logging, resource, signal, sys, time
    import timeback_tracker as tt

    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    endpoint, spool, run_id = sys.argv[1], sys.argv[2], sys.argv[3] or None
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))  # no file may grow
    tracker = tt.Tracker(tt.TrackerConfig(
        sensor="https://kiosk.example.com/sensors/lab-3", endpoint=endpoint, spool_path=spool,
        heartbeat_interval=0.2, exit_timeout=5,
    ))
    session = tracker.start_session(
        tt.TimebackUser(id="https://sis.example.com/users/1", email="kid@example.com"),
        tt.TimebackActivityContext(
            id="https://app.example.com/a/1", subject="Math", app=tt.App(name="Kiosk")
        ),
        run_id=run_id,
    )
    time.sleep(0.5)  # a window or two, in memory
    session.complete(1)
    print("flushed while full", tracker.flush(1), flush=True)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    print("flushed with room", tracker.flush(20), flush=True)
    tracker.close()
    """
)


@needs_kill
@pytest.mark.slow(8)
@pytest.mark.skipif(sys.platform == "win32", reason="needs RLIMIT_FSIZE")
@pytest.mark.parametrize("resumed", [True, False])
def test_a_spool_the_full_disk_keeps_from_opening_is_used_once_there_is_room(
    collector: LocalCollector, spool: Path, resumed: bool
) -> None:
    """A kiosk dies mid-window; the next start finds the disk full and cannot even open the
    spool. It does not give the spool up for its whole life: it completes a run in memory
    and once there is room opens the spool and recovers the dead kiosk's windows. The
    completion of the dead kiosk's run, resumed, waits for them (it arrives last); that of
    another run goes at once (the spool, read, owes it nothing)."""
    kiosk, run_id = start_kiosk(collector.url, spool, 5.0)
    time.sleep(1.5)  # an open window, in the sign of life
    counted = ask_active(kiosk)
    os.kill(kiosk.pid, signal.SIGKILL)
    finish(kiosk)
    # Another process has the spool open (a tool, another app), so its WAL index is
    # valid and the full-disk process can read the spool, not write it.
    reader = sqlite3.connect(spool)
    reader.execute("SELECT count(*) FROM entries").fetchone()
    app = subprocess.run(
        [
            sys.executable,
            "-c",
            RESUME_ON_A_FULL_DISK,
            collector.url,
            str(spool),
            run_id if resumed else "",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert app.returncode == 0, app.stderr
    sent_while_full = not resumed
    assert app.stdout.splitlines() == [
        f"flushed while full {sent_while_full}",
        "flushed with room True",
    ]
    reader.close()
    assert "memory only" not in app.stderr
    assert len(collector.completions()) == 1
    if not resumed:
        with tt.Tracker(config(collector.url, spool)) as tracker:  # whatever start comes next
            assert tracker.flush(10)
        assert collector.totals(run_id)[0] >= counted - 1.0
        assert_conserved(windows(collector, run_id))
        return
    arrived = arrival_types(collector, run_id)
    assert arrived[-1] == "ActivityEvent", arrived  # the completion, after every window
    assert arrived.count("ActivityEvent") == 1
    assert collector.totals(run_id)[0] >= counted - 1.0
    assert_conserved(windows(collector, run_id))
    assert collector.duplicate_conflicts == []


@needs_kill
def test_a_kill_after_a_rolled_back_first_write_still_recovers_the_window(
    collector: LocalCollector, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The first write of a run segment fails halfway (the disk fills during the
    transaction: its segment row is rolled back with it); killed then, the next start
    rebuilds the open window from the sign of life instead of calling it damaged."""
    tt.Tracker(config(collector.url, spool)).close()  # the spool's tables
    conn = sqlite3.connect(spool)
    conn.execute(
        "CREATE TRIGGER full BEFORE INSERT ON entries BEGIN SELECT RAISE(ABORT, 'full'); END"
    )
    conn.commit()
    kiosk, run_id = start_kiosk(collector.url, spool, 0.5)
    assert eventually(lambda: ask_active(kiosk) > 1.5)  # ticks failed after their segment row
    counted = ask_active(kiosk)
    os.kill(kiosk.pid, signal.SIGKILL)
    finish(kiosk)
    conn.execute("DROP TRIGGER full")
    conn.commit()
    conn.close()
    with caplog.at_level(logging.WARNING), tt.Tracker(config(collector.url, spool)) as tracker:
        assert tracker.flush(10)
    assert "damaged" not in caplog.text
    assert collector.totals(run_id)[0] >= counted - 1.0, (counted, collector.totals(run_id))
    assert_conserved(windows(collector, run_id))
    assert collector.duplicate_conflicts == []


COMPLETE_WHILE_LOCKED = textwrap.dedent(
    """
    import sys
    import timeback_tracker as tt

    endpoint, spool = sys.argv[1], sys.argv[2]
    tracker = tt.Tracker(tt.TrackerConfig(
        sensor="https://kiosk.example.com/sensors/lab-3", endpoint=endpoint, spool_path=spool,
        heartbeat_interval=0.2,
    ))
    session = tracker.start_session(
        tt.TimebackUser(id="https://sis.example.com/users/1", email="kid@example.com"),
        tt.TimebackActivityContext(
            id="https://app.example.com/a/1", subject="Math", app=tt.App(name="Kiosk")
        ),
    )
    print("run", session.run_id, flush=True)
    sys.stdin.readline()
    session.complete(2, total_questions=2, correct_questions=2)
    print("completed", flush=True)
    sys.stdin.read()
    """
)


def test_events_the_spool_refuses_at_close_wait_for_the_next_start(
    collector: LocalCollector, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """close() while another process holds the spool: what could not be written is left in
    the tracker's lock file, the log says so (not "lost"), and the next start sends it."""
    collector.go_down()
    tracker = tt.Tracker(config(collector.url, spool, exit_timeout=0.5))
    session = tracker.start_session(USER, ACTIVITY)
    time.sleep(0.3)  # the session runs before the lock
    locker = hold_lock(spool, 3.0)
    session.complete(1)
    with caplog.at_level(logging.WARNING):
        tracker.close()
    finish(locker)
    assert "left in" in caplog.text
    assert "lost" not in caplog.text
    collector.come_back()
    with tt.Tracker(config(collector.url, spool)) as again:
        assert again.flush(10)
    assert len(collector.completions(session.run_id)) == 1
    assert_conserved(windows(collector, session.run_id))


@needs_kill
def test_a_kill_after_another_session_finished_still_loses_about_a_second(
    collector: LocalCollector, spool: Path
) -> None:
    """One session completes (a durable write), another runs on; killed just after, before
    its first tick, the running one loses about a second, not all it counted so far."""
    app = subprocess.Popen(
        [sys.executable, "-c", TWO_SESSIONS, collector.url, str(spool)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert app.stdout is not None
    run_id = app.stdout.readline().split()[1]
    last = 0.0
    while app.stdout.readline().strip() != "completed":
        pass
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        line = app.stdout.readline().split()
        if line and line[0] == "active":
            last = float(line[1])
    os.kill(app.pid, signal.SIGKILL)
    finish(app)
    with tt.Tracker(config(collector.url, spool)) as tracker:
        assert tracker.flush(10)
    delivered = collector.totals(run_id)[0]
    assert last - delivered <= 1.2, (last, delivered)
    assert collector.duplicate_conflicts == []


TWO_SESSIONS = textwrap.dedent(
    """
    import sys, time
    import timeback_tracker as tt

    endpoint, spool = sys.argv[1], sys.argv[2]
    tracker = tt.Tracker(tt.TrackerConfig(
        sensor="https://kiosk.example.com/sensors/lab-3", endpoint=endpoint, spool_path=spool,
        heartbeat_interval=15,
    ))
    user = tt.TimebackUser(id="https://sis.example.com/users/1", email="kid@example.com")
    activity = tt.TimebackActivityContext(
        id="https://app.example.com/a/1", subject="Math", app=tt.App(name="Kiosk")
    )
    running = tracker.start_session(user, activity)
    other = tracker.start_session(user, activity)
    print("run", running.run_id, flush=True)
    time.sleep(2.5)  # both sessions run; neither window closes (heartbeat 15 s)
    other.complete(1)  # a durable write while `running` has not ticked
    print("completed", flush=True)
    while True:
        time.sleep(0.05)  # reports active seconds 20 times a second
        print("active", running.active_seconds, flush=True)
    """
)


def test_a_tick_the_spool_refused_is_in_the_sign_of_life_at_once(spool: Path) -> None:
    """A tick's write fails, then the process dies before the next sign of life: the
    recovery must not rebuild the window that tick closed (it may have been sent)."""
    from tests.support import checkpoint, template, window, window_id

    run = uuid.uuid4()
    segment = template(run).segment
    outbox = SqliteOutbox(spool, 100)
    outbox.put_many([], {segment: checkpoint(run, 3)})  # on disk: window 3 open
    seen = checkpoint(run, 3, open_seconds=10)
    outbox.mark_alive(seen.mono_ms, seen.wall_ms, [seen])
    assert outbox._conn is not None
    outbox._conn.execute("PRAGMA query_only = ON")  # the next write fails
    closed = window(run, 3, active=15, inactive=0)
    outbox.put_many([closed], {segment: checkpoint(run, 4, open_seconds=0)})
    assert len(outbox) == 1  # in memory, maybe delivered from there
    close_quietly(outbox._owner_fd)  # killed: the lock is free, the lock file stays
    survivor = SqliteOutbox(spool, 100)
    try:
        recovered = survivor.recover()
        assert window_id(run, 3) not in [entry.id for entry in recovered]
    finally:
        survivor.close()


def test_a_damaged_row_is_reported_once_even_when_it_cannot_be_set_aside(spool: Path) -> None:
    """The disk is full: the damaged row cannot move to the dead letters yet; it is reported
    once, skipped, and set aside when the spool takes writes again."""
    from tests.support import window

    reports: list[tuple[str, str]] = []
    outbox = SqliteOutbox(spool, 100, on_damage=lambda what, why: reports.append((what, why)))
    try:
        run = uuid.uuid4()
        outbox.put_many([window(run, 0), window(run, 1)])
        conn = sqlite3.connect(spool)
        conn.execute(
            "UPDATE entries SET payload = '{' WHERE slot = (SELECT min(slot) FROM entries)"
        )
        conn.commit()
        conn.close()
        assert outbox._conn is not None
        outbox._conn.execute("PRAGMA query_only = ON")
        for _ in range(3):
            taken = outbox.take(10)
            outbox.release(taken)
            assert [e.first_seq for e in taken] == [1]
        assert len(reports) == 1
        outbox._conn.execute("PRAGMA query_only = OFF")
        outbox.release(outbox.take(10))
        assert len(reports) == 1
        assert rows(spool, "SELECT count(*) FROM dead_letters") == [(1,)]
    finally:
        outbox.close()
