"""OS presence on Linux and other Unix: logind and GNOME over D-Bus, X11 through libXss."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import socket
from collections.abc import Callable
from typing import Any

from timeback_tracker._dbus import Connection, DBusError
from timeback_tracker._presence import Unavailable

__all__ = ["LogindLock", "MutterIdle", "XScreenSaverIdle"]

_LOGIN1 = "org.freedesktop.login1"


# -- Linux and other Unix: D-Bus -----------------------------------------------------------


class _DBusSource:
    """A source answered over a D-Bus connection, kept open and reopened after a failure."""

    name = "D-Bus"

    def __init__(self, address: str | None, bus: str) -> None:
        if address is None:
            raise Unavailable(f"no {bus} bus address")
        self._address = address
        self._connection: Connection | None = None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _call(self, read: Callable[[Connection], Any]) -> Any:
        if self._connection is None:
            self._connection = Connection(self._address, timeout=0.5)
        try:
            return read(self._connection)
        except DBusError:
            self.close()
            raise


class MutterIdle(_DBusSource):
    """GNOME's idle monitor (Wayland and X11): ``GetIdletime`` in milliseconds."""

    name = "GNOME Mutter IdleMonitor (D-Bus)"

    def __init__(self, address: str | None) -> None:
        super().__init__(address, "session")

    def read(self) -> int:
        """Milliseconds since the last input."""
        (idle,) = self._call(
            lambda bus: bus.call(
                "org.gnome.Mutter.IdleMonitor",
                "/org/gnome/Mutter/IdleMonitor/Core",
                "org.gnome.Mutter.IdleMonitor",
                "GetIdletime",
            )
        )
        return int(idle)


class LogindLock(_DBusSource):
    """systemd-logind's view of this user's graphical session: locked, or not in front."""

    name = "logind LockedHint (D-Bus)"
    _SESSION = "/org/freedesktop/login1/session/auto"  # the caller's, or the user's display session

    def __init__(self, address: str | None) -> None:
        super().__init__(address, "system")

    def read(self) -> bool:
        """True while the session is locked or another session has the seat."""

        def ask(bus: Connection) -> bool:
            def get(name: str) -> bool:
                return bool(bus.get_property(_LOGIN1, self._SESSION, _LOGIN1 + ".Session", name))

            return get("LockedHint") or not get("Active")

        return bool(self._call(ask))


# -- X11: libXss ------------------------------------------------------------------------------


class _XScreenSaverInfo(ctypes.Structure):
    _fields_ = (
        ("window", ctypes.c_ulong),
        ("state", ctypes.c_int),
        ("kind", ctypes.c_int),
        ("til_or_since", ctypes.c_ulong),
        ("idle", ctypes.c_ulong),
        ("event_mask", ctypes.c_ulong),
    )


def _x11_libraries() -> tuple[Any, Any]:
    names = {lib: ctypes.util.find_library(lib) for lib in ("X11", "Xss")}
    missing = [lib for lib, path in names.items() if path is None]
    if missing:
        package = {"X11": "libx11-6", "Xss": "libxss1"}
        raise Unavailable(
            "lib"
            + " and lib".join(missing)
            + " not found (Debian: "
            + " ".join(package[m] for m in missing)
            + ")"
        )
    x11, xss = ctypes.CDLL(names["X11"]), ctypes.CDLL(names["Xss"])
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
    x11.XDefaultRootWindow.restype = ctypes.c_ulong
    x11.XConnectionNumber.argtypes = [ctypes.c_void_p]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    x11.XFree.argtypes = [ctypes.c_void_p]
    xss.XScreenSaverQueryExtension.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_int),
        ctypes.POINTER(ctypes.c_int),
    ]
    xss.XScreenSaverAllocInfo.restype = ctypes.POINTER(_XScreenSaverInfo)
    xss.XScreenSaverQueryInfo.argtypes = [
        ctypes.c_void_p,
        ctypes.c_ulong,
        ctypes.POINTER(_XScreenSaverInfo),
    ]
    return x11, xss


class XScreenSaverIdle:
    """The X server's own idle time (MIT-SCREEN-SAVER), on a connection of our own.

    Xlib ends the process when a connection it uses breaks, so before each
    query the socket is checked for the server having gone; a dead connection
    is abandoned without another Xlib call, and reopened on a later poll.
    """

    name = "X11 MIT-SCREEN-SAVER (libXss)"

    def __init__(self, display: str) -> None:
        self._x11, self._xss = _x11_libraries()
        self._name = display
        self._display: int | None = None
        self._info: Any = None
        self._open()

    def read(self) -> int:
        """Milliseconds since the last input the X server saw."""
        if self._display is None:
            self._open()
        assert self._display is not None
        if not self._connected():
            self._display = None  # abandoned: any Xlib call on it could end the process
            raise OSError(f"the X server {self._name} went away")
        if not self._xss.XScreenSaverQueryInfo(self._display, self._root, self._info):
            raise OSError("XScreenSaverQueryInfo failed")
        return int(self._info.contents.idle)

    def close(self) -> None:
        """Close the display connection (in the process that opened it, if the server is up)."""
        display, self._display = self._display, None
        if display is not None and os.getpid() == self._pid and self._connected():
            self._x11.XFree(self._info)
            self._x11.XCloseDisplay(display)

    def _open(self) -> None:
        display = self._x11.XOpenDisplay(self._name.encode())
        if not display:
            raise Unavailable(f"cannot open the X display {self._name}")
        event_base, error_base = ctypes.c_int(), ctypes.c_int()
        if not self._xss.XScreenSaverQueryExtension(
            display, ctypes.byref(event_base), ctypes.byref(error_base)
        ):
            self._x11.XCloseDisplay(display)
            raise Unavailable(f"the X server {self._name} has no MIT-SCREEN-SAVER extension")
        self._pid = os.getpid()
        self._root = self._x11.XDefaultRootWindow(display)
        self._fd = self._x11.XConnectionNumber(display)
        self._info = self._xss.XScreenSaverAllocInfo()
        self._display = display

    def _connected(self) -> bool:
        """False when the server closed the connection: its socket reads as end of file."""
        readable, _, _ = select.select([self._fd], [], [], 0)
        if not readable:
            return True
        with socket.socket(fileno=os.dup(self._fd)) as peek:
            try:
                return peek.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
            except BlockingIOError:
                return True
            except OSError:
                return False
