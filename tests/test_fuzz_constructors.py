"""Fuzzing the constructors: entities and TrackerConfig from random, often absurd, values.

What an app passes in is the first thing that can break a tracker: a NaN interval, a
huge integer, a lone surrogate in a name, an email inside an IRI, extensions that are
not JSON. Each constructor must either refuse with an allowed error (the library's,
``ValueError`` or ``TypeError``) that never quotes an email or a secret, or build a
value that works: it goes on the wire as strict JSON and loads back the same, and a
config's values are inside their documented ranges and make envelopes the endpoint
accepts.

Derandomized by default (``conftest.py``'s ``ci`` profile); ``HYPOTHESIS_PROFILE=explore``
draws new examples, ten times as many.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import timeback_tracker as tt
from tests.strategies import (
    ENTITIES,
    OMIT,
    VALID_EVENT,
    WEIRD,
    Fields,
    arguments,
    entity_fields,
    examples,
    setting,
)
from tests.support import (
    SENSOR,
    assert_no_email,
    assert_round_trips,
    attempt,
    envelope,
    wire,
    wire_bytes,
)

SECRET = "s3cr3t-token-value"


@settings(max_examples=examples(400))
@given(data=st.data(), kind=st.sampled_from(sorted(ENTITIES)), email=st.emails())
def test_entities_accept_or_reject_cleanly(data: st.DataObject, kind: str, email: str) -> None:
    """Entities from random values raise an allowed error, or go on the wire and back intact."""
    kwargs = data.draw(arguments(entity_fields(kind, email)), label="kwargs")
    built = attempt(ENTITIES[kind], **kwargs)
    if isinstance(built, BaseException):
        assert_no_email(built, (email,))
        return
    if isinstance(built, tt.TimebackUser):
        assert "email='<redacted>'" in repr(built)
        if email not in f"{built.id}{built.name}":
            assert email not in repr(built)
    assert_round_trips(built)


# -- configuration -------------------------------------------------------------------------

ENDPOINTS = (
    "https://caliper.example.com/caliper/event",
    "http://127.0.0.1:9/caliper/event",
    "http://localhost:9/caliper/event",
    "http://[::1]:9/caliper/event",
)
BAD_ENDPOINTS = (
    "http://example.com/caliper/event",
    "https://",
    "http://[abc",
    "ftp://example.com/x",
    "http://127.0.0.1:9/caliper/\udc80",
    "https://example.com/\ud800",
)
BAD_SENSORS = ("x:y", "1:x", "https://", "http:", "::", "a b:c", "urn:x:\udc80", "https://[x")

CONFIG_FIELDS: Fields = {
    "sensor": (
        st.sampled_from([SENSOR, "urn:example:kiosk-3"]),
        st.one_of(st.sampled_from(BAD_SENSORS), WEIRD),
    ),
    "endpoint": (st.sampled_from(ENDPOINTS), st.one_of(st.sampled_from(BAD_ENDPOINTS), WEIRD)),
    "heartbeat_interval": setting(0.05, 15.0, 3600, 0.049, 3600.01),
    "idle_timeout": setting(None, 1, 30.0, 86400, 0.5),
    "inactive_cutoff": setting(None, 1, 600.0, 86401),
    "spool_path": setting(None, "/tmp/timeback-fuzz.sqlite3", pathlib.Path("x.db")),
    "max_queue": setting(1, 10_000, 1_000_000, 0, 1_000_001, 10.0),
    "batch_size": setting(1, 50, 1000, 0, 1001),
    "exit_timeout": setting(0, 2.0, 600, -0.1),
    "request_timeout": (
        st.sampled_from([OMIT, (5.0, 15.0), [1, 2], 3, (0, 1), (1, 601), (1, 2, 3)]),
        st.one_of(st.tuples(WEIRD, WEIRD), WEIRD),
    ),
    "max_event_age": setting(60, 30 * 86400, 59, 3650 * 86400),
    "on_error": setting(None, print),
}


@settings(max_examples=examples(400))
@given(data=st.data(), auth_kind=st.sampled_from(["none", "bearer", "client", "junk"]))
def test_tracker_config_accepts_or_rejects_cleanly(data: st.DataObject, auth_kind: str) -> None:
    """TrackerConfig from random values: an allowed error, or a config whose values work."""
    auth: Any = None
    if auth_kind == "bearer":
        auth = attempt(tt.BearerToken, data.draw(st.one_of(st.just(SECRET), WEIRD)))
    elif auth_kind == "client":
        secret = data.draw(st.one_of(st.just(SECRET), WEIRD))
        url = data.draw(st.one_of(st.sampled_from(ENDPOINTS + BAD_ENDPOINTS), WEIRD))
        auth = attempt(tt.ClientCredentials, "client-1", secret, url)
    elif auth_kind == "junk":
        auth = data.draw(WEIRD)
    if isinstance(auth, BaseException):
        assert SECRET not in str(auth)
    fields = data.draw(arguments(CONFIG_FIELDS), label="fields")
    if data.draw(st.integers(0, 19)) == 0:
        fields["no_such_field"] = 1
    config = attempt(tt.TrackerConfig, auth=auth, **fields)
    if isinstance(config, BaseException):
        assert SECRET not in str(config)
        assert isinstance(attempt(tt.Tracker, config), TypeError)
        return
    assert SECRET not in repr(config)
    assert not isinstance(config.heartbeat_interval, bool)
    assert 0.05 <= config.heartbeat_interval <= 3600
    assert isinstance(config.max_queue, int)
    assert 1 <= config.max_queue <= 1_000_000
    assert isinstance(config.batch_size, int)
    assert 1 <= config.batch_size <= 1000
    assert isinstance(config.request_timeout, tuple)
    assert len(config.request_timeout) == 2
    assert all(0 < value <= 600 for value in config.request_timeout)
    for value in (config.idle_timeout, config.inactive_cutoff):
        assert value is None or (math.isfinite(value) and value >= 1)
    # The sensor goes into every envelope: the endpoint must accept envelopes carrying it.
    sent = envelope(wire(VALID_EVENT), sensor=config.sensor)
    tt.load(json.loads(wire_bytes(sent)), tt.Envelope)
    config.endpoint.encode("utf-8")  # requests must be able to send to it
    if config.spool_path is None:  # a spool would create files
        # No session: no thread and no network, whatever the endpoint.
        with tt.Tracker(config) as tracker:
            assert tracker.stats() == tt.TrackerStats()
