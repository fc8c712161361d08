# The two commands a new user needs (see README):
#   make demo   quick heterogeneous + homogeneous sweeps -> slope tables and figures in runs/
#   make test   ruff (lint + format check) and the test suite
# Both create .venv and install the package into it first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.moejax-installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/moejax sweep sweeps/heterogeneous.toml --quick --out runs/demo-heterogeneous
	$(BIN)/moejax sweep sweeps/homogeneous.toml --quick --out runs/demo-homogeneous
	$(BIN)/moejax compare runs/demo-heterogeneous runs/demo-homogeneous --out runs/demo-comparison

lint: $(STAMP)
	$(BIN)/ruff check moejax tests benchmarks
	$(BIN)/ruff format --check moejax tests benchmarks

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf runs .pytest_cache
