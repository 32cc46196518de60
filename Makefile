# Everything installs into .venv on first use; `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/jaxhlm run examples/hsb_model_building.do

# Two pytest processes, one test file each at a time: the suite is bound by XLA compilation, which one process
# runs on ~1.4 cores; two finish it about a fifth sooner on the 2-core CI machine. TEST_WORKERS=0 runs it in one.
TEST_WORKERS ?= 2
# The same compilation is mostly LLVM's optimisation passes, which the suite's small programs barely need: without
# them (XLA's backend level 0) it takes a quarter less time on the CI machine. The programs and their float64
# arithmetic are the same; `make demo` and the benchmarks compile as a user's session does. TEST_XLA_FLAGS= (empty)
# runs the suite with the default passes.
TEST_XLA_FLAGS ?= --xla_backend_optimization_level=0

test: $(STAMP)
	XLA_FLAGS="$$XLA_FLAGS $(TEST_XLA_FLAGS)" $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

$(VENV)/.bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	@Rscript -e 'library(lme4)' >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq r-cran-lme4 >/dev/null) || echo "lme4 not installed: the benchmark will skip it"; }
	touch $(VENV)/.bench

bench: $(VENV)/.bench
	$(PY) experiments/bench_hsb.py
	$(PY) experiments/bench_compile.py
	$(PY) experiments/bench_bootstrap.py
	$(PY) experiments/bench_scale.py
	$(PY) experiments/bench_nested.py
	$(PY) experiments/bench_crossed.py
	$(PY) experiments/bench_residuals.py
	$(PY) experiments/bench_robust.py
	$(PY) experiments/bench_profile.py
	$(PY) experiments/neural_mixed.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
