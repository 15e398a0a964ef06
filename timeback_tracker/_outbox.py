"""The bounded outbox between the event producers and the delivery thread.

Producers (the heartbeat thread, ``Session.complete()``) ``put`` entries; the
delivery thread ``take``s the oldest, then ``ack``s, ``release``s or
``dead_letter``s them. An entry leaves the outbox only when acknowledged,
dead-lettered or (as a last resort, counted) dropped.

An entry is an event as its wire JSON text plus the integers it was rendered
from, so that merging two windows is integer arithmetic and a re-render from
the run's template. When full, the outbox first coalesces contiguous
TimeSpentEvents of one run segment that never reached the server into one
window (values summed, span widened, no value above 86400 s); a window that
may have reached the server is never merged, since the endpoint may hold it.
Completions are never dropped, even if that means holding more than the
bound. The rule is one function, :func:`admit`, shared by :class:`MemoryOutbox` and
the SQLite spool (``_spool.py``) through the small :class:`Store` interface.

A little over the ~600 lines other modules keep to: the entry, the
admission rule and the memory outbox that applies it are one contract,
read together; the spool's side of it is in its own modules.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, Protocol

import attrs

from timeback_tracker._accounting import MAX_VALUE_MS
from timeback_tracker._events import RunTemplate

Kind = Literal["time", "completion"]

__all__ = [
    "COMPLETED_RUNS_REMEMBERED",
    "NOTHING_HAPPENED",
    "Admission",
    "AlreadyCompletedError",
    "Checkpoint",
    "CompletedRuns",
    "Entry",
    "Kind",
    "MemoryOutbox",
    "Outbox",
    "Store",
    "admit",
    "merge_windows",
]

COMPLETED_RUNS_REMEMBERED = 10_000
"""Run ids whose completion an outbox without a spool remembers (the newest)."""


@attrs.define(eq=False, slots=True)
class Entry:
    """One event waiting in the outbox: its wire JSON text and the numbers behind it.

    Attributes:
        id: The event id.
        run_id: The event's run id.
        kind: ``"time"`` or ``"completion"``.
        event_time_ms: The event time (epoch milliseconds).
        payload: The event's wire JSON text, sent as is.
        first_seq: Window sequence number (the first, for merged windows);
            None for completions.
        last_seq: Last window sequence number merged into this entry.
        start_ms: Window start (epoch ms); 0 for completions.
        end_ms: Window end (epoch ms); 0 for completions.
        active_ms: Active milliseconds of the window.
        inactive_ms: Inactive milliseconds of the window.
        attempts: Requests that may have carried the event to the server. Once
            attempted, it is never coalesced: the endpoint may hold it already.
            A request that provably never left (connection refused) does not count.
        template: The run segment's template, to re-render a merged window;
            None when the entry cannot be merged (it came from elsewhere).
        born_ms: The wall time the event's age is counted from; moved along
            with the wall clock when the clock is set, so a clock step cannot
            make an event look old.
    """

    id: str
    run_id: str
    kind: Kind
    event_time_ms: int
    payload: str = attrs.field(repr=False)
    first_seq: int | None = None
    last_seq: int | None = None
    start_ms: int = 0
    end_ms: int = 0
    active_ms: int = 0
    inactive_ms: int = 0
    attempts: int = 0
    template: RunTemplate | None = attrs.field(default=None, repr=False)
    born_ms: int = -1

    def __attrs_post_init__(self) -> None:
        if self.born_ms < 0:
            self.born_ms = self.event_time_ms

    @classmethod
    def window(  # noqa: PLR0917 - the numbers of a window, in their natural order
        cls,
        template: RunTemplate,
        first_seq: int,
        last_seq: int,
        start_ms: int,
        end_ms: int,
        active_ms: int,
        inactive_ms: int,
        born_ms: int = -1,
    ) -> Entry:
        """The entry of one window (or of windows first..last merged) of a run segment.

        ``born_ms`` is the wall time now (the window's end by default).
        """
        event_id, payload = template.window(
            first_seq, last_seq, start_ms, end_ms, active_ms, inactive_ms
        )
        return cls(
            event_id,
            template.run_id,
            "time",
            end_ms,
            payload,
            first_seq,
            last_seq,
            start_ms,
            end_ms,
            active_ms,
            inactive_ms,
            0,
            template,
            born_ms,
        )

    @classmethod
    def completion(cls, template: RunTemplate, event_time_ms: int, **metrics: Any) -> Entry:
        """The entry of a run's ActivityCompletedEvent (metrics validated by the models' rules).

        Raises:
            ValidationError: A metric breaks a rule.
        """
        event_id, payload = template.completion(event_time_ms, **metrics)
        return cls(event_id, template.run_id, "completion", event_time_ms, payload)

    @property
    def attempted(self) -> bool:
        """Whether the event may have reached the server."""
        return self.attempts > 0


@attrs.frozen
class Checkpoint:
    """What a crash recovery needs to rebuild the open window of a running run segment.

    Attributes:
        template: The segment's template.
        state: The accounting snapshot (``RunAccounting.snapshot()``); None once
            the segment ended (there is nothing to recover).
        mono_ms: Monotonic time of the snapshot, in the clock of the process
            that took it.
        wall_ms: Wall time of the snapshot.
    """

    template: RunTemplate
    state: list[object] | None
    mono_ms: int
    wall_ms: int


class AlreadyCompletedError(Exception):
    """The outbox knows the run was completed already: a run has one completion."""


@attrs.define
class Admission:
    """What happened while admitting an entry: events merged away and dropped."""

    coalesced: int = 0
    dropped: list[Entry] = attrs.Factory(list)

    def add(self, other: Admission) -> None:
        """Count ``other`` in too."""
        self.coalesced += other.coalesced
        self.dropped += other.dropped


NOTHING_HAPPENED = Admission()
"""What most puts report: nothing merged, nothing dropped (shared: never change it)."""


class Outbox(Protocol):
    """The storage interface the tracker and the delivery thread work against."""

    def put_many(
        self,
        entries: Sequence[Entry],
        checkpoints: Mapping[str, Checkpoint] | None = None,
        *,
        completes: str | None = None,
    ) -> Admission:
        """Add entries and replace the crash checkpoints of run segments, all or nothing.

        Args:
            entries: Entries to add, in order; ids already held are ignored.
            checkpoints: segment -> its checkpoint (its ``state`` None once it ended).
            completes: The run id these entries complete, if they do.

        Raises:
            AlreadyCompletedError: ``completes`` names a run known to be
                completed; nothing was added.
        """
        ...

    def mark_alive(self, mono_ms: int, wall_ms: int, checkpoints: Sequence[Checkpoint]) -> None:
        """Note, cheaply and without durability, that the running segments are this far."""
        ...

    def recover(self) -> list[Entry]:
        """Emit the open windows of runs of dead processes; returns the entries added."""
        ...

    def rebase(self, delta_ms: int) -> None:
        """The wall clock was set by ``delta_ms``: move the age base of what is held."""
        ...

    def close(self, timeout: float | None = None) -> int:
        """Write what waits in memory (for up to ``timeout`` s), release files and locks.

        Returns:
            How many events held could be kept nowhere (lost).
        """
        ...

    def take(self, limit: int) -> list[Entry]:
        """The oldest entries not in flight (at most ``limit``), now marked in flight."""
        ...

    def ack(self, entries: Iterable[Entry]) -> None:
        """Delivered: remove for good."""
        ...

    def release(self, entries: Iterable[Entry], *, reached: bool = True) -> None:
        """Not delivered: keep at their place at the head, for the next take.

        Args:
            entries: The entries.
            reached: False when the request provably never reached the server
                (connection refused, name not resolved): they stay mergeable.
        """
        ...

    def dead_letter(self, entries: Iterable[Entry], reason: str) -> None:
        """Undeliverable: set aside, never sent again."""
        ...

    def __len__(self) -> int:
        """Entries held, in flight included."""
        ...

    @property
    def in_memory(self) -> int:
        """Entries held in memory only (a crash would lose them)."""
        ...


class Store(Protocol):
    """What :func:`admit` needs of an outbox's storage (called with its lock held)."""

    def count(self) -> int:
        """Entries held."""
        ...

    def newest_of(self, entry: Entry) -> Entry | None:
        """The newest held entry that ``entry`` could fold into: of its run segment."""
        ...

    def adjacent_windows(self) -> Iterator[tuple[Entry, Entry]]:
        """Pairs of consecutive windows of one run segment, never attempted and not in
        flight, oldest first."""
        ...

    def oldest_window(self) -> Entry | None:
        """The oldest time window not in flight."""
        ...

    def holds(self, entry_id: str) -> bool:
        """Whether an entry of that id is held."""
        ...

    def in_flight(self, entry: Entry) -> bool:
        """Whether ``entry`` is taken and not yet acknowledged or released."""
        ...

    def insert(self, entry: Entry) -> None:
        """Add ``entry`` at the tail."""
        ...

    def replace(self, old: Entry, new: Entry) -> None:
        """Put ``new`` in the place of ``old``."""
        ...

    def remove(self, entry: Entry) -> None:
        """Remove ``entry``."""
        ...


