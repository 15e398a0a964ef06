"""Window accounting for one activity run: a pure state machine.

Turns ``pause``/``resume``/``touch`` calls and heartbeat ticks into closed
windows of active and inactive milliseconds. There are no threads, no I/O and
no clock reads here: every call is given the time, so the rules can be tested
exactly with integers, and the session makes it thread-safe with one lock.

Two things pause a run, independently: the app (``pause``/``resume``) and a
locked screen (``set_locked``, from OS presence). The run is inactive while
either holds, so an app resume during a lock waits for the unlock, and an
unlock leaves a run the app paused paused. Input the OS reports later
(``input_at``) counts at the instant it happened, as far as that instant was
not counted yet: calls never go back in time.

One module, longer than the ~600 lines others keep to: a single state
machine whose rules (idle, pause, lock, cutoff, sleep, clock steps, the size
limit, what a restored snapshot must satisfy) interact in every method;
split, they would have to be read side by side anyway.

Durations live on the monotonic clock. Wall dates are derived from an anchor,
``wall = anchor_wall + (mono - anchor_mono)``, so that in every window
``active_ms + inactive_ms == end_wall_ms - start_wall_ms`` holds exactly.
"""

from __future__ import annotations

import copy
from typing import Literal

import attrs

from timeback_tracker._rules import DAY_SECONDS
from timeback_tracker.exceptions import SessionStateError

__all__ = ["MAX_VALUE_MS", "RunAccounting", "State", "Window"]

MAX_VALUE_MS = DAY_SECONDS * 1000
"""The most active (or inactive) time one window reports: a day, the wire limit."""

State = Literal["running", "paused", "idle", "ended"]


def _is_slot_value(name: str, value: object) -> bool:
    # The slot's annotation is the rule: a flag holds a bool, _cutoff may be None,
    # every other slot holds an int (and a bool is not one).
    kind = str(RunAccounting.__annotations__[name])
    if kind == "bool":
        return isinstance(value, bool)
    if value is None:
        return kind.endswith("| None")
    return isinstance(value, int) and not isinstance(value, bool)


def _ints(values: object, count: int) -> list[int]:
    # A list once stored as JSON, a tuple straight from snapshot().
    if (
        not isinstance(values, (list, tuple))
        or len(values) != count
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    ):
        raise ValueError("not an accounting snapshot: a window")
    return list(values)


# An idle deadline no run ever reaches, so that "no idle timeout" needs no
# special case on the hot path of touch().
_NEVER = 1 << 62


@attrs.frozen
class Window:
    """One closed heartbeat window of a run.

    ``active_ms + inactive_ms == end_wall_ms - start_wall_ms > 0`` always holds.

    Attributes:
        seq: 0-based position among the windows of the run, without gaps.
        start_wall_ms: Start, epoch milliseconds UTC.
        end_wall_ms: End, epoch milliseconds UTC.
        active_ms: Time the student was active.
        inactive_ms: Time the run was paused or idle.
    """

    seq: int
    start_wall_ms: int
    end_wall_ms: int
    active_ms: int
    inactive_ms: int


