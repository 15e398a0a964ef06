"""OS presence: what one poll costs, and what polling once a second costs a tracker.

Run: ``.venv/bin/python benchmarks/presence.py`` (``--seconds N`` for part 3,
default 60; ``--polls N`` for parts 1 and 2, default 2000). Linux only: it
starts its own Xvfb (the X11 idle source) and its own dbus-daemon, on which
the library's test double answers as logind (the lock source), and needs
``Xvfb`` and ``dbus-daemon`` installed (``.ci/run`` installs them).

1. One read of each source, median and p99 of ``--polls`` reads: X11
   ``XScreenSaverQueryInfo`` (a round trip to the X server), logind's
   ``LockedHint`` and ``Active`` over the library's D-Bus client (two method
   calls on a kept connection), and the same two properties read by a
   ``busctl`` subprocess, as an implementation without a D-Bus client would.
2. One whole poll as the heartbeat thread makes it (both sources read, the
   result applied to 1 and to 10 open sessions), CPU time per poll.
3. Trackers side by side for ``--seconds``, each with one running session at
   the default 15 s interval: ``presence="app"`` and ``presence="os"``; the
   heartbeat thread's own CPU clock and wake-ups, as in ``idle_cpu.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import _bench

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.dbus_fakes

import timeback_tracker as tt
from tests.dbus_fakes import Logind, private_bus
from timeback_tracker._presence_linux import LogindLock, XScreenSaverIdle


@contextlib.contextmanager
def xvfb() -> Iterator[str]:
    """A private Xvfb; yields its display name."""
    read_end, write_end = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_end), "-nolisten", "tcp"],
        pass_fds=(write_end,),
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    try:
        data = b""
        while not data.endswith(b"\n"):  # Xvfb dies if it cannot write the newline
            chunk = os.read(read_end, 16)
            if not chunk:
                sys.exit("Xvfb did not start")
            data += chunk
        os.close(read_end)
        yield f":{data.decode().strip()}"
    finally:
        server.terminate()
        server.wait(5)


@contextlib.contextmanager
def fake_logind(bus: str) -> Iterator[None]:
    """The test double of logind, in a child process: its CPU is not this process's."""
    root = Path(__file__).resolve().parent.parent
    code = (
        "import sys; from tests.dbus_fakes import Logind; Logind(sys.argv[1]); "
        "print('ready', flush=True); sys.stdin.read()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, bus],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        yield
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(5)


def timed(call: Callable[[], object], count: int) -> tuple[float, float, float]:
    """Median and p99 wall time of ``call`` in µs, and CPU µs per call (this process)."""
    samples = []
    cpu_before = time.process_time()
    for _ in range(count):
        started = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - started) / 1000)
    cpu = (time.process_time() - cpu_before) / count * 1e6
    return _bench.percentile(samples, 0.5), _bench.percentile(samples, 0.99), cpu


def busctl_cpu(address: str, count: int) -> tuple[float, float, float]:
    """The same two properties read by a busctl subprocess: wall µs and CPU µs incl. the child."""
    argv = [
        "busctl",
        f"--address={address}",
        "get-property",
        "org.freedesktop.login1",
        Logind.PATH,
        "org.freedesktop.login1.Session",
        "LockedHint",
        "Active",
    ]
    before = os.times()
    samples = []
    for _ in range(count):
        started = time.perf_counter_ns()
        subprocess.run(argv, check=True, capture_output=True)
        samples.append((time.perf_counter_ns() - started) / 1000)
    after = os.times()
    cpu = sum(
        getattr(after, f) - getattr(before, f)
        for f in ("user", "system", "children_user", "children_system")
    )
    return _bench.percentile(samples, 0.5), _bench.percentile(samples, 0.99), cpu / count * 1e6


def heartbeat_cpu(tracker: tt.Tracker) -> tuple[int, int]:
    """CPU ns and voluntary context switches of the tracker's heartbeat thread so far."""
    thread = tracker._heartbeat._thread
    assert thread is not None
    assert thread.ident is not None
    cpu = time.clock_gettime_ns(time.pthread_getcpuclockid(thread.ident))
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    switches = next(
        int(line.split()[1]) for line in status.splitlines() if line.startswith("voluntary_ctxt")
    )
    return cpu, switches


