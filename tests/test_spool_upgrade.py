"""A spool written by 0.1.0 (format 1) is upgraded in place by the first tracker to open it.

The 0.1 tables are written here as 0.1.0 created them (``git show v0.1.0``'s
``_spool.py``, commit c45124e), with the rows its outbox wrote: wire JSON
payloads, no destination, whole events as crash checkpoints.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import timeback_tracker as tt
from tests.support import SENSOR, rows, wire_completion, wire_window
from timeback_tracker._serialization import parse_timestamp
from timeback_tracker._spool_schema import SCHEMA_VERSION
from timeback_tracker.testing import LocalCollector

# The format-1 tables, verbatim from 0.1.0.
V1_TABLES = (
    """CREATE TABLE IF NOT EXISTS entries (
        slot INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        run_id TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('time', 'completion')),
        first_seq INTEGER,
        last_seq INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        event_time_ms INTEGER NOT NULL,
        queued_ms INTEGER NOT NULL,
        payload TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS dead_letters (
        n INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL,
        run_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        first_seq INTEGER,
        last_seq INTEGER,
        attempts INTEGER NOT NULL,
        event_time_ms INTEGER NOT NULL,
        queued_ms INTEGER NOT NULL,
        payload TEXT NOT NULL,
        reason TEXT NOT NULL,
        dead_ms INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS checkpoints (
        run_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        id TEXT NOT NULL,
        kind TEXT NOT NULL,
        first_seq INTEGER,
        last_seq INTEGER,
        event_time_ms INTEGER NOT NULL,
        payload TEXT NOT NULL,
        updated_ms INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS checkpoints_owner ON checkpoints (owner)",
)

RUN = "6a1f3b7e-2c4d-4e8f-9a0b-1c2d3e4f5a6b"
OTHER_RUN = "0b9c8d7e-6f5a-4b3c-8d2e-1f0a9b8c7d6e"
DEAD_OWNER = uuid.UUID(int=7).hex  # a 0.1 process that died: no lock file of it exists


def recent(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` with every date moved so that it ended a minute ago (``max_event_age``
    keeps it); its window keeps its length."""
    delta = datetime.now(timezone.utc) - timedelta(minutes=1) - parse_timestamp(event["eventTime"])

    def moved(stamp: str) -> str:
        when = parse_timestamp(stamp) + delta
        return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"

    event["eventTime"] = moved(event["eventTime"])
    for item in event["generated"].get("items", []):
        for key in ("startDate", "endDate"):
            if key in item:
                item[key] = moved(item[key])
    return event


def v1_spool(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Write a 0.1 spool at ``path``: two queued windows and the completion of RUN, a
    dead letter, and a dead owner's checkpoint holding RUN's third window. Returns the
    events by where they were."""
    now = round(time.time() * 1000)
    queued = [recent(wire_window(RUN, 0)), recent(wire_window(RUN, 1))]
    completion = recent(wire_completion(RUN))
    dead = recent(wire_window(OTHER_RUN, 0))
    checkpointed = recent(wire_window(RUN, 2))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for statement in V1_TABLES:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    for seq, event in enumerate(queued):
        conn.execute(
            "INSERT INTO entries (id, run_id, kind, first_seq, last_seq, attempts, "
            "event_time_ms, queued_ms, payload) VALUES (?, ?, 'time', ?, ?, 1, ?, ?, ?)",
            (event["id"], RUN, seq, seq, now, now, json.dumps(event)),
        )
    conn.execute(
        "INSERT INTO entries (id, run_id, kind, first_seq, last_seq, attempts, "
        "event_time_ms, queued_ms, payload) VALUES (?, ?, 'completion', NULL, NULL, 0, ?, ?, ?)",
        (completion["id"], RUN, now, now, json.dumps(completion)),
    )
    conn.execute(
        "INSERT INTO dead_letters (id, run_id, kind, first_seq, last_seq, attempts, "
        "event_time_ms, queued_ms, payload, reason, dead_ms) "
        "VALUES (?, ?, 'time', 0, 0, 3, ?, ?, ?, 'HTTP 400 Bad Request', ?)",
        (dead["id"], OTHER_RUN, now, now, json.dumps(dead), now),
    )
    conn.execute(
        "INSERT INTO checkpoints (run_id, owner, id, kind, first_seq, last_seq, "
        "event_time_ms, payload, updated_ms) VALUES (?, ?, ?, 'time', 2, 2, ?, ?, ?)",
        (RUN, DEAD_OWNER, checkpointed["id"], now, json.dumps(checkpointed), now),
    )
    conn.close()
    return {"queued": queued, "completion": [completion], "dead": [dead], "crash": [checkpointed]}


def test_a_0_1_spool_is_upgraded_and_everything_it_held_is_sent(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """The first tracker on a 0.1 spool adopts its rows: the queued events and the dead
    owner's crash checkpoint are sent once each, the dead letter stays a dead letter, and
    the file is in the current format."""
    spool = tmp_path / "spool.sqlite3"
    held = v1_spool(spool)
    config = tt.TrackerConfig(sensor=SENSOR, endpoint=collector.url, spool_path=spool)
    with tt.Tracker(config) as tracker:
        assert tracker.flush(10)
        assert tracker.stats().dead_lettered == 0
    sent = [event["id"] for event in collector.events]
    expected = [e["id"] for key in ("queued", "completion", "crash") for e in held[key]]
    assert sorted(sent) == sorted(expected)  # each once; not the dead letter
    assert collector.duplicates == 0
    assert {env["sensor"] for env in collector.envelopes} == {SENSOR}
    assert rows(spool, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert rows(spool, "SELECT count(*) FROM entries") == [(0,)]
    assert rows(spool, "SELECT id, reason FROM dead_letters") == [
        (held["dead"][0]["id"], "HTTP 400 Bad Request")
    ]
    assert rows(spool, "SELECT count(*) FROM legacy_checkpoints") == [(0,)]
    tables = {name for (name,) in rows(spool, "SELECT name FROM sqlite_master")}
    assert not {"v1_entries", "v1_dead_letters", "checkpoints"} & tables


def test_a_0_1_spool_keeps_its_events_until_they_can_be_sent(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """Upgraded while the endpoint is down, the 0.1 rows are kept in the new format (not
    lost or duplicated) and sent by the next start."""
    spool = tmp_path / "spool.sqlite3"
    held = v1_spool(spool)
    config = tt.TrackerConfig(
        sensor=SENSOR, endpoint=collector.url, spool_path=spool, exit_timeout=0.2
    )
    collector.go_down()
    with tt.Tracker(config):
        pass
    assert rows(spool, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert rows(spool, "SELECT count(*) FROM entries") == [(4,)]  # the crash window queued too
    collector.come_back()
    with tt.Tracker(config) as again:
        assert again.flush(10)
    expected = {e["id"] for key in ("queued", "completion", "crash") for e in held[key]}
    assert sorted(event["id"] for event in collector.events) == sorted(expected)
