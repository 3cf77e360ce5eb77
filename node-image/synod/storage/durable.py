"""Durable storage for one Raft node: WAL + snapshot files + the MemoryStorage the core reads.

The etcd pattern: the core reads `memory` (fast, never blocks); the shell
persists each `Ready` to disk and only *after* the fsync updates `memory`, so
the core never treats as stable what a crash could still take away.

The shell's loop, exactly:

    storage = DurableStorage(fs, directory)
    hard_state, snapshot = storage.load()        # once, before building the core
    core = RaftNode(..., storage=storage.memory) # the core reads memory only
    state_machine.restore(snapshot)              # then apply entries after it
    loop:
        ready = core.ready()
        storage.persist(ready)       # 1. snapshot file + WAL records, no fsync yet
        storage.sync()               # 2. ONE fsync for everything persisted, then
                                     #    memory.apply_snapshot / append / set_hard_state
        send(ready.messages)         # 3. only now: votes and acks may leave the node
        apply(ready.snapshot, ready.committed_entries)
        core.advance(ready)
        if the application took a snapshot at `index`:
            storage.save_snapshot(index, conf, data)

`persist` may be called for several Readies before one `sync` (group commit
across them), but no message of any of those Readies may be sent before that
`sync` returns. The same code runs in the simulator over a `SimFileSystem`;
after `fs.crash()` the node builds a new `DurableStorage` and calls `load()`.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, replace

from synod.raft.storage import MemoryStorage
from synod.raft.types import (
    NONE,
    Compacted,
    ConfState,
    Entry,
    HardState,
    Ready,
    Snapshot,
    SnapshotMeta,
)
from synod.storage.fs import FileSystem
from synod.storage.snapfile import (
    SNAPSHOTS_KEPT_MAX_DEFAULT,
    SnapshotProblem,
    SnapshotStore,
    snapshot_name,
)
from synod.storage.wal import SEGMENT_BYTES_MAX_DEFAULT, SnapshotMarker, Wal, WalRepair, WalState

SNAP_DIR = "snap"  # Snapshot files, beside the WAL directory.
ENTRIES_KEPT_AFTER_SNAPSHOT_DEFAULT = 5000  # Followers this close catch up without a snapshot.
PENDING_READIES_MAX = 1024  # Bound on Readies persisted but not yet synced.


class StorageCorruption(Exception):
    """The WAL and the snapshots do not fit together; starting would lose data."""


@dataclass(slots=True)
class _Pending:
    """What one persisted Ready changes in memory once it is synced."""

    snapshot: Snapshot
    entries: list[Entry]
    hard_state: HardState | None


class DurableStorage:
    """One node's durable log. See the module docstring for the shell's call order."""

    def __init__(
        self,
        fs: FileSystem,
        directory: str,
        *,
        segment_bytes_max: int = SEGMENT_BYTES_MAX_DEFAULT,
        snapshots_kept_max: int = SNAPSHOTS_KEPT_MAX_DEFAULT,
        entries_kept_after_snapshot: int = ENTRIES_KEPT_AFTER_SNAPSHOT_DEFAULT,
    ) -> None:
        assert segment_bytes_max > 0 and snapshots_kept_max >= 1
        assert entries_kept_after_snapshot >= 0, entries_kept_after_snapshot
        self.memory = MemoryStorage()
        self.wal_repairs: list[WalRepair] = []  # Torn tails truncated by `load`.
        self.snapshot_problems: list[SnapshotProblem] = []  # Damaged snapshots set aside.
        self._fs = fs
        self._directory = directory
        self._segment_bytes_max = segment_bytes_max
        self._snapshots_kept_max = snapshots_kept_max
        self._entries_kept_after_snapshot = entries_kept_after_snapshot
        self._wal: Wal | None = None
        self._snapshots: SnapshotStore | None = None
        self._pending: list[_Pending] = []
        self._flushed = 0

    # -- start-up --------------------------------------------------------------
    def load(self) -> tuple[HardState, Snapshot]:
        """Recover from disk into `memory`; return the hard state and the snapshot.

        Repairs a torn WAL tail (`wal_repairs`) and sets damaged snapshots
        aside (`snapshot_problems`). The returned hard state is adjusted so the
        core's invariants hold after a torn tail: commit >= snapshot index, and
        term >= the last entry's term (with no vote when raised).

        Raises WalCorruption (mid-log damage), StorageCorruption (the WAL
        cannot continue the loaded snapshot, or commit is beyond the log) and
        OSError.
        """
        assert self._wal is None, "load() once per DurableStorage"
        self._fs.makedirs(self._directory)
        self._snapshots = SnapshotStore(
            self._fs, self._path(SNAP_DIR), snapshots_kept_max=self._snapshots_kept_max
        )
        self._wal, state = Wal.open(
            self._fs, self._path("wal"), segment_bytes_max=self._segment_bytes_max
        )
        self.wal_repairs = list(state.repairs)
        snapshot, self.snapshot_problems = self._snapshots.load_newest()
        entries = _entries_after(snapshot, state)
        hard_state = _recovered_hard_state(state.hard_state, snapshot, entries)
        self._mark_loaded_snapshot(snapshot, state)
        if not snapshot.is_empty():
            self.memory.apply_snapshot(_without_data(snapshot))
        self.memory.append(entries)
        self.memory.set_hard_state(hard_state)
        assert self.memory.last_index() == (entries[-1].index if entries else snapshot.meta.index)
        return hard_state, snapshot

    def _mark_loaded_snapshot(self, snapshot: Snapshot, state: WalState) -> None:
        """Make the WAL agree with the snapshot file `load` chose, when its marker was lost.

        A snapshot file becomes durable before its WAL marker; after a crash in
        between, the WAL must learn of the snapshot before anything is appended
        after it: as a local marker when its entries continue the snapshot, as
        an installed one (which discards the WAL's older log on replay) when not.
        """
        wal, _ = self._opened()
        meta = snapshot.meta
        known = any((m.index, m.term) == (meta.index, meta.term) for m in state.snapshots)
        if snapshot.is_empty() or known:
            return
        installed = state.term_at(meta.index) != meta.term
        wal.write(None, [], SnapshotMarker(meta.index, meta.term, installed=installed))
        wal.sync()
        assert wal.last_index >= meta.index

    def _path(self, name: str) -> str:
        """A subdirectory of the storage directory."""
        return posixpath.join(self._directory, name)

    def _opened(self) -> tuple[Wal, SnapshotStore]:
        """The WAL and snapshot store; asserts `load()` ran."""
        assert self._wal is not None and self._snapshots is not None, "call load() first"
        return self._wal, self._snapshots

    # -- the Ready cycle ---------------------------------------------------------
    def persist(self, ready: Ready) -> None:
        """Write `ready.snapshot` (file, then WAL marker), `ready.entries` and
        `ready.hard_state` to the WAL. Not durable and not in `memory` before `sync()`.

        Raises OSError and WalError (after an earlier failed fsync: restart).
        """
        wal, snapshots = self._opened()
        assert len(self._pending) < PENDING_READIES_MAX, "sync() after persist()"
        marker = None
        if not ready.snapshot.is_empty():
            snapshots.save(ready.snapshot)  # Durable before the marker can be.
            meta = ready.snapshot.meta
            marker = SnapshotMarker(meta.index, meta.term, installed=True)
        wal.write(ready.hard_state, ready.entries, marker)
        self._pending.append(_Pending(ready.snapshot, list(ready.entries), ready.hard_state))
        assert self._pending

    def sync(self) -> None:
        """fsync once for every `persist` since the last sync, then update `memory`.

        Messages of the persisted Readies may be sent once this returns.
        Raises OSError and WalError; after a failure the node must restart.
        """
        self.flush()
        self.publish()

    def flush(self) -> None:
        """The fsync half of `sync()`. Touches no memory state, so a node may run it in
        a worker thread while its event loop keeps reading `memory`.

        Raises OSError and WalError; after a failure the node must restart.
        """
        wal, _ = self._opened()
        wal.sync()
        self._flushed = len(self._pending)

    def publish(self) -> None:
        """The memory half of `sync()`: make flushed Readies visible to the core.
        Run it on the thread that owns the core."""
        assert self._flushed == len(self._pending), "flush() before publish()"
        installed = False
        for pending in self._pending:  # Bounded by PENDING_READIES_MAX.
            if not pending.snapshot.is_empty():
                self.memory.apply_snapshot(_without_data(pending.snapshot))
                installed = True
            self.memory.append(pending.entries)
            if pending.hard_state is not None:
                self.memory.set_hard_state(pending.hard_state)
        self._pending.clear()
        self._flushed = 0
        if installed:
            self._release_covered()
        assert not self._pending

    def record(self, ready: Ready) -> None:
        """`persist` + `publish` without an fsync, for a Ready that owes none
        (`must_sync()` is False: only the commit index moved). Losing it in a crash
        only loses a commit index, which the leader tells us again (as etcd).

        Raises OSError and WalError.
        """
        assert not ready.must_sync(), "an fsync is owed: persist() and sync()"
        assert not self._pending, "sync() the earlier persist() first"
        self.persist(ready)
        self._flushed = len(self._pending)
        self.publish()

    def save_snapshot(self, index: int, conf: ConfState, data: bytes) -> Snapshot:
        """Record the application's snapshot at `index` (<= applied) durably, then
        compact memory to `index - entries_kept_after_snapshot` and delete the WAL
        segments and snapshot files no kept snapshot needs.

        Call it only after `sync()`, never between `persist()` and `sync()`: the
        entry terms in memory must be the ones on disk.

        Raises Compacted (a snapshot at or after `index` exists), OSError, WalError.
        """
        snapshot = self.write_snapshot(index, conf, data)
        self.install_snapshot(snapshot)
        return snapshot

    def write_snapshot(self, index: int, conf: ConfState, data: bytes) -> Snapshot:
        """The durable half of `save_snapshot`: snapshot file, WAL marker, fsync. It only
        reads `memory`, so it may run in a worker thread. Raises as `save_snapshot`."""
        snapshot = Snapshot(self.snapshot_meta(index, conf), data)
        self.save_snapshot_file(snapshot)
        self.commit_snapshot_file(snapshot.meta)
        return snapshot

    def snapshot_meta(self, index: int, conf: ConfState) -> SnapshotMeta:
        """The metadata of a new snapshot at `index` (<= applied). Raises Compacted
        when a snapshot at or after `index` exists."""
        if index <= self.memory.snapshot().meta.index:
            raise Compacted(f"snapshot at {index}: have one at {self.memory.snapshot().meta.index}")
        return SnapshotMeta(index=index, term=self.memory.term(index), conf=conf)

    def save_snapshot_file(self, snapshot: Snapshot) -> str:
        """Write only the snapshot file (tmp, fsync, rename): touches neither the WAL
        nor `memory`, so a forked child process may do it. Returns its path.
        Raises OSError."""
        _, snapshots = self._opened()
        return snapshots.save(snapshot)

    def load_snapshot_file(self, meta: SnapshotMeta) -> Snapshot:
        """Read back and verify the file `save_snapshot_file` wrote for `meta`.
        Raises SnapshotCorruption, OSError."""
        _, snapshots = self._opened()
        path = self._path(posixpath.join(SNAP_DIR, snapshot_name(meta.term, meta.index)))
        snapshot = snapshots.load(path)
        if snapshot.meta != meta:
            raise StorageCorruption(f"{path}: holds {snapshot.meta}, expected {meta}")
        return snapshot

    def commit_snapshot_file(self, meta: SnapshotMeta) -> None:
        """Make a written snapshot file the one recovery starts from: WAL marker, fsync.
        Call it between Readies (never between persist() and sync()).
        Raises OSError, WalError."""
        wal, _ = self._opened()
        assert not self._pending, "a snapshot between persist() and sync()"
        wal.write(None, [], SnapshotMarker(meta.index, meta.term))
        wal.sync()

    def install_snapshot(self, snapshot: Snapshot) -> None:
        """The memory half of `save_snapshot`: adopt it, compact, release old files."""
        meta = snapshot.meta
        self.memory.create_snapshot(meta.index, meta.conf, b"")  # The file has the data.
        compact_index = meta.index - self._entries_kept_after_snapshot
        if compact_index >= self.memory.first_index():
            self.memory.compact(compact_index)
        self._release_covered()
        assert self.memory.snapshot().meta.index == meta.index

    def _release_covered(self) -> None:
        """Purge old snapshot files, then WAL segments older than the oldest kept one."""
        wal, snapshots = self._opened()
        snapshots.purge()
        oldest_index = snapshots.oldest_index()
        assert oldest_index <= self.memory.snapshot().meta.index
        wal.release_to(oldest_index)

    def close(self) -> None:
        """Close the WAL (unsynced writes stay unsynced). Raises OSError."""
        if self._wal is not None:
            self._wal.close()
        assert not self._pending or self._wal is not None

    def wal_segment_paths(self) -> list[str]:
        """The live WAL segments, oldest first (for tests and metrics)."""
        wal, _ = self._opened()
        return wal.segment_paths()


def _without_data(snapshot: Snapshot) -> Snapshot:
    """`memory` keeps a snapshot's metadata only: its bytes (a quarter of a loaded
    member's memory) stay in the snapshot file, which `load_snapshot_file` reads when
    a follower needs them (the peer transport does, in a worker thread)."""
    return Snapshot(snapshot.meta, b"")


def _entries_after(snapshot: Snapshot, state: WalState) -> list[Entry]:
    """The WAL entries that continue `snapshot`. Raises StorageCorruption on a gap."""
    index, term = snapshot.meta.index, snapshot.meta.term
    entries = state.entries
    if not entries or entries[-1].index <= index:
        return []
    if entries[0].index > index + 1:
        raise StorageCorruption(
            f"WAL entries start at {entries[0].index} but the snapshot only covers up to "
            f"{index}: entries {index + 1}..{entries[0].index - 1} are lost"
        )
    term_in_wal = state.term_at(index)
    if index > 0 and term_in_wal is not None and term_in_wal != term:
        # The snapshot file was saved but its WAL marker never became durable, and
        # the WAL holds a different branch at `index`: that branch was never committed.
        return []
    after = entries[index + 1 - entries[0].index :]
    assert after[0].index == index + 1, (after[0].index, index)
    return after


def _recovered_hard_state(
    hard_state: HardState, snapshot: Snapshot, entries: list[Entry]
) -> HardState:
    """The hard state adjusted to the recovered log. Raises StorageCorruption."""
    last_index = entries[-1].index if entries else snapshot.meta.index
    last_term = entries[-1].term if entries else snapshot.meta.term
    if last_term > hard_state.term:  # A torn tail kept the entries but not the new term.
        hard_state = HardState(term=last_term, vote=NONE, commit=hard_state.commit)
    if hard_state.commit < snapshot.meta.index:  # The snapshot proves that much committed.
        hard_state = replace(hard_state, commit=snapshot.meta.index)
    if hard_state.commit > last_index:
        raise StorageCorruption(
            f"commit index {hard_state.commit} is beyond the last recovered entry {last_index}"
        )
    assert hard_state.term >= last_term and hard_state.commit >= snapshot.meta.index
    return hard_state
