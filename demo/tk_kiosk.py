"""A Tkinter quiz kiosk that reports its learning time with timeback-tracker.

Five arithmetic questions. Typing and clicking count as input, the window
losing focus (or being iconified) pauses the session, answering the last
question completes it with XP and question counts, and closing the window
ends it and flushes. The wiring is two calls: ``bind_session`` and
``end_on_close``.

    python demo/tk_kiosk.py                  # events go to a built-in LocalCollector
    python demo/tk_kiosk.py --endpoint URL   # credentials from TIMEBACK_* variables
    python demo/tk_kiosk.py --auto --print-summary   # plays itself, for tests

Standard library and timeback_tracker only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tkinter as tk
from collections.abc import Callable, Iterator
from typing import Any

import timeback_tracker as tt
from timeback_tracker.integrations.tk import bind_session, end_on_close
from timeback_tracker.testing import LocalCollector

QUESTIONS = [("7 + 5", 12), ("9 x 6", 54), ("48 / 8", 6), ("15 - 7", 8), ("12 x 3", 36)]
USER = tt.TimebackUser(id="https://sis.example.com/users/kiosk-student", email="kid@example.com")
ACTIVITY = tt.TimebackActivityContext(
    id="https://kiosk.example.com/activities/Math/g3/quick-quiz",
    subject=tt.Subject.MATH,
    app=tt.App(name="Tk quiz kiosk"),
)
SENSOR = "https://kiosk.example.com/sensors/tk-kiosk"

# --auto: another app (a separate process, so a real X focus change) takes the
# focus for a while, as when a student switches windows.
FOCUS_THIEF = """
import sys, tkinter as tk
r = tk.Tk(); r.title("Another app"); r.geometry("260x80+330+40")
tk.Label(r, text="Another app has the focus").pack(expand=True)
r.after(200, r.focus_force); r.after(int(float(sys.argv[1]) * 1000), r.destroy); r.mainloop()
"""


class Quiz:
    """The quiz window: a question, an entry, an Answer button, feedback and progress."""

    def __init__(self, root: tk.Tk, session: tt.Session) -> None:
        self.root, self.session = root, session
        self.index = self.correct = 0
        root.title("Quick quiz")
        root.geometry("380x220+20+20")
        self.question = tk.Label(root, font=("Helvetica", 20))
        self.entry = tk.Entry(root, font=("Helvetica", 16), width=8, justify="center")
        self.button = tk.Button(root, text="Answer", command=self.answer)
        self.feedback = tk.Label(root, text="", fg="#555")
        self.progress = tk.Label(root, text="", font=("Courier", 10))
        for widget in (self.question, self.entry, self.button, self.feedback, self.progress):
            widget.pack(pady=4)
        self.entry.bind("<Return>", lambda _event: self.answer())
        self.show_question()
        self.refresh()

    def show_question(self) -> None:
        self.question.config(text=f"{QUESTIONS[self.index][0]} = ?")
        self.entry.delete(0, tk.END)
        self.entry.focus_set()

    def answer(self) -> None:
        if self.index >= len(QUESTIONS):
            return
        expected = QUESTIONS[self.index][1]
        right = self.entry.get().strip() == str(expected)
        self.correct += right
        self.feedback.config(text="Right!" if right else f"Not quite: it is {expected}")
        self.index += 1
        if self.index < len(QUESTIONS):
            self.show_question()
            return
        xp = round(self.session.active_seconds / 60)  # 1 XP = 1 focused minute
        self.session.complete(xp, total_questions=len(QUESTIONS), correct_questions=self.correct)
        self.question.config(text="All done!")
        self.feedback.config(text=f"{self.correct}/{len(QUESTIONS)} right, {xp} XP")
        self.entry.config(state="disabled")
        self.button.config(state="disabled")

    def refresh(self) -> None:
        s = self.session
        self.progress.config(
            text=f"question {min(self.index + 1, len(QUESTIONS))}/{len(QUESTIONS)}  "
            f"{s.state:<7}\nactive {s.active_seconds:5.1f} s  inactive {s.inactive_seconds:5.1f} s"
        )
        self.root.after(500, self.refresh)


def autopilot(quiz: Quiz, close: Callable[[], None]) -> Iterator[float]:
    """Play a student: yields the seconds to wait before the next step."""
    quiz.entry.focus_force()  # a kiosk takes the focus; under Xvfb nothing else gives it
    yield 0.5
    for number, (_, expected) in enumerate(QUESTIONS):
        reply = str(expected + 1 if number == 2 else expected)  # one mistake
        for char in reply:
            quiz.entry.event_generate("<KeyPress>", keysym=char)
            yield 0.25
        quiz.button.event_generate("<ButtonPress-1>")  # the click, as bindings see it;
        quiz.button.event_generate("<ButtonRelease-1>")  # no pointer inside under Xvfb,
        quiz.button.invoke()  # so press the button by hand
        yield 0.5
        if number == 1:
            thief = subprocess.Popen([sys.executable, "-c", FOCUS_THIEF, "1.2"])
            while thief.poll() is None:
                yield 0.1
            quiz.entry.focus_force()  # the student clicks back into the answer box
            yield 0.4
    yield 0.8
    close()


def play(root: tk.Tk, steps: Iterator[float]) -> None:
    """Run a generator of steps on Tk's event loop, one ``after`` per step."""

    def advance() -> None:
        delay = next(steps, None)
        if delay is not None:
            root.after(round(delay * 1000), advance)

    root.after(100, advance)


def summary(collector: LocalCollector | None, session: tt.Session) -> dict[str, Any]:
    """The session's totals and what the local collector received for the run."""
    report: dict[str, Any] = {
        "run_id": session.run_id,
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


def main(argv: list[str] | None = None) -> int:
    """Run the kiosk until its window closes; 0 when every event was delivered."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", help="send here (credentials from TIMEBACK_* variables)")
    parser.add_argument("--interval", type=float, default=2.0, help="heartbeat seconds")
    parser.add_argument("--auto", action="store_true", help="answer, look away, close: unattended")
    parser.add_argument("--print-summary", action="store_true", help="print one JSON line at exit")
    args = parser.parse_args(argv)

    collector = None if args.endpoint else LocalCollector().start()
    settings: dict[str, Any] = {"heartbeat_interval": args.interval, "idle_timeout": 30.0}
    if collector is None:
        sensor = os.environ.get("TIMEBACK_SENSOR") or SENSOR
        config = tt.TrackerConfig.from_env(endpoint=args.endpoint, sensor=sensor, **settings)
    else:
        config = tt.TrackerConfig(sensor=SENSOR, endpoint=collector.url, **settings)
    print(f"sending to {config.endpoint}", flush=True)

    with tt.Tracker(config) as tracker:
        session = tracker.start_session(USER, ACTIVITY, course_id="KIOSK-MATH-3")
        root = tk.Tk()
        quiz = Quiz(root, session)
        bind_session(root, session)
        close = end_on_close(root, session, tracker, flush_timeout=5.0)
        if args.auto:
            play(root, autopilot(quiz, close))
        root.mainloop()
        delivered = tracker.flush(timeout=5.0)
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


if __name__ == "__main__":
    sys.exit(main())
