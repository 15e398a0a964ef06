"""What ``soak.py`` knows about runs, and its checks of what the collector received.

Not a benchmark itself: ``soak.py`` imports it.

A run may have several *segments*: one per ``start_session()`` with its run
id (a kiosk resumes a run after a restart). Window ids are derived from the
run, the segment and the window's number, so the checks go segment by segment.
"""

from __future__ import annotations

import collections
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from timeback_tracker._events import completion_event_id, time_spent_event_id

if TYPE_CHECKING:
    from soak import Kiosk

    from timeback_tracker.testing import LocalCollector

LOST_LIMIT = 1.25  # seconds a kill may lose: the 1 s sign-of-life period, plus scheduling slack
EXCESS_LIMIT = 0.5  # seconds more than the kiosk last reported: its reporting period, plus slack
STEP_SLACK_MS = 10  # a window boundary moved by a clock step: the step, to this many ms


@dataclass
class Segment:
    """One ``start_session()`` of a run, in one kiosk lifetime, as the kiosk reported it."""

    segment: str
    run_id: str
    machine: int
    life: int
    interval: float  # the heartbeat interval of that lifetime
    started: float  # soak's monotonic clock when the kiosk said "run"
    status: str = "open"  # open, completed, ended, killed
    active: float = 0.0
    inactive: float = 0.0
    metrics: tuple[int, ...] | None = None  # given to complete() (or about to be)
    completing: bool = False  # "completing" seen: complete() was called
    refused: bool = False  # complete() raised SessionStateError
    killed_at: float | None = None
    # Extra seconds a kill may lose because the spool was unwritable during the life (issue
    # 11: "<= ~1 s of counted time plus the time the spool was unwritable"); also set for a
    # finished segment of a killed life: its last events may have waited in memory.
    allowance: float = 0.0
    steps: list[int] = field(default_factory=list)  # clock steps (ms) during its life

    @property
    def total(self) -> float:
        """Seconds counted."""
        return self.active + self.inactive


@dataclass
class Verdict:
    """The outcome of the checks."""

    failures: list[str] = field(default_factory=list)
    lost_events: int = 0
    max_lost: float = 0.0  # kills while the spool was writable
    max_lost_unwritable: float = 0.0  # kills during (or just after) an unwritable spool
    max_allowance: float = 0.0
    max_excess: float = 0.0
    kills_measured: int = 0
    kills_unwritable: int = 0
    windows_lost_unwritable: int = 0  # windows of a spool unwritable before a kill: allowed
    finished_lost_unwritable: float = 0.0  # most seconds a finished segment lost that way

    def fail(self, message: str) -> None:
        """Record a failed check."""
        self.failures.append(message)


@dataclass
class Report:
    """What the kiosks reported, fed by their reader threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    segments: dict[str, Segment] = field(default_factory=dict)
    runs: dict[str, list[Segment]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    damage_reports: int = 0
    recovered: int = 0

    def on_line(self, kiosk: Kiosk, words: list[str]) -> None:
        """One line a kiosk printed (see ``_soak_kiosk.py``)."""
        if not words:
            return
        with self.lock:
            kind = words[0]
            if kind == "run":
                segment = Segment(
                    words[2],
                    words[1],
                    kiosk.machine.index,
                    kiosk.life,
                    kiosk.interval,
                    time.monotonic(),
                )
                # A step told just before the "run" line may have landed while
                # start_session() ran, after it read the clock: in its life too.
                segment.steps += [d for at, d in kiosk.steps if segment.started - at < 1.0]
                self.segments[segment.segment] = segment
                self.runs.setdefault(segment.run_id, []).append(segment)
                kiosk.segments.append(segment)
            elif kind == "t":
                segment = self.segments[words[1]]
                if segment.status == "open":
                    segment.active, segment.inactive = float(words[2]), float(words[3])
            elif kind == "completing":
                segment = self.segments[words[1]]
                segment.completing = True
                segment.metrics = tuple(int(word) for word in words[2:7])
            elif kind == "done":
                segment = self.segments[words[1]]
                segment.status = words[2]
                segment.active, segment.inactive = float(words[3]), float(words[4])
            elif kind == "refused":
                self.segments[words[1]].refused = True
            elif kind == "recovered":
                self.recovered += int(words[1])
            elif kind == "problem":
                if words[1].startswith("damaged_row"):
                    self.damage_reports += 1  # a damaged row set aside: expected
                else:
                    self.problems.append(
                        f"machine {kiosk.machine.index} life {kiosk.life}: {' '.join(words[1:])}"
                    )
            kiosk.lines.append(words)
            if kind != "t":
                kiosk.machine.note(f"life {kiosk.life}: {' '.join(words)}")


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def ms(timestamp: str) -> int:
    """Epoch milliseconds of a wire timestamp."""
    when = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return (when - _EPOCH) // timedelta(milliseconds=1)


def items(event: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A TimeSpentEvent's metric items by type."""
    return {item["type"]: item for item in event["generated"]["items"]}


