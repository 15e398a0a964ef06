"""The spool's files on disk: created safely, locked, and the owners' signs of life.

Everything here is about files, not about the outbox that ``_spool.py`` builds
on them:

* private files: the directory is created ``0700`` level by level and the
  files ``0600``, whatever the umask; a symlink planted where a spool file
  goes is refused, never followed;
* lock files: ``<spool>.drain-<destination>.lock`` (one process at a time
  sends a destination's events) and ``<spool>.owner-<token>.lock`` (held
  while a tracker lives; it also carries the tracker's sign of life, see
  :class:`AliveRecord`).

The SQLite schema itself is in ``_spool_schema.py``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import stat
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

from timeback_tracker._locations import default_directory

if sys.platform == "win32":
    import msvcrt
else:
    import fcntl

log = logging.getLogger("timeback_tracker.spool")

__all__ = [
    "SHARED_MEMORY",
    "AliveRecord",
    "close_quietly",
    "create_private",
    "destination",
    "memory_record",
    "open_lock_file",
    "open_private",
    "prepare_directory",
    "read_alive",
    "refuse_symlink",
    "remove_alive",
    "remove_lock_file",
    "tighten",
    "try_lock",
]

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def destination(sensor: str, endpoint: str) -> str:
    """The key of a (sensor, endpoint) pair: whose events a row holds, without credentials."""
    return hashlib.sha256(f"{sensor}\n{endpoint}".encode()).hexdigest()[:16]


# -- private files --------------------------------------------------------------------------


def prepare_directory(directory: Path) -> None:
    """Create ``directory`` and missing parents owner-only (0700) whatever the umask.

    An existing directory keeps its mode, except the default one, which is
    made owner-only if it is looser.

    Raises:
        NotADirectoryError: Something else is in the way.
    """
    missing = []
    level = directory
    while not os.path.lexists(level):
        missing.append(level)
        if level.parent == level:
            break
        level = level.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass  # created meanwhile by another process
        else:
            if os.name == "posix":
                os.chmod(path, 0o700)  # mkdir's mode is subject to the umask
    if not directory.is_dir():
        raise NotADirectoryError(f"not a directory: {directory}")
    if directory == default_directory():
        tighten(directory, 0o700)


def tighten(path: Path, mode: int) -> None:
    """Take away group and other permissions from an existing file or directory."""
    if os.name != "posix":
        return
    current = stat.S_IMODE(os.stat(path).st_mode)
    if current & 0o077:
        log.warning(
            "%s was accessible to other users (mode %o); made it owner-only (%o)",
            path,
            current,
            current & mode,
        )
        os.chmod(path, current & mode)


def refuse_symlink(path: Path) -> None:
    """Raise unless ``path`` is missing or a regular file (a planted symlink is refused).

    Raises:
        IsADirectoryError: ``path`` is a symlink, a directory or a device.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise IsADirectoryError(f"refusing a symlink where a private file goes: {path}")
    if not stat.S_ISREG(mode):
        raise IsADirectoryError(f"not a regular file: {path}")


def open_private(path: Path, flags: int = os.O_RDWR) -> int:
    """Open ``path`` with ``flags``, created owner-only (0600) or the existing file tightened.

    The one rule for every file that holds students' data or a lock (the
    spool, its lock files, the collector's store). Never follows a symlink.

    Returns:
        An open descriptor (not inherited by child processes).

    Raises:
        IsADirectoryError: ``path`` is a symlink or not a regular file.
    """
    refuse_symlink(path)
    flags |= _CLOEXEC | _NOFOLLOW
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        refuse_symlink(path)  # planted between the two looks
        tighten(path, 0o600)
        return os.open(path, flags)
    if os.name == "posix":
        try:
            os.fchmod(fd, 0o600)  # the umask may have taken bits the owner needs
        except BaseException:
            os.close(fd)
            raise
    return fd


