# pycalico: `make demo` and `make test` both run `make setup` first.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup demo test lint typecheck docs unit bench dist clean

setup:
	@./scripts/setup.sh

demo: setup
	@$(BIN)/python -m pycalico.demo

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: setup
	$(BIN)/mypy --strict src/

test: setup lint typecheck docs
	$(BIN)/pytest $(PYTEST_ARGS)

# The documentation site (MkDocs); --strict fails on any broken link or missing page. The CLI
# and settings reference pages are generated from the code at build time.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -q

unit: setup
	$(BIN)/pytest tests/unit tests/conformance $(PYTEST_ARGS)

# `make bench` runs every bench (progress display), writes bench/results/<date>-<host>.json,
# plots and BENCHMARKS.md; `make bench QUICK=1` is the < 5 minute look. CNI_BEFORE=<rev>
# adds the CNI fallback plugin of that revision to the interleaved CNI runs (before/after).
QUICK ?=
CNI_BEFORE ?=
bench: setup
	PYTHONPATH=$(CURDIR)/src $(BIN)/python bench/run.py $(if $(QUICK),--quick) $(if $(CNI_BEFORE),--cni-before $(CNI_BEFORE))

# A wheel and an sdist in dist/, stamped with the commit (pycalico/_commit) they come from.
dist: setup
	git rev-parse --short=12 HEAD > src/pycalico/_commit
	$(BIN)/python -m build --outdir dist . ; rc=$$?; rm -f src/pycalico/_commit; exit $$rc

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
