# Quick start (fresh Debian, as root):  make demo   |   make test
# Every target sets up what it needs: apt packages, .venv, the package itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMPS := .make

.PHONY: setup test lint typecheck imports unit demo bench clean

setup: $(STAMPS)/venv

$(STAMPS)/system: scripts/install-system-deps
	@mkdir -p $(STAMPS)
	scripts/install-system-deps
	@touch $@

$(STAMPS)/venv: pyproject.toml $(STAMPS)/system
	@mkdir -p $(STAMPS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

imports: setup
	$(BIN)/lint-imports

unit: setup
	$(BIN)/python -m pytest --durations=40 $(PYTEST_ARGS)

test: lint typecheck imports unit

demo: setup
	$(BIN)/rolltrace demo

bench: setup
	$(BIN)/python bench/pcap_ingest.py
	$(BIN)/python bench/analyze.py

clean:
	rm -rf $(STAMPS) $(VENV) .mypy_cache .pytest_cache .ruff_cache
