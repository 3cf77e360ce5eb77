"""Snapshot files: atomic save, verification, fallback and purge (synod.storage.snapfile)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from synod.raft.types import EMPTY_SNAPSHOT, ConfState, Snapshot, SnapshotMeta
from synod.storage.fs import OsFileSystem, SimFileSystem
from synod.storage.snapfile import (
    SnapshotCorruption,
    SnapshotStore,
    encode_snapshot_file,
    snapshot_name,
)


def snap(index: int, term: int = 2, size: int = 100) -> Snapshot:
    conf = ConfState(frozenset({1, 2, 3}), frozenset({4}))
    return Snapshot(SnapshotMeta(index, term, conf), bytes([index % 256]) * size)


def store(directory: Path, kept: int = 3) -> SnapshotStore:
    return SnapshotStore(OsFileSystem(), str(directory), snapshots_kept_max=kept)


def test_save_and_load(tmp_path: Path) -> None:
    path = store(tmp_path).save(snap(10))
    assert Path(path).name == "snap-0000000000000002-000000000000000a.snap"
    assert os.listdir(tmp_path) == [Path(path).name]  # No .tmp left behind.
    snapshot, problems = store(tmp_path).load_newest()
    assert snapshot == snap(10) and problems == []


def test_empty_directory_loads_the_empty_snapshot(tmp_path: Path) -> None:
    assert store(tmp_path).load_newest() == (EMPTY_SNAPSHOT, [])


def test_newest_is_chosen_by_index(tmp_path: Path) -> None:
    snapshots = store(tmp_path)
    for index, term in [(5, 1), (20, 3), (12, 9)]:
        snapshots.save(snap(index, term))
    assert snapshots.load_newest()[0] == snap(20, 3)
    assert snapshots.oldest_index() == 5


@pytest.mark.parametrize("offset", [0, 8, 9, 12, 13, 40, -1])
def test_corrupt_newest_falls_back_to_previous(tmp_path: Path, offset: int) -> None:
    snapshots = store(tmp_path)
    snapshots.save(snap(10))
    newest = snapshots.save(snap(20))
    data = bytearray(Path(newest).read_bytes())
    data[offset] ^= 0x20
    Path(newest).write_bytes(bytes(data))
    snapshot, [problem] = store(tmp_path).load_newest()
    assert snapshot == snap(10)
    assert problem.path == newest and problem.reason
    assert os.path.exists(newest + ".broken") and not os.path.exists(newest)
    assert store(tmp_path).load_newest() == (snap(10), [])  # Set aside for good.


def test_truncated_file_and_misnamed_file_are_corrupt(tmp_path: Path) -> None:
    snapshots = store(tmp_path)
    path = snapshots.save(snap(10))
    os.truncate(path, 5)
    with pytest.raises(SnapshotCorruption, match="shorter than the header"):
        snapshots.load(path)
    misnamed = tmp_path / snapshot_name(2, 11)
    misnamed.write_bytes(encode_snapshot_file(snap(10)))
    with pytest.raises(SnapshotCorruption, match="content is snapshot") as caught:
        snapshots.load(str(misnamed))
    assert caught.value.path == str(misnamed)


def test_all_corrupt_gives_the_empty_snapshot(tmp_path: Path) -> None:
    path = store(tmp_path).save(snap(10))
    Path(path).write_bytes(b"garbage" * 10)
    snapshot, problems = store(tmp_path).load_newest()
    assert snapshot.is_empty() and [p.path for p in problems] == [path]


def test_purge_keeps_the_newest(tmp_path: Path) -> None:
    snapshots = store(tmp_path, kept=2)
    paths = [snapshots.save(snap(index)) for index in (1, 2, 3, 4)]
    assert snapshots.purge() == paths[:2]
    assert snapshots.paths() == paths[2:]
    assert snapshots.purge() == []


def test_stale_temporary_file_is_removed_on_open(tmp_path: Path) -> None:
    (tmp_path / (snapshot_name(1, 1) + ".tmp")).write_bytes(b"half a snap")
    snapshots = store(tmp_path)
    assert os.listdir(tmp_path) == [] and snapshots.paths() == []


# -- the simulated disk --------------------------------------------------------
@pytest.mark.parametrize("seed", range(20))
def test_sim_saved_snapshot_survives_any_crash(seed: int) -> None:
    fs = SimFileSystem(random.Random(seed), torn_write_probability=1.0)
    SnapshotStore(fs, "/n/snap").save(snap(7))
    fs.crash()
    assert SnapshotStore(fs, "/n/snap").load_newest() == (snap(7), [])


@pytest.mark.parametrize("seed", range(20))
def test_sim_crash_during_save_keeps_old_or_new_never_a_torn_one(seed: int) -> None:
    fs = SimFileSystem(random.Random(seed), torn_write_probability=1.0)
    SnapshotStore(fs, "/n/snap").save(snap(7))
    temporary = "/n/snap/" + snapshot_name(2, 9) + ".tmp"
    file = fs.open_append(temporary)  # A save interrupted before its fsync and rename.
    file.write(encode_snapshot_file(snap(9)))
    fs.crash()
    snapshots = SnapshotStore(fs, "/n/snap")
    assert snapshots.load_newest() == (snap(7), [])
    assert not fs.exists(temporary)
