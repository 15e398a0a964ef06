"""The collector's live page: its JSON API over loopback HTTP, and the page in a real browser.

The browser tests drive Debian's Chromium headless through Selenium (the dev
extra installs Selenium; ``.ci/run`` installs ``chromium chromium-driver``
when it can) and skip with the reason when either is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import requests

import timeback_tracker as tt
from tests.support import envelope as support_envelope
from tests.support import new_run, wire_completion, wire_window
from timeback_tracker._collector_runs import RunBook
from timeback_tracker._serialization import parse_timestamp
from timeback_tracker.testing import LocalCollector

EMAIL = "page.student@example.com"
NAME = "Page Student"
USER = tt.TimebackUser(id="https://sis.example.com/users/page-student-7", email=EMAIL, name=NAME)
ACTIVITY = tt.TimebackActivityContext(
    id="https://myapp.example.com/activities/Math/g3/lesson-4",
    subject=tt.Subject.MATH,
    app=tt.App(name="Page Test App"),
)
SENSOR = "https://myapp.example.com/sensors/page-test"
START = datetime(2026, 1, 27, 10, 0, 0, tzinfo=timezone.utc)
T0 = START.timestamp()  # the same instant, as the RunBook's epoch seconds
TIMEOUT = 15.0
# Headless Chromium that never reaches out: without the networking flags it tries to
# contact Google's services, which a closed network refuses (slowly).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
)


# ---------------------------------------------------------------------- helpers


def window(run_id: str, index: int, at: float, active: float, inactive: float) -> dict[str, Any]:
    """Window ``index`` of ``run_id``: starts ``at`` seconds after START."""
    return wire_window(run_id, index, active, inactive, at=at, user=USER, activity=ACTIVITY)


def completion(run_id: str, at: float, xp: float = 2) -> dict[str, Any]:
    """The completion of ``run_id``, ``at`` seconds after START."""
    return wire_completion(
        run_id,
        xp,
        at=at,
        user=USER,
        activity=ACTIVITY,
        correct_questions=7,
        mastered_units=1,
        pct_complete=40,
    )


def envelope(*events: dict[str, Any]) -> dict[str, Any]:
    """A Caliper envelope holding ``events``."""
    return support_envelope(*events, sensor=SENSOR)


def fed(*events: tuple[dict[str, Any], float], show_pii: bool = False) -> RunBook:
    """A RunBook fed ``(event, seconds after START it was received)`` pairs, as new events."""
    book = RunBook(show_pii=show_pii)
    for event, received in events:
        book.add(event, "new", T0 + received)
    return book


def states(book: RunBook, now: float) -> dict[str, str]:
    """Each run's state ``now`` seconds after START."""
    return {run["runId"]: run["state"] for run in book.overview(T0 + now)["runs"]}


def api(collector: LocalCollector, path: str, **headers: str) -> requests.Response:
    """GET a page route of the collector."""
    return requests.get(collector.base_url + path, headers=headers, timeout=TIMEOUT)


# ---------------------------------------------------------------------- run states


def test_a_run_is_running_while_windows_keep_coming() -> None:
    """Within two windows (+5 s) of its last event, plus the 3.5 windows a spooling app
    holds them back, a run is running; then ended or stale."""
    run = new_run()
    book = fed((window(run, 0, 0, 10, 5), 15.2), (window(run, 1, 15, 15, 0), 30.2))
    assert states(book, now=30.5) == {run: "running"}
    assert states(book, now=30.2 + 3.5 * 15 + 2 * 15 + 5) == {run: "running"}
    assert states(book, now=30.2 + 3.5 * 15 + 2 * 15 + 5.5) == {run: "stale"}


def test_a_run_whose_last_window_was_cut_short_has_ended() -> None:
    """Silent after a short last window (end(), app closed): ended, not stale."""
    run = new_run()
    book = fed(
        (window(run, 0, 0, 15, 0), 15.1),
        (window(run, 1, 15, 15, 0), 30.1),
        (window(run, 2, 30, 3, 1), 34.1),
    )
    overview = book.overview(T0 + 200)
    [summary] = overview["runs"]
    assert summary["state"] == "ended"
    assert "cut short" in summary["stateReason"]
    assert summary["usualWindowSeconds"] == 15


