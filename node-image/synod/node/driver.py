"""The node driver: the sans-I/O layer between the Raft core and a process.

`RaftNode` says what must happen (`Ready`); the driver decides how a member
does it and keeps the member's promises to clients: which messages may leave
before the fsync, which committed entries may be applied before it, which
waiter each outcome answers, which ReadIndex context a read rides on, when a
keep-alive may be answered, when a snapshot is due, and when a membership
change really took effect. It imports no asyncio, socket or clock: time enters
as `now_ms`, work leaves as `Turn` / `TurnDone` values. `synod.node.server`
(asyncio, real files, TCP) and `synod.sim.node` (simulated disk and network)
drive this same class, so what the simulator proves is what runs.

The protocol of a shell, once per wake-up:

    driver.tick(now_ms)                  # for every elapsed tick
    for _ in range(rounds_max):
        turn = driver.begin(now_ms)      # None: nothing to do
        if turn is None: break
        send(turn.messages); answer(turn.answers)
        if turn.persist: write turn.ready; if turn.fsync: fsync   (may take a while:
                                          # meanwhile receive()/submit_*() only queue)
        done = driver.complete(turn, now_ms)
        send(done.messages); answer(done.answers)
        if done.snapshot: write it, then driver.snapshot_saved(done.snapshot.index)

Answers are `(token, outcome)` pairs: `token` is whatever the shell passed in
(a future, a request object), `outcome` a result dict or a `NodeError`.
"""

from __future__ import annotations

import contextlib
import enum
import struct
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from synod.node.api import NodeError, NoLeader, NotLeader, OutcomeUnknown, Overloaded, Timeout
from synod.node.members import Member
from synod.raft.core import RaftNode
from synod.raft.types import (
    ConfChange,
    ConfChangeKind,
    ConfState,
    Entry,
    EntryKind,
    Message,
    NodeId,
    ProposalDropped,
    Ready,
    Role,
)
from synod.services.commands import encode_command, lease_expire_op
from synod.services.errors import ServiceError
from synod.services.leases import LeaseClock
from synod.services.locks import lock_timer_fire_op
from synod.services.state import RestoredState, ServiceStateMachine

SNAPSHOT_FORMAT = 1


class _Local(enum.Enum):
    """Events the shell reports about a peer, stepped into the core at the next turn."""

    UNREACHABLE = "unreachable"
    SNAPSHOT_SENT = "snapshot-sent"
    SNAPSHOT_FAILED = "snapshot-failed"
    TRANSFER = "transfer"  # Hand leadership to this peer.


_CONTEXT = struct.Struct(">QQQ")  # member id, boot nonce, counter: unique across restarts

Token = Hashable
Outcome = dict[str, Any] | NodeError
Answer = tuple[Token, Outcome]


@dataclass(frozen=True, slots=True)
class DriverLimits:
    """Every bound of the driver, by name."""

    pending_requests_max: int = 20_000  # Writes, reads, keep-alives and admin waits.
    proposals_per_batch_max: int = 4096  # Commands in one append.
    inbox_messages_max: int = 20_000  # Peer messages queued between turns.
    request_timeout_ms: int = 5_000  # A waiter not answered by then gets Timeout.
    snapshot_entries: int = 100_000  # Applied entries between automatic snapshots.
    snapshot_retry_entries: int = 1_000  # After a failed snapshot, wait this many entries.

    def validate(self) -> None:
        """Raises ValueError naming the offending bound."""
        for name in DriverLimits.__dataclass_fields__:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")


@dataclass(slots=True)
class Turn:
    """One Ready, taken by `begin()`. Persist it (if `persist`), then `complete()` it."""

    ready: Ready | None  # None: a turn that only carries answers or a forced snapshot.
    persist: bool  # Entries, hard state or a snapshot to write.
    fsync: bool  # ...and they must be durable before `complete()` (Ready.must_sync).
    messages: list[Message]  # Send now: they do not depend on this turn's writes.
    answers: list[Answer]
    early_apply: bool = False
    applied_entries: int = 0
    # The Ready's snapshot decoded by the shell (`prepare_snapshot`, in a worker
    # thread); without it `complete()` decodes on the caller's thread.
    prepared: PreparedSnapshot | None = None


