"""OS presence: OS input counts as touch() when it happened, a locked screen pauses.

Accounting is checked on a fake clock with fake sources, the poll driven by
hand. The real sources are checked for real where this machine has them: X11
idle time under Xvfb with synthetic input from ``xdotool``, logind and GNOME's
idle monitor over a private ``dbus-daemon``. The Windows and macOS sources run
their logic here with the OS calls faked, and their real calls in CI on those
systems (``.github/workflows/ci.yml``).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import timeback_tracker as tt
from tests.dbus_fakes import Logind, MutterIdleMonitor, dbus_available, private_bus
from tests.support import (
    ACTIVITY,
    SENSOR,
    USER,
    MakeTracker,
    assert_conserved,
    assert_contiguous,
    eventually,
    item,
    tracker_factory,
    windows,
)
from timeback_tracker import _presence
from timeback_tracker._clock import SystemClock
from timeback_tracker._heartbeat import Heartbeat
from timeback_tracker._outbox import MemoryOutbox
from timeback_tracker._presence_native import MacIdle, MacLock, WindowsIdle, WindowsLock
from timeback_tracker.session import apply_presence, paused_by_app
from timeback_tracker.testing import FakeClock, LocalCollector


class FakeSource:
    """A presence source whose value (or error) the test sets."""

    def __init__(self, name: str, value: Any) -> None:
        self.name = name
        self.value = value
        self.error: BaseException | None = None
        self.reads = 0
        self.closed = False

    def read(self) -> Any:
        """The value, or the error."""
        self.reads += 1
        if self.error is not None:
            raise self.error
        return self.value

    def close(self) -> None:
        """Remember being closed."""
        self.closed = True


@pytest.fixture
def idle() -> FakeSource:
    """Milliseconds since the last input, as the OS would report them."""
    return FakeSource("fake idle", 0)


@pytest.fixture
def lock() -> FakeSource:
    """The screen lock, as the OS would report it."""
    return FakeSource("fake lock", False)


@pytest.fixture
def fake_os(monkeypatch: pytest.MonkeyPatch, idle: FakeSource, lock: FakeSource) -> None:
    """Presence finds the fake sources instead of this machine's."""
    monkeypatch.setattr(_presence, "candidates", lambda: ([lambda: idle], [lambda: lock]))


@pytest.fixture
def make_tracker(collector: LocalCollector) -> Iterator[MakeTracker]:
    """Trackers with presence="os" pointed at the collector, closed after the test."""
    with tracker_factory(
        close_timeout=2.0,
        endpoint=collector.url,
        heartbeat_interval=3600,
        presence="os",
        spool_path=None,
    ) as make:
        yield make


def start_by_hand(tracker: tt.Tracker) -> tt.Session:
    """Start a session with the heartbeat thread stopped: the test polls and ticks itself."""
    session = tracker.start_session(USER, ACTIVITY)
    tracker._heartbeat.stop()
    return session


def poll(tracker: tt.Tracker) -> None:
    """One presence poll, as the heartbeat thread makes it."""
    assert tracker._poll_presence()


def values(collector: LocalCollector, run_id: str) -> list[tuple[float, float]]:
    """(active, inactive) of each window of the run, checked for conservation and order."""
    events = windows(collector, run_id)
    assert_conserved(events)
    assert_contiguous(events)
    return [(item(e, "active")["value"], item(e, "inactive")["value"]) for e in events]


# -- accounting through the tracker --------------------------------------------------------


@pytest.mark.usefixtures("fake_os")
def test_os_input_ends_idle_time_when_it_happened(
    make_tracker: Callable[..., tt.Tracker],
    collector: LocalCollector,
    clock: FakeClock,
    idle: FakeSource,
) -> None:
    """Input the OS saw 0.3 s before the poll makes the run active from that instant."""
    tracker = make_tracker(clock, idle_timeout=2)
    session = start_by_hand(tracker)
    clock.advance(4)
    idle.value = 4_000
    poll(tracker)
    assert session.state == "idle"
    clock.advance(1)
    idle.value = 300  # input at 4.7 s, without any touch() from the app
    poll(tracker)
    assert session.state == "running"
    clock.advance(1)
    session.end()
    assert tracker.flush(5)
    assert values(collector, session.run_id) == [(3.3, 2.7)]


