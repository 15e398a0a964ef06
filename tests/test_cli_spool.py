"""The ``timeback-tracker spool`` command, run as a real subprocess on real spool files."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support import (
    SENSOR,
    USER,
    checkpoint,
    completion,
    completion_event_id,
    template,
    window,
    window_id,
)
from timeback_tracker._locations import default_spool_path
from timeback_tracker._spool import SqliteOutbox
from timeback_tracker._spool_admin import SpoolFile

RUN = uuid.UUID("6f1c1a52-5b1e-4f3e-9d7a-6a0f3f4c9b21")
OTHER = uuid.UUID("0b7e1c2a-58cc-4372-a567-0e02b2c3d479")
DEAD_ID = window_id(RUN, 0)


def make_spool(path: Path) -> Path:
    """A spool holding two windows and a completion of RUN, one dead letter and a checkpoint."""
    outbox = SqliteOutbox(path, 100)
    outbox.put_many(
        [window(RUN, 0), window(RUN, 1), window(RUN, 2), completion(RUN)],
        {template(OTHER).segment: checkpoint(OTHER, 0)},
    )
    outbox.dead_letter(outbox.take(1), "HTTP 400 Bad Request")
    outbox.close()
    return path


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    """A prepared spool file."""
    return make_spool(tmp_path / "spool.sqlite3")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of the command: no sensor set, data home in tmp_path."""
    environment = {k: v for k, v in os.environ.items() if k != "TIMEBACK_SENSOR"}
    environment["XDG_DATA_HOME"] = str(tmp_path / "data")
    return environment


def spool_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m timeback_tracker spool ARGS``."""
    return subprocess.run(
        [sys.executable, "-m", "timeback_tracker", "spool", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_status_counts_by_kind_age_and_reason(spool: Path, env: dict[str, str]) -> None:
    """status prints the queue by kind and age, dead letters by reason and checkpoints."""
    result = spool_command(env, "status", str(spool))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"spool: {spool}"
    assert "queued: 3 (completion 1, time 2)" in lines
    assert "by event age: <1h 0, <1d 0, <7d 0, older 3" in lines
    assert "oldest event: 2026-01-27T10:00:30Z" in lines
    assert "dead letters: 1" in lines
    assert "  1  HTTP 400 Bad Request" in lines
    assert "checkpoints: 1" in lines
    assert USER.email not in result.stdout
    assert USER.id not in result.stdout


def test_list_shows_no_pii_unless_asked(spool: Path, env: dict[str, str]) -> None:
    """list shows ids, kinds, runs, times, attempts and values; emails only with --show-pii."""
    plain = spool_command(env, "list", str(spool))
    assert plain.returncode == 0, plain.stderr
    header, *lines = plain.stdout.splitlines()
    assert header.split() == ["STATE", "ID", "KIND", "RUN", "EVENT", "TIME", "ATTEMPTS", "VALUES"]
    assert [line.split()[:4] for line in lines] == [
        ["queued", window_id(RUN, 1), "time", str(RUN)],
        ["queued", window_id(RUN, 2), "time", str(RUN)],
        ["queued", completion_event_id(RUN), "completion", str(RUN)],
    ]
    assert lines[0].split()[4:] == ["2026-01-27T10:00:30Z", "0", "active=10", "inactive=5"]
    assert lines[2].split()[6:] == ["xpEarned=3"]
    assert USER.email not in plain.stdout
    assert USER.id not in plain.stdout

    shown = spool_command(env, "list", "--show-pii", str(spool))
    assert shown.returncode == 0, shown.stderr
    header, *lines = shown.stdout.splitlines()
    assert header.split()[-2:] == ["ACTOR", "EMAIL"]
    assert all(line.split()[-2:] == [USER.id, USER.email] for line in lines)


def test_list_dead_adds_dead_letters_with_their_reason(spool: Path, env: dict[str, str]) -> None:
    """list --dead appends the dead letters, each with its reason."""
    result = spool_command(env, "list", "--dead", str(spool))
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split()[-1] == "REASON"
    assert len(lines) == 4
    assert lines[-1].startswith(f"dead    {DEAD_ID}  time")
    assert lines[-1].endswith("active=10 inactive=5  HTTP 400 Bad Request")
    assert USER.email not in result.stdout


def test_retry_dead_moves_dead_letters_back(spool: Path, env: dict[str, str]) -> None:
    """retry-dead puts dead letters at the tail of the queue, attempts reset."""
    result = spool_command(env, "retry-dead", str(spool))
    assert (result.returncode, result.stdout) == (0, "moved 1 dead letters back to the queue\n")
    with SpoolFile(spool) as admin:
        assert admin.status().dead_letters == 0
        last = admin.list_entries()[-1].entry
    assert (last.id, last.attempts) == (DEAD_ID, 0)


def test_purge_needs_dead_and_deletes_dead_letters(spool: Path, env: dict[str, str]) -> None:
    """purge without --dead is refused; purge --dead deletes only the dead letters."""
    refused = spool_command(env, "purge", str(spool))
    assert refused.returncode == 2
    assert "--dead" in refused.stderr
    result = spool_command(env, "purge", "--dead", str(spool))
    assert (result.returncode, result.stdout) == (0, "deleted 1 dead letters\n")
    with SpoolFile(spool) as admin:
        status = admin.status()
    assert (status.queued, status.dead_letters) == (3, 0)


def test_default_spool_of_a_sensor(env: dict[str, str]) -> None:
    """Without PATH, --sensor or $TIMEBACK_SENSOR names the default spool."""
    path = Path(env["XDG_DATA_HOME"]) / "timeback-tracker" / default_spool_path(SENSOR).name
    path.parent.mkdir(parents=True)
    make_spool(path)
    by_option = spool_command(env, "status", "--sensor", SENSOR)
    assert by_option.returncode == 0, by_option.stderr
    assert by_option.stdout.startswith(f"spool: {path}\n")
    by_env = spool_command({**env, "TIMEBACK_SENSOR": SENSOR}, "list")
    assert by_env.returncode == 0, by_env.stderr
    assert len(by_env.stdout.splitlines()) == 4


def test_unusable_input_exits_2(tmp_path: Path, env: dict[str, str]) -> None:
    """No spool named, a missing file or a file that is not a spool: exit 2 and a clear message."""
    nothing = spool_command(env, "status")
    assert nothing.returncode == 2
    assert "give a spool PATH, --sensor IRI or $TIMEBACK_SENSOR" in nothing.stderr
    missing = spool_command(env, "list", str(tmp_path / "missing.sqlite3"))
    assert missing.returncode == 2
    assert "no such spool file" in missing.stderr
    assert not (tmp_path / "missing.sqlite3").exists()
    no_default = spool_command(env, "status", "--sensor", SENSOR)
    assert no_default.returncode == 2
    assert "no such spool file" in no_default.stderr
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"not a database at all" * 50)
    unreadable = spool_command(env, "retry-dead", str(junk))
    assert unreadable.returncode == 2
    assert "not a usable spool" in unreadable.stderr
    assert junk.read_bytes() == b"not a database at all" * 50
