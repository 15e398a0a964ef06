"""Tkinter: wire any Tk app to a :class:`~timeback_tracker.Session` in one call.

::

    root = tkinter.Tk()
    session = tracker.start_session(user, activity)
    bind_session(root, session)            # input -> touch(); focus lost / iconified -> pause
    end_on_close(root, session, tracker)   # closing the window ends the run and flushes

:func:`bind_session` adds its bindings with Tcl's ``+``, after the app's own,
and :meth:`TkBinding.close` removes exactly those, nothing else:

* input (``<Key>``, ``<Button>``, ``<Motion>``, ``<MouseWheel>`` by default) on
  the ``all`` tag, so every window of the app counts, calls ``touch()`` at most
  once per 100 ms: a storm of mouse moves costs a clock read per event;
* ``<FocusIn>``/``<FocusOut>`` on ``all`` schedule one check, after idle,
  of whether any window of this app still has the keyboard focus (Tk also
  reports focus moving between the app's own widgets, which must not pause);
  focus gone pauses the session, focus back resumes it;
* ``<Unmap>``/``<Map>`` of ``root`` (iconified or withdrawn, shown again)
  pause and resume it.

A pause is undone only by the binding that made it: a session the app paused
itself stays paused. Once the session is completed or ended, the bindings
stop calling it and remove themselves. Everything here runs on Tk's thread.

Importing this module imports :mod:`tkinter`; ``import timeback_tracker``
does not.
"""

from __future__ import annotations

import contextlib
import math
import time
import tkinter
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, TypeAlias

from timeback_tracker.exceptions import SessionStateError
from timeback_tracker.session import Session

if TYPE_CHECKING:
    from timeback_tracker.tracker import Tracker

__all__ = ["DEFAULT_TOUCH_EVENTS", "TkBinding", "bind_session", "end_on_close"]

DEFAULT_TOUCH_EVENTS: tuple[str, ...] = ("<Key>", "<Button>", "<Motion>", "<MouseWheel>")
"""The input events that count as the student being there."""

# touch() at most this often: idle timeouts are whole seconds, and a mouse
# move storm must not take the session lock hundreds of times a second.
_TOUCH_GAP = 0.1

Root: TypeAlias = tkinter.Tk | tkinter.Toplevel


