"""The ``timeback-tracker`` command line.

Each subcommand is one ``_add_<name>`` function that registers its parser
and one ``_run_<name>`` function that does the work and returns the exit
code; :data:`_COMMANDS` lists the registrars. Add a command by writing both
functions and appending the registrar.

The module imports the standard library and the models (attrs, cattrs),
never the network stack, so ``timeback-tracker --help`` stays fast. A command
that needs more imports it inside its ``_run_<name>`` function.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from timeback_tracker._collector_cli import add_collector_command
from timeback_tracker._validate_cli import add_validate_command
from timeback_tracker._version import __version__

if TYPE_CHECKING:
    from timeback_tracker._spool_admin import SpoolFile

__all__ = ["main"]

_Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

EXIT_OK = 0
EXIT_UNREADABLE = 2


def main(argv: list[str] | None = None) -> int:
    """Run the ``timeback-tracker`` command line.

    Args:
        argv: The arguments after the program name; ``sys.argv[1:]`` when None.

    Returns:
        The exit code: 0 success, 1 invalid input, 2 unusable input or usage.
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: keep main() returning
        return exc.code if isinstance(exc.code, int) else EXIT_UNREADABLE
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="timeback-tracker",
        description="Report learning time to Timeback as Caliper events; tools for the wire.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add_command in _COMMANDS:
        add_command(subparsers)
    return parser


# --------------------------------------------------------------------------
# demo


