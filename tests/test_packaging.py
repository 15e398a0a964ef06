"""The package as users get it: wheel contents, metadata, and what `import` costs."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import timeback_tracker as tt

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """A wheel built from this checkout (offline: no build isolation)."""
    pytest.importorskip("build", reason="the dev extra's `build` is not installed")
    pytest.importorskip("hatchling", reason="the dev extra's `hatchling` is not installed")
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    [built] = out.glob("*.whl")
    return zipfile.ZipFile(built)


def metadata(wheel: zipfile.ZipFile) -> str:
    """The wheel's METADATA file."""
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    return wheel.read(name).decode()


def test_wheel_ships_the_package_typed_and_nothing_else(wheel: zipfile.ZipFile) -> None:
    """The wheel holds timeback_tracker with py.typed, and no tests or demos."""
    names = wheel.namelist()
    assert "timeback_tracker/py.typed" in names
    assert "timeback_tracker/__init__.py" in names
    assert not [n for n in names if n.startswith(("tests/", "demo/", "benchmarks/"))]


def test_wheel_ships_the_collector_page(wheel: zipfile.ZipFile) -> None:
    """The page's HTML, CSS and script are package data: the installed collector serves them."""
    names = set(wheel.namelist())
    for name in ("index.html", "page.css", "page.js"):
        shipped = f"timeback_tracker/_static/{name}"
        assert shipped in names
        assert wheel.read(shipped) == (ROOT / shipped).read_bytes()


def test_version_is_single_sourced(wheel: zipfile.ZipFile) -> None:
    """The wheel's version is the package's __version__."""
    assert f"\nVersion: {tt.__version__}\n" in metadata(wheel)


def test_runtime_dependencies_are_exactly_the_four(wheel: zipfile.ZipFile) -> None:
    """attrs, cattrs, requests and tenacity, and nothing else outside extras."""
    requires = [
        line.split(":", 1)[1].strip()
        for line in metadata(wheel).splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    names = sorted(r.split(">")[0].split("=")[0].split("<")[0].strip() for r in requires)
    assert names == ["attrs", "cattrs", "requests", "tenacity"]
    assert "Requires-Python: >=3.10" in metadata(wheel)


def test_console_script_is_declared(wheel: zipfile.ZipFile) -> None:
    """`timeback-tracker` points at the CLI."""
    name = next(n for n in wheel.namelist() if n.endswith("entry_points.txt"))
    assert "timeback-tracker = timeback_tracker.cli:main" in wheel.read(name).decode()


def test_import_pulls_in_only_the_standard_library_attrs_and_cattrs() -> None:
    """`import timeback_tracker` loads no requests, tenacity or other third-party module."""
    code = (
        "import sys, json; before = set(sys.modules); import timeback_tracker; "
        "print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before})))"
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    loaded = set(json.loads(done.stdout))
    third_party = loaded - set(sys.stdlib_module_names) - {"timeback_tracker"}
    # cattrs needs typing_extensions / exceptiongroup on older Pythons.
    assert third_party <= {
        "attr",
        "attrs",
        "cattr",
        "cattrs",
        "typing_extensions",
        "exceptiongroup",
    }
    assert not loaded & {"requests", "tenacity", "urllib3"}


def test_import_loads_no_machinery_until_a_name_is_used() -> None:
    """`import timeback_tracker` loads none of attrs, the models, the threads, sqlite3 or cattrs."""
    code = (
        "import sys, json; before = set(sys.modules); import timeback_tracker; "
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    loaded = set(json.loads(done.stdout))
    assert loaded <= {"__future__", "timeback_tracker", "timeback_tracker._version"}, loaded
    assert not loaded & {"attr", "attrs", "typing", "sqlite3", "cattrs", "requests", "tenacity"}


@pytest.mark.parametrize("name", tt.__all__)
def test_every_public_name_imports_lazily_in_a_fresh_interpreter(name: str) -> None:
    """`from timeback_tracker import X` works for every name of __all__, first thing."""
    code = (
        f"from timeback_tracker import {name} as value\n"
        "import timeback_tracker as tt\n"
        f"assert getattr(tt, {name!r}) is value and {name!r} in dir(tt)\n"
        f"assert {name!r} in vars(tt)  # cached after the first lookup\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_public_names_are_the_objects_of_their_modules() -> None:
    """The lazily exported names are the very objects their modules define."""
    from timeback_tracker import config, models, tracker

    assert tt.Tracker is tracker.Tracker
    assert tt.TrackerConfig is config.TrackerConfig
    assert tt.TimeSpentEvent is models.TimeSpentEvent
    assert set(dir(tt)) >= set(tt.__all__)
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        _ = tt.Nope  # type: ignore[attr-defined]