def _by_seq(
    run_uuid: uuid.UUID, segment: str, wanted: dict[str, dict[str, Any]]
) -> dict[int, dict[str, Any]]:
    """Pop the windows of ``segment`` out of ``wanted`` (id -> event), by sequence number."""
    found: dict[int, dict[str, Any]] = {}
    seq = 0
    misses = 0
    while wanted and misses < 10_000:
        event = wanted.pop(time_spent_event_id(run_uuid, segment, seq, seq), None)
        if event is None:
            misses += 1
        else:
            found[seq] = event
            misses = 0
        seq += 1
    return found


def _step_gap(gap: int, steps: list[int]) -> bool:
    """Whether a jump of ``gap`` ms between two windows is explained by clock steps."""
    sums = {0}
    for step in steps:
        sums |= {total + step for total in sums}
    return any(total and abs(gap - total) <= STEP_SLACK_MS for total in sums)


def check_windows(
    verdict: Verdict, name: str, seg: Segment, by_seq: dict[int, dict[str, Any]]
) -> tuple[int, int]:
    """Sequence, conservation and contiguity of one segment; its (active, inactive) ms."""
    if by_seq:
        missing = sorted(set(range(max(by_seq) + 1)) - set(by_seq))
        if missing and seg.allowance:
            verdict.windows_lost_unwritable += len(missing)  # counted in its lost time
        elif missing:
            verdict.lost_events += len(missing)
            verdict.fail(f"{name}: windows {missing} missing (of 0..{max(by_seq)})")
    previous: dict[str, Any] | None = None
    active_ms = inactive_ms = 0
    for seq, event in sorted(by_seq.items()):
        found = items(event)
        active, inactive = found["active"], found["inactive"]
        start, end = ms(active["startDate"]), ms(active["endDate"])
        active_ms += round(active["value"] * 1000)
        inactive_ms += round(inactive["value"] * 1000)
        if round((active["value"] + inactive["value"]) * 1000) != end - start:
            verdict.fail(f"{name}: window {seq} not conserved")
        for value in (active["value"], inactive["value"]):
            if value < 0 or abs(value * 1000 - round(value * 1000)) > 1e-6:
                verdict.fail(f"{name}: window {seq} has a value {value!r} (not whole ms >= 0)")
        if (inactive["startDate"], inactive["endDate"]) != (
            active["startDate"],
            active["endDate"],
        ) or event["eventTime"] != active["endDate"]:
            verdict.fail(f"{name}: window {seq} has inconsistent dates")
        if end <= start:
            verdict.fail(f"{name}: window {seq} is empty or reversed")
        if previous is not None and seq - 1 in by_seq:
            gap = start - ms(items(previous)["active"]["endDate"])
            if gap and not _step_gap(gap, seg.steps):
                verdict.fail(
                    f"{name}: window {seq} starts {gap} ms away from where window {seq - 1} "
                    f"ended (clock steps in its life: {seg.steps})"
                )
        previous = event
    return active_ms, inactive_ms


