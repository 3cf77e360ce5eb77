"""Values exchanged between the Raft core and its shell.

Everything here is plain data: entries, hard state, membership, messages and
the `Ready` batch. Nothing here performs I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from synod.gcfree import untrack

NodeId = int
NONE: NodeId = 0  # No node: node ids start at 1, like etcd's raft.


class EntryKind(enum.IntEnum):
    """What an entry's payload means to the shell."""

    NORMAL = 0  # Application command (empty data: the leader's no-op of its term).
    CONF_CHANGE = 1  # A `ConfChange`, encoded with `ConfChange.encode`.


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. Index and term are assigned by the leader."""

    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""

    def __post_init__(self) -> None:
        untrack(self)  # Ints, an enum member and bytes: never in a cycle (synod.gcfree).

    def size_bytes(self) -> int:
        """Approximate encoded size, used for batch byte limits."""
        return len(self.data) + 24


@dataclass(frozen=True, slots=True)
class HardState:
    """What must reach stable storage before dependent messages leave the node."""

    term: int = 0
    vote: NodeId = NONE
    commit: int = 0


EMPTY_HARD_STATE = HardState()


@dataclass(frozen=True, slots=True)
class ConfState:
    """The membership: voters decide elections and commits, learners only follow."""

    voters: frozenset[NodeId] = frozenset()
    learners: frozenset[NodeId] = frozenset()

    def __post_init__(self) -> None:
        assert not (self.voters & self.learners), "a node is either voter or learner"
        assert NONE not in self.voters and NONE not in self.learners

    def members(self) -> frozenset[NodeId]:
        """Voters and learners together."""
        return self.voters | self.learners


class ConfChangeKind(enum.IntEnum):
    """One-at-a-time membership changes (Raft dissertation §4.1)."""

    ADD_LEARNER = 0
    PROMOTE = 1  # learner -> voter
    REMOVE = 2
    ADD_VOTER = 3  # only for bootstrapping a single node; learners are safer


@dataclass(frozen=True, slots=True)
class ConfChange:
    """A membership change proposal; `context` carries e.g. the peer address."""

    kind: ConfChangeKind
    node_id: NodeId
    context: bytes = b""

    def encode(self) -> bytes:
        """Encode for an entry payload (1 byte kind, 8 bytes id, context)."""
        assert self.node_id != NONE
        assert 0 <= self.node_id < 2**64
        return bytes([self.kind]) + self.node_id.to_bytes(8, "big") + self.context

    @staticmethod
    def decode(data: bytes) -> ConfChange:
        """Inverse of `encode`. Raises ValueError on a malformed payload."""
        if len(data) < 9:
            raise ValueError(f"conf change payload too short: {len(data)} bytes")
        node_id = int.from_bytes(data[1:9], "big")
        return ConfChange(ConfChangeKind(data[0]), node_id, bytes(data[9:]))

    def apply_to(self, conf: ConfState) -> ConfState:
        """The membership after this change. Changes that do not apply are no-ops."""
        voters, learners = set(conf.voters), set(conf.learners)
        if self.kind == ConfChangeKind.ADD_LEARNER and self.node_id not in voters:
            learners.add(self.node_id)
        elif self.kind == ConfChangeKind.ADD_VOTER or (
            self.kind == ConfChangeKind.PROMOTE and self.node_id in learners
        ):
            learners.discard(self.node_id)
            voters.add(self.node_id)
        elif self.kind == ConfChangeKind.REMOVE:
            voters.discard(self.node_id)
            learners.discard(self.node_id)
        return ConfState(frozenset(voters), frozenset(learners))


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Where a snapshot sits in the log and the membership at that point."""

    index: int = 0
    term: int = 0
    conf: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state-machine image covering the log up to `meta.index`."""

    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""

    def is_empty(self) -> bool:
        """True for the placeholder of a log that was never compacted."""
        return self.meta.index == 0


EMPTY_SNAPSHOT = Snapshot()


class MessageType(enum.IntEnum):
    """Message kinds. LOCAL_* ones never leave a node."""

    LOCAL_HUP = 0  # campaign now
    LOCAL_BEAT = 1  # leader: send heartbeats now
    PROPOSE = 2
    APPEND = 3
    APPEND_RESPONSE = 4
    VOTE = 5
    VOTE_RESPONSE = 6
    PRE_VOTE = 7
    PRE_VOTE_RESPONSE = 8
    SNAPSHOT = 9
    HEARTBEAT = 10
    HEARTBEAT_RESPONSE = 11
    TRANSFER_LEADER = 12
    TIMEOUT_NOW = 13
    READ_INDEX = 14
    READ_INDEX_RESPONSE = 15
    LOCAL_SNAPSHOT_STATUS = 16  # shell reports InstallSnapshot outcome
    LOCAL_UNREACHABLE = 17  # shell reports a peer it cannot reach
    LOCAL_CHECK_QUORUM = 18


LOCAL_MESSAGES = frozenset(
    {
        MessageType.LOCAL_HUP,
        MessageType.LOCAL_BEAT,
        MessageType.LOCAL_SNAPSHOT_STATUS,
        MessageType.LOCAL_UNREACHABLE,
        MessageType.LOCAL_CHECK_QUORUM,
    }
)

RESPONSE_MESSAGES = frozenset(
    {
        MessageType.APPEND_RESPONSE,
        MessageType.VOTE_RESPONSE,
        MessageType.PRE_VOTE_RESPONSE,
        MessageType.HEARTBEAT_RESPONSE,
        MessageType.READ_INDEX_RESPONSE,
    }
)


@dataclass(slots=True)
class Message:
    """A Raft message. Field meaning depends on `type`, as in etcd's raftpb.

    `index`/`log_term` locate the entry preceding `entries` (APPEND), the
    candidate's last entry (VOTE), or the follower's match or conflict hint
    (APPEND_RESPONSE with `reject_hint` and `log_term`). `context` carries the
    ReadIndex request context or a campaign reason. TRANSFER_LEADER is the one
    message whose `source` is not the sender: it names the transferee (as etcd).
    """

    type: MessageType
    to: NodeId = NONE
    source: NodeId = NONE
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: list[Entry] = field(default_factory=list)
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: Snapshot | None = None
    context: bytes = b""


@dataclass(frozen=True, slots=True)
class ReadState:
    """A ReadIndex answer: once `applied >= index`, a read for `context` is linearizable."""

    index: int
    context: bytes


class Role(enum.Enum):
    """A node's role in its current term."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state the shell may want to observe; never persisted."""

    leader: NodeId
    role: Role


