# Two commands on a fresh machine: `make study` and `make test`. Both create .venv when missing.
PYTHON ?= python3
# Pinned: an unpinned torch pulls several GB of CUDA wheels. Override for other builds, e.g.
#   make study TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu124"
TORCH ?= torch==2.13.0
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
STUDY ?= runs/STUDY

.PHONY: setup study test test-fast lint strip clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

study: $(STAMP)
	$(VENV)/bin/cmgan study --out $(STUDY)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest --runslow --nbval-lax tests notebooks

test-fast: $(STAMP)
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check cmgan_lib tests benchmarks

strip: $(STAMP)
	$(VENV)/bin/nbstripout notebooks/*.ipynb

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
