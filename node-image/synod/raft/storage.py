"""The log storage the core reads from, and an in-memory implementation.

As in etcd's raft, the core only *reads* stable storage; the shell writes to
it after persisting a `Ready`. Durable nodes keep a `MemoryStorage` in front of
their write-ahead log (see `synod.storage.wal`): the WAL makes it durable, the
memory copy makes it fast to read.
"""

from __future__ import annotations

from typing import Protocol

from synod.gcfree import untrack
from synod.raft.types import (
    EMPTY_HARD_STATE,
    EMPTY_SNAPSHOT,
    Compacted,
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMeta,
    Unavailable,
)


class LogStorage(Protocol):
    """Read access to the stable log. Indexes are 1-based; entry 0 is a sentinel."""

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted hard state and the membership of the latest snapshot."""
        ...

    def entries(self, low: int, high: int, batch_bytes_max: int) -> list[Entry]:
        """Entries in [low, high), at least one, at most `batch_bytes_max` bytes.

        Raises Compacted if low <= the snapshot index, Unavailable if high > last+1.
        """
        ...

    def term(self, index: int) -> int:
        """Term of the entry at `index`; the snapshot's term at its index.

        Raises Compacted below the snapshot index, Unavailable past the last index.
        """
        ...

    def first_index(self) -> int:
        """Index of the first entry still available (snapshot index + 1)."""
        ...

    def last_index(self) -> int:
        """Index of the last stable entry (snapshot index when the log is empty)."""
        ...

    def snapshot(self) -> Snapshot:
        """The most recent snapshot."""
        ...


class MemoryStorage:
    """A `LogStorage` in memory. `_entries[0]` is a dummy at the snapshot index."""

    def __init__(self) -> None:
        self.hard_state: HardState = EMPTY_HARD_STATE
        self._snapshot: Snapshot = EMPTY_SNAPSHOT
        self._entries: list[Entry] = _entry_list([Entry(term=0, index=0)])

    # -- LogStorage ---------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        """See `LogStorage.initial_state`."""
        return self.hard_state, self._snapshot.meta.conf

    def entries(self, low: int, high: int, batch_bytes_max: int) -> list[Entry]:
        """See `LogStorage.entries`."""
        offset = self._entries[0].index
        if low <= offset:
            raise Compacted(f"entries from {low}: compacted up to {offset}")
        if high > self.last_index() + 1:
            raise Unavailable(f"entries up to {high}: last index is {self.last_index()}")
        assert low <= high, (low, high)
        return limit_size(self._entries[low - offset : high - offset], batch_bytes_max)

    def term(self, index: int) -> int:
        """See `LogStorage.term`."""
        offset = self._entries[0].index
        if index < offset:
            raise Compacted(f"term of {index}: compacted up to {offset}")
        if index - offset >= len(self._entries):
            raise Unavailable(f"term of {index}: last index is {self.last_index()}")
        entry = self._entries[index - offset]
        assert entry.index == index, (entry.index, index)
        return entry.term

    def first_index(self) -> int:
        """See `LogStorage.first_index`."""
        return self._entries[0].index + 1

    def last_index(self) -> int:
        """See `LogStorage.last_index`."""
        return self._entries[0].index + len(self._entries) - 1

    def snapshot(self) -> Snapshot:
        """See `LogStorage.snapshot`."""
        return self._snapshot

    # -- writers used by the shell -----------------------------------------
    def set_hard_state(self, hard_state: HardState) -> None:
        """Record the persisted hard state."""
        assert hard_state.term >= self.hard_state.term, "term never decreases"
        self.hard_state = hard_state

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the log with `snapshot`. Older snapshots are ignored."""
        assert not snapshot.is_empty()
        if snapshot.meta.index <= self._snapshot.meta.index:
            return
        self._snapshot = snapshot
        self._entries = _entry_list([Entry(term=snapshot.meta.term, index=snapshot.meta.index)])

    def create_snapshot(self, index: int, conf: ConfState, data: bytes) -> Snapshot:
        """Record a state-machine image taken at `index` (<= last index).

        Raises Compacted if a newer snapshot already exists.
        """
        if index <= self._snapshot.meta.index:
            raise Compacted(f"snapshot at {index}: have one at {self._snapshot.meta.index}")
        assert index <= self.last_index(), (index, self.last_index())
        meta = SnapshotMeta(index=index, term=self.term(index), conf=conf)
        self._snapshot = Snapshot(meta=meta, data=data)
        return self._snapshot

    def compact(self, compact_index: int) -> None:
        """Drop entries before `compact_index`; it becomes the dummy entry.

        Raises Compacted if already compacted past it.
        """
        offset = self._entries[0].index
        if compact_index <= offset:
            raise Compacted(f"compact to {compact_index}: already at {offset}")
        assert compact_index <= self.last_index(), (compact_index, self.last_index())
        kept = self._entries[compact_index - offset :]
        self._entries = _entry_list([Entry(term=kept[0].term, index=kept[0].index), *kept[1:]])

    def append(self, entries: list[Entry]) -> None:
        """Append, truncating any conflicting suffix (the leader's log wins)."""
        if not entries:
            return
        first = self.first_index()
        assert entries[0].index <= self.last_index() + 1, "append leaves a gap"
        if entries[-1].index < first:
            return  # Entirely covered by the snapshot already.
        if entries[0].index < first:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self._entries[0].index
        assert offset >= 1
        del self._entries[offset:]
        self._entries.extend(entries)
        assert self._entries[-1].index == self.last_index()


def _entry_list(entries: list[Entry]) -> list[Entry]:
    """`entries`, kept out of the cyclic collector: it holds up to a snapshot interval
    of (untracked) entries that a full collection would otherwise walk one by one
    (synod.gcfree). Raises nothing."""
    assert all(isinstance(entry, Entry) for entry in entries[:1])
    untrack(entries)
    return entries


def limit_size(entries: list[Entry], batch_bytes_max: int) -> list[Entry]:
    """The longest prefix within `batch_bytes_max`, but always at least one entry."""
    assert batch_bytes_max > 0
    total_bytes = 0
    for count, entry in enumerate(entries):
        total_bytes += entry.size_bytes()
        if count > 0 and total_bytes > batch_bytes_max:
            return entries[:count]
    return entries


def bootstrap(storage: MemoryStorage, conf: ConfState) -> None:
    """Give a brand-new node its initial membership, as a snapshot at index 1, term 1.

    Every founding member bootstraps with the same `conf`; nodes that join
    later start empty and learn the membership from the leader's snapshot.
    """
    assert conf.voters, "a cluster needs at least one voter"
    assert storage.last_index() == 0, "bootstrap only an empty storage"
    meta = SnapshotMeta(index=1, term=1, conf=conf)
    storage.apply_snapshot(Snapshot(meta=meta, data=b""))
    storage.set_hard_state(HardState(term=1, vote=0, commit=1))
