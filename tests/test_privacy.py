"""Secrets and PII stay private: logs, repr(), stats, errors and on_error reports."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
import requests

import timeback_tracker as tt
from tests.support import ACTIVITY, SENSOR, wait_ok_after
from timeback_tracker.testing import LocalCollector

CLIENT_ID = "kiosk-lab-3"
SECRET = "Pr1vate-Client-Secret-7f3a"
EMAIL = "private.student.4711@example.com"
STUDENT = tt.TimebackUser(
    id="https://sis.example.com/users/student-4711", email=EMAIL, name="Private Student"
)
TIMEOUT = (2.0, 2.0)
LIBRARY_LOGGERS = (
    "timeback_tracker",
    "timeback_tracker.auth",
    "timeback_tracker.delivery",
    "timeback_tracker.heartbeat",
    "timeback_tracker.session",
    "timeback_tracker.transport",
)


class Capture(logging.Handler):
    """Formats every record in full: message, exception text, stack and raw args."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(threadName)s %(message)s"))
        self.lines: list[str] = []
        self.names: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)  # also fills record.exc_text
        self.lines.append(f"{text} | args={record.args!r} | exc={record.exc_text}")
        self.names.add(record.name)


@pytest.fixture
def captured() -> Iterator[Capture]:
    """Every record of the library, urllib3 and the root logger at DEBUG; levels restored."""
    handler = Capture()
    loggers = [logging.getLogger(name) for name in ("", "timeback_tracker", "urllib3")]
    saved = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)
    for logger, level in zip(loggers, saved, strict=True):
        logger.setLevel(level)


def assert_private(text: str, secrets: list[str], where: str) -> None:
    """None of the secrets, and no credential header value, is in ``text``."""
    for secret in secrets:
        assert secret not in text, f"a secret leaked into {where}: {text[:300]!r}"
    assert "Bearer " not in text, f"a bearer credential leaked into {where}"
    assert "Basic " not in text, f"a basic credential leaked into {where}"


@pytest.mark.slow(10)
def test_full_session_leaks_no_secret_token_or_email(captured: Capture) -> None:
    """Auth, a revocation, a 503 and a dead letter: no secret, token or email anywhere."""
    failures: list[tt.DeliveryFailure] = []
    with LocalCollector(clients={CLIENT_ID: SECRET}) as collector, requests.Session() as http:
        auth = tt.ClientCredentials(CLIENT_ID, SECRET, collector.token_url)
        config = tt.TrackerConfig(
            sensor=SENSOR,
            endpoint=collector.url,
            auth=auth,
            heartbeat_interval=0.1,
            on_error=failures.append,
        )
        tracker = tt.Tracker(config)
        try:
            main = tracker.start_session(STUDENT, ACTIVITY, course_id="MATH-3")
            doomed = tracker.start_session(STUDENT, ACTIVITY)
            collector.reject_events(
                lambda e: e["type"] == "ActivityEvent" and e["extensions"]["runId"] == doomed.run_id
            )
            assert collector.wait_for(2, timeout=5.0)
            # The cached token: asking for it again does not fetch a new one.
            tokens = [auth.authorization(http, TIMEOUT).removeprefix("Bearer ")]

            index = len(collector.requests)
            collector.fail_next(503)
            assert wait_ok_after(collector, index)

            index = len(collector.requests)
            collector.revoke_tokens()
            assert wait_ok_after(collector, index)
            assert 401 in [r.status for r in collector.requests[index:]]
            tokens.append(auth.authorization(http, TIMEOUT).removeprefix("Bearer "))
            assert tokens[0] != tokens[1]
            assert collector.token_requests == 2

            doomed.complete(3, total_questions=4, correct_questions=2)
            main.pause()
            time.sleep(0.15)  # paused a moment (real time)
            main.resume()
            # Far more XP than active minutes: the library logs a warning about it.
            main.complete(90, total_questions=10, correct_questions=9, pct_complete=50)
            assert tracker.flush(10.0)
            with pytest.raises(tt.SessionStateError) as state_error:
                main.pause()  # (touch() after the end is a silent no-op)
            stats = tracker.stats()
            assert stats.dead_lettered == 1
            assert stats.queued == 0

            basic = base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
            secrets = [SECRET, EMAIL, basic, *tokens]
            texts: dict[str, str] = {
                "repr(tracker)": repr(tracker),
                "repr(session)": repr(main) + repr(doomed),
                "repr(config)": repr(config) + str(config),
                "repr(auth)": repr(auth) + str(auth),
                "repr(user)": repr(STUDENT) + str(STUDENT),
                "stats": str(stats) + repr(stats),
                "on_error": "\n".join(repr(f) + str(f) + f.reason for f in failures),
                "SessionStateError": str(state_error.value) + repr(state_error.value),
            }
            for event in collector.time_spent_events():
                texts[f"repr(event {event['id']})"] = repr(tt.load(event, tt.TimeSpentEvent))
            for event in collector.completions():
                loaded = tt.load(event, tt.ActivityCompletedEvent)
                texts[f"repr(event {event['id']})"] = repr(loaded) + str(loaded)
        finally:
            tracker.close(timeout=1.0)
        texts["repr(tracker) after close"] = repr(tracker)

    # The scenario really happened and really was logged.
    assert any(f.status == 503 and f.will_retry for f in failures)
    assert any(f.status == 400 and not f.will_retry for f in failures)
    assert len(collector.completions()) == 1
    assert {"timeback_tracker.transport", "timeback_tracker.auth", "urllib3.connectionpool"} <= (
        captured.names
    )
    logged = "\n".join(captured.lines)
    assert "answered 401" in logged
    assert "dead-lettered" in logged
    assert "xp_earned" in logged
    # The email is in every event on the wire, but masked in repr.
    assert "<redacted>" in texts["repr(user)"]

    for number, line in enumerate(captured.lines):
        assert_private(line, secrets, f"log record {number}")
    for where, text in texts.items():
        assert_private(text, secrets, where)


