"""What the benchmark scripts share: test data, a closed port, percentiles, the machine.

Not a benchmark itself. The scripts import it as ``_bench`` (Python puts the
script's own directory first on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import gzip
import http.server
import json
import multiprocessing
import multiprocessing.connection
import os
import platform
import re
import shutil
import socket
import socketserver
import sqlite3
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import timeback_tracker as tt
from timeback_tracker._events import RunTemplate, new_segment
from timeback_tracker._outbox import Entry

SENSOR = "https://kiosk.example.com/sensors/lab-3"
USER = tt.TimebackUser(id="https://sis.example.com/users/student-123", email="kid@example.com")
ACTIVITY = tt.TimebackActivityContext(
    id="https://myapp.example.com/activities/Math/g3/lesson-1",
    subject=tt.Subject.MATH,
    app=tt.App(name="My App"),
)
# A day ago, to the second: recent enough for max_event_age (30 days), which
# sets older events aside as dead letters instead of sending them.
T0 = (datetime.now(timezone.utc) - timedelta(days=1)).replace(microsecond=0)


def config(endpoint: str, **overrides: Any) -> tt.TrackerConfig:
    """A tracker configuration for ``endpoint``, memory-only unless ``spool_path`` is given."""
    overrides.setdefault("spool_path", None)
    return tt.TrackerConfig(sensor=SENSOR, endpoint=endpoint, **overrides)


T0_MS = int(T0.timestamp()) * 1000
"""``T0`` in epoch milliseconds: windows are numbers now."""


def template(run: uuid.UUID | None = None) -> RunTemplate:
    """A run segment's template, as ``start_session()`` renders it once per segment.

    Args:
        run: The run id; a fresh one when None. Every call opens a new segment.
    """
    return RunTemplate(
        user=USER,
        activity=ACTIVITY,
        run_id=run or uuid.uuid4(),
        course_id=None,
        segment=new_segment(),
    )


def window(template: RunTemplate, seq: int) -> Entry:
    """Window ``seq`` of a run segment as an outbox entry: 15 s, 10 active, 5 inactive.

    Built by the library's own path (``Entry.window``: the template filled in
    with five integers), as the heartbeat thread builds them; ~930 B of JSON.
    """
    start = T0_MS + 15_000 * seq
    return Entry.window(template, seq, seq, start, start + 15_000, 10_000, 5_000)


def closed_port_url() -> str:
    """A loopback URL where nothing listens: connections are refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/caliper/event"


def loop_ns(action: Callable[[], object], calls: int, repeat: int = 5) -> float:
    """Nanoseconds per call of ``action``: the best of ``repeat`` loops of ``calls`` calls.

    The best, as ``timeit`` reports: slower loops were disturbed by something else.
    """
    perf = time.perf_counter_ns
    best = float("inf")
    for _ in range(repeat):
        started = perf()
        for _ in range(calls):
            action()
        best = min(best, (perf() - started) / calls)
    return best


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def median_p99(values: Sequence[float]) -> tuple[float, float]:
    """Median and 99th percentile of ``values``."""
    return statistics.median(values), percentile(values, 0.99)


def us(nanoseconds: float) -> str:
    """Nanoseconds as microseconds, for a table cell."""
    return f"{nanoseconds / 1000:.2f} µs"


