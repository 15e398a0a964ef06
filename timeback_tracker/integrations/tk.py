"""Tkinter: wire any Tk app to a :class:`~timeback_tracker.Session` in one call.

::

    root = tkinter.Tk()
    session = tracker.start_session(user, activity)
    bind_session(root, session)            # input -> touch(); focus lost / iconified -> pause
    end_on_close(root, session, tracker)   # closing the window ends the run, closes the tracker

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
itself stays paused. A session whose tracker config sets no ``idle_timeout``
gets :data:`~timeback_tracker.integrations.DEFAULT_IDLE_TIMEOUT` (60 s), so
that walked-away time is inactive. Once the session is completed or ended,
the bindings stop calling it and remove themselves. Everything here runs on
Tk's thread, and nothing raises into Tk's event loop.

Importing this module imports :mod:`tkinter`; ``import timeback_tracker``
does not.
"""

from __future__ import annotations

import contextlib
import tkinter
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, TypeAlias

from timeback_tracker.integrations._common import (
    DEFAULT_IDLE_TIMEOUT,
    Binding,
    SessionDriver,
    check_flush_timeout,
    check_idle_timeout,
    check_session,
    close_handler,
)
from timeback_tracker.session import Session

if TYPE_CHECKING:
    from timeback_tracker.tracker import Tracker

__all__ = ["DEFAULT_TOUCH_EVENTS", "TkBinding", "bind_session", "end_on_close"]

DEFAULT_TOUCH_EVENTS: tuple[str, ...] = ("<Key>", "<Button>", "<Motion>", "<MouseWheel>")
"""The input events that count as the student being there."""

Root: TypeAlias = tkinter.Tk | tkinter.Toplevel


class TkBinding(Binding):
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
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        self._root = root
        self._session = session
        self._path = str(root)
        self._pause_on_focus_loss = pause_on_focus_loss
        self._bound: list[tuple[str, str, str, str]] = []  # (tag, sequence, script line, command)
        self._closed = False
        self._focus_check: str | None = None
        self._driver = SessionDriver(
            session,
            pause_on_focus_loss=pause_on_focus_loss,
            idle_timeout=idle_timeout,
            retire=self._retire,
        )
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
            f"paused_by_binding={self._driver.paused_here} closed={self._closed}>"
        )

    @property
    def root(self) -> Root:
        """The window whose app is watched."""
        return self._root

    def close(self) -> None:
        """Remove every binding this object added, leaving the app's own. Idempotent.

        A pause the binding made stays in effect: the app decides what comes next.
        Safe to call after the window was destroyed.
        """
        if self._closed:
            return
        self._closed = True
        self._driver.live = False
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
        self._driver.input()

    def _on_focus(self) -> None:
        # Moving focus between the app's widgets sends FocusOut then FocusIn;
        # one check once the queue is idle sees where focus really ended up.
        if self._driver.live and self._focus_check is None:
            self._focus_check = self._root.after_idle(self._check_focus)

    def _check_focus(self) -> None:
        self._focus_check = None
        # `focus` names this app's focus window, or "" when the app has none
        # (root.focus_get() would raise for windows tkinter does not know).
        try:
            focused = str(self._root.tk.call("focus")) != ""
        except tkinter.TclError:  # the app is being destroyed
            return
        self._driver.focus(focused)

    def _on_map(self, widget: str) -> None:
        if widget == self._path:  # children's Map events reach the root's tag too
            self._driver.hidden(False)

    def _on_unmap(self, widget: str) -> None:
        if widget == self._path:
            self._driver.hidden(True)

    def _retire(self) -> None:
        """The session is over: unbind once this callback returned."""
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
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
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
        idle_timeout: Seconds without input after which the session is idle,
            used when the tracker's config sets no ``idle_timeout`` (the
            config's value wins); None leaves such a session never idle.

    Returns:
        The :class:`TkBinding`; its :meth:`~TkBinding.close` removes the bindings.

    Raises:
        TypeError: ``root`` or ``session`` has the wrong type, or
            ``touch_events`` is a single string.
        ValueError: An entry of ``touch_events`` is not a Tk event pattern,
            or ``idle_timeout`` is out of range.
    """
    if not isinstance(root, (tkinter.Tk, tkinter.Toplevel)):
        raise TypeError("root: must be a tkinter.Tk or tkinter.Toplevel")
    check_session(session)
    if isinstance(touch_events, str) or not all(isinstance(e, str) for e in touch_events):
        raise TypeError('touch_events: must be a sequence of patterns such as ("<Key>",)')
    return TkBinding(
        root,
        session,
        pause_on_focus_loss=pause_on_focus_loss,
        touch_events=tuple(touch_events),
        idle_timeout=check_idle_timeout(idle_timeout),
    )


def end_on_close(
    root: Root,
    session: Session,
    tracker: Tracker | None = None,
    flush_timeout: float | None = None,
) -> Callable[[], None]:
    """Make the window's close button end the session, close the tracker, destroy the window.

    Installs a ``WM_DELETE_WINDOW`` handler that ends the session (unless it
    was completed or ended already), hides the window, closes ``tracker`` --
    which delivers for up to ``flush_timeout`` seconds, its ``exit_timeout``
    when None -- and destroys ``root``. Whatever is still undelivered stays in
    the spool for the next start. The app's own ``tracker.close()`` (or the
    exit hook) afterwards returns at once: closing waits that long in total.

    Args:
        root: The app's main window.
        session: The session to end.
        tracker: The tracker to close with the window; None leaves it running
            (for a window that is not the app's last: delivery goes on in the
            background).
        flush_timeout: Seconds the tracker may deliver for at most.

    Returns:
        The handler, to call from a "Quit" button as well; calling it again does nothing.

    Raises:
        TypeError: ``root`` or ``session`` has the wrong type.
        ValueError: ``flush_timeout`` is negative or not finite.
    """
    if not isinstance(root, (tkinter.Tk, tkinter.Toplevel)):
        raise TypeError("root: must be a tkinter.Tk or tkinter.Toplevel")
    check_session(session)
    seconds = check_flush_timeout(flush_timeout)

    def hide() -> None:
        with contextlib.suppress(tkinter.TclError):
            root.withdraw()  # gone from the screen now, however long delivery takes
            root.update_idletasks()

    def destroy() -> None:
        with contextlib.suppress(tkinter.TclError):
            root.destroy()

    close = close_handler(session, tracker, seconds, hide=hide, after=destroy)
    root.protocol("WM_DELETE_WINDOW", close)
    return close