@dataclass(frozen=True, slots=True)
class PreparedSnapshot:
    """Snapshot data decoded into new objects, ready for `complete()` to adopt."""

    index: int
    members: tuple[Member, ...]
    services: RestoredState


@dataclass(slots=True)
class SnapshotJob:
    """A snapshot the shell should write now: `snapshot_payload()` as of `index` (the
    state is at exactly `index` until the shell's next `begin()`), with membership
    `conf`. Then `snapshot_saved` or `snapshot_failed`."""

    index: int
    conf: ConfState
    forced: bool = False


@dataclass(slots=True)
class TurnDone:
    """What `complete()` leaves for the shell."""

    messages: list[Message]
    answers: list[Answer]
    snapshot: SnapshotJob | None = None
    applied_entries: int = 0
    leader_changed: bool = False
    membership_changed: bool = False  # Conf changes applied or a snapshot restored.


@dataclass(slots=True)
class _ReadBatch:
    """Reads and keep-alives waiting for one ReadIndex round."""

    term: int
    deadline_ms: int
    reads: list[Token] = field(default_factory=list)
    keepalives: list[tuple[Token, int]] = field(default_factory=list)


@dataclass(slots=True)
class _EntryWaiter:
    token: Token
    term: int
    deadline_ms: int
    conf_change: bytes = b""  # The encoded change, for admin waiters.


