"""Tests of timeback_tracker.testing.LocalCollector against real loopback sockets."""

from __future__ import annotations

import base64
import email.utils
import functools
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
import requests

import timeback_tracker as tt
from tests.support import envelope as support_envelope
from tests.support import new_run, wire_completion, wire_window
from timeback_tracker.testing import LocalCollector, RequestRecord

USER = tt.TimebackUser(id="https://example.com/users/student-1", email="student@example.com")
ACTIVITY = tt.TimebackActivityContext(
    id="https://example.com/activities/math/1", subject="Math", app=tt.App(name="Test App")
)
SENSOR = "https://example.com/sensors/test"
window = functools.partial(wire_window, user=USER, activity=ACTIVITY)
completion = functools.partial(wire_completion, user=USER, activity=ACTIVITY)
envelope = functools.partial(support_envelope, sensor=SENSOR)


# ---------------------------------------------------------------------- events endpoint


def test_accepted_envelope_is_recorded_and_answered_200(
    collector: LocalCollector, http: requests.Session
) -> None:
    """A valid envelope gets 200 with a success body and is recorded as received."""
    run = new_run()
    body = envelope(window(run), completion(run))
    response = http.post(collector.url, json=body)
    assert response.status_code == 200
    assert response.json()["status"] == "success"
    assert response.headers["Content-Type"] == "application/json"
    assert collector.envelopes == [body]
    assert [event["id"] for event in collector.events] == [item["id"] for item in body["data"]]
    assert collector.duplicates == 0


def test_url_properties_point_at_the_bound_port(collector: LocalCollector) -> None:
    """url, token_url and port name the loopback address actually bound."""
    assert collector.port > 0
    assert collector.url == f"http://127.0.0.1:{collector.port}/caliper/event"
    assert collector.token_url == f"http://127.0.0.1:{collector.port}/oauth2/token"
    assert collector.is_up


def test_invalid_envelope_is_answered_400_with_paths_and_not_recorded(
    collector: LocalCollector, http: requests.Session
) -> None:
    """An invalid envelope gets 400 listing each bad field's JSON path; nothing is recorded."""
    bad_event = window(new_run())
    bad_event["actor"]["email"] = "not-an-email"
    body = envelope(window(new_run()), bad_event)
    del body["sensor"]
    response = http.post(collector.url, json=body)
    assert response.status_code == 400
    payload = response.json()
    assert payload["status"] == "error"
    assert payload["message"]
    paths = {error["path"] for error in payload["errors"]}
    assert paths == {"$.sensor", "$.data[1].actor.email"}
    assert all(error["message"] for error in payload["errors"])
    assert collector.envelopes == []
    assert collector.events == []
    assert collector.requests[-1].status == 400


def test_empty_envelope_is_answered_400(collector: LocalCollector, http: requests.Session) -> None:
    """An envelope without events is invalid, as on the real API."""
    response = http.post(collector.url, json=envelope())
    assert response.status_code == 400
    assert [error["path"] for error in response.json()["errors"]] == ["$.data"]


