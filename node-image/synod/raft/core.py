"""The Raft state machine: events in, decisions out (sans-I/O).

`RaftNode` never touches a clock, a socket or a disk. The shell calls `tick()`
at a fixed rate, feeds received messages to `step()`, and submits work with
`propose()`, `read_index()`, `transfer_leadership()` and `change_membership()`.
Then it asks `ready()` for what to persist, send and apply, does it in the
order `Ready` documents, and calls `advance()`.

Section numbers in comments refer to the Raft paper (Ongaro & Ousterhout,
2014) and, for §4/§6/§9, to Ongaro's dissertation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from synod.raft import quorum
from synod.raft.log import RaftLog
from synod.raft.progress import Progress, ProgressState
from synod.raft.storage import LogStorage
from synod.raft.types import (
    NONE,
    Compacted,
    ConfChange,
    ConfChangeInvalid,
    ConfChangeKind,
    ConfChangePending,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    NodeId,
    ProposalDropped,
    ReadState,
    Ready,
    Role,
    SnapshotTemporarilyUnavailable,
    SoftState,
)

CAMPAIGN_TRANSFER = b"transfer"  # Vote context: a leadership transfer, bypasses leases.


@dataclass(frozen=True, slots=True)
class Config:
    """Tuning of one node. Every bound is named here."""

    node_id: NodeId
    election_timeout_ticks: int = 10
    heartbeat_interval_ticks: int = 1
    append_batch_bytes_max: int = 1 << 20  # Bytes of entries in one APPEND message.
    committed_batch_bytes_max: int = 4 << 20  # Bytes of committed entries in one Ready.
    inflight_messages_max: int = 256  # Unacknowledged APPENDs per follower (pipelining).
    uncommitted_bytes_max: int = 64 << 20  # Leader's proposed-but-uncommitted payload.
    proposal_entries_max: int = 16_384  # Entries in one proposal batch.
    read_index_pending_max: int = 4096  # Queued ReadIndex requests on a leader.
    check_quorum: bool = True
    pre_vote: bool = True
    proposal_forwarding: bool = True
    applied_index: int = 0  # Restart: the state machine already includes these.
    seed: int = 0  # Randomised election timeout; deterministic for the simulator.

    def validate(self) -> None:
        """Raises ValueError with the offending setting."""
        if self.node_id == NONE or self.node_id < 0:
            raise ValueError("node_id must be a positive integer")
        if self.heartbeat_interval_ticks <= 0:
            raise ValueError("heartbeat_interval_ticks must be > 0")
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks:
            raise ValueError("election_timeout_ticks must exceed heartbeat_interval_ticks")
        for name in ("append_batch_bytes_max", "committed_batch_bytes_max"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.inflight_messages_max <= 0 or self.read_index_pending_max <= 0:
            raise ValueError("inflight_messages_max and read_index_pending_max must be > 0")


@dataclass(slots=True)
class _ReadIndexStatus:
    """A ReadIndex request waiting for a quorum to confirm leadership (§6.4)."""

    index: int
    requester: NodeId
    acks: set[NodeId] = field(default_factory=set)


class RaftNode:
    """One Raft participant. See the module docstring for the driving protocol."""

    def __init__(self, config: Config, storage: LogStorage) -> None:
        config.validate()
        self.config = config
        self.id = config.node_id
        self.log = RaftLog(storage, config.committed_batch_bytes_max)
        self._random = random.Random(config.seed * 1_000_003 + config.node_id)
        hard_state, conf = storage.initial_state()
        self.term = hard_state.term
        self.vote = hard_state.vote
        self.conf = conf
        self.role = Role.FOLLOWER
        self.leader: NodeId = NONE
        self.progress: dict[NodeId, Progress] = {}
        self.votes: dict[NodeId, bool] = {}
        self.messages: list[Message] = []
        self.read_states: list[ReadState] = []
        self.dropped_proposals: list[bytes] = []
        self.election_elapsed_ticks = 0
        self.heartbeat_elapsed_ticks = 0
        self.randomized_election_timeout_ticks = config.election_timeout_ticks
        self.lead_transferee: NodeId = NONE
        self.pending_conf_index = 0
        self._heartbeat_round = 0  # Periodic heartbeats sent as leader (probe pacing).
        self.uncommitted_bytes = 0
        self._read_index_queue: dict[bytes, _ReadIndexStatus] = {}
        self._read_index_waiting: list[Message] = []  # Until a commit in our term.
        self._conf_applied_index = storage.snapshot().meta.index
        if hard_state.commit:
            self.log.commit_to(hard_state.commit)
        if config.applied_index:
            self.log.applied_to(config.applied_index)
        self._replay_conf_changes()
        self._prev_hard_state = HardState(self.term, self.vote, self.log.committed)
        self._prev_soft_state = SoftState(NONE, Role.FOLLOWER)
        self._ready_outstanding = False
        self._become_follower(self.term, NONE)

    # =========================================================================
    # Public API
    # =========================================================================
    def tick(self) -> None:
        """Advance logical time by one tick."""
        if self.role == Role.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def campaign(self) -> None:
        """Start an election now (tests and bootstrap)."""
        self.step(Message(MessageType.LOCAL_HUP, source=self.id))

    def propose(self, data: bytes) -> None:
        """Propose one command. Raises ProposalDropped if it cannot be accepted now."""
        self.propose_batch([data])

    def propose_batch(self, commands: list[bytes]) -> None:
        """Propose many commands as one append (batching).

        Raises ProposalDropped when no leader is known, a leadership transfer is
        in progress, this node is not a member, or the uncommitted bytes bound
        would be exceeded. Raises ValueError for an empty or oversized batch.
        """
        if not commands or len(commands) > self.config.proposal_entries_max:
            raise ValueError(f"a batch holds 1..{self.config.proposal_entries_max} commands")
        entries = [Entry(term=0, index=0, data=command) for command in commands]
        message = Message(MessageType.PROPOSE, source=self.id, entries=entries)
        if not self._step_propose(message):
            raise ProposalDropped(self._drop_reason())

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read point (§6.4). The answer arrives as a ReadState.

        `context` must be unique per request. Raises ProposalDropped when no
        leader is known.
        """
        if not context:
            raise ValueError("read_index needs a non-empty, unique context")
        if self.role != Role.LEADER and self.leader == NONE:
            raise ProposalDropped("no leader known")
        self.step(Message(MessageType.READ_INDEX, source=self.id, context=context))

    def transfer_leadership(self, transferee: NodeId) -> None:
        """Hand leadership to `transferee` (§3.10). Silently ignored if not possible."""
        self.step(Message(MessageType.TRANSFER_LEADER, source=transferee, to=self.id))

    def change_membership(self, change: ConfChange) -> None:
        """Propose one membership change on the leader (§4.1: one at a time).

        Raises ProposalDropped if this node is not the leader,
        ConfChangePending if another change has not been applied yet, and
        ConfChangeInvalid if the change does not fit the current membership.
        """
        if self.role != Role.LEADER:
            raise ProposalDropped("membership changes go to the leader")
        if self.pending_conf_index > self.log.applied:
            raise ConfChangePending(
                f"change at index {self.pending_conf_index} not yet applied "
                f"(applied {self.log.applied})"
            )
        self._validate_conf_change(change)
        entry = Entry(term=0, index=0, kind=EntryKind.CONF_CHANGE, data=change.encode())
        message = Message(MessageType.PROPOSE, source=self.id, entries=[entry])
        if not self._step_propose(message):
            raise ProposalDropped(self._drop_reason())

    def report_unreachable(self, node_id: NodeId) -> None:
        """The shell failed to send to `node_id`: stop pipelining to it."""
        self.step(Message(MessageType.LOCAL_UNREACHABLE, source=node_id, to=self.id))

    def report_snapshot(self, node_id: NodeId, failed: bool) -> None:
        """The shell finished (or failed) sending a snapshot to `node_id`."""
        message = Message(MessageType.LOCAL_SNAPSHOT_STATUS, source=node_id, reject=failed)
        self.step(message)

    def has_ready(self) -> bool:
        """True when `ready()` would return work."""
        return bool(
            self.messages
            or self.read_states
            or self.dropped_proposals
            or self.log.unstable.entries
            or self.log.unstable.snapshot is not None
            or self.log.has_next_committed_entries()
            or self._hard_state() != self._prev_hard_state
            or self._soft_state() != self._prev_soft_state
        )

    def ready(self) -> Ready:
        """Collect the work for the shell. Call `advance()` before the next `ready()`."""
        assert not self._ready_outstanding, "advance() the previous Ready first"
        ready = Ready(
            entries=self.log.unstable_entries(),
            committed_entries=self.log.next_committed_entries(),
            messages=self.messages,
            read_states=self.read_states,
            dropped_proposals=self.dropped_proposals,
        )
        if self.log.unstable.snapshot is not None:
            ready.snapshot = self.log.unstable.snapshot
        soft_state = self._soft_state()
        if soft_state != self._prev_soft_state:
            ready.soft_state = soft_state
        hard_state = self._hard_state()
        if hard_state != self._prev_hard_state:
            ready.hard_state = hard_state
            previous = self._prev_hard_state
            ready.term_or_vote_changed = (hard_state.term, hard_state.vote) != (
                previous.term,
                previous.vote,
            )
        self.messages, self.read_states, self.dropped_proposals = [], [], []
        self._ready_outstanding = True
        return ready

    def advance(self, ready: Ready) -> None:
        """The shell persisted, sent and applied `ready`."""
        assert self._ready_outstanding, "advance() without ready()"
        self._ready_outstanding = False
        if ready.soft_state is not None:
            self._prev_soft_state = ready.soft_state
        if ready.hard_state is not None:
            self._prev_hard_state = ready.hard_state
        if ready.entries:
            last = ready.entries[-1]
            self.log.stable_to(last.index, last.term)
        if not ready.snapshot.is_empty():
            self.log.stable_snapshot_to(ready.snapshot.meta.index)
            self.log.applied_to(ready.snapshot.meta.index)
            self._conf_applied_index = max(self._conf_applied_index, ready.snapshot.meta.index)
        if ready.committed_entries:
            self._advance_applied(ready.committed_entries)

    def status(self) -> dict[str, object]:
        """A snapshot of the node's view, for status pages and traces."""
        return {
            "id": self.id,
            "role": self.role.value,
            "term": self.term,
            "vote": self.vote,
            "leader": self.leader,
            "commit_index": self.log.committed,
            "applied_index": self.log.applied,
            "last_index": self.log.last_index(),
            "voters": sorted(self.conf.voters),
            "learners": sorted(self.conf.learners),
            "progress": {
                node_id: {"match": pr.match, "next": pr.next, "state": pr.state.value}
                for node_id, pr in sorted(self.progress.items())
            },
            "lead_transferee": self.lead_transferee,
        }

    def conf_applied_index(self) -> int:
        """The index up to which membership changes have taken effect.

        Usually the applied index; after a restart it can run ahead (committed
        changes are adopted at once, before the state machine replays them).
        """
        return self._conf_applied_index

    def is_promotable(self) -> bool:
        """True when this node is a voter that may campaign."""
        return self.id in self.conf.voters and self.log.unstable.snapshot is None

    # =========================================================================
    # Step: the single entry point for messages
    # =========================================================================
    def step(self, message: Message) -> None:
        """Handle one message (§5.1: terms first, then by role)."""
        assert message.type in MessageType
        if message.term == 0:
            pass  # Local message or proposal.
        elif message.term > self.term:
            if not self._step_higher_term(message):
                return
        elif message.term < self.term:
            self._step_lower_term(message)
            return
        assert message.term in (0, self.term) or message.type in (
            MessageType.PRE_VOTE,
            MessageType.PRE_VOTE_RESPONSE,
        )
        handler = _GENERIC_HANDLERS.get(message.type)
        if handler is not None:
            handler(self, message)
        elif self.role == Role.LEADER:
            self._step_leader(message)
        elif self.role == Role.FOLLOWER:
            self._step_follower(message)
        else:
            self._step_candidate(message)

    def _step_higher_term(self, message: Message) -> bool:
        """A message from a newer term. Returns False if it must be ignored."""
        kind = message.type
        if kind in (MessageType.VOTE, MessageType.PRE_VOTE):
            forced = message.context == CAMPAIGN_TRANSFER
            in_lease = (
                self.config.check_quorum
                and self.leader != NONE
                and self.election_elapsed_ticks < self.config.election_timeout_ticks
            )
            if in_lease and not forced:
                # §4.2.3: a node that hears from a live leader ignores disruptive
                # candidates (e.g. a rejoining, partitioned node).
                return False
        if kind == MessageType.PRE_VOTE:
            return True  # A pre-vote never changes our term.
        if kind == MessageType.PRE_VOTE_RESPONSE and not message.reject:
            return True  # Granted pre-votes carry the future term.
        if kind in (MessageType.APPEND, MessageType.HEARTBEAT, MessageType.SNAPSHOT):
            self._become_follower(message.term, message.source)
        else:
            self._become_follower(message.term, NONE)
        assert self.term == message.term
        return True

    def _step_lower_term(self, message: Message) -> None:
        """A message from an older term: mostly ignored, sometimes answered."""
        kind = message.type
        stale_leader = kind in (MessageType.HEARTBEAT, MessageType.APPEND)
        if stale_leader and (self.config.check_quorum or self.config.pre_vote):
            # A stale leader would never learn of the new term from a node that
            # ignores it (pre-vote keeps terms from rising): tell it.
            self._send(Message(MessageType.APPEND_RESPONSE, to=message.source))
        elif kind == MessageType.PRE_VOTE:
            # Reject with our term so the pre-candidate learns it is behind.
            response = Message(MessageType.PRE_VOTE_RESPONSE, to=message.source, reject=True)
            self._send(response)
        assert message.term < self.term

    def _handle_hup(self, message: Message) -> None:
        if self.role == Role.LEADER or not self.is_promotable():
            return
        if self._has_unapplied_conf_change():
            return  # §4.1: a node must know its membership before campaigning.
        transfer = message.context == CAMPAIGN_TRANSFER
        self._campaign(pre_vote=self.config.pre_vote and not transfer, transfer=transfer)

    def _handle_vote_request(self, message: Message) -> None:
        pre_vote = message.type == MessageType.PRE_VOTE
        can_vote = (
            self.vote == message.source
            or (self.vote == NONE and self.leader == NONE)
            or (pre_vote and message.term > self.term)
        )
        response_type = MessageType.PRE_VOTE_RESPONSE if pre_vote else MessageType.VOTE_RESPONSE
        if can_vote and self.log.is_up_to_date(message.index, message.log_term):
            # §5.2/§5.4.1: grant. A real vote is recorded (and persisted before
            # the response leaves, by Ready's ordering).
            self._send(Message(response_type, to=message.source, term=message.term))
            if not pre_vote:
                self.election_elapsed_ticks = 0
                self.vote = message.source
        else:
            self._send(Message(response_type, to=message.source, term=self.term, reject=True))
        assert pre_vote or not can_vote or self.vote in (NONE, message.source, self.vote)

    # =========================================================================
    # Elections
    # =========================================================================
    def _campaign(self, *, pre_vote: bool, transfer: bool) -> None:
        if pre_vote:
            self._become_pre_candidate()
            vote_type, vote_term = MessageType.PRE_VOTE, self.term + 1
        else:
            self._become_candidate()
            vote_type, vote_term = MessageType.VOTE, self.term
        assert self.id in self.conf.voters
        self.votes[self.id] = True
        result = quorum.vote_result(self.conf.voters, self.votes)
        if result == quorum.VoteResult.WON:
            if pre_vote:
                self._campaign(pre_vote=False, transfer=transfer)
            else:
                self._become_leader()
            return
        context = CAMPAIGN_TRANSFER if transfer else b""
        for voter in sorted(self.conf.voters):
            if voter == self.id:
                continue
            self._send(
                Message(
                    vote_type,
                    to=voter,
                    term=vote_term,
                    index=self.log.last_index(),
                    log_term=self.log.last_term(),
                    context=context,
                )
            )

    def _poll(self, message: Message) -> None:
        """Count a (pre-)vote response (§5.2)."""
        self.votes.setdefault(message.source, not message.reject)
        result = quorum.vote_result(self.conf.voters, self.votes)
        if result == quorum.VoteResult.WON:
            if self.role == Role.PRE_CANDIDATE:
                self._campaign(pre_vote=False, transfer=False)
            else:
                self._become_leader()
                self._broadcast_append()
        elif result == quorum.VoteResult.LOST:
            self._become_follower(self.term, NONE)

    def _reset(self, term: int) -> None:
        if term != self.term:
            assert term > self.term, "terms only increase"
            self.term = term
            self.vote = NONE
        self.leader = NONE
        self.election_elapsed_ticks = 0
        self.heartbeat_elapsed_ticks = 0
        timeout = self.config.election_timeout_ticks
        self.randomized_election_timeout_ticks = timeout + self._random.randrange(timeout)
        self.lead_transferee = NONE
        self.votes = {}
        self.pending_conf_index = 0
        self.uncommitted_bytes = 0
        self._read_index_queue = {}
        self._read_index_waiting = []
        self._reset_progress()

    def _reset_progress(self) -> None:
        next_index = self.log.last_index() + 1
        self.progress = {}
        for member in sorted(self.conf.members()):
            progress = Progress(
                next_index, self.config.inflight_messages_max, member in self.conf.learners
            )
            if member == self.id:
                progress.match = self.log.last_index()
            self.progress[member] = progress

    def _become_follower(self, term: int, leader: NodeId) -> None:
        self._reset(term)
        self.leader = leader
        self.role = Role.FOLLOWER

    def _become_pre_candidate(self) -> None:
        assert self.role != Role.LEADER, "a leader never campaigns"
        # §9.6: a pre-candidate asks whether it could win before bumping its term.
        self.votes = {}
        self.leader = NONE
        self.role = Role.PRE_CANDIDATE

    def _become_candidate(self) -> None:
        assert self.role != Role.LEADER, "a leader never campaigns"
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        assert self.role == Role.CANDIDATE, "only a candidate can win"
        self._reset(self.term)
        self.leader = self.id
        self.role = Role.LEADER
        own = self.progress[self.id]
        own.become_replicate()
        own.recent_active = True
        # §4.1 (with the 2015 erratum): no membership change until an entry of
        # this term commits; everything in the log now may hide one.
        self.pending_conf_index = self.log.last_index()
        # §5.4.2 / §8: commit an entry of our own term to learn the commit index.
        accepted = self._append_entries([Entry(term=0, index=0)])
        assert accepted, "the empty no-op is never refused"

    # =========================================================================
    # Ticks
    # =========================================================================
    def _tick_election(self) -> None:
        self.election_elapsed_ticks += 1
        if self.is_promotable() and (
            self.election_elapsed_ticks >= self.randomized_election_timeout_ticks
        ):
            self.election_elapsed_ticks = 0
            self.step(Message(MessageType.LOCAL_HUP, source=self.id))

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed_ticks += 1
        self.election_elapsed_ticks += 1
        if self.election_elapsed_ticks >= self.config.election_timeout_ticks:
            self.election_elapsed_ticks = 0
            if self.config.check_quorum:
                self.step(Message(MessageType.LOCAL_CHECK_QUORUM, source=self.id))
            if self.role == Role.LEADER and self.lead_transferee != NONE:
                self.lead_transferee = NONE  # §3.10: abort a transfer after a timeout.
        if self.role != Role.LEADER:
            return
        if self.heartbeat_elapsed_ticks >= self.config.heartbeat_interval_ticks:
            self.heartbeat_elapsed_ticks = 0
            self._heartbeat_round += 1  # Each follower in probe may get one more append.
            self.step(Message(MessageType.LOCAL_BEAT, source=self.id))

    # =========================================================================
    # Leader
    # =========================================================================
    def _step_leader(self, message: Message) -> None:
        kind = message.type
        if kind == MessageType.LOCAL_BEAT:
            self._broadcast_heartbeat(b"")
        elif kind == MessageType.LOCAL_CHECK_QUORUM:
            self._check_quorum()
        elif kind == MessageType.PROPOSE:
            self._step_propose(message)
        elif kind == MessageType.READ_INDEX:
            self._leader_read_index(message)
        elif kind == MessageType.TRANSFER_LEADER:
            self._leader_transfer(message.source)
        else:
            progress = self.progress.get(message.source)
            if progress is None:
                return  # Not (or no longer) a member.
            handler = _LEADER_PEER_HANDLERS.get(kind)
            if handler is not None:
                handler(self, message, progress)

    def _check_quorum(self) -> None:
        """§6.2: a leader that has not heard from a majority steps down."""
        active = {node_id for node_id, pr in self.progress.items() if pr.recent_active}
        active.add(self.id)
        if not quorum.has_quorum(self.conf.voters, active):
            self._become_follower(self.term, NONE)
            return
        for node_id, progress in self.progress.items():
            progress.recent_active = node_id == self.id

    def _append_entries(self, entries: list[Entry]) -> bool:
        """Stamp and append entries on the leader. False if over the byte bound."""
        payload_bytes = sum(len(entry.data) for entry in entries)
        if (
            self.uncommitted_bytes > 0
            and self.uncommitted_bytes + payload_bytes > self.config.uncommitted_bytes_max
        ):
            return False
        last_index = self.log.last_index()
        stamped = [
            Entry(term=self.term, index=last_index + offset, kind=entry.kind, data=entry.data)
            for offset, entry in enumerate(entries, start=1)
        ]
        self.log.append(stamped)
        self.uncommitted_bytes += payload_bytes
        own = self.progress[self.id]
        own.maybe_update(self.log.last_index())
        self._maybe_commit()  # A single-voter cluster commits at once.
        return True

    def _step_propose(self, message: Message) -> bool:
        """Accept, forward or drop a proposal. Returns False if dropped."""
        assert message.entries, "empty proposal"
        if self.role != Role.LEADER:
            if self.role != Role.FOLLOWER or self.leader == NONE:
                return False
            if not self.config.proposal_forwarding:
                return False
            message.to = self.leader
            self._send(message)  # §6.2: followers forward to the leader.
            return True
        if self.id not in self.progress or self.lead_transferee != NONE:
            return False
        first_index = self.log.last_index() + 1
        entries = [
            self._screen_conf_change(entry, first_index + offset)
            for offset, entry in enumerate(message.entries)
        ]
        if not self._append_entries(entries):
            return False
        self._broadcast_append()
        return True

    def _screen_conf_change(self, entry: Entry, index: int) -> Entry:
        """Replace a conf change that is not allowed now by an empty entry (as etcd).
        `index` is where this entry will land: a batch may carry it at any offset."""
        if entry.kind != EntryKind.CONF_CHANGE:
            return entry
        try:
            change = ConfChange.decode(entry.data)
            if self.pending_conf_index > self.log.applied:
                raise ConfChangePending("a membership change is pending")
            self._validate_conf_change(change)
        except (ValueError, ConfChangePending, ConfChangeInvalid):
            self.dropped_proposals.append(entry.data)
            return Entry(term=0, index=0)
        self.pending_conf_index = index
        assert self.pending_conf_index > self.log.last_index()
        return entry

    def _validate_conf_change(self, change: ConfChange) -> None:
        conf = self.conf
        kind = change.kind
        if kind == ConfChangeKind.ADD_LEARNER and change.node_id in conf.members():
            raise ConfChangeInvalid(f"node {change.node_id} is already a member")
        if kind == ConfChangeKind.PROMOTE and change.node_id not in conf.learners:
            raise ConfChangeInvalid(f"node {change.node_id} is not a learner")
        if kind == ConfChangeKind.REMOVE:
            if change.node_id not in conf.members():
                raise ConfChangeInvalid(f"node {change.node_id} is not a member")
            if conf.voters == {change.node_id}:
                raise ConfChangeInvalid("cannot remove the last voter")
        if kind == ConfChangeKind.ADD_VOTER and change.node_id in conf.voters:
            raise ConfChangeInvalid(f"node {change.node_id} is already a voter")

    def _maybe_commit(self) -> bool:
        """§5.3/§5.4.2: advance the commit index to what a majority stored in our term."""
        match_index = {node_id: pr.match for node_id, pr in self.progress.items()}
        index = quorum.committed_index(self.conf.voters, match_index)
        if not self.log.maybe_commit(index, self.term):
            return False
        self._release_waiting_reads()
        return True

    def _broadcast_append(self) -> None:
        for node_id in self.progress:
            if node_id != self.id:
                self._send_append(node_id)

    def _broadcast_heartbeat(self, context: bytes) -> None:
        for node_id, progress in self.progress.items():
            if node_id == self.id:
                continue
            # Never tell a follower to commit beyond what it is known to hold.
            commit = min(progress.match, self.log.committed)
            self._send(Message(MessageType.HEARTBEAT, to=node_id, commit=commit, context=context))

    def _send_append(self, to: NodeId, *, send_if_empty: bool = True) -> bool:
        """Send entries from `progress.next` (or a snapshot). Returns True if sent."""
        progress = self.progress[to]
        if progress.is_paused():
            return False
        try:
            prev_term = self.log.term(progress.next - 1)
            entries = self.log.entries(progress.next, self.config.append_batch_bytes_max)
        except Compacted:
            return self._send_snapshot(to, progress)
        if not entries and not send_if_empty:
            return False
        self._send(
            Message(
                MessageType.APPEND,
                to=to,
                index=progress.next - 1,
                log_term=prev_term,
                entries=entries,
                commit=self.log.committed,
            )
        )
        if entries:
            if progress.state == ProgressState.REPLICATE:
                progress.optimistic_update(entries[-1].index)
                progress.inflights.add(entries[-1].index)
            elif progress.state == ProgressState.PROBE:
                progress.probe_sent = True
        return True

    def _send_snapshot(self, to: NodeId, progress: Progress) -> bool:
        if not progress.recent_active:
            return False  # Don't ship a snapshot to a peer that may be down.
        try:
            snapshot = self.log.snapshot()
        except SnapshotTemporarilyUnavailable:
            return False
        assert not snapshot.is_empty(), "compacted log without a snapshot"
        progress.become_snapshot(snapshot.meta.index)
        self._send(Message(MessageType.SNAPSHOT, to=to, snapshot=snapshot))
        return True

    def _on_append_response(self, message: Message, progress: Progress) -> None:
        progress.recent_active = True
        if message.reject:
            self._on_append_rejected(message, progress)
            return
        was_paused = progress.is_paused()
        if progress.maybe_update(message.index):
            if progress.state == ProgressState.PROBE:
                progress.become_replicate()
            elif (
                progress.state == ProgressState.SNAPSHOT
                and progress.match >= progress.pending_snapshot
            ):
                progress.become_probe()
                progress.become_replicate()
            elif progress.state == ProgressState.REPLICATE:
                progress.inflights.free_le(message.index)
            if self._maybe_commit():
                self._broadcast_append()
            elif was_paused:
                self._send_append(message.source)
            # Drain what is left, bounded by the in-flight window.
            for _ in range(self.config.inflight_messages_max):
                if not self._send_append(message.source, send_if_empty=False):
                    break
            if message.source == self.lead_transferee and progress.match == self.log.last_index():
                self._send(Message(MessageType.TIMEOUT_NOW, to=message.source))

    def _on_append_rejected(self, message: Message, progress: Progress) -> None:
        """§5.3 with fast back-tracking: jump to the follower's conflict hint."""
        next_probe_index = message.reject_hint
        if message.log_term > 0:
            next_probe_index, _ = self.log.find_conflict_by_term(
                message.reject_hint, message.log_term
            )
        if progress.maybe_decrease_to(message.index, next_probe_index):
            if progress.state == ProgressState.REPLICATE:
                progress.become_probe()
            self._send_append(message.source)

    def _on_heartbeat_response(self, message: Message, progress: Progress) -> None:
        progress.recent_active = True
        if progress.probe_round != self._heartbeat_round:
            # One probe per heartbeat round: a backlog of responses (ReadIndex rounds,
            # a slow follower) must not each send another full-size append.
            progress.probe_round = self._heartbeat_round
            progress.probe_sent = False
        if progress.state == ProgressState.REPLICATE and progress.inflights.full():
            progress.inflights.free_first_one()
        if progress.match < self.log.last_index():
            self._send_append(message.source)
        if message.context:
            self._read_index_ack(message.source, message.context)

    def _on_snapshot_status(self, message: Message, progress: Progress) -> None:
        if progress.state != ProgressState.SNAPSHOT:
            return
        if message.reject:
            progress.pending_snapshot = 0
        progress.become_probe()
        # Wait for the follower's append response (or a heartbeat) before probing.
        progress.probe_sent = True

    def _on_unreachable(self, message: Message, progress: Progress) -> None:
        if progress.state == ProgressState.REPLICATE:
            progress.become_probe()
        assert progress.state != ProgressState.REPLICATE

    def _leader_transfer(self, transferee: NodeId) -> None:
        """§3.10: catch the transferee up, then tell it to campaign at once."""
        progress = self.progress.get(transferee)
        if progress is None or progress.is_learner or transferee == self.id:
            return
        if self.lead_transferee == transferee:
            return  # Already in progress.
        self.lead_transferee = transferee
        self.election_elapsed_ticks = 0  # The transfer must finish within a timeout.
        if progress.match == self.log.last_index():
            self._send(Message(MessageType.TIMEOUT_NOW, to=transferee))
        else:
            self._send_append(transferee)

    # -- ReadIndex (§6.4) -----------------------------------------------------
    def _leader_read_index(self, message: Message) -> None:
        if self.conf.voters == {self.id}:
            self._answer_read(message, self.log.committed)
            return
        if self.log.term_or_zero(self.log.committed) != self.term:
            # §6.4 step 1: the commit index is only known once our no-op commits.
            if len(self._read_index_waiting) < self.config.read_index_pending_max:
                self._read_index_waiting.append(message)
            return
        if message.context in self._read_index_queue:
            return  # Duplicate request.
        if len(self._read_index_queue) >= self.config.read_index_pending_max:
            return  # Bounded: the requester times out and retries.
        self._read_index_queue[message.context] = _ReadIndexStatus(
            index=self.log.committed, requester=message.source, acks={self.id}
        )
        self._broadcast_heartbeat(message.context)  # §6.4 step 3: confirm leadership.

    def _read_index_ack(self, node_id: NodeId, context: bytes) -> None:
        status = self._read_index_queue.get(context)
        if status is None:
            return
        status.acks.add(node_id)
        if not quorum.has_quorum(self.conf.voters, status.acks):
            return
        # Everything queued before this request is confirmed too.
        for queued_context in list(self._read_index_queue):
            queued = self._read_index_queue.pop(queued_context)
            self._answer_read(
                Message(MessageType.READ_INDEX, source=queued.requester, context=queued_context),
                queued.index,
            )
            if queued_context == context:
                break

    def _answer_read(self, request: Message, index: int) -> None:
        if request.source in (NONE, self.id):
            self.read_states.append(ReadState(index=index, context=request.context))
        else:
            self._send(
                Message(
                    MessageType.READ_INDEX_RESPONSE,
                    to=request.source,
                    index=index,
                    context=request.context,
                )
            )

    def _release_waiting_reads(self) -> None:
        if not self._read_index_waiting or self.log.term_or_zero(self.log.committed) != self.term:
            return
        waiting, self._read_index_waiting = self._read_index_waiting, []
        for request in waiting:
            self._leader_read_index(request)

    # =========================================================================
    # Candidate and follower
    # =========================================================================
    def _step_candidate(self, message: Message) -> None:
        kind = message.type
        if kind == MessageType.PROPOSE:
            return  # Dropped: no leader.
        if kind in (MessageType.APPEND, MessageType.HEARTBEAT, MessageType.SNAPSHOT):
            self._become_follower(message.term, message.source)  # §5.2: a leader exists.
            self._step_follower(message)
            return
        expected = (
            MessageType.PRE_VOTE_RESPONSE
            if self.role == Role.PRE_CANDIDATE
            else MessageType.VOTE_RESPONSE
        )
        if kind == expected:
            self._poll(message)

    def _step_follower(self, message: Message) -> None:
        kind = message.type
        if kind == MessageType.PROPOSE:
            self._step_propose(message)
        elif kind in (MessageType.APPEND, MessageType.HEARTBEAT, MessageType.SNAPSHOT):
            self.election_elapsed_ticks = 0
            self.leader = message.source
            _FOLLOWER_HANDLERS[kind](self, message)
        elif kind == MessageType.TRANSFER_LEADER:
            if self.leader != NONE:
                message.to = self.leader
                self._send(message)
        elif kind == MessageType.TIMEOUT_NOW:
            # §3.10: campaign at once, skipping pre-vote and the leader lease.
            self._handle_hup(Message(MessageType.LOCAL_HUP, context=CAMPAIGN_TRANSFER))
        elif kind == MessageType.READ_INDEX:
            if self.leader != NONE:
                message.to = self.leader
                self._send(message)
        elif kind == MessageType.READ_INDEX_RESPONSE:
            self.read_states.append(ReadState(index=message.index, context=message.context))

    def _handle_append(self, message: Message) -> None:
        if message.index < self.log.committed:
            # Everything up to our commit index already matches the leader's log.
            response = Message(MessageType.APPEND_RESPONSE, to=message.source)
            response.index = self.log.committed
            self._send(response)
            return
        last_index = self.log.maybe_append(
            message.index, message.log_term, message.commit, message.entries
        )
        if last_index is not None:
            self._send(Message(MessageType.APPEND_RESPONSE, to=message.source, index=last_index))
            return
        hint_index = min(message.index, self.log.last_index())
        hint_index, hint_term = self.log.find_conflict_by_term(hint_index, message.log_term)
        self._send(
            Message(
                MessageType.APPEND_RESPONSE,
                to=message.source,
                index=message.index,
                reject=True,
                reject_hint=hint_index,
                log_term=hint_term,
            )
        )

    def _handle_heartbeat(self, message: Message) -> None:
        # The leader sends min(match, commit), so this never passes our log.
        self.log.commit_to(min(message.commit, self.log.last_index()))
        response = Message(MessageType.HEARTBEAT_RESPONSE, to=message.source)
        response.context = message.context
        self._send(response)

    def _handle_snapshot(self, message: Message) -> None:
        snapshot = message.snapshot
        assert snapshot is not None and not snapshot.is_empty()
        meta = snapshot.meta
        if meta.index > self.log.committed and not self.log.match_term(meta.index, meta.term):
            # §7: discard the log and adopt the snapshot (and its membership).
            self.log.restore(snapshot)
            self.conf = meta.conf
            self._reset_progress()
            self._send(Message(MessageType.APPEND_RESPONSE, to=message.source, index=meta.index))
            return
        if meta.index > self.log.committed:
            # We already hold the entry: just fast-forward the commit index.
            self.log.commit_to(meta.index)
        response = Message(MessageType.APPEND_RESPONSE, to=message.source)
        response.index = self.log.committed
        self._send(response)

    # =========================================================================
    # Membership (§4.1: one server at a time, taking effect when applied)
    # =========================================================================
    def _replay_conf_changes(self) -> None:
        """On restart: adopt conf changes that were committed before the crash."""
        low = self._conf_applied_index + 1
        high = self.log.committed + 1
        if low >= high:
            return
        for entry in self.log.slice(low, high, 1 << 62):
            if entry.kind == EntryKind.CONF_CHANGE:
                self.conf = ConfChange.decode(entry.data).apply_to(self.conf)
        self._conf_applied_index = self.log.committed

    def _advance_applied(self, entries: list[Entry]) -> None:
        last = entries[-1]
        self.log.applied_to(last.index)
        if self.role == Role.LEADER:
            applied_bytes = sum(len(entry.data) for entry in entries)
            self.uncommitted_bytes = max(0, self.uncommitted_bytes - applied_bytes)
        for entry in entries:
            if entry.kind == EntryKind.CONF_CHANGE and entry.index > self._conf_applied_index:
                self._apply_conf_change(ConfChange.decode(entry.data))
        self._conf_applied_index = max(self._conf_applied_index, last.index)

    def _apply_conf_change(self, change: ConfChange) -> None:
        self.conf = change.apply_to(self.conf)
        next_index = self.log.last_index() + 1
        for member in self.conf.members():
            if member not in self.progress:
                self.progress[member] = Progress(
                    next_index, self.config.inflight_messages_max, member in self.conf.learners
                )
            else:
                self.progress[member].is_learner = member in self.conf.learners
        for member in list(self.progress):
            if member not in self.conf.members():
                del self.progress[member]
        if self.role != Role.LEADER:
            return
        if self.id not in self.conf.voters:
            self._step_down_after_removal()
            return
        if self.lead_transferee not in self.progress:
            self.lead_transferee = NONE
        if self._maybe_commit():  # Fewer voters may mean a smaller quorum.
            self._broadcast_append()

    def _step_down_after_removal(self) -> None:
        """A removed leader hands over to the most caught-up voter and steps down."""
        self._broadcast_append()
        candidates = [
            (progress.match, node_id)
            for node_id, progress in self.progress.items()
            if node_id in self.conf.voters
        ]
        if candidates:
            _, successor = max(candidates)
            self._send(Message(MessageType.TIMEOUT_NOW, to=successor))
        self._become_follower(self.term, NONE)
        assert self.role == Role.FOLLOWER

    def _has_unapplied_conf_change(self) -> bool:
        low = max(self.log.applied + 1, self.log.first_index())
        if low > self.log.committed:
            return False
        try:
            entries = self.log.slice(low, self.log.committed + 1, 1 << 62)
        except Compacted:
            return False
        return any(entry.kind == EntryKind.CONF_CHANGE for entry in entries)

    # =========================================================================
    # Helpers
    # =========================================================================
    def _send(self, message: Message) -> None:
        if message.type != MessageType.TRANSFER_LEADER:
            message.source = self.id  # TRANSFER_LEADER's source names the transferee.
        if message.term == 0 and message.type not in (
            MessageType.PROPOSE,
            MessageType.READ_INDEX,
            MessageType.TRANSFER_LEADER,
        ):
            message.term = self.term
        assert message.to not in (NONE, self.id), message
        self.messages.append(message)

    def _hard_state(self) -> HardState:
        return HardState(term=self.term, vote=self.vote, commit=self.log.committed)

    def _soft_state(self) -> SoftState:
        return SoftState(leader=self.leader, role=self.role)

    def _drop_reason(self) -> str:
        if self.lead_transferee != NONE:
            return f"leadership transfer to {self.lead_transferee} in progress"
        if self.role != Role.LEADER and self.leader == NONE:
            return "no leader known"
        if self.id not in self.conf.members():
            return "this node is not a member"
        return "too many uncommitted bytes (uncommitted_bytes_max)"

    def membership(self) -> ConfState:
        """The membership in effect."""
        return self.conf


_GENERIC_HANDLERS = {
    MessageType.LOCAL_HUP: RaftNode._handle_hup,
    MessageType.VOTE: RaftNode._handle_vote_request,
    MessageType.PRE_VOTE: RaftNode._handle_vote_request,
}

_LEADER_PEER_HANDLERS = {
    MessageType.APPEND_RESPONSE: RaftNode._on_append_response,
    MessageType.HEARTBEAT_RESPONSE: RaftNode._on_heartbeat_response,
    MessageType.LOCAL_SNAPSHOT_STATUS: RaftNode._on_snapshot_status,
    MessageType.LOCAL_UNREACHABLE: RaftNode._on_unreachable,
}

_FOLLOWER_HANDLERS = {
    MessageType.APPEND: RaftNode._handle_append,
    MessageType.HEARTBEAT: RaftNode._handle_heartbeat,
    MessageType.SNAPSHOT: RaftNode._handle_snapshot,
}