def check_time(
    verdict: Verdict, name: str, seg: Segment, arrived: tuple[int, int], windows: int
) -> None:
    """Counted time: exact for a finished segment, at most about a second lost by a kill."""
    active, inactive = arrived[0] / 1000, arrived[1] / 1000
    if seg.status in ("completed", "ended"):
        lost = seg.total - (active + inactive)
        short = abs(active - seg.active) > 0.0015 or abs(inactive - seg.inactive) > 0.0015
        if short and seg.allowance and 0 < lost <= seg.allowance + LOST_LIMIT:
            # Finished while the spool could not be written, then killed: allowed.
            verdict.finished_lost_unwritable = max(verdict.finished_lost_unwritable, lost)
        elif short:
            if active + inactive < seg.total:
                verdict.lost_events += 1
            verdict.fail(
                f"{name}: arrived {active:.3f} s active + {inactive:.3f} s inactive, "
                f"the kiosk counted {seg.active:.3f} + {seg.inactive:.3f}"
                + (f" (unwritable spool allowance {seg.allowance:.2f} s)" if seg.allowance else "")
            )
    elif seg.status == "killed":
        lost = seg.total - (active + inactive)
        if seg.allowance:
            verdict.kills_unwritable += 1
            verdict.max_lost_unwritable = max(verdict.max_lost_unwritable, lost)
            verdict.max_allowance = max(verdict.max_allowance, seg.allowance)
        else:
            verdict.kills_measured += 1
            verdict.max_lost = max(verdict.max_lost, lost)
        verdict.max_excess = max(verdict.max_excess, -lost)
        if lost > LOST_LIMIT + seg.allowance:
            verdict.lost_events += 1  # at least: the tail window, or the checkpoint's
            verdict.fail(
                f"{name}: lost {lost:.3f} s (reported {seg.total:.3f} s before the kill, "
                f"{active + inactive:.3f} s arrived in {windows} windows; allowed "
                f"{LOST_LIMIT} s + {seg.allowance:.2f} s of unwritable spool)"
            )
        if -lost > EXCESS_LIMIT:
            verdict.fail(
                f"{name}: {-lost:.3f} s more arrived than it reported before the kill "
                f"({seg.total:.3f} s reported, {active + inactive:.3f} s arrived)"
            )
    else:
        verdict.fail(f"{name}: its kiosk never said how it ended")


