"""The membership planner: observed state in, the next safe step out.

Pure and level-triggered: `plan()` looks only at what is true now (the
StatefulSet, its pods and claims, and the Raft configuration reported by the
leader), never at what the operator did before. An operator that dies between
two steps therefore finishes the job on its next reconcile: the observed state
after any prefix of a scale or upgrade maps to the step that continues it.

Invariants the planner keeps:

* membership changes one member at a time; the StatefulSet never has more than
  one pod that is not a voter (a learner, or a pod about to be added/removed);
* a member leaves the Raft configuration before its pod goes away, and joins it
  as a learner (no vote) before it is promoted;
* a step that takes a voter away (remove, restart for an upgrade) is issued only
  when the voters that stay healthy still form a quorum of the new configuration;
* a rolling upgrade restarts followers first and the leader last, after a
  leadership transfer, each only when every member is ready.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from synod.bounds import PROMOTE_LAG_ENTRIES_MAX

# A learner is promoted only within this many entries of the commit index (the
# node answers 409 not-caught-up otherwise; checking first keeps the API quiet).
# The node refuses promotions beyond the same bound (one number, synod.bounds).
CAUGHT_UP_LAG_ENTRIES_MAX = PROMOTE_LAG_ENTRIES_MAX
# A step whose operation does not converge within this bound is reported as
# Degraded; the planner's gates, not this timer, keep it from pressing on.
STEP_CONVERGENCE_TIMEOUT_S = 300.0


class StepKind(StrEnum):
    NONE = "None"
    WAIT = "Wait"
    MARK_BOOTSTRAPPED = "MarkBootstrapped"
    GROW_STATEFULSET = "GrowStatefulSet"
    ADD_LEARNER = "AddLearner"
    PROMOTE_LEARNER = "PromoteLearner"
    TRANSFER_LEADERSHIP = "TransferLeadership"
    REMOVE_MEMBER = "RemoveMember"
    SHRINK_STATEFULSET = "ShrinkStatefulSet"
    DELETE_PVC = "DeletePVC"
    RESTART_POD = "RestartPod"


class Reason(StrEnum):
    """Machine-readable condition reasons (CamelCase, as Kubernetes conditions want)."""

    STABLE = "Stable"
    BOOTSTRAPPING = "Bootstrapping"
    QUORUM_LOST = "QuorumLost"
    SCALING_UP = "ScalingUp"
    ADDING_LEARNER = "AddingLearner"
    PROMOTING_LEARNER = "PromotingLearner"
    REMOVING_MEMBER = "RemovingMember"
    SCALING_DOWN = "ScalingDown"
    RESTORING_MEMBERS = "RestoringMembers"
    ROLLING_UPGRADE = "RollingUpgrade"
    QUORUM_AT_RISK = "QuorumAtRisk"


# Steps that change the cluster (everything except waiting or doing nothing).
ACTIVE_KINDS = frozenset(StepKind) - {StepKind.NONE, StepKind.WAIT}


@dataclass(frozen=True)
class PodState:
    ordinal: int
    ready: bool
    current: bool  # runs the StatefulSet's update revision (image and config)
    terminating: bool = False


@dataclass(frozen=True)
class MemberState:
    id: int
    voter: bool
    healthy: bool
    match_index: int


@dataclass(frozen=True)
class Observed:
    desired_replicas: int
    statefulset_replicas: int
    pods: tuple[PodState, ...] = ()
    pvc_ordinals: tuple[int, ...] = ()
    bootstrapped: bool = False
    retain_on_scale_down: bool = False
    leader_id: int | None = None
    commit_index: int = 0
    members: tuple[MemberState, ...] = ()  # empty when no leader answered

    def pod(self, ordinal: int) -> PodState | None:
        return next((pod for pod in self.pods if pod.ordinal == ordinal), None)

    def member(self, node_id: int) -> MemberState | None:
        return next((m for m in self.members if m.id == node_id), None)

    @property
    def voters(self) -> list[MemberState]:
        return sorted((m for m in self.members if m.voter), key=lambda m: m.id)

    @property
    def learners(self) -> list[MemberState]:
        return sorted((m for m in self.members if not m.voter), key=lambda m: m.id)


@dataclass(frozen=True)
class Step:
    kind: StepKind
    reason: Reason
    message: str
    member_id: int | None = None  # the Raft member the step is about
    ordinal: int | None = None  # the pod / claim ordinal the step is about
    replicas: int | None = None  # new StatefulSet size for grow/shrink
    transfer_to: int | None = None  # target voter of a leadership transfer
    details: dict[str, int] = field(default_factory=dict)

    @property
    def operation(self) -> str:
        """What the step works towards; a WAIT that follows an action keeps it."""
        for target in (self.member_id, self.ordinal, self.replicas):
            if target is not None:
                return f"{self.reason}:{target}"
        return str(self.reason)


def _id(ordinal: int) -> int:
    return ordinal + 1


def _ordinal(node_id: int) -> int:
    return node_id - 1


def _quorum(voters: int) -> int:
    return voters // 2 + 1


def _caught_up(member: MemberState, commit_index: int) -> bool:
    return member.healthy and member.match_index + CAUGHT_UP_LAG_ENTRIES_MAX >= commit_index


def _transfer_target(obs: Observed, exclude: set[int], *, current_only: bool) -> int | None:
    """The most caught-up healthy voter outside `exclude` (prefer ones already upgraded)."""
    candidates = [
        m
        for m in obs.voters
        if m.id not in exclude
        and m.healthy
        and m.id != obs.leader_id
        and m.id <= obs.desired_replicas
    ]
    if current_only:
        candidates = [m for m in candidates if (p := obs.pod(_ordinal(m.id))) and p.current]
    if not candidates:
        return None
    return max(candidates, key=lambda m: (m.match_index, -m.id)).id


def plan(obs: Observed) -> Step:
    """The next safe step towards `desired_replicas` voters on the current revision."""
    assert obs.desired_replicas >= 1, "the CRD keeps replicas within [1, 9]"
    assert obs.statefulset_replicas >= 0
    step = _plan(obs)
    # The safety gates below are the specification; re-check the two that
    # would lose data or availability if a bug slipped past them.
    if step.kind is StepKind.SHRINK_STATEFULSET:
        assert step.replicas is not None
        assert obs.member(_id(step.replicas)) is None, "shrinking away a Raft member"
    if step.kind is StepKind.DELETE_PVC:
        assert step.ordinal is not None and obs.member(_id(step.ordinal)) is None
    return step


def _plan(obs: Observed) -> Step:
    if obs.leader_id is None or not obs.members:
        if not obs.bootstrapped:
            return Step(
                StepKind.WAIT,
                Reason.BOOTSTRAPPING,
                "waiting for the founding members to elect a leader",
            )
        return Step(StepKind.WAIT, Reason.QUORUM_LOST, "no member reports a leader")
    if not obs.bootstrapped:
        return Step(
            StepKind.MARK_BOOTSTRAPPED,
            Reason.BOOTSTRAPPING,
            f"member {obs.leader_id} was elected; new members join from now on",
        )
    for planner in (_restore, _clean_up_after_removal, _shrink, _grow, _upgrade):
        step = planner(obs)
        if step is not None:
            return step
    return Step(
        StepKind.NONE, Reason.STABLE, f"{obs.desired_replicas} voters on the current revision"
    )


def _restore(obs: Observed) -> Step | None:
    """Someone shrank the StatefulSet below a member: bring its pod back first."""
    highest = max(m.id for m in obs.members)
    if obs.statefulset_replicas < _ordinal(highest) + 1:
        return Step(
            StepKind.GROW_STATEFULSET,
            Reason.RESTORING_MEMBERS,
            f"member {highest} has no pod; restoring the StatefulSet to {highest} pods",
            replicas=_ordinal(highest) + 1,
        )
    return None


def _clean_up_after_removal(obs: Observed) -> Step | None:
    """After a member left: drop its pod from the StatefulSet, then its claim."""
    top = obs.statefulset_replicas - 1
    if obs.statefulset_replicas > obs.desired_replicas and obs.member(_id(top)) is None:
        return Step(
            StepKind.SHRINK_STATEFULSET,
            Reason.SCALING_DOWN,
            f"member {_id(top)} left the configuration; removing its pod",
            ordinal=top,
            replicas=top,
        )
    if obs.retain_on_scale_down:
        return None
    for ordinal in sorted(obs.pvc_ordinals):
        stale = ordinal >= obs.statefulset_replicas and obs.member(_id(ordinal)) is None
        if stale and obs.pod(ordinal) is None:
            return Step(
                StepKind.DELETE_PVC,
                Reason.SCALING_DOWN,
                f"deleting the claim of removed member {_id(ordinal)}",
                ordinal=ordinal,
            )
    return None


def _shrink(obs: Observed) -> Step | None:
    """Members above the desired size leave, highest id first, leadership moved away first."""
    extra = [m for m in obs.members if m.id > obs.desired_replicas]
    if not extra:
        return None
    member = max(extra, key=lambda m: m.id)
    if member.voter and member.id == obs.leader_id:
        target = _transfer_target(obs, {member.id}, current_only=False)
        if target is None:
            return Step(
                StepKind.WAIT,
                Reason.QUORUM_AT_RISK,
                f"leader {member.id} must leave but no healthy voter can take over",
                member_id=member.id,
            )
        return Step(
            StepKind.TRANSFER_LEADERSHIP,
            Reason.REMOVING_MEMBER,
            f"moving leadership from {member.id} to {target} before removing it",
            member_id=member.id,
            transfer_to=target,
        )
    if member.voter:
        staying = [m for m in obs.voters if m.id != member.id]
        healthy_staying = sum(1 for m in staying if m.healthy)
        if healthy_staying < _quorum(len(staying)):
            return Step(
                StepKind.WAIT,
                Reason.QUORUM_AT_RISK,
                f"removing member {member.id} would leave {healthy_staying} healthy of "
                f"{len(staying)} voters",
                member_id=member.id,
            )
    return Step(
        StepKind.REMOVE_MEMBER,
        Reason.REMOVING_MEMBER,
        f"removing member {member.id} from the Raft configuration",
        member_id=member.id,
        ordinal=_ordinal(member.id),
    )


def _grow(obs: Observed) -> Step | None:
    """One new member at a time: pod, then learner, then voter once caught up."""
    for learner in obs.learners:
        pod = obs.pod(_ordinal(learner.id))
        if pod is None:
            return Step(
                StepKind.WAIT,
                Reason.ADDING_LEARNER,
                f"learner {learner.id} has no pod yet",
                member_id=learner.id,
            )
        if not _caught_up(learner, obs.commit_index):
            return Step(
                StepKind.WAIT,
                Reason.PROMOTING_LEARNER,
                f"learner {learner.id} is catching up (match {learner.match_index}, "
                f"commit {obs.commit_index})",
                member_id=learner.id,
            )
        voters = obs.voters
        healthy_after = sum(1 for m in voters if m.healthy) + 1
        if healthy_after < _quorum(len(voters) + 1):
            return Step(
                StepKind.WAIT,
                Reason.QUORUM_AT_RISK,
                f"promoting {learner.id} would need more healthy voters",
                member_id=learner.id,
            )
        return Step(
            StepKind.PROMOTE_LEARNER,
            Reason.PROMOTING_LEARNER,
            f"learner {learner.id} caught up; promoting it to voter",
            member_id=learner.id,
        )
    if len(obs.voters) >= obs.desired_replicas:
        return None
    ordinal = next(o for o in range(obs.desired_replicas) if obs.member(_id(o)) is None)
    if obs.statefulset_replicas <= ordinal:
        return Step(
            StepKind.GROW_STATEFULSET,
            Reason.SCALING_UP,
            f"adding pod {ordinal} for member {_id(ordinal)}",
            ordinal=ordinal,
            member_id=_id(ordinal),
            replicas=ordinal + 1,
        )
    if obs.pod(ordinal) is None:
        return Step(
            StepKind.WAIT,
            Reason.SCALING_UP,
            f"waiting for pod {ordinal} to be created",
            ordinal=ordinal,
            member_id=_id(ordinal),
        )
    return Step(
        StepKind.ADD_LEARNER,
        Reason.ADDING_LEARNER,
        f"adding member {_id(ordinal)} as a learner",
        ordinal=ordinal,
        member_id=_id(ordinal),
    )


def _upgrade(obs: Observed) -> Step | None:
    """Restart outdated pods one at a time: followers (highest ordinal first), leader last."""
    outdated = [o for o in range(obs.statefulset_replicas) if (p := obs.pod(o)) and not p.current]
    if not outdated:
        return None
    unready = [
        o
        for o in range(obs.statefulset_replicas)
        if (p := obs.pod(o)) is None or not p.ready or p.terminating
    ]
    unhealthy = [m.id for m in obs.voters if not m.healthy]
    if unready or unhealthy:
        waiting_for = unready[0] if unready else _ordinal(unhealthy[0])
        return Step(
            StepKind.WAIT,
            Reason.ROLLING_UPGRADE,
            f"waiting for member {_id(waiting_for)} to be ready and caught up",
            ordinal=waiting_for,
            member_id=_id(waiting_for),
        )
    assert obs.leader_id is not None
    followers = [o for o in outdated if _id(o) != obs.leader_id]
    if followers:
        ordinal = max(followers)
        return Step(
            StepKind.RESTART_POD,
            Reason.ROLLING_UPGRADE,
            f"restarting follower {_id(ordinal)} on the new revision",
            ordinal=ordinal,
            member_id=_id(ordinal),
        )
    leader_ordinal = _ordinal(obs.leader_id)
    if len(obs.voters) > 1:
        target = _transfer_target(obs, {obs.leader_id}, current_only=True)
        if target is None:
            return Step(
                StepKind.WAIT,
                Reason.QUORUM_AT_RISK,
                "no upgraded healthy voter can take over leadership",
                member_id=obs.leader_id,
            )
        return Step(
            StepKind.TRANSFER_LEADERSHIP,
            Reason.ROLLING_UPGRADE,
            f"moving leadership from {obs.leader_id} to {target} before restarting it",
            member_id=obs.leader_id,
            ordinal=leader_ordinal,
            transfer_to=target,
        )
    return Step(
        StepKind.RESTART_POD,
        Reason.ROLLING_UPGRADE,
        f"restarting the single member {obs.leader_id} on the new revision",
        ordinal=leader_ordinal,
        member_id=obs.leader_id,
    )
