# The README's two commands: `make demo` and `make test`. Both create .venv when
# it is missing and install torch first (CPU build here, CUDA elsewhere), then lmrec.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lmrec-installed
PYTEST_ARGS ?=

.PHONY: install demo lint test test-unit test-fast test-integration bench-train clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/lmrec demo

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint Dockerfile
	PYTHONPATH=tests $(VENV)/bin/lint-imports  # layering contracts in pyproject.toml

test: install lint
	tests/run_suites.sh $(PY) $(PYTEST_ARGS)  # unit and integration suites side by side (see the script)

test-unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# Unit tests without the `slow` ones (gloo ranks, crash/resume, the wheel build); `make test` runs them all.
test-fast: install
	$(PY) -m pytest tests/unit -m "not slow" $(PYTEST_ARGS)

test-integration: install
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

bench-train: install
	$(PY) jobs/benchmark_train.py

clean:
	rm -rf $(VENV) build dist platform/*.egg-info .pytest_cache
