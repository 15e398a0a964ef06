"""A PySide6 quiz that reports its learning time with timeback-tracker.

The same five questions as the Tk kiosk, with the kiosk recipe
(``presence="os"`` and an idle timeout). The wiring is two calls:
``bind_session(window, session)`` (any input in the app counts, the app
losing the focus or the window being minimised pauses) and
``end_on_close(window, session, tracker)`` (closing the window ends the run
and closes the tracker).

    python demo/qt_quiz.py                  # events go to a built-in LocalCollector
    python demo/qt_quiz.py --endpoint URL   # credentials from TIMEBACK_* variables
    QT_QPA_PLATFORM=offscreen python demo/qt_quiz.py --auto --print-summary   # for tests

Needs PySide6 (``pip install PySide6-Essentials``); PyQt6 works the same way.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

import _quiz
from PySide6 import QtCore, QtGui, QtTest, QtWidgets

import timeback_tracker as tt
from timeback_tracker.integrations.qt import bind_session, end_on_close

SENSOR = "https://kiosk.example.com/sensors/qt-quiz"
QUESTIONS = _quiz.QUESTIONS


class Quiz(QtWidgets.QWidget):
    """The quiz window: a question, an answer box, an Answer button, feedback and progress."""

    def __init__(self, session: tt.Session) -> None:
        super().__init__()
        self.session = session
        self.index = self.correct = 0
        self.setWindowTitle("Quick quiz (Qt)")
        self.resize(380, 240)
        self.question = QtWidgets.QLabel(alignment=QtCore.Qt.AlignmentFlag.AlignCenter)
        self.question.setFont(QtGui.QFont("Sans", 20))
        self.entry = QtWidgets.QLineEdit(alignment=QtCore.Qt.AlignmentFlag.AlignCenter)
        self.entry.setFont(QtGui.QFont("Sans", 16))
        self.entry.setMaximumWidth(120)
        self.button = QtWidgets.QPushButton("Answer")
        self.feedback = QtWidgets.QLabel(alignment=QtCore.Qt.AlignmentFlag.AlignCenter)
        self.progress = QtWidgets.QLabel(alignment=QtCore.Qt.AlignmentFlag.AlignCenter)
        self.progress.setFont(QtGui.QFont("Monospace", 9))
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.question)
        layout.addWidget(self.entry, alignment=QtCore.Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(self.button, alignment=QtCore.Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(self.feedback)
        layout.addWidget(self.progress)
        self.button.clicked.connect(self.answer)
        self.entry.returnPressed.connect(self.answer)
        timer = QtCore.QTimer(self)
        timer.timeout.connect(self.refresh)
        timer.start(500)
        self.show_question()
        self.refresh()

    def show_question(self) -> None:
        self.question.setText(f"{QUESTIONS[self.index][0]} = ?")
        self.entry.clear()
        self.entry.setFocus()

    def answer(self) -> None:
        if self.index >= len(QUESTIONS):
            return
        expected = QUESTIONS[self.index][1]
        right = self.entry.text().strip() == str(expected)
        self.correct += right
        self.feedback.setText("Right!" if right else f"Not quite: it is {expected}")
        self.index += 1
        if self.index < len(QUESTIONS):
            self.show_question()
            return
        xp = round(self.session.active_seconds / 60)  # 1 XP = 1 focused minute
        self.session.complete(xp, total_questions=len(QUESTIONS), correct_questions=self.correct)
        self.question.setText("All done!")
        self.feedback.setText(f"{self.correct}/{len(QUESTIONS)} right, {xp} XP")
        self.entry.setEnabled(False)
        self.button.setEnabled(False)

    def refresh(self) -> None:
        self.progress.setText(_quiz.progress_text(self.session, self.index))


def autopilot(quiz: Quiz) -> Iterator[float]:
    """Play a student with real Qt input events: yields the seconds to wait before the next step."""
    quiz.activateWindow()
    yield 0.5
    for number in range(len(QUESTIONS)):
        for char in _quiz.answer_for(number):
            QtTest.QTest.keyClick(quiz.entry, char)
            yield 0.25
        QtTest.QTest.mouseClick(quiz.button, QtCore.Qt.MouseButton.LeftButton)
        yield 0.5
        if number == _quiz.AWAY_AFTER:
            quiz.showMinimized()  # the student switches away for a while
            yield 1.2
            quiz.showNormal()
            quiz.activateWindow()
            yield 0.4
    yield 0.8
    quiz.close()


def play(steps: Iterator[float], done: Callable[[], None]) -> None:
    """Run a generator of steps on Qt's event loop, one single-shot timer per step."""

    def advance() -> None:
        delay = next(steps, None)
        if delay is None:
            done()
        else:
            QtCore.QTimer.singleShot(round(delay * 1000), advance)

    QtCore.QTimer.singleShot(100, advance)


def main() -> int:
    """Run the quiz until its window closes; 0 when every event was delivered."""
    args = _quiz.arguments(__doc__.split("\n\n")[0])
    app = QtWidgets.QApplication(sys.argv[:1])
    config, collector = _quiz.kiosk_config(args, SENSOR)
    tracker = tt.Tracker(config)
    print(_quiz.describe(tracker), flush=True)
    session = tracker.start_session(_quiz.USER, _quiz.activity("Qt quiz"), course_id="KIOSK-MATH-3")
    quiz = Quiz(session)
    quiz.show()
    bind_session(quiz, session)
    end_on_close(quiz, session, tracker)
    if args.auto:
        play(autopilot(quiz), lambda: None)
    app.exec()
    return _quiz.finish(args, tracker, collector, session)


if __name__ == "__main__":
    sys.exit(main())
