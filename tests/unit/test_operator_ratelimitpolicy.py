"""RateLimitPolicy pure parts, table-tested: the spec parser (the CRD's rules and the node's
policy rules), the attachment, the dedicated cluster manifest, the policy document in the
node's spelling, when it must be written, and the status with its conditions and the
members' propagation."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from synod.ratelimit.policy import parse_policy
from synod_operator.attach import attachment
from synod_operator.ratelimitpolicy import (
    DESCRIPTOR_DEPTH_MAX,
    RULES_MAX,
    RateLimitObservation,
    build_ratelimit_status,
    dedicated_cluster_manifest,
    needs_write,
    parse_ratelimitpolicy,
    policy_document,
)
from synod_operator.spec import SpecError, parse_spec

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=1)


def _limit(per_unit: int = 10, **extra: Any) -> dict[str, Any]:
    return {"unit": "second", "requestsPerUnit": per_unit, **extra}


def _nested(depth: int) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [{"key": f"k{depth}", "rateLimit": _limit()}]
    for level in range(depth - 1, 0, -1):  # bound: depth
        rules = [{"key": f"k{level}", "descriptors": rules}]
    return rules


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "exactly one"),
        ({"clusterRef": "c", "replicas": 3}, "exactly one"),
        ({"replicas": 4}, "odd"),
        ({"replicas": True}, "odd"),
        ({"replicas": 11}, "odd"),
        ({"clusterRef": "c", "storage": {"size": "1Gi"}}, "storage"),
        ({"clusterRef": "c", "domain": "no spaces"}, "domain must match"),
        ({"clusterRef": "c", "descriptors": {"key": "k"}}, "descriptors must be a list"),
        ({"clusterRef": "c", "descriptors": ["k"]}, r"descriptors\[0\] must be an object"),
        ({"clusterRef": "c", "descriptors": [{"key": "k", "limit": {}}]}, "unknown field 'limit'"),
        ({"clusterRef": "c", "descriptors": [{"key": "k", "rateLimit": _limit(per=1)}]},
         "unknown field 'per'"),
        ({"clusterRef": "c", "descriptors": [{"key": "k", "rateLimit": []}]}, "must be an object"),
        ({"clusterRef": "c", "descriptors": [{"value": "v"}]}, "descriptor key"),
        ({"clusterRef": "c", "descriptors": [{"key": "k", "rateLimit": _limit() | {
            "unit": "week"}}]}, "unit must be one of"),
        ({"clusterRef": "c", "descriptors": [{"key": "k", "rateLimit": _limit(0)}]},
         "requests_per_unit"),
        ({"clusterRef": "c", "descriptors": [{"key": "k", "rateLimit": _limit(
            algorithm="fixed_window", burst=5)}]}, "burst applies to token_bucket and gcra"),
        ({"clusterRef": "c", "descriptors": [{"key": "k", "rateLimit": _limit(
            algorithm="concurrency", consistency="global")}]}, "cannot be global"),
        ({"clusterRef": "c", "descriptors": [{"key": "k", "rateLimit": _limit(
            20_000, algorithm="sliding_log")}]}, "sliding_log allows at most"),
        ({"clusterRef": "c", "descriptors": [{"key": "k", "rateLimit": _limit(
            quotaRequests=2)}]}, "go together"),
        ({"clusterRef": "c", "descriptors": [{"key": "k", "rateLimit": _limit(
            consistency="eventual")}]}, "consistency one of"),
        ({"clusterRef": "c", "descriptors": [{"key": "k"}, {"key": "k"}]}, "appears twice"),
        ({"clusterRef": "c", "descriptors": [{"key": "k", "shadowMode": "yes"}]},
         "shadow_mode must be a boolean"),
        ({"clusterRef": "c", "descriptors": _nested(DESCRIPTOR_DEPTH_MAX + 1)},
         f"deeper than {DESCRIPTOR_DEPTH_MAX} levels"),
        ({"clusterRef": "c", "descriptors": [{"key": f"k{i}"} for i in range(RULES_MAX + 1)]},
         "rules_per_policy_max"),
    ],
)  # fmt: skip
def test_bad_specs_are_refused(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_ratelimitpolicy("api", "team-a", spec)


@pytest.mark.parametrize(
    ("spec", "cluster", "dedicated", "domain"),
    [
        ({"clusterRef": "shared"}, "shared", False, "api"),
        ({"clusterRef": "shared", "domain": "edge.v1"}, "shared", False, "edge.v1"),
        ({"replicas": 3}, "api-cluster", True, "api"),
    ],
)
def test_attachment_and_domain(
    spec: dict[str, Any], cluster: str, dedicated: bool, domain: str
) -> None:
    parsed = parse_ratelimitpolicy("api", "team-a", spec)
    assert parsed.attachment == attachment("team-a", "api", spec.get("clusterRef"))
    assert (parsed.attachment.cluster, parsed.attachment.dedicated) == (cluster, dedicated)
    assert parsed.domain == domain
    assert policy_document(parsed) == {"domain": domain, "descriptors": []}


def test_dedicated_cluster_is_owned_and_sized_by_the_spec() -> None:
    spec = parse_ratelimitpolicy("api", "team-a", {"replicas": 5, "storage": {"size": "2Gi"}})
    manifest = dedicated_cluster_manifest(spec, "uid-1")
    assert manifest is not None
    assert manifest["metadata"]["name"] == "api-cluster"
    [owner] = manifest["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "RateLimitPolicy", "api", "uid-1", True)  # fmt: skip
    assert manifest["spec"] == {"replicas": 5, "storage": {"size": "2Gi"}}
    assert parse_spec("api-cluster", "team-a", manifest["spec"]).replicas == 5
    shared = parse_ratelimitpolicy("api", "team-a", {"clusterRef": "c"})
    assert dedicated_cluster_manifest(shared, "u") is None


FULL = {
    "clusterRef": "shared",
    "domain": "api",
    "descriptors": [
        {"key": "remote_address",
         "rateLimit": {"unit": "second", "requestsPerUnit": 10, "burst": 20, "name": "per-ip"}},
        {"key": "path", "value": "/login",
         "rateLimit": {"unit": "minute", "requestsPerUnit": 5, "algorithm": "sliding_log",
                       "consistency": "strict"},
         "descriptors": [{"key": "user", "rateLimit": {
             "unit": "hour", "requestsPerUnit": 20, "algorithm": "gcra",
             "quotaRequests": 5, "quotaValidMs": 1000}}]},
        {"key": "path", "shadowMode": True,
         "rateLimit": {"unit": "day", "requestsPerUnit": 100, "consistency": "global"}},
        {"key": "job", "rateLimit": {"unit": "minute", "requestsPerUnit": 2,
                                     "algorithm": "concurrency", "consistency": "local"}},
    ],
}  # fmt: skip


def test_policy_document_is_the_nodes_normalised_form() -> None:
    spec = parse_ratelimitpolicy("limits", "team-a", FULL)
    document = policy_document(spec)
    assert document["domain"] == "api" and spec.rules == 5
    assert document["descriptors"][0] == {
        "key": "remote_address",
        "rate_limit": {"unit": "second", "requests_per_unit": 10, "algorithm": "token_bucket",
                       "burst": 20, "consistency": "owner", "name": "per-ip"},
    }  # fmt: skip
    login = document["descriptors"][1]
    assert login["value"] == "/login"
    assert login["descriptors"][0]["rate_limit"]["quota_requests"] == 5
    assert document["descriptors"][2]["shadow_mode"] is True
    # What the node stores for it (parse, then to_dict) is the document itself.
    assert parse_policy(document).to_dict() == document


def test_api_server_defaults_give_the_same_document() -> None:
    defaulted = {"unit": "second", "requestsPerUnit": 10, "algorithm": "token_bucket",
                 "burst": 0, "consistency": "owner", "quotaRequests": 0,
                 "quotaValidMs": 0}  # fmt: skip
    bare = parse_ratelimitpolicy("a", "n", {"clusterRef": "c", "descriptors": [
        {"key": "k", "rateLimit": _limit()}]})  # fmt: skip
    full = parse_ratelimitpolicy("a", "n", {"clusterRef": "c", "descriptors": [
        {"key": "k", "rateLimit": defaulted, "shadowMode": False, "descriptors": []}]})  # fmt: skip
    assert policy_document(bare) == policy_document(full)


def test_written_only_when_the_cluster_differs() -> None:
    spec = parse_ratelimitpolicy("limits", "team-a", FULL)
    document = policy_document(spec)
    assert needs_write(None, spec)
    assert not needs_write(parse_policy(document).to_dict(), spec)
    changed = parse_policy(document).to_dict()
    changed["descriptors"][0]["rate_limit"]["requests_per_unit"] = 11
    assert needs_write(changed, spec)


def _member(generation: int, ring: list[str], source: str = "gossip") -> dict[str, Any]:
    return {"generation": generation, "ring_source": source,
            "ring": [{"name": n, "client_url": f"http://{n}"} for n in ring]}  # fmt: skip


def _listing(generation: int, *members: dict[str, Any] | None) -> dict[str, Any]:
    answers = [{"url": f"http://m{i}", "status": s} for i, s in enumerate(members)]
    return {"policy": {}, "generation": generation, "members": answers}


RING = ["a", "b", "c"]


@pytest.mark.parametrize(
    ("obs", "ready", "reasons"),
    [
        (RateLimitObservation(False, False), False,
         ("ClusterNotFound", "WaitingForCluster", "NotRead")),
        (RateLimitObservation(True, False), False, ("NoLeader", "WaitingForCluster", "NotRead")),
        (RateLimitObservation(True, True, error_code="limit-exceeded",
                              error_detail="policies_max"), False,
         ("LeaderAnswered", "LimitExceeded", "NotRead")),
        (RateLimitObservation(True, True, applied=True), True,
         ("LeaderAnswered", "Applied", "NotRead")),
        (RateLimitObservation(True, True, applied=True, listing=_listing(
            7, _member(7, RING), _member(8, RING), _member(7, RING))), True,
         ("LeaderAnswered", "Applied", "AllMembers")),
        (RateLimitObservation(True, True, applied=True, listing=_listing(
            7, _member(6, RING), None, _member(7, RING))), True,
         ("LeaderAnswered", "Applied", "MembersBehind")),
    ],
)  # fmt: skip
def test_status_table(obs: RateLimitObservation, ready: bool, reasons: tuple[str, ...]) -> None:
    spec = parse_ratelimitpolicy("limits", "team-a", FULL)
    status = build_ratelimit_status(spec, obs, generation=4, previous={}, now=T0)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert status["ready"] is ready
    assert tuple(conditions[t]["reason"] for t in ("ClusterReady", "PolicyApplied",
                                                   "Propagated")) == reasons  # fmt: skip
    assert conditions["Ready"]["status"] == ("True" if ready else "False")
    assert (status["cluster"], status["domain"], status["rules"]) == ("shared", "api", 5)
    assert status["endpoint"] == "http://shared.team-a.svc:2379"
    assert status["rlsEndpoint"] == "shared.team-a.svc:8081"
    assert status["observedGeneration"] == 4
    if obs.listing is None:
        assert "policyGeneration" not in status and "applied" not in status


def test_propagation_counts_and_rings() -> None:
    spec = parse_ratelimitpolicy("limits", "team-a", FULL)
    listing = _listing(7, _member(7, RING), None, _member(6, ["a", "b"]))
    obs = RateLimitObservation(True, True, applied=True, listing=listing)
    status = build_ratelimit_status(spec, obs, generation=1, previous={}, now=T0)
    assert (status["policyGeneration"], status["members"], status["membersAnswered"],
            status["membersApplied"], status["applied"]) == (7, 3, 2, 1, "1/3")  # fmt: skip
    assert (status["ringMembers"], status["ring"], status["ringSource"]) == (3, RING, "gossip")
    assert status["ringsAgree"] is False
    agreeing = _listing(7, _member(7, RING), _member(7, list(reversed(RING))))
    obs = RateLimitObservation(True, True, applied=True, listing=agreeing)
    status = build_ratelimit_status(spec, obs, generation=1, previous={}, now=T0)
    assert status["ringsAgree"] is True and status["applied"] == "2/2"
    silent = _listing(7, None, None)
    obs = RateLimitObservation(True, True, applied=True, listing=silent)
    status = build_ratelimit_status(spec, obs, generation=1, previous={}, now=T0)
    assert status["applied"] == "0/2" and "ringMembers" not in status
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Propagated"] == "MembersBehind"


def test_transition_times_move_only_on_a_change() -> None:
    spec = parse_ratelimitpolicy("limits", "team-a", FULL)
    waiting = RateLimitObservation(True, False)
    first = build_ratelimit_status(spec, waiting, generation=1, previous={}, now=T0)
    same = build_ratelimit_status(spec, waiting, generation=1, previous=first, now=T1)
    assert [c["lastTransitionTime"] for c in same["conditions"]] == ["2026-01-01T00:00:00Z"] * 4
    ok = RateLimitObservation(True, True, applied=True, listing=_listing(3, _member(3, RING)))
    changed = build_ratelimit_status(spec, ok, generation=1, previous=same, now=T1)
    assert {c["lastTransitionTime"] for c in changed["conditions"]} == {"2026-01-01T00:01:00Z"}


def test_a_taken_or_creating_dedicated_cluster_is_reported() -> None:
    spec = parse_ratelimitpolicy("api", "team-a", {"replicas": 3})
    creating = build_ratelimit_status(spec, RateLimitObservation(False, False), generation=1,
                                      previous={}, now=T0)  # fmt: skip
    assert creating["conditions"][0]["reason"] == "ClusterCreating"
    assert creating["cluster"] == "api-cluster"
    taken = RateLimitObservation(False, False, name_taken=True)
    status = build_ratelimit_status(spec, taken, generation=1, previous={}, now=T0)
    assert status["conditions"][0]["reason"] == "ClusterNameTaken" and not status["ready"]
