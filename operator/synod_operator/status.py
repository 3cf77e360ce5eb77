"""Pure status building: the leader's `/v1/cluster/status` and the planner's step in,
the ConsensusCluster's `.status` out."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from .builders import pod_name, quorum_size, selector_string
from .planner import (
    STEP_CONVERGENCE_TIMEOUT_S,
    MemberState,
    Observed,
    Reason,
    Step,
    StepKind,
)
from .spec import ClusterSpec

MEMBERS_IN_STATUS_MAX = 64  # the CRD's maxItems on status.members

SCALING_REASONS = frozenset(
    {
        Reason.SCALING_UP,
        Reason.ADDING_LEARNER,
        Reason.PROMOTING_LEARNER,
        Reason.REMOVING_MEMBER,
        Reason.SCALING_DOWN,
        Reason.RESTORING_MEMBERS,
    }
)


@dataclass(frozen=True)
class MemberReport:
    id: int
    voter: bool
    healthy: bool
    match_index: int
    last_contact_ms: int | None


@dataclass(frozen=True)
class ClusterReport:
    """What the leader said about the Raft cluster."""

    leader_id: int | None
    term: int
    commit_index: int
    members: tuple[MemberReport, ...]

    def member_states(self) -> tuple[MemberState, ...]:
        return tuple(MemberState(m.id, m.voter, m.healthy, m.match_index) for m in self.members)


def parse_cluster_status(body: dict[str, Any]) -> ClusterReport:
    """Parse a node's `/v1/cluster/status` answer (docs/api.md); followers may omit progress."""
    members = tuple(
        MemberReport(
            id=int(m["id"]),
            voter=m.get("role") != "learner",
            healthy=bool(m.get("healthy", False)),
            match_index=int(m.get("match_index") or 0),
            last_contact_ms=None if m.get("last_contact_ms") is None else int(m["last_contact_ms"]),
        )
        for m in body.get("members") or []
    )
    leader = body.get("leader_id")
    report = ClusterReport(
        leader_id=int(leader) if leader else None,
        term=int(body.get("term") or 0),
        commit_index=int(body.get("commit_index") or 0),
        members=members,
    )
    assert all(m.id >= 1 for m in report.members)
    return report


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _timestamp(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_timestamp(text: str) -> datetime.datetime:
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


def track_operation(
    previous: dict[str, Any] | None, step: Step, now: datetime.datetime
) -> dict[str, Any] | None:
    """The operation in progress and when it started (kept while the step's operation is)."""
    if step.kind is StepKind.NONE:
        return None
    if previous and previous.get("step") == step.operation and previous.get("startedAt"):
        return {**previous, "target": step.message}
    return {"step": step.operation, "target": step.message, "startedAt": _timestamp(now)}


def stalled_s(operation: dict[str, Any] | None, now: datetime.datetime) -> float:
    """How long the operation has run beyond the convergence bound (<= 0: within it)."""
    if not operation or not operation.get("startedAt"):
        return 0.0
    started = _parse_timestamp(str(operation["startedAt"]))
    return (now - started).total_seconds() - STEP_CONVERGENCE_TIMEOUT_S


def _condition(
    kind: str,
    ok: bool,
    reason: str,
    message: str,
    previous: dict[str, dict[str, Any]],
    generation: int,
    now: datetime.datetime,
) -> dict[str, Any]:
    status = "True" if ok else "False"
    before = previous.get(kind)
    changed = before is None or before.get("status") != status
    since = _timestamp(now) if changed or before is None else before.get("lastTransitionTime")
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since or _timestamp(now),
        "observedGeneration": generation,
    }


