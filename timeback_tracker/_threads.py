"""Background threads that leave the app's signals to the app's own threads."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Final

__all__ = ["start_daemon"]

# The signals a program handles to be told something (stop, reload, a timer is due,
# the terminal changed), never the ones a thread brings on itself (SIGSEGV, SIGPIPE):
# those must reach the thread that caused them.
_APP_SIGNALS: Final = frozenset(
    getattr(signal, name)
    for name in (
        "SIGINT",
        "SIGTERM",
        "SIGHUP",
        "SIGQUIT",
        "SIGUSR1",
        "SIGUSR2",
        "SIGALRM",
        "SIGWINCH",
    )
    if hasattr(signal, name)
)


def start_daemon(target: Callable[[], object], name: str) -> threading.Thread:
    """Start a daemon thread that blocks the app's signals, and return it.

    Python runs signal handlers in the main thread only, while the kernel hands
    a signal sent to the process to any thread that does not block it. Handed
    to one of ours, it would leave the main thread asleep in ``time.sleep``,
    ``signal.pause()`` or a ``select`` until that ends: Ctrl-C, a service
    manager's SIGTERM or an alarm would wait. A new thread takes the mask of
    the thread that starts it, so the signals are blocked here for the moment
    of the start, then the caller's mask is put back as it was.

    Raises:
        RuntimeError: New threads are refused (at interpreter shutdown).
    """
    thread = threading.Thread(target=target, name=name, daemon=True)
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no masks; Ctrl-C wakes the main thread
        thread.start()
        return thread
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _APP_SIGNALS)
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return thread