def test_a_completed_run_is_completed_whatever_the_time() -> None:
    """The completion's arrival decides, even long after."""
    run = new_run()
    book = fed((window(run, 0, 0, 12, 3), 15.1), (completion(run, 15), 15.2))
    assert states(book, now=16) == {run: "completed"}
    assert states(book, now=86400) == {run: "completed"}


def test_one_window_runs_borrow_the_usual_window_from_other_runs() -> None:
    """A run with one short window is judged against the other runs' window length."""
    long_run, short_run = new_run(), new_run()
    book = fed(
        (window(long_run, 0, 0, 15, 0), 15),
        (window(long_run, 1, 15, 15, 0), 30),
        (window(short_run, 0, 0, 2, 0), 2),
    )
    assert states(book, now=200) == {long_run: "stale", short_run: "ended"}


def test_runs_are_listed_newest_first_with_their_figures() -> None:
    """The overview lists runs by first arrival, newest first, with totals and metrics."""
    older, newer = new_run(), new_run()
    book = fed(
        (window(older, 0, 0, 10, 5), 15),
        (window(newer, 0, 0, 4, 1), 20),
        (completion(older, 15), 21),
    )
    overview = book.overview(T0 + 22)
    assert [run["runId"] for run in overview["runs"]] == [newer, older]
    summary = overview["runs"][1]
    assert summary["activeSeconds"] == 10
    assert summary["inactiveSeconds"] == 5
    assert summary["windows"] == 1
    assert (summary["xpEarned"], summary["correctQuestions"], summary["totalQuestions"]) == (
        2,
        7,
        10,
    )
    assert (summary["masteredUnits"], summary["pctComplete"]) == (1, 40)
    assert summary["activity"]["app"] == "Page Test App"
    assert summary["student"] == {"id": USER.id}
    assert overview["events"] == 3


# ---------------------------------------------------------------------- the timeline


def test_timeline_places_windows_gaps_and_the_completion_on_one_axis() -> None:
    """Offsets and lengths in seconds from the run's start; a gap between windows is listed."""
    run = new_run()
    book = fed(
        (window(run, 0, 0, 10, 5), 15),
        (window(run, 1, 15, 3, 12), 30),
        (window(run, 2, 700, 6, 0), 706),  # after an inactive cutoff: 655 s not reported
        (completion(run, 706), 706.1),
    )
    timeline = book.detail(run, T0 + 707)["timeline"]  # type: ignore[index]
    assert timeline["seconds"] == 706
    assert [
        (w["offset"], w["seconds"], w["active"], w["inactive"]) for w in timeline["windows"]
    ] == [
        (0, 15, 10, 5),
        (15, 15, 3, 12),
        (700, 6, 6, 0),
    ]
    assert timeline["gaps"] == [
        {
            "start": "2026-01-27T10:00:30.000Z",
            "end": "2026-01-27T10:11:40.000Z",
            "offset": 30,
            "seconds": 670,
        }
    ]
    [done] = timeline["completions"]
    assert done["offset"] == 706
    assert not any(w["overlaps"] or w["conflict"] for w in timeline["windows"])


def test_resends_conflicts_and_overlaps_are_flagged() -> None:
    """A re-send is counted; a re-send with other content and overlapping windows are flagged."""
    run = new_run()
    first = window(run, 0, 0, 10, 5)
    changed = {**first, "eventTime": "2026-01-27T10:00:14.000Z"}
    book = RunBook()
    book.add(first, "new", T0 + 15)
    book.add(first, "duplicate", T0 + 16)
    book.add(changed, "conflict", T0 + 17)
    book.add(window(run, 1, 10, 5, 0), "new", T0 + 18)  # starts before window 0 ended
    detail = book.detail(run, T0 + 19)
    assert detail is not None
    windows = detail["timeline"]["windows"]
    assert (windows[0]["resends"], windows[0]["conflict"]) == (2, True)
    assert [w["overlaps"] for w in windows] == [True, True]
    assert (detail["duplicates"], detail["conflicts"]) == (2, 1)
    assert detail["conflictingCopies"][first["id"]][0]["eventTime"] == "2026-01-27T10:00:14.000Z"


def test_emails_and_names_are_hidden_unless_show_pii() -> None:
    """Event JSON in the API hides the actor's email and name; show_pii shows them."""
    run = new_run()
    event = window(run, 0, 0, 10, 5)
    hidden = json.dumps(fed((event, 15)).detail(run, T0 + 16))
    assert EMAIL not in hidden
    assert NAME not in hidden
    assert '"email": "(hidden)"' in hidden
    shown = fed((event, 15), show_pii=True).detail(run, T0 + 16)
    assert shown is not None
    assert shown["student"] == {"id": USER.id, "email": EMAIL, "name": NAME}
    assert shown["events"][event["id"]]["actor"]["email"] == EMAIL


