"""The Qt integration through the other bindings (PyQt6, PyQt5, PySide2), each in a process
of its own (two Qt bindings must not share one): a key press, minimise and restore, close.

`tests/test_qt.py` covers the integration in depth with PySide6; this proves that the same
code finds each other binding's enums and event types. `make test` installs PyQt6 (the gui
dependency group); PyQt5 and PySide2 run where they are installed, and skip otherwise.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

DRIVE = textwrap.dedent(
    """
    import importlib, sys, time
    name = sys.argv[1]
    QtCore = importlib.import_module(f"{name}.QtCore")
    QtWidgets = importlib.import_module(f"{name}.QtWidgets")
    QtTest = importlib.import_module(f"{name}.QtTest")
    import timeback_tracker as tt
    from timeback_tracker.integrations.qt import bind_session, end_on_close
    from timeback_tracker.testing import LocalCollector

    def pump_until(app, condition, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                return False
            app.processEvents()
            time.sleep(0.01)  # polls (the child script has no tests.support)
        return True

    errors = []
    def hook(*exc):
        errors.append(exc[1])
        sys.__excepthook__(*exc)
    sys.excepthook = hook  # what a binding reports from inside Qt's loop
    app = QtWidgets.QApplication([])
    with LocalCollector() as collector:
        tracker = tt.Tracker(tt.TrackerConfig(
            sensor="https://kiosk.example.com/sensors/1", endpoint=collector.url,
            spool_path=None,
        ))
        session = tracker.start_session(
            tt.TimebackUser(id="https://sis.example.com/users/1", email="kid@example.com"),
            tt.TimebackActivityContext(
                id="https://app.example.com/a/1", subject="Math", app=tt.App(name="Qt")
            ),
        )
        window = QtWidgets.QWidget()
        window.show()
        app.processEvents()
        binding = bind_session(window, session, idle_timeout=None)
        end_on_close(window, session, tracker)
        QtTest.QTest.keyClick(window, QtCore.Qt.Key.Key_A)
        window.showMinimized()
        assert pump_until(app, lambda: session.state == "paused"), session.state
        assert binding.paused_by_binding
        window.showNormal()
        assert pump_until(app, lambda: session.state == "running"), session.state
        window.close()
        assert pump_until(app, lambda: session.state == "ended"), session.state
        tracker.close()
        assert collector.time_spent_events(session.run_id), "no window arrived"
    assert not errors, errors
    print("ok", name)
    """
)


@pytest.mark.parametrize("binding", ["PyQt6", "PyQt5", "PySide2"])
def test_the_integration_drives_each_binding(binding: str) -> None:
    """Minimise pauses, restore resumes, close ends and delivers, with nothing raised."""
    if importlib.util.find_spec(binding) is None:
        pytest.skip(f"{binding} not installed")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run(
        [sys.executable, "-c", DRIVE, binding],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == ["ok", binding]
