"""timeback-tracker: report students' learning time to Timeback.

Apps call ``start / pause / resume / touch / complete / end`` on a
:class:`Session`; background threads turn time into Caliper TimeSpentEvents
and deliver them, with the ActivityCompletedEvent, through a bounded,
durable outbox.
"""

from __future__ import annotations

from timeback_tracker._version import __version__

# Not `from typing import TYPE_CHECKING`: importing typing alone would cost more
# than the rest of this module (mypy honours a TYPE_CHECKING constant by name).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from timeback_tracker._delivery import TrackerStats
    from timeback_tracker._locations import DEFAULT_SPOOL
    from timeback_tracker._presence import PresenceStatus
    from timeback_tracker._serialization import dump, load
    from timeback_tracker.auth import BearerToken, ClientCredentials
    from timeback_tracker.config import TrackerConfig
    from timeback_tracker.exceptions import (
        ConfigurationError,
        DeliveryError,
        DeliveryFailure,
        FieldError,
        SessionStateError,
        TimebackTrackerError,
        TokenError,
        ValidationError,
    )
    from timeback_tracker.models import (
        Activity,
        ActivityCompletedEvent,
        ActivityMetric,
        ActivityMetricsCollection,
        ActivityMetricType,
        App,
        Course,
        Envelope,
        Event,
        Role,
        Subject,
        TimebackActivityContext,
        TimebackUser,
        TimeMetric,
        TimeMetricType,
        TimeSpentEvent,
        TimeSpentMetricsCollection,
    )
    from timeback_tracker.session import Session
    from timeback_tracker.tracker import Tracker

# Where each public name lives. `import timeback_tracker` loads none of these
# modules: an app that imports the package at start-up pays for attrs, the
# models, the threads' machinery (and later requests, sqlite3, cattrs) only
# when it first uses a name, through the module __getattr__ below.
_EXPORTS: dict[str, str] = {
    "TrackerStats": "_delivery",
    "DEFAULT_SPOOL": "_locations",
    "PresenceStatus": "_presence",
    "dump": "_serialization",
    "load": "_serialization",
    "BearerToken": "auth",
    "ClientCredentials": "auth",
    "TrackerConfig": "config",
    "Session": "session",
    "Tracker": "tracker",
    **dict.fromkeys(
        (
            "ConfigurationError",
            "DeliveryError",
            "DeliveryFailure",
            "FieldError",
            "SessionStateError",
            "TimebackTrackerError",
            "TokenError",
            "ValidationError",
        ),
        "exceptions",
    ),
    **dict.fromkeys(
        (
            "Activity",
            "ActivityCompletedEvent",
            "ActivityMetric",
            "ActivityMetricType",
            "ActivityMetricsCollection",
            "App",
            "Course",
            "Envelope",
            "Event",
            "Role",
            "Subject",
            "TimeMetric",
            "TimeMetricType",
            "TimeSpentEvent",
            "TimeSpentMetricsCollection",
            "TimebackActivityContext",
            "TimebackUser",
        ),
        "models",
    ),
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'timeback_tracker' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"timeback_tracker.{module}"), name)
    # Cached in the module's namespace: the next lookup is a plain attribute.
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = [
    "DEFAULT_SPOOL",
    "Activity",
    "ActivityCompletedEvent",
    "ActivityMetric",
    "ActivityMetricType",
    "ActivityMetricsCollection",
    "App",
    "BearerToken",
    "ClientCredentials",
    "ConfigurationError",
    "Course",
    "DeliveryError",
    "DeliveryFailure",
    "Envelope",
    "Event",
    "FieldError",
    "PresenceStatus",
    "Role",
    "Session",
    "SessionStateError",
    "Subject",
    "TimeMetric",
    "TimeMetricType",
    "TimeSpentEvent",
    "TimeSpentMetricsCollection",
    "TimebackActivityContext",
    "TimebackTrackerError",
    "TimebackUser",
    "TokenError",
    "Tracker",
    "TrackerConfig",
    "TrackerStats",
    "ValidationError",
    "__version__",
    "dump",
    "load",
]
