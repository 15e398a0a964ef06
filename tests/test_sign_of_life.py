"""Where the sign of life lives: in memory on Linux, else the lock file.

A running tracker rewrites its sign of life every second. In its lock file that
costs a page written back to the disk every 30 s, and its inode's times; in a
file in memory (``$XDG_RUNTIME_DIR``, else ``/dev/shm``, in a directory of
this user's) it costs nothing, and it survives what it must: the process being
killed. These tests try to make it land somewhere unsafe, or be lost.
"""

from __future__ import annotations

import os
import signal
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
    checkpoint,
    eventually,
    template,
    windows,
)
from timeback_tracker import _spool_file
from timeback_tracker._spool import SqliteOutbox
from timeback_tracker._spool_file import AliveRecord, memory_record, read_alive
from timeback_tracker.testing import LocalCollector

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux keeps it in memory")


@pytest.fixture
def memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for /dev/shm, and no $XDG_RUNTIME_DIR: the directory the test controls."""
    shared = tmp_path / "shm"
    shared.mkdir()
    monkeypatch.setattr(_spool_file, "SHARED_MEMORY", shared)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    return shared


def owner_lock(spool: Path) -> Path:
    [lock] = spool.parent.glob(f"{spool.name}.owner-*.lock")
    return lock


@linux
def test_a_running_tracker_writes_its_sign_of_life_in_memory_not_in_its_lock_file(
    tmp_path: Path, memory: Path, collector: LocalCollector
) -> None:
    """Signs of life go to a private directory in memory: the lock file on the disk stays
    empty while the session runs, and both are gone after close."""
    spool = tmp_path / "spool.sqlite3"
    tracker = tt.Tracker(tt.TrackerConfig(sensor=SENSOR, endpoint=collector.url, spool_path=spool))
    try:
        tracker.start_session(USER, ACTIVITY)
        lock = owner_lock(spool)
        alive = memory_record(lock)
        assert alive is not None
        assert alive.parent == memory / f"timeback-tracker-{os.geteuid()}"
        assert eventually(lambda: AliveRecord.read(alive) is not None)
        time.sleep(1.2)  # another second's sign of life
        record = AliveRecord.read(alive)
        assert record is not None
        assert len(record["segments"]) == 1
        assert lock.stat().st_size == 0
        assert (alive.parent.stat().st_mode & 0o777, alive.stat().st_mode & 0o777) == (0o700, 0o600)
    finally:
        tracker.close()
    assert not lock.exists()
    assert not alive.exists()


@linux
@pytest.mark.parametrize("planted", ["symlink", "file", "another user's"])
def test_a_memory_directory_someone_else_planted_is_never_used(
    tmp_path: Path, memory: Path, planted: str
) -> None:
    """/dev/shm is everyone's: a symlink, a file, or another user's directory where ours
    goes is refused, and the sign of life stays in the lock file."""
    ours = memory / f"timeback-tracker-{os.geteuid()}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if planted == "symlink":
        ours.symlink_to(elsewhere)
    elif planted == "file":
        ours.write_text("")
    else:
        if os.geteuid() != 0:
            pytest.skip("giving a directory to another user needs root")
        ours.mkdir()
        os.chown(ours, 65534, 65534)
    assert memory_record(tmp_path / "spool.sqlite3.owner-x.lock") is None
    assert list(elsewhere.iterdir()) == []


@linux
def test_xdg_runtime_dir_comes_first_and_a_loose_directory_of_ours_is_tightened(
    tmp_path: Path, memory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$XDG_RUNTIME_DIR (per user, in memory) is used before /dev/shm; a directory of ours
    found with group or other permissions is made 0700 before anything goes in it."""
    runtime = tmp_path / "run-user"
    (runtime / "timeback-tracker").mkdir(parents=True, mode=0o777)
    os.chmod(runtime / "timeback-tracker", 0o777)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    found = memory_record(tmp_path / "spool.sqlite3.owner-x.lock")
    assert found is not None
    assert found.parent == runtime / "timeback-tracker"
    assert (found.parent.stat().st_mode & 0o777) == 0o700
    monkeypatch.setenv("XDG_RUNTIME_DIR", "relative/path")  # not absolute: ignored
    found = memory_record(tmp_path / "spool.sqlite3.owner-x.lock")
    assert found is not None
    assert found.parent == memory / f"timeback-tracker-{os.geteuid()}"


