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
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeAlias

import attrs

from timeback_tracker._collector_cli import add_collector_command
from timeback_tracker._serialization import load, wire_name
from timeback_tracker._spool_cli import add_spool_command
from timeback_tracker._version import __version__
from timeback_tracker.exceptions import FieldError, ValidationError
from timeback_tracker.models import (
    Activity,
    ActivityCompletedEvent,
    ActivityMetric,
    ActivityMetricsCollection,
    App,
    Course,
    Envelope,
    Event,
    TimebackActivityContext,
    TimebackUser,
    TimeMetric,
    TimeSpentEvent,
    TimeSpentMetricsCollection,
)

__all__ = ["main"]

_Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_UNREADABLE = 2

# Wire `type` of an event -> the model that loads it (and the name the summary uses).
_EVENT_TYPES: dict[str, type[TimeSpentEvent] | type[ActivityCompletedEvent]] = {
    "TimeSpentEvent": TimeSpentEvent,
    "ActivityEvent": ActivityCompletedEvent,
}
_MODELS = (
    Activity,
    ActivityCompletedEvent,
    ActivityMetric,
    ActivityMetricsCollection,
    App,
    Course,
    Envelope,
    TimeMetric,
    TimeSpentEvent,
    TimeSpentMetricsCollection,
    TimebackActivityContext,
    TimebackUser,
)
# snake_case spelling -> wire (camelCase) name, for every multi-word field of the models.
_SNAKE_TO_WIRE = {
    field.name: wire_name(field.name)
    for model in _MODELS
    for field in attrs.fields(model)
    if "_" in field.name
}
_PLAIN_KEY = re.compile(r"[A-Za-z_@][A-Za-z0-9_@-]*")


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
# validate


def _add_validate(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check Caliper JSON against the Timeback event rules",
        description=(
            "Check a Caliper envelope (an object with 'data'), one event (an object with "
            "'type') or a JSON list of events against the rules of Timeback's Caliper API: "
            "the checks of timeback_tracker.load, plus two wire rules load tolerates "
            "(no null values; camelCase keys). Prints one line per problem with its JSON "
            "path, never a value from the input. Exit status: 0 valid, 1 invalid, "
            "2 unreadable input."
        ),
    )
    parser.add_argument("path", metavar="PATH", help="JSON file to check, or - for stdin")
    parser.set_defaults(run=_run_validate)


