"""OS presence on Windows and macOS, through ctypes.

Each source takes its OS calls as arguments, defaulting to the real ones
(loaded on first use), so the logic around them is tested on any platform
with the calls faked; the real calls run in CI on Windows and macOS.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import sys
from collections.abc import Callable

from timeback_tracker._presence import Unavailable

__all__ = ["MacIdle", "MacLock", "WindowsIdle", "WindowsLock"]

# -- Windows --------------------------------------------------------------------------------

_DESKTOP_SWITCHDESKTOP = 0x0100


class _LastInputInfo(ctypes.Structure):
    _fields_ = (("cbSize", ctypes.c_uint), ("dwTime", ctypes.c_uint))


def _windll(name: str) -> ctypes.CDLL:
    if sys.platform == "win32":
        return ctypes.WinDLL(name, use_last_error=True)
    raise Unavailable(f"{name}.dll exists on Windows only")


def _last_error() -> int:
    if sys.platform == "win32":
        return ctypes.get_last_error()
    return 0


def windows_last_input_tick() -> int:
    """``GetLastInputInfo().dwTime``: the tick count (ms, 32 bits) of the session's last input."""
    info = _LastInputInfo(cbSize=ctypes.sizeof(_LastInputInfo))
    if not _windll("user32").GetLastInputInfo(ctypes.byref(info)):
        raise OSError(f"GetLastInputInfo failed (error {_last_error()})")
    return int(info.dwTime)


def windows_tick_count() -> int:
    """``GetTickCount()``: milliseconds since boot, modulo 2**32 (the clock of dwTime)."""
    kernel32 = _windll("kernel32")
    kernel32.GetTickCount.restype = ctypes.c_uint
    return int(kernel32.GetTickCount())


def windows_input_desktop_open() -> bool:
    """Whether this session can open the desktop that receives input.

    It cannot while the workstation is locked (the input desktop is then
    Winlogon's secure desktop), while the session is switched away (another
    user, Remote Desktop disconnected), or during a UAC prompt.
    """
    user32 = _windll("user32")
    user32.OpenInputDesktop.restype = ctypes.c_void_p
    user32.CloseDesktop.argtypes = [ctypes.c_void_p]
    desktop = user32.OpenInputDesktop(0, False, _DESKTOP_SWITCHDESKTOP)
    if not desktop:
        return False
    user32.CloseDesktop(desktop)
    return True


class WindowsIdle:
    """Idle time from ``GetLastInputInfo`` and ``GetTickCount``.

    Args:
        last_input_tick: Returns the tick of the last input.
        tick_count: Returns the current tick.
    """

    name = "Windows GetLastInputInfo"

    def __init__(
        self,
        last_input_tick: Callable[[], int] = windows_last_input_tick,
        tick_count: Callable[[], int] = windows_tick_count,
    ) -> None:
        self._last_input_tick = last_input_tick
        self._tick_count = tick_count

    def read(self) -> int:
        """Milliseconds since the last input of this session."""
        last = self._last_input_tick()
        # Both are 32-bit tick counts that wrap every 49.7 days: subtract modulo 2**32.
        return (self._tick_count() - last) & 0xFFFFFFFF

    def close(self) -> None:
        """Nothing to release."""


class WindowsLock:
    """Locked while the input desktop cannot be opened.

    Args:
        input_desktop_open: Returns whether the input desktop can be opened.
    """

    name = "Windows input desktop (OpenInputDesktop)"

    def __init__(self, input_desktop_open: Callable[[], bool] = windows_input_desktop_open) -> None:
        self._input_desktop_open = input_desktop_open

    def read(self) -> bool:
        """True while the workstation is locked or the session switched away."""
        return not self._input_desktop_open()

    def close(self) -> None:
        """Nothing to release."""


# -- macOS -----------------------------------------------------------------------------------

_HID_SYSTEM_STATE = 1  # kCGEventSourceStateHIDSystemState: input from the hardware
_ANY_INPUT_EVENT = 0xFFFFFFFF  # kCGAnyInputEventType
_UTF8 = 0x08000100  # kCFStringEncodingUTF8
_LOCKED_KEY = "CGSSessionScreenIsLocked"
_ON_CONSOLE_KEY = "kCGSSessionOnConsoleKey"
_FRAMEWORKS = "/System/Library/Frameworks/{0}.framework/{0}"


