"""Numbers a user may type that no float can hold, or that are not numbers at all:
refused with the field and the rule, never an OverflowError or a traceback."""

from __future__ import annotations

import pytest

import timeback_tracker as tt
from tests.support import SENSOR
from timeback_tracker.cli import main

ENDPOINT = "https://caliper.example.com/caliper/event"


@pytest.mark.parametrize("value", [10**400, -(10**400), (10**400, 5.0), [5.0, 10**400]])
def test_a_request_timeout_too_large_for_a_float_is_a_configuration_error(value: object) -> None:
    """An int beyond a float's range names request_timeout and its rule, like any wrong value."""
    with pytest.raises(tt.ConfigurationError) as caught:
        tt.TrackerConfig(sensor=SENSOR, endpoint=ENDPOINT, request_timeout=value)  # type: ignore[arg-type]
    assert str(caught.value) == (
        "TrackerConfig.request_timeout: must be a (connect, read) pair of seconds in (0, 600]"
    )


def test_a_request_timeout_given_as_a_list_becomes_a_pair() -> None:
    """A list (as JSON or a config file gives it) is taken as the (connect, read) pair."""
    config = tt.TrackerConfig(sensor=SENSOR, endpoint=ENDPOINT, request_timeout=[2, 7.5])  # type: ignore[arg-type]
    assert config.request_timeout == (2, 7.5)


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["demo", "--duration", "soon"], "argument --duration: not a number: 'soon'"),
        (["demo", "--interval", ""], "argument --interval: not a number: ''"),
        (["collector", "--port", "80.5"], "argument --port: not a whole number: '80.5'"),
        (["collector", "--port", "0x50"], "argument --port: not a whole number: '0x50'"),
        (["spool", "send", "x", "--timeout", "1e999"], "argument --timeout: must be finite"),
    ],
)
def test_command_line_text_that_is_not_a_number_is_a_usage_error(
    argv: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The option and the text are named, with exit code 2, before anything runs."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert problem in err
    assert "Traceback" not in err
