"""The rules of every value the library accepts, in one place.

Each ``*_problem`` function returns the message of the broken rule, or None.
Messages never quote the value: it may be an email address or a secret. The
models, the configuration, the credentials and the command line all judge
their inputs here, so a rule cannot drift between two copies.
"""

from __future__ import annotations

import enum
import json
import math
import re
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlsplit

__all__ = [
    "DAY_SECONDS",
    "MAX_EMAIL_LENGTH",
    "MAX_EXTENSIONS_BYTES",
    "MAX_IRI_LENGTH",
    "MAX_TEXT_LENGTH",
    "count_problem",
    "credential_problem",
    "datetime_problem",
    "email_problem",
    "enum_problem",
    "extensions_problem",
    "iri_problem",
    "is_uuid",
    "number_argument",
    "number_problem",
    "text_problem",
    "token_problem",
    "unicode_problem",
    "urn_uuid_problem",
    "wire_name",
    "wire_number",
]

DAY_SECONDS: Final = 86_400
"""The most time one value may report (a window's active or inactive seconds, a timeout)."""

MAX_IRI_LENGTH: Final = 2_048
"""Most characters in an id, URL or IRI (what browsers and proxies commonly accept)."""
MAX_TEXT_LENGTH: Final = 1_024
"""Most characters in a name, a sub-type or a course id."""
MAX_EMAIL_LENGTH: Final = 254
"""Most characters in an email address (RFC 5321's path limit)."""
MAX_EXTENSIONS_BYTES: Final = 16_384
"""Most bytes of one ``extensions`` object as compact UTF-8 JSON. Every window of a run
repeats the run's constant parts, so these limits keep one event within a few tens of KiB."""

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
_URN_UUID = re.compile(r"urn:uuid:[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_SPACE = re.compile(r"\s")
# Deeper extensions would overflow the recursion of dump() (and of most JSON readers).
_MAX_NESTING: Final = 64


def wire_number(value: float) -> float:
    """A float-typed value as the wire carries it: 80.0 goes as 80, like the reference examples.

    Args:
        value: A finite number.
    """
    return int(value) if float(value).is_integer() and abs(value) < 2**53 else value


def wire_name(attribute: str) -> str:
    """The JSON key of an attribute: ``event_time`` -> ``eventTime``, ``context`` -> ``@context``.

    Args:
        attribute: The Python attribute name.
    """
    if attribute == "context":
        return "@context"
    head, *rest = attribute.split("_")
    return head + "".join(part.capitalize() for part in rest)


def unicode_problem(value: str) -> str | None:
    """A lone surrogate cannot be encoded in UTF-8, the wire's encoding."""
    if value.isascii():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (no lone surrogates)"
    return None


def iri_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return "must be a string (an absolute URL/IRI)"
    if len(value) > MAX_IRI_LENGTH:
        return f"must be at most {MAX_IRI_LENGTH} characters"
    scheme, _, rest = value.partition(":")
    if not _SCHEME.fullmatch(scheme) or not rest or _SPACE.search(value):
        return "must be an absolute URL/IRI such as https://example.com/... (no spaces)"
    problem = unicode_problem(value)
    if problem:
        return problem
    if scheme.lower() in ("http", "https"):
        try:
            host = urlsplit(value).hostname
        except ValueError:  # e.g. a bad IPv6 literal; its message quotes the URL
            host = None
        if not host:
            return "must be an absolute URL with a host, such as https://example.com/..."
    return None


def urn_uuid_problem(value: object) -> str | None:
    if isinstance(value, str) and _URN_UUID.fullmatch(value):
        return None
    return "must be 'urn:uuid:' followed by a UUID"


def text_problem(value: object) -> str | None:
    if isinstance(value, str) and value.strip():
        if len(value) > MAX_TEXT_LENGTH:
            return f"must be at most {MAX_TEXT_LENGTH} characters"
        return unicode_problem(value)
    return "must be a non-empty string"


def number_problem(value: object, low: float, high: float) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "must be a number"
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float: JSON readers could not hold it
        return "must be within the range of a 64-bit float"
    if not finite:
        return "must be finite (not NaN or infinity)"
    if not low <= value <= high:
        return f"must be between {_number_text(low)} and {_number_text(high)}"
    return None


def _number_text(value: float) -> str:
    # 315360000, not 3.1536e+08: a limit is read by people.
    if math.isfinite(value) and float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:g}"