def admit(store: Store, incoming: Entry, max_queue: int) -> Admission:
    """Admit ``incoming`` into a store: the coalescing rule, shared by every outbox.

    Below the bound, the entry is added. At the bound, the incoming window is
    first folded into its run's newest held window, if they are consecutive
    windows that never reached the server; else the oldest mergeable pair of
    consecutive windows of a run is merged, as often as needed; else the
    oldest time window not in flight is dropped. A completion is never
    dropped: if nothing else can go, an incoming completion is held beyond
    the bound and an incoming window is dropped.

    Args:
        store: The outbox's storage (the caller holds its lock).
        incoming: The entry to admit; its id is not held.
        max_queue: Most entries held (completions may go beyond).

    Returns:
        How many windows were merged away, and which entries were dropped.
    """
    admission = Admission()
    if store.count() < max_queue:
        store.insert(incoming)
        return admission
    if incoming.kind == "time":
        last = store.newest_of(incoming)
        if last is not None and not last.attempted and not store.in_flight(last):
            merged = merge_windows(last, incoming)
            if merged is not None and (merged.id == last.id or not store.holds(merged.id)):
                store.replace(last, merged)
                admission.coalesced += 1
                return admission
    while store.count() >= max_queue:
        pair = next(
            (
                (keep, gone, merged)
                for keep, gone in store.adjacent_windows()
                if (merged := merge_windows(keep, gone)) is not None
                # A merged id held by another entry would make two events of one id.
                and not store.holds(merged.id)
            ),
            None,
        )
        if pair is not None:
            keep, gone, merged = pair
            store.remove(gone)
            store.replace(keep, merged)
            admission.coalesced += 1
            continue
        victim = store.oldest_window()
        if victim is None:
            if incoming.kind == "completion":
                break  # never dropped: held beyond the bound
            admission.dropped.append(incoming)
            return admission
        store.remove(victim)
        admission.dropped.append(victim)
    store.insert(incoming)
    return admission


