"""The heartbeat thread: closes every open session's window on a fixed schedule.

Ticks are scheduled from the start time (tick k at start + k * interval), not
by sleeping a fixed amount after each tick, so they do not drift; between
ticks the thread sleeps on a condition and uses no CPU. With a durable spool
it also checkpoints the open windows every second in between, so that a crash
loses at most about a second of counted time. With OS presence it also polls
the OS once a second on the same thread, for as long as the poll says there is
something to poll for.
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
        poll: Called every ``poll_ms``, if given, just before a tick that falls
            at the same time; returns False when there is nothing to poll
            for, which stops the polling until :meth:`start` is called again.
        poll_ms: Milliseconds between polls, on a grid from the thread's start
            (so that with a whole-second interval every tick follows a poll).
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
        poll: Callable[[], bool] | None = None,
        poll_ms: int = 1000,
    ) -> None:
        self._interval = interval_ms
        self._clock = clock
        self._tick = tick
        self._crashed = crashed
        self._checkpoint = checkpoint
        self._checkpoint_ms = checkpoint_ms
        self._poll = poll
        self._poll_ms = poll_ms
        self._condition = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._polling = poll is not None
        self._starts = 0  # start() calls: a poll's "nothing to do" is stale after one

    def __repr__(self) -> str:
        alive = self._thread is not None and self._thread.is_alive()
        return f"<Heartbeat interval_ms={self._interval} alive={alive}>"

    def start(self) -> None:
        """Start the thread unless it is running or was stopped; (re)start polling."""
        with self._condition:
            if self._stopped:
                return
            self._starts += 1
            if self._poll is not None and not self._polling:
                self._polling = True
                self._condition.notify_all()  # the thread may be asleep until the next tick
            if self._thread is not None and self._thread.is_alive():
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
        next_poll = start
        while True:
            scheduled = start + ticks * self._interval
            wake = scheduled
            if self._checkpoint is not None:
                wake = min(wake, next_checkpoint)
            polling = self._polling
            if polling:
                wake = min(wake, next_poll)
            if not self._sleep_until(wake, polling):
                return
            now = self._clock.monotonic_ms()
            poll_due = polling and now >= next_poll
            # After a stall (the machine slept) the tick goes first: it cuts the
            # sleep out before input the OS reports can count across it.
            if poll_due and now - wake < self._poll_ms:
                self._guarded(self._run_poll)
                poll_due = False
            ticked = now >= scheduled
            if ticked:
                self._guarded(self._tick, scheduled)  # also checkpoints
                next_checkpoint = self._clock.monotonic_ms() + self._checkpoint_ms
            elif self._checkpoint is not None and now >= next_checkpoint:
                self._guarded(self._checkpoint)
                next_checkpoint = self._clock.monotonic_ms() + self._checkpoint_ms
            if poll_due:
                self._guarded(self._run_poll)
            now = self._clock.monotonic_ms()
            if now >= next_poll:
                next_poll = start + ((now - start) // self._poll_ms + 1) * self._poll_ms
            if ticked:
                # After a long stall (e.g. the machine slept), skip the missed ticks.
                # A tick that fell due while a poll or checkpoint ran is not
                # missed: it runs next, late.
                ticks = max(ticks + 1, (now - start) // self._interval + 1)

    def _run_poll(self) -> None:
        assert self._poll is not None
        with self._condition:
            starts = self._starts
        if self._poll():
            return
        with self._condition:
            if self._starts == starts:  # no session started while it polled
                self._polling = False

    def _guarded(self, step: Callable[..., object], *args: int) -> None:
        try:
            step(*args)
        except Exception as exc:  # noqa: BLE001 - the thread must outlive any bug
            self._crashed(exc)

    def _sleep_until(self, deadline_ms: int, polling: bool) -> bool:
        """Wait on the condition until the deadline, or until polling starts; False once stopped."""
        with self._condition:
            while not self._stopped:
                remaining = deadline_ms - self._clock.monotonic_ms()
                if remaining <= 0 or self._polling != polling:
                    return True
                self._condition.wait(remaining / 1000)
            return False
