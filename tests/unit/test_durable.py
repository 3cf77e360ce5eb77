"""DurableStorage: the Ready cycle, snapshots, recovery and simulated crashes."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from synod.raft.storage import MemoryStorage
from synod.raft.types import (
    Compacted,
    ConfState,
    Entry,
    HardState,
    Ready,
    Snapshot,
    SnapshotMeta,
)
from synod.storage.durable import DurableStorage, StorageCorruption
from synod.storage.fs import OsFileSystem, SimFileSystem

CONF = ConfState(frozenset({1, 2, 3}))


def entries(first: int, last: int, term: int = 1) -> list[Entry]:
    return [Entry(term, index, data=b"e%d" % index) for index in range(first, last + 1)]


def opened(directory: Path, **kwargs: int) -> tuple[DurableStorage, HardState, Snapshot]:
    storage = DurableStorage(OsFileSystem(), str(directory), **kwargs)
    hard_state, snapshot = storage.load()
    return storage, hard_state, snapshot


def log_of(memory: MemoryStorage) -> list[tuple[int, int]]:
    return [(i, memory.term(i)) for i in range(memory.first_index(), memory.last_index() + 1)]


def first_indexes(storage: DurableStorage) -> list[int]:
    return [int(Path(path).name[21:37], 16) for path in storage.wal_segment_paths()]


def test_fresh_directory_loads_empty(tmp_path: Path) -> None:
    storage, hard_state, snapshot = opened(tmp_path / "node")
    assert hard_state == HardState() and snapshot.is_empty()
    assert storage.memory.last_index() == 0


def test_memory_changes_only_after_sync_and_survives_reopen(tmp_path: Path) -> None:
    storage, _, _ = opened(tmp_path)
    storage.persist(Ready(hard_state=HardState(1, 1, 0), entries=entries(1, 3)))
    assert storage.memory.last_index() == 0, "not stable before the fsync"
    storage.sync()
    assert storage.memory.last_index() == 3
    assert storage.memory.hard_state == HardState(1, 1, 0)
    storage.close()
    again, hard_state, _ = opened(tmp_path)
    assert hard_state == HardState(1, 1, 0)
    assert again.memory.entries(1, 4, 10**6) == entries(1, 3)


def test_group_commit_across_readies(tmp_path: Path) -> None:
    fs = OsFileSystem()
    storage = DurableStorage(fs, str(tmp_path))
    storage.load()
    before = fs.sync_count
    for index in range(1, 21):
        storage.persist(Ready(hard_state=HardState(1, 1, index - 1), entries=entries(index, index)))
    storage.sync()
    assert fs.sync_count - before == 1
    assert storage.memory.last_index() == 20 and storage.memory.hard_state.commit == 19


def test_save_snapshot_compacts_and_releases_only_below_the_oldest_kept(tmp_path: Path) -> None:
    storage, _, _ = opened(
        tmp_path, segment_bytes_max=600, snapshots_kept_max=2, entries_kept_after_snapshot=5
    )
    storage.persist(Ready(hard_state=HardState(1, 1, 100), entries=entries(1, 100)))
    storage.sync()
    assert first_indexes(storage)[0] == 1
    first = storage.save_snapshot(40, CONF, b"state@40")
    assert first.meta == SnapshotMeta(40, 1, CONF)
    assert storage.memory.first_index() == 36  # Compacted to 40 - 5.
    assert first_indexes(storage)[0] <= 41 < first_indexes(storage)[1]
    storage.save_snapshot(70, CONF, b"state@70")  # Snapshot 40 is still kept: no release.
    assert first_indexes(storage)[0] <= 41 < first_indexes(storage)[1]
    storage.save_snapshot(90, CONF, b"state@90")  # Oldest kept is now 70.
    assert first_indexes(storage)[0] <= 71 < first_indexes(storage)[1]
    storage.close()
    again, hard_state, snapshot = opened(tmp_path, segment_bytes_max=600)
    assert snapshot.data == b"state@90" and hard_state.commit == 100
    assert log_of(again.memory) == [(i, 1) for i in range(91, 101)]


def test_corrupt_newest_snapshot_falls_back_with_wal_entries(tmp_path: Path) -> None:
    storage, _, _ = opened(tmp_path, segment_bytes_max=600, snapshots_kept_max=2)
    storage.persist(Ready(hard_state=HardState(1, 1, 60), entries=entries(1, 60)))
    storage.sync()
    storage.save_snapshot(30, CONF, b"state@30")
    storage.save_snapshot(50, CONF, b"state@50")
    storage.close()
    newest = tmp_path / "snap" / "snap-0000000000000001-0000000000000032.snap"
    newest.write_bytes(newest.read_bytes()[:-1] + b"!")
    again, _, snapshot = opened(tmp_path)
    assert snapshot.data == b"state@30"
    assert [p.path for p in again.snapshot_problems] == [str(newest)]
    assert log_of(again.memory) == [(i, 1) for i in range(31, 61)]


def test_installed_snapshot_replaces_the_log(tmp_path: Path) -> None:
    storage, _, _ = opened(tmp_path)
    storage.persist(Ready(hard_state=HardState(1, 1, 2), entries=entries(1, 5)))
    storage.sync()
    installed = Snapshot(SnapshotMeta(50, 3, CONF), b"leader state")
    storage.persist(Ready(hard_state=HardState(3, 0, 50), snapshot=installed))
    storage.persist(Ready(entries=entries(51, 52, term=3)))
    storage.sync()
    # Memory keeps the metadata only; the bytes are read back from the file on demand.
    assert storage.memory.snapshot() == Snapshot(installed.meta, b"")
    assert storage.load_snapshot_file(installed.meta) == installed
    assert storage.memory.last_index() == 52
    storage.close()
    again, hard_state, snapshot = opened(tmp_path)
    assert snapshot == installed and hard_state == HardState(3, 0, 50)
    assert log_of(again.memory) == [(51, 3), (52, 3)] and again.memory.term(50) == 3


def test_snapshot_file_without_its_wal_marker_still_loads() -> None:
    fs = SimFileSystem(random.Random(1), torn_write_probability=0.0)
    storage = DurableStorage(fs, "/n")
    storage.load()
    storage.persist(Ready(hard_state=HardState(2, 2, 3), entries=entries(1, 8, term=2)))
    storage.sync()
    installed = Snapshot(SnapshotMeta(20, 4, CONF), b"s")
    storage.persist(Ready(hard_state=HardState(4, 0, 20), snapshot=installed))
    fs.crash()  # The snapshot file was durable; its WAL marker and hard state were not.
    again = DurableStorage(fs, "/n")
    hard_state, snapshot = again.load()
    assert snapshot == installed
    assert hard_state == HardState(4, 0, 20), "commit and term raised to the snapshot's"
    assert again.memory.last_index() == 20


def test_torn_tail_that_kept_entries_but_not_the_new_term() -> None:
    fs = SimFileSystem(random.Random(1))
    storage = DurableStorage(fs, "/n")
    storage.load()
    storage.persist(Ready(hard_state=HardState(1, 1, 0), entries=entries(1, 2)))
    storage.sync()
    storage.close()
    path = storage.wal_segment_paths()[-1]
    writer = fs.open_append(path)  # Entries of term 2, then the hard state torn off.
    from synod.raft.codec import encode_entry
    from synod.storage.wal import RecordType, encode_record

    writer.write(encode_record(RecordType.ENTRY, encode_entry(Entry(2, 3))) + b"\x05\x00")
    writer.sync()
    again = DurableStorage(fs, "/n")
    hard_state, _ = again.load()
    assert hard_state == HardState(2, 0, 0) and again.wal_repairs


def test_wal_that_cannot_continue_the_snapshot_is_refused(tmp_path: Path) -> None:
    storage, _, _ = opened(tmp_path, segment_bytes_max=400, snapshots_kept_max=1)
    storage.persist(Ready(hard_state=HardState(1, 1, 80), entries=entries(1, 80)))
    storage.sync()
    storage.save_snapshot(60, CONF, b"state@60")  # Releases segments up to 60.
    storage.close()
    for path in (tmp_path / "snap").iterdir():
        path.write_bytes(b"rotten")
    with pytest.raises(StorageCorruption, match="entries 1\\.\\.") as caught:
        opened(tmp_path)
    assert "are lost" in str(caught.value)


def test_save_snapshot_twice_at_the_same_index_is_compacted(tmp_path: Path) -> None:
    storage, _, _ = opened(tmp_path)
    storage.persist(Ready(hard_state=HardState(1, 1, 5), entries=entries(1, 5)))
    storage.sync()
    storage.save_snapshot(5, CONF, b"x")
    with pytest.raises(Compacted):
        storage.save_snapshot(5, CONF, b"x")


# -- crashes on the simulated disk, checked against a model -----------------------
@dataclass
class Model:
    """What the node wrote (terms by index) and what was acknowledged by a sync."""

    terms: dict[int, int] = field(default_factory=dict)
    last: int = 0
    term: int = 1
    vote: int = 1
    commit: int = 0
    snapshot_index: int = 0

    def copy(self) -> Model:
        return Model(dict(self.terms), self.last, self.term, self.vote, self.commit,
                     self.snapshot_index)  # fmt: skip


def _step(rng: random.Random, storage: DurableStorage, model: Model) -> int | None:
    """One random action; returns the lowest index an unsynced write touched, if any."""
    roll = rng.random()
    if roll < 0.35 or model.last == model.commit:
        first = model.last + 1
        new = entries(first, first + rng.randint(0, 4), model.term)
    elif roll < 0.45:  # A new leader overwrites an uncommitted suffix.
        model.term += 1
        model.vote = rng.randint(1, 3)
        first = rng.randint(max(model.commit, model.snapshot_index) + 1, model.last)
        new = entries(first, first + rng.randint(0, 3), model.term)
    elif roll < 0.6:
        model.commit = rng.randint(model.commit, model.last)
        storage.persist(Ready(hard_state=HardState(model.term, model.vote, model.commit)))
        return None
    elif roll < 0.65:  # The leader sends a snapshot beyond our log.
        index = model.last + rng.randint(1, 5)
        model.term += 1
        model.terms = {i: t for i, t in model.terms.items() if i < index}
        model.terms[index] = model.term
        model.last = model.commit = model.snapshot_index = index
        meta = SnapshotMeta(index, model.term, CONF)
        hard_state = HardState(model.term, 0, index)
        model.vote = 0
        storage.persist(Ready(hard_state=hard_state, snapshot=Snapshot(meta, b"%d" % index)))
        return None
    else:
        return None
    for entry in new:
        model.terms[entry.index] = entry.term
    model.terms = {i: t for i, t in model.terms.items() if i <= new[-1].index}
    model.last = new[-1].index
    storage.persist(Ready(hard_state=HardState(model.term, model.vote, model.commit), entries=new))
    return first


def _check_recovered(
    storage: DurableStorage, hard_state: HardState, acked: Model, low: int
) -> None:
    memory = storage.memory
    assert hard_state.term >= acked.term and hard_state.commit >= acked.commit, (hard_state, acked)
    if hard_state.term == acked.term:
        assert hard_state.vote == acked.vote
    snapshot_index = memory.snapshot().meta.index
    for index in range(
        max(snapshot_index, memory.first_index() - 1) + 1, min(acked.last, low - 1) + 1
    ):
        assert memory.term(index) == acked.terms[index], (index, acked.terms[index])
    assert memory.last_index() >= min(acked.last, low - 1)


def _recover(fs: SimFileSystem, model: Model, acked: Model, low: int) -> DurableStorage:
    storage = DurableStorage(fs, "/node", segment_bytes_max=1500, entries_kept_after_snapshot=3)
    hard_state, _ = storage.load()
    _check_recovered(storage, hard_state, acked, low)
    memory = storage.memory
    model.terms = {i: memory.term(i) for i in range(memory.first_index(), memory.last_index() + 1)}
    model.last, model.commit = memory.last_index(), hard_state.commit
    model.term, model.vote = hard_state.term, hard_state.vote
    model.snapshot_index = memory.snapshot().meta.index
    return storage


@pytest.mark.parametrize("seed", range(12))
def test_sim_random_crashes_never_lose_acknowledged_state(seed: int) -> None:
    rng = random.Random(seed)
    fs = SimFileSystem(rng, torn_write_probability=0.7)
    storage = DurableStorage(fs, "/node", segment_bytes_max=1500, entries_kept_after_snapshot=3)
    storage.load()
    storage.persist(Ready(hard_state=HardState(term=1, vote=1)))
    storage.sync()
    model, acked, low = Model(), Model(), 2**63
    for _step_count in range(300):
        roll = rng.random()
        if roll < 0.2:
            storage.sync()
            acked, low = model.copy(), 2**63
        elif roll < 0.25:  # The application snapshots what it applied: after a sync.
            storage.sync()
            low_index = storage.memory.snapshot().meta.index + 1
            high_index = min(model.commit, storage.memory.last_index())
            if low_index <= high_index:
                index = rng.randint(low_index, high_index)
                storage.save_snapshot(index, CONF, b"app@%d" % index)
                model.snapshot_index = index
                acked, low = model.copy(), 2**63  # save_snapshot syncs the WAL.
        elif roll < 0.3:
            fs.crash()
            storage = _recover(fs, model, acked, low)
            acked, low = model.copy(), 2**63
        else:
            touched = _step(rng, storage, model)
            low = min(low, touched or low)
    assert fs.generation > 0