def _add_demo(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="play an accelerated learning session against a local collector",
        description=(
            "Start a LocalCollector on loopback, play a short learning session (answers, "
            "a pause, an idle spell, a network outage, completion) with live progress, "
            "then print what the collector received and check it. With --endpoint, send "
            "to that Caliper endpoint instead (such as a `timeback-tracker collector`). "
            "Exit status: 0 all delivered and checked, 1 a check failed or events were "
            "not delivered (the cause is printed), 2 unusable options."
        ),
    )
    parser.add_argument(
        "--duration", type=_positive(5, 3600), default=30.0, help="seconds (default 30)"
    )
    parser.add_argument(
        "--interval", type=_positive(0.05, 3600), default=1.0, help="heartbeat seconds (default 1)"
    )
    parser.add_argument(
        "--endpoint",
        metavar="URL",
        help="send to this Caliper endpoint instead (credentials from TIMEBACK_* variables); "
        "the demo then ends within --duration plus exit_timeout (2 s) even if it is down",
    )
    parser.add_argument(
        "--sensor",
        metavar="IRI",
        help="the sensor IRI to send as (default: $TIMEBACK_SENSOR, else the demo's own)",
    )
    parser.add_argument("--quiet", action="store_true", help="print the summary only")
    parser.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from timeback_tracker._demo import run_demo
    from timeback_tracker.exceptions import ConfigurationError

    try:
        return run_demo(
            duration=args.duration,
            interval=args.interval,
            endpoint=args.endpoint,
            sensor=args.sensor,
            quiet=args.quiet,
        )
    except ConfigurationError as exc:
        print(f"timeback-tracker demo: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE


def _positive(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}")
        return value

    return parse


# --------------------------------------------------------------------------
# spool

_SPOOL_ACTIONS = ("status", "list", "retry-dead", "purge")


def _add_spool(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "spool",
        help="inspect and repair a durable outbox (spool) file",
        description=(
            "Inspect and repair the SQLite spool where a tracker keeps undelivered events. "
            "PATH defaults to the default spool of --sensor (or $TIMEBACK_SENSOR). Safe "
            "while trackers run. Emails and user ids are shown only with --show-pii. "
            "Exit status: 0 done, 2 no usable spool."
        ),
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("path", metavar="PATH", nargs="?", help="the spool file")
    common.add_argument(
        "--sensor", metavar="IRI", help="use the default spool of this sensor (if no PATH)"
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    actions.add_parser(
        "status",
        parents=[common],
        help="counts by kind and age, dead letters by reason, oldest event",
        description="Counts of queued events by kind and age, dead letters by reason.",
    ).set_defaults(action="status")
    listing = actions.add_parser(
        "list",
        parents=[common],
        help="one line per queued event (and dead letter, with --dead)",
        description=(
            "One line per queued event in delivery order: id, kind, run id, event time, "
            "attempts and values; with --dead also the dead letters and their reasons."
        ),
    )
    listing.add_argument("--dead", action="store_true", help="list dead letters too")
    listing.add_argument(
        "--show-pii", action="store_true", help="also show each student's id and email"
    )
    listing.set_defaults(action="list")
    actions.add_parser(
        "retry-dead",
        parents=[common],
        help="move dead letters back to the queue",
        description=(
            "Move every dead letter back to the tail of the queue, attempts reset. Events "
            "older than the tracker's max_event_age are set aside again when taken."
        ),
    ).set_defaults(action="retry-dead")
    purge = actions.add_parser(
        "purge",
        parents=[common],
        help="delete dead letters (--dead)",
        description="Delete every dead letter. Queued events are never purged.",
    )
    purge.add_argument("--dead", action="store_true", help="delete the dead letters (required)")
    purge.set_defaults(action="purge")
    parser.set_defaults(run=_run_spool)


def _run_spool(args: argparse.Namespace) -> int:
    import os
    import sqlite3

    from timeback_tracker._locations import default_spool_path
    from timeback_tracker._spool_admin import SpoolFile

    action: str = args.action
    prefix = f"timeback-tracker spool {action}"
    if action == "purge" and not args.dead:
        print(f"{prefix}: say what to purge: --dead (dead letters)", file=sys.stderr)
        return EXIT_UNREADABLE
    sensor = args.sensor or os.environ.get("TIMEBACK_SENSOR", "").strip()
    if args.path:
        path = Path(args.path)
    elif sensor:
        path = default_spool_path(sensor)
    else:
        print(f"{prefix}: give a spool PATH, --sensor IRI or $TIMEBACK_SENSOR", file=sys.stderr)
        return EXIT_UNREADABLE
    try:
        spool = SpoolFile(path)
    except FileNotFoundError:
        print(f"{prefix}: {path}: no such spool file", file=sys.stderr)
        return EXIT_UNREADABLE
    except (sqlite3.Error, OSError) as exc:
        print(f"{prefix}: {path}: not a usable spool ({exc})", file=sys.stderr)
        return EXIT_UNREADABLE
    with spool:
        try:
            if action == "status":
                _print_spool_status(path, spool)
            elif action == "list":
                _print_spool_list(spool, dead=args.dead, show_pii=args.show_pii)
            elif action == "retry-dead":
                print(f"moved {spool.retry_dead()} dead letters back to the queue")
            else:
                print(f"deleted {spool.purge_dead()} dead letters")
        except sqlite3.Error as exc:
            print(f"{prefix}: {path}: {exc}", file=sys.stderr)
            return EXIT_UNREADABLE
    return EXIT_OK


def _print_spool_status(path: Path, spool: SpoolFile) -> None:
    status = spool.status()
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(status.by_kind.items()))
    ages = ", ".join(f"{bucket} {count}" for bucket, count in status.by_age.items())
    oldest = "-" if status.oldest_event_ms is None else _utc_text(status.oldest_event_ms)
    print(f"spool: {path}")
    print(f"queued: {status.queued}" + (f" ({kinds})" if kinds else ""))
    print(f"by event age: {ages}")
    print(f"oldest event: {oldest}")
    print(f"dead letters: {status.dead_letters}")
    for reason, count in status.dead_reasons.items():
        print(f"  {count}  {reason}")
    print(f"checkpoints: {status.checkpoints}")


def _print_spool_list(spool: SpoolFile, *, dead: bool, show_pii: bool) -> None:
    header = ["STATE", "ID", "KIND", "RUN", "EVENT TIME", "ATTEMPTS", "VALUES"]
    if show_pii:
        header += ["ACTOR", "EMAIL"]
    if dead:
        header.append("REASON")
    lines = [header]
    for row in spool.list_entries(include_dead=dead):
        entry = row.entry
        try:
            payload = json.loads(entry.payload)
        except ValueError:
            payload = {}
        if not isinstance(payload, dict):
            payload = {}
        line = [
            "dead" if row.dead else "queued",
            entry.id,
            entry.kind,
            entry.run_id,
            _utc_text(entry.event_time_ms),
            str(entry.attempts),
            _entry_values(payload),
        ]
        if show_pii:
            actor = payload.get("actor") or {}
            line += [str(actor.get("id", "-")), str(actor.get("email", "-"))]
        if dead:
            line.append(row.reason or "")
        lines.append(line)
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    for line in lines:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )


def _entry_values(payload: dict[str, Any]) -> str:
    items = (payload.get("generated") or {}).get("items") or []
    values = [f"{item.get('type')}={item.get('value')}" for item in items if isinstance(item, dict)]
    return " ".join(values) or "-"


def _utc_text(epoch_ms: int) -> str:
    from datetime import datetime, timezone

    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------

_COMMANDS: list[Callable[[_Subparsers], None]] = [
    add_collector_command,
    _add_demo,
    _add_spool,
    add_validate_command,
]
"""The registrar of every subcommand, in the order ``--help`` lists them."""
