"""The leader's view of one follower's log: etcd's Progress and Inflights.

A follower is in one of three states:
- PROBE: the leader does not know where the logs agree; it sends one append
  per heartbeat interval and backs off on rejection.
- REPLICATE: the logs agree up to `match`; the leader streams appends
  optimistically (pipelining), at most `inflight_messages_max` unacknowledged.
- SNAPSHOT: the follower needs entries the leader compacted; the leader sent a
  snapshot and waits for the outcome before sending anything else.
"""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.Enum):
    """How the leader currently replicates to a follower."""

    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """The last indexes of appends sent but not yet acknowledged, oldest first.

    Bounded by `capacity`: a full window pauses replication to that follower, so
    a slow follower costs the leader a fixed amount of memory.
    """

    __slots__ = ("_indexes", "capacity")

    def __init__(self, capacity: int) -> None:
        assert capacity > 0
        self.capacity = capacity
        self._indexes: deque[int] = deque()

    def add(self, last_index: int) -> None:
        """Record an append whose last entry is `last_index`."""
        assert not self.full(), "caller must check full() before sending"
        assert not self._indexes or self._indexes[-1] < last_index, "indexes increase"
        self._indexes.append(last_index)

    def free_le(self, index: int) -> None:
        """Forget every append acknowledged by an ack of `index`."""
        indexes = self._indexes
        while indexes and indexes[0] <= index:
            indexes.popleft()
        assert not indexes or indexes[0] > index

    def free_first_one(self) -> None:
        """Make room for one more append (a heartbeat answer proves liveness)."""
        if self._indexes:
            self._indexes.popleft()
        assert len(self._indexes) < self.capacity

    def full(self) -> bool:
        """True when no more appends may be sent."""
        return len(self._indexes) >= self.capacity

    def count(self) -> int:
        """Unacknowledged appends."""
        return len(self._indexes)

    def reset(self) -> None:
        """Forget everything (state change)."""
        self._indexes.clear()


class Progress:
    """Replication progress of one peer, kept by the leader."""

    __slots__ = (
        "inflights",
        "is_learner",
        "match",
        "next",
        "pending_snapshot",
        "probe_round",
        "probe_sent",
        "recent_active",
        "state",
    )

    def __init__(self, next_index: int, inflight_messages_max: int, is_learner: bool) -> None:
        assert next_index >= 1
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0
        self.recent_active = False
        self.probe_sent = False
        self.probe_round = -1  # The leader's heartbeat round of the last probe unpause.
        self.is_learner = is_learner
        self.inflights = Inflights(inflight_messages_max)

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        """Back to probing: resume from the snapshot or from match + 1."""
        if self.state == ProgressState.SNAPSHOT:
            pending_snapshot = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending_snapshot + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1
        assert self.next > self.match

    def become_replicate(self) -> None:
        """Stream appends after a successful probe."""
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1
        assert self.next > self.match

    def become_snapshot(self, snapshot_index: int) -> None:
        """Wait for the outcome of a snapshot sent to this peer."""
        assert snapshot_index > 0
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, index: int) -> bool:
        """An ack of `index` arrived. Returns True if it moved `match` forward."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        assert self.next > self.match
        return updated

    def optimistic_update(self, last_index: int) -> None:
        """Pipelining: assume the append up to `last_index` will succeed."""
        assert last_index >= self.next - 1
        self.next = last_index + 1
        assert self.state == ProgressState.REPLICATE

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """A rejection of the append after `rejected` arrived, with a conflict hint.

        Returns False for a stale rejection (one we already handled).
        """
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False  # Stale: an append before our current position.
            self.next = self.match + 1
            assert self.next > self.match
            return True
        if self.next - 1 != rejected:
            return False  # Stale: not a rejection of the probe we sent last.
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        assert self.next >= 1
        return True

    def is_paused(self) -> bool:
        """True when the leader must not send appends to this peer now."""
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def describe(self) -> str:
        """One line for traces and status pages."""
        return (
            f"{self.state.value} match={self.match} next={self.next} "
            f"inflight={self.inflights.count()} learner={self.is_learner}"
        )
