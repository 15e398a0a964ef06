"""OS presence: how long since the user last touched the machine, and whether the screen is locked.

With ``TrackerConfig(presence="os")`` the heartbeat thread polls this once a
second while a session is open. Input the OS saw counts as ``touch()`` at the
instant it happened, so idle time is exact to the poll even when the input
went to a web view, a game or another window; a locked screen (or a session
switched to another user) pauses every open session until it unlocks.

Where the OS offers nothing usable, nothing is guessed: the missing part is
logged once and reported by :attr:`Tracker.presence
<timeback_tracker.Tracker.presence>`, and only the app's own calls count.

=========  ==============================================  ==========================
platform   seconds since the last input                    screen locked
=========  ==============================================  ==========================
Windows    ``GetLastInputInfo`` (user32)                   ``OpenInputDesktop`` fails
macOS      ``CGEventSourceSecondsSinceLastEventType``      ``CGSessionCopyCurrent-
           (HID system state, any input)                   Dictionary``: locked or
                                                           not on the console
X11        ``XScreenSaverQueryInfo`` (libXss)              logind ``LockedHint`` /
                                                           ``Active`` (D-Bus)
Wayland    GNOME: ``org.gnome.Mutter.IdleMonitor``         logind, as on X11
           (D-Bus); others: none
=========  ==============================================  ==========================
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from timeback_tracker._clock import Clock
from timeback_tracker.session import Session, apply_presence

log = logging.getLogger("timeback_tracker.presence")

__all__ = ["Presence", "PresenceStatus", "Unavailable"]


@attrs.frozen
class PresenceStatus:
    """What ``presence="os"`` can see on this machine (``tracker.presence``).

    Attributes:
        idle_source: Where the time since the last input comes from, e.g.
            ``"X11 MIT-SCREEN-SAVER (libXss)"``; None when nothing offers it
            (then only the app's ``touch()`` counts as input).
        lock_source: Where the screen-lock state comes from, e.g.
            ``"logind LockedHint (D-Bus)"``; None when nothing offers it.
        problems: Why each source that was tried is unusable, one line each.
    """

    idle_source: str | None
    lock_source: str | None
    problems: tuple[str, ...] = ()


class Unavailable(OSError):  # noqa: N818 - a reason, not an error the app ever sees
    """A presence source cannot work here (or not now); the message says why."""


class Source(Protocol):
    """One way of reading the OS: idle milliseconds or the lock state."""

    name: str

    def read(self) -> Any:
        """The current value; raises OSError when it cannot be read now."""
        ...

    def close(self) -> None:
        """Release what the source holds (a connection, a display)."""
        ...


Factory = Callable[[], Source]


class Presence:
    """Reads the OS's idle time and lock state and hands them to the open sessions.

    Sources are found on first use (on the heartbeat thread, or when
    :meth:`status` is asked). Not fork-safe on purpose: a forked child builds
    a new one, and the parent's connections are left untouched there.

    Args:
        clock: The tracker's clock; the last input's instant is reported on it.
        candidates: ``(idle, lock)`` lists of source factories to try in order;
            by default those of this platform.
    """

    def __init__(
        self,
        clock: Clock,
        candidates: tuple[Sequence[Factory], Sequence[Factory]] | None = None,
    ) -> None:
        self._clock = clock
        self._candidates = candidates
        self._lock = threading.Lock()
        self._status: PresenceStatus | None = None
        self._idle: Source | None = None
        self._locked: Source | None = None
        self._failing: set[str] = set()  # sources whose last read failed (logged once)

    def __repr__(self) -> str:
        status = self._status
        if status is None:
            return "<Presence not yet detected>"
        return f"<Presence idle={status.idle_source!r} lock={status.lock_source!r}>"

    def status(self) -> PresenceStatus:
        """What is available here (detects the sources on the first call)."""
        status = self._status  # once known, never waits for a poll under way
        if status is not None:
            return status
        with self._lock:
            return self._detect()

    def poll(self, sessions: Sequence[Session], crashed: Callable[[BaseException], None]) -> None:
        """Read the OS once and apply it to ``sessions`` (heartbeat thread).

        Args:
            sessions: The open sessions.
            crashed: Called with an exception a session raised; the others go on.
        """
        with self._lock:
            self._detect()
            idle_ms = self._read(self._idle)
            locked = self._read(self._locked)
        if self._locked is not None and locked is None:
            locked = False  # a lock that can no longer be seen must not pause forever
        now = self._clock.monotonic_ms()
        input_at = None if idle_ms is None else now - max(0, int(idle_ms))
        for session in sessions:
            try:
                apply_presence(session, input_at, None if locked is None else bool(locked))
            except Exception as exc:  # noqa: BLE001 - one bad session must not stop the others
                crashed(exc)

    def close(self) -> None:
        """Close the sources' connections. Idempotent.

        Never waits for a poll under way (the tracker stopped the heartbeat
        thread first; one still polling is stuck, e.g. on an X server that
        hangs): exit stays bounded, and a source left open goes with the process.
        """
        if not self._lock.acquire(blocking=False):
            log.debug("presence: a poll is still running; its sources are left open")
            return
        try:
            for source in (self._idle, self._locked):
                if source is not None:
                    with contextlib.suppress(Exception):
                        source.close()
            self._idle = self._locked = None
        finally:
            self._lock.release()

    # -- internals ----------------------------------------------------------------------

    def _detect(self) -> PresenceStatus:
        if self._status is not None:
            return self._status
        idle_factories, lock_factories = self._candidates or candidates()
        problems: list[str] = []
        self._idle = _first_working(idle_factories, problems)
        self._locked = _first_working(lock_factories, problems)
        self._status = PresenceStatus(
            idle_source=None if self._idle is None else self._idle.name,
            lock_source=None if self._locked is None else self._locked.name,
            problems=tuple(problems),
        )
        consequences = []
        if self._idle is None:
            consequences.append("the app's touch() is the only input that counts")
        if self._locked is None:
            consequences.append("a locked screen does not pause")
        if consequences:
            log.warning(
                "presence='os' is partly unavailable here: %s (%s)",
                " and ".join(consequences),
                "; ".join(problems) or "unsupported platform",
            )
        else:
            status = self._status
            log.debug(
                "presence: idle from %s, lock from %s", status.idle_source, status.lock_source
            )
        return self._status

    def _read(self, source: Source | None) -> Any:
        if source is None:
            return None
        try:
            value = source.read()
        except OSError as exc:
            if source.name not in self._failing:
                self._failing.add(source.name)
                log.warning(
                    "presence: %s stopped answering (%s); retrying every poll", source.name, exc
                )
            return None
        if source.name in self._failing:
            self._failing.discard(source.name)
            log.info("presence: %s answers again", source.name)
        return value


def _first_working(factories: Sequence[Factory], problems: list[str]) -> Source | None:
    """The first source that can be built and read once; the others' reasons go to ``problems``."""
    for factory in factories:
        name = getattr(factory, "name", getattr(factory, "__name__", "source"))
        try:
            source = factory()
        except OSError as exc:
            problems.append(f"{name}: {exc}")
            continue
        try:
            source.read()
        except OSError as exc:
            problems.append(f"{name}: {exc}")
            with contextlib.suppress(Exception):
                source.close()
            continue
        return source
    return None


def candidates(
    platform: str | None = None, environ: Mapping[str, str] | None = None
) -> tuple[list[Factory], list[Factory]]:
    """The idle and lock sources worth trying on ``platform``, best first."""
    platform = sys.platform if platform is None else platform
    env = os.environ if environ is None else environ
    if platform == "win32":
        from timeback_tracker._presence_native import WindowsIdle, WindowsLock

        return [WindowsIdle], [WindowsLock]
    if platform == "darwin":
        from timeback_tracker._presence_native import MacIdle, MacLock

        return [MacIdle], [MacLock]
    from timeback_tracker._dbus import bus_address
    from timeback_tracker._presence_linux import LogindLock, MutterIdle, XScreenSaverIdle

    idle: list[Factory] = []
    wayland = bool(env.get("WAYLAND_DISPLAY")) or env.get("XDG_SESSION_TYPE") == "wayland"
    display = env.get("DISPLAY")
    if display and not wayland:
        # Under Wayland, XWayland's idle time sees only the input to X11 windows: not used.
        idle.append(_named(XScreenSaverIdle.name, lambda: XScreenSaverIdle(display)))
    if wayland or display:
        idle.append(_named(MutterIdle.name, lambda: MutterIdle(bus_address("session", dict(env)))))
    else:
        idle.append(_named("display", _no_display))
    system_bus = bus_address("system", dict(env))
    lock: list[Factory] = [_named(LogindLock.name, lambda: LogindLock(system_bus))]
    return idle, lock


def _named(name: str, factory: Callable[[], Source]) -> Factory:
    factory.name = name  # type: ignore[attr-defined]
    return factory


def _no_display() -> Source:
    raise Unavailable("no X11 or Wayland display in this process's environment")
