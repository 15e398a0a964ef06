"""What the three quiz demos share: the questions, the student, the kiosk config, the summary.

Not a demo itself. The demos import it as ``_quiz`` (Python puts the script's
own directory first on ``sys.path``).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import timeback_tracker as tt
from timeback_tracker.integrations import DEFAULT_IDLE_TIMEOUT
from timeback_tracker.testing import LocalCollector

QUESTIONS = [("7 + 5", 12), ("9 x 6", 54), ("48 / 8", 6), ("15 - 7", 8), ("12 x 3", 36)]
WRONG_ANSWER_AT = 2  # --auto answers this question wrong
AWAY_AFTER = 1  # --auto looks away after answering this question
USER = tt.TimebackUser(id="https://sis.example.com/users/kiosk-student", email="kid@example.com")


def activity(app_name: str) -> tt.TimebackActivityContext:
    """The quiz's activity context, named after the demo's toolkit."""
    return tt.TimebackActivityContext(
        id="https://kiosk.example.com/activities/Math/g3/quick-quiz",
        subject=tt.Subject.MATH,
        app=tt.App(name=app_name),
    )


def arguments(description: str) -> argparse.Namespace:
    """The options every demo takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--endpoint", help="send here (credentials from TIMEBACK_* variables)")
    parser.add_argument("--interval", type=float, default=2.0, help="heartbeat seconds")
    parser.add_argument("--auto", action="store_true", help="answer, look away, close: unattended")
    parser.add_argument("--print-summary", action="store_true", help="print one JSON line at exit")
    return parser.parse_args()


def kiosk_config(
    args: argparse.Namespace, sensor: str
) -> tuple[tt.TrackerConfig, LocalCollector | None]:
    """The kiosk recipe: OS presence and an idle timeout, to a built-in collector unless --endpoint.

    ``presence="os"`` counts input the OS saw (in any window) and pauses while
    the screen is locked; the idle timeout makes walked-away time inactive.
    """
    settings: dict[str, Any] = {
        "heartbeat_interval": args.interval,
        "idle_timeout": DEFAULT_IDLE_TIMEOUT,
        "presence": "os",
    }
    if args.endpoint:
        sensor = os.environ.get("TIMEBACK_SENSOR") or sensor
        return tt.TrackerConfig.from_env(endpoint=args.endpoint, sensor=sensor, **settings), None
    collector = LocalCollector().start()
    return tt.TrackerConfig(sensor=sensor, endpoint=collector.url, **settings), collector


def describe(tracker: tt.Tracker) -> str:
    """One line on where events go and what OS presence sees here."""
    status = tracker.presence
    seen = "presence: app only"
    if status is not None:
        seen = (
            f"presence: idle from {status.idle_source or 'nothing here'}, "
            f"lock from {status.lock_source or 'nothing here'}"
        )
    return f"sending to {tracker.config.endpoint}; {seen}"


def summary(collector: LocalCollector | None, session: tt.Session) -> dict[str, Any]:
    """The session's totals and what the local collector received for the run."""
    report: dict[str, Any] = {
        "run_id": session.run_id,
        "state": session.state,
        "session": {"active": session.active_seconds, "inactive": session.inactive_seconds},
        "collector": None,
        "windows": None,
        "completion": None,
    }
    if collector is None:
        return report
    active, inactive = collector.totals(session.run_id)
    completions = collector.completions(session.run_id)
    report["collector"] = {
        "events": len(collector.events),
        "duplicates": collector.duplicates,
        "active": active,
        "inactive": inactive,
    }
    report["windows"] = len(collector.time_spent_events(session.run_id))
    if completions:
        metrics = {item["type"]: item["value"] for item in completions[-1]["generated"]["items"]}
        report["completion"] = {
            "xp": metrics.get("xpEarned"),
            "total_questions": metrics.get("totalQuestions"),
            "correct_questions": metrics.get("correctQuestions"),
        }
    return report


def finish(
    args: argparse.Namespace,
    tracker: tt.Tracker,
    collector: LocalCollector | None,
    session: tt.Session,
) -> int:
    """Print what was delivered (and the summary line); 0 when nothing is left undelivered."""
    tracker.close()  # returns at once when closing the window closed it already
    delivered = tracker.stats().queued == 0
    report = summary(collector, session)
    if collector is not None:
        collector.stop()
        print(
            f"the local collector received {report['windows']} windows; completion: "
            f"{report['completion']}; active {report['collector']['active']} s, "
            f"inactive {report['collector']['inactive']} s"
        )
    print(f"run {session.run_id}: all delivered: {delivered}")
    if args.print_summary:
        print(json.dumps(report), flush=True)
    return 0 if delivered else 1


def progress_text(session: tt.Session, index: int) -> str:
    """The progress line every demo shows under the question."""
    return (
        f"question {min(index + 1, len(QUESTIONS))}/{len(QUESTIONS)}  {session.state:<9}\n"
        f"active {session.active_seconds:5.1f} s  inactive {session.inactive_seconds:5.1f} s"
    )


def answer_for(number: int) -> str:
    """What --auto types for question ``number`` (one answer is wrong on purpose)."""
    expected = QUESTIONS[number][1]
    return str(expected + 1 if number == WRONG_ANSWER_AT else expected)
