# The two commands a new user needs (see README):
#   make demo   quick heterogeneous + homogeneous sweeps -> slope tables and figures in runs/
#   make test   ruff (lint + format check), the docs build (strict) and the test suite
# Both create .venv and install the package into it first. `make docs` builds the site into site/.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.moejax-installed

.PHONY: demo test lint docs docs-strict paper realdata clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test,docs,data]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/moejax sweep sweeps/heterogeneous.toml --quick --out runs/demo-heterogeneous
	$(BIN)/moejax sweep sweeps/homogeneous.toml --quick --out runs/demo-homogeneous
	$(BIN)/moejax compare runs/demo-heterogeneous runs/demo-homogeneous --out runs/demo-comparison

# Full studies (docs/results.md); each is one command; they write to runs/ (the shipped runs
# are in docs/results/). Minutes to hours on a laptop CPU.
paper: $(STAMP)
	$(BIN)/moejax sweep sweeps/heterogeneous.toml --out runs/heterogeneous
	$(BIN)/moejax sweep sweeps/homogeneous.toml --out runs/homogeneous
	$(BIN)/moejax compare runs/heterogeneous runs/homogeneous --out runs/heterogeneous-vs-homogeneous

# Studies: a config with a [grid] table runs one sweep per grid point into runs/<study>/<point>/
# and writes runs/<study>/study.{csv,md,png}; `moejax study runs/<study>` redraws it from the runs.
STUDIES := phase phase-asymptote drift coverage gates gates-asymptote predecessor adapters overfit ablation uniform uniform-asymptote init init-homogeneous em plain crpe-sgame
.PHONY: $(STUDIES)
$(STUDIES): $(STAMP)
	$(BIN)/moejax sweep sweeps/$@.toml --out runs/$@

# Real data: digits, a frozen expert pre-trained on rotated digits, adapters on target samples
# (docs/real-data.md; needs the extra moejax[data]). About 5 minutes of CPU.
realdata: $(STAMP)
	$(BIN)/moejax realdata --out runs/realdata

lint: $(STAMP)
	$(BIN)/ruff check moejax tests benchmarks
	$(BIN)/ruff format --check moejax tests benchmarks

# Two workers on this project's 2-core machines (one per core with -n auto); a test file stays on
# one worker (--dist loadfile) so that its module fixtures reuse their compiled programs.
# The documentation site: regenerate the configs reference from the config schema, then build
# docs/ into site/ (strict: a broken link or reference fails).
docs: $(STAMP)
	$(BIN)/python docs/gen_configs.py
	$(BIN)/mkdocs build --strict

# The strict build alone; it fails when docs/configs.md is stale (run `make docs` and commit),
# on a broken link or a docstring the API reference cannot parse. No --quiet: it hides the
# warnings that --strict turns into a failure (a quiet strict build passes a broken link).
docs-strict: $(STAMP)
	$(BIN)/mkdocs build --strict

test: lint docs-strict
	$(BIN)/python -m pytest -q -n auto --dist loadfile

clean:
	rm -rf runs site .pytest_cache
