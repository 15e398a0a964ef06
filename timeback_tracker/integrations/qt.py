"""Qt: wire a PySide6, PyQt6, PySide2 or PyQt5 app to a :class:`~timeback_tracker.Session`.

::

    window = QMainWindow()
    window.show()
    session = tracker.start_session(user, activity)
    bind_session(window, session)            # input -> touch(); app inactive / minimised -> pause
    end_on_close(window, session, tracker)   # closing the window ends the run, closes the tracker

The Qt binding is the one ``window`` belongs to: this module imports no Qt
binding of its own accord (importing it imports none), and Qt is never a
dependency of timeback-tracker. ``window`` is a ``QWidget`` (usually the main
window) or a ``QWindow`` (e.g. a ``QQuickView``).

:func:`bind_session` installs one event filter on the application:

* key presses, mouse presses, moves and wheel turns, touch and tablet input
  anywhere in the app call ``touch()``, at most once per 100 ms;
* the application losing the focus (another app's window is active, or the
  app became inactive) pauses the session, getting it back resumes it; the
  check runs once the event queue is empty, so focus moving between the
  app's own windows never pauses;
* ``window`` minimised or hidden pauses it, shown again resumes it.

A pause is undone only by the binding that made it; a session whose tracker
config sets no ``idle_timeout`` gets :data:`~timeback_tracker.integrations.
DEFAULT_IDLE_TIMEOUT`; once the session is completed or ended the binding
removes itself. Everything runs on Qt's GUI thread, and nothing raises into
Qt's event loop (PyQt aborts the process on an exception in an event filter).
The filter is a child of ``window``: it goes away with the window.
"""

from __future__ import annotations

import importlib
import logging
import sys
import weakref
from collections.abc import Callable
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any

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

__all__ = ["QtBinding", "bind_session", "end_on_close"]

log = logging.getLogger("timeback_tracker.integrations")

_BINDINGS = ("PySide6", "PyQt6", "PySide2", "PyQt5")

# QEvent types that mean the student is there.
_INPUT_EVENTS = (
    "KeyPress",
    "MouseButtonPress",
    "MouseButtonDblClick",
    "MouseMove",
    "Wheel",
    "TouchBegin",
    "TouchUpdate",
    "TabletPress",
    "TabletMove",
    "InputMethod",
)


class _Qt:
    """The parts of one Qt binding this module uses, looked up once per binding."""

    _cache: dict[str, _Qt] = {}  # noqa: RUF012 - one entry per binding, shared on purpose

    def __init__(self, name: str) -> None:
        self.name = name
        self.core: Any = importlib.import_module(f"{name}.QtCore")
        self.gui: Any = importlib.import_module(f"{name}.QtGui")
        self.widgets: Any = sys.modules.get(f"{name}.QtWidgets")  # only if the app uses it
        event = self.core.QEvent
        self.input_events = frozenset(_enum(event, "Type", kind) for kind in _INPUT_EVENTS)
        self.visibility_events = frozenset(
            _enum(event, "Type", kind) for kind in ("WindowStateChange", "Hide", "Show")
        )
        self.close_event = _enum(event, "Type", "Close")
        self.hide_event = _enum(event, "Type", "Hide")
        self.active = _enum(self.core.Qt, "ApplicationState", "ApplicationActive")
        self.minimized = _enum(self.gui.QWindow, "Visibility", "Minimized")
        self.invisible = _enum(self.gui.QWindow, "Visibility", "Hidden")
        self.hook_class = _hook_class(self.core)

    @classmethod
    def of(cls, window: object) -> _Qt:
        """The binding ``window`` belongs to; TypeError if none."""
        for klass in type(window).__mro__:
            name = klass.__module__.partition(".")[0]
            if name in _BINDINGS:
                break
        else:
            raise TypeError(
                "window: must be a QWidget or QWindow of PySide6, PyQt6, PySide2 or PyQt5"
            )
        if name not in cls._cache:
            cls._cache[name] = cls(name)
        qt = cls._cache[name]
        widget_class = getattr(qt.widgets, "QWidget", None) if qt.widgets else None
        if not isinstance(window, qt.gui.QWindow) and not (
            widget_class is not None and isinstance(window, widget_class)
        ):
            raise TypeError(f"window: must be a QWidget or QWindow, not {type(window).__name__}")
        return qt

    def application(self) -> Any:
        """The running QGuiApplication; RuntimeError if there is none yet."""
        app = self.gui.QGuiApplication.instance()
        if app is None:
            raise RuntimeError("create the QApplication before binding a window to a session")
        return app

    def is_away(self, window: Any) -> bool:
        """Whether ``window`` is minimised or hidden."""
        if isinstance(window, self.gui.QWindow):
            return bool(window.visibility() in (self.minimized, self.invisible))
        return bool(window.isMinimized() or not window.isVisible())


