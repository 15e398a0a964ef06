"""A pygame quiz that reports its learning time with timeback-tracker.

The same five questions as the Tk kiosk, with the kiosk recipe
(``presence="os"`` and an idle timeout), in a game loop. The wiring:
``binding = bind_session(session)``, ``end_on_close(binding, tracker)`` and
``binding.handle(event)`` for every event of the loop. Type the answer and
press Enter; the window losing the focus or being minimised pauses the
session; closing it ends the run and closes the tracker.

    python demo/pygame_quiz.py                  # events go to a built-in LocalCollector
    python demo/pygame_quiz.py --endpoint URL   # credentials from TIMEBACK_* variables
    SDL_VIDEODRIVER=dummy python demo/pygame_quiz.py --auto --print-summary   # for tests

Needs pygame 2 (``pip install pygame``).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # read by pygame on import

import _quiz
import pygame

import timeback_tracker as tt
from timeback_tracker.integrations.pygame import bind_session, end_on_close

SENSOR = "https://kiosk.example.com/sensors/pygame-quiz"
QUESTIONS = _quiz.QUESTIONS
SIZE = (420, 260)
INK, PAPER, MUTED, ACCENT = (34, 34, 34), (250, 248, 240), (110, 110, 110), (30, 110, 200)


class Quiz:
    """The quiz's state and its drawing."""

    def __init__(self, session: tt.Session) -> None:
        self.session = session
        self.index = self.correct = 0
        self.typed = ""
        self.feedback = "Type the answer, then press Enter"
        self.big = pygame.font.Font(None, 48)
        self.medium = pygame.font.Font(None, 32)
        self.small = pygame.font.Font(None, 22)

    def key(self, event: pygame.event.Event) -> None:
        """A key press: digits edit the answer, Enter submits it."""
        if self.index >= len(QUESTIONS):
            return
        if event.key in (pygame.K_RETURN, pygame.K_KP_ENTER):
            self.answer()
        elif event.key == pygame.K_BACKSPACE:
            self.typed = self.typed[:-1]
        elif event.unicode.isdigit() and len(self.typed) < 4:
            self.typed += event.unicode

    def answer(self) -> None:
        expected = QUESTIONS[self.index][1]
        right = self.typed == str(expected)
        self.correct += right
        self.feedback = "Right!" if right else f"Not quite: it is {expected}"
        self.index += 1
        self.typed = ""
        if self.index == len(QUESTIONS):
            xp = round(self.session.active_seconds / 60)  # 1 XP = 1 focused minute
            self.session.complete(
                xp, total_questions=len(QUESTIONS), correct_questions=self.correct
            )
            self.feedback = f"All done! {self.correct}/{len(QUESTIONS)} right, {xp} XP"

    def draw(self, screen: pygame.Surface) -> None:
        screen.fill(PAPER)
        done = self.index >= len(QUESTIONS)
        question = "All done!" if done else f"{QUESTIONS[self.index][0]} = ?"
        self.blit(screen, self.big, question, INK, 45)
        box = pygame.Rect(0, 0, 120, 42)
        box.center = (SIZE[0] // 2, 105)
        pygame.draw.rect(screen, ACCENT, box, width=2, border_radius=6)
        self.blit(screen, self.medium, self.typed, INK, 105)
        self.blit(screen, self.small, self.feedback, MUTED, 150)
        for offset, line in enumerate(_quiz.progress_text(self.session, self.index).split("\n")):
            self.blit(screen, self.small, line, MUTED, 200 + 22 * offset)

    @staticmethod
    def blit(
        screen: pygame.Surface,
        font: pygame.font.Font,
        text: str,
        color: tuple[int, int, int],
        y: int,
    ) -> None:
        image = font.render(text, True, color)
        screen.blit(image, image.get_rect(center=(SIZE[0] // 2, y)))


def autopilot() -> Iterator[tuple[float, list[pygame.event.Event]]]:
    """Play a student: (seconds to wait, events SDL would deliver then), step by step."""
    yield 0.5, []
    for number in range(len(QUESTIONS)):
        for char in _quiz.answer_for(number):
            key = pygame.event.Event(pygame.KEYDOWN, key=ord(char), unicode=char, mod=0)
            yield 0.25, [key]
        yield 0.5, [pygame.event.Event(pygame.KEYDOWN, key=pygame.K_RETURN, unicode="\r", mod=0)]
        if number == _quiz.AWAY_AFTER:
            yield 1.2, [pygame.event.Event(pygame.WINDOWFOCUSLOST)]  # the student switches away
            yield 0.4, [pygame.event.Event(pygame.WINDOWFOCUSGAINED)]
    yield 0.8, []
    yield 0.0, [pygame.event.Event(pygame.QUIT)]  # the window's close button


def main() -> int:
    """Run the quiz until its window closes; 0 when every event was delivered."""
    args = _quiz.arguments(__doc__.split("\n\n")[0])
    pygame.display.init()
    pygame.font.init()
    screen = pygame.display.set_mode(SIZE)
    pygame.display.set_caption("Quick quiz (pygame)")
    config, collector = _quiz.kiosk_config(args, SENSOR)
    tracker = tt.Tracker(config)
    print(_quiz.describe(tracker), flush=True)
    session = tracker.start_session(
        _quiz.USER, _quiz.activity("pygame quiz"), course_id="KIOSK-MATH-3"
    )
    binding = bind_session(session)
    end_on_close(binding, tracker)
    quiz = Quiz(session)
    steps = autopilot() if args.auto else None
    next_step = time.monotonic()
    clock = pygame.time.Clock()
    running = True
    while running:
        if steps is not None and time.monotonic() >= next_step:
            step = next(steps, None)
            if step is not None:
                delay, events = step
                for event in events:
                    pygame.event.post(event)
                next_step = time.monotonic() + delay
        for event in pygame.event.get():
            binding.handle(event)  # the one line the integration needs
            if event.type == pygame.QUIT:
                running = False
            elif event.type == pygame.KEYDOWN:
                quiz.key(event)
        quiz.draw(screen)
        pygame.display.flip()
        clock.tick(30)
    pygame.quit()
    return _quiz.finish(args, tracker, collector, session)


if __name__ == "__main__":
    sys.exit(main())
