"""The deterministic simulator: one seed drives the whole run.

A run has two phases. In the safety phase the network drops, duplicates,
delays and reorders messages, partitions come and go, nodes crash (losing
unsynced writes, sometimes mid-write) and restart, members are added, promoted
and removed, and leadership is transferred — while clients keep writing and
reading through exactly-once sessions. In the liveness phase every fault is
healed and the cluster must elect a leader and commit new work within
`recovery_ticks_max`. Safety invariants are checked on every event; the client
history is checked for linearizability at the end.

Time is an integer count of abstract units; each node ticks every
`tick_period_units` of its own (they differ per node, like real clocks).
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import itertools
import random
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from synod.checker.history import HistoryRecorder
from synod.checker.linearizability import check
from synod.checker.models import Cas, Get, KvModel, Put
from synod.raft.core import Config
from synod.raft.types import (
    ConfChange,
    ConfChangeKind,
    ConfState,
    Entry,
    Message,
    MessageType,
    Role,
)
from synod.services.commands import (
    compare,
    decode_command,
    encode_command,
    lease_grant_op,
    put_op,
    session_open_op,
    txn_op,
)
from synod.services.errors import ServiceError
from synod.sim.ids_workload import IdsWorkload
from synod.sim.invariants import SafetyMonitor, SafetyViolation
from synod.sim.locks_workload import LockWorkload
from synod.sim.network import LinkFaults, Partition, random_partition
from synod.sim.node import ClientRequest, SimNode, SimNodeOptions
from synod.storage.fs import SimFileSystem

EVENTS_MAX = 2_000_000  # Hard stop for one run, whatever the schedule.
TRACE_LINES_MAX = 400  # The tail of the trace printed for a failing seed.
KEYS = (b"a", b"b", b"c")
LEASE_PICKS_MAX = 64  # Lease id picks of the simulated leader: few, so that they collide.
# Lock answers that say the op surely did nothing more (see synod.codes).
LOCK_DEFINITE_CODES = ("lock-wait-timeout", "lock-not-held", "not-found", "fencing-token-stale",
                       "invalid-argument", "limit-exceeded")  # fmt: skip


@dataclass(frozen=True, slots=True)
class SimOptions:
    """What one seed may choose from. Every bound is named."""

    cluster_sizes: tuple[int, ...] = (3, 5, 7)
    spare_nodes: int = 2  # Ids beyond the initial members, for membership changes.
    clients: int = 3
    tick_period_units: int = 10
    election_timeout_ticks: int = 10
    heartbeat_interval_ticks: int = 2
    safety_phase_ticks: int = 300
    recovery_ticks_max: int = 200
    fault_interval_ticks: int = 20
    fault_duration_ticks_max: int = 60  # Partitions heal and crashed nodes restart by then.
    client_timeout_ticks: int = 25
    client_attempts_max: int = 6
    snapshot_interval_entries: tuple[int, ...] = (10, 40, 100)
    entries_kept_after_snapshot: tuple[int, ...] = (0, 5, 50)  # Small: InstallSnapshot is common.
    # Kept below the election timeout minus the network delay: a ReadIndex round
    # answered after a longer stall could outlive the quorum's leader lease.
    fsync_latency_units_max: int = 20
    lease_ttl_units: tuple[int, ...] = (1000, 1200, 2000)  # The service allows >= 1000 ms.
    lease_probability: float = 0.3  # Share of client operations that grant or renew leases.
    lease_abandon_probability: float = 0.2  # A holder walks away; its lease must expire.
    # Share of a lease holder's KV operations replaced by ids ops (sim.ids_workload); off
    # by default so that the seeds of the other workloads replay unchanged.
    ids_probability: float = 0.0
    leader_early_crash_probability: float = 0.2
    search_steps_max: int = 2_000_000


@dataclass(slots=True)
class SimResult:
    """What a run produced; `violation` is None when every check passed."""

    seed: int
    cluster_size: int
    violation: str | None = None
    committed_index: int = 0
    elections: int = 0
    ticks_to_recover: int = 0
    operations: int = 0
    faults: int = 0
    snapshots_installed: int = 0  # InstallSnapshots applied by followers.
    follower_reads: int = 0  # Linearizable reads answered by a non-leader.
    keepalives: int = 0  # Keep-alives answered.
    leases_expired: int = 0  # Lease ids in applied lease_expire commands.
    admin_changes: int = 0  # Membership changes answered as applied.
    lock_acquisitions: int = 0  # Lock grants the clients learned of.
    ids_issued: int = 0  # IDs issued by the clients' embedded snowflake generators.
    trace: list[str] = field(default_factory=list)

    def replay_command(self) -> str:
        """The exact command that replays this run."""
        return f"make sim SEED={self.seed}   # or: python -m synod.sim --seed {self.seed} --trace"


@dataclass(slots=True)
class _Client:
    """A client: one outstanding operation at a time, retried through its session."""

    index: int
    session_id: int = 0
    seq: int = 0
    attempt: int = 0
    handle: int | None = None
    op: Any = None
    data: bytes = b""
    kind: str = ""
    deadline: int = 0
    op_id: int = -1
    resend_pending: bool = False
    lease_id: int = 0
    lease_safe_until: int = 0  # The client may act as holder until then (from send times).
    cached_leader: int = 0
    ids_op: dict[str, Any] | None = None  # the ids op in flight (sim.ids_workload)


class Simulation:
    """One seeded run. `run()` returns a SimResult; it never raises on a violation."""

    def __init__(self, seed: int, options: SimOptions | None = None, *, trace: bool = False):
        self.seed = seed
        self.options = options or SimOptions()
        self.rng = random.Random(seed)
        self.echo_trace = trace
        self.size = self.rng.choice(self.options.cluster_sizes)
        self.now = 0
        self.events: list[tuple[int, int, Callable[[], None]]] = []
        self.counter = itertools.count()
        self.op_ids = itertools.count()
        self.ticking: set[int] = set()
        self.monitor = SafetyMonitor()
        self.partition = Partition()
        self.link = LinkFaults()
        self.trace: deque[str] = deque(maxlen=TRACE_LINES_MAX)
        self.history = HistoryRecorder()
        self.nodes: dict[int, SimNode] = {}
        self.clients: list[_Client] = []
        self.faults = 0
        self.partition_generation = 0
        self.conf = ConfState(voters=frozenset(range(1, self.size + 1)))
        self.conf_index = 0
        self.leader_terms_seen: set[int] = set()
        self.value_counter = 0
        self.phase = "safety"
        self.recovered_at: int | None = None
        self._expiry_checked_index = 0  # the last log index judged by _check_lease_expiry
        self.recovery_started_at = 0
        self.faults_enabled = True
        self.stats = SimResult(seed=seed, cluster_size=self.size)
        self.admin_ids = itertools.count(1)
        self.elected_at: dict[int, int] = {}  # term -> when its leader was elected
        # The lock workload draws its choices from its own stream, so that it perturbs
        # the rest of a seed's schedule as little as possible.
        self.lock_rng = random.Random(seed * 7_919 + 1)
        self.lease_rng = random.Random(seed * 104_729 + 3)  # apart: other streams unchanged
        self.locks = LockWorkload(
            now=lambda: self.now, schedule=self._schedule, log=self._log,
            rng_int=self.lock_rng.randint,
            safe_until_of=lambda index: self.clients[index].lease_safe_until,
        )  # fmt: skip
        self._build()

    # -- setup ----------------------------------------------------------------
    def _build(self) -> None:
        options = self.options
        total = self.size + options.spare_nodes
        for node_id in range(1, total + 1):
            config = Config(
                node_id=node_id,
                election_timeout_ticks=options.election_timeout_ticks,
                heartbeat_interval_ticks=options.heartbeat_interval_ticks,
                inflight_messages_max=self.rng.choice((1, 4, 64)),
                append_batch_bytes_max=self.rng.choice((1, 256, 4096, 1 << 20)),
                seed=self.seed,
            )
            disk = SimFileSystem(random.Random(self.rng.random()))
            node_options = SimNodeOptions(
                snapshot_interval_entries=self.rng.choice(options.snapshot_interval_entries),
                entries_kept_after_snapshot=self.rng.choice(options.entries_kept_after_snapshot),
                fsync_latency_units_max=self.rng.choice((0, 5, options.fsync_latency_units_max)),
                request_timeout_units=self._ticks(options.client_timeout_ticks),
            )
            node = SimNode(
                node_id, config, disk, self.monitor, random.Random(self.rng.random()), node_options
            )
            node.reply = functools.partial(self._on_node_reply, node_id)
            node.send = self._send_all
            node.schedule = self._schedule
            node.clock = lambda: self.now
            node.on_admin_applied = self._check_admin_applied
            node.on_keepalive_answered = self._check_keepalive
            node.on_applied = functools.partial(self._after_apply, node)
            node.on_elected = self._note_elected
            self.nodes[node_id] = node
        conf = ConfState(voters=frozenset(range(1, self.size + 1)))
        for node_id in range(1, self.size + 1):
            self.nodes[node_id].start(conf)
            self._start_ticking(node_id)
        self.clients = [_Client(index=i) for i in range(options.clients)]
        # Its own generator, seeded from the seed: self.rng's stream stays as it was.
        self.ids = IdsWorkload(random.Random(self.seed * 1_000_003 + 11))
        for client in self.clients:
            self._schedule(1 + client.index, functools.partial(self._client_next, client))
        self._schedule(self._ticks(options.fault_interval_ticks), self._fault_loop)
        self._log(f"seed={self.seed} size={self.size} spares={options.spare_nodes}")

    def _ticks(self, ticks: int) -> int:
        return ticks * self.options.tick_period_units

    def _schedule(self, delay_units: int, action: Callable[[], None]) -> None:
        assert delay_units >= 0
        heapq.heappush(self.events, (self.now + delay_units, next(self.counter), action))

    def _log(self, line: str) -> None:
        text = f"t={self.now:>6} {line}"
        self.trace.append(text)
        if self.echo_trace:
            print(text)

    # -- the run ----------------------------------------------------------------
    def run(self) -> SimResult:
        """Run both phases and the final checks."""
        result = SimResult(seed=self.seed, cluster_size=self.size)
        try:
            self._run_until(self._ticks(self.options.safety_phase_ticks))
            self._start_recovery()
            deadline = self.now + self._ticks(self.options.recovery_ticks_max)
            self._run_until(deadline, stop=lambda: self.recovered_at is not None)
            if self.recovered_at is None:
                raise SafetyViolation(
                    f"liveness: no leader committed new work within "
                    f"{self.options.recovery_ticks_max} ticks after healing"
                )
            result.ticks_to_recover = (
                self.recovered_at - self.recovery_started_at
            ) // self.options.tick_period_units
            self._check_linearizable()
            ids_violation = self.ids.violation()
            if ids_violation is not None:
                raise SafetyViolation(f"ids: {ids_violation}")
            self.locks.finish()
        except (SafetyViolation, AssertionError) as error:
            where = traceback.extract_tb(error.__traceback__)[-1]
            result.violation = (
                f"{type(error).__name__}: {error} "
                f"(at {where.filename.rsplit('/', 1)[-1]}:{where.lineno} {where.line})"
            )
            self._log(f"VIOLATION {result.violation}")
        result.committed_index = self.monitor.highest_committed_index
        result.elections = len(self.monitor.leader_by_term)
        result.operations = len(self.history)
        result.faults = self.faults
        result.snapshots_installed = sum(n.snapshots_installed for n in self.nodes.values())
        result.lock_acquisitions = self.locks.acquisitions
        for name in ("follower_reads", "keepalives", "leases_expired", "admin_changes"):
            setattr(result, name, getattr(self.stats, name))
        result.ids_issued = len(self.ids.issued)
        result.trace = list(self.trace)
        return result

    def _run_until(self, end: int, stop: Callable[[], bool] | None = None) -> None:
        for _ in range(EVENTS_MAX):
            if not self.events or self.events[0][0] > end:
                self.now = end
                return
            if stop is not None and stop():
                return
            time, _, action = heapq.heappop(self.events)
            assert time >= self.now, "time never goes back"
            self.now = time
            action()
        raise SafetyViolation(f"event budget EVENTS_MAX={EVENTS_MAX} exhausted")

    def _start_recovery(self) -> None:
        self.phase = "liveness"
        self.faults_enabled = False
        self.partition.heal()
        self.link = LinkFaults()
        for node in self.nodes.values():
            node.crash_during_persist_probability = 0.0
            if node.alive and node.paused:
                node.resume()
            if not node.alive and self._is_member(node.id):
                self._restart(node.id)
        self.recovery_started_at = self.now
        self._log("heal: all partitions healed, all members restarted, faults off")

    def _check_linearizable(self) -> None:
        outcome = check(
            KvModel(), self.history.history(), search_steps_max=self.options.search_steps_max
        )
        if outcome.ok is False:
            raise SafetyViolation(f"linearizability: {outcome.explanation}")
        if outcome.ok is None:
            self._log(f"linearizability check budget exhausted: {outcome.explanation}")

    # -- nodes and network -------------------------------------------------------
    def _start_ticking(self, node_id: int) -> None:
        """Give a node its own clock, once: periods differ like real clocks drift."""
        if node_id in self.ticking:
            return
        self.ticking.add(node_id)
        period = self.options.tick_period_units + self.rng.randint(-2, 2)
        self._schedule(self.rng.randrange(period), self._tick_loop(node_id, period))

    def _tick_loop(self, node_id: int, period: int) -> Callable[[], None]:
        def tick() -> None:
            node = self.nodes[node_id]
            if node.alive:
                node.tick()
                self._after_node_event(node)
            self._schedule(period, tick)

        return tick

    def _send_all(self, messages: list[Message]) -> None:
        for message in messages:
            message = self._with_snapshot_data(message)  # noqa: PLW2901
            if not self.partition.allows(message.source, message.to):
                self._snapshot_sent(message, ok=False)
                continue
            if self.rng.random() < self.link.drop_probability:
                self._snapshot_sent(message, ok=False)
                continue
            self._snapshot_sent(message, ok=True)
            copies = 2 if self.rng.random() < self.link.duplicate_probability else 1
            for _ in range(copies):
                delay = self.rng.randint(self.link.delay_min_units, self.link.delay_max_units)
                # Each copy is its own object, as on a wire: a core may re-address a
                # message it forwards (READ_INDEX, PROPOSE).
                copy = dataclasses.replace(message)
                self._schedule(delay, functools.partial(self._deliver, copy))

    def _with_snapshot_data(self, message: Message) -> Message:
        """As the node's shell: memory keeps only a snapshot's metadata, so the
        bytes are read from the sender's snapshot file when the message leaves."""
        snapshot = message.snapshot
        if snapshot is None or snapshot.data or snapshot.is_empty():
            return message
        storage = self.nodes[message.source].storage
        assert storage is not None, "a dead node sends nothing"
        return dataclasses.replace(message, snapshot=storage.load_snapshot_file(snapshot.meta))

    def _snapshot_sent(self, message: Message, *, ok: bool) -> None:
        """Like the peer transport: the sender learns whether a snapshot went out."""
        if message.type != MessageType.SNAPSHOT:
            return
        sender = self.nodes[message.source]

        def report() -> None:
            if sender.alive and sender.driver is not None:
                sender.driver.report_snapshot(message.to, ok=ok)
                sender.pump()

        self._schedule(self.rng.randint(1, 10), report)

    def _deliver(self, message: Message) -> None:
        node = self.nodes[message.to]
        if not node.alive or not self.partition.allows(message.source, message.to):
            return
        node.receive(message)
        self._after_node_event(node)

    def _after_node_event(self, node: SimNode) -> None:
        raft = node.raft
        if (
            raft is not None
            and raft.role == Role.LEADER
            and raft.term not in self.leader_terms_seen
        ):
            self.leader_terms_seen.add(raft.term)
            self._log(f"leader {node.describe()}")
            if (
                self.faults_enabled
                and self.rng.random() < self.options.leader_early_crash_probability
            ):
                # A leader that dies before its no-op spreads: Figure 8's raw material.
                term = raft.term
                delay = self.rng.randint(1, 3 * self.options.tick_period_units)
                self._schedule(delay, lambda: self._crash_leader_of(node, term))
        if not node.alive:
            self._log(f"n{node.id} crashed during a write (torn tail)")
            self._schedule(self._ticks(self.rng.randint(5, 40)), lambda: self._restart(node.id))

    def _crash_leader_of(self, node: SimNode, term: int) -> None:
        if node.alive and node.raft is not None and node.raft.term == term:
            self._log(f"crash new leader {node.describe()}")
            node.crash()
            downtime = self._ticks(self.rng.randint(1, 10))
            self._schedule(downtime, lambda: self._restart(node.id))

    def _restart(self, node_id: int) -> None:
        node = self.nodes[node_id]
        if node.alive:
            return
        node.start(None)
        self._log(f"restart {node.describe()}")

    def _leader(self) -> SimNode | None:
        """The live leader of the newest term (a paused one cannot act on requests)."""
        leaders = [
            n
            for n in self.nodes.values()
            if n.alive and not n.paused and n.raft and n.raft.role == Role.LEADER
        ]
        if not leaders:
            return None
        return max(leaders, key=lambda n: n.raft.term if n.raft else 0)

    def _is_member(self, node_id: int) -> bool:
        leader_conf = self._current_conf()
        return node_id in leader_conf.members()

    def _current_conf(self) -> ConfState:
        """The newest membership any live node has adopted (or the last one seen)."""
        known = [n.raft for n in self.nodes.values() if n.alive and n.raft is not None]
        if known:
            newest = max(known, key=lambda r: r.conf_applied_index())
            if newest.conf_applied_index() >= self.conf_index:
                self.conf_index = newest.conf_applied_index()
                self.conf = newest.conf
        return self.conf

    # -- faults ----------------------------------------------------------------
    def _fault_loop(self) -> None:
        if not self.faults_enabled:
            return
        self.faults += 1
        action = self.rng.choice(
            (
                self._fault_partition,
                self._fault_partition,
                self._fault_heal,
                self._fault_crash,
                self._fault_crash,
                self._fault_links,
                self._fault_membership,
                self._fault_transfer,
                self._fault_torn_write,
                self._fault_pause,
            )
        )
        action()
        self._schedule(
            self._ticks(self.rng.randint(1, self.options.fault_interval_ticks)), self._fault_loop
        )

    def _alive_members(self) -> list[int]:
        conf = self._current_conf()
        return sorted(n for n in conf.members() if self.nodes[n].alive)

    def _fault_partition(self) -> None:
        members = sorted(self._current_conf().members())
        if len(members) < 2:
            return
        leader = self._leader()
        random_partition(self.rng, members, leader.id if leader else None, self.partition)
        self._log(f"partition {self.partition.description}")
        generation = self.faults
        self.partition_generation = generation
        duration = self._ticks(self.rng.randint(5, self.options.fault_duration_ticks_max))
        self._schedule(duration, lambda: self._heal_if_current(generation))

    def _heal_if_current(self, generation: int) -> None:
        if self.partition_generation == generation and self.faults_enabled:
            self._fault_heal()

    def _fault_heal(self) -> None:
        self.partition.heal()
        self._log("heal partition")

    def _fault_crash(self) -> None:
        alive = self._alive_members()
        if not alive:
            return
        victim = self.nodes[self.rng.choice(alive)]
        self._log(f"crash {victim.describe()}")
        victim.crash()
        downtime = self._ticks(self.rng.randint(5, self.options.fault_duration_ticks_max))
        self._schedule(downtime, lambda: self._restart(victim.id))

    def _fault_pause(self) -> None:
        """Stop a member (often the leader) for up to a few election timeouts, like
        SIGSTOP or a long GC pause: a stale leader then wakes to old requests."""
        leader = self._leader()
        alive = self._alive_members()
        if not alive:
            return
        victim_id = leader.id if leader and self.rng.random() < 0.6 else self.rng.choice(alive)
        victim = self.nodes[victim_id]
        if victim.paused:
            return
        victim.pause()
        generation = victim.generation
        duration = self._ticks(self.rng.randint(1, 5 * self.options.election_timeout_ticks))
        self._log(f"pause {victim.describe()} for {duration} units")

        def resume() -> None:
            if victim.alive and victim.generation == generation and victim.paused:
                self._log(f"resume n{victim.id}")
                victim.resume()

        self._schedule(duration, resume)

    def _fault_torn_write(self) -> None:
        alive = self._alive_members()
        if alive:
            node = self.nodes[self.rng.choice(alive)]
            node.crash_during_persist_probability = 0.2
            self._log(f"n{node.id} may lose power mid-write")

    def _fault_links(self) -> None:
        self.link = LinkFaults(
            drop_probability=self.rng.choice((0.0, 0.02, 0.1, 0.3)),
            duplicate_probability=self.rng.choice((0.0, 0.05, 0.2)),
            delay_min_units=1,
            delay_max_units=self.rng.choice((2, 10, 40)),
        )
        self._log(f"links {self.link}")

    def _fault_membership(self) -> None:
        leader = self._leader()
        if leader is None or leader.raft is None:
            return
        conf = leader.raft.conf
        spares = [n for n in self.nodes if n not in conf.members()]
        choices: list[ConfChange] = []
        if spares and len(conf.members()) < self.size + 1:
            choices.append(ConfChange(ConfChangeKind.ADD_LEARNER, self.rng.choice(spares)))
        choices += [ConfChange(ConfChangeKind.PROMOTE, n) for n in sorted(conf.learners)]
        if len(conf.voters) > 3 or conf.learners:
            removable = sorted(conf.learners) or sorted(conf.voters)
            choices.append(ConfChange(ConfChangeKind.REMOVE, self.rng.choice(removable)))
        if not choices:
            return
        change = self.rng.choice(choices)
        self._log(f"membership {change.kind.name} {change.node_id} asked of n{leader.id}")
        if change.kind == ConfChangeKind.ADD_LEARNER:
            joining = self.nodes[change.node_id]
            if not joining.alive:
                self._start_joining(joining)
        # Through the admin path, as the operator and the CLI do.
        request = ClientRequest(-next(self.admin_ids), -1, 0, 0, 1, "admin", change=change)
        leader.handle_client(request)

    def _start_joining(self, node: SimNode) -> None:
        """A joining node starts from its own disk: empty the first time, and its old
        data when it is re-added (a wiped disk under a reused id could vote twice)."""
        node.start(None)
        self._start_ticking(node.id)
        self._log(f"start joining {node.describe()}")

    def _fault_transfer(self) -> None:
        leader = self._leader()
        if leader is None or leader.raft is None:
            return
        voters = sorted(leader.raft.conf.voters - {leader.id})
        if voters:
            target = self.rng.choice(voters)
            assert leader.driver is not None
            leader.driver.transfer_leadership(target)
            self._log(f"transfer leadership n{leader.id} -> n{target}")
            leader.pump()

    # -- clients -----------------------------------------------------------------
    def _client_next(self, client: _Client) -> None:
        if client.op_id != -1:
            return
        if client.session_id == 0:
            client.kind = "session_open"
            nonce = b"%d:%d" % (client.index, self.rng.getrandbits(32))
            client.data = encode_command(session_open_op(nonce))
            client.op = None
            client.op_id = next(self.op_ids)
        else:
            self.ids.issue(client.index, self.now)
            self._choose_operation(client)
        client.attempt = 0
        self._client_send(client)

    def _choose_operation(self, client: _Client) -> None:
        key = self.rng.choice(KEYS)
        roll = self.rng.random()
        client.seq += 1
        session = (client.session_id, client.seq, client.seq)
        if roll < self.options.lease_probability:
            self._choose_lease_operation(client, session)
            return
        lock_op = self.locks.choose(client.index, client.lease_id, client.lease_safe_until,
                                    self.lock_rng.random(), session)  # fmt: skip
        if lock_op is not None:
            client.kind, client.data = lock_op
            client.op, client.handle, client.op_id = None, None, next(self.op_ids)
            return
        if (
            self.options.ids_probability
            and client.lease_id
            and self.ids.rng.random() < self.options.ids_probability
        ):
            # An ids op of the lease holder (sim.ids_workload), instead of a KV op.
            client.op, client.handle = None, None
            client.op_id = next(self.op_ids)
            client.ids_op = self.ids.next_op(client.index, client.lease_id, self.now)
            client.kind, client.data = "ids", encode_command(client.ids_op, *session)
            return
        roll = self.rng.random()
        if roll < 0.4:
            self.value_counter += 1
            value = b"v%d" % self.value_counter
            client.op, client.kind = Put(key, value), "write"
            client.data = encode_command(put_op(key, value), *session)
        elif roll < 0.7:
            client.op, client.kind, client.data = Get(key), "read", b""
            client.seq -= 1  # Reads do not go through the log.
        else:
            expected = self._recent_value(key)
            self.value_counter += 1
            new = b"v%d" % self.value_counter
            client.op, client.kind = Cas(key, expected, new), "write"
            guard = (
                compare(key, "value", "=", expected)
                if expected is not None
                else compare(key, "version", "=", 0)
            )
            client.data = encode_command(txn_op([guard], [put_op(key, new)]), *session)
        client.handle = self.history.invoke(client.index, client.op, self.now)
        client.op_id = next(self.op_ids)

    def _choose_lease_operation(self, client: _Client, session: tuple[int, int, int]) -> None:
        """Grant a lease, or renew the one held (keep-alives are not in the KV history)."""
        client.op, client.handle = None, None
        client.op_id = next(self.op_ids)
        if client.lease_id and self.rng.random() < self.options.lease_abandon_probability:
            self._log(f"client {client.index} abandons lease {client.lease_id}")
            client.lease_id, client.lease_safe_until = 0, 0
        if client.lease_id:
            client.kind, client.data = "keepalive", b""
            client.seq -= 1  # Keep-alives do not go through the log.
            return
        ttl_units = self.rng.choice(self.options.lease_ttl_units)
        client.kind = "lease_grant"
        # The leader's random pick, from a tiny range here so that picks collide and
        # every replica must move to the same next free id.
        pick = self.lease_rng.randint(1, LEASE_PICKS_MAX)
        client.data = encode_command(lease_grant_op(ttl_units, pick=pick), *session)

    def _recent_value(self, key: bytes) -> bytes | None:
        live = [n for n in self.nodes.values() if n.alive and n.raft is not None]
        if not live or self.rng.random() < 0.2:
            return None
        node = self.rng.choice(live)
        kvs = node.state.range(key)["kvs"]
        return bytes(kvs[0]["value"]) if kvs else None

    def _client_send(self, client: _Client) -> None:
        client.attempt += 1
        candidates = sorted(n for n, node in self.nodes.items() if node.alive)
        leader = self._leader()
        if client.cached_leader and self.rng.random() < 0.5:
            target = client.cached_leader  # As the SDK: the last leader it heard of.
        elif leader is not None and self.rng.random() < 0.6:
            target = leader.id
        elif candidates:
            target = self.rng.choice(candidates)
        else:
            target = self.rng.choice(sorted(self.nodes))
        request = ClientRequest(
            client.op_id,
            client.index,
            client.session_id,
            client.seq,
            client.attempt,
            client.kind,
            data=client.data,
            key=_key_of(client.op),
            lease_id=client.lease_id,
            sent_at=self.now,
            target=target,
        )
        delay = self.rng.randint(1, 10)
        self._schedule(delay, lambda: self._client_arrive(target, request))
        client.deadline = self.now + self._ticks(self.options.client_timeout_ticks)
        op_id, attempt = client.op_id, client.attempt
        self._schedule(
            self._ticks(self.options.client_timeout_ticks),
            lambda: self._client_timeout(client, op_id, attempt),
        )

    def _client_arrive(self, node_id: int, request: ClientRequest) -> None:
        node = self.nodes[node_id]
        if not node.alive:
            return  # Connection refused: the client times out.
        request.arrived_at = self.now
        node.handle_client(request)

    def _on_node_reply(self, node_id: int, request: ClientRequest, result: dict[str, Any]) -> None:
        """A node answered: forward a refused write to the leader (as the HTTP layer
        does), carry a forwarded answer back through the follower, or reply."""
        error = result.get("error", {}) if not result.get("ok") else {}
        leader_id = int(error.get("leader_id") or 0)
        if (
            error.get("code") == "not-leader"
            and leader_id
            and request.kind in ("write", "session_open", "lease_grant", "lock", "ids")
            and not request.forwarded_by
        ):
            self._forward(node_id, leader_id, request)
            return
        if request.forwarded_by and not self.partition.allows(node_id, request.forwarded_by):
            # The forward was cut mid-request: the follower cannot tell what happened.
            result = {"ok": False, "error": {"code": "outcome-unknown", "message": "cut"}}
        if request.client_index < 0:
            self._log(f"admin {request.change} answered by n{node_id}: {result.get('ok')}")
            return
        if request.kind == "read" and result.get("ok") and not self._leads(node_id):
            self.stats.follower_reads += 1
        delay = self.rng.randint(1, 10)
        self._schedule(delay, lambda: self._client_reply(request, result))

    def _forward(self, follower_id: int, leader_id: int, request: ClientRequest) -> None:
        forwarded = dataclasses.replace(request, forwarded_by=follower_id)
        leader = self.nodes.get(leader_id)
        if leader is None or not self.partition.allows(follower_id, leader_id):
            error = {"code": "no-leader", "message": "forward failed: nothing was sent"}
            self._on_node_reply(follower_id, request, {"ok": False, "error": error})
            return

        def arrive() -> None:
            if leader.alive and self.partition.allows(follower_id, leader_id):
                forwarded.arrived_at = self.now
                leader.handle_client(forwarded)  # Else lost: the client times out.

        self._schedule(self.rng.randint(1, 10), arrive)

    def _leads(self, node_id: int) -> bool:
        raft = self.nodes[node_id].raft
        return raft is not None and raft.role == Role.LEADER

    def _client_reply(self, request: ClientRequest, result: dict[str, Any]) -> None:
        client = self.clients[request.client_index]
        if client.op_id == -1 or request.op_id != client.op_id:
            return  # A late answer to an operation already finished.
        if not result.get("ok"):
            code = result.get("error", {}).get("code", "")
            client.cached_leader = int(result.get("error", {}).get("leader_id") or 0)
            if client.kind == "keepalive" and code in ("not-found", "lease-not-found"):
                self._lose_lease(client)
                return
            if client.kind == "lock" and code in LOCK_DEFINITE_CODES:
                self.locks.refused(client.index, code)
                client.op_id = -1
                self._schedule(1, lambda: self._client_next(client))
                return
            if client.kind == "ids" and code in IDS_FINAL_CODES:
                self._ids_answered(client, request, result)
                return
            if request.attempt == client.attempt and code != "session-expired":
                self._retry(client)
            return
        if request.kind in ("keepalive", "write", "lease_grant", "ids"):
            client.cached_leader = request.target
        if client.kind == "ids":
            self._ids_answered(client, request, result)
            return
        if client.kind in ("keepalive", "lease_grant"):
            self._lease_answered(client, request, result)
            return
        if client.kind == "lock":
            self.locks.answered(client.index, request, result)
            client.op_id = -1
            self._schedule(self.rng.randint(1, 20), lambda: self._client_next(client))
            return
        if client.kind == "session_open":
            client.session_id = int(result["client_id"])
            client.op_id = -1
            self._schedule(1, lambda: self._client_next(client))
            return
        assert client.handle is not None
        self.history.complete(client.handle, self._output(client.op, result), self.now)
        client.handle = None
        client.op_id = -1
        if self.phase == "liveness" and client.kind == "write" and self.recovered_at is None:
            self.recovered_at = self.now
        self._schedule(self.rng.randint(1, 20), lambda: self._client_next(client))

    @staticmethod
    def _output(op: Any, result: dict[str, Any]) -> Any:
        if isinstance(op, Get):
            kvs = result["kvs"]
            return bytes(kvs[0]["value"]) if kvs else None
        if isinstance(op, Cas):
            return bool(result["succeeded"])
        return None

    def _lease_answered(
        self, client: _Client, request: ClientRequest, result: dict[str, Any]
    ) -> None:
        if client.kind == "lease_grant":
            client.lease_id = int(result["id"])
        else:
            self.stats.keepalives += 1
        # Conservative, as the SDK: the TTL counts from when the request was sent.
        client.lease_safe_until = request.sent_at + int(result["ttl_ms"])
        self.ids.on_lease(client.index, client.lease_safe_until, int(result["ttl_ms"]))
        client.op_id = -1
        self._schedule(self.rng.randint(1, 20), lambda: self._client_next(client))

    def _ids_answered(
        self, client: _Client, request: ClientRequest, result: dict[str, Any]
    ) -> None:
        assert client.ids_op is not None
        self.ids.answered(client.index, client.ids_op, result, request.sent_at)
        client.ids_op = None
        client.op_id = -1
        self._schedule(self.rng.randint(1, 20), lambda: self._client_next(client))

    def _lose_lease(self, client: _Client) -> None:
        client.lease_id, client.lease_safe_until = 0, 0
        client.op_id = -1
        self._schedule(1, lambda: self._client_next(client))

    # -- checkers of the node's promises --------------------------------------------
    def _note_elected(self, term: int) -> None:
        self.elected_at.setdefault(term, self.now)

    def _check_keepalive(self, node: SimNode, request: ClientRequest) -> None:
        """A keep-alive is answered only by a node that was the newest leader at some
        moment after the request reached it: no later term had elected a leader
        before it arrived (etcd's ensureLeadership, checked from outside)."""
        raft = node.raft
        assert raft is not None
        newer = sorted(
            term
            for term, elected_at in self.elected_at.items()
            if term > raft.term and elected_at <= request.arrived_at
        )
        if raft.role != Role.LEADER or newer:
            raise SafetyViolation(
                f"keep-alive of lease {request.lease_id} (arrived t={request.arrived_at}) "
                f"answered by n{node.id} ({raft.role.value}, term {raft.term}) although "
                f"term {newer[:1]} had a leader by then"
            )

    def _after_apply(self, node: SimNode, entries: list[Entry]) -> None:
        self._check_lease_expiry(entries)

        def check_locks() -> None:  # once the turn completed: the state is applied
            if node.alive and node.raft is not None:
                self.locks.applied(node)

        self._schedule(0, check_locks)

    def _check_lease_expiry(self, entries: list[Entry]) -> None:
        """No lease expires while its holder may still believe it is held.

        Judged when an entry is applied for the first time anywhere: lease ids are
        reused once free (the sim draws them from a tiny range), so a lagging replica
        applying an old expiry would otherwise look like expiring the newer lease of the
        same id, which the client can only hold after that expiry was first applied."""
        for entry in entries:
            if entry.index <= self._expiry_checked_index:
                continue
            self._expiry_checked_index = entry.index
            if not entry.data or entry.kind != 0:
                continue
            try:
                op = decode_command(entry.data).op
            except ServiceError:
                continue
            if op.get("kind") != "lease_expire":
                continue
            for lease_id in op["ids"]:
                self.stats.leases_expired += 1
                for client in self.clients:
                    if client.lease_id == lease_id and client.lease_safe_until > self.now:
                        raise SafetyViolation(
                            f"lease {lease_id} expired at t={self.now} but client "
                            f"{client.index} holds it until {client.lease_safe_until}"
                        )

    def _check_admin_applied(self, node: SimNode, change: ConfChange) -> None:
        """A membership change answered as applied is in the node's configuration."""
        raft = node.raft
        assert raft is not None
        conf = raft.conf
        held = {
            ConfChangeKind.ADD_LEARNER: change.node_id in conf.members(),
            ConfChangeKind.PROMOTE: change.node_id in conf.voters,
            ConfChangeKind.ADD_VOTER: change.node_id in conf.voters,
            ConfChangeKind.REMOVE: change.node_id not in conf.members(),
        }[change.kind]
        if not held:
            raise SafetyViolation(
                f"admin {change.kind.name} {change.node_id} answered as applied by n{node.id} "
                f"but its configuration is {sorted(conf.voters)}+{sorted(conf.learners)}"
            )
        self.stats.admin_changes += 1

    def _client_timeout(self, client: _Client, op_id: int, attempt: int) -> None:
        if client.op_id == op_id and client.attempt == attempt:
            self._retry(client)

    def _retry(self, client: _Client) -> None:
        if client.attempt >= self.options.client_attempts_max:
            # Give up: the outcome stays unknown (pending) in the history.
            if client.kind == "lock":  # drop the lease so that an orphan hold ends
                self.locks.refused(client.index, "gave-up")
                client.lease_id, client.lease_safe_until = 0, 0
            client.handle = None
            client.op_id = -1
            self._schedule(1, lambda: self._client_next(client))
            return
        if client.resend_pending:
            return  # An error answer and a timeout of the same attempt: retry once.
        client.resend_pending = True
        op_id = client.op_id
        self._schedule(self.rng.randint(5, 30), lambda: self._resend(client, op_id))

    def _resend(self, client: _Client, op_id: int) -> None:
        client.resend_pending = False
        if client.op_id == op_id:  # Still the same operation: not answered meanwhile.
            self._client_send(client)


# Service errors that answer an ids op for good (no retry): the worker lease is gone,
# every worker id is taken, the lease is gone.
IDS_FINAL_CODES = frozenset({"worker-lease-lost", "limit-exceeded", "generator-not-found",
                             "not-found", "already-exists", "invalid-argument"})  # fmt: skip


def _key_of(op: object) -> bytes:
    """The key a read targets (b"" for anything else)."""
    if isinstance(op, Get):
        key = op.key
        assert isinstance(key, bytes)
        return key
    return b""
