"""The delivery thread: outbox -> envelopes -> endpoint, with retries that respect the server.

One named daemon thread per tracker. It sleeps on a condition until events
arrive, sends them in batches, and on a retryable failure backs off with
jittered exponential delays (tenacity) with no attempt limit — the outbox
keeps the events, a kiosk may be offline for days. ``flush()`` and ``close()``
may cut the tracker's own backoff short, never the server's ``Retry-After``.
A misconfiguration (redirect, 404, refused credentials) keeps the events too:
it is fixed by people, not by waiting, so it is reported as such. Only an
event the server rejects on its own merits is isolated by bisecting its batch
and set aside as a dead letter; the rest go on.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from timeback_tracker._clock import Clock, WallClockWatch
from timeback_tracker._outbox import Entry, Outbox
from timeback_tracker._threads import start_daemon
from timeback_tracker._urls import safe_url
from timeback_tracker.exceptions import DeliveryFailure

if TYPE_CHECKING:
    import tenacity

    from timeback_tracker._transport import Outcome, Transport
    from timeback_tracker.auth import Auth
    from timeback_tracker.config import TrackerConfig

log = logging.getLogger("timeback_tracker.delivery")

__all__ = [
    "BATCH_REGROWTH",
    "MAX_BACKOFF",
    "MAX_HOLD",
    "OTHER_DRAINER_POLL",
    "Counters",
    "Delivery",
    "DeliverySettings",
    "TrackerStats",
    "hold_seconds",
]

OTHER_DRAINER_POLL = 1.0
"""Seconds between looks at a spool that another process is draining."""

MAX_BACKOFF = 60.0
"""Longest pause between two attempts while the endpoint fails (seconds), unless
the server's ``Retry-After`` asks for more."""

MAX_HOLD = 60.0
"""Longest a running session's window waits to share an envelope with the next ones
(seconds), when the spool keeps it safe meanwhile."""


def hold_seconds(heartbeat_interval: float) -> float:
    """How long a running session's windows may wait to share an envelope (seconds):
    long enough for four of them, at most :data:`MAX_HOLD`."""
    return min(MAX_HOLD, 3.5 * heartbeat_interval)


BATCH_REGROWTH = 8
"""Envelopes delivered at a batch size halved by a 413 after which it doubles
again (up to ``batch_size``): one 413 does not shrink batches for ever."""


@attrs.frozen
class TrackerStats:
    """Counters of one tracker since it started (a consistent snapshot).

    Attributes:
        queued: Events held undelivered now (in flight included).
        sent: Events acknowledged by the endpoint (2xx).
        retried: Events sent again after a failed attempt.
        failed: Requests that failed (network error or non-2xx answer).
        coalesced: Windows merged into a neighbour because the outbox was full.
        dead_lettered: Events set aside as undeliverable (rejected, too large, too old).
        dropped: Events discarded because the outbox was full and nothing could be merged.
        internal_errors: Unexpected errors caught in the background threads.
    """

    queued: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    coalesced: int = 0
    dead_lettered: int = 0
    dropped: int = 0
    internal_errors: int = 0


@attrs.frozen(kw_only=True)
class DeliverySettings:
    """The part of a :class:`~timeback_tracker.TrackerConfig` the delivery thread uses.

    Attributes:
        endpoint: The envelope POST URL.
        sensor: The envelopes' sensor IRI.
        auth: Where the ``Authorization`` header comes from, or None.
        request_timeout: (connect, read) seconds per HTTP request.
        batch_size: Most events per envelope.
        max_queue: Most events the outbox holds (a batch takes at most half).
        max_event_age: Seconds after which an undelivered event becomes a dead letter.
        hold: Seconds a running session's windows may wait to be sent together
            (0: each at once), while the spool keeps them safe: one POST and one
            delete a minute instead of four of each. Windows held in memory only
            (no spool, or a spool that refuses writes) are sent at once, as a
            crash would lose them.
    """

    endpoint: str = attrs.field(repr=lambda url: repr(safe_url(url)))  # a query may hold a key
    sensor: str
    auth: Auth | None = attrs.field(repr=False)
    request_timeout: tuple[float, float]
    batch_size: int
    max_queue: int
    max_event_age: float
    hold: float = 0.0

    @classmethod
    def from_config(cls, config: TrackerConfig) -> DeliverySettings:
        """The delivery settings of ``config`` (already validated there)."""
        return cls(
            hold=hold_seconds(config.heartbeat_interval),
            endpoint=config.endpoint,
            sensor=config.sensor,
            auth=config.auth,
            request_timeout=config.request_timeout,
            batch_size=config.batch_size,
            max_queue=config.max_queue,
            max_event_age=config.max_event_age,
        )


