# ocnet_edu — every entry point a newcomer needs. `make book` and `make test` are the two
# commands in README.md; both create the virtual environment first (only Python 3.11 needed).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test test-lib test-book book check-book clean

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

install: $(VENV)/.installed

## The test command: unit tests, then every chapter executed through nbval.
test: install
	$(PY) -m pytest
	$(PY) -m pytest --nbval book

test-lib: install
	$(PY) -m pytest

test-book: install
	$(PY) -m pytest --nbval book

clean:
	rm -rf _build .pytest_cache
