# The README's commands: `make demo` (the package alone) and `make test` (everything).
# Each sets up .venv itself; the demo never waits for the test tooling.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two stamps: the package (what `roar` needs) and the dev extra (what the tests need).
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# Commands the targets run find this venv's `roar` and `python` first; nobody else has to.
RUN := PATH="$(CURDIR)/$(BIN):$$PATH"
# The measured total less a little: the floor only ever rises.
COV_FLOOR := 60
COV_ARGS := --cov=roargit --cov-report=term:skip-covered --cov-fail-under=$(COV_FLOOR)

.PHONY: demo test quick lint typecheck unit bench docs clean

$(STAMP): pyproject.toml setup.py $(wildcard roargit/tracer/*.c roargit/tracer/*.h roargit/launcher/*.c)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# The browser tests drive the distribution's Chromium; as root, install it where missing
	@# (elsewhere, or offline, those tests skip and say why).
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(command -v chromium >/dev/null && command -v chromedriver >/dev/null) || \
		(apt-get update -q && apt-get install -y -q chromium chromium-driver) || \
		echo "chromium could not be installed: the browser tests will be skipped"; \
	fi
	touch $(DEV_STAMP)

demo: $(STAMP)
	$(RUN) bash examples/demo.sh

lint: $(DEV_STAMP)
	$(BIN)/ruff check roargit tests benchmarks setup.py
	$(BIN)/ruff format --check roargit tests benchmarks setup.py

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

unit: $(DEV_STAMP)
	$(RUN) $(BIN)/python -m pytest -n 2 $(COV_ARGS) $(PYTEST_ARGS)

test: lint typecheck unit

# For iterating: the tests marked slow are left out (`make test` and CI run them all).
quick: $(DEV_STAMP)
	$(RUN) $(BIN)/python -m pytest -n 2 -m "not slow" $(PYTEST_ARGS)

bench: $(DEV_STAMP)
	$(RUN) $(BIN)/python -m benchmarks

# Runs every benchmark and rewrites docs/performance.md from their summaries.
docs: $(DEV_STAMP)
	$(RUN) $(BIN)/python -m benchmarks --write-docs

clean:
	rm -rf $(VENV) build roargit/_bin *.egg-info .coverage .coverage.*
