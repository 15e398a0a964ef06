"""``timeback-tracker spool``: see, send and repair what a machine's spools hold.

One action per operator question: ``ls`` (which spools are on this machine,
and what each holds for whom), ``status`` and ``list`` (one spool in detail,
crash checkpoints included), ``send`` (deliver now, without the app),
``retry-dead`` and ``purge``. Every action works on real files while trackers
run, takes no lock a live tracker needs, and shows no email or user id unless
``--show-pii``.

:func:`add_spool_command` registers the subcommand with the
``timeback-tracker`` parser, like :func:`~timeback_tracker._collector_cli.add_collector_command`.
This module imports only light standard-library modules; ``sqlite3``, the
spool and the tracker are imported when an action runs, so
``timeback-tracker --help`` stays fast. ``ls`` lives in ``_spool_ls.py`` and
``send`` in ``_spool_send.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from timeback_tracker._rules import DAY_SECONDS, number_argument
from timeback_tracker.config import MAX_EVENT_AGE_RANGE

if TYPE_CHECKING:
    from timeback_tracker._outbox import Entry
    from timeback_tracker._spool_admin import OpenRun, SpoolFile

__all__ = ["add_spool_command"]

_Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

PROG: Final = "timeback-tracker spool"
EXIT_OK: Final = 0
EXIT_NOT_CONFIRMED: Final = 1
EXIT_UNUSABLE: Final = 2

_DESCRIPTION: Final = """\
See, send and repair the SQLite spools where trackers keep undelivered events
and the crash checkpoints of running sessions. Safe while trackers run: no
action takes a lock a running tracker needs. Emails and user ids are shown
only with --show-pii.

Which spool: PATH (or --path FILE), else the default spool of --sensor IRI,
else of $TIMEBACK_SENSOR. `spool ls` lists every spool on the machine.
"""

_EPILOG: Final = """\
exit status:
  0  done
  1  send: events are left in the spool (the endpoint failed, the timeout
     passed, or another process is sending them); purge: not confirmed
  2  no usable spool, unusable options or TIMEBACK_* settings; purge
     --queued without a terminal to confirm on and without --yes
  3  send: nothing is left, but some events were set aside as dead letters
     (`spool list --dead` says why)
"""

_SEND_DESCRIPTION: Final = """\
Deliver what the spool holds now, as the app would on its next start: first
queue the windows of runs interrupted by a crash, then send each destination's
events to its own endpoint, one destination after the other (only those of
--endpoint URL with that option), through the library's own delivery code.

Credentials come from the TIMEBACK_* variables TrackerConfig.from_env() reads:
TIMEBACK_CLIENT_ID, TIMEBACK_CLIENT_SECRET and TIMEBACK_AUTH_URL (or
TIMEBACK_ENV=production|staging). A terminal shows a progress bar, anything
else plain lines; a summary per destination follows.
"""

_SEND_EPILOG: Final = """\
exit status:
  0  every event was sent
  1  events are left in the spool: the endpoint failed, --timeout passed, or
     another process (the app) is sending them; run it again later
  2  no usable spool, unusable options or TIMEBACK_* settings; nothing sent
  3  nothing is left, but some events were set aside as dead letters
     (`timeback-tracker spool list --dead` says why)
