"""``timeback-tracker demo``, run as a real subprocess: on a pipe, on a terminal, to an endpoint."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.support import closed_port
from timeback_tracker._demo import LOG_HEADER, STATUS_HEADER
from timeback_tracker.testing import LocalCollector

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses a POSIX pseudo-terminal")

DEMO = [sys.executable, "-m", "timeback_tracker", "demo"]
SHORT = ["--duration", "5", "--interval", "0.25"]
COLUMNS = 80
CHECKS = (
    "every event delivered",
    "active matches the session",
    "inactive matches the session",
    "windows contiguous",
    "one completion, last",
    "no id with two contents",
)
EXIT_TIMEOUT = 2.0  # TrackerConfig's default, which the demo keeps
STARTUP_SLACK = 3.0  # seconds for the interpreter and the imports, on a busy machine


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the demo with its output on a pipe."""
    return subprocess.run([*DEMO, *args], capture_output=True, text=True, timeout=120, check=False)


def spooled_files(home: Path) -> list[Path]:
    """Every file under the per-user data directory the tests point trackers at."""
    return [path for path in home.rglob("*") if path.is_file()]


# ---------------------------------------------------------------------- a terminal


def render(output: bytes, columns: int = COLUMNS) -> list[str]:
    """The screen a terminal shows after ``output``: text, CR/LF, cursor-up and clear codes.

    Lines longer than the terminal would wrap: this screen keeps them whole, so a test can
    measure them.
    """
    screen: list[str] = [""]
    row, column = 0, 0
    for token in re.findall(rb"\x1b\[(\d*)([A-Za-z])|(\r)|(\n)|([^\x1b\r\n]+)", output):
        count, code, carriage, newline, text = token
        if code:
            amount = int(count or 1)
            if code in (b"F", b"A"):  # up N lines (F: and to the first column)
                row = max(0, row - amount)
                column = 0 if code == b"F" else column
            elif code == b"J":  # clear from the cursor to the end of the screen
                screen[row] = screen[row][:column]
                del screen[row + 1 :]
            elif code == b"K":
                screen[row] = screen[row][:column]
        elif carriage:
            column = 0
        elif newline:
            row, column = row + 1, 0
            if row == len(screen):
                screen.append("")
        else:
            chunk = text.decode()
            line = screen[row].ljust(column)
            screen[row] = line[:column] + chunk + line[column + len(chunk) :]
            column += len(chunk)
    return screen


def run_on_terminal(*args: str) -> tuple[int, bytes]:
    """Run the demo on a pseudo-terminal of COLUMNS columns; its exit code and raw output."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 50, COLUMNS, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color"}
    process = subprocess.Popen([*DEMO, *args], stdout=child, stderr=child, stdin=child, env=env)
    os.close(child)
    output = b""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(main, 65536)
                except OSError:  # EIO: the child side is closed
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
        code = process.wait(30)
    finally:
        os.close(main)
        if process.poll() is None:
            process.kill()
    return code, output.replace(b"\r\n", b"\n")


# ---------------------------------------------------------------------- tests


@pytest.mark.slow(6)
def test_demo_against_the_built_in_collector_prints_its_checks_in_80_columns() -> None:
    """On a pipe: a header, one plain line per happening, the report and six passed checks."""
    result = run_demo(*SHORT)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert max(map(len, lines)) < COLUMNS, [line for line in lines if len(line) >= COLUMNS]
    assert LOG_HEADER in lines
    assert "\x1b" not in result.stdout  # no cursor movement on a pipe
    assert re.search(r"^  page    http://127\.0\.0\.1:\d+/  ", result.stdout, re.MULTILINE)
    assert re.search(r"^ +\d+\.\ds TimeSpentEvent +window 1: active", result.stdout, re.M)
    assert re.search(r"^ +\d+\.\ds ActivityEvent/Completed +XP ", result.stdout, re.M)
    assert "network drops" in result.stdout
    assert [line.strip() for line in lines if line.strip().startswith("[")] == [
        f"[ok] {check}" for check in CHECKS
    ]
    assert result.stderr == ""


@pytest.mark.slow(6)
def test_demo_on_a_terminal_redraws_one_status_area_above_a_short_log() -> None:
    """On a terminal: headers and one status row redrawn in place, the log below, <= 80 wide."""
    code, output = run_on_terminal(*SHORT)
    screen = render(output)
    text = "\n".join(screen)
    assert code == 0, text
    assert b"F\x1b[J" in output  # redrawn in place (up, clear), not appended
    assert max(map(len, screen)) < COLUMNS, [line for line in screen if len(line) >= COLUMNS]
    assert screen.count(STATUS_HEADER) == 1
    assert screen.count(LOG_HEADER) == 1
    status_at, log_at = screen.index(STATUS_HEADER), screen.index(LOG_HEADER)
    assert status_at < log_at
    assert re.fullmatch(r" +\d+\.\ds completed +completed .*", screen[status_at + 1])
    log = screen[log_at + 1 : screen.index("What the collector received")]
    assert 1 <= len([line for line in log if line.strip()]) <= 8  # the last few happenings
    assert "ActivityEvent/Completed" in "\n".join(log)
    for check in CHECKS:
        assert f"  [ok] {check}" in screen


@pytest.mark.slow(8)
def test_a_dead_endpoint_ends_the_demo_in_time_and_names_the_cause(
    private_data_home: Path,
) -> None:
    """Nothing listening: done within duration + exit_timeout, exit 1, the cause printed."""
    started = time.monotonic()
    result = run_demo(
        *SHORT,
        "--endpoint",
        f"http://127.0.0.1:{closed_port()}/caliper/event",
        "--sensor",
        "https://kiosk.example.com/sensors/dead-end",
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stdout + result.stderr
    assert elapsed < 5 + EXIT_TIMEOUT + STARTUP_SLACK, elapsed
    assert "NOT delivered:" in result.stdout
    assert re.search(r"  cause: connection refused by 127\.0\.0\.1:\d+", result.stdout)
    assert "  hint:  is the endpoint reachable?" in result.stdout
    assert "delivery failed" in result.stdout
    assert "kept in the spool" not in result.stdout + result.stderr  # the demo keeps nothing
    assert spooled_files(private_data_home) == []


@pytest.mark.slow(6)
def test_endpoint_mode_sends_as_the_given_sensor() -> None:
    """--endpoint and --sensor: every envelope carries that sensor; all events delivered."""
    sensor = "https://kiosk.example.com/sensors/demo-check"
    with LocalCollector() as collector:
        result = run_demo(*SHORT, "--endpoint", collector.url, "--sensor", sensor)
        assert result.returncode == 0, result.stdout + result.stderr
        assert {envelope["sensor"] for envelope in collector.envelopes} == {sensor}
        assert len(collector.completions()) == 1
    assert f"delivered: all {len(collector.events)} events" in result.stdout
    assert f"  sensor  {sensor}" in result.stdout
    assert re.search(r"\ds delivered +\d+ event\(s\), \d+ in all", result.stdout)  # a count


def test_unusable_endpoint_exits_2_naming_the_rule() -> None:
    """Plain http to another host is refused before anything runs."""
    result = run_demo(*SHORT, "--endpoint", "http://caliper.example.com/caliper/event")
    assert result.returncode == 2
    assert "plain http:// is allowed for loopback hosts only" in result.stderr
