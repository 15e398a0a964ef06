"""The heartbeat thread: closes every open session's window on a fixed schedule.

Ticks are scheduled from the start time (tick k at start + k * interval), not
by sleeping a fixed amount after each tick, so they do not drift; between
ticks the thread sleeps on a condition and uses no CPU. While no session
runs it does not wake at all. Once a second in between it can run a duty
(``every_second``): the spool's sign of life, so that a crash loses at most
about a second of counted time, and the OS presence poll. The duty runs just
before a tick that falls due at the same time, so the tick sees what it found.
When the duty says nothing needs it (no session counts time: all are past
their inactive cutoff), it next runs with the tick, until :meth:`Heartbeat.hurry`
says a run woke up: an idle kiosk then wakes once a tick, not once a second.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from timeback_tracker._clock import Clock
from timeback_tracker._threads import start_daemon

log = logging.getLogger("timeback_tracker.heartbeat")

__all__ = ["Heartbeat"]


class Heartbeat:
    """One named daemon thread calling ``tick(scheduled_ms)`` every interval while busy.

    Args:
        interval_ms: Milliseconds between ticks.
        clock: Where time comes from.
        tick: Called on each tick with the monotonic time it was scheduled for.
        crashed: Called with any exception ``tick`` or ``every_second`` raised;
            the thread goes on.
        every_second: Called every ``second_ms`` while busy, if given, on a grid
            from the moment the thread became busy; when it returns False
            (not None), next called just before the next tick (or at once
            after :meth:`hurry`).
        second_ms: Milliseconds between two calls of ``every_second``.
    """

    def __init__(
        self,
        interval_ms: int,
        clock: Clock,
        tick: Callable[[int], None],
        crashed: Callable[[BaseException], None],
        *,
        every_second: Callable[[], bool] | None = None,
        second_ms: int = 1000,
    ) -> None:
        self._interval = interval_ms
        self._clock = clock
        self._tick = tick
        self._crashed = crashed
        self._every_second = every_second
        self._second_ms = second_ms
        self._condition = threading.Condition()
        self._busy = False
        self._stopped = False
        self._hurried = False  # run the duty now, and every second again
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        alive = self._thread is not None and self._thread.is_alive()
        return f"<Heartbeat interval_ms={self._interval} busy={self._busy} alive={alive}>"

    def start(self) -> None:
        """Sessions run: tick on schedule (starting the thread if needed)."""
        with self._condition:
            if self._stopped:
                return
            self._busy = True
            self._hurried = True  # a new session counts time: its sign of life at once
            self._condition.notify_all()
            if self._thread is None or not self._thread.is_alive():
                self._thread = start_daemon(self._run, "timeback-tracker-heartbeat")

    def hurry(self) -> None:
        """A run counts time again: run ``every_second`` now, and every second after."""
        with self._condition:
            self._hurried = True
            self._condition.notify_all()

    def rest(self) -> None:
        """No session runs: sleep until :meth:`start`."""
        with self._condition:
            self._busy = False

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
        next_second: int | None = start  # None: with the next tick
        while True:
            rested = self._wait_for_work()
            if rested is None:
                return
            if rested:
                # Back from rest: the next tick is the next one on the schedule.
                now = self._clock.monotonic_ms()
                ticks = max(ticks, (now - start) // self._interval + 1)
                next_second = now
            scheduled = start + ticks * self._interval
            wake = scheduled
            if self._every_second is not None and next_second is not None:
                wake = min(scheduled, next_second)
            if not self._sleep_until(wake):
                return
            now = self._clock.monotonic_ms()
            if self._take_hurry() and next_second is None:
                next_second = now  # resting: the duty at once (running, it is a second away)
            # Woken late (the machine slept, the process stalled), the tick goes
            # first: it cuts the lost time out before anything else counts it.
            tick_first = now >= scheduled and now - wake >= self._second_ms
            if tick_first:
                ticks = self._tick_now(scheduled, start, ticks)
            due = scheduled if next_second is None else next_second
            if self._every_second is not None and now >= due:
                wanted = self._run_guarded(self._every_second)
                now = self._clock.monotonic_ms()
                if wanted is False:
                    next_second = None
                elif next_second is None:
                    next_second = now + self._second_ms
                else:
                    # On the grid: a slow duty does not push every later one back.
                    late = (now - next_second) // self._second_ms + 1
                    next_second += max(1, late) * self._second_ms
            if not tick_first and self._clock.monotonic_ms() >= scheduled:
                ticks = self._tick_now(scheduled, start, ticks)

    def _tick_now(self, scheduled: int, start: int, ticks: int) -> int:
        """Run the tick due at ``scheduled``; returns the number of the next one."""
        self._run_guarded(self._tick, scheduled)
        # After a long stall (e.g. the machine slept), skip the missed ticks.
        return max(ticks + 1, (self._clock.monotonic_ms() - start) // self._interval + 1)

    def _run_guarded(self, duty: Callable[..., object], *args: int) -> object:
        """Run ``duty``; what it returns, or True after it raised (keep it coming)."""
        try:
            return duty(*args)
        except Exception as exc:  # noqa: BLE001 - the thread must outlive any bug
            self._crashed(exc)
            return True

    def _take_hurry(self) -> bool:
        if not self._hurried:  # read without the lock: hurry() sets it, then notifies
            return False
        with self._condition:
            hurried, self._hurried = self._hurried, False
            return hurried

    def _wait_for_work(self) -> bool | None:
        """Block while no session runs: whether it had to wait; None once stopped."""
        with self._condition:
            rested = False
            while not self._busy and not self._stopped:
                rested = True
                self._condition.wait()
            return None if self._stopped else rested

    def _sleep_until(self, deadline_ms: int) -> bool:
        """Wait on the condition until the deadline or :meth:`hurry`; False once stopped."""
        with self._condition:
            while not self._stopped and not self._hurried:
                remaining = deadline_ms - self._clock.monotonic_ms()
                if remaining <= 0:
                    return True
                self._condition.wait(remaining / 1000)
            return not self._stopped
