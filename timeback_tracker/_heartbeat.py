"""The heartbeat thread: closes every open session's window on a fixed schedule.

Ticks are scheduled from the start time (tick k at start + k * interval), not
by sleeping a fixed amount after each tick, so they do not drift; between
ticks the thread sleeps on a condition and uses no CPU.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from timeback_tracker._clock import Clock

log = logging.getLogger("timeback_tracker.heartbeat")


class Heartbeat:
    """One named daemon thread calling ``tick(scheduled_ms)`` every interval.

    Args:
        interval_ms: Milliseconds between ticks.
        clock: Where time comes from.
        tick: Called on each tick with the monotonic time it was scheduled for.
        crashed: Called with any exception ``tick`` raised; the thread goes on.
    """

    def __init__(
        self,
        interval_ms: int,
        clock: Clock,
        tick: Callable[[int], None],
        crashed: Callable[[BaseException], None],
    ) -> None:
        self._interval = interval_ms
        self._clock = clock
        self._tick = tick
        self._crashed = crashed
        self._condition = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        alive = self._thread is not None and self._thread.is_alive()
        return f"<Heartbeat interval_ms={self._interval} alive={alive}>"

    def start(self) -> None:
        """Start the thread unless it is running or was stopped."""
        with self._condition:
            if self._stopped or (self._thread is not None and self._thread.is_alive()):
                return
            self._thread = threading.Thread(
                target=self._run, name="timeback-tracker-heartbeat", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the thread and wait for it (at most ``timeout`` seconds)."""
        with self._condition:
            self._stopped = True
            self._condition.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        start = self._clock.monotonic_ms()
        ticks = 0
        while True:
            ticks += 1
            scheduled = start + ticks * self._interval
            with self._condition:
                while not self._stopped:
                    remaining = scheduled - self._clock.monotonic_ms()
                    if remaining <= 0:
                        break
                    self._condition.wait(remaining / 1000)
                if self._stopped:
                    return
            try:
                self._tick(scheduled)
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any bug
                self._crashed(exc)
            # After a long stall (e.g. the machine slept), skip the missed ticks.
            behind = (self._clock.monotonic_ms() - start) // self._interval
            ticks = max(ticks, behind)
