"""Tier 4: the CRD and the operator against a real kube-apiserver.

The operator runs as a subprocess (`python -m synod_operator`) with the token of
the chart's own ServiceAccount, bound by the chart's own ClusterRole: the RBAC
is exercised, not assumed. There is no kubelet or controller-manager here, so
no pod ever runs and no garbage collector deletes owned objects: these tests
check what the operator itself writes (owned objects, status, events, claims).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from .conftest import ControlPlane

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "synod.dev_consensusclusters.yaml"
CHART = ROOT / "charts" / "synod"
TOOLCHAIN_HELM = Path("/var/cache/synod-toolchain/bin/helm")
RELEASE_NAMESPACE = "synod-system"
SA_NAME = "rel-operator"  # what the chart names the operator's ServiceAccount for release "rel"
API = "/apis/synod.dev/v1alpha1"
WAIT_S = 60.0
POLL_S = 0.5
TOKEN_TTL_S = 3600
# What kopf logs once the operator's login activity ran (it has read its kubeconfig).
OPERATOR_STARTED = "Activity 'login' succeeded."

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float = WAIT_S) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(POLL_S)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def ok(plane: ControlPlane, method: str, path: str, body: Any = None) -> Any:
    status, answer = plane.request(method, path, body)
    assert 200 <= status < 300, (method, path, status, answer)
    return answer


def _helm() -> str | None:
    return shutil.which("helm") or (str(TOOLCHAIN_HELM) if TOOLCHAIN_HELM.exists() else None)


def _chart_docs() -> list[dict[str, Any]]:
    helm = _helm()
    if helm is None:
        pytest.skip("helm not found (make toolchain): the chart's RBAC is needed")
    out = subprocess.run(
        # Cluster scope: the tests create clusters in namespaces of their own.
        [
            helm,
            "template",
            "rel",
            str(CHART),
            f"--namespace={RELEASE_NAMESPACE}",
            "--set=operator.scope=cluster",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _install_crd(plane: ControlPlane) -> None:
    """Install every CRD in crds/ (ConsensusCluster, LockService) and wait for them."""
    for path in sorted(CRD_PATH.parent.glob("*.yaml")):
        _install_one_crd(plane, yaml.safe_load(path.read_text()))


def _install_one_crd(plane: ControlPlane, crd: dict[str, Any]) -> None:
    status, answer = plane.request(
        "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd
    )
    assert status in (201, 409), answer

    def established() -> bool:
        got = ok(
            plane,
            "GET",
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}",
        )
        conditions = (got.get("status") or {}).get("conditions") or []  # null at first
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    wait_for("the CRD to be established", established)
    # Discovery takes a moment longer than Established.
    plural = crd["spec"]["names"]["plural"]
    wait_for(
        "the new API in discovery",
        lambda: plane.request("GET", f"{API}/{plural}")[0] == 200,
    )


def _namespace(plane: ControlPlane, name: str) -> str:
    status, answer = plane.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    assert status in (201, 409), answer
    return name


def _path(kind: str, namespace: str, plural: str, name: str = "") -> str:
    base = {"core": "/api/v1", "apps": "/apis/apps/v1", "policy": "/apis/policy/v1", "synod": API}[
        kind
    ]
    return f"{base}/namespaces/{namespace}/{plural}" + (f"/{name}" if name else "")


@contextlib.contextmanager
def run_operator(
    control_plane: ControlPlane, workdir: Path, extra_env: dict[str, str] | None = None
) -> Iterator[Path]:
    """CRDs + the chart's RBAC applied; the operator running with the chart's ServiceAccount.

    Yields the path of its log."""
    _install_crd(control_plane)
    _namespace(control_plane, RELEASE_NAMESPACE)
    docs = _chart_docs()
    for doc in docs:
        if doc["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding"):
            group = (
                "/api/v1"
                if doc["kind"] == "ServiceAccount"
                else "/apis/rbac.authorization.k8s.io/v1"
            )
            plural = {"ServiceAccount": "serviceaccounts", "ClusterRole": "clusterroles",
                      "ClusterRoleBinding": "clusterrolebindings"}[doc["kind"]]  # fmt: skip
            ns = f"/namespaces/{RELEASE_NAMESPACE}" if doc["kind"] == "ServiceAccount" else ""
            status, answer = control_plane.request("POST", f"{group}{ns}/{plural}", doc)
            assert status in (201, 409), answer
    token = ok(
        control_plane,
        "POST",
        f"/api/v1/namespaces/{RELEASE_NAMESPACE}/serviceaccounts/{SA_NAME}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
         "spec": {"expirationSeconds": TOKEN_TTL_S}},
    )["status"]["token"]  # fmt: skip
    kubeconfig = json.loads(control_plane.kubeconfig_path.read_text())
    kubeconfig["users"] = [{"name": "admin", "user": {"token": token}}]
    (workdir / "kubeconfig").write_text(json.dumps(kubeconfig))
    log_path = workdir / "operator.log"
    env = {**os.environ, "KUBECONFIG": str(workdir / "kubeconfig"), "SYNOD_OPERATOR_NAMESPACES": "",
           "SYNOD_OPERATOR_HEALTH_PORT": "0", "SYNOD_OPERATOR_VERBOSE": "1",
           **(extra_env or {})}  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "synod_operator"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        # Started (kopf logged in with the kubeconfig) or dead, whichever comes first.
        wait_for(
            "the operator to log in",
            lambda: proc.poll() is not None or OPERATOR_STARTED in log_path.read_text(),
        )
        assert proc.poll() is None, log_path.read_text()[-3000:]
        yield log_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if os.environ.get("SYNOD_CP_SHOW_OPERATOR_LOG"):
            print(log_path.read_text()[-20000:])


@pytest.fixture(scope="module")
def operator(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    with run_operator(control_plane, tmp_path_factory.mktemp("operator")) as log_path:
        yield log_path


def claim_body(name: str, cluster: str, size: str) -> dict[str, Any]:
    """A claim as the StatefulSet controller makes it (the template's labels)."""
    labels = {
        "app.kubernetes.io/name": "synod",
        "app.kubernetes.io/instance": cluster,
        "app.kubernetes.io/component": "consensus",
    }
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "labels": labels},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
    }


