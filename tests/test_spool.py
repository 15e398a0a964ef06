"""The SQLite spool: MemoryOutbox's semantics on disk, durability, recovery, processes, healing."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import timeback_tracker as tt
from tests.strategies import examples
from tests.support import (
    SENSOR,
    T0,
    T0_MS,
    checkpoint,
    completion,
    ended,
    rows,
    seconds,
    template,
    window,
    window_id,
)
from timeback_tracker._delivery import Counters, Delivery, DeliverySettings
from timeback_tracker._locations import DEFAULT_SPOOL, resolve_spool_path
from timeback_tracker._outbox import Entry, MemoryOutbox, Outbox
from timeback_tracker._spool import SqliteOutbox, open_outbox
from timeback_tracker._spool_admin import SpoolFile
from timeback_tracker.testing import FakeClock, LocalCollector

ROOT = Path(__file__).resolve().parent.parent

# A child process working on a spool: `python -c WORKER <mode> <spool> [args]`.
WORKER = r"""
import os, sys, time, uuid
from tests.support import checkpoint, window
from timeback_tracker._spool import SqliteOutbox

mode, path = sys.argv[1], sys.argv[2]
outbox = SqliteOutbox(path, 100_000, drain_wait=0)
if mode == "put":
    run, count = uuid.UUID(sys.argv[3]), int(sys.argv[4])
    for seq in range(count):
        outbox.put(window(run, seq))
        print("put", window(run, seq).id, flush=True)
    sys.stdin.read()
elif mode == "checkpoint":
    run = uuid.UUID(sys.argv[3])
    point = checkpoint(run, 7)
    outbox.put_many([], {point.template.segment: point})
    print("ready", outbox.owner, flush=True)
    sys.stdin.read()
    outbox.close()
elif mode == "fork-checkpoint":
    run = uuid.UUID(sys.argv[3])
    point = checkpoint(run, 7)
    outbox.put_many([], {point.template.segment: point})
    child = os.fork()
    # Both processes share the pipe: each line is one write(), or (unbuffered, as
    # with PYTHONUNBUFFERED=1) print's pieces interleave.
    if child == 0:
        os.write(1, b"child\n")  # after the at-fork hooks ran
        time.sleep(60)  # the child stays alive until the parent is done
        os._exit(0)
    os.write(1, f"ready {child}\n".encode())
    sys.stdin.read()
elif mode == "churn":
    count, out = int(sys.argv[3]), sys.argv[4]
    run = uuid.uuid4()
    print("started", flush=True)
    sys.stdin.readline()
    seq = 0
    with open(out, "w") as taken:
        while seq < count or len(outbox):
            for _ in range(3):
                if seq < count:
                    outbox.put(window(run, seq))
                    seq += 1
            batch = outbox.take(7)
            taken.writelines(entry.id + "\n" for entry in batch)
            taken.flush()
            if batch:
                time.sleep(0.01)  # "sending": a window for another process to take them too
            outbox.ack(batch)
            if not batch and seq >= count:
                time.sleep(0.005)  # idle: nothing to take yet
    outbox.close()
"""


def spawn(*args: str) -> subprocess.Popen[str]:
    """Start a worker process on a spool; its stdout is a pipe of lines."""
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def kill(process: subprocess.Popen[str]) -> None:
    """SIGKILL a worker and reap it."""
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            stream.close()


def ids(entries: list[Entry]) -> list[str]:
    """The ids of entries, in order."""
    return [entry.id for entry in entries]


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    """A spool file path in a fresh directory."""
    return tmp_path / "spool.sqlite3"


@pytest.fixture
def outboxes() -> Iterator[list[Outbox]]:
    """Outboxes to close at the end of the test."""
    opened: list[Outbox] = []
    yield opened
    for outbox in opened:
        outbox.close()


def dead_letters(outbox: Outbox) -> list[tuple[str, str]]:
    """(id, reason) of an outbox's dead letters."""
    assert isinstance(outbox, (MemoryOutbox, SqliteOutbox))
    return [(entry.id, reason) for entry, reason in outbox.dead_letters]


# -- the same behaviour as MemoryOutbox ---------------------------------------------------------


def test_fifo_take_ack_release(make: Callable[[int], Outbox]) -> None:
    """take() gives the oldest entries; released ones come back first; acked ones are gone."""
    run = uuid.uuid4()
    outbox = make(100)
    entries = [window(run, n) for n in range(5)]
    for entry in entries:
        outbox.put(entry)
    first = outbox.take(2)
    assert ids(first) == ids(entries[:2])
    assert ids(outbox.take(2)) == ids(entries[2:4])  # in-flight entries are skipped
    outbox.release(first)
    again = outbox.take(10)
    assert ids(again) == ids([*entries[:2], entries[4]])
    assert [e.attempts for e in again] == [2, 2, 1]
    outbox.ack(entries)
    assert len(outbox) == 0
    assert outbox.take(10) == []


