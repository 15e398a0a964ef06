"""``TrackerConfig``: everything a tracker needs to know, validated at construction."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import attrs

from timeback_tracker._locations import DEFAULT_SPOOL, SpoolLocation, spool_path_problem
from timeback_tracker._rules import DAY_SECONDS, iri_problem, number_problem
from timeback_tracker._urls import check_url, safe_url
from timeback_tracker.exceptions import ConfigurationError, DeliveryFailure

if TYPE_CHECKING:
    from timeback_tracker.auth import Auth

__all__ = [
    "ENVIRONMENTS",
    "HEARTBEAT_INTERVAL_RANGE",
    "IDLE_TIMEOUT_RANGE",
    "MAX_EVENT_AGE_RANGE",
    "TrackerConfig",
]

ENVIRONMENTS: dict[str, dict[str, str]] = {
    "production": {
        "endpoint": "https://caliper.alpha-1edtech.ai/caliper/event",
        "token_url": "https://prod-beyond-timeback-api-2-idp.auth.us-east-1.amazoncognito.com/oauth2/token",
    },
    "staging": {
        "endpoint": "https://caliper.staging.alpha-1edtech.ai/caliper/event",
        "token_url": "https://staging-beyond-timeback-api-2-idp.auth.us-east-1.amazoncognito.com/oauth2/token",
    },
}
"""Timeback's Caliper events endpoint and OAuth2 token URL per environment."""

# Highest priority first, as Timeback's official clients read them.
_ENV_PREFIXES = ("TIMEBACK_API_", "TIMEBACK_", "CALIPER_")
_EVENTS_PATH = "/caliper/event"


def _field_error(name: str, rule: str) -> ConfigurationError:
    return ConfigurationError(f"TrackerConfig.{name}: {rule}")


def _in_range(low: float, high: float) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        problem = number_problem(value, low, high)
        if problem:
            raise _field_error(attribute.name, problem)

    return check


