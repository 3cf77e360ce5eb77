"""LockService pure parts, table-tested: the spec parser (the CRD's rules again), the
attachment to a cluster, the dedicated cluster manifest, the namespace-settings document
and the status with its conditions."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from synod_operator.attach import (
    CLUSTER_URLS_PER_CLUSTER_MAX,
    attachment,
    controlled_by,
    member_urls,
    parse_cluster_urls,
)
from synod_operator.lockservice import (
    LockObservation,
    build_lock_status,
    dedicated_cluster_manifest,
    namespace_settings_document,
    parse_lockservice,
)
from synod_operator.spec import SpecError, parse_spec

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=1)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "exactly one"),
        ({"clusterRef": "c", "replicas": 3}, "exactly one"),
        ({"replicas": 4}, "odd"),
        ({"replicas": 11}, "odd"),
        ({"clusterRef": "c", "storage": {"size": "1Gi"}}, "storage"),
        ({"clusterRef": "c", "lockNamespace": "default"}, "reserved"),
        ({"clusterRef": "c", "settings": {"lockDelayMs": 60_001}}, "lockDelayMs"),
        ({"clusterRef": "c", "settings": {"locksMax": -1}}, "locksMax"),
        ({"clusterRef": "c", "settings": {"waitersPerLockMax": True}}, "waitersPerLockMax"),
    ],
)
def test_bad_specs_are_refused(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_lockservice("jobs", "team-a", spec)


@pytest.mark.parametrize(
    ("spec", "cluster", "dedicated", "ns"),
    [
        ({"clusterRef": "shared"}, "shared", False, "jobs"),
        ({"clusterRef": "shared", "lockNamespace": "batch/jobs"}, "shared", False, "batch/jobs"),
        ({"replicas": 3}, "jobs-cluster", True, "jobs"),
        ({"replicas": 1, "storage": {"size": "2Gi"}}, "jobs-cluster", True, "jobs"),
    ],
)
def test_attachment_and_lock_namespace(
    spec: dict[str, Any], cluster: str, dedicated: bool, ns: str
) -> None:
    parsed = parse_lockservice("jobs", "team-a", spec)
    assert parsed.attachment == attachment("team-a", "jobs", spec.get("clusterRef"))
    assert (parsed.attachment.cluster, parsed.attachment.dedicated) == (cluster, dedicated)
    assert parsed.attachment.endpoint == f"http://{cluster}.team-a.svc:2379"
    assert parsed.lock_namespace == ns


def test_dedicated_cluster_is_owned_and_sized_by_the_spec() -> None:
    spec = parse_lockservice(
        "jobs", "team-a", {"replicas": 5, "storage": {"size": "2Gi", "storageClassName": "ssd"}}
    )
    manifest = dedicated_cluster_manifest(spec, "uid-1")
    assert manifest is not None
    assert manifest["kind"] == "ConsensusCluster"
    assert manifest["apiVersion"] == "synod.dev/v1alpha1"
    assert manifest["metadata"]["name"] == "jobs-cluster"
    assert manifest["metadata"]["namespace"] == "team-a"
    [owner] = manifest["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "LockService",
        "jobs",
        "uid-1",
        True,
    )
    assert manifest["spec"] == {
        "replicas": 5,
        "storage": {"size": "2Gi", "storageClassName": "ssd"},
    }
    # The built cluster passes the ConsensusCluster parser (its CRD's rules).
    assert parse_spec("jobs-cluster", "team-a", manifest["spec"]).replicas == 5
    assert dedicated_cluster_manifest(parse_lockservice("j", "n", {"clusterRef": "c"}), "u") is None


@pytest.mark.parametrize(
    ("settings", "document"),
    [
        ({}, {"ns": "jobs", "lock_delay_ms": 0, "locks_max": 0, "waiters_per_lock_max": 0}),
        (
            {"lockDelayMs": 1000, "locksMax": 50, "waitersPerLockMax": 7},
            {"ns": "jobs", "lock_delay_ms": 1000, "locks_max": 50, "waiters_per_lock_max": 7},
        ),
    ],
)
def test_namespace_settings_document(settings: dict[str, Any], document: dict[str, Any]) -> None:
    spec = parse_lockservice("jobs", "team-a", {"clusterRef": "c", "settings": settings})
    assert namespace_settings_document(spec) == document
    # Idempotent: the same spec always gives the same document.
    assert namespace_settings_document(spec) == namespace_settings_document(spec)


LISTING = {
    "ns": "jobs",
    "locks": [
        {"name": "a", "type": "mutex", "holders": 1, "waiters": 2},
        {"name": "b", "type": "mutex", "holders": 0, "waiters": 0},
        {"name": "c", "type": "semaphore", "holders": 3, "waiters": 1},
    ],
    "more": False,
    "count": 3,
}


@pytest.mark.parametrize(
    ("obs", "ready", "reasons"),
    [
        (LockObservation(False, False), False, ("ClusterNotFound", "WaitingForCluster")),
        (LockObservation(True, False), False, ("NoLeader", "WaitingForCluster")),
        (
            LockObservation(True, True, error_code="limit-exceeded", error_detail="namespaces_max"),
            False,
            ("LeaderAnswered", "LimitExceeded"),
        ),
        (
            LockObservation(True, True, applied=True, listing=LISTING),
            True,
            ("LeaderAnswered", "Applied"),
        ),
    ],
)
def test_status_table(obs: LockObservation, ready: bool, reasons: tuple[str, str]) -> None:
    spec = parse_lockservice("jobs", "team-a", {"clusterRef": "shared"})
    status = build_lock_status(spec, obs, generation=4, previous={}, now=T0)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert status["ready"] is ready
    assert (
        conditions["ClusterReady"]["reason"],
        conditions["SettingsApplied"]["reason"],
    ) == reasons
    assert conditions["Ready"]["status"] == ("True" if ready else "False")
    assert status["cluster"] == "shared" and status["lockNamespace"] == "jobs"
    assert status["endpoint"] == "http://shared.team-a.svc:2379"
    assert status["observedGeneration"] == 4
    if ready:
        assert (status["locks"], status["locksHeld"], status["waiters"]) == (3, 2, 3)
        assert status["countsTruncated"] is False
    else:
        assert "locksHeld" not in status


def test_dedicated_cluster_not_yet_created_says_creating() -> None:
    spec = parse_lockservice("jobs", "team-a", {"replicas": 3})
    status = build_lock_status(
        spec, LockObservation(False, False), generation=1, previous={}, now=T0
    )
    assert status["conditions"][0]["reason"] == "ClusterCreating"
    assert status["cluster"] == "jobs-cluster"


def test_transition_times_move_only_on_a_change() -> None:
    spec = parse_lockservice("jobs", "team-a", {"clusterRef": "shared"})
    first = build_lock_status(spec, LockObservation(True, False), generation=1, previous={}, now=T0)
    same = build_lock_status(
        spec, LockObservation(True, False), generation=1, previous=first, now=T1
    )
    assert [c["lastTransitionTime"] for c in same["conditions"]] == ["2026-01-01T00:00:00Z"] * 3
    ok = LockObservation(True, True, applied=True, listing=LISTING)
    changed = build_lock_status(spec, ok, generation=1, previous=same, now=T1)
    times = {c["type"]: c["lastTransitionTime"] for c in changed["conditions"]}
    assert times == {
        "ClusterReady": "2026-01-01T00:01:00Z",
        "SettingsApplied": "2026-01-01T00:01:00Z",
        "Ready": "2026-01-01T00:01:00Z",
    }


def test_truncated_listing_is_flagged() -> None:
    spec = parse_lockservice("jobs", "team-a", {"clusterRef": "shared"})
    listing = {**LISTING, "more": True, "count": 5000}
    obs = LockObservation(True, True, applied=True, listing=listing)
    status = build_lock_status(spec, obs, generation=1, previous={}, now=T0)
    assert status["countsTruncated"] is True and status["locks"] == 5000


def test_member_urls_override_and_default() -> None:
    spec = parse_spec("shared", "team-a", {"replicas": 3})
    assert member_urls(spec, {}) == [
        f"http://shared-{i}.shared-peers.team-a.svc:2379" for i in range(3)
    ]
    assert len(member_urls(spec, {}, statefulset_replicas=5)) == 5
    overrides = parse_cluster_urls('{"team-a/shared": ["http://127.0.0.1:1/"]}')
    assert member_urls(spec, overrides) == ["http://127.0.0.1:1"]
    assert parse_cluster_urls("") == {}


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        '{"no-slash": ["http://x"]}',
        '{"a/b": []}',
        '{"a/b": ' + str(["http://x"] * (CLUSTER_URLS_PER_CLUSTER_MAX + 1)).replace("'", '"') + "}",
    ],
)
def test_bad_cluster_urls_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="SYNOD_OPERATOR_CLUSTER_URLS"):
        parse_cluster_urls(text)


def test_a_taken_dedicated_cluster_name_is_reported() -> None:
    spec = parse_lockservice("jobs", "team-a", {"replicas": 3})
    obs = LockObservation(False, False, name_taken=True)
    status = build_lock_status(spec, obs, generation=1, previous={}, now=T0)
    assert status["conditions"][0]["reason"] == "ClusterNameTaken"
    assert status["ready"] is False


@pytest.mark.parametrize(
    ("refs", "owned"),
    [
        ([], False),
        ([{"uid": "u1", "controller": True}], True),
        ([{"uid": "u1", "controller": False}], False),
        ([{"uid": "u2", "controller": True}], False),
    ],
)
def test_controlled_by(refs: list[dict[str, Any]], owned: bool) -> None:
    assert controlled_by({"metadata": {"ownerReferences": refs}}, "u1") is owned
