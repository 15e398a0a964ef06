"""The errors timeback-tracker raises.

Every error is a :class:`TimebackTrackerError`. Errors about bad input also
derive from :class:`ValueError`, and state errors from :class:`RuntimeError`,
so code that already catches those keeps working.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

__all__ = [
    "ConfigurationError",
    "DeliveryError",
    "FieldError",
    "SessionStateError",
    "TimebackTrackerError",
    "ValidationError",
]


class TimebackTrackerError(Exception):
    """The root of every error raised by timeback-tracker."""


@attrs.frozen
class FieldError:
    """One invalid field: where it is and which rule it breaks.

    Attributes:
        path: The field's location, e.g. ``"actor.email"`` or, for data
            loaded from JSON, a JSON path such as ``"$.data[0].actor.email"``.
        message: The rule the value breaks. Never contains the value of a
            secret or an email address.
    """

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ValidationError(TimebackTrackerError, ValueError):
    """A value or a payload breaks the Caliper/Timeback rules.

    Attributes:
        errors: Every invalid field found, each with its path and rule.
    """

    def __init__(self, errors: Iterable[FieldError]) -> None:
        self.errors: tuple[FieldError, ...] = tuple(errors)
        super().__init__("; ".join(str(error) for error in self.errors))

    @classmethod
    def single(cls, path: str, message: str) -> ValidationError:
        """Build the error for one invalid field."""
        return cls([FieldError(path, message)])


class ConfigurationError(TimebackTrackerError, ValueError):
    """A :class:`~timeback_tracker.TrackerConfig` field is missing or out of range."""


class SessionStateError(TimebackTrackerError, RuntimeError):
    """A session call is not allowed in the session's state (e.g. after ``complete()``)."""


class DeliveryError(TimebackTrackerError):
    """Events could not be delivered (raised only where the app asks to be told)."""
