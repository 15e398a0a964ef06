"""The ``timeback-tracker validate`` command, run as a real subprocess."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import timeback_tracker as tt
from timeback_tracker.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "demo" / "examples"
VALID_EXAMPLES = {
    "envelope.json": "valid: envelope with 2 events (1 TimeSpentEvent, 1 ActivityCompletedEvent)",
    "time_spent_event.json": "valid: one TimeSpentEvent",
    "activity_completed_event.json": "valid: one ActivityCompletedEvent",
    "events_list.json": "valid: list of 3 events (2 TimeSpentEvent, 1 ActivityCompletedEvent)",
}
INVALID_EXAMPLES = {
    "invalid_event.json": {
        "$.id",
        "$.eventTime",
        "$.actor.email",
        "$.object.subject",
        "$.object.app.id",
        "$.generated.items",
        "$.generated.extensions.pctCompleteApp",
        "$.extensions.runId",
    },
    "invalid_envelope.json": {
        "$.sensor",
        "$.sendTime",
        "$.data[0].@context",
        "$.data[0].actor.email",
        "$.data[0].actor.name",
        "$.data[0].generated.items[0].value",
        "$.data[0].generated.items[0].endDate",
        "$.data[0].generated.items[1].value",
        "$.data[0].generated.items[1].start_date",
        "$.data[0].generated.items[1].end_date",
        "$.data[1]",
    },
}
PROBLEM_LINE = re.compile(r"(\$\S*): (.+)")
# Words the messages may legitimately share with a payload: the schema's own vocabulary.
SCHEMA_WORDS = {
    *(member.value for member in tt.Subject),
    *(member.value for member in tt.Role),
    *(member.value for member in tt.TimeMetricType),
    *(member.value for member in tt.ActivityMetricType),
    "http://purl.imsglobal.org/ctx/caliper/v1p2",
    "TimeSpentEvent",
    "ActivityEvent",
    "ActivityCompletedEvent",
    "SpentTime",
    "Completed",
    "TimebackProfile",
    "2026-01-27T10:00:15.000Z",  # the example in the timestamp rule's message
}


def validate(target: str | Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m timeback_tracker validate TARGET`` and capture its output."""
    completed = subprocess.run(
        [sys.executable, "-m", "timeback_tracker", "validate", str(target)],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return subprocess.CompletedProcess(
        completed.args,
        completed.returncode,
        completed.stdout.decode("utf-8"),
        completed.stderr.decode("utf-8"),
    )


def problem_paths(stdout: str) -> list[str]:
    """The JSON paths of the problem lines; every line must be ``$path: message``."""
    paths = []
    for line in stdout.splitlines():
        match = PROBLEM_LINE.fullmatch(line)
        assert match, f"not a problem line: {line!r}"
        paths.append(match.group(1))
    return paths


def strings_in(value: Any) -> Iterator[str]:
    """Every string value (not key) of a JSON document."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


# --------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "summary"), VALID_EXAMPLES.items())
def test_valid_examples_exit_0_with_a_summary(name: str, summary: str) -> None:
    """Each valid example passes with a one-line summary on stdout."""
    result = validate(EXAMPLES / name)
    assert (result.returncode, result.stdout, result.stderr) == (0, summary + "\n", "")


@pytest.mark.parametrize(("name", "paths"), INVALID_EXAMPLES.items())
def test_invalid_examples_exit_1_naming_each_bad_field(name: str, paths: set[str]) -> None:
    """Each broken field of an invalid example is printed with its JSON path."""
    result = validate(EXAMPLES / name)
    assert result.returncode == 1
    assert set(problem_paths(result.stdout)) == paths
    assert name in result.stderr
    assert "invalid" in result.stderr


def test_invalid_event_lines_carry_the_rules() -> None:
    """The problem lines say which rule each field breaks."""
    lines = set(validate(EXAMPLES / "invalid_event.json").stdout.splitlines())
    assert "$.actor.email: must be an email address (name@domain)" in lines
    assert "$.generated.items: must include 'xpEarned'" in lines
    assert "$.generated.items: 'correctQuestions' must not exceed 'totalQuestions'" in lines
    assert "$.generated.extensions.pctCompleteApp: must be between 0 and 100" in lines


@pytest.mark.parametrize("name", [*VALID_EXAMPLES, *INVALID_EXAMPLES])
def test_output_never_shows_a_value_of_the_input(name: str) -> None:
    """Neither emails nor any other string value of the input reach stdout or stderr."""
    path = EXAMPLES / name
    document = json.loads(path.read_text(encoding="utf-8"))
    result = validate(path)
    output = result.stdout + result.stderr.replace(str(path), "")
    leaked = [
        value
        for value in set(strings_in(document)) - SCHEMA_WORDS
        if len(value) >= 4 and value in output
    ]
    assert leaked == []
    assert "@example.com" not in output


def test_example_emails_are_fake() -> None:
    """The examples only use example.com addresses and URLs."""
    for path in EXAMPLES.glob("*.json"):
        for value in strings_in(json.loads(path.read_text(encoding="utf-8"))):
            if "@" in value and "." in value.split("@")[-1]:
                assert value.endswith("@example.com"), path.name
            if value.startswith(("http://", "https://")) and "purl.imsglobal.org" not in value:
                assert ".example.com" in value, path.name


def test_stdin_is_read_with_a_dash() -> None:
    """'-' reads the document from stdin, valid or invalid."""
    valid = (EXAMPLES / "time_spent_event.json").read_bytes()
    result = validate("-", stdin=valid)
    assert (result.returncode, result.stdout) == (0, "valid: one TimeSpentEvent\n")
    invalid = (EXAMPLES / "invalid_event.json").read_bytes()
    result = validate("-", stdin=invalid)
    assert result.returncode == 1
    assert set(problem_paths(result.stdout)) == INVALID_EXAMPLES["invalid_event.json"]
    assert "<stdin>" in result.stderr


def test_missing_file_exits_2_naming_the_file(tmp_path: Path) -> None:
    """A file that does not exist is unreadable input: exit 2, message on stderr."""
    missing = tmp_path / "nowhere.json"
    result = validate(missing)
    assert result.returncode == 2
    assert result.stdout == ""
    assert str(missing) in result.stderr
    assert "No such file or directory" in result.stderr


def test_directory_exits_2(tmp_path: Path) -> None:
    """A directory is unreadable input."""
    result = validate(tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert str(tmp_path) in result.stderr


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b'{"value": NaN}', "NaN is not a JSON number"),
        (b"\xff\xfe{}", "not UTF-8 text"),
    ],
)
def test_non_json_file_exits_2(tmp_path: Path, content: bytes, problem: str) -> None:
    """A file that is not JSON text is unreadable input: exit 2, file and problem on stderr."""
    path = tmp_path / "broken.json"
    path.write_bytes(content)
    result = validate(path)
    assert (result.returncode, result.stdout) == (2, "")
    assert str(path) in result.stderr
    assert problem in result.stderr


@pytest.mark.parametrize(
    ("content", "kind"), [('"student@example.com"', "a string"), ("42", "a number")]
)
def test_json_that_is_not_an_object_or_list_exits_2(content: str, kind: str) -> None:
    """A top-level JSON string or number is unreadable input, and never echoed."""
    result = validate("-", stdin=content.encode())
    assert (result.returncode, result.stdout) == (2, "")
    assert f"not {kind}" in result.stderr
    assert "student@example.com" not in result.stderr


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    """A UTF-8 byte order mark (as some Windows editors write) is tolerated."""
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + (EXAMPLES / "envelope.json").read_bytes())
    assert validate(path).returncode == 0


def test_list_items_get_indexed_paths() -> None:
    """In a list of events, item i's problems start with $[i]."""
    events = json.loads((EXAMPLES / "events_list.json").read_text(encoding="utf-8"))
    events[1]["actor"]["email"] = "nobody"
    events[2]["generated"]["items"][0]["value"] = float("1e6")
    events.append({"type": "ActivityCompletedEvent"})
    events.append("event")
    events.append({"id": "urn:uuid:0b7e2f0a-3c1d-4e5f-8a9b-1c2d3e4f5a60"})
    result = validate("-", stdin=json.dumps(events).encode())
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines == [
        "$[1].actor.email: must be an email address (name@domain)",
        "$[3].type: must be 'TimeSpentEvent' or 'ActivityEvent'",
        "$[4]: must be a JSON object (an event)",
        "$[5].type: is required",
    ]


def test_empty_list_and_unknown_object_are_invalid() -> None:
    """An empty list, or an object that is neither envelope nor event, is invalid (1)."""
    result = validate("-", stdin=b"[]")
    assert (result.returncode, result.stdout) == (1, "$: must hold at least one event\n")
    result = validate("-", stdin=b'{"sensor": "https://example.com/s"}')
    assert result.returncode == 1
    assert result.stdout.startswith("$: must be a Caliper envelope")


def test_nulls_and_snake_case_keys_are_reported() -> None:
    """null values and snake_case field names, which load() tolerates, are problems."""
    event = json.loads((EXAMPLES / "time_spent_event.json").read_text(encoding="utf-8"))
    event["edApp"] = None
    event["object"]["app"]["extensions"] = {"theme": None, "event_time": "kept"}
    event["generated"]["items"][0]["sub_type"] = "reading"
    result = validate("-", stdin=json.dumps(event).encode())
    assert result.returncode == 1
    assert set(result.stdout.splitlines()) == {
        "$.edApp: must not be null (the API rejects null: omit the field)",
        "$.object.app.extensions.theme: must not be null (the API rejects null: omit the field)",
        "$.generated.items[0].sub_type: unknown key; did you mean 'subType'?",
    }


def test_unknown_keys_are_reported_with_a_hint_except_in_extensions() -> None:
    """A typo'd key names the right spelling; keys inside any extensions object are free."""
    envelope = json.loads((EXAMPLES / "envelope.json").read_text(encoding="utf-8"))
    first, second = envelope["data"]
    first["generated"]["items"][0]["startdate"] = first["generated"]["items"][0].pop("startDate")
    first["actr"] = first.pop("actor")
    first["object"]["app"]["colour"] = "blue"
    first["extensions"]["anything goes"] = {"start_date": 1}
    second["generated"]["extensions"]["pctcomplete"] = 5
    second["object"]["app"]["extensions"] = {"startdate": "mine"}
    envelope["sendtime"] = envelope["sendTime"]
    result = validate("-", stdin=json.dumps(envelope).encode())
    assert result.returncode == 1
    assert set(result.stdout.splitlines()) == {
        "$.data[0].generated.items[0].startdate: unknown key; did you mean 'startDate'?",
        "$.data[0].actr: unknown key; did you mean 'actor'?",
        "$.data[0].actor: is required",
        "$.data[0].object.app.colour: unknown key (allowed: 'name', 'id', 'extensions')",
        "$.sendtime: unknown key; did you mean 'sendTime'?",
    }


def test_a_non_string_event_time_asks_for_an_iso_8601_string() -> None:
    """eventTime given as a number is reported as the wire rule, not a Python type error."""
    event = json.loads((EXAMPLES / "time_spent_event.json").read_text(encoding="utf-8"))
    event["eventTime"] = 1769508015000
    result = validate("-", stdin=json.dumps(event).encode())
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "$.eventTime: must be an ISO 8601 string, e.g. 2026-01-27T10:00:15.000Z"
    ]


