"""Accounting snapshots damaged in the spool: refused with a reason, never replayed into
a hang or an error that stops the next start."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import timeback_tracker as tt
from tests.support import ACTIVITY, SENSOR, USER, eventually, rows
from timeback_tracker._accounting import MAX_VALUE_MS, RunAccounting
from timeback_tracker.testing import FakeClock, LocalCollector

SLOTS = RunAccounting.__slots__


def slot(name: str) -> int:
    """The index of a slot in a snapshot (after its version number)."""
    return 1 + SLOTS.index(name)


def paused_snapshot() -> list[Any]:
    """A run that was active 4 s, then paused 4 s, as the spool stores it (JSON)."""
    clock = FakeClock()
    run = RunAccounting(
        now_ms=clock.monotonic_ms(),
        wall_ms=clock.wall_ms(),
        idle_timeout_ms=2_000,
        inactive_cutoff_ms=3_000,
    )
    clock.advance(4)
    run.pause(clock.monotonic_ms())
    clock.advance(4)
    snapshot: list[Any] = json.loads(json.dumps(run.snapshot()))
    return snapshot


def damaged(**changes: Any) -> list[Any]:
    """:func:`paused_snapshot` with some slots replaced."""
    snapshot = paused_snapshot()
    for name, value in changes.items():
        snapshot[slot(name)] = value
    return snapshot


def test_an_undamaged_snapshot_restores() -> None:
    """The baseline of the cases below: the stored form restores and ends normally."""
    [window] = RunAccounting.restore(paused_snapshot()).end(1_010_000, 1_769_508_010_000)
    assert (window.active_ms, window.inactive_ms) == (2_000, 3_000)  # cut at the cutoff


@pytest.mark.parametrize(
    ("snapshot", "problem"),
    [
        (damaged(_win_inactive=10**20), "the open window does not add up"),
        (damaged(_win_active=MAX_VALUE_MS + 1, _accrued_to=1_000_000 + MAX_VALUE_MS + 2_001),
         "the open window does not add up"),
        (damaged(_win_active=-1, _accrued_to=1_000_000 + 1_999), "the open window does not add up"),
        (damaged(_accrued_to=-(10**20)), "the open window does not add up"),
        (damaged(_ended=True), "the run ended"),
        (damaged(_paused=1), "_paused"),
        (damaged(_dormant=None), "_dormant"),
        (damaged(_seq=None), "_seq"),
        (damaged(_seq=True), "_seq"),
        (damaged(_win_start=1.5), "_win_start"),
        (damaged(_pending="[]"), "_pending"),
        (damaged(_pending=[[0, 1, 2, 1, 1, 9]]), "a window"),
        (damaged(_pending=[[0, 1, 2, True, 0]]), "a window"),
        ([3, *paused_snapshot()[1:]], "of this version"),
        (paused_snapshot()[:-1], "of this version"),
        ({"v": 2}, "of this version"),
    ],
    ids=["counter-beyond-limit", "active-over-a-day", "negative-counter", "accrued-far-back",
         "ended", "flag-int", "flag-none", "seq-none", "seq-bool", "float", "pending-text",
         "window-6-numbers", "window-bool", "version", "short", "not-a-list"],
)  # fmt: skip
def test_a_damaged_snapshot_is_refused_naming_what_is_wrong(snapshot: object, problem: str) -> None:
    """restore() raises ValueError naming the damage, before anything replays it."""
    with pytest.raises(ValueError, match=r"^not an accounting snapshot") as caught:
        RunAccounting.restore(snapshot)
    assert problem in str(caught.value)


@pytest.fixture
def collector() -> Iterator[LocalCollector]:
    """A collector on loopback."""
    with LocalCollector() as running:
        yield running


def config(collector: LocalCollector, spool: Path, **overrides: Any) -> tt.TrackerConfig:
    """A spooled tracker's config."""
    return tt.TrackerConfig(sensor=SENSOR, endpoint=collector.url, spool_path=spool, **overrides)


@pytest.mark.parametrize(
    "damage",
    [
        {"_win_inactive": 10**20},
        {"_accrued_to": -(10**20)},
        {"_ended": True},
        {"mono_ms": 10**12},  # the row's moment, not the state: ~11,574 days to replay
    ],
    ids=["counter-beyond-limit", "accrued-far-back", "ended", "moment-far-ahead"],
)
def test_the_next_start_sets_a_damaged_checkpoint_aside_and_goes_on(
    collector: LocalCollector, tmp_path: Path, damage: dict[str, Any]
) -> None:
    """A crashed run's checkpoint whose numbers are impossible: Tracker() returns (it used
    to replay forever, or raise), reports the damage, and delivers what else was kept."""
    spool = tmp_path / "spool.sqlite3"
    tracker = tt.Tracker(config(collector, spool, heartbeat_interval=0.1))
    session = tracker.start_session(USER, ACTIVITY)
    assert eventually(lambda: rows(spool, "SELECT count(*) FROM segments")[0][0] == 1)
    # As if it had died: no more ticks, its owner lock gone.
    tracker._heartbeat.stop()
    tracker._outbox._release_owner()  # type: ignore[attr-defined]
    [(state,)] = rows(spool, "SELECT state FROM segments")
    snapshot = json.loads(state)
    ahead = damage.pop("mono_ms", 0)
    for name, value in damage.items():
        snapshot[slot(name)] = value
    with sqlite3.connect(spool) as conn:
        conn.execute(
            "UPDATE segments SET state = ?, mono_ms = mono_ms + ?", (json.dumps(snapshot), ahead)
        )
    conn.close()

    failures: list[tt.DeliveryFailure] = []
    started: list[tt.Tracker] = []
    problems: list[BaseException] = []

    def start() -> None:
        try:
            started.append(tt.Tracker(config(collector, spool, on_error=failures.append)))
        except BaseException as exc:  # reported by the assertion below
            problems.append(exc)

    # In a daemon thread: a replay that never ends must fail the test, not hang it.
    thread = threading.Thread(target=start, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "Tracker() did not return: the damaged checkpoint was replayed"
    assert problems == []
    [again] = started
    with again:
        assert again.flush(5)
        assert again.stats().dead_lettered == 1
    assert any("damaged" in f.reason for f in failures)
    del session
    tracker.close(timeout=0.5)  # the "dead" one: its delivery thread still runs
