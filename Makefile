# pycalico: `make demo` and `make test` both run `make setup` first.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup demo test lint typecheck unit bench clean

setup:
	@./scripts/setup.sh

demo: setup
	@$(BIN)/python -m pycalico.demo

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: setup
	$(BIN)/mypy --strict src/

test: setup lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

unit: setup
	$(BIN)/pytest tests/unit tests/conformance $(PYTEST_ARGS)

# `make bench` runs every bench (progress display), writes bench/results/<date>-<host>.json,
# plots and BENCHMARKS.md; `make bench QUICK=1` is the < 5 minute look. CNI_BEFORE=<rev>
# adds the CNI fallback plugin of that revision to the interleaved CNI runs (before/after).
QUICK ?=
CNI_BEFORE ?=
bench: setup
	PYTHONPATH=$(CURDIR)/src $(BIN)/python bench/run.py $(if $(QUICK),--quick) $(if $(CNI_BEFORE),--cni-before $(CNI_BEFORE))

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
