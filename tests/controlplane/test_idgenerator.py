"""Tier 4: the IdGenerator CRD and its reconciliation against a real kube-apiserver and a
real `synod node` process.

The operator runs as in test_operator.py (the chart's ServiceAccount and RBAC). Cluster DNS
names do not resolve here, so `SYNOD_OPERATOR_CLUSTER_URLS` points the ConsensusCluster
"shared" at a real node on loopback: the definition the operator writes, the worker lease a
client takes and the IDs it issues all go through the node's real HTTP API.
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

NAMESPACE = f"synod-cp-ids-{uuid.uuid4().hex[:6]}"
LEASE_TTL_MS = 60_000
RESERVE_MS = 1_800_000_000_000  # a worker's time reservation (unix ms, 2027)


def idgenerator_body(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "synod.dev/v1alpha1",
        "kind": "IdGenerator",
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
def id_operator(
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
        ({"mode": "uuidv7", "clusterRef": "c"}, "uuidv7 needs no cluster"),
        ({"replicas": 4}, "replicas must be odd"),
        ({"clusterRef": "c", "storage": {"size": "1Gi"}}, "storage is only for a dedicated"),
        ({"clusterRef": "c", "snowflake": {"timeBits": 42}}, "must not exceed 63"),
        ({"clusterRef": "c", "snowflake": {"workerBits": 17}}, "spec.snowflake.workerBits"),
        ({"clusterRef": "c", "snowflake": {"workerBits": 4, "workerMax": 16}},
         "workerMax must be below 2^workerBits"),
        ({"clusterRef": "c", "snowflake": {"workerBits": 4, "workerMin": 16, "workerMax": 15}},
         "workerMin must not exceed workerMax"),
        ({"clusterRef": "c", "segment": {}}, "segment settings only with mode segment"),
        ({"mode": "segment", "clusterRef": "c", "segment": {"stepInitial": 10}},
         "need stepMin <= stepInitial <= stepMax"),
        ({"mode": "segment", "clusterRef": "c", "segment": {"stepMax": 10_000_001}},
         "spec.segment.stepMax"),
        ({"mode": "ulid", "clusterRef": "c"}, "spec.mode"),
    ],
)  # fmt: skip
def test_invalid_idgenerators_are_rejected_by_the_api_server(
    control_plane: ControlPlane, spec: dict[str, Any], message: str
) -> None:
    _install_crd(control_plane)
    ns = _namespace(control_plane, "synod-cp-ids-invalid")
    status, answer = control_plane.request(
        "POST", _path("synod", ns, "idgenerators"), idgenerator_body("bad", **spec)
    )
    assert status == 422, answer
    assert message in answer["message"], answer["message"]


def test_defaults_and_immutable_layout(control_plane: ControlPlane) -> None:
    _install_crd(control_plane)
    ns = _namespace(control_plane, "synod-cp-ids-defaults")
    created = ok(
        control_plane,
        "POST",
        _path("synod", ns, "idgenerators"),
        idgenerator_body("d", clusterRef="c", snowflake={}),
    )
    assert created["spec"]["mode"] == "snowflake"
    assert created["spec"]["snowflake"] == {
        "epochMs": 1_704_067_200_000,
        "timeBits": 41,
        "workerBits": 10,
        "sequenceBits": 12,
        "workerMin": 0,
    }
    path = _path("synod", ns, "idgenerators", "d")
    changed = json.loads(json.dumps(created))
    changed["spec"]["snowflake"]["workerBits"] = 9
    status, answer = control_plane.request("PUT", path, changed)
    assert status == 422 and "layout and worker range are immutable" in answer["message"], answer
    changed = json.loads(json.dumps(created))
    changed["spec"]["mode"] = "segment"
    changed["spec"].pop("snowflake")
    status, answer = control_plane.request("PUT", path, changed)
    assert status == 422 and "mode is immutable" in answer["message"], answer
    seg = ok(
        control_plane,
        "POST",
        _path("synod", ns, "idgenerators"),
        idgenerator_body("s", mode="segment", clusterRef="c", segment={"stepMax": 5000}),
    )
    assert seg["spec"]["segment"]["stepMin"] == 100 and seg["spec"]["segment"]["stepMax"] == 5000
    # Step bounds are client settings: they may change.
    seg["spec"]["segment"]["stepMax"] = 6000
    ok(control_plane, "PUT", _path("synod", ns, "idgenerators", "s"), seg)


def _none_left(plane: ControlPlane, ns: str) -> bool:
    return not ok(plane, "GET", _path("synod", ns, "idgenerators"))["items"]


def _node(url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    code, answer = request(url, method, path, body)
    assert code == 200, (path, code, answer)
    return answer


def test_idgenerator_defines_the_generator_and_reports_workers_and_marks(
    control_plane: ControlPlane, id_operator: Path, node_url: str
) -> None:
    ns = _namespace(control_plane, NAMESPACE)
    ok(control_plane, "POST", _path("synod", ns, "consensusclusters"),
       cluster_body("shared", replicas=1))  # fmt: skip
    layout = {"timeBits": 40, "workerBits": 8, "sequenceBits": 14, "workerMin": 10,
              "workerMax": 19}  # fmt: skip
    body = idgenerator_body("orders", clusterRef="shared", snowflake=layout)
    ok(control_plane, "POST", _path("synod", ns, "idgenerators"), body)
    ok(control_plane, "POST", _path("synod", ns, "idgenerators"),
       idgenerator_body("invoices", mode="segment", clusterRef="shared"))  # fmt: skip
    ok(control_plane, "POST", _path("synod", ns, "idgenerators"),
       idgenerator_body("traces", mode="uuidv7"))  # fmt: skip

    def get(name: str) -> dict[str, Any] | None:
        status, answer = control_plane.request("GET", _path("synod", ns, "idgenerators", name))
        return answer if status == 200 else None

    def status_of(name: str) -> dict[str, Any]:
        return dict((get(name) or {}).get("status") or {})

    try:
        status = wait_for("orders to be ready", lambda: status_of("orders").get("ready") and
                          status_of("orders"))  # fmt: skip
    except AssertionError:
        raise AssertionError(id_operator.read_text()[-4000:]) from None
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {"ClusterReady": "True", "DefinitionApplied": "True", "Ready": "True"}
    assert (status["cluster"], status["generator"], status["mode"]) == ("shared", "orders",
                                                                        "snowflake")  # fmt: skip
    assert status["endpoint"] == f"http://shared.{ns}.svc:2379"
    assert (status["workersLeased"], status["highWaterMark"]) == (0, 0)

    # The node holds the spec's definition.
    got = _node(node_url, "GET", "/v1/ids/orders")
    assert got["generator"] == {"name": "orders", "time_bits": 40, "worker_bits": 8,
                                "sequence_bits": 14, "epoch_ms": 1_704_067_200_000,
                                "worker_min": 10, "worker_max": 19}  # fmt: skip
    # A client leases a worker id within the spec's range; the timer reports it and the mark.
    grant = _node(node_url, "POST", "/v1/ids/orders/workers/acquire",
                  {"ttl_ms": LEASE_TTL_MS, "reserve_ms": RESERVE_MS})  # fmt: skip
    assert 10 <= grant["worker"] <= 19, grant
    assert grant["lease"] >= 1 and grant["epoch"] >= 1
    wait_for("workersLeased=1", lambda: status_of("orders").get("workersLeased") == 1)
    assert status_of("orders")["highWaterMark"] == grant["ceiling_ms"] >= RESERVE_MS
    ids = _node(node_url, "POST", "/v1/ids/orders/next", {"count": 3})["ids"]
    assert len(set(ids)) == 3

    # Segment: nothing to define; the tag's max_id is the mark once a segment is taken.
    wait_for("invoices ready", lambda: status_of("invoices").get("ready"))
    segment = _node(node_url, "POST", "/v1/ids/invoices/segment", {"step": 500})
    wait_for("invoices mark", lambda: status_of("invoices").get("highWaterMark") == segment["end"])
    # UUIDv7: no cluster.
    traces = wait_for("traces ready", lambda: status_of("traces").get("ready") and
                      status_of("traces"))  # fmt: skip
    assert "cluster" not in traces

    # Another resource naming the same generator with another layout: refused, reported.
    clash = idgenerator_body("clash", clusterRef="shared", generator="orders")
    ok(control_plane, "POST", _path("synod", ns, "idgenerators"), clash)

    def conflict() -> dict[str, Any] | None:
        found = {c["type"]: c for c in status_of("clash").get("conditions") or []}
        cond = found.get("DefinitionApplied")
        return cond if cond and cond["reason"] == "AlreadyExists" else None

    assert wait_for("AlreadyExists", conflict)["status"] == "False"

    # Deleting keeps the definition and its marks (the node has no delete route).
    for name in ("orders", "invoices", "traces", "clash"):
        ok(control_plane, "DELETE", _path("synod", ns, "idgenerators", name))
    wait_for("every IdGenerator to be gone", lambda: _none_left(control_plane, ns))
    kept = _node(node_url, "GET", "/v1/ids/orders")
    assert kept["generator"]["worker_bits"] == 8
    assert grant["worker"] in {w["worker"] for w in kept["workers"]}
    events = ok(control_plane, "GET", f"/api/v1/namespaces/{ns}/events")["items"]
    reasons = {e["reason"] for e in events if e["involvedObject"]["kind"] == "IdGenerator"}
    assert "DefinitionConflict" in reasons, reasons


def test_missing_cluster_and_dedicated_cluster(
    control_plane: ControlPlane, id_operator: Path
) -> None:
    ns = _namespace(control_plane, f"synod-cp-ids-{uuid.uuid4().hex[:6]}")
    ok(control_plane, "POST", _path("synod", ns, "idgenerators"),
       idgenerator_body("orphan", clusterRef="missing"))  # fmt: skip
    created = ok(control_plane, "POST", _path("synod", ns, "idgenerators"),
                 idgenerator_body("ded", replicas=1, storage={"size": "2Gi"}))  # fmt: skip

    def condition(name: str, kind: str) -> dict[str, Any] | None:
        got = ok(control_plane, "GET", _path("synod", ns, "idgenerators", name))
        found = {c["type"]: c for c in (got.get("status") or {}).get("conditions") or []}
        return found.get(kind)

    missing = wait_for("ClusterNotFound", lambda: condition("orphan", "ClusterReady"))
    assert (missing["status"], missing["reason"]) == ("False", "ClusterNotFound")

    def dedicated() -> dict[str, Any] | None:
        path = _path("synod", ns, "consensusclusters", "ded-cluster")
        status, answer = control_plane.request("GET", path)
        return answer if status == 200 else None

    owned = wait_for("the dedicated ConsensusCluster", dedicated)
    assert owned["spec"]["replicas"] == 1 and owned["spec"]["storage"]["size"] == "2Gi"
    [ref] = owned["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["name"], ref["uid"]) == ("IdGenerator", "ded",
                                                      created["metadata"]["uid"])  # fmt: skip
    no_leader = wait_for(
        "NoLeader",
        lambda: (c := condition("ded", "ClusterReady")) and c["reason"] == "NoLeader" and c,
    )
    assert no_leader["status"] == "False"
    for name in ("orphan", "ded"):
        ok(control_plane, "DELETE", _path("synod", ns, "idgenerators", name))
    wait_for("both IdGenerators to be gone", lambda: _none_left(control_plane, ns))


DOCS = [ROOT / "docs" / "ids.md", ROOT / "docs" / "operator.md"]


def test_doc_examples_are_accepted_by_the_api_server(control_plane: ControlPlane) -> None:
    _install_crd(control_plane)
    ns = _namespace(control_plane, "synod-cp-ids-docs")
    examples = [
        doc
        for path in DOCS
        for block in re.findall(r"```yaml\n(.*?)```", path.read_text(), flags=re.S)
        for doc in yaml.safe_load_all(block)
        if doc and doc.get("kind") == "IdGenerator"
    ]
    assert len(examples) >= len(DOCS)
    for example in examples:
        example["metadata"].pop("namespace", None)
        status, answer = control_plane.request(
            "POST", _path("synod", ns, "idgenerators") + "?dryRun=All", example
        )
        assert status == 201, answer
