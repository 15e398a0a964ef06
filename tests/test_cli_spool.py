"""The ``timeback-tracker spool`` command, run as a real subprocess on real spool files."""

from __future__ import annotations

import os
import re
import select
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
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
    trash_entry_pages,
    window,
    window_id,
    windows,
)
from timeback_tracker._locations import default_spool_path
from timeback_tracker._outbox import Entry
from timeback_tracker._spool import SqliteOutbox
from timeback_tracker._spool_admin import SpoolFile
from timeback_tracker._spool_file import destination, open_lock_file, try_lock
from timeback_tracker._spool_schema import move_aside, salvage
from timeback_tracker.testing import LocalCollector

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
    """The environment of the command: no TIMEBACK_* settings, data home in tmp_path."""
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("TIMEBACK_", "CALIPER_"))
    }
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
    assert "interrupted runs: 1" in lines
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
        ["interrupted", window_id(OTHER, 0), "time", str(OTHER)],
    ]
    assert lines[0].split()[4:] == ["2026-01-27T10:00:30Z", "0", "active=10", "inactive=5"]
    assert lines[2].split()[6:] == ["xpEarned=3"]
    # The checkpoint's open window, as a recovery would queue it: 5 s, not yet attempted.
    assert lines[3].split()[4:] == ["2026-01-27T10:00:05Z", "-", "active=5", "inactive=0"]
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
    assert [line.split()[0] for line in lines] == ["queued"] * 3 + ["interrupted", "dead"]
    assert lines[-1].startswith(f"dead         {DEAD_ID}  time")
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
    """purge without --dead or --queued is refused; purge --dead deletes only the dead letters."""
    refused = spool_command(env, "purge", str(spool))
    assert refused.returncode == 2
    assert "--dead, --queued or both" in refused.stderr
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
    assert len(by_env.stdout.splitlines()) == 5


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


# -- shared by the tests of ls, send and purge --------------------------------------------------

OTHER_SENSOR = "https://kiosk.example.com/sensors/lab-4"


def fresh_window(run: uuid.UUID, seq: int, active: float = 10, inactive: float = 5) -> Entry:
    """Window ``seq`` of ``run``, ending a few minutes ago (old events become dead letters)."""
    start = time.time_ns() // 1_000_000 - 600_000 + 15_000 * seq
    active_ms, inactive_ms = round(active * 1000), round(inactive * 1000)
    return Entry.window(
        template(run), seq, seq, start, start + active_ms + inactive_ms, active_ms, inactive_ms
    )


def fill(path: Path, sensor: str, endpoint: str, entries: list[Entry]) -> list[str]:
    """Queue ``entries`` in the spool for (sensor, endpoint), as that app would; their ids."""
    outbox = SqliteOutbox(path, 1000, sensor=sensor, endpoint=endpoint)
    outbox.put_many(entries)
    outbox.close()
    return [entry.id for entry in entries]


def queued(path: Path) -> int:
    """Events queued in the spool, every destination's."""
    with SpoolFile(path) as admin:
        return admin.status().queued


