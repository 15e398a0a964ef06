"""The clock seam: monotonic time for durations, UTC wall time for timestamps.

Both clocks are read in whole milliseconds, the precision of the wire format,
so that sums of durations are exact integers.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    """What the tracker needs to know about time."""

    def monotonic_ms(self) -> int:
        """Milliseconds on a clock that never goes backwards (for durations)."""
        ...

    def monotonic_ns(self) -> int:
        """The same clock in nanoseconds (the hot path divides it itself)."""
        ...

    def wall_ms(self) -> int:
        """Milliseconds since the Unix epoch, UTC (for timestamps)."""
        ...


class SystemClock:
    """The real clocks of this machine."""

    @staticmethod
    def monotonic_ms() -> int:
        """Milliseconds on :func:`time.monotonic_ns`."""
        return time.monotonic_ns() // 1_000_000

    # The builtin itself: no Python frame on the app's hot path (touch()).
    monotonic_ns = staticmethod(time.monotonic_ns)

    @staticmethod
    def wall_ms() -> int:
        """Milliseconds on :func:`time.time_ns`."""
        return time.time_ns() // 1_000_000


class FakeClock:
    """A clock that only moves when told to, for deterministic tests.

    Args:
        wall_ms: Initial wall time (epoch milliseconds); 2026-01-27T10:00:00Z
            by default.
        monotonic_ms: Initial monotonic reading.
    """

    def __init__(self, wall_ms: int = 1_769_508_000_000, monotonic_ms: int = 1_000_000) -> None:
        self._lock = threading.Lock()
        self._wall = wall_ms
        self._mono = monotonic_ms

    def monotonic_ms(self) -> int:
        """The current monotonic reading."""
        return self._mono

    def monotonic_ns(self) -> int:
        """The current monotonic reading in nanoseconds."""
        return self._mono * 1_000_000

    def wall_ms(self) -> int:
        """The current wall time."""
        return self._wall

    def advance(self, seconds: float) -> None:
        """Move both clocks forward, as time passes on a machine that is awake."""
        step = round(seconds * 1000)
        if step < 0:
            raise ValueError("seconds: must be >= 0")
        with self._lock:
            self._mono += step
            self._wall += step

    def suspend(self, seconds: float) -> None:
        """Move only wall time forward, as a machine that sleeps (Linux, macOS)."""
        step = round(seconds * 1000)
        if step < 0:
            raise ValueError("seconds: must be >= 0")
        with self._lock:
            self._wall += step


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def utc_from_ms(epoch_ms: int) -> datetime:
    """The UTC datetime of a count of milliseconds since the Unix epoch."""
    return _EPOCH + timedelta(milliseconds=epoch_ms)