def number_argument(low: float, high: float, *, whole: bool = False) -> Callable[[str], Any]:
    """An argparse ``type=`` for a number in ``[low, high]`` (an ``int`` when ``whole``).

    The command line's numbers follow :func:`number_problem`, the rule of the
    configuration and the models, so a value the CLI accepts is one they accept.
    """

    def parse(text: str) -> float | int:
        import argparse  # only the command line needs it

        try:
            value = int(text) if whole else float(text)
        except ValueError:
            kind = "whole number" if whole else "number"
            raise argparse.ArgumentTypeError(f"not a {kind}: {text!r}") from None
        problem = number_problem(value, low, high)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    return parse


def count_problem(value: object) -> str | None:
    problem = number_problem(value, -math.inf, math.inf)
    if problem is None and (value < 0 or not float(value).is_integer()):  # type: ignore[operator, arg-type]
        return "must be a whole number >= 0"
    return problem


def enum_problem(enum_cls: type[enum.Enum], value: object) -> str | None:
    if isinstance(value, enum_cls):
        return None
    return "must be one of " + ", ".join(repr(member.value) for member in enum_cls)


def datetime_problem(value: object) -> str | None:
    if not isinstance(value, datetime):
        return "must be a datetime"
    if value.utcoffset() is None:
        return "must be timezone-aware (a naive datetime is ambiguous)"
    return None


def extensions_problem(value: object) -> str | None:
    if value is None:
        return None
    if not (isinstance(value, dict) and all(isinstance(k, str) for k in value)):
        return "must be a mapping with string keys"
    try:
        size = len(
            json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode()
        )
    except (TypeError, ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        return "must hold JSON values only: text, finite numbers, booleans, null, lists, objects"
    if size > MAX_EXTENSIONS_BYTES:
        return f"must be at most {MAX_EXTENSIONS_BYTES} bytes as JSON"
    return _tree_problem(value)


def _tree_problem(value: object) -> str | None:
    """Objects need string keys at every level (JSON would send 1 as "1"), and bounded depth."""
    stack: list[tuple[Any, int]] = [(value, 1)]  # json.dumps() found no cycle
    while stack:
        node, depth = stack.pop()
        if depth > _MAX_NESTING:
            return f"must not nest lists and objects more than {_MAX_NESTING} deep"
        if isinstance(node, dict) and not all(isinstance(key, str) for key in node):
            return "must be a mapping with string keys"
        children: Iterable[Any] = node.values() if isinstance(node, dict) else node
        stack.extend(
            (child, depth + 1) for child in children if isinstance(child, (dict, list, tuple))
        )
    return None


def email_problem(value: object) -> str | None:
    if isinstance(value, str) and len(value) > MAX_EMAIL_LENGTH:
        return f"must be at most {MAX_EMAIL_LENGTH} characters"
    if isinstance(value, str) and _EMAIL.fullmatch(value) and not unicode_problem(value):
        return None
    return "must be an email address (name@domain)"


def is_uuid(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def token_problem(value: object) -> str | None:
    """A bearer token: visible ASCII only, as an HTTP header carries it as is."""
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
        return "must be a non-empty string without spaces"
    if not all("!" <= char <= "~" for char in value):
        return "must be printable ASCII (an HTTP header cannot carry it)"
    return None


def credential_problem(value: object) -> str | None:
    """A client id or secret: HTTP Basic sends ``id:secret`` as Latin-1."""
    if not isinstance(value, str) or not value.strip():
        return "must be a non-empty string"
    if any(char < " " or "\x7f" <= char <= "\x9f" or char > "\xff" for char in value):
        return "must be Latin-1 text without control characters"
    return None
