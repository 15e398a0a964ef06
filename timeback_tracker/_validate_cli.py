"""``timeback-tracker validate``: check Caliper JSON (or JSON Lines) against Timeback's rules.

The checks are :func:`timeback_tracker.load`'s, plus three wire rules that a
tolerant reader like ``load`` lets pass but Timeback's API does not want: no
``null`` values, and no unknown keys (a typo such as ``startdate`` silently
drops a field; the message suggests the right spelling). Keys inside
``extensions`` objects are the app's own. Every problem is printed as
``JSON path: rule`` — never a value from the input — and, for JSON Lines
(such as the collector's ``--store`` file), prefixed with its line number.

:func:`add_validate_command` registers the subcommand with the ``timeback-tracker``
parser, like the ``_add_<name>`` functions of :mod:`timeback_tracker.cli`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, TypeAlias

import attrs

from timeback_tracker._serialization import child_path, load, unknown_keys
from timeback_tracker.exceptions import FieldError, ValidationError
from timeback_tracker.models import EVENT_TYPES, Envelope, Event

__all__ = ["add_validate_command", "run_validate"]

_Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

PROG: Final = "timeback-tracker validate"
EXIT_OK: Final = 0
EXIT_INVALID: Final = 1
EXIT_UNREADABLE: Final = 2

_NULL_RULE: Final = "must not be null (the API rejects null: omit the field)"


def add_validate_command(subparsers: _Subparsers) -> None:
    """Register the ``validate`` subcommand.

    Args:
        subparsers: The ``timeback-tracker`` parser's subcommands; the new
            parser's ``run`` default takes the parsed namespace and returns
            the exit code.
    """
    parser = subparsers.add_parser(
        "validate",
        help="check Caliper JSON against the Timeback event rules",
        description=(
            "Check a Caliper envelope (an object with 'data'), one event (an object with "
            "'type'), a JSON list of events, or JSON Lines of those (one per line, such as "
            "the collector's --store file) against the rules of Timeback's Caliper API: the "
            "checks of timeback_tracker.load, plus wire rules load tolerates (no null "
            "values; no unknown keys outside 'extensions', with a hint for typos). Prints "
            "one line per problem, 'JSON path: rule' (prefixed with 'line N: ' for JSON "
            "Lines), never a value from the input. Exit status: 0 valid, 1 invalid, "
            "2 unreadable input."
        ),
    )
    parser.add_argument("path", metavar="PATH", help="JSON or JSON Lines file, or - for stdin")
    parser.set_defaults(run=run_validate)


def run_validate(args: argparse.Namespace) -> int:
    """Validate the file named by ``args.path`` and print the problems.

    Args:
        args: The parsed options of ``timeback-tracker validate``.

    Returns:
        0 when valid, 1 when invalid, 2 when the input cannot be read as JSON.
    """
    path: str = args.path
    source = "<stdin>" if path == "-" else path
    try:
        documents = _read(path)
    except _UnreadableError as exc:
        print(f"{PROG}: {source}: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    if len(documents) == 1 and documents[0].line is None:
        document = documents[0].value
        if not isinstance(document, (dict, list)):
            print(
                f"{PROG}: {source}: expected a Caliper envelope, an event or a list of events "
                f"(a JSON object or array), not {_json_kind(document)}",
                file=sys.stderr,
            )
            return EXIT_UNREADABLE
    events: list[Event] = []
    problems: list[str] = []
    for document in documents:
        found, errors = _check(document)
        events += found
        prefix = "" if document.line is None else f"line {document.line}: "
        problems += [f"{prefix}{error}" for error in errors]
    if problems:
        for problem in problems:
            print(problem)
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        print(f"{PROG}: {source}: invalid ({count})", file=sys.stderr)
        return EXIT_INVALID
    if documents[0].line is None:
        print(f"valid: {documents[0].summary}")
    else:
        lines = f"{len(documents)} line{'s' if len(documents) != 1 else ''}"
        print(f"valid: JSON Lines, {lines} with {_describe(events)}")
    return EXIT_OK


# --------------------------------------------------------------------------
# reading


class _UnreadableError(Exception):
    """The input cannot be read as JSON; the message says why, without its content."""


@attrs.define
class _Document:
    """One JSON document of the input: the whole file, or one line of JSON Lines."""

    line: int | None  # None: the whole input is one JSON document
    value: Any = None
    unparsable: str | None = None  # why this line is not JSON
    summary: str = ""


def _read(path: str) -> list[_Document]:
    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise _UnreadableError(f"cannot read: {exc.strerror or type(exc).__name__}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _UnreadableError("not UTF-8 text") from None
    try:
        return [_Document(None, _parse(text))]
    except json.JSONDecodeError as exc:
        if exc.msg != "Extra data" or not _ends_a_line(text[: exc.pos]):
            raise _UnreadableError(
                f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
            ) from None
    except (ValueError, RecursionError) as exc:
        raise _UnreadableError(_parse_problem(exc)) from None
    # A first document followed by more: JSON Lines, one document per line.
    documents = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            documents.append(_Document(number, _parse(line)))
        except json.JSONDecodeError as exc:
            documents.append(_Document(number, unparsable=f"{exc.msg} (column {exc.colno})"))
        except (ValueError, RecursionError) as exc:
            documents.append(_Document(number, unparsable=_parse_problem(exc)))
    return documents


def _parse(text: str) -> Any:
    return json.loads(text, parse_constant=_reject_constant)


def _ends_a_line(head: str) -> bool:
    """Whether ``head`` is one JSON document and a line break: JSON Lines, not junk after JSON."""
    document = head.rstrip()
    if "\n" not in head[len(document) :]:
        return False
    try:
        _parse(document)
    except (ValueError, RecursionError):
        return False
    return True


def _parse_problem(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "not usable JSON: nested too deeply"
    return f"not valid JSON: {exc}"  # from _reject_constant: names the constant only


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


# --------------------------------------------------------------------------
# checking


def _check(document: _Document) -> tuple[list[Event], list[FieldError]]:
    """The events of one document and its problems (load's, then the wire rules')."""
    if document.unparsable is not None:
        return [], [FieldError("$", f"not valid JSON: {document.unparsable}")]
    value = document.value
    if isinstance(value, list):
        events, errors = _check_list(value)
        document.summary = f"list of {_describe(events)}"
        expected: Any = tuple[Event, ...]
    elif isinstance(value, dict) and "data" in value:
        try:
            envelope = load(value, Envelope)
        except ValidationError as exc:
            events, errors = [], list(exc.errors)
        else:
            events, errors = list(envelope.data), []
        document.summary = f"envelope with {_describe(events)}"
        expected = Envelope
    elif isinstance(value, dict) and "type" in value:
        event, errors = _load_event(value, "$")
        events = [] if event is None else [event]
        document.summary = f"one {type(event).__name__}"
        expected = Event
    else:
        problem = "must be a Caliper envelope (an object with 'data') or an event (with 'type')"
        return [], [FieldError("$", problem)]
    reported = {error.path for error in errors}
    for error in [*unknown_keys(value, expected), *_nulls(value, "$")]:
        if error.path not in reported:
            reported.add(error.path)
            errors.append(error)
    return events, errors


def _check_list(items: list[Any]) -> tuple[list[Event], list[FieldError]]:
    if not items:
        return [], [FieldError("$", "must hold at least one event")]
    events: list[Event] = []
    errors: list[FieldError] = []
    for index, item in enumerate(items):
        event, item_errors = _load_event(item, f"$[{index}]")
        errors += item_errors
        if event is not None:
            events.append(event)
    return events, errors


def _load_event(item: Any, path: str) -> tuple[Event | None, list[FieldError]]:
    if not isinstance(item, dict):
        return None, [FieldError(path, "must be a JSON object (an event)")]
    if "type" not in item:
        return None, [FieldError(f"{path}.type", "is required")]
    model = EVENT_TYPES.get(item["type"]) if isinstance(item["type"], str) else None
    if model is None:
        allowed = " or ".join(repr(name) for name in EVENT_TYPES)
        return None, [FieldError(f"{path}.type", f"must be {allowed}")]
    try:
        return load(item, model), []
    except ValidationError as exc:
        # load() reports paths from "$"; re-root them at this item.
        return None, [FieldError(path + e.path[1:], e.message) for e in exc.errors]


def _describe(events: list[Event]) -> str:
    counts = Counter(type(event).__name__ for event in events)
    kinds = ", ".join(
        f"{counts[model.__name__]} {model.__name__}"
        for model in EVENT_TYPES.values()
        if counts[model.__name__]
    )
    noun = "event" if len(events) == 1 else "events"
    return f"{len(events)} {noun} ({kinds})" if kinds else f"{len(events)} {noun}"


def _nulls(value: Any, path: str) -> Iterator[FieldError]:
    """Every null in the document, extensions included: the API rejects null anywhere."""
    if value is None:
        yield FieldError(path, _NULL_RULE)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nulls(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _nulls(item, child_path(path, key))
