"""The Helm chart: lint, render in both RBAC scopes, least privilege, values schema.

Needs `helm` (built by e2e/toolchain into /var/cache/synod-toolchain/bin, or on
PATH); skipped with that reason when it is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "synod"
TOOLCHAIN_HELM = Path("/var/cache/synod-toolchain/bin/helm")
HELM_TIMEOUT_S = 60


def _helm() -> str:
    found = shutil.which("helm") or (
        str(TOOLCHAIN_HELM) if os.access(TOOLCHAIN_HELM, os.X_OK) else None
    )
    if found is None:
        pytest.skip("helm not found: run `make toolchain` (e2e/toolchain) or put helm on PATH")
    return found


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_helm(), *args], capture_output=True, text=True, timeout=HELM_TIMEOUT_S, check=check
    )


def render(*sets: str) -> list[dict[str, Any]]:
    flags = [f"--set={s}" for s in sets]
    out = helm("template", "rel", str(CHART), "--namespace=synod-system", *flags).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.mark.parametrize("scope", ["cluster", "namespace"])
def test_lint(scope: str) -> None:
    result = helm("lint", str(CHART), f"--set=operator.scope={scope}", "--set=example.enabled=true")
    assert result.returncode == 0
    assert "0 chart(s) failed" in result.stdout


def test_values_schema_rejects_even_replicas_and_unknown_keys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    even = helm("template", "rel", str(CHART), "--set=example.replicas=4", check=False)
    assert even.returncode != 0 and "example/replicas" in even.stderr
    unknown = helm("template", "rel", str(CHART), "--set=operator.typo=1", check=False)
    assert unknown.returncode != 0


def test_namespace_scope_is_the_default_and_grants_nothing_elsewhere() -> None:
    # Issue 15: the cluster-wide default let the operator create and delete
    # StatefulSets, Services and claims in every namespace.
    docs = render()
    roles = [d for d in docs if d["kind"] == "Role"]
    assert [r["metadata"]["namespace"] for r in roles] == ["synod-system"]
    assert [d["metadata"]["namespace"] for d in docs if d["kind"] == "RoleBinding"] == [
        "synod-system"
    ]
    cluster_roles = [d for d in docs if d["kind"] == "ClusterRole"]
    cluster_wide = {verb for r in cluster_roles for rule in r["rules"] for verb in rule["verbs"]}
    assert cluster_wide == {"list", "watch"}, "nothing but kopf's CRD watch is cluster-wide"
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    env = {
        e["name"]: e["value"]
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["SYNOD_OPERATOR_NAMESPACES"] == "synod-system"


def test_cluster_scope_rbac_is_least_privilege() -> None:
    docs = render("operator.scope=cluster")
    # The dashboards' ConfigMaps: tests/unit/test_chart_monitoring.py.
    kinds = sorted(d["kind"] for d in docs if d["kind"] != "ConfigMap")
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Pod", "ServiceAccount"]
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
        assert "*" not in rule["apiGroups"], rule
    granted = {
        (g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
    }
    assert ("", "secrets") not in granted
    assert ("synod.dev", "consensusclusters/status") in granted
    assert ("synod.dev", "lockservices/status") in granted
    assert ("synod.dev", "idgenerators") in granted
    assert ("synod.dev", "idgenerators/status") in granted
    assert ("synod.dev", "ratelimitpolicies") in granted
    assert ("synod.dev", "ratelimitpolicies/status") in granted
    # A LockService without clusterRef gets an owned ConsensusCluster.
    clusters = next(r for r in role["rules"] if r["resources"] == ["consensusclusters"])
    assert {"create", "delete"} <= set(clusters["verbs"])
    pods = next(r for r in role["rules"] if "pods" in r["resources"])
    assert set(pods["verbs"]) == {"get", "list", "watch", "delete"}


def test_namespace_scope_renders_a_role_per_namespace() -> None:
    docs = render("operator.scope=namespace", "operator.watchNamespaces={team-a,team-b}")
    roles = sorted(d["metadata"]["namespace"] for d in docs if d["kind"] == "Role")
    assert roles == ["team-a", "team-b"]
    cluster_roles = [d for d in docs if d["kind"] == "ClusterRole"]
    assert [r["rules"] for r in cluster_roles] == [
        [{"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
          "verbs": ["list", "watch"]}]
    ], "only kopf's read-only CRD watch is cluster-wide"  # fmt: skip
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    env = {
        e["name"]: e["value"]
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["SYNOD_OPERATOR_NAMESPACES"] == "team-a,team-b"


def test_operator_pod_is_locked_down() -> None:
    deployment = next(d for d in render() if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["image"] == "synod/operator:dev"


def test_example_cluster_and_helm_test_hook() -> None:
    docs = render("example.enabled=true", "example.name=demo")
    cluster = next(d for d in docs if d["kind"] == "ConsensusCluster")
    assert cluster["spec"] == {"replicas": 3, "image": "synod/node", "version": "dev",
                               "storage": {"size": "1Gi"}}  # fmt: skip
    hook = next(d for d in docs if d["kind"] == "Pod")
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "test"
    env = hook["spec"]["containers"][0]["env"]
    assert env == [{"name": "SYNOD_URL", "value": "http://demo.synod-system.svc:2379"}]
    script = hook["spec"]["containers"][0]["command"][-1]
    compile(script, "helm-test", "exec")
    assert "/v1/kv/put" in script and "/v1/kv/range" in script
    assert not [d for d in render() if d["kind"] == "ConsensusCluster"]


def test_notes_tell_what_to_apply_next() -> None:
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    assert "kind: ConsensusCluster" in notes
    assert "condition=Available" in notes


def test_chaos_injector_is_opt_in_and_the_operator_may_run_chaos_jobs() -> None:
    def env_of(docs: list[dict[str, Any]]) -> dict[str, str]:
        deployment = next(d for d in docs if d["kind"] == "Deployment")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e["value"] for e in container["env"]}

    docs = render()
    assert env_of(docs)["SYNOD_OPERATOR_CHAOS_INJECTOR"] == "0", "privileged: off by default"
    enabled = env_of(render("chaos.injector.enabled=true", "chaos.injector.image.tag=t1"))
    assert enabled["SYNOD_OPERATOR_CHAOS_INJECTOR"] == "1"
    assert enabled["SYNOD_OPERATOR_CHAOS_IMAGE"] == "synod/chaos-tools:t1"
    role = next(d for d in docs if d["kind"] == "Role")  # namespace scope, the default
    granted = {
        (g, r, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    assert ("synod.dev", "chaosexperiments/status", "patch") in granted
    assert ("batch", "jobs", "create") in granted and ("", "pods/log", "get") in granted
    assert ("", "pods/exec", "create") not in {(g, r, v) for g, r, v in granted}
