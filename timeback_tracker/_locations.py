"""Where spool files live: the ``DEFAULT_SPOOL`` location, one file per sensor.

Kept apart from the spool itself so that the configuration can name
``DEFAULT_SPOOL`` without importing ``sqlite3``.
"""

from __future__ import annotations

import enum
import hashlib
import os
import sys
from pathlib import Path
from typing import Final, Literal, TypeAlias

__all__ = [
    "DEFAULT_SPOOL",
    "SpoolLocation",
    "default_directory",
    "default_spool_path",
    "resolve_spool_path",
    "spool_path_problem",
]


class _Default(enum.Enum):
    SPOOL = "DEFAULT_SPOOL"

    def __repr__(self) -> str:
        return "DEFAULT_SPOOL"


DEFAULT_SPOOL: Final = _Default.SPOOL
"""``spool_path`` value meaning: the spool file of the sensor in the per-user data directory."""

SpoolLocation: TypeAlias = "str | os.PathLike[str] | Literal[_Default.SPOOL] | None"
"""What ``spool_path`` may be: a file, :data:`DEFAULT_SPOOL`, or None (memory only)."""


def spool_path_problem(spool_path: object) -> str | None:
    """The rule ``spool_path`` breaks, or None (``TrackerConfig`` checks the same rule)."""
    if spool_path is None or spool_path is DEFAULT_SPOOL:
        return None
    if not isinstance(spool_path, (str, os.PathLike)) or not os.fspath(spool_path):
        return "must be a file path, DEFAULT_SPOOL or None"
    return None


def resolve_spool_path(spool_path: SpoolLocation, sensor: str) -> Path | None:
    """The spool file ``spool_path`` names, or None for memory only.

    Args:
        spool_path: None (memory), :data:`DEFAULT_SPOOL`, or the file itself.
        sensor: The sensor IRI; :data:`DEFAULT_SPOOL` keeps one file per sensor.

    Returns:
        ``<data dir>/timeback-tracker/spool-<sha256(sensor)[:16]>.sqlite3`` for
        :data:`DEFAULT_SPOOL`, where the data dir is ``$XDG_DATA_HOME`` (or
        ``~/.local/share``) on Linux, ``%LOCALAPPDATA%`` on Windows and
        ``~/Library/Application Support`` on macOS.

    Raises:
        ValueError: ``spool_path`` is an empty string.
        TypeError: ``spool_path`` is neither a path, DEFAULT_SPOOL nor None.
    """
    problem = spool_path_problem(spool_path)
    if problem is not None:
        wrong_type = not isinstance(spool_path, (str, os.PathLike))
        raise (TypeError if wrong_type else ValueError)(f"spool_path: {problem}")
    if spool_path is None:
        return None
    if spool_path is DEFAULT_SPOOL:
        return default_spool_path(sensor)
    return Path(os.fspath(spool_path)).expanduser()


def default_spool_path(sensor: str) -> Path:
    """The default spool file of ``sensor``: one per sensor in :func:`default_directory`."""
    digest = hashlib.sha256(sensor.encode("utf-8")).hexdigest()[:16]
    return default_directory() / f"spool-{digest}.sqlite3"


def default_directory() -> Path:
    """The per-user directory of the default spool files (``.../timeback-tracker``)."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA", "")
        root = Path(base) if base else Path.home() / "AppData" / "Local"
    elif sys.platform == "darwin":
        root = Path.home() / "Library" / "Application Support"
    else:
        xdg = os.environ.get("XDG_DATA_HOME", "")
        # The XDG spec says to ignore a relative value.
        root = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return root / "timeback-tracker"
