"""The segmented write-ahead log: what the node promised, durable before it says so.

Layout: one directory of segment files `wal-<seq:016x>-<first_index:016x>.log`,
`seq` counting from 0 without gaps and `first_index` the index the segment's
first entry was expected to have when it was created (informational: later
appends may overwrite lower indexes).

Record: `length u32 | crc u32 | type u8 | payload`, little-endian, where
`length` is the payload's size and `crc` the CRC32C of type and payload.

The CRC is *not* chained to the previous record's (etcd chains it). Chaining
protects against stale records left after a crash in a reused or preallocated
file; we never reuse or preallocate (a torn tail is truncated before the next
append), so it would buy nothing, while independent CRCs let recovery check
whether a well-formed record follows a bad one, which is how it tells a torn
tail (nothing valid after the damage) from mid-log corruption.

Every segment starts with a SEGMENT_HEADER record (version, seq, first_index)
and then re-states the latest hard state and snapshot marker ("carry-over"),
so deleting older segments never loses them.

Durability protocol:
* `write()` only buffers; `sync()` writes and fsyncs once for everything
  written since the previous sync (group commit).
* Rolling over to a new segment first fsyncs the full one, then creates the
  new file, fsyncs it and its directory. Hence every segment but the last is
  complete and synced, and damage in one of them is corruption, never a torn
  write.

Recovery (`Wal.open`): replays all segments. In the last segment, a damaged
record is a *torn tail* when it runs past the end of the file with no
well-formed record after it, when everything from it to the end of the file is
zero, or when one of its 512-byte sector pieces is all zero (etcd's rule: the
disk had extended the file but not written that sector). The torn tail is
truncated (and reported in `WalState.repairs`). Any other damage raises
`WalCorruption` naming file and byte offset: acknowledged data is never
dropped silently.

Replay semantics follow etcd's WAL: an entry at index i replaces the entry at
i and everything after it (a new leader overwrote an uncommitted suffix); an
*installed* snapshot marker (a snapshot received from the leader) replaces the
whole log, like `MemoryStorage.apply_snapshot`; a *local* marker (the
application compacted) keeps the entries.
"""

from __future__ import annotations

import enum
import itertools
import posixpath
import re
import struct
from dataclasses import dataclass, field

import crc32c

from synod.raft import codec
from synod.raft.types import EMPTY_HARD_STATE, Entry, HardState
from synod.storage.fs import AppendFile, FileSystem

WAL_VERSION = 1
SEGMENT_BYTES_MAX_DEFAULT = 64 * 1024 * 1024
RECORD_BYTES_MAX = 64 * 1024 * 1024  # A longer record is refused on write and damage on read.
WRITE_BUFFER_BYTES_MAX = 1024 * 1024  # Buffered records are handed to the OS beyond this.
SEGMENTS_MAX = 1_000_000  # Bound on the number of segment files in one directory.
SECTOR_BYTES = 512

_HEADER = struct.Struct("<IIB")  # payload length, crc32c(type + payload), type
_SEGMENT_HEADER = struct.Struct("<BQQ")  # version, seq, first index
_MARKER = struct.Struct("<QQ?")  # index, term, installed
_SEGMENT_NAME = re.compile(r"^wal-([0-9a-f]{16})-([0-9a-f]{16})\.log$")


class RecordType(enum.IntEnum):
    """Kinds of WAL records. 0 is never valid, so a zero-filled header is damage."""

    SEGMENT_HEADER = 1
    ENTRY = 2
    HARD_STATE = 3
    SNAPSHOT_MARKER = 4


_RECORD_TYPES = frozenset(int(kind) for kind in RecordType)
_TYPE_BYTES = re.compile(b"[\x01-\x04]")  # Candidate type bytes when scanning for records.


class WalError(Exception):
    """The WAL cannot be used (a failed fsync, a record too large, a bad directory)."""