# ---------------------------------------------------------------------- over HTTP


def test_api_runs_and_run_detail_over_http(collector: LocalCollector) -> None:
    """/api/runs lists what arrived; /api/runs/<id> has the timeline and the events."""
    run = new_run()
    events = [window(run, 0, 0, 10, 5), window(run, 1, 15, 15, 0), completion(run, 30)]
    assert requests.post(collector.url, json=envelope(*events), timeout=TIMEOUT).status_code == 200
    overview = api(collector, "/api/runs").json()
    assert overview["eventsPath"] == "/caliper/event"
    assert [r["runId"] for r in overview["runs"]] == [run]
    assert overview["runs"][0]["state"] == "completed"
    detail = api(collector, f"/api/runs/{run}").json()
    assert [w["id"] for w in detail["timeline"]["windows"]] == [e["id"] for e in events[:2]]
    assert set(detail["events"]) == {event["id"] for event in events}
    assert EMAIL not in json.dumps(overview) + json.dumps(detail)
    assert api(collector, f"/api/runs/{new_run()}").status_code == 404
    assert collector.page_url == collector.base_url + "/"
    # The page's own traffic is no client behaviour: the request log holds the POST only.
    assert [(r.method, r.path) for r in collector.requests] == [("POST", "/caliper/event")]


def test_rejected_envelopes_are_listed_with_paths_and_a_masked_body(
    collector: LocalCollector,
) -> None:
    """An invalid envelope is listed with each JSON path and rule; its body hides emails."""
    bad = window(new_run(), 0, 0, 10, 5)
    bad["generated"]["items"][0]["value"] = -1
    del bad["object"]["subject"]
    response = requests.post(collector.url, json=envelope(bad), timeout=TIMEOUT)
    assert response.status_code == 400
    collector.fail_next(503)
    requests.post(collector.url, json=envelope(window(new_run(), 0, 0, 1, 0)), timeout=TIMEOUT)
    overview = api(collector, "/api/runs").json()
    assert overview["runs"] == []
    failed, invalid = overview["rejections"]
    assert (failed["status"], failed["problems"], failed["hasBody"]) == (503, [], False)
    assert invalid["status"] == 400
    assert invalid["problems"] == [
        {"path": "$.data[0].object.subject", "rule": "is required"},
        {"path": "$.data[0].generated.items[0].value", "rule": "must be between 0 and 86400"},
    ]
    assert invalid["eventIds"] == [bad["id"]]
    full = api(collector, f"/api/rejections/{invalid['number']}").json()
    assert full["body"]["data"][0]["actor"]["email"] == "(hidden)"
    assert full["body"]["data"][0]["generated"]["items"][0]["value"] == -1
    assert EMAIL not in json.dumps(full)