def cluster_body(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "synod.dev/v1alpha1",
        "kind": "ConsensusCluster",
        "metadata": {"name": name},
        "spec": spec,
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"replicas": 4}, "replicas must be odd"),
        ({"replicas": 11}, "should be less than or equal to 9"),
        ({"raft": {"heartbeatIntervalMs": 200, "electionTimeoutMs": 1000}},
         "raft.electionTimeoutMs must be greater than 5 x raft.heartbeatIntervalMs"),
        ({"version": "bad tag!"}, "spec.version"),
    ],
)  # fmt: skip
def test_invalid_specs_are_rejected_by_the_api_server(
    control_plane: ControlPlane, spec: dict[str, Any], message: str
) -> None:
    _install_crd(control_plane)
    ns = _namespace(control_plane, "synod-cp-invalid")
    status, answer = control_plane.request(
        "POST",
        _path("synod", ns, "consensusclusters"),
        cluster_body(f"bad-{uuid.uuid4().hex[:6]}", **spec),
    )
    assert status == 422, answer
    assert message in answer["message"], answer["message"]


def test_defaults_scale_subresource_and_immutable_storage(control_plane: ControlPlane) -> None:
    _install_crd(control_plane)
    ns = _namespace(control_plane, "synod-cp-defaults")
    created = ok(control_plane, "POST", _path("synod", ns, "consensusclusters"), cluster_body("d"))
    assert created["spec"]["replicas"] == 3
    assert created["spec"]["raft"] == {"heartbeatIntervalMs": 100, "electionTimeoutMs": 1000,
                                       "snapshotEntries": 10000}  # fmt: skip
    assert created["spec"]["storage"]["size"] == "1Gi"
    scale_path = _path("synod", ns, "consensusclusters", "d") + "/scale"
    scale = ok(control_plane, "GET", scale_path)
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 3
    scale["spec"]["replicas"] = 5
    assert ok(control_plane, "PUT", scale_path, scale)["spec"]["replicas"] == 5
    scale = ok(control_plane, "GET", scale_path)
    scale["spec"]["replicas"] = 4
    status, answer = control_plane.request("PUT", scale_path, scale)
    assert status == 422 and "replicas must be odd" in answer["message"], answer
    current = ok(control_plane, "GET", _path("synod", ns, "consensusclusters", "d"))
    current["spec"]["storage"]["size"] = "2Gi"
    status, answer = control_plane.request(
        "PUT", _path("synod", ns, "consensusclusters", "d"), current
    )
    assert status == 422 and "storage.size is immutable" in answer["message"], answer


