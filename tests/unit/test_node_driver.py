"""The node driver (synod.node.driver) on a tiny synchronous network.

Each member is a real NodeDriver over a real RaftNode and ServiceStateMachine;
Readies are persisted to a MemoryStorage at once, messages are delivered until
none are left, and a member can be cut off. The simulator drives the same class
under faults; these tests pin single behaviours with a readable scenario.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest

from synod.node.api import NodeError, NoLeader, NotLeader, Timeout
from synod.node.driver import DriverLimits, NodeDriver
from synod.raft.core import Config, RaftNode
from synod.raft.storage import MemoryStorage, bootstrap
from synod.raft.types import ConfChange, ConfChangeKind, ConfState, Message, Role
from synod.services.commands import encode_command, lease_grant_op, put_op
from synod.services.state import ServiceStateMachine

ROUNDS_MAX = 1000  # Delivery rounds before a test network must be quiet.


@dataclass
class Member:
    """One driver and what its clients got back."""

    driver: NodeDriver
    storage: MemoryStorage
    answers: dict[str, Any] = field(default_factory=dict)


class Network:
    """Drivers wired together; `cut` members neither send nor receive."""

    def __init__(self, size: int, *, timeout_ms: int = 1_000) -> None:
        conf = ConfState(voters=frozenset(range(1, size + 1)))
        self.members: dict[int, Member] = {}
        self.cut: set[int] = set()
        self.now_ms = 0
        for node_id in conf.voters:
            storage = MemoryStorage()
            bootstrap(storage, conf)
            raft = RaftNode(Config(node_id=node_id, seed=node_id), storage)
            limits = DriverLimits(request_timeout_ms=timeout_ms, snapshot_entries=1_000_000)
            driver = NodeDriver(raft, ServiceStateMachine(), boot_nonce=7, limits=limits)
            self.members[node_id] = Member(driver, storage)

    def run(self) -> None:
        """Turns and deliveries until nothing moves."""
        for _ in range(ROUNDS_MAX):
            outbox: list[Message] = []
            for node_id, member in self.members.items():
                outbox += self._turns(node_id, member)
            delivered = [m for m in outbox if m.source not in self.cut and m.to not in self.cut]
            if not delivered and not any(m.driver._inbox for m in self.members.values()):
                return
            for message in delivered:
                self.members[message.to].driver.receive([message])
        raise AssertionError("the network did not quiesce")

    def _turns(self, node_id: int, member: Member) -> list[Message]:
        out: list[Message] = []
        for _ in range(ROUNDS_MAX):
            turn = member.driver.begin(self.now_ms)
            if turn is None:
                return out
            out += turn.messages
            self._record(member, turn.answers)
            ready = turn.ready
            if ready is not None:
                if not ready.snapshot.is_empty():
                    member.storage.apply_snapshot(ready.snapshot)
                member.storage.append(ready.entries)
                if ready.hard_state is not None:
                    member.storage.set_hard_state(ready.hard_state)
            done = member.driver.complete(turn, self.now_ms)
            out += done.messages
            self._record(member, done.answers)
        raise AssertionError(f"member {node_id} never went idle")

    @staticmethod
    def _record(member: Member, answers: list[tuple[Any, Any]]) -> None:
        for token, outcome in answers:
            assert token not in member.answers, f"{token} answered twice"
            member.answers[token] = outcome

    def tick(self, ticks: int = 1, tick_ms: int = 100) -> None:
        """Every member ticks; time moves on."""
        for _ in range(ticks):
            self.now_ms += tick_ms
            for member in self.members.values():
                member.driver.tick(self.now_ms)
                self._record(member, member.driver.take_answers())
            self.run()

    def elect(self, node_id: int) -> None:
        """Make `node_id` the leader and let its term's no-op commit."""
        self.members[node_id].driver.raft.campaign()
        self.run()
        assert self.members[node_id].driver.raft.role == Role.LEADER

    def write(self, node_id: int, token: str, op: dict[str, Any]) -> None:
        """Submit an op through `node_id` and run the network."""
        self.members[node_id].driver.submit_write(token, encode_command(op), self.now_ms)
        self.run()