def test_the_page_answers_loopback_host_names_only(collector: LocalCollector) -> None:
    """A Host header naming another site is refused (DNS rebinding); loopback names work."""
    port = collector.port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
        assert api(collector, "/api/runs", Host=host).status_code == 200, host
    for host in ("evil.example.com", f"evil.example.com:{port}", f"127.0.0.1:{port + 1}"):
        assert api(collector, "/api/runs", Host=host).status_code == 403, host
        assert api(collector, "/", Host=host).status_code == 403, host
    # The events endpoint is not the page's: clients may name the host as they like.
    response = requests.post(
        collector.url,
        json=envelope(window(new_run(), 0, 0, 1, 0)),
        headers={"Host": "caliper.example.com"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200


def test_page_files_are_served_with_a_strict_policy(collector: LocalCollector) -> None:
    """The page, its CSS and script come from the package, uncached, scripts from self only."""
    for path, kind in (("/", "text/html"), ("/page.css", "text/css"), ("/page.js", "javascript")):
        response = api(collector, path)
        assert response.status_code == 200
        assert kind in response.headers["Content-Type"]
        assert response.headers["Cache-Control"] == "no-store"
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    page = api(collector, "/").text
    assert "http://" not in page.replace("http://www.w3.org", "")  # nothing from elsewhere
    assert requests.post(collector.base_url + "/", timeout=TIMEOUT).status_code == 405


def test_reset_forgets_the_pages_runs_and_rejections(collector: LocalCollector) -> None:
    """LocalCollector.reset() empties the page too."""
    requests.post(collector.url, json=envelope(window(new_run(), 0, 0, 1, 0)), timeout=TIMEOUT)
    requests.post(collector.url, json={"data": []}, timeout=TIMEOUT)
    overview = api(collector, "/api/runs").json()
    assert (len(overview["runs"]), len(overview["rejections"])) == (1, 1)
    collector.reset()
    overview = api(collector, "/api/runs").json()
    assert (overview["runs"], overview["rejections"], overview["events"]) == ([], [], 0)


# ---------------------------------------------------------------------- in a real browser


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium driven by Selenium; skips with the reason when either is missing."""
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (the dev extra installs it)"
    )
    binary = next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
    )
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.skip(
            "no Chromium and chromedriver on PATH (.ci/run installs Debian's "
            "chromium and chromium-driver when it runs as root with apt-get)"
        )
    from selenium.common.exceptions import WebDriverException

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    # An explicit driver: Selenium Manager (which would download one) never runs.
    service = webdriver.ChromeService(executable_path=driver_path)
    try:
        driver = webdriver.Chrome(options=options, service=service)
    except WebDriverException as exc:
        pytest.skip(f"Chromium is installed but does not start here: {exc.msg}")
    driver.set_page_load_timeout(TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(browser: Any, script: str, *args: Any, timeout: float = TIMEOUT) -> Any:
    """Poll a JavaScript expression in the page until it returns something truthy."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, poll_frequency=0.05).until(
        lambda driver: driver.execute_script(script, *args)
    )


def rect(browser: Any, element: Any) -> dict[str, float]:
    """The element's bounding box in CSS pixels, with fractions (Selenium rounds its own)."""
    box: dict[str, float] = browser.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return {left: r.left, right: r.right, width: r.width};",
        element,
    )
    return box


def epoch(text: str) -> float:
    """A wire timestamp as epoch seconds."""
    return parse_timestamp(text).timestamp()


def test_timeline_shows_a_real_runs_windows_to_scale_with_the_completion(
    browser: Any, collector: LocalCollector
) -> None:
    """A session's windows appear live, at the proportions of their times, then the completion."""
    from selenium.webdriver.common.by import By

    browser.get(collector.page_url)
    browser.execute_script("window.notReloaded = true;")
    config = tt.TrackerConfig(
        sensor=SENSOR, endpoint=collector.url, spool_path=None, heartbeat_interval=0.1
    )
    with tt.Tracker(config) as tracker:
        session = tracker.start_session(USER, ACTIVITY, course_id="PAGE-1")
        selector = f'.run[data-run-id="{session.run_id}"]'
        wait_until(browser, "return document.querySelector(arguments[0] + ' .win')", selector)
        time.sleep(0.45)  # runs: the page draws windows of 0.1 s
        session.pause()
        time.sleep(0.35)  # paused for a while
        session.resume()
        time.sleep(0.3)  # runs again
        session.complete(1, total_questions=4, correct_questions=3)
        assert tracker.flush(5.0)
    windows = sorted(collector.time_spent_events(session.run_id), key=lambda e: e["eventTime"])
    [done] = collector.completions(session.run_id)
    wait_until(
        browser,
        "return document.querySelectorAll(arguments[0] + ' .win').length === arguments[1]"
        " && document.querySelector(arguments[0] + ' .completion')",
        selector,
        len(windows),
    )
    assert browser.execute_script("return window.notReloaded") is True  # updated live
    card = browser.find_element(By.CSS_SELECTOR, selector)
    assert card.find_element(By.CSS_SELECTOR, ".state").text.lower() == "completed"

    bars = {
        bar.get_attribute("data-event-id"): bar
        for bar in card.find_elements(By.CSS_SELECTOR, ".win")
    }
    assert list(bars) == [event["id"] for event in windows]
    spans = [
        (
            epoch(e["generated"]["items"][0]["startDate"]),
            epoch(e["generated"]["items"][0]["endDate"]),
        )
        for e in windows
    ]
    first, last = rect(browser, bars[windows[0]["id"]]), rect(browser, bars[windows[-1]["id"]])
    origin = spans[0][0]
    per_second = (last["right"] - first["left"]) / (spans[-1][1] - origin)
    assert per_second * (spans[-1][1] - origin) > 900  # the bar spans most of the page
    paused = 0
    for event, (start, end) in zip(windows, spans, strict=True):
        box = rect(browser, bars[event["id"]])
        assert box["left"] - first["left"] == pytest.approx((start - origin) * per_second, abs=1.5)
        assert box["width"] == pytest.approx((end - start) * per_second, abs=1.5)
        values = {item["type"]: item["value"] for item in event["generated"]["items"]}
        for kind in ("active", "inactive"):
            parts = bars[event["id"]].find_elements(By.CSS_SELECTOR, f".part.{kind}")
            width = rect(browser, parts[0])["width"] if parts else 0.0
            assert width == pytest.approx(values[kind] * per_second, abs=1.5), (kind, event["id"])
        paused += values["inactive"] > values["active"]
    assert paused >= 2  # the pause shows as mostly-inactive windows
    marker = rect(browser, card.find_element(By.CSS_SELECTOR, ".completion"))
    at = first["left"] + (epoch(done["eventTime"]) - origin) * per_second
    assert (marker["left"] + marker["right"]) / 2 == pytest.approx(at, abs=2.0)


