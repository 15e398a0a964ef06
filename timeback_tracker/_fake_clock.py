"""A clock that moves only when told to: for exact, sleep-free tests of time accounting.

Public as :class:`timeback_tracker.testing.FakeClock`; pass one to
``Tracker(config, clock=...)``.
"""

from __future__ import annotations

import threading

__all__ = ["FakeClock"]


class FakeClock:
    """A clock that only moves when told to, for deterministic tests of your app's timing.

    ``Tracker(config, clock=FakeClock())``: sessions then count time only when
    the test calls :meth:`advance` (awake), :meth:`suspend` (the machine
    sleeps) or :meth:`set_wall` (the wall clock is set); the heartbeat thread
    is scheduled on it too, so call ``tracker.flush()`` after ``complete()``
    or ``end()`` to see the events.

    Args:
        wall_ms: Initial wall time (epoch milliseconds); 2026-01-27T10:00:00Z
            by default.
        monotonic_ms: Initial monotonic reading.
    """

    def __init__(self, wall_ms: int = 1_769_508_000_000, monotonic_ms: int = 1_000_000) -> None:
        self._lock = threading.Lock()
        self._wall = wall_ms
        self._mono = monotonic_ms
        self._elapsed = monotonic_ms

    def monotonic_ms(self) -> int:
        """The current monotonic reading."""
        return self._mono

    def monotonic_ns(self) -> int:
        """The current monotonic reading in nanoseconds."""
        return self._mono * 1_000_000

    def wall_ms(self) -> int:
        """The current wall time."""
        return self._wall

    def elapsed_ms(self) -> int:
        """Real time passed: moved by :meth:`advance` and :meth:`suspend`, not :meth:`set_wall`."""
        return self._elapsed

    def advance(self, seconds: float) -> None:
        """Move both clocks forward, as time passes on a machine that is awake."""
        step = round(seconds * 1000)
        if step < 0:
            raise ValueError("seconds: must be >= 0")
        with self._lock:
            self._mono += step
            self._wall += step
            self._elapsed += step

    def set_wall(self, seconds: float) -> None:
        """Set the wall clock by ``seconds`` (either way), as NTP or a user does; no time passes."""
        with self._lock:
            self._wall += round(seconds * 1000)

    def suspend(self, seconds: float) -> None:
        """Move only wall time forward, as a machine that sleeps (Linux, macOS)."""
        step = round(seconds * 1000)
        if step < 0:
            raise ValueError("seconds: must be >= 0")
        with self._lock:
            self._wall += step
            self._elapsed += step
