# The two commands a new user needs (see README):
#   make demo   quick heterogeneous + homogeneous sweeps -> slope tables and figures in runs/
#   make test   ruff (lint + format check) and the test suite
# Both create .venv and install the package into it first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.moejax-installed

.PHONY: demo test lint paper clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/moejax sweep sweeps/heterogeneous.toml --quick --out runs/demo-heterogeneous
	$(BIN)/moejax sweep sweeps/homogeneous.toml --quick --out runs/demo-homogeneous
	$(BIN)/moejax compare runs/demo-heterogeneous runs/demo-homogeneous --out runs/demo-comparison

# Full studies (README, "Results"); each is one command. Minutes to hours on a laptop CPU.
paper: $(STAMP)
	$(BIN)/moejax sweep sweeps/heterogeneous.toml --out runs/heterogeneous
	$(BIN)/moejax sweep sweeps/homogeneous.toml --out runs/homogeneous
	$(BIN)/moejax compare runs/heterogeneous runs/homogeneous --out runs/heterogeneous-vs-homogeneous

# Studies: a config with a [grid] table runs one sweep per grid point into runs/<study>/<point>/
# and writes runs/<study>/study.{csv,md,png}; `moejax study runs/<study>` redraws it from the runs.
STUDIES := phase phase-asymptote drift gates gates-asymptote predecessor adapters overfit ablation init
.PHONY: $(STUDIES)
$(STUDIES): $(STAMP)
	$(BIN)/moejax sweep sweeps/$@.toml --out runs/$@

lint: $(STAMP)
	$(BIN)/ruff check moejax tests benchmarks
	$(BIN)/ruff format --check moejax tests benchmarks

# Two workers on this project's 2-core machines (one per core with -n auto); a test file stays on
# one worker (--dist loadfile) so that its module fixtures reuse their compiled programs.
test: lint
	$(BIN)/python -m pytest -q -n auto --dist loadfile

clean:
	rm -rf runs .pytest_cache
