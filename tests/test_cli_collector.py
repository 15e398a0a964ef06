"""``timeback-tracker collector``, run as a real subprocess and spoken to over loopback HTTP.

Every subprocess test runs twice: through ``python -m timeback_tracker collector`` (skipped
until ``cli.py`` registers the command) and through a shim that registers
``add_collector_command`` on a parser of its own, so the command is tested either way.
The hooks the command added to ``LocalCollector`` (``on_event``, ``on_request``,
``RequestRecord.reason``) are tested in-process at the end.
"""

from __future__ import annotations

import functools
import json
import os
import queue
import re
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

import timeback_tracker as tt
from tests.support import HAS_PROC_TASKS, blocked_signals, new_run, wire_completion, wire_window
from tests.support import envelope as support_envelope
from timeback_tracker._collector_cli import (
    ScriptStep,
    describe_event,
    describe_request,
    parse_script,
)
from timeback_tracker._urls import is_loopback
from timeback_tracker.testing import EventOutcome, LocalCollector, RequestRecord

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="the tests stop the collector with POSIX signals"
)

EMAIL = "collector.student@example.com"
USER = tt.TimebackUser(id="https://sis.example.com/users/collector-student-77", email=EMAIL)
ACTIVITY = tt.TimebackActivityContext(
    id="https://myapp.example.com/activities/Math/g3/lesson-9",
    subject=tt.Subject.MATH,
    app=tt.App(name="Collector Test App"),
)
SENSOR = "https://myapp.example.com/sensors/collector-test"
window = functools.partial(wire_window, active=12.5, inactive=2.5, user=USER, activity=ACTIVITY)
completion = functools.partial(
    wire_completion, user=USER, activity=ACTIVITY, mastered_units=1, pct_complete=67
)
envelope = functools.partial(support_envelope, sensor=SENSOR)
TIMEOUT = 10.0  # seconds any single wait may take before the test fails
SHIM = (
    "import argparse, sys\n"
    "from timeback_tracker._collector_cli import add_collector_command\n"
    "parser = argparse.ArgumentParser(prog='timeback-tracker')\n"
    "add_collector_command(parser.add_subparsers(required=True))\n"
    "args = parser.parse_args(sys.argv[1:])\n"
    "sys.exit(args.run(args))\n"
)
COMMANDS = {
    "module": [sys.executable, "-m", "timeback_tracker", "collector"],
    "shim": [sys.executable, "-c", SHIM, "collector"],
}
URL = re.compile(r"http://\S+/caliper/event")
STOP = {signal.SIGINT, signal.SIGTERM}
SUMMARY = re.compile(
    r"stopped: envelopes=(\d+) events=(\d+) duplicates=(\d+) conflicts=(\d+) "
    r"requests=(\d+) errors=(\d+)"
)


# ---------------------------------------------------------------------- helpers


def post(url: str, body: dict[str, Any], token: str | None = None) -> requests.Response:
    """POST ``body`` as JSON on a fresh connection, with a bearer token if given."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(url, json=body, headers=headers, timeout=TIMEOUT)


@functools.cache
def registered() -> bool:
    """Whether ``timeback-tracker --help`` lists the ``collector`` command."""
    result = subprocess.run(
        [sys.executable, "-m", "timeback_tracker", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return re.search(r"^\s+collector\s", result.stdout, re.MULTILINE) is not None


class Running:
    """A ``collector`` subprocess; its output lines are read by threads as they come."""

    def __init__(self, command: list[str], *args: str, env: dict[str, str] | None = None) -> None:
        environment = dict(os.environ if env is None else env)
        environment.pop("PYTHONUNBUFFERED", None)  # the command must flush each line itself
        environment["PYTHONFAULTHANDLER"] = "1"  # SIGABRT prints every thread's stack: see stop()
        self.process = subprocess.Popen(
            [*command, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, True), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, False), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self.start_line = self.next_line()
        match = URL.search(self.start_line)
        assert match is not None, self.start_line
        self.url = match.group(0)
        self.base_url = self.url.removesuffix("/caliper/event")

    def _read(self, stream: Any, is_stdout: bool) -> None:
        for line in stream:
            (self.stdout if is_stdout else self.stderr).append(line.rstrip("\n"))
            if is_stdout:
                self._lines.put(line.rstrip("\n"))
        if is_stdout:
            self._lines.put(None)

    def next_line(self, timeout: float = TIMEOUT) -> str:
        """The next stdout line, failing the test if none comes in time."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no output within {timeout} s; stderr: {self.stderr}")
        if line is None:
            self.process.wait(TIMEOUT)
            pytest.fail(f"exited {self.process.returncode}; stderr: {self.stderr}")
        return line

    def stop(self, signum: int = signal.SIGINT) -> tuple[int, list[str]]:
        """Send ``signum``, wait for the exit; return the code and the remaining stdout lines.

        A command that does not exit in time is aborted, and the test fails with
        what it printed, its threads' stacks included (faulthandler).
        """
        self.process.send_signal(signum)
        try:
            code = self.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)
            self.process.wait(TIMEOUT)
            for reader in self._readers:
                reader.join(TIMEOUT)
            output = "\n".join(["stdout:", *self.stdout, "stderr:", *self.stderr])
            pytest.fail(f"no exit within {TIMEOUT} s of signal {signum}\n{output}")
        for reader in self._readers:
            reader.join(TIMEOUT)
        rest: list[str] = []
        while (line := self._lines.get(timeout=TIMEOUT)) is not None:
            rest.append(line)
        return code, rest


