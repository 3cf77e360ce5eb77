"""The asyncio shell around the node driver: one `RaftServer` per member process.

All decisions live in `synod.node.driver.NodeDriver` (sans-I/O, also driven by
the simulator). This shell only does the I/O the driver asks for: one task
(`_run`) ticks the driver on the wall clock, runs its turns — persisting each
Ready (WAL write + one fsync in a worker thread: group commit, everything
queued meanwhile rides on the next turn) — sends what it says to send over the
peer transport, and resolves each request's future with the answer the driver
gives for it. If that task dies the process exits (a member whose loop is dead
must not look healthy); `/healthz` reports the age of the last loop turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import logging
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import msgpack
from opentelemetry import trace

from synod.bounds import PROMOTE_LAG_ENTRIES_MAX
from synod.node.api import (
    ChangeInvalid,
    ChangePending,
    NodeError,
    NoLeader,
    NotCaughtUp,
    NotMember,
    Session,
    Timeout,
    TransferInvalid,
    check_new_learner,
)
from synod.node.config import NodeConfig
from synod.node.driver import (
    DriverLimits,
    NodeDriver,
    SnapshotJob,
    Turn,
    TurnDone,
    encode_snapshot_payload,
)
from synod.node.locks_http import LockWaits
from synod.node.looplag import run_probe
from synod.node.members import Member
from synod.node.metrics import NodeMetrics
from synod.node.tracing import tracing_enabled
from synod.node.transport import CLUSTER_ID_FILE, PeerTls, PeerTransport, TransportLimits
from synod.node.watch_stream import WatchStreamLimits, WatchStreams
from synod.raft.core import Config, RaftNode
from synod.raft.types import (
    Compacted,
    ConfChange,
    ConfChangeInvalid,
    ConfChangeKind,
    ConfChangePending,
    ConfState,
    HardState,
    Message,
    MessageType,
    NodeId,
    RaftError,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)
from synod.services.commands import encode_command
from synod.services.errors import ServiceError
from synod.services.state import ServiceStateMachine
from synod.storage.durable import DurableStorage, StorageCorruption
from synod.storage.fs import OsFileSystem
from synod.storage.snapfile import SnapshotCorruption, encode_snapshot_file
from synod.storage.wal import WalError

log = logging.getLogger("synod.node")
tracer = trace.get_tracer("synod.node")

LOOP_EXIT_CODE = 70  # EX_SOFTWARE: the Raft loop died; let the supervisor restart us.


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Every bound of the server loop, by name."""

    pending_requests_max: int = 20_000  # Writes + reads waiting on this node.
    proposals_per_batch_max: int = 4096  # Commands in one append.
    inbox_messages_per_turn_max: int = 20_000  # Peer messages queued between turns.
    ready_rounds_per_turn_max: int = 16
    ticks_per_wakeup_max: int = 10  # Catch-up ticks after a stall, at most.
    ready_lag_entries_max: int = 1000  # /readyz: applied within this of the commit index.
    promote_lag_entries_max: int = PROMOTE_LAG_ENTRIES_MAX  # Closer learners may be promoted.
    loop_stall_ms_max: int = 10_000  # /healthz: 503 when the last loop turn is older.
    snapshot_in_child_process: bool = True  # Serialise snapshots in a forked child.
    watch_events_per_message_max: int = 1000
    watch_progress_interval_ms: int = 5_000


def _exit_process(code: int) -> None:
    os._exit(code)  # No cleanup can be trusted once the loop is dead.