def test_a_gap_is_drawn_where_nothing_was_reported(browser: Any, collector: LocalCollector) -> None:
    """Windows at 0-15 s and 15-30 s, then 700-706 s (an inactive cutoff): the gap between
    them is drawn at 30 s, 670 s long, on the same scale as the windows."""
    from selenium.webdriver.common.by import By

    run = new_run()
    events = [window(run, 0, 0, 10, 5), window(run, 1, 15, 3, 12), window(run, 2, 700, 6, 0)]
    assert requests.post(collector.url, json=envelope(*events), timeout=TIMEOUT).status_code == 200
    browser.get(collector.page_url)
    selector = f'.run[data-run-id="{run}"]'
    wait_until(browser, "return document.querySelector(arguments[0] + ' .gap')", selector)
    card = browser.find_element(By.CSS_SELECTOR, selector)
    bars = card.find_elements(By.CSS_SELECTOR, ".win")
    [gap] = card.find_elements(By.CSS_SELECTOR, ".gap")
    first, last, drawn = rect(browser, bars[0]), rect(browser, bars[-1]), rect(browser, gap)
    per_second = (last["right"] - first["left"]) / 706
    assert drawn["left"] - first["left"] == pytest.approx(30 * per_second, abs=1.5)
    assert drawn["width"] == pytest.approx(670 * per_second, abs=1.5)
    assert "gap of" in (gap.get_attribute("title") or "")


