"""``timeback-tracker collector``: a local Caliper receiver to point an app at while building it.

Runs :class:`~timeback_tracker.testing.LocalCollector` in the foreground until Ctrl-C or
SIGTERM, printing the URL of its live page, then one line per event it
accepts (wire type, short run id, the window's active/inactive seconds or
the completion's XP and questions — never an email or an actor id),
optionally recording every event to a SQLite or JSON-lines file
(:mod:`~timeback_tracker._collector_store`) and injecting faults from a
script (:mod:`~timeback_tracker._collector_script`) or at random.

:func:`add_collector_command` registers the subcommand with the
``timeback-tracker`` parser, like the ``_add_<name>`` functions of
:mod:`timeback_tracker.cli`. This module imports only light standard-library
modules; the collector, ``sqlite3`` and the models are imported when the
command runs, so ``timeback-tracker --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Final, TextIO, TypeAlias

from timeback_tracker._collector_script import SCRIPT_HELP, ScriptStep, parse_script
from timeback_tracker._rules import number_argument
from timeback_tracker._urls import is_loopback
from timeback_tracker.models import COMPLETED_TYPE, TIME_SPENT_TYPE

if TYPE_CHECKING:
    from timeback_tracker._collector_store import Store
    from timeback_tracker.testing import EventOutcome, LocalCollector, RequestRecord

__all__ = [
    "WIRE_LABELS",
    "ScriptStep",
    "add_collector_command",
    "describe_event",
    "describe_request",
    "parse_script",
]

_Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

PROG: Final = "timeback-tracker collector"
DEFAULT_PORT: Final = 8787
EXIT_OK: Final = 0
EXIT_USAGE: Final = 2
_MAX_REASON: Final = 300  # characters of a rejection's reason shown on its line
WIRE_LABELS: Final = {
    TIME_SPENT_TYPE: TIME_SPENT_TYPE,
    COMPLETED_TYPE: f"{COMPLETED_TYPE}/Completed",
}
"""How the tools print each wire ``type``: the words a grep of the stored JSON finds."""

_EPILOG: Final = (
    SCRIPT_HELP
    + """
what it prints:
  One line on start with the events URL, the page's URL (and the token URL
  with --client), one line per accepted event (named as on the wire:
  TimeSpentEvent, ActivityEvent/Completed), one per request that failed or
  was dropped, and a summary line on exit. Lines are flushed at once, so
  `| tee` works. Exit status: 0 after Ctrl-C or SIGTERM, 2 for unusable
  options (such as a port in use).

the live page:
  The start line names the page's URL: open it in a browser to watch each
  run's timeline (a bar per window, active and inactive to scale, gaps, the
  completion) and the rejected envelopes with their problems. It updates
  itself; its JSON is at /api/runs and /api/runs/<run id>. Students' emails
  and names are hidden unless --show-pii.