def json_lines(*documents: Any) -> bytes:
    """Documents as JSON Lines, compact like the collector's --store file."""
    return b"".join(json.dumps(d, separators=(",", ":")).encode() + b"\n" for d in documents)


def test_json_lines_are_read_line_by_line() -> None:
    """A JSON Lines file of events (the collector's --store format) is valid line by line."""
    events = json.loads((EXAMPLES / "events_list.json").read_text(encoding="utf-8"))
    result = validate("-", stdin=json_lines(*events))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == (
        "valid: JSON Lines, 3 lines with 3 events (2 TimeSpentEvent, 1 ActivityCompletedEvent)\n"
    )
    # Only documents that end their lines are JSON Lines: junk after one document is not.
    result = validate("-", stdin=b'{"type": "TimeSpentEvent"} trailing words')
    assert result.returncode == 2
    assert "not valid JSON: Extra data" in result.stderr


def test_json_lines_problems_carry_line_numbers(tmp_path: Path) -> None:
    """Each problem of a JSON Lines file names its line; a broken line is one problem."""
    events = json.loads((EXAMPLES / "events_list.json").read_text(encoding="utf-8"))
    events[1]["generated"]["items"][0]["enddate"] = "2026-01-27T10:00:30.000Z"
    events[2]["eventTime"] = 5
    store = tmp_path / "events.jsonl"
    lines = json_lines(*events).splitlines(keepends=True)
    store.write_bytes(lines[0] + b"\n" + lines[1] + b'{"type": "TimeSpentEvent",\n' + lines[2])
    result = validate(store)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "line 3: $.generated.items[0].enddate: unknown key; did you mean 'endDate'?",
        "line 4: $: not valid JSON: Expecting property name enclosed in double quotes (column 27)",
        "line 5: $.eventTime: must be an ISO 8601 string, e.g. 2026-01-27T10:00:15.000Z",
    ]
    assert result.stderr.endswith("invalid (3 problems)\n")