def test_reads_issued_on_three_members_at_once_are_all_answered() -> None:
    """ReadIndex contexts carry member id and boot nonce: the three members' first
    reads (each its own counter 1, and here even the same boot nonce) must not
    collide in the leader's queue, where a duplicate context is dropped."""
    net = Network(3)
    net.elect(1)
    net.write(1, "w", put_op(b"k", b"v"))
    for node_id, member in net.members.items():
        member.driver.submit_read(f"read-{node_id}", net.now_ms)
    net.run()
    for node_id, member in net.members.items():
        outcome = member.answers[f"read-{node_id}"]
        assert outcome["ok"] is True, (node_id, outcome)
        assert member.driver.state.range(b"k")["kvs"][0]["value"] == b"v"


def test_read_contexts_differ_across_members_and_restarts() -> None:
    net = Network(2)
    first = net.members[1].driver._read_context()
    other_member = net.members[2].driver._read_context()
    storage = MemoryStorage()
    bootstrap(storage, ConfState(voters=frozenset({1, 2})))
    restarted = NodeDriver(
        RaftNode(Config(node_id=1), storage), ServiceStateMachine(), boot_nonce=8
    )._read_context()
    assert len({first, other_member, restarted}) == 3


def test_a_keepalive_on_an_isolated_leader_is_never_answered_ok() -> None:
    """The old leader still believes it leads (CheckQuorum has not fired yet): its
    keep-alive needs a quorum's confirmation, which never comes."""
    net = Network(3)
    net.elect(1)
    net.write(1, "grant", lease_grant_op(5_000))
    lease_id = net.members[1].answers["grant"]["id"]
    net.cut.add(1)
    leader = net.members[1].driver
    leader.submit_keepalive("keepalive", lease_id, net.now_ms)
    net.run()
    assert leader.raft.role == Role.LEADER
    assert "keepalive" not in net.members[1].answers
    net.tick(11)  # Past the request timeout: answered, but never as renewed.
    outcome = net.members[1].answers["keepalive"]
    assert isinstance(outcome, NodeError)


def test_a_keepalive_on_a_confirmed_leader_renews_the_lease() -> None:
    net = Network(3)
    net.elect(1)
    net.write(1, "grant", lease_grant_op(5_000))
    lease_id = net.members[1].answers["grant"]["id"]
    net.members[1].driver.submit_keepalive("keepalive", lease_id, net.now_ms)
    net.run()
    assert net.members[1].answers["keepalive"] == {
        "ok": True,
        "revision": net.members[1].driver.state.kv.revision,
        "id": lease_id,
        "ttl_ms": 5_000,
    }


def test_a_keepalive_before_the_new_leader_started_its_lease_clock_is_a_typed_retry() -> None:
    """Between winning the election and the turn that starts the lease clock the
    role is already LEADER: the answer is a retryable NoLeader, not an assertion."""
    net = Network(1)
    driver = net.members[1].driver
    driver.raft.campaign()
    assert driver.raft.role == Role.LEADER and not driver.lease_clock.is_leader
    with pytest.raises(NoLeader):
        driver.submit_keepalive("early", 1, net.now_ms)


def test_writes_on_a_follower_name_the_leader() -> None:
    net = Network(3)
    net.elect(2)
    with pytest.raises(NotLeader) as refused:
        net.members[1].driver.submit_write("w", encode_command(put_op(b"k", b"v")), 0)
    assert refused.value.leader_id == 2


def test_an_admin_change_is_answered_once_applied_and_in_the_configuration() -> None:
    net = Network(3)
    net.elect(1)
    leader = net.members[1].driver
    leader.submit_conf_change("remove", ConfChange(ConfChangeKind.REMOVE, 3), net.now_ms)
    net.cut.add(3)  # The removed member need not take part.
    net.run()
    assert net.members[1].answers["remove"]["ok"] is True
    assert 3 not in leader.raft.conf.members()


