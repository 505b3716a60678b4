# The two commands of the README: `make demo` and `make test`. Each sets up .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml setup.py $(wildcard roargit/tracer/*.c roargit/tracer/*.h)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# The browser tests drive the distribution's Chromium; as root, install it where missing
	@# (elsewhere, or offline, those tests skip and say why).
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(command -v chromium >/dev/null && command -v chromedriver >/dev/null) || \
		(apt-get update -q && apt-get install -y -q chromium chromium-driver) || \
		echo "chromium could not be installed: the browser tests will be skipped"; \
	fi
	touch $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash hooks/demo.sh

lint: $(STAMP)
	$(BIN)/ruff check roargit tests benchmarks setup.py
	$(BIN)/ruff format --check roargit tests benchmarks setup.py

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

test: lint typecheck unit

bench: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build roargit/_bin *.egg-info
