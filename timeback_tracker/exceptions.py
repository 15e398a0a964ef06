"""The errors timeback-tracker raises, and the failures it reports instead of raising.

Every error is a :class:`TimebackTrackerError`. Errors about bad input also
derive from :class:`ValueError`, and state errors from :class:`RuntimeError`,
so code that already catches those keeps working. Delivery never raises into
the app: what goes wrong there reaches ``on_error`` as a :class:`DeliveryFailure`.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

__all__ = [
    "ConfigurationError",
    "DeliveryError",
    "DeliveryFailure",
    "FieldError",
    "SessionStateError",
    "TimebackTrackerError",
    "TokenError",
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
    """Something needed to deliver events failed.

    The tracker never raises it into the app: its delivery thread catches it,
    keeps the events, and reports a :class:`~timeback_tracker.DeliveryFailure`
    to ``on_error``. It reaches code that calls an ``Auth`` object itself.
    """


@attrs.frozen
class DeliveryFailure:
    """What ``on_error`` receives when delivery fails. Never carries payloads or secrets.

    Attributes:
        reason: What went wrong, e.g. ``"HTTP 503 Service Unavailable"``.
        status: The HTTP status code, or None (network error, internal error, queue full).
        event_ids: Ids of the events concerned.
        will_retry: True when the events are kept and will be sent again.
        configuration_error: True when the answer says the configuration is
            wrong (a redirect, 404/405, credentials refused even after a fresh
            token): the events are kept and retried, but only a fix of the
            endpoint or the credentials will deliver them.
    """

    reason: str
    status: int | None = None
    event_ids: tuple[str, ...] = ()
    will_retry: bool = False
    configuration_error: bool = False


class TokenError(DeliveryError):
    """The token endpoint did not issue a token (the events stay queued and are retried).

    Attributes:
        status: The token endpoint's HTTP status, or None for a network error.
        retry_after: The token endpoint's ``Retry-After`` in seconds, if any.
    """

    def __init__(
        self, message: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
