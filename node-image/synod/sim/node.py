"""One simulated member: the real Raft core, the real WAL on a simulated disk,
and the real service state machine, driven the way the node process drives them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from synod.raft.core import Config, RaftNode
from synod.raft.types import (
    ConfState,
    EntryKind,
    HardState,
    Message,
    ProposalDropped,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)
from synod.services.commands import decode_command
from synod.services.errors import ServiceError
from synod.services.state import ServiceStateMachine
from synod.sim.invariants import SafetyMonitor
from synod.storage.durable import DurableStorage
from synod.storage.fs import SimFileSystem

READY_ROUNDS_MAX = 64  # Ready/advance rounds per event; the core quiesces in far fewer.
WAITING_REQUESTS_MAX = 1024  # Client requests a node tracks at once.


@dataclass(slots=True)
class ClientRequest:
    """A request from a simulated client to one node."""

    op_id: int  # Unique per client operation: late answers to older ops are ignored.
    client_index: int
    client_id: int
    seq: int
    attempt: int
    kind: str  # "write", "read" or "session_open"
    data: bytes = b""  # Encoded command for writes.
    key: bytes = b""  # Key for reads.


Reply = Callable[[ClientRequest, dict[str, Any]], None]


class SimNode:
    """A node whose disk survives crashes (minus unsynced writes)."""

    def __init__(
        self,
        node_id: int,
        config: Config,
        disk: SimFileSystem,
        monitor: SafetyMonitor,
        rng: random.Random,
        snapshot_interval_entries: int,
    ) -> None:
        assert node_id >= 1 and snapshot_interval_entries > 0
        self.id = node_id
        self.config = config
        self.disk = disk
        self.monitor = monitor
        self.rng = rng
        self.snapshot_interval_entries = snapshot_interval_entries
        self.alive = False
        self.raft: RaftNode | None = None
        self.storage: DurableStorage | None = None
        self.state = ServiceStateMachine()
        self.waiting_writes: dict[tuple[int, int] | bytes, list[ClientRequest]] = {}
        self.pending_reads: dict[bytes, ClientRequest] = {}
        self.ready_reads: list[tuple[int, ClientRequest]] = []
        self.read_counter = 0
        self.last_snapshot_index = 0
        self.crash_during_persist_probability = 0.0
        self.reply: Reply = lambda request, result: None
        assert self.raft is None

    # -- lifecycle ------------------------------------------------------------
    def start(self, bootstrap_conf: ConfState | None) -> None:
        """Recover from disk (or bootstrap) and start the core."""
        assert not self.alive
        storage = DurableStorage(self.disk, f"/node-{self.id}")
        hard_state, snapshot = storage.load()
        if storage.memory.last_index() == 0 and bootstrap_conf is not None:
            meta = SnapshotMeta(index=1, term=1, conf=bootstrap_conf)
            storage.persist(Ready(snapshot=Snapshot(meta=meta), hard_state=HardState(1, 0, 1)))
            storage.sync()
            hard_state, snapshot = storage.memory.hard_state, storage.memory.snapshot()
        self.state = ServiceStateMachine()
        if snapshot.data:
            self.state.restore(snapshot.data)
        self.last_snapshot_index = snapshot.meta.index
        config = Config(**{**_config_fields(self.config), "applied_index": snapshot.meta.index})
        self.raft = RaftNode(config, storage.memory)
        self.storage = storage
        self.monitor.on_restart(self.id, hard_state.term, hard_state.commit)
        self.alive = True

    def crash(self) -> None:
        """Lose all volatile state and every unsynced write."""
        assert self.alive
        self.alive = False
        self.raft = None
        self.storage = None
        self.disk.crash()
        self.waiting_writes.clear()
        self.pending_reads.clear()
        self.ready_reads.clear()

    # -- driving --------------------------------------------------------------
    def tick(self) -> list[Message]:
        """One clock tick, then whatever it caused."""
        assert self.raft is not None
        self.raft.tick()
        return self.process_ready()

    def receive(self, message: Message) -> list[Message]:
        """Step a message from the network."""
        assert self.raft is not None and message.to == self.id
        self.raft.step(message)
        return self.process_ready()

    def process_ready(self) -> list[Message]:
        """Persist, send, apply, advance — in the order `Ready` prescribes.

        May crash the node between writing and syncing (a torn tail); then it
        returns no messages and `alive` is False.
        """
        raft = self.raft
        assert raft is not None and self.storage is not None
        outbox: list[Message] = []
        for _ in range(READY_ROUNDS_MAX):
            if not raft.has_ready():
                break
            ready = raft.ready()
            if not self._persist(raft, ready):
                return []
            outbox.extend(ready.messages)
            self._apply(raft, ready)
            raft.advance(ready)
            self._maybe_snapshot(raft)
        self._serve_reads()
        assert len(self.waiting_writes) <= WAITING_REQUESTS_MAX
        return outbox

    def _persist(self, raft: RaftNode, ready: Ready) -> bool:
        storage = self.storage
        assert storage is not None
        if ready.entries:
            prev_term = raft.log.term_or_zero(ready.entries[0].index - 1)
            self.monitor.on_persist(self.id, ready.entries, prev_term)
        storage.persist(ready)
        if ready.must_sync() and self.rng.random() < self.crash_during_persist_probability:
            self.crash()  # Power loss before fsync: nothing of this Ready was acknowledged.
            return False
        storage.sync()
        if ready.hard_state is not None:
            self.monitor.on_hard_state(self.id, ready.hard_state.term, ready.hard_state.commit)
        if ready.soft_state is not None and ready.soft_state.role == Role.LEADER:
            self._report_leader(raft)
        return True

    def _report_leader(self, raft: RaftNode) -> None:
        first = raft.log.first_index()
        log_term_at = {
            index: raft.log.term_or_zero(index)
            for index in self.monitor.committed
            if first <= index <= raft.log.last_index()
        }
        self.monitor.on_leader(self.id, raft.term, log_term_at)

    def _apply(self, raft: RaftNode, ready: Ready) -> None:
        if not ready.snapshot.is_empty() and ready.snapshot.data:
            self.state.restore(ready.snapshot.data)
            self.last_snapshot_index = ready.snapshot.meta.index
        entries = [e for e in ready.committed_entries if e.index > self.state.applied_index]
        if ready.committed_entries:
            self.monitor.on_commit(self.id, raft.log.committed, ready.committed_entries)
            self.monitor.on_apply(self.id, ready.committed_entries)
        for entry in entries:
            data = entry.data if entry.kind == EntryKind.NORMAL else b""
            result = self.state.apply(entry.index, data)
            if data:
                self._resolve_write(data, result)
        for read_state in ready.read_states:
            request = self.pending_reads.pop(read_state.context, None)
            if request is not None:
                self.ready_reads.append((read_state.index, request))

    def _resolve_write(self, data: bytes, result: dict[str, Any]) -> None:
        try:
            command = decode_command(data)
        except ServiceError:
            return
        for request in self.waiting_writes.pop(
            _waiting_key(command.client_id, command.seq, data), []
        ):
            self.reply(request, result)

    def _serve_reads(self) -> None:
        still_waiting = []
        for index, request in self.ready_reads:
            if self.state.applied_index >= index:
                result = self.state.range(request.key)
                self.reply(request, result)
            else:
                still_waiting.append((index, request))
        self.ready_reads = still_waiting

    def _maybe_snapshot(self, raft: RaftNode) -> None:
        applied = raft.log.applied
        if applied - self.last_snapshot_index < self.snapshot_interval_entries:
            return
        if raft.conf_applied_index() > applied or self.state.applied_index != applied:
            return  # The membership must be the one at `applied`.
        assert self.storage is not None
        self.storage.save_snapshot(applied, raft.conf, self.state.snapshot())
        self.last_snapshot_index = applied

    # -- clients --------------------------------------------------------------
    def handle_client(self, request: ClientRequest) -> list[Message]:
        """A client request arrives. Errors are replied at once."""
        raft = self.raft
        assert raft is not None
        waiting = sum(len(v) for v in self.waiting_writes.values()) + len(self.pending_reads)
        if waiting >= WAITING_REQUESTS_MAX:
            self.reply(request, _error("overloaded"))
            return []
        try:
            if request.kind == "read":
                self.read_counter += 1
                context = f"{self.id}:{self.read_counter}".encode()
                raft.read_index(context)
                self.pending_reads[context] = request
            else:
                raft.propose(request.data)
                key = _waiting_key(request.client_id, request.seq, request.data)
                self.waiting_writes.setdefault(key, []).append(request)
        except ProposalDropped as error:
            self.reply(request, _error(str(error)))
            return []
        return self.process_ready()

    def describe(self) -> str:
        """One line for traces."""
        if not self.alive or self.raft is None:
            return f"n{self.id}: down"
        raft = self.raft
        return (
            f"n{self.id}: {raft.role.value} term={raft.term} leader={raft.leader} "
            f"commit={raft.log.committed} applied={raft.log.applied} last={raft.log.last_index()}"
        )


def _waiting_key(client_id: int, seq: int, data: bytes) -> tuple[int, int] | bytes:
    """Writes in a session are matched by (client, seq); session opens by their bytes."""
    return (client_id, seq) if client_id else data


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": "unavailable", "message": message}}


def _config_fields(config: Config) -> dict[str, Any]:
    return {name: getattr(config, name) for name in Config.__dataclass_fields__}