def _enum(owner: Any, scope: str, name: str) -> Any:
    """``owner.scope.name`` (Qt 6, scoped enums), else ``owner.name`` (older PyQt5)."""
    scoped = getattr(owner, scope, None)
    member = getattr(scoped, name, None) if scoped is not None else None
    return member if member is not None else getattr(owner, name)


def _hook_class(core: ModuleType) -> type:
    """A QObject subclass of this binding that forwards events and signals, never raising."""

    class Hook(core.QObject):  # type: ignore[misc, name-defined]
        """Child of the window; forwards to a handler held weakly, and swallows every error."""

        def __init__(self, parent: Any, on_event: Callable[[Any, Any], None]) -> None:
            super().__init__(parent)
            self._on_event = weakref.WeakMethod(on_event)
            self.calls: dict[str, Callable[[], None]] = {}

        def eventFilter(self, watched: Any, event: Any) -> bool:  # noqa: N802 - Qt's name
            try:
                handler = self._on_event()
                if handler is not None:
                    handler(watched, event)
            except Exception:
                log.exception("the Qt integration failed on an event; ignored")
            return False  # never eat an event: the app sees all of them

        def call(self, name: str) -> None:
            """Run the callback registered as ``name`` (signals and timers land here)."""
            try:
                callback = self.calls.get(name)
                if callback is not None:
                    callback()
            except Exception:
                log.exception("the Qt integration failed in %s; ignored", name)

        def focus_window_changed(self, _window: Any = None) -> None:
            self.call("focus")

        # No argument: some bindings fail to convert the ApplicationState flag.
        def state_changed(self) -> None:
            self.call("focus")

        def quitting(self) -> None:
            self.call("quit")

    return Hook


class QtBinding(Binding):
    """The event filter :func:`bind_session` installed; :meth:`close` removes it.

    Use it from Qt's GUI thread only. Also a context manager that closes on exit.
    """

    def __init__(
        self,
        qt: _Qt,
        window: Any,
        session: Session,
        *,
        pause_on_focus_loss: bool,
        idle_timeout: float | None,
    ) -> None:
        self._qt = qt
        self._window = weakref.ref(window)
        self._session = session
        app = qt.application()  # not kept: the binding must not hold the application
        self._closed = False
        self._focus_check_pending = False
        self._driver = SessionDriver(
            session,
            pause_on_focus_loss=pause_on_focus_loss,
            idle_timeout=idle_timeout,
            retire=self._retire,
        )
        self._hook = qt.hook_class(window, self._on_event)
        self._hook.calls["focus"] = self._schedule_focus_check
        self._hook.calls["check focus"] = self._check_focus
        self._hook.calls["close"] = self.close
        app.installEventFilter(self._hook)
        if pause_on_focus_loss:
            app.focusWindowChanged.connect(self._hook.focus_window_changed)
            app.applicationStateChanged.connect(self._hook.state_changed)

    def __repr__(self) -> str:
        return (
            f"<QtBinding {self._qt.name} run_id={self._session.run_id} "
            f"paused_by_binding={self._driver.paused_here} closed={self._closed}>"
        )

    def close(self) -> None:
        """Remove the event filter and the signal connections. Idempotent.

        A pause the binding made stays in effect. Safe after the window was deleted.
        """
        if self._closed:
            return
        self._closed = True
        self._driver.live = False
        hook, self._hook = self._hook, None
        try:
            hook.calls.clear()
            app = self._qt.gui.QGuiApplication.instance()
            if app is not None:
                app.removeEventFilter(hook)
            hook.deleteLater()  # its signal connections go with it
        except RuntimeError:  # the window, and the hook with it, is deleted already
            return

    def __enter__(self) -> QtBinding:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------

    def _on_event(self, watched: Any, event: Any) -> None:
        kind = event.type()
        if kind in self._qt.input_events:
            self._driver.input()
        elif kind in self._qt.visibility_events and watched is self._window():
            self._driver.hidden(self._qt.is_away(watched))

    def _schedule_focus_check(self) -> None:
        # Focus moving between the app's windows passes through "no focus
        # window"; one check once the queue is empty sees where it ended up.
        if self._driver.live and not self._focus_check_pending and self._hook is not None:
            self._focus_check_pending = True
            self._qt.core.QTimer.singleShot(0, lambda: self._call_hook("check focus"))

    def _call_hook(self, name: str) -> None:
        hook = self._hook
        if hook is not None:
            try:
                hook.call(name)
            except RuntimeError:  # deleted with the window
                return

    def _check_focus(self) -> None:
        self._focus_check_pending = False
        app = self._qt.gui.QGuiApplication
        focused = app.applicationState() == self._qt.active and app.focusWindow() is not None
        self._driver.focus(focused)

    def _retire(self) -> None:
        """The session is over: remove the filter once this event was handled."""
        if self._hook is not None:
            self._qt.core.QTimer.singleShot(0, lambda: self._call_hook("close"))