def test_body_that_is_not_json_is_answered_400(
    collector: LocalCollector, http: requests.Session
) -> None:
    """A body that does not parse as JSON gets 400 naming the root path."""
    response = http.post(
        collector.url, data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["errors"] == [{"path": "$", "message": "must be a JSON object"}]
    assert collector.envelopes == []


def test_other_data_version_is_answered_422(
    collector: LocalCollector, http: requests.Session
) -> None:
    """An unsupported dataVersion gets 422, like the real API."""
    body = envelope(window(new_run()))
    body["dataVersion"] = "http://purl.imsglobal.org/ctx/caliper/v1p1"
    assert http.post(collector.url, json=body).status_code == 422
    assert collector.events == []


def test_duplicates_are_deduplicated_and_counted(
    collector: LocalCollector, http: requests.Session
) -> None:
    """Re-sent events are recorded once and counted as duplicates, without conflicts."""
    run = new_run()
    first, second = window(run, 0), window(run, 1)
    assert http.post(collector.url, json=envelope(first)).ok
    assert http.post(collector.url, json=envelope(first, second)).ok
    assert http.post(collector.url, json=envelope(second)).ok
    assert [event["id"] for event in collector.events] == [first["id"], second["id"]]
    assert collector.duplicates == 2
    assert collector.duplicate_conflicts == []
    assert len(collector.envelopes) == 3


def test_conflicting_duplicate_is_reported(
    collector: LocalCollector, http: requests.Session
) -> None:
    """An id received again with different content is listed once in duplicate_conflicts."""
    run = new_run()
    original = window(run, 0, active=10, inactive=5)
    changed = window(run, 0, active=12, inactive=3)
    assert original["id"] == changed["id"]
    for body in (original, changed, changed):
        assert http.post(collector.url, json=envelope(body)).ok
    assert collector.duplicates == 2
    assert collector.duplicate_conflicts == [original["id"]]
    assert collector.events == [original]


def test_wrong_content_type_is_answered_415(
    collector: LocalCollector, http: requests.Session
) -> None:
    """A body that is not declared application/json gets 415 and is not recorded."""
    body = json.dumps(envelope(window(new_run())))
    response = http.post(collector.url, data=body, headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert collector.events == []
    charset = {"Content-Type": "application/json; charset=utf-8"}
    assert http.post(collector.url, data=body, headers=charset).status_code == 200


def test_bearer_token_is_required_when_configured(http: requests.Session) -> None:
    """Without or with a wrong token the answer is 401 with a JSON body; the right one gets 200."""
    body = envelope(window(new_run()))
    with LocalCollector(token="s3cret-token") as collector:
        missing = http.post(collector.url, json=body)
        wrong = http.post(collector.url, json=body, headers={"Authorization": "Bearer nope"})
        right = http.post(
            collector.url, json=body, headers={"Authorization": "Bearer s3cret-token"}
        )
        assert missing.status_code == 401
        assert missing.json()["status"] == "error"
        assert "Bearer" in missing.headers["WWW-Authenticate"]
        assert wrong.status_code == 401
        assert wrong.json()["status"] == "error"
        assert right.status_code == 200
        assert len(collector.envelopes) == 1
        assert "s3cret-token" not in repr(collector)
        assert "s3cret-token" not in repr(collector.requests)


def test_oversized_body_is_answered_413_and_connection_stays_usable(
    http: requests.Session,
) -> None:
    """A body above max_body_bytes gets 413, nothing is recorded, and keep-alive survives."""
    run = new_run()
    small = envelope(window(run))
    large = envelope(*(window(run, index) for index in range(20)))
    limit = len(json.dumps(small)) + 100
    assert len(json.dumps(large)) > limit
    with LocalCollector(max_body_bytes=limit) as collector:
        assert http.post(collector.url, json=large).status_code == 413
        assert http.post(collector.url, json=small).status_code == 200
        assert [envelope_["data"] for envelope_ in collector.envelopes] == [small["data"]]
        assert collector.requests[0].event_count == 0
        assert len({record.connection for record in collector.requests}) == 1


def test_unknown_path_is_404_and_other_methods_are_405(
    collector: LocalCollector, http: requests.Session
) -> None:
    """Other paths answer 404; GET on the events endpoint answers 405 naming POST."""
    assert http.post(collector.url + "/extra", json={}).status_code == 404
    assert http.get(collector.base_url + "/nothing-here").status_code == 404
    response = http.get(collector.url)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert [record.status for record in collector.requests] == [404, 404, 405]


def test_chunked_body_is_accepted(collector: LocalCollector, http: requests.Session) -> None:
    """A body sent with chunked transfer encoding is read and recorded."""
    data = json.dumps(envelope(window(new_run()))).encode()

    def chunks() -> Iterator[bytes]:
        yield data[:100]
        yield data[100:]

    response = http.post(collector.url, data=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 200
    assert len(collector.events) == 1


def test_urllib_client_is_served(collector: LocalCollector) -> None:
    """A urllib request (Connection: close) is answered and recorded."""
    body = json.dumps(envelope(window(new_run()))).encode()
    request = urllib.request.Request(
        collector.url, data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
        assert json.loads(response.read())["status"] == "success"
    assert len(collector.events) == 1


def test_request_log_keeps_headers_but_never_authorization(http: requests.Session) -> None:
    """Each request is logged with status, event ids, User-Agent and X-Request-ID only."""
    run = new_run()
    body = envelope(window(run, 0), window(run, 1))
    headers = {
        "Authorization": "Bearer tok-123",
        "User-Agent": "timeback-tracker/test",
        "X-Request-ID": "req-42",
    }
    with LocalCollector(token="tok-123") as collector:
        assert http.post(collector.url, json=body, headers=headers).ok
        (record,) = collector.requests
    assert isinstance(record, RequestRecord)
    assert (record.method, record.path, record.status) == ("POST", "/caliper/event", 200)
    assert record.event_count == 2
    assert record.event_ids == tuple(event["id"] for event in body["data"])
    assert (record.user_agent, record.request_id) == ("timeback-tracker/test", "req-42")
    assert "tok-123" not in repr(record)
    assert not hasattr(record, "headers")


# ---------------------------------------------------------------------- fault injection


def test_fail_next_answers_status_with_retry_after_seconds(
    collector: LocalCollector, http: requests.Session
) -> None:
    """fail_next answers the scripted status and Retry-After seconds, then recovers."""
    collector.fail_next(429, times=2, retry_after=3)
    body = envelope(window(new_run()))
    first, second, third = (http.post(collector.url, json=body) for _ in range(3))
    assert (first.status_code, second.status_code, third.status_code) == (429, 429, 200)
    assert first.headers["Retry-After"] == "3"
    assert first.json()["status"] == "error"
    assert "Retry-After" not in third.headers
    assert len(collector.envelopes) == 1
    assert [record.status for record in collector.requests] == [429, 429, 200]
    assert collector.requests[0].event_ids == collector.requests[2].event_ids


def test_fail_next_answers_retry_after_http_date_and_custom_body(
    collector: LocalCollector, http: requests.Session
) -> None:
    """A string Retry-After (an HTTP date) and a custom body are sent as given."""
    when = email.utils.format_datetime(datetime.now(timezone.utc) + timedelta(seconds=5), True)
    collector.fail_next(503, retry_after=when, body={"status": "error", "message": "busy"})
    response = http.post(collector.url, json=envelope(window(new_run())))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == when
    assert email.utils.parsedate_to_datetime(response.headers["Retry-After"]) is not None
    assert response.json() == {"status": "error", "message": "busy"}
    assert collector.events == []


def test_faults_are_consumed_in_order(collector: LocalCollector, http: requests.Session) -> None:
    """Scripted faults apply to the next requests in the order they were added."""
    collector.fail_next(500)
    collector.fail_next(502, body="bad gateway")
    collector.fail_next(504)
    body = envelope(window(new_run()))
    statuses = [http.post(collector.url, json=body).status_code for _ in range(4)]
    assert statuses == [500, 502, 504, 200]
    assert [record.status for record in collector.requests] == statuses


def test_drop_next_resets_the_connection(collector: LocalCollector, http: requests.Session) -> None:
    """drop_next closes the connection without a response: the client sees a connection error."""
    collector.drop_next()
    body = envelope(window(new_run()))
    with pytest.raises(requests.ConnectionError):
        http.post(collector.url, json=body)
    assert collector.events == []
    assert collector.requests[0].status is None
    assert collector.requests[0].event_count == 1
    assert http.post(collector.url, json=body).status_code == 200


def test_delay_next_provokes_a_read_timeout_then_records(
    collector: LocalCollector, http: requests.Session
) -> None:
    """delay_next holds the answer past the client's timeout; the envelope is still recorded."""
    collector.delay_next(0.4)
    body = envelope(window(new_run()))
    with pytest.raises(requests.ReadTimeout):
        http.post(collector.url, json=body, timeout=(2, 0.1))
    assert collector.wait_for(1, timeout=5)
    assert http.post(collector.url, json=body, timeout=5).status_code == 200
    assert collector.duplicates == 1
    assert collector.duplicate_conflicts == []


def test_delay_next_answers_normally_after_the_delay(
    collector: LocalCollector, http: requests.Session
) -> None:
    """A patient client gets the normal answer after the delay."""
    collector.delay_next(0.15)
    started = time.monotonic()
    response = http.post(collector.url, json=envelope(window(new_run())), timeout=5)
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.15


def test_reject_events_poisons_envelopes_naming_the_event_path(
    collector: LocalCollector, http: requests.Session
) -> None:
    """An envelope holding a poisoned event gets 400 naming the event's path; nothing recorded."""
    run = new_run()
    poison = completion(run)
    collector.reject_events(lambda event: event["type"] == "ActivityEvent")
    response = http.post(collector.url, json=envelope(window(run, 0), poison))
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["path"] == "$.data[1]"
    assert poison["id"] in error["message"]
    assert collector.events == []
    assert http.post(collector.url, json=envelope(window(run, 0))).status_code == 200
    collector.clear_faults()
    assert http.post(collector.url, json=envelope(poison)).status_code == 200
    assert len(collector.events) == 2


def test_go_down_refuses_connections_then_come_back_reuses_the_port(
    collector: LocalCollector, http: requests.Session
) -> None:
    """go_down drops connections and refuses new ones; come_back listens on the same port."""
    body = envelope(window(new_run()))
    assert http.post(collector.url, json=body).ok
    port, url = collector.port, collector.url
    collector.go_down()
    assert not collector.is_up
    with pytest.raises(requests.ConnectionError):
        http.post(url, json=body, timeout=2)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    collector.come_back()
    assert collector.port == port
    assert collector.url == url
    assert http.post(url, json=body).status_code == 200
    assert collector.duplicates == 1


def test_fail_rate_fails_at_the_given_probability(
    collector: LocalCollector, http: requests.Session
) -> None:
    """fail_rate(1) fails every request with the given statuses; a seeded rate is reproducible."""
    body = envelope(window(new_run()))
    collector.fail_rate(1.0, statuses=(502,))
    assert {http.post(collector.url, json=body).status_code for _ in range(5)} == {502}
    outcomes = []
    for _ in range(2):
        collector.fail_rate(0.5, seed=7)
        outcomes.append([http.post(collector.url, json=body).status_code for _ in range(20)])
    assert outcomes[0] == outcomes[1]
    assert set(outcomes[0]) <= {200, 500, 503}
    assert 200 in outcomes[0]
    assert set(outcomes[0]) != {200}
    collector.fail_rate(0)
    assert http.post(collector.url, json=body).status_code == 200


def test_fault_arguments_are_validated(collector: LocalCollector) -> None:
    """Out-of-range fault arguments raise ValueError naming the argument."""
    with pytest.raises(ValueError, match="status"):
        collector.fail_next(99)
    with pytest.raises(ValueError, match="times"):
        collector.drop_next(times=0)
    with pytest.raises(ValueError, match="seconds"):
        collector.delay_next(-1)
    with pytest.raises(ValueError, match="rate"):
        collector.fail_rate(1.5)
    with pytest.raises(ValueError, match="retry_after"):
        collector.fail_next(503, retry_after="1\r\nX-Evil: yes")


def test_constructor_arguments_are_validated() -> None:
    """Bad constructor arguments raise ValueError or TypeError naming the argument."""
    with pytest.raises(ValueError, match="path"):
        LocalCollector(path="caliper")
    with pytest.raises(ValueError, match="port"):
        LocalCollector(port=70000)
    with pytest.raises(ValueError, match="max_body_bytes"):
        LocalCollector(max_body_bytes=0)
    with pytest.raises(ValueError, match="token_ttl"):
        LocalCollector(token_ttl=0)
    with pytest.raises(RuntimeError, match="not started"):
        _ = LocalCollector().url


# ---------------------------------------------------------------------- OAuth2


def token_request(
    collector: LocalCollector,
    http: requests.Session,
    secret: str = "app-secret",
    grant: str = "client_credentials",
) -> requests.Response:
    """Ask the collector's token endpoint for a token with HTTP Basic credentials."""
    return http.post(
        collector.token_url, auth=("app-id", secret), data={"grant_type": grant}, timeout=5
    )


@pytest.fixture
def oauth_collector() -> Iterator[LocalCollector]:
    """A collector with one OAuth2 client and a short token lifetime."""
    with LocalCollector(clients={"app-id": "app-secret"}, token_ttl=0.3) as running:
        yield running


def test_token_endpoint_issues_tokens_valid_on_the_events_endpoint(
    oauth_collector: LocalCollector, http: requests.Session
) -> None:
    """Client credentials get a bearer token that the events endpoint accepts."""
    response = token_request(oauth_collector, http)
    assert response.status_code == 200
    grant = response.json()
    assert grant["token_type"] == "Bearer"
    assert grant["expires_in"] == pytest.approx(0.3)
    assert response.headers["Cache-Control"] == "no-store"
    body = envelope(window(new_run()))
    assert http.post(oauth_collector.url, json=body).status_code == 401
    headers = {"Authorization": f"Bearer {grant['access_token']}"}
    assert http.post(oauth_collector.url, json=body, headers=headers).status_code == 200
    assert oauth_collector.token_requests == 1
    assert grant["access_token"] not in repr(oauth_collector)
    assert "app-secret" not in repr(oauth_collector)


def test_token_endpoint_accepts_client_secret_post(
    oauth_collector: LocalCollector, http: requests.Session
) -> None:
    """Credentials in the form body (client_secret_post) work like HTTP Basic."""
    form = {
        "grant_type": "client_credentials",
        "client_id": "app-id",
        "client_secret": "app-secret",
    }
    assert http.post(oauth_collector.token_url, data=form).status_code == 200


def test_token_endpoint_rejects_bad_secret_and_wrong_grant(
    oauth_collector: LocalCollector, http: requests.Session
) -> None:
    """A wrong secret gets 401 invalid_client; a wrong grant type gets 400."""
    bad_secret = token_request(oauth_collector, http, secret="wrong")
    assert bad_secret.status_code == 401
    assert bad_secret.json() == {"error": "invalid_client"}
    wrong_grant = token_request(oauth_collector, http, grant="password")
    assert wrong_grant.status_code == 400
    assert wrong_grant.json() == {"error": "unsupported_grant_type"}
    unknown = base64.b64encode(b"someone:app-secret").decode()
    response = http.post(
        oauth_collector.token_url,
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {unknown}"},
    )
    assert response.status_code == 401
    assert oauth_collector.token_requests == 3


def test_revoked_and_expired_tokens_are_refused(
    oauth_collector: LocalCollector, http: requests.Session
) -> None:
    """revoke_tokens() and the passing of token_ttl make issued tokens answer 401."""
    body = envelope(window(new_run()))

    def post_with_new_token() -> tuple[str, int]:
        token = token_request(oauth_collector, http).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        return token, http.post(oauth_collector.url, json=body, headers=auth).status_code

    token, status = post_with_new_token()
    assert status == 200
    oauth_collector.revoke_tokens()
    auth = {"Authorization": f"Bearer {token}"}
    assert http.post(oauth_collector.url, json=body, headers=auth).status_code == 401

    token, status = post_with_new_token()
    assert status == 200
    time.sleep(0.35)  # past the fixture's token_ttl of 0.3 s (real time)
    auth = {"Authorization": f"Bearer {token}"}
    expired = http.post(oauth_collector.url, json=body, headers=auth)
    assert expired.status_code == 401
    assert expired.json()["status"] == "error"


def test_fail_token_next_fails_token_requests(
    oauth_collector: LocalCollector, http: requests.Session
) -> None:
    """fail_token_next answers the scripted status, then tokens are issued again."""
    oauth_collector.fail_token_next(503, times=2)
    statuses = [token_request(oauth_collector, http).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert oauth_collector.token_requests == 3


def test_fixed_token_and_oauth_clients_work_together(http: requests.Session) -> None:
    """With both a fixed token and clients, either kind of token is accepted."""
    body = envelope(window(new_run()))
    with LocalCollector(token="fixed", clients={"app-id": "app-secret"}) as collector:
        issued = token_request(collector, http).json()["access_token"]
        for token in ("fixed", issued):
            auth = {"Authorization": f"Bearer {token}"}
            assert http.post(collector.url, json=body, headers=auth).status_code == 200


# ---------------------------------------------------------------------- keep-alive and speed


def test_keep_alive_reuses_one_connection_without_nagle_stalls(
    collector: LocalCollector, http: requests.Session
) -> None:
    """Twenty requests on one session share one connection and take well under 0.8 s."""
    body = envelope(window(new_run()))
    assert http.post(collector.url, json=body).ok  # connect outside the timing
    started = time.perf_counter()
    for _ in range(20):
        assert http.post(collector.url, json=body).status_code == 200
    elapsed = time.perf_counter() - started
    assert elapsed < 0.8, f"20 loopback round trips took {elapsed:.3f} s"
    assert len({record.connection for record in collector.requests}) == 1
    assert collector.duplicates == 20


def test_concurrent_clients_are_all_recorded(collector: LocalCollector) -> None:
    """Envelopes posted from several threads at once are all recorded exactly once."""
    runs = [new_run() for _ in range(6)]

    def send(run: str) -> None:
        with requests.Session() as session:
            for index in range(10):
                body = envelope(window(run, index))
                assert session.post(collector.url, json=body, timeout=5).status_code == 200

    threads = [threading.Thread(target=send, args=(run,)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(collector.events) == 60
    assert sorted(collector.run_ids()) == sorted(runs)
    assert collector.duplicates == 0


# ---------------------------------------------------------------------- helpers and waiting


def test_run_helpers_filter_and_sum_by_run(
    collector: LocalCollector, http: requests.Session
) -> None:
    """time_spent_events, completions, run_ids and totals select by extensions.runId."""
    run_a, run_b = new_run(), new_run()
    body = envelope(
        window(run_a, 0, active=10.5, inactive=4.5),
        window(run_b, 0, active=1, inactive=14),
        window(run_a, 1, active=12.25, inactive=2.75),
        completion(run_a, xp=1),
    )
    assert http.post(collector.url, json=body).ok
    assert collector.run_ids() == [run_a, run_b]
    assert len(collector.time_spent_events()) == 3
    assert len(collector.time_spent_events(run_a)) == 2
    assert [event["type"] for event in collector.completions()] == ["ActivityEvent"]
    assert collector.completions(run_b) == []
    assert collector.totals(run_a) == (22.75, 7.25)
    assert collector.totals(run_b) == (1, 14)
    assert collector.totals(new_run()) == (0, 0)


def test_reset_forgets_recordings(collector: LocalCollector, http: requests.Session) -> None:
    """reset() empties envelopes, events, duplicates and the request log."""
    body = envelope(window(new_run()))
    for _ in range(2):
        assert http.post(collector.url, json=body).ok
    collector.reset()
    assert (collector.envelopes, collector.events, collector.requests) == ([], [], [])
    assert collector.duplicates == 0
    assert http.post(collector.url, json=body).ok
    assert collector.duplicates == 0
    assert len(collector.events) == 1


def test_wait_for_count_wakes_when_events_arrive(collector: LocalCollector) -> None:
    """wait_for(n) returns True as soon as n distinct events have arrived."""
    run = new_run()

    def send_later() -> None:
        time.sleep(0.05)  # so that wait_for is already waiting when they arrive
        with requests.Session() as session:
            for index in range(3):
                session.post(collector.url, json=envelope(window(run, index)), timeout=5)

    sender = threading.Thread(target=send_later)
    started = time.monotonic()
    sender.start()
    assert collector.wait_for(3, timeout=5)
    assert time.monotonic() - started < 2
    sender.join(5)
    assert len(collector.events) == 3


def test_wait_for_predicate_and_timeout(collector: LocalCollector, http: requests.Session) -> None:
    """wait_for(predicate) sees the collector; an unmet condition returns False at the timeout."""
    collector.fail_next(503)
    body = envelope(window(new_run()))
    sender = threading.Timer(0.05, lambda: http.post(collector.url, json=body, timeout=5))
    sender.start()
    assert collector.wait_for(lambda c: len(c.requests) >= 1, timeout=5)
    sender.join(5)
    assert collector.requests[0].status == 503
    started = time.monotonic()
    assert collector.wait_for(1, timeout=0.1) is False
    assert collector.wait_for(lambda c: c.duplicates > 0, timeout=0.05) is False
    assert 0.1 <= time.monotonic() - started < 1.0


# ---------------------------------------------------------------------- lifecycle


def test_stop_returns_promptly_with_keep_alive_connections_open(http: requests.Session) -> None:
    """stop() closes idle keep-alive connections and returns at once."""
    collector = LocalCollector().start()
    assert http.post(collector.url, json=envelope(window(new_run()))).ok
    idle = socket.create_connection(("127.0.0.1", collector.port), timeout=2)
    try:
        idle.sendall(b"GET /nothing-here HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert idle.recv(4096).startswith(b"HTTP/1.1 404 ")  # served, and kept alive
        started = time.monotonic()
        collector.stop()
        assert time.monotonic() - started < 1.0
        assert idle.recv(1) == b""  # the server closed its end
    finally:
        idle.close()
    assert not collector.is_up
    leftover = [t.name for t in threading.enumerate() if t.name.startswith("timeback-collector")]
    assert leftover == []
    with pytest.raises(requests.ConnectionError):
        http.post(collector.url, json=envelope(window(new_run())), timeout=2)
    assert "stopped" in repr(collector)


def test_stop_abandons_a_delayed_request(http: requests.Session) -> None:
    """stop() interrupts delay_next: the client gets a connection error, nothing is recorded."""
    collector = LocalCollector().start()
    collector.delay_next(30)
    errors: list[BaseException] = []

    def post() -> None:
        try:
            http.post(collector.url, json=envelope(window(new_run())), timeout=5)
        except requests.RequestException as exc:
            errors.append(exc)

    client = threading.Thread(target=post)
    client.start()
    assert collector.wait_for(lambda c: c.pending_faults == 0, timeout=5)
    started = time.monotonic()
    collector.stop()
    assert time.monotonic() - started < 1.0
    client.join(5)
    assert len(errors) == 1
    assert isinstance(errors[0], requests.ConnectionError)
    assert collector.events == []


def test_collector_restarts_on_the_same_port(http: requests.Session) -> None:
    """start() after stop() listens again on the same port, keeping the recordings."""
    collector = LocalCollector()
    with collector:
        url = collector.url
        assert http.post(url, json=envelope(window(new_run()))).ok
    with collector:
        assert collector.url == url
        assert http.post(url, json=envelope(window(new_run()))).ok
    assert len(collector.events) == 2


def test_go_down_requires_a_started_collector() -> None:
    """go_down and come_back on a collector that is not started raise RuntimeError."""
    collector = LocalCollector()
    with pytest.raises(RuntimeError):
        collector.go_down()
    with pytest.raises(RuntimeError):
        collector.come_back()


def test_repr_shows_counts_only(http: requests.Session) -> None:
    """repr() shows the state and counts, never tokens, emails or event contents."""
    run = new_run()
    with LocalCollector(token="hidden-token") as collector:
        auth = {"Authorization": "Bearer hidden-token"}
        assert http.post(collector.url, json=envelope(window(run)), headers=auth).ok
        text = repr(collector)
    assert "envelopes=1" in text
    assert "events=1" in text
    for secret in ("hidden-token", USER.email, run):
        assert secret not in text


def test_urllib_sees_http_errors_with_json_bodies(collector: LocalCollector) -> None:
    """Error answers carry Content-Length and a JSON body a urllib client can read."""
    collector.fail_next(503, retry_after=1)
    body = json.dumps(envelope(window(new_run()))).encode()
    request = urllib.request.Request(
        collector.url, data=body, headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    error = caught.value
    assert error.code == 503
    assert error.headers["Retry-After"] == "1"
    assert json.loads(error.read())["status"] == "error"
    error.close()