def merge_windows(first: Entry, second: Entry) -> Entry | None:
    """One entry covering two consecutive windows of a run segment, or None if not allowed.

    Integer arithmetic and one render: the sums are exact, the span is widened.
    """
    template = first.template
    if (
        template is None
        or second.template is None
        or second.template.segment != template.segment
        or first.kind != "time"
        or second.kind != "time"
        or first.last_seq is None
        or first.first_seq is None
        or second.first_seq != first.last_seq + 1
        or second.last_seq is None
        or first.end_ms != second.start_ms  # a gap (cutoff, sleep): merging would hide it
    ):
        return None
    active = first.active_ms + second.active_ms
    inactive = first.inactive_ms + second.inactive_ms
    if active > MAX_VALUE_MS or inactive > MAX_VALUE_MS:
        return None
    return Entry.window(
        template,
        first.first_seq,
        second.last_seq,
        first.start_ms,
        second.end_ms,
        active,
        inactive,
        min(first.born_ms, second.born_ms),
    )


class CompletedRuns:
    """The run ids known to be completed, the newest :data:`COMPLETED_RUNS_REMEMBERED`."""

    def __init__(self) -> None:
        self._runs: collections.OrderedDict[str, None] = collections.OrderedDict()

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._runs

    def add(self, run_id: str) -> None:
        """Remember ``run_id`` (forgetting the oldest beyond the limit)."""
        self._runs[run_id] = None
        while len(self._runs) > COMPLETED_RUNS_REMEMBERED:
            self._runs.popitem(last=False)