def test_hovering_a_window_shows_its_event_without_the_email(
    browser: Any, collector: LocalCollector
) -> None:
    """Hover shows the event JSON (email hidden); a click keeps it; a conflict is flagged."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    run = new_run()
    first, second = window(run, 0, 0, 10, 5), window(run, 1, 15, 2, 13)
    requests.post(collector.url, json=envelope(first, second), timeout=TIMEOUT)
    requests.post(
        collector.url,
        json=envelope({**second, "eventTime": "2026-01-27T10:00:29.000Z"}),
        timeout=TIMEOUT,
    )
    browser.get(collector.page_url)
    selector = f'.run[data-run-id="{run}"] .win[data-event-id="{second["id"]}"]'
    wait_until(browser, "return document.querySelector(arguments[0])", selector)
    bar = browser.find_element(By.CSS_SELECTOR, selector)
    assert "conflict" in bar.get_attribute("class").split()
    ActionChains(browser).move_to_element(bar).perform()
    panel = browser.find_element(By.CSS_SELECTOR, f'.run[data-run-id="{run}"] .event')
    wait_until(
        browser, "return arguments[0].textContent.includes(arguments[1])", panel, second["id"]
    )
    text = panel.text
    assert '"email": "(hidden)"' in text
    assert EMAIL not in browser.page_source
    assert "different content" in text  # the conflicting copy is shown with it
    bar.click()
    other = browser.find_element(By.CSS_SELECTOR, f'.win[data-event-id="{first["id"]}"]')
    ActionChains(browser).move_to_element(other).perform()
    assert second["id"] in panel.text  # kept: hovering elsewhere does not replace it
    flags = browser.find_element(By.CSS_SELECTOR, f'.run[data-run-id="{run}"] .flags').text
    assert "different content" in flags


def test_a_rejected_envelope_shows_its_problems_in_the_body(
    browser: Any, collector: LocalCollector
) -> None:
    """The rejection lists JSON paths and rules; the envelope shows them beside the lines."""
    from selenium.webdriver.common.by import By

    bad = window(new_run(), 0, 0, 10, 5)
    bad["generated"]["items"][1]["startdate"] = bad["generated"]["items"][1].pop("startDate")
    bad["actor"]["email"] = "no-at-sign"
    requests.post(collector.url, json=envelope(bad), timeout=TIMEOUT)
    browser.get(collector.page_url)
    wait_until(browser, "return document.querySelector('.rejection button')")
    rejection = browser.find_element(By.CSS_SELECTOR, ".rejection")
    assert "$.data[0].actor.email" in rejection.text
    rejection.find_element(By.CSS_SELECTOR, "button").click()
    wait_until(browser, "return document.querySelector('.rejection .json .bad')")
    marked = [node.text for node in rejection.find_elements(By.CSS_SELECTOR, ".json .bad")]
    assert any('"email": "(hidden)"' in line and "must be an email" in line for line in marked)
    assert "no-at-sign" not in browser.page_source


def test_event_text_is_shown_as_text_never_run_as_html(
    browser: Any, collector: LocalCollector
) -> None:
    """An app name holding HTML is displayed literally; its script never runs."""
    hostile = '<img src=x onerror="window.pwned = 1">'
    run = new_run()
    event = window(run, 0, 0, 3, 0)
    event["object"]["app"]["name"] = hostile
    requests.post(collector.url, json=envelope(event), timeout=TIMEOUT)
    browser.get(collector.page_url)
    wait_until(browser, "return document.querySelector('.run .what')")
    assert hostile in browser.execute_script(
        "return document.querySelector('.run .what').textContent"
    )
    assert browser.execute_script("return window.pwned") is None
    assert browser.execute_script("return document.querySelectorAll('main img').length") == 0


def test_the_cli_collector_page_follows_the_qt_demo_live(browser: Any) -> None:
    """The README's story, end to end: `timeback-tracker collector`, the Qt quiz against it,
    the printed page URL in a browser: the run appears, its timeline grows while the quiz
    runs, shows the minimised time as inactive, and ends completed with its marker."""

    if importlib.util.find_spec("PySide6") is None:
        pytest.skip("PySide6 not installed (make test installs the gui group)")
    root = Path(__file__).resolve().parent.parent
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TIMEBACK_", "CALIPER_"))}
    collector = subprocess.Popen(
        [sys.executable, "-m", "timeback_tracker", "collector", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean,
    )
    demo = None
    try:
        assert collector.stdout is not None
        start = collector.stdout.readline()
        endpoint = re.search(r"http://\S+/caliper/event", start)
        page = re.search(r"page (http://\S+)", start)
        assert endpoint, start
        assert page, start
        browser.get(page.group(1))
        browser.execute_script("window.notReloaded = true;")
        demo = subprocess.Popen(
            [
                sys.executable,
                str(root / "demo" / "qt_quiz.py"),
                "--auto",
                "--interval",
                "0.5",
                "--endpoint",
                endpoint.group(0),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**clean, "QT_QPA_PLATFORM": "offscreen"},
        )
        grew = wait_until(
            browser,
            "const bars = document.querySelectorAll('.run .win');"
            "return bars.length >= 2 && !document.querySelector('.run .completion') "
            "&& bars.length",
            timeout=60,
        )
        assert grew >= 2  # seen mid-run: the timeline grows live
        wait_until(browser, "return document.querySelector('.run .completion')", timeout=90)
        assert demo.wait(60) == 0, demo.stderr.read() if demo.stderr else ""
        # One script reads the card: the page re-renders it every second, so a card found
        # by one call may be gone by the next (a stale element).
        state, windows, inactive, not_reloaded = browser.execute_script(
            "const card = document.querySelector('.run');"
            "return [card.querySelector('.state').textContent,"
            " card.querySelectorAll('.win').length,"
            " card.querySelectorAll('.part.inactive').length,"
            " window.notReloaded];"
        )
        assert state.strip().lower() == "completed"
        assert windows > grew
        assert inactive  # minimised: paused
        assert not_reloaded is True
    finally:
        for process in (demo, collector):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(10)
        for stream in (collector.stdout, collector.stderr, demo and demo.stderr):
            if stream:
                stream.close()