"""
)


# --------------------------------------------------------------------------
# the command line


def add_collector_command(subparsers: _Subparsers) -> None:
    """Register the ``collector`` subcommand.

    Args:
        subparsers: The ``timeback-tracker`` parser's subcommands; the new
            parser's ``run`` default takes the parsed namespace and returns
            the exit code.
    """
    parser = subparsers.add_parser(
        "collector",
        help="run a local Caliper collector to develop an app against",
        description=(
            "Run timeback_tracker.testing.LocalCollector in the foreground until Ctrl-C or\n"
            "SIGTERM. It checks envelopes like Timeback's Caliper endpoint, prints one line\n"
            "per accepted event (never emails or actor ids), can record the events to a\n"
            "file and can inject faults. Point your app's endpoint at the URL it prints."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    listen = parser.add_argument_group("listening")
    listen.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; ::1 for IPv6); "
        "non-loopback addresses need --allow-remote",
    )
    listen.add_argument(
        "--port",
        type=number_argument(0, 65535, whole=True),
        default=DEFAULT_PORT,
        help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    listen.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host: other machines can then post (plain HTTP)",
    )
    listen.add_argument(
        "--max-body",
        metavar="BYTES",
        type=number_argument(1, 64 * 1024 * 1024, whole=True),
        help="answer 413 to larger request bodies (default: no limit below 64 MiB)",
    )
    auth = parser.add_argument_group("authentication")
    token = auth.add_mutually_exclusive_group()
    token.add_argument("--token", help="require this bearer token (visible in ps: see --token-env)")
    token.add_argument(
        "--token-env",
        metavar="VAR",
        help="require the bearer token held by environment variable VAR",
    )
    auth.add_argument(
        "--client",
        metavar="ID:SECRET",
        type=_client,
        action="append",
        default=[],
        help="an OAuth2 client allowed to get tokens at the token URL (repeatable); "
        "the events endpoint then requires a token",
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--store",
        metavar="FILE",
        type=Path,
        help="record each accepted event once: FILE ending in .sqlite, .sqlite3 or .db gets "
        "a SQLite table 'events' (id, run_id, type, event_time, received_at, json); any "
        "other FILE gets JSON lines (one event per line, appended); created mode 0600",
    )
    output.add_argument("--quiet", action="store_true", help="no per-event or per-request lines")
    output.add_argument(
        "--show-pii",
        action="store_true",
        help="show students' emails and names on the live page (hidden by default; "
        "the printed lines never show them)",
    )
    faults = parser.add_argument_group("fault injection")
    faults.add_argument(
        "--script", metavar="SPEC", type=_script, help="answer requests from this fault script"
    )
    faults.add_argument(
        "--fail-rate",
        metavar="RATE",
        type=number_argument(0, 1),
        default=0.0,
        help="answer this share (0-1) of requests 500 or 503 at random, after the script",
    )
    faults.add_argument(
        "--seed", type=int, help="seed for --fail-rate's random choices, for reproducible runs"
    )
    parser.set_defaults(run=run_collector)


def _client(text: str) -> tuple[str, str]:
    client_id, colon, secret = text.partition(":")
    if not (colon and client_id and secret):
        # Never echo the argument: it holds a secret.
        raise argparse.ArgumentTypeError("expected ID:SECRET, both non-empty")
    return client_id, secret


def _script(text: str) -> list[ScriptStep]:
    try:
        return parse_script(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _UsageError(Exception):
    """An option cannot be used; the message says why (never with a secret)."""


def run_collector(args: argparse.Namespace) -> int:
    """Run the collector until Ctrl-C or SIGTERM.

    Args:
        args: The parsed options of ``timeback-tracker collector``.

    Returns:
        0 after a signal, 2 when an option is unusable (the message is on stderr).
    """
    from timeback_tracker._collector_store import StoreError, open_store
    from timeback_tracker.testing import LocalCollector

    host: str = args.host.strip().removeprefix("[").removesuffix("]")
    try:
        token = _token(args)
        clients = _clients(args.client)
        _check_host(host, allow_remote=args.allow_remote)
    except _UsageError as exc:
        return _usage_error(str(exc))
    console = _Console(sys.stdout, quiet=args.quiet)
    try:
        store = open_store(args.store) if args.store is not None else None
    except StoreError as exc:
        return _usage_error(str(exc))
    recorder = _Recorder(console, store)
    collector = LocalCollector(
        host=host,
        port=args.port,
        token=token,
        max_body_bytes=args.max_body,
        clients=clients,
        on_event=recorder.event,
        on_request=recorder.request,
        show_pii=args.show_pii,
    )
    for step in args.script or ():
        step.apply(collector)
    if args.fail_rate:
        collector.fail_rate(args.fail_rate, seed=args.seed)
    if not is_loopback(host):
        print(
            f"{PROG}: warning: listening on {host}: anyone who can reach it may post events "
            "over plain HTTP" + ("" if token or clients else ", without authentication"),
            file=sys.stderr,
        )
    with _signals_raise_stop():
        try:
            try:
                collector.start()  # its threads leave the stop signals to this one
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
                hint = " (try another --port, or --port 0 for any free one)" if args.port else ""
                return _usage_error(f"cannot listen on {host}:{args.port}: {reason}{hint}")
            console.always(_start_line(collector, token=token, clients=clients, store=args.store))
            while True:
                time.sleep(3600)  # the signal handlers raise _Stop
        except (_Stop, KeyboardInterrupt):
            pass
        finally:
            collector.stop()
            if store is not None:
                store.close()
    console.always(_summary_line(collector))
    return EXIT_OK


def _usage_error(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return EXIT_USAGE


def _check_host(host: str, *, allow_remote: bool) -> None:
    if not (is_loopback(host) or allow_remote):
        raise _UsageError(
            f"--host {host} is not a loopback address; the collector speaks plain "
            "HTTP and takes student data: add --allow-remote if you mean it"
        )


def _token(args: argparse.Namespace) -> str | None:
    if args.token_env is None:
        if args.token is not None and not args.token:
            raise _UsageError("--token must not be empty")
        token: str | None = args.token
        return token
    value = os.environ.get(args.token_env, "")
    if not value.strip():
        raise _UsageError(f"--token-env: environment variable {args.token_env} is not set or empty")
    return value.strip()


def _clients(pairs: list[tuple[str, str]]) -> dict[str, str]:
    clients: dict[str, str] = {}
    for client_id, secret in pairs:
        if client_id in clients:
            raise _UsageError(f"--client {client_id} is given twice")
        clients[client_id] = secret
    return clients


def _start_line(
    collector: LocalCollector, *, token: str | None, clients: dict[str, str], store: Path | None
) -> str:
    parts = [f"listening on {collector.url}", f"page {collector.page_url}"]
    if clients:
        parts.append(f"token URL {collector.token_url}")
        plural = "s" if len(clients) > 1 else ""
        also = " or bearer token" if token else ""
        parts.append(f"auth: OAuth2 ({len(clients)} client{plural}){also}")
    elif token:
        parts.append("auth: bearer token")
    else:
        parts.append("auth: none")
    if store is not None:
        parts.append(f"store: {store}")
    return "  ".join(parts) + "  (Ctrl-C to stop)"


def _summary_line(collector: LocalCollector) -> str:
    requests = collector.requests
    errors = sum(1 for record in requests if record.status is None or record.status >= 300)
    return (
        f"stopped: envelopes={len(collector.envelopes)} events={len(collector.events)} "
        f"duplicates={collector.duplicates} conflicts={len(collector.duplicate_conflicts)} "
        f"requests={len(requests)} errors={errors}"
    )


# --------------------------------------------------------------------------
# signals


class _Stop(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised in the main thread by the first SIGINT/SIGTERM."""