def bind_session(
    window: Any,
    session: Session,
    *,
    pause_on_focus_loss: bool = True,
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
) -> QtBinding:
    """Drive ``session`` from a Qt app: input touches it, focus loss and minimising pause it.

    Args:
        window: The app's main ``QWidget`` or ``QWindow``; its minimising or
            hiding pauses the session. The QApplication must exist.
        session: The running session.
        pause_on_focus_loss: Pause while the application has no focus window
            or is not the active application; resume when it is again.
        idle_timeout: Seconds without input after which the session is idle,
            used when the tracker's config sets no ``idle_timeout`` (the
            config's value wins); None leaves such a session never idle.

    Returns:
        The :class:`QtBinding`; its :meth:`~QtBinding.close` removes the filter.

    Raises:
        TypeError: ``window`` is not a Qt widget or window, or ``session`` is
            not a Session.
        ValueError: ``idle_timeout`` is out of range.
        RuntimeError: No QApplication exists yet.
    """
    qt = _Qt.of(window)
    check_session(session)
    return QtBinding(
        qt,
        window,
        session,
        pause_on_focus_loss=pause_on_focus_loss,
        idle_timeout=check_idle_timeout(idle_timeout),
    )


def end_on_close(
    window: Any,
    session: Session,
    tracker: Tracker | None = None,
    flush_timeout: float | None = None,
) -> Callable[[], None]:
    """Make closing ``window`` end the session and close the tracker.

    Acts once the close went through: a ``closeEvent`` of the app that
    ignores the close (an "are you sure?" dialog) changes nothing. The window
    is off the screen by then; the session is ended (unless it was completed
    or ended already), and ``tracker`` closed -- it delivers for up to
    ``flush_timeout`` seconds, its ``exit_timeout`` when None. The app's own
    ``tracker.close()`` (or the exit hook) afterwards returns at once: closing
    waits that long in total. If the app quits first, the same happens as
    the event loop ends (``aboutToQuit``).

    Args:
        window: The app's main ``QWidget`` or ``QWindow``.
        session: The session to end.
        tracker: The tracker to close with the window; None leaves it running.
        flush_timeout: Seconds the tracker may deliver for at most.

    Returns:
        The handler, to call from a "Quit" action as well; calling it again does nothing.

    Raises:
        TypeError: ``window`` or ``session`` has the wrong type.
        ValueError: ``flush_timeout`` is negative or not finite.
        RuntimeError: No QApplication exists yet.
    """
    qt = _Qt.of(window)
    check_session(session)
    handler = close_handler(session, tracker, check_flush_timeout(flush_timeout))
    _CloseWatch(qt, window, handler)
    return handler


class _CloseWatch:
    """Runs ``handler`` after ``window`` was closed for real: a Close followed by its Hide."""

    def __init__(self, qt: _Qt, window: Any, handler: Callable[[], None]) -> None:
        self._qt = qt
        self._window = weakref.ref(window)
        self._handler = handler
        self._closing = False
        app = qt.application()
        # The hook (a child of the window) keeps this object alive through its handler.
        self._hook = qt.hook_class(window, self._on_event)
        self._hook.watch = self
        self._hook.calls["quit"] = handler
        self._hook.calls["close"] = handler
        self._hook.calls["not closing"] = self._not_closing
        app.installEventFilter(self._hook)
        app.aboutToQuit.connect(self._hook.quitting)

    def _on_event(self, watched: Any, event: Any) -> None:
        if watched is not self._window():
            return
        kind = event.type()
        if kind == self._qt.close_event:
            # The app's closeEvent runs next and may ignore the close; if it
            # accepts, Qt hides the window before this event's delivery ends.
            self._closing = True
            self._later("not closing")
        elif kind == self._qt.hide_event and self._closing:
            self._closing = False
            # Act from the event loop: the window's unmapping is sent to the
            # window system first, so it is gone while delivery waits.
            self._later("close")

    def _not_closing(self) -> None:
        self._closing = False

    def _later(self, name: str) -> None:
        hook = self._hook
        self._qt.core.QTimer.singleShot(0, lambda: hook.call(name))