def test_put_of_a_held_id_is_ignored(make: Callable[[int], Outbox]) -> None:
    """The same event put twice is held once."""
    run = uuid.uuid4()
    outbox = make(10)
    outbox.put(window(run, 0))
    assert outbox.put(window(run, 0)).dropped == []
    assert len(outbox) == 1


def test_full_outbox_coalesces_contiguous_windows_of_a_run(make: Callable[[int], Outbox]) -> None:
    """When full, a new window merges into its run's last one: sums and span preserved."""
    run = uuid.uuid4()
    outbox = make(3)
    for n in range(3):
        outbox.put(window(run, n))
    admission = outbox.put(window(run, 3))
    assert (admission.coalesced, admission.dropped) == (1, [])
    held = outbox.take(10)
    assert len(held) == 3
    merged = tt.load(json.loads(held[-1].payload), tt.TimeSpentEvent)
    assert merged.generated.seconds("active") == 20
    assert merged.generated.seconds("inactive") == 10
    items = merged.generated.items
    assert items[0].start_date == T0 + timedelta(seconds=30)
    assert items[0].end_date == T0 + timedelta(seconds=60)
    assert merged.id == window_id(run, 2, 3)
    assert (held[-1].first_seq, held[-1].last_seq) == (2, 3)
    assert (held[-1].active_ms, held[-1].inactive_ms) == (20_000, 10_000)


def test_a_merged_pair_keeps_the_place_of_the_older_window(make: Callable[[int], Outbox]) -> None:
    """A completion arriving at a full outbox merges the first mergeable pair, in place."""
    a, b = uuid.uuid4(), uuid.uuid4()
    outbox = make(3)
    outbox.put(window(a, 0))
    outbox.put(completion(b))
    outbox.put(window(a, 1))
    admission = outbox.put(completion(a))
    assert (admission.coalesced, admission.dropped) == (1, [])
    assert ids(outbox.take(10)) == [
        window_id(a, 0, 1),
        completion(b).id,
        completion(a).id,
    ]


def test_attempted_windows_are_never_merged(make: Callable[[int], Outbox]) -> None:
    """A window that went out once may be at the endpoint already: it is not merged."""
    run = uuid.uuid4()
    outbox = make(2)
    outbox.put(window(run, 0))
    outbox.put(window(run, 1))
    outbox.release(outbox.take(10))  # both were attempted
    admission = outbox.put(window(run, 2))
    assert admission.coalesced == 0
    assert ids(admission.dropped) == [window_id(run, 0)]
    assert len(outbox) == 2


def test_an_attempt_that_never_left_keeps_windows_mergeable(
    make: Callable[[int], Outbox],
) -> None:
    """Released after a refused connection (reached=False), windows still merge when full."""
    run = uuid.uuid4()
    outbox = make(2)
    outbox.put(window(run, 0))
    outbox.put(window(run, 1))
    outbox.release(outbox.take(10), reached=False)  # the connection was refused
    admission = outbox.put(window(run, 2))
    assert (admission.coalesced, admission.dropped) == (1, [])
    assert [(e.first_seq, e.last_seq, e.attempts) for e in outbox.take(10)] == [
        (0, 0, 1),
        (1, 2, 1),
    ]


def test_windows_in_flight_are_not_dropped(make: Callable[[int], Outbox]) -> None:
    """The oldest window not in flight is dropped, never one being sent."""
    a, b = uuid.uuid4(), uuid.uuid4()
    outbox = make(2)
    outbox.put(window(a, 0))
    outbox.put(window(b, 5))
    outbox.take(1)
    admission = outbox.put(completion(a))
    assert ids(admission.dropped) == [window_id(b, 5)]


def test_windows_across_a_gap_are_not_merged(make: Callable[[int], Outbox]) -> None:
    """Merging across a cutoff or suspend gap would break conservation: drop instead."""
    run = uuid.uuid4()
    outbox = make(2)
    outbox.put(window(run, 0))
    outbox.put(window(run, 1, gap=100))
    admission = outbox.put(window(run, 2, gap=300))
    assert admission.coalesced == 0
    assert len(admission.dropped) == 1
    assert seconds(admission.dropped[0]) == 15  # the payload comes along


def test_merge_never_exceeds_a_day(make: Callable[[int], Outbox]) -> None:
    """Windows whose sum would exceed 86400 s are not merged."""
    run = uuid.uuid4()
    outbox = make(1)
    big = window(run, 0, active=50_000, inactive=0)
    outbox.put(big)
    start = T0_MS + 50_000_000
    admission = outbox.put(
        Entry.window(template(run), 1, 1, start, start + 40_000_000, 40_000_000, 0)
    )
    assert admission.coalesced == 0
    assert ids(admission.dropped) == [big.id]