class MemoryOutbox:
    """An in-memory outbox: FIFO, bounded, thread-safe, O(1) put in the common case.

    Args:
        max_queue: Most entries held (completions may go beyond); also the
            most dead letters kept.
    """

    def __init__(self, max_queue: int) -> None:
        self._max = max_queue
        self._lock = threading.Lock()
        # Keyed by arrival number: FIFO order, O(1) removal, and a merged entry
        # can take over its predecessor's place.
        self._entries: dict[int, Entry] = {}
        self._slots: dict[str, int] = {}
        self._next_slot = 0
        self._in_flight: set[str] = set()
        self._completed = CompletedRuns()
        self.dead_letters: collections.deque[tuple[Entry, str]] = collections.deque(
            maxlen=max_queue
        )

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def in_memory(self) -> int:
        """Every entry: this outbox is memory."""
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<MemoryOutbox held={len(self._entries)} in_flight={len(self._in_flight)}>"

    def put(self, entry: Entry) -> Admission:
        """Add an entry; if full, coalesce, else drop the oldest time window."""
        return self.put_many((entry,))

    def put_many(
        self,
        entries: Sequence[Entry],
        checkpoints: Mapping[str, Checkpoint] | None = None,
        *,
        completes: str | None = None,
    ) -> Admission:
        """Add entries in order, all or nothing; memory survives no crash, so
        checkpoints are ignored.

        Raises:
            AlreadyCompletedError: ``completes`` was completed before; nothing added.
        """
        admission = NOTHING_HAPPENED
        with self._lock:
            if completes is not None and completes in self._completed:
                raise AlreadyCompletedError(completes)
            added: list[Entry] = []
            try:
                for entry in entries:
                    if entry.id in self._slots:
                        continue  # the same event again: already held
                    if len(self._entries) < self._max:
                        self.insert(entry)  # the common case: O(1)
                    else:
                        if admission is NOTHING_HAPPENED:
                            admission = Admission()
                        admission.add(admit(self, entry, self._max))
                    added.append(entry)
            except BaseException:
                # Interrupted (Ctrl-C in complete()): none of it, so the call can be retried.
                for entry in added:
                    self.remove(entry)
                raise
            if completes is not None:
                self._completed.add(completes)
        return admission

    def mark_alive(self, mono_ms: int, wall_ms: int, checkpoints: Sequence[Checkpoint]) -> None:
        """Nothing survives a crash in memory."""

    def snapshot(self) -> tuple[list[Entry], int]:
        """The entries held, oldest first, and how many of them are in flight."""
        with self._lock:
            return list(self._entries.values()), len(self._in_flight)

    def recover(self) -> list[Entry]:
        """Nothing to recover in memory."""
        return []

    def rebase(self, delta_ms: int) -> None:
        """Move the age base of every entry held by ``delta_ms``."""
        with self._lock:
            for entry in self._entries.values():
                entry.born_ms += delta_ms

    def close(self, timeout: float | None = None) -> int:
        """Nothing to release; what is held goes with the process."""
        return len(self._entries)

    def take(self, limit: int, hold: Callable[[Entry], bool] | None = None) -> list[Entry]:
        """The oldest entries not in flight (and not ``hold``), marked in flight."""
        batch: list[Entry] = []
        with self._lock:
            for entry in self._entries.values():
                if len(batch) >= limit:
                    break
                if entry.id not in self._in_flight and not (hold and hold(entry)):
                    batch.append(entry)
            for entry in batch:
                self._in_flight.add(entry.id)
                entry.attempts += 1
        return batch

    def ack(self, entries: Iterable[Entry]) -> None:
        """Remove delivered entries."""
        with self._lock:
            for entry in entries:
                self.remove(entry)

    def release(self, entries: Iterable[Entry], *, reached: bool = True) -> None:
        """Return entries to the queue at their original place."""
        with self._lock:
            for entry in entries:
                if entry.id in self._in_flight and not reached:
                    entry.attempts = max(0, entry.attempts - 1)
                self._in_flight.discard(entry.id)

    def dead_letter(self, entries: Iterable[Entry], reason: str) -> None:
        """Move entries aside for good (the newest ``max_queue`` dead letters are kept)."""
        with self._lock:
            for entry in entries:
                if entry.id in self._slots:
                    self.remove(entry)
                    self.dead_letters.append((entry, reason))

    # -- Store (self._lock held) -----------------------------------------------------

    def count(self) -> int:
        """Entries held."""
        return len(self._entries)

    def newest_of(self, entry: Entry) -> Entry | None:
        """The run's newest held entry (a window folds only into one of its segment)."""
        run_id = entry.run_id
        return next((e for e in reversed(self._entries.values()) if e.run_id == run_id), None)

    def adjacent_windows(self) -> Iterator[tuple[Entry, Entry]]:
        """Consecutive held windows of one run, never attempted and not in flight."""
        previous_by_run: dict[str, Entry] = {}
        for entry in list(self._entries.values()):
            previous = previous_by_run.get(entry.run_id)
            previous_by_run[entry.run_id] = entry
            # Never attempted is never in flight too: take() counts an attempt as it
            # marks the entry, and release() unmarks it as it takes one back.
            if previous is None or previous.attempted or entry.attempted:
                continue
            yield previous, entry

    def oldest_window(self) -> Entry | None:
        """The oldest time window not in flight."""
        return next(
            (e for e in self._entries.values() if e.kind == "time" and e.id not in self._in_flight),
            None,
        )

    def holds(self, entry_id: str) -> bool:
        """Whether an entry of that id is held."""
        return entry_id in self._slots

    def in_flight(self, entry: Entry) -> bool:
        """Whether ``entry`` is taken and not yet settled."""
        return entry.id in self._in_flight

    def insert(self, entry: Entry, slot: int | None = None) -> None:
        """Add ``entry`` at the tail (or at ``slot``)."""
        if slot is None:
            slot = self._next_slot
            self._next_slot += 1
        self._entries[slot] = entry
        self._slots[entry.id] = slot

    def replace(self, old: Entry, new: Entry) -> None:
        """Put ``new`` in the place of ``old``."""
        slot = self._slots.pop(old.id)
        self._in_flight.discard(old.id)
        self.insert(new, slot)

    def remove(self, entry: Entry) -> None:
        """Remove ``entry`` (if held)."""
        self._in_flight.discard(entry.id)
        slot = self._slots.pop(entry.id, None)
        if slot is not None:
            self._entries.pop(slot, None)