class RunAccounting:
    """The accounting of one activity run (not thread-safe; the caller locks).

    Starts running; the start counts as input. ``now_ms`` arguments are
    monotonic milliseconds and never decrease from call to call; ``wall_ms``
    arguments are epoch milliseconds read at the same moment.

    Args:
        now_ms: Monotonic time of the start.
        wall_ms: Wall time of the start; with ``now_ms`` the initial anchor.
        idle_timeout_ms: Time without input after which time is inactive;
            ``None`` disables idle detection.
        inactive_cutoff_ms: A pause or idle span longer than this stops the
            reporting until ``resume()`` (or ``touch()`` when idle); ``None``
            means never.
        suspend_threshold_ms: A wall jump or a late tick larger than this is
            taken as the machine having slept.
    """

    __slots__ = (
        "_accrued_to",
        "_anchor_mono",
        "_anchor_wall",
        "_closed_active",
        "_closed_inactive",
        "_cutoff",
        "_dormant",
        "_ended",
        "_idle_after",
        "_idle_at",
        "_inactive_since",
        "_last_seen",
        "_locked",
        "_paused",
        "_paused_by_app",
        "_pending",
        "_seq",
        "_suspend_threshold",
        "_win_active",
        "_win_inactive",
        "_win_start",
        "_win_start_wall",
    )

    _accrued_to: int  # the open window is counted up to this instant
    _anchor_mono: int
    _anchor_wall: int
    _closed_active: int  # sums over closed windows (emitted or pending)
    _closed_inactive: int
    _cutoff: int | None
    _dormant: bool  # past the cutoff (or ended): nothing is open or counted
    _ended: bool
    _idle_after: int
    _idle_at: int  # last input + idle timeout; also encodes the last input
    _inactive_since: int  # start of the inactive span a pause belongs to
    _last_seen: int  # last pause/resume/lock/close_window (touch is in _idle_at)
    _locked: bool  # the screen is locked (OS presence)
    _paused: bool  # inactive by rule: _paused_by_app or _locked
    _paused_by_app: bool  # pause() without resume() since
    _pending: list[Window]  # closed, not yet handed out
    _seq: int  # seq of the open window
    _suspend_threshold: int
    _win_active: int
    _win_inactive: int
    _win_start: int
    _win_start_wall: int

    def __init__(
        self,
        *,
        now_ms: int,
        wall_ms: int,
        idle_timeout_ms: int | None = None,
        inactive_cutoff_ms: int | None = None,
        suspend_threshold_ms: int = 5_000,
    ) -> None:
        self._anchor_mono = now_ms
        self._anchor_wall = wall_ms
        self._idle_after = _NEVER if idle_timeout_ms is None else idle_timeout_ms
        self._cutoff = inactive_cutoff_ms
        self._suspend_threshold = suspend_threshold_ms
        self._idle_at = now_ms + self._idle_after
        self._inactive_since = now_ms
        self._last_seen = now_ms
        self._paused = False
        self._paused_by_app = False
        self._locked = False
        self._dormant = False
        self._ended = False
        self._seq = 0
        self._pending = []
        self._closed_active = 0
        self._closed_inactive = 0
        self._open(now_ms)

    def __repr__(self) -> str:
        return (
            f"<RunAccounting paused={self._paused} dormant={self._dormant} "
            f"ended={self._ended} next_seq={self.next_seq} pending={len(self._pending)}>"
        )

    @property
    def paused_by_app(self) -> bool:
        """True between ``pause()`` and ``resume()``, whether or not the screen is locked."""
        return self._paused_by_app

    @property
    def locked(self) -> bool:
        """True between ``set_locked(..., True)`` and ``set_locked(..., False)``."""
        return self._locked

    @property
    def dormant(self) -> bool:
        """Past the inactive cutoff, as of the last call that counted time: nothing is
        counted until input (``touch()``, ``resume()``) wakes the run."""
        return self._dormant

    @property
    def counted_to(self) -> int:
        """The monotonic milliseconds up to which time has been counted."""
        return self._accrued_to

    @property
    def idle_timeout_ms(self) -> int | None:
        """The idle timeout in force; ``None`` when there is none."""
        return None if self._idle_after == _NEVER else self._idle_after

    @property
    def next_seq(self) -> int:
        """The ``seq`` the next emitted window will get."""
        return self._pending[0].seq if self._pending else self._seq

    def state(self, now_ms: int) -> State:
        """The run's state at ``now_ms``.

        Args:
            now_ms: Monotonic time of the question.

        Returns:
            ``"ended"``, else ``"paused"`` (paused by the app or locked, even
            when also idle), else ``"idle"`` once the idle timeout has passed,
            else ``"running"``.
        """
        if self._ended:
            return "ended"
        if self._paused:
            return "paused"
        if self._dormant or now_ms > self._idle_at:
            return "idle"
        return "running"

    def pause(self, now_ms: int) -> None:
        """Pause: time is inactive from ``now_ms``. Idempotent when paused.

        Raises:
            SessionStateError: After ``end()``.
        """
        self._check("pause")
        self._last_seen = now_ms
        self._paused_by_app = True
        self._become_inactive(now_ms)

    def resume(self, now_ms: int) -> bool:
        """Resume (idempotent when running); counts as input.

        After a cutoff, a fresh window opens at ``now_ms``. While the screen is
        locked the run stays inactive until it is unlocked.

        Returns:
            True when this woke the run from dormancy (it counts time again).

        Raises:
            SessionStateError: After ``end()``.
        """
        self._check("resume")
        self._accrue(now_ms)
        self._paused_by_app = False
        if self._locked:
            self._idle_at = now_ms + self._idle_after  # input, as touch() while paused
            self._last_seen = now_ms
            return False
        self._paused = False
        return self._wake(now_ms)

    def set_locked(self, now_ms: int, locked: bool) -> None:
        """The screen was locked (or switched to another user) or unlocked at ``now_ms``.

        A lock makes the run inactive like ``pause()``, and the cutoff applies
        to it the same way. Unlocking counts as input (someone typed the
        password) and makes the run active again, unless the app paused it.
        Idempotent.

        Raises:
            SessionStateError: After ``end()``.
        """
        self._check("set_locked")
        if locked == self._locked:
            return
        self._last_seen = now_ms
        self._locked = locked
        if locked:
            self._become_inactive(now_ms)
        elif self._paused_by_app:
            self._idle_at = now_ms + self._idle_after
        else:
            self._accrue(now_ms)
            self._paused = False
            self._wake(now_ms)

    def input_at(self, at_ms: int, now_ms: int) -> None:
        """Record input that happened at ``at_ms`` and is reported at ``now_ms``.

        OS presence learns of input when it polls, up to a second late. The
        input counts as a ``touch()`` at ``at_ms``: an idle span before it is
        inactive, the time after it active. Where ``at_ms`` lies before time
        already counted (a tick or a pause since), the input counts from there
        instead; after ``now_ms``, from ``now_ms``. Input older than the last
        one known changes nothing.

        Raises:
            SessionStateError: After ``end()``.
        """
        self._check("input_at")
        # Counted time is final; past a cutoff nothing is counted, and a fresh
        # window must not open before the last tick (nor the anchor it moved).
        floor = max(self._accrued_to, self._last_seen) if self._dormant else self._accrued_to
        at = min(max(at_ms, floor), now_ms)
        if at <= self._idle_at:  # not idle at that instant: the timeout restarts from it
            self._idle_at = max(self._idle_at, at + self._idle_after)
        elif self._paused:
            self._idle_at = at + self._idle_after
        else:
            self._accrue(at)  # the idle span up to the input, before _idle_at forgets it
            self._wake(at)

    def set_idle_timeout(self, now_ms: int, idle_timeout_ms: int | None) -> None:
        """Change the idle timeout from ``now_ms`` on (``None``: no idle detection).

        Time already counted keeps its category: a run whose last input is
        older than the new timeout becomes idle at ``now_ms``, not before.

        Raises:
            SessionStateError: After ``end()``.
        """
        self._check("set_idle_timeout")
        self._accrue(now_ms)
        last_input = self._idle_at - self._idle_after
        self._idle_after = _NEVER if idle_timeout_ms is None else idle_timeout_ms
        self._idle_at = max(last_input + self._idle_after, now_ms)

    def touch(self, now_ms: int) -> bool:
        """Record input. While paused, only the input time is recorded.

        Returns:
            True when this woke the run from dormancy (it counts time again).

        Raises:
            SessionStateError: After ``end()``.
        """
        # Hot path (every key press): not idle, so nothing to account.
        # After end() _idle_at is far in the past and this falls through.
        if now_ms <= self._idle_at:
            self._idle_at = now_ms + self._idle_after
            return False
        self._check("touch")
        if self._paused:
            self._idle_at = now_ms + self._idle_after
            return False
        # The idle span [_idle_at, now_ms] must be counted before
        # _idle_at moves on and forgets where it began.
        self._accrue(now_ms)
        return self._wake(now_ms)

    def close_window(
        self, now_ms: int, wall_ms: int, *, scheduled_ms: int | None = None
    ) -> list[Window]:
        """Close the open window at ``now_ms`` (a heartbeat tick) and open the next.

        Also detects that the machine slept: a wall jump ahead of the monotonic
        clock, or a tick more than the suspend threshold past ``scheduled_ms``.
        The sleep is reported as neither active nor inactive.

        Args:
            now_ms: Monotonic time of the tick.
            wall_ms: Wall time of the tick.
            scheduled_ms: Monotonic time the tick was due, if known.

        Returns:
            The windows closed since the last call, oldest first: none while
            dormant or when the open window is empty, two after a cutoff
            followed by a fresh window, more when a window had to be split.

        Raises:
            SessionStateError: After ``end()``.
        """
        self._check("close_window")
        if scheduled_ms is not None and now_ms - scheduled_ms > self._suspend_threshold:
            # The monotonic clock ran through the sleep (Windows): cut the time
            # since the run was last seen out of the timeline.
            seen = max(self._last_seen, self._idle_at - self._idle_after)
            self._accrue(seen)
            self._close(seen)
            if not self._dormant:
                # The sleep counts toward neither the idle timeout nor the cutoff.
                self._idle_at += now_ms - seen
                self._inactive_since += now_ms - seen
            self._reanchor(now_ms, wall_ms)
        elif abs((wall_ms - self._anchor_wall) - (now_ms - self._anchor_mono)) > (
            self._suspend_threshold
        ):
            # The wall clock moved apart from the monotonic one: the machine slept
            # and its monotonic clock stopped (Linux, macOS), or the clock was set,
            # either way. Durations are right; only the dates of what follows move.
            self._accrue(now_ms)
            self._close(now_ms)
            self._reanchor(now_ms, wall_ms)
        else:
            self._accrue(now_ms)
            self._close(now_ms)
        self._last_seen = now_ms
        return self._drain()

    def end(self, now_ms: int, wall_ms: int) -> list[Window]:
        """Close what is open, however short, and end the run.

        Args:
            now_ms: Monotonic time of the end.
            wall_ms: Wall time of the end (unused: the last window keeps the
                current anchor, and no window follows that a jump could move).

        Returns:
            Every window not yet handed out, oldest first.

        Raises:
            SessionStateError: After ``end()``.
        """
        self._check("end")
        self._accrue(now_ms)
        self._close(now_ms)
        self._ended = True
        self._dormant = True
        self._idle_at = -_NEVER  # sends touch() to its slow path, which raises
        return self._drain()

    _SNAPSHOT_VERSION = 2  # 2: the lock state of OS presence

    def snapshot(self) -> list[object]:
        """The whole state as a JSON-ready list, for :meth:`restore` in another process.

        The accounting is deterministic between calls, so a snapshot and the
        time of the last sign of life are enough to rebuild the open window
        after a crash (see ``_spool.py``).
        """
        values: list[object] = [self._SNAPSHOT_VERSION]
        for name in self.__slots__:
            value = getattr(self, name)
            values.append([attrs.astuple(w) for w in value] if name == "_pending" else value)
        return values

    @classmethod
    def snapshot_seq(cls, snapshot: object) -> int:
        """The ``next_seq`` a :meth:`snapshot` describes, without restoring it; -1 if damaged."""
        try:
            pending = snapshot[1 + cls.__slots__.index("_pending")]  # type: ignore[index]
            seq = pending[0][0] if pending else snapshot[1 + cls.__slots__.index("_seq")]  # type: ignore[index]
        except (TypeError, IndexError, KeyError):
            return -1
        return seq if isinstance(seq, int) and not isinstance(seq, bool) else -1

    @classmethod
    def restore(cls, snapshot: object) -> RunAccounting:
        """The accounting a :meth:`snapshot` describes.

        Raises:
            ValueError: ``snapshot`` is not a snapshot of this version.
        """
        if (
            not isinstance(snapshot, list)
            or len(snapshot) != len(cls.__slots__) + 1
            or snapshot[0] != cls._SNAPSHOT_VERSION
        ):
            raise ValueError("not an accounting snapshot of this version")
        accounting = cls.__new__(cls)
        for name, stored in zip(cls.__slots__, snapshot[1:], strict=True):
            value = stored
            if name == "_pending":
                if not isinstance(stored, list):
                    raise ValueError("not an accounting snapshot: _pending")
                value = [Window(*_ints(window, 5)) for window in stored]
            elif not _is_slot_value(name, stored):
                raise ValueError(f"not an accounting snapshot: {name}")
            setattr(accounting, name, value)
        if accounting._ended:
            # Only running segments are stored (an ended one is "nothing to recover").
            raise ValueError("not an accounting snapshot: the run ended")
        # What every step keeps true of the open window. A damaged snapshot breaking
        # it would make the replay after a crash count backwards (a counter above
        # the size limit) or through 10^12 empty days: it would never return.
        open_ms = accounting._win_active + accounting._win_inactive
        if (
            not 0 <= accounting._win_active <= MAX_VALUE_MS
            or not 0 <= accounting._win_inactive <= MAX_VALUE_MS
            or accounting._accrued_to - accounting._win_start != open_ms
        ):
            raise ValueError("not an accounting snapshot: the open window does not add up")
        return accounting

    def totals(self, now_ms: int) -> tuple[int, int]:
        """Time counted so far, including the open window up to ``now_ms``.

        Args:
            now_ms: Monotonic time of the question.

        Returns:
            ``(active_ms, inactive_ms)``; time past a cutoff or asleep is not
            included, as it is never reported.
        """
        # Dormant or ended, nothing accrues: no probe to copy (complete() asks, once ended).
        probe = self if self._dormant else self._probe(now_ms)
        return (
            probe._closed_active + probe._win_active,
            probe._closed_inactive + probe._win_inactive,
        )

    def open_window(self, now_ms: int) -> Window | None:
        """The open window up to ``now_ms``, without closing it (for checkpoints).

        Windows that already closed on their own (at a cutoff, or split at the
        size limit) are not included; ``close_window()`` hands them out.

        Args:
            now_ms: Monotonic time of the snapshot.

        Returns:
            The window with the ``seq`` it will get when closed, or ``None``
            when nothing is open (ended, dormant) or it is still empty.
        """
        probe = self._probe(now_ms)
        if probe._dormant or probe._accrued_to == probe._win_start:
            return None
        return probe._snapshot()

    # -- internals ---------------------------------------------------------

    def _check(self, operation: str) -> None:
        if self._ended:
            raise SessionStateError(f"session ended: {operation}() is not allowed after end()")

    def _become_inactive(self, now: int) -> None:
        """Start an inactive stretch at ``now`` (a pause or a lock), unless one holds."""
        if self._paused:
            return
        self._accrue(now)
        self._paused = True
        # An idle span already under way continues as this pause: it is one
        # stretch of inactivity, and the cutoff counts from its start.
        self._inactive_since = min(self._idle_at, now)

    def _wall_at(self, mono: int) -> int:
        return self._anchor_wall + (mono - self._anchor_mono)

    def _open(self, at: int) -> None:
        self._win_start = at
        self._win_start_wall = self._wall_at(at)
        self._win_active = 0
        self._win_inactive = 0
        self._accrued_to = at

    def _snapshot(self) -> Window:
        length = self._accrued_to - self._win_start
        return Window(
            seq=self._seq,
            start_wall_ms=self._win_start_wall,
            end_wall_ms=self._win_start_wall + length,
            active_ms=self._win_active,
            inactive_ms=self._win_inactive,
        )

    def _close(self, at: int) -> None:
        """Move the open window, counted up to ``at``, to pending; open the next at ``at``."""
        if self._dormant:
            return
        if at > self._win_start:
            self._pending.append(self._snapshot())
            self._seq += 1
            self._closed_active += self._win_active
            self._closed_inactive += self._win_inactive
        self._open(at)

    def _reanchor(self, now: int, wall: int) -> None:
        # Backwards too: after the clock was set back, what follows is dated by
        # the clock as it now is (the next window then starts before the last ended).
        self._anchor_wall = wall
        self._anchor_mono = now
        if not self._dormant:
            self._open(now)

    def _wake(self, now: int) -> bool:
        """Input seen while not paused: leave dormancy (True if it was dormant), restart
        the idle timeout."""
        woke = self._dormant
        if woke:
            self._dormant = False
            self._open(now)
        self._idle_at = now + self._idle_after
        self._last_seen = now
        return woke

    def _drain(self) -> list[Window]:
        windows, self._pending = self._pending, []
        return windows

    def _probe(self, now: int) -> RunAccounting:
        """A copy accrued up to ``now``: reading must not count time that a
        late tick may still cut out as sleep."""
        probe = copy.copy(self)
        probe._pending = list(self._pending)
        probe._accrue(now)
        return probe

    def _accrue(self, to: int) -> None:
        """Count ``[_accrued_to, to)`` into the open window, one stretch of one
        category at a time, closing windows at a cutoff and at the size limit."""
        # Fast path, the rule on the app's thread (pause, resume): one stretch of
        # one category that reaches neither the idle timeout, the cutoff nor the
        # size limit. Same result as the loop below, in a third of its time.
        step = to - self._accrued_to
        if step > 0 and not self._dormant:
            if not self._paused:
                if to <= self._idle_at and self._win_active + step <= MAX_VALUE_MS:
                    self._win_active += step
                    self._accrued_to = to
                    return
            elif self._win_inactive + step <= MAX_VALUE_MS and (
                self._cutoff is None or to <= self._inactive_since + self._cutoff
            ):
                self._win_inactive += step
                self._accrued_to = to
                return
        self._accrue_stretches(to)

    def _accrue_stretches(self, to: int) -> None:
        """:meth:`_accrue` in the general case (the tests check the fast path against it)."""
        while not self._dormant and self._accrued_to < to:
            at = self._accrued_to
            if not self._paused and at < self._idle_at:
                self._count(min(to, self._idle_at), active=True)
                continue
            until = to
            if self._cutoff is not None:
                since = self._inactive_since if self._paused else self._idle_at
                dormant_at = since + self._cutoff
                if at >= dormant_at:
                    # Inactive longer than the cutoff: report up to here only.
                    self._close(at)
                    self._dormant = True
                    return
                until = min(to, dormant_at)
            self._count(until, active=False)

    def _count(self, until: int, *, active: bool) -> None:
        """Count ``[_accrued_to, until)`` as one category, as far as the size limit allows."""
        if (self._win_active if active else self._win_inactive) == MAX_VALUE_MS:
            self._close(self._accrued_to)
        room = MAX_VALUE_MS - (self._win_active if active else self._win_inactive)
        step = min(until - self._accrued_to, room)
        if active:
            self._win_active += step
        else:
            self._win_inactive += step
        self._accrued_to += step