def rss_kib() -> int:
    """Resident set size of this process now, KiB (Linux ``/proc``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def machine() -> str:
    """One line naming the CPU, the core count, the OS, Python and SQLite."""
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    )


def now_ms() -> int:
    """The wall clock now, epoch milliseconds (a fake clock starts here, so events are fresh)."""
    return time.time_ns() // 1_000_000


def proc_io(pid: int | str = "self") -> dict[str, int]:
    """``/proc/<pid>/io`` as numbers (Linux): ``wchar``, ``write_bytes``, ``syscw`` ...

    ``wchar`` counts the bytes the process handed to ``write()``-like calls;
    ``write_bytes`` the bytes it caused to be sent to the storage layer (a page
    cache page counts when it turns dirty, so rewriting a page that is still
    dirty costs nothing more); ``cancelled_write_bytes`` the dirty bytes it
    truncated or deleted before they were written back.
    """
    found = {}
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        key, _, value = line.partition(":")
        found[key] = int(value)
    return found


# -- counting system calls with strace -------------------------------------------------------

MARK = "/timeback-bench-mark/"
"""Paths under this (never existing) directory name the phases of a traced run."""


def mark(phase: str) -> None:
    """Start ``phase`` in a run traced by :func:`traced_calls` (a failed ``access()``)."""
    os.access(MARK + phase, os.F_OK)


def strace_available() -> bool:
    """Whether ``strace`` is installed and may trace a child here (ptrace may be forbidden)."""
    if shutil.which("strace") is None:
        return False
    done = subprocess.run(
        ["strace", "-f", "-qq", "-o", os.devnull, "-e", "trace=fsync", "true"],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


_TRACE_LINE = re.compile(r"^(\d+)\s+(\w+)\((.*)")
_TRACE_RESULT = re.compile(r"\)\s+=\s+(-?\d+)")
_TRACE_RESUMED = re.compile(r"^(\d+)\s+<\.\.\. \w+ resumed>")


def traced_calls(
    argv: Sequence[str], syscalls: Sequence[str] = ("fsync", "fdatasync")
) -> tuple[str, list[tuple[str, int, str, str, int]]]:
    """Run ``argv`` under ``strace -f -y`` and list its calls of ``syscalls``.

    Returns:
        The child's stdout, and ``(phase, thread id, syscall, file, result)``
        per call, where ``phase`` is the last :func:`mark` the child made
        before it ("" before any), ``file`` the path of the call's first
        descriptor ("" if none) and ``result`` what it returned (bytes, for a
        write; -1 when it failed or the trace does not say).

    Raises:
        RuntimeError: The traced command failed.
    """
    markers = ("access", "faccessat", "faccessat2")
    with tempfile.TemporaryDirectory(prefix="timeback-trace-") as scratch:
        trace = Path(scratch) / "trace"
        done = subprocess.run(
            [
                "strace",
                "-f",
                "-y",  # each descriptor with its path: which file was synced
                "-qq",
                "-o",
                str(trace),
                "-e",
                "trace=" + ",".join((*syscalls, *markers)),
                *argv,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode:
            raise RuntimeError(f"traced run failed ({done.returncode}): {done.stderr[-2000:]}")
        phase = ""
        calls: list[tuple[str, int, str, str, int]] = []
        unfinished: dict[int, int] = {}  # thread id -> index of its call waiting for a result
        for line in trace.read_text(errors="replace").splitlines():
            resumed = _TRACE_RESUMED.match(line)
            if resumed is not None:
                index = unfinished.pop(int(resumed[1]), None)
                result = _TRACE_RESULT.search(line)
                if index is not None and result is not None:
                    calls[index] = (*calls[index][:4], int(result[1]))
                continue
            found = _TRACE_LINE.match(line)
            if found is None:
                continue
            tid, name, rest = int(found[1]), found[2], found[3]
            if name in markers:
                if MARK in rest:
                    phase = rest.split(MARK, 1)[1].split('"', 1)[0]
            elif name in syscalls:
                path = rest.split("<", 1)[1].split(">", 1)[0] if "<" in rest else ""
                result = _TRACE_RESULT.search(rest)
                if rest.endswith("<unfinished ...>"):
                    unfinished[tid] = len(calls)
                calls.append((phase, tid, name, path, int(result[1]) if result else -1))
    return done.stdout, calls


# -- a LocalCollector in a child process ----------------------------------------------------


def _serve_collector(conn: multiprocessing.connection.Connection, down: bool) -> None:
    """Child process: run a LocalCollector, obey commands from ``conn`` until "stop"."""
    from timeback_tracker.testing import LocalCollector

    collector = LocalCollector().start()
    if down:
        collector.go_down()
    conn.send(collector.url)
    while True:
        command, argument = conn.recv()
        if command == "stop":
            collector.stop()
            conn.send(None)
            return
        if command == "down":
            collector.go_down()
            conn.send(None)
        elif command == "up":
            collector.come_back()
            conn.send(None)
        elif command == "delay":  # hold the next requests unanswered
            collector.delay_next(argument[0], times=argument[1])
            conn.send(None)
        elif command == "wait":  # wait for a number of distinct events
            conn.send(collector.wait_for(argument[0], timeout=argument[1]))
        elif command == "counts":
            conn.send(
                {
                    "events": len(collector.events),
                    "requests": len(collector.requests),
                    "duplicates": collector.duplicates,
                }
            )


class RemoteCollector:
    """A :class:`~timeback_tracker.testing.LocalCollector` running in a child process.

    Its request handling (JSON parsing, Caliper validation) then does not
    compete with the tracker's threads for this process's GIL, as a real
    endpoint would not.
    """

    def __init__(self, *, down: bool = False) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve_collector, args=(child, down), daemon=True)
        self._process.start()
        self.url: str = self._conn.recv()

    def _ask(self, command: str, *argument: Any) -> Any:
        self._conn.send((command, argument))
        return self._conn.recv()

    def go_down(self) -> None:
        """Stop listening: connections are refused."""
        self._ask("down")

    def come_back(self) -> None:
        """Listen again on the same port."""
        self._ask("up")

    def delay_next(self, seconds: float, times: int) -> None:
        """Hold the next ``times`` requests ``seconds`` before answering (a black hole)."""
        self._ask("delay", seconds, times)

    def wait_for(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` distinct events arrived; False on timeout."""
        return bool(self._ask("wait", count, timeout))

    def counts(self) -> dict[str, int]:
        """Distinct events, requests and duplicates received so far."""
        result: dict[str, int] = self._ask("counts")
        return result

    def stop(self) -> None:
        """Stop the collector and its process."""
        with contextlib.suppress(OSError, EOFError):
            self._ask("stop")
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()


