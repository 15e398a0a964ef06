# Two commands do all the set-up on a fresh machine with Python 3 and make:
#   make demo   - the main job
#   make test   - ruff, mypy --strict and pytest
PYTHON ?= python3
VENV := .venv
# pytest workers for `make test`: most tests wait on real time rather than the CPU,
# so 4 workers finish sooner than 2 even on a 2-core machine. PYTEST_WORKERS=0 runs
# in one process. --maxschedchunk 1: each worker holds at most two tests and takes
# the next when one ends, so the long tests (first in the collection, see
# tests/conftest.py) spread over the workers instead of queueing on the first,
# and no worker is left with a backlog while the others are idle.
PYTEST_WORKERS ?= 4
PYTEST_XDIST := -n $(PYTEST_WORKERS) --dist load --maxschedchunk 1
BIN := $(VENV)/bin

.PHONY: demo test lint release-check clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --group gui \
		|| echo "PySide6, PyQt6 or pygame could not be installed: the Qt and pygame tests will be skipped"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/timeback-tracker demo

lint: $(BIN)/.installed
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/mypy --strict timeback_tracker

test: lint
	$(BIN)/pytest $(PYTEST_XDIST) --durations=15

# Build the wheel and sdist, install each in a fresh virtualenv, smoke-test it.
release-check: $(BIN)/.installed
	.ci/release-check $(BIN)/python

clean:
	rm -rf $(VENV) dist .mypy_cache .pytest_cache .ruff_cache .hypothesis
