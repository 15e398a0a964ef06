"""Run every benchmark one after the other and say how long each took.

Run: ``.venv/bin/python benchmarks/run_all.py`` (10-12 minutes, of which
``disk_io.py``'s real-time check takes 5), or with ``--quick`` for shortened
runs (about 2 minutes: fewer calls, rounds and seconds, no real-time disk
check; the figures are then rougher). ``side_by_side.py`` is skipped when
the ``bench`` dependency group is not installed
(``.venv/bin/python -m pip install --group bench``). The soak
(``soak.py``) is not run here: it takes 5 minutes on its own.
``event_path.py`` and ``disk_io.py`` count fsyncs and bytes by file with
``strace`` when it is installed, and say so when it is not.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# script, its arguments for --quick
SCRIPTS = [
    ("app_thread.py", ["--calls", "5000"]),
    (
        "event_path.py",
        ["--calls", "5000", "--windows", "500", "--ticks", "30", "--completes", "30"],
    ),
    ("idle_cpu.py", ["--seconds", "10"]),
    ("disk_io.py", ["--hours", "0.5", "--minutes", "0"]),
    ("drain.py", ["--rounds", "1"]),
    ("footprint.py", ["--hours", "6", "--runs", "3"]),
    ("exit_time.py", ["--repeat", "1"]),
    ("side_by_side.py", ["--events", "5000"]),
    ("spool_write.py", ["--puts", "500", "--full-puts", "50"]),
    ("hostile_replies.py", ["--megabytes", "20", "--limit", "10"]),
    ("presence.py", ["--seconds", "10", "--polls", "300"]),
    ("load.py", ["--calls", "200"]),
]


def main() -> None:
    """Run each script in a fresh interpreter, then print the time each took."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shortened runs")
    args = parser.parse_args()
    took: list[tuple[str, float, int]] = []
    for script, quick in SCRIPTS:
        if script == "side_by_side.py" and not all(
            importlib.util.find_spec(name) for name in ("segment", "posthog")
        ):
            print(f"== {script}: skipped (pip install --group bench)\n", flush=True)
            continue
        command = [sys.executable, str(HERE / script), *(quick if args.quick else [])]
        print(f"== {' '.join(command[1:])}", flush=True)
        started = time.perf_counter()
        code = subprocess.run(command, check=False).returncode
        took.append((script, time.perf_counter() - started, code))
        print(flush=True)
    for script, seconds, code in took:
        print(f"{script:<18} {seconds:6.1f} s  exit {code}")
    sys.exit(max((code for _, _, code in took), default=0))


if __name__ == "__main__":
    main()