def _stop_signals() -> list[signal.Signals]:
    names = ("SIGINT", "SIGTERM", "SIGBREAK")  # SIGBREAK: Ctrl-Break on Windows
    return [getattr(signal, name) for name in names if hasattr(signal, name)]


@contextmanager
def _signals_raise_stop() -> Iterator[None]:
    """Make the first SIGINT or SIGTERM raise :class:`_Stop`, and ignore later ones.

    SIGINT is handled even where it was ignored or blocked (a background job, a
    parent that blocked it), because Ctrl-C is how this command is meant to
    stop. Later signals are ignored so that a second Ctrl-C cannot interrupt
    the shutdown, which is bounded anyway.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; Ctrl-C then works as it did
        return
    fired = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if not fired:
            fired = True
            raise _Stop(signum)

    signals = _stop_signals()
    previous = {signum: signal.signal(signum, stop) for signum in signals}
    # pthread_sigmask: not on Windows, which has no signal masks.
    masks = hasattr(signal, "pthread_sigmask")
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, signals) if masks else set()
    try:
        yield
    finally:
        if masks:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for signum, old in previous.items():
            signal.signal(signum, signal.SIG_DFL if old is None else old)


# --------------------------------------------------------------------------
# output


class _Console:
    """Writes whole lines, flushed at once, from any thread; survives a closed pipe."""

    def __init__(self, out: TextIO, *, quiet: bool) -> None:
        self._out = out
        self._quiet = quiet
        self._lock = threading.Lock()
        self._broken = False

    def line(self, text: str) -> None:
        """Write a per-event or per-request line, unless quiet."""
        if not self._quiet:
            self.always(text)

    def always(self, text: str) -> None:
        """Write a line even when quiet (the start and summary lines)."""
        with self._lock:
            if self._broken:
                return
            try:
                self._out.write(text + "\n")
                self._out.flush()
            except OSError:  # e.g. `| head` exited: keep collecting, stop printing
                self._broken = True
                with suppress(OSError, ValueError):
                    # Point the descriptor at devnull so the flush at exit cannot fail too.
                    devnull = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(devnull, self._out.fileno())
                    os.close(devnull)


def describe_event(event: dict[str, Any], outcome: EventOutcome = "new") -> str:
    """One line about an accepted event: kind, short run id and its figures.

    Never includes the actor (id, email, name) or any free text of the event.

    Args:
        event: The event's wire JSON.
        outcome: ``"new"``, ``"duplicate"`` or ``"conflict"``.

    Returns:
        The line, without a timestamp or newline.
    """
    wire_type = event.get("type")
    kind = WIRE_LABELS.get(wire_type, "event") if isinstance(wire_type, str) else "event"
    extensions = event.get("extensions")
    run = extensions.get("runId") if isinstance(extensions, dict) else None
    head = f"{kind} run={run[:8] if isinstance(run, str) and run else '-'}"
    if outcome != "new":
        label = "duplicate" if outcome == "duplicate" else "CONFLICT"
        tail = "" if outcome == "duplicate" else " (same id, different content)"
        return f"{label} {head} id={event.get('id')}{tail}"
    generated = event.get("generated")
    generated = generated if isinstance(generated, dict) else {}
    items = generated.get("items")
    metrics = {
        item.get("type"): item
        for item in (items if isinstance(items, list) else [])
        if isinstance(item, dict)
    }
    if wire_type == TIME_SPENT_TYPE:
        return f"{head} {_time_spent(metrics)}"
    if wire_type == COMPLETED_TYPE:
        figures = generated.get("extensions")
        pct = figures.get("pctCompleteApp") if isinstance(figures, dict) else None
        return f"{head} {_completion(metrics, pct)}"
    return head


def _time_spent(metrics: dict[Any, dict[str, Any]]) -> str:
    active = _number(metrics.get("active", {}).get("value"))
    inactive = _number(metrics.get("inactive", {}).get("value"))
    window = next(iter(metrics.values()), {})
    start, end = window.get("startDate"), window.get("endDate")
    text = f"active={active}s inactive={inactive}s"
    if isinstance(start, str) and isinstance(end, str):
        date, _, _ = start.partition("T")
        short_end = end.partition("T")[2] if end.startswith(date + "T") else end
        text += f" window={start}..{short_end}"
    return text


def _completion(metrics: dict[Any, dict[str, Any]], pct: object) -> str:
    def value(name: str) -> str | None:
        item = metrics.get(name)
        return None if item is None else _number(item.get("value"))

    parts = [f"xp={value('xpEarned') or '-'}"]
    total, correct = value("totalQuestions"), value("correctQuestions")
    if total is not None or correct is not None:
        parts.append(f"questions={correct or '-'}/{total or '-'}")
    mastered = value("masteredUnits")
    if mastered is not None:
        parts.append(f"mastered={mastered}")
    if pct is not None:
        parts.append(f"pct={_number(pct)}")
    return " ".join(parts)


def _number(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    text = f"{round(value, 3):.3f}".rstrip("0").rstrip(".")
    return text or "0"


def describe_request(record: RequestRecord) -> str | None:
    """One line about a request that failed or was dropped; None for a success.

    Args:
        record: The collector's record of the request.

    Returns:
        E.g. ``POST /caliper/event -> 503 (2 events): injected failure (HTTP 503)``,
        or None.
    """
    if record.status is not None and record.status < 300:
        return None
    answer = "dropped" if record.status is None else str(record.status)
    line = f"{record.method} {record.path} -> {answer}"
    if record.event_count:
        line += f" ({record.event_count} event{'s' if record.event_count != 1 else ''})"
    if record.reason:
        reason = record.reason
        if len(reason) > _MAX_REASON:
            reason = reason[: _MAX_REASON - 3] + "..."
        line += f": {reason}"
    return line


class _Recorder:
    """The collector's hooks: print each event and failed request, store each event."""

    def __init__(self, console: _Console, store: Store | None) -> None:
        self._console = console
        self._store = store
        self._store_failing = False  # say so once per spell of failures, not per event

    def event(self, event: dict[str, Any], outcome: EventOutcome) -> None:
        if self._store is not None:
            # Duplicates too: a re-send after a failed write must still be recorded.
            try:
                self._store.add(event)
            except Exception as exc:
                if not self._store_failing:
                    self._store_failing = True
                    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                    print(
                        f"{PROG}: --store: cannot record ({reason}); answering 500", file=sys.stderr
                    )
                raise  # LocalCollector answers 500, so the client sends the envelope again
            self._store_failing = False
        self._console.line(f"{_clock()} {describe_event(event, outcome)}")

    def request(self, record: RequestRecord) -> None:
        line = describe_request(record)
        if line is not None:
            self._console.line(f"{_clock()} {line}")


def _clock() -> str:
    return time.strftime("%H:%M:%S")
