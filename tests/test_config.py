"""TrackerConfig: field validation, the URL rule, for_environment() and from_env()."""

from __future__ import annotations

import math
import pathlib
import re
from typing import Any

import pytest

import timeback_tracker as tt
from tests.support import SENSOR
from timeback_tracker.config import ENVIRONMENTS

ENDPOINT = "https://caliper.example.com/caliper/event"
PRODUCTION_ENDPOINT = "https://caliper.alpha-1edtech.ai/caliper/event"
STAGING_ENDPOINT = "https://caliper.staging.alpha-1edtech.ai/caliper/event"
PRODUCTION_TOKEN_URL = (
    "https://prod-beyond-timeback-api-2-idp.auth.us-east-1.amazoncognito.com/oauth2/token"
)
STAGING_TOKEN_URL = (
    "https://staging-beyond-timeback-api-2-idp.auth.us-east-1.amazoncognito.com/oauth2/token"
)
TOKEN_URL = "https://auth.example.com/oauth2/token"

# Every variable from_env() reads, so tests start from a clean environment.
ENV_NAMES = [
    prefix + suffix
    for prefix in ("TIMEBACK_API_", "TIMEBACK_", "CALIPER_")
    for suffix in ("CLIENT_ID", "CLIENT_SECRET", "BASE_URL", "AUTH_URL", "TOKEN_URL")
] + ["TIMEBACK_ENV", "TIMEBACK_SENSOR"]


def make(**overrides: Any) -> tt.TrackerConfig:
    """A config with valid required fields and the given overrides."""
    settings: dict[str, Any] = {"sensor": SENSOR, "endpoint": ENDPOINT}
    settings.update(overrides)
    return tt.TrackerConfig(**settings)


def field_error(field: str) -> Any:
    """pytest.raises for a ConfigurationError naming ``TrackerConfig.<field>``."""
    return pytest.raises(tt.ConfigurationError, match=rf"^TrackerConfig\.{field}: ")


# -- defaults and field rules ------------------------------------------------------------


def test_defaults_match_the_documented_contract() -> None:
    """Only sensor and endpoint are required; the rest has the documented defaults."""
    config = make()
    assert config.auth is None
    assert config.heartbeat_interval == 15.0
    assert config.idle_timeout is None
    assert config.inactive_cutoff == 600.0
    assert config.spool_path is tt.DEFAULT_SPOOL
    assert config.max_queue == 10_000
    assert config.batch_size == 50
    assert config.exit_timeout == 2.0
    assert config.request_timeout == (5.0, 15.0)
    assert config.max_event_age == 30 * 86400
    assert config.on_error is None


def test_config_is_frozen() -> None:
    """A config cannot be changed after construction."""
    config = make()
    with pytest.raises(AttributeError):
        config.heartbeat_interval = 1.0  # type: ignore[misc]


