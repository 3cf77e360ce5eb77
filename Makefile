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

.PHONY: help venv demo test check lint types sim sim-gossip bench-core bench bench-ids bench-locks bench-ratelimit pytest-all clean observability etcdapi-protos etcd-compat-tools

help:
	@echo "make demo        start a local 3-node cluster and tour the primitives"
	@echo "make check       everything CI runs (lint, types, all test tiers, simulator, kind e2e)"
	@echo "make test        fast tiers: unit, simulation sweep, process clusters"
	@echo "make sim SEEDS=N run N simulator seeds (SEED=S replays one seed)"
	@echo "make sim-gossip  the gossip simulator's detection / false-positive table"
	@echo "make bench-core  throughput of the Raft core on an in-memory network"
	@echo "make bench       Synod against etcd under the same wrk load (ratios)"
	@echo "make bench-ids   ID generation: embedded, HTTP batched, segments vs Redis INCR"
	@echo "make bench-locks Synod's locks against Redis, ZooKeeper and etcd locks (ratios)"
	@echo "make bench-ratelimit  Synod's rate limits vs gubernator and limits+Redis (over-admission)"
	@echo "make observability  regenerate the chart's dashboards and alert rules (docs/observability.md)"
	@echo "make kind-up / images / e2e-smoke / e2e-operator / envtest: see docs/kubernetes.md"

$(VENV_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(VENV_STAMP)

demo: venv
	$(PY) -m synod.cli.main demo

# Tiers 1-3: unit and property tests, a simulator sweep, real processes on loopback.
test: venv
	$(PY) -m pytest -q tests/unit tests/sim tests/cluster

lint: venv
	$(VENV)/bin/ruff check node-image operator tests e2e conftest.py
	$(VENV)/bin/ruff format --check node-image operator tests e2e conftest.py

types: venv
	$(VENV)/bin/mypy

sim: venv
	$(PY) -m synod.sim $(if $(SEED),--seed $(SEED),--seeds $(SEEDS))

# The gossip (SWIM + Lifeguard) simulator's report table (docs/gossip.md), ~3 min.
sim-gossip: venv
	$(PY) -m synod.gossip.sim --table

bench-core: venv
	$(PY) -m synod.bench.core

# The peers' Python clients for the benchmarks (pyproject's `bench` extra).
BENCH_STAMP := $(VENV)/.bench-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
$(BENCH_STAMP): $(VENV_STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	@rm -f $(VENV)/.bench-* && touch $@

# Synod's ID generators against Redis INCR: installs redis-server from Debian first.
bench-ids: venv $(BENCH_STAMP)
	node-image/synod/bench/install-redis.sh
	$(PY) -m synod.bench.ids $(BENCH_ARGS)

# Synod against etcd on this machine: installs etcd-server and wrk from Debian first.
bench: venv
	node-image/synod/bench/install-peers.sh
	$(PY) -m synod.bench.etcd_compare $(BENCH_ARGS)

# Synod's locks against Redis 7, a ZooKeeper 3.8 ensemble and etcd 3.4 (docs/benchmarks.md):
# installs the servers from Debian and the lock clients (pyproject's `bench` extra).
bench-locks: venv $(BENCH_STAMP)
	node-image/synod/bench/install-lock-peers.sh
	PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python $(PY) -m synod.bench.locks $(BENCH_ARGS)

# Synod's rate limits (HTTP and Envoy RLS gRPC, every consistency mode) against gubernator
# v2.13.0 and envoyproxy/ratelimit (both built from the Go module proxy, cached) and the
# `limits` library over Redis 7 (docs/benchmarks.md): decisions/s, latency and measured
# over-admission.
bench-ratelimit: venv $(BENCH_STAMP)
	node-image/synod/bench/install-redis.sh
	node-image/synod/bench/install-gubernator.sh
	node-image/synod/bench/install-envoy-ratelimit.sh
	$(PY) -m synod.bench.ratelimit $(BENCH_ARGS)

# Tiers 1-4 in one pytest run. Every tool a test would otherwise skip without is
# built (or found in its cache) first: the envtest binaries and kubectl for
# tests/controlplane, helm for the chart and RBAC tests (test-tools). Under CI=true a
# skip is a failure (conftest.py), so a missing tool cannot pass unnoticed.
pytest-all: venv test-tools etcd-compat-tools
	. $(TOOLCHAIN_CACHE)/envtest.env && $(PY) -m pytest -q tests

# What CI runs (.ci/run). Fast checks first, the kind cluster last; pytest-all builds
# the tools its tests need before it runs them.
check: lint types pytest-all
	$(MAKE) --no-print-directory sim SEEDS=$(SEEDS)
	$(MAKE) --no-print-directory e2e-smoke
	$(MAKE) --no-print-directory e2e-operator

# Grafana dashboards and Prometheus rules, generated from the node's metric registry into
# charts/synod/files (tests/unit/test_observability.py fails when they are stale).
observability: venv
	$(PY) -m synod.observability

# What tests/cluster/test_etcd_compat.py runs against Synod's etcd API: python-etcd3 and
# its test suite's imports (pyproject's `etcd-compat` extra), its sdist (the suite is
# not in the wheel; cached in the venv, so tests never download) and etcdctl from
# Debian's etcd-client. Idempotent.
ETCD3_SDIST := $(VENV)/etcd3-sdist/etcd3-0.12.0.tar.gz
ETCD_COMPAT_STAMP := $(VENV)/.etcd-compat-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
$(ETCD_COMPAT_STAMP): $(VENV_STAMP)
	$(PY) -m pip install --quiet -e '.[dev,etcd-compat]'
	touch $@
$(ETCD3_SDIST): $(VENV_STAMP)
	$(PY) -m pip download --quiet --no-deps --no-binary :all: -d $(VENV)/etcd3-sdist etcd3==0.12.0
etcd-compat-tools: venv $(ETCD_COMPAT_STAMP) $(ETCD3_SDIST)
	@command -v etcdctl >/dev/null || node-image/synod/bench/apt-install.sh etcd-compat-tools etcd-client

# Re-fetch etcd's .proto files (Go module proxy) and regenerate synod/etcdapi/_pb; both
# are committed (tests/unit/test_etcdapi_protos.py checks the generated code).
etcdapi-protos: venv
	$(PY) -m synod.etcdapi.genprotos fetch
	$(PY) -m synod.etcdapi.genprotos generate

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# Kubernetes toolchain, kind cluster, images and e2e targets live beside their scripts.
include e2e/toolchain/toolchain.mk
include e2e/operator.mk