def test_a_write_whose_index_another_leader_took_is_refused_as_definite() -> None:
    """The entry at the waited index has another term: ours can never commit."""
    net = Network(3, timeout_ms=60_000)
    net.elect(1)
    net.cut.add(1)
    net.members[1].driver.submit_write("lost", encode_command(put_op(b"k", b"1")), 0)
    net.run()
    net.tick(10)  # The followers' leader lease runs out (PreVote would refuse before).
    net.elect(2)
    net.write(2, "won", put_op(b"k", b"2"))
    net.cut.clear()
    net.tick(3)
    outcome = net.members[1].answers["lost"]
    assert isinstance(outcome, NoLeader), outcome


def test_an_unanswered_write_times_out_as_indeterminate() -> None:
    net = Network(3, timeout_ms=500)
    net.elect(1)
    net.cut.update({2, 3})
    net.members[1].driver.submit_write("w", encode_command(put_op(b"k", b"v")), net.now_ms)
    net.run()
    net.tick(6)
    assert isinstance(net.members[1].answers["w"], Timeout)


def test_a_forced_snapshot_is_answered_after_the_shell_saved_it() -> None:
    net = Network(1)
    net.elect(1)
    net.write(1, "w", put_op(b"k", b"v"))
    driver = net.members[1].driver
    driver.request_snapshot("snap")
    turn = driver.begin(net.now_ms)
    assert turn is not None
    done = driver.complete(turn, net.now_ms)
    assert done.snapshot is not None and done.snapshot.forced
    assert done.snapshot.conf == driver.raft.conf
    assert "snap" not in [token for token, _ in done.answers]
    driver.snapshot_saved(done.snapshot.index)
    assert driver.take_answers() == [("snap", {"ok": True, "snapshot_index": done.snapshot.index})]


def test_the_snapshot_payload_round_trips_members_and_services() -> None:
    net = Network(1)
    net.elect(1)
    net.write(1, "w", put_op(b"k", b"v"))
    driver = net.members[1].driver
    payload = driver.snapshot_payload()
    storage = MemoryStorage()
    bootstrap(storage, ConfState(voters=frozenset({1})))
    fresh = NodeDriver(RaftNode(Config(node_id=1), storage), ServiceStateMachine(), boot_nonce=1)
    fresh.restore(payload)
    assert fresh.state.range(b"k")["kvs"][0]["value"] == b"v"
    with pytest.raises(ValueError, match="snapshot format"):
        fresh.restore(b"\x81\xa6format\x09")


def test_preparing_a_snapshot_changes_nothing_until_it_is_adopted() -> None:
    """The shell decodes a leader's snapshot in a worker thread while the member keeps
    serving: preparing must not touch the live state."""
    source = Network(1)
    source.elect(1)
    source.write(1, "w", put_op(b"k", b"v"))
    payload = source.members[1].driver.snapshot_payload()
    target = Network(1).members[1].driver
    prepared = target.prepare_snapshot(payload, 5)
    assert target.state.range(b"k")["kvs"] == []
    assert target.state.applied_index == 0
    target._adopt(prepared)
    assert target.state.range(b"k")["kvs"][0]["value"] == b"v"


def test_a_failed_snapshot_is_not_retried_at_once() -> None:
    """A failing disk or fork must not turn into a snapshot attempt every turn."""
    storage = MemoryStorage()
    bootstrap(storage, ConfState(voters=frozenset({1})))
    limits = DriverLimits(snapshot_entries=5, snapshot_retry_entries=20)
    driver = NodeDriver(
        RaftNode(Config(node_id=1), storage), ServiceStateMachine(), boot_nonce=1, limits=limits
    )
    net = Network(1)
    net.members[1] = Member(driver, storage)
    net.elect(1)
    jobs = []
    for index in range(60):
        driver.submit_write(f"w{index}", encode_command(put_op(b"k", b"v")), 0)
        turn = driver.begin(0)
        assert turn is not None and turn.ready is not None
        storage.append(turn.ready.entries)
        if turn.ready.hard_state is not None:
            storage.set_hard_state(turn.ready.hard_state)
        done = driver.complete(turn, 0)
        if done.snapshot is not None:
            jobs.append(done.snapshot.index)
            driver.snapshot_failed(NodeError("disk full"))
    assert len(jobs) >= 2
    assert all(later - earlier >= 20 for earlier, later in itertools.pairwise(jobs))