class NodeDriver:
    """Drives one member's `RaftNode`, service state machine and lease clock."""

    def __init__(
        self,
        raft: RaftNode,
        state: ServiceStateMachine,
        *,
        boot_nonce: int,
        limits: DriverLimits | None = None,
        addresses: Iterable[Member] = (),
        snapshot_index: int = 0,
    ) -> None:
        self.limits = limits or DriverLimits()
        self.limits.validate()
        assert 0 <= boot_nonce < 1 << 64
        self.raft = raft
        self.member_id: NodeId = raft.id
        self.state = state
        self.lease_clock = LeaseClock()
        # Wait bounds and lock-delays of the locks service, decided here on the leader
        # and proposed as lock_timer_fire commands (the same clock class as leases).
        self.lock_clock = LeaseClock()
        self._lock_revision_seen = -1
        self.addresses: dict[NodeId, Member] = {m.node_id: m for m in addresses}
        self.snapshot_index = snapshot_index
        self._boot_nonce = boot_nonce
        self._context_counter = 0
        self._inbox: list[Message] = []
        self._reports: list[tuple[NodeId, _Local]] = []
        self._queued_writes: list[tuple[Token, bytes, int]] = []
        self._queued_batch: _ReadBatch | None = None
        self._read_batches: dict[bytes, _ReadBatch] = {}
        self._entry_waiters: dict[int, _EntryWaiter] = {}
        self._applied_waiters: list[tuple[int, Token, int]] = []
        self._settled: list[Answer] = []
        self._turn: Turn | None = None
        self._turn_prepared: PreparedSnapshot | None = None
        self._forced_snapshot: list[Token] = []
        self._snapshot_in_flight = False
        self._snapshot_waiters: list[Token] = []
        self._snapshot_retry_at = 0  # No automatic snapshot before this applied index.
        self._durable_vote = (raft.term, raft.vote)  # (term, vote) known to be on disk
        self._term_seen = raft.term
        self._conf_seen = raft.conf
        self._was_leader = False
        self.dropped_messages = 0

    # =========================================================================
    # Inputs: any time, also while a turn is being persisted
    # =========================================================================
    def tick(self, now_ms: int) -> None:
        """One Raft tick, lease expiry on the leader, and request deadlines."""
        assert self._turn is None, "tick between turns"
        self.raft.tick()
        if self.raft.role == Role.LEADER and self.lease_clock.is_leader:
            expired = self.lease_clock.expired(now_ms)
            if expired:
                with contextlib.suppress(ProposalDropped):  # Offered again after a retry.
                    self.raft.propose(encode_command(lease_expire_op(expired)))
        if self.raft.role == Role.LEADER and self.lock_clock.is_leader:
            due = self.lock_clock.expired(now_ms)
            if due:
                with contextlib.suppress(ProposalDropped):  # Offered again after a retry.
                    self.raft.propose(encode_command(lock_timer_fire_op(due)))
        self._expire_waiters(now_ms)

    def receive(self, messages: list[Message]) -> bool:
        """Queue peer messages for the next turn. Returns False when they were dropped
        (past `inbox_messages_max`: Raft retransmits what matters, memory stays bounded)."""
        if len(self._inbox) + len(messages) > self.limits.inbox_messages_max:
            self.dropped_messages += len(messages)
            return False
        self._inbox.extend(messages)
        assert len(self._inbox) <= self.limits.inbox_messages_max
        return True

    def report_unreachable(self, node_id: NodeId) -> None:
        """The transport could not reach `node_id` (stepped on the next turn)."""
        self._reports.append((node_id, _Local.UNREACHABLE))

    def report_snapshot(self, node_id: NodeId, *, ok: bool) -> None:
        """The transport delivered a snapshot to `node_id`, or gave up on it. Without a
        report the leader would wait on that follower forever."""
        self._reports.append((node_id, _Local.SNAPSHOT_SENT if ok else _Local.SNAPSHOT_FAILED))

    def transfer_leadership(self, node_id: NodeId) -> None:
        """Hand leadership to `node_id` (stepped on the next turn; ignored by the core
        when impossible). Callers watch `raft.role` / `raft.leader` for the result."""
        self._reports.append((node_id, _Local.TRANSFER))

    def submit_write(self, token: Token, data: bytes, now_ms: int) -> None:
        """Queue an encoded command. Raises NotLeader / NoLeader (nothing was
        proposed) and Overloaded."""
        self._require_leader()
        self._check_pending()
        self._queued_writes.append((token, data, now_ms + self.limits.request_timeout_ms))

    def submit_read(self, token: Token, now_ms: int) -> None:
        """Queue a linearizable read: answered `{"ok": True, "applied_index": i}` once
        this member has applied a read index confirmed by a quorum (then read the
        state). Raises Overloaded."""
        self._check_pending()
        self._batch(now_ms).reads.append(token)

    def submit_keepalive(self, token: Token, lease_id: int, now_ms: int) -> None:
        """Queue a lease keep-alive. It is answered only after a ReadIndex round
        confirms this member still leads in the same term (etcd's ensureLeadership):
        an isolated or stalled old leader cannot renew. Raises NotLeader / NoLeader
        (also while a new leader has not yet started its lease clock) and Overloaded."""
        self._require_leader()
        if not self.lease_clock.is_leader:
            raise NoLeader("this member is becoming the leader; retry")
        self._check_pending()
        self._batch(now_ms).keepalives.append((token, lease_id))

    def submit_conf_change(self, token: Token, change: ConfChange, now_ms: int) -> None:
        """Propose a membership change; answered once it is applied in the term it
        was proposed in (then it is in `raft.conf`). Raises NotLeader / NoLeader,
        Overloaded, and RaftError (conf-change-pending, conf-change-invalid)."""
        raft = self._require_leader()
        self._check_pending()
        try:
            raft.change_membership(change)
        except ProposalDropped as error:
            raise NoLeader(str(error)) from None
        index = raft.log.last_index()
        waiter = _EntryWaiter(token, raft.term, now_ms + self.limits.request_timeout_ms)
        waiter.conf_change = change.encode()
        self._entry_waiters[index] = waiter

    def wait_applied(self, token: Token, index: int, now_ms: int) -> None:
        """Answer `{"ok": True, "applied_index": ...}` once `index` is applied here."""
        if self.state.applied_index >= index and self._turn is None:
            self._settled.append((token, {"ok": True, "applied_index": self.state.applied_index}))
            return
        self._applied_waiters.append((index, token, now_ms + self.limits.request_timeout_ms))

    def request_snapshot(self, token: Token) -> None:
        """Take a snapshot at the end of the next turn; answered with its index."""
        assert len(self._forced_snapshot) < self.limits.pending_requests_max
        self._forced_snapshot.append(token)

    def take_answers(self) -> list[Answer]:
        """Answers produced outside a turn (by `wait_applied` and deadlines)."""
        settled, self._settled = self._settled, []
        return settled

    def fail_all(self, error: NodeError) -> list[Answer]:
        """Stop: every waiter gets `error`, except requests already proposed: they
        may still commit, so theirs is OutcomeUnknown."""
        unknown = OutcomeUnknown(f"{error}; the request was proposed and may still apply")
        proposed: list[Answer] = [(w.token, unknown) for w in self._entry_waiters.values()]
        tokens: list[Token] = [token for token, _, _ in self._queued_writes]
        tokens += [token for _, token, _ in self._applied_waiters]
        for batch in [*self._read_batches.values(), self._queued_batch]:
            if batch is not None:
                tokens += batch.reads + [token for token, _ in batch.keepalives]
        tokens += self._forced_snapshot + self._snapshot_waiters
        answers: list[Answer] = [*self._settled, *proposed, *((token, error) for token in tokens)]
        self._queued_writes, self._entry_waiters, self._applied_waiters = [], {}, []
        self._read_batches, self._queued_batch = {}, None
        self._forced_snapshot, self._snapshot_waiters, self._settled = [], [], []
        return answers

    # =========================================================================
    # The turn
    # =========================================================================
    def begin(self, now_ms: int) -> Turn | None:
        """Step queued messages, propose queued writes, ask for queued reads, and
        take the next Ready. None when there is nothing to do."""
        assert self._turn is None, "complete() the previous turn first"
        raft = self.raft
        inbox, self._inbox = self._inbox, []
        for message in inbox:
            raft.step(message)
        reports, self._reports = self._reports, []
        for node_id, event in reports:  # Bounded: one per sent message or admin call.
            if event is _Local.UNREACHABLE:
                raft.report_unreachable(node_id)
            elif event is _Local.TRANSFER:
                raft.transfer_leadership(node_id)
            else:
                raft.report_snapshot(node_id, failed=event is _Local.SNAPSHOT_FAILED)
        answers = self.take_answers()
        self._propose_writes(answers)
        self._request_read_index(answers)
        if not raft.has_ready():
            if not answers and not self._forced_snapshot:
                return None
            self._turn = Turn(None, False, False, [], answers)
            return self._turn
        ready = raft.ready()
        turn = Turn(
            ready,
            persist=bool(ready.entries or ready.hard_state or not ready.snapshot.is_empty()),
            fsync=ready.must_sync(),
            messages=ready.messages if self._may_send_before_persist(ready) else [],
            answers=answers,
        )
        # Committed entries already on our disk need not wait for this Ready's fsync
        # (as in etcd): their clients get answers one fsync sooner.
        turn.early_apply = ready.snapshot.is_empty() and (
            not ready.committed_entries
            or ready.committed_entries[-1].index < raft.log.unstable.offset
        )
        if turn.early_apply:
            turn.applied_entries = self._apply(ready, now_ms)
        self._turn = turn
        return turn

    def complete(self, turn: Turn, now_ms: int) -> TurnDone:
        """The turn's writes are durable (if it had any): send, apply, advance."""
        assert turn is self._turn, "complete() the turn begin() returned"
        self._turn = None
        ready = turn.ready
        done = TurnDone([], [])
        self._turn_prepared = turn.prepared
        if ready is not None:
            if turn.fsync and ready.hard_state is not None:
                self._durable_vote = (ready.hard_state.term, ready.hard_state.vote)
            if turn.messages is not ready.messages:
                done.messages = ready.messages
            done.applied_entries = turn.applied_entries
            if not turn.early_apply:
                done.applied_entries = self._apply(ready, now_ms)
            self.raft.advance(ready)
            # Only now: answers must see the membership of what they waited for.
            self._answer_reads(ready, now_ms)
            self._release_applied_waiters()
        done.leader_changed = self._after_advance(now_ms)
        done.membership_changed = self.raft.conf != self._conf_seen
        self._conf_seen = self.raft.conf
        done.answers = self.take_answers()
        done.snapshot = self._snapshot_job()
        assert self._turn is None
        return done

    def snapshot_saved(self, index: int) -> None:
        """The shell wrote (and installed) the snapshot of `SnapshotJob.index`; forced
        snapshots are answered (collect with `take_answers`)."""
        assert self._snapshot_in_flight
        self._snapshot_in_flight = False
        self.snapshot_index = max(self.snapshot_index, index)
        waiters, self._snapshot_waiters = self._snapshot_waiters, []
        outcome = {"ok": True, "snapshot_index": self.snapshot_index}
        self._settled.extend((token, outcome) for token in waiters)

    def snapshot_failed(self, error: NodeError) -> None:
        """Writing the snapshot failed; the next due one is tried again, forced ones
        are answered with `error` (collect with `take_answers`)."""
        assert self._snapshot_in_flight
        self._snapshot_in_flight = False
        # Not at once again: a failing disk or fork would otherwise be retried every turn.
        self._snapshot_retry_at = self.raft.log.applied + self.limits.snapshot_retry_entries
        waiters, self._snapshot_waiters = self._snapshot_waiters, []
        self._settled.extend((token, error) for token in waiters)

    # =========================================================================
    # Helpers of the turn
    # =========================================================================
    def _propose_writes(self, answers: list[Answer]) -> None:
        if not self._queued_writes:
            return
        raft = self.raft
        batch = self._queued_writes[: self.limits.proposals_per_batch_max]
        del self._queued_writes[: len(batch)]
        if raft.role != Role.LEADER:
            answers.extend((token, self.not_leader_error()) for token, _, _ in batch)
            return
        first_index = raft.log.last_index() + 1
        try:
            raft.propose_batch([data for _, data, _ in batch])
        except ProposalDropped as error:
            answers.extend((token, NoLeader(str(error))) for token, _, _ in batch)
            return
        for offset, (token, _, deadline_ms) in enumerate(batch):
            self._entry_waiters[first_index + offset] = _EntryWaiter(token, raft.term, deadline_ms)
        assert raft.log.last_index() == first_index + len(batch) - 1

    def _request_read_index(self, answers: list[Answer]) -> None:
        batch, self._queued_batch = self._queued_batch, None
        if batch is None:
            return
        context = self._read_context()
        batch.term = self.raft.term
        try:
            self.raft.read_index(context)
        except ProposalDropped as error:
            for token in batch.reads + [token for token, _ in batch.keepalives]:
                answers.append((token, NoLeader(str(error))))
            return
        self._read_batches[context] = batch

    def _read_context(self) -> bytes:
        """Unique across members (member id) and restarts (boot nonce): the leader
        drops a duplicate context, and a restarted member must never be answered
        for a request of its previous life."""
        self._context_counter += 1
        return _CONTEXT.pack(self.member_id, self._boot_nonce, self._context_counter)

    def _may_send_before_persist(self, ready: Ready) -> bool:
        """A leader may send appends before its own fsync (Raft thesis §10.2.1): nothing
        it sends depends on its unsynced entries, and their acknowledgements are only
        stepped after the fsync, so its own copy counts toward a commit only once
        durable. Anything carrying a new term or vote must wait."""
        if self.raft.role != Role.LEADER or not ready.snapshot.is_empty():
            return False
        hard_state = ready.hard_state
        return hard_state is None or (hard_state.term, hard_state.vote) == self._durable_vote

    def _apply(self, ready: Ready, now_ms: int) -> int:
        if not ready.snapshot.is_empty():
            prepared = self._turn_prepared
            if prepared is None or prepared.index != ready.snapshot.meta.index:
                prepared = self.prepare_snapshot(ready.snapshot.data, ready.snapshot.meta.index)
            self._adopt(prepared)
            self.snapshot_index = ready.snapshot.meta.index
            self._fail_entry_waiters_up_to(ready.snapshot.meta.index)
        applied = 0
        for entry in ready.committed_entries:
            if entry.index > self.state.applied_index:  # Else covered by the snapshot.
                self._apply_entry(entry, now_ms)
                applied += 1
        return applied

    def _apply_entry(self, entry: Entry, now_ms: int) -> None:
        if entry.kind == EntryKind.CONF_CHANGE:
            self.state.apply(entry.index, b"")
            self._note_conf_change(ConfChange.decode(entry.data))
            result: dict[str, Any] = {"ok": True, "revision": self.state.kv.revision}
        else:
            result = self.state.apply(entry.index, entry.data)
            self._track_leases(result, now_ms)
            self._track_lock_timers(now_ms)
        waiter = self._entry_waiters.pop(entry.index, None)
        if waiter is None:
            return
        if waiter.term != entry.term:
            # Another leader's entry took our index: ours can never commit.
            error = NoLeader("leadership changed before the request committed; retry")
            self._settled.append((waiter.token, error))
        elif waiter.conf_change and entry.data != waiter.conf_change:
            error = NoLeader("the membership change was dropped by the leader; retry")
            self._settled.append((waiter.token, error))
        else:
            self._settled.append((waiter.token, result))

    def _track_leases(self, result: dict[str, Any], now_ms: int) -> None:
        if not self.lease_clock.is_leader or not result.get("ok"):
            return
        if "ttl_ms" in result and "id" in result:  # lease_grant
            self.lease_clock.on_granted(int(result["id"]), int(result["ttl_ms"]), now_ms)
        elif "keys_deleted" in result or "expired" in result:
            self.lease_clock.sync(self.state.lease_ttls_ms(), now_ms)

    def _track_lock_timers(self, now_ms: int) -> None:
        """On the leader, start the timers of new waiters and lock-delays (full duration
        from now) and forget settled ones, whenever the locks state changed."""
        revision = self.state.locks.revision
        if revision == self._lock_revision_seen:
            return
        self._lock_revision_seen = revision
        if self.lock_clock.is_leader:
            self.lock_clock.sync(self.state.lock_timers_ms(), now_ms)

    def _note_conf_change(self, change: ConfChange) -> None:
        if change.kind == ConfChangeKind.ADD_LEARNER and change.context:
            info = msgpack.unpackb(change.context, raw=False)
            self.addresses[change.node_id] = Member(
                change.node_id, str(info["peer"]), str(info["client"])
            )
        elif change.kind == ConfChangeKind.REMOVE:
            self.addresses.pop(change.node_id, None)

    def _answer_reads(self, ready: Ready, now_ms: int) -> None:
        for read_state in ready.read_states:
            batch = self._read_batches.pop(read_state.context, None)
            if batch is None:
                continue  # Timed out, dropped at a term change, or not ours.
            for token in batch.reads:
                self._applied_waiters.append((read_state.index, token, batch.deadline_ms))
            for token, lease_id in batch.keepalives:
                self._settled.append((token, self._keepalive(batch, lease_id, now_ms)))

    def _keepalive(self, batch: _ReadBatch, lease_id: int, now_ms: int) -> Outcome:
        raft = self.raft
        if raft.role != Role.LEADER or raft.term != batch.term or not self.lease_clock.is_leader:
            return self.not_leader_error()
        try:
            ttl_ms = self.lease_clock.keepalive(lease_id, now_ms)
        except ServiceError as error:
            return {"ok": False, "revision": self.state.kv.revision, "error": error.to_dict()}
        return {"ok": True, "revision": self.state.kv.revision, "id": lease_id, "ttl_ms": ttl_ms}

    def _release_applied_waiters(self) -> None:
        if not self._applied_waiters:
            return
        applied = self.state.applied_index
        still = []
        for index, token, deadline_ms in self._applied_waiters:
            if index <= applied:
                self._settled.append((token, {"ok": True, "applied_index": applied}))
            else:
                still.append((index, token, deadline_ms))
        self._applied_waiters = still

    def _after_advance(self, now_ms: int) -> bool:
        raft = self.raft
        is_leader = raft.role == Role.LEADER
        if raft.term != self._term_seen:
            self._term_seen = raft.term
            self._drop_read_batches("the term changed before the read was confirmed; retry")
        changed = is_leader != self._was_leader
        if is_leader and not self._was_leader:
            self.lease_clock.on_become_leader(now_ms, self.state.lease_ttls_ms())
            # Every pending wait and lock-delay restarts with its full duration: a
            # leader change makes a wait longer, never shorter.
            self.lock_clock.on_become_leader(now_ms, self.state.lock_timers_ms())
        elif not is_leader and self._was_leader:
            self.lease_clock.on_become_follower()
            self.lock_clock.on_become_follower()
        self._was_leader = is_leader
        assert self.lease_clock.is_leader == is_leader
        return changed

    def _drop_read_batches(self, reason: str) -> None:
        batches = list(self._read_batches.values())
        self._read_batches.clear()
        for batch in batches:
            for token in batch.reads + [token for token, _ in batch.keepalives]:
                self._settled.append((token, NoLeader(reason)))

    def _fail_entry_waiters_up_to(self, index: int) -> None:
        """A snapshot replaced our log up to `index`: whether those entries committed
        is unknown here, so the answer is indeterminate (retry through the session)."""
        for entry_index in [i for i in self._entry_waiters if i <= index]:
            waiter = self._entry_waiters.pop(entry_index)
            error = OutcomeUnknown("entry replaced by a snapshot; retry with the same session seq")
            self._settled.append((waiter.token, error))

    def _expire_waiters(self, now_ms: int) -> None:
        """Deadlines nearly follow insertion order (an admin change proposed at once can
        precede writes queued slightly earlier), so expiry pops from the front: a
        waiter is answered late by at most that difference, never lost."""
        timeout = self.limits.request_timeout_ms
        for index in list(self._entry_waiters):  # Bounded by pending_requests_max.
            waiter = self._entry_waiters[index]
            if waiter.deadline_ms > now_ms:
                break
            del self._entry_waiters[index]
            self._settled.append(
                (waiter.token, Timeout(f"no answer within {timeout} ms; retry (same session)"))
            )
        for context in list(self._read_batches):
            batch = self._read_batches[context]
            if batch.deadline_ms > now_ms:
                break
            del self._read_batches[context]  # A late ReadState for it is ignored.
            for token in batch.reads + [token for token, _ in batch.keepalives]:
                self._settled.append((token, Timeout(f"read not confirmed within {timeout} ms")))
        if self._applied_waiters and self._applied_waiters[0][2] <= now_ms:
            still = []
            for index, token, deadline_ms in self._applied_waiters:
                if deadline_ms <= now_ms:
                    self._settled.append((token, Timeout(f"not applied within {timeout} ms")))
                else:
                    still.append((index, token, deadline_ms))
            self._applied_waiters = still

    # =========================================================================
    # Snapshots
    # =========================================================================
    def _snapshot_job(self) -> SnapshotJob | None:
        raft = self.raft
        applied = raft.log.applied
        forced = bool(self._forced_snapshot)
        if self._snapshot_in_flight:
            return None
        if raft.conf_applied_index() > applied or self.state.applied_index != applied:
            return None  # The membership must be the one of `applied` (after a restart).
        if forced:
            tokens, self._forced_snapshot = self._forced_snapshot, []
            if applied <= self.snapshot_index:
                self._settled.extend(
                    (token, {"ok": True, "snapshot_index": self.snapshot_index}) for token in tokens
                )
                return None
            self._snapshot_waiters = tokens  # Answered once the shell has written it.
        elif (
            applied - self.snapshot_index < self.limits.snapshot_entries
            or applied < self._snapshot_retry_at
        ):
            return None
        self._snapshot_in_flight = True
        assert self.state.applied_index == applied
        return SnapshotJob(applied, raft.conf, forced)

    def snapshot_payload(self) -> bytes:
        """The snapshot data: services and the member address book."""
        return encode_snapshot_payload(self.addresses.values(), self.state)

    def restore(self, data: bytes) -> None:
        """Adopt snapshot data (at start). Raises ValueError, InvalidArgument."""
        if data:
            self._adopt(self.prepare_snapshot(data, 0))

    def prepare_snapshot(self, data: bytes, index: int) -> PreparedSnapshot:
        """Decode snapshot data into new objects without changing this member: a
        worker thread may run it for a Turn whose Ready installs a snapshot (set
        `turn.prepared`), so that the event loop does not decode 100,000 keys.
        Raises ValueError, InvalidArgument."""
        payload = msgpack.unpackb(data, raw=False)
        if not isinstance(payload, dict) or payload.get("format") != SNAPSHOT_FORMAT:
            found = payload.get("format") if isinstance(payload, dict) else None
            raise ValueError(f"unknown snapshot format {found!r}")
        members = tuple(
            Member(int(node_id), peer, client)
            for node_id, (peer, client) in payload["members"].items()
        )
        return PreparedSnapshot(index, members, self.state.decode(payload["services"]))

    def _adopt(self, prepared: PreparedSnapshot) -> None:
        for member in prepared.members:
            self.addresses[member.node_id] = member
        self.state.adopt(prepared.services)

    # =========================================================================
    # Small helpers
    # =========================================================================
    def not_leader_error(self) -> NodeError:
        """NotLeader naming the leader, or NoLeader when none is known."""
        leader = self.raft.leader
        if leader == 0:
            return NoLeader("no leader is known (election in progress or no quorum)")
        member = self.addresses.get(leader)
        return NotLeader(leader, member.client_url if member else None)

    def _require_leader(self) -> RaftNode:
        if self.raft.role != Role.LEADER:
            raise self.not_leader_error()
        return self.raft

    def pending(self) -> int:
        """Requests waiting on this member (the `pending_requests_max` bound)."""
        batches = [*self._read_batches.values(), self._queued_batch]
        reads = sum(len(b.reads) + len(b.keepalives) for b in batches if b is not None)
        return (
            len(self._queued_writes) + len(self._entry_waiters) + len(self._applied_waiters) + reads
        )

    def _check_pending(self) -> None:
        pending = self.pending()
        if pending >= self.limits.pending_requests_max:
            raise Overloaded(f"{pending} requests pending (pending_requests_max)")

    def _batch(self, now_ms: int) -> _ReadBatch:
        if self._queued_batch is None:
            deadline_ms = now_ms + self.limits.request_timeout_ms
            self._queued_batch = _ReadBatch(self.raft.term, deadline_ms)
        return self._queued_batch


def encode_snapshot_payload(members: Iterable[Member], state: ServiceStateMachine) -> bytes:
    """What a snapshot's data holds (`NodeDriver.restore` reads it back)."""
    book = {
        str(member.node_id): [member.peer_address, member.client_url]
        for member in sorted(members, key=lambda member: member.node_id)
    }
    payload = {"format": SNAPSHOT_FORMAT, "members": book, "services": state.snapshot()}
    data = msgpack.packb(payload, use_bin_type=True)
    assert isinstance(data, bytes) and data
    return data
