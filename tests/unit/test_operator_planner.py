"""The membership planner: table tests over observed states, and a simulated cluster
that applies the planned steps (with operator crashes and retries between them)
and checks that every scale and upgrade converges without ever losing quorum."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from synod_operator.planner import (
    CAUGHT_UP_LAG_ENTRIES_MAX,
    MemberState,
    Observed,
    PodState,
    Reason,
    Step,
    StepKind,
    plan,
)

COMMIT = 500
STEPS_MAX = 200  # a scale of 1 -> 9 or a full upgrade needs far fewer


def voters(*ids: int, unhealthy: tuple[int, ...] = ()) -> tuple[MemberState, ...]:
    return tuple(MemberState(i, True, i not in unhealthy, COMMIT) for i in ids)


def learner(node_id: int, match_index: int = COMMIT) -> MemberState:
    return MemberState(node_id, False, True, match_index)


def pods(
    count: int, *, outdated: tuple[int, ...] = (), unready: tuple[int, ...] = ()
) -> tuple[PodState, ...]:
    return tuple(PodState(o, o not in unready, o not in outdated) for o in range(count))


def observed(**fields: object) -> Observed:
    base: dict[str, object] = {
        "desired_replicas": 3,
        "statefulset_replicas": 3,
        "pods": pods(3),
        "pvc_ordinals": (0, 1, 2),
        "bootstrapped": True,
        "leader_id": 1,
        "commit_index": COMMIT,
        "members": voters(1, 2, 3),
    }
    base.update(fields)
    return Observed(**base)  # type: ignore[arg-type]


# (description, observed state, expected kind, expected reason, expected target)
TABLE: list[tuple[str, Observed, StepKind, Reason, dict[str, int | None]]] = [
    (
        "new cluster, no leader yet",
        observed(bootstrapped=False, leader_id=None, members=()),
        StepKind.WAIT, Reason.BOOTSTRAPPING, {},
    ),
    (
        "first leader elected: from now on new members join",
        observed(bootstrapped=False),
        StepKind.MARK_BOOTSTRAPPED, Reason.BOOTSTRAPPING, {},
    ),
    (
        "no leader after bootstrap",
        observed(leader_id=None, members=()),
        StepKind.WAIT, Reason.QUORUM_LOST, {},
    ),
    ("steady state", observed(), StepKind.NONE, Reason.STABLE, {}),
    # ---- scale up 3 -> 5
    (
        "3->5: grow the StatefulSet by one",
        observed(desired_replicas=5),
        StepKind.GROW_STATEFULSET, Reason.SCALING_UP, {"replicas": 4, "member_id": 4},
    ),
    (
        "3->5: StatefulSet grew, pod not created yet",
        observed(desired_replicas=5, statefulset_replicas=4),
        StepKind.WAIT, Reason.SCALING_UP, {"ordinal": 3},
    ),
    (
        "3->5: pod 3 exists, add it as a learner",
        observed(desired_replicas=5, statefulset_replicas=4, pods=pods(4, unready=(3,)),
                 pvc_ordinals=(0, 1, 2, 3)),
        StepKind.ADD_LEARNER, Reason.ADDING_LEARNER, {"member_id": 4, "ordinal": 3},
    ),
    (
        "3->5: learner 4 is behind",
        observed(desired_replicas=5, statefulset_replicas=4, pods=pods(4),
                 members=(*voters(1, 2, 3), learner(4, COMMIT - CAUGHT_UP_LAG_ENTRIES_MAX - 1))),
        StepKind.WAIT, Reason.PROMOTING_LEARNER, {"member_id": 4},
    ),
    (
        "3->5: learner 4 caught up, promote it",
        observed(desired_replicas=5, statefulset_replicas=4, pods=pods(4),
                 members=(*voters(1, 2, 3), learner(4))),
        StepKind.PROMOTE_LEARNER, Reason.PROMOTING_LEARNER, {"member_id": 4},
    ),
    (
        "3->5: 4 voters, grow again",
        observed(desired_replicas=5, statefulset_replicas=4, pods=pods(4),
                 members=voters(1, 2, 3, 4)),
        StepKind.GROW_STATEFULSET, Reason.SCALING_UP, {"replicas": 5},
    ),
    (
        "3->5: a stale claim of ordinal 3 from an earlier scale-down goes first",
        observed(desired_replicas=5, pvc_ordinals=(0, 1, 2, 3)),
        StepKind.DELETE_PVC, Reason.SCALING_DOWN, {"ordinal": 3},
    ),
    (
        "3->5: a retained claim stays",
        observed(desired_replicas=5, pvc_ordinals=(0, 1, 2, 3), retain_on_scale_down=True),
        StepKind.GROW_STATEFULSET, Reason.SCALING_UP, {"replicas": 4},
    ),
    (
        "promotion waits while a voter is down and quorum would be at risk",
        observed(desired_replicas=5, statefulset_replicas=4, pods=pods(4),
                 members=(*voters(1, 2, 3, unhealthy=(2, 3)), learner(4))),
        StepKind.WAIT, Reason.QUORUM_AT_RISK, {"member_id": 4},
    ),
    # ---- scale down 5 -> 3
    (
        "5->3: remove the highest member first",
        observed(statefulset_replicas=5, pods=pods(5), pvc_ordinals=(0, 1, 2, 3, 4),
                 members=voters(1, 2, 3, 4, 5)),
        StepKind.REMOVE_MEMBER, Reason.REMOVING_MEMBER, {"member_id": 5},
    ),
    (
        "5->3: the highest member leads: move leadership away first",
        observed(statefulset_replicas=5, pods=pods(5), leader_id=5,
                 members=voters(1, 2, 3, 4, 5)),
        StepKind.TRANSFER_LEADERSHIP, Reason.REMOVING_MEMBER, {"member_id": 5, "transfer_to": 1},
    ),
    (
        "5->3: member 5 left, shrink the StatefulSet",
        observed(statefulset_replicas=5, pods=pods(5), members=voters(1, 2, 3, 4)),
        StepKind.SHRINK_STATEFULSET, Reason.SCALING_DOWN, {"replicas": 4},
    ),
    (
        "5->3: pod 4 gone, delete its claim",
        observed(statefulset_replicas=4, pods=pods(4), pvc_ordinals=(0, 1, 2, 3, 4),
                 members=voters(1, 2, 3, 4)),
        StepKind.DELETE_PVC, Reason.SCALING_DOWN, {"ordinal": 4},
    ),
    (
        "5->3: pod 4 still terminating: wait with the claim, remove member 4 meanwhile",
        observed(statefulset_replicas=4, pods=(*pods(4), PodState(4, False, True, True)),
                 pvc_ordinals=(0, 1, 2, 3, 4), members=voters(1, 2, 3, 4)),
        StepKind.REMOVE_MEMBER, Reason.REMOVING_MEMBER, {"member_id": 4},
    ),
    (
        "5->3: a learner above the target is removed",
        observed(statefulset_replicas=4, pods=pods(4), members=(*voters(1, 2, 3), learner(4))),
        StepKind.REMOVE_MEMBER, Reason.REMOVING_MEMBER, {"member_id": 4},
    ),
    (
        "removal waits when the voters that stay lack a healthy quorum",
        observed(statefulset_replicas=5, pods=pods(5),
                 members=voters(1, 2, 3, 4, 5, unhealthy=(2, 3))),
        StepKind.WAIT, Reason.QUORUM_AT_RISK, {"member_id": 5},
    ),
    (
        "someone shrank the StatefulSet under a member: restore it",
        observed(statefulset_replicas=2, pods=pods(2)),
        StepKind.GROW_STATEFULSET, Reason.RESTORING_MEMBERS, {"replicas": 3},
    ),
    # ---- rolling upgrade of 3, leader 2
    (
        "upgrade: highest outdated follower first",
        observed(pods=pods(3, outdated=(0, 1, 2)), leader_id=2),
        StepKind.RESTART_POD, Reason.ROLLING_UPGRADE, {"ordinal": 2},
    ),
    (
        "upgrade: a restarted pod is not ready yet: wait",
        observed(pods=pods(3, outdated=(0, 1), unready=(2,)), leader_id=2),
        StepKind.WAIT, Reason.ROLLING_UPGRADE, {"ordinal": 2},
    ),
    (
        "upgrade: a voter is unhealthy: wait",
        observed(pods=pods(3, outdated=(0, 1)), leader_id=2,
                 members=voters(1, 2, 3, unhealthy=(3,))),
        StepKind.WAIT, Reason.ROLLING_UPGRADE, {"member_id": 3},
    ),
    (
        "upgrade: next follower",
        observed(pods=pods(3, outdated=(0, 1)), leader_id=2),
        StepKind.RESTART_POD, Reason.ROLLING_UPGRADE, {"ordinal": 0},
    ),
    (
        "upgrade: only the leader is outdated: transfer to an upgraded voter",
        observed(pods=pods(3, outdated=(1,)), leader_id=2),
        StepKind.TRANSFER_LEADERSHIP, Reason.ROLLING_UPGRADE, {"member_id": 2},
    ),
    (
        "upgrade: the old leader is a follower now: restart it",
        observed(pods=pods(3, outdated=(1,)), leader_id=1),
        StepKind.RESTART_POD, Reason.ROLLING_UPGRADE, {"ordinal": 1},
    ),
    (
        "upgrade of a single member: restart it (no one to hand over to)",
        observed(desired_replicas=1, statefulset_replicas=1, pods=pods(1, outdated=(0,)),
                 pvc_ordinals=(0,), members=voters(1)),
        StepKind.RESTART_POD, Reason.ROLLING_UPGRADE, {"ordinal": 0},
    ),
    (
        "scaling comes before upgrading",
        observed(desired_replicas=5, pods=pods(3, outdated=(0,))),
        StepKind.GROW_STATEFULSET, Reason.SCALING_UP, {"replicas": 4},
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("state", "kind", "reason", "target"),
    [pytest.param(*row[1:], id=row[0]) for row in TABLE],
)
def test_next_step(
    state: Observed, kind: StepKind, reason: Reason, target: dict[str, int | None]
) -> None:
    step = plan(state)
    assert (step.kind, step.reason) == (kind, reason), step.message
    for key, value in target.items():
        assert getattr(step, key) == value, (key, step)
    assert step.message


def test_transfer_target_prefers_upgraded_and_caught_up_voters() -> None:
    members = (
        MemberState(1, True, True, COMMIT - 10),
        MemberState(2, True, True, COMMIT),
        MemberState(3, True, True, COMMIT),
    )
    state = observed(pods=pods(3, outdated=(0, 1)), leader_id=2, members=members)
    step = plan(state)
    # Ordinal 0 (member 1) is outdated and the only other follower: restart it first.
    assert step.kind is StepKind.RESTART_POD and step.ordinal == 0
    state = observed(pods=pods(3, outdated=(1,)), leader_id=2, members=members)
    step = plan(state)
    assert step.kind is StepKind.TRANSFER_LEADERSHIP
    assert step.transfer_to == 3, "the most caught-up upgraded voter"


def test_operation_is_stable_across_an_action_and_its_wait() -> None:
    restart = plan(observed(pods=pods(3, outdated=(0, 1, 2)), leader_id=2))
    waiting = plan(observed(pods=pods(3, outdated=(0, 1), unready=(2,)), leader_id=2))
    assert restart.kind is StepKind.RESTART_POD and waiting.kind is StepKind.WAIT
    assert restart.operation == waiting.operation == "RollingUpgrade:3"


# --------------------------------------------------------------------------------------
# A simulated cluster that carries out the steps.


@dataclass
class World:
    desired: int
    sts_replicas: int
    members: dict[int, bool]  # id -> voter
    leader: int | None
    revision: int = 1
    pod_revisions: dict[int, int] = field(default_factory=dict)
    unready: set[int] = field(default_factory=set)  # ordinals restarting or joining
    behind: set[int] = field(default_factory=set)  # learner ids not caught up
    pvcs: set[int] = field(default_factory=set)
    bootstrapped: bool = True
    log: list[Step] = field(default_factory=list)

    @classmethod
    def running(cls, size: int) -> World:
        return cls(
            desired=size,
            sts_replicas=size,
            members={i: True for i in range(1, size + 1)},
            leader=1,
            pod_revisions={o: 1 for o in range(size)},
            pvcs=set(range(size)),
        )

    def observe(self) -> Observed:
        return Observed(
            desired_replicas=self.desired,
            statefulset_replicas=self.sts_replicas,
            pods=tuple(
                PodState(o, o not in self.unready, rev == self.revision)
                for o, rev in sorted(self.pod_revisions.items())
            ),
            pvc_ordinals=tuple(sorted(self.pvcs)),
            bootstrapped=self.bootstrapped,
            leader_id=self.leader,
            commit_index=COMMIT,
            members=tuple(
                MemberState(
                    i,
                    voter,
                    healthy=(i - 1) in self.pod_revisions and (i - 1) not in self.unready,
                    match_index=0 if i in self.behind else COMMIT,
                )
                for i, voter in sorted(self.members.items())
            ),
        )

    def settle(self) -> None:
        """Time passes: pods are created, joiners catch up, restarted members recover."""
        for ordinal in range(self.sts_replicas):
            if ordinal not in self.pod_revisions:
                self.pod_revisions[ordinal] = self.revision
                self.pvcs.add(ordinal)
                self.unready.add(ordinal)
        self.behind.clear()
        # A pod is ready once it is a member that caught up (readiness needs a leader).
        self.unready = {o for o in self.unready if (o + 1) not in self.members}
        if self.leader is None or self.leader not in self.members:
            self.leader = min(i for i, voter in self.members.items() if voter)

    def apply(self, step: Step) -> None:
        kind = step.kind
        if kind is StepKind.GROW_STATEFULSET or kind is StepKind.SHRINK_STATEFULSET:
            assert step.replicas is not None
            self.sts_replicas = step.replicas
            for ordinal in [o for o in self.pod_revisions if o >= step.replicas]:
                del self.pod_revisions[ordinal]
                self.unready.discard(ordinal)
        elif kind is StepKind.ADD_LEARNER:
            assert step.member_id is not None
            if step.member_id not in self.members:
                self.members[step.member_id] = False
                self.behind.add(step.member_id)
        elif kind is StepKind.PROMOTE_LEARNER:
            assert step.member_id is not None and step.member_id not in self.behind
            self.members[step.member_id] = True
        elif kind is StepKind.TRANSFER_LEADERSHIP:
            assert step.transfer_to is not None and self.members.get(step.transfer_to)
            self.leader = step.transfer_to
        elif kind is StepKind.REMOVE_MEMBER:
            assert step.member_id is not None
            self.members.pop(step.member_id, None)
            if self.leader == step.member_id:
                self.leader = None
        elif kind is StepKind.DELETE_PVC:
            assert step.ordinal is not None
            self.pvcs.discard(step.ordinal)
        elif kind is StepKind.RESTART_POD:
            assert step.ordinal is not None
            self.pod_revisions[step.ordinal] = self.revision
            self.unready.add(step.ordinal)
            if self.leader == step.ordinal + 1:
                self.leader = None  # an election follows
        elif kind is StepKind.MARK_BOOTSTRAPPED:
            self.bootstrapped = True

    def check_invariants(self) -> None:
        voter_ids = [i for i, voter in self.members.items() if voter]
        healthy = [
            i for i in voter_ids if (i - 1) in self.pod_revisions and (i - 1) not in self.unready
        ]
        # At most one member is ever out of service, so a majority of voters stays up
        # (a single voter restarting is the unavoidable exception).
        assert len(healthy) >= len(voter_ids) // 2 + 1 or len(voter_ids) == 1, (
            self.members,
            healthy,
        )
        non_voting_pods = [o for o in self.pod_revisions if not self.members.get(o + 1, False)]
        assert len(non_voting_pods) <= 1, non_voting_pods
        assert all(1 <= i <= 9 for i in self.members)


def run(world: World, rng: random.Random | None = None) -> World:
    """Plan and apply until converged; with `rng`, the operator crashes and retries at random."""
    for _ in range(STEPS_MAX):
        world.settle()
        world.check_invariants()
        step = plan(world.observe())
        if step.kind is StepKind.NONE:
            return world
        world.log.append(step)
        if rng is not None and rng.random() < 0.3:
            continue  # the operator died before acting: the next one re-plans
        world.apply(step)
        if rng is not None and rng.random() < 0.2:
            world.apply(step)  # died after acting, before noticing: the step ran twice
        world.check_invariants()
    raise AssertionError(f"no convergence in {STEPS_MAX} steps: {world.log[-5:]}")


def assert_converged(world: World) -> None:
    assert world.members == {i: True for i in range(1, world.desired + 1)}
    assert world.sts_replicas == world.desired
    assert set(world.pod_revisions) == set(range(world.desired))
    assert all(rev == world.revision for rev in world.pod_revisions.values())
    assert world.pvcs == set(range(world.desired))


@pytest.mark.parametrize(("start", "target"), [(1, 3), (3, 5), (3, 9), (5, 3), (9, 1), (3, 1)])
def test_scaling_converges_one_member_at_a_time(start: int, target: int) -> None:
    world = World.running(start)
    world.desired = target
    run(world)
    assert_converged(world)
    changes = [s for s in world.log if s.kind in (StepKind.PROMOTE_LEARNER, StepKind.REMOVE_MEMBER)]
    assert len(changes) == abs(target - start)


def test_scale_down_moves_leadership_before_removing_the_leader() -> None:
    world = World.running(5)
    world.leader = 5
    world.desired = 3
    run(world)
    assert_converged(world)
    kinds = [s.kind for s in world.log]
    assert kinds.index(StepKind.TRANSFER_LEADERSHIP) < kinds.index(StepKind.REMOVE_MEMBER)


@pytest.mark.parametrize("leader", [1, 2, 3])
def test_rolling_upgrade_restarts_the_leader_last(leader: int) -> None:
    world = World.running(3)
    world.leader = leader
    world.revision = 2
    run(world)
    assert_converged(world)
    restarts = [s.member_id for s in world.log if s.kind is StepKind.RESTART_POD]
    assert sorted(restarts) == [1, 2, 3]
    assert restarts[-1] == leader
    transfer = next(s for s in world.log if s.kind is StepKind.TRANSFER_LEADERSHIP)
    assert transfer.member_id == leader


@pytest.mark.parametrize("seed", range(40))
def test_crashes_between_steps_still_converge(seed: int) -> None:
    """Kill the operator anywhere in a scale or upgrade: the next reconcile finishes it."""
    rng = random.Random(seed)
    start = rng.choice([1, 3, 5])
    world = World.running(start)
    world.leader = rng.randint(1, start)
    world.desired = rng.choice([1, 3, 5, 7])
    if rng.random() < 0.5:
        world.revision = 2
    run(world, rng)
    assert_converged(world)
    # And a converged cluster stays put.
    assert plan(world.observe()).kind is StepKind.NONE