def test_configuration_error_is_a_value_error_and_a_tracker_error() -> None:
    """ConfigurationError derives from both ValueError and the library's root error."""
    with pytest.raises(tt.ConfigurationError) as caught:
        make(max_queue=0)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, tt.TimebackTrackerError)
    assert issubclass(tt.ConfigurationError, ValueError)
    assert issubclass(tt.ConfigurationError, tt.TimebackTrackerError)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("heartbeat_interval", 0.049),
        ("heartbeat_interval", 0),
        ("heartbeat_interval", -1),
        ("heartbeat_interval", 3600.001),
        ("heartbeat_interval", math.nan),
        ("heartbeat_interval", math.inf),
        ("heartbeat_interval", "15"),
        ("heartbeat_interval", True),
        ("heartbeat_interval", None),
        ("idle_timeout", 0.5),
        ("idle_timeout", 86400.5),
        ("idle_timeout", "60"),
        ("idle_timeout", math.nan),
        ("inactive_cutoff", 0),
        ("inactive_cutoff", 86401),
        ("inactive_cutoff", False),
        ("max_queue", 0),
        ("max_queue", 1_000_001),
        ("max_queue", 10.0),
        ("max_queue", True),
        ("max_queue", "100"),
        ("batch_size", 0),
        ("batch_size", 1001),
        ("batch_size", 2.5),
        ("batch_size", None),
        ("exit_timeout", -0.1),
        ("exit_timeout", 600.1),
        ("exit_timeout", math.inf),
        ("exit_timeout", "2"),
        ("request_timeout", 0),
        ("request_timeout", -1),
        ("request_timeout", 601),
        ("request_timeout", (5.0,)),
        ("request_timeout", (5.0, 15.0, 30.0)),
        ("request_timeout", (0, 15.0)),
        ("request_timeout", (5.0, 601)),
        ("request_timeout", ("5", "15")),
        ("request_timeout", (True, 1.0)),
        ("request_timeout", True),
        ("request_timeout", "5"),
        ("request_timeout", None),
        ("max_event_age", 59),
        ("max_event_age", 3650 * 86400 + 1),
        ("spool_path", 42),
        ("on_error", "print"),
        ("on_error", 42),
        ("auth", "Bearer abc"),
        ("auth", ("kiosk", "s3cret")),
        ("auth", object()),
        ("sensor", "no-scheme"),
        ("sensor", "https://kiosk.example.com/has space"),
        ("sensor", 42),
        ("endpoint", 42),
        ("endpoint", "caliper.example.com/caliper/event"),
        ("endpoint", "ftp://caliper.example.com/caliper/event"),
        ("endpoint", "https:///caliper/event"),
    ],
)
def test_invalid_field_raises_naming_it(field: str, value: Any) -> None:
    """Each field's type or range rule raises ConfigurationError naming TrackerConfig.<field>."""
    with field_error(field):
        make(**{field: value})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("heartbeat_interval", 0.05),
        ("heartbeat_interval", 3600),
        ("heartbeat_interval", 1),
        ("idle_timeout", None),
        ("idle_timeout", 1),
        ("idle_timeout", 86400),
        ("inactive_cutoff", None),
        ("inactive_cutoff", 1.5),
        ("inactive_cutoff", 86400),
        ("max_queue", 1),
        ("max_queue", 1_000_000),
        ("batch_size", 1),
        ("batch_size", 1000),
        ("exit_timeout", 0),
        ("exit_timeout", 600),
        ("max_event_age", 60),
        ("max_event_age", 3650 * 86400),
        ("spool_path", None),
        ("spool_path", "/tmp/timeback-spool.db"),
        ("spool_path", pathlib.Path("/tmp/timeback-spool.db")),
        ("on_error", None),
        ("on_error", print),
        ("on_error", lambda failure: None),
        ("auth", None),
        ("auth", tt.BearerToken("abc")),
        ("auth", tt.ClientCredentials("kiosk", "s3cret", TOKEN_URL)),
    ],
)
def test_boundary_values_are_accepted(field: str, value: Any) -> None:
    """The ends of each documented range, and None where allowed, are valid."""
    assert getattr(make(**{field: value}), field) == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (10, (10.0, 10.0)),
        (2.5, (2.5, 2.5)),
        (600, (600.0, 600.0)),
        ((1.0, 2.0), (1.0, 2.0)),
        ([3, 4], (3, 4)),
        ((0.001, 600), (0.001, 600)),
    ],
)
def test_request_timeout_is_one_number_or_a_pair(value: Any, expected: tuple[float, float]) -> None:
    """One number means (connect, read) both; a pair (or a list of two) is kept as a tuple."""
    timeout = make(request_timeout=value).request_timeout
    assert timeout == expected
    assert isinstance(timeout, tuple)


def test_custom_auth_object_is_accepted() -> None:
    """Any object with callable authorization() and invalidate() passes the auth rule."""

    class Custom:
        def authorization(self, http: Any, timeout: tuple[float, float]) -> str:
            return "Custom abc"

        def invalidate(self) -> bool:
            return False

    custom = Custom()
    assert make(auth=custom).auth is custom