def test_completions_are_never_dropped(make: Callable[[int], Outbox]) -> None:
    """A full outbox drops the oldest time window, never a completion: with nothing else to
    drop, a completion is held beyond the bound, and a window is refused."""
    runs = [uuid.uuid4() for _ in range(3)]
    outbox = make(3)
    outbox.put(completion(runs[0]))
    outbox.put(window(runs[1], 0))
    outbox.put(completion(runs[1]))
    admission = outbox.put(completion(runs[2]))
    assert ids(admission.dropped) == [window_id(runs[1], 0)]
    assert {e.kind for e in outbox.take(10)} == {"completion"}
    late = uuid.uuid4()
    assert outbox.put(completion(late)).dropped == []
    assert len(outbox) == 4
    assert ids(outbox.put(window(late, 0)).dropped) == [window_id(late, 0)]
    assert len(outbox) == 4


def test_dead_letters_leave_the_queue(make: Callable[[int], Outbox]) -> None:
    """dead_letter() removes entries and keeps them aside with the reason."""
    run = uuid.uuid4()
    outbox = make(10)
    entry = window(run, 0)
    outbox.put(entry)
    outbox.dead_letter(outbox.take(1), "older than max_event_age")
    assert len(outbox) == 0
    assert outbox.take(1) == []
    assert dead_letters(outbox) == [(entry.id, "older than max_event_age")]


def new_outbox(kind: str, directory: str, max_queue: int) -> Outbox:
    """An outbox of ``kind`` (for tests that cannot use function fixtures)."""
    if kind == "memory":
        return MemoryOutbox(max_queue)
    return SqliteOutbox(Path(directory) / "spool.sqlite3", max_queue)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@settings(max_examples=examples(40), deadline=None)
@given(
    max_queue=st.integers(1, 8),
    script=st.lists(
        st.tuples(st.integers(0, 2), st.sampled_from(["window", "done", "take"])), max_size=30
    ),
)
def test_bounded_and_time_conserved(
    kind: str, max_queue: int, script: list[tuple[int, str]]
) -> None:
    """Whatever arrives, the outbox never exceeds max_queue, keeps every completion it
    can, and held + dropped time always equals the time put in."""
    runs = [uuid.UUID(int=n + 1) for n in range(3)]
    seq = [0, 0, 0]
    finished = [False, False, False]
    put_seconds = dropped_seconds = 0.0
    completions = 0
    with tempfile.TemporaryDirectory() as directory:
        outbox = new_outbox(kind, directory, max_queue)
        try:
            for run_index, action in script:
                run = runs[run_index]
                if action == "take":
                    outbox.release(outbox.take(1))
                    continue
                if finished[run_index]:
                    continue
                if action == "window":
                    entry = window(run, seq[run_index])
                    seq[run_index] += 1
                    put_seconds += 15
                else:
                    entry = completion(run)
                    finished[run_index] = True
                    completions += 1
                for dropped in outbox.put(entry).dropped:
                    assert dropped.kind == "time"
                    dropped_seconds += seconds(dropped)
                assert len(outbox) <= max(max_queue, completions)
            held = outbox.take(100)
        finally:
            outbox.close()
    held_seconds = sum(seconds(e) for e in held if e.kind == "time")
    assert held_seconds + dropped_seconds == put_seconds
    assert sum(1 for e in held if e.kind == "completion") == completions


# -- durability -------------------------------------------------------------------------------


def test_entries_attempts_and_dead_letters_survive_reopening(spool: Path) -> None:
    """Close and reopen: the queue, its order, attempts and dead letters are all there."""
    run = uuid.uuid4()
    entries = [window(run, n) for n in range(4)]
    first = SqliteOutbox(spool, 100)
    for entry in entries:
        first.put(entry)
    first.release(first.take(2))
    first.dead_letter([entries[3]], "HTTP 400 Bad Request")
    first.close()
    second = SqliteOutbox(spool, 100)
    try:
        taken = second.take(10)
        assert ids(taken) == ids(entries[:3])
        assert [e.attempts for e in taken] == [2, 2, 1]
        assert taken[0].payload == entries[0].payload
        assert dead_letters(second) == [(entries[3].id, "HTTP 400 Bad Request")]
    finally:
        second.close()


def test_a_put_survives_sigkill_right_after_it_returns(spool: Path) -> None:
    """A process killed with SIGKILL just after put() returned loses none of its events."""
    run = uuid.uuid4()
    worker = spawn("put", str(spool), str(run), "200")
    assert worker.stdout is not None
    acknowledged = [worker.stdout.readline().split()[1] for _ in range(5)]
    kill(worker)
    reopened = SqliteOutbox(spool, 1000)
    try:
        held = ids(reopened.take(1000))
    finally:
        reopened.close()
    assert held[:5] == acknowledged
    assert held == [window_id(run, n) for n in range(len(held))]


# -- checkpoints and recovery ---------------------------------------------------------------


def segments(path: Path) -> list[tuple[object, ...]]:
    """(segment, ended, has state) of every segment row."""
    return rows(path, "SELECT segment, ended, state IS NOT NULL FROM segments ORDER BY segment")


