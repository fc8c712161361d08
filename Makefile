# The two commands a new user needs (see README):
#   make demo   quick heterogeneous + homogeneous sweeps -> slope tables and figures in runs/
#   make test   ruff (lint + format check) and the test suite
# Both create .venv and install the package into it first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.moejax-installed

.PHONY: demo test lint paper ablation phase init-study predecessor adapters gates clean

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

ablation: $(STAMP)
	for a in tanh sigmoid gelu relu; do \
	  $(BIN)/moejax sweep sweeps/ablation/$$a.toml --out runs/ablation-$$a || exit 1; done
	$(BIN)/moejax compare runs/ablation-tanh runs/ablation-sigmoid runs/ablation-gelu \
	  runs/ablation-relu --out runs/ablation

phase: $(STAMP)
	for g in 0 0.0625 0.125 0.1875 0.25; do \
	  $(BIN)/moejax sweep sweeps/phase/gamma-$$g.toml --out runs/phase-gamma-$$g || exit 1; done
	$(BIN)/moejax phase runs/phase-gamma-* --out runs/phase

init-study: $(STAMP)
	for m in truth near_truth multistart; do \
	  $(BIN)/moejax sweep sweeps/init/$$m.toml --out runs/init-$$m || exit 1; done
	$(BIN)/moejax compare runs/init-truth runs/init-near_truth runs/init-multistart --out runs/init

# The regression predecessor's three settings, side by side with its published slopes.
predecessor: $(STAMP)
	for s in distinguishable collapse_eta collapse_nu collapse_eta_weak collapse_nu_weak; do \
	  $(BIN)/moejax sweep sweeps/predecessor/$$s.toml --out runs/predecessor-$$s || exit 1; done
	$(BIN)/moejax predecessor --distinguishable runs/predecessor-distinguishable \
	  --collapse-eta runs/predecessor-collapse_eta --collapse-nu runs/predecessor-collapse_nu \
	  --collapse-eta-weak runs/predecessor-collapse_eta_weak \
	  --collapse-nu-weak runs/predecessor-collapse_nu_weak --out runs/predecessor

# Two adapters (Voronoi loss), under a softmax gate and under independent sigmoid gates.
adapters: $(STAMP)
	$(BIN)/moejax sweep sweeps/adapters/two.toml --out runs/adapters-two
	$(BIN)/moejax sweep sweeps/adapters/two-sigmoid.toml --out runs/adapters-two-sigmoid
	$(BIN)/moejax compare runs/adapters-two runs/adapters-two-sigmoid --out runs/adapters

# Input-free vs softmax gate as the adapter's weight shrinks.
GATE_RUNS := $(foreach g,softmax input_free,$(foreach l,50 25 10 05 02,$(g)-lam$(l)))
gates: $(STAMP)
	for r in $(GATE_RUNS); do \
	  $(BIN)/moejax sweep sweeps/gates/$$r.toml --out runs/gates-$$r || exit 1; done
	$(BIN)/moejax gates $(addprefix runs/gates-,$(GATE_RUNS)) --out runs/gates

lint: $(STAMP)
	$(BIN)/ruff check moejax tests benchmarks
	$(BIN)/ruff format --check moejax tests benchmarks

# Two workers on this project's 2-core machines (one per core with -n auto); a test file stays on
# one worker (--dist loadfile) so that its module fixtures reuse their compiled programs.
test: lint
	$(BIN)/python -m pytest -q -n auto --dist loadfile

clean:
	rm -rf runs .pytest_cache
