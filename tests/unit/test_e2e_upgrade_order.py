"""The rolling-upgrade check of the operator e2e test (e2e/operator), on recorded events.

The e2e test needs a kind cluster; its check that the leader is restarted last is pure,
so it is tested here against event lists shaped like the ones kopf posts.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from synod_operator import planner
from synod_operator.builders import pod_name

E2E_MODULE = Path(__file__).resolve().parents[2] / "e2e" / "operator" / "test_operator_e2e.py"


def _load_e2e() -> ModuleType:
    spec = importlib.util.spec_from_file_location("operator_e2e_under_test", E2E_MODULE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


e2e = _load_e2e()


def event(second: int, reason: str, message: str, kind: str = "ConsensusCluster") -> dict[str, Any]:
    return {
        "metadata": {"name": f"kopf-event-{second}", "uid": str(second)},
        "involvedObject": {"kind": kind, "name": "kv"},
        "reason": reason,
        "message": message,
        "eventTime": f"2026-12-01T04:00:{second:02d}.000123Z",
    }


def restart(second: int, member: int) -> dict[str, Any]:
    return event(second, "RestartPod", f"restarting follower {member} on the new revision")


def transfer(second: int, source: int, target: int) -> dict[str, Any]:
    message = f"moving leadership from {source} to {target} before restarting it"
    return event(second, "TransferLeadership", message)


def test_pods_map_to_the_member_ids_the_operator_gives_them() -> None:
    # The planner's own mapping (id = ordinal + 1) and the pod names of the builders.
    for ordinal in range(5):
        assert e2e.member_of_pod(pod_name("kv", ordinal)) == planner._id(ordinal)
    assert e2e.member_of_pod("my-db-0") == 1
    with pytest.raises(ValueError):
        e2e.member_of_pod("kv")


def planned_upgrade(leader: int, replicas: int = 3) -> list[dict[str, Any]]:
    """The events the operator posts for a rolling upgrade, from the real planner: each
    active step is "executed" (a restarted pod runs the new revision, a transfer moves
    the leader) until the planner is done."""
    members = tuple(planner.MemberState(m, True, True, 100) for m in range(1, replicas + 1))
    current: set[int] = set()
    posted: list[dict[str, Any]] = []
    for second in range(4 * replicas):  # bound: a restart per member and one transfer
        pods = tuple(planner.PodState(o, ready=True, current=o in current) for o in range(replicas))
        obs = planner.Observed(replicas, replicas, pods, tuple(range(replicas)), True, False,
                               leader, 100, members)  # fmt: skip
        step = planner.plan(obs)
        if step.kind is planner.StepKind.NONE:
            return posted
        posted.append(event(second, str(step.kind), step.message))
        if step.kind is planner.StepKind.RESTART_POD:
            assert step.ordinal is not None
            current.add(step.ordinal)
        elif step.kind is planner.StepKind.TRANSFER_LEADERSHIP:
            assert step.transfer_to is not None
            leader = step.transfer_to
    raise AssertionError(f"the planner did not finish the upgrade: {posted}")


@pytest.mark.parametrize("leader", [1, 2, 3])
def test_the_planners_own_upgrade_passes_the_check(leader: int) -> None:
    """The message patterns match what the planner writes, and its order is accepted."""
    events = planned_upgrade(leader)
    assert [e["reason"] for e in events].count("RestartPod") == 3
    steps = e2e.upgrade_steps(events)
    assert len(steps) == len(events) == 4, events  # every step was recognised
    e2e.assert_leader_restarted_last(events, leader, {1, 2, 3})


def test_a_single_member_upgrade_names_its_member() -> None:
    (only,) = e2e.upgrade_steps(planned_upgrade(1, replicas=1))
    assert only[1:] == ("restart", 1, None)


def test_leader_restarted_last_after_a_transfer_passes() -> None:
    # Leader is member 2 (pod kv-1): followers 3 then 1, transfer 2 -> 3, then 2.
    events = [restart(1, 3), restart(20, 1), transfer(40, 2, 3), restart(40, 2)]
    events.append(event(5, "Applied", "owned objects created or converged"))
    e2e.assert_leader_restarted_last(list(reversed(events)), 2, {1, 2, 3})


@pytest.mark.parametrize(
    ("events", "complaint"),
    [
        # The leader restarted first: the old check passed this (a transfer happened).
        ([transfer(1, 2, 3), restart(2, 2), restart(20, 3), restart(40, 1)], "after the leader"),
        # No transfer at all.
        ([restart(1, 3), restart(20, 1), restart(40, 2)], "never moved"),
        # Restarted before leadership moved away.
        ([restart(1, 3), restart(20, 1), restart(30, 2), transfer(40, 2, 3)],
         "before the transfer"),
        # A member was never restarted.
        ([restart(1, 3), transfer(40, 2, 3), restart(41, 2)], "restarted [2, 3]"),
        # Only the StatefulSet's events (another kind) name the pods.
        ([event(1, "RestartPod", "restarting follower 1 on the new revision", "StatefulSet")],
         "restarted []"),
    ],
)  # fmt: skip
def test_a_wrong_upgrade_order_fails(events: list[dict[str, Any]], complaint: str) -> None:
    with pytest.raises(AssertionError, match=complaint.replace("[", r"\[").replace("]", r"\]")):
        e2e.assert_leader_restarted_last(events, 2, {1, 2, 3})


def test_event_time_falls_back_to_second_grained_stamps() -> None:
    coarse = {"metadata": {"name": "e"}, "firstTimestamp": "2026-12-01T04:00:05Z"}
    assert e2e.event_time(coarse).second == 5
    created = {"metadata": {"name": "e", "creationTimestamp": "2026-12-01T04:00:07Z"}}
    assert e2e.event_time(created).second == 7
    with pytest.raises(ValueError, match="no timestamp"):
        e2e.event_time({"metadata": {"name": "e"}})


def test_workload_job_runs_the_shared_recorder() -> None:
    """The e2e workload Job runs `python -m synod.chaos.recorder`; its arguments parse."""
    from synod.chaos.recorder import build_parser, spec_from_args

    job = json.loads(e2e.workload_job())
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["python", "-m", "synod.chaos.recorder"]
    spec = spec_from_args(build_parser().parse_args(command[3:]))
    assert spec.kind == "kv" and spec.duration_s == 1800.0
    assert "--stop-key" in command and "e2e/stop" in command
