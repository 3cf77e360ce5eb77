# The Synod operator, CRDs and Helm chart (docs/operator.md).
# Included by the top-level Makefile after e2e/toolchain/toolchain.mk (which
# defines TOOLCHAIN_CACHE, kind-up, images and envtest, and puts helm/kind on PATH).
#
#   make crds-sync              copy crds/ (the single source) into charts/synod/crds/
#   make chart-lint             helm lint (both RBAC scopes) and the chart's render tests
#   make test-operator          unit tests of builders, planner, status, CRD and chart
#   make test-operator-controlplane   CRD + operator against a real kube-apiserver (envtest)
#   make e2e-operator           helm install on kind, scale 3->5->3 under load, upgrade, leader loss
#   make e2e-chaos              ChaosExperiments on kind (docs/chaos.md; not part of `make check` yet)
#   make operator-run           run the operator locally against $KUBECONFIG (all namespaces)

OPERATOR_CHART := charts/synod

.PHONY: crds-sync chart-lint test-operator test-operator-controlplane e2e-operator e2e-chaos \
	operator-run

crds-sync:
	cp crds/*.yaml $(OPERATOR_CHART)/crds/

chart-lint: venv helm
	helm lint $(OPERATOR_CHART) --set operator.scope=cluster --set example.enabled=true
	helm lint $(OPERATOR_CHART) --set operator.scope=namespace
	$(PY) -m pytest -q tests/unit/test_operator_chart.py tests/unit/test_operator_crd.py

test-operator: venv helm
	$(PY) -m pytest -q tests/unit/test_operator_crd.py tests/unit/test_operator_builders.py \
	    tests/unit/test_operator_planner.py tests/unit/test_operator_chart.py \
	    tests/unit/test_operator_lockservice.py tests/unit/test_operator_lockservice_crd.py \
	    tests/unit/test_operator_lockservice_admin.py tests/unit/test_operator_idgenerator.py \
	    tests/unit/test_operator_idgenerator_crd.py tests/unit/test_operator_idgenerator_admin.py \
	    tests/unit/test_operator_ratelimitpolicy.py tests/unit/test_operator_ratelimitpolicy_crd.py \
	    tests/unit/test_operator_ratelimitpolicy_admin.py tests/unit/test_operator_chaos.py

test-operator-controlplane: venv envtest helm
	. $(TOOLCHAIN_CACHE)/envtest.env && $(PY) -m pytest -q tests/controlplane/test_operator.py \
	    tests/controlplane/test_lockservice.py tests/controlplane/test_idgenerator.py \
	    tests/controlplane/test_ratelimitpolicy.py tests/controlplane/test_chaos.py

e2e-operator: venv kind-up images
	$(PY) -m pytest -q -s -p no:cacheprovider e2e/operator

e2e-chaos: venv kind-up images
	$(PY) -m pytest -q -s -p no:cacheprovider e2e/chaos

operator-run: venv
	SYNOD_OPERATOR_HEALTH_PORT=0 $(PY) -m synod_operator