def test_checkpoints_are_replaced_and_cleared_with_the_entries(spool: Path) -> None:
    """put_many writes a segment's state with its entries; its end clears what is not needed."""
    run = uuid.uuid4()
    segment = template(run).segment
    outbox = SqliteOutbox(spool, 100)
    try:
        outbox.put_many([window(run, 0)], {segment: checkpoint(run, 1)})
        outbox.put_many([window(run, 1)], {segment: checkpoint(run, 2)})
        assert segments(spool) == [(segment, 0, 1)]
        [[state]] = rows(spool, "SELECT state FROM segments")
        assert json.loads(str(state)) == checkpoint(run, 2).state
        outbox.put_many([window(run, 2)], ended(run))
        # Ended; kept only as the template of the windows still held (for merges).
        assert segments(spool) == [(segment, 1, 0)]
        assert len(outbox) == 3
        outbox.ack(outbox.take(10))
        outbox.close()
        assert segments(spool) == []
    finally:
        outbox.close()


def test_put_many_is_all_or_nothing(spool: Path, caplog: pytest.LogCaptureFixture) -> None:
    """If any part of put_many fails, neither its entries nor its checkpoints reach the disk;
    the entries are kept in memory, and the caller gets no exception."""
    run = uuid.uuid4()
    outbox = SqliteOutbox(spool, 100)
    try:
        conn = sqlite3.connect(spool)
        conn.execute(
            "CREATE TRIGGER refuse BEFORE UPDATE ON segments "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        conn.commit()
        conn.close()
        with caplog.at_level(logging.WARNING, "timeback_tracker.spool"):
            outbox.put_many(
                [window(run, 0), window(run, 1)], {template(run).segment: checkpoint(run, 2)}
            )
        assert rows(spool, "SELECT count(*) FROM entries") == [(0,)]
        assert rows(spool, "SELECT count(*) FROM segments") == [(0,)]
        assert len(outbox) == 2
        assert "keeping new events in memory" in caplog.text
        assert ids(outbox.take(5)) == [window_id(run, 0), window_id(run, 1)]
    finally:
        outbox.close()


def test_recover_rebuilds_a_dead_owners_open_window_once_and_leaves_a_live_ones(
    spool: Path,
) -> None:
    """The open window of a killed process is rebuilt once, with its id; a live one's stays."""
    dead_run, live_run = uuid.uuid4(), uuid.uuid4()
    dead = spawn("checkpoint", str(spool), str(dead_run))
    live = spawn("checkpoint", str(spool), str(live_run))
    assert dead.stdout is not None
    assert live.stdout is not None
    assert live.stdin is not None
    dead_owner = dead.stdout.readline().split()[1]
    assert live.stdout.readline().startswith("ready")
    kill(dead)
    outbox = SqliteOutbox(spool, 100)
    try:
        assert Path(f"{spool}.owner-{dead_owner}.lock").exists()
        recovered = outbox.recover()
        assert ids(recovered) == [window_id(dead_run, 7)]
        assert recovered[0].payload == window(dead_run, 7, active=5, inactive=0).payload
        assert outbox.recover() == []
        assert not Path(f"{spool}.owner-{dead_owner}.lock").exists()
        assert rows(spool, "SELECT run_id FROM segments WHERE ended = 0") == [(str(live_run),)]
        # An owner that closed without ending its run is not alive either.
        live.stdin.close()
        assert live.wait(10) == 0
        live.stdout.close()
        assert ids(outbox.recover()) == [window_id(live_run, 7)]
        assert ids(outbox.take(10)) == [window_id(dead_run, 7), window_id(live_run, 7)]
    finally:
        outbox.close()


def test_recover_keeps_an_entry_that_has_the_checkpoints_id(spool: Path) -> None:
    """If an entry with the rebuilt window's id is queued already, that entry wins."""
    run = uuid.uuid4()
    queued = window(run, 7, active=15, inactive=0)
    crashed = SqliteOutbox(spool, 100)
    crashed.put_many([queued], {template(run).segment: checkpoint(run, 7)})
    crashed.close()  # its owner lock is gone: as good as dead
    outbox = SqliteOutbox(spool, 100)
    try:
        assert outbox.recover() == []
        (held,) = outbox.take(10)
        assert held.payload == queued.payload
        assert rows(spool, "SELECT count(*) FROM segments WHERE ended = 0") == [(0,)]
    finally:
        outbox.close()


def test_an_instance_in_this_process_counts_as_alive(spool: Path, outboxes: list[Outbox]) -> None:
    """Another open instance's run segments are not recovered, even in the same process."""
    run = uuid.uuid4()
    other = SqliteOutbox(spool, 100)
    outboxes.append(other)
    other.put_many([], {template(run).segment: checkpoint(run, 3)})
    outbox = SqliteOutbox(spool, 100)
    outboxes.append(outbox)
    assert outbox.recover() == []
    other.close()
    assert ids(outbox.recover()) == [window_id(run, 3)]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_keep_its_dead_parent_alive(spool: Path) -> None:
    """The parent dies, its forked child lives on: the parent's checkpoint is recovered."""
    run = uuid.uuid4()
    parent = spawn("fork-checkpoint", str(spool), str(run))
    assert parent.stdout is not None
    # Two processes write to one pipe: their lines may interleave, so read words.
    words = parent.stdout.readline().split() + parent.stdout.readline().split()
    assert sorted(word for word in words if not word.isdigit()) == ["child", "ready"]
    child = int(next(word for word in words if word.isdigit()))
    kill(parent)
    outbox = SqliteOutbox(spool, 100)
    try:
        assert ids(outbox.recover()) == [window_id(run, 7)]
    finally:
        outbox.close()
        os.kill(child, signal.SIGKILL)


# -- several processes ----------------------------------------------------------------------


def test_one_instance_drains_at_a_time(spool: Path, outboxes: list[Outbox]) -> None:
    """The first taker holds the drain lock until it closes; the other only appends."""
    run = uuid.uuid4()
    first = SqliteOutbox(spool, 100, drain_wait=0)
    second = SqliteOutbox(spool, 100, drain_wait=0)
    outboxes += [first, second]
    second.put(window(run, 0))
    first.put(window(run, 1))
    assert len(first) == len(second) == 2
    assert ids(first.take(1)) == [window_id(run, 0)]
    assert second.take(10) == []
    first.close()
    assert ids(second.take(10)) == [window_id(run, 0), window_id(run, 1)]


def test_take_waits_a_little_when_another_process_drains(spool: Path) -> None:
    """A taker without the drain lock waits drain_wait seconds, so a polling loop does not spin."""
    drainer = SqliteOutbox(spool, 100)
    other = SqliteOutbox(spool, 100, drain_wait=0.2)
    try:
        drainer.take(1)
        started = time.monotonic()
        assert other.take(1) == []
        assert time.monotonic() - started >= 0.15
    finally:
        other.close()
        drainer.close()


def test_two_processes_appending_and_draining_lose_nothing_and_share_nothing(
    spool: Path, tmp_path: Path
) -> None:
    """Two processes append while draining: every event is taken once, by exactly one of them."""
    count = 150
    outputs = [tmp_path / "taken-a.txt", tmp_path / "taken-b.txt"]
    workers = [spawn("churn", str(spool), str(count), str(out)) for out in outputs]
    for worker in workers:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "started"
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.close()
    for worker in workers:
        assert worker.wait(60) == 0
        assert worker.stdout is not None
        worker.stdout.close()
    taken = [out.read_text().split() for out in outputs]
    assert all(len(ids_) == len(set(ids_)) for ids_ in taken)
    assert not set(taken[0]) & set(taken[1])
    assert len(taken[0]) + len(taken[1]) == 2 * count
    runs = {row[0] for row in rows(spool, "SELECT run_id FROM entries")}
    assert runs == set()


@pytest.mark.slow(10)
def test_delivery_drains_a_spool_and_dead_letters_expired_events(spool: Path) -> None:
    """The delivery thread sends spooled events to a collector; too-old ones become dead letters."""
    clock = FakeClock()
    run, old_run = uuid.uuid4(), uuid.uuid4()
    outbox = SqliteOutbox(spool, 1000)
    old = window(old_run, 0)
    old.born_ms = clock.wall_ms() - 2 * 86_400_000
    fresh = [window(run, n) for n in range(120)]
    outbox.put_many([old, *fresh])
    with LocalCollector() as collector:
        config = tt.TrackerConfig(sensor=SENSOR, endpoint=collector.url, max_event_age=86400)
        settings = DeliverySettings.from_config(config)
        delivery = Delivery(outbox, settings, Counters(), lambda failure: None, clock)
        delivery.start()
        try:
            assert delivery.wait_until_empty(10)
        finally:
            delivery.stop(2)
        assert {e["id"] for e in collector.time_spent_events()} == set(ids(fresh))
    assert dead_letters(outbox) == [(window_id(old_run, 0), "older than max_event_age")]
    outbox.close()
    with SpoolFile(spool) as admin:
        assert dict(admin.status().dead_reasons) == {"older than max_event_age": 1}


# -- where the spool lives ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("platform", "env", "expected"),
    [
        ("linux", {"XDG_DATA_HOME": "{tmp}/xdg"}, "{tmp}/xdg/timeback-tracker"),
        ("linux", {}, "{home}/.local/share/timeback-tracker"),
        ("linux", {"XDG_DATA_HOME": "relative/dir"}, "{home}/.local/share/timeback-tracker"),
        (
            "darwin",
            {"XDG_DATA_HOME": "{tmp}/xdg"},
            "{home}/Library/Application Support/timeback-tracker",
        ),
        ("win32", {"LOCALAPPDATA": "{tmp}/local"}, "{tmp}/local/timeback-tracker"),
    ],
)
def test_default_spool_is_in_the_per_user_data_directory(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    platform: str,
    env: dict[str, str],
    expected: str,
) -> None:
    """DEFAULT_SPOOL resolves to the platform's per-user data directory, one file per sensor."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("LOCALAPPDATA", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(tmp=tmp_path))
    monkeypatch.setattr(sys, "platform", platform)
    path = resolve_spool_path(DEFAULT_SPOOL, SENSOR)
    assert path is not None
    assert path.parent == Path(expected.format(tmp=tmp_path, home=home))
    assert re.fullmatch(r"spool-[0-9a-f]{16}\.sqlite3", path.name)


def test_one_spool_file_per_sensor() -> None:
    """Two sensors get two files; the same sensor always the same one."""
    first = resolve_spool_path(DEFAULT_SPOOL, SENSOR)
    assert first == resolve_spool_path(DEFAULT_SPOOL, SENSOR)
    assert first != resolve_spool_path(DEFAULT_SPOOL, SENSOR + "-b")
    assert repr(DEFAULT_SPOOL) == "DEFAULT_SPOOL"


def test_explicit_paths_and_memory(tmp_path: Path) -> None:
    """None means memory; a path names the file itself; an empty one is refused."""
    assert resolve_spool_path(None, SENSOR) is None
    assert resolve_spool_path(tmp_path / "a.db", SENSOR) == tmp_path / "a.db"
    assert resolve_spool_path(str(tmp_path / "a.db"), SENSOR) == tmp_path / "a.db"
    with pytest.raises(ValueError, match="spool_path"):
        resolve_spool_path("", SENSOR)
    assert isinstance(open_outbox(None, 10, sensor=SENSOR, endpoint=""), MemoryOutbox)


def test_files_are_owner_only_whatever_the_umask(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The directory is created 0700 and every spool file 0600, even under umask 000."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setattr(sys, "platform", "linux")
    old_umask = os.umask(0)
    try:
        outbox = open_outbox(DEFAULT_SPOOL, 10, sensor=SENSOR, endpoint="")
        assert isinstance(outbox, SqliteOutbox)
        outbox.put(window(uuid.uuid4(), 0))
        outbox.take(1)  # creates the drain lock
        directory = outbox.path.parent
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        files = sorted(directory.iterdir())
        names = {path.name.replace(outbox.path.name, "SPOOL") for path in files}
        assert names == {
            "SPOOL",
            "SPOOL-wal",
            "SPOOL-shm",
            f"SPOOL.drain-{outbox.dest}.lock",
            f"SPOOL.owner-{outbox.owner}.lock",
        }
        assert {oct(stat.S_IMODE(path.stat().st_mode)) for path in files} == {"0o600"}
        outbox.close()
    finally:
        os.umask(old_umask)


def test_looser_permissions_are_tightened_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An existing spool readable by others, in a default directory open to others, is fixed."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setattr(sys, "platform", "linux")
    path = resolve_spool_path(DEFAULT_SPOOL, SENSOR)
    assert path is not None
    SqliteOutbox(path, 10).close()
    path.parent.chmod(0o755)
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, "timeback_tracker.spool"):
        outbox = open_outbox(DEFAULT_SPOOL, 10, sensor=SENSOR, endpoint="")
    outbox.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert caplog.text.count("made it owner-only") == 2


def test_a_directory_not_created_by_us_keeps_its_mode(tmp_path: Path) -> None:
    """A spool put in a shared directory does not change that directory's permissions."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    SqliteOutbox(shared / "spool.sqlite3", 10).close()
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755


