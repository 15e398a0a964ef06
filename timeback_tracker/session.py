"""``Session``: the thread-safe public face of one activity run.

Session calls only take a lock, read the monotonic clock and update a few
numbers; they never touch the network. Windows are closed by the heartbeat
thread, and by ``complete()``/``end()``, which also enqueue the events.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType

from timeback_tracker._accounting import RunAccounting, Window
from timeback_tracker._clock import Clock
from timeback_tracker._events import RunTemplate
from timeback_tracker._outbox import AlreadyCompletedError, Checkpoint, Entry
from timeback_tracker.exceptions import SessionStateError, ValidationError
from timeback_tracker.models import TimebackActivityContext, TimebackUser

log = logging.getLogger("timeback_tracker.session")

__all__ = ["Session"]

Emit = Callable[[Sequence[Entry], Mapping[str, Checkpoint], "str | None"], None]
"""How a session hands its events to the tracker: entries, checkpoint changes, completed run."""

_LOCK_PATIENCE = 2.0
"""Seconds a state change waits for the session's lock before it says something is wrong."""


class Session:
    """One activity run of one student: start, pause, resume, touch, complete or end.

    Create sessions with :meth:`Tracker.start_session
    <timeback_tracker.Tracker.start_session>`, not directly. Every method is
    safe to call from any thread. After :meth:`complete` or :meth:`end`,
    ``pause()``/``resume()``/``complete()``/``end()`` raise
    :class:`~timeback_tracker.SessionStateError` and ``touch()`` does nothing.

    Used as a context manager, the session is ended (without completion) on
    exit unless it was completed inside the ``with`` block.

    Signal handlers run on the main thread between two steps of whatever it
    was doing, possibly inside this session's own ``complete()``: there,
    ``end()`` and ``complete()`` raise ``SessionStateError`` at once instead of
    waiting for themselves. Set a flag in the handler and end the session from
    the main loop.
    """

    def __init__(
        self,
        *,
        user: TimebackUser,
        activity: TimebackActivityContext,
        template: RunTemplate,
        accounting: RunAccounting,
        clock: Clock,
        emit: Emit,
        finished: Callable[[Session], None],
        woke: Callable[[], None],
    ) -> None:
        self._user = user
        self._activity = activity
        self._template = template
        self._run_id = template.run_id
        self._accounting = accounting
        self._clock = clock
        self._monotonic_ns = clock.monotonic_ns
        self._emit = emit
        self._finished = finished
        self._woke = woke  # input woke a dormant run: it counts time again
        # _lock guards the accounting and is held for microseconds. _emit_lock
        # orders whole "close a window and enqueue it" steps, so the heartbeat
        # and complete() never interleave their events, without making touch()
        # wait for an enqueue. _emitting names the thread holding _emit_lock:
        # a signal handler re-entering on that thread must not wait for itself.
        self._lock = threading.Lock()
        self._emit_lock = threading.Lock()
        self._emitting: int | None = None
        self._outcome: str | None = None  # "completed" or "ended"

    def __repr__(self) -> str:
        return (
            f"<Session run_id={self._run_id} state={self.state} "
            f"active={self.active_seconds:.3f}s inactive={self.inactive_seconds:.3f}s>"
        )

    # -- read-only facts ---------------------------------------------------------

    @property
    def run_id(self) -> str:
        """The UUID shared by every event of this run (``extensions.runId``)."""
        return self._run_id

    @property
    def user(self) -> TimebackUser:
        """The student."""
        return self._user

    @property
    def activity(self) -> TimebackActivityContext:
        """The activity context."""
        return self._activity

    @property
    def course_id(self) -> str | None:
        """The course id sent as ``extensions.courseId``, if any."""
        return self._template.course_id

    @property
    def state(self) -> str:
        """Where the run stands now; time is active only while ``"running"``.

        * ``"running"``: counting active time.
        * ``"paused"``: inactive after :meth:`pause` until :meth:`resume`, or
          while the screen is locked (with ``presence="os"``) until it unlocks.
        * ``"idle"``: inactive because no input came for ``idle_timeout``
          seconds, until the next input.
        * ``"completed"``: after :meth:`complete`; nothing more is counted.
        * ``"ended"``: after :meth:`end` (or the tracker's ``close()``).
        """
        with self._lock:
            if self._outcome:
                return "completed" if self._outcome == "completed" else "ended"
            return self._accounting.state(self._monotonic_ns() // 1_000_000)

    @property
    def current_window(self) -> tuple[int, float] | None:
        """(number, seconds so far) of the open window, or None while nothing is open.

        Numbers start at 0 in every segment of a run (each ``start_session()``).
        """
        with self._lock:
            if self._outcome:
                return None
            window = self._accounting.open_window(self._monotonic_ns() // 1_000_000)
        if window is None:
            return None
        return window.seq, (window.end_wall_ms - window.start_wall_ms) / 1000

    @property
    def active_seconds(self) -> float:
        """Active seconds counted so far, the open window included."""
        with self._lock:
            return self._accounting.totals(self._monotonic_ns() // 1_000_000)[0] / 1000

    @property
    def inactive_seconds(self) -> float:
        """Inactive seconds counted so far, the open window included."""
        with self._lock:
            return self._accounting.totals(self._monotonic_ns() // 1_000_000)[1] / 1000

    # -- the app's calls -----------------------------------------------------------

    def touch(self) -> None:
        """Record input from the student (for idle detection). Call it freely: under a microsecond.

        After :meth:`complete` or :meth:`end` it does nothing: UI handlers may
        keep firing after a lesson ends.
        """
        with self._lock:
            try:  # the hot path: no check of our own, the accounting raises once ended
                woke = self._accounting.touch(self._monotonic_ns() // 1_000_000)
            except SessionStateError:
                return  # completed or ended: input changes nothing any more
        if woke:
            self._woke()

    def pause(self) -> None:
        """Stop counting active time (e.g. the window lost focus). Idempotent.

        Raises:
            SessionStateError: The session was completed or ended.
        """
        # The lock by hand, not _locked(): a generator context costs more than the
        # call. Positional arguments: `timeout=` alone would cost 0.3-0.5 µs (a
        # keyword parse in the C call), more than the accounting does here.
        if not self._lock.acquire(True, _LOCK_PATIENCE):
            raise self._stuck("pause")
        try:
            if self._outcome:
                raise self._finished_error("pause")
            self._accounting.pause(self._monotonic_ns() // 1_000_000)
        finally:
            self._lock.release()

    def resume(self) -> None:
        """Count active time again after :meth:`pause`; counts as input. Idempotent.

        Raises:
            SessionStateError: The session was completed or ended.
        """
        if not self._lock.acquire(True, _LOCK_PATIENCE):  # positional: see pause()
            raise self._stuck("resume")
        try:
            if self._outcome:
                raise self._finished_error("resume")
            woke = self._accounting.resume(self._monotonic_ns() // 1_000_000)
        finally:
            self._lock.release()
        if woke:
            self._woke()

    def complete(
        self,
        xp_earned: float,
        *,
        total_questions: int | None = None,
        correct_questions: int | None = None,
        mastered_units: int | None = None,
        pct_complete: float | None = None,
    ) -> None:
        """Complete the activity: send the final window, then the ActivityCompletedEvent.

        All or nothing: if a metric is invalid, the run was completed before,
        or the call is interrupted (Ctrl-C), nothing is recorded and the
        session keeps running, so the call can be made again.

        Args:
            xp_earned: XP for this run, >= 0 (1 XP = 1 focused minute); the app decides it.
            total_questions: Questions in the activity (give with ``correct_questions``).
            correct_questions: Questions answered correctly (<= ``total_questions``).
            mastered_units: NEW units mastered in this run (incremental, never a total).
            pct_complete: Course completion percentage, 0-100.

        Raises:
            ValidationError: A metric breaks a rule; the message names it.
            SessionStateError: The session was completed or ended, or this
                run was completed before (by this tracker or one sharing its spool).
        """
        metrics = {
            "xp_earned": xp_earned,
            "total_questions": total_questions,
            "correct_questions": correct_questions,
            "mastered_units": mastered_units,
            "pct_complete": pct_complete,
        }
        with self._emitting_lock("complete"):
            with self._locked("complete"):
                now = self._monotonic_ns() // 1_000_000
                wall = self._clock.wall_ms()
            # Validated before anything changes (raises ValidationError).
            if _is_number(xp_earned) and xp_earned < 0:
                # The wire allows a negative xpEarned (the validator accepts it), but a
                # run cannot earn less than nothing: from an app it is a bug, not a value.
                raise ValidationError.single("xp_earned", "must be >= 0 (1 XP = 1 focused minute)")
            completion = Entry.completion(self._template, wall, **metrics)
            with self._locked("complete"):
                before = self._accounting.snapshot()
                windows = self._accounting.end(now, wall)
                active_ms = self._accounting.totals(now)[0]
            try:
                entries = self._entries(windows)
                if windows and windows[-1].end_wall_ms > completion.event_time_ms:
                    # The completion comes after the last window, on the wire too.
                    completion = Entry.completion(
                        self._template, windows[-1].end_wall_ms, **metrics
                    )
                entries.append(completion)
                self._emit(entries, self._finished_checkpoint(), self._run_id)
                self._outcome = "completed"
            except AlreadyCompletedError:
                self._rewind(before)
                raise SessionStateError(
                    f"run {self._run_id} was completed before: a run has one completion"
                ) from None
            except BaseException:
                self._rewind(before)  # nothing was recorded: the session runs on
                raise
        self._finished(self)
        log.debug("run %s completed (%d windows in the last step)", self._run_id, len(windows))
        _warn_if_xp_implausible(self._run_id, xp_earned, active_ms)

    def end(self) -> None:
        """Stop without completion: the open window is sent at once, nothing after it.

        Raises:
            SessionStateError: The session was completed or ended.
        """
        with self._emitting_lock("end"):
            with self._locked("end"):
                before = self._accounting.snapshot()
                windows = self._accounting.end(
                    self._monotonic_ns() // 1_000_000, self._clock.wall_ms()
                )
            try:
                self._emit(self._entries(windows), self._finished_checkpoint(), None)
                self._outcome = "ended"
            except BaseException:
                self._rewind(before)
                raise
        self._finished(self)

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._outcome:
            self.end()

    def _finished_checkpoint(self) -> dict[str, Checkpoint]:
        """The checkpoint change of a finished segment: nothing left to recover."""
        return {self._template.segment: Checkpoint(self._template, None, 0, 0)}

    def _rewind(self, snapshot: list[object]) -> None:
        """Undo a finish whose events were not recorded: the session runs on."""
        with self._lock:
            self._accounting = RunAccounting.restore(snapshot)

    def _entries(self, windows: list[Window]) -> list[Entry]:
        template = self._template
        # Their age counts from now, on the wall clock as it is now (it may have been set).
        now = self._clock.wall_ms()
        return [
            Entry.window(
                template,
                window.seq,
                window.seq,
                window.start_wall_ms,
                window.end_wall_ms,
                window.active_ms,
                window.inactive_ms,
                now,
            )
            for window in windows
        ]

    @contextmanager
    def _emitting_lock(self, call: str) -> Iterator[None]:
        if self._emitting == threading.get_ident():
            raise SessionStateError(
                f"{call}() was called while this thread is inside complete()/end() of the "
                f"same session (from a signal handler?): set a flag there instead"
            )
        with self._emit_lock:
            self._emitting = threading.get_ident()
            try:
                yield
            finally:
                self._emitting = None

    @contextmanager
    def _locked(self, call: str) -> Iterator[None]:
        """The state lock for a state change, which must be allowed (not finished)."""
        if not self._lock.acquire(timeout=_LOCK_PATIENCE):
            raise self._stuck(call)
        try:
            if self._outcome:
                raise self._finished_error(call)
            yield
        finally:
            self._lock.release()

    def _stuck(self, call: str) -> SessionStateError:
        return SessionStateError(
            f"{call}(): the session's lock was not free within {_LOCK_PATIENCE:g} s "
            f"(called from a signal handler that interrupted this session's own call?)"
        )

    def _finished_error(self, call: str) -> SessionStateError:
        return SessionStateError(
            f"session {self._run_id} is {self._outcome}: {call}() is not allowed any more"
        )


# -- for the tracker, OS presence and the GUI integrations ---------------------------------
# Module functions, not methods: the app sees only its own calls on a Session,
# and no other module reaches into a session's private state.


def apply_presence(session: Session, input_at_ms: int | None, locked: bool | None) -> None:
    """Apply what OS presence saw (heartbeat thread): the last input's monotonic
    time and the lock state, each ``None`` when unknown."""
    with session._lock:
        if session._outcome:
            return
        now = session._monotonic_ns() // 1_000_000
        try:
            if input_at_ms is not None:
                session._accounting.input_at(input_at_ms, now)
            if locked is not None:
                session._accounting.set_locked(now, locked)
        except SessionStateError:
            # complete() or end() is sending the last window: the run's time has
            # stopped, its outcome is not set yet. Nothing more counts.
            return


def paused_by_app(session: Session) -> bool:
    """True between pause() and resume(), a lock aside (integrations leave that pause alone)."""
    with session._lock:
        return session._accounting.paused_by_app


def default_idle_timeout(session: Session, seconds: float | None) -> None:
    """Use an idle timeout of ``seconds`` from now on if the tracker's config sets none."""
    if seconds is None:
        return
    with session._lock:
        if session._outcome or session._accounting.idle_timeout_ms is not None:
            return
        session._accounting.set_idle_timeout(
            session._monotonic_ns() // 1_000_000, round(seconds * 1000)
        )


@contextmanager
def closing_for_tick(session: Session) -> Iterator[bool]:
    """Hold the session's emit lock for a tick; yields False when the session is finished."""
    with session._emit_lock:
        session._emitting = threading.get_ident()
        try:
            yield session._outcome is None
        finally:
            session._emitting = None


def close_tick_window(
    session: Session, late_ms: int, durable: bool
) -> tuple[list[Entry], Checkpoint | None]:
    """Close the open window at a tick (heartbeat thread, inside :func:`closing_for_tick`).

    Args:
        session: The session.
        late_ms: How late the tick woke up (a sign that the machine slept).
        durable: Whether a checkpoint of what stays open is wanted (a spool).

    Returns:
        The closed windows' entries and, with a spool, the checkpoint of
        what stays open: none for a run that stayed past its cutoff (its last
        checkpoint says so already, and an idle kiosk writes nothing).
    """
    with session._lock:
        # Read under the lock: the app's calls must never see time go back.
        now = session._monotonic_ns() // 1_000_000
        wall = session._clock.wall_ms()
        was_dormant = session._accounting.dormant
        windows = session._accounting.close_window(now, wall, scheduled_ms=now - late_ms)
        still = was_dormant and session._accounting.dormant and not windows
        state = session._accounting.snapshot() if durable and not still else None
    entries = session._entries(windows)
    if state is None:
        return entries, None
    return entries, Checkpoint(session._template, state, now, wall)


def alive_checkpoint(session: Session) -> Checkpoint | None:
    """The state of the run now, for the spool's sign of life; None once finished."""
    with session._lock:
        if session._outcome:
            return None
        now = session._monotonic_ns() // 1_000_000
        return Checkpoint(
            session._template, session._accounting.snapshot(), now, session._clock.wall_ms()
        )


def dormant(session: Session) -> bool:
    """Whether the run counts no time until input (past its cutoff, or finished)."""
    with session._lock:
        return bool(session._outcome) or session._accounting.dormant


def detach(session: Session, outcome: str) -> None:
    """Make the session unusable here (in a forked child), without emitting anything."""
    session._lock = threading.Lock()
    session._emit_lock = threading.Lock()
    session._emitting = None
    session._outcome = outcome
    session._accounting.end(session._monotonic_ns() // 1_000_000, session._clock.wall_ms())


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# XP beyond active minutes by this much is worth a warning (1 XP = 1 focused minute).
_XP_SLACK_MINUTES = 1.0
_XP_SLACK_RATIO = 1.5


def _warn_if_xp_implausible(run_id: str, xp_earned: float, active_ms: int) -> None:
    active_minutes = active_ms / 60_000
    if xp_earned > active_minutes * _XP_SLACK_RATIO + _XP_SLACK_MINUTES:
        log.warning(
            "run %s: xp_earned=%g exceeds the %.1f active minutes counted "
            "(1 XP = 1 focused minute); sent unchanged",
            run_id,
            xp_earned,
            active_minutes,
        )