def _optional_in_range(low: float, high: float) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    check = _in_range(low, high)

    def check_optional(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            check(instance, attribute, value)

    return check_optional


def _check_iri(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    # The rule of the envelope's sensor: a weaker one would let every envelope be refused.
    problem = iri_problem(value)
    if problem is not None:  # the rule's own words: they name the limit when that is the cause
        raise _field_error(attribute.name, problem)


def _check_endpoint(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    check_url(f"TrackerConfig.{attribute.name}", value)


def _url_repr(value: Any) -> str:
    # A query may carry a key: reprs show the URL without it.
    return repr(safe_url(value))


def _check_auth(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not (
        callable(getattr(value, "authorization", None))
        and callable(getattr(value, "invalidate", None))
    ):
        raise _field_error(attribute.name, "must be BearerToken, ClientCredentials or None")


def _check_timeout(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if (
        not isinstance(value, tuple)
        or len(value) != 2
        or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 600 for v in value
        )
    ):
        raise _field_error(attribute.name, "must be a (connect, read) pair of seconds in (0, 600]")


def _to_timeout(value: float | tuple[float, float]) -> tuple[float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return (float(value), float(value))
        except OverflowError:  # an int too large for a float: left for the validator to refuse
            return (value, value)
    return tuple(value) if isinstance(value, list) else value  # type: ignore[return-value]


def _check_callback(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not callable(value):
        raise _field_error(attribute.name, "must be a callable or None")


def _check_spool(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    problem = spool_path_problem(value)
    if problem is not None:
        raise _field_error(attribute.name, problem)


PRESENCE_MODES = ("app", "os")
IDLE_TIMEOUT_RANGE = (1, DAY_SECONDS)
"""Seconds an idle timeout may be (the integrations' ``idle_timeout`` follows the same rule)."""
HEARTBEAT_INTERVAL_RANGE = (0.05, 3600)
"""Seconds a heartbeat window may last (the demo's ``--interval`` follows the same rule)."""
MAX_EVENT_AGE_RANGE = (60, 3650 * DAY_SECONDS)
"""Seconds ``max_event_age`` may be (``spool send --max-event-age`` follows the same rule)."""


def _check_presence(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or value not in PRESENCE_MODES:
        raise _field_error(attribute.name, 'must be "app" or "os"')


def _check_int(low: int, high: int) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _field_error(attribute.name, f"must be a whole number between {low} and {high}")

    return check


@attrs.frozen(kw_only=True)
class TrackerConfig:
    """How a :class:`~timeback_tracker.Tracker` reports and delivers time.

    Args:
        sensor: Caliper sensor IRI identifying this app installation.
        endpoint: The envelope POST URL (``https://.../caliper/event``).
            ``http://`` is refused unless the host is loopback.
        auth: :class:`~timeback_tracker.BearerToken`, ``ClientCredentials``
            or None (no ``Authorization`` header).
        heartbeat_interval: Seconds per window, 0.05 to 3600 (15 by default).
        idle_timeout: Seconds without ``touch()`` after which time counts as
            inactive; None disables idle detection.
        presence: Where input and presence come from. ``"app"`` (the
            default): only the app's ``touch()``/``pause()``/``resume()``.
            ``"os"``: also the operating system's last-input time (it counts
            as ``touch()`` when it happened) and its screen lock (pauses
            until unlocked), polled once a second while a session runs;
            ``tracker.presence`` says what this machine offers.
        inactive_cutoff: Seconds paused or idle after which windows stop until
            ``resume()``/``touch()``; that time is not reported. None: never.
        spool_path: The SQLite file of the durable outbox; ``DEFAULT_SPOOL`` (the
            default) is one file per sensor in the per-user data directory;
            None keeps events in memory only.
        max_queue: Most events held undelivered (1 to 1,000,000).
        batch_size: Most events per envelope (1 to 1000).
        exit_timeout: Seconds ``close()`` and the exit hook may wait for delivery.
        request_timeout: (connect, read) seconds per HTTP request, or one number.
        max_event_age: Seconds after which an undelivered event becomes a dead letter.
        on_error: Called with a ``DeliveryFailure`` from the delivery thread.

    Raises:
        ConfigurationError: A field is invalid; the message names it and its rule.
    """

    sensor: str = attrs.field(validator=_check_iri)
    endpoint: str = attrs.field(validator=_check_endpoint, repr=_url_repr)
    auth: Auth | None = attrs.field(default=None, validator=_check_auth)
    heartbeat_interval: float = attrs.field(
        default=15.0, validator=_in_range(*HEARTBEAT_INTERVAL_RANGE)
    )
    idle_timeout: float | None = attrs.field(
        default=None, validator=_optional_in_range(*IDLE_TIMEOUT_RANGE)
    )
    inactive_cutoff: float | None = attrs.field(
        default=600.0, validator=_optional_in_range(1, DAY_SECONDS)
    )
    presence: Literal["app", "os"] = attrs.field(default="app", validator=_check_presence)
    spool_path: SpoolLocation = attrs.field(default=DEFAULT_SPOOL, validator=_check_spool)
    max_queue: int = attrs.field(default=10_000, validator=_check_int(1, 1_000_000))
    batch_size: int = attrs.field(default=50, validator=_check_int(1, 1000))
    exit_timeout: float = attrs.field(default=2.0, validator=_in_range(0, 600))
    request_timeout: tuple[float, float] = attrs.field(
        default=(5.0, 15.0), converter=_to_timeout, validator=_check_timeout
    )
    max_event_age: float = attrs.field(
        default=30 * DAY_SECONDS, validator=_in_range(*MAX_EVENT_AGE_RANGE)
    )
    on_error: Callable[[DeliveryFailure], None] | None = attrs.field(
        default=None, validator=_check_callback, repr=False
    )

    @classmethod
    def for_environment(
        cls,
        environment: str,
        *,
        client_id: str,
        client_secret: str,
        sensor: str,
        **overrides: Any,
    ) -> TrackerConfig:
        """A config for Timeback's ``"production"`` or ``"staging"`` Caliper API.

        Args:
            environment: ``"production"`` or ``"staging"``.
            client_id: OAuth2 client id.
            client_secret: OAuth2 client secret.
            sensor: This installation's sensor IRI.
            **overrides: Any other :class:`TrackerConfig` field.

        Raises:
            ConfigurationError: Unknown environment or an invalid field.
        """
        from timeback_tracker.auth import ClientCredentials

        urls = ENVIRONMENTS.get(environment)
        if urls is None:
            raise ConfigurationError(
                f"environment: must be one of {', '.join(map(repr, ENVIRONMENTS))}"
            )
        settings: dict[str, Any] = {
            "endpoint": urls["endpoint"],
            "auth": ClientCredentials(client_id, client_secret, urls["token_url"]),
        }
        settings.update(overrides)
        return cls(sensor=sensor, **settings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> TrackerConfig:
        """A config from the environment variables Timeback's official clients use.

        Reads ``CLIENT_ID``, ``CLIENT_SECRET``, ``BASE_URL`` and ``AUTH_URL`` /
        ``TOKEN_URL`` under the prefixes ``TIMEBACK_API_``, ``TIMEBACK_`` and
        ``CALIPER_`` (first found wins), ``TIMEBACK_ENV`` (``production`` or
        ``staging``: default URLs) and ``TIMEBACK_SENSOR``. Keyword arguments
        override anything read.

        Args:
            environ: The variables to read; ``os.environ`` by default.
            **overrides: :class:`TrackerConfig` fields that take precedence.

        Raises:
            ConfigurationError: A required value is missing or invalid; the
                message names the variables to set.
        """
        from timeback_tracker.auth import ClientCredentials

        env = os.environ if environ is None else environ

        def find(*suffixes: str) -> tuple[str, str] | None:
            """(variable, value) of the first one set, by prefix priority."""
            for prefix in _ENV_PREFIXES:
                for suffix in suffixes:
                    value = env.get(prefix + suffix, "").strip()
                    if value:
                        return prefix + suffix, value
            return None

        def read(*suffixes: str) -> str | None:
            found = find(*suffixes)
            return None if found is None else found[1]

        settings: dict[str, Any] = {}
        environment = env.get("TIMEBACK_ENV", "").strip().lower() or None
        if environment is not None and environment not in ENVIRONMENTS:
            raise ConfigurationError(
                f"TIMEBACK_ENV: must be one of {', '.join(map(repr, ENVIRONMENTS))}"
            )
        defaults = ENVIRONMENTS.get(environment or "", {})
        base_url = read("BASE_URL")
        if base_url:
            base = base_url.rstrip("/")
            settings["endpoint"] = base if base.endswith(_EVENTS_PATH) else base + _EVENTS_PATH
        elif defaults:
            settings["endpoint"] = defaults["endpoint"]
        sensor = env.get("TIMEBACK_SENSOR", "").strip()
        if sensor:
            settings["sensor"] = sensor
        client_id, client_secret = find("CLIENT_ID"), find("CLIENT_SECRET")
        if (client_id is None) != (client_secret is None):
            present = client_id or client_secret
            assert present is not None
            prefix = present[0].removesuffix("CLIENT_ID").removesuffix("CLIENT_SECRET")
            missing = "CLIENT_SECRET" if client_secret is None else "CLIENT_ID"
            raise ConfigurationError(f"{prefix}{missing}: must be set together with {present[0]}")
        token_url = read("AUTH_URL", "TOKEN_URL") or defaults.get("token_url")
        if client_id and client_secret and "auth" not in overrides:
            if token_url is None:
                raise ConfigurationError(
                    "TIMEBACK_AUTH_URL: must be set (or TIMEBACK_ENV) to use client credentials"
                )
            settings["auth"] = ClientCredentials(client_id[1], client_secret[1], token_url)
        settings.update(overrides)
        for name, variables in (
            ("sensor", "TIMEBACK_SENSOR"),
            ("endpoint", "TIMEBACK_BASE_URL or TIMEBACK_ENV"),
        ):
            if name not in settings:
                raise ConfigurationError(f"TrackerConfig.{name}: set {variables}, or pass {name}=")
        return cls(**settings)
