# Two commands do all the set-up on a fresh machine with Python 3 and make:
#   make demo   - the main job
#   make test   - ruff, mypy --strict and pytest
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint release-check clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --group gui \
		|| echo "PySide6/pygame could not be installed: the Qt and pygame tests will be skipped"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/timeback-tracker demo

lint: $(BIN)/.installed
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/mypy --strict timeback_tracker

test: lint
	$(BIN)/pytest

# Build the wheel and sdist, install each in a fresh virtualenv, smoke-test it.
release-check: $(BIN)/.installed
	.ci/release-check $(BIN)/python

clean:
	rm -rf $(VENV) dist .mypy_cache .pytest_cache .ruff_cache .hypothesis