"""


def add_spool_command(subparsers: _Subparsers) -> None:
    """Register the ``spool`` subcommand and its actions.

    Args:
        subparsers: The ``timeback-tracker`` parser's subcommands; the new
            parser's ``run`` default takes the parsed namespace and returns
            the exit code.
    """
    parser = subparsers.add_parser(
        "spool",
        help="see, send and repair what a machine's spools hold",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    one = argparse.ArgumentParser(add_help=False)
    which = one.add_argument_group("which spool")
    which.add_argument("path", metavar="PATH", nargs="?", help="the spool file")
    which.add_argument("--path", dest="path_option", metavar="FILE", help="the spool file")
    which.add_argument(
        "--sensor",
        metavar="IRI",
        help="the default spool of this sensor (default $TIMEBACK_SENSOR)",
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)

    ls = actions.add_parser(
        "ls",
        help="every spool on this machine: destinations, counts, interrupted runs",
        description=(
            "List every spool in the per-user data directory (and each --dir): its "
            "destinations (sensor and endpoint, when last used), queued events, dead "
            "letters, crash checkpoints, the age of its oldest event and the runs "
            "interrupted by a crash. Corrupt spools moved aside (*.corrupt-*) are listed "
            "with the number of events that can still be read."
        ),
    )
    ls.add_argument(
        "--dir",
        dest="dirs",
        metavar="DIR",
        action="append",
        default=[],
        help="also list the spools in DIR (repeatable)",
    )
    ls.set_defaults(action="ls")

    actions.add_parser(
        "status",
        parents=[one],
        help="counts by kind and age, dead letters by reason, checkpoints",
        description="Counts of queued events by kind and age, dead letters by reason, "
        "crash checkpoints and interrupted runs.",
    ).set_defaults(action="status")

    listing = actions.add_parser(
        "list",
        parents=[one],
        help="one line per queued event and crash checkpoint (and dead letter, with --dead)",
        description=(
            "One line per event: the queued ones in delivery order (STATE queued), then "
            "the windows of crash checkpoints (STATE interrupted: its tracker is gone, "
            "`spool send` or the next start queues it; STATE running: its tracker lives), "
            "with --dead also the dead letters and their reasons. Each line: id, kind, run "
            "id, event time, attempts and values."
        ),
    )
    listing.add_argument("--dead", action="store_true", help="list dead letters too")
    listing.add_argument(
        "--show-pii", action="store_true", help="also show each student's id and email"
    )
    listing.set_defaults(action="list")

    send = actions.add_parser(
        "send",
        parents=[one],
        help="deliver what the spool holds now, without starting the app",
        description=_SEND_DESCRIPTION,
        epilog=_SEND_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    send.add_argument(
        "--endpoint",
        metavar="URL",
        help="send only the events recorded for this endpoint (needed for a 0.1 spool, "
        "which records none)",
    )
    send.add_argument(
        "--timeout",
        type=number_argument(1, DAY_SECONDS),
        default=30.0,
        metavar="SECONDS",
        help="give up on a destination after this long without progress (default 30)",
    )
    send.add_argument(
        "--max-event-age",
        type=number_argument(*MAX_EVENT_AGE_RANGE),
        default=None,
        metavar="SECONDS",
        help="older events become dead letters, as in the app (default 30 days)",
    )
    send.set_defaults(action="send")

    actions.add_parser(
        "retry-dead",
        parents=[one],
        help="move dead letters back to the queue",
        description=(
            "Move every dead letter back to the tail of the queue, attempts reset; their "
            "age for max_event_age counts from now. `spool send` (or the app) sends them."
        ),
    ).set_defaults(action="retry-dead")

    purge = actions.add_parser(
        "purge",
        parents=[one],
        help="delete dead letters (--dead) or queued events (--queued)",
        description=(
            "Delete dead letters (--dead), or queued events (--queued: they will never be "
            "sent; asks for confirmation on a terminal, or needs --yes). Crash "
            "checkpoints are kept."
        ),
    )
    purge.add_argument("--dead", action="store_true", help="delete the dead letters")
    purge.add_argument(
        "--queued", action="store_true", help="delete the queued events (never sent)"
    )
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation (--queued)")
    purge.set_defaults(action="purge")
    parser.set_defaults(run=_run_spool)


def _run_spool(args: argparse.Namespace) -> int:
    action: str = args.action
    prefix = f"{PROG} {action}"
    if action == "ls":
        from timeback_tracker._spool_ls import run_ls

        return run_ls([Path(directory) for directory in args.dirs])
    if action == "purge" and not (args.dead or args.queued):
        print(f"{prefix}: say what to purge: --dead, --queued or both", file=sys.stderr)
        return EXIT_UNUSABLE
    path = _which_spool(args, prefix)
    if path is None:
        return EXIT_UNUSABLE
    if action == "send":
        from timeback_tracker._spool_send import run_send

        return run_send(
            path,
            endpoint=args.endpoint,
            sensor=_sensor(args),
            filter_sensor=bool(args.sensor) or not (args.path or args.path_option),
            timeout=args.timeout,
            max_event_age=args.max_event_age,
        )
    return _run_on_file(path, args, prefix)


def _sensor(args: argparse.Namespace) -> str | None:
    """The sensor named by --sensor or, failing that, $TIMEBACK_SENSOR."""
    sensor: str = args.sensor or os.environ.get("TIMEBACK_SENSOR", "").strip()
    return sensor or None


def _which_spool(args: argparse.Namespace, prefix: str) -> Path | None:
    """The spool file the arguments name; None (after saying why) when there is none."""
    from timeback_tracker._locations import default_spool_path

    given = [value for value in (args.path, args.path_option) if value]
    if len(given) == 2 or (given and args.sensor):
        print(f"{prefix}: give one of PATH, --path FILE and --sensor IRI", file=sys.stderr)
        return None
    sensor = _sensor(args)
    if given:
        path = Path(given[0])
    elif sensor:
        path = default_spool_path(sensor)
    else:
        print(
            f"{prefix}: give a spool PATH, --sensor IRI or $TIMEBACK_SENSOR "
            f"(`{PROG} ls` lists the spools)",
            file=sys.stderr,
        )
        return None
    if path.is_symlink():
        # The library never follows one where a spool goes; neither do its tools.
        print(f"{prefix}: {path}: refusing a symlink where a spool file goes", file=sys.stderr)
        return None
    if not path.is_file():
        print(f"{prefix}: {path}: no such spool file", file=sys.stderr)
        return None
    return path


def _run_on_file(path: Path, args: argparse.Namespace, prefix: str) -> int:
    import sqlite3

    from timeback_tracker._spool_admin import SpoolFile

    action: str = args.action
    try:
        spool = SpoolFile(path)
    except FileNotFoundError:
        print(f"{prefix}: {path}: no such spool file", file=sys.stderr)
        return EXIT_UNUSABLE
    except (sqlite3.Error, OSError) as exc:
        print(f"{prefix}: {path}: not a usable spool ({exc})", file=sys.stderr)
        return EXIT_UNUSABLE
    with spool:
        try:
            if action == "status":
                _print_status(spool)
            elif action == "list":
                _print_list(spool, dead=args.dead, show_pii=args.show_pii)
            elif action == "retry-dead":
                print(f"moved {spool.retry_dead()} dead letters back to the queue")
            else:
                return _purge(spool, args, prefix)
        except sqlite3.Error as exc:
            print(f"{prefix}: {path}: {exc}", file=sys.stderr)
            return EXIT_UNUSABLE
    return EXIT_OK


# --------------------------------------------------------------------------
# status and list


def _print_status(spool: SpoolFile) -> None:
    status = spool.status()
    interrupted = sum(1 for run in spool.open_runs() if run.interrupted)
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(status.by_kind.items()))
    ages = ", ".join(f"{bucket} {count}" for bucket, count in status.by_age.items())
    oldest = "-" if status.oldest_event_ms is None else utc_text(status.oldest_event_ms)
    print(f"spool: {spool.path}")
    print(f"queued: {status.queued}" + (f" ({kinds})" if kinds else ""))
    print(f"by event age: {ages}")
    print(f"oldest event: {oldest}")
    print(f"dead letters: {status.dead_letters}")
    for reason, count in status.dead_reasons.items():
        print(f"  {count}  {reason}")
    print(f"checkpoints: {status.checkpoints}")
    print(f"interrupted runs: {interrupted}")


def _print_list(spool: SpoolFile, *, dead: bool, show_pii: bool) -> None:
    header = ["STATE", "ID", "KIND", "RUN", "EVENT TIME", "ATTEMPTS", "VALUES"]
    if show_pii:
        header += ["ACTOR", "EMAIL"]
    if dead:
        header.append("REASON")
    rows = spool.list_entries(include_dead=dead)
    listed: list[_Listed] = [
        ("queued", row.entry, None, str(row.entry.attempts)) for row in rows if not row.dead
    ]
    listed += _checkpoint_lines(spool.open_runs())
    listed += [("dead", row.entry, row.reason, str(row.entry.attempts)) for row in rows if row.dead]
    lines = [header]
    for state, entry, note, attempts in listed:
        payload = _payload(entry.payload)
        line = [
            state,
            entry.id,
            entry.kind,
            entry.run_id,
            utc_text(entry.event_time_ms) if entry.event_time_ms else "-",
            attempts,
            _entry_values(payload) if state != "damaged" else note or "-",
        ]
        if show_pii:
            actor = payload.get("actor") or {}
            line += [str(actor.get("id", "-")), str(actor.get("email", "-"))]
        if dead:
            line.append(note if state == "dead" and note else "")
        lines.append(line)
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    for line in lines:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )


_Listed: TypeAlias = "tuple[str, Entry, str | None, str]"
"""A line of ``spool list``: state, entry, reason or problem, attempts."""


def _checkpoint_lines(runs: list[OpenRun]) -> list[_Listed]:
    """The windows a recovery would queue from each crash checkpoint, as lines."""
    from timeback_tracker._outbox import Entry

    lines: list[_Listed] = []
    for run in runs:
        state = "checkpoint" if run.alive is None else "running" if run.alive else "interrupted"
        if run.problem is not None:
            stub = Entry("-", run.run_id, "time", run.seen_ms or 0, "{}")
            lines.append(("damaged", stub, f"checkpoint {run.problem}", "-"))
        lines += [(state, window, None, "-") for window in run.windows]
    return lines


def _payload(text: str) -> dict[str, Any]:
    try:
        payload = json.loads(text)
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _entry_values(payload: dict[str, Any]) -> str:
    items = (payload.get("generated") or {}).get("items") or []
    values = [f"{item.get('type')}={item.get('value')}" for item in items if isinstance(item, dict)]
    return " ".join(values) or "-"


def utc_text(epoch_ms: int) -> str:
    """Epoch milliseconds as ``YYYY-MM-DDTHH:MM:SSZ``."""
    from datetime import datetime, timezone

    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------
# purge


def _purge(spool: SpoolFile, args: argparse.Namespace, prefix: str) -> int:
    if args.queued:
        ids = spool.queued_ids()
        refused = None if args.yes or not ids else _refused(spool, len(ids), prefix)
        if refused is not None:
            return refused
        print(f"deleted {spool.purge_queued(ids)} queued events")
        waiting = sum(1 for run in spool.open_runs() if run.interrupted and run.windows)
        if waiting:
            print(
                f"kept the checkpoints of {waiting} interrupted runs: `{PROG} send` or "
                "the app's next start queues their windows"
            )
    if args.dead:
        print(f"deleted {spool.purge_dead()} dead letters")
    return EXIT_OK


def _refused(spool: SpoolFile, count: int, prefix: str) -> int | None:
    """Ask on the terminal; the exit code when not confirmed, None when confirmed.

    Without a terminal there is nobody to ask: refused, saying how to go on.
    """
    if not sys.stdin.isatty():
        print(
            f"{prefix}: refusing to delete {count} queued events without confirmation: "
            "run it on a terminal, or add --yes",
            file=sys.stderr,
        )
        return EXIT_UNUSABLE
    print(
        f"Delete {count} queued events from {spool.path}? They will never be sent. [y/N] ",
        end="",
        file=sys.stderr,
        flush=True,
    )
    if sys.stdin.readline().strip().lower() in ("y", "yes"):
        return None
    print("nothing deleted", file=sys.stderr)
    return EXIT_NOT_CONFIRMED
