"""The Raft log as the core sees it: stable storage plus an unstable tail.

`Unstable` holds entries (and possibly a snapshot) that the core accepted but
the shell has not yet persisted. Together with the `LogStorage` they form the
log; `committed` and `applied` are the two cursors over it, with the invariant
`applied <= committed <= last_index()`.
"""

from __future__ import annotations

from synod.raft.storage import LogStorage, limit_size
from synod.raft.types import Compacted, Entry, Snapshot, Unavailable


class Unstable:
    """Entries after `offset - 1` and an incoming snapshot, not yet persisted."""

    __slots__ = ("entries", "offset", "snapshot")

    def __init__(self, offset: int) -> None:
        assert offset >= 1
        self.offset = offset
        self.entries: list[Entry] = []
        self.snapshot: Snapshot | None = None

    def maybe_first_index(self) -> int | None:
        """First index if only a snapshot is unstable; otherwise unknown here."""
        return self.snapshot.meta.index + 1 if self.snapshot is not None else None

    def maybe_last_index(self) -> int | None:
        """Last index held here, if any."""
        if self.entries:
            return self.offset + len(self.entries) - 1
        return self.snapshot.meta.index if self.snapshot is not None else None

    def maybe_term(self, index: int) -> int | None:
        """Term at `index` if this tail knows it."""
        if index < self.offset:
            if self.snapshot is not None and self.snapshot.meta.index == index:
                return self.snapshot.meta.term
            return None
        position = index - self.offset
        if position >= len(self.entries):
            return None
        return self.entries[position].term

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to `index` (of `term`) were persisted by the shell."""
        known_term = self.maybe_term(index)
        if known_term is None or known_term != term or index < self.offset:
            return  # Already overwritten by a newer append: keep it unstable.
        del self.entries[: index + 1 - self.offset]
        self.offset = index + 1
        assert not self.entries or self.entries[0].index == self.offset

    def stable_snapshot_to(self, index: int) -> None:
        """The unstable snapshot at `index` was persisted."""
        if self.snapshot is not None and self.snapshot.meta.index == index:
            self.snapshot = None

    def restore(self, snapshot: Snapshot) -> None:
        """Replace everything with an incoming snapshot."""
        assert not snapshot.is_empty()
        self.offset = snapshot.meta.index + 1
        self.entries = []
        self.snapshot = snapshot

    def truncate_and_append(self, entries: list[Entry]) -> None:
        """Append `entries`, dropping any unstable suffix they overwrite."""
        first = entries[0].index
        if first == self.offset + len(self.entries):
            self.entries.extend(entries)
        elif first <= self.offset:
            # The whole unstable tail is replaced: persisted entries >= first will
            # be overwritten by the shell when it persists these.
            self.offset = first
            self.entries = list(entries)
        else:
            del self.entries[first - self.offset :]
            self.entries.extend(entries)
        assert self.entries[0].index == self.offset


class RaftLog:
    """Stable storage + unstable tail, with the commit and apply cursors."""

    def __init__(self, storage: LogStorage, committed_batch_bytes_max: int) -> None:
        assert committed_batch_bytes_max > 0
        self.storage = storage
        self.unstable = Unstable(storage.last_index() + 1)
        first = storage.first_index()
        self.committed = first - 1
        self.applied = first - 1
        self.committed_batch_bytes_max = committed_batch_bytes_max
        assert self.applied <= self.committed <= self.last_index()

    def __repr__(self) -> str:
        return (
            f"RaftLog(committed={self.committed}, applied={self.applied}, "
            f"unstable.offset={self.unstable.offset}, last={self.last_index()})"
        )

    # -- positions ------------------------------------------------------------
    def first_index(self) -> int:
        """First index available (after the latest snapshot)."""
        snapshot_first = self.unstable.maybe_first_index()
        return snapshot_first if snapshot_first is not None else self.storage.first_index()

    def last_index(self) -> int:
        """Index of the last entry, stable or not."""
        unstable_last = self.unstable.maybe_last_index()
        return unstable_last if unstable_last is not None else self.storage.last_index()

    def term(self, index: int) -> int:
        """Term at `index`. Raises Compacted or Unavailable outside the log."""
        dummy_index = self.first_index() - 1
        if index < dummy_index:
            raise Compacted(f"term of {index}: log starts after {dummy_index}")
        if index > self.last_index():
            raise Unavailable(f"term of {index}: last index is {self.last_index()}")
        unstable_term = self.unstable.maybe_term(index)
        if unstable_term is not None:
            return unstable_term
        return self.storage.term(index)

    def term_or_zero(self, index: int) -> int:
        """Term at `index`, or 0 when it is compacted or beyond the log."""
        try:
            return self.term(index)
        except (Compacted, Unavailable):
            return 0

    def last_term(self) -> int:
        """Term of the last entry."""
        return self.term(self.last_index())

    def match_term(self, index: int, term: int) -> bool:
        """True when the log has an entry at `index` with `term`."""
        try:
            return self.term(index) == term
        except (Compacted, Unavailable):
            return False

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: a candidate's log is at least as up-to-date as ours."""
        our_term = self.last_term()
        return last_term > our_term or (last_term == our_term and last_index >= self.last_index())

    # -- appending ------------------------------------------------------------
    def maybe_append(
        self, prev_index: int, prev_term: int, committed: int, entries: list[Entry]
    ) -> int | None:
        """A follower's append (§5.3). Returns the new last index or None on mismatch."""
        if not self.match_term(prev_index, prev_term):
            return None
        new_last_index = prev_index + len(entries)
        conflict_index = self.find_conflict(entries)
        if conflict_index != 0:
            assert conflict_index > self.committed, "a committed entry must never be overwritten"
            self.append(entries[conflict_index - entries[0].index :])
        self.commit_to(min(committed, new_last_index))
        return new_last_index

    def append(self, entries: list[Entry]) -> int:
        """Append (overwriting any conflicting suffix). Returns the last index."""
        if not entries:
            return self.last_index()
        assert entries[0].index - 1 >= self.committed, "cannot overwrite committed entries"
        self.unstable.truncate_and_append(entries)
        return self.last_index()

    def find_conflict(self, entries: list[Entry]) -> int:
        """Index of the first entry that is new or conflicts; 0 if all present.

        By the Log Matching Property a match of the last entry means all match,
        which keeps the common case (retransmits, heartbeats) O(1).
        """
        if not entries:
            return 0
        last = entries[-1]
        if self.match_term(last.index, last.term):
            return 0
        for entry in entries:
            if not self.match_term(entry.index, entry.term):
                return entry.index
        raise AssertionError("unreachable: the last entry did not match")

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= `index` whose term is <= `term`, and that term.

        Used for fast back-tracking (§5.3's optimisation, as in etcd): a follower
        rejecting (index, term) tells the leader where it can resume.
        """
        assert index >= 0
        steps_max = index + 1  # Terms only decrease going back: this loop is bounded.
        for _ in range(steps_max):
            try:
                our_term = self.term(index)
            except Compacted:
                return index, 0
            except Unavailable:
                index = self.last_index()
                continue
            if our_term <= term:
                return index, our_term
            index -= 1
        return 0, 0

    # -- reading --------------------------------------------------------------
    def entries(self, low: int, batch_bytes_max: int) -> list[Entry]:
        """Entries from `low` to the end, within `batch_bytes_max` (at least one)."""
        if low > self.last_index():
            return []
        return self.slice(low, self.last_index() + 1, batch_bytes_max)

    def slice(self, low: int, high: int, batch_bytes_max: int) -> list[Entry]:
        """Entries in [low, high). Raises Compacted below the first index."""
        assert low <= high, (low, high)
        if low < self.first_index():
            raise Compacted(f"slice from {low}: first index is {self.first_index()}")
        assert high <= self.last_index() + 1, (high, self.last_index())
        if low == high:
            return []
        result: list[Entry] = []
        offset = self.unstable.offset
        if low < offset:
            result = self.storage.entries(low, min(high, offset), batch_bytes_max)
            if len(result) < min(high, offset) - low:
                return result  # Size-limited by storage.
        if high > offset:
            tail = self.unstable.entries[max(low, offset) - offset : high - offset]
            result = result + tail if result else tail
        return limit_size(result, batch_bytes_max)

    def unstable_entries(self) -> list[Entry]:
        """Entries the shell must persist."""
        return list(self.unstable.entries)

    def has_next_committed_entries(self) -> bool:
        """True when committed entries await application."""
        return self.committed > max(self.applied, self.first_index() - 1)

    def next_committed_entries(self) -> list[Entry]:
        """Committed, unapplied entries, within `committed_batch_bytes_max`."""
        low = max(self.applied + 1, self.first_index())
        if self.committed + 1 <= low:
            return []
        return self.slice(low, self.committed + 1, self.committed_batch_bytes_max)

    def snapshot(self) -> Snapshot:
        """The newest snapshot, unstable or stable."""
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    # -- cursors --------------------------------------------------------------
    def commit_to(self, index: int) -> None:
        """Move `committed` forward (never backward)."""
        if index > self.committed:
            assert index <= self.last_index(), f"commit {index} beyond last {self.last_index()}"
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """§5.4.2: commit `index` only if it is from the leader's current `term`."""
        if index > self.committed and self.term_or_zero(index) == term:
            self.commit_to(index)
            return True
        return False

    def applied_to(self, index: int) -> None:
        """The shell applied everything up to `index`."""
        if index == 0:
            return
        assert self.applied <= index <= self.committed, (self.applied, index, self.committed)
        self.applied = index

    def stable_to(self, index: int, term: int) -> None:
        """See `Unstable.stable_to`."""
        self.unstable.stable_to(index, term)

    def stable_snapshot_to(self, index: int) -> None:
        """See `Unstable.stable_snapshot_to`."""
        self.unstable.stable_snapshot_to(index)

    def restore(self, snapshot: Snapshot) -> None:
        """Adopt an incoming snapshot: the log now starts after it."""
        assert snapshot.meta.index > self.committed
        self.committed = snapshot.meta.index
        self.unstable.restore(snapshot)
