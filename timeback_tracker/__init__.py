"""timeback-tracker: report students' learning time to Timeback.

Apps call ``start / pause / resume / touch / complete / end`` on a
:class:`Session`; background threads turn time into Caliper TimeSpentEvents
and deliver them, with the ActivityCompletedEvent, through a bounded,
durable outbox.
"""

from typing import TYPE_CHECKING, Any

from timeback_tracker._delivery import TrackerStats
from timeback_tracker._locations import DEFAULT_SPOOL
from timeback_tracker._presence import PresenceStatus
from timeback_tracker._version import __version__
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

if TYPE_CHECKING:
    from timeback_tracker._serialization import dump, load


def __getattr__(name: str) -> Any:
    # dump() and load() need cattrs, the costliest import of all: it is paid
    # when they are first used (or the first session starts), not at import.
    if name in ("dump", "load"):
        from timeback_tracker import _serialization

        return getattr(_serialization, name)
    raise AttributeError(f"module 'timeback_tracker' has no attribute {name!r}")


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
