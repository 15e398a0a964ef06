"""The bounded outbox between the event producers and the delivery thread.

Producers (the heartbeat thread, ``Session.complete()``) ``put`` entries; the
delivery thread ``take``s the oldest, then ``ack``s, ``release``s or
``dead_letter``s them. An entry leaves the outbox only when acknowledged,
dead-lettered or (as a last resort, counted) dropped.

When full, the outbox first coalesces contiguous, never-attempted
TimeSpentEvents of one run into one window (values summed, span widened, no
value above 86400 s); a window that was ever sent is never merged, since the
endpoint may already hold it. Completions are never dropped. The rule is one
pure function, :func:`plan_admission`, shared by :class:`MemoryOutbox` and the
SQLite spool (``_spool.py``).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, Protocol

import attrs

from timeback_tracker._serialization import dump, load
from timeback_tracker.models import (
    MAX_SECONDS,
    ActivityCompletedEvent,
    Event,
    TimeMetricType,
    TimeSpentEvent,
)

Kind = Literal["time", "completion"]


def time_spent_event_id(run_id: uuid.UUID, first_seq: int, last_seq: int | None = None) -> str:
    """The deterministic id of window ``first_seq`` (or of windows first..last merged)."""
    name = (
        f"time-spent/{first_seq}"
        if last_seq in (None, first_seq)
        else (f"time-spent/{first_seq}-{last_seq}")
    )
    return f"urn:uuid:{uuid.uuid5(run_id, name)}"


def completion_event_id(run_id: uuid.UUID) -> str:
    """The deterministic id of a run's ActivityCompletedEvent."""
    return f"urn:uuid:{uuid.uuid5(run_id, 'activity-completed')}"


@attrs.define(eq=False)
class Entry:
    """One event waiting in the outbox, as the wire JSON it will be sent as.

    Attributes:
        id: The event id.
        run_id: The event's run id.
        kind: ``"time"`` or ``"completion"``.
        event_time_ms: The event time (epoch milliseconds), to tell its age.
        payload: The event's wire JSON (see :func:`timeback_tracker.dump`).
        first_seq: Window sequence number (the first, for merged windows);
            None for completions.
        last_seq: Last window sequence number merged into this entry.
        attempts: How many times the event was taken for sending. Once
            attempted, it is never coalesced: the endpoint may hold it already.
    """

    id: str
    run_id: str
    kind: Kind
    event_time_ms: int
    payload: dict[str, Any] = attrs.field(repr=False)
    first_seq: int | None = None
    last_seq: int | None = None
    attempts: int = 0

    @classmethod
    def of(cls, event: Event, first_seq: int | None = None, last_seq: int | None = None) -> Entry:
        """The entry of a validated event."""
        return cls(
            id=event.id,
            run_id=event.run_id or "",
            kind="completion" if isinstance(event, ActivityCompletedEvent) else "time",
            event_time_ms=round(event.event_time.timestamp() * 1000),
            payload=dump(event),
            first_seq=first_seq,
            last_seq=last_seq,
        )

    @property
    def attempted(self) -> bool:
        """Whether the event ever went out in a request."""
        return self.attempts > 0


@attrs.define
class Admission:
    """What happened while admitting an entry: events merged away and dropped."""

    coalesced: int = 0
    dropped: list[Entry] = attrs.Factory(list)


class Outbox(Protocol):
    """The storage interface the delivery thread works against."""

    def put(self, entry: Entry) -> Admission:
        """Add an entry at the tail without blocking; make room if full."""
        ...

    def put_many(
        self, entries: Sequence[Entry], checkpoints: Mapping[str, Entry | None] | None = None
    ) -> Admission:
        """Add entries and replace the crash checkpoints of runs, all or nothing.

        Args:
            entries: Entries to add, in order.
            checkpoints: run id -> the run's open window as an entry (to be
                emitted if the process dies), or None to clear it.
        """
        ...

    def recover(self) -> list[Entry]:
        """Emit the checkpoints left by dead processes; returns the entries added."""
        ...

    def close(self) -> None:
        """Release resources (files, locks)."""
        ...

    def take(self, limit: int) -> list[Entry]:
        """The oldest entries not in flight (at most ``limit``), now marked in flight."""
        ...

    def ack(self, entries: Iterable[Entry]) -> None:
        """Delivered: remove for good."""
        ...

    def release(self, entries: Iterable[Entry]) -> None:
        """Not delivered: keep at their place at the head, for the next take."""
        ...

    def dead_letter(self, entries: Iterable[Entry], reason: str) -> None:
        """Undeliverable: set aside, never sent again."""
        ...

    def __len__(self) -> int:
        """Entries held, in flight included."""
        ...


