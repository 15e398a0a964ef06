"""pygame: wire a pygame 2 game to a :class:`~timeback_tracker.Session` with one line in its loop.

::

    session = tracker.start_session(user, activity)
    binding = bind_session(session)          # pause on focus loss / minimise, idle timeout
    end_on_close(binding, tracker)           # QUIT ends the run and closes the tracker
    while running:
        for event in pygame.event.get():
            binding.handle(event)            # the one line in the game's loop
            if event.type == pygame.QUIT:
                running = False

pygame has no callbacks to hook, so the game hands its events to
:meth:`PygameBinding.handle`, which never raises and costs a dictionary
lookup for events it does not care about:

* key presses, text input, mouse buttons, moves and wheel, touch, and
  joystick or game controller buttons, hats and sticks pushed past a dead
  zone (a drifting stick is not a student) call ``touch()``, at most once per
  100 ms;
* ``WINDOWFOCUSLOST`` pauses the session, ``WINDOWFOCUSGAINED`` resumes it;
* ``WINDOWMINIMIZED``/``WINDOWHIDDEN`` (and a mobile app going to the
  background) pause it, ``WINDOWRESTORED``/``WINDOWSHOWN``/``WINDOWMAXIMIZED``
  resume it;
* ``QUIT`` runs the handler of :func:`end_on_close`, if one is set.

A pause is undone only by the binding that made it; a session whose tracker
config sets no ``idle_timeout`` gets :data:`~timeback_tracker.integrations.
DEFAULT_IDLE_TIMEOUT`; once the session is completed or ended the binding
ignores everything but ``QUIT``.

Importing this module imports :mod:`pygame` (2.0 or newer).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pygame

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

__all__ = ["PygameBinding", "bind_session", "end_on_close"]

log = logging.getLogger("timeback_tracker.integrations")

if not hasattr(pygame, "WINDOWFOCUSLOST"):  # pragma: no cover - pygame 1 (SDL 1)
    raise ImportError("timeback_tracker.integrations.pygame needs pygame 2 (SDL 2 window events)")

_INPUT = frozenset(
    {
        pygame.KEYDOWN,
        pygame.TEXTINPUT,
        pygame.MOUSEBUTTONDOWN,
        pygame.MOUSEMOTION,
        pygame.MOUSEWHEEL,
        pygame.FINGERDOWN,
        pygame.FINGERMOTION,
        pygame.JOYBUTTONDOWN,
        pygame.JOYHATMOTION,
        pygame.CONTROLLERBUTTONDOWN,
    }
)
# Stick positions count as input only past a dead zone: a worn stick drifts
# and reports motion all day with nobody there.
_AXES = {pygame.JOYAXISMOTION: 0.25, pygame.CONTROLLERAXISMOTION: 0.25 * 32767}
_HIDDEN = {
    pygame.WINDOWMINIMIZED: True,
    pygame.WINDOWHIDDEN: True,
    pygame.APP_WILLENTERBACKGROUND: True,
    pygame.WINDOWRESTORED: False,
    pygame.WINDOWSHOWN: False,
    pygame.WINDOWMAXIMIZED: False,
    pygame.APP_DIDENTERFOREGROUND: False,
}
_FOCUS = {pygame.WINDOWFOCUSLOST: False, pygame.WINDOWFOCUSGAINED: True}


class PygameBinding(Binding):
    """Turns the game's pygame events into session calls; see :func:`bind_session`."""

    def __init__(
        self, session: Session, *, pause_on_focus_loss: bool, idle_timeout: float | None
    ) -> None:
        self._session = session
        self._closed = False
        self._on_quit: Callable[[], None] | None = None
        self._driver = SessionDriver(
            session,
            pause_on_focus_loss=pause_on_focus_loss,
            idle_timeout=idle_timeout,
            retire=self.close,
        )

    def __repr__(self) -> str:
        return (
            f"<PygameBinding run_id={self._session.run_id} "
            f"paused_by_binding={self._driver.paused_here} closed={self._closed}>"
        )

    def handle(self, event: Any) -> None:
        """Look at one event of the game's loop. Never raises; call it for every event.

        Args:
            event: A ``pygame.event.Event``; anything else is ignored.
        """
        try:
            kind = event.type
            if kind == pygame.QUIT:
                if self._on_quit is not None:
                    self._on_quit()
            elif self._closed:
                return
            elif kind in _INPUT:
                self._driver.input()
            elif kind in _AXES:
                if abs(event.value) >= _AXES[kind]:
                    self._driver.input()
            elif kind in _FOCUS:
                self._driver.focus(_FOCUS[kind])
            elif kind in _HIDDEN:
                self._driver.hidden(_HIDDEN[kind])
        except Exception:
            log.exception("the pygame integration failed on an event; ignored")

    def close(self) -> None:
        """Stop driving the session (``QUIT`` still runs the close handler). Idempotent.

        A pause the binding made stays in effect.
        """
        self._closed = True
        self._driver.live = False


def bind_session(
    session: Session,
    *,
    pause_on_focus_loss: bool = True,
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
) -> PygameBinding:
    """Drive ``session`` from the events a pygame game hands to :meth:`PygameBinding.handle`.

    Args:
        session: The running session.
        pause_on_focus_loss: Pause while the game's window has no keyboard focus.
        idle_timeout: Seconds without input after which the session is idle,
            used when the tracker's config sets no ``idle_timeout`` (the
            config's value wins); None leaves such a session never idle.

    Returns:
        The :class:`PygameBinding`.

    Raises:
        TypeError: ``session`` is not a Session.
        ValueError: ``idle_timeout`` is out of range.
    """
    check_session(session)
    return PygameBinding(
        session,
        pause_on_focus_loss=pause_on_focus_loss,
        idle_timeout=check_idle_timeout(idle_timeout),
    )


def end_on_close(
    binding: PygameBinding,
    tracker: Tracker | None = None,
    flush_timeout: float | None = None,
) -> Callable[[], None]:
    """Make ``QUIT`` (the window's close button) end the session and close the tracker.

    When ``binding.handle()`` sees ``QUIT``, the session is ended (unless it
    was completed or ended already) and ``tracker`` closed: it delivers for up
    to ``flush_timeout`` seconds, its ``exit_timeout`` when None, while the
    window is still on the screen (pygame's display is the game's to close).
    The game's own ``tracker.close()`` (or the exit hook) afterwards returns at
    once: quitting waits that long in total.

    Args:
        binding: What :func:`bind_session` returned.
        tracker: The tracker to close; None leaves it running.
        flush_timeout: Seconds the tracker may deliver for at most.

    Returns:
        The handler, to call from a "Quit" button as well; calling it again does nothing.

    Raises:
        TypeError: ``binding`` is not a PygameBinding.
        ValueError: ``flush_timeout`` is negative or not finite.
    """
    if not isinstance(binding, PygameBinding):
        raise TypeError("binding: must be what bind_session() returned")
    handler = close_handler(binding.session, tracker, check_flush_timeout(flush_timeout))
    binding._on_quit = handler
    return handler