# -- self-healing ----------------------------------------------------------------------------


def test_a_corrupt_spool_is_moved_aside_and_a_fresh_one_used(
    spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file that is not a database is renamed with a timestamp; a new spool works."""
    spool.write_bytes(b"definitely not SQLite " * 100)
    with caplog.at_level(logging.WARNING, "timeback_tracker.spool"):
        outbox = open_outbox(spool, 10, sensor=SENSOR, endpoint="")
    try:
        assert isinstance(outbox, SqliteOutbox)
        aside = [p for p in spool.parent.iterdir() if ".corrupt-" in p.name]
        assert len(aside) == 1
        assert aside[0].read_bytes().startswith(b"definitely not SQLite")
        assert (
            f"is corrupt (DatabaseError: file is not a database): moved it to {aside[0].name}"
            in (caplog.text)
        )
        outbox.put(window(uuid.uuid4(), 0))
        assert len(outbox) == 1
    finally:
        outbox.close()


def test_a_damaged_spool_page_is_detected_by_the_integrity_check(spool: Path) -> None:
    """A spool whose pages were overwritten fails the check and is replaced."""
    outbox = SqliteOutbox(spool, 1000)
    outbox.put_many([window(uuid.uuid4(), n) for n in range(200)])
    outbox.close()
    data = bytearray(spool.read_bytes())
    data[4096 * 2 : 4096 * 6] = b"\x17" * (4096 * 4)  # trash b-tree pages, keep the header
    spool.write_bytes(bytes(data))
    fresh = open_outbox(spool, 10, sensor=SENSOR, endpoint="")
    try:
        assert isinstance(fresh, SqliteOutbox)
        assert len(fresh) == 0
        assert any(".corrupt-" in p.name for p in spool.parent.iterdir())
    finally:
        fresh.close()


def test_a_foreign_database_is_not_used_as_a_spool(spool: Path) -> None:
    """A SQLite file of another schema is moved aside, not mixed with ours."""
    conn = sqlite3.connect(spool)
    conn.execute("CREATE TABLE entries (name TEXT)")
    conn.commit()
    conn.close()
    original = spool.read_bytes()
    outbox = open_outbox(spool, 10, sensor=SENSOR, endpoint="")
    try:
        assert isinstance(outbox, SqliteOutbox)
        (aside,) = [p for p in spool.parent.iterdir() if ".corrupt-" in p.name]
        assert aside.read_bytes() == original  # untouched, not even switched to WAL
    finally:
        outbox.close()


def test_an_unusable_location_falls_back_to_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A spool path under a regular file (or in /proc) cannot be created: memory, and a warning."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for path in (blocker / "spool.sqlite3", Path("/proc/timeback-tracker/spool.sqlite3")):
        with caplog.at_level(logging.WARNING, "timeback_tracker.spool"):
            outbox = open_outbox(path, 10, sensor=SENSOR, endpoint="")
        assert isinstance(outbox, MemoryOutbox)
        assert "keeping events in memory only" in caplog.text
        caplog.clear()


def test_a_spool_of_a_newer_version_is_left_alone(spool: Path) -> None:
    """A spool written by a newer library is neither used nor moved: memory instead."""
    SqliteOutbox(spool, 10).close()
    conn = sqlite3.connect(spool)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    assert isinstance(open_outbox(spool, 10, sensor=SENSOR, endpoint=""), MemoryOutbox)
    assert not any(".corrupt-" in p.name for p in spool.parent.iterdir())


def test_a_failing_write_keeps_events_in_memory_until_the_spool_works(
    spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A write refused at run time raises nothing; events wait in memory and reach the disk
    once it accepts writes again."""
    run = uuid.uuid4()
    outbox = SqliteOutbox(spool, 100)
    outbox.put(window(run, 0))
    outbox._conn.execute("PRAGMA query_only = ON")
    with caplog.at_level(logging.WARNING, "timeback_tracker.spool"):
        outbox.put(window(run, 1))
        outbox.put_many([window(run, 2)], {template(run).segment: checkpoint(run, 3)})
    assert "a write failed" in caplog.text
    assert len(outbox) == 3
    assert rows(spool, "SELECT count(*) FROM entries") == [(1,)]
    outbox._conn.execute("PRAGMA query_only = OFF")
    outbox._retry_at = 0.0  # as if RETRY_INTERVAL had passed
    outbox.put(window(run, 4))
    assert rows(spool, "SELECT id FROM entries ORDER BY slot") == [
        (window_id(run, n),) for n in (0, 1, 2, 4)
    ]
    assert segments(spool) == [(template(run).segment, 0, 1)]
    assert ids(outbox.take(10)) == [window_id(run, n) for n in (0, 1, 2, 4)]
    outbox.close()


def test_events_kept_in_memory_are_written_at_close(spool: Path) -> None:
    """close() moves what waited in memory to the spool, so the next start sends it."""
    run = uuid.uuid4()
    outbox = SqliteOutbox(spool, 100)
    outbox._conn.execute("PRAGMA query_only = ON")
    outbox.put(window(run, 0))
    outbox.dead_letter([outbox.take(1)[0]], "HTTP 422")  # from memory
    outbox.put(window(run, 1))
    outbox._conn.execute("PRAGMA query_only = OFF")
    outbox.close()
    with SpoolFile(spool) as admin:
        listed = admin.list_entries(include_dead=True)
    assert [(row.entry.id, row.reason) for row in listed] == [
        (window_id(run, 1), None),
        (window_id(run, 0), "HTTP 422"),
    ]


def test_a_closed_connection_does_not_break_the_caller(spool: Path) -> None:
    """Even with its database connection gone, put/take/ack/len raise nothing."""
    run = uuid.uuid4()
    outbox = SqliteOutbox(spool, 100)
    outbox.put(window(run, 0))
    outbox._conn.close()
    outbox.put(window(run, 1))
    batch = outbox.take(10)
    outbox.ack(batch)
    outbox.release(batch)
    outbox.dead_letter(batch, "x")
    assert len(outbox) >= 1
    outbox.close()


def test_a_full_spool_finds_mergeable_windows_through_an_index_kept_only_while_needed(
    spool: Path,
) -> None:
    """Full of attempted windows (nothing can merge): the search for a pair reads an index of
    never-attempted windows, not every row; the index goes once the queue is empty, since
    keeping it costs every window two page writes."""
    run = uuid.uuid4()
    outbox = SqliteOutbox(spool, 4)
    try:
        outbox.put_many([window(run, n, gap=100 * n) for n in range(4)])
        taken = outbox.take(4)  # attempted: none can merge any more
        assert rows(spool, "SELECT name FROM sqlite_master WHERE name = 'entries_mergeable'") == []
        outbox.put(window(uuid.uuid4(), 0))  # full: one window dropped to make room
        assert rows(spool, "SELECT name FROM sqlite_master WHERE name = 'entries_mergeable'")
        plan = rows(
            spool,
            "EXPLAIN QUERY PLAN SELECT a.slot FROM entries a JOIN entries b "
            "ON b.segment = a.segment AND b.first_seq = a.last_seq + 1 "
            "WHERE a.kind = 'time' AND b.kind = 'time' AND a.attempts = 0 AND b.attempts = 0 "
            "AND b.start_ms = a.end_ms ORDER BY a.slot",
        )
        assert any("entries_mergeable" in str(step) for step in plan), plan
        outbox.ack(taken)
        outbox.ack(outbox.take(10))
        assert len(outbox) == 0
        assert rows(spool, "SELECT name FROM sqlite_master WHERE name = 'entries_mergeable'") == []
    finally:
        outbox.close()


def test_dead_letters_are_capped_at_max_queue(spool: Path) -> None:
    """Only the newest max_queue dead letters are kept."""
    run = uuid.uuid4()
    outbox = SqliteOutbox(spool, 3)
    try:
        for n in range(5):
            outbox.put(window(run, n, gap=100 * n))
            outbox.dead_letter(outbox.take(1), f"HTTP 400 #{n}")
        assert [reason for _, reason in outbox.dead_letters] == [
            "HTTP 400 #2",
            "HTTP 400 #3",
            "HTTP 400 #4",
        ]
    finally:
        outbox.close()


# -- inspection ------------------------------------------------------------------------------


def test_status_list_retry_and_purge(spool: Path) -> None:
    """SpoolFile counts by kind and age, lists, moves dead letters back and purges them."""
    run = uuid.uuid4()
    now = T0.timestamp() * 1000 + 10 * 86_400_000
    outbox = SqliteOutbox(spool, 100)
    entries = [window(run, 0), window(run, 1), completion(run)]
    for entry, age_hours in zip(entries, (0.5, 30, 400), strict=True):
        entry.event_time_ms = round(now - age_hours * 3_600_000)
    other = uuid.uuid4()
    outbox.put_many(entries, {template(other).segment: checkpoint(other, 0)})
    outbox.dead_letter(outbox.take(1), "HTTP 400 Bad Request")
    outbox.close()
    with SpoolFile(spool) as admin:
        status = admin.status(now_ms=round(now))
        assert status.queued == 2
        assert dict(status.by_kind) == {"time": 1, "completion": 1}
        assert dict(status.by_age) == {"<1h": 0, "<1d": 0, "<7d": 1, "older": 1}
        assert status.oldest_event_ms == entries[2].event_time_ms
        assert (status.dead_letters, dict(status.dead_reasons)) == (
            1,
            {"HTTP 400 Bad Request": 1},
        )
        assert status.checkpoints == 1
        assert [row.entry.id for row in admin.list_entries()] == ids(entries[1:])
        listed = admin.list_entries(include_dead=True)
        assert [(row.entry.id, row.dead) for row in listed][-1] == (entries[0].id, True)
        assert admin.retry_dead() == 1
        requeued = admin.list_entries()[-1].entry
        assert (requeued.id, requeued.attempts) == (entries[0].id, 0)
        assert admin.status().dead_letters == 0
    reopened = SqliteOutbox(spool, 100)
    reopened.dead_letter(reopened.take(3), "HTTP 400")
    reopened.close()
    with SpoolFile(spool) as admin:
        assert admin.purge_dead() == 3
        assert admin.status().dead_letters == 0


def test_spool_file_refuses_missing_and_foreign_files(tmp_path: Path) -> None:
    """SpoolFile never creates a spool, and does not adopt another database."""
    with pytest.raises(FileNotFoundError):
        SpoolFile(tmp_path / "missing.sqlite3")
    assert not (tmp_path / "missing.sqlite3").exists()
    other = tmp_path / "other.sqlite3"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (text TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(sqlite3.DatabaseError):
        SpoolFile(other)


def test_repr_shows_path_and_counts_but_no_content(spool: Path) -> None:
    """The repr names the file and counts; no payload, email or id."""
    outbox = SqliteOutbox(spool, 10)
    try:
        entry = window(uuid.uuid4(), 0)
        outbox.put(entry)
        text = repr(outbox)
        assert text == (
            f"<SqliteOutbox path={str(spool)!r} held=1 in_flight=0 in_memory=0 closed=False>"
        )
    finally:
        outbox.close()