class TkBinding:
    """The bindings that :func:`bind_session` added to a Tk app; :meth:`close` removes them.

    Use it from Tk's thread only, like any Tk object. Also a context manager
    that closes on exit.
    """

    def __init__(
        self,
        root: Root,
        session: Session,
        *,
        pause_on_focus_loss: bool,
        touch_events: Sequence[str],
    ) -> None:
        self._root = root
        self._session = session
        self._path = str(root)
        self._pause_on_focus_loss = pause_on_focus_loss
        self._bound: list[tuple[str, str, str, str]] = []  # (tag, sequence, script line, command)
        self._live = True  # False once closed or the session is over
        self._closed = False
        self._focused = True  # assumed until Tk reports a focus change
        self._hidden = False
        self._paused_here = False
        self._last_touch = -math.inf
        self._focus_check: str | None = None
        try:
            for sequence in touch_events:
                self._bind("all", sequence, self._on_input)
            if pause_on_focus_loss:
                self._bind("all", "<FocusIn>", self._on_focus)
                self._bind("all", "<FocusOut>", self._on_focus)
            self._bind(self._path, "<Map>", self._on_map, with_widget=True)
            self._bind(self._path, "<Unmap>", self._on_unmap, with_widget=True)
        except tkinter.TclError as exc:
            self.close()
            raise ValueError(f"touch_events: not a Tk event pattern: {exc}") from exc

    def __repr__(self) -> str:
        return (
            f"<TkBinding run_id={self._session.run_id} bindings={len(self._bound)} "
            f"paused_by_binding={self._paused_here} closed={self._closed}>"
        )

    @property
    def root(self) -> Root:
        """The window whose app is watched."""
        return self._root

    @property
    def session(self) -> Session:
        """The session the bindings drive."""
        return self._session

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran (also after the session was completed or ended)."""
        return self._closed

    @property
    def paused_by_binding(self) -> bool:
        """True while the session is paused because the app is unfocused or hidden."""
        return self._paused_here

    def close(self) -> None:
        """Remove every binding this object added, leaving the app's own. Idempotent.

        A pause the binding made stays in effect: the app decides what comes next.
        Safe to call after the window was destroyed.
        """
        if self._closed:
            return
        self._closed = True
        self._live = False
        # TclError: the app may be destroyed already, and its commands with it.
        if self._focus_check is not None:
            with contextlib.suppress(tkinter.TclError):
                self._root.after_cancel(self._focus_check)
            self._focus_check = None
        for tag, sequence, line, command in self._bound:
            with contextlib.suppress(tkinter.TclError):
                _unbind_line(self._root, tag, sequence, line)
            with contextlib.suppress(tkinter.TclError):
                self._root.deletecommand(command)
        self._bound.clear()

    def __enter__(self) -> TkBinding:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------

    def _bind(
        self, tag: str, sequence: str, func: Callable[..., None], *, with_widget: bool = False
    ) -> None:
        # A plain Tcl command instead of widget.bind(): Tk then substitutes
        # only %W (if asked), not the 19 fields of a tkinter Event, and the
        # exact script line is known, so close() can remove it alone.
        command = self._root.register(func)
        line = f"{command} %W" if with_widget else command
        self._bound.append((tag, sequence, line, command))
        self._root.tk.call("bind", tag, sequence, "+" + line)

    def _on_input(self) -> None:
        now = time.monotonic()
        if not self._live or now - self._last_touch < _TOUCH_GAP:
            return
        self._last_touch = now
        self._session.touch()  # a no-op once the session is over
        if self._session.state in ("completed", "ended"):
            self._retire()

    def _on_focus(self) -> None:
        # Moving focus between the app's widgets sends FocusOut then FocusIn;
        # one check once the queue is idle sees where focus really ended up.
        if self._live and self._focus_check is None:
            self._focus_check = self._root.after_idle(self._check_focus)

    def _check_focus(self) -> None:
        self._focus_check = None
        # `focus` names this app's focus window, or "" when the app has none
        # (root.focus_get() would raise for windows tkinter does not know).
        self._focused = str(self._root.tk.call("focus")) != ""
        self._apply()

    def _on_map(self, widget: str) -> None:
        if widget == self._path:  # children's Map events reach the root's tag too
            self._hidden = False
            self._apply()

    def _on_unmap(self, widget: str) -> None:
        if widget == self._path:
            self._hidden = True
            self._apply()

    def _apply(self) -> None:
        if not self._live:
            return
        away = self._hidden or (self._pause_on_focus_loss and not self._focused)
        try:
            if away and not self._paused_here:
                if self._session.state != "paused":  # a pause of the app's own stays its own
                    self._session.pause()
                    self._paused_here = True
            elif not away and self._paused_here:
                self._paused_here = False
                self._session.resume()
        except SessionStateError:
            self._retire()

    def _retire(self) -> None:
        """The session is over: stop calling it, and unbind once this callback returned."""
        self._live = False
        with contextlib.suppress(tkinter.TclError):
            self._root.after_idle(self.close)


def _unbind_line(root: Root, tag: str, sequence: str, line: str) -> None:
    """Remove one line from a binding script, keeping every other one."""
    script = str(root.tk.call("bind", tag, sequence))
    kept = [part for part in script.split("\n") if part.strip() != line]
    root.tk.call("bind", tag, sequence, "\n".join(kept) if any(p.strip() for p in kept) else "")


def bind_session(
    root: Root,
    session: Session,
    *,
    pause_on_focus_loss: bool = True,
    touch_events: Sequence[str] = DEFAULT_TOUCH_EVENTS,
) -> TkBinding:
    """Drive ``session`` from a Tk app: input touches it, focus loss and iconify pause it.

    The app's own bindings and its ``WM_DELETE_WINDOW`` handler are left
    alone; see :func:`end_on_close` for the window's close button.

    Args:
        root: The app's main window (or the Toplevel the activity runs in);
            its iconify/withdraw pauses the session.
        session: The running session.
        pause_on_focus_loss: Pause while no window of the app has the
            keyboard focus, resume when one gets it back.
        touch_events: Tk event patterns, bound on ``all``, that call
            ``session.touch()`` (at most once per 100 ms).

    Returns:
        The :class:`TkBinding`; its :meth:`~TkBinding.close` removes the bindings.

    Raises:
        TypeError: ``root`` or ``session`` has the wrong type, or
            ``touch_events`` is a single string.
        ValueError: An entry of ``touch_events`` is not a Tk event pattern.
    """
    if not isinstance(root, (tkinter.Tk, tkinter.Toplevel)):
        raise TypeError("root: must be a tkinter.Tk or tkinter.Toplevel")
    if not isinstance(session, Session):
        raise TypeError("session: must be a timeback_tracker.Session")
    if isinstance(touch_events, str) or not all(isinstance(e, str) for e in touch_events):
        raise TypeError('touch_events: must be a sequence of patterns such as ("<Key>",)')
    return TkBinding(
        root, session, pause_on_focus_loss=pause_on_focus_loss, touch_events=tuple(touch_events)
    )


def end_on_close(
    root: Root,
    session: Session,
    tracker: Tracker | None = None,
    flush_timeout: float = 2.0,
) -> Callable[[], None]:
    """Make the window's close button end the session, flush, then destroy the window.

    Installs a ``WM_DELETE_WINDOW`` handler that ends the session (unless it
    was completed or ended already), hides the window and waits up to
    ``flush_timeout`` seconds for ``tracker`` to deliver, then destroys ``root``.
    Whatever is still undelivered stays with the tracker (and its spool).

    Args:
        root: The app's main window.
        session: The session to end.
        tracker: The tracker to flush; None skips the flush (the tracker's
            exit hook still delivers).
        flush_timeout: Seconds the flush may take at most.

    Returns:
        The handler, to call from a "Quit" button as well; calling it again does nothing.

    Raises:
        TypeError: ``root`` or ``session`` has the wrong type.
        ValueError: ``flush_timeout`` is negative or not finite.
    """
    if not isinstance(root, (tkinter.Tk, tkinter.Toplevel)):
        raise TypeError("root: must be a tkinter.Tk or tkinter.Toplevel")
    if not isinstance(session, Session):
        raise TypeError("session: must be a timeback_tracker.Session")
    if (
        isinstance(flush_timeout, bool)
        or not isinstance(flush_timeout, (int, float))
        or not (math.isfinite(flush_timeout) and flush_timeout >= 0)
    ):
        raise ValueError("flush_timeout: must be a finite number of seconds >= 0")
    done = False

    def close() -> None:
        nonlocal done
        if done:
            return
        done = True
        with contextlib.suppress(SessionStateError):  # completed or ended before
            session.end()
        if tracker is not None:
            with contextlib.suppress(tkinter.TclError):
                root.withdraw()  # gone from the screen now, however long the flush takes
                root.update_idletasks()
            tracker.flush(flush_timeout)
        with contextlib.suppress(tkinter.TclError):
            root.destroy()

    root.protocol("WM_DELETE_WINDOW", close)
    return close
