"""Sentences of the Raft paper (and dissertation), each mapped to a test.

In the spirit of etcd's raft_paper_test.go: the docstring of each test quotes
or paraphrases the rule it checks.
"""

from __future__ import annotations

import pytest

from synod.raft.core import Config, RaftNode
from synod.raft.storage import MemoryStorage, bootstrap
from synod.raft.types import (
    ConfState,
    Entry,
    HardState,
    Message,
    MessageType,
    ProposalDropped,
    Role,
)
from tests.unit.raft_net import Network, make_peer


def test_5_1_stale_term_request_is_rejected() -> None:
    """§5.1: "If a server receives a request with a stale term number, it rejects it."""
    net = Network(3)
    net.campaign(1)
    follower = net.peers[2].node
    term = follower.term
    follower.step(Message(MessageType.APPEND, source=3, to=2, term=term - 1, index=1, log_term=1))
    ready = follower.ready()
    assert [m.type for m in ready.messages] == [MessageType.APPEND_RESPONSE]
    assert ready.messages[0].term == term  # Tells the stale sender the current term.
    assert follower.leader == 1
    follower.advance(ready)


def test_5_1_larger_term_makes_leader_step_down() -> None:
    """§5.1: "If a candidate or leader discovers that its term is out of date, it
    immediately reverts to follower state."""
    net = Network(3)
    net.campaign(1)
    leader = net.peers[1].node
    leader.step(Message(MessageType.APPEND, source=2, to=1, term=leader.term + 5))
    assert leader.role == Role.FOLLOWER
    assert leader.term == net.peers[2].node.term + 5


def test_5_2_start_as_follower() -> None:
    """§5.2: "When servers start up, they begin as followers."""
    peer = make_peer(1, [1, 2, 3])
    assert peer.node.role == Role.FOLLOWER
    assert peer.node.leader == 0


def test_5_2_election_timeout_starts_election_with_majority() -> None:
    """§5.2: a follower that hears nothing for an election timeout becomes a
    candidate; "A candidate wins an election if it receives votes from a majority"."""
    net = Network(3)
    net.tick(1, 25)  # Beyond 2x the election timeout: must have campaigned.
    assert net.peers[1].node.role == Role.LEADER
    assert {p.node.leader for p in net.peers.values()} == {1}


def test_5_2_randomized_election_timeouts_are_spread() -> None:
    """§5.2: "election timeouts are chosen randomly from a fixed interval"."""
    seen = set()
    for seed in range(40):
        storage = MemoryStorage()
        bootstrap(storage, ConfState(frozenset({1, 2, 3})))
        node = RaftNode(Config(node_id=1, seed=seed, election_timeout_ticks=10), storage)
        timeout = node.randomized_election_timeout_ticks
        assert 10 <= timeout < 20
        seen.add(timeout)
    assert len(seen) > 5


def test_5_2_vote_at_most_once_per_term() -> None:
    """§5.2: "Each server will vote for at most one candidate in a given term"."""
    peer = make_peer(1, [1, 2, 3], pre_vote=False, check_quorum=False)
    node = peer.node
    for candidate, granted in ((2, True), (3, False), (2, True)):
        node.step(Message(MessageType.VOTE, source=candidate, to=1, term=5, index=1, log_term=1))
        ready = node.ready()
        assert ready.messages[0].reject is not granted
        if granted:
            assert ready.hard_state is None or ready.hard_state.vote == 2
        node.advance(ready)
    assert node.vote == 2


def test_5_2_candidate_yields_to_leader_of_same_term() -> None:
    """§5.2: "If the leader's term is at least as large as the candidate's current
    term, then the candidate recognizes the leader as legitimate"."""
    peer = make_peer(1, [1, 2, 3], pre_vote=False)
    peer.node.campaign()
    assert peer.node.role == Role.CANDIDATE
    term = peer.node.term
    peer.node.step(
        Message(MessageType.APPEND, source=2, to=1, term=term, index=1, log_term=1, commit=1)
    )
    assert peer.node.role == Role.FOLLOWER
    assert peer.node.leader == 2


def test_5_2_split_vote_resolves() -> None:
    """§5.2: with randomized timeouts split votes are rare and resolve quickly."""
    net = Network(5)
    net.tick_all(60)
    assert net.leader() is not None


def test_5_3_committed_once_replicated_on_majority() -> None:
    """§5.3: "A log entry is committed once the leader that created the entry has
    replicated it on a majority of the servers"."""
    net = Network(5)
    net.campaign(1)
    net.isolate(4)
    net.isolate(5)
    net.propose(1, b"x")
    assert b"x" in net.data_applied(1)  # 3 of 5 hold it.
    net.isolate(3)
    net.propose(1, b"y")
    assert b"y" not in net.data_applied(1)  # Only 2 of 5.


