"""The clock seam: monotonic time for durations, UTC wall time for timestamps.

Both clocks are read in whole milliseconds, the precision of the wire format,
so that sums of durations are exact integers.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Protocol

__all__ = [
    "STEP_THRESHOLD_MS",
    "Clock",
    "SystemClock",
    "WallClockWatch",
    "utc_from_ms",
]


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

    def elapsed_ms(self) -> int:
        """Milliseconds on a clock that never goes back and runs while the machine sleeps.

        It tells real time passing from the wall clock being set.
        """
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

    @staticmethod
    def elapsed_ms() -> int:
        """Milliseconds on the boot-time clock, which also runs while the machine sleeps.

        Linux: ``CLOCK_BOOTTIME``; macOS: ``CLOCK_MONOTONIC`` (it counts sleep
        there); elsewhere the monotonic clock (Windows counts sleep in it).
        """
        return _elapsed_ns() // 1_000_000


def _boot_clock() -> Callable[[], int]:
    clock_id = getattr(time, "CLOCK_BOOTTIME", None)
    if clock_id is None and sys.platform == "darwin":
        clock_id = getattr(time, "CLOCK_MONOTONIC", None)
    if clock_id is not None:
        try:
            time.clock_gettime_ns(clock_id)
        except OSError:
            clock_id = None
    if clock_id is None:
        return time.monotonic_ns
    return functools.partial(time.clock_gettime_ns, clock_id)


_elapsed_ns = _boot_clock()

STEP_THRESHOLD_MS = 2_000
"""A change of the wall clock against real time larger than this is taken as the clock being set."""


class WallClockWatch:
    """Notices the wall clock being set (NTP fixing a dead clock battery, a user's change).

    Args:
        clock: The clock to watch.
    """

    def __init__(self, clock: Clock) -> None:
        self._offset = clock.wall_ms() - clock.elapsed_ms()

    def step(self, clock: Clock) -> int:
        """Milliseconds the wall clock was set by since the last call (0 when not set)."""
        offset = clock.wall_ms() - clock.elapsed_ms()
        step = offset - self._offset
        if abs(step) <= STEP_THRESHOLD_MS:
            return 0
        self._offset = offset
        return step


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def utc_from_ms(epoch_ms: int) -> datetime:
    """The UTC datetime of a count of milliseconds since the Unix epoch."""
    return _EPOCH + timedelta(milliseconds=epoch_ms)
