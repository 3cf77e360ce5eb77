"""A tiny synchronous network of Raft cores for paper-style unit tests.

Like etcd's `network` in raft_test.go: every Ready is persisted to a
MemoryStorage and applied at once, messages are delivered until none are left,
and links can be cut or dropped by message type.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from synod.raft.core import Config, RaftNode
from synod.raft.storage import MemoryStorage, bootstrap
from synod.raft.types import (
    ConfState,
    Entry,
    EntryKind,
    Message,
    MessageType,
    NodeId,
    ReadState,
    Ready,
    Role,
)
from synod.sim.invariants import SafetyMonitor


@dataclass
class Peer:
    """One node with its storage and what it applied."""

    node: RaftNode
    storage: MemoryStorage
    applied: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    monitor: SafetyMonitor | None = None

    def handle_ready(self) -> list[Message]:
        """Persist, collect messages, apply, advance. Returns messages to send."""
        out: list[Message] = []
        for _ in range(100):
            if not self.node.has_ready():
                break
            ready = self.node.ready()
            self._report(ready)
            if not ready.snapshot.is_empty():
                self.storage.apply_snapshot(ready.snapshot)
            self.storage.append(ready.entries)
            if ready.hard_state is not None:
                self.storage.set_hard_state(ready.hard_state)
            out.extend(ready.messages)
            self.applied.extend(e for e in ready.committed_entries if e.data or e.kind)
            self.read_states.extend(ready.read_states)
            self.node.advance(ready)
        return out

    def _report(self, ready: Ready) -> None:
        """Feed the simulator's safety monitor, when one is attached."""
        monitor, node = self.monitor, self.node
        if monitor is None:
            return
        if ready.entries:
            prev_term = node.log.term_or_zero(ready.entries[0].index - 1)
            monitor.on_persist(node.id, ready.entries, prev_term)
        if ready.soft_state is not None and ready.soft_state.role == Role.LEADER:
            terms = {i: node.log.term_or_zero(i) for i in monitor.committed}
            monitor.on_leader(node.id, node.term, {i: t for i, t in terms.items() if t})
        if ready.committed_entries:
            monitor.on_commit(node.id, node.log.committed, ready.committed_entries)
            monitor.on_apply(node.id, ready.committed_entries)


def make_peer(
    node_id: NodeId,
    voters: list[NodeId],
    learners: list[NodeId] | None = None,
    **config: object,
) -> Peer:
    """A fresh node whose storage holds an initial membership snapshot."""
    storage = MemoryStorage()
    conf = ConfState(frozenset(voters), frozenset(learners or []))
    if voters:
        bootstrap(storage, conf)
    settings: dict[str, object] = {"election_timeout_ticks": 10, "heartbeat_interval_ticks": 1}
    settings.update(config)
    node = RaftNode(Config(node_id=node_id, seed=1, **settings), storage)  # type: ignore[arg-type]
    return Peer(node=node, storage=storage)


class Network:
    """Deliver messages between peers until quiescence."""

    def __init__(self, size: int, **config: object) -> None:
        ids = list(range(1, size + 1))
        self.peers: dict[NodeId, Peer] = {i: make_peer(i, ids, **config) for i in ids}
        self.cut: set[tuple[NodeId, NodeId]] = set()
        self.dropped_types: set[MessageType] = set()
        self.deliver_if: Callable[[Message], bool] = lambda message: True
        self.delivered: list[Message] = []

    def add(self, peer: Peer) -> None:
        """Attach another peer (e.g. a learner being added)."""
        self.peers[peer.node.id] = peer

    def isolate(self, node_id: NodeId) -> None:
        """Cut every link to and from `node_id`."""
        for other in self.peers:
            if other != node_id:
                self.cut.add((node_id, other))
                self.cut.add((other, node_id))

    def heal(self) -> None:
        """Restore all links."""
        self.cut.clear()
        self.dropped_types.clear()
        self.deliver_if = lambda message: True

    def restart(self, node_id: NodeId) -> None:
        """Crash and restart a node: volatile state is lost, its storage kept."""
        peer = self.peers[node_id]
        config = peer.node.config
        applied = peer.storage.snapshot().meta.index
        peer.node = RaftNode(dataclasses.replace(config, applied_index=applied), peer.storage)

    def monitor_with(self, monitor: SafetyMonitor) -> None:
        """Report every peer's Readies to the simulator's safety monitor."""
        for peer in self.peers.values():
            peer.monitor = monitor

    def send(self, *messages: Message) -> None:
        """Step messages into their targets and deliver everything that follows."""
        queue = list(messages)
        for _ in range(100_000):
            if not queue:
                for peer in self.peers.values():
                    queue.extend(peer.handle_ready())
                if not queue:
                    return
            message = queue.pop(0)
            if (message.source, message.to) in self.cut or message.type in self.dropped_types:
                continue
            if not self.deliver_if(message):
                continue
            target = self.peers.get(message.to)
            if target is None:
                continue
            self.delivered.append(message)
            target.node.step(message)
            queue.extend(target.handle_ready())
        raise AssertionError("network did not quiesce")

    def campaign(self, node_id: NodeId) -> None:
        """Make `node_id` campaign and deliver the election."""
        self.peers[node_id].node.campaign()
        self.send()

    def propose(self, node_id: NodeId, data: bytes) -> None:
        """Propose on `node_id` and deliver."""
        self.peers[node_id].node.propose(data)
        self.send()

    def tick(self, node_id: NodeId, count: int = 1) -> None:
        """Tick one node `count` times, delivering after each tick."""
        for _ in range(count):
            self.peers[node_id].node.tick()
            self.send()

    def tick_all(self, count: int = 1) -> None:
        """Tick every node `count` times."""
        for _ in range(count):
            for peer in self.peers.values():
                peer.node.tick()
            self.send()

    def leader(self) -> NodeId | None:
        """The id of the unique current leader, if any."""
        leaders = [i for i, p in self.peers.items() if p.node.role == Role.LEADER]
        return max(leaders, key=lambda i: self.peers[i].node.term) if leaders else None

    def data_applied(self, node_id: NodeId) -> list[bytes]:
        """Application payloads applied by `node_id`, in order."""
        return [e.data for e in self.peers[node_id].applied if e.kind == EntryKind.NORMAL]