def _run_validate(args: argparse.Namespace) -> int:
    path: str = args.path
    source = "<stdin>" if path == "-" else path
    try:
        document = _read_json(path)
    except _UnreadableError as exc:
        print(f"timeback-tracker validate: {source}: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    if not isinstance(document, (dict, list)):
        kind = _json_kind(document)
        print(
            f"timeback-tracker validate: {source}: expected a Caliper envelope, an event or "
            f"a list of events (a JSON object or array), not {kind}",
            file=sys.stderr,
        )
        return EXIT_UNREADABLE
    summary, errors = _validate_document(document)
    reported = {error.path for error in errors}
    errors += [error for error in _wire_lint(document, "$") if error.path not in reported]
    if errors:
        for error in errors:
            print(error)
        count = f"{len(errors)} problem{'s' if len(errors) != 1 else ''}"
        print(f"timeback-tracker validate: {source}: invalid ({count})", file=sys.stderr)
        return EXIT_INVALID
    print(f"valid: {summary}")
    return EXIT_OK


class _UnreadableError(Exception):
    """The input cannot be read as JSON; the message says why, without its content."""


def _read_json(path: str) -> Any:
    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise _UnreadableError(f"cannot read: {exc.strerror or type(exc).__name__}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _UnreadableError("not UTF-8 text") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _UnreadableError(
            f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except ValueError as exc:  # from _reject_constant
        raise _UnreadableError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise _UnreadableError("not usable JSON: nested too deeply") from None


def _reject_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, but they are not JSON and no API accepts them.
    raise ValueError(f"{name} is not a JSON number")


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return "a string"


def _validate_document(document: dict[str, Any] | list[Any]) -> tuple[str, list[FieldError]]:
    """Load the document; return the summary of a valid one and every problem found."""
    if isinstance(document, list):
        return _validate_list(document)
    if "data" in document:
        try:
            envelope = load(document, Envelope)
        except ValidationError as exc:
            return "", list(exc.errors)
        return f"envelope with {_describe(envelope.data)}", []
    if "type" in document:
        event, errors = _load_event(document, "$")
        return ("", errors) if event is None else (f"one {_kind(event)}", [])
    problem = "must be a Caliper envelope (an object with 'data') or an event (with 'type')"
    return "", [FieldError("$", problem)]


def _validate_list(items: list[Any]) -> tuple[str, list[FieldError]]:
    if not items:
        return "", [FieldError("$", "must hold at least one event")]
    events: list[Event] = []
    errors: list[FieldError] = []
    for index, item in enumerate(items):
        event, item_errors = _load_event(item, f"$[{index}]")
        errors += item_errors
        if event is not None:
            events.append(event)
    return f"list of {_describe(events)}", errors


def _load_event(item: Any, path: str) -> tuple[Event | None, list[FieldError]]:
    if not isinstance(item, dict):
        return None, [FieldError(path, "must be a JSON object (an event)")]
    if "type" not in item:
        return None, [FieldError(f"{path}.type", "is required")]
    model = _EVENT_TYPES.get(item["type"]) if isinstance(item["type"], str) else None
    if model is None:
        allowed = " or ".join(repr(name) for name in _EVENT_TYPES)
        return None, [FieldError(f"{path}.type", f"must be {allowed}")]
    try:
        return load(item, model), []
    except ValidationError as exc:
        # load() reports paths from "$"; re-root them at this item.
        return None, [FieldError(path + e.path[1:], e.message) for e in exc.errors]


def _kind(event: Event) -> str:
    return type(event).__name__


def _describe(events: tuple[Event, ...] | list[Event]) -> str:
    counts = Counter(_kind(event) for event in events)
    kinds = ", ".join(
        f"{counts[model.__name__]} {model.__name__}"
        for model in _EVENT_TYPES.values()
        if counts[model.__name__]
    )
    noun = "event" if len(events) == 1 else "events"
    return f"{len(events)} {noun} ({kinds})"


def _wire_lint(value: Any, path: str, *, free_form: bool = False) -> Iterator[FieldError]:
    """Rules of the wire that load() tolerates: no nulls, no snake_case field names.

    Keys inside ``extensions`` are the app's own (``free_form``): only nulls count there.
    """
    if value is None:
        yield FieldError(path, "must not be null (the API rejects null: omit the field)")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _wire_lint(item, f"{path}[{index}]", free_form=free_form)
    elif isinstance(value, dict):
        for key, item in value.items():
            child = _child_path(path, key)
            wire = None if free_form else _SNAKE_TO_WIRE.get(key)
            if wire is not None:
                yield FieldError(child, f"is not a wire name: use camelCase {wire!r}")
            yield from _wire_lint(item, child, free_form=free_form or key == "extensions")


def _child_path(path: str, key: str) -> str:
    if _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key)}]"


# --------------------------------------------------------------------------
# demo


def _add_demo(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="play an accelerated learning session against a local collector",
        description=(
            "Start a LocalCollector on loopback, play a short learning session (answers, "
            "a pause, an idle spell, a network outage, completion) with live progress, "
            "then print what the collector received. Exit status 1 if its totals "
            "disagree with the session's."
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
        help="send to this Caliper endpoint instead (credentials from TIMEBACK_* variables)",
    )
    parser.add_argument("--quiet", action="store_true", help="print the summary only")
    parser.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from timeback_tracker._demo import run_demo
    from timeback_tracker.exceptions import ConfigurationError

    try:
        return run_demo(
            duration=args.duration, interval=args.interval, endpoint=args.endpoint, quiet=args.quiet
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

_COMMANDS: list[Callable[[_Subparsers], None]] = [
    add_collector_command,
    _add_demo,
    add_spool_command,
    _add_validate,
]
"""The registrar of every subcommand, in the order ``--help`` lists them."""