def test_validation_errors_do_not_echo_the_email() -> None:
    """A rejected email is named as a field, never quoted, in the error message."""
    bad = "private.student.4711@@example.com"
    with pytest.raises(tt.ValidationError, match="email") as caught:
        tt.TimebackUser(id="https://sis.example.com/users/s", email=bad)
    assert bad not in str(caught.value)
    assert "4711" not in str(caught.value)

    start = datetime(2026, 1, 27, 10, 0, 0, tzinfo=timezone.utc)
    event = tt.dump(
        tt.TimeSpentEvent.for_window(
            user=STUDENT,
            activity=ACTIVITY,
            run_id="f47ac10b-58cc-4372-a567-0e02b2c3d479",
            start=start,
            end=start + timedelta(seconds=15),
            active_seconds=15,
            inactive_seconds=0,
        )
    )
    event["actor"]["email"] = bad
    with pytest.raises(tt.ValidationError, match="email") as loaded:
        tt.load(event, tt.TimeSpentEvent)
    assert bad not in str(loaded.value)
    assert bad not in repr(loaded.value)


def test_library_adds_no_handlers_and_sets_no_levels() -> None:
    """After a session has run, the library's loggers have no handlers and level NOTSET."""
    with LocalCollector() as collector:
        config = tt.TrackerConfig(sensor=SENSOR, endpoint=collector.url, heartbeat_interval=0.05)
        with tt.Tracker(config) as tracker:
            session = tracker.start_session(STUDENT, ACTIVITY)
            time.sleep(0.12)  # windows close (heartbeat 0.05 s): the loggers get used
            session.complete(0)
            assert tracker.flush(5.0)
    names = set(LIBRARY_LOGGERS) | {
        name for name in logging.root.manager.loggerDict if name.startswith("timeback_tracker")
    }
    for name in sorted(names):
        logger = logging.getLogger(name)
        assert logger.handlers == [], name
        assert logger.level == logging.NOTSET, name
        assert logger.propagate, name
        assert logger.filters == [], name