def test_message_names_the_rule_not_only_the_field() -> None:
    """The message says which rule was broken, e.g. the range."""
    with pytest.raises(tt.ConfigurationError, match=r"between 0\.05 and 3600"):
        make(heartbeat_interval=0.01)
    with pytest.raises(tt.ConfigurationError, match=r"between 1 and 1000"):
        make(batch_size=5000)
    with pytest.raises(tt.ConfigurationError, match=r"\(connect, read\)"):
        make(request_timeout=(1, 2, 3))


def test_sensor_and_endpoint_are_required() -> None:
    """Leaving out sensor or endpoint is a TypeError from the constructor."""
    with pytest.raises(TypeError):
        tt.TrackerConfig(endpoint=ENDPOINT)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        tt.TrackerConfig(sensor=SENSOR)  # type: ignore[call-arg]


def test_repr_hides_the_callback_and_secrets() -> None:
    """repr shows settings but neither on_error nor the client secret."""

    def callback(failure: tt.DeliveryFailure) -> None:
        pass

    config = make(
        auth=tt.ClientCredentials("kiosk", "hush-hush-secret", TOKEN_URL), on_error=callback
    )
    text = repr(config)
    assert "heartbeat_interval=15.0" in text
    assert "hush-hush-secret" not in text
    assert "callback" not in text


# -- the URL rule --------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/caliper/event",
        "http://127.0.0.1/caliper/event",
        "http://127.8.9.10:8080/caliper/event",
        "http://[::1]:8080/caliper/event",
        "http://localhost:8080/caliper/event",
        "http://LOCALHOST/caliper/event",
        "https://caliper.example.com/caliper/event",
        "https://example.com:8443/x",
        "https://93.184.216.34/caliper/event",
    ],
)
def test_https_and_loopback_http_are_allowed(url: str) -> None:
    """https anywhere, and plain http on 127.0.0.0/8, ::1 and localhost, are accepted."""
    assert make(endpoint=url).endpoint == url


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/caliper/event",
        "http://caliper.alpha-1edtech.ai/caliper/event",
        "http://localhost.example.com/caliper/event",
        "http://192.168.1.10:8080/caliper/event",
        "http://10.0.0.1/caliper/event",
        "http://0.0.0.0:8080/caliper/event",
        "http://[::]:8080/caliper/event",
        "http://[2001:db8::1]/caliper/event",
    ],
)
def test_plain_http_is_refused_for_non_loopback_hosts(url: str) -> None:
    """Plain http:// to anything but loopback is refused, naming the field and https."""
    with pytest.raises(tt.ConfigurationError, match=r"^TrackerConfig\.endpoint: .*https://"):
        make(endpoint=url)


# -- for_environment() ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("environment", "endpoint", "token_url"),
    [
        ("production", PRODUCTION_ENDPOINT, PRODUCTION_TOKEN_URL),
        ("staging", STAGING_ENDPOINT, STAGING_TOKEN_URL),
    ],
)
def test_for_environment_fills_the_urls_from_the_wire_document(
    environment: str, endpoint: str, token_url: str
) -> None:
    """for_environment() uses Timeback's Caliper endpoint and Cognito token URL."""
    config = tt.TrackerConfig.for_environment(
        environment, client_id="kiosk", client_secret="s3cret", sensor=SENSOR
    )
    assert config.endpoint == endpoint
    assert config.sensor == SENSOR
    assert isinstance(config.auth, tt.ClientCredentials)
    assert config.auth.token_url == token_url
    assert (config.auth.client_id, config.auth.client_secret) == ("kiosk", "s3cret")
    assert ENVIRONMENTS[environment] == {"endpoint": endpoint, "token_url": token_url}


def test_for_environment_takes_overrides() -> None:
    """Other fields (and even the endpoint) can be overridden."""
    config = tt.TrackerConfig.for_environment(
        "staging",
        client_id="kiosk",
        client_secret="s3cret",
        sensor=SENSOR,
        heartbeat_interval=5,
        batch_size=10,
        endpoint="http://127.0.0.1:9/caliper/event",
    )
    assert (config.heartbeat_interval, config.batch_size) == (5, 10)
    assert config.endpoint == "http://127.0.0.1:9/caliper/event"


