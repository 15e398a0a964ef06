"""Every code block of the README runs, so the documentation cannot rot."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from timeback_tracker.testing import LocalCollector

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", README, flags=re.MULTILINE | re.DOTALL)
PYTHON = [code for lang, code in BLOCKS if lang == "python"]
# Only `sh` blocks run; `console` blocks show commands with their output, or ones to adapt.
SHELL = [line for lang, code in BLOCKS if lang == "sh" for line in code.splitlines() if line]
# The placeholder endpoint and token the examples use, served here by a LocalCollector.
PLACEHOLDER_ENDPOINT = "https://caliper.example.com/caliper/event"
PLACEHOLDER_TOKEN = "access-token"
# `make test` is the command that runs this very test.
NOT_RUN_HERE = {"make test"}


def test_readme_has_the_blocks_this_test_expects() -> None:
    """The README opens with the two commands and has Python examples."""
    assert SHELL[:2] == [
        "make demo    # an accelerated learning session, delivered to a local collector, checked",
        "make test    # ruff, mypy --strict and the whole test suite (creates .venv itself)",
    ]
    assert len(PYTHON) >= 2


@pytest.mark.parametrize("code", PYTHON, ids=[f"python-{n}" for n in range(len(PYTHON))])
def test_python_block_runs(code: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Each Python block runs in a fresh interpreter, against a local collector."""
    if "tkinter" in code:
        request.getfixturevalue("display")  # a virtual X server, or a clean skip
    # The GUI toolkits run headless here: Qt offscreen, SDL on its dummy drivers.
    headless = {"QT_QPA_PLATFORM": "offscreen", "SDL_VIDEODRIVER": "dummy"}
    headless |= {"SDL_AUDIODRIVER": "dummy", "PYGAME_HIDE_SUPPORT_PROMPT": "1"}
    for module in ("PySide6", "pygame"):
        if f"import {module}" in code or f"from {module} " in code:
            pytest.importorskip(module, reason=f"{module} not installed (the gui group)")
    with LocalCollector(token=PLACEHOLDER_TOKEN) as collector:
        script = tmp_path / "example.py"
        script.write_text(code.replace(PLACEHOLDER_ENDPOINT, collector.url))
        env = {**os.environ, **headless, "XDG_DATA_HOME": str(tmp_path / "data")}
        done = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=tmp_path,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        if PLACEHOLDER_ENDPOINT in code:
            assert collector.events, "the example sent nothing"
        assert collector.duplicate_conflicts == []
    # Run verbatim, an example must leave nothing in the reader's per-user data directory:
    # events left in the real spool would go to production with the app's next start.
    left = [str(path) for path in (tmp_path / "data").rglob("*") if path.is_file()]
    assert left == [], "the example left a spool behind; use spool_path=None or say so"


# `make demo` and `timeback-tracker demo` run a session in real time (30 s, 10 s).
SHELL_PARAMS = [
    pytest.param(line, id=f"sh-{n}", marks=[pytest.mark.slow(30 if n == 0 else 10)])
    if line.split()[1] == "demo"
    else pytest.param(line, id=f"sh-{n}")
    for n, line in enumerate(SHELL)
]


@pytest.mark.parametrize("line", SHELL_PARAMS)
def test_shell_line_runs(line: str) -> None:
    """Each command of the README's shell blocks succeeds from the repository root."""
    command = line.split("#", 1)[0].strip()
    if command in NOT_RUN_HERE:
        pytest.skip(f"{command!r} is the command running this test")
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    done = subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