def _framework(name: str) -> ctypes.CDLL:
    if sys.platform != "darwin":
        raise Unavailable(f"the {name} framework exists on macOS only")
    return ctypes.CDLL(ctypes.util.find_library(name) or _FRAMEWORKS.format(name))


def mac_seconds_since_input() -> float:
    """``CGEventSourceSecondsSinceLastEventType(HID system state, any input)``."""
    cg = _framework("CoreGraphics")
    call = cg.CGEventSourceSecondsSinceLastEventType
    call.argtypes = [ctypes.c_int32, ctypes.c_uint32]
    call.restype = ctypes.c_double
    return float(call(_HID_SYSTEM_STATE, _ANY_INPUT_EVENT))


def mac_session_flags() -> dict[str, bool] | None:
    """The boolean lock keys of ``CGSessionCopyCurrentDictionary()``; None without a session."""
    cg, cf = _framework("CoreGraphics"), _framework("CoreFoundation")
    cg.CGSessionCopyCurrentDictionary.restype = ctypes.c_void_p
    cf.CFStringCreateWithCString.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32]
    cf.CFStringCreateWithCString.restype = ctypes.c_void_p
    cf.CFDictionaryGetValue.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    cf.CFDictionaryGetValue.restype = ctypes.c_void_p
    cf.CFGetTypeID.argtypes = [ctypes.c_void_p]
    cf.CFGetTypeID.restype = ctypes.c_ulong
    cf.CFBooleanGetTypeID.restype = ctypes.c_ulong
    cf.CFBooleanGetValue.argtypes = [ctypes.c_void_p]
    cf.CFBooleanGetValue.restype = ctypes.c_bool
    cf.CFRelease.argtypes = [ctypes.c_void_p]
    session = cg.CGSessionCopyCurrentDictionary()
    if not session:
        return None
    flags: dict[str, bool] = {}
    try:
        for key in (_LOCKED_KEY, _ON_CONSOLE_KEY):
            name = cf.CFStringCreateWithCString(None, key.encode(), _UTF8)
            try:
                value = cf.CFDictionaryGetValue(session, name)
                if value and cf.CFGetTypeID(value) == cf.CFBooleanGetTypeID():
                    flags[key] = bool(cf.CFBooleanGetValue(value))
            finally:
                cf.CFRelease(name)
    finally:
        cf.CFRelease(session)
    return flags


class MacIdle:
    """Idle time from CoreGraphics' HID event source state.

    Args:
        seconds_since_input: Returns the seconds since the last hardware input.
    """

    name = "macOS CoreGraphics (CGEventSourceSecondsSinceLastEventType)"

    def __init__(self, seconds_since_input: Callable[[], float] = mac_seconds_since_input) -> None:
        self._seconds_since_input = seconds_since_input

    def read(self) -> int:
        """Milliseconds since the last keyboard, mouse or trackpad input."""
        seconds = self._seconds_since_input()
        if not math.isfinite(seconds) or seconds < 0:
            raise OSError(f"CoreGraphics reported an idle time of {seconds!r} s")
        return round(seconds * 1000)

    def close(self) -> None:
        """Nothing to release."""


class MacLock:
    """Locked while the login session says its screen is locked, or it is not on the console.

    Args:
        session_flags: Returns the session dictionary's boolean lock keys, or
            None when the process has no window server session.
    """

    name = "macOS CGSessionCopyCurrentDictionary"

    def __init__(
        self, session_flags: Callable[[], dict[str, bool] | None] = mac_session_flags
    ) -> None:
        self._session_flags = session_flags

    def read(self) -> bool:
        """True while the screen is locked or another user has the console (fast user switching)."""
        flags = self._session_flags()
        if flags is None:
            raise OSError("no window server session (started over ssh, or as a daemon?)")
        return flags.get(_LOCKED_KEY, False) or not flags.get(_ON_CONSOLE_KEY, True)

    def close(self) -> None:
        """Nothing to release."""
