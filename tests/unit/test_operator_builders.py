"""Pure manifest builders and status: spec in, objects out, no cluster."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from synod.node.config import load_config
from synod_operator import builders
from synod_operator.builders import Owner, build_all, config_data, config_hash
from synod_operator.planner import (
    STEP_CONVERGENCE_TIMEOUT_S,
    MemberState,
    Observed,
    PodState,
    Reason,
    Step,
    StepKind,
)
from synod_operator.reconcile import Lifetime, lifetime_from_config_map, pod_states, pvc_ordinals
from synod_operator.spec import SpecError, parse_spec
from synod_operator.status import build_status, parse_cluster_status

OWNER = Owner("demo", "uid-1")
NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def objects(spec: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, dict[str, Any]]:
    cluster = parse_spec("demo", "team-a", spec or {})
    options = {"initial_replicas": 3, "bootstrapped": False, "statefulset_replicas": 3}
    options.update(kwargs)
    built = build_all(cluster, OWNER, **options)
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in built}


def test_owned_objects_and_labels() -> None:
    built = objects()
    assert sorted(built) == [
        "ConfigMap/demo-config",
        "PodDisruptionBudget/demo",
        "Service/demo",
        "Service/demo-peers",
        "ServiceAccount/demo",
        "StatefulSet/demo",
    ]
    for obj in built.values():
        meta = obj["metadata"]
        assert meta["namespace"] == "team-a"
        assert meta["ownerReferences"] == [OWNER.reference()]
        assert meta["labels"]["app.kubernetes.io/name"] == "synod"
        assert meta["labels"]["app.kubernetes.io/instance"] == "demo"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "synod-operator"


def test_statefulset_shape() -> None:
    sts = objects()["StatefulSet/demo"]["spec"]
    assert sts["serviceName"] == "demo-peers"
    assert sts["podManagementPolicy"] == "Parallel"
    assert sts["updateStrategy"] == {"type": "OnDelete"}
    assert sts["replicas"] == 3
    assert sts["selector"]["matchLabels"].items() <= sts["template"]["metadata"]["labels"].items()
    claim = sts["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert "storageClassName" not in claim["spec"]


def test_pod_security_probes_and_prestop() -> None:
    pod = objects()["StatefulSet/demo"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    script = container["lifecycle"]["preStop"]["exec"]["command"][-1]
    assert "/v1/admin/leadership/transfer" in script and "leader" in script
    compile(script, "preStop", "exec")  # the hook is valid Python
    assert container["image"] == "synod/node:dev"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/var/lib/synod", "/tmp"} <= mounts


def test_node_environment_follows_docs_node_md() -> None:
    data = objects()["ConfigMap/demo-config"]["data"]
    assert data["SYNOD_PEER_DNS"] == "demo.demo-peers.team-a.svc"
    assert data["SYNOD_INITIAL_REPLICAS"] == "3"
    assert data["SYNOD_JOIN"] == "false"
    assert data["SYNOD_ID_FROM_HOSTNAME"] == "true"
    env = objects()["StatefulSet/demo"]["spec"]["template"]["spec"]["containers"][0]["env"]
    advertised = {e["name"]: e.get("value") for e in env}
    assert advertised["SYNOD_ADVERTISE_PEER"] == "$(POD_NAME).demo-peers.team-a.svc:2380"
    assert advertised["SYNOD_ADVERTISE_CLIENT"] == "http://$(POD_NAME).demo-peers.team-a.svc:2379"


def test_lifetime_keys_do_not_restart_members_but_tuning_does() -> None:
    cluster = parse_spec("demo", "team-a", {})
    founding = config_data(cluster, 3, False)
    joined = config_data(cluster, 3, True)
    assert founding != joined
    assert config_hash(founding) == config_hash(joined)
    tuned = parse_spec(
        "demo", "ns", {"raft": {"heartbeatIntervalMs": 200, "electionTimeoutMs": 2000}}
    )
    assert config_hash(config_data(tuned, 3, True)) != config_hash(joined)
    template = objects()["StatefulSet/demo"]["spec"]["template"]
    assert template["metadata"]["annotations"][builders.ANNOTATION_CONFIG_HASH] == config_hash(
        joined
    )


@pytest.mark.parametrize(("pods", "min_available"), [(1, 1), (3, 2), (4, 3), (5, 3), (9, 5)])
def test_pdb_never_allows_losing_quorum(pods: int, min_available: int) -> None:
    pdb = objects(statefulset_replicas=pods)["PodDisruptionBudget/demo"]["spec"]
    assert pdb["minAvailable"] == min_available
    assert pods - pdb["minAvailable"] < pdb["minAvailable"]


def test_services() -> None:
    built = objects()
    peers = built["Service/demo-peers"]["spec"]
    assert peers["clusterIP"] == "None" and peers["publishNotReadyAddresses"] is True
    client = built["Service/demo"]["spec"]
    assert [p["port"] for p in client["ports"]] == [2379, 8081]
    assert client["selector"] == builders.selector_labels("demo")


def test_overrides_storage_resources_and_monitoring() -> None:
    spec = {
        "version": "1.2.3",
        "image": "registry.local/synod",
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "storage": {"size": "5Gi", "storageClassName": "fast"},
        "podTemplate": {
            "annotations": {"team": "a"},
            "labels": {"app.kubernetes.io/instance": "hijack", "tier": "db"},
            "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone"}],
            "affinity": {"nodeAffinity": {}},
        },
        "monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    }
    built = objects(spec)
    sts = built["StatefulSet/demo"]["spec"]
    template = sts["template"]
    assert template["spec"]["containers"][0]["image"] == "registry.local/synod:1.2.3"
    assert template["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "100m"
    assert template["metadata"]["labels"]["app.kubernetes.io/instance"] == "demo", "selector wins"
    assert template["metadata"]["labels"]["tier"] == "db"
    assert template["metadata"]["annotations"]["team"] == "a"
    assert template["spec"]["affinity"] == {"nodeAffinity": {}}
    assert template["spec"]["tolerations"][0]["key"] == "dedicated"
    assert sts["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "fast"
    monitor = built["ServiceMonitor/demo"]
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


@pytest.mark.parametrize(
    "spec",
    [
        {"replicas": 4},
        {"replicas": 11},
        {"raft": {"heartbeatIntervalMs": 200, "electionTimeoutMs": 1000}},
    ],
)
def test_invalid_specs_are_refused(spec: dict[str, Any]) -> None:
    with pytest.raises(SpecError):
        parse_spec("demo", "ns", spec)
    assert parse_spec("demo", "ns", {}).replicas == 3


def test_lifetime_is_read_back_from_the_config_map() -> None:
    cluster = parse_spec("demo", "ns", {"replicas": 5})
    assert lifetime_from_config_map(None, cluster) == Lifetime(5, False)
    existing = {"data": {"SYNOD_INITIAL_REPLICAS": "3", "SYNOD_JOIN": "true"}}
    assert lifetime_from_config_map(existing, cluster) == Lifetime(3, True)


def _pod(name: str, revision: str, ready: bool, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"controller-revision-hash": revision}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def test_pod_states_from_the_api() -> None:
    sts = {
        "metadata": {"generation": 2},
        "status": {"observedGeneration": 2, "updateRevision": "r2"},
    }
    pods = [
        _pod("demo-1", "r1", True),
        _pod("demo-0", "r2", False, True),
        _pod("demo-x-0", "r2", True),
    ]
    states = pod_states("demo", pods, sts)
    assert states == (PodState(0, False, True, True), PodState(1, True, False, False))
    # A StatefulSet whose controller has not seen the new template yet: nothing is outdated.
    stale = {
        "metadata": {"generation": 3},
        "status": {"observedGeneration": 2, "updateRevision": "r2"},
    }
    assert all(p.current for p in pod_states("demo", pods, stale))
    claims = [{"metadata": {"name": n}} for n in ("data-demo-2", "data-demo-0", "data-other-1")]
    assert pvc_ordinals("demo", claims) == (0, 2)


NODE_STATUS = {
    "member_id": 1,
    "role": "leader",
    "term": 7,
    "leader_id": 1,
    "commit_index": 42,
    "members": [
        {"id": 1, "role": "voter", "match_index": 42, "last_contact_ms": 0, "healthy": True},
        {"id": 2, "role": "voter", "match_index": 41, "last_contact_ms": 12, "healthy": True},
        {"id": 3, "role": "voter", "match_index": None, "last_contact_ms": None, "healthy": False},
        {"id": 4, "role": "learner", "match_index": 10, "last_contact_ms": 30, "healthy": True},
    ],
}


def _status(step: Step, previous: dict[str, Any] | None = None, **obs: Any) -> dict[str, Any]:
    report = parse_cluster_status(NODE_STATUS)
    cluster = parse_spec("demo", "ns", {})
    fields: dict[str, Any] = {
        "desired_replicas": 3,
        "statefulset_replicas": 4,
        "pods": tuple(PodState(o, o != 2, True) for o in range(4)),
        "bootstrapped": True,
        "leader_id": 1,
        "commit_index": 42,
        "members": report.member_states(),
    }
    fields.update(obs)
    return build_status(
        cluster, Observed(**fields), report, step, generation=5, previous=previous or {}, now=NOW
    )


def test_status_from_the_leaders_report() -> None:
    step = Step(StepKind.REMOVE_MEMBER, Reason.REMOVING_MEMBER, "removing member 4", member_id=4)
    status = _status(step)
    assert status["leader"] == "demo-0" and status["term"] == 7 and status["commitIndex"] == 42
    assert status["readyString"] == "3/3" and status["replicas"] == 4
    assert status["members"][2] == {
        "name": "demo-2", "id": 3, "role": "voter", "healthy": False, "matchIndex": 0,
    }  # fmt: skip
    assert status["members"][3]["role"] == "learner"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Available"]["status"] == "True"
    assert conditions["Progressing"]["reason"] == "RemovingMember"
    assert conditions["Degraded"]["reason"] == "MemberUnhealthy"
    assert status["phase"] == "Degraded"
    assert status["selector"] == builders.selector_string("demo")


def test_quorum_lost_and_stalled_operations_are_degraded() -> None:
    lost = _status(Step(StepKind.WAIT, Reason.QUORUM_LOST, "no leader"), leader_id=None, members=())
    conditions = {c["type"]: c for c in lost["conditions"]}
    assert conditions["Available"]["status"] == "False"
    assert conditions["Degraded"]["reason"] == "QuorumLost"

    healthy = tuple(MemberState(i, True, True, 42) for i in (1, 2, 3))
    step = Step(StepKind.WAIT, Reason.ROLLING_UPGRADE, "waiting for member 3", member_id=3)
    started = NOW - datetime.timedelta(seconds=STEP_CONVERGENCE_TIMEOUT_S + 1)
    previous = {
        "operation": {"step": step.operation, "startedAt": started.strftime("%Y-%m-%dT%H:%M:%SZ")}
    }
    stalled = _status(step, previous, members=healthy)
    conditions = {c["type"]: c for c in stalled["conditions"]}
    assert conditions["Degraded"]["status"] == "True"
    assert conditions["Degraded"]["reason"] == "RollingUpgradeStalled"
    fresh = _status(step, {}, members=healthy)
    assert {c["type"]: c for c in fresh["conditions"]}["Degraded"]["status"] == "False"
    assert fresh["phase"] == "Upgrading"


def test_condition_transition_time_is_kept_while_unchanged() -> None:
    step = Step(StepKind.NONE, Reason.STABLE, "ok")
    healthy = tuple(MemberState(i, True, True, 42) for i in (1, 2, 3))
    earlier = "2025-12-31T00:00:00Z"
    previous = {
        "conditions": [{"type": "Available", "status": "True", "lastTransitionTime": earlier}]
    }
    status = _status(step, previous, members=healthy, statefulset_replicas=3)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Available"]["lastTransitionTime"] == earlier
    assert conditions["Progressing"]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert status["phase"] == "Running" and status["operation"] is None


def test_members_run_gossip_on_7946_udp_seeded_by_the_other_pods() -> None:
    made = objects()
    data = made["ConfigMap/demo-config"]["data"]
    assert data["SYNOD_LISTEN_GOSSIP"] == "0.0.0.0:7946"
    container = made["StatefulSet/demo"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "gossip", "containerPort": 7946, "protocol": "UDP"} in container["ports"]
    peers = made["Service/demo-peers"]["spec"]["ports"]
    assert {"name": "gossip", "port": 7946, "targetPort": "gossip", "protocol": "UDP"} in peers
    # What the node makes of this environment in pod demo-1 (docs/gossip.md).
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env = {k: v.replace("$(POD_NAME)", "demo-1") for k, v in {**data, **env}.items()}
    config = load_config([], env, hostname="demo-1")
    assert config.listen_gossip == "0.0.0.0:7946"
    assert config.advertise_gossip == "demo-1.demo-peers.team-a.svc:7946"
    assert config.gossip_join == (
        "demo-0.demo-peers.team-a.svc:7946",
        "demo-2.demo-peers.team-a.svc:7946",
    )


def test_members_serve_envoy_rls_through_the_client_service() -> None:
    made = objects()
    data = made["ConfigMap/demo-config"]["data"]
    container = made["StatefulSet/demo"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "rls", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    client = made["Service/demo"]["spec"]["ports"]
    assert {"name": "rls", "port": 8081, "targetPort": "rls", "protocol": "TCP"} in client
    config = load_config([], {**data, "SYNOD_ADVERTISE_CLIENT": "http://x:2379"}, hostname="demo-1")
    assert config.listen_rls == "0.0.0.0:8081"
