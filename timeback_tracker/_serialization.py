"""The wire format: the one cattrs converter, and ``dump``/``load`` built on it.

All hooks are registered in :func:`_make_converter`, in one place. The wire
uses camelCase keys, ``@context``, millisecond UTC timestamps with a ``Z``,
enum values, and never ``null`` (the API rejects it: absent fields are omitted).
"""

from __future__ import annotations

import difflib
import functools
import json
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.errors import AttributeValidationNote, IterableValidationError, IterableValidationNote
from cattrs.gen import make_dict_unstructure_fn, override

from timeback_tracker._field_rules import build_judged, field_rules
from timeback_tracker._rules import wire_name, wire_number
from timeback_tracker.exceptions import FieldError, ValidationError
from timeback_tracker.models import EVENT_TYPES, Event

__all__ = [
    "child_path",
    "dump",
    "format_timestamp",
    "load",
    "parse_timestamp",
    "unknown_keys",
    "wire_name",
]

T = TypeVar("T")
_LITERAL: Any = typing.Literal
_JSON_OBJECT: Any = dict[str, Any]

# A key that a JSON path can show after a dot; any other is shown as ["key"].
_PLAIN_KEY = re.compile(r"[A-Za-z_@][A-Za-z0-9_@-]*")
_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})",
    re.IGNORECASE,
)


def child_path(path: str, key: str) -> str:
    """The JSON path of ``key`` inside the object at ``path``: ``$.actor`` + ``email``.

    Keys that are not plain identifiers are quoted: ``$.extensions["my key"]``.
    """
    if _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key)}]"


