"""The heartbeat thread: closes every open session's window on a fixed schedule.

Ticks are scheduled from the start time (tick k at start + k * interval), not
by sleeping a fixed amount after each tick, so they do not drift; between
ticks the thread sleeps on a condition and uses no CPU. With a durable spool
it also checkpoints the open windows every second in between, so that a crash
loses at most about a second of counted time.
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
        crashed: Called with any exception ``tick`` or ``checkpoint`` raised;
            the thread goes on.
        checkpoint: Called between ticks every ``checkpoint_ms``, if given.
        checkpoint_ms: Milliseconds between checkpoints.
    """

    def __init__(
        self,
        interval_ms: int,
        clock: Clock,
        tick: Callable[[int], None],
        crashed: Callable[[BaseException], None],
        *,
        checkpoint: Callable[[], None] | None = None,
        checkpoint_ms: int = 1000,
    ) -> None:
        self._interval = interval_ms
        self._clock = clock
        self._tick = tick
        self._crashed = crashed
        self._checkpoint = checkpoint
        self._checkpoint_ms = checkpoint_ms
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
        ticks = 1
        next_checkpoint = start + self._checkpoint_ms
        while True:
            scheduled = start + ticks * self._interval
            wake = scheduled
            if self._checkpoint is not None:
                wake = min(scheduled, next_checkpoint)
            if not self._sleep_until(wake):
                return
            now = self._clock.monotonic_ms()
            try:
                if now >= scheduled:
                    self._tick(scheduled)  # also checkpoints what it leaves open
                elif self._checkpoint is not None:
                    self._checkpoint()
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any bug
                self._crashed(exc)
            now = self._clock.monotonic_ms()
            next_checkpoint = now + self._checkpoint_ms
            if now >= scheduled:
                # After a long stall (e.g. the machine slept), skip the missed ticks.
                ticks = max(ticks + 1, (now - start) // self._interval + 1)

    def _sleep_until(self, deadline_ms: int) -> bool:
        """Wait on the condition until the deadline; False once stopped."""
        with self._condition:
            while not self._stopped:
                remaining = deadline_ms - self._clock.monotonic_ms()
                if remaining <= 0:
                    return True
                self._condition.wait(remaining / 1000)
            return False
