"""IdGenerator pure parts, table-tested: the spec parser (the CRD's rules again), the
attachment per mode, the dedicated cluster manifest, the definition document (accepted by
the node's own Layout/GeneratorDef) and the status from the node's `GET /v1/ids` answer."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from synod.ids.layout import Layout
from synod.services.ids import GeneratorDef
from synod_operator.idgenerator import (
    IdObservation,
    build_id_status,
    dedicated_cluster_manifest,
    definition_document,
    parse_idgenerator,
)
from synod_operator.spec import SpecError

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=1)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "exactly one"),
        ({"clusterRef": "c", "replicas": 3}, "exactly one"),
        ({"mode": "segment"}, "exactly one"),
        ({"mode": "uuidv7", "clusterRef": "c"}, "no cluster"),
        ({"mode": "uuidv7", "replicas": 1}, "no cluster"),
        ({"mode": "ulid", "clusterRef": "c"}, "mode"),
        ({"replicas": 4}, "odd"),
        ({"replicas": True}, "odd"),
        ({"clusterRef": "c", "storage": {"size": "1Gi"}}, "storage"),
        ({"clusterRef": "c", "generator": "-bad"}, "generator"),
        ({"clusterRef": "c", "generator": "a" * 129}, "generator"),
        ({"clusterRef": "c", "snowflake": {"timeBits": 42}}, "exceeds 63"),
        ({"clusterRef": "c", "snowflake": {"workerBits": 17}}, "workerBits"),
        ({"clusterRef": "c", "snowflake": {"sequenceBits": 0}}, "sequenceBits"),
        ({"clusterRef": "c", "snowflake": {"workerBits": 4, "workerMax": 16}}, "workerMax"),
        ({"clusterRef": "c", "snowflake": {"workerMin": 5, "workerMax": 4}}, "exceeds"),
        ({"clusterRef": "c", "snowflake": {"epochMs": 2**53}}, "epochMs"),
        ({"clusterRef": "c", "snowflake": {"epochMs": -1}}, "epochMs"),
        ({"clusterRef": "c", "segment": {}}, "only with mode segment"),
        ({"mode": "segment", "clusterRef": "c", "snowflake": {}}, "only with mode snowflake"),
        ({"mode": "segment", "clusterRef": "c", "segment": {"stepMin": 0}}, "stepMin"),
        ({"mode": "segment", "clusterRef": "c", "segment": {"stepMax": 10_000_001}}, "stepMax"),
        ({"mode": "segment", "clusterRef": "c", "segment": {"stepInitial": 50}}, "stepMin <="),
        (
            {"mode": "segment", "clusterRef": "c", "segment": {"growBelowMs": 2_000_000}},
            "growBelowMs <=",
        ),
    ],
)
def test_bad_specs_are_refused(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_idgenerator("orders", "team-a", spec)


@pytest.mark.parametrize(
    ("spec", "cluster", "dedicated", "generator"),
    [
        ({"clusterRef": "shared"}, "shared", False, "orders"),
        ({"clusterRef": "shared", "generator": "orders.v2"}, "shared", False, "orders.v2"),
        ({"replicas": 3}, "orders-cluster", True, "orders"),
        ({"mode": "segment", "replicas": 1}, "orders-cluster", True, "orders"),
    ],
)
def test_attachment_and_generator_name(
    spec: dict[str, Any], cluster: str, dedicated: bool, generator: str
) -> None:
    parsed = parse_idgenerator("orders", "team-a", spec)
    attach = parsed.attachment
    assert attach is not None
    assert (attach.cluster, attach.dedicated) == (cluster, dedicated)
    assert attach.endpoint == f"http://{cluster}.team-a.svc:2379"
    assert parsed.generator == generator


def test_uuidv7_has_no_cluster_and_nothing_to_write() -> None:
    parsed = parse_idgenerator("trace", "team-a", {"mode": "uuidv7"})
    assert parsed.attachment is None
    assert definition_document(parsed) is None
    assert dedicated_cluster_manifest(parsed, "uid-1") is None


@pytest.mark.parametrize(
    ("snowflake", "expected"),
    [
        (
            {},
            {"time_bits": 41, "worker_bits": 10, "sequence_bits": 12,
             "epoch_ms": 1_704_067_200_000, "worker_min": 0, "worker_max": 1023},
        ),
        (
            {"timeBits": 39, "workerBits": 16, "sequenceBits": 8, "epochMs": 0,
             "workerMin": 100, "workerMax": 199},
            {"time_bits": 39, "worker_bits": 16, "sequence_bits": 8, "epoch_ms": 0,
             "worker_min": 100, "worker_max": 199},
        ),
        (
            {"timeBits": 1, "workerBits": 1, "sequenceBits": 61},
            {"time_bits": 1, "worker_bits": 1, "sequence_bits": 61,
             "epoch_ms": 1_704_067_200_000, "worker_min": 0, "worker_max": 1},
        ),
    ],
)  # fmt: skip
def test_definition_document_is_what_the_node_accepts(
    snowflake: dict[str, Any], expected: dict[str, Any]
) -> None:
    parsed = parse_idgenerator("orders", "team-a", {"clusterRef": "c", "snowflake": snowflake})
    document = definition_document(parsed)
    assert document == expected
    # The node's own validation accepts it and fills nothing differently.
    layout = Layout(
        time_bits=expected["time_bits"],
        worker_bits=expected["worker_bits"],
        sequence_bits=expected["sequence_bits"],
        epoch_ms=expected["epoch_ms"],
    )
    definition = GeneratorDef("orders", layout, expected["worker_min"], expected["worker_max"])
    assert definition.to_dict() == {"name": "orders", **expected}


def test_segment_settings_default_to_the_sdk_step_policy() -> None:
    from synod.ids.segment import StepPolicy

    parsed = parse_idgenerator("inv", "team-a", {"mode": "segment", "clusterRef": "c"})
    policy = StepPolicy()
    s = parsed.segment
    assert (s.step_min, s.step_initial, s.step_max) == (
        policy.step_min,
        policy.step_initial,
        policy.step_max,
    )
    assert (s.grow_below_ms, s.shrink_above_ms) == (policy.grow_below_ms, policy.shrink_above_ms)
    assert definition_document(parsed) is None


def test_dedicated_cluster_is_owned_and_sized_by_the_spec() -> None:
    spec = parse_idgenerator("orders", "team-a", {"replicas": 3, "storage": {"size": "2Gi"}})
    manifest = dedicated_cluster_manifest(spec, "uid-1")
    assert manifest is not None
    assert (manifest["kind"], manifest["metadata"]["name"]) == (
        "ConsensusCluster",
        "orders-cluster",
    )
    [owner] = manifest["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("IdGenerator", "orders", "uid-1")
    assert manifest["spec"] == {"replicas": 3, "storage": {"size": "2Gi"}}
    assert manifest["metadata"]["labels"]["synod.dev/service-kind"] == "IdGenerator"
    with_ref = parse_idgenerator("orders", "team-a", {"clusterRef": "c"})
    assert dedicated_cluster_manifest(with_ref, "uid-1") is None


LISTING = {
    "generators": [
        {"name": "other", "workers_leased": 9, "hwm_ms": 5},
        {"name": "orders", "workers_leased": 2, "hwm_ms": 1_800_000_010_000},
    ],
    "tags": [{"tag": "orders", "max_id": 3000}, {"tag": "x", "max_id": 1}],
}


def _conds(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


@pytest.mark.parametrize(
    ("spec", "obs", "ready", "reasons", "counts"),
    [
        (
            {"clusterRef": "c"}, IdObservation(False, False), False,
            {"ClusterReady": ("False", "ClusterNotFound"),
             "DefinitionApplied": ("False", "WaitingForCluster")}, {},
        ),
        (
            {"replicas": 1}, IdObservation(False, False), False,
            {"ClusterReady": ("False", "ClusterCreating")}, {},
        ),
        (
            {"replicas": 1}, IdObservation(False, False, name_taken=True), False,
            {"ClusterReady": ("False", "ClusterNameTaken")}, {},
        ),
        (
            {"clusterRef": "c"}, IdObservation(True, False), False,
            {"ClusterReady": ("False", "NoLeader")}, {},
        ),
        (
            {"clusterRef": "c"},
            IdObservation(True, True, error_code="already-exists", error_detail="409"), False,
            {"ClusterReady": ("True", "LeaderAnswered"),
             "DefinitionApplied": ("False", "AlreadyExists")}, {},
        ),
        (
            {"clusterRef": "c"}, IdObservation(True, True, applied=True, listing=LISTING), True,
            {"DefinitionApplied": ("True", "Applied"), "Ready": ("True", "Ready")},
            {"workersLeased": 2, "highWaterMark": 1_800_000_010_000},
        ),
        (
            {"clusterRef": "c", "generator": "absent"},
            IdObservation(True, True, applied=True, listing=LISTING), True, {}, {},
        ),
        (
            {"clusterRef": "c"}, IdObservation(True, True, applied=True, listing=None), True,
            {}, {},
        ),
        (
            {"mode": "segment", "clusterRef": "c"},
            IdObservation(True, True, applied=True, listing=LISTING), True,
            {"DefinitionApplied": ("True", "NothingToDefine")}, {"highWaterMark": 3000},
        ),
        (
            {"mode": "segment", "clusterRef": "c"}, IdObservation(True, False), False,
            {"DefinitionApplied": ("False", "WaitingForCluster")}, {},
        ),
        (
            {"mode": "uuidv7"}, IdObservation(False, False, applied=True), True,
            {"ClusterReady": ("True", "NoClusterNeeded"),
             "DefinitionApplied": ("True", "NothingToDefine")}, {},
        ),
    ],
)  # fmt: skip
def test_status_table(
    spec: dict[str, Any],
    obs: IdObservation,
    ready: bool,
    reasons: dict[str, tuple[str, str]],
    counts: dict[str, int],
) -> None:
    parsed = parse_idgenerator("orders", "team-a", spec)
    status = build_id_status(parsed, obs, generation=3, previous={}, now=T0)
    assert status["ready"] is ready
    assert status["observedGeneration"] == 3
    assert status["mode"] == parsed.mode and status["generator"] == parsed.generator
    got = _conds(status)
    assert got["Ready"][0] == ("True" if ready else "False")
    for kind, expected in reasons.items():
        assert got[kind] == expected, kind
    assert {k: status[k] for k in ("workersLeased", "highWaterMark") if k in status} == counts
    if parsed.attachment is None:
        assert "cluster" not in status and "endpoint" not in status
    else:
        assert status["endpoint"] == parsed.attachment.endpoint


def test_conditions_keep_their_transition_time_while_unchanged() -> None:
    parsed = parse_idgenerator("orders", "team-a", {"clusterRef": "c"})
    ok = IdObservation(True, True, applied=True, listing=LISTING)
    first = build_id_status(parsed, ok, generation=1, previous={}, now=T0)
    again = build_id_status(parsed, ok, generation=1, previous=first, now=T1)
    assert [c["lastTransitionTime"] for c in again["conditions"]] == [
        c["lastTransitionTime"] for c in first["conditions"]
    ]
    lost = build_id_status(parsed, IdObservation(True, False), generation=1, previous=again, now=T1)
    assert {c["type"]: c["lastTransitionTime"] for c in lost["conditions"]}["Ready"] != (
        {c["type"]: c["lastTransitionTime"] for c in again["conditions"]}["Ready"]
    )