class WalCorruption(WalError):
    """Damage that cannot be a torn write: recovery refuses rather than lose data."""

    def __init__(self, path: str, offset_bytes: int, reason: str) -> None:
        super().__init__(f"WAL corrupt: {path} at byte {offset_bytes}: {reason}")
        self.path = path
        self.offset_bytes = offset_bytes
        self.reason = reason


@dataclass(frozen=True, slots=True)
class WalRepair:
    """A torn tail that recovery truncated."""

    path: str
    offset_bytes: int  # The file now ends here.
    dropped_bytes: int
    reason: str


@dataclass(frozen=True, slots=True)
class SnapshotMarker:
    """A snapshot's position in the log. `installed`: received from a leader."""

    index: int
    term: int
    installed: bool = False


@dataclass(slots=True)
class WalState:
    """What replay found: the log as the shell last persisted it."""

    hard_state: HardState = EMPTY_HARD_STATE
    snapshots: list[SnapshotMarker] = field(default_factory=list)  # Oldest first.
    entries: list[Entry] = field(default_factory=list)  # Contiguous indexes.
    repairs: list[WalRepair] = field(default_factory=list)

    def term_at(self, index: int) -> int | None:
        """The term of `index` according to the entries or a snapshot marker, if known."""
        if self.entries and self.entries[0].index <= index <= self.entries[-1].index:
            return self.entries[index - self.entries[0].index].term
        terms = [marker.term for marker in self.snapshots if marker.index == index]
        return terms[-1] if terms else None


@dataclass(slots=True)
class _Segment:
    """One segment file, its size and the largest entry index it holds (0: none)."""

    seq: int
    first_index: int
    path: str
    entry_index_max: int = 0
    size_bytes: int = 0


def segment_name(seq: int, first_index: int) -> str:
    """The file name of a segment."""
    assert 0 <= seq < 2**64 and 0 <= first_index < 2**64, (seq, first_index)
    return f"wal-{seq:016x}-{first_index:016x}.log"


def encode_record(kind: RecordType, payload: bytes) -> bytes:
    """One record: header and payload. Raises WalError if the payload is too large."""
    if len(payload) > RECORD_BYTES_MAX:
        raise WalError(f"record of {len(payload)} bytes exceeds {RECORD_BYTES_MAX}")
    crc = crc32c.crc32c(payload, crc32c.crc32c(bytes((kind,))))
    record = _HEADER.pack(len(payload), crc, kind) + payload
    assert len(record) == _HEADER.size + len(payload)
    return record


# -- reading ---------------------------------------------------------------------
def _parse_record(data: bytes, offset: int) -> tuple[int, bytes, int] | str:
    """(type, payload, next offset) of the record at `offset`, or what is wrong with it."""
    assert 0 <= offset < len(data), (offset, len(data))
    if len(data) - offset < _HEADER.size:
        return "incomplete record header"
    length, crc, kind = _HEADER.unpack_from(data, offset)
    end = offset + _HEADER.size + length
    if length > RECORD_BYTES_MAX:
        return f"record length {length} exceeds {RECORD_BYTES_MAX}"
    if end > len(data):
        return f"record of {length} bytes runs past the end of the file"
    payload = data[offset + _HEADER.size : end]
    if crc32c.crc32c(payload, crc32c.crc32c(bytes((kind,)))) != crc:
        return "checksum mismatch"
    if kind not in _RECORD_TYPES:
        return f"unknown record type {kind}"
    return kind, payload, end


def _record_extent(data: bytes, offset: int) -> int | None:
    """End of the damaged record at `offset` if its header is whole and fits the file."""
    if len(data) - offset < _HEADER.size:
        return None
    length = _HEADER.unpack_from(data, offset)[0]
    end = offset + _HEADER.size + length
    return end if length <= RECORD_BYTES_MAX and end <= len(data) else None


def _well_formed_record_after(data: bytes, offset: int) -> int | None:
    """Offset of the first record after `offset` whose CRC verifies, if any."""
    for match in _TYPE_BYTES.finditer(data, offset + 1 + _HEADER.size - 1):  # Bounded by data.
        candidate = match.start() - (_HEADER.size - 1)
        if not isinstance(_parse_record(data, candidate), str):
            return candidate
    return None


