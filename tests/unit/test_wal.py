"""The segmented WAL on real files and on the simulated disk (synod.storage.wal)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from synod.raft.types import Entry, HardState
from synod.storage.fs import OsFileSystem, SimFileSystem
from synod.storage.wal import (
    RecordType,
    SnapshotMarker,
    Wal,
    WalCorruption,
    WalError,
    WalState,
    encode_record,
    segment_name,
)


def entries(first: int, last: int, term: int = 1, size: int = 20) -> list[Entry]:
    return [
        Entry(term, index, data=bytes([index % 251]) * size) for index in range(first, last + 1)
    ]


def indexes(state: WalState) -> list[int]:
    return [entry.index for entry in state.entries]


def reopen(directory: Path, **kwargs: int) -> tuple[Wal, WalState]:
    return Wal.open(OsFileSystem(), str(directory), **kwargs)


def test_write_sync_reopen(tmp_path: Path) -> None:
    wal, state = reopen(tmp_path)
    assert state.entries == [] and state.hard_state == HardState()
    wal.write(HardState(term=1, vote=2, commit=0), entries(1, 10))
    wal.write(HardState(term=1, vote=2, commit=7), entries(11, 12))
    wal.sync()
    wal.close()
    _, state = reopen(tmp_path)
    assert state.entries == entries(1, 12)
    assert state.hard_state == HardState(1, 2, 7)
    assert state.repairs == []


def test_group_commit_one_fsync_for_many_writes(tmp_path: Path) -> None:
    fs = OsFileSystem()
    wal, _ = Wal.open(fs, str(tmp_path))
    before = fs.sync_count
    for index in range(1, 101):
        wal.write(HardState(1, 1, index - 1), entries(index, index))
    wal.sync()
    wal.sync()  # Nothing new: no fsync.
    assert fs.sync_count - before == 1
    assert wal.sync_count == 1


def test_rollover_carries_hard_state_and_marker_over_released_segments(tmp_path: Path) -> None:
    fs = OsFileSystem()
    wal, _ = Wal.open(fs, str(tmp_path), segment_bytes_max=1000)
    wal.write(HardState(3, 1, 5), entries(1, 5, term=3))
    wal.write(None, [], SnapshotMarker(5, 3))
    wal.write(None, entries(6, 80, term=3))
    wal.sync()
    paths = wal.segment_paths()
    assert len(paths) >= 3
    assert Path(paths[0]).name == "wal-0000000000000000-0000000000000001.log"
    assert [int(Path(p).name[4:20], 16) for p in paths] == list(range(len(paths)))
    released = wal.release_to(40)
    assert released and released == paths[: len(released)]
    wal.close()
    _, state = Wal.open(fs, str(tmp_path))
    assert state.hard_state == HardState(3, 1, 5)
    assert state.snapshots[-1] == SnapshotMarker(5, 3)
    assert state.entries[-1].index == 80
    assert state.entries[0].index <= 41


def test_release_never_removes_segments_above_index_or_the_last(tmp_path: Path) -> None:
    wal, _ = reopen(tmp_path, segment_bytes_max=600)
    wal.write(None, entries(1, 30))
    wal.sync()
    paths = wal.segment_paths()
    assert wal.release_to(0) == []
    assert wal.release_to(10**9) == paths[:-1]
    assert wal.segment_paths() == paths[-1:]


def test_overwritten_suffix_latest_record_wins(tmp_path: Path) -> None:
    wal, _ = reopen(tmp_path, segment_bytes_max=700)
    wal.write(HardState(1, 1, 3), entries(1, 10, term=1))
    wal.write(HardState(2, 2, 3), entries(5, 7, term=2))  # New leader: 5.. replaced.
    wal.write(None, entries(8, 8, term=2))
    wal.write(HardState(3, 3, 3), entries(7, 7, term=3))
    wal.sync()
    wal.close()
    _, state = reopen(tmp_path)
    assert [(e.index, e.term) for e in state.entries] == [
        (1, 1), (2, 1), (3, 1), (4, 1), (5, 2), (6, 2), (7, 3),
    ]  # fmt: skip


def test_installed_snapshot_marker_replaces_the_log(tmp_path: Path) -> None:
    wal, _ = reopen(tmp_path)
    wal.write(None, entries(1, 10))
    wal.write(HardState(2, 0, 50), entries(51, 52, term=2), SnapshotMarker(50, 2, installed=True))
    wal.write(None, [], SnapshotMarker(51, 2))  # Local compaction keeps the entries.
    wal.sync()
    wal.close()
    _, state = reopen(tmp_path)
    assert indexes(state) == [51, 52]
    assert state.snapshots == [SnapshotMarker(50, 2, installed=True), SnapshotMarker(51, 2)]
    assert state.term_at(50) == 2 and state.term_at(52) == 2 and state.term_at(9) is None


def test_record_above_the_bound_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WalError, match="exceeds"):
        encode_record(RecordType.ENTRY, bytes(64 * 1024 * 1024 + 1))


# -- torn tails and corruption ---------------------------------------------------
def _written(tmp_path: Path, segment_bytes_max: int = 10**9) -> list[str]:
    wal, _ = reopen(tmp_path, segment_bytes_max=segment_bytes_max)
    wal.write(HardState(1, 1, 0), entries(1, 30))
    wal.sync()
    wal.close()
    return wal.segment_paths()


@pytest.mark.parametrize("cut_bytes", [1, 5, 9, 10, 25])
def test_torn_last_record_is_truncated_and_reported(tmp_path: Path, cut_bytes: int) -> None:
    [path] = _written(tmp_path)
    size = os.path.getsize(path)
    # The last record is the hard state; tear off the end of the last entry instead.
    record_bytes = len(encode_record(RecordType.HARD_STATE, b"\x93\x01\x01\x00"))
    os.truncate(path, size - record_bytes - cut_bytes)
    wal, state = reopen(tmp_path)
    assert indexes(state) == list(range(1, 30))
    [repair] = state.repairs
    assert repair.path == path and os.path.getsize(path) == repair.offset_bytes
    wal.write(None, entries(30, 31))  # The repaired log appends cleanly.
    wal.sync()
    wal.close()
    _, state = reopen(tmp_path)
    assert indexes(state) == list(range(1, 32)) and state.repairs == []


@pytest.mark.parametrize("zeros", [1, 9, 100, 4096])
def test_zero_filled_tail_is_truncated(tmp_path: Path, zeros: int) -> None:
    [path] = _written(tmp_path)
    size = os.path.getsize(path)
    with open(path, "ab") as file:
        file.write(bytes(zeros))
    _, state = reopen(tmp_path)
    assert indexes(state) == list(range(1, 31))
    assert state.repairs[0].offset_bytes == size and "zero" in state.repairs[0].reason


def test_record_with_a_zeroed_sector_is_torn(tmp_path: Path) -> None:
    wal, _ = reopen(tmp_path)
    wal.write(None, entries(1, 1))
    wal.sync()
    start = os.path.getsize(wal.segment_paths()[0])
    wal.write(None, [Entry(1, 2, data=b"y" * 2000)])
    wal.sync()
    wal.close()
    path = wal.segment_paths()[0]
    data = bytearray(Path(path).read_bytes())
    data[1024:1536] = bytes(512)  # The disk never wrote this sector.
    Path(path).write_bytes(bytes(data))
    _, state = reopen(tmp_path)
    assert indexes(state) == [1]
    assert state.repairs[0].offset_bytes == start


@pytest.mark.parametrize("offset_in_record", [0, 3, 4, 8, 9, 12])
def test_flipped_byte_in_a_middle_segment_names_file_and_offset(
    tmp_path: Path, offset_in_record: int
) -> None:
    paths = _written(tmp_path, segment_bytes_max=400)
    assert len(paths) >= 3
    middle = paths[1]
    data = bytearray(Path(middle).read_bytes())
    record_offset = 9 + 17  # Skip the segment header record.
    data[record_offset + offset_in_record] ^= 0x40
    Path(middle).write_bytes(bytes(data))
    with pytest.raises(WalCorruption) as caught:
        reopen(tmp_path)
    assert caught.value.path == middle and caught.value.offset_bytes == record_offset
    assert middle in str(caught.value) and f"byte {record_offset}" in str(caught.value)


def test_flipped_byte_in_the_last_segment_before_valid_records_is_corruption(
    tmp_path: Path,
) -> None:
    [path] = _written(tmp_path)
    data = bytearray(Path(path).read_bytes())
    data[200] ^= 0x01
    Path(path).write_bytes(bytes(data))
    with pytest.raises(WalCorruption, match="checksum mismatch"):
        reopen(tmp_path)
    assert Path(path).read_bytes() == bytes(data)  # Refusing never modifies the file.


def test_enlarged_length_field_in_the_last_segment_is_corruption(tmp_path: Path) -> None:
    [path] = _written(tmp_path)
    data = bytearray(Path(path).read_bytes())
    record_offset = 9 + 17
    data[record_offset + 2] = 0x7F  # Length now runs past the end of the file.
    Path(path).write_bytes(bytes(data))
    with pytest.raises(WalCorruption, match="runs past the end") as caught:
        reopen(tmp_path)
    assert caught.value.offset_bytes == record_offset


def test_missing_middle_segment_is_corruption(tmp_path: Path) -> None:
    paths = _written(tmp_path, segment_bytes_max=400)
    os.remove(paths[1])
    with pytest.raises(WalCorruption, match="segment 1 is missing"):
        reopen(tmp_path)


def test_torn_header_of_a_new_segment_is_removed(tmp_path: Path) -> None:
    paths = _written(tmp_path, segment_bytes_max=400)
    torn = tmp_path / segment_name(len(paths), 31)  # A rollover died before its fsync.
    torn.write_bytes(encode_record(RecordType.SEGMENT_HEADER, b"x" * 17)[:5])
    wal, state = reopen(tmp_path, segment_bytes_max=400)
    assert not torn.exists()
    assert state.entries[-1].index == 30 and state.repairs[0].path == str(torn)
    wal.write(None, entries(state.entries[-1].index + 1, 40))
    wal.sync()
    wal.close()
    assert reopen(tmp_path)[1].entries[-1].index == 40


# -- kill -9 in the middle of writes --------------------------------------------
CHILD = textwrap.dedent(
    """
    import sys
    from synod.storage.fs import OsFileSystem
    from synod.raft.types import Entry, HardState
    from synod.storage.wal import Wal

    wal, state = Wal.open(OsFileSystem(), sys.argv[1], segment_bytes_max=64 * 1024)
    index = state.entries[-1].index if state.entries else 0
    for _batch in range(100_000):
        batch = [Entry(1, index + k, data=b"z" * (index % 700)) for k in range(1, 8)]
        wal.write(HardState(1, 1, index), batch)
        wal.sync()
        index = batch[-1].index
        print(index, flush=True)
    """
)


# The child acknowledges a batch every few milliseconds; this spreads kills over ~0.3 s.
ACKS_BEFORE_KILL_MAX = 100


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_mid_write_keeps_every_acknowledged_index(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    acknowledged = 0
    for _round in range(2):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert child.stdout is not None
        first = child.stdout.readline()  # The child is writing.
        assert first.strip(), "child printed nothing"
        # Kill it after a random number of acknowledged batches: it keeps writing while
        # we read, so the kill lands at an arbitrary point of a write.
        for _ in range(rng.randint(0, ACKS_BEFORE_KILL_MAX)):
            assert child.stdout.readline().strip(), "child stopped writing"
        child.send_signal(signal.SIGKILL)
        output, _ = child.communicate()
        acknowledged = int((first + output).split()[-1])
        assert child.returncode == -signal.SIGKILL
        _, state = reopen(tmp_path)
        assert indexes(state) == list(range(1, len(state.entries) + 1))
        assert state.entries[-1].index >= acknowledged


# -- the simulated disk -----------------------------------------------------------
def _sim_run(seed: int, torn_write_probability: float) -> tuple[WalState, int, bytes]:
    rng = random.Random(seed)
    fs = SimFileSystem(rng, torn_write_probability=torn_write_probability)
    wal, _ = Wal.open(fs, "/node/wal", segment_bytes_max=2000)
    for batch in range(rng.randint(5, 40)):
        first = batch * 5 + 1
        wal.write(
            HardState(1, 1, max(0, first - 1)), entries(first, first + 4, size=rng.randint(0, 300))
        )
        if rng.random() < 0.6:
            wal.sync()
            assert wal.synced_last_index == first + 4
    synced = wal.synced_last_index
    fs.crash()
    _, state = Wal.open(fs, "/node/wal", segment_bytes_max=2000)
    disk = b"".join(fs.read_bytes(f"/node/wal/{name}") for name in fs.list_dir("/node/wal"))
    return state, synced, disk


@pytest.mark.parametrize("seed", range(40))
def test_sim_crash_keeps_synced_repairs_torn_tail(seed: int) -> None:
    state, synced, _ = _sim_run(seed, torn_write_probability=0.8)
    assert indexes(state) == list(range(1, len(state.entries) + 1))
    assert len(state.entries) >= synced


@pytest.mark.parametrize("seed", range(10))
def test_sim_crash_without_torn_writes_loses_exactly_the_unsynced(seed: int) -> None:
    state, synced, _ = _sim_run(seed, torn_write_probability=0.0)
    assert len(state.entries) == synced
    assert state.repairs == []


def test_sim_same_seed_same_disk() -> None:
    runs = [_sim_run(7, torn_write_probability=1.0) for _ in range(2)]
    assert runs[0][2] == runs[1][2] and runs[0][0] == runs[1][0]
    torn = [seed for seed in range(30) if _sim_run(seed, torn_write_probability=1.0)[0].repairs]
    assert torn, "a torn tail must occur for some seed"


# -- SimFileSystem itself ---------------------------------------------------------
def _sim_file(seed: int, torn_write_probability: float) -> tuple[SimFileSystem, str]:
    fs = SimFileSystem(random.Random(seed), torn_write_probability=torn_write_probability)
    fs.makedirs("/d")
    file = fs.open_append("/d/f")
    file.write(b"synced")
    file.sync()
    fs.sync_dir("/d")
    file.write(b"-unsynced-" * 100)
    return fs, "/d/f"


def test_sim_fs_crash_keeps_synced_and_loses_unsynced() -> None:
    fs, path = _sim_file(1, torn_write_probability=0.0)
    assert fs.unsynced_bytes() == 1000
    fs.crash()
    assert fs.read_bytes(path) == b"synced" and fs.unsynced_bytes() == 0


@pytest.mark.parametrize("seed", range(20))
def test_sim_fs_torn_tail_is_a_prefix_or_zero_filled(seed: int) -> None:
    fs, path = _sim_file(seed, torn_write_probability=1.0)
    fs.crash()
    data = fs.read_bytes(path)
    written = b"synced" + b"-unsynced-" * 100
    assert data.startswith(b"synced") and len(data) <= len(written)
    real = data.rstrip(b"\x00")
    assert written.startswith(real)


def test_sim_fs_unsynced_create_and_rename_may_be_lost_but_rename_is_atomic() -> None:
    outcomes = set()
    for seed in range(30):
        fs = SimFileSystem(random.Random(seed))
        fs.makedirs("/d")
        file = fs.open_append("/d/a.tmp")
        file.write(b"x")
        file.sync()
        fs.rename("/d/a.tmp", "/d/a")
        fs.crash()
        names = tuple(fs.list_dir("/d"))
        assert names in {(), ("a.tmp",), ("a",)}
        outcomes.add(names)
    assert len(outcomes) == 3, outcomes


def test_sim_fs_synced_directory_keeps_its_entries() -> None:
    fs = SimFileSystem(random.Random(3))
    fs.makedirs("/d")
    fs.open_append("/d/a").close()
    fs.sync_dir("/d")
    fs.remove("/d/a")
    fs.open_append("/d/b").close()
    fs.sync_dir("/d")
    fs.crash()
    assert fs.list_dir("/d") == ["b"]


def test_sim_fs_handles_die_with_a_crash() -> None:
    fs, path = _sim_file(1, torn_write_probability=0.0)
    file = fs.open_append(path)
    fs.crash()
    with pytest.raises(AssertionError, match="predates a crash"):
        file.write(b"late")
    with pytest.raises(FileNotFoundError):
        fs.read_bytes("/d/missing")


def test_failed_fsync_poisons_the_wal(monkeypatch: pytest.MonkeyPatch) -> None:
    fs = SimFileSystem(random.Random(1))
    wal, _ = Wal.open(fs, "/w")
    wal.write(None, entries(1, 1))

    def failing_sync() -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(wal._file, "sync", failing_sync)
    with pytest.raises(OSError):
        wal.sync()
    with pytest.raises(WalError, match="unusable"):
        wal.write(None, entries(2, 2))
    with pytest.raises(WalError, match="unusable"):
        wal.sync()