def test_5_3_leader_forces_follower_log_to_match() -> None:
    """§5.3: "the leader handles inconsistencies by forcing the followers' logs to
    duplicate its own" (Figure 7: a follower with extra, uncommitted entries)."""
    net = Network(3)
    net.campaign(3)
    net.isolate(3)
    net.propose(3, b"lost")  # Appended by the isolated leader only: never committed.
    net.tick_all(30)
    leader = net.leader()
    assert leader in (1, 2)
    for i in range(5):
        net.propose(leader, b"a%d" % i)
    net.heal()
    net.tick(leader, 2)  # A heartbeat answer un-pauses the probe to node 3.
    net.propose(leader, b"b")
    logs = [net.data_applied(i) for i in (1, 2, 3)]
    assert logs[0] == logs[1] == logs[2]
    assert logs[0][-1] == b"b"
    assert b"lost" not in logs[2]
    entries = net.peers[3].storage.entries(2, net.peers[3].storage.last_index() + 1, 1 << 30)
    assert b"lost" not in [e.data for e in entries]


def test_5_3_fast_backtracking_uses_conflict_hint() -> None:
    """A follower far behind is found in few round trips (conflict term hint)."""
    net = Network(3)
    net.campaign(1)
    net.isolate(3)
    for i in range(200):
        net.propose(1, b"%d" % i)
    net.heal()
    net.delivered.clear()
    net.propose(1, b"last")
    rejects = [m for m in net.delivered if m.type == MessageType.APPEND_RESPONSE and m.reject]
    assert len(rejects) <= 2
    assert net.data_applied(3) == net.data_applied(1)


def test_5_4_1_vote_denied_to_less_up_to_date_candidate() -> None:
    """§5.4.1: "the voter denies its vote if its own log is more up-to-date than
    that of the candidate"."""
    peer = make_peer(1, [1, 2, 3], pre_vote=False, check_quorum=False)
    peer.storage.append([Entry(term=2, index=2, data=b"x")])
    node = RaftNode(Config(node_id=1, seed=1, pre_vote=False, check_quorum=False), peer.storage)
    node.step(Message(MessageType.VOTE, source=2, to=1, term=3, index=5, log_term=1))
    ready = node.ready()
    assert ready.messages[0].reject  # Candidate's last term 1 < ours 2.
    node.advance(ready)
    node.step(Message(MessageType.VOTE, source=3, to=1, term=3, index=2, log_term=2))
    ready = node.ready()
    assert not ready.messages[0].reject  # Same last term and index: up to date.


def test_5_4_2_figure_8_never_commit_previous_term_by_counting() -> None:
    """§5.4.2: "Raft never commits log entries from previous terms by counting
    replicas"; only an entry of the current term commits them indirectly."""
    storage_old_term = HardState(term=2, vote=1, commit=1)
    peers = {}
    for node_id in (1, 2, 3):
        peer = make_peer(node_id, [1, 2, 3], pre_vote=False, check_quorum=False)
        peer.storage.set_hard_state(storage_old_term)
        peers[node_id] = peer
    # Nodes 1 and 2 hold an entry of term 2 (a majority!) that was never committed.
    peers[1].storage.append([Entry(term=2, index=2, data=b"old")])
    peers[2].storage.append([Entry(term=2, index=2, data=b"old")])
    net = Network(3, pre_vote=False, check_quorum=False)
    for node_id, peer in peers.items():
        peer.node = RaftNode(
            Config(node_id=node_id, seed=1, pre_vote=False, check_quorum=False), peer.storage
        )
        net.peers[node_id] = peer
    leader = net.peers[1].node
    leader.campaign()
    # Deliver votes but drop appends: the no-op of term 3 cannot replicate.
    net.dropped_types.add(MessageType.APPEND)
    net.send()
    assert leader.role == Role.LEADER and leader.term == 3
    # Follower 2 acknowledges the OLD entry (index 2), which it really holds.
    leader.step(Message(MessageType.APPEND_RESPONSE, source=2, to=1, term=3, index=2))
    assert leader.log.committed == 1, "index 2 is from term 2: counting must not commit it"
    net.heal()
    net.tick(1)
    net.send()
    assert leader.log.committed == 3  # The term-3 no-op commits both.


def test_6_2_followers_forward_proposals() -> None:
    """§6.2: clients may contact a follower, which forwards to the leader."""
    net = Network(3)
    net.campaign(1)
    net.propose(3, b"via-follower")
    assert b"via-follower" in net.data_applied(1)
    assert b"via-follower" in net.data_applied(3)


def test_proposal_without_leader_is_dropped_with_reason() -> None:
    """A proposal with no known leader fails fast instead of waiting forever."""
    peer = make_peer(1, [1, 2, 3])
    with pytest.raises(ProposalDropped, match="no leader"):
        peer.node.propose(b"x")


