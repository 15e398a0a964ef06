"""Ready-made wiring of a :class:`~timeback_tracker.Session` into GUI toolkits.

Each integration lives in its own module and imports its toolkit only when
that module is imported, so ``import timeback_tracker`` stays light. All three
have the same shape: ``bind_session(...)`` (input calls ``touch()``, throttled;
focus loss and minimising pause; coming back resumes; nothing ever raises into
the toolkit's event loop) and ``end_on_close(...)`` (closing the window ends
the run and closes the tracker, within its ``exit_timeout`` in total):

* :mod:`timeback_tracker.integrations.tk` — Tkinter.
* :mod:`timeback_tracker.integrations.qt` — PySide6, PyQt6, PySide2, PyQt5:
  whichever binding the app's window belongs to.
* :mod:`timeback_tracker.integrations.pygame` — pygame 2 (the app passes its
  events to ``binding.handle(event)``).
"""

from timeback_tracker.integrations._common import DEFAULT_IDLE_TIMEOUT

__all__ = ["DEFAULT_IDLE_TIMEOUT"]
