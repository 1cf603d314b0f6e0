# Everything a fresh machine needs: `make demo` and `make test` create the venv and install first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint format bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP)

demo: install
	$(BIN)/anabranch demo --out results.jsonl

test: install lint
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check anabranch tests bench
	$(BIN)/ruff format --check anabranch tests bench

format: install
	$(BIN)/ruff check --fix anabranch tests bench
	$(BIN)/ruff format anabranch tests bench
