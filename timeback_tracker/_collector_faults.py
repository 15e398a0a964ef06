"""The LocalCollector's fault scripting: failures, resets, delays, poison events, random errors.

:class:`FaultScripting` holds the script and its public methods
(:meth:`~FaultScripting.fail_next`, :meth:`~FaultScripting.drop_next` ...);
:class:`~timeback_tracker.testing.LocalCollector` inherits them, so they are
part of its API. The collector takes one :class:`Fault` per request to the
events endpoint before any of its own checks, like a failing proxy would.
"""

from __future__ import annotations

import collections
import json
import math
import random
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import attrs

from timeback_tracker._collector_oauth import TokenIssuer
from timeback_tracker._collector_server import Answer, error_answer, json_answer

__all__ = ["Fault", "FaultScripting", "check_status"]


@attrs.frozen
class Fault:
    """One scripted fault: answer with ``answer``, drop the connection, or wait ``seconds``."""

    kind: Literal["fail", "drop", "delay"]
    answer: Answer | None = None
    seconds: float = 0.0


def check_status(status: int, name: str = "status") -> int:
    """``status`` if it is an HTTP status code from 200 to 599.

    Raises:
        ValueError: It is not; the message names ``name``.
    """
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
        raise ValueError(f"{name} must be an HTTP status code between 200 and 599")
    return status


def _check_times(times: int) -> int:
    if isinstance(times, bool) or not isinstance(times, int) or times < 1:
        raise ValueError("times must be a whole number >= 1")
    return times


def _check_header_value(value: str, name: str) -> str:
    if any(char in value for char in "\r\n\0"):
        raise ValueError(f"{name} must not contain line breaks")
    return value


