"""``Session``: the thread-safe public face of one activity run.

Session calls only take a lock, read the monotonic clock and update a few
numbers; they never touch the network. Windows are closed by the heartbeat
thread, and by ``complete()``/``end()``, which also enqueue the events.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from types import TracebackType

import attrs

from timeback_tracker._accounting import RunAccounting, Window
from timeback_tracker._clock import Clock, utc_from_ms
from timeback_tracker._outbox import Entry, completion_event_id, time_spent_event_id
from timeback_tracker.exceptions import SessionStateError
from timeback_tracker.models import (
    ActivityCompletedEvent,
    TimebackActivityContext,
    TimebackUser,
    TimeSpentEvent,
)

log = logging.getLogger("timeback_tracker.session")

__all__ = ["Session"]


class Session:
    """One activity run of one student: start, pause, resume, touch, complete or end.

    Create sessions with :meth:`Tracker.start_session
    <timeback_tracker.Tracker.start_session>`, not directly. Every method is
    safe to call from any thread. After :meth:`complete` or :meth:`end`,
    :meth:`touch` does nothing (UI handlers may keep firing), and the other
    state-changing calls raise :class:`~timeback_tracker.SessionStateError`.

    Used as a context manager, the session is ended (without completion) on
    exit unless it was completed inside the ``with`` block.
    """

    def __init__(
        self,
        *,
        user: TimebackUser,
        activity: TimebackActivityContext,
        run_id: uuid.UUID,
        course_id: str | None,
        accounting: RunAccounting,
        clock: Clock,
        emit: Callable[[list[Entry], dict[str, Entry | None]], None],
        finished: Callable[[Session], None],
        checkpoints: bool = False,
    ) -> None:
        self._user = user
        self._activity = activity
        self._run = run_id
        self._run_id = str(run_id)
        self._course_id = course_id
        self._accounting = accounting
        self._clock = clock
        self._monotonic_ns = clock.monotonic_ns
        self._emit = emit
        self._finished = finished
        self._checkpoints = checkpoints
        # _lock guards the accounting and is held for microseconds. _emit_lock
        # orders whole "close a window and enqueue it" steps, so the heartbeat
        # and complete() never interleave their events, without making touch()
        # wait for an enqueue.
        self._lock = threading.Lock()
        self._emit_lock = threading.Lock()
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
        return self._course_id

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
                return self._outcome if self._outcome == "completed" else "ended"
            return self._accounting.state(self._monotonic_ns() // 1_000_000)

    @property
    def current_window(self) -> tuple[int, float] | None:
        """(number, seconds so far) of the open window, or None while nothing is open.

        Numbers start at 0 and are the ``seq`` of the window's deterministic event id.
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
        """Record input from the student (for idle detection). Call it freely: ~1 µs.

        After :meth:`complete` or :meth:`end` it does nothing: input handlers
        keep firing after a lesson ends, and there is nothing left to count.
        """
        with self._lock:
            try:  # the hot path: no check of our own, the accounting raises once ended
                self._accounting.touch(self._monotonic_ns() // 1_000_000)
            except SessionStateError:
                if self._outcome not in _FINISHED:  # a forked child's copy of a run
                    raise self._state_error("touch") from None

    def pause(self) -> None:
        """Stop counting active time (e.g. the window lost focus). Idempotent.

        Raises:
            SessionStateError: The session was completed or ended.
        """
        with self._lock:
            if self._outcome:
                raise self._state_error("pause")
            self._accounting.pause(self._monotonic_ns() // 1_000_000)

    def resume(self) -> None:
        """Count active time again after :meth:`pause`; counts as input. Idempotent.

        Raises:
            SessionStateError: The session was completed or ended.
        """
        with self._lock:
            if self._outcome:
                raise self._state_error("resume")
            self._accounting.resume(self._monotonic_ns() // 1_000_000)

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

        The metrics are validated first: if one is invalid, nothing changes and
        the session keeps running.

        Args:
            xp_earned: XP for this run (1 XP = 1 focused minute); the app decides it.
            total_questions: Questions in the activity (give with ``correct_questions``).
            correct_questions: Questions answered correctly (<= ``total_questions``).
            mastered_units: NEW units mastered in this run (incremental, never a total).
            pct_complete: Course completion percentage, 0-100.

        Raises:
            ValidationError: A metric breaks a rule; the message names it.
            SessionStateError: The session was already completed or ended.
        """
        with self._emit_lock:
            with self._lock:
                if self._outcome:
                    raise self._state_error("complete")
            completion = ActivityCompletedEvent.for_completion(
                user=self._user,
                activity=self._activity,
                run_id=self._run,
                event_time=utc_from_ms(self._clock.wall_ms()),
                xp_earned=xp_earned,
                total_questions=total_questions,
                correct_questions=correct_questions,
                mastered_units=mastered_units,
                pct_complete=pct_complete,
                course_id=self._course_id,
                event_id=completion_event_id(self._run),
            )
            windows, active_ms = self._finish("completed")
            entries = self._entries(windows)
            last_end = utc_from_ms(windows[-1].end_wall_ms) if windows else None
            if last_end is not None and last_end > completion.event_time:
                # The completion comes after the last window, on the wire too.
                completion = attrs.evolve(completion, event_time=last_end)
            entries.append(Entry.of(completion))
            self._emit(entries, {self._run_id: None})
        self._finished(self)
        log.debug("run %s completed (%d windows in the last step)", self._run_id, len(windows))
        _warn_if_xp_implausible(self._run_id, xp_earned, active_ms)

    def end(self) -> None:
        """Stop without completion: the open window is sent at once, nothing after it.

        Raises:
            SessionStateError: The session was already completed or ended.
        """
        with self._emit_lock:
            with self._lock:
                if self._outcome:
                    raise self._state_error("end")
            windows, _ = self._finish("ended")
            self._emit(self._entries(windows), {self._run_id: None})
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

    # -- for the tracker, OS presence and the GUI integrations --------------------------

    def _presence(self, input_at_ms: int | None, locked: bool | None) -> None:
        """Apply what OS presence saw (heartbeat thread): the last input's
        monotonic time and the lock state, each ``None`` when unknown."""
        with self._lock:
            if self._outcome:
                return
            now = self._monotonic_ns() // 1_000_000
            if input_at_ms is not None:
                self._accounting.input_at(input_at_ms, now)
            if locked is not None:
                self._accounting.set_locked(now, locked)

    @property
    def _paused_by_app(self) -> bool:
        """True between pause() and resume(), a lock aside (integrations leave that pause alone)."""
        with self._lock:
            return self._accounting.paused_by_app

    def _default_idle_timeout(self, seconds: float | None) -> None:
        """Use an idle timeout of ``seconds`` from now on if the tracker's config sets none."""
        if seconds is None:
            return
        with self._lock:
            if self._outcome or self._accounting.idle_timeout_ms is not None:
                return
            self._accounting.set_idle_timeout(
                self._monotonic_ns() // 1_000_000, round(seconds * 1000)
            )

    def _heartbeat(self, scheduled_ms: int) -> None:
        """Close the open window and enqueue it (heartbeat thread)."""
        with self._emit_lock:
            with self._lock:
                if self._outcome:
                    return
                now = self._monotonic_ns() // 1_000_000
                windows = self._accounting.close_window(
                    now, self._clock.wall_ms(), scheduled_ms=scheduled_ms
                )
                opened = self._accounting.open_window(now) if self._checkpoints else None
            checkpoints = {self._run_id: self._entry(opened)} if self._checkpoints else {}
            if windows or checkpoints:
                self._emit(self._entries(windows), checkpoints)

    def _checkpoint(self) -> None:
        """Save the open window, to be sent if this process dies (heartbeat thread).

        Under the emit lock, so that a checkpoint never lands after the run's
        final window: recovering it would send that window's id twice.
        """
        with self._emit_lock:
            with self._lock:
                if self._outcome:
                    return
                opened = self._accounting.open_window(self._monotonic_ns() // 1_000_000)
            self._emit([], {self._run_id: self._entry(opened)})

    def _entry(self, window: Window | None) -> Entry | None:
        return None if window is None else self._entries([window])[0]

    def _finish(self, outcome: str) -> tuple[list[Window], int]:
        with self._lock:
            now = self._monotonic_ns() // 1_000_000
            windows = self._accounting.end(now, self._clock.wall_ms())
            self._outcome = outcome
            return windows, self._accounting.totals(now)[0]

    def _entries(self, windows: list[Window]) -> list[Entry]:
        return [
            Entry.of(
                TimeSpentEvent.for_window(
                    user=self._user,
                    activity=self._activity,
                    run_id=self._run,
                    start=utc_from_ms(window.start_wall_ms),
                    end=utc_from_ms(window.end_wall_ms),
                    active_seconds=window.active_ms / 1000,
                    inactive_seconds=window.inactive_ms / 1000,
                    course_id=self._course_id,
                    event_id=time_spent_event_id(self._run, window.seq),
                ),
                first_seq=window.seq,
                last_seq=window.seq,
            )
            for window in windows
        ]

    def _detach(self, outcome: str) -> None:
        """Make the session unusable here (in a forked child), without emitting anything."""
        self._lock = threading.Lock()
        self._emit_lock = threading.Lock()
        self._outcome = outcome
        self._accounting.end(self._monotonic_ns() // 1_000_000, self._clock.wall_ms())

    def _state_error(self, call: str) -> SessionStateError:
        return SessionStateError(
            f"session {self._run_id} is {self._outcome}: {call}() is not allowed any more"
        )


_FINISHED = ("completed", "ended")

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