@attrs.frozen
class Merge:
    """Two windows of a run become one: ``merged`` takes the place of ``keep``.

    Attributes:
        keep: The older window, held; ``merged`` replaces it at its place.
        gone: The newer window, held, removed; None when it is the incoming
            entry, which is then folded in instead of added.
        merged: The window covering both.
    """

    keep: Entry
    gone: Entry | None
    merged: Entry


@attrs.frozen
class Drop:
    """``entry`` is discarded: a held time window, or the incoming entry itself."""

    entry: Entry


@attrs.frozen
class Plan:
    """How to admit one entry: steps to apply in order, then add it or not.

    Attributes:
        steps: Merges and drops, in the order they must be applied.
        admit: Whether the incoming entry is then added at the tail.
    """

    steps: tuple[Merge | Drop, ...] = ()
    admit: bool = True

    def admission(self) -> Admission:
        """What the caller is told: how many windows were merged, which entries dropped."""
        return Admission(
            coalesced=sum(1 for step in self.steps if isinstance(step, Merge)),
            dropped=[step.entry for step in self.steps if isinstance(step, Drop)],
        )


def plan_admission(
    held: Sequence[Entry],
    incoming: Entry,
    max_queue: int,
    in_flight: Container[str] = (),
    merge: Callable[[Entry, Entry], Entry | None] | None = None,
) -> Plan:
    """Decide how to admit ``incoming`` into an outbox holding ``held``: the coalescing rule.

    Pure: reads its arguments, changes nothing. While the outbox is full it
    first folds the incoming window into its run's newest held window, if
    contiguous and never attempted; else it merges the first mergeable pair of
    consecutive windows of any run; else it drops the oldest time window not in
    flight. A completion is never dropped: if nothing else can go, the incoming
    entry is dropped.

    Args:
        held: The entries held, oldest first (the caller checked ``incoming``
            is not among them).
        incoming: The entry to admit.
        max_queue: Most entries held.
        in_flight: Ids of entries taken and not yet acknowledged or released.
        merge: Merges two entries, or returns None when not allowed;
            :func:`merge_windows` when None (a caller may load payloads lazily).

    Returns:
        The steps to apply, in order.
    """
    if len(held) < max_queue:
        return Plan()
    join = merge_windows if merge is None else merge
    queue = list(held)
    ids = {entry.id for entry in queue}
    if incoming.kind == "time":
        last = next((e for e in reversed(queue) if e.run_id == incoming.run_id), None)
        if last is not None and not last.attempted:
            merged = join(last, incoming)
            if merged is not None and merged.id not in ids - {last.id}:
                return Plan((Merge(last, None, merged),), admit=False)
    steps: list[Merge | Drop] = []
    while len(queue) >= max_queue:
        pair = _first_mergeable_pair(queue, ids, join)
        if pair is not None:
            keep, gone, merged = pair
            queue[queue.index(keep)] = merged
            queue.remove(gone)
            ids.difference_update((keep.id, gone.id))
            ids.add(merged.id)
            steps.append(Merge(keep, gone, merged))
            continue
        victim = next((e for e in queue if e.kind == "time" and e.id not in in_flight), None)
        if victim is None:
            steps.append(Drop(incoming))
            return Plan(tuple(steps), admit=False)
        queue.remove(victim)
        ids.discard(victim.id)
        steps.append(Drop(victim))
    return Plan(tuple(steps))


def _first_mergeable_pair(
    queue: list[Entry], ids: set[str], join: Callable[[Entry, Entry], Entry | None]
) -> tuple[Entry, Entry, Entry] | None:
    """The first pair of consecutive windows of one run that may merge, and the merged entry."""
    previous_by_run: dict[str, Entry] = {}
    for entry in queue:
        previous = previous_by_run.get(entry.run_id)
        previous_by_run[entry.run_id] = entry
        if previous is None or previous.attempted or entry.attempted:
            continue
        merged = join(previous, entry)
        # A merged id already held (by another entry) would make two events of one id.
        if merged is not None and merged.id not in ids - {previous.id, entry.id}:
            return previous, entry, merged
    return None


