"""A private ``dbus-daemon`` and services on it that answer as logind and GNOME's idle monitor.

The services speak real D-Bus over a real bus socket (through the library's
own marshalling, which ``tests/test_dbus.py`` checks against ``dbus-daemon``
and ``busctl``), so the presence sources are tested end to end: connection,
authentication, method calls, replies and errors.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from timeback_tracker import _dbus

Handler = Callable[[str, str, str, tuple[Any, ...]], tuple[str, tuple[Any, ...]]]
"""(path, interface, member, args) -> (reply signature, reply body); LookupError: an error."""


@contextlib.contextmanager
def private_bus(directory: Path) -> Iterator[str]:
    """A ``dbus-daemon`` of its own, listening on a socket in ``directory``; yields its address."""
    daemon = shutil.which("dbus-daemon")
    assert daemon is not None
    process = subprocess.Popen(
        [
            daemon,
            "--session",
            "--nofork",
            "--nopidfile",
            "--print-address=1",
            f"--address=unix:path={directory / 'bus'}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        address = process.stdout.readline().strip()
        assert address.startswith("unix:"), address
        yield address
    finally:
        process.terminate()
        process.wait(5)


class Service:
    """A D-Bus service owning ``name`` on a bus, answering calls with ``handler`` on a thread."""

    def __init__(self, address: str, name: str, handler: Handler) -> None:
        self.calls = 0
        self._handler = handler
        # A generous timeout for joining the bus (a loaded machine, e.g. `make test`'s
        # parallel workers, can keep the daemon from answering within 0.2 s) ...
        self._connection = _dbus.Connection(address, timeout=10.0)
        (reply,) = self._connection.call(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "RequestName",
            "su",
            (name, 4),  # DBUS_NAME_FLAG_DO_NOT_QUEUE
        )
        assert reply == 1, f"could not own {name}: {reply}"
        # ... then short reads, so that the serving loop sees the stop flag promptly.
        self._connection._sock.settimeout(0.2)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"fake {name}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop answering and leave the bus."""
        self._stopped.set()
        self._thread.join(5)
        self._connection.close()

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                message = self._connection.read_message()
            except _dbus.DBusError:
                continue  # a read timeout: look at the stop flag again
            if message.type != _dbus.METHOD_CALL:
                continue
            self.calls += 1
            fields = message.fields
            reply_fields = {
                _dbus.REPLY_SERIAL: message.serial,
                _dbus.DESTINATION: fields[_dbus.SENDER],
            }
            try:
                signature, body = self._handler(
                    fields[_dbus.PATH],
                    fields.get(_dbus.INTERFACE, ""),
                    fields[_dbus.MEMBER],
                    message.body,
                )
            except LookupError as exc:
                reply_fields[_dbus.ERROR_NAME] = "org.freedesktop.DBus.Error.UnknownMethod"
                self._connection.send(_dbus.ERROR, reply_fields, "s", (str(exc),))
                continue
            self._connection.send(_dbus.METHOD_RETURN, reply_fields, signature, body)


class Logind:
    """Answers as systemd-logind for the caller's session: LockedHint and Active."""

    PATH = "/org/freedesktop/login1/session/auto"

    def __init__(self, address: str) -> None:
        self.locked = False
        self.active = True
        self.service = Service(address, "org.freedesktop.login1", self._handle)

    def _handle(
        self, path: str, interface: str, member: str, args: tuple[Any, ...]
    ) -> tuple[str, tuple[Any, ...]]:
        if (path, interface, member) != (self.PATH, "org.freedesktop.DBus.Properties", "Get"):
            raise LookupError(f"no {interface}.{member} on {path}")
        values = {"LockedHint": self.locked, "Active": self.active}
        if args[0] != "org.freedesktop.login1.Session" or args[1] not in values:
            raise LookupError(f"no property {args[0]}.{args[1]}")
        return "v", (("b", values[args[1]]),)


class MutterIdleMonitor:
    """Answers as GNOME's idle monitor: GetIdletime in milliseconds."""

    def __init__(self, address: str) -> None:
        self.idle_ms = 0
        self.service = Service(address, "org.gnome.Mutter.IdleMonitor", self._handle)

    def _handle(
        self, path: str, interface: str, member: str, args: tuple[Any, ...]
    ) -> tuple[str, tuple[Any, ...]]:
        expected = ("/org/gnome/Mutter/IdleMonitor/Core", "org.gnome.Mutter.IdleMonitor")
        if (path, interface, member) != (*expected, "GetIdletime"):
            raise LookupError(f"no {interface}.{member} on {path}")
        return "t", (self.idle_ms,)


def dbus_available() -> str | None:
    """Why D-Bus tests cannot run here, or None when they can."""
    if shutil.which("dbus-daemon") is None:
        return "dbus-daemon not installed"
    if not hasattr(os, "getuid"):
        return "D-Bus over Unix sockets needs a Unix system"
    return None
