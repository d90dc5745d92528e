# Entry points: `make demo` and `make test` (both create .venv if missing); `make lint` for contributors.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint install dev browser redis clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; v = "%d.%d" % sys.version_info[:2]; sys.exit(v != "3.11" and f"harstream needs Python 3.11; $(PYTHON) is {v}: run make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# -qq: pip still prints errors; it hides setuptools' informational note that an
# editable install of this layout (stream/, models/… mapped into harstream.*)
# goes through an import finder.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -qq -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -qq -e ".[dev]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

# Debian's Chromium, driven by Playwright for the end-to-end dashboard test.
browser:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

# Debian's redis-server for the durable log (`harstream broker`); the default ZeroMQ path does not need it.
redis:
	@command -v redis-server >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends redis-server >/dev/null; }

demo: $(VENV)/.installed
	$(BIN)/harstream demo

test: $(VENV)/.installed-dev browser redis
	$(BIN)/python -m pytest

# Lint (ruff), format check (ruff format) and types (mypy); settings in pyproject.toml.
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache test-output