def check_run(
    verdict: Verdict,
    run_id: str,
    segments: list[Segment],
    windows: list[dict[str, Any]],
    completions: list[dict[str, Any]],
    order: dict[str, int],
) -> None:
    """Every check of one run (all its segments) against what arrived.

    Args:
        verdict: Where failures go.
        run_id: The run.
        segments: Its segments, oldest first.
        windows: Its TimeSpentEvents that arrived (or were set aside on purpose).
        completions: Its ActivityCompletedEvents likewise.
        order: Arrival position of every event id.
    """
    run_uuid = uuid.UUID(run_id)
    ids = {event["id"]: event for event in windows}
    wanted = dict(ids)
    last_window_order = -1
    completing: Segment | None = None
    completing_last: dict[str, Any] | None = None  # the completing segment's last window
    for seg in segments:
        name = (
            f"run {run_id} segment {seg.segment} (machine {seg.machine} life {seg.life}, "
            f"{seg.status}{', resumed' if seg is not segments[0] else ''})"
        )
        by_seq = _by_seq(run_uuid, seg.segment, wanted)
        arrived = check_windows(verdict, name, seg, by_seq)
        check_time(verdict, name, seg, arrived, len(by_seq))
        last_window_order = max(
            [last_window_order, *(order.get(e["id"], -1) for e in by_seq.values())]
        )
        if seg.refused:
            verdict.fail(f"{name}: complete() was refused: the run was completed before")
        if seg.status == "completed" or (seg.completing and seg.status == "killed"):
            completing = seg
            completing_last = by_seq[max(by_seq)] if by_seq else None
    if wanted:
        verdict.fail(f"run {run_id}: {len(wanted)} windows with ids of no segment's sequence")

    name = f"run {run_id}"
    if len(completions) > 1:
        verdict.fail(f"{name}: {len(completions)} completion events")
    completed = any(seg.status == "completed" for seg in segments)
    if completed and not completions:
        verdict.lost_events += 1
        verdict.fail(
            f"{name}: its completion event did not arrive; segments: "
            + ", ".join(
                f"{s.segment} machine {s.machine} life {s.life} {s.status} "
                f"unwritable-allowance {s.allowance:.2f}s"
                for s in segments
            )
        )
    if completions and completing is None:
        verdict.fail(f"{name}: a completion arrived, but no segment was completed")
    if completions and completing is not None:
        completion = completions[0]
        if completion["id"] != completion_event_id(run_uuid):
            verdict.fail(f"{name}: the completion has an unexpected id")
        if order.get(completion["id"], -1) < last_window_order:
            late = [
                f"{seg.segment}/{seq}@{order.get(event['id'])}"
                for seg in segments
                for seq, event in sorted(_by_seq(run_uuid, seg.segment, dict(ids)).items())
                if order.get(event["id"], -1) > order.get(completion["id"], -1)
            ]
            verdict.fail(
                f"{name}: the completion (arrival {order.get(completion['id'])}, completing "
                f"segment {completing.segment}) arrived before windows (segment/seq@arrival) "
                f"{late}; segments: "
                + ", ".join(f"{s.segment} life {s.life} {s.status}" for s in segments)
            )
        if completing_last is not None and ms(completion["eventTime"]) < ms(
            completing_last["eventTime"]
        ):
            verdict.fail(f"{name}: the completion is dated before its segment's last window")
        if completing.metrics is not None:
            found = {item["type"]: item["value"] for item in completion["generated"]["items"]}
            got = (
                found.get("xpEarned"),
                found.get("totalQuestions"),
                found.get("correctQuestions"),
                found.get("masteredUnits"),
                (completion["generated"].get("extensions") or {}).get("pctCompleteApp"),
            )
            if got != completing.metrics:
                verdict.fail(
                    f"{name}: completion metrics {got} != the kiosk's {completing.metrics}"
                )


def describe_conflicts(
    collector: LocalCollector, conflicts: list[str], report: Report
) -> list[str]:
    """For each id received with two contents: every content, in a few words."""
    found: dict[str, list[str]] = collections.defaultdict(list)
    for envelope in collector.envelopes:
        for event in envelope["data"]:
            if event["id"] not in conflicts:
                continue
            if event["type"] == "TimeSpentEvent":
                item = {i["type"]: i for i in event["generated"]["items"]}
                words = (
                    f"{item['active']['startDate']}..{item['active']['endDate']} active "
                    f"{item['active']['value']} inactive {item['inactive']['value']}"
                )
            else:
                words = json.dumps(event["generated"], sort_keys=True)
            if words not in found[event["id"]]:
                found[event["id"]].append(words)
    lines = []
    for event_id, contents in found.items():
        run_id = next(
            (
                e["extensions"]["runId"]
                for env in collector.envelopes
                for e in env["data"]
                if e["id"] == event_id
            ),
            "?",
        )
        segments = report.runs.get(run_id, [])
        lives = ", ".join(
            f"{s.segment} machine {s.machine} life {s.life} {s.status}" for s in segments
        )
        lines.append(f"conflict {event_id} (run {run_id}: {lives}): " + " | ".join(contents))
    return lines