@contextlib.contextmanager
def remote_collector(*, down: bool = False) -> Iterator[RemoteCollector]:
    """A :class:`RemoteCollector`, stopped on exit."""
    collector = RemoteCollector(down=down)
    try:
        yield collector
    finally:
        collector.stop()


# -- a fast sink in a child process ---------------------------------------------------------


class _SinkHandler(http.server.BaseHTTPRequestHandler):
    """Answers every POST 200 at once and counts the events in its body."""

    protocol_version = "HTTP/1.1"
    server: _SinkServer

    def setup(self) -> None:
        super().setup()
        # Nagle + delayed ACK would add 40 ms stalls to small responses.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        try:
            document = json.loads(body)
        except ValueError:
            document = {}
        events = 0
        if isinstance(document, dict):
            # Segment and PostHog send {"batch": [...]}, a Caliper envelope {"data": [...]}.
            for key in ("batch", "data"):
                if isinstance(document.get(key), list):
                    events = len(document[key])
                    break
        elif isinstance(document, list):
            events = len(document)
        self.server.count(self.path, events)
        answer = b'{"status":"ok"}'
        # Status line, headers and body in one write.
        self.wfile.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
        )

    def log_message(self, format: str, *args: Any) -> None:
        """Silence: one line per request would cost more than the answer."""


class _SinkServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SinkHandler)
        self._lock = threading.Lock()
        self.events = 0
        self.requests = 0
        self.paths: dict[str, int] = {}

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) that can stall.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def count(self, path: str, events: int) -> None:
        with self._lock:
            self.events += events
            self.requests += 1
            self.paths[path] = self.paths.get(path, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"events": self.events, "requests": self.requests, "paths": dict(self.paths)}

    def reset(self) -> None:
        with self._lock:
            self.events = self.requests = 0
            self.paths = {}


def _serve_sink(conn: multiprocessing.connection.Connection) -> None:
    """Child process: run the sink, answer "counts"/"reset"/"stop" from ``conn``."""
    server = _SinkServer()
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    conn.send(f"http://127.0.0.1:{server.server_address[1]}")
    while True:
        command = conn.recv()
        if command == "stop":
            server.shutdown()
            server.server_close()
            conn.send(None)
            return
        if command == "reset":
            server.reset()
            conn.send(None)
        else:
            conn.send(server.snapshot())


class Sink:
    """A tiny HTTP server in a child process: 200 to any POST at once, events counted.

    It understands Segment's and PostHog's ``{"batch": [...]}`` bodies and
    Caliper envelopes (``{"data": [...]}``), gzipped or not. Its cost is
    the same for every client, and small: it parses the JSON and counts.

    Attributes:
        base_url: ``http://127.0.0.1:<port>``, without a path.
    """

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve_sink, args=(child,), daemon=True)
        self._process.start()
        self.base_url: str = self._conn.recv()

    def counts(self) -> dict[str, Any]:
        """``{"events": n, "requests": n, "paths": {path: requests}}`` so far."""
        self._conn.send("counts")
        result: dict[str, Any] = self._conn.recv()
        return result

    def reset(self) -> None:
        """Start counting from zero."""
        self._conn.send("reset")
        self._conn.recv()

    def stop(self) -> None:
        """Stop the server and its process."""
        with contextlib.suppress(OSError, EOFError):
            self._conn.send("stop")
            self._conn.recv()
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()


@contextlib.contextmanager
def sink() -> Iterator[Sink]:
    """A running :class:`Sink`, stopped on exit."""
    server = Sink()
    try:
        yield server
    finally:
        server.stop()