def build_status(
    spec: ClusterSpec,
    obs: Observed,
    report: ClusterReport | None,
    step: Step,
    *,
    generation: int,
    previous: dict[str, Any],
    now: datetime.datetime,
) -> dict[str, Any]:
    """The whole `.status` for one reconcile (conditions keep their transition times)."""
    assert generation >= 0
    previous_conditions = {c["type"]: c for c in previous.get("conditions") or [] if "type" in c}
    operation = track_operation(previous.get("operation"), step, now)
    overdue_s = stalled_s(operation, now)
    voters = obs.voters
    healthy_voters = sum(1 for m in voters if m.healthy)
    has_quorum = obs.leader_id is not None and bool(voters)
    has_quorum = has_quorum and healthy_voters >= quorum_size(len(voters))
    ready = sum(1 for pod in obs.pods if pod.ready and pod.ordinal < obs.statefulset_replicas)
    unhealthy = [m.id for m in voters if not m.healthy]

    if has_quorum:
        available = ("QuorumAvailable", f"{healthy_voters} of {len(voters)} voters healthy")
    elif step.reason is Reason.BOOTSTRAPPING:
        available = (str(Reason.BOOTSTRAPPING), step.message)
    else:
        available = (str(Reason.QUORUM_LOST), "no leader with a healthy quorum")

    degraded: tuple[bool, str, str]
    if not has_quorum and step.reason is not Reason.BOOTSTRAPPING:
        degraded = (True, str(Reason.QUORUM_LOST), available[1])
    elif overdue_s > 0 and step.kind is not StepKind.NONE:
        degraded = (
            True,
            f"{step.reason}Stalled",
            f"no progress within {STEP_CONVERGENCE_TIMEOUT_S:.0f}s; stopped at: {step.message}",
        )
    elif step.reason is Reason.QUORUM_AT_RISK:
        degraded = (True, str(Reason.QUORUM_AT_RISK), step.message)
    elif unhealthy:
        degraded = (True, "MemberUnhealthy", f"voters {unhealthy} are not healthy")
    else:
        degraded = (False, "AsExpected", "all members healthy")

    progressing = step.kind is not StepKind.NONE
    if degraded[0]:
        phase = "Degraded"
    elif not obs.bootstrapped:
        phase = "Creating"
    elif step.reason in SCALING_REASONS:
        phase = "Scaling"
    elif step.reason is Reason.ROLLING_UPGRADE:
        phase = "Upgrading"
    else:
        phase = "Running"

    conditions = [
        _condition("Available", has_quorum, *available, previous_conditions, generation, now),
        _condition(
            "Progressing",
            progressing,
            str(step.reason),
            step.message,
            previous_conditions,
            generation,
            now,
        ),
        _condition("Degraded", degraded[0], degraded[1], degraded[2], previous_conditions,
                   generation, now),
    ]  # fmt: skip
    members = []
    if report is not None:
        for m in report.members[:MEMBERS_IN_STATUS_MAX]:
            entry: dict[str, Any] = {
                "name": pod_name(spec.name, m.id - 1),
                "id": m.id,
                "role": "voter" if m.voter else "learner",
                "healthy": m.healthy,
                "matchIndex": m.match_index,
            }
            if m.last_contact_ms is not None:  # null is not an integer to the schema
                entry["lastContactMs"] = m.last_contact_ms
            members.append(entry)
    all_current = bool(obs.pods) and all(p.current for p in obs.pods)
    status: dict[str, Any] = {
        "phase": phase,
        "observedGeneration": generation,
        "replicas": len(obs.members),
        "readyReplicas": ready,
        "readyString": f"{ready}/{spec.replicas}",
        "selector": selector_string(spec.name),
        "leader": pod_name(spec.name, obs.leader_id - 1) if obs.leader_id else None,
        "term": report.term if report else previous.get("term"),
        "commitIndex": report.commit_index if report else previous.get("commitIndex"),
        "currentVersion": spec.version if all_current else previous.get("currentVersion"),
        "operation": operation,
        "members": members,
        "conditions": conditions,
    }
    assert len(status["conditions"]) == 3
    return status


def not_owned_status(
    message: str, *, generation: int, previous: dict[str, Any], now: datetime.datetime
) -> dict[str, Any]:
    """`.status` when an object of an owned name exists and belongs to somebody else:
    nothing is applied until it is renamed or removed (the operator never adopts)."""
    assert message and generation >= 0
    before = {c["type"]: c for c in previous.get("conditions") or [] if "type" in c}
    conditions = [
        _condition("Available", False, "NotOwned", message, before, generation, now),
        _condition("Progressing", False, "NotOwned", message, before, generation, now),
        _condition("Degraded", True, "NotOwned", message, before, generation, now),
    ]
    assert len(conditions) == 3
    return {"phase": "Degraded", "observedGeneration": generation, "conditions": conditions}