def main() -> None:
    """Measure and print the three parts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="part 3 length (60)")
    parser.add_argument("--polls", type=int, default=2000, help="reads per source (2000)")
    args = parser.parse_args()
    missing = [tool for tool in ("Xvfb", "dbus-daemon", "busctl") if shutil.which(tool) is None]
    if sys.platform != "linux" or missing:
        sys.exit(f"needs Linux with {', '.join(missing) or 'Xvfb, dbus-daemon and busctl'}")
    print(_bench.machine())

    with (
        tempfile.TemporaryDirectory() as scratch,
        xvfb() as display,
        private_bus(Path(scratch)) as bus,
        fake_logind(bus),
    ):
        os.environ.update(
            DISPLAY=display, DBUS_SYSTEM_BUS_ADDRESS=bus, DBUS_SESSION_BUS_ADDRESS=bus
        )
        os.environ.pop("WAYLAND_DISPLAY", None)
        x11, lock = XScreenSaverIdle(display), LogindLock(bus)

        print(f"\n1. one read of each source ({args.polls} reads; µs)\n")
        print(f"{'source':<44} {'median':>8} {'p99':>8} {'CPU/read':>9}")
        rows = [
            ("X11 XScreenSaverQueryInfo (libXss)", timed(x11.read, args.polls)),
            ("logind LockedHint + Active, our D-Bus client", timed(lock.read, args.polls)),
            ("logind LockedHint + Active, busctl subprocess", busctl_cpu(bus, args.polls // 10)),
        ]
        for name, (median, p99, cpu) in rows:
            print(f"{name:<44} {median:>8.0f} {p99:>8.0f} {cpu:>9.0f}")
        x11.close()
        lock.close()

        print("\n2. one whole poll (both sources, applied to the sessions; µs of CPU)\n")
        with _bench.remote_collector() as collector:
            for sessions in (1, 10):
                config = _bench.config(collector.url, presence="os", heartbeat_interval=3600)
                with tt.Tracker(config) as tracker:
                    for _ in range(sessions):
                        tracker.start_session(_bench.USER, _bench.ACTIVITY)
                    tracker._heartbeat.stop()  # polled by hand below
                    assert tracker.presence is not None
                    median, p99, cpu = timed(tracker._poll_presence, args.polls)
                    print(
                        f"{sessions:>2} session(s): median {median:.0f} µs, p99 {p99:.0f} µs, "
                        f"CPU {cpu:.0f} µs per poll = {cpu / 1e6:.3%} of a core at 1 poll/s"
                    )

            print(f"\n3. {args.seconds:.0f} s of one running session, 15 s interval, no spool\n")
            trackers = {
                mode: tt.Tracker(_bench.config(collector.url, presence=mode))
                for mode in ("app", "os")
            }
            for tracker in trackers.values():
                tracker.start_session(_bench.USER, _bench.ACTIVITY)
            time.sleep(1.5)  # past the first poll and the source detection
            before = {mode: heartbeat_cpu(tracker) for mode, tracker in trackers.items()}
            started = time.monotonic()
            time.sleep(args.seconds)
            elapsed = time.monotonic() - started
            after = {mode: heartbeat_cpu(tracker) for mode, tracker in trackers.items()}
            print(f"{'presence':>8} {'heartbeat CPU':>14} {'wake-ups':>9} {'% of a core':>12}")
            for mode in trackers:
                cpu = after[mode][0] - before[mode][0]
                wakes = after[mode][1] - before[mode][1]
                print(f"{mode:>8} {cpu / 1e6:>11.1f} ms {wakes:>9} {cpu / 1e9 / elapsed:>12.4%}")
            for tracker in trackers.values():
                tracker.close()
    print(f"\nthreads left: {[t.name for t in threading.enumerate()]}")


if __name__ == "__main__":
    main()
