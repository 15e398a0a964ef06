"""What the GUI integrations share: the session driver, the close handler, argument checks.

Each toolkit module translates its own events into four calls on a
:class:`SessionDriver` (input, focus, hidden, over) and builds its close
handler with :func:`close_handler`; the rules live here once:

* input calls ``touch()`` at most every 100 ms, so a storm of mouse moves
  costs a clock read per event;
* the session is paused while the app is unfocused (if asked) or its window
  hidden or minimised, and resumed when both are back, but only a pause the
  driver made itself is undone: the app's own pause stays the app's;
* a session the tracker's config gives no idle timeout gets
  :data:`DEFAULT_IDLE_TIMEOUT`, so walked-away time is inactive;
* nothing ever raises into the toolkit's event loop: once the session is over
  the driver goes quiet, and any other error is logged and swallowed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from timeback_tracker._rules import number_problem
from timeback_tracker.config import IDLE_TIMEOUT_RANGE
from timeback_tracker.exceptions import SessionStateError
from timeback_tracker.session import Session, default_idle_timeout, paused_by_app

if TYPE_CHECKING:
    from timeback_tracker.tracker import Tracker

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "Binding",
    "SessionDriver",
    "check_flush_timeout",
    "check_idle_timeout",
    "check_session",
    "close_handler",
]

log = logging.getLogger("timeback_tracker.integrations")

DEFAULT_IDLE_TIMEOUT = 60.0
"""Seconds without input after which a session bound to a GUI counts as idle,
when the tracker's config sets no ``idle_timeout``.

A minute: a student who walks away is then over-reported by one focused
minute at most (1 XP), while one who reads or thinks for longer without
touching anything loses only the time past the minute, and only until the next
key press, click or mouse move. Apps with long videos or reading passages
should raise it (or pause around the video).
"""

# touch() at most this often: idle timeouts are whole seconds, and a mouse
# move storm must not take the session lock hundreds of times a second.
TOUCH_GAP = 0.1


def check_session(session: object) -> Session:
    """``session`` if it is a Session; TypeError otherwise."""
    if not isinstance(session, Session):
        raise TypeError("session: must be a timeback_tracker.Session")
    return session


def check_idle_timeout(value: object) -> float | None:
    """``value`` if it is None or seconds in the config's idle-timeout range."""
    if value is None:
        return None
    low, high = IDLE_TIMEOUT_RANGE
    if number_problem(value, low, high):  # the config's own rule
        raise ValueError(f"idle_timeout: must be None or seconds between {low} and {high}")
    return float(value)  # type: ignore[arg-type]


def check_flush_timeout(value: object) -> float | None:
    """``value`` if it is None or a finite number of seconds >= 0."""
    if value is None:
        return None
    if number_problem(value, 0, math.inf):
        raise ValueError("flush_timeout: must be None or a finite number of seconds >= 0")
    return float(value)  # type: ignore[arg-type]


