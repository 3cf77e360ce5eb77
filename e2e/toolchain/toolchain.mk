# Kubernetes toolchain: an offline kind cluster, helm, envtest binaries and the
# Synod images, all built on this machine (see docs/kubernetes.md).
# Included by the top-level Makefile (which defines PY, VENV_STAMP and venv).
#
#   make kind-up [KIND_NODES=3]   create/reuse kind cluster "synod" (1 node unless KIND_NODES)
#   make kind-down                delete it (caches stay)
#   make images                   build synod/node, synod/operator, synod/chaos-tools; kind load them
#   make envtest                  kube-apiserver + etcd for control-plane tests; prints KUBEBUILDER_ASSETS
#   make helm                     helm (chart and RBAC tests, chart-lint); cached by version
#   make test-tools               everything pytest needs so that no test skips: envtest, helm, Debian tools
#   make test-controlplane        tests/controlplane against a real kube-apiserver
#   make e2e-smoke                smoke test on the cluster (runs kind-up and images first)
#   make toolchain                build every binary and image without creating a cluster
#   KIND_PUBLIC=1 make ...        machine with internet: public kindest/node and python:3.12-slim

TOOLCHAIN_DIR := e2e/toolchain
KIND_NODES ?=
KIND_PUBLIC ?= 0
TOOLCHAIN_ENV := SYNOD_KIND_NODES=$(KIND_NODES) SYNOD_KIND_PUBLIC=$(KIND_PUBLIC)
TOOLCHAIN_CACHE ?= /var/cache/synod-toolchain
export PATH := $(TOOLCHAIN_CACHE)/bin:$(PATH)

.PHONY: docker-up toolchain kind-up kind-down images envtest helm test-tools test-controlplane e2e-smoke

docker-up:
	bash $(TOOLCHAIN_DIR)/docker-up.sh

toolchain: docker-up
	bash $(TOOLCHAIN_DIR)/build-k8s.sh
	bash $(TOOLCHAIN_DIR)/build-tools.sh
	bash $(TOOLCHAIN_DIR)/build-images.sh k8s base node python

kind-up:
	$(TOOLCHAIN_ENV) bash $(TOOLCHAIN_DIR)/kind-up.sh

kind-down:
	bash $(TOOLCHAIN_DIR)/kind-down.sh

images: venv
	$(TOOLCHAIN_ENV) PY=$(PY) bash $(TOOLCHAIN_DIR)/synod-images.sh

envtest:
	@mkdir -p $(TOOLCHAIN_CACHE)
	@bash $(TOOLCHAIN_DIR)/envtest.sh > $(TOOLCHAIN_CACHE)/envtest.env
	@echo "envtest binaries ready; for tests run outside make, set:"
	@cat $(TOOLCHAIN_CACHE)/envtest.env

# build-tools.sh reuses a helm built for the pinned version (no docker, only go).
helm:
	bash $(TOOLCHAIN_DIR)/build-tools.sh helm

# The tools tests skip without (see the skip conditions in tests/): with these, a skip
# in `make pytest-all` means a bug, and CI=true makes it fail.
# Debian tools the tests call: openssl (controlplane tokens), unshare + ip + iptables
# (black-holed peer links inside a private network namespace).
TEST_DEBIAN_PACKAGES := openssl util-linux iproute2 iptables

test-tools: envtest helm
	@missing=$$(for tool in openssl unshare ip iptables; do command -v $$tool >/dev/null || echo $$tool; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing $(TEST_DEBIAN_PACKAGES) (missing: $$missing)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(TEST_DEBIAN_PACKAGES) >/dev/null; \
	fi
	@# promtool and prometheus (the alert-rule tests, the real-Prometheus query test): the
	@# Debian package, installed with its service kept from starting (the tests run their own).
	@dpkg -s prometheus >/dev/null 2>&1 || node-image/synod/bench/apt-install.sh test-tools prometheus "prometheus prometheus-node-exporter"

test-controlplane: venv envtest helm
	. $(TOOLCHAIN_CACHE)/envtest.env && $(PY) -m pytest -q tests/controlplane

e2e-smoke: venv kind-up images
	$(PY) -m pytest -q -p no:cacheprovider e2e/smoke