@pytest.mark.parametrize("environment", ["dev", "Production", "", "prod"])
def test_for_environment_refuses_unknown_environments(environment: str) -> None:
    """An unknown environment name raises ConfigurationError listing the known ones."""
    with pytest.raises(tt.ConfigurationError, match=r"environment.*'production'.*'staging'"):
        tt.TrackerConfig.for_environment(
            environment, client_id="kiosk", client_secret="s3cret", sensor=SENSOR
        )


def test_for_environment_validates_the_credentials() -> None:
    """Empty credentials are refused by ClientCredentials, naming the field."""
    with pytest.raises(tt.ConfigurationError, match=r"ClientCredentials\.client_secret"):
        tt.TrackerConfig.for_environment(
            "staging", client_id="kiosk", client_secret="", sensor=SENSOR
        )


# -- from_env() -----------------------------------------------------------------------


def test_from_env_reads_a_complete_set_of_variables() -> None:
    """Sensor, base URL, credentials and token URL make a ClientCredentials config."""
    config = tt.TrackerConfig.from_env(
        {
            "TIMEBACK_SENSOR": SENSOR,
            "TIMEBACK_BASE_URL": "https://caliper.example.com",
            "TIMEBACK_CLIENT_ID": "kiosk",
            "TIMEBACK_CLIENT_SECRET": "s3cret",
            "TIMEBACK_AUTH_URL": TOKEN_URL,
        }
    )
    assert config.sensor == SENSOR
    assert config.endpoint == "https://caliper.example.com/caliper/event"
    assert isinstance(config.auth, tt.ClientCredentials)
    assert (config.auth.client_id, config.auth.client_secret) == ("kiosk", "s3cret")
    assert config.auth.token_url == TOKEN_URL


@pytest.mark.parametrize(
    ("present", "winner"),
    [
        (("TIMEBACK_API_", "TIMEBACK_", "CALIPER_"), "TIMEBACK_API_"),
        (("TIMEBACK_", "CALIPER_"), "TIMEBACK_"),
        (("TIMEBACK_API_", "CALIPER_"), "TIMEBACK_API_"),
        (("CALIPER_",), "CALIPER_"),
    ],
)
def test_from_env_prefix_priority(present: tuple[str, ...], winner: str) -> None:
    """TIMEBACK_API_* wins over TIMEBACK_*, which wins over CALIPER_*, for every suffix."""
    environ = {"TIMEBACK_SENSOR": SENSOR}
    for prefix in present:
        tag = prefix.lower().rstrip("_").replace("_", "-")
        environ[prefix + "CLIENT_ID"] = f"id-{tag}"
        environ[prefix + "CLIENT_SECRET"] = f"secret-{tag}"
        environ[prefix + "BASE_URL"] = f"https://{tag}.example.com"
        environ[prefix + "TOKEN_URL"] = f"https://auth.{tag}.example.com/oauth2/token"
    config = tt.TrackerConfig.from_env(environ)
    tag = winner.lower().rstrip("_").replace("_", "-")
    assert config.endpoint == f"https://{tag}.example.com/caliper/event"
    assert isinstance(config.auth, tt.ClientCredentials)
    assert config.auth.client_id == f"id-{tag}"
    assert config.auth.client_secret == f"secret-{tag}"
    assert config.auth.token_url == f"https://auth.{tag}.example.com/oauth2/token"


def test_from_env_each_suffix_falls_back_independently() -> None:
    """A suffix missing under a higher prefix is taken from a lower one."""
    config = tt.TrackerConfig.from_env(
        {
            "TIMEBACK_SENSOR": SENSOR,
            "TIMEBACK_API_CLIENT_ID": "api-id",
            "TIMEBACK_CLIENT_SECRET": "tb-secret",
            "CALIPER_BASE_URL": "https://caliper.example.com",
            "CALIPER_AUTH_URL": TOKEN_URL,
        }
    )
    assert isinstance(config.auth, tt.ClientCredentials)
    assert (config.auth.client_id, config.auth.client_secret) == ("api-id", "tb-secret")
    assert config.auth.token_url == TOKEN_URL
    assert config.endpoint == "https://caliper.example.com/caliper/event"


