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
import sys
from collections.abc import Callable
from typing import TypeAlias

from timeback_tracker._collector_cli import add_collector_command
from timeback_tracker._rules import number_argument
from timeback_tracker._spool_cli import add_spool_command
from timeback_tracker._validate_cli import add_validate_command
from timeback_tracker._version import __version__
from timeback_tracker.config import HEARTBEAT_INTERVAL_RANGE

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
        "--duration", type=number_argument(5, 3600), default=30.0, help="seconds (default 30)"
    )
    parser.add_argument(
        "--interval",
        type=number_argument(*HEARTBEAT_INTERVAL_RANGE),
        default=1.0,
        help="heartbeat seconds (default 1)",
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


# --------------------------------------------------------------------------

_COMMANDS: list[Callable[[_Subparsers], None]] = [
    add_collector_command,
    _add_demo,
    add_spool_command,
    add_validate_command,
]
"""The registrar of every subcommand, in the order ``--help`` lists them."""
