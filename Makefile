# Synod — every target creates or reuses the project virtualenv itself, so a
# fresh clone needs nothing but python3 (>= 3.11) and make.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
SEEDS ?= 500
SEED ?=

.PHONY: help venv demo test check lint types sim bench-core clean

help:
	@echo "make demo        start a local in-process cluster and show the primitives"
	@echo "make check       everything CI runs (lint, types, tests, simulator)"
	@echo "make test        fast tiers: unit, property and a short simulation"
	@echo "make sim SEEDS=N run N simulator seeds (SEED=S replays one seed)"
	@echo "make bench-core  throughput of the Raft core on an in-memory network"

$(VENV_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(VENV_STAMP)

demo: venv
	$(PY) -m synod.cli.main demo

test: venv
	$(PY) -m pytest -q -m 'not slow' tests

lint: venv
	$(VENV)/bin/ruff check node-image operator tests
	$(VENV)/bin/ruff format --check node-image operator tests

types: venv
	$(VENV)/bin/mypy

sim: venv
	$(PY) -m synod.sim $(if $(SEED),--seed $(SEED),--seeds $(SEEDS))

bench-core: venv
	$(PY) -m synod.bench.core

check: lint types
	$(PY) -m pytest -q tests
	$(MAKE) --no-print-directory sim SEEDS=$(SEEDS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# Kubernetes toolchain, kind cluster, images and e2e targets live beside their scripts.
-include e2e/toolchain/toolchain.mk
