"""Ready-made wiring of a :class:`~timeback_tracker.Session` into GUI toolkits.

Each integration lives in its own module and imports its toolkit only when
that module is imported, so ``import timeback_tracker`` stays light:

* :mod:`timeback_tracker.integrations.tk` — Tkinter (``bind_session``).
"""