class MemoryOutbox:
    """An in-memory outbox: FIFO, bounded, thread-safe, O(1) put in the common case."""

    def __init__(self, max_queue: int) -> None:
        self._max = max_queue
        self._lock = threading.Lock()
        # Keyed by arrival number: FIFO order, O(1) removal, and a merged entry
        # can take over its predecessor's place.
        self._entries: dict[int, Entry] = {}
        self._slots: dict[str, int] = {}
        self._next_slot = 0
        self._in_flight: set[str] = set()
        self.dead_letters: list[tuple[Entry, str]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<MemoryOutbox held={len(self._entries)} in_flight={len(self._in_flight)}>"

    def put(self, entry: Entry) -> Admission:
        """Add an entry; if full, coalesce, else drop the oldest time window."""
        with self._lock:
            if entry.id in self._slots:
                return Admission()  # the same event again: already held
            if len(self._entries) < self._max:
                self._insert(entry)  # the common case: O(1)
                return Admission()
            plan = plan_admission(list(self._entries.values()), entry, self._max, self._in_flight)
            for step in plan.steps:
                if isinstance(step, Merge):
                    if step.gone is not None:
                        self._remove(step.gone)
                    self._replace(step.keep, step.merged)
                else:
                    self._remove(step.entry)
            if plan.admit:
                self._insert(entry)
        return plan.admission()

    def put_many(
        self, entries: Sequence[Entry], checkpoints: Mapping[str, Entry | None] | None = None
    ) -> Admission:
        """Add entries in order; memory survives no crash, so checkpoints are ignored."""
        admission = Admission()
        for entry in entries:
            one = self.put(entry)
            admission.coalesced += one.coalesced
            admission.dropped += one.dropped
        return admission

    def snapshot(self) -> tuple[list[Entry], int]:
        """The entries held, oldest first, and how many of them are in flight."""
        with self._lock:
            return list(self._entries.values()), len(self._in_flight)

    def recover(self) -> list[Entry]:
        """Nothing to recover in memory."""
        return []

    def close(self) -> None:
        """Nothing to release."""

    def take(self, limit: int) -> list[Entry]:
        """The oldest entries not in flight, marked in flight."""
        batch: list[Entry] = []
        with self._lock:
            for entry in self._entries.values():
                if len(batch) >= limit:
                    break
                if entry.id not in self._in_flight:
                    batch.append(entry)
            for entry in batch:
                self._in_flight.add(entry.id)
                entry.attempts += 1
        return batch

    def ack(self, entries: Iterable[Entry]) -> None:
        """Remove delivered entries."""
        with self._lock:
            for entry in entries:
                self._remove(entry)

    def release(self, entries: Iterable[Entry]) -> None:
        """Return entries to the queue at their original place."""
        with self._lock:
            for entry in entries:
                self._in_flight.discard(entry.id)

    def dead_letter(self, entries: Iterable[Entry], reason: str) -> None:
        """Move entries aside for good."""
        with self._lock:
            for entry in entries:
                if self._remove(entry):
                    self.dead_letters.append((entry, reason))

    def _insert(self, entry: Entry, slot: int | None = None) -> None:
        if slot is None:
            slot = self._next_slot
            self._next_slot += 1
        self._entries[slot] = entry
        self._slots[entry.id] = slot

    def _remove(self, entry: Entry) -> bool:
        self._in_flight.discard(entry.id)
        slot = self._slots.pop(entry.id, None)
        return slot is not None and self._entries.pop(slot, None) is not None

    def _replace(self, old: Entry, new: Entry) -> None:
        slot = self._slots.pop(old.id)
        self._insert(new, slot)


def merge_windows(first: Entry, second: Entry) -> Entry | None:
    """One entry covering two contiguous windows of a run, or None if not allowed."""
    if first.kind != "time" or second.kind != "time":
        return None
    if first.first_seq is None or second.last_seq is None:
        return None
    a, b = load(first.payload, TimeSpentEvent), load(second.payload, TimeSpentEvent)
    a_start, a_end = _span(a)
    b_start, b_end = _span(b)
    if a_start is None or b_end is None or a_end != b_start:
        return None  # a gap (cutoff, suspend): merging would break conservation
    active = a.generated.seconds("active") + b.generated.seconds("active")
    inactive = a.generated.seconds("inactive") + b.generated.seconds("inactive")
    if active > MAX_SECONDS or inactive > MAX_SECONDS:
        return None
    run = uuid.UUID(first.run_id)
    merged = TimeSpentEvent.for_window(
        user=a.actor,
        activity=a.object,
        run_id=run,
        start=a_start,
        end=b_end,
        active_seconds=active,
        inactive_seconds=inactive,
        course_id=(a.extensions or {}).get("courseId"),
        event_id=time_spent_event_id(run, first.first_seq, second.last_seq),
    )
    return Entry.of(merged, first.first_seq, second.last_seq)


def _span(event: TimeSpentEvent) -> tuple[datetime | None, datetime | None]:
    item = next(i for i in event.generated.items if i.type is TimeMetricType.ACTIVE)
    return item.start_date, item.end_date
