# Two commands on a fresh machine: `make study` and `make test`. Both create .venv when missing.
PYTHON ?= python3
# Pinned: an unpinned torch pulls several GB of CUDA wheels. Override for other builds, e.g.
#   make study TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu124"
TORCH ?= torch==2.13.0
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
STUDY ?= runs/STUDY
LAB_STAMP := $(VENV)/.lab-stamp
LAB_ARGS ?=
LAB_SCREENSHOT ?= runs/lab_check.png

.PHONY: setup study test test-fast lint strip clean lab lab-check

setup: $(STAMP)

# Bytecode: pip compiles one file at a time; compileall -j 0 after --no-compile installs uses every core (on idle
# cores, a fresh clone's CI of 2026-12-07: venv 121 s against 142 s with pip's compile). torch and sympy (56 of the
# 137 MB compiled) compile on the second core while pip installs the rest. Nothing compiles what no process imports
# (the packages' own test suites, 44 MB; torch's test helpers; pip; setuptools); cmgan_lib does, an editable install
# imported by every trainer, kernel and worker. A few files of torch's tests are for newer Pythons and never compile
# (pip skips them silently too), hence `|| true`. No pip self-upgrade: the venv's own pip installs an editable
# pyproject project.
NO_BYTECODE := /tests?/|/torch/testing/_internal/|/site-packages/(pip|setuptools)/
$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-compile $(TORCH)
	{ $(PY) -m compileall -qq -x '$(NO_BYTECODE)' $(VENV)/lib/python*/site-packages/torch \
		$(VENV)/lib/python*/site-packages/sympy > /dev/null 2>&1 || true; } & \
	$(PY) -m pip install -q --no-compile -e ".[dev,cluster]"; rc=$$?; wait; exit $$rc
	$(PY) -m compileall -qq -j 0 -x '$(NO_BYTECODE)' $(VENV)/lib cmgan_lib > /dev/null || true
	@touch $(STAMP)

study: $(STAMP)
	$(VENV)/bin/cmgan study --out $(STUDY)

# TEST_WORKERS pytest-xdist workers of one torch thread each (tiny models use a second thread poorly); 4 on 2
# cores, since many tests wait on the processes they start (ablate, submitit, DDP, kernels): on a fresh clone of
# ca5e977 (2026-12-07) pytest took 636 s on 3 workers, then 578 s on 4 in the same clone (its default corpus
# built by then, ~35 s of one worker); on db2cbf8, 546 s on 4 and 562 s on 6. A notebook's cells stay together on
# one worker (tests/conftest.py).
# TEST_WORKERS=0: one process.
TEST_WORKERS ?= 4
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -n $(TEST_WORKERS) --runslow --nbval-lax \
		--durations=20 tests notebooks

test-fast: $(STAMP)
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff format --check cmgan_lib tests benchmarks

# JupyterLab on notebooks/; each notebook reads $(STUDY) (what `make study` writes) unless its parameters say
# otherwise. Extra server options: make lab LAB_ARGS="--port=8899 --no-browser"
lab: $(LAB_STAMP)
	@test -d $(STUDY)/runs || echo "No $(STUDY)/runs yet: run \`make study\` first (the notebooks read it by default)."
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(LAB_ARGS)

$(LAB_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[dev,cluster,lab]"
	@touch $(LAB_STAMP)

# What `make lab` shows a user, checked headless: JupyterLab on a free 127.0.0.1 port with a token, notebook 01
# opened in headless Chromium (apt-get install chromium), its title cell rendered; screenshot at LAB_SCREENSHOT.
lab-check: $(LAB_STAMP)
	LAB_SCREENSHOT=$(LAB_SCREENSHOT) $(PY) -m pytest -q -s --runslow tests/test_lab.py

strip: $(STAMP)
	$(VENV)/bin/nbstripout notebooks/*.ipynb

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