@linux
def test_a_sign_of_life_memory_refuses_goes_back_to_the_lock_file(
    tmp_path: Path, memory: Path, collector: LocalCollector
) -> None:
    """Memory full (the write fails): the sign of life goes to the lock file from then on,
    and the memory file, which would hide it from a recovery, is removed."""
    spool = tmp_path / "spool.sqlite3"
    tracker = tt.Tracker(tt.TrackerConfig(sensor=SENSOR, endpoint=collector.url, spool_path=spool))
    try:
        tracker.start_session(USER, ACTIVITY)
        lock = owner_lock(spool)
        alive = memory_record(lock)
        assert alive is not None
        assert eventually(alive.exists)
        outbox = tracker._outbox
        os.close(outbox._memory_fd)  # type: ignore[attr-defined]
        assert eventually(lambda: lock.stat().st_size > 0)
        assert not alive.exists()
        assert AliveRecord.read(lock) is not None
    finally:
        tracker.close()


@linux
def test_a_sign_of_life_cut_short_in_memory_is_written_whole_in_the_lock_file(
    tmp_path: Path, memory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that stops short (a full tmpfs, a file size limit) leaves a torn record:
    it is noticed, the memory file is removed, and the lock file gets the whole record,
    which a recovery then reads."""
    outbox = SqliteOutbox(tmp_path / "spool.sqlite3", 100)
    try:
        lock = outbox._owner_lock(outbox.owner)
        alive = memory_record(lock)
        assert alive is not None
        real_pwrite = os.pwrite

        def cut_short_in_memory(fd: int, data: bytes, offset: int) -> int:
            if fd == outbox._memory_fd:
                return real_pwrite(fd, data[:10], offset)
            return real_pwrite(fd, data, offset)

        monkeypatch.setattr(os, "pwrite", cut_short_in_memory)
        run = uuid.uuid4()
        seen = checkpoint(run, 3, open_seconds=10)
        outbox.mark_alive(seen.mono_ms, seen.wall_ms, [seen])

        assert not alive.exists()
        record = read_alive(lock)
        assert record is not None
        assert list(record["segments"]) == [template(run).segment]
    finally:
        outbox.close()


KIOSK = textwrap.dedent(
    """
    import sys, time
    import timeback_tracker as tt

    endpoint, spool = sys.argv[1], sys.argv[2]
    tracker = tt.Tracker(tt.TrackerConfig(
        sensor="https://kiosk.example.com/sensors/lab-3", endpoint=endpoint, spool_path=spool,
        heartbeat_interval=3.0,
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


@linux
@pytest.mark.slow(6)
@pytest.mark.parametrize("power_lost", [False, True], ids=["killed", "power lost"])
def test_a_killed_kiosk_loses_a_second_and_a_power_loss_one_interval(
    tmp_path: Path, collector: LocalCollector, monkeypatch: pytest.MonkeyPatch, power_lost: bool
) -> None:
    """kill -9: the next start rebuilds the open window from the sign of life in memory (at
    most about a second lost). Power lost (memory wiped, as a reboot does): from the
    spool's state at the last tick (at most one 3 s interval lost), still conserved."""
    spool = tmp_path / "spool.sqlite3"
    runtime = tmp_path / "run-user"
    runtime.mkdir(mode=0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime))
    kiosk = subprocess.Popen(
        [sys.executable, "-c", KIOSK, collector.url, str(spool)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert kiosk.stdin is not None
    assert kiosk.stdout is not None
    run_id = kiosk.stdout.readline().strip()
    time.sleep(5.0)  # a tick at 3 s, then two seconds of an open window
    kiosk.stdin.write("?\n")
    kiosk.stdin.flush()
    counted = float(kiosk.stdout.readline())
    lock = owner_lock(spool)
    alive = runtime / "timeback-tracker"
    assert [path.suffix for path in alive.iterdir()] == [".alive"]
    os.kill(kiosk.pid, signal.SIGKILL)
    kiosk.wait(10)
    if power_lost:
        for path in alive.iterdir():
            path.unlink()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    with tt.Tracker(
        tt.TrackerConfig(sensor=SENSOR, endpoint=collector.url, spool_path=spool)
    ) as tracker:
        assert tracker.flush(10)
    sent = collector.totals(run_id)[0]
    allowed = 3.0 + 1.0 if power_lost else 1.0
    assert counted - allowed <= sent <= counted + 0.5, (counted, sent)
    assert_conserved(windows(collector, run_id))
    assert collector.duplicate_conflicts == []
    assert not lock.exists()
    assert list(alive.iterdir()) == []  # recovered once: its sign of life is gone too
