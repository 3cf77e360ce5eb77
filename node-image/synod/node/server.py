"""The asyncio shell around the Raft core: one `RaftServer` per member process.

One task (`_run`) owns the core. Each turn it steps received messages, proposes
every queued write as one batch, asks one ReadIndex for every queued read,
ticks, and then handles the Ready: persist (WAL write + one fsync in a worker
thread — group commit: everything queued meanwhile rides on the next turn),
send, apply, advance. Writers wait on (index, term) of their entry; readers
wait for their read index to be applied. Only the leader proposes; the HTTP
layer forwards writes from followers to it (so trace context travels along).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgpack
from opentelemetry import trace

from synod.node.api import (
    NodeError,
    NoLeader,
    NotCaughtUp,
    NotLeader,
    NotMember,
    Overloaded,
    Session,
    Timeout,
)
from synod.node.config import Member, NodeConfig
from synod.node.metrics import NodeMetrics
from synod.node.tracing import tracing_enabled
from synod.node.transport import CLUSTER_ID_FILE, PeerTransport, TransportLimits
from synod.raft.core import Config, RaftNode
from synod.raft.types import (
    ConfChange,
    ConfChangeKind,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    NodeId,
    ProposalDropped,
    RaftError,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)
from synod.services.commands import encode_command, lease_expire_op
from synod.services.errors import ServiceError
from synod.services.leases import LeaseClock
from synod.services.state import ServiceStateMachine
from synod.services.watch import Watcher
from synod.storage.durable import DurableStorage
from synod.storage.fs import OsFileSystem

log = logging.getLogger("synod.node")
tracer = trace.get_tracer("synod.node")

SNAPSHOT_FORMAT = 1


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Every bound of the server loop, by name."""

    pending_requests_max: int = 20_000  # Writes + reads waiting on this node.
    proposals_per_batch_max: int = 4096  # Commands in one append.
    inbox_messages_per_turn_max: int = 20_000  # Peer messages stepped per loop turn.
    ready_rounds_per_turn_max: int = 16
    ready_lag_entries_max: int = 1000  # /readyz: applied within this of the commit index.
    promote_lag_entries_max: int = 100  # A learner this close to the leader may be promoted.
    watch_events_per_message_max: int = 1000
    watch_progress_interval_s: float = 5.0


@dataclass(slots=True)
class _Write:
    data: bytes
    future: asyncio.Future[dict[str, Any]]


