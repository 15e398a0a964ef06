"""``Tracker``: wires sessions, the heartbeat, the outbox and delivery together.

Fork: the ``os.register_at_fork`` hook at the end of this module stays, where
``auth`` and OS presence use a pid check at the next use. At fork time the
heartbeat or delivery thread may hold the tracker's lock or a session's,
which no thread of the child ever releases, and a session's own calls
(``touch()`` takes under a microsecond) cannot pay a pid check each. So
the child replaces those locks and detaches the parent's sessions before
the app can call anything, then starts its own threads and outbox.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType

from timeback_tracker._accounting import RunAccounting
from timeback_tracker._clock import Clock, SystemClock
from timeback_tracker._delivery import Counters, Delivery, DeliverySettings, TrackerStats
from timeback_tracker._events import RunTemplate, new_segment
from timeback_tracker._heartbeat import Heartbeat
from timeback_tracker._outbox import Checkpoint, Entry, MemoryOutbox, Outbox
from timeback_tracker._presence import Presence, PresenceStatus
from timeback_tracker._rules import text_problem
from timeback_tracker._urls import safe_url
from timeback_tracker.config import TrackerConfig
from timeback_tracker.exceptions import DeliveryFailure, SessionStateError, ValidationError
from timeback_tracker.models import TimebackActivityContext, TimebackUser
from timeback_tracker.session import (
    Session,
    alive_checkpoint,
    close_tick_window,
    closing_for_tick,
    detach,
    dormant,
)

log = logging.getLogger("timeback_tracker")

__all__ = ["DeliveryFailure", "PresenceStatus", "Tracker", "TrackerStats"]


def _seconds_to_ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


# The longest wait the platform's locks accept, halved for headroom: "infinity" in practice.
_MAX_WAIT = threading.TIMEOUT_MAX / 2


def _wait_seconds(value: object) -> float:
    """A ``timeout`` argument as seconds to wait: negatives wait 0, infinity waits _MAX_WAIT."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("timeout: must be a number of seconds")
    if value != value:  # noqa: PLR0124 - only NaN; math.isnan() overflows on big ints
        raise ValueError("timeout: must be a number of seconds, not NaN")
    return float(min(max(value, 0), _MAX_WAIT))