@dataclass(slots=True)
class Ready:
    """Work for the shell. Handle the fields IN THIS ORDER, then call `advance()`:

    1. Persist `snapshot` (if not empty), then `entries`, then `hard_state` (if
       not None), with a single fsync: a vote or an acknowledgement must never
       leave the node before the state it depends on is durable.
    2. Send `messages` (they may assume step 1 is durable).
    3. Apply `snapshot` to the state machine, then `committed_entries` in order.
       Conf changes among them take effect inside the core at `advance()`.
    4. Answer `read_states` once the applied index reaches each one's index.
    5. Call `advance(ready)` with this object.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot = EMPTY_SNAPSHOT
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    dropped_proposals: list[bytes] = field(default_factory=list)
    term_or_vote_changed: bool = False  # Set by the core: hard_state carries a new term/vote.

    def contains_updates(self) -> bool:
        """True when the shell has anything to do."""
        return bool(
            self.soft_state is not None
            or self.hard_state is not None
            or self.entries
            or not self.snapshot.is_empty()
            or self.committed_entries
            or self.messages
            or self.read_states
            or self.dropped_proposals
        )

    def must_sync(self) -> bool:
        """True when step 1 needs an fsync: new entries, a snapshot, or a new term or
        vote. A hard state that only moves the commit index is written but owes no
        fsync (etcd's MustSync): a lost commit index is learnt again from the leader."""
        return bool(self.entries) or self.term_or_vote_changed or not self.snapshot.is_empty()


class RaftError(Exception):
    """Base class of the core's errors. `code` is stable for APIs."""

    code = "raft-error"


class ProposalDropped(RaftError):
    """No leader is known, a transfer is in progress, or the node is not a member."""

    code = "proposal-dropped"


class ConfChangePending(RaftError):
    """A membership change is already in flight; one at a time."""

    code = "conf-change-pending"


class ConfChangeInvalid(RaftError):
    """The change is not allowed from the current membership."""

    code = "conf-change-invalid"


class Compacted(RaftError):
    """The requested index lies before the log's first index."""

    code = "compacted"


class Unavailable(RaftError):
    """The requested entries are not in storage (yet)."""

    code = "unavailable"


class SnapshotTemporarilyUnavailable(RaftError):
    """The storage is producing a snapshot; try later."""

    code = "snapshot-temporarily-unavailable"