@pytest.fixture(params=["shim", "module"])
def command(request: pytest.FixtureRequest) -> list[str]:
    """How to run the command: the registered CLI, or the shim that registers it itself."""
    if request.param == "module" and not registered():
        pytest.skip(
            "`collector` is not registered in timeback_tracker.cli yet "
            "(add add_collector_command to _COMMANDS); the shim runs these tests meanwhile"
        )
    return COMMANDS[request.param]


@pytest.fixture
def start(command: list[str]) -> Iterator[Any]:
    """Start collectors (``--port 0`` added); any still running at teardown is killed."""
    started: list[Running] = []

    def launch(*args: str, env: dict[str, str] | None = None) -> Running:
        running = Running(command, "--port", "0", *args, env=env)
        started.append(running)
        return running

    yield launch
    for running in started:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait(TIMEOUT)


def run_command(command: list[str], *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run the command to its end (for options that make it exit at once)."""
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=60, check=False, **kwargs
    )


def summary(line: str) -> dict[str, int]:
    """The counts of the final summary line."""
    match = SUMMARY.fullmatch(line)
    assert match is not None, line
    names = ("envelopes", "events", "duplicates", "conflicts", "requests", "errors")
    return dict(zip(names, map(int, match.groups()), strict=True))


# ---------------------------------------------------------------------- printing and stopping


def test_each_event_gets_one_line_without_emails_and_sigint_prints_the_summary(
    start: Any,
) -> None:
    """Each event prints one line at once, without PII; SIGINT exits 0 with a summary."""
    collector = start()
    assert "auth: none" in collector.start_line
    run = new_run()
    assert post(collector.url, envelope(window(run), completion(run))).status_code == 200
    first, second = collector.next_line(), collector.next_line()
    assert re.fullmatch(r"\d\d:\d\d:\d\d TimeSpentEvent .*", first)
    assert f"run={run[:8]} " in first
    assert run not in first  # the short form only
    assert "active=12.5s inactive=2.5s" in first
    assert "window=2026-01-27T10:00:00.000Z..10:00:15.000Z" in first
    assert re.fullmatch(r"\d\d:\d\d:\d\d ActivityEvent/Completed .*", second)
    assert f"run={run[:8]} xp=3 questions=8/10 mastered=1 pct=67" in second
    code, rest = collector.stop(signal.SIGINT)
    assert code == 0
    assert summary(rest[-1]) == {
        "envelopes": 1,
        "events": 2,
        "duplicates": 0,
        "conflicts": 0,
        "requests": 1,
        "errors": 0,
    }
    output = "\n".join(collector.stdout + collector.stderr)
    assert EMAIL not in output
    assert USER.id not in output
    assert collector.stderr == []


def test_duplicates_and_conflicts_are_flagged_and_sigterm_exits_0(start: Any) -> None:
    """A re-send prints 'duplicate', a changed re-send 'CONFLICT'; SIGTERM stops cleanly."""
    collector = start()
    run = new_run()
    original = window(run)
    assert post(collector.url, envelope(original)).status_code == 200
    assert post(collector.url, envelope(original)).status_code == 200
    changed = window(run, active=11.5, inactive=3.5)
    assert changed["id"] == original["id"]
    assert post(collector.url, envelope(changed)).status_code == 200
    lines = [collector.next_line() for _ in range(3)]
    assert "TimeSpentEvent" in lines[0]
    assert f"duplicate TimeSpentEvent run={run[:8]} id={original['id']}" in lines[1]
    assert f"CONFLICT TimeSpentEvent run={run[:8]} id={original['id']}" in lines[2]
    code, rest = collector.stop(signal.SIGTERM)
    assert code == 0
    counts = summary(rest[-1])
    assert (counts["events"], counts["duplicates"], counts["conflicts"]) == (1, 2, 1)


def test_rejected_requests_get_a_line_with_the_reason(start: Any) -> None:
    """An invalid envelope prints its status and the failing JSON path, never the bad value."""
    collector = start()
    bad = window(new_run())
    bad["actor"]["email"] = "not-an-address"
    response = post(collector.url, envelope(bad))
    assert response.status_code == 400
    line = collector.next_line()
    assert "POST /caliper/event -> 400 (1 event): invalid Caliper envelope" in line
    assert "$.data[0].actor.email: must be an email address" in line
    assert "not-an-address" not in line
    code, rest = collector.stop()
    assert code == 0
    assert summary(rest[-1])["errors"] == 1


def test_quiet_prints_only_the_start_and_summary_lines(start: Any) -> None:
    """--quiet drops per-event and per-request lines but keeps the start and summary lines."""
    collector = start("--quiet", "--script", "503")
    run = new_run()
    assert post(collector.url, envelope(window(run))).status_code == 503
    assert post(collector.url, envelope(window(run))).status_code == 200
    code, rest = collector.stop()
    assert code == 0
    assert len(rest) == 1
    assert summary(rest[0])["events"] == 1
    assert collector.stdout == [collector.start_line, rest[0]]


@pytest.mark.skipif(not HAS_PROC_TASKS, reason="reads threads' masks in /proc")
def test_only_the_main_thread_can_take_the_stop_signals(start: Any) -> None:
    """Every other thread blocks SIGINT and SIGTERM, so the kernel hands them to the main one.

    Python runs handlers in the main thread only; a signal handed to a connection
    thread would leave the main thread asleep and Ctrl-C unanswered.
    """
    collector = start()
    pid = collector.process.pid
    address = urlsplit(collector.url)
    with socket.create_connection((address.hostname, address.port)):
        # An open connection has a thread of its own, started by the accepting thread.
        deadline = time.monotonic() + TIMEOUT
        while len(tids := [int(t) for t in os.listdir(f"/proc/{pid}/task")]) < 3:
            assert time.monotonic() < deadline, "the connection got no thread"
            time.sleep(0.01)  # polling /proc: nothing to wait on
        blocked = {tid: blocked_signals(tid, pid) & STOP for tid in tids}
    assert blocked.pop(pid) == set()
    assert all(signals == STOP for signals in blocked.values()), blocked
    code, rest = collector.stop()
    assert code == 0
    assert summary(rest[-1])["requests"] == 0


BLOCKING_LAUNCHER = (
    "import os, signal, sys\n"
    "signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT, signal.SIGTERM])\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"  # the mask survives exec
)


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="no signal masks")
def test_ctrl_c_stops_it_even_when_started_with_the_signals_blocked(command: list[str]) -> None:
    """A parent that blocked SIGINT and SIGTERM (kept across exec) cannot make it unstoppable."""
    running = Running([sys.executable, "-c", BLOCKING_LAUNCHER, *command], "--port", "0")
    try:
        code, rest = running.stop()
    finally:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait(TIMEOUT)
    assert code == 0
    assert summary(rest[-1])["events"] == 0


# ---------------------------------------------------------------------- authentication


def test_token_is_required_and_never_printed(start: Any) -> None:
    """--token: 401 without or with a wrong token, 200 with it; the token is never printed."""
    token = "tok-" + uuid.uuid4().hex
    collector = start("--token", token)
    assert "auth: bearer token" in collector.start_line
    run = new_run()
    missing = post(collector.url, envelope(window(run)))
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert post(collector.url, envelope(window(run)), token="wrong").status_code == 401
    assert post(collector.url, envelope(window(run)), token=token).status_code == 200
    assert "-> 401 (1 event): missing bearer token" in collector.next_line()
    assert "-> 401 (1 event): invalid or expired token" in collector.next_line()
    assert "TimeSpentEvent" in collector.next_line()
    code, _ = collector.stop()
    assert code == 0
    assert token not in "\n".join(collector.stdout + collector.stderr)


def test_token_env_keeps_the_token_off_the_command_line(start: Any) -> None:
    """--token-env VAR reads the token from the environment; argv never holds it."""
    token = "env-" + uuid.uuid4().hex
    collector = start(
        "--token-env", "COLLECTOR_TEST_TOKEN", env={**os.environ, "COLLECTOR_TEST_TOKEN": token}
    )
    assert token not in " ".join(collector.process.args)  # type: ignore[arg-type]
    run = new_run()
    assert post(collector.url, envelope(window(run))).status_code == 401
    assert post(collector.url, envelope(window(run)), token=token).status_code == 200
    assert collector.stop()[0] == 0


def test_token_env_unset_exits_2(command: list[str]) -> None:
    """--token-env naming an unset variable is an unusable option: exit 2, clear message."""
    env = {key: value for key, value in os.environ.items() if key != "NO_SUCH_TOKEN_VAR"}
    result = run_command(command, "--port", "0", "--token-env", "NO_SUCH_TOKEN_VAR", env=env)
    assert result.returncode == 2
    assert "NO_SUCH_TOKEN_VAR is not set" in result.stderr
    assert result.stdout == ""


def test_clients_get_tokens_at_the_printed_token_url(start: Any) -> None:
    """--client ID:SECRET serves the OAuth2 token URL it prints; its tokens open the endpoint."""
    collector = start("--client", "kiosk:s3cret-one", "--client", "other:s3cret-two")
    assert f"token URL {collector.base_url}/oauth2/token" in collector.start_line
    assert "auth: OAuth2 (2 clients)" in collector.start_line
    denied = requests.post(
        f"{collector.base_url}/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=("kiosk", "wrong"),
        timeout=TIMEOUT,
    )
    assert denied.status_code == 401
    granted = requests.post(
        f"{collector.base_url}/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=("kiosk", "s3cret-one"),
        timeout=TIMEOUT,
    )
    assert granted.status_code == 200
    access = granted.json()["access_token"]
    run = new_run()
    assert post(collector.url, envelope(window(run))).status_code == 401
    assert post(collector.url, envelope(window(run)), token=access).status_code == 200
    code, _ = collector.stop()
    assert code == 0
    output = "\n".join(collector.stdout + collector.stderr)
    assert "s3cret" not in output
    assert access not in output
    assert "POST /oauth2/token -> 401: invalid_client" in output


# ---------------------------------------------------------------------- the store


def test_store_json_lines_records_each_event_once_in_a_0600_file(
    start: Any, tmp_path: Path
) -> None:
    """--store FILE.jsonl: one line per distinct event, as received; created 0600, then appended."""
    path = tmp_path / "events.jsonl"
    collector = start("--store", str(path))
    assert f"store: {path}" in collector.start_line
    run = new_run()
    events = [window(run, 0), window(run, 1), completion(run)]
    assert post(collector.url, envelope(*events[:2])).status_code == 200
    assert post(collector.url, envelope(*events[:2])).status_code == 200  # duplicates
    assert post(collector.url, envelope(events[2])).status_code == 200
    # The hook runs before the answer: what was acknowledged is already on disk.
    assert len(path.read_text(encoding="utf-8").splitlines()) == 3
    assert collector.stop()[0] == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == events
    assert tt.load(json.loads(lines[0]), tt.TimeSpentEvent).extensions["runId"] == run

    again = start("--store", str(path))
    later = window(new_run())
    assert post(again.url, envelope(later)).status_code == 200
    assert again.stop()[0] == 0
    assert [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] == [
        *events,
        later,
    ]


def test_printed_names_are_the_wire_names_a_grep_of_the_store_finds(
    start: Any, tmp_path: Path
) -> None:
    """Lines say TimeSpentEvent and ActivityEvent/Completed; the store holds those words."""
    path = tmp_path / "events.jsonl"
    collector = start("--store", str(path))
    run = new_run()
    assert post(collector.url, envelope(window(run, 0), completion(run))).status_code == 200
    printed = [collector.next_line().split()[1], collector.next_line().split()[1]]
    assert printed == ["TimeSpentEvent", "ActivityEvent/Completed"]
    stored = path.read_text(encoding="utf-8").splitlines()
    for name, line in zip(printed, stored, strict=True):
        wire_type, _, action = name.partition("/")
        assert f'"type":"{wire_type}"' in line
        assert not action or f'"action":"{action}"' in line
    assert collector.stop()[0] == 0
    # The store is JSON Lines that `validate` reads, line by line.
    checked = run_command([sys.executable, "-m", "timeback_tracker", "validate"], str(path))
    assert (checked.returncode, checked.stdout) == (
        0,
        "valid: JSON Lines, 2 lines with 2 events (1 TimeSpentEvent, 1 ActivityCompletedEvent)\n",
    )


def test_store_sqlite_holds_one_row_per_event_in_a_0600_file(start: Any, tmp_path: Path) -> None:
    """--store FILE.db: table events(id, run_id, type, event_time, received_at, json), mode 0600."""
    path = tmp_path / "events.db"
    collector = start("--store", str(path))
    run = new_run()
    events = [window(run, 0), completion(run)]
    before = datetime.now(timezone.utc).replace(microsecond=0)
    assert post(collector.url, envelope(*events)).status_code == 200
    assert post(collector.url, envelope(*events)).status_code == 200  # duplicates: no new rows
    with sqlite3.connect(path) as live:  # readable while the collector runs
        assert live.execute("SELECT count(*) FROM events").fetchone() == (2,)
    live.close()
    companions = list(tmp_path.glob("events.db-*"))  # SQLite's -wal and -shm, while open
    assert companions
    assert all(stat.S_IMODE(companion.stat().st_mode) == 0o600 for companion in companions)
    assert collector.stop()[0] == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    db = sqlite3.connect(path)
    try:
        columns = [row[1] for row in db.execute("PRAGMA table_info(events)")]
        primary = [row[1] for row in db.execute("PRAGMA table_info(events)") if row[5]]
        rows = db.execute(
            "SELECT id, run_id, type, event_time, received_at, json FROM events ORDER BY rowid"
        ).fetchall()
    finally:
        db.close()
    assert columns == ["id", "run_id", "type", "event_time", "received_at", "json"]
    assert primary == ["id"]
    assert [row[:4] for row in rows] == [
        (events[0]["id"], run, "TimeSpentEvent", events[0]["eventTime"]),
        (events[1]["id"], run, "ActivityEvent", events[1]["eventTime"]),
    ]
    for row in rows:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", row[4])
        received = datetime.strptime(row[4], "%Y-%m-%dT%H:%M:%S.%f%z")
        assert before <= received <= datetime.now(timezone.utc)
    assert [json.loads(row[5]) for row in rows] == events


def test_unusable_store_exits_2(command: list[str], tmp_path: Path) -> None:
    """A store in a missing directory, or a .db file that is not SQLite, is exit 2."""
    missing = run_command(command, "--port", "0", "--store", str(tmp_path / "no" / "e.jsonl"))
    assert missing.returncode == 2
    assert "--store" in missing.stderr
    assert "No such file or directory" in missing.stderr
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database, not even close" * 100)
    broken = run_command(command, "--port", "0", "--store", str(garbage))
    assert broken.returncode == 2
    assert f"--store {garbage}" in broken.stderr


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions and symlinks")
@pytest.mark.parametrize("name", ["events.jsonl", "events.db"])
def test_a_symlink_where_the_store_goes_is_refused(
    command: list[str], tmp_path: Path, name: str
) -> None:
    """--store at a planted symlink: exit 2 naming it; the link's target stays untouched."""
    target = tmp_path / "elsewhere"
    target.write_text("someone else's file\n")
    target.chmod(0o644)
    link = tmp_path / name
    link.symlink_to(target)
    refused = run_command(command, "--port", "0", "--store", str(link))
    assert refused.returncode == 2
    assert f"--store {link}" in refused.stderr
    assert "refusing a symlink" in refused.stderr
    assert target.read_text() == "someone else's file\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


# ---------------------------------------------------------------------- fault injection


def test_script_is_played_in_order(start: Any) -> None:
    """--script answers successive requests 503, 503, 429+Retry-After, drop, delay, ok, 500*2."""
    collector = start("--script", "503, 503,429:2,drop,delay:0.3,ok,500*2")
    run = new_run()
    seen: list[object] = []
    for index in range(9):
        began = time.monotonic()
        try:
            response = post(collector.url, envelope(window(run, index)))
        except requests.ConnectionError:
            seen.append("dropped")
            continue
        seen.append(response.status_code)
        if index == 2:
            assert response.headers["Retry-After"] == "2"
        if index == 4:
            assert time.monotonic() - began >= 0.3
    assert seen == [503, 503, 429, "dropped", 200, 200, 500, 500, 200]
    lines = [collector.next_line() for _ in range(9)]
    assert "-> 503 (1 event): injected failure (HTTP 503)" in lines[0]
    assert "-> 429 (1 event)" in lines[2]
    assert "POST /caliper/event -> dropped (1 event)" in lines[3]
    assert [line.split()[1] for line in lines[4:6]] == ["TimeSpentEvent"] * 2
    code, rest = collector.stop()
    assert code == 0
    counts = summary(rest[-1])
    assert (counts["events"], counts["requests"], counts["errors"]) == (3, 9, 6)


@pytest.mark.parametrize(("rate", "failing"), [("1.0", 5), ("0", 0)])
def test_fail_rate_fails_that_share(start: Any, rate: str, failing: int) -> None:
    """--fail-rate 1.0 answers every request 500/503; --fail-rate 0 none."""
    collector = start("--fail-rate", rate, "--seed", "7", "--quiet")
    run = new_run()
    statuses = [post(collector.url, envelope(window(run, index))).status_code for index in range(5)]
    assert sum(status in (500, 503) for status in statuses) == failing
    assert sum(status == 200 for status in statuses) == 5 - failing
    code, rest = collector.stop()
    assert code == 0
    assert summary(rest[-1])["errors"] == failing


def test_max_body_answers_413(start: Any) -> None:
    """--max-body BYTES answers 413 to a larger envelope and accepts a smaller one."""
    collector = start("--max-body", "3000", "--quiet")
    run = new_run()
    assert post(collector.url, envelope(window(run, 0))).status_code == 200
    big = envelope(*(window(run, index) for index in range(1, 6)))
    assert post(collector.url, big).status_code == 413
    assert collector.stop()[0] == 0


# ---------------------------------------------------------------------- bad options


def test_non_loopback_host_is_refused(command: list[str]) -> None:
    """--host 0.0.0.0 without --allow-remote: exit 2, nothing listens, the message says why."""
    result = run_command(command, "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2
    assert "not a loopback address" in result.stderr
    assert "--allow-remote" in result.stderr
    assert result.stdout == ""


def test_port_in_use_exits_2(command: list[str]) -> None:
    """A port another socket listens on: exit 2 naming the address, nothing printed on stdout."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_command(command, "--port", str(port))
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "--port 0" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "70000"], "argument --port: must be between 0 and 65535"),
        (["--fail-rate", "1.5"], "argument --fail-rate: must be between 0 and 1"),
        (["--script", "503,teapot"], "argument --script: step 2 ('teapot'): unknown step"),
        (["--script", "200"], "a status must be between 400 and 599"),
        (["--max-body", "0"], "argument --max-body: must be between 1"),
        (["--client", "kiosk"], "argument --client: expected ID:SECRET"),
        (["--client", "k:s3cret-a", "--client", "k:s3cret-b"], "--client k is given twice"),
        (["--token", "a", "--token-env", "B"], "not allowed with argument"),
    ],
)
def test_bad_options_exit_2(command: list[str], args: list[str], message: str) -> None:
    """Unusable options exit 2 with a message naming the option and rule, never a secret."""
    result = run_command(command, "--port", "0", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "s3cret" not in result.stderr
    assert result.stdout == ""


def test_help_documents_the_script_language(command: list[str]) -> None:
    """collector --help explains every fault-script step, with an example."""
    result = run_command(command, "--help")
    assert result.returncode == 0
    for word in ("STATUS:SECONDS", "drop", "delay:SECONDS", "ok", "*N", "503,503,429:2,drop"):
        assert word in result.stdout
    options = ("--host", "--port", "--token-env", "--client", "--store", "--quiet", "--show-pii")
    for option in options:
        assert option in result.stdout


# ---------------------------------------------------------------------- the live page


def test_start_line_names_the_page_which_hides_emails_unless_show_pii(start: Any) -> None:
    """The printed page URL serves the page; its API shows emails only with --show-pii."""
    for flags, shown in (((), False), (("--show-pii",), True)):
        collector = start(*flags)
        match = re.search(r"  page (http://\S+/)  ", collector.start_line)
        assert match is not None, collector.start_line
        page_url = match.group(1)
        assert page_url == collector.base_url + "/"
        page = requests.get(page_url, timeout=TIMEOUT)
        assert page.status_code == 200
        assert "page.js" in page.text
        run = new_run()
        assert post(collector.url, envelope(window(run, 0))).status_code == 200
        collector.next_line()
        runs = requests.get(page_url + "api/runs", timeout=TIMEOUT).json()["runs"]
        assert [r["runId"] for r in runs] == [run]
        detail = requests.get(f"{page_url}api/runs/{run}", timeout=TIMEOUT).text
        assert (EMAIL in detail) is shown
        code, _ = collector.stop()
        assert code == 0
        assert EMAIL not in "\n".join(collector.stdout + collector.stderr)


# ---------------------------------------------------------------------- a real tracker


def test_a_tracker_session_arrives_through_scripted_503s(start: Any) -> None:
    """An OAuth2 Tracker retries through 503,503; every window and the completion arrive."""
    collector = start("--script", "503,503", "--client", "kiosk:kiosk-secret")
    config = tt.TrackerConfig(
        sensor=SENSOR,
        endpoint=collector.url,
        auth=tt.ClientCredentials("kiosk", "kiosk-secret", f"{collector.base_url}/oauth2/token"),
        heartbeat_interval=0.1,
        spool_path=None,
    )
    with tt.Tracker(config) as tracker:
        session = tracker.start_session(user=USER, activity=ACTIVITY)
        time.sleep(0.35)  # the session runs: windows close every 0.1 s
        session.complete(xp_earned=1, total_questions=4, correct_questions=3)
        assert tracker.flush(timeout=TIMEOUT)
        stats = tracker.stats()
        active = session.active_seconds
    assert stats.failed >= 2
    code, rest = collector.stop()
    assert code == 0
    lines = [line for line in collector.stdout if " run=" in line]
    assert all(f"run={session.run_id[:8]}" in line for line in lines)
    windows = [line for line in lines if " TimeSpentEvent " in line]
    completions = [line for line in lines if " ActivityEvent/Completed " in line]
    assert windows
    assert len(completions) == 1
    assert "xp=1 questions=3/4" in completions[0]
    assert lines[-1] == completions[0]  # the completion after the run's last window
    total = sum(float(re.search(r"active=([\d.]+)s", line).group(1)) for line in windows)  # type: ignore[union-attr]
    assert round(total, 3) == round(active, 3)
    failures = [line for line in collector.stdout if "-> 503" in line]
    assert len(failures) == 2
    counts = summary(rest[-1])
    assert counts["events"] == len(windows) + 1
    assert counts["duplicates"] == 0
    assert counts["errors"] == 2
    assert EMAIL not in "\n".join(collector.stdout)


# ---------------------------------------------------------------------- in-process units


def test_parse_script_reads_every_step_kind() -> None:
    """parse_script turns the mini-language into steps, in order, with repeats."""
    assert parse_script(" 503 ,429:2,drop*2,delay:1.5,ok*3, 500") == [
        ScriptStep("fail", status=503),
        ScriptStep("fail", status=429, retry_after=2),
        ScriptStep("drop", times=2),
        ScriptStep("delay", seconds=1.5),
        ScriptStep("ok", times=3),
        ScriptStep("fail", status=500),
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "step 1: is empty"),
        ("503,,ok", "step 2: is empty"),
        ("ok:1", "'ok' takes no argument"),
        ("delay", "delay needs seconds"),
        ("delay:-1", "delay seconds must be between 0 and 3600"),
        ("delay:nan", "delay seconds must be between 0 and 3600"),
        ("429:soon", "Retry-After must be whole seconds"),
        ("302", "a status must be between 400 and 599"),
        ("503*0", "*N must be a whole number"),
        ("503*x", "*N must be a whole number"),
    ],
)
def test_parse_script_rejects_malformed_steps(spec: str, message: str) -> None:
    """A malformed step raises ValueError naming the step and the rule."""
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_script(spec)


def test_loopback_detection() -> None:
    """localhost, 127.0.0.0/8 and ::1 are loopback; wildcard and other addresses are not."""
    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "localhost", "LOCALHOST"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.10", "example.com", ""]))


def test_describe_event_tolerates_sparse_events() -> None:
    """Lines for events without run id or metrics still print, with '-' placeholders."""
    assert describe_event({"type": "TimeSpentEvent"}) == (
        "TimeSpentEvent run=- active=-s inactive=-s"
    )
    assert describe_event({"type": "ActivityEvent", "extensions": {"runId": "abc"}}) == (
        "ActivityEvent/Completed run=abc xp=-"
    )
    record = RequestRecord(
        method="POST",
        path="/caliper/event",
        status=200,
        event_count=1,
        event_ids=(),
        user_agent=None,
        request_id=None,
        connection=1,
        at=0.0,
    )
    assert record.reason is None  # the new field has a default: old constructions still work
    assert describe_request(record) is None


def test_cli_module_import_stays_light() -> None:
    """Importing the command's module loads no network stack, collector or sqlite3."""
    code = (
        "import sys, timeback_tracker._collector_cli; "
        "print(sorted({'requests', 'tenacity', 'http.server', 'sqlite3', "
        "'timeback_tracker.testing'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout == "[]\n"


def test_on_event_sees_each_event_with_its_outcome_before_the_answer() -> None:
    """on_event gets new, duplicate and conflict events in order, before the 200."""
    seen: list[tuple[str, EventOutcome]] = []
    with LocalCollector(on_event=lambda event, outcome: seen.append((event["id"], outcome))) as c:
        run = new_run()
        first, second = window(run, 0), window(run, 1)
        assert post(c.url, envelope(first, second)).status_code == 200
        assert seen == [(first["id"], "new"), (second["id"], "new")]
        assert post(c.url, envelope(first, window(run, 1, active=1.0))).status_code == 200
        assert seen[2:] == [(first["id"], "duplicate"), (second["id"], "conflict")]
        bad = window(run, 2)
        bad["actor"]["email"] = "nope"
        assert post(c.url, envelope(bad)).status_code == 400
        assert len(seen) == 4  # rejected envelopes never reach the hook


def test_on_event_failure_answers_500_and_the_resend_reaches_it_again() -> None:
    """A raising on_event makes the request 500; the re-send is a duplicate passed to it again."""
    calls: list[EventOutcome] = []

    def flaky(event: dict[str, Any], outcome: EventOutcome) -> None:
        calls.append(outcome)
        if len(calls) == 1:
            raise OSError("disk full")

    with LocalCollector(on_event=flaky) as c:
        body = envelope(window(new_run()))
        failed = post(c.url, body)
        assert failed.status_code == 500
        assert "on_event" in failed.json()["message"]
        assert post(c.url, body).status_code == 200
        assert calls == ["new", "duplicate"]
        assert len(c.events) == 1


def test_on_request_gets_every_record_with_its_reason() -> None:
    """on_request sees each request's record; reason explains errors; a raising hook is ignored."""
    records: list[RequestRecord] = []

    def observe(record: RequestRecord) -> None:
        records.append(record)
        raise RuntimeError("an observer bug must not break the answer")

    with LocalCollector(token="t0ken", on_request=observe) as c:
        c.fail_next(503)
        run = new_run()
        assert post(c.url, envelope(window(run)), token="t0ken").status_code == 503
        assert post(c.url, envelope(window(run))).status_code == 401
        assert post(c.url, envelope(window(run)), token="t0ken").status_code == 200
        c.drop_next()
        with pytest.raises(requests.ConnectionError):
            post(c.url, envelope(window(run)), token="t0ken")
    assert [(r.status, r.reason) for r in records] == [
        (503, "injected failure (HTTP 503)"),
        (401, "missing bearer token"),
        (200, None),
        (None, None),
    ]
    assert records == c.requests
