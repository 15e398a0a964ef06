"""``timeback-tracker spool ls``: every spool on the machine and what it holds for whom.

Looks in the per-user data directory (where ``DEFAULT_SPOOL`` files live) and
in each ``--dir``. For each spool: its destinations (sensor, endpoint, when
last used), queued events, dead letters, crash checkpoints, the age of the
oldest event, and the runs a crash interrupted. Corrupt spools moved aside
(``*.corrupt-*``) are listed with what can still be read from them. Nothing
is changed, and no lock a live tracker needs is taken.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import attrs

from timeback_tracker._locations import default_directory
from timeback_tracker._spool_admin import Destination, OpenRun, SpoolFile
from timeback_tracker._spool_schema import (
    CorruptSpoolError,
    NewerSpoolError,
    is_busy,
    is_corrupt,
    salvage,
)
from timeback_tracker._urls import safe_url

__all__ = ["Salvageable", "find_spools", "is_foreign", "run_ls", "salvageable"]

EXIT_OK = 0
EXIT_UNUSABLE = 2

_SQLITE_MAGIC = b"SQLite format 3\x00"
_COMPANIONS = ("-wal", "-shm", "-journal", ".lock")


def run_ls(directories: Iterable[Path], *, now_ms: int | None = None) -> int:
    """Print the spools of the per-user data directory and of ``directories``.

    Args:
        directories: More directories to look in (``--dir``).
        now_ms: The time ages are counted from (epoch ms); now when None.

    Returns:
        The exit code: 0, or 2 when a directory given cannot be read.
    """
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    default = default_directory()
    wanted = [default]
    for directory in directories:
        if directory.resolve() not in {d.resolve() for d in wanted}:
            wanted.append(directory)
    code = EXIT_OK
    totals = _Totals()
    for directory in wanted:
        try:
            spools, corrupt = find_spools(directory)
        except FileNotFoundError:
            if directory is default:
                print(f"no spools in {directory} (it does not exist yet)")
                continue
            print(f"timeback-tracker spool ls: {directory}: no such directory", file=sys.stderr)
            code = EXIT_UNUSABLE
            continue
        except OSError as exc:
            print(f"timeback-tracker spool ls: {directory}: cannot read ({exc})", file=sys.stderr)
            code = EXIT_UNUSABLE
            continue
        if not spools and not corrupt:
            print(f"no spools in {directory}")
        for path in spools:
            _print_spool(path, now, totals)
        for path in corrupt:
            _print_corrupt(path, now, totals)
    print(totals.line())
    return code


@attrs.define
class _Totals:
    """What the spools listed hold, for the last line."""

    spools: int = 0
    queued: int = 0
    dead: int = 0
    interrupted: int = 0
    corrupt: int = 0

    def line(self) -> str:
        text = (
            f"{_count(self.spools, 'spool')}: {_count(self.queued, 'queued event')}, "
            f"{_count(self.dead, 'dead letter')}, {_count(self.interrupted, 'interrupted run')}"
        )
        if self.corrupt:
            text += f"; {_count(self.corrupt, 'corrupt file')} moved aside"
        return text


def _print_spool(path: Path, now: int, totals: _Totals) -> None:
    print(path)
    try:
        with SpoolFile(path) as spool:
            destinations = spool.destinations()
            runs = spool.open_runs()
    except (sqlite3.Error, OSError) as exc:
        if not is_foreign(exc):  # an app's own database beside the spools: not ours to list
            print(f"  unusable: {_unusable(path, exc)}")
        return
    totals.spools += 1
    if not destinations and not runs:
        print("  empty")
    shown: set[str] = set()
    for destination in destinations:
        mine = [run for run in runs if run.dest == destination.key]
        shown.add(destination.key)
        _print_destination(destination, mine, now, totals)
    # Runs of a tracker killed before it recorded its destination (the spool was busy).
    strays: dict[str, list[OpenRun]] = {}
    for run in runs:
        if run.dest not in shown:
            strays.setdefault(run.dest, []).append(run)
    for key, stray in strays.items():
        _print_destination(Destination(key, None, None, None, 0, 0, None), stray, now, totals)


def _print_destination(
    destination: Destination, runs: list[OpenRun], now: int, totals: _Totals
) -> None:
    if destination.sensor is None and not destination.key:
        print("  destination not recorded (a 0.1 spool's rows: the next tracker adopts them)")
    elif destination.sensor is None:
        # Only the app sending to it can: the spool knows the key, not its sensor and endpoint.
        print(
            f"  destination {destination.key} not recorded here "
            "(its app sends these events when it next starts)"
        )
    else:
        used = destination.last_used_ms
        print(f"  sensor    {destination.sensor or '(none)'}")
        print(
            f"  endpoint  {safe_url(destination.endpoint) if destination.endpoint else '(none)'}"
            + ("" if used is None else f" (last used {_ago(now - used)})")
        )
    interrupted = [run for run in runs if run.interrupted]
    counts = (
        f"  queued {destination.queued}, dead letters {destination.dead_letters}, "
        f"checkpoints {len(runs)}" + (f" ({len(interrupted)} interrupted)" if interrupted else "")
    )
    if destination.oldest_event_ms is not None:
        counts += f", oldest event {_ago(now - destination.oldest_event_ms)}"
    print(counts)
    for run in interrupted:
        print(f"  interrupted run {run.run_id}: {_run_text(run, now)}")
    totals.queued += destination.queued
    totals.dead += destination.dead_letters
    totals.interrupted += len(interrupted)


def _run_text(run: OpenRun, now: int) -> str:
    seen = "" if run.seen_ms is None else f", last seen {_ago(now - run.seen_ms)}"
    if run.problem is not None:
        return f"checkpoint {run.problem}: cannot be recovered{seen}"
    if not run.windows:
        return f"nothing left to send{seen}"
    active = sum(window.active_ms for window in run.windows)
    inactive = sum(window.inactive_ms for window in run.windows)
    return (
        f"{_count(len(run.windows), 'window')} to send, active {active / 1000:.1f} s, "
        f"inactive {inactive / 1000:.1f} s{seen}"
    )


def _print_corrupt(path: Path, now: int, totals: _Totals) -> None:
    totals.corrupt += 1
    found = salvageable(path)
    print(path)
    if not found.rows:
        print("  corrupt, moved aside: no event can be read from it")
        return
    oldest = (
        "" if found.oldest_event_ms is None else f", oldest {_ago(now - found.oldest_event_ms)}"
    )
    print(
        f"  corrupt, moved aside: {_count(found.rows, 'event')} still readable{oldest} "
        "(queued in the fresh spool when it was moved aside)"
    )


def _unusable(path: Path, error: BaseException) -> str:
    if isinstance(error, NewerSpoolError):
        return f"written by a newer version of timeback-tracker ({error})"
    if is_busy(error):
        return "busy: another process holds its write lock; try again"
    if is_corrupt(error):
        found = salvageable(path)
        return (
            f"corrupt ({error}); the next tracker on it moves it aside and queues the "
            f"{_count(found.rows, 'event')} that can still be read"
        )
    return f"cannot be read ({error})"


# --------------------------------------------------------------------------
# finding spools


def find_spools(directory: Path) -> tuple[list[Path], list[Path]]:
    """The spool files in ``directory``, and the corrupt spools moved aside there.

    Not recursive; symlinks, lock files and SQLite's companion files are
    skipped, and so are SQLite databases that are not spools (an app's own).

    Raises:
        OSError: The directory cannot be read.
    """
    spools: list[Path] = []
    corrupt: list[Path] = []
    for path in sorted(directory.iterdir()):
        if path.name.endswith(_COMPANIONS) or path.is_symlink() or not path.is_file():
            continue
        if ".corrupt-" in path.name:
            corrupt.append(path)
        elif _looks_like_spool(path):
            spools.append(path)
    return spools, corrupt


def _looks_like_spool(path: Path) -> bool:
    """Whether a file is a SQLite database with a spool's tables (or too damaged to tell).

    Read as an immutable file: no lock, no WAL, nothing written beside it.
    A spool's tables are created before it switches to WAL, so the main
    file has them even while everything since is in the WAL.
    """
    try:
        with open(path, "rb") as file:
            if file.read(len(_SQLITE_MAGIC)) != _SQLITE_MAGIC:
                return False
    except OSError:
        return False
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?immutable=1", uri=True)
    except sqlite3.Error:
        return True  # let the real open say what is wrong
    try:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    except sqlite3.Error:
        return True  # damaged: a corrupt spool is worth listing
    finally:
        conn.close()
    return {"entries", "dead_letters"} <= names


def is_foreign(error: BaseException) -> bool:
    """Whether an error opening a file says it is some other SQLite database, not a spool."""
    return isinstance(error, CorruptSpoolError) and not str(error).startswith(
        "integrity check failed"
    )


@attrs.frozen
class Salvageable:
    """What can still be read from a corrupt spool.

    Attributes:
        rows: Queued events whose row still reads and whose JSON parses.
        oldest_event_ms: Event time of the oldest of them, None if none.
    """

    rows: int
    oldest_event_ms: int | None


def salvageable(path: Path) -> Salvageable:
    """Count the queued events still readable in a corrupt spool (the file is not changed)."""
    rows = 0
    oldest: int | None = None
    for row in salvage(path):
        rows += 1
        event_time = row.get("event_time_ms")
        if isinstance(event_time, int) and (oldest is None or event_time < oldest):
            oldest = event_time
    return Salvageable(rows, oldest)


# --------------------------------------------------------------------------
# words


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _ago(ms: int) -> str:
    """A duration in the past, in the largest unit that keeps it readable."""
    seconds = max(0, ms) // 1000
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"
