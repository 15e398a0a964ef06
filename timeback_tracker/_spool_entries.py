"""A spool row as an entry: its columns, a window's wire JSON rendered from its numbers,
and the check that a row still makes the event its id stands for.

A window's row keeps its numbers, not its JSON (issue 12): the JSON is
rendered here from the segment's template, byte for byte what was put.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from timeback_tracker._events import RunTemplate
from timeback_tracker._outbox import Entry
from timeback_tracker._rules import DAY_SECONDS

__all__ = [
    "DEAD_LETTER_COLUMNS",
    "ENTRY_COLUMNS",
    "payload_damage",
    "read_template",
    "rendered_window",
    "row_entry",
    "template_finder",
]

ENTRY_COLUMNS = (
    "slot, id, run_id, segment, kind, first_seq, last_seq, start_ms, end_ms, active_ms, "
    "inactive_ms, attempts, event_time_ms, born_ms, payload"
)
"""The columns of ``entries`` that make an :class:`Entry`, in its order."""

DEAD_LETTER_COLUMNS = (
    "n, id, run_id, NULL, kind, first_seq, last_seq, 0, 0, 0, 0, attempts, event_time_ms, -1, "
    "payload"
)
"""The columns of ``dead_letters`` in the order of :data:`ENTRY_COLUMNS` (what a dead
letter does not keep is a default): :func:`row_entry` reads both."""


def row_entry(
    row: Sequence[Any],
    template: Callable[[str | None], RunTemplate | None] | None = None,
    *,
    mergeable: bool = True,
) -> Entry:
    """The entry of a row of :data:`ENTRY_COLUMNS` or :data:`DEAD_LETTER_COLUMNS`.

    A window's row keeps no payload (see :func:`stored_payload`): its wire JSON
    is rendered here from its segment's template and its numbers. When they
    cannot rebuild it (no template, numbers that break conservation, another
    id), the payload stays empty and :func:`payload_damage` says so.

    Args:
        row: The row (its payload is not checked here).
        template: Finds a segment's template.
        mergeable: Whether the entry keeps its template (so that a full spool
            may merge it); False for an entry that is only read (the admin
            commands).
    """
    (
        _,
        entry_id,
        run_id,
        segment,
        kind,
        first_seq,
        last_seq,
        start_ms,
        end_ms,
        active_ms,
        inactive_ms,
        attempts,
        event_time_ms,
        born_ms,
        payload,
    ) = row
    found = None if template is None else template(segment)
    if found is not None and found.run_id != run_id:
        found = None  # another run's segment of the same id: never render nor merge with it
    if payload == "" and kind == "time" and found is not None:
        payload = rendered_window(found, entry_id, row[5:11])
    return Entry(
        entry_id,
        run_id,
        "completion" if kind == "completion" else "time",
        event_time_ms,
        payload,
        first_seq,
        last_seq,
        start_ms,
        end_ms,
        active_ms,
        inactive_ms,
        attempts,
        found if mergeable else None,
        born_ms,
    )


def read_template(conn: sqlite3.Connection, segment: str) -> RunTemplate | None:
    """A segment's template as the spool keeps it; None if it has none (or a damaged one)."""
    row = conn.execute("SELECT template FROM segments WHERE segment = ?", (segment,)).fetchone()
    if row is None:
        return None
    try:
        return RunTemplate.from_json(row[0])
    except ValueError:
        return None


def template_finder(conn: sqlite3.Connection) -> Callable[[str | None], RunTemplate | None]:
    """Finds segments' templates in ``conn``, each read once (for readers of many rows)."""
    found: dict[str, RunTemplate | None] = {}

    def find(segment: str | None) -> RunTemplate | None:
        if segment is None:
            return None
        if segment not in found:
            found[segment] = read_template(conn, segment)
        return found[segment]

    return find


def rendered_window(template: RunTemplate, entry_id: str, numbers: Sequence[Any]) -> str:
    """A window's wire JSON from its row's numbers, or "" when they are not a window of
    ``template`` with the id ``entry_id`` (a damaged row)."""
    first_seq, last_seq, start_ms, end_ms, active_ms, inactive_ms = numbers
    if not all(type(n) is int for n in numbers):
        return ""
    if not (0 <= first_seq <= last_seq and min(active_ms, inactive_ms) >= 0):
        return ""
    if max(active_ms, inactive_ms) > DAY_SECONDS * 1000:  # the wire's limit of a value
        return ""
    if active_ms + inactive_ms != end_ms - start_ms:
        return ""
    event_id, payload = template.window(
        first_seq, last_seq, start_ms, end_ms, active_ms, inactive_ms
    )
    return payload if event_id == entry_id else ""


def payload_damage(entry_id: str, payload: object) -> str | None:
    """Why a stored payload cannot be sent, or None when it is a JSON object with its id."""
    if not isinstance(payload, str):
        return "damaged row: the payload is not text"
    if payload == "":
        return "damaged row: its segment's template and numbers do not make this event"
    try:
        event = json.loads(payload)
    except ValueError as exc:
        return f"damaged row: the payload is not JSON ({exc.__class__.__name__})"
    if not isinstance(event, dict) or event.get("id") != entry_id:
        return "damaged row: the payload is not this event"
    return None
