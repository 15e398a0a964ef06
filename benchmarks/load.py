"""Cost of ``tt.load()`` (valid and invalid wire JSON) and of building models in Python.

Run: ``.venv/bin/python benchmarks/load.py`` (``--calls N``, default 1,000).

``load()`` is not on the event path (windows go out as JSON rendered from
integers); it runs in ``timeback-tracker validate``, in the ``LocalCollector``
for every envelope it receives, and in apps that read wire JSON back. Each row
is the best of 5 loops of ``--calls`` calls, as ``timeit`` reports it. To
compare with another version, run the same script with ``PYTHONPATH`` on a
``git archive`` copy of that version's ``timeback_tracker``. Takes about 10 s.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import _bench
import attrs

import timeback_tracker as tt


def _documents() -> dict[str, tuple[Any, type[Any]]]:
    """Wire JSON to load: a window, a completion, an envelope of 20, and a broken event."""
    window = tt.TimeSpentEvent.for_window(
        user=_bench.USER,
        activity=_bench.ACTIVITY,
        run_id="f47ac10b-58cc-4372-a567-0e02b2c3d479",
        start=_bench.T0,
        end=_bench.T0 + timedelta(seconds=15),
        active_seconds=12.5,
        inactive_seconds=2.5,
        course_id="MATH-3",
    )
    completion = tt.ActivityCompletedEvent.for_completion(
        user=_bench.USER,
        activity=_bench.ACTIVITY,
        run_id="f47ac10b-58cc-4372-a567-0e02b2c3d479",
        event_time=_bench.T0,
        xp_earned=12,
        total_questions=10,
        correct_questions=8,
    )
    envelope = tt.Envelope(
        sensor=_bench.SENSOR, send_time=_bench.T0, data=[window] * 19 + [completion]
    )
    broken = json.loads(json.dumps(tt.dump(window)))
    broken["actor"]["email"] = "student"
    broken["object"]["id"] = 5
    broken["generated"]["items"][0]["value"] = "12.5"
    return {
        "TimeSpentEvent": (tt.dump(window), tt.TimeSpentEvent),
        "ActivityCompletedEvent": (tt.dump(completion), tt.ActivityCompletedEvent),
        "Envelope of 20 events": (tt.dump(envelope), tt.Envelope),
        "TimeSpentEvent, 3 bad fields": (broken, tt.TimeSpentEvent),
    }


def _load(data: Any, cls: type[Any]) -> None:
    with contextlib.suppress(tt.ValidationError):
        tt.load(data, cls)


def main() -> None:
    """Time each load and each construction and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000, help="calls per loop (1000)")
    args = parser.parse_args()
    print(_bench.machine())
    print(f"best of 5 loops of {args.calls:,} calls\n")
    rows: list[tuple[str, Callable[[], object]]] = [
        (f"load {name}", functools.partial(_load, data, cls))
        for name, (data, cls) in _documents().items()
    ]
    window = tt.load(*_documents()["TimeSpentEvent"])
    rows += [
        (
            "TimebackUser(...)",
            lambda: tt.TimebackUser(id=_bench.USER.id, email=_bench.USER.email, name="Kid"),
        ),
        ("ActivityMetric(...)", lambda: tt.ActivityMetric(type="xpEarned", value=12)),
        ("attrs.evolve(window) (the event's own rules)", lambda: attrs.evolve(window)),
    ]
    for name, action in rows:
        calls = max(1, args.calls // 20) if "Envelope" in name else args.calls
        print(f"{name:<48} {_bench.us(_bench.loop_ns(action, calls)):>12}")


if __name__ == "__main__":
    main()
