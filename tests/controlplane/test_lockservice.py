"""Tier 4: the LockService CRD and its reconciliation against a real kube-apiserver and a
real `synod node` process.

The operator runs as in test_operator.py (the chart's ServiceAccount and RBAC). Cluster DNS
names do not resolve here, so `SYNOD_OPERATOR_CLUSTER_URLS` points the ConsensusCluster
"shared" at a real node on loopback: the namespace the operator writes, the lock a client
takes in it and the release on deletion all go through the node's real HTTP API.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.harness import Cluster, request

from .conftest import ControlPlane
from .test_operator import (
    ROOT,
    _install_crd,
    _namespace,
    _path,
    cluster_body,
    ok,
    run_operator,
    wait_for,
)

pytestmark = pytest.mark.slow

NAMESPACE = f"synod-cp-locks-{uuid.uuid4().hex[:6]}"
LEASE_TTL_MS = 60_000
LOCK_DELAY_MS = 60_000  # long: a revoked holder's lock stays delayed for the whole test


def lockservice_body(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "synod.dev/v1alpha1",
        "kind": "LockService",
        "metadata": {"name": name},
        "spec": spec,
    }


@pytest.fixture(scope="module")
def node_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cluster = Cluster(tmp_path_factory.mktemp("node"), 1)
    cluster.start_all()
    try:
        cluster.wait_for_leader()
        yield cluster.nodes[1].url
    finally:
        cluster.stop_all()


@pytest.fixture(scope="module")
def lock_operator(
    control_plane: ControlPlane, node_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    env = {"SYNOD_OPERATOR_CLUSTER_URLS": json.dumps({f"{NAMESPACE}/shared": [node_url]})}
    with run_operator(control_plane, tmp_path_factory.mktemp("operator"), env) as log_path:
        yield log_path


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "set exactly one of clusterRef"),
        ({"clusterRef": "c", "replicas": 3}, "set exactly one of clusterRef"),
        ({"replicas": 4}, "replicas must be odd"),
        ({"clusterRef": "c", "storage": {"size": "1Gi"}}, "storage is only for a dedicated"),
        ({"clusterRef": "c", "settings": {"lockDelayMs": 60_001}}, "spec.settings.lockDelayMs"),
        ({"clusterRef": "c", "lockNamespace": "default"}, "always exists"),
    ],
)
def test_invalid_lockservices_are_rejected_by_the_api_server(
    control_plane: ControlPlane, spec: dict[str, Any], message: str
) -> None:
    _install_crd(control_plane)
    ns = _namespace(control_plane, "synod-cp-locks-invalid")
    status, answer = control_plane.request(
        "POST", _path("synod", ns, "lockservices"), lockservice_body("bad", **spec)
    )
    assert status == 422, answer
    assert message in answer["message"], answer["message"]


def test_defaults_and_immutable_cluster_ref(control_plane: ControlPlane) -> None:
    _install_crd(control_plane)
    ns = _namespace(control_plane, "synod-cp-locks-defaults")
    created = ok(
        control_plane,
        "POST",
        _path("synod", ns, "lockservices"),
        lockservice_body("d", clusterRef="c", settings={}),
    )
    assert created["spec"]["settings"] == {"lockDelayMs": 0, "locksMax": 0, "waitersPerLockMax": 0}
    created["spec"]["clusterRef"] = "other"
    status, answer = control_plane.request("PUT", _path("synod", ns, "lockservices", "d"), created)
    assert status == 422 and "clusterRef is immutable" in answer["message"], answer


def _node(url: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    return request(url, "POST", path, body)


def test_lockservice_writes_the_namespace_reports_status_and_deletion_releases(
    control_plane: ControlPlane, lock_operator: Path, node_url: str
) -> None:
    ns = _namespace(control_plane, NAMESPACE)
    ok(
        control_plane,
        "POST",
        _path("synod", ns, "consensusclusters"),
        cluster_body("shared", replicas=1),
    )
    body = lockservice_body(
        "jobs", clusterRef="shared", settings={"lockDelayMs": LOCK_DELAY_MS, "waitersPerLockMax": 5}
    )
    ok(control_plane, "POST", _path("synod", ns, "lockservices"), body)

    def get(name: str) -> dict[str, Any] | None:
        status, answer = control_plane.request("GET", _path("synod", ns, "lockservices", name))
        return answer if status == 200 else None

    def ready_status() -> dict[str, Any] | None:
        status = (get("jobs") or {}).get("status") or {}
        return status if status.get("ready") else None

    try:
        status = wait_for("the LockService to be ready", ready_status)
    except AssertionError:
        raise AssertionError(lock_operator.read_text()[-4000:]) from None
    conditions = {c["type"]: c for c in status["conditions"]}
    assert {t: c["status"] for t, c in conditions.items()} == {
        "ClusterReady": "True",
        "SettingsApplied": "True",
        "Ready": "True",
    }
    assert status["cluster"] == "shared" and status["lockNamespace"] == "jobs"
    assert status["endpoint"] == f"http://shared.{ns}.svc:2379"
    assert (status["locks"], status["locksHeld"], status["waiters"]) == (0, 0, 0)

    # The namespace exists on the node, with the spec's lock-delay.
    leases = []
    for _ in range(2):
        code, lease = _node(node_url, "/v1/lease/grant", {"ttl_ms": LEASE_TTL_MS})
        assert code == 200, lease
        leases.append(lease["id"])
    code, first = _node(
        node_url,
        "/v1/locks/acquire",
        {"ns": "jobs", "name": "orders/1", "owner": "pod-a", "lease": leases[0]},
    )
    assert code == 200 and first["token"] >= 1, first
    code, grant = _node(
        node_url,
        "/v1/locks/acquire",
        {"ns": "jobs", "name": "orders/2", "owner": "pod-b", "lease": leases[1]},
    )
    assert code == 200, grant  # fmt: skip
    # The level-triggered timer reports the held locks.
    wait_for("locksHeld=2", lambda: ((get("jobs") or {}).get("status") or {}).get("locksHeld") == 2)
    code, _ = _node(node_url, "/v1/lease/revoke", {"id": leases[0]})
    assert code == 200
    code, answer = _node(node_url, "/v1/locks/status", {"ns": "jobs", "name": "orders/1"})
    assert code == 200 and answer["held"] is False and answer["delayed"] is True, answer

    # Deleting the resource removes the namespace and releases its holders.
    ok(control_plane, "DELETE", _path("synod", ns, "lockservices", "jobs"))
    wait_for("the LockService to be gone", lambda: get("jobs") is None)
    code, answer = _node(node_url, "/v1/locks/list", {"ns": "jobs"})
    assert code == 404, answer
    code, answer = _node(node_url, "/v1/locks/validate", {"ns": "jobs", "name": "orders/2",
                                                          "token": grant["token"]})  # fmt: skip
    assert code == 404, answer
    events = ok(control_plane, "GET", f"/api/v1/namespaces/{ns}/events")["items"]
    assert any(e["involvedObject"]["kind"] == "LockService" for e in events)


def test_missing_cluster_and_dedicated_cluster(
    control_plane: ControlPlane, lock_operator: Path
) -> None:
    ns = _namespace(control_plane, f"synod-cp-locks-{uuid.uuid4().hex[:6]}")
    ok(control_plane, "POST", _path("synod", ns, "lockservices"),
       lockservice_body("orphan", clusterRef="missing"))  # fmt: skip
    created = ok(
        control_plane,
        "POST",
        _path("synod", ns, "lockservices"),
        lockservice_body("ded", replicas=1, storage={"size": "2Gi"}),
    )

    def condition(name: str, kind: str) -> dict[str, Any] | None:
        got = ok(control_plane, "GET", _path("synod", ns, "lockservices", name))
        found = {c["type"]: c for c in (got.get("status") or {}).get("conditions") or []}
        return found.get(kind)

    # Somebody else's cluster already has the dedicated cluster's name: never taken over.
    ok(
        control_plane,
        "POST",
        _path("synod", ns, "consensusclusters"),
        cluster_body("taken-cluster", replicas=1),
    )
    ok(control_plane, "POST", _path("synod", ns, "lockservices"),
       lockservice_body("taken", replicas=3))  # fmt: skip
    missing = wait_for("ClusterNotFound", lambda: condition("orphan", "ClusterReady"))
    assert (missing["status"], missing["reason"]) == ("False", "ClusterNotFound")

    def dedicated() -> dict[str, Any] | None:
        path = _path("synod", ns, "consensusclusters", "ded-cluster")
        status, answer = control_plane.request("GET", path)
        return answer if status == 200 else None

    owned = wait_for("the dedicated ConsensusCluster", dedicated)
    assert owned["spec"]["replicas"] == 1 and owned["spec"]["storage"]["size"] == "2Gi"
    [ref] = owned["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["name"], ref["uid"]) == (
        "LockService",
        "ded",
        created["metadata"]["uid"],
    )
    # No pod runs here: no leader answers, and the status says why.
    no_leader = wait_for(
        "NoLeader",
        lambda: (c := condition("ded", "ClusterReady")) and c["reason"] == "NoLeader" and c,
    )
    assert no_leader["status"] == "False"
    taken = wait_for("ClusterNameTaken", lambda: condition("taken", "ClusterReady"))
    assert (taken["status"], taken["reason"]) == ("False", "ClusterNameTaken")
    for name in ("orphan", "ded", "taken"):
        ok(control_plane, "DELETE", _path("synod", ns, "lockservices", name))
    wait_for(
        "both LockServices to be gone",
        lambda: not ok(control_plane, "GET", _path("synod", ns, "lockservices"))["items"],
    )
    other = ok(control_plane, "GET", _path("synod", ns, "consensusclusters", "taken-cluster"))
    assert other["spec"]["replicas"] == 1 and not other["metadata"].get("ownerReferences")


DOCS = [ROOT / "docs" / "locks.md", ROOT / "docs" / "operator.md"]


def test_doc_examples_are_accepted_by_the_api_server(control_plane: ControlPlane) -> None:
    _install_crd(control_plane)
    ns = _namespace(control_plane, "synod-cp-locks-docs")
    examples = [
        doc
        for path in DOCS
        for block in re.findall(r"```yaml\n(.*?)```", path.read_text(), flags=re.S)
        for doc in [yaml.safe_load(block)]
        if doc.get("kind") == "LockService"
    ]
    assert len(examples) == len(DOCS)
    for example in examples:
        example["metadata"].pop("namespace", None)
        status, answer = control_plane.request(
            "POST", _path("synod", ns, "lockservices") + "?dryRun=All", example
        )
        assert status == 201, answer