@pytest.mark.usefixtures("fake_os")
def test_a_kiosk_that_never_calls_touch_counts_walked_away_time_inactive(
    make_tracker: Callable[..., tt.Tracker],
    collector: LocalCollector,
    clock: FakeClock,
    idle: FakeSource,
) -> None:
    """10 s of input to a web view the app never sees, then 60 s away: 40 s active, 30 s idle."""
    tracker = make_tracker(clock, idle_timeout=30)
    session = start_by_hand(tracker)
    for second in range(1, 71):
        clock.advance(1)
        idle.value = 200 if second <= 10 else (second - 10) * 1000 + 200  # last input 9.8 s
        poll(tracker)
    assert session.state == "idle"
    session.end()
    assert tracker.flush(5)
    assert values(collector, session.run_id) == [(39.8, 30.2)]


@pytest.mark.usefixtures("fake_os")
def test_a_locked_screen_pauses_until_it_unlocks(
    make_tracker: Callable[..., tt.Tracker],
    collector: LocalCollector,
    clock: FakeClock,
    lock: FakeSource,
) -> None:
    """Locked: paused, and an app resume() does not end it; the unlock does."""
    tracker = make_tracker(clock)
    session = start_by_hand(tracker)
    clock.advance(2)
    lock.value = True
    poll(tracker)
    assert session.state == "paused"
    clock.advance(3)
    session.resume()  # the app's own focus handling, say: the screen is still locked
    assert session.state == "paused"
    clock.advance(1)
    lock.value = False
    poll(tracker)
    assert session.state == "running"
    clock.advance(4)
    session.complete(0)
    assert session.state == "completed"
    assert tracker.flush(5)
    assert values(collector, session.run_id) == [(6.0, 4.0)]


@pytest.mark.usefixtures("fake_os")
def test_an_unlock_leaves_the_apps_own_pause(
    make_tracker: Callable[..., tt.Tracker], clock: FakeClock, lock: FakeSource
) -> None:
    """The app paused, then the screen locked and unlocked: still paused, for the app to resume."""
    tracker = make_tracker(clock)
    session = start_by_hand(tracker)
    session.pause()
    lock.value = True
    poll(tracker)
    clock.advance(1)
    lock.value = False
    poll(tracker)
    assert session.state == "paused"
    assert paused_by_app(session)
    session.resume()
    assert session.state == "running"


# -- what is available, failures, and the cost of asking -----------------------------------