def test_no_arguments_is_a_usage_error() -> None:
    """Without a command, the CLI prints usage on stderr and exits 2."""
    result = subprocess.run(
        [sys.executable, "-m", "timeback_tracker"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "usage: timeback-tracker" in result.stderr


def test_help_lists_validate() -> None:
    """--help exits 0 and lists the validate command."""
    result = subprocess.run(
        [sys.executable, "-m", "timeback_tracker", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert "validate" in result.stdout


def test_cli_import_stays_off_the_network_stack() -> None:
    """Importing the CLI loads neither requests nor tenacity."""
    code = (
        "import sys, timeback_tracker.cli; "
        "print(sorted({'requests', 'tenacity'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout == "[]\n"


def test_main_returns_the_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    """main() returns the code instead of exiting, for embedding and for the console script."""
    assert main(["validate", str(EXAMPLES / "envelope.json")]) == 0
    assert main(["validate", str(EXAMPLES / "invalid_event.json")]) == 1
    assert main(["validate", str(EXAMPLES / "missing.json")]) == 2
    assert main(["no-such-command"]) == 2
    assert main(["--version"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("valid: envelope with 2 events")
    assert tt.__version__ in captured.out


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (
            ["demo", "--interval", "nan"],
            "argument --interval: must be finite (not NaN or infinity)",
        ),
        (["demo", "--interval", "0.01"], "argument --interval: must be between 0.05 and 3600"),
        (["spool", "send", "x", "--timeout", "inf"], "argument --timeout: must be finite"),
        (
            ["spool", "send", "x", "--timeout", "86401"],
            "argument --timeout: must be between 1 and 86400",
        ),
        (
            ["spool", "send", "x", "--max-event-age", "59"],
            "argument --max-event-age: must be between 60 and 315360000",  # TrackerConfig's range
        ),
        (["collector", "--fail-rate", "nan"], "argument --fail-rate: must be finite"),
        (["collector", "--max-body", "0"], "argument --max-body: must be between 1 and 67108864"),
    ],
)
def test_command_line_numbers_follow_the_number_rule(
    argv: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every command's number options are judged by one rule, whole limits written out."""
    assert main(argv) == 2
    assert problem in capsys.readouterr().err