def test_from_env_blank_values_count_as_unset() -> None:
    """A variable set to spaces does not shadow a lower-priority one."""
    config = tt.TrackerConfig.from_env(
        {
            "TIMEBACK_SENSOR": SENSOR,
            "TIMEBACK_API_BASE_URL": "   ",
            "TIMEBACK_BASE_URL": " https://caliper.example.com ",
        }
    )
    assert config.endpoint == "https://caliper.example.com/caliper/event"
    assert config.auth is None


@pytest.mark.parametrize(
    ("base_url", "endpoint"),
    [
        ("https://caliper.example.com", "https://caliper.example.com/caliper/event"),
        ("https://caliper.example.com/", "https://caliper.example.com/caliper/event"),
        ("https://caliper.example.com/caliper/event", "https://caliper.example.com/caliper/event"),
        ("https://caliper.example.com/caliper/event/", "https://caliper.example.com/caliper/event"),
        ("https://gw.example.com/v2", "https://gw.example.com/v2/caliper/event"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/caliper/event"),
    ],
)
def test_from_env_base_url_gets_the_events_path_once(base_url: str, endpoint: str) -> None:
    """BASE_URL gets /caliper/event appended, but not when it already ends with it."""
    config = tt.TrackerConfig.from_env({"TIMEBACK_SENSOR": SENSOR, "TIMEBACK_BASE_URL": base_url})
    assert config.endpoint == endpoint


@pytest.mark.parametrize(
    "variable", ["TIMEBACK_AUTH_URL", "TIMEBACK_TOKEN_URL", "CALIPER_AUTH_URL"]
)
def test_from_env_auth_url_or_token_url(variable: str) -> None:
    """The token URL may be given as AUTH_URL or TOKEN_URL."""
    config = tt.TrackerConfig.from_env(
        {
            "TIMEBACK_SENSOR": SENSOR,
            "TIMEBACK_BASE_URL": "https://caliper.example.com",
            "TIMEBACK_CLIENT_ID": "kiosk",
            "TIMEBACK_CLIENT_SECRET": "s3cret",
            variable: TOKEN_URL,
        }
    )
    assert isinstance(config.auth, tt.ClientCredentials)
    assert config.auth.token_url == TOKEN_URL


@pytest.mark.parametrize(
    ("environment", "endpoint", "token_url"),
    [
        ("staging", STAGING_ENDPOINT, STAGING_TOKEN_URL),
        ("production", PRODUCTION_ENDPOINT, PRODUCTION_TOKEN_URL),
        (" Staging ", STAGING_ENDPOINT, STAGING_TOKEN_URL),
    ],
)
def test_from_env_timeback_env_supplies_default_urls(
    environment: str, endpoint: str, token_url: str
) -> None:
    """TIMEBACK_ENV fills the endpoint and the token URL when they are not set."""
    config = tt.TrackerConfig.from_env(
        {
            "TIMEBACK_ENV": environment,
            "TIMEBACK_SENSOR": SENSOR,
            "TIMEBACK_CLIENT_ID": "kiosk",
            "TIMEBACK_CLIENT_SECRET": "s3cret",
        }
    )
    assert config.endpoint == endpoint
    assert isinstance(config.auth, tt.ClientCredentials)
    assert config.auth.token_url == token_url


def test_from_env_explicit_urls_beat_timeback_env() -> None:
    """BASE_URL and AUTH_URL win over the environment's defaults."""
    config = tt.TrackerConfig.from_env(
        {
            "TIMEBACK_ENV": "production",
            "TIMEBACK_SENSOR": SENSOR,
            "TIMEBACK_BASE_URL": "https://caliper.example.com",
            "TIMEBACK_CLIENT_ID": "kiosk",
            "TIMEBACK_CLIENT_SECRET": "s3cret",
            "TIMEBACK_AUTH_URL": TOKEN_URL,
        }
    )
    assert config.endpoint == "https://caliper.example.com/caliper/event"
    assert isinstance(config.auth, tt.ClientCredentials)
    assert config.auth.token_url == TOKEN_URL


def test_from_env_unknown_timeback_env_raises() -> None:
    """An unknown TIMEBACK_ENV raises ConfigurationError naming the variable."""
    with pytest.raises(tt.ConfigurationError, match=r"TIMEBACK_ENV"):
        tt.TrackerConfig.from_env({"TIMEBACK_ENV": "qa", "TIMEBACK_SENSOR": SENSOR})


def test_from_env_without_credentials_has_no_auth() -> None:
    """No client id and secret: auth stays None, even with TIMEBACK_ENV set."""
    config = tt.TrackerConfig.from_env({"TIMEBACK_ENV": "staging", "TIMEBACK_SENSOR": SENSOR})
    assert config.auth is None
    assert config.endpoint == STAGING_ENDPOINT


def test_from_env_overrides_win() -> None:
    """Keyword overrides replace what the variables say, auth included."""
    bearer = tt.BearerToken("abc")
    config = tt.TrackerConfig.from_env(
        {
            "TIMEBACK_ENV": "staging",
            "TIMEBACK_SENSOR": SENSOR,
            "TIMEBACK_CLIENT_ID": "kiosk",
            "TIMEBACK_CLIENT_SECRET": "s3cret",
        },
        sensor="https://other.example.com/sensor",
        endpoint="http://127.0.0.1:9/caliper/event",
        auth=bearer,
        heartbeat_interval=1,
    )
    assert config.sensor == "https://other.example.com/sensor"
    assert config.endpoint == "http://127.0.0.1:9/caliper/event"
    assert config.auth is bearer
    assert config.heartbeat_interval == 1


def test_from_env_overrides_supply_missing_values() -> None:
    """Required values may come from overrides instead of variables."""
    config = tt.TrackerConfig.from_env({}, sensor=SENSOR, endpoint=ENDPOINT)
    assert (config.sensor, config.endpoint, config.auth) == (SENSOR, ENDPOINT, None)


def test_from_env_missing_sensor_names_the_variable() -> None:
    """Without TIMEBACK_SENSOR the error names it."""
    with pytest.raises(tt.ConfigurationError, match=r"TrackerConfig\.sensor.*TIMEBACK_SENSOR"):
        tt.TrackerConfig.from_env({"TIMEBACK_ENV": "staging"})


def test_from_env_missing_endpoint_names_the_variables() -> None:
    """Without a base URL or TIMEBACK_ENV the error names both ways to set it."""
    with pytest.raises(
        tt.ConfigurationError,
        match=r"TrackerConfig\.endpoint.*TIMEBACK_BASE_URL.*TIMEBACK_ENV",
    ):
        tt.TrackerConfig.from_env({"TIMEBACK_SENSOR": SENSOR})


@pytest.mark.parametrize(
    ("present", "missing"),
    [
        ({"TIMEBACK_CLIENT_ID": "kiosk"}, "CLIENT_SECRET"),
        ({"CALIPER_CLIENT_ID": "kiosk"}, "CLIENT_SECRET"),
        ({"TIMEBACK_CLIENT_SECRET": "hush-hush-secret"}, "CLIENT_ID"),
        ({"TIMEBACK_API_CLIENT_SECRET": "hush-hush-secret"}, "CLIENT_ID"),
    ],
)
def test_from_env_half_of_the_credentials_raises(present: dict[str, str], missing: str) -> None:
    """A client id without a secret (or the reverse) names the missing variable, not the value."""
    environ = {"TIMEBACK_ENV": "staging", "TIMEBACK_SENSOR": SENSOR, **present}
    with pytest.raises(tt.ConfigurationError, match=missing) as caught:
        tt.TrackerConfig.from_env(environ)
    assert "hush-hush-secret" not in str(caught.value)


def test_from_env_credentials_without_a_token_url_raise() -> None:
    """Credentials without AUTH_URL, TOKEN_URL or TIMEBACK_ENV name the variables to set."""
    with pytest.raises(tt.ConfigurationError, match=r"TIMEBACK_AUTH_URL.*TIMEBACK_ENV"):
        tt.TrackerConfig.from_env(
            {
                "TIMEBACK_SENSOR": SENSOR,
                "TIMEBACK_BASE_URL": "https://caliper.example.com",
                "TIMEBACK_CLIENT_ID": "kiosk",
                "TIMEBACK_CLIENT_SECRET": "s3cret",
            }
        )


def test_from_env_still_applies_the_url_rule() -> None:
    """A plain-http base URL on a public host is refused like any endpoint."""
    with pytest.raises(tt.ConfigurationError, match=r"TrackerConfig\.endpoint"):
        tt.TrackerConfig.from_env(
            {"TIMEBACK_SENSOR": SENSOR, "TIMEBACK_BASE_URL": "http://caliper.example.com"}
        )
    with pytest.raises(tt.ConfigurationError, match=r"ClientCredentials\.token_url"):
        tt.TrackerConfig.from_env(
            {
                "TIMEBACK_SENSOR": SENSOR,
                "TIMEBACK_BASE_URL": "https://caliper.example.com",
                "TIMEBACK_CLIENT_ID": "kiosk",
                "TIMEBACK_CLIENT_SECRET": "s3cret",
                "TIMEBACK_AUTH_URL": "http://auth.example.com/oauth2/token",
            }
        )


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """from_env() without a mapping reads the process environment."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TIMEBACK_ENV", "staging")
    monkeypatch.setenv("TIMEBACK_SENSOR", SENSOR)
    monkeypatch.setenv("TIMEBACK_API_CLIENT_ID", "kiosk")
    monkeypatch.setenv("TIMEBACK_API_CLIENT_SECRET", "s3cret")
    monkeypatch.setenv("CALIPER_CLIENT_ID", "ignored")
    config = tt.TrackerConfig.from_env(batch_size=7)
    assert config.endpoint == STAGING_ENDPOINT
    assert config.sensor == SENSOR
    assert config.batch_size == 7
    assert isinstance(config.auth, tt.ClientCredentials)
    assert (config.auth.client_id, config.auth.token_url) == ("kiosk", STAGING_TOKEN_URL)


def test_from_env_with_an_empty_process_environment_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With none of the variables set, from_env() names what to set."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(tt.ConfigurationError, match=re.escape("TIMEBACK_SENSOR")):
        tt.TrackerConfig.from_env()


def test_from_env_token_url_follows_prefix_priority() -> None:
    """A TOKEN_URL under a higher-priority prefix beats an AUTH_URL under a lower one."""
    config = tt.TrackerConfig.from_env(
        {
            "TIMEBACK_API_CLIENT_ID": "id",
            "TIMEBACK_API_CLIENT_SECRET": "secret",
            "TIMEBACK_API_BASE_URL": "https://caliper.example.com",
            "TIMEBACK_API_TOKEN_URL": "https://idp.example.com/api-token",
            "CALIPER_AUTH_URL": "https://idp.example.com/caliper-auth",
            "TIMEBACK_SENSOR": SENSOR,
        }
    )
    assert isinstance(config.auth, tt.ClientCredentials)
    assert config.auth.token_url == "https://idp.example.com/api-token"


def test_from_env_half_credentials_name_the_prefix_in_use() -> None:
    """The error names the missing variable under the prefix the app actually used."""
    with pytest.raises(tt.ConfigurationError, match="CALIPER_CLIENT_SECRET"):
        tt.TrackerConfig.from_env({"CALIPER_CLIENT_ID": "id", "TIMEBACK_SENSOR": SENSOR})
