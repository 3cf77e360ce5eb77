"""Core behaviours the node driver relies on: what a Ready asks to fsync, where a
batched membership change is pending, and how fast a follower in probe is fed."""

from __future__ import annotations

from synod.raft.core import Config, RaftNode
from synod.raft.storage import MemoryStorage, bootstrap
from synod.raft.types import (
    ConfChange,
    ConfChangeKind,
    ConfState,
    Entry,
    EntryKind,
    Message,
    MessageType,
    Role,
)


def _leader(voters: tuple[int, ...] = (1, 2, 3)) -> RaftNode:
    storage = MemoryStorage()
    bootstrap(storage, ConfState(voters=frozenset(voters)))
    node = RaftNode(Config(node_id=1, seed=1), storage)
    node.campaign()
    for ready_round in range(10):
        ready = node.ready()
        storage.append(ready.entries)
        if ready.hard_state is not None:
            storage.set_hard_state(ready.hard_state)
        node.advance(ready)
        if node.role == Role.LEADER:
            break
        for voter in voters[1:]:
            node.step(Message(MessageType.PRE_VOTE_RESPONSE, to=1, source=voter, term=2))
            node.step(Message(MessageType.VOTE_RESPONSE, to=1, source=voter, term=2))
        assert ready_round < 9
    assert node.role == Role.LEADER
    return node


def _drain(node: RaftNode) -> list[Message]:
    out: list[Message] = []
    for _ in range(10):
        if not node.has_ready():
            break
        ready = node.ready()
        storage = node.log.storage
        assert isinstance(storage, MemoryStorage)
        storage.append(ready.entries)
        if ready.hard_state is not None:
            storage.set_hard_state(ready.hard_state)
        out += ready.messages
        node.advance(ready)
    return out


def test_a_ready_that_only_moves_the_commit_index_owes_no_fsync() -> None:
    """etcd's MustSync: entries, a snapshot, or a new term or vote need an fsync;
    a commit index alone does not (it is learnt again from the leader)."""
    node = _leader()
    _drain(node)
    index = node.log.last_index()
    node.step(Message(MessageType.APPEND_RESPONSE, to=1, source=2, term=node.term, index=index))
    ready = node.ready()
    assert ready.hard_state is not None and ready.hard_state.commit == index
    assert not ready.entries and not ready.term_or_vote_changed
    assert not ready.must_sync()
    node.advance(ready)


def test_an_election_ready_owes_an_fsync() -> None:
    storage = MemoryStorage()
    bootstrap(storage, ConfState(voters=frozenset({1, 2, 3})))
    node = RaftNode(Config(node_id=1, seed=1, pre_vote=False), storage)
    node.campaign()
    ready = node.ready()
    assert ready.term_or_vote_changed and ready.must_sync()


def test_a_membership_change_late_in_a_batch_is_pending_at_its_own_index() -> None:
    """The pending index is where the change lands, not the batch's first index:
    otherwise a second change could be accepted before the first is applied."""
    node = _leader()
    _drain(node)
    first = node.log.last_index() + 1
    change = ConfChange(ConfChangeKind.ADD_LEARNER, 4).encode()
    entries = [
        Entry(term=0, index=0, data=b"a"),
        Entry(term=0, index=0, data=b"b"),
        Entry(term=0, index=0, kind=EntryKind.CONF_CHANGE, data=change),
    ]
    node.step(Message(MessageType.PROPOSE, source=1, entries=entries))
    assert node.pending_conf_index == first + 2
    assert node.log.term_or_zero(first + 2) == node.term


def test_a_follower_in_probe_gets_one_append_per_heartbeat_round() -> None:
    """A backlog of heartbeat responses (ReadIndex rounds, a slow follower) must not
    each trigger another full-size append from the same index."""
    node = _leader()
    _drain(node)
    for data in (b"x" * 100, b"y" * 100):
        node.propose(data)
    _drain(node)
    node.report_unreachable(2)  # Follower 2 drops to probe state.
    _drain(node)
    appends = []
    for _ in range(5):
        node.step(Message(MessageType.HEARTBEAT_RESPONSE, to=1, source=2, term=node.term))
        appends += [m for m in _drain(node) if m.type == MessageType.APPEND and m.to == 2]
    assert len(appends) == 1
    node.tick()  # heartbeat_interval_ticks=1: a new round
    _drain(node)
    node.step(Message(MessageType.HEARTBEAT_RESPONSE, to=1, source=2, term=node.term))
    assert [m for m in _drain(node) if m.type == MessageType.APPEND and m.to == 2]
