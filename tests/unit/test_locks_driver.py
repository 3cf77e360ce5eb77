"""The leader's lock clock in the node driver: wait bounds fire as replicated commands
decided by the leader, and a new leader restarts them with their full duration."""

from __future__ import annotations

from synod.raft.types import Role
from synod.services.commands import lease_grant_op
from synod.services.locks import lock_acquire_op
from tests.unit.test_node_driver import Network


def waiters(net: Network, node_id: int) -> list[str]:
    status = net.members[node_id].driver.state.locks.status("default", "m")
    return [w["owner"] for w in status["waiters"]]


def queued_network() -> Network:
    net = Network(3)
    net.elect(1)
    net.write(1, "grant-a", lease_grant_op(60_000, 1))
    net.write(1, "grant-b", lease_grant_op(60_000, 2))
    net.write(1, "a", lock_acquire_op("m", "a", 1))
    net.write(1, "b", lock_acquire_op("m", "b", 2, wait_ms=1_000))
    assert waiters(net, 1) == ["b"]
    return net


def test_the_leader_fires_a_wait_bound_as_a_command() -> None:
    net = queued_network()
    net.tick(9)  # 900 ms: not yet
    assert all(waiters(net, node_id) == ["b"] for node_id in (1, 2, 3))
    net.tick(2)
    assert all(waiters(net, node_id) == [] for node_id in (1, 2, 3))


def test_a_new_leader_restarts_the_wait_with_its_full_duration() -> None:
    net = queued_network()
    net.tick(5)
    net.members[1].driver.transfer_leadership(2)
    net.run()
    assert net.members[2].driver.raft.role == Role.LEADER
    net.tick(7)  # past the old leader's deadline, not past the new one's
    assert all(waiters(net, node_id) == ["b"] for node_id in (1, 2, 3))
    net.tick(4)
    assert all(waiters(net, node_id) == [] for node_id in (1, 2, 3))