class RaftServer:
    """Implements `synod.node.api.NodeApi` over a durable Raft member."""

    def __init__(
        self,
        config: NodeConfig,
        limits: ServerLimits | None = None,
        on_fatal: Callable[[int], None] = _exit_process,
    ) -> None:
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
        self.lock_waits = LockWaits(
            lambda: self.state.locks,
            observe_wait=self.node_metrics.lock_wait_seconds.observe,
            observe_handover=self.node_metrics.lock_handover_seconds.observe,
        )
        self.driver: NodeDriver | None = None
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
            tls=PeerTls(config.peer_tls_cert, config.peer_tls_key, config.peer_tls_ca)
            if config.peer_tls_cert
            else None,
        )
        self._on_fatal = on_fatal
        self._wakeup = asyncio.Event()
        self._storage_lock = asyncio.Lock()
        self._applied_event = asyncio.Event()  # Set when entries were applied (admin waits).
        self._watch_streams = WatchStreams(
            self.state,
            WatchStreamLimits(
                self.limits.watch_events_per_message_max, self.limits.watch_progress_interval_ms
            ),
        )
        # Read at scrape time: exact even on a node that runs no turns (an idle follower).
        self.node_metrics.watchers.set_function(lambda: len(self.state.watches))
        self.node_metrics.leases.set_function(lambda: len(self.state.lease_ttls_ms()))
        self.node_metrics.watch_locks(lambda: self.state.locks)
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._heartbeat_sent_s: dict[NodeId, float] = {}
        self._last_turn_ms = _now_ms()
        self._background: set[asyncio.Task[None]] = set()
        self._lag_probe: asyncio.Task[None] | None = None

    # =========================================================================
    # Lifecycle
    # =========================================================================
    async def start(self) -> None:
        """Recover from disk (or bootstrap), start the peer transport and the loop."""
        hard_state, snapshot = await asyncio.to_thread(self.storage.load)
        if self.storage.memory.last_index() == 0:
            hard_state, snapshot = await asyncio.to_thread(self._bootstrap)
        raft = RaftNode(self._raft_config(snapshot.meta.index), self.storage.memory)
        limits = self.limits
        self.driver = NodeDriver(
            raft,
            self.state,
            boot_nonce=secrets.randbits(64),
            limits=DriverLimits(
                pending_requests_max=limits.pending_requests_max,
                proposals_per_batch_max=limits.proposals_per_batch_max,
                inbox_messages_max=limits.inbox_messages_per_turn_max,
                request_timeout_ms=self.config.request_timeout_ms,
                snapshot_entries=self.config.snapshot_entries,
            ),
            addresses=self.config.initial_members,
            snapshot_index=snapshot.meta.index,
        )
        self.driver.restore(snapshot.data)
        await self.transport.start()
        if not raft.conf.members():
            self._introduce_ourselves()
        self._last_turn_ms = _now_ms()
        self._loop_task = asyncio.create_task(self._run())
        self._loop_task.add_done_callback(self._on_loop_done)
        self._lag_probe = asyncio.create_task(run_probe(self.node_metrics.observe_loop_lag))
        log.info(
            "node %d started: term=%d commit=%d snapshot=%d members=%s",
            self.member_id,
            hard_state.term,
            hard_state.commit,
            snapshot.meta.index,
            sorted(raft.conf.members()),
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

    def _introduce_ourselves(self) -> None:
        """An empty member waiting to be added dials the members it knows of whose id
        is higher than its own: the lower id dials, so a leader with a higher id (an id
        reused after a removal) would otherwise wait for us forever. Raises nothing."""
        higher = [m.node_id for m in self.config.initial_members if m.node_id > self.member_id]
        assert self.member_id not in higher
        self.transport.introduce(higher)

    def _bootstrap(self) -> tuple[HardState, Snapshot]:
        """A founding member with an empty disk writes the initial membership."""
        ids = frozenset(m.node_id for m in self.config.initial_members)
        if self.config.join or self.member_id not in ids:
            log.info("node %d: empty, waiting to be added by the leader", self.member_id)
            return self.storage.memory.hard_state, self.storage.memory.snapshot()
        data = encode_snapshot_payload(self.config.initial_members, ServiceStateMachine())
        meta = SnapshotMeta(index=1, term=1, conf=ConfState(voters=ids))
        self.storage.persist(Ready(snapshot=Snapshot(meta, data), hard_state=HardState(1, 0, 1)))
        self.storage.sync()
        return self.storage.memory.hard_state, self.storage.memory.snapshot()

    async def stop(self, *, transfer_leadership: bool = True) -> None:
        """Stop serving. A leader first hands leadership to the best voter (bounded)."""
        if transfer_leadership and self.driver is not None and self._raft().role == Role.LEADER:
            with contextlib.suppress(NodeError):
                await self.admin_transfer_leadership(None)
        self._stopping = True
        self._wakeup.set()
        if self._lag_probe is not None:
            self._lag_probe.cancel()
        if self._loop_task is not None and not self._loop_task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task  # A loop that already died was logged as fatal.
        if self._background:  # Snapshot writers: let them finish with the files they own.
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.transport.stop()
        if self.driver is not None:
            self._deliver(self.driver.fail_all(NoLeader("node is shutting down")))
        await asyncio.to_thread(self.storage.close)

    def _on_loop_done(self, task: asyncio.Task[None]) -> None:
        """A loop that ends while the node is not stopping is fatal: HTTP would keep
        serving a member that no longer ticks, votes or applies."""
        if self._stopping:
            return
        error = None if task.cancelled() else task.exception()
        log.critical("the Raft loop ended unexpectedly: %r", error, exc_info=error)
        self._on_fatal(LOOP_EXIT_CODE)

    def health(self) -> tuple[bool, str]:
        """(healthy, reason): unhealthy when the loop has not finished a turn within
        `loop_stall_ms_max` (dead, or stuck in I/O)."""
        age_ms = _now_ms() - self._last_turn_ms
        if self._loop_task is not None and self._loop_task.done():
            return False, "the Raft loop has stopped"
        if age_ms > self.limits.loop_stall_ms_max:
            return False, f"the Raft loop last turned {age_ms} ms ago"
        return True, f"last loop turn {age_ms} ms ago"

    # =========================================================================
    # The loop
    # =========================================================================
    async def _run(self) -> None:
        driver = self._driver()
        tick_s = self.config.tick_ms / 1000
        next_tick = time.monotonic() + tick_s
        while not self._stopping:
            timeout = max(0.0, next_tick - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            self._wakeup.clear()
            now = time.monotonic()
            for _ in range(self.limits.ticks_per_wakeup_max):  # Bounded catch-up.
                if now < next_tick:
                    break
                driver.tick(_now_ms())
                next_tick += tick_s
            if now >= next_tick:
                next_tick = now + tick_s
            self._deliver(driver.take_answers())
            await self._turns(driver)
            self._last_turn_ms = _now_ms()

    def _driver(self) -> NodeDriver:
        assert self.driver is not None, "start() first"
        return self.driver

    def _raft(self) -> RaftNode:
        return self._driver().raft

    async def _turns(self, driver: NodeDriver) -> None:
        for _ in range(self.limits.ready_rounds_per_turn_max):
            turn = driver.begin(_now_ms())
            if turn is None:
                return
            self._send(turn.messages)
            self._deliver(turn.answers)
            if turn.persist:
                assert turn.ready is not None
                await self._persist(turn)
                snapshot = turn.ready.snapshot
                if not snapshot.is_empty():  # From the leader: decode it off the loop.
                    turn.prepared = await asyncio.to_thread(
                        driver.prepare_snapshot, snapshot.data, snapshot.meta.index
                    )
            started = time.perf_counter()
            done = driver.complete(turn, _now_ms())
            if done.applied_entries:
                self.node_metrics.apply_seconds.observe(time.perf_counter() - started)
            self._send(done.messages)
            self._deliver(done.answers)
            self._after_turn(done)
            if done.snapshot is not None:
                self._start_snapshot(done.snapshot)
        self._wakeup.set()  # More work remains: come back without waiting.

    async def _persist(self, turn: Turn) -> None:
        ready = turn.ready
        assert ready is not None
        started = time.perf_counter()
        async with self._storage_lock:
            if turn.fsync:
                with _span("synod.wal.fsync", len(ready.entries)):
                    await asyncio.to_thread(self._persist_and_flush, ready)
                self.storage.publish()  # Memory changes only on the loop's thread.
            else:
                self.storage.record(ready)  # Only the commit index moved: no fsync owed.
        self.node_metrics.wal_fsync_seconds.observe(time.perf_counter() - started)

    def _persist_and_flush(self, ready: Ready) -> None:
        self.storage.persist(ready)
        self.storage.flush()

    def _send(self, messages: list[Message]) -> None:
        if not messages:
            return
        now = time.monotonic()
        ready_to_send = []
        for message in messages:
            if message.type == MessageType.HEARTBEAT:
                self._heartbeat_sent_s.setdefault(message.to, now)
            snapshot = message.snapshot
            if snapshot is not None and not snapshot.data and not snapshot.is_empty():
                self._spawn(self._send_snapshot_from_file(message, snapshot.meta))
            else:
                ready_to_send.append(message)
        self.transport.send(ready_to_send)

    async def _send_snapshot_from_file(self, message: Message, meta: SnapshotMeta) -> None:
        """Memory keeps only a snapshot's metadata: read its bytes from the file, off
        the loop, then hand the message to the transport (which streams it)."""
        try:
            snapshot = await asyncio.to_thread(self.storage.load_snapshot_file, meta)
        except (OSError, StorageCorruption, SnapshotCorruption) as error:
            log.warning("snapshot %d for peer %d unreadable: %s", meta.index, message.to, error)
            self._driver().report_snapshot(message.to, ok=False)  # The core tries again.
            self._wakeup.set()
            return
        self.transport.send([dataclasses.replace(message, snapshot=snapshot)])

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _deliver(self, answers: list[tuple[Any, Any]]) -> None:
        for future, outcome in answers:
            if future.done():
                continue  # Timed out or cancelled on the HTTP side.
            if isinstance(outcome, BaseException):
                if isinstance(outcome, NodeError):  # dropped, timed out, no leader
                    self.node_metrics.proposals_failed.inc()
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def _after_turn(self, done: TurnDone) -> None:
        raft = self._raft()
        metrics = self.node_metrics
        if done.applied_entries:
            metrics.proposals_applied.inc(done.applied_entries)
            self.state.watches.notify()
            self.lock_waits.notify()
            self._applied_event.set()
            self._applied_event = asyncio.Event()
        if done.leader_changed:
            metrics.is_leader.set(1 if raft.role == Role.LEADER else 0)
            metrics.leader_changes.inc()
        if done.membership_changed:
            self._sync_peers(raft)
        metrics.term.set(raft.term)
        metrics.voters.set(len(raft.conf.voters))
        metrics.commit_index.set(raft.log.committed)
        metrics.applied_index.set(raft.log.applied)
        metrics.proposals_pending.set(self._driver().pending())

    def _sync_peers(self, raft: RaftNode) -> None:
        """Removed members lose their peer link (and cannot reconnect); members added
        again (ids are reused) are accepted again."""
        members = raft.conf.members()
        for node_id in list(self.transport.peers):
            if node_id not in members:
                self.transport.forget(node_id)
        for node_id in members:
            self.transport.readmit(node_id)
        log.info("membership: voters %s learners %s", sorted(raft.conf.voters),
                 sorted(raft.conf.learners))  # fmt: skip

    def _start_snapshot(self, job: SnapshotJob) -> None:
        """Begin writing the snapshot of `job` while the loop keeps turning.

        The payload must be taken before the loop applies anything more, so the
        child process is forked (or, without a child, the payload built) right here;
        everything after it runs in the background task `_finish_snapshot`."""
        driver = self._driver()
        try:
            meta = self.storage.snapshot_meta(job.index, job.conf)
            if self.limits.snapshot_in_child_process:
                writer: int | Snapshot = self._fork_snapshot_writer(meta)
            else:
                writer = Snapshot(meta, driver.snapshot_payload())
        except (OSError, Compacted) as error:
            self._snapshot_failed(job, error)
            return
        self._spawn(self._finish_snapshot(job, meta, writer))

    def _fork_snapshot_writer(self, meta: SnapshotMeta) -> int:
        """Redis's BGSAVE: a forked child sees a copy-on-write image of the state as of
        `meta.index`, serialises it and writes the snapshot file, while this process
        goes on serving. Returns the child's pid. Raises OSError."""
        driver, storage = self._driver(), self.storage
        pid = os.fork()
        if pid != 0:
            return pid
        code = 1  # The child: no logging, no imports, no event loop; only the file.
        try:
            # No collections in the child: it lives for one snapshot, and a collection
            # would touch every object and so copy the parent's pages.
            gc.disable()
            signal.set_wakeup_fd(-1)  # Signals must not reach the parent's loop.
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_DFL)
            storage.save_snapshot_file(Snapshot(meta, driver.snapshot_payload()))
            code = 0
        finally:
            os._exit(code)

    async def _finish_snapshot(
        self, job: SnapshotJob, meta: SnapshotMeta, writer: int | Snapshot
    ) -> None:
        driver, storage = self._driver(), self.storage
        started = time.perf_counter()
        try:
            if isinstance(writer, Snapshot):
                snapshot = writer
                await asyncio.to_thread(storage.save_snapshot_file, snapshot)
            else:
                _, status = await asyncio.to_thread(os.waitpid, writer, 0)
                if os.waitstatus_to_exitcode(status) != 0:
                    raise OSError(f"snapshot writer {writer} failed (wait status {status})")
                # The child wrote and fsynced the file; memory keeps the metadata only
                # (the bytes are read, and verified, when a follower needs them).
                snapshot = Snapshot(meta, b"")
            async with self._storage_lock:
                if meta.index <= storage.memory.snapshot().meta.index:
                    raise Compacted(f"a newer snapshot was installed meanwhile ({meta.index})")
                await asyncio.to_thread(storage.commit_snapshot_file, meta)
                storage.install_snapshot(snapshot)
        except (OSError, WalError, Compacted) as error:  # What save and commit may raise.
            self._snapshot_failed(job, error)
            return
        driver.snapshot_saved(job.index)
        self.node_metrics.snapshot_save_seconds.observe(time.perf_counter() - started)
        self._deliver(driver.take_answers())

    def _snapshot_failed(self, job: SnapshotJob, error: Exception) -> None:
        log.error("snapshot at %d failed: %s", job.index, error)
        driver = self._driver()
        driver.snapshot_failed(NodeError(f"snapshot at {job.index} failed: {error}"))
        self._deliver(driver.take_answers())

    async def _submit(self, submit: Callable[[asyncio.Future[Any]], None]) -> Any:
        """Hand a new future to the driver, wake the loop, and await the answer."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        submit(future)
        self._wakeup.set()
        return await self._await(future)

    # -- transport callbacks ---------------------------------------------------------
    def _peer_address(self, node_id: NodeId) -> str | None:
        member = self.addresses.get(node_id) or self.config.member(node_id)
        return member.peer_address if member else None

    @property
    def addresses(self) -> dict[NodeId, Member]:
        """The member address book (initial members, conf changes, snapshots)."""
        return self._driver().addresses

    def _on_peer_messages(self, messages: list[Message]) -> bool:
        """False when the driver's inbox is full (the messages are dropped: Raft
        retransmits, and a snapshot is then reported to its sender as failed)."""
        if self.driver is None:
            return False
        for message in messages:
            if message.type == MessageType.HEARTBEAT_RESPONSE:
                self._observe_round_trip(message.source)
        accepted = self.driver.receive(messages)
        self._wakeup.set()
        return accepted

    def _observe_round_trip(self, node_id: NodeId) -> None:
        sent = self._heartbeat_sent_s.pop(node_id, None)
        if sent is not None:
            self.node_metrics.peer_round_trip_seconds.labels(str(node_id)).observe(
                time.monotonic() - sent
            )

    def _on_unreachable(self, node_id: NodeId) -> None:
        if self.driver is not None:
            self.driver.report_unreachable(node_id)
            self._wakeup.set()

    def _on_snapshot_sent(self, node_id: NodeId, ok: bool) -> None:
        if self.driver is not None:
            self.driver.report_snapshot(node_id, ok=ok)
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

    def _not_leader_error(self) -> NodeError:
        return self._driver().not_leader_error()

    async def write(self, op: dict[str, Any], session: Session | None) -> dict[str, Any]:
        """See `NodeApi.write`."""
        if session is None:
            data = encode_command(op)
        else:
            data = encode_command(op, session.client_id, session.seq, session.ack_seq)
        driver = self._driver()
        if not tracing_enabled():
            result: dict[str, Any] = await self._submit(
                lambda future: driver.submit_write(future, data, _now_ms())
            )
            return result
        with tracer.start_as_current_span("synod.propose") as span:
            span.set_attribute("synod.op", str(op.get("kind")))
            traced: dict[str, Any] = await self._submit(
                lambda future: driver.submit_write(future, data, _now_ms())
            )
            return traced

    async def _await(self, future: asyncio.Future[Any]) -> Any:
        try:
            async with asyncio.timeout(self._timeout_s()):
                return await future  # Cancelled on timeout: resolving it later is a no-op.
        except TimeoutError:
            self.node_metrics.proposals_failed.inc()
            raise Timeout(
                f"no answer within {self.config.request_timeout_ms} ms; "
                "retry (with the same session seq for writes)"
            ) from None

    async def read(self, op: dict[str, Any], *, serializable: bool) -> dict[str, Any]:
        """See `NodeApi.read`."""
        if not serializable:
            driver = self._driver()
            await self._submit(lambda future: driver.submit_read(future, _now_ms()))
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
        """See `NodeApi.lease_keepalive`. Answered only after a ReadIndex round
        confirms this member's leadership (see `NodeDriver.submit_keepalive`)."""
        driver = self._driver()
        result: dict[str, Any] = await self._submit(
            lambda future: driver.submit_keepalive(future, lease_id, _now_ms())
        )
        return result

    async def lease_timetolive(self, lease_id: int) -> dict[str, Any]:
        """See `NodeApi.lease_timetolive`."""
        self._require_leader()
        lease_clock = self._driver().lease_clock
        if not lease_clock.is_leader:
            raise NoLeader("this member is becoming the leader; retry")
        try:
            info = self.state.lease_info(lease_id)
            remaining_ms = lease_clock.remaining_ms(lease_id, _now_ms())
        except ServiceError as error:
            return {"ok": False, "revision": self.state.kv.revision, "error": error.to_dict()}
        return {
            **info,
            "ttl_ms": remaining_ms,
            "granted_ttl_ms": info["ttl_ms"],
            "keys": info["keys"],
        }

    async def snapshot_file(self) -> bytes | None:
        """See `NodeApi.snapshot_file`: read back from its file (the in-memory copy of a
        snapshot written by a child process holds no data)."""
        meta = self.storage.memory.snapshot().meta
        if meta.index == 0:
            return None
        snapshot = await asyncio.to_thread(self.storage.load_snapshot_file, meta)
        content = encode_snapshot_file(snapshot)
        assert len(content) > len(snapshot.data) > 0
        return content

    async def lease_list(self, limit: int) -> dict[str, Any]:
        """See `NodeApi.lease_list`."""
        assert limit > 0
        self._require_leader()
        lease_clock = self._driver().lease_clock
        if not lease_clock.is_leader:
            raise NoLeader("this member is becoming the leader; retry")
        granted = self.state.lease_ttls_ms()  # bounded by leases_max
        now_ms = _now_ms()
        shown = sorted(granted)[:limit]
        leases = [{"id": lease_id, "ttl_ms": lease_clock.remaining_ms(lease_id, now_ms),
                   "granted_ttl_ms": granted[lease_id]} for lease_id in shown]  # fmt: skip
        assert len(leases) <= limit
        return {"ok": True, "revision": self.state.kv.revision, "leases": leases,
                "count": len(granted), "more": len(granted) > limit}  # fmt: skip

    def watch(
        self, key: bytes, range_end: bytes, start_revision: int
    ) -> AsyncIterator[dict[str, Any]]:
        """See `NodeApi.watch`; streams wake only on their own events (see WatchStreams)."""
        return self._watch_streams.watch(key, range_end, start_revision)

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
            "snapshot_index": self._driver().snapshot_index,
            "revision": self.state.kv.revision,
            "limits": self.state.settable_limits(),
            "members": self._member_status(raft),
            # Where this member serves etcd's gRPC API (followers forward to the leader's).
            "etcd_endpoint": self.config.advertise_etcd or None,
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
        driver = self._driver()
        deadline = time.monotonic() + self._timeout_s()
        for _ in range(1000):  # Bounded by the deadline; each turn waits for an apply.
            try:
                await self._submit(
                    lambda future: driver.submit_conf_change(future, change, _now_ms())
                )
            except RaftError as error:
                if error.code != "conf-change-pending" or time.monotonic() > deadline:
                    raise _admin_error(error) from None
                # Another change is not applied yet: wait for the next applied entry.
                next_index = self.state.applied_index + 1
                await self._submit(
                    functools.partial(driver.wait_applied, index=next_index, now_ms=_now_ms())
                )
                continue
            return {"ok": True, "members": self._member_status(self._raft())}
        raise Timeout("membership change did not start in time")

    async def admin_add_learner(
        self, node_id: int, peer_url: str, client_url: str
    ) -> dict[str, Any]:
        """See `NodeApi.admin_add_learner`."""
        raft = self._require_leader()
        known: dict[int, tuple[str | None, str | None]] = {}
        for member_id in raft.conf.members():
            member = self.addresses.get(member_id) or self.config.member(member_id)
            known[member_id] = (member.peer_address, member.client_url) if member else (None, None)
        if check_new_learner(node_id, peer_url, client_url, known):
            return {"ok": True, "members": self._member_status(raft), "changed": False,
                    "message": f"node {node_id} is already a member at {peer_url}"}  # fmt: skip
        context = msgpack.packb({"peer": peer_url, "client": client_url}, use_bin_type=True)
        assert isinstance(context, bytes)
        self.addresses[node_id] = Member(node_id, peer_url, client_url)
        change = ConfChange(ConfChangeKind.ADD_LEARNER, node_id, context)
        return {**await self._change_membership(change), "changed": True}

    async def admin_promote(self, node_id: int) -> dict[str, Any]:
        """See `NodeApi.admin_promote`."""
        raft = self._require_leader()
        if node_id in raft.conf.voters:
            return {"ok": True, "members": self._member_status(raft), "changed": False,
                    "message": f"node {node_id} is already a voter"}  # fmt: skip
        progress = raft.progress.get(node_id)
        if progress is None or node_id not in raft.conf.learners:
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
            return {"ok": True, "members": self._member_status(raft), "changed": False,
                    "message": f"node {node_id} is not a member"}  # fmt: skip
        if raft.conf.voters == {node_id}:
            # Checked before any leadership move: nothing could take over.
            raise ChangeInvalid(f"node {node_id} is the last voter; it cannot be removed",
                                member_id=node_id)  # fmt: skip
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
            raise TransferInvalid("no other voter to hand leadership to")
        if target not in raft.conf.voters:
            raise TransferInvalid(f"node {target} is not a voter", to=target)
        if target == self.member_id:
            return {"ok": True, "leader_id": self.member_id, "changed": False,
                    "message": f"node {target} already leads"}  # fmt: skip
        self._driver().transfer_leadership(target)
        self._wakeup.set()
        deadline = time.monotonic() + 2 * self.config.election_timeout_ms / 1000
        while time.monotonic() < deadline and self._raft().role == Role.LEADER:
            await self._applied_or_tick()
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
        """See `NodeApi.admin_snapshot`: leader-only like every admin call, so a
        follower's HTTP layer forwards it (docs/api.md)."""
        self._require_leader()
        driver = self._driver()
        result: dict[str, Any] = await self._submit(driver.request_snapshot)
        return result

    async def _applied_or_tick(self) -> None:
        """Wait for the next applied entry, or one tick at most."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._applied_event.wait(), self.config.tick_ms / 1000)


def _admin_error(error: RaftError) -> NodeError:
    """The node error of a refused membership change (all definite: nothing was
    proposed)."""
    if isinstance(error, ConfChangePending):
        return ChangePending(f"{error}; retry once it has been applied")
    if isinstance(error, ConfChangeInvalid):
        return ChangeInvalid(str(error))
    return NoLeader(str(error))


def _span(name: str, entries: int) -> contextlib.AbstractContextManager[Any]:
    """A span around loop work, or nothing at all when tracing is off (the common case)."""
    if not tracing_enabled():
        return contextlib.nullcontext()
    span = tracer.start_as_current_span(name, attributes={"synod.entries": entries})
    return span


def _now_ms() -> int:
    return int(time.monotonic() * 1000)