class Binding:
    """What every toolkit's binding shows: its session, whether it is closed, and
    whether the session is paused because of it (the app unfocused or hidden)."""

    _session: Session
    _closed: bool
    _driver: SessionDriver

    @property
    def session(self) -> Session:
        """The session the binding drives."""
        return self._session

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran (also after the session was completed or ended)."""
        return self._closed

    @property
    def paused_by_binding(self) -> bool:
        """True while the session is paused because the app is unfocused or hidden."""
        return self._driver.paused_here


class SessionDriver:
    """Turns a toolkit's input, focus and visibility changes into session calls. Never raises.

    Args:
        session: The session to drive.
        pause_on_focus_loss: Pause while the app has no focus.
        idle_timeout: Seconds; applied when the tracker's config sets none.
        retire: A bound method of the binding, called once when the driver
            goes quiet (the session is over), to unhook the toolkit's
            callbacks. Held weakly: a binding and its driver must not form a
            reference cycle, or the cyclic GC may free the binding (and the
            last reference to a Tk or Qt object) on another thread, which
            aborts Tcl.
    """

    def __init__(
        self,
        session: Session,
        *,
        pause_on_focus_loss: bool,
        idle_timeout: float | None,
        retire: Callable[[], None] | None = None,
    ) -> None:
        self.session = session
        self._pause_on_focus_loss = pause_on_focus_loss
        self._retire = None if retire is None else weakref.WeakMethod(retire)
        self.live = True  # False once the session is over or the driver closed
        self._focused = True  # assumed until the toolkit reports a focus change
        self._hidden = False
        self.paused_here = False
        self._last_touch = -math.inf
        default_idle_timeout(session, idle_timeout)

    def __repr__(self) -> str:
        return (
            f"<SessionDriver run_id={self.session.run_id} live={self.live} "
            f"paused_by_binding={self.paused_here}>"
        )

    def input(self) -> None:
        """The student pressed, clicked, moved or touched something."""
        now = time.monotonic()
        if not self.live or now - self._last_touch < TOUCH_GAP:
            return
        self._last_touch = now
        self._call(self.session.touch)
        if self.session.state in ("completed", "ended"):
            self.over()  # touch() says nothing once the run is over: ask once

    def focus(self, focused: bool) -> None:
        """The app gained or lost the keyboard focus."""
        self._focused = focused
        self._apply()

    def hidden(self, hidden: bool) -> None:
        """The window was minimised or hidden, or shown again."""
        self._hidden = hidden
        self._apply()

    def over(self) -> None:
        """Stop calling the session (it is over, or the binding closed). Idempotent."""
        if not self.live:
            return
        self.live = False
        retire = None if self._retire is None else self._retire()
        if retire is not None:
            self._guard(retire)

    def _apply(self) -> None:
        if not self.live:
            return
        away = self._hidden or (self._pause_on_focus_loss and not self._focused)
        if away and not self.paused_here:
            # A pause of the app's own stays its own: only a pause made here is undone here.
            if not paused_by_app(self.session) and self._call(self.session.pause):
                self.paused_here = True
        elif not away and self.paused_here:
            self.paused_here = False
            self._call(self.session.resume)

    def _call(self, method: Callable[[], None]) -> bool:
        """Call a session method; False (and quiet from now on) once the session is over."""
        try:
            method()
        except SessionStateError:
            self.over()
            return False
        except Exception:
            log.exception("%s failed; the binding goes on", getattr(method, "__name__", method))
            return False
        return True

    def _guard(self, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception:
            log.exception("the GUI integration failed to unhook itself; ignored")


def close_handler(
    session: Session,
    tracker: Tracker | None,
    flush_timeout: float | None,
    *,
    hide: Callable[[], object] | None = None,
    after: Callable[[], object] | None = None,
) -> Callable[[], None]:
    """The handler of a window's close: end the run, close the tracker, once. Never raises.

    Closing the tracker is what bounds the wait: it delivers for up to
    ``flush_timeout`` (its ``exit_timeout`` when None), and the app's own
    ``tracker.close()`` or exit hook afterwards returns at once, so closing
    the window waits that long in total, not twice.

    Args:
        session: Ended unless completed or ended already.
        tracker: Closed after the session ended; None leaves it running (its
            delivery goes on in the background, its exit hook still runs).
        flush_timeout: Seconds the tracker may deliver for at most.
        hide: Called before the wait, to take the window off the screen.
        after: Called last (e.g. to destroy the window).
    """
    done = False

    def close() -> None:
        nonlocal done
        if done:
            return
        done = True
        with contextlib.suppress(SessionStateError):  # completed or ended before
            _logged(session.end)
        if tracker is not None:
            if hide is not None:
                _logged(hide)
            _logged(lambda: tracker.close(timeout=flush_timeout))
        if after is not None:
            _logged(after)

    return close


def _logged(step: Callable[[], Any]) -> None:
    """Run ``step``; log anything but SessionStateError instead of raising it."""
    try:
        step()
    except SessionStateError:
        raise
    except Exception:
        log.exception("closing the window: %s failed; ignored", getattr(step, "__name__", "a step"))