class Tracker:
    """Reports the learning time of sessions to a Caliper endpoint.

    Create one per process (it owns two background threads, started on the
    first session) and close it at exit; an exit hook closes it anyway.

    Args:
        config: What to report where, and how.
        clock: Where time comes from (tests pass a fake clock).

    Raises:
        TypeError: ``config`` is not a :class:`TrackerConfig`.
    """

    def __init__(self, config: TrackerConfig, *, clock: Clock | None = None) -> None:
        if not isinstance(config, TrackerConfig):
            raise TypeError("config: must be a TrackerConfig")
        self._config = config
        self._clock: Clock = clock or SystemClock()
        self._closed = False
        self._start_machinery()
        _TRACKERS.add(self)
        atexit.register(self._at_exit)
        self._recover()

    def _start_machinery(self) -> None:
        """Fresh locks, counters, outbox and (not yet started) threads."""
        config = self._config
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._counters = Counters()
        # Opening the spool may already set rows aside (salvaging a corrupt file):
        # their reports wait here for the delivery thread, which needs the outbox.
        early: list[DeliveryFailure] = []
        self._report_later: Callable[[DeliveryFailure], None] = early.append
        self._outbox = _open_outbox(config, self._damaged, self._dropped)
        self._durable = not isinstance(self._outbox, MemoryOutbox)
        self._delivery = Delivery(
            self._outbox,
            DeliverySettings.from_config(config),
            self._counters,
            self._report,
            self._clock,
        )
        self._report_later = self._delivery.report_later
        for failure in early:
            self._report_later(failure)
        # OS presence is read on the heartbeat thread, once a second while sessions are open.
        self._presence = Presence(self._clock) if config.presence == "os" else None
        self._heartbeat = Heartbeat(
            round(config.heartbeat_interval * 1000),
            self._clock,
            self._tick,
            self._crashed,
            every_second=self._every_second if self._durable or self._presence else None,
        )

    def _recover(self) -> None:
        """Send what an earlier process left: its spooled events and crashed runs' windows."""
        recovered = self._outbox.recover()
        if recovered:
            log.info("recovered the last windows of %d crashed runs", len(recovered))
        if len(self._outbox):
            log.info("%d events from an earlier run are waiting: delivering", len(self._outbox))
            self._delivery.start()

    def __repr__(self) -> str:
        return (
            f"<Tracker endpoint={safe_url(self._config.endpoint)!r} sessions={len(self._sessions)} "
            f"queued={len(self._outbox)} closed={self._closed}>"
        )

    @property
    def config(self) -> TrackerConfig:
        """The configuration this tracker runs with."""
        return self._config

    @property
    def presence(self) -> PresenceStatus | None:
        """What ``presence="os"`` sees on this machine (None with ``presence="app"``).

        The first call finds the sources (a few milliseconds); the tracker
        also logs a warning once when a source is missing.
        """
        return None if self._presence is None else self._presence.status()

    def start_session(
        self,
        user: TimebackUser,
        activity: TimebackActivityContext,
        *,
        course_id: str | None = None,
        run_id: str | uuid.UUID | None = None,
    ) -> Session:
        """Start timing one activity run of one student; it starts running at once.

        Args:
            user: The student.
            activity: The activity context.
            course_id: Sent as ``extensions.courseId`` on every event of the run.
            run_id: The run's UUID; a new random one when None.

        Returns:
            The running :class:`Session`.

        Raises:
            TypeError: ``user`` or ``activity`` has the wrong type.
            ValidationError: ``course_id`` or ``run_id`` is invalid, or a
                session with that run id is open.
            SessionStateError: The tracker is closed.
        """
        if not isinstance(user, TimebackUser):
            raise TypeError("user: must be a TimebackUser")
        if not isinstance(activity, TimebackActivityContext):
            raise TypeError("activity: must be a TimebackActivityContext")
        problem = None if course_id is None else text_problem(course_id)
        if problem:
            # Every event of the run would carry it: refused once, here.
            raise ValidationError.single("course_id", problem)
        run = _run_uuid(run_id)
        template = RunTemplate(
            user=user, activity=activity, run_id=run, course_id=course_id, segment=new_segment()
        )
        accounting = RunAccounting(
            now_ms=self._clock.monotonic_ms(),
            wall_ms=self._clock.wall_ms(),
            idle_timeout_ms=_seconds_to_ms(self._config.idle_timeout),
            inactive_cutoff_ms=_seconds_to_ms(self._config.inactive_cutoff),
        )
        session = Session(
            user=user,
            activity=activity,
            template=template,
            accounting=accounting,
            clock=self._clock,
            emit=self._emit,
            finished=self._forget,
            woke=self._wake_heartbeat,
        )
        with self._lock:
            if self._closed:
                raise SessionStateError("the tracker is closed: start_session() is not allowed")
            if session.run_id in self._sessions:
                raise ValidationError.single("run_id", "a session with this run id is open")
            self._sessions[session.run_id] = session
        self._heartbeat.start()
        self._delivery.start()
        log.debug("run %s started", session.run_id)
        return session

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued event is delivered, at most ``timeout`` seconds.

        The tracker's own backoff is cut short for an attempt now; a server's
        ``Retry-After`` is not. Returns early (False) when the endpoint answers
        that the configuration is wrong (redirect, 404, refused credentials):
        waiting cannot fix that. Called from ``on_error`` (the delivery
        thread), it logs an error and returns at once instead of waiting for
        itself.

        Args:
            timeout: Seconds to wait; ``math.inf`` waits as long as it takes.

        Returns:
            True when nothing is left undelivered. A closed tracker answers at once.

        Raises:
            TypeError: ``timeout`` is not a number.
            ValueError: ``timeout`` is NaN.
        """
        seconds = _wait_seconds(timeout)
        if self._closed:
            return self._delivery.wait_until_empty(0)  # nothing delivers any more
        self._delivery.start()
        return self._delivery.wait_until_empty(seconds)

    def stats(self) -> TrackerStats:
        """A snapshot of the tracker's counters."""
        return self._counters.snapshot(queued=len(self._outbox))

    def close(self, timeout: float | None = None) -> None:
        """End open sessions, deliver for up to ``timeout`` seconds, stop the threads.

        Idempotent. What is still undelivered afterwards is kept in the spool
        (when one is configured) for the next tracker.

        Args:
            timeout: Seconds to wait for delivery; ``exit_timeout`` when None.

        Raises:
            TypeError: ``timeout`` is neither a number nor None.
            ValueError: ``timeout`` is NaN.
        """
        seconds = self._config.exit_timeout if timeout is None else _wait_seconds(timeout)
        deadline = time.monotonic() + seconds
        with self._lock:
            if self._closed:
                return
            self._closed = True
            sessions = list(self._sessions.values())
        for session in sessions:
            with contextlib.suppress(SessionStateError):  # finished concurrently
                session.end()
        self._heartbeat.stop(min(1.0, _left(deadline)))
        if self._presence is not None:
            self._presence.close()
        delivered = self._delivery.stop(_left(deadline))
        atexit.unregister(self._at_exit)
        undelivered = len(self._outbox)
        lost = self._outbox.close(_left(deadline))
        if not delivered and lost < undelivered:
            log.warning(
                "closed with %d events undelivered: kept for the next start", undelivered - lost
            )
        if lost:
            log.warning("closed with %d events undelivered: lost", lost)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------

    def _emit(
        self,
        entries: Sequence[Entry],
        checkpoints: Mapping[str, Checkpoint],
        completes: str | None = None,
        *,
        finished: bool = True,
    ) -> None:
        """Queue ``entries``; ``finished``: a run ended, so they are sent at once."""
        admission = self._outbox.put_many(entries, checkpoints, completes=completes)
        self._counters.add("coalesced", admission.coalesced)
        if admission.dropped:
            ids = tuple(dropped.id for dropped in admission.dropped)
            log.warning("outbox full: dropped %d events: %s", len(ids), ", ".join(ids))
            self._dropped(ids)
        if entries:  # a checkpoint alone is nothing to deliver
            self._delivery.notify(now=finished)

    def _forget(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(session.run_id, None)
            busy = bool(self._sessions)
        if not busy:
            self._heartbeat.rest()

    def _tick(self, scheduled_ms: int) -> None:
        """Close every running session's window and enqueue them all in one write."""
        with self._lock:
            sessions = list(self._sessions.values())
        self._delivery.watch_wall_clock()
        # A tick that woke up late is a sign that the machine slept; the time spent
        # here on earlier sessions is not: every session is given the lateness of
        # the wake-up, measured once.
        late_ms = self._clock.monotonic_ms() - scheduled_ms
        entries: list[Entry] = []
        checkpoints: dict[str, Checkpoint] = {}
        with contextlib.ExitStack() as held:
            for session in sessions:
                try:
                    if not held.enter_context(closing_for_tick(session)):
                        continue  # completed or ended meanwhile
                    closed, checkpoint = close_tick_window(session, late_ms, self._durable)
                except Exception as exc:  # noqa: BLE001 - one bad session must not stop the others
                    self._crashed(exc)
                    continue
                entries += closed
                if checkpoint is not None:
                    checkpoints[checkpoint.template.segment] = checkpoint
            # Still under every session's emit lock: no completion can overtake these.
            if entries or checkpoints:
                self._emit(entries, checkpoints, finished=False)

    def _every_second(self) -> bool:
        """Between ticks: read the OS's presence, leave the spool a sign of life, send
        the windows held back once due. False when none of that is needed before the
        next tick: no presence to poll, and every session past its inactive cutoff."""
        # OS input and a locked screen reach the sessions before the next tick.
        self._poll_presence()
        self._delivery.send_held()
        if not self._durable:
            return self._presence is not None
        with self._lock:
            sessions = list(self._sessions.values())
        counting = any(not dormant(session) for session in sessions)
        if counting:
            self._alive(sessions)
        return counting or self._presence is not None

    def _wake_heartbeat(self) -> None:
        """Input woke a session past its cutoff: its sign of life must resume at once."""
        self._heartbeat.hurry()

    def _poll_presence(self) -> bool:
        """Apply what the OS reports to every open session; False when there was nothing to do."""
        if self._presence is None:  # the common case: asked once a second
            return False
        with self._lock:
            sessions = list(self._sessions.values())
        if not sessions:
            return False
        self._presence.poll(sessions, self._crashed)
        return True

    def _alive(self, sessions: list[Session]) -> None:
        """Tell the spool how far every running session is (cheap, not durable)."""
        checkpoints = []
        for session in sessions:
            try:
                checkpoint = alive_checkpoint(session)
            except Exception as exc:  # noqa: BLE001 - one bad session must not stop the others
                self._crashed(exc)
                continue
            if checkpoint is not None:
                checkpoints.append(checkpoint)
        self._outbox.mark_alive(self._clock.monotonic_ms(), self._clock.wall_ms(), checkpoints)

    def _dropped(self, ids: tuple[str, ...]) -> None:
        """Events were dropped to make room (in a put, or for recovered windows)."""
        self._counters.add("dropped", len(ids))
        self._report_later(DeliveryFailure("outbox full", None, ids))

    def _damaged(self, what: str, reason: str) -> None:
        """A damaged spool row was set aside: counted and reported like a dead letter."""
        self._counters.add("dead_lettered")
        self._report_later(DeliveryFailure(f"{reason}: {what}"))

    def _crashed(self, exc: BaseException) -> None:
        self._counters.add("internal_errors")
        log.error("unexpected error in the heartbeat thread; it goes on", exc_info=exc)
        self._delivery.report_later(DeliveryFailure(f"internal error: {type(exc).__name__}"))

    def _report(self, failure: DeliveryFailure) -> None:
        callback = self._config.on_error
        if callback is None:
            return
        try:
            callback(failure)
        except Exception:
            log.exception("on_error raised; ignored")

    def _after_fork_in_child(self) -> None:
        # Threads do not survive fork and locks may be held by them: start over.
        # Events queued before the fork stay the parent's to send, and the
        # parent's sessions stay the parent's: using one here raises.
        for session in self._sessions.values():
            detach(session, "owned by the parent process")
        self._start_machinery()

    def _at_exit(self) -> None:
        try:
            self.close()
        except Exception:
            log.exception("closing the tracker at exit failed")


_TRACKERS: weakref.WeakSet[Tracker] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for tracker in list(_TRACKERS):
        tracker._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _open_outbox(
    config: TrackerConfig,
    on_damage: Callable[[str, str], None],
    on_drop: Callable[[tuple[str, ...]], None],
) -> Outbox:
    if config.spool_path is None:
        return MemoryOutbox(config.max_queue)
    from timeback_tracker._spool import open_outbox  # sqlite3 only when a spool is used

    return open_outbox(
        config.spool_path,
        config.max_queue,
        sensor=config.sensor,
        endpoint=config.endpoint,
        on_damage=on_damage,
        on_drop=on_drop,
    )


def _run_uuid(run_id: str | uuid.UUID | None) -> uuid.UUID:
    if run_id is None:
        return uuid.uuid4()
    if isinstance(run_id, uuid.UUID):
        return run_id
    if isinstance(run_id, str):
        try:
            return uuid.UUID(run_id)
        except ValueError:
            pass
    raise ValidationError.single("run_id", "must be a UUID (or None for a new one)")