def test_missing_sources_are_reported_once_and_nothing_is_guessed(
    make_tracker: Callable[..., tt.Tracker],
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No source works: one warning, tracker.presence says why, the app's touch() still rules."""

    def no_idle() -> Any:
        raise _presence.Unavailable("no idle here")

    def broken_lock() -> Any:
        raise OSError("no lock here")

    monkeypatch.setattr(_presence, "candidates", lambda: ([no_idle], [broken_lock]))
    caplog.set_level(logging.INFO, logger="timeback_tracker")
    tracker = make_tracker(clock, idle_timeout=2)
    session = start_by_hand(tracker)
    for _ in range(3):
        clock.advance(1)
        poll(tracker)
    assert session.state == "idle"  # no OS input was invented
    session.touch()
    assert session.state == "running"
    status = tracker.presence
    assert status == tt.PresenceStatus(
        idle_source=None,
        lock_source=None,
        problems=("no_idle: no idle here", "broken_lock: no lock here"),
    )
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    expected = (
        "presence='os' is partly unavailable here: the app's touch() is the only input that "
        "counts and a locked screen does not pause (no_idle: no idle here; broken_lock: "
    )
    assert warnings[0].getMessage().startswith(expected)


@pytest.mark.usefixtures("fake_os")
def test_a_failing_source_is_logged_once_and_its_lock_released(
    make_tracker: Callable[..., tt.Tracker],
    clock: FakeClock,
    lock: FakeSource,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A lock source that stops answering unpauses (never stuck locked), says so once, recovers."""
    caplog.set_level(logging.INFO, logger="timeback_tracker")
    tracker = make_tracker(clock)
    session = start_by_hand(tracker)
    lock.value = True
    poll(tracker)
    assert session.state == "paused"
    lock.error = OSError("bus gone")
    for _ in range(3):
        clock.advance(1)
        poll(tracker)
    assert session.state == "running"
    lock.error = None
    poll(tracker)
    assert session.state == "paused"
    messages = [r.getMessage() for r in caplog.records]
    assert sum("stopped answering (bus gone)" in m for m in messages) == 1
    assert sum("fake lock answers again" in m for m in messages) == 1
    assert tracker.stats().internal_errors == 0


@pytest.mark.usefixtures("fake_os")
def test_closing_the_tracker_closes_the_sources(
    make_tracker: Callable[..., tt.Tracker], idle: FakeSource, lock: FakeSource
) -> None:
    """close() releases the sources' connections; tracker.presence names what was used."""
    tracker = make_tracker()
    assert tracker.presence == tt.PresenceStatus("fake idle", "fake lock", ())
    tracker.close()
    assert idle.closed
    assert lock.closed


def test_a_source_that_hangs_does_not_hang_close(
    make_tracker: Callable[..., tt.Tracker], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read that never returns (a hung X server) blocks the poll, not the tracker's close()."""
    release = threading.Event()
    hung = FakeSource("hung idle", 0)
    reads = 0

    def read() -> int:
        nonlocal reads
        reads += 1
        if reads > 1:  # the first read is detection; the poll after it hangs
            release.wait(30)
        return 0

    hung.read = read  # type: ignore[method-assign]
    monkeypatch.setattr(_presence, "candidates", lambda: ([lambda: hung], []))
    tracker = make_tracker(exit_timeout=0.2)
    tracker.start_session(USER, ACTIVITY)
    assert eventually(lambda: reads >= 2, timeout=5)
    closer = threading.Thread(target=tracker.close)
    started = time.monotonic()
    closer.start()
    closer.join(10)
    took = time.monotonic() - started
    release.set()
    assert not closer.is_alive()
    assert took < 0.2 + 1.0 + 0.5  # exit_timeout + the heartbeat's timed join + slack
    assert not hung.closed  # left open: the stuck poll still holds it


def test_presence_app_never_asks_the_os(
    make_tracker: Callable[..., tt.Tracker], monkeypatch: pytest.MonkeyPatch
) -> None:
    """presence="app" (the default): no poll on the heartbeat, no source looked for."""

    def forbidden() -> Any:
        raise AssertionError("the OS was asked")

    monkeypatch.setattr(_presence, "candidates", forbidden)
    tracker = make_tracker(presence="app")
    tracker.start_session(USER, ACTIVITY)
    assert tracker.presence is None
    assert tracker._presence is None  # nothing to poll: the heartbeat only ticks
    assert tt.TrackerConfig(sensor=SENSOR, endpoint="https://x.example.com/e").presence == "app"


@pytest.mark.parametrize("value", ["OS", "auto", None, 1])
def test_presence_values_are_validated(value: Any) -> None:
    """Anything but "app" or "os" is refused, naming the field and the rule."""
    with pytest.raises(
        tt.ConfigurationError, match=r'TrackerConfig\.presence: must be "app" or "os"'
    ):
        tt.TrackerConfig(sensor=SENSOR, endpoint="https://x.example.com/e", presence=value)


@pytest.mark.usefixtures("fake_os")
def test_a_session_that_fails_does_not_stop_the_others(
    make_tracker: Callable[..., tt.Tracker],
    clock: FakeClock,
    lock: FakeSource,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One session raising in the poll is counted as an internal error; the next is updated."""
    tracker = make_tracker(clock)
    broken = start_by_hand(tracker)
    healthy = tracker.start_session(USER, ACTIVITY)
    apply = _presence.apply_presence

    def explode(session: tt.Session, *seen: Any) -> None:
        if session is broken:
            raise RuntimeError("boom")
        apply(session, *seen)

    monkeypatch.setattr(_presence, "apply_presence", explode)
    lock.value = True
    poll(tracker)
    assert healthy.state == "paused"
    assert tracker.stats().internal_errors == 1


@pytest.mark.slow(5)
@pytest.mark.usefixtures("fake_os")
def test_the_heartbeat_polls_once_a_second_while_sessions_are_open(
    make_tracker: Callable[..., tt.Tracker], idle: FakeSource
) -> None:
    """Polls run on the heartbeat thread, about once a second, and stop with the last session."""
    tracker = make_tracker(heartbeat_interval=3600)
    session = tracker.start_session(USER, ACTIVITY)
    started = time.monotonic()
    time.sleep(2.5)  # polls are counted over 2.5 s of real time
    assert 2 <= idle.reads - 1 <= 4  # one read at detection, then one a second
    threads = {t.name for t in threading.enumerate()}
    assert "timeback-tracker-heartbeat" in threads
    session.end()
    time.sleep(1.2)  # a poll under way when the session ended may still finish
    stopped_at = idle.reads
    time.sleep(1.5)  # long enough for a once-a-second poll to show
    assert idle.reads == stopped_at  # no session: no polling
    reads_per_second = (stopped_at - 1) / (time.monotonic() - started - 1.5)
    assert reads_per_second <= 1.1
    tracker.start_session(USER, ACTIVITY)
    # a new session starts the polling again
    assert eventually(lambda: idle.reads > stopped_at, timeout=3)


def test_after_a_stall_the_tick_comes_before_the_poll() -> None:
    """On time, a poll precedes the tick it meets; woken late, the tick (sleep cut) goes first."""
    calls: list[str] = []
    stall = threading.Event()

    def tick(_scheduled: int) -> None:
        calls.append("tick")

    def poll_once() -> None:
        if stall.is_set():
            stall.clear()
            calls.append("stalled poll")
            time.sleep(0.6)  # the thread wakes up late next time, as after a suspend
        else:
            calls.append("poll")

    heartbeat = Heartbeat(
        400,
        SystemClock(),
        tick,
        lambda exc: calls.append(repr(exc)),
        every_second=poll_once,
        second_ms=100,
    )
    heartbeat.start()
    try:
        assert eventually(lambda: "tick" in calls)
        index = calls.index("tick")
        assert calls[index - 3 : index] == ["poll"] * 3  # polls between ticks, one just before
        stall.set()
        assert eventually(lambda: "stalled poll" in calls[index:] and calls[-1] == "poll")
        after = calls[calls.index("stalled poll") + 1 :]
        assert after[:2] == ["tick", "poll"], calls  # woken late: the tick comes first
    finally:
        heartbeat.stop()


# -- the real sources on this machine: X11 under Xvfb, D-Bus on a private bus ---------------


def xdotool(*args: str) -> None:
    """Synthetic input through XTEST, as a real device would give it."""
    subprocess.run(["xdotool", *args], check=True, timeout=10)


@pytest.fixture
def x11(display: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """An Xvfb display, xdotool, libXss, and an environment without Wayland or a session bus."""
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool not installed")
    try:
        _presence_linux().XScreenSaverIdle(display).close()
    except _presence.Unavailable as exc:
        pytest.skip(str(exc))
    for name in ("WAYLAND_DISPLAY", "XDG_SESSION_TYPE", "DBUS_SESSION_BUS_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    return display


def _presence_linux() -> Any:
    from timeback_tracker import _presence_linux

    return _presence_linux


def test_x11_idle_time_follows_synthetic_input(
    x11: str, make_tracker: Callable[..., tt.Tracker]
) -> None:
    """Under Xvfb, xdotool input ends an idle span at the instant of the input, not of the poll."""
    tracker = make_tracker(idle_timeout=1.5)
    assert tracker.presence is not None
    assert tracker.presence.idle_source == "X11 MIT-SCREEN-SAVER (libXss)"
    polls: list[float] = []
    real_poll = tracker._presence.poll  # type: ignore[union-attr]

    def spy(*args: Any) -> None:
        real_poll(*args)
        polls.append(time.monotonic())

    tracker._presence.poll = spy  # type: ignore[union-attr, method-assign]
    xdotool("mousemove", "5", "5")
    session = tracker.start_session(USER, ACTIVITY)
    assert eventually(lambda: session.state == "idle")
    # Input 0.1 s after a poll: counted from the next poll it would be ~0.9 s late.
    seen = len(polls)
    assert eventually(lambda: len(polls) > seen)
    time.sleep(0.1)  # the input comes 0.1 s after a poll
    inactive_before = session.inactive_seconds
    input_at = time.monotonic()
    xdotool("mousemove", "200", "150")
    assert eventually(lambda: session.state == "running", timeout=3)
    lag = time.monotonic() - input_at
    idle_counted = session.inactive_seconds - inactive_before
    assert lag > 0.5  # the poll came late ...
    assert idle_counted < 0.25  # ... and the idle span still ended at the input


def test_x11_connection_loss_does_not_end_the_process(tmp_path: Path) -> None:
    """The X server going away makes reads fail (OSError); Xlib never gets to exit the process."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("Xvfb not installed")
    try:
        _presence_linux()._x11_libraries()
    except _presence.Unavailable as exc:
        pytest.skip(str(exc))
    script = textwrap.dedent(
        """
        import os, subprocess, sys, time
        from timeback_tracker._presence_linux import XScreenSaverIdle
        read_end, write_end = os.pipe()
        server = subprocess.Popen([sys.argv[1], "-displayfd", str(write_end), "-nolisten", "tcp"],
                                  pass_fds=(write_end,), stderr=subprocess.DEVNULL)
        os.close(write_end)
        number = os.read(read_end, 16).decode().strip()
        source = XScreenSaverIdle(":" + number)
        assert source.read() >= 0
        server.kill(); server.wait(); time.sleep(0.2)  # a margin before reading the dead link
        for _ in range(3):
            try:
                source.read()
            except OSError as exc:
                print("OSError:", exc)
        source.close()
        print("alive")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, xvfb],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "alive"
    assert "went away" in done.stdout
    assert "XIO" not in done.stderr


@pytest.fixture
def bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private dbus-daemon as both the session and the system bus, in a Wayland session."""
    reason = dbus_available()
    if reason is not None:
        pytest.skip(reason)
    with private_bus(tmp_path) as address:
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
        monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-test")
        yield address


def test_gnome_idle_and_logind_lock_over_a_real_bus(
    bus: str,
    make_tracker: Callable[..., tt.Tracker],
    collector: LocalCollector,
    clock: FakeClock,
) -> None:
    """On Wayland: idle from GNOME's monitor, the lock from logind, both over D-Bus."""
    monitor, logind = MutterIdleMonitor(bus), Logind(bus)
    try:
        tracker = make_tracker(clock, idle_timeout=2)
        assert tracker.presence == tt.PresenceStatus(
            "GNOME Mutter IdleMonitor (D-Bus)", "logind LockedHint (D-Bus)", ()
        )
        session = start_by_hand(tracker)
        clock.advance(4)
        monitor.idle_ms = 1_000  # input at 3 s
        poll(tracker)
        logind.locked = True
        clock.advance(1)
        poll(tracker)  # locked at 5 s
        assert session.state == "paused"
        clock.advance(2)
        logind.locked, logind.active = False, False  # unlocked, but another user has the seat
        poll(tracker)
        assert session.state == "paused"
        logind.active = True
        clock.advance(1)
        poll(tracker)  # back at 8 s
        assert session.state == "running"
        clock.advance(1)
        session.end()
        assert tracker.flush(5)
        assert values(collector, session.run_id) == [(5.0, 4.0)]
    finally:
        monitor.service.close()
        logind.service.close()


def test_x11_without_libxss_falls_back_to_gnome(bus: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On X11, libXss comes first; GNOME's monitor is next; nothing at all is said so."""
    monkeypatch.delenv("WAYLAND_DISPLAY")
    env = {"DISPLAY": ":99", "DBUS_SESSION_BUS_ADDRESS": bus, "DBUS_SYSTEM_BUS_ADDRESS": bus}
    idle, lock = _presence.candidates("linux", env)
    assert [f.name for f in idle] == [  # type: ignore[attr-defined]
        "X11 MIT-SCREEN-SAVER (libXss)",
        "GNOME Mutter IdleMonitor (D-Bus)",
    ]
    monitor = MutterIdleMonitor(bus)
    try:
        presence = _presence.Presence(
            FakeClock(),
            ([_named_failure("X11 MIT-SCREEN-SAVER (libXss)"), idle[1]], lock),
        )
        status = presence.status()
        assert status.idle_source == "GNOME Mutter IdleMonitor (D-Bus)"
        assert status.lock_source is None  # no logind on this bus
        assert status.problems[0] == "X11 MIT-SCREEN-SAVER (libXss): libXss not found"
        assert status.problems[1].startswith("logind LockedHint (D-Bus): Get: ")
        presence.close()
    finally:
        monitor.service.close()


def _named_failure(name: str) -> Any:
    def factory() -> Any:
        raise _presence.Unavailable("libXss not found")

    factory.name = name  # type: ignore[attr-defined]
    return factory


def test_sources_per_platform_and_session() -> None:
    """Wayland never uses XWayland's idle time; no display at all is said plainly."""
    names = lambda factories: [f.name for f in factories]  # noqa: E731
    idle, lock = _presence.candidates("linux", {"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"})
    assert names(idle) == ["GNOME Mutter IdleMonitor (D-Bus)"]
    assert names(lock) == ["logind LockedHint (D-Bus)"]
    idle, _ = _presence.candidates("linux", {"XDG_SESSION_TYPE": "wayland"})
    assert names(idle) == ["GNOME Mutter IdleMonitor (D-Bus)"]
    idle, _ = _presence.candidates("linux", {})
    with pytest.raises(_presence.Unavailable, match="no X11 or Wayland display"):
        idle[0]()
    assert [f.__name__ for pair in (_presence.candidates("win32", {})) for f in pair] == [
        "WindowsIdle",
        "WindowsLock",
    ]
    assert [f.__name__ for pair in (_presence.candidates("darwin", {})) for f in pair] == [
        "MacIdle",
        "MacLock",
    ]


# -- Windows and macOS: the logic, with the OS calls faked -----------------------------------


def test_windows_idle_time_survives_the_tick_count_wrapping() -> None:
    """GetTickCount wraps every 49.7 days; the difference is taken modulo 2**32."""
    assert WindowsIdle(lambda: 1_000, lambda: 4_500).read() == 3_500
    assert WindowsIdle(lambda: 2**32 - 500, lambda: 700).read() == 1_200


def test_windows_idle_failure_is_an_os_error() -> None:
    """GetLastInputInfo failing makes the read fail, which presence logs once and retries."""

    def failing() -> int:
        raise OSError("GetLastInputInfo failed (error 5)")

    presence = _presence.Presence(FakeClock(), ([lambda: WindowsIdle(failing, lambda: 0)], []))
    assert presence.status().idle_source is None
    assert "GetLastInputInfo failed" in presence.status().problems[0]


def test_windows_lock_is_an_input_desktop_we_cannot_open() -> None:
    """OpenInputDesktop failing (locked, switched away, UAC) reads as locked."""
    assert WindowsLock(lambda: False).read() is True
    assert WindowsLock(lambda: True).read() is False


def test_macos_idle_seconds_become_milliseconds_and_nonsense_fails() -> None:
    """CoreGraphics' seconds are rounded to ms; NaN or negative values are errors, not zero."""
    assert MacIdle(lambda: 12.3456).read() == 12_346
    for nonsense in (float("nan"), -1.0, float("inf")):
        with pytest.raises(OSError, match="idle time"):
            MacIdle(lambda n=nonsense: n).read()


@pytest.mark.parametrize(
    ("flags", "locked"),
    [
        ({}, False),
        ({"CGSSessionScreenIsLocked": True, "kCGSSessionOnConsoleKey": True}, True),
        ({"kCGSSessionOnConsoleKey": True}, False),
        ({"kCGSSessionOnConsoleKey": False}, True),  # fast user switching: another user in front
        ({"CGSSessionScreenIsLocked": False, "kCGSSessionOnConsoleKey": True}, False),
    ],
)
def test_macos_lock_reads_the_session_dictionary(flags: dict[str, bool], locked: bool) -> None:
    """Locked when the screen-lock key is true or the session is not on the console."""
    assert MacLock(lambda: flags).read() is locked


def test_macos_without_a_window_server_session_has_no_lock_source() -> None:
    """No session dictionary (ssh, a daemon): the source is unusable, not "unlocked"."""
    presence = _presence.Presence(FakeClock(), ([], [lambda: MacLock(lambda: None)]))
    assert presence.status().lock_source is None
    assert "no window server session" in presence.status().problems[0]


@pytest.mark.skipif(sys.platform != "win32", reason="the real Windows calls (CI on Windows)")
def test_the_real_windows_calls_answer() -> None:  # pragma: no cover - Windows only
    """On Windows, both sources read without error."""
    assert WindowsIdle().read() >= 0
    assert WindowsLock().read() in (True, False)


@pytest.mark.skipif(sys.platform != "darwin", reason="the real macOS calls (CI on macOS)")
def test_the_real_macos_calls_answer() -> None:  # pragma: no cover - macOS only
    """On macOS, the idle source reads; the lock source needs a window server session."""
    assert MacIdle().read() >= 0
    try:
        locked = MacLock().read()
    except OSError as exc:  # a CI runner may have no console session
        locked = "window server" in str(exc)
    assert locked in (True, False)


@pytest.mark.parametrize("finish", ["complete", "end"])
def test_a_poll_while_the_last_window_is_sent_changes_nothing_and_raises_nothing(
    collector: LocalCollector, monkeypatch: pytest.MonkeyPatch, finish: str
) -> None:
    """The heartbeat's presence poll can reach a session while complete() or end() sends
    its last window (its time has stopped, its outcome is not set yet): the poll is
    ignored, instead of an error in the heartbeat thread (seen in the Qt demo test)."""
    clock = FakeClock()
    config = tt.TrackerConfig(
        sensor=SENSOR, endpoint=collector.url, heartbeat_interval=3600, spool_path=None
    )
    tracker = tt.Tracker(config, clock=clock)
    session = tracker.start_session(USER, ACTIVITY)
    clock.advance(10)
    sending, release = threading.Event(), threading.Event()
    original = MemoryOutbox.put_many

    def held(self: MemoryOutbox, *args: Any, **kwargs: Any) -> Any:
        sending.set()
        assert release.wait(10)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MemoryOutbox, "put_many", held)
    call = (lambda: session.complete(1)) if finish == "complete" else session.end
    finisher = threading.Thread(target=call)
    finisher.start()
    try:
        assert sending.wait(10)
        clock.advance(5)
        apply_presence(session, clock.monotonic_ms(), True)  # input now, and the screen locked
    finally:
        release.set()
        finisher.join(10)
    assert session.state == ("completed" if finish == "complete" else "ended")
    assert (session.active_seconds, session.inactive_seconds) == (10, 0)
    assert tracker.flush(10)
    tracker.close()
    assert tracker.stats().internal_errors == 0
    assert collector.totals(session.run_id) == (10, 0)