class FaultScripting:
    """Scripted faults of the events endpoint (and the token endpoint), thread-safe.

    The class that mixes it in provides ``_changed`` (notified when a fault is
    taken, for ``wait_for(lambda c: c.pending_faults == 0)``) and ``_tokens``.
    """

    _changed: threading.Condition
    _tokens: TokenIssuer

    def _init_faults(self) -> None:
        self._faults: collections.deque[Fault] = collections.deque()
        self._poison: list[Callable[[dict[str, Any]], bool]] = []
        self._fail_rate = 0.0
        self._fail_statuses: tuple[int, ...] = (500, 503)
        self._random = random.Random()

    @property
    def pending_faults(self) -> int:
        """How many scripted faults (fail, drop, delay) are still waiting for a request."""
        with self._changed:
            return len(self._faults)

    def fail_next(
        self,
        status: int,
        times: int = 1,
        retry_after: int | str | None = None,
        body: Mapping[str, Any] | str | bytes | None = None,
    ) -> None:
        """Answer the next requests to the events endpoint with an error; nothing is recorded.

        Args:
            status: The status to answer (200-599), e.g. 429 or 503.
            times: How many consecutive requests get it.
            retry_after: A ``Retry-After`` header: whole seconds, or a string
                sent as is (such as an HTTP date).
            body: The body: a mapping (sent as JSON), or text/bytes (sent as
                JSON if it parses, else as text). Default:
                ``{"status": "error", "message": ...}``.

        Raises:
            ValueError: An argument is out of range.
        """
        check_status(status)
        headers: tuple[tuple[str, str], ...] = ()
        if retry_after is not None:
            if isinstance(retry_after, bool) or not isinstance(retry_after, (int, str)):
                raise ValueError("retry_after must be whole seconds (int), a string or None")
            if isinstance(retry_after, int) and retry_after < 0:
                raise ValueError("retry_after must be >= 0 seconds")
            headers = (("Retry-After", _check_header_value(str(retry_after), "retry_after")),)
        if body is None:
            answer = error_answer(status, f"injected failure (HTTP {status})", *headers)
        elif isinstance(body, Mapping):
            answer = json_answer(status, body, *headers)
        else:
            raw = body.encode() if isinstance(body, str) else bytes(body)
            try:
                json.loads(raw)
            except ValueError:
                answer = Answer(status, raw, "text/plain; charset=utf-8", headers)
            else:
                answer = Answer(status, raw, "application/json", headers)
        self._script(Fault("fail", answer=answer), _check_times(times))

    def drop_next(self, times: int = 1) -> None:
        """Reset the connection of the next requests to the events endpoint without answering.

        The body is read first, then the connection is closed with a TCP
        reset: the client sees a connection error. Nothing is recorded.

        Args:
            times: How many consecutive requests are dropped.

        Raises:
            ValueError: ``times`` is below 1.
        """
        self._script(Fault("drop"), _check_times(times))

    def delay_next(self, seconds: float, times: int = 1) -> None:
        """Wait before answering the next requests to the events endpoint, then answer normally.

        Use it to provoke client read timeouts: the envelope is still recorded
        after the delay (so the client's re-send shows up as duplicates),
        unless the collector goes down or stops meanwhile.

        Args:
            seconds: How long to wait before answering.
            times: How many consecutive requests are delayed.

        Raises:
            ValueError: An argument is out of range.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError("seconds must be a number >= 0")
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError("seconds must be a number >= 0")
        self._script(Fault("delay", seconds=float(seconds)), _check_times(times))

    def reject_events(self, predicate: Callable[[dict[str, Any]], bool]) -> None:
        """Add a poison rule: envelopes holding a matching event are answered 400.

        The 400 body names the JSON path of the first matching event
        (``$.data[2]``) in ``errors``; nothing of that envelope is recorded.
        A predicate that raises makes the request answer 500.

        Args:
            predicate: Called with each event dict of a valid envelope; True
                rejects the envelope.
        """
        with self._changed:
            self._poison.append(predicate)

    def fail_rate(
        self,
        rate: float,
        statuses: Iterable[int] = (500, 503),
        seed: int | None = None,
    ) -> None:
        """Fail a random share of requests to the events endpoint (after scripted faults).

        Args:
            rate: Probability, 0-1, that a request fails; 0 turns it off.
            statuses: The statuses to pick from at random.
            seed: Seed of the random generator, for reproducible runs.

        Raises:
            ValueError: An argument is out of range.
        """
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ValueError("rate must be a number between 0 and 1")
        chosen = tuple(check_status(status, "statuses") for status in statuses)
        if not chosen:
            raise ValueError("statuses must name at least one status")
        with self._changed:
            self._fail_rate = float(rate)
            self._fail_statuses = chosen
            self._random = random.Random(seed)

    def fail_token_next(self, status: int, times: int = 1) -> None:
        """Answer the next requests to the token endpoint with an error.

        Args:
            status: The status to answer (200-599).
            times: How many consecutive token requests get it.

        Raises:
            ValueError: An argument is out of range.
        """
        check_status(status)
        self._tokens.fail_next(status, _check_times(times))

    def clear_faults(self) -> None:
        """Forget every scripted fault, poison rule, failure rate and token fault."""
        with self._changed:
            self._faults.clear()
            self._poison.clear()
            self._fail_rate = 0.0
        self._tokens.clear_faults()

    def _script(self, fault: Fault, times: int) -> None:
        with self._changed:
            self._faults.extend([fault] * times)

    def _take_fault(self) -> Fault | None:
        with self._changed:
            if self._faults:
                self._changed.notify_all()  # wait_for(lambda c: c.pending_faults == 0)
                return self._faults.popleft()
            if self._fail_rate and self._random.random() < self._fail_rate:
                status = self._random.choice(self._fail_statuses)
                return Fault(
                    "fail", answer=error_answer(status, f"injected failure (HTTP {status})")
                )
            return None

    def _poisoned(self, events: list[dict[str, Any]]) -> Answer | None:
        """The 400 answer for the first event a ``reject_events`` rule matches, if any."""
        for index, event in enumerate(events):
            for predicate in self._poison:
                try:
                    rejected = predicate(event)
                except Exception:  # noqa: BLE001 - a broken rule is the test's bug: say so loudly
                    return error_answer(500, "a reject_events rule raised")
                if rejected:
                    path, rule = f"$.data[{index}]", "rejected by a reject_events rule"
                    error = {"path": path, "message": f"event {event['id']} {rule}"}
                    return attrs.evolve(
                        json_answer(
                            400, {"status": "error", "message": "event rejected", "errors": [error]}
                        ),
                        problems=((path, rule),),
                    )
        return None