def test_rendered_chart_passes_server_side_validation(control_plane: ControlPlane) -> None:
    """The kubeconform step: every rendered object is accepted by the real API (dry run)."""
    _install_crd(control_plane)
    kubectl = control_plane.kubectl
    helm = _helm()
    if kubectl is None or helm is None:
        pytest.skip("kubectl (make envtest) and helm (make toolchain) are needed")
    _namespace(control_plane, RELEASE_NAMESPACE)
    for scope in ("cluster", "namespace"):
        rendered = subprocess.run(
            [helm, "template", "rel", str(CHART), f"--namespace={RELEASE_NAMESPACE}",
             f"--set=operator.scope={scope}", "--set=example.enabled=true"],
            check=True, capture_output=True, text=True, timeout=60,
        ).stdout  # fmt: skip
        result = subprocess.run(
            [str(kubectl), f"--kubeconfig={control_plane.kubeconfig_path}", "apply",
             "--dry-run=server", f"--namespace={RELEASE_NAMESPACE}", "-f", "-"],
            check=False, input=rendered, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "consensuscluster.synod.dev/synod created (server dry run)" in result.stdout


def test_operator_creates_owned_objects_status_and_cleans_up(
    control_plane: ControlPlane, operator: Path
) -> None:
    ns = _namespace(control_plane, f"synod-cp-{uuid.uuid4().hex[:6]}")
    body = cluster_body("demo", replicas=3, version="1.0.0", storage={"size": "2Gi"},
                        podTemplate={"annotations": {"team": "a"}})  # fmt: skip
    created = ok(control_plane, "POST", _path("synod", ns, "consensusclusters"), body)
    uid = created["metadata"]["uid"]

    def get(kind: str, plural: str, name: str) -> dict[str, Any] | None:
        status, answer = control_plane.request("GET", _path(kind, ns, plural, name))
        return answer if status == 200 else None

    def log_tail() -> str:
        return operator.read_text()[-4000:]

    try:
        sts = wait_for("the StatefulSet", lambda: get("apps", "statefulsets", "demo"))
    except AssertionError:
        raise AssertionError(log_tail()) from None
    owned = {
        "StatefulSet": sts,
        "Service peers": wait_for(
            "headless Service", lambda: get("core", "services", "demo-peers")
        ),
        "Service client": wait_for("client Service", lambda: get("core", "services", "demo")),
        "ConfigMap": wait_for("ConfigMap", lambda: get("core", "configmaps", "demo-config")),
        "ServiceAccount": wait_for(
            "ServiceAccount", lambda: get("core", "serviceaccounts", "demo")
        ),
        "PDB": wait_for("PDB", lambda: get("policy", "poddisruptionbudgets", "demo")),
    }
    for what, obj in owned.items():
        refs = obj["metadata"]["ownerReferences"]
        assert [(r["kind"], r["uid"], r["controller"]) for r in refs] == [
            ("ConsensusCluster", uid, True)
        ], what
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == "demo", what
    spec = sts["spec"]
    assert spec["replicas"] == 3 and spec["serviceName"] == "demo-peers"
    assert spec["updateStrategy"]["type"] == "OnDelete"
    template = spec["template"]
    assert template["metadata"]["annotations"]["team"] == "a"
    assert template["spec"]["containers"][0]["image"] == "synod/node:1.0.0"
    assert spec["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert owned["Service peers"]["spec"]["clusterIP"] == "None"
    assert owned["PDB"]["spec"]["minAvailable"] == 2
    assert owned["ConfigMap"]["data"]["SYNOD_PEER_DNS"] == f"demo.demo-peers.{ns}.svc"

    # No node runs here: the status says so, machine-readably.
    def bootstrapping() -> dict[str, Any] | None:
        got = get("synod", "consensusclusters", "demo")
        status = (got or {}).get("status") or {}
        return status if status.get("phase") == "Creating" else None

    try:
        status = wait_for("the status to be patched", bootstrapping)
    except AssertionError:
        raise AssertionError(log_tail()) from None
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Available"]["status"] == "False"
    assert conditions["Available"]["reason"] == "Bootstrapping"
    assert conditions["Progressing"]["status"] == "True"
    assert status["selector"] == (
        "app.kubernetes.io/component=consensus,app.kubernetes.io/instance=demo,app.kubernetes.io/name=synod"
    )
    assert status["observedGeneration"] == created["metadata"]["generation"]

    # A scale request does not jump the StatefulSet: growth waits for a leader.
    scale_path = _path("synod", ns, "consensusclusters", "demo") + "/scale"
    scale = ok(control_plane, "GET", scale_path)
    scale["spec"]["replicas"] = 5
    scaled = ok(control_plane, "PUT", scale_path, scale)
    generation = ok(control_plane, "GET", _path("synod", ns, "consensusclusters", "demo"))[
        "metadata"
    ]["generation"]
    assert scaled["spec"]["replicas"] == 5

    def reconciled_scale() -> dict[str, Any] | None:
        # The status is patched after the reconcile that saw the new spec has acted.
        status = (get("synod", "consensusclusters", "demo") or {}).get("status") or {}
        return status if status.get("observedGeneration", 0) >= generation else None

    status = wait_for("the operator to reconcile the scale request", reconciled_scale)
    assert get("apps", "statefulsets", "demo")["spec"]["replicas"] == 3  # type: ignore[index]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Available"]["reason"] == "Bootstrapping", conditions

    # An upgrade changes the template (OnDelete: no pod is touched by the StatefulSet).
    patched = ok(control_plane, "GET", _path("synod", ns, "consensusclusters", "demo"))
    patched["spec"]["version"] = "1.1.0"
    ok(control_plane, "PUT", _path("synod", ns, "consensusclusters", "demo"), patched)

    def image() -> str:
        sts = get("apps", "statefulsets", "demo") or {}
        return str(sts["spec"]["template"]["spec"]["containers"][0]["image"])

    wait_for("the new image in the template", lambda: image() == "synod/node:1.1.0")

    # Claims as the StatefulSet controller would have made them, then delete the cluster.
    for ordinal in range(3):
        claim = claim_body(f"data-demo-{ordinal}", "demo", "2Gi")
        ok(control_plane, "POST", _path("core", ns, "persistentvolumeclaims"), claim)
    ok(control_plane, "DELETE", _path("synod", ns, "consensusclusters", "demo"))
    wait_for("the cluster to be gone", lambda: get("synod", "consensusclusters", "demo") is None)

    def claims_deleted() -> bool:
        items = ok(control_plane, "GET", _path("core", ns, "persistentvolumeclaims"))["items"]
        # Without a controller-manager the pvc-protection finalizer keeps them as "Terminating".
        return all(item["metadata"].get("deletionTimestamp") for item in items)

    wait_for("the claims to be deleted", claims_deleted)
    events = ok(control_plane, "GET", f"/api/v1/namespaces/{ns}/events")["items"]
    assert any(e["involvedObject"]["kind"] == "ConsensusCluster" for e in events)


def test_retain_on_delete_keeps_the_claims(control_plane: ControlPlane, operator: Path) -> None:
    ns = _namespace(control_plane, f"synod-cp-{uuid.uuid4().hex[:6]}")
    body = cluster_body("kept", replicas=1, storage={"retainOnDelete": True})
    ok(control_plane, "POST", _path("synod", ns, "consensusclusters"), body)
    wait_for(
        "the StatefulSet",
        lambda: control_plane.request("GET", _path("apps", ns, "statefulsets", "kept"))[0] == 200,
    )
    claim = claim_body("data-kept-0", "kept", "1Gi")
    ok(control_plane, "POST", _path("core", ns, "persistentvolumeclaims"), claim)
    ok(control_plane, "DELETE", _path("synod", ns, "consensusclusters", "kept"))
    wait_for(
        "the cluster to be gone",
        lambda: (
            control_plane.request("GET", _path("synod", ns, "consensusclusters", "kept"))[0] == 404
        ),
    )
    kept = ok(control_plane, "GET", _path("core", ns, "persistentvolumeclaims", "data-kept-0"))
    assert not kept["metadata"].get("deletionTimestamp")
    assert kept["metadata"]["name"] == "data-kept-0"


def test_objects_of_an_owned_name_are_never_adopted(
    control_plane: ControlPlane, operator: Path
) -> None:
    """Issue 15: a forced server-side apply took over a Service or ConfigMap of the same
    name, and deleting the cluster then garbage-collected it. Now nothing is applied:
    the status says NotOwned, an Event too, and the object outlives the cluster."""
    ns = _namespace(control_plane, f"synod-cp-{uuid.uuid4().hex[:6]}")
    theirs = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"app": "theirs"},
              "metadata": {"name": "taken-config", "namespace": ns}}  # fmt: skip
    ok(control_plane, "POST", _path("core", ns, "configmaps"), theirs)
    ok(control_plane, "POST", _path("synod", ns, "consensusclusters"), cluster_body("taken"))

    def degraded() -> dict[str, Any] | None:
        got = ok(control_plane, "GET", _path("synod", ns, "consensusclusters", "taken"))
        found = {c["type"]: c for c in (got.get("status") or {}).get("conditions") or []}
        condition = found.get("Degraded")
        return condition if condition and condition["reason"] == "NotOwned" else None

    condition = wait_for("the NotOwned condition", degraded)
    assert condition["status"] == "True" and "ConfigMap taken-config" in condition["message"]
    events = ok(control_plane, "GET", f"/api/v1/namespaces/{ns}/events")["items"]
    assert any(e["reason"] == "NotOwned" and e["involvedObject"]["name"] == "taken"
               for e in events), [e["reason"] for e in events]  # fmt: skip
    kept = ok(control_plane, "GET", _path("core", ns, "configmaps", "taken-config"))
    assert kept["data"] == {"app": "theirs"} and not kept["metadata"].get("ownerReferences")
    for kind, plural in (("apps", "statefulsets"), ("core", "services"),
                         ("core", "serviceaccounts")):  # fmt: skip
        status, _ = control_plane.request("GET", _path(kind, ns, plural, "taken"))
        assert status == 404, (plural, "nothing is half-created")
    ok(control_plane, "DELETE", _path("synod", ns, "consensusclusters", "taken"))
    wait_for(
        "the cluster to be gone",
        lambda: (
            control_plane.request("GET", _path("synod", ns, "consensusclusters", "taken"))[0] == 404
        ),
    )
    after = ok(control_plane, "GET", _path("core", ns, "configmaps", "taken-config"))
    assert after["metadata"]["uid"] == kept["metadata"]["uid"]