def on_terminal(
    env: dict[str, str], *args: str, stream: str, answer: bytes = b""
) -> tuple[int, str, str]:
    """Run ``python -m timeback_tracker spool ARGS`` with ``stream`` (stdin or stdout) on a
    pseudo-terminal, typing ``answer``; returns the exit code, what the terminal showed (or
    stdout) and stderr."""
    pty = pytest.importorskip("pty", reason="needs pseudo-terminals (POSIX)")
    controller, terminal = pty.openpty()
    command = [sys.executable, "-m", "timeback_tracker", "spool", *args]
    shown = b""
    try:
        child = subprocess.Popen(
            command,
            stdin=terminal if stream == "stdin" else subprocess.DEVNULL,
            stdout=terminal if stream == "stdout" else subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        os.close(terminal)
        terminal = -1
        if answer:
            os.write(controller, answer)
        if stream == "stdout":
            while True:  # the terminal's output until the child closes it
                ready, _, _ = select.select([controller], [], [], 60)
                try:
                    chunk = os.read(controller, 4096) if ready else b""
                except OSError:  # EIO: the child is gone
                    chunk = b""
                if not chunk:
                    break
                shown += chunk
        stdout, stderr = child.communicate(timeout=60)
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    return child.returncode, (shown or stdout or b"").decode(), stderr.decode()


# -- ls -----------------------------------------------------------------------------------------


def test_ls_lists_every_spool_of_the_data_directory_and_dir(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """ls shows each spool's destinations and counts, corrupt files with what still reads,
    and skips what is not a spool."""
    default = Path(env["XDG_DATA_HOME"]) / "timeback-tracker" / default_spool_path(SENSOR).name
    default.parent.mkdir(parents=True)
    make_spool(default)
    kiosk = tmp_path / "kiosk"
    kiosk.mkdir()
    run = uuid.uuid4()
    fill(kiosk / "app.db", SENSOR, "https://a.example.com/caliper/event", [fresh_window(run, 0)])
    fill(kiosk / "app.db", OTHER_SENSOR, "https://b.example.com/caliper/event", [completion(RUN)])
    # Not spools: the app's own database, a text file, a symlink to a spool.
    foreign = sqlite3.connect(kiosk / "settings.sqlite3")
    foreign.execute("CREATE TABLE prefs (key TEXT, value TEXT)")
    foreign.commit()
    foreign.close()
    (kiosk / "notes.txt").write_text("hello")
    (kiosk / "link.sqlite3").symlink_to(kiosk / "app.db")
    corrupt = make_corrupt(kiosk / "old.sqlite3")
    aside = move_aside(corrupt)
    readable = len(list(salvage(aside)))

    result = spool_command(env, "ls", "--dir", str(kiosk))
    assert result.returncode == 0, result.stderr
    blocks = result.stdout.split("\n/")
    assert [block.splitlines()[0].lstrip("/") for block in blocks[:3]] == [
        str(default).lstrip("/"),
        str(kiosk / "app.db").lstrip("/"),
        str(aside).lstrip("/"),
    ]
    first = blocks[0].splitlines()
    assert first[1] == "  sensor    (none)"
    assert re.fullmatch(r"  endpoint  \(none\) \(last used \d+ s ago\)", first[2])
    assert first[3].startswith("  queued 3, dead letters 1, checkpoints 1 (1 interrupted), oldest ")
    assert first[4].startswith(
        f"  interrupted run {OTHER}: 1 window to send, active 5.0 s, inactive 0.0 s, last seen "
    )
    second = blocks[1].splitlines()
    assert second[1] == f"  sensor    {SENSOR}"
    assert re.fullmatch(
        r"  endpoint  https://a\.example\.com/caliper/event \(last used \d+ s ago\)", second[2]
    )
    assert re.fullmatch(
        r"  queued 1, dead letters 0, checkpoints 0, oldest event (9|10) min ago", second[3]
    )
    assert second[4] == f"  sensor    {OTHER_SENSOR}"
    assert second[5].startswith("  endpoint  https://b.example.com/caliper/event (last used ")
    assert second[6].startswith("  queued 1, dead letters 0, checkpoints 0, oldest event ")
    assert 0 < readable < 40
    assert (
        blocks[2]
        .splitlines()[1]
        .startswith(f"  corrupt, moved aside: {readable} events still readable, oldest ")
    )
    assert result.stdout.splitlines()[-1] == (
        "2 spools: 5 queued events, 1 dead letter, 1 interrupted run; 1 corrupt file moved aside"
    )
    for skipped in ("settings.sqlite3", "notes.txt", "link.sqlite3", ".lock", "-wal"):
        assert skipped not in result.stdout
    assert USER.email not in result.stdout
    assert USER.id not in result.stdout


def make_corrupt(path: Path) -> Path:
    """A spool of 40 windows with two pages in the middle trashed."""
    run = uuid.uuid4()
    fill(path, SENSOR, "https://a.example.com/caliper/event", [window(run, n) for n in range(40)])
    trash_entry_pages(path, 2)
    return path


def test_ls_reports_unusable_spools_and_missing_dirs(tmp_path: Path, env: dict[str, str]) -> None:
    """A corrupt spool not yet moved aside says what the next start keeps; a --dir that does
    not exist exits 2; an empty data directory says so."""
    nothing = spool_command(env, "ls")
    assert nothing.returncode == 0, nothing.stderr
    data_dir = Path(env["XDG_DATA_HOME"]) / "timeback-tracker"
    assert nothing.stdout.splitlines() == [
        f"no spools in {data_dir} (it does not exist yet)",
        "0 spools: 0 queued events, 0 dead letters, 0 interrupted runs",
    ]
    corrupt = make_corrupt(tmp_path / "spool.sqlite3")
    readable = len(list(salvage(corrupt)))
    before = corrupt.read_bytes()
    result = spool_command(env, "ls", "--dir", str(tmp_path), "--dir", str(tmp_path / "gone"))
    assert result.returncode == 2
    assert f"{tmp_path / 'gone'}: no such directory" in result.stderr
    assert f"{corrupt}\n  unusable: corrupt (" in result.stdout
    assert f"the next tracker on it moves it aside and queues the {readable} events" in (
        result.stdout
    )
    assert corrupt.read_bytes() == before  # looked at, never changed


# -- a kiosk killed with SIGKILL --------------------------------------------------------------

# A kiosk app with a long heartbeat: its time is only in the crash checkpoint until it ends.
KIOSK = textwrap.dedent(
    """
    import sys, time
    import timeback_tracker as tt

    tracker = tt.Tracker(tt.TrackerConfig(
        sensor="https://kiosk.example.com/sensors/lab-3", endpoint=sys.argv[1],
        spool_path=sys.argv[2], heartbeat_interval=15,
    ))
    session = tracker.start_session(
        tt.TimebackUser(id="https://sis.example.com/users/1", email="kid@example.com"),
        tt.TimebackActivityContext(
            id="https://app.example.com/a/1", subject="Math", app=tt.App(name="Kiosk")
        ),
    )
    print("run", session.run_id, flush=True)
    while True:
        time.sleep(0.02)  # the kiosk's pace: input every 20 ms of real time
        session.touch()
        print("active", session.active_seconds, flush=True)
    """
)


@pytest.mark.slow(6)
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_killed_kiosk_is_an_interrupted_run_that_send_delivers(
    collector: LocalCollector, tmp_path: Path, env: dict[str, str]
) -> None:
    """While the kiosk runs, its checkpoint is "running"; killed with SIGKILL, it is an
    interrupted run in ls and list; send recovers its window and delivers it."""
    spool = tmp_path / "kiosk.sqlite3"
    kiosk = subprocess.Popen(
        [sys.executable, "-c", KIOSK, collector.url, str(spool)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert kiosk.stdout is not None
    try:
        run_id = kiosk.stdout.readline().split()[1]
        last = read_active_until(kiosk, 2.5)
        alive = spool_command(env, "list", str(spool))
        assert alive.returncode == 0, alive.stderr
        assert [shape(line) for line in alive.stdout.splitlines()[1:]] == [
            ["running", "urn:uuid:", "time", run_id]
        ]
        last = read_active_until(kiosk, last + 1.5)
    finally:
        os.kill(kiosk.pid, signal.SIGKILL)
        kiosk.wait(10)
        kiosk.stdout.close()
    assert collector.events == []  # a 15 s heartbeat: nothing was sent before the kill

    listed = spool_command(env, "ls", "--dir", str(tmp_path))
    assert listed.returncode == 0, listed.stderr
    assert f"  interrupted run {run_id}: 1 window to send, active " in listed.stdout
    assert "1 spool: 0 queued events, 0 dead letters, 1 interrupted run" in listed.stdout
    lines = spool_command(env, "list", str(spool)).stdout.splitlines()[1:]
    assert [shape(line) for line in lines] == [["interrupted", "urn:uuid:", "time", run_id]]

    sent = spool_command(env, "send", "--path", str(spool))
    assert sent.returncode == 0, sent.stdout + sent.stderr
    out = sent.stdout.splitlines()
    assert out[:3] == [
        f"spool {spool}",
        "recovering 1 interrupted run (1 window)",
        f"sending 1 event to {collector.url} (sensor {SENSOR})",
    ]
    assert f"     1       0       0  {collector.url} (sensor {SENSOR})" in out
    events = windows(collector, run_id)
    assert len(events) == 1
    assert events[0]["id"] == lines[0].split()[1]  # the id list showed is the id sent
    active, inactive = collector.totals(run_id)
    assert inactive == 0
    assert last - 1.1 <= active <= last + 0.1, (last, active)

    after = spool_command(env, "ls", "--dir", str(tmp_path)).stdout
    assert "  interrupted run " not in after
    assert "1 spool: 0 queued events, 0 dead letters, 0 interrupted runs" in after
    again = spool_command(env, "send", str(spool))
    assert (again.returncode, again.stdout) == (0, f"spool {spool}\nnothing to send\n")


def shape(line: str) -> list[str]:
    """A line of ``spool list``: state, the id's prefix, kind, run id."""
    state, event_id, kind, run_id = line.split()[:4]
    return [state, event_id[:9], kind, run_id]


def read_active_until(kiosk: subprocess.Popen[str], seconds: float) -> float:
    """Read the kiosk's reports until it counted ``seconds`` active; the last one."""
    assert kiosk.stdout is not None
    while True:
        line = kiosk.stdout.readline().split()
        if line and line[0] == "active" and float(line[1]) >= seconds:
            return float(line[1])


# -- send ---------------------------------------------------------------------------------------


def test_send_delivers_each_destination_to_its_own_endpoint(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """A spool holding two destinations: send sends each one's events to its own endpoint,
    one after the other, saying which; --endpoint sends only that one."""
    spool = tmp_path / "shared.sqlite3"
    with LocalCollector() as first, LocalCollector() as second:
        ours = fill(spool, SENSOR, first.url, [fresh_window(RUN, n) for n in range(3)])
        theirs = fill(spool, OTHER_SENSOR, second.url, [fresh_window(OTHER, n) for n in range(2)])

        only = spool_command(env, "send", str(spool), "--endpoint", second.url)
        assert only.returncode == 0, only.stdout + only.stderr
        assert {event["id"] for event in second.events} == set(theirs)
        assert first.events == []
        assert queued(spool) == 3

        both = spool_command(env, "send", str(spool))
        assert both.returncode == 0, both.stdout + both.stderr
        assert [event["id"] for event in first.events] == ours
        assert {event["id"] for event in second.events} == set(theirs)
        assert all(e["actor"]["id"] == USER.id for e in first.events + second.events)
        assert queued(spool) == 0
        lines = both.stdout.splitlines()
        assert f"sending 3 events to {first.url} (sensor {SENSOR})" in lines
        assert f"nothing to send to {second.url} (sensor {OTHER_SENSOR})" not in lines
        assert lines[-2:] == [
            "  SENT    DEAD    LEFT  DESTINATION",
            f"     3       0       0  {first.url} (sensor {SENSOR})",
        ]
        assert first.duplicate_conflicts == second.duplicate_conflicts == []


def test_send_one_after_the_other_and_the_summary_per_destination(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Both destinations queued: the first sent, then the second; a summary line each."""
    spool = tmp_path / "shared.sqlite3"
    with LocalCollector() as first, LocalCollector() as second:
        fill(spool, SENSOR, first.url, [fresh_window(RUN, n) for n in range(3)])
        fill(spool, OTHER_SENSOR, second.url, [fresh_window(OTHER, n) for n in range(2)])
        result = spool_command(env, "send", str(spool))
        assert result.returncode == 0, result.stdout + result.stderr
        lines = result.stdout.splitlines()
        order = [line for line in lines if line.startswith("sending ")]
        assert order == [
            f"sending 3 events to {first.url} (sensor {SENSOR})",
            f"sending 2 events to {second.url} (sensor {OTHER_SENSOR})",
        ]
        assert lines[-3:] == [
            "  SENT    DEAD    LEFT  DESTINATION",
            f"     3       0       0  {first.url} (sensor {SENSOR})",
            f"     2       0       0  {second.url} (sensor {OTHER_SENSOR})",
        ]
        # Not a terminal: plain lines, no carriage returns.
        assert "\r" not in result.stdout
        assert "  sent 3, dead letters 0, left 0" in lines
        assert (len(first.events), len(second.events)) == (3, 2)


def test_send_reads_credentials_from_the_environment(tmp_path: Path, env: dict[str, str]) -> None:
    """Without credentials the endpoint answers 401: send gives up after --timeout, exit 1,
    events kept; with TIMEBACK_CLIENT_ID/SECRET/AUTH_URL it delivers; the secret never shows."""
    spool = tmp_path / "spool.sqlite3"
    secret = "s3cret-never-shown"
    with LocalCollector(clients={"kiosk-7": secret}) as collector:
        ids = fill(spool, SENSOR, collector.url, [fresh_window(RUN, n) for n in range(2)])
        started = time.monotonic()
        # 3 s: time enough for a first attempt on a loaded machine (its 401 is the last error).
        refused = spool_command(env, "send", str(spool), "--timeout", "3")
        assert time.monotonic() - started < 30
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "gave up after 3 s without progress (last error: " in refused.stdout
        assert "answered HTTP 401" in refused.stdout
        assert f"     0       0       2  {collector.url}" in refused.stdout
        assert queued(spool) == 2
        broken = spool_command({**env, "TIMEBACK_CLIENT_ID": "kiosk-7"}, "send", str(spool))
        assert broken.returncode == 2
        assert "TIMEBACK_CLIENT_SECRET: must be set together with TIMEBACK_CLIENT_ID" in (
            broken.stderr
        )

        credentials = {
            **env,
            "TIMEBACK_CLIENT_ID": "kiosk-7",
            "TIMEBACK_CLIENT_SECRET": secret,
            "TIMEBACK_AUTH_URL": collector.token_url,
        }
        sent = spool_command(credentials, "send", str(spool))
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert [event["id"] for event in collector.events] == ids
        assert collector.token_requests >= 1
        for result in (refused, sent):
            assert secret not in result.stdout + result.stderr


def test_send_exits_3_when_events_become_dead_letters(
    collector: LocalCollector, tmp_path: Path, env: dict[str, str]
) -> None:
    """An event the endpoint rejects is set aside, the rest delivered: exit 3 and a pointer."""
    spool = tmp_path / "spool.sqlite3"
    ids = fill(spool, SENSOR, collector.url, [fresh_window(RUN, n) for n in range(3)])
    collector.reject_events(lambda event: event["id"] == ids[1])
    result = spool_command(env, "send", str(spool))
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"     2       1       0  {collector.url}" in result.stdout
    assert "dead letters: `timeback-tracker spool list --dead` shows why" in result.stdout
    assert "warning: dead-lettered 1 events (HTTP 400" in result.stderr
    assert [event["id"] for event in collector.events] == [ids[0], ids[2]]


def test_send_leaves_a_destination_another_process_is_sending(
    collector: LocalCollector, tmp_path: Path, env: dict[str, str]
) -> None:
    """The app holds the destination's drain lock: send says so, sends nothing, exits 1."""
    spool = tmp_path / "spool.sqlite3"
    fill(spool, SENSOR, collector.url, [fresh_window(RUN, 0)])
    lock = spool.with_name(f"{spool.name}.drain-{destination(SENSOR, collector.url)}.lock")
    fd = open_lock_file(lock)
    try:
        assert try_lock(fd)
        result = spool_command(env, "send", str(spool))
    finally:
        os.close(fd)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"skipping {collector.url} (sensor {SENSOR}): another process is sending" in (
        result.stdout
    )
    assert collector.events == []
    assert queued(spool) == 1


def test_send_refuses_what_it_cannot_do(
    collector: LocalCollector, tmp_path: Path, env: dict[str, str]
) -> None:
    """An endpoint the spool does not record, a missing file, a symlink: exit 2, nothing sent;
    an empty spool: nothing to send, exit 0."""
    spool = tmp_path / "spool.sqlite3"
    fill(spool, SENSOR, collector.url, [fresh_window(RUN, 0)])
    typo = spool_command(env, "send", str(spool), "--endpoint", collector.url + "x")
    assert typo.returncode == 2
    assert f"no events recorded for endpoint {collector.url}x (recorded: {collector.url})" in (
        typo.stderr
    )
    missing = spool_command(env, "send", "--path", str(tmp_path / "missing.sqlite3"))
    assert missing.returncode == 2
    assert "no such spool file" in missing.stderr
    assert not (tmp_path / "missing.sqlite3").exists()
    link = tmp_path / "link.sqlite3"
    link.symlink_to(spool)
    linked = spool_command(env, "send", str(link))
    assert linked.returncode == 2
    assert "refusing a symlink" in linked.stderr
    both = spool_command(env, "send", str(spool), "--sensor", SENSOR)
    assert both.returncode == 2
    assert "give one of PATH, --path FILE and --sensor IRI" in both.stderr
    assert collector.events == []
    empty = tmp_path / "empty.sqlite3"
    fill(empty, SENSOR, collector.url, [])
    nothing = spool_command(env, "send", str(empty))
    assert (nothing.returncode, nothing.stdout) == (0, f"spool {empty}\nnothing to send\n")


def test_send_draws_a_progress_bar_on_a_terminal(
    collector: LocalCollector, tmp_path: Path, env: dict[str, str]
) -> None:
    """On a terminal the progress is a bar redrawn in place, ending on the final counts."""
    spool = tmp_path / "spool.sqlite3"
    fill(spool, SENSOR, collector.url, [fresh_window(RUN, n) for n in range(60)])
    collector.fail_next(503, times=2)  # a second of retries: the bar is drawn a few times
    code, shown, stderr = on_terminal(env, "send", str(spool), stream="stdout")
    assert code == 0, shown + stderr
    assert "\r  [--------------------] 0/60  retrying: HTTP 503 Service Unavailable\x1b[K" in shown
    assert "\r  sent 60, dead letters 0, left 0\x1b[K\r\n" in shown
    assert len(collector.events) == 60


# -- purge --queued ------------------------------------------------------------------------------


def test_purge_queued_needs_a_confirmation(spool: Path, env: dict[str, str]) -> None:
    """Without a terminal and without --yes purge --queued refuses; on a terminal it asks,
    stating the count, and deletes only on yes; checkpoints and dead letters stay."""
    refused = spool_command(env, "purge", "--queued", str(spool))
    assert refused.returncode == 2
    assert "refusing to delete 3 queued events without confirmation" in refused.stderr
    assert "--yes" in refused.stderr
    assert queued(spool) == 3

    code, _, stderr = on_terminal(
        env, "purge", "--queued", str(spool), stream="stdin", answer=b"n\n"
    )
    assert code == 1
    assert f"Delete 3 queued events from {spool}? They will never be sent. [y/N]" in stderr
    assert "nothing deleted" in stderr
    assert queued(spool) == 3

    code, out, stderr = on_terminal(
        env, "purge", "--queued", str(spool), stream="stdin", answer=b"y\n"
    )
    assert code == 0, stderr
    assert out.splitlines() == [
        "deleted 3 queued events",
        "kept the checkpoints of 1 interrupted runs: `timeback-tracker spool send` or the "
        "app's next start queues their windows",
    ]
    with SpoolFile(spool) as admin:
        status = admin.status()
    assert (status.queued, status.dead_letters, status.checkpoints) == (0, 1, 1)


def test_purge_queued_with_yes_and_dead(tmp_path: Path, env: dict[str, str]) -> None:
    """--yes deletes queued events without asking; with --dead the dead letters go too."""
    spool = make_spool(tmp_path / "spool.sqlite3")
    result = spool_command(env, "purge", "--queued", "--dead", "--yes", str(spool))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "deleted 3 queued events"
    assert result.stdout.splitlines()[-1] == "deleted 1 dead letters"
    with SpoolFile(spool) as admin:
        status = admin.status()
    assert (status.queued, status.dead_letters) == (0, 0)


def test_send_a_spool_that_records_no_destination(
    collector: LocalCollector, tmp_path: Path, env: dict[str, str]
) -> None:
    """Rows of a 0.1 spool record no destination: ls says so, send asks for --endpoint and
    the sensor, then delivers them there."""
    spool = tmp_path / "old.sqlite3"
    ids = fill(spool, SENSOR, collector.url, [fresh_window(RUN, n) for n in range(2)])
    with sqlite3.connect(spool) as conn:  # what the upgrade of a 0.1 spool leaves
        conn.execute("UPDATE entries SET dest = ''")
        conn.execute("DELETE FROM destinations")
    conn.close()
    listed = spool_command(env, "ls", "--dir", str(tmp_path)).stdout
    assert "  destination not recorded (a 0.1 spool's rows: the next tracker adopts them)" in (
        listed
    )
    assert re.search(
        r"\n  queued 2, dead letters 0, checkpoints 0, oldest event (9|10) min", listed
    )
    asked = spool_command(env, "send", str(spool))
    assert asked.returncode == 2
    assert "record no destination (a 0.1 spool): give --endpoint URL" in asked.stderr
    no_sensor = spool_command(env, "send", str(spool), "--endpoint", collector.url)
    assert no_sensor.returncode == 2
    assert "name their sensor with --sensor IRI or $TIMEBACK_SENSOR" in no_sensor.stderr
    sent = spool_command(
        {**env, "TIMEBACK_SENSOR": SENSOR}, "send", str(spool), "--endpoint", collector.url
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert [event["id"] for event in collector.events] == ids


def test_ctrl_c_stops_send_and_keeps_the_events(
    collector: LocalCollector, tmp_path: Path, env: dict[str, str]
) -> None:
    """Ctrl-C while the endpoint fails: send stops at once, says so, exits 130, events kept."""
    spool = tmp_path / "spool.sqlite3"
    fill(spool, SENSOR, collector.url, [fresh_window(RUN, n) for n in range(3)])
    collector.fail_next(503, times=1000)
    child = subprocess.Popen(
        [sys.executable, "-m", "timeback_tracker", "spool", "send", str(spool)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    try:
        lines = [child.stdout.readline() for _ in range(2)]
        assert lines[1].startswith("sending 3 events to"), lines
        assert collector.wait_for(lambda c: len(c.requests) >= 1, timeout=30)
        started = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
    finally:
        child.kill()
        child.wait()
    # What it printed tells an ignored Ctrl-C ("gave up after 30 s") from a slow stop.
    assert time.monotonic() - started < 5, (child.returncode, out, err)
    assert child.returncode == 130, out + err
    assert "interrupted: what was not sent stays in the spool" in out
    assert f"     0       0       3  {collector.url}" in out
    assert "Traceback" not in err
    assert queued(spool) == 3


def test_an_endpoint_query_never_reaches_the_disk_or_the_screen(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """An endpoint whose query carries a key: the spool records it without the query,
    `spool ls` and `spool send` never show it, and its events go only when the whole
    endpoint is given again."""
    spool = tmp_path / "keyed.sqlite3"
    with LocalCollector() as collector:
        keyed = f"{collector.url}?key=s3cret-key"
        ids = fill(spool, SENSOR, keyed, [fresh_window(RUN, n) for n in range(2)])
        on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
        assert b"s3cret" not in on_disk
        listed = spool_command(env, "ls", "--dir", str(tmp_path))
        assert listed.returncode == 0, listed.stderr
        assert collector.url in listed.stdout
        assert "s3cret" not in listed.stdout + listed.stderr

        refused = spool_command(env, "send", str(spool))
        assert refused.returncode != 0
        assert "--endpoint" in refused.stderr
        assert "s3cret" not in refused.stdout + refused.stderr
        assert collector.events == []

        sent = spool_command(env, "send", str(spool), "--endpoint", keyed)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert [event["id"] for event in collector.events] == ids
        assert "s3cret" not in sent.stdout + sent.stderr
        assert queued(spool) == 0