def create_private(path: Path) -> None:
    """Create ``path`` as an empty owner-only (0600) file, or tighten the existing one.

    Raises:
        IsADirectoryError: ``path`` is a symlink or not a regular file.
    """
    os.close(open_private(path))


def open_lock_file(path: Path) -> int:
    """An open descriptor of the owner-only lock file ``path`` (created if missing)."""
    return open_private(path)


if sys.platform == "win32":

    def try_lock(fd: int) -> bool:
        """Take the exclusive lock of an open lock file without waiting; False if held."""
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

else:

    def try_lock(fd: int) -> bool:
        """Take the exclusive lock of an open lock file without waiting; False if held."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def close_quietly(fd: int | None) -> None:
    """Close a descriptor (if any), ignoring errors: used on the way out of trouble."""
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def remove_lock_file(path: Path, fd: int | None) -> None:
    """Delete a lock file whose lock ``fd`` holds (POSIX), then let go of it."""
    with contextlib.suppress(OSError):
        os.unlink(path)  # Windows refuses while it is open: retried below
    if fd is not None:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(path)


# -- signs of life --------------------------------------------------------------------------


SHARED_MEMORY = Path("/dev/shm")  # noqa: S108 - a private directory of this user's, checked
"""Linux's shared-memory file system: the signs of life go in a private directory there
when ``$XDG_RUNTIME_DIR`` (a per-user one in memory) is not set."""


def memory_record(lock: Path) -> Path | None:
    """Where the sign of life of the owner lock file ``lock`` is kept in memory, or None.

    A sign of life rewritten each second in the lock file dirties a page the
    kernel writes back to the disk every 30 s, and its inode's times with it
    (about 1 MB an hour of a lone session's 5 MB budget, issue 12). It only
    has to survive the process being killed, which a file in memory does
    (Linux: ``$XDG_RUNTIME_DIR``, else ``/dev/shm``, in a directory of this
    user's, 0700); after power loss the spool's state at the last tick is
    used, as it always was. Elsewhere, or when no such directory is safe,
    None: the sign of life stays in the lock file.
    """
    directory = _memory_directory()
    if directory is None:
        return None
    try:
        where = lock.resolve()
    except OSError:
        where = lock.absolute()
    key = hashlib.sha256(str(where).encode()).hexdigest()[:32]
    return directory / f"{key}.alive"


def _memory_directory() -> Path | None:
    if not sys.platform.startswith("linux"):
        return None
    candidates = []
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(runtime):
        candidates.append(Path(runtime) / "timeback-tracker")
    candidates.append(SHARED_MEMORY / f"timeback-tracker-{os.geteuid()}")
    for directory in candidates:
        if _private_directory(directory):
            return directory
    return None


def _private_directory(directory: Path) -> bool:
    """Whether ``directory`` is (or was just made) a directory of this user's only: never
    one another user planted in a shared place, nor a symlink to one."""
    with contextlib.suppress(OSError):
        os.mkdir(directory, 0o700)
    try:
        found = os.lstat(directory)
    except OSError:
        return False
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.geteuid():
        return False
    if stat.S_IMODE(found.st_mode) & 0o077:
        try:
            os.chmod(directory, 0o700)  # ours: made loose by a umask-less mkdir elsewhere
        except OSError:
            return False
    return True


def read_alive(lock: Path) -> dict[str, Any] | None:
    """An owner's sign of life: the record kept in memory, else the one in its lock file."""
    memory = memory_record(lock)
    record = AliveRecord.read(memory) if memory is not None else None
    return record if record is not None else AliveRecord.read(lock)


def remove_alive(lock: Path) -> None:
    """Delete the sign of life an owner kept in memory (its lock file is the caller's)."""
    memory = memory_record(lock)
    if memory is not None:
        with contextlib.suppress(OSError):
            os.unlink(memory)


class AliveRecord:
    """A tracker's sign of life: in memory (:func:`memory_record`) or its owner lock file.

    Once a second, while sessions run, the tracker says where each of its run
    segments is (template and accounting state), without ``fsync``: it
    survives the process being killed, and costs next to nothing. Power loss
    may lose it; the record is then missing, older than the spool's durable
    state, or fails its checksum, and the spool's state at the last tick is
    used instead.

    The accounting does not change between calls, so most seconds nothing but
    the time does: the body (JSON, with each segment's state) is written when
    a state changes, and in between only a 24-byte *stamp* saying "at this
    moment, every running segment was still in the body's state"; recovery
    replays the states up to the stamp's moment.

    Layout: ``TTA3``, body length (4 bytes), body CRC-32 (4 bytes); the stamp:
    the body CRC it vouches for (4), monotonic and wall ms (8 + 8), its own
    CRC-32 (4); the JSON body. Writing the body clears the stamp in the same
    write. ``TTA2`` records (no stamp: header then body) are still read.
    """

    MAGIC = b"TTA3"
    _LEGACY = b"TTA2"
    _HEADER = struct.Struct(">4sII")
    _STAMP = struct.Struct(">Iqq")
    _BODY_AT = _HEADER.size + _STAMP.size + 4

    @classmethod
    def write(cls, fd: int, payload: dict[str, Any]) -> int:
        """Replace the record in ``fd`` with ``payload`` and no stamp (one positioned
        write); returns the body's CRC, which :meth:`stamp` vouches for."""
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        crc = zlib.crc32(body)
        no_stamp = bytes(cls._STAMP.size + 4)  # its CRC does not match: no stamp
        _write_at(fd, cls._HEADER.pack(cls.MAGIC, len(body), crc) + no_stamp + body, 0)
        return crc

    @classmethod
    def stamp(cls, fd: int, body_crc: int, mono_ms: int, wall_ms: int) -> None:
        """Say that at ``mono_ms`` (``wall_ms``) the body with ``body_crc`` still held."""
        stamp = cls._STAMP.pack(body_crc, mono_ms, wall_ms)
        _write_at(fd, stamp + zlib.crc32(stamp).to_bytes(4, "big"), cls._HEADER.size)

    @classmethod
    def read(cls, path: Path) -> dict[str, Any] | None:
        """The record in ``path``, or None when there is none or it is damaged.

        A valid stamp is given as ``"at": [mono_ms, wall_ms]``.
        """
        try:
            with open(path, "rb") as file:
                head = file.read(cls._BODY_AT)
                if len(head) < cls._HEADER.size:
                    return None
                magic, length, crc = cls._HEADER.unpack_from(head)
                if magic not in (cls.MAGIC, cls._LEGACY) or length > 64 << 20:
                    return None
                file.seek(cls._BODY_AT if magic == cls.MAGIC else cls._HEADER.size)
                body = file.read(length)
        except OSError:
            return None
        payload = _checked_object(body, length, crc)
        stamp = head[cls._HEADER.size : cls._BODY_AT]
        if payload is not None and magic == cls.MAGIC and len(stamp) == cls._STAMP.size + 4:
            vouched, mono_ms, wall_ms = cls._STAMP.unpack_from(stamp)
            if vouched == crc and zlib.crc32(stamp[:-4]) == int.from_bytes(stamp[-4:], "big"):
                payload["at"] = [mono_ms, wall_ms]
        return payload


def _checked_object(body: bytes, length: int, crc: int) -> dict[str, Any] | None:
    """The JSON object ``body`` holds if it has the length and checksum said, else None."""
    if len(body) != length or zlib.crc32(body) != crc:
        return None
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def _write_at(fd: int, data: bytes, offset: int) -> None:
    """Write all of ``data`` at ``offset``; a short write (a full disk, a file size
    limit) raises, so the caller knows the record is torn and writes it elsewhere."""
    if hasattr(os, "pwrite"):
        written = os.pwrite(fd, data, offset)
    else:  # Windows
        os.lseek(fd, offset, os.SEEK_SET)
        written = os.write(fd, data)
    if written != len(data):
        raise OSError(errno.ENOSPC, f"wrote {written} of {len(data)} bytes")
