"""The fault-script language of ``timeback-tracker collector --script``.

``503,503,429:2,drop,delay:1.5,ok`` or ``500*3,ok*2,drop``: comma-separated
steps, each used by one request to the events endpoint, in order. See
:data:`SCRIPT_HELP` (printed by ``--help``) and :func:`parse_script`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final, Literal

import attrs

if TYPE_CHECKING:
    from timeback_tracker.testing import LocalCollector

__all__ = ["SCRIPT_HELP", "ScriptStep", "parse_script"]

_MAX_REPEAT: Final = 100_000  # a script step's *N; more would only fill memory

SCRIPT_HELP: Final = """\
fault script (--script SPEC):
  Comma-separated steps, each used by one request to the events endpoint, in
  order; when the script is used up, requests are answered normally (or fail
  at --fail-rate). The token endpoint is never affected.
    STATUS           answer with that HTTP status (400-599); nothing is recorded
    STATUS:SECONDS   the same, with a Retry-After header of whole SECONDS
    drop             read the request, then reset the connection (no answer)
    delay:SECONDS    wait SECONDS, then answer normally (provokes client timeouts)
    ok               answer normally (keeps later steps for later requests)
  Any step may end in *N to repeat it N times.
  Example: 503,503,429:2,drop,delay:1.5,ok  or  500*3,ok*2,drop

"""


@attrs.frozen
class ScriptStep:
    """One step of a fault script, repeated ``times`` times.

    Attributes:
        kind: ``"fail"`` (answer ``status``), ``"drop"``, ``"delay"`` or ``"ok"``.
        status: The status of a ``fail`` step.
        retry_after: The ``Retry-After`` seconds of a ``fail`` step, if any.
        seconds: The wait of a ``delay`` step.
        times: How many consecutive requests the step applies to.
    """

    kind: Literal["fail", "drop", "delay", "ok"]
    status: int = 0
    retry_after: int | None = None
    seconds: float = 0.0
    times: int = 1

    def apply(self, collector: LocalCollector) -> None:
        """Queue this step on ``collector``'s fault script."""
        if self.kind == "fail":
            collector.fail_next(self.status, times=self.times, retry_after=self.retry_after)
        elif self.kind == "drop":
            collector.drop_next(times=self.times)
        elif self.kind == "delay":
            collector.delay_next(self.seconds, times=self.times)
        else:
            # A zero delay answers normally, and takes its turn in the script like any fault.
            collector.delay_next(0.0, times=self.times)


def parse_script(spec: str) -> list[ScriptStep]:
    """Parse a fault script such as ``503,503,429:2,drop,delay:1.5,ok`` (see ``--help``).

    Args:
        spec: Comma-separated steps: ``STATUS[:RETRY_AFTER]``, ``drop``,
            ``delay:SECONDS`` or ``ok``, each optionally followed by ``*N``.

    Returns:
        The steps, in order.

    Raises:
        ValueError: A step is malformed; the message names it and the rule.
    """
    steps = []
    for number, raw in enumerate(spec.split(","), start=1):
        text = raw.strip()
        where = f"step {number} ({text!r})" if text else f"step {number}"
        try:
            steps.append(_parse_step(text))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return steps


def _parse_step(text: str) -> ScriptStep:
    if not text:
        raise ValueError("is empty")
    action, star, count = (part.strip() for part in text.partition("*"))
    times = 1
    if star:
        if not count.isdigit() or not 1 <= int(count) <= _MAX_REPEAT:
            raise ValueError(f"*N must be a whole number from 1 to {_MAX_REPEAT}")
        times = int(count)
    name, colon, argument = (part.strip() for part in action.partition(":"))
    name = name.lower()
    if name in ("ok", "drop"):
        if colon:
            raise ValueError(f"{name!r} takes no argument")
        return ScriptStep("ok" if name == "ok" else "drop", times=times)
    if name == "delay":
        try:
            seconds = float(argument)
        except ValueError:
            raise ValueError("delay needs seconds, e.g. delay:1.5") from None
        if not (math.isfinite(seconds) and 0 <= seconds <= 3600):
            raise ValueError("delay seconds must be between 0 and 3600")
        return ScriptStep("delay", seconds=seconds, times=times)
    if name.isdigit():
        status = int(name)
        if not 400 <= status <= 599:
            raise ValueError("a status must be between 400 and 599 (use 'ok' to answer normally)")
        retry_after = None
        if colon:
            if not argument.isdigit():
                raise ValueError("Retry-After must be whole seconds, e.g. 429:2")
            retry_after = int(argument)
        return ScriptStep("fail", status=status, retry_after=retry_after, times=times)
    raise ValueError("unknown step: use STATUS[:RETRY_AFTER], drop, delay:SECONDS or ok")