def test_6_4_read_index_on_leader_and_follower() -> None:
    """§6.4: the leader confirms it is still leader with a heartbeat round, then
    answers with its commit index; followers ask the leader for it."""
    net = Network(3)
    net.campaign(1)
    net.propose(1, b"x")
    commit = net.peers[1].node.log.committed
    net.peers[1].node.read_index(b"r1")
    net.send()
    assert [(r.index, r.context) for r in net.peers[1].read_states] == [(commit, b"r1")]
    net.peers[2].node.read_index(b"r2")
    net.send()
    assert [(r.index, r.context) for r in net.peers[2].read_states] == [(commit, b"r2")]


def test_6_4_partitioned_leader_cannot_serve_reads() -> None:
    """§6.4: a deposed leader must not answer a read from its stale state."""
    net = Network(3)
    net.campaign(1)
    net.isolate(1)
    net.peers[1].node.read_index(b"stale")
    net.send()
    assert net.peers[1].read_states == []


def test_check_quorum_leader_steps_down_without_majority() -> None:
    """§6.2: "a leader steps down if an election timeout elapses without a
    successful round of heartbeats to a majority of its cluster"."""
    net = Network(3)
    net.campaign(1)
    net.isolate(1)
    net.tick(1, 25)
    assert net.peers[1].node.role == Role.FOLLOWER


def test_pre_vote_rejoining_node_does_not_disrupt() -> None:
    """§9.6: a partitioned node that rejoins does not force the leader to step down."""
    net = Network(3)
    net.campaign(1)
    term = net.peers[1].node.term
    net.isolate(3)
    net.tick(3, 100)  # Keeps pre-campaigning; its term must not grow.
    assert net.peers[3].node.term == term
    net.heal()
    net.tick_all(5)
    assert net.peers[1].node.role == Role.LEADER
    assert net.peers[1].node.term == term


def test_3_10_leadership_transfer() -> None:
    """§3.10: the leader catches the target up and sends TimeoutNow; the target
    wins at once."""
    net = Network(3)
    net.campaign(1)
    net.propose(1, b"x")
    net.peers[1].node.transfer_leadership(3)
    net.send()
    assert net.peers[3].node.role == Role.LEADER
    assert net.peers[1].node.role == Role.FOLLOWER


def test_learner_does_not_vote_and_can_be_promoted() -> None:
    """§4.2.1: new servers join as non-voting members until caught up."""
    from synod.raft.types import ConfChange, ConfChangeKind

    net = Network(3)
    net.campaign(1)
    net.peers[1].node.change_membership(ConfChange(ConfChangeKind.ADD_LEARNER, 4))
    net.send()
    learner = make_peer(4, [])
    net.add(learner)
    net.propose(1, b"hello")
    assert b"hello" in net.data_applied(4)
    assert 4 in net.peers[1].node.conf.learners
    learner.node.campaign()
    assert learner.node.role == Role.FOLLOWER  # Learners never campaign.
    net.peers[1].node.change_membership(ConfChange(ConfChangeKind.PROMOTE, 4))
    net.send()
    assert 4 in net.peers[1].node.conf.voters
    assert 4 in net.peers[4].node.conf.voters


def test_removed_leader_steps_down_and_others_continue() -> None:
    """§4.2.2: a removed leader steps down once the change commits."""
    from synod.raft.types import ConfChange, ConfChangeKind

    net = Network(3)
    net.campaign(1)
    net.peers[1].node.change_membership(ConfChange(ConfChangeKind.REMOVE, 1))
    net.send()
    assert net.peers[1].node.role == Role.FOLLOWER
    net.tick_all(30)
    leader = net.leader()
    assert leader in (2, 3)
    net.propose(leader, b"after")
    assert b"after" in net.data_applied(2) and b"after" in net.data_applied(3)


def test_7_snapshot_catches_up_a_follower_behind_compaction() -> None:
    """§7: "the leader must occasionally send snapshots to followers that lag behind"."""
    net = Network(3)
    net.campaign(1)
    net.isolate(3)
    for i in range(20):
        net.propose(1, b"%d" % i)
    leader = net.peers[1]
    applied = leader.node.log.applied
    leader.storage.create_snapshot(applied, leader.node.conf, b"image")
    leader.storage.compact(applied)
    net.heal()
    net.tick(1, 12)  # Heartbeats reveal the lagging follower; check-quorum keeps it active.
    net.propose(1, b"after")
    follower = net.peers[3]
    assert follower.storage.snapshot().meta.index == applied
    assert follower.node.log.committed == leader.node.log.committed
    assert net.data_applied(3)[-1] == b"after"


def test_one_membership_change_at_a_time() -> None:
    """§4.1: a leader does not start a change until the previous one is applied."""
    from synod.raft.types import ConfChange, ConfChangeKind, ConfChangePending

    net = Network(3)
    net.campaign(1)
    net.isolate(2)
    net.isolate(3)
    net.peers[1].node.change_membership(ConfChange(ConfChangeKind.ADD_LEARNER, 4))
    with pytest.raises(ConfChangePending):
        net.peers[1].node.change_membership(ConfChange(ConfChangeKind.ADD_LEARNER, 5))
