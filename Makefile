# Two commands on a fresh clone: `make run` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
BENCH_ROWS ?= 1000000
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml requirements-test.lock setup.py flows/transform/_fastcheck.c
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) (Python 3.11)"; exit 2; }
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install -q uv
	$(PYTHON) -m uv venv -q --allow-existing -p $(PYTHON) $(VENV)
	$(PYTHON) -m uv pip install -q --compile-bytecode -p $(PY) -r requirements-test.lock
	$(PYTHON) -m uv pip install -q -p $(PY) --no-deps -e .
	@touch $@

venv: $(VENV)/.installed ## create .venv with the locked dependencies

run: venv ## load the bundled sample into the embedded PostgreSQL; runs kept in the local Prefect UI (127.0.0.1:4200)
	$(VENV)/bin/ecommerce-etl run --source sample

stop: ## stop the local Prefect server and the embedded PostgreSQL that `make run` started
	@if [ -x $(VENV)/bin/ecommerce-etl ]; then $(VENV)/bin/ecommerce-etl stop; else echo "nothing to stop (no .venv)"; fi

test: venv checkov promtool lint ## make lint, then every test rung (T1-T4; T5 kind skips without a cluster toolchain)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-unit: venv ## the unit tier only (-m unit): no database, Prefect server or Docker, under a minute
	$(PY) -m pytest -q -m unit $(PYTEST_ARGS)

LINT_PATHS ?= flows benchmarks scripts
lint: venv ## ruff check, ruff format --check (LINT_PATHS), mypy flows/, shellcheck on every script
	@rc=0; \
	echo "== ruff check $(LINT_PATHS)"; $(VENV)/bin/ruff check $(LINT_PATHS) || rc=1; \
	echo "== ruff format --check $(LINT_PATHS)"; $(VENV)/bin/ruff format --check $(LINT_PATHS) || rc=1; \
	echo "== mypy (flows/, pyproject.toml)"; $(VENV)/bin/mypy || rc=1; \
	echo "== shellcheck"; SHELLCHECK=$(VENV)/bin/shellcheck scripts/lint-shell.sh || rc=1; \
	exit $$rc

fuzz: venv ## differential fuzzing against tests/oracle.py, both load paths: FUZZ_EXAMPLES (2000) files, FUZZ_EDGE_EXAMPLES (300) pairs loading at once, FUZZ_LONG_EXAMPLES (25) with 4-16 MiB lines; the compiled check vs its reference (plain and ASan/UBSan builds)
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest -q tests/test_differential.py -k oracle --hypothesis-show-statistics
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest -q tests/test_fastcheck_native.py --hypothesis-show-statistics
	PY=$(PY) scripts/fuzz-native-sanitized.sh

bench: venv ## time psql \copy vs our loader vs the tutorial's to_sql (BENCH_ROWS=1000000)
	$(PY) -m benchmarks.load --rows $(BENCH_ROWS)

bench-full: venv ## the full 20.7 M rows: psql \copy x5 vs the whole `ecommerce-etl run` (files cached outside git)
	$(PY) -m benchmarks.full $(BENCH_FULL_ARGS)

psql: venv ## open psql on the database `make run` loads (ecommerce-etl psql)
	$(VENV)/bin/ecommerce-etl psql

server: venv ## start (or reuse) the local Prefect server with its UI on http://127.0.0.1:4200, in the background
	$(VENV)/bin/ecommerce-etl server

docs: venv ## regenerate the README's configuration table from flows/settings.py (a test checks it)
	$(PY) -m flows.docs

lock: ## re-resolve requirements*.lock from pyproject.toml
	uv pip compile pyproject.toml --python-version 3.11 -q -o requirements.lock
	uv pip compile pyproject.toml --extra test --python-version 3.11 -q -o requirements-test.lock

clean: stop ## stop the local servers, remove the venv, downloaded data and the embedded database
	rm -rf $(VENV) data .data

.PHONY: help venv run stop test test-unit lint docs fuzz bench bench-full psql server lock clean

# Component targets (kind, image, e2e...) live beside this file.
-include mk/*.mk