class RaftServer:
    """Implements `synod.node.api.NodeApi` over a durable Raft member."""

    def __init__(self, config: NodeConfig, limits: ServerLimits | None = None) -> None:
        self.config = config
        self.limits = limits or ServerLimits()
        self.member_id = config.node_id
        self.node_metrics = NodeMetrics(config.node_id)
        self.storage = DurableStorage(
            OsFileSystem(),
            config.data_dir,
            entries_kept_after_snapshot=config.snapshot_catchup_entries,
        )
        self.state = ServiceStateMachine()
        self.lease_clock = LeaseClock()
        self.addresses: dict[NodeId, Member] = {m.node_id: m for m in config.initial_members}
        self.raft: RaftNode | None = None
        self.transport = PeerTransport(
            config.node_id,
            config.listen_peer,
            self._peer_address,
            self._on_peer_messages,
            self._on_unreachable,
            self._on_snapshot_sent,
            TransportLimits.for_election_timeout(config.election_timeout_ms),
            cluster_id=config.cluster_id,
            cluster_id_file=f"{config.data_dir}/{CLUSTER_ID_FILE}",
            adopt_pinned_cluster_id=not config.cluster_token,
        )
        self._inbox: list[Message] = []
        self._writes: list[_Write] = []
        self._reads: list[asyncio.Future[None]] = []
        self._waiting_writes: dict[int, tuple[int, asyncio.Future[dict[str, Any]]]] = {}
        self._read_contexts: dict[bytes, list[asyncio.Future[None]]] = {}
        self._applied_waiters: list[tuple[int, asyncio.Future[None]]] = []
        # Outcomes released by _apply, delivered after advance() (see _settle).
        self._settled: list[tuple[asyncio.Future[Any], Any]] = []
        self._context_ids = itertools.count(1)
        self._wakeup = asyncio.Event()
        self._storage_lock = asyncio.Lock()
        self._applied_event = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._last_snapshot_index = 0
        self._was_leader = False
        self._heartbeat_sent_s: dict[NodeId, float] = {}
        self._durable_vote: tuple[int, NodeId] = (0, 0)  # (term, vote) known to be on disk
        self._started_monotonic_s = time.monotonic()

    # =========================================================================
    # Lifecycle
    # =========================================================================
    async def start(self) -> None:
        """Recover from disk (or bootstrap), start the peer transport and the loop."""
        hard_state, snapshot = await asyncio.to_thread(self.storage.load)
        if self.storage.memory.last_index() == 0:
            hard_state, snapshot = await asyncio.to_thread(self._bootstrap)
        if snapshot.data:
            self._restore_snapshot_data(snapshot.data)
        self._last_snapshot_index = snapshot.meta.index
        self._durable_vote = (hard_state.term, hard_state.vote)
        self.raft = RaftNode(self._raft_config(snapshot.meta.index), self.storage.memory)
        await self.transport.start()
        self._loop_task = asyncio.create_task(self._run())
        log.info(
            "node %d started: term=%d commit=%d snapshot=%d members=%s",
            self.member_id,
            hard_state.term,
            hard_state.commit,
            snapshot.meta.index,
            sorted(self.raft.conf.members()),
        )

    def _raft_config(self, applied_index: int) -> Config:
        config = self.config
        return Config(
            node_id=config.node_id,
            election_timeout_ticks=config.election_timeout_ticks,
            heartbeat_interval_ticks=config.heartbeat_interval_ticks,
            applied_index=applied_index,
            seed=int(time.time_ns() & 0xFFFFFFFF),
        )

    def _bootstrap(self) -> tuple[HardState, Snapshot]:
        """A founding member with an empty disk writes the initial membership."""
        ids = frozenset(m.node_id for m in self.config.initial_members)
        if self.config.join or self.member_id not in ids:
            log.info("node %d: empty, waiting to be added by the leader", self.member_id)
            return self.storage.memory.hard_state, self.storage.memory.snapshot()
        data = self._snapshot_data()
        meta = SnapshotMeta(index=1, term=1, conf=ConfState(voters=ids))
        self.storage.persist(Ready(snapshot=Snapshot(meta, data), hard_state=HardState(1, 0, 1)))
        self.storage.sync()
        return self.storage.memory.hard_state, self.storage.memory.snapshot()

    async def stop(self, *, transfer_leadership: bool = True) -> None:
        """Stop serving. A leader first hands leadership to the best voter (bounded)."""
        if transfer_leadership and self.raft is not None and self.raft.role == Role.LEADER:
            with contextlib.suppress(NodeError):
                await self.admin_transfer_leadership(None)
        self._stopping = True
        self._wakeup.set()
        if self._loop_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        await self.transport.stop()
        self._fail_all(NoLeader("node is shutting down"))
        await asyncio.to_thread(self.storage.close)

    # =========================================================================
    # The loop
    # =========================================================================
    async def _run(self) -> None:
        tick_s = self.config.tick_ms / 1000
        next_tick = time.monotonic() + tick_s
        while not self._stopping:
            timeout = max(0.0, next_tick - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            self._wakeup.clear()
            now = time.monotonic()
            ticks = 0
            while now >= next_tick and ticks < 10:  # Bounded catch-up after a stall.
                self._raft().tick()
                next_tick += tick_s
                ticks += 1
            if now >= next_tick:
                next_tick = now + tick_s
            if ticks:
                self._on_tick()
            self._step_inbox()
            self._propose_writes()
            self._request_reads()
            await self._handle_readies()

    def _raft(self) -> RaftNode:
        assert self.raft is not None, "start() first"
        return self.raft

    def _on_tick(self) -> None:
        raft = self._raft()
        if raft.role != Role.LEADER:
            return
        expired = self.lease_clock.expired(_now_ms())
        if expired:
            data = encode_command(lease_expire_op(expired))
            with contextlib.suppress(ProposalDropped):
                raft.propose(data)

    def _step_inbox(self) -> None:
        raft = self._raft()
        inbox, self._inbox = self._inbox, []
        assert len(inbox) <= self.limits.inbox_messages_per_turn_max * 4
        for message in inbox:
            if message.type == MessageType.HEARTBEAT_RESPONSE:
                self._observe_round_trip(message.source)
            raft.step(message)

    def _propose_writes(self) -> None:
        if not self._writes:
            return
        raft = self._raft()
        batch = self._writes[: self.limits.proposals_per_batch_max]
        del self._writes[: len(batch)]
        if raft.role != Role.LEADER:
            error = self._not_leader_error()
            for write in batch:
                _fail(write.future, error)
            return
        first_index = raft.log.last_index() + 1
        try:
            raft.propose_batch([write.data for write in batch])
        except ProposalDropped as error:
            for write in batch:
                _fail(write.future, NoLeader(str(error)))
            self.node_metrics.proposals_failed.inc(len(batch))
            return
        for offset, write in enumerate(batch):
            self._waiting_writes[first_index + offset] = (raft.term, write.future)
        assert raft.log.last_index() == first_index + len(batch) - 1
        self.node_metrics.proposals_pending.set(len(self._waiting_writes))
        if self._writes:
            self._wakeup.set()

    def _request_reads(self) -> None:
        if not self._reads:
            return
        reads, self._reads = self._reads, []
        context = b"r%d" % next(self._context_ids)
        try:
            self._raft().read_index(context)
        except ProposalDropped as error:
            for future in reads:
                _fail(future, NoLeader(str(error)))
            return
        self._read_contexts[context] = reads

    async def _handle_readies(self) -> None:
        raft = self._raft()
        for _ in range(self.limits.ready_rounds_per_turn_max):
            if not raft.has_ready():
                return
            ready = raft.ready()
            early_send = self._may_send_before_persist(raft, ready)
            # Committed entries already on our disk need not wait for this Ready's fsync
            # (as in etcd): their clients get answers one fsync sooner.
            early_apply = ready.snapshot.is_empty() and (
                not ready.committed_entries
                or ready.committed_entries[-1].index < raft.log.unstable.offset
            )
            if early_send:
                self._send(ready.messages)  # Overlap our fsync with the followers' (§10.2.1).
            if early_apply:
                self._apply(ready)
            if ready.must_sync():
                await self._persist(ready)
            if not early_send:
                self._send(ready.messages)
            if not early_apply:
                self._apply(ready)
            raft.advance(ready)
            self._settle()  # Only now: answers must see the membership of what they waited for.
            self._after_advance(ready)
            await self._maybe_snapshot()
        self._wakeup.set()  # More work remains: come back without waiting.

    def _may_send_before_persist(self, raft: RaftNode, ready: Ready) -> bool:
        """A leader may send appends before its own fsync (Raft thesis §10.2.1): nothing
        it sends depends on its unsynced entries, and their acknowledgements are only
        stepped after the fsync, so its own copy counts toward a commit only once
        durable. Anything carrying a new term or vote must wait."""
        if raft.role != Role.LEADER or not ready.snapshot.is_empty():
            return False
        hard_state = ready.hard_state
        return hard_state is None or (hard_state.term, hard_state.vote) == self._durable_vote

    async def _persist(self, ready: Ready) -> None:
        started = time.perf_counter()
        async with self._storage_lock:
            with _span("synod.wal.fsync", len(ready.entries)):
                await asyncio.to_thread(self._persist_and_flush, ready)
            self.storage.publish()  # Memory changes only on the loop's thread.
        if ready.hard_state is not None:
            self._durable_vote = (ready.hard_state.term, ready.hard_state.vote)
        self.node_metrics.wal_fsync_seconds.observe(time.perf_counter() - started)

    def _persist_and_flush(self, ready: Ready) -> None:
        self.storage.persist(ready)
        self.storage.flush()

    def _send(self, messages: list[Message]) -> None:
        if not messages:
            return
        now = time.monotonic()
        for message in messages:
            if message.type == MessageType.HEARTBEAT:
                self._heartbeat_sent_s.setdefault(message.to, now)
        self.transport.send(messages)

    def _observe_round_trip(self, node_id: NodeId) -> None:
        sent = self._heartbeat_sent_s.pop(node_id, None)
        if sent is not None:
            self.node_metrics.peer_round_trip_seconds.labels(str(node_id)).observe(
                time.monotonic() - sent
            )

    # -- apply ------------------------------------------------------------------
    def _apply(self, ready: Ready) -> None:
        if not ready.snapshot.is_empty():
            self._restore_snapshot_data(ready.snapshot.data)
            self._last_snapshot_index = ready.snapshot.meta.index
            self._fail_waiters_up_to(ready.snapshot.meta.index)
        if ready.committed_entries:
            started = time.perf_counter()
            with _span("synod.apply", len(ready.committed_entries)):
                for entry in ready.committed_entries:
                    self._apply_entry(entry)
            self.node_metrics.apply_seconds.observe(time.perf_counter() - started)
            self.node_metrics.proposals_applied.inc(len(ready.committed_entries))
        for read_state in ready.read_states:
            for future in self._read_contexts.pop(read_state.context, []):
                self._applied_waiters.append((read_state.index, future))
        self._release_applied_waiters()
        self.state.watches.notify()
        self._applied_event.set()
        self._applied_event = asyncio.Event()

    def _apply_entry(self, entry: Entry) -> None:
        if entry.index <= self.state.applied_index:
            return  # Covered by the snapshot we restored.
        if entry.kind == EntryKind.CONF_CHANGE:
            self.state.apply(entry.index, b"")
            self._note_conf_change(ConfChange.decode(entry.data))
            result: dict[str, Any] = {"ok": True, "revision": self.state.kv.revision}
        else:
            result = self.state.apply(entry.index, entry.data)
            self._track_leases(entry.data, result)
        waiting = self._waiting_writes.pop(entry.index, None)
        if waiting is not None:
            term, future = waiting
            if term == entry.term:
                self._settled.append((future, result))
            else:
                error = NoLeader("leadership changed before the write committed; retry")
                self._settled.append((future, error))

    def _track_leases(self, data: bytes, result: dict[str, Any]) -> None:
        if not self.lease_clock.is_leader or not result.get("ok"):
            return
        if "ttl_ms" in result and "id" in result:  # lease_grant
            self.lease_clock.on_granted(int(result["id"]), int(result["ttl_ms"]), _now_ms())
        elif "keys_deleted" in result or "expired" in result:
            self.lease_clock.sync(self.state.lease_ttls_ms(), _now_ms())

    def _note_conf_change(self, change: ConfChange) -> None:
        if change.kind == ConfChangeKind.ADD_LEARNER and change.context:
            info = msgpack.unpackb(change.context, raw=False)
            self.addresses[change.node_id] = Member(
                change.node_id, str(info["peer"]), str(info["client"])
            )
        log.info("membership: %s %d", change.kind.name, change.node_id)

    def _after_advance(self, ready: Ready) -> None:
        raft = self._raft()
        is_leader = raft.role == Role.LEADER
        if ready.soft_state is not None:
            self.node_metrics.is_leader.set(1 if is_leader else 0)
            self.node_metrics.leader_changes.inc()
        if is_leader and not self._was_leader:
            self.lease_clock.on_become_leader(_now_ms(), self.state.lease_ttls_ms())
        elif not is_leader and self._was_leader:
            self.lease_clock.on_become_follower()
        self._was_leader = is_leader
        self.node_metrics.term.set(raft.term)
        self.node_metrics.commit_index.set(raft.log.committed)
        self.node_metrics.applied_index.set(raft.log.applied)
        self.node_metrics.leases.set(len(self.state.lease_ttls_ms()))
        self.node_metrics.watchers.set(len(self.state.watches))

    async def _maybe_snapshot(self, *, force: bool = False) -> int:
        raft = self._raft()
        applied = raft.log.applied
        due = applied - self._last_snapshot_index >= self.config.snapshot_entries
        if not (due or force) or applied <= self._last_snapshot_index:
            return self._last_snapshot_index
        if raft.conf_applied_index() > applied or self.state.applied_index != applied:
            return self._last_snapshot_index
        started = time.perf_counter()
        data = self._snapshot_data()
        async with self._storage_lock:
            if applied <= self._last_snapshot_index:
                return self._last_snapshot_index  # Another caller got here first.
            snapshot = await asyncio.to_thread(
                self.storage.write_snapshot, applied, raft.conf, data
            )
            self.storage.install_snapshot(snapshot)
        self._last_snapshot_index = applied
        self.node_metrics.snapshot_save_seconds.observe(time.perf_counter() - started)
        return applied

    def _snapshot_data(self) -> bytes:
        members = {
            str(node_id): [member.peer_address, member.client_url]
            for node_id, member in sorted(self.addresses.items())
        }
        payload = {"format": SNAPSHOT_FORMAT, "members": members, "services": self.state.snapshot()}
        data = msgpack.packb(payload, use_bin_type=True)
        assert isinstance(data, bytes)
        return data

    def _restore_snapshot_data(self, data: bytes) -> None:
        payload = msgpack.unpackb(data, raw=False)
        if payload.get("format") != SNAPSHOT_FORMAT:
            raise RuntimeError(f"unknown snapshot format {payload.get('format')!r}")
        for node_id, (peer, client) in payload["members"].items():
            self.addresses[int(node_id)] = Member(int(node_id), peer, client)
        self.state.restore(payload["services"])

    # -- waiters ------------------------------------------------------------------
    def _settle(self) -> None:
        """Resolve the waiters that `_apply` released, after `advance()`."""
        settled, self._settled = self._settled, []
        for future, outcome in settled:
            if isinstance(outcome, BaseException):
                _fail(future, outcome)
            else:
                _resolve(future, outcome)

    def _wait_applied(self, index: int, future: asyncio.Future[None]) -> None:
        if self.state.applied_index >= index:
            _resolve(future, None)
        else:
            self._applied_waiters.append((index, future))

    def _release_applied_waiters(self) -> None:
        if not self._applied_waiters:
            return
        applied = self.state.applied_index
        still = []
        for index, future in self._applied_waiters:
            if index <= applied:
                self._settled.append((future, None))
            else:
                still.append((index, future))
        self._applied_waiters = still

    def _fail_waiters_up_to(self, index: int) -> None:
        for entry_index in [i for i in self._waiting_writes if i <= index]:
            _, future = self._waiting_writes.pop(entry_index)
            _fail(future, NoLeader("entry replaced by a snapshot; retry with the same session"))

    def _fail_all(self, error: NodeError) -> None:
        futures: list[asyncio.Future[Any]] = [f for _, f in self._waiting_writes.values()]
        futures += [write.future for write in self._writes]
        futures += [f for group in self._read_contexts.values() for f in group]
        futures += self._reads
        futures += [f for _, f in self._applied_waiters]
        futures += [f for f, _ in self._settled]
        for future in futures:
            _fail(future, error)
        self._waiting_writes.clear()
        self._writes.clear()
        self._read_contexts.clear()
        self._reads.clear()
        self._applied_waiters.clear()
        self._settled.clear()

    # -- transport callbacks ---------------------------------------------------------
    def _peer_address(self, node_id: NodeId) -> str | None:
        member = self.addresses.get(node_id) or self.config.member(node_id)
        return member.peer_address if member else None

    def _on_peer_messages(self, messages: list[Message]) -> bool:
        if len(self._inbox) + len(messages) > self.limits.inbox_messages_per_turn_max:
            return False  # Overloaded: Raft retransmits; dropping keeps memory bounded.
        self._inbox.extend(messages)
        self._wakeup.set()
        return True

    def _on_unreachable(self, node_id: NodeId) -> None:
        if self.raft is not None:
            self.raft.report_unreachable(node_id)
            self._wakeup.set()

    def _on_snapshot_sent(self, node_id: NodeId, ok: bool) -> None:
        if self.raft is not None:
            self.raft.report_snapshot(node_id, failed=not ok)
            self._wakeup.set()

    # =========================================================================
    # NodeApi
    # =========================================================================
    def header(self) -> dict[str, int]:
        """See `NodeApi.header`."""
        raft = self._raft()
        return {
            "revision": self.state.kv.revision,
            "raft_term": raft.term,
            "member_id": self.member_id,
            "leader_id": raft.leader,
        }

    def _timeout_s(self) -> float:
        return self.config.request_timeout_ms / 1000

    def _pending(self) -> int:
        return len(self._writes) + len(self._waiting_writes) + len(self._applied_waiters)

    def _not_leader_error(self) -> NodeError:
        leader = self._raft().leader
        if leader == 0:
            return NoLeader("no leader is known (election in progress or no quorum)")
        member = self.addresses.get(leader) or self.config.member(leader)
        return NotLeader(leader, member.client_url if member else None)

    async def write(self, op: dict[str, Any], session: Session | None) -> dict[str, Any]:
        """See `NodeApi.write`."""
        if self._raft().role != Role.LEADER:
            raise self._not_leader_error()
        if self._pending() >= self.limits.pending_requests_max:
            raise Overloaded(f"{self._pending()} requests pending (pending_requests_max)")
        if session is None:
            data = encode_command(op)
        else:
            data = encode_command(op, session.client_id, session.seq, session.ack_seq)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._writes.append(_Write(data, future))
        self._wakeup.set()
        if not tracing_enabled():
            result: dict[str, Any] = await self._await(future)
            return result
        with tracer.start_as_current_span("synod.propose") as span:
            span.set_attribute("synod.op", str(op.get("kind")))
            traced: dict[str, Any] = await self._await(future)
            return traced

    async def _await(self, future: asyncio.Future[Any]) -> Any:
        try:
            async with asyncio.timeout(self._timeout_s()):
                return await future  # Cancelled on timeout: resolving it later is a no-op.
        except TimeoutError:
            raise Timeout(
                f"no answer within {self.config.request_timeout_ms} ms; "
                "retry (with the same session seq for writes)"
            ) from None

    async def read(self, op: dict[str, Any], *, serializable: bool) -> dict[str, Any]:
        """See `NodeApi.read`."""
        if not serializable:
            if self._pending() >= self.limits.pending_requests_max:
                raise Overloaded("too many requests pending (pending_requests_max)")
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._reads.append(future)
            self._wakeup.set()
            await self._await(future)
        try:
            return self.state.read(op)
        except ServiceError as error:
            return {"ok": False, "revision": self.state.kv.revision, "error": error.to_dict()}

    def _require_leader(self) -> RaftNode:
        raft = self._raft()
        if raft.role != Role.LEADER:
            raise self._not_leader_error()
        return raft

    async def lease_keepalive(self, lease_id: int) -> dict[str, Any]:
        """See `NodeApi.lease_keepalive`."""
        self._require_leader()
        try:
            ttl_ms = self.lease_clock.keepalive(lease_id, _now_ms())
        except ServiceError as error:
            return {"ok": False, "revision": self.state.kv.revision, "error": error.to_dict()}
        return {"ok": True, "revision": self.state.kv.revision, "id": lease_id, "ttl_ms": ttl_ms}

    async def lease_timetolive(self, lease_id: int) -> dict[str, Any]:
        """See `NodeApi.lease_timetolive`."""
        self._require_leader()
        try:
            info = self.state.lease_info(lease_id)
            remaining_ms = self.lease_clock.remaining_ms(lease_id, _now_ms())
        except ServiceError as error:
            return {"ok": False, "revision": self.state.kv.revision, "error": error.to_dict()}
        return {
            **info,
            "ttl_ms": remaining_ms,
            "granted_ttl_ms": info["ttl_ms"],
            "keys": info["keys"],
        }

    def watch(
        self, key: bytes, range_end: bytes, start_revision: int
    ) -> AsyncIterator[dict[str, Any]]:
        """See `NodeApi.watch`. The watcher is registered before this returns, so a
        compacted start revision or a full watcher table raises here."""
        watcher = self.state.watches.watch(key, range_end, start_revision)
        return self._watch_stream(watcher)

    async def _watch_stream(self, watcher: Watcher) -> AsyncIterator[dict[str, Any]]:
        try:
            for _ in itertools.count():  # Ends when the client goes or the watch is cancelled.
                events = watcher.poll(self.limits.watch_events_per_message_max)
                if events:
                    yield {
                        "events": [event.to_dict() for event in events],
                        "revision": self.state.kv.revision,
                    }
                    continue
                if watcher.cancelled:
                    yield {
                        "cancel": watcher.cancel_reason,
                        "resume_revision": watcher.resume_revision,
                        "message": watcher.cancel_message(),
                    }
                    return
                try:
                    await asyncio.wait_for(
                        self._applied_event.wait(), self.limits.watch_progress_interval_s
                    )
                except TimeoutError:
                    yield {"progress": self.state.kv.revision}
        finally:
            if not watcher.cancelled:
                with contextlib.suppress(ServiceError):
                    self.state.watches.cancel(watcher.watch_id)

    def status(self) -> dict[str, Any]:
        """See `NodeApi.status`."""
        raft = self._raft()
        leader_member = self.addresses.get(raft.leader) or self.config.member(raft.leader)
        return {
            "member_id": self.member_id,
            "role": raft.role.value,
            "term": raft.term,
            "leader_id": raft.leader,
            "leader_client_url": leader_member.client_url if leader_member else None,
            "commit_index": raft.log.committed,
            "applied_index": raft.log.applied,
            "last_index": raft.log.last_index(),
            "snapshot_index": self._last_snapshot_index,
            "revision": self.state.kv.revision,
            "members": self._member_status(raft),
        }

    def _member_status(self, raft: RaftNode) -> list[dict[str, Any]]:
        members = []
        for node_id in sorted(raft.conf.members()):
            member = self.addresses.get(node_id) or self.config.member(node_id)
            progress = raft.progress.get(node_id)
            is_self = node_id == self.member_id
            last_contact_ms = 0 if is_self else self.transport.last_contact_ms(node_id)
            match_index = raft.log.last_index() if is_self else (progress.match if progress else 0)
            healthy = last_contact_ms is not None and last_contact_ms < (
                2 * self.config.election_timeout_ms
            )
            members.append(
                {
                    "id": node_id,
                    "role": "learner" if node_id in raft.conf.learners else "voter",
                    "peer_url": member.peer_address if member else None,
                    "client_url": member.client_url if member else None,
                    "match_index": match_index if raft.role == Role.LEADER or is_self else None,
                    "last_contact_ms": last_contact_ms,
                    "healthy": healthy,
                }
            )
        return members

    def is_ready(self) -> tuple[bool, str]:
        """See `NodeApi.is_ready`."""
        raft = self._raft()
        if raft.leader == 0:
            return False, "no leader known"
        if self.member_id not in raft.conf.members():
            return False, "not a member (yet)"
        lag = raft.log.committed - raft.log.applied
        if lag > self.limits.ready_lag_entries_max:
            return False, f"applying: {lag} entries behind the commit index"
        return True, "ok"

    def metrics(self) -> bytes:
        """See `NodeApi.metrics`."""
        return self.node_metrics.render()

    # -- admin ------------------------------------------------------------------------
    async def _change_membership(self, change: ConfChange) -> dict[str, Any]:
        deadline = time.monotonic() + self._timeout_s()
        for _ in range(1000):  # Bounded by the deadline; each turn waits for an apply.
            raft = self._require_leader()
            try:
                raft.change_membership(change)
            except RaftError as error:
                if error.code != "conf-change-pending" or time.monotonic() > deadline:
                    raise _admin_error(error) from None
                await asyncio.sleep(0.02)
                continue
            index = raft.log.last_index()
            self._wakeup.set()
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._wait_applied(index, future)
            await self._await(future)
            return {"ok": True, "members": self._member_status(self._raft())}
        raise Timeout("membership change did not start in time")

    async def admin_add_learner(
        self, node_id: int, peer_url: str, client_url: str
    ) -> dict[str, Any]:
        """See `NodeApi.admin_add_learner`."""
        raft = self._require_leader()
        if node_id in raft.conf.members():
            return {"ok": True, "members": self._member_status(raft), "changed": False}
        context = msgpack.packb({"peer": peer_url, "client": client_url}, use_bin_type=True)
        assert isinstance(context, bytes)
        self.addresses[node_id] = Member(node_id, peer_url, client_url)
        change = ConfChange(ConfChangeKind.ADD_LEARNER, node_id, context)
        return {**await self._change_membership(change), "changed": True}

    async def admin_promote(self, node_id: int) -> dict[str, Any]:
        """See `NodeApi.admin_promote`."""
        raft = self._require_leader()
        if node_id in raft.conf.voters:
            return {"ok": True, "members": self._member_status(raft), "changed": False}
        progress = raft.progress.get(node_id)
        if progress is None:
            raise NotMember(f"node {node_id} is not a member; add it as a learner first")
        lag = raft.log.last_index() - progress.match
        contact_ms = self.transport.last_contact_ms(node_id)
        if (
            progress.match == 0
            or contact_ms is None
            or contact_ms > self.config.election_timeout_ms
        ):
            # A learner that never answered would become a voter that cannot vote:
            # with few members that alone could cost the quorum.
            raise NotCaughtUp(
                f"learner {node_id} has not been heard from recently", lag_entries=lag
            )
        if lag > self.limits.promote_lag_entries_max:
            raise NotCaughtUp(f"learner {node_id} is {lag} entries behind", lag_entries=lag)
        change = ConfChange(ConfChangeKind.PROMOTE, node_id)
        return {**await self._change_membership(change), "changed": True}

    async def admin_remove(self, node_id: int) -> dict[str, Any]:
        """See `NodeApi.admin_remove`."""
        raft = self._require_leader()
        if node_id not in raft.conf.members():
            return {"ok": True, "members": self._member_status(raft), "changed": False}
        if node_id == self.member_id:
            await self.admin_transfer_leadership(None)
            raise self._not_leader_error()  # The new leader removes us.
        change = ConfChange(ConfChangeKind.REMOVE, node_id)
        return {**await self._change_membership(change), "changed": True}

    async def admin_transfer_leadership(self, to: int | None) -> dict[str, Any]:
        """See `NodeApi.admin_transfer_leadership`."""
        raft = self._require_leader()
        target = to if to is not None else self._best_transferee(raft)
        if target is None:
            raise NodeError("no other voter to hand leadership to")
        if target not in raft.conf.voters:
            raise NodeError(f"node {target} is not a voter")
        if target == self.member_id:
            return {"ok": True, "leader_id": self.member_id, "changed": False}
        raft.transfer_leadership(target)
        self._wakeup.set()
        deadline = time.monotonic() + 2 * self.config.election_timeout_ms / 1000
        while time.monotonic() < deadline and self._raft().role == Role.LEADER:
            await asyncio.sleep(self.config.tick_ms / 1000)
        if self._raft().role == Role.LEADER:
            raise Timeout(f"leadership did not move to {target} in time")
        return {"ok": True, "leader_id": self._raft().leader, "changed": True}

    def _best_transferee(self, raft: RaftNode) -> int | None:
        candidates = [
            (progress.match, node_id)
            for node_id, progress in raft.progress.items()
            if node_id in raft.conf.voters and node_id != self.member_id
        ]
        return max(candidates)[1] if candidates else None

    async def admin_snapshot(self) -> dict[str, Any]:
        """See `NodeApi.admin_snapshot`."""
        index = await self._maybe_snapshot(force=True)
        return {"ok": True, "snapshot_index": index}


def _admin_error(error: RaftError) -> NodeError:
    if isinstance(error, ProposalDropped):
        return NoLeader(str(error))
    node_error = NodeError(str(error))
    node_error.code = error.code
    node_error.status = 409
    return node_error


def _span(name: str, entries: int) -> contextlib.AbstractContextManager[Any]:
    """A span around loop work, or nothing at all when tracing is off (the common case)."""
    if not tracing_enabled():
        return contextlib.nullcontext()
    span = tracer.start_as_current_span(name, attributes={"synod.entries": entries})
    return span


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
