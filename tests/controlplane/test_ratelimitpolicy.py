"""Tier 4: the RateLimitPolicy CRD and its reconciliation against a real kube-apiserver and
three real `synod node` processes.

The operator runs as in test_operator.py (the chart's ServiceAccount and RBAC). Cluster DNS
names do not resolve here, so `SYNOD_OPERATOR_CLUSTER_URLS` points the ConsensusCluster
"shared" at the nodes on loopback: the policy the operator writes, the checks a client
makes against it, every member's applied generation and ring, and the removal on deletion
all go through the nodes' real HTTP API.
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

from tests.cluster.harness import Cluster, request, request_settled

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

NAMESPACE = f"synod-cp-rl-{uuid.uuid4().hex[:6]}"
MEMBERS = 3
PER_MINUTE = 2  # small: the third check of a user in the test's minute is refused


def policy_body(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "synod.dev/v1alpha1",
        "kind": "RateLimitPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def _limit(per_unit: int, **extra: Any) -> dict[str, Any]:
    return {"unit": "minute", "requestsPerUnit": per_unit, **extra}


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    cluster = Cluster(tmp_path_factory.mktemp("nodes"), MEMBERS)
    cluster.start_all()
    try:
        cluster.wait_for_leader()
        yield [cluster.nodes[i].url for i in sorted(cluster.nodes)]
    finally:
        cluster.stop_all()


@pytest.fixture(scope="module")
def rl_operator(
    control_plane: ControlPlane, nodes: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    env = {"SYNOD_OPERATOR_CLUSTER_URLS": json.dumps({f"{NAMESPACE}/shared": nodes})}
    with run_operator(control_plane, tmp_path_factory.mktemp("operator"), env) as log_path:
        yield log_path


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "set exactly one of clusterRef"),
        ({"clusterRef": "c", "replicas": 3}, "set exactly one of clusterRef"),
        ({"replicas": 4}, "replicas must be odd"),
        ({"clusterRef": "c", "storage": {"size": "1Gi"}}, "storage is only for a dedicated"),
        ({"clusterRef": "c", "domain": "no spaces"}, "spec.domain"),
        ({"clusterRef": "c", "descriptors": [{"key": "k", "rateLimit": _limit(1) | {
            "unit": "week"}}]}, "spec.descriptors[0].rateLimit.unit"),
        ({"clusterRef": "c", "descriptors": [{"key": "k", "rateLimit": _limit(0)}]},
         "spec.descriptors[0].rateLimit.requestsPerUnit"),
        ({"clusterRef": "c", "descriptors": [{"key": "k", "rateLimit": _limit(
            5, algorithm="fixed_window", burst=10)}]}, "burst applies to token_bucket and gcra"),
        ({"clusterRef": "c", "descriptors": [{"key": "k", "rateLimit": _limit(
            5, algorithm="concurrency", consistency="global")}]}, "cannot be global"),
        ({"clusterRef": "c", "descriptors": [{"key": "k", "rateLimit": _limit(
            20_000, algorithm="sliding_log")}]}, "sliding_log allows at most 10000"),
        ({"clusterRef": "c", "descriptors": [{"key": "k", "rateLimit": _limit(
            5, quotaRequests=2)}]}, "quotaRequests and quotaValidMs go together"),
        ({"clusterRef": "c", "descriptors": [{"key": "k", "rateLimit": _limit(
            5, quotaRequests=6, quotaValidMs=1000)}]}, "must not exceed requestsPerUnit"),
        ({"clusterRef": "c", "descriptors": [{"key": "k", "descriptors": [{"key": "u",
            "rateLimit": _limit(5, consistency="eventual")}]}]},
         "spec.descriptors[0].descriptors[0].rateLimit.consistency"),
        ({"clusterRef": "c", "descriptors": [{"key": "a", "descriptors": [{"key": "b",
            "descriptors": [{"key": "c", "descriptors": [{"key": "d"}]}]}]}]},
         "unknown field"),
    ],
)  # fmt: skip
def test_invalid_ratelimitpolicies_are_rejected_by_the_api_server(
    control_plane: ControlPlane, spec: dict[str, Any], message: str
) -> None:
    _install_crd(control_plane)
    ns = _namespace(control_plane, "synod-cp-rl-invalid")
    status, answer = control_plane.request(
        "POST",
        _path("synod", ns, "ratelimitpolicies") + "?fieldValidation=Strict",
        policy_body("bad", **spec),
    )
    assert status == 422 or (status == 400 and "unknown field" in message), answer
    assert message in answer["message"], answer["message"]


def test_defaults_and_immutable_domain(control_plane: ControlPlane) -> None:
    _install_crd(control_plane)
    ns = _namespace(control_plane, "synod-cp-rl-defaults")
    created = ok(
        control_plane,
        "POST",
        _path("synod", ns, "ratelimitpolicies"),
        policy_body("d", clusterRef="c", domain="api",
                    descriptors=[{"key": "user", "rateLimit": _limit(5)}]),
    )  # fmt: skip
    assert created["spec"]["descriptors"][0]["rateLimit"] == {
        "unit": "minute",
        "requestsPerUnit": 5,
        "algorithm": "token_bucket",
        "burst": 0,
        "consistency": "owner",
        "quotaRequests": 0,
        "quotaValidMs": 0,
    }
    created["spec"]["domain"] = "other"
    path = _path("synod", ns, "ratelimitpolicies", "d")
    status, answer = control_plane.request("PUT", path, created)
    assert status == 422 and "domain is immutable" in answer["message"], answer


def _check(url: str, user: str) -> str:
    body = {"domain": "api", "descriptors": [{"entries": [{"key": "user", "value": user}]}]}
    code, answer = request_settled(url, "POST", "/v1/ratelimit/check", body)
    assert code == 200, answer
    return str(answer["overall_code"])


def test_policy_written_to_every_member_status_and_deletion_removes_it(
    control_plane: ControlPlane, rl_operator: Path, nodes: list[str]
) -> None:
    ns = _namespace(control_plane, NAMESPACE)
    ok(control_plane, "POST", _path("synod", ns, "consensusclusters"),
       cluster_body("shared", replicas=MEMBERS))  # fmt: skip
    descriptors = [
        {"key": "user", "rateLimit": _limit(PER_MINUTE, name="per-user")},
        {
            "key": "path",
            "value": "/login",
            "rateLimit": _limit(5, algorithm="sliding_log"),
            "descriptors": [{"key": "user", "rateLimit": _limit(1, consistency="strict")}],
        },
    ]
    body = policy_body("limits", clusterRef="shared", domain="api", descriptors=descriptors)
    ok(control_plane, "POST", _path("synod", ns, "ratelimitpolicies"), body)

    def get() -> dict[str, Any] | None:
        path = _path("synod", ns, "ratelimitpolicies", "limits")
        status, answer = control_plane.request("GET", path)
        return answer if status == 200 else None

    def propagated(generation: int = 0) -> dict[str, Any] | None:
        status = (get() or {}).get("status") or {}
        if not status.get("ready") or status.get("applied") != f"{MEMBERS}/{MEMBERS}":
            return None
        return status if status["policyGeneration"] > generation else None

    try:
        status = wait_for("the RateLimitPolicy to be ready on every member", propagated)
    except AssertionError:
        raise AssertionError(rl_operator.read_text()[-4000:]) from None
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {"ClusterReady": "True", "PolicyApplied": "True",
                          "Propagated": "True", "Ready": "True"}  # fmt: skip
    assert (status["cluster"], status["domain"], status["rules"]) == ("shared", "api", 3)
    assert (status["ringMembers"], status["ringSource"], status["ringsAgree"]) == (3, "raft", True)
    assert status["endpoint"] == f"http://shared.{ns}.svc:2379"
    assert status["rlsEndpoint"] == f"shared.{ns}.svc:8081"

    # The nodes hold the policy in the node's spelling, and enforce it on every member.
    code, stored = request(nodes[0], "GET", "/v1/ratelimit/policies?domain=api")
    assert code == 200 and stored["generation"] == status["policyGeneration"], stored
    [policy] = stored["policies"]
    assert policy["descriptors"][0]["rate_limit"] == {
        "unit": "minute", "requests_per_unit": PER_MINUTE, "algorithm": "token_bucket",
        "burst": 0, "consistency": "owner", "name": "per-user"}  # fmt: skip
    assert [_check(url, "bob") for url in nodes] == ["OK", "OK", "OVER_LIMIT"]

    # Changed behind the operator's back (CLI, SDK): the next pass puts the spec back.
    code, answer = request(nodes[1], "PUT", "/v1/ratelimit/policies",
                           {"domain": "api", "descriptors": []})  # fmt: skip
    assert code == 200, answer

    def restored() -> bool:
        code, now = request(nodes[0], "GET", "/v1/ratelimit/policies?domain=api")
        return code == 200 and now["policies"] == [policy]

    wait_for("the policy to be put back", restored)
    code, now = request(nodes[0], "GET", "/v1/ratelimit/policies?domain=api")
    assert code == 200, now
    put_back = now["generation"]
    wait_for("the status to catch up", lambda: propagated(put_back - 1))

    # An edit is written once (the generation moves by one) and applied by every member.
    edited = get()
    assert edited is not None
    edited["spec"]["descriptors"][0]["rateLimit"]["requestsPerUnit"] = 10
    ok(control_plane, "PUT", _path("synod", ns, "ratelimitpolicies", "limits"), edited)
    newer = wait_for("the edit on every member", lambda: propagated(put_back))
    # One write: passes over an unchanged policy write nothing.
    assert newer["policyGeneration"] == put_back + 1
    code, stored = request(nodes[2], "GET", "/v1/ratelimit/policies?domain=api")
    assert code == 200 and stored["policies"][0]["descriptors"][0]["rate_limit"][
        "requests_per_unit"] == 10  # fmt: skip
    assert stored["generation"] == newer["policyGeneration"]

    # Deleting the resource removes the domain: checks of it are refused as unknown.
    ok(control_plane, "DELETE", _path("synod", ns, "ratelimitpolicies", "limits"))
    wait_for("the RateLimitPolicy to be gone", lambda: get() is None)
    code, answer = request(nodes[1], "GET", "/v1/ratelimit/policies?domain=api")
    assert code == 404, answer
    body = {"domain": "api", "descriptors": [{"entries": [{"key": "user", "value": "bob"}]}]}
    code, answer = request(nodes[0], "POST", "/v1/ratelimit/check", body)
    assert code == 404, answer
    events = ok(control_plane, "GET", f"/api/v1/namespaces/{ns}/events")["items"]
    assert any(e["involvedObject"]["kind"] == "RateLimitPolicy" for e in events)


def test_missing_and_dedicated_cluster(control_plane: ControlPlane, rl_operator: Path) -> None:
    ns = _namespace(control_plane, f"synod-cp-rl-{uuid.uuid4().hex[:6]}")
    ok(control_plane, "POST", _path("synod", ns, "ratelimitpolicies"),
       policy_body("orphan", clusterRef="missing"))  # fmt: skip
    created = ok(control_plane, "POST", _path("synod", ns, "ratelimitpolicies"),
                 policy_body("ded", replicas=3, storage={"size": "2Gi"}))  # fmt: skip

    def condition(name: str, kind: str) -> dict[str, Any] | None:
        got = ok(control_plane, "GET", _path("synod", ns, "ratelimitpolicies", name))
        found = {c["type"]: c for c in (got.get("status") or {}).get("conditions") or []}
        return found.get(kind)

    # Past the CRD but not the node's parser (one key twice at a level): refused for good
    # before it reaches any cluster, with a warning event naming the offence.
    twice = [{"key": "user"}, {"key": "user"}]
    ok(control_plane, "POST", _path("synod", ns, "ratelimitpolicies"),
       policy_body("twice", clusterRef="missing", descriptors=twice))  # fmt: skip

    def refused() -> dict[str, Any] | None:
        events = ok(control_plane, "GET", f"/api/v1/namespaces/{ns}/events")["items"]
        found = [e for e in events if e["involvedObject"]["name"] == "twice"]
        return found[0] if found else None

    event = wait_for("the refusal event", refused)
    assert (event["type"], event["reason"]) == ("Warning", "InvalidSpec"), event
    assert "appears twice" in event["message"], event
    missing = wait_for("ClusterNotFound", lambda: condition("orphan", "ClusterReady"))
    assert (missing["status"], missing["reason"]) == ("False", "ClusterNotFound")

    def dedicated() -> dict[str, Any] | None:
        path = _path("synod", ns, "consensusclusters", "ded-cluster")
        status, answer = control_plane.request("GET", path)
        return answer if status == 200 else None

    owned = wait_for("the dedicated ConsensusCluster", dedicated)
    assert owned["spec"]["replicas"] == 3 and owned["spec"]["storage"]["size"] == "2Gi"
    [ref] = owned["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["name"], ref["uid"]) == (
        "RateLimitPolicy", "ded", created["metadata"]["uid"])  # fmt: skip
    no_leader = wait_for(
        "NoLeader",
        lambda: (c := condition("ded", "ClusterReady")) and c["reason"] == "NoLeader" and c,
    )
    assert no_leader["status"] == "False"
    for name in ("orphan", "ded", "twice"):
        ok(control_plane, "DELETE", _path("synod", ns, "ratelimitpolicies", name))
    wait_for(
        "the RateLimitPolicies to be gone",
        lambda: not ok(control_plane, "GET", _path("synod", ns, "ratelimitpolicies"))["items"],
    )


DOCS = [ROOT / "docs" / "ratelimit.md", ROOT / "docs" / "operator.md"]


def test_doc_examples_are_accepted_by_the_api_server(control_plane: ControlPlane) -> None:
    _install_crd(control_plane)
    ns = _namespace(control_plane, "synod-cp-rl-docs")
    examples = [
        doc
        for path in DOCS
        for block in re.findall(r"```yaml\n(.*?)```", path.read_text(), flags=re.S)
        for doc in [yaml.safe_load(block)]
        if isinstance(doc, dict) and doc.get("kind") == "RateLimitPolicy"
    ]
    assert len(examples) == len(DOCS)
    for example in examples:
        example["metadata"].pop("namespace", None)
        status, answer = control_plane.request(
            "POST", _path("synod", ns, "ratelimitpolicies") + "?dryRun=All", example
        )
        assert status == 201, answer
