"""Safety properties of Raft, checked incrementally on every simulator step.

Each check is O(1) or O(new entries) per event, so the simulator can afford to
run them all the time:

- Election Safety: at most one leader per term.
- Log Matching: two persisted entries with the same index and term carry the
  same payload and sit after entries of the same term (by induction, the logs
  are identical up to there).
- Leader Completeness: a new leader holds every entry committed so far.
- State Machine Safety: every node applies the same entry at each index, so the
  applied sequences are prefixes of one another.
- Commit monotonicity: a node's commit index never decreases, across restarts.
"""

from __future__ import annotations

from dataclasses import dataclass

from synod.raft.types import Entry, NodeId


class SafetyViolation(AssertionError):
    """A Raft safety property was broken. The message names property and evidence."""


@dataclass(frozen=True, slots=True)
class EntryIdentity:
    """What defines an entry for the checkers."""

    term: int
    kind: int
    data: bytes


class SafetyMonitor:
    """Collects evidence from all nodes and raises SafetyViolation on the first breach."""

    def __init__(self) -> None:
        self.leader_by_term: dict[int, NodeId] = {}
        self.persisted: dict[tuple[int, int], tuple[EntryIdentity, int]] = {}
        self.committed: dict[int, EntryIdentity] = {}
        # index -> a term no lower than the one in which it was committed: leaders of
        # later terms must hold it (a leader elected earlier but heard of late need not).
        self.commit_term: dict[int, int] = {}
        self.applied: dict[int, EntryIdentity] = {}
        self.commit_index: dict[NodeId, int] = {}
        self.durable: dict[NodeId, tuple[int, int]] = {}  # node -> (term, commit) on disk
        self.highest_committed_index = 0
        self.checks = 0

    def on_leader(self, node_id: NodeId, term: int, log_term_at: dict[int, int]) -> None:
        """`node_id` became leader of `term`; `log_term_at` maps index -> term of its log
        for every committed index that is still in its log (not compacted)."""
        self.checks += 1
        other = self.leader_by_term.setdefault(term, node_id)
        if other != node_id:
            raise SafetyViolation(f"election safety: nodes {other} and {node_id} lead term {term}")
        for index, identity in self.committed.items():
            if self.commit_term.get(index, 0) >= term:
                continue  # Committed in this term or later: not this leader's to hold.
            held = log_term_at.get(index)
            if held is not None and held != identity.term:
                raise SafetyViolation(
                    f"leader completeness: leader {node_id} of term {term} has term {held} "
                    f"at committed index {index} (committed term {identity.term})"
                )

    def on_persist(self, node_id: NodeId, entries: list[Entry], prev_term: int) -> None:
        """`node_id` persisted `entries`; `prev_term` is its term at entries[0].index - 1."""
        self.checks += 1
        previous = prev_term
        for entry in entries:
            identity = EntryIdentity(entry.term, int(entry.kind), entry.data)
            known = self.persisted.setdefault((entry.index, entry.term), (identity, previous))
            if known != (identity, previous):
                raise SafetyViolation(
                    f"log matching: node {node_id} persisted index {entry.index} term "
                    f"{entry.term} as {identity} after term {previous}; another node has "
                    f"{known[0]} after term {known[1]}"
                )
            previous = entry.term

    def on_commit(
        self, node_id: NodeId, commit_index: int, entries: list[Entry], term: int = 0
    ) -> None:
        """`node_id` reports `commit_index`; `entries` are its newly committed entries;
        `term` is the reporter's current term (0: unknown, check every later leader)."""
        self.checks += 1
        previous = self.commit_index.get(node_id, 0)
        if commit_index < previous:
            raise SafetyViolation(
                f"commit index of node {node_id} went back from {previous} to {commit_index}"
            )
        self.commit_index[node_id] = commit_index
        for entry in entries:
            identity = EntryIdentity(entry.term, int(entry.kind), entry.data)
            known = self.committed.setdefault(entry.index, identity)
            self.commit_term[entry.index] = min(self.commit_term.get(entry.index, term), term)
            if known != identity:
                raise SafetyViolation(
                    f"state machine safety: node {node_id} committed {identity} at index "
                    f"{entry.index}, another node committed {known}"
                )
        self.highest_committed_index = max(self.highest_committed_index, commit_index)

    def on_apply(self, node_id: NodeId, entries: list[Entry]) -> None:
        """`node_id` applied `entries` to its state machine."""
        self.checks += 1
        for entry in entries:
            identity = EntryIdentity(entry.term, int(entry.kind), entry.data)
            known = self.applied.setdefault(entry.index, identity)
            if known != identity:
                raise SafetyViolation(
                    f"state machine safety: node {node_id} applied {identity} at index "
                    f"{entry.index}, another node applied {known}"
                )

    def on_hard_state(self, node_id: NodeId, term: int, commit_index: int) -> None:
        """`node_id` made (term, commit) durable: neither may ever go back."""
        self.checks += 1
        previous_term, previous_commit = self.durable.get(node_id, (0, 0))
        if term < previous_term or commit_index < previous_commit:
            raise SafetyViolation(
                f"node {node_id} persisted term/commit {term}/{commit_index} after "
                f"{previous_term}/{previous_commit}"
            )
        self.durable[node_id] = (term, commit_index)

    def on_restart(self, node_id: NodeId, term: int, commit_index: int) -> None:
        """After a crash the node recovered (term, commit) from disk: everything it
        synced before the crash must still be there (durability)."""
        self.checks += 1
        durable_term, durable_commit = self.durable.get(node_id, (0, 0))
        if term < durable_term or commit_index < durable_commit:
            raise SafetyViolation(
                f"durability: node {node_id} recovered term/commit {term}/{commit_index} "
                f"but had synced {durable_term}/{durable_commit}"
            )
        # Volatile commit knowledge may be lost, but never what is durable.
        self.commit_index[node_id] = commit_index
        self.durable[node_id] = (term, commit_index)