def format_timestamp(value: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` in UTC, as the Caliper spec asks."""
    utc = value.astimezone(timezone.utc)
    # %Y does not pad years before 1000, and parse_timestamp needs four digits.
    return f"{utc.year:04d}-{utc:%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


def parse_timestamp(text: str) -> datetime:
    """Parse an ISO 8601 timestamp that carries ``Z`` or a UTC offset.

    Raises:
        ValueError: ``text`` is not such a timestamp.
    """
    match = _TIMESTAMP.fullmatch(text)
    if not match:
        raise ValueError(
            "must be an ISO 8601 timestamp with a timezone, e.g. 2026-01-27T10:00:15.000Z"
        )
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    if zone.upper() == "Z":
        tz = timezone.utc
    else:
        sign = -1 if zone[0] == "-" else 1
        hours, minutes = int(zone[1:3]), int(zone[-2:])
        if hours > 23 or minutes > 59:
            raise ValueError("must have a UTC offset between -23:59 and +23:59")
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    micro = int((fraction or "0").ljust(6, "0")[:6])
    result = datetime(
        int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=tz
    )
    try:
        # Events are stored and sent in UTC: the instant must exist there too.
        result.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("must be a date between years 1 and 9999 in UTC") from None
    return result


def _strip_none(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _strip_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, (list, tuple)):
        return [_strip_none(item) for item in value if item is not None]
    return value


# cattrs would coerce with str()/float()/bool(); the wire must carry the right JSON type.
def _structure_number(value: Any, _: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("must be a number")
    return value


def _structure_str(value: Any, _: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("must be a string")
    return value


def _structure_datetime(value: Any, _: Any) -> datetime:
    if not isinstance(value, str):
        # Say what the wire needs, not that Python's regex wanted a str.
        raise TypeError("must be an ISO 8601 string, e.g. 2026-01-27T10:00:15.000Z")
    return parse_timestamp(value)


def _structure_bool(value: Any, _: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("must be true or false")
    return value


def _structure_event(value: Any, _: Any) -> Event:
    kind = value.get("type") if isinstance(value, Mapping) else None
    model = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise ValueError(
            "must be an event whose type is " + " or ".join(repr(name) for name in EVENT_TYPES)
        )
    return _CONVERTER.structure(value, model)


def _structure_model(converter: cattrs.Converter, cls: type[Any]) -> Callable[[Any, Any], Any]:
    """The hook of a model: each field read and judged by its own rule at once, in one pass.

    Every bad field is named: the hook raises what cattrs' own generated hooks raise
    with detailed validation, a ClassValidationError whose exceptions each carry an
    AttributeValidationNote, and the model's rules add theirs among them.
    """
    hints = typing.get_type_hints(cls)
    # Constants (type, @context, ...) default in Python for convenience, but the wire
    # must carry them.
    plan = [
        (
            rule,
            hints[rule.field.name],
            converter.get_structure_hook(hints[rule.field.name]),
            rule.field.default is attrs.NOTHING or _is_literal(hints[rule.field.name]),
            # The models' converters are plain functions (the stubs allow more).
            typing.cast("Callable[[Any], Any] | None", rule.field.converter),
        )
        for rule in field_rules(cls)
    ]

    def structure(value: Any, _: Any) -> Any:
        if not isinstance(value, Mapping):
            raise TypeError("must be a JSON object")
        # One pass: each field is read, then judged by its own rule at once. A rule
        # that spans fields sees the valid fields before it, never a stand-in.
        valid: dict[str, Any] = {}
        failures: list[Exception] = []
        for rule, type_, hook, required, convert in plan:
            field = rule.field
            if rule.key not in value and not required:
                continue  # the model's default
            try:
                item = hook(value[rule.key], type_)
                # Judged as the model holds it: Role("student"), UTC milliseconds.
                item = item if convert is None else convert(item)
                problems = rule.problems(item, valid)
                if problems:
                    raise ValidationError(FieldError(*problem) for problem in problems)
            except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as exc:
                note = AttributeValidationNote(f"@ attribute {field.name}", field.name, type_)
                failures.append(_noted(exc, note))
            else:
                valid[field.name] = item
        if failures:
            raise cattrs.ClassValidationError(f"While structuring {cls.__name__}", failures, cls)
        return build_judged(cls, valid)

    return structure


def _structure_array(converter: cattrs.Converter, type_: Any) -> Callable[[Any, Any], Any]:
    """The hook of ``tuple[X, ...]``: a JSON array, every bad item named by its index."""
    item_type = typing.get_args(type_)[0]
    hook = converter.get_structure_hook(item_type)

    def structure(value: Any, _: Any) -> Any:
        # A string or an object is iterable too; the wire must carry an array.
        if not isinstance(value, (list, tuple)):
            raise TypeError("must be a JSON array")
        items: list[Any] = []
        failures: list[Exception] = []
        for index, item in enumerate(value):
            try:
                items.append(hook(item, item_type))
            except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as exc:
                # cattrs' own per-index note, as its generated iterable hooks attach it.
                failures.append(
                    _noted(exc, IterableValidationNote(f"@ index {index}", index, item_type))
                )
        if failures:
            raise IterableValidationError("invalid items", failures, type_)
        return tuple(items)

    return structure


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter()

    def unstructure_attrs(cls: type[Any]) -> Callable[[Any], dict[str, Any]]:
        renames = {
            field.name: override(
                rename=wire_name(field.name), omit_if_default=field.default is None
            )
            for field in attrs.fields(cls)
        }
        return make_dict_unstructure_fn(cls, converter, **renames)  # type: ignore[arg-type]

    converter.register_unstructure_hook_factory(attrs.has, unstructure_attrs)
    converter.register_structure_hook_factory(
        attrs.has, functools.partial(_structure_model, converter)
    )
    converter.register_structure_hook_factory(
        _is_array, functools.partial(_structure_array, converter)
    )
    converter.register_unstructure_hook(datetime, format_timestamp)
    converter.register_structure_hook(datetime, _structure_datetime)
    converter.register_unstructure_hook(float, wire_number)
    converter.register_structure_hook(float, _structure_number)
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook(bool, _structure_bool)
    # Open-ended "extensions" objects: passed through, minus nulls.
    converter.register_unstructure_hook_func(lambda type_: type_ == _JSON_OBJECT, _strip_none)
    converter.register_structure_hook_func(
        lambda type_: type_ == _JSON_OBJECT, _structure_extensions
    )
    # A constant is judged by its model's rule, like every other field.
    converter.register_structure_hook_func(_is_literal, lambda value, _: value)
    converter.register_structure_hook_func(lambda type_: type_ == Event, _structure_event)
    return converter


def _noted(exc: Exception, note: AttributeValidationNote | IterableValidationNote) -> Exception:
    """``exc`` with cattrs' note of where it happened, as cattrs' own hooks attach it."""
    # setattr: __notes__ is not in the type stubs before Python 3.11.
    setattr(exc, "__notes__", [*getattr(exc, "__notes__", []), note])  # noqa: B010
    return exc


def _is_literal(type_: Any) -> bool:
    return typing.get_origin(type_) is _LITERAL


def _is_array(type_: Any) -> bool:
    args = typing.get_args(type_)
    return typing.get_origin(type_) is tuple and len(args) == 2 and args[1] is Ellipsis


def _structure_extensions(value: Any, _: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError("must be a JSON object")
    return dict(value)


_CONVERTER = _make_converter()


def dump(obj: Any) -> dict[str, Any]:
    """The wire JSON (as a dict) of an event, envelope or entity.

    Args:
        obj: Any model of :mod:`timeback_tracker.models`.

    Returns:
        A dict ready for :func:`json.dumps`: camelCase keys, ``@context``,
        ``...mmmZ`` timestamps, no ``None`` values.
    """
    result: dict[str, Any] = _CONVERTER.unstructure(obj)
    return result


def load(data: Any, cls: type[T]) -> T:
    """Build a model from wire JSON, validating every field.

    Args:
        data: The decoded JSON (a dict).
        cls: The model class, e.g. :class:`~timeback_tracker.TimeSpentEvent`.

    Returns:
        The validated instance.

    Raises:
        ValidationError: Lists every invalid field with its JSON path (``$.actor.email``).
    """
    try:
        return _CONVERTER.structure(data, cls)
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as exc:
        errors = list(_field_errors(exc, "$"))
        raise ValidationError(errors) from None


def _field_errors(exc: BaseException, path: str) -> Iterator[FieldError]:
    if isinstance(exc, cattrs.ClassValidationError):
        noted, unnoted = exc.group_exceptions()
        for inner, note in noted:
            yield from _field_errors(inner, f"{path}.{wire_name(note.name)}")
        for inner in unnoted:
            yield from _field_errors(inner, path)
    elif isinstance(exc, IterableValidationError):
        indexed, unindexed = exc.group_exceptions()
        for inner, item in indexed:
            yield from _field_errors(inner, f"{path}[{item.index}]")
        for inner in unindexed:
            yield from _field_errors(inner, path)
    elif isinstance(exc, ValidationError):
        for error in exc.errors:
            # A model's rule, its path below what ``path`` names: "extensions.runId" noted
            # at $.extensions -> $.extensions.runId; "TimebackUser.email" raised by the
            # model at $.actor -> $.actor.email.
            _, _, rest = error.path.partition(".")
            yield FieldError(f"{path}.{rest}" if rest else path, error.message)
    elif isinstance(exc, KeyError):
        yield FieldError(path, "is required")
    elif isinstance(exc, cattrs.BaseValidationError):
        for inner in exc.exceptions:
            yield from _field_errors(inner, path)
    else:
        yield FieldError(path, str(exc))


# --------------------------------------------------------------------------
# Unknown keys: load() ignores them, `validate` reports them (a typo drops a field)


def unknown_keys(data: Any, cls: type[Any]) -> Iterator[FieldError]:
    """Report every key of ``data`` that ``cls`` (and the models inside it) does not know.

    :func:`load` ignores unknown keys, as a tolerant reader should; but on the
    way out a typo silently drops an optional field (``startdate`` for
    ``startDate``), so ``timeback-tracker validate`` reports them. Keys inside
    ``extensions`` objects are the app's own and never reported. Parts of
    ``data`` that are not even the right JSON type are skipped: :func:`load`
    reports those.

    Args:
        data: The decoded JSON.
        cls: The model it should be, e.g. :class:`~timeback_tracker.Envelope`.

    Returns:
        An iterator of errors with JSON paths from ``$``, such as
        ``$.generated.items[0].startdate: unknown key; did you mean 'startDate'?``.
    """
    return _unknown_keys(data, cls, "$")


def _unknown_keys(value: Any, type_: Any, path: str) -> Iterator[FieldError]:
    type_ = _without_none(type_)
    if type_ == Event:
        kind = value.get("type") if isinstance(value, Mapping) else None
        type_ = EVENT_TYPES.get(kind if isinstance(kind, str) else "")
        if type_ is None:
            return  # load() says which types are allowed
    if _is_array(type_):
        if isinstance(value, (list, tuple)):
            item_type = typing.get_args(type_)[0]
            for index, item in enumerate(value):
                yield from _unknown_keys(item, item_type, f"{path}[{index}]")
        return
    if not (attrs.has(type_) and isinstance(value, Mapping)):
        return  # a scalar, a free-form extensions object, or the wrong JSON type
    hints = typing.get_type_hints(type_)
    fields = {wire_name(field.name): hints[field.name] for field in attrs.fields(type_)}
    for key, item in value.items():
        if not isinstance(key, str):
            continue
        child = child_path(path, key)
        if key in fields:
            yield from _unknown_keys(item, fields[key], child)
        else:
            yield FieldError(child, _unknown_key_rule(key, fields))


def _without_none(type_: Any) -> Any:
    """``X | None`` -> ``X``; other types unchanged."""
    if typing.get_origin(type_) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(type_) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return type_


def _squash(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


def _unknown_key_rule(key: str, known: Mapping[str, Any]) -> str:
    """``unknown key; did you mean 'startDate'?`` or, without a likely match, the known keys."""
    squashed = {_squash(name): name for name in known}
    # A case or snake_case slip first (startdate, start_date), then a near spelling.
    match = squashed.get(_squash(key))
    if match is None:
        close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.75)
        match = close[0] if close else None
    if match is not None:
        return f"unknown key; did you mean {match!r}?"
    return "unknown key (allowed: " + ", ".join(repr(name) for name in known) + ")"
