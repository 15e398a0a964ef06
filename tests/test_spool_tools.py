"""The spool tools on awkward spools: damaged checkpoints, clashing ids, races with a tracker.

``timeback-tracker spool`` runs in-process here (``cli.main`` with the
output captured), on real spool files written by real outboxes;
``test_cli_spool.py`` runs it as a subprocess for the ordinary cases.
"""

from __future__ import annotations

import io
import logging
import re
import sqlite3
import uuid
from pathlib import Path

import pytest

from tests.support import checkpoint, template, window, window_id
from timeback_tracker._spool import SqliteOutbox
from timeback_tracker._spool_admin import SpoolFile, lock_held
from timeback_tracker._spool_file import AliveRecord, close_quietly, open_lock_file, try_lock
from timeback_tracker._spool_ls import _ago
from timeback_tracker._spool_send import _Progress, _WarningsAbove
from timeback_tracker.cli import main


@pytest.fixture
def spool(private_data_home: Path) -> Path:
    """A spool file path in the data directory ``spool ls`` looks in."""
    directory = private_data_home / "timeback-tracker"
    directory.mkdir(parents=True, mode=0o700)
    return directory / "spool.sqlite3"


def spool_command(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``timeback-tracker spool ARGS`` in this process: exit code, stdout, stderr."""
    code = main(["spool", *args])
    out, err = capsys.readouterr()
    return code, out, err


def dead_owner_with_a_damaged_checkpoint(spool: Path) -> uuid.UUID:
    """A tracker killed mid-run whose checkpoint lost its monotonic time; its run id."""
    run = uuid.uuid4()
    dying = SqliteOutbox(spool, 100)
    dying.put_many([], {template(run).segment: checkpoint(run, 2)})
    close_quietly(dying._owner_fd)  # killed: the lock is free, the lock file stays
    dying._owner_fd = None
    assert dying._conn is not None
    dying._conn.close()
    conn = sqlite3.connect(spool)
    with conn:
        conn.execute("UPDATE segments SET mono_ms = NULL")
    conn.close()
    return run


def test_a_damaged_checkpoint_is_shown_as_such_and_stops_no_tool(
    spool: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """status, list and ls show an interrupted run whose checkpoint cannot be rebuilt, and
    why, instead of failing on it; nothing is changed."""
    run = dead_owner_with_a_damaged_checkpoint(spool)
    before = spool.read_bytes()

    code, out, err = spool_command(capsys, "status", str(spool))
    assert (code, err) == (0, "")
    assert "checkpoints: 1" in out.splitlines()
    assert "interrupted runs: 1" in out.splitlines()

    code, out, err = spool_command(capsys, "list", str(spool))
    assert (code, err) == (0, "")
    (line,) = out.splitlines()[1:]
    assert line.split()[:6] == ["damaged", "-", "time", str(run), "2026-01-27T10:00:35Z", "-"]
    assert re.search(r"  checkpoint damaged \(TypeError: .*\)$", line)

    code, out, err = spool_command(capsys, "ls")
    assert (code, err) == (0, "")
    assert re.search(
        rf"\n  interrupted run {run}: checkpoint damaged \(TypeError: .*\): cannot be "
        r"recovered, last seen \d+ d ago\n",
        out,
    )
    assert spool.read_bytes() == before


def test_lock_held_tells_held_free_missing_and_unknowable(tmp_path: Path) -> None:
    """The probe the tools use on owner and drain locks: held by another open file (and
    still held after the probe), free, missing (and not created), or not to be told for a
    planted symlink or a directory (never followed, never taken)."""
    lock = tmp_path / "owner.lock"
    assert lock_held(lock) is False
    assert not lock.exists()
    fd = open_lock_file(lock)
    try:
        assert lock_held(lock) is False
        assert try_lock(fd)
        assert lock_held(lock) is True
        assert lock_held(lock) is True  # the probe let go of nothing
    finally:
        close_quietly(fd)
    assert lock_held(lock) is False
    link = tmp_path / "link.lock"
    link.symlink_to(lock)
    assert lock_held(link) is None
    (tmp_path / "dir.lock").mkdir()
    assert lock_held(tmp_path / "dir.lock") is None


def test_retry_dead_keeps_the_queued_copy_of_an_id(
    spool: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dead letter whose id was queued again since (a rebuilt window): retry-dead moves
    nothing, never queues an id twice, and the dead letter goes."""
    run = uuid.uuid4()
    outbox = SqliteOutbox(spool, 100)
    try:
        outbox.put_many([window(run, 0), window(run, 1)])
        outbox.dead_letter(outbox.take(1), "HTTP 400 Bad Request")
        outbox.put_many([window(run, 0)])  # the same window, queued again
    finally:
        outbox.close()

    code, out, err = spool_command(capsys, "retry-dead", str(spool))

    assert (code, out, err) == (0, "moved 0 dead letters back to the queue\n", "")
    with SpoolFile(spool) as admin:
        listed = [(row.entry.id, row.dead) for row in admin.list_entries(include_dead=True)]
    assert listed == [(window_id(run, 1), False), (window_id(run, 0), False)]


def test_purge_queued_keeps_what_a_tracker_queued_after_the_count(spool: Path) -> None:
    """Between showing the count and the confirmation, the app queued another window: the
    purge deletes what was counted, never the newcomer."""
    run = uuid.uuid4()
    outbox = SqliteOutbox(spool, 100)
    try:
        outbox.put_many([window(run, 0), window(run, 1)])
        with SpoolFile(spool) as admin:
            counted = admin.queued_ids()
            outbox.put_many([window(run, 2)])
            assert admin.purge_queued(counted) == 2
            assert admin.queued_ids() == [window_id(run, 2)]
    finally:
        outbox.close()


@pytest.mark.parametrize(
    "which",
    [["PATH", "--path", "PATH"], ["PATH", "--sensor", "https://s.example.com/x"]],
    ids=["path twice", "path and sensor"],
)
def test_a_spool_named_two_ways_is_refused(
    spool: Path, capsys: pytest.CaptureFixture[str], which: list[str]
) -> None:
    """Two names for the spool (even the same file twice) are refused, naming the options,
    rather than one of them silently winning."""
    SqliteOutbox(spool, 10).close()
    args = [str(spool) if arg == "PATH" else arg for arg in which]

    code, out, err = spool_command(capsys, "status", *args)

    assert (code, out) == (2, "")
    assert err == "timeback-tracker spool status: give one of PATH, --path FILE and --sensor IRI\n"


def test_a_run_whose_destination_was_never_recorded_is_not_called_a_0_1_row(
    spool: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tracker killed before it could write to the spool (it was busy) leaves its run in
    its sign of life only: ls lists the interrupted run under a destination not recorded,
    and does not mistake it for a 0.1 spool's rows."""
    SqliteOutbox(spool, 10).close()
    run = uuid.uuid4()
    alive = checkpoint(run, 1)
    lock = spool.with_name(f"{spool.name}.owner-{uuid.uuid4().hex}.lock")
    segment = {"t": alive.template.to_json(), "s": alive.state, "m": alive.mono_ms}
    segment["w"] = alive.wall_ms
    with open(lock, "wb") as file:
        AliveRecord.write(
            file.fileno(), {"dest": "0123456789abcdef", "segments": {"x": segment}, "journal": []}
        )

    code, out, err = spool_command(capsys, "ls")

    assert (code, err) == (0, "")
    assert "0.1" not in out
    assert (
        "  destination 0123456789abcdef not recorded here (its app sends these events when it "
        "next starts)\n  queued 0, dead letters 0, checkpoints 1 (1 interrupted)\n"
    ) in out
    assert f"  interrupted run {run}: 1 window to send, active 5.0 s, inactive 0.0 s" in out


def test_a_long_library_warning_is_cut_while_sending(capsys: pytest.CaptureFixture[str]) -> None:
    """`spool send` shows the library's warnings above its progress, each cut to 200
    characters (a warning may list thousands of event ids); quieter records are not shown."""
    handler = _WarningsAbove(_Progress(io.StringIO()))
    logger = logging.getLogger("tests.spool_tools.send")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # the handler itself must leave out what is not a warning
    try:
        logger.warning("could not send %s", ", ".join(f"urn:uuid:{n:04d}" for n in range(100)))
        logger.info("not shown")
        logger.warning("short")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    lines = capsys.readouterr().err.splitlines()
    assert [len(line) for line in lines] == [len("warning: ") + 200, len("warning: short")]
    assert lines[0].startswith("warning: could not send urn:uuid:0000, ")
    assert lines[0].endswith("…")
    assert lines[1] == "warning: short"


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (-5_000, "0 s ago"),  # an event stamped in the future (the clock was set back)
        (119_999, "119 s ago"),
        (120_000, "2 min ago"),
        (7_199_999, "119 min ago"),
        (7_200_000, "2 h ago"),
        (2 * 86_400_000 - 1, "47 h ago"),
        (2 * 86_400_000, "2 d ago"),
    ],
)
def test_ages_change_unit_at_their_boundaries(ms: int, text: str) -> None:
    """An age is shown in the largest unit that keeps two significant steps, never negative."""
    assert _ago(ms) == text