def _has_zero_sector_piece(data: bytes, start: int, end: int) -> bool:
    """True if a piece of [start, end) between 512-byte file boundaries is all zero."""
    assert 0 <= start < end <= len(data), (start, end, len(data))
    piece_start = start
    for _piece in range((end - start) // SECTOR_BYTES + 2):
        piece_end = min(end, (piece_start // SECTOR_BYTES + 1) * SECTOR_BYTES)
        if not data[piece_start:piece_end].strip(b"\x00"):
            return True
        piece_start = piece_end
        if piece_start >= end:
            return False
    raise AssertionError("unreachable: the pieces cover [start, end)")


def _torn_tail_reason(data: bytes, offset: int, problem: str) -> str | None:
    """Why the damage at `offset` of the last segment is a torn write, or None if it is not."""
    if not data[offset:].strip(b"\x00"):
        return f"zero-filled tail ({problem})"
    end = _record_extent(data, offset)
    if end is None:
        following = _well_formed_record_after(data, offset)
        return f"torn last record ({problem})" if following is None else None
    if _has_zero_sector_piece(data, offset, end):
        return f"torn record with a zero sector ({problem})"
    return None


class _Replay:
    """Applies records in order, with etcd's overwrite semantics."""

    def __init__(self) -> None:
        self.state = WalState()
        self.next_index: int | None = None  # Required index of the next entry, when known.

    def entry(self, entry: Entry, where: tuple[str, int]) -> None:
        """Append `entry`, replacing any entry at or after its index.

        An entry below the first replayed one is legal: it overwrote entries
        that lived in segments released since; the log restarts at it.
        Raises WalCorruption for a gap, or an entry at or below an installed
        snapshot.
        """
        entries = self.state.entries
        if self.next_index is not None and entry.index < self.next_index:
            raise WalCorruption(*where, f"entry {entry.index} below installed snapshot")
        if not entries or entry.index < entries[0].index:
            if self.next_index is not None and not entries and entry.index != self.next_index:
                raise WalCorruption(*where, f"entry {entry.index}, expected {self.next_index}")
            self.state.entries = [entry]
            return
        first, last = entries[0].index, entries[-1].index
        if entry.index > last + 1:
            raise WalCorruption(*where, f"entry {entry.index} leaves a gap after {last}")
        del entries[entry.index - first :]
        entries.append(entry)
        assert entries[-1].index - entries[0].index == len(entries) - 1

    def marker(self, marker: SnapshotMarker) -> None:
        """Record a snapshot; an installed one newer than the last replaces the log."""
        latest = self.state.snapshots[-1] if self.state.snapshots else None
        if latest is not None and (
            (marker.index, marker.term) == (latest.index, latest.term)
            or (marker.installed and marker.index <= latest.index)
        ):
            return  # A carry-over repeat, or a stale snapshot that memory ignored too.
        if marker.installed:
            self.state.entries = []
            self.next_index = marker.index + 1
        self.state.snapshots.append(marker)

    def record(self, kind: int, payload: bytes, segment: _Segment, offset: int) -> None:
        """Apply one non-header record. Raises WalCorruption on an undecodable payload."""
        where = (segment.path, offset)
        try:
            if kind == RecordType.ENTRY:
                entry = codec.decode_entry(payload)
                self.entry(entry, where)
                segment.entry_index_max = max(segment.entry_index_max, entry.index)
            elif kind == RecordType.HARD_STATE:
                self.state.hard_state = codec.decode_hard_state(payload)
            elif kind == RecordType.SNAPSHOT_MARKER:
                self.marker(SnapshotMarker(*_MARKER.unpack(payload)))
            else:
                raise WalCorruption(*where, f"unexpected record type {kind}")
        except (codec.CodecError, struct.error) as error:
            raise WalCorruption(*where, f"undecodable payload: {error}") from error


# -- the log ---------------------------------------------------------------------
class Wal:
    """An open WAL, positioned to append to its last segment. Use `Wal.open`."""

    def __init__(
        self,
        fs: FileSystem,
        directory: str,
        segments: list[_Segment],
        state: WalState,
        segment_bytes_max: int,
    ) -> None:
        assert segments, "open() creates the first segment"
        assert segment_bytes_max > _HEADER.size, segment_bytes_max
        self._fs = fs
        self._directory = directory
        self._segments = segments
        self._segment_bytes_max = segment_bytes_max
        self._hard_state = state.hard_state
        self._marker: SnapshotMarker | None = state.snapshots[-1] if state.snapshots else None
        self._last_index = state.entries[-1].index if state.entries else self._marker_index()
        self._file: AppendFile = fs.open_append(segments[-1].path)
        self._segment_bytes = segments[-1].size_bytes
        self._synced_last_index = self._last_index
        self._buffer = bytearray()
        self._unsynced = False
        self._failure: BaseException | None = None
        self.sync_count = 0  # fsyncs of segment data, for group-commit metrics.

    def _marker_index(self) -> int:
        """Index of the latest snapshot marker, 0 without one."""
        return 0 if self._marker is None else self._marker.index

    @classmethod
    def open(
        cls,
        fs: FileSystem,
        directory: str,
        *,
        segment_bytes_max: int = SEGMENT_BYTES_MAX_DEFAULT,
    ) -> tuple[Wal, WalState]:
        """Replay the WAL in `directory` (created if missing), repairing a torn tail.

        Raises WalCorruption on damage that is not a torn tail, a missing
        segment or a foreign header; OSError on I/O failure.
        """
        fs.makedirs(directory)
        segments = _list_segments(fs, directory)
        replay = _Replay()
        for position, segment in enumerate(segments):
            is_last = position == len(segments) - 1
            _replay_segment(fs, segment, replay, is_last=is_last)
        if segments and segments[-1].size_bytes == 0:
            fs.remove(segments.pop().path)  # A rollover that died before its header was durable.
            fs.sync_dir(directory)
        if not segments:
            segments.append(_create_segment(fs, directory, 0, _next_index(replay.state), b""))
        return cls(fs, directory, segments, replay.state, segment_bytes_max), replay.state

    # -- writing -----------------------------------------------------------------
    def write(
        self,
        hard_state: HardState | None,
        entries: list[Entry],
        snapshot: SnapshotMarker | None = None,
    ) -> None:
        """Write the snapshot marker, then the entries, then the hard state.

        The records go to the OS in one write but nothing is durable before
        `sync()`. Raises WalError after an earlier I/O failure or for a record
        above RECORD_BYTES_MAX; OSError on I/O.
        """
        self._check_usable()
        if snapshot is not None:
            self._append(RecordType.SNAPSHOT_MARKER, _MARKER.pack(*_marker_fields(snapshot)))
            if snapshot.index > self._marker_index():  # Replay ignores older installs too.
                if snapshot.installed:
                    self._last_index = snapshot.index  # Replay discards the log here.
                self._marker = snapshot
        assert not entries or entries[0].index <= self._last_index + 1, "append leaves a gap"
        for entry in entries:  # Bounded by the caller's batch.
            self._append(RecordType.ENTRY, codec.encode_entry(entry))
            self._last_index = entry.index
            segment = self._segments[-1]
            segment.entry_index_max = max(segment.entry_index_max, entry.index)
            self._maybe_roll_over()
        if hard_state is not None:
            assert hard_state.term >= self._hard_state.term, "term never decreases"
            self._append(RecordType.HARD_STATE, codec.encode_hard_state(hard_state))
            self._hard_state = hard_state
        # One write(2) per call: a process crash then keeps what the OS has, and
        # a simulated power cut can tear it, as on a real disk.
        self._flush()
        self._maybe_roll_over()

    def sync(self) -> None:
        """Make everything written so far durable with one fsync (none if nothing new).

        Raises OSError; after a failure the WAL refuses all further calls with
        WalError, because a failed fsync may have dropped dirty pages for good.
        """
        self._check_usable()
        if not self._unsynced and not self._buffer:
            return
        try:
            self._flush()
            self._file.sync()
        except OSError as error:
            self._failure = error
            raise
        self.sync_count += 1
        self._unsynced = False
        self._synced_last_index = self._last_index

    def release_to(self, index: int) -> list[str]:
        """Delete the oldest segments whose entries are all <= `index`; return their paths.

        Call only once a snapshot at or after `index` is durable. The segment
        being written is never deleted. Raises OSError.
        """
        self._check_usable()
        released: list[str] = []
        for _count in range(len(self._segments) - 1):  # Only a prefix, never the last.
            oldest = self._segments[0]
            if oldest.entry_index_max > index or len(self._segments) == 1:
                break
            self._fs.remove(oldest.path)
            released.append(self._segments.pop(0).path)
        if released:
            self._fs.sync_dir(self._directory)
        assert self._segments, "the current segment is never released"
        return released

    def close(self) -> None:
        """Hand buffered records to the OS and close (no fsync). Raises OSError."""
        if self._failure is None:
            self._flush()
        self._file.close()
        self._failure = self._failure or WalError("closed")

    def segment_paths(self) -> list[str]:
        """Paths of the live segments, oldest first."""
        return [segment.path for segment in self._segments]

    @property
    def last_index(self) -> int:
        """Index of the last entry written (synced or not)."""
        return self._last_index

    @property
    def synced_last_index(self) -> int:
        """Index of the last entry when the WAL was last synced (by `sync` or a rollover)."""
        return self._synced_last_index

    # -- internals ---------------------------------------------------------------
    def _check_usable(self) -> None:
        """Raise WalError if an earlier I/O failure (or close) poisoned this WAL."""
        if self._failure is not None:
            raise WalError(f"WAL unusable after: {self._failure!r}")

    def _append(self, kind: RecordType, payload: bytes) -> None:
        """Buffer one record, handing the buffer to the OS when it grows large."""
        record = encode_record(kind, payload)
        self._buffer += record
        self._segment_bytes += len(record)
        if len(self._buffer) >= WRITE_BUFFER_BYTES_MAX:
            self._flush()
        assert self._segment_bytes >= len(self._buffer)

    def _flush(self) -> None:
        """Write the buffer to the current segment file (not durable yet)."""
        if self._buffer:
            self._unsynced = True
            try:
                self._file.write(bytes(self._buffer))
            except OSError as error:
                self._failure = error
                raise
            self._buffer.clear()
        assert not self._buffer

    def _maybe_roll_over(self) -> None:
        """Start a new segment once the current one reaches `segment_bytes_max`."""
        if self._segment_bytes < self._segment_bytes_max:
            return
        self.sync()  # Every segment but the last is complete and durable.
        self._file.close()
        previous = self._segments[-1]
        carry_over = encode_record(RecordType.HARD_STATE, codec.encode_hard_state(self._hard_state))
        if self._marker is not None:
            marker = SnapshotMarker(self._marker.index, self._marker.term, installed=False)
            carry_over += encode_record(
                RecordType.SNAPSHOT_MARKER, _MARKER.pack(*_marker_fields(marker))
            )
        segment = _create_segment(
            self._fs, self._directory, previous.seq + 1, self._last_index + 1, carry_over
        )
        self._segments.append(segment)
        self._file = self._fs.open_append(segment.path)
        self._segment_bytes = segment.size_bytes
        assert self._segment_bytes == _HEADER.size + _SEGMENT_HEADER.size + len(carry_over)


def _marker_fields(marker: SnapshotMarker) -> tuple[int, int, bool]:
    """The struct fields of a marker record."""
    assert marker.index >= 0 and marker.term >= 0, marker
    return marker.index, marker.term, marker.installed


def _next_index(state: WalState) -> int:
    """The index the next appended entry would get."""
    if state.entries:
        return state.entries[-1].index + 1
    return (state.snapshots[-1].index if state.snapshots else 0) + 1


def _create_segment(
    fs: FileSystem, directory: str, seq: int, first_index: int, carry_over: bytes
) -> _Segment:
    """Create a segment with its header and carry-over records, durably (file and dir)."""
    path = posixpath.join(directory, segment_name(seq, first_index))
    assert not fs.exists(path), f"segment {path} already exists"
    header = encode_record(
        RecordType.SEGMENT_HEADER, _SEGMENT_HEADER.pack(WAL_VERSION, seq, first_index)
    )
    file = fs.open_append(path)
    try:
        file.write(header + carry_over)
        file.sync()
    finally:
        file.close()
    fs.sync_dir(directory)
    return _Segment(seq, first_index, path, size_bytes=len(header) + len(carry_over))


def _list_segments(fs: FileSystem, directory: str) -> list[_Segment]:
    """The segments in `directory` by seq. Raises WalCorruption on a gap in the seqs."""
    segments: list[_Segment] = []
    for name in fs.list_dir(directory)[:SEGMENTS_MAX]:
        match = _SEGMENT_NAME.match(name)
        if match:
            seq, first_index = int(match.group(1), 16), int(match.group(2), 16)
            segments.append(_Segment(seq, first_index, posixpath.join(directory, name)))
    segments.sort(key=lambda segment: segment.seq)
    for previous, current in itertools.pairwise(segments):
        if current.seq != previous.seq + 1:
            raise WalCorruption(current.path, 0, f"segment {previous.seq + 1} is missing")
    assert all(segment.seq >= 0 for segment in segments)
    return segments


def _check_header(payload: bytes, segment: _Segment) -> None:
    """Raise WalCorruption unless the header matches the segment's name and version."""
    try:
        version, seq, first_index = _SEGMENT_HEADER.unpack(payload)
    except struct.error as error:
        raise WalCorruption(segment.path, 0, f"bad segment header: {error}") from error
    if version != WAL_VERSION:
        raise WalCorruption(segment.path, 0, f"WAL version {version}, expected {WAL_VERSION}")
    if (seq, first_index) != (segment.seq, segment.first_index):
        raise WalCorruption(segment.path, 0, f"header says seq {seq} first index {first_index}")


def _replay_segment(fs: FileSystem, segment: _Segment, replay: _Replay, *, is_last: bool) -> None:
    """Apply a segment's records; repair a torn tail of the last one.

    Raises WalCorruption for damage that is not a torn tail of the last segment.
    """
    data = fs.read_bytes(segment.path)
    if not data and not is_last:
        raise WalCorruption(segment.path, 0, "empty segment before the last one")
    offset = 0
    for _record in range(len(data) // _HEADER.size + 1):  # Each record has a header.
        if offset == len(data):
            break
        parsed = _parse_record(data, offset)
        if isinstance(parsed, str):
            _handle_damage(
                fs, segment, replay, data=data, offset=offset, problem=parsed, is_last=is_last
            )
            break  # The tail was truncated: the segment now ends at `offset`.
        kind, payload, end = parsed
        if (offset == 0) != (kind == RecordType.SEGMENT_HEADER):
            raise WalCorruption(segment.path, offset, "segment header not first, or repeated")
        if kind == RecordType.SEGMENT_HEADER:
            _check_header(payload, segment)
        else:
            replay.record(kind, payload, segment, offset)
        offset = end
    assert offset <= len(data), (offset, len(data))
    segment.size_bytes = offset


def _handle_damage(
    fs: FileSystem,
    segment: _Segment,
    replay: _Replay,
    *,
    data: bytes,
    offset: int,
    problem: str,
    is_last: bool,
) -> None:
    """Truncate a torn tail of the last segment; raise WalCorruption for anything else."""
    reason = _torn_tail_reason(data, offset, problem) if is_last else None
    if reason is None:
        raise WalCorruption(segment.path, offset, problem)
    fs.truncate(segment.path, offset)
    replay.state.repairs.append(WalRepair(segment.path, offset, len(data) - offset, reason))
    assert len(fs.read_bytes(segment.path)) == offset