class Counters:
    """Thread-safe counters behind :class:`TrackerStats`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(
            ("sent", "retried", "failed", "coalesced", "dead_lettered", "dropped"), 0
        )
        self._counts["internal_errors"] = 0

    def add(self, name: str, amount: int = 1) -> None:
        """Increase one counter."""
        if amount:
            with self._lock:
                self._counts[name] += amount

    def snapshot(self, queued: int) -> TrackerStats:
        """The counters now."""
        with self._lock:
            return TrackerStats(queued=queued, **self._counts)


class _RetryLater(Exception):  # noqa: N818 - a signal, not an error
    """The head batch could not be delivered now; back off and try again."""

    def __init__(self, outcome: Outcome | None) -> None:
        super().__init__(outcome.reason if outcome else "retry")
        self.retry_after = outcome.retry_after if outcome else None
        # False: the request provably never left (its events stay mergeable).
        self.reached = outcome.reached if outcome else False


class Delivery:
    """Runs the delivery thread of one tracker.

    Args:
        outbox: Where events wait.
        settings: Where and how to deliver.
        counters: Where outcomes are counted.
        report: Hands a :class:`DeliveryFailure` to the app's ``on_error``.
        clock: Wall time, to tell the age of events.
    """

    def __init__(
        self,
        outbox: Outbox,
        settings: DeliverySettings,
        counters: Counters,
        report: Callable[[DeliveryFailure], None],
        clock: Clock,
    ) -> None:
        self._outbox = outbox
        self._clock = clock
        self._settings = settings
        self._counters = counters
        self._report = report
        self._transport: Transport | None = None
        self._wait: tenacity.wait.wait_base | None = None  # built at the first failure
        # Its own generator: the jitter never draws from (or disturbs) the app's `random`.
        self._jitter = random.Random()
        # A batch never takes more than half the outbox: the other half stays free
        # for a run's new windows to merge into while a request is in flight.
        self._batch_size = min(settings.batch_size, max(1, settings.max_queue // 2))
        self._batch_limit = self._batch_size
        self._condition = threading.Condition()
        self._pending = False  # new events were put since the last look
        self._held_since: float | None = None  # monotonic seconds: the oldest held window
        self._interrupt = False  # cut the current backoff short
        self._stopping = False
        self._deadline: float | None = None  # monotonic seconds; set by stop()
        self._thread: threading.Thread | None = None
        self._reports: collections.deque[DeliveryFailure] = collections.deque()
        self._wall_watch = WallClockWatch(clock)
        self._wall_lock = threading.Lock()
        self._not_before = 0.0  # monotonic seconds: the server's Retry-After floor
        self._misconfigured = 0  # misconfiguration answers so far
        self._misconfigured_at_stop = 0
        self._problem: str | None = None  # the cause of failure last logged
        self._delivered_at_limit = 0  # envelopes sent since the batch limit last shrank

    def __repr__(self) -> str:
        alive = self._thread is not None and self._thread.is_alive()
        return f"<Delivery alive={alive} queued={len(self._outbox)}>"

    # -- called from other threads -------------------------------------------

    def start(self) -> None:
        """Start the thread if it is not running."""
        with self._condition:
            if self._stopping or (self._thread is not None and self._thread.is_alive()):
                return
            # A backlog from earlier runs (or a dead process's windows) goes at once.
            self._pending = self._pending or bool(len(self._outbox))
            self._thread = start_daemon(self._run, "timeback-tracker-delivery")

    def notify(self, *, now: bool = True) -> None:
        """New events are in the outbox.

        Args:
            now: Send them at once; False for a running session's windows,
                which may wait up to ``hold`` seconds (see :meth:`send_held`)
                while the spool keeps them: then the thread is not even woken.
        """
        if not (
            now
            or self._settings.hold <= 0
            or self._outbox.in_memory  # a crash would lose them: no waiting
            or len(self._outbox) >= self._batch_limit  # the outbox keeps room to merge
        ):
            if self._held_since is None:
                self._held_since = time.monotonic()
            return
        # The common case, once per window: the thread was told already and has
        # not looked yet, so it will see these events too. Read without the lock:
        # the events were added before this read, and the thread resets the flag
        # before it looks at the outbox.
        if self._pending:
            return
        with self._condition:
            self._pending = True
            self._condition.notify_all()

    def send_held(self) -> None:
        """Send the held windows once the oldest has waited ``hold`` seconds.

        Called once a second by the heartbeat thread, which is awake then
        anyway: holding windows back costs the delivery thread no wake-up.
        """
        since = self._held_since
        if since is not None and time.monotonic() - since >= self._settings.hold:
            self.notify()

    def watch_wall_clock(self) -> None:
        """Notice the wall clock being set, and move the age of what is held along.

        Called by the heartbeat at each tick, and by this thread before it takes
        a batch: a retry between a clock step and the next tick must not take a
        queue dated 40 days back for 40 days old.
        """
        with self._wall_lock:
            step = self._wall_watch.step(self._clock)
            if step:
                log.warning("the wall clock was set by %+.3f s", step / 1000)
                self._outbox.rebase(step)

    def report_later(self, failure: DeliveryFailure) -> None:
        """Hand ``failure`` to ``on_error`` from this thread, never from the caller's."""
        with self._condition:
            self._reports.append(failure)
            self._condition.notify_all()

    def wait_until_empty(self, timeout: float) -> bool:
        """Block until the outbox is empty (True) or ``timeout`` seconds pass (False).

        Returns at once when called from the delivery thread itself (from
        ``on_error``): it cannot wait for its own work. Returns False early
        when the endpoint answers that the configuration is wrong, since
        waiting longer cannot help.
        """
        if threading.current_thread() is self._thread:
            log.error(
                "flush() was called from the delivery thread (in on_error?): it cannot wait "
                "for its own thread, so it returns at once; call it from another thread"
            )
            return not len(self._outbox)
        deadline = time.monotonic() + timeout
        with self._condition:
            # A caller waiting for delivery deserves an attempt now, not after the
            # tracker's backoff (the server's Retry-After still holds).
            self._interrupt = True
            self._pending = True  # held windows too
            self._condition.notify_all()
            misconfigured = self._misconfigured
            while len(self._outbox):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._misconfigured != misconfigured:
                    return False
                self._condition.wait(remaining)
        return True

    def stop(self, timeout: float) -> bool:
        """Deliver what is pending for up to ``timeout`` seconds, then stop the thread.

        Returns:
            True when everything was delivered.
        """
        deadline = time.monotonic() + timeout
        with self._condition:
            self._stopping = True
            self._deadline = deadline
            self._misconfigured_at_stop = self._misconfigured
            self._interrupt = True
            self._condition.notify_all()
            thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()) + 0.05)
        else:
            # No thread to do it (never started, or at interpreter shutdown
            # where new threads are refused): drain here, within the deadline.
            self._flush_reports()
            if len(self._outbox):
                self._drain()
        if self._transport is not None and (thread is None or not thread.is_alive()):
            self._transport.close()
        return not len(self._outbox)

    # -- the thread ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._condition:
                while not (self._pending or self._stopping or self._reports):
                    self._condition.wait()
                self._pending = False
                self._held_since = None  # whatever is held goes now
            self._flush_reports()
            with self._condition:
                if self._stopping and not len(self._outbox):
                    return
            try:
                if not self._drain():
                    return
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any bug
                self._crashed(exc)
                self._sleep(1.0)
                self._pending = True  # try again

    def _flush_reports(self) -> None:
        while True:
            with self._condition:
                if not self._reports:
                    return
                failure = self._reports.popleft()
            self._report(failure)

    def _drain(self) -> bool:
        """Deliver until the outbox is empty; False once stopping and out of time."""
        import tenacity

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_RetryLater),
            wait=self._backoff,
            stop=self._give_up,
            sleep=self._sleep,
            reraise=True,
        )
        while len(self._outbox):
            try:
                took = retrying(self._deliver_head)
            except _RetryLater:
                return False
            if self._give_up():
                return False
            if not took:
                # Another process drains the shared spool: look again later.
                self._sleep(OTHER_DRAINER_POLL)
        return True

    def _deliver_head(self) -> bool:
        """Deliver (or set aside) the head batch; False when there was nothing to take."""
        if time.monotonic() < self._not_before:
            self._sleep(0)  # the server's Retry-After, even for flush()/close()
            if time.monotonic() < self._not_before:  # the exit deadline came first
                raise _RetryLater(None)
        self.watch_wall_clock()  # before the batch is read: its ages must be rebased
        batch = self._outbox.take(self._batch_limit)
        if not batch:
            return False
        retries = sum(1 for entry in batch if entry.attempts > 1)
        self._counters.add("retried", retries)
        reached = True
        try:
            batch = self._expire(batch)
            if batch:
                self._send(batch)
        except _RetryLater as exc:
            reached = exc.reached
            raise
        finally:
            # Whatever was neither acknowledged nor set aside stays at the head.
            self._outbox.release(batch, reached=reached)
        return True

    def _send(self, batch: list[Entry]) -> None:
        timeout, total = self._request_timeout()
        outcome = self._transport_now().send(
            [entry.payload for entry in batch], timeout=timeout, total=total
        )
        ids = tuple(entry.id for entry in batch)
        if outcome.retry_after is not None:
            self._not_before = max(self._not_before, time.monotonic() + outcome.retry_after)
        if outcome.verdict == "ok":
            self._outbox.ack(batch)
            self._counters.add("sent", len(batch))
            log.debug("delivered %d events (HTTP %s)", len(batch), outcome.status)
            self._delivered()
            self._progress()
            return
        self._counters.add("failed")
        if outcome.verdict in ("retry", "misconfigured"):
            self._failed(outcome, len(batch))
            misconfigured = outcome.verdict == "misconfigured"
            self._report(
                DeliveryFailure(
                    outcome.reason,
                    outcome.status,
                    ids,
                    will_retry=True,
                    configuration_error=misconfigured,
                )
            )
            if misconfigured:
                with self._condition:
                    self._misconfigured += 1
                    self._condition.notify_all()  # flush() need not wait any longer
            raise _RetryLater(outcome)
        if len(batch) == 1:
            self._dead_letter(batch, outcome.reason, outcome.status)
            return
        if outcome.verdict == "too_large":
            self._batch_limit = max(1, len(batch) // 2)
            self._delivered_at_limit = 0
        # Bisect: the good halves go on, the bad event ends alone and is set aside.
        middle = len(batch) // 2
        log.debug("%s for %d events: splitting the batch", outcome.reason, len(batch))
        self._send(batch[:middle])
        self._send(batch[middle:])

    def _failed(self, outcome: Outcome, events: int) -> None:
        """Log a failed attempt: once per distinct cause, not once per attempt."""
        if outcome.reason == self._problem:
            log.debug("delivery of %d events failed again: %s", events, outcome.reason)
            return
        self._problem = outcome.reason
        if outcome.verdict == "misconfigured":
            log.error(
                "delivery of %d events failed: %s; the events are kept and retried until "
                "the configuration is fixed",
                events,
                outcome.reason,
            )
        else:
            log.warning("delivery of %d events failed: %s; will retry", events, outcome.reason)

    def _delivered(self) -> None:
        if self._problem is not None:
            log.info("delivery works again (after: %s)", self._problem)
            self._problem = None
        if self._batch_limit < self._batch_size:
            self._delivered_at_limit += 1
            if self._delivered_at_limit >= BATCH_REGROWTH:
                self._batch_limit = min(self._batch_size, self._batch_limit * 2)
                self._delivered_at_limit = 0
                log.debug("batch size grows back to %d", self._batch_limit)

    def _expire(self, batch: list[Entry]) -> list[Entry]:
        oldest_allowed = self._clock.wall_ms() - self._settings.max_event_age * 1000
        too_old = [e for e in batch if e.born_ms < oldest_allowed]
        if too_old:
            self._dead_letter(too_old, "older than max_event_age", None)
        return [e for e in batch if e not in too_old]

    def _dead_letter(self, entries: list[Entry], reason: str, status: int | None) -> None:
        self._outbox.dead_letter(entries, reason)
        self._counters.add("dead_lettered", len(entries))
        ids = tuple(entry.id for entry in entries)
        log.warning("dead-lettered %d events (%s): %s", len(entries), reason, ", ".join(ids))
        self._report(DeliveryFailure(reason, status, ids, will_retry=False))
        self._progress()

    def _crashed(self, exc: BaseException) -> None:
        self._counters.add("internal_errors")
        log.error("unexpected error in the delivery thread; it goes on", exc_info=exc)
        self._report(DeliveryFailure(f"internal error: {type(exc).__name__}"))

    def _progress(self) -> None:
        with self._condition:
            self._condition.notify_all()

    # -- time --------------------------------------------------------------------

    def _transport_now(self) -> Transport:
        if self._transport is None:
            from timeback_tracker._transport import Transport

            self._transport = Transport(
                endpoint=self._settings.endpoint,
                sensor=self._settings.sensor,
                auth=self._settings.auth,
                timeout=self._settings.request_timeout,
            )
        return self._transport

    def _request_timeout(self) -> tuple[tuple[float, float], float]:
        """(connect, read) timeouts and the total deadline of the next request."""
        connect, read = self._settings.request_timeout
        if self._deadline is None:
            return (connect, read), connect + read
        left = max(0.05, self._deadline - time.monotonic())
        return (min(connect, left), min(read, left)), min(connect + read, left)

    def _backoff(self, state: tenacity.RetryCallState) -> float:
        if self._wait is None:
            import tenacity

            self._wait = tenacity.wait_exponential(multiplier=0.25, max=MAX_BACKOFF / 2)
        # "Equal jitter": half the exponential delay fixed, half random, so kiosks
        # that lost the network together do not come back in lockstep.
        half: float = self._wait(state)
        delay = half + self._jitter.uniform(0, half)
        error = state.outcome.exception() if state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        return max(delay, retry_after) if retry_after is not None else delay

    def _out_of_time(self, _: Any = None) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _give_up(self, _: Any = None) -> bool:
        """Stop retrying: out of time, or stopping and told the configuration is wrong."""
        return self._out_of_time() or (
            self._stopping and self._misconfigured != self._misconfigured_at_stop
        )

    def _sleep(self, seconds: float) -> None:
        """Back off for ``seconds``, or only until the server's ``Retry-After`` floor
        once ``flush``/``close`` ask for delivery; never past the exit deadline."""
        end = time.monotonic() + seconds
        with self._condition:
            while True:
                limit = self._not_before if self._interrupt else max(end, self._not_before)
                if self._deadline is not None:
                    limit = min(limit, self._deadline)
                remaining = limit - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
            self._interrupt = False
