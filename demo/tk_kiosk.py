"""A Tkinter quiz kiosk that reports its learning time with timeback-tracker.

Five arithmetic questions. The kiosk recipe: ``presence="os"`` (input the OS
saw anywhere counts, a locked screen pauses) and an idle timeout (walked-away
time is inactive). Typing and clicking count as input, the window losing
focus (or being iconified) pauses the session, answering the last question
completes it with XP and question counts, and closing the window ends it and
closes the tracker. The wiring is two calls: ``bind_session`` and
``end_on_close``.

    python demo/tk_kiosk.py                  # events go to a built-in LocalCollector
    python demo/tk_kiosk.py --endpoint URL   # credentials from TIMEBACK_* variables
    python demo/tk_kiosk.py --auto --print-summary   # plays itself, for tests

Standard library and timeback_tracker only.
"""

from __future__ import annotations

import subprocess
import sys
import tkinter as tk
from collections.abc import Callable, Iterator

import _quiz

import timeback_tracker as tt
from timeback_tracker.integrations.tk import bind_session, end_on_close

SENSOR = "https://kiosk.example.com/sensors/tk-kiosk"
QUESTIONS = _quiz.QUESTIONS

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
        self.progress.config(text=_quiz.progress_text(self.session, self.index))
        self.root.after(500, self.refresh)


def autopilot(quiz: Quiz, close: Callable[[], None]) -> Iterator[float]:
    """Play a student: yields the seconds to wait before the next step."""
    quiz.entry.focus_force()  # a kiosk takes the focus; under Xvfb nothing else gives it
    yield 0.5
    for number in range(len(QUESTIONS)):
        for char in _quiz.answer_for(number):
            quiz.entry.event_generate("<KeyPress>", keysym=char)
            yield 0.25
        quiz.button.event_generate("<ButtonPress-1>")  # the click, as bindings see it;
        quiz.button.event_generate("<ButtonRelease-1>")  # no pointer inside under Xvfb,
        quiz.button.invoke()  # so press the button by hand
        yield 0.5
        if number == _quiz.AWAY_AFTER:
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


def main() -> int:
    """Run the kiosk until its window closes; 0 when every event was delivered."""
    args = _quiz.arguments(__doc__.split("\n\n")[0])
    config, collector = _quiz.kiosk_config(args, SENSOR)
    tracker = tt.Tracker(config)
    print(_quiz.describe(tracker), flush=True)
    session = tracker.start_session(
        _quiz.USER, _quiz.activity("Tk quiz kiosk"), course_id="KIOSK-MATH-3"
    )
    root = tk.Tk()
    quiz = Quiz(root, session)
    bind_session(root, session)
    close = end_on_close(root, session, tracker)
    if args.auto:
        play(root, autopilot(quiz, close))
    root.mainloop()
    return _quiz.finish(args, tracker, collector, session)


if __name__ == "__main__":
    sys.exit(main())
