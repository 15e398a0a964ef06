"""Take a screenshot of the collector's live page, with runs in every state.

Plays three short sessions against a LocalCollector — one ended early, one
completed after answering, a pause and an inactive cutoff, one still running —
posts one invalid envelope, opens the page in headless Chromium (through
Selenium, from the dev extra), pins one window's event and saves a PNG::

    .venv/bin/python demo/page_screenshot.py docs/collector-page.png

Needs ``chromium`` and ``chromedriver`` on PATH (Debian: ``apt-get install
chromium chromium-driver``). Takes about 15 seconds.
"""

from __future__ import annotations

import argparse
import base64
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import requests

import timeback_tracker as tt
from timeback_tracker.testing import LocalCollector

USER = tt.TimebackUser(
    id="https://sis.example.com/ims/oneroster/rostering/v1p2/users/student-123",
    email="student@example.com",
)
ACTIVITY = tt.TimebackActivityContext(
    id="https://myapp.example.com/activities/Math/g3/multiplication",
    subject=tt.Subject.MATH,
    app=tt.App(name="Times Tables"),
    activity=tt.Activity(name="Lesson 4: the 7 times table"),
)
READING = tt.TimebackActivityContext(
    id="https://myapp.example.com/activities/Reading/g3/story-2",
    subject=tt.Subject.READING,
    app=tt.App(name="Story Time"),
)
SENSOR = "https://myapp.example.com/sensors/screenshot"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def play(collector: LocalCollector, tracker: tt.Tracker) -> str:
    """Play the sessions; return the run id of the completed one."""
    reading = tracker.start_session(USER, READING)
    time.sleep(1.3)
    reading.end()  # the student closed the app: a short last window, no completion
    math = tracker.start_session(USER, ACTIVITY, course_id="MATH-3")
    time.sleep(2.6)
    math.pause()  # the window lost focus...
    time.sleep(2.7)  # ...past the inactive cutoff: no windows for the rest of it
    math.resume()
    time.sleep(1.6)
    math.complete(4, total_questions=10, correct_questions=8, mastered_units=1, pct_complete=40)
    running = tracker.start_session(USER, ACTIVITY, course_id="MATH-3")
    time.sleep(1.7)
    running.touch()
    tracker.flush(5.0)
    invalid = tt.dump(
        tt.ActivityCompletedEvent.for_completion(
            user=USER,
            activity=ACTIVITY,
            run_id=running.run_id,
            event_time=tt.load(collector.events[-1], tt.TimeSpentEvent).event_time,
            xp_earned=1,
        )
    )
    invalid["actor"]["email"] = "student-at-example.com"
    invalid["generated"]["items"].append({"type": "correctQuestions", "value": 3})
    body = {
        "sensor": SENSOR,
        "sendTime": invalid["eventTime"],
        "dataVersion": invalid["@context"],
        "data": [invalid],
    }
    requests.post(collector.url, json=body, timeout=5)
    return math.run_id


def main() -> int:
    """Write the screenshot; 0 on success, 2 when no browser is available."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="the PNG file to write")
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args()
    # The sessions are accelerated: 4 XP in a few seconds would be warned about.
    logging.getLogger("timeback_tracker").addHandler(logging.NullHandler())
    binary, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver_path is None:
        print("page_screenshot: needs chromium and chromedriver on PATH", file=sys.stderr)
        return 2
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with LocalCollector() as collector, tempfile.TemporaryDirectory() as profile:
        config = tt.TrackerConfig(
            sensor=SENSOR,
            endpoint=collector.url,
            spool_path=None,  # nothing of this demo is kept
            heartbeat_interval=0.5,
            inactive_cutoff=1.0,
        )
        tracker = tt.Tracker(config)
        completed = play(collector, tracker)
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        options.add_argument(f"--window-size={args.width},900")
        service = webdriver.ChromeService(executable_path=driver_path)
        driver = webdriver.Chrome(options=options, service=service)
        try:
            driver.get(collector.page_url)
            wait = WebDriverWait(driver, 10)
            card = f'.run[data-run-id="{completed}"]'
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"{card} .completion"))
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".state.ended"))
            windows = driver.find_elements(By.CSS_SELECTOR, f"{card} .win")
            windows[len(windows) // 3].click()  # pin a window's event below the timeline
            time.sleep(0.3)
            # The whole page, not only the window: Chromium's own capture, beyond the viewport.
            shot = driver.execute_cdp_cmd(
                "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
            )
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_bytes(base64.b64decode(shot["data"]))
        finally:
            driver.quit()
            tracker.close()
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
