# crmsync: Keap <-> Customcrm two-way sync.
# A fresh clone needs nothing but Python 3.11 and `make <target>`:
# every target that needs the virtualenv creates it first.

.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help sync test lint typecheck sandbox extract plan status docs bench bench-paced clean lock postgres

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (set PYTHON=...)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

sync: $(STAMP) ## run the sync (the bundled sandboxes with demo data when no endpoint is configured)
	$(BIN)/crmsync sync

test: $(STAMP) ## lint, type-check and run the whole test suite (the end-to-end tests on DuckDB and on a throwaway PostgreSQL)
	./.ci/install-postgres
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n 2 --dist worksteal --durations=15

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

sandbox: $(STAMP) ## serve both sandboxes with demo data in the foreground
	$(BIN)/crmsync sandbox

extract: $(STAMP) ## run the ingest step alone
	$(BIN)/crmsync extract

docs: $(STAMP) ## build the dbt docs (property tables, lineage) and serve them on 127.0.0.1:8080
	$(BIN)/crmsync docs

plan: $(STAMP) ## show what a sync would write, without writing
	$(BIN)/crmsync plan

status: $(STAMP) ## linked, pending, conflicts and rejections per mapping
	$(BIN)/crmsync status

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) ## the quick benchmark set: 10,000 records per kind (sync scenarios unpaced, a first sync at the limits, drt side by side)
	$(BIN)/python -m bench.run

bench-paced: $(BENCH_STAMP) ## + the runs at the published limits (1,000 Keap writes, a first sync at 100,000, 20 tenants, the hooks), the sync on PostgreSQL; about 2 h
	$(BIN)/python -m bench.run --paced

postgres: $(STAMP) ## a throwaway PostgreSQL cluster in the foreground, as the tests start theirs (Ctrl-C removes it)
	./.ci/install-postgres
	$(BIN)/python -m tests.postgres

lock: ## re-pin every dependency into constraints.txt (needs network to PyPI)
	rm -rf /tmp/crmsync-lock && $(PYTHON) -m venv /tmp/crmsync-lock
	/tmp/crmsync-lock/bin/pip install --quiet -e '.[dev,bench]'
	/tmp/crmsync-lock/bin/pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean: ## remove the virtualenv and local data (the sandboxes' demo data and the DuckDB file)
	rm -rf $(VENV) data build .pytest_cache .mypy_cache .ruff_cache
