"""One simulated member: the production node driver (`synod.node.driver`) over the
real Raft core, the real WAL on a simulated disk and the real service state
machine. Only the I/O is simulated: an fsync takes simulated time (messages and
client requests that arrive meanwhile are queued by the driver, as in the
process), and the network is the simulator's.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from synod.node.api import NodeError, NotLeader
from synod.node.driver import (
    Answer,
    DriverLimits,
    NodeDriver,
    Turn,
    encode_snapshot_payload,
)
from synod.raft.core import Config, RaftNode
from synod.raft.types import (
    ConfChange,
    ConfState,
    Entry,
    HardState,
    Message,
    RaftError,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)
from synod.services.state import ServiceStateMachine
from synod.sim.invariants import SafetyMonitor
from synod.storage.durable import DurableStorage
from synod.storage.fs import SimFileSystem

READY_ROUNDS_MAX = 64  # Turns per event; the core quiesces in far fewer.
WAITING_REQUESTS_MAX = 1024  # Client requests a node tracks at once.


@dataclass(slots=True)
class ClientRequest:
    """A request from a simulated client (or the admin) to one node."""

    op_id: int  # Unique per client operation: late answers to older ops are ignored.
    client_index: int
    client_id: int
    seq: int
    attempt: int
    kind: str  # "write", "read", "keepalive", "admin" or "session_open"
    data: bytes = b""  # Encoded command for writes.
    key: bytes = b""  # Key for reads.
    lease_id: int = 0  # Lease for keep-alives.
    change: ConfChange | None = None  # Membership change for "admin".
    sent_at: int = 0  # Simulated time the client sent it.
    forwarded_by: int = 0  # The follower that forwarded this write to the leader.
    arrived_at: int = 0  # Simulated time it reached the node's socket.
    target: int = 0  # The node the client sent it to.


Reply = Callable[[ClientRequest, dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class SimNodeOptions:
    """Per-node knobs the simulator draws from its seed."""

    snapshot_interval_entries: int
    entries_kept_after_snapshot: int
    fsync_latency_units_max: int
    request_timeout_units: int


class SimNode:
    """A node whose disk survives crashes (minus unsynced writes)."""

    def __init__(
        self,
        node_id: int,
        config: Config,
        disk: SimFileSystem,
        monitor: SafetyMonitor,
        rng: random.Random,
        options: SimNodeOptions,
    ) -> None:
        assert node_id >= 1 and options.snapshot_interval_entries > 0
        self.id = node_id
        self.config = config
        self.disk = disk
        self.monitor = monitor
        self.rng = rng
        self.options = options
        self.alive = False
        self.driver: NodeDriver | None = None
        self.storage: DurableStorage | None = None
        self.crash_during_persist_probability = 0.0
        self.generation = 0  # Bumped by a crash: a pending fsync of a dead process is void.
        self.busy = False  # A turn is waiting for its simulated fsync.
        self.paused = False  # Stopped like a SIGSTOP or a long GC pause: inputs wait.
        self._held: list[Message | ClientRequest] = []
        self.snapshots_installed = 0
        self.reply: Reply = lambda request, result: None
        self.send: Callable[[list[Message]], None] = lambda messages: None
        self.schedule: Callable[[int, Callable[[], None]], None] = lambda delay, action: None
        self.clock: Callable[[], int] = lambda: 0
        self.on_admin_applied: Callable[[SimNode, ConfChange], None] = lambda node, change: None
        self.on_keepalive_answered: Callable[[SimNode, ClientRequest], None] = (
            lambda node, request: None
        )
        self.on_applied: Callable[[list[Entry]], None] = lambda entries: None
        self.on_elected: Callable[[int], None] = lambda term: None
        assert self.driver is None

    @property
    def raft(self) -> RaftNode | None:
        """The core, while alive."""
        return self.driver.raft if self.driver is not None else None

    @property
    def state(self) -> ServiceStateMachine:
        """The applied state (an empty one while down)."""
        return self.driver.state if self.driver is not None else ServiceStateMachine()

    # -- lifecycle ------------------------------------------------------------
    def start(self, bootstrap_conf: ConfState | None) -> None:
        """Recover from disk (or bootstrap) and start the driver."""
        assert not self.alive
        storage = DurableStorage(
            self.disk,
            f"/node-{self.id}",
            entries_kept_after_snapshot=self.options.entries_kept_after_snapshot,
        )
        hard_state, snapshot = storage.load()
        if storage.memory.last_index() == 0 and bootstrap_conf is not None:
            meta = SnapshotMeta(index=1, term=1, conf=bootstrap_conf)
            data = encode_snapshot_payload([], ServiceStateMachine())
            storage.persist(Ready(snapshot=Snapshot(meta, data), hard_state=HardState(1, 0, 1)))
            storage.sync()
            hard_state, snapshot = storage.memory.hard_state, storage.memory.snapshot()
        config = replace(self.config, applied_index=snapshot.meta.index)
        limits = DriverLimits(
            pending_requests_max=WAITING_REQUESTS_MAX,
            request_timeout_ms=self.options.request_timeout_units,
            snapshot_entries=self.options.snapshot_interval_entries,
        )
        driver = NodeDriver(
            RaftNode(config, storage.memory),
            ServiceStateMachine(),
            boot_nonce=self.rng.getrandbits(64),
            limits=limits,
            snapshot_index=snapshot.meta.index,
        )
        driver.restore(snapshot.data)
        self.driver, self.storage = driver, storage
        self.monitor.on_restart(self.id, hard_state.term, hard_state.commit)
        self.alive = True
        self.busy = False

    def pause(self) -> None:
        """Stop processing: messages and requests wait in the socket buffers."""
        assert self.alive
        self.paused = True

    def resume(self) -> None:
        """Go on: what arrived meanwhile is read in the order the sockets yield it
        (client connections and peer connections interleave arbitrarily)."""
        held, self._held = self._held, []
        self.paused = False
        self.rng.shuffle(held)
        for item in held:
            if not self.alive or self.paused:
                return
            if isinstance(item, ClientRequest):
                self.handle_client(item)
            else:
                self.receive(item)
        if self.alive:
            self.pump()

    def crash(self) -> None:
        """Lose all volatile state and every unsynced write."""
        assert self.alive
        self.alive = False
        self.paused = False
        self._held.clear()
        self.generation += 1
        self.driver = None
        self.storage = None
        self.busy = False
        self.disk.crash()

    # -- inputs -----------------------------------------------------------------
    def tick(self) -> None:
        """One clock tick, then whatever it caused."""
        driver = self._driver()
        if self.busy or self.paused:
            return  # Blocked in an fsync, or stopped: its loop ticks afterwards.
        driver.tick(self.clock())
        self._answer(driver.take_answers())
        self.pump()

    def receive(self, message: Message) -> None:
        """A message from the network: queued, stepped on the next turn."""
        assert message.to == self.id, message
        if self.paused:
            self._held.append(message)
            return
        self._driver().receive([message])
        self.pump()

    def handle_client(self, request: ClientRequest) -> None:
        """A client request arrives. Refusals are replied at once."""
        if self.paused:
            self._held.append(request)
            return
        driver = self._driver()
        now = self.clock()
        try:
            if request.kind == "read":
                driver.submit_read(request, now)
            elif request.kind == "keepalive":
                driver.submit_keepalive(request, request.lease_id, now)
            elif request.kind == "admin":
                assert request.change is not None
                driver.submit_conf_change(request, request.change, now)
            else:
                driver.submit_write(request, request.data, now)
        except NodeError as error:
            self.reply(request, _problem(error))
            return
        except RaftError as error:  # conf-change-pending or conf-change-invalid
            self.reply(request, {"ok": False, "error": {"code": "refused", "message": str(error)}})
            return
        self.pump()

    # -- turns ------------------------------------------------------------------
    def pump(self) -> None:
        """Run turns until the driver is idle or a turn waits for its fsync."""
        for _ in range(READY_ROUNDS_MAX):
            if not self.alive or self.busy or self.paused:
                return
            driver = self._driver()
            turn = driver.begin(self.clock())
            if turn is None:
                return
            soft_state = turn.ready.soft_state if turn.ready is not None else None
            if soft_state is not None and soft_state.role == Role.LEADER:
                self._report_leader(driver.raft)  # As elected, not after the fsync.
            self.send(turn.messages)
            self._answer(turn.answers)
            if turn.persist and not self._persist(turn):
                return
            if self.busy:
                return
            self._complete(turn)

    def _persist(self, turn: Turn) -> bool:
        """Write the turn's Ready; the fsync completes after a simulated delay.
        Returns False when the node lost power before the fsync."""
        storage, ready = self.storage, turn.ready
        assert storage is not None and ready is not None
        raft = self._driver().raft
        if ready.entries:
            prev_term = raft.log.term_or_zero(ready.entries[0].index - 1)
            self.monitor.on_persist(self.id, ready.entries, prev_term)
        if not turn.fsync:
            storage.record(ready)
            return True
        storage.persist(ready)
        if self.rng.random() < self.crash_during_persist_probability:
            self.crash()  # Power loss before fsync: nothing of this Ready was acknowledged.
            return False
        latency = self.rng.randint(0, self.options.fsync_latency_units_max)
        if latency == 0:
            storage.sync()
            return True
        self.busy = True
        generation = self.generation
        self.schedule(latency, lambda: self._fsync_done(generation, turn))
        return True

    def _fsync_done(self, generation: int, turn: Turn) -> None:
        if generation != self.generation or not self.alive:
            return  # The process died meanwhile: the write was never synced.
        if self.paused:  # The fsync finishes, the process notices once resumed.
            self.schedule(1, lambda: self._fsync_done(generation, turn))
            return
        assert self.busy and self.storage is not None
        self.storage.sync()
        self.busy = False
        self._complete(turn)
        self.pump()

    def _complete(self, turn: Turn) -> None:
        driver = self._driver()
        ready = turn.ready
        if ready is not None:
            self._observe(driver.raft, ready)
        done = driver.complete(turn, self.clock())
        self.send(done.messages)
        self._answer(done.answers)
        if done.snapshot is not None:
            assert self.storage is not None
            job = done.snapshot
            self.storage.save_snapshot(job.index, job.conf, driver.snapshot_payload())
            driver.snapshot_saved(done.snapshot.index)
            self._answer(driver.take_answers())

    def _observe(self, raft: RaftNode, ready: Ready) -> None:
        """Report the durable and applied state to the safety monitor."""
        if ready.hard_state is not None and ready.must_sync():
            self.monitor.on_hard_state(self.id, ready.hard_state.term, ready.hard_state.commit)
        if not ready.snapshot.is_empty():
            self.snapshots_installed += 1
        if ready.committed_entries:
            self.monitor.on_commit(self.id, raft.log.committed, ready.committed_entries, raft.term)
            self.monitor.on_apply(self.id, ready.committed_entries)
            self.on_applied(ready.committed_entries)

    def _report_leader(self, raft: RaftNode) -> None:
        first = raft.log.first_index()
        log_term_at = {
            index: raft.log.term_or_zero(index)
            for index in self.monitor.committed
            if first <= index <= raft.log.last_index()
        }
        self.monitor.on_leader(self.id, raft.term, log_term_at)
        self.on_elected(raft.term)

    def _answer(self, answers: list[Answer]) -> None:
        for token, outcome in answers:
            assert isinstance(token, ClientRequest)
            if isinstance(outcome, NodeError):
                self.reply(token, _problem(outcome))
            elif token.kind == "read":
                self.reply(token, self.state.range(token.key))
            elif token.kind == "keepalive" and outcome.get("ok"):
                self.on_keepalive_answered(self, token)
                self.reply(token, outcome)
            elif token.kind == "admin" and token.change is not None:
                self.on_admin_applied(self, token.change)
                self.reply(token, outcome)
            else:
                self.reply(token, outcome)

    def _driver(self) -> NodeDriver:
        assert self.driver is not None and self.alive, f"n{self.id} is down"
        return self.driver

    def describe(self) -> str:
        """One line for traces."""
        raft = self.raft
        if not self.alive or raft is None:
            return f"n{self.id}: down"
        return (
            f"n{self.id}: {raft.role.value} term={raft.term} leader={raft.leader} "
            f"commit={raft.log.committed} applied={raft.log.applied} last={raft.log.last_index()}"
        )


def _problem(error: NodeError) -> dict[str, Any]:
    problem: dict[str, Any] = {"code": error.code, "message": str(error)}
    if isinstance(error, NotLeader):
        problem["leader_id"] = error.leader_id
    return {"ok": False, "error": problem}
