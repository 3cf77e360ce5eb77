"""Snapshot files: one state-machine image per file, written atomically.

File name `snap-<term:016x>-<index:016x>.snap`; content
`magic (8) | version u8 | crc32c u32 | body`, the body being
`codec.encode_snapshot` (metadata and data) and the CRC covering the body.

Saving writes `<name>.tmp`, fsyncs it, renames it into place and fsyncs the
directory, so a crash leaves either the old set of snapshots or the new one,
plus at worst a stale `.tmp` (removed when the store opens).

Loading takes the newest snapshot that verifies. A damaged one is renamed to
`<name>.broken` (kept for inspection, never loaded again), reported, and the
previous one is tried: callers must keep the WAL entries after the *oldest*
kept snapshot for that fallback to be complete (see `oldest_index`).
"""

from __future__ import annotations

import posixpath
import re
import struct
from dataclasses import dataclass

import crc32c

from synod.raft import codec
from synod.raft.types import EMPTY_SNAPSHOT, Snapshot
from synod.storage.fs import FileSystem

SNAPSHOT_MAGIC = b"SYNODSNP"
SNAPSHOT_VERSION = 1
SNAPSHOTS_KEPT_MAX_DEFAULT = 3
SNAPSHOT_FILES_MAX = 100_000  # Bound on files examined in the snapshot directory.

_HEADER = struct.Struct("<8sBI")  # magic, version, crc32c(body)
_NAME = re.compile(r"^snap-([0-9a-f]{16})-([0-9a-f]{16})\.snap$")


class SnapshotCorruption(Exception):
    """A snapshot file that does not verify."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"snapshot corrupt: {path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SnapshotProblem:
    """A damaged snapshot found (and set aside as `.broken`) while loading."""

    path: str
    reason: str


def snapshot_name(term: int, index: int) -> str:
    """The file name of the snapshot at (`term`, `index`)."""
    assert 0 <= term < 2**64 and 0 <= index < 2**64, (term, index)
    return f"snap-{term:016x}-{index:016x}.snap"


def encode_snapshot_file(snapshot: Snapshot) -> bytes:
    """The bytes of a snapshot file."""
    body = codec.encode_snapshot(snapshot)
    content = _HEADER.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, crc32c.crc32c(body)) + body
    assert len(content) == _HEADER.size + len(body)
    return content


def decode_snapshot_file(path: str, content: bytes) -> Snapshot:
    """Verify and decode a snapshot file, whose name must be its snapshot's. Raises
    SnapshotCorruption naming the file."""
    snapshot = decode_snapshot_content(path, content)
    expected = snapshot_name(snapshot.meta.term, snapshot.meta.index)
    if posixpath.basename(path) != expected:
        raise SnapshotCorruption(path, f"content is snapshot {expected}")
    return snapshot


def decode_snapshot_content(where: str, content: bytes) -> Snapshot:
    """Verify and decode the bytes of a snapshot file wherever they come from (a copy
    saved under another name, an answer). Raises SnapshotCorruption naming ``where``."""
    path = where
    if len(content) < _HEADER.size:
        raise SnapshotCorruption(path, f"{len(content)} bytes is shorter than the header")
    magic, version, crc = _HEADER.unpack_from(content)
    if magic != SNAPSHOT_MAGIC:
        raise SnapshotCorruption(path, f"bad magic {magic!r}")
    if version != SNAPSHOT_VERSION:
        raise SnapshotCorruption(path, f"version {version}, expected {SNAPSHOT_VERSION}")
    body = content[_HEADER.size :]
    if crc32c.crc32c(body) != crc:
        raise SnapshotCorruption(path, "checksum mismatch")
    try:
        snapshot = codec.decode_snapshot(body)
    except codec.CodecError as error:
        raise SnapshotCorruption(path, str(error)) from error
    return snapshot


class SnapshotStore:
    """The snapshot files of one node, in one directory."""

    def __init__(
        self,
        fs: FileSystem,
        directory: str,
        *,
        snapshots_kept_max: int = SNAPSHOTS_KEPT_MAX_DEFAULT,
    ) -> None:
        """Open (creating) `directory` and remove stale `.tmp` files. Raises OSError."""
        assert snapshots_kept_max >= 1, snapshots_kept_max
        self._fs = fs
        self._directory = directory
        self._snapshots_kept_max = snapshots_kept_max
        fs.makedirs(directory)
        stale = [name for name in fs.list_dir(directory) if name.endswith(".tmp")]
        for name in stale[:SNAPSHOT_FILES_MAX]:  # A save that crashed before its rename.
            fs.remove(posixpath.join(directory, name))
        if stale:
            fs.sync_dir(directory)

    def paths(self) -> list[str]:
        """Snapshot files, oldest (lowest index) first; `.tmp` and `.broken` excluded."""
        found: list[tuple[int, int, str]] = []
        for name in self._fs.list_dir(self._directory)[:SNAPSHOT_FILES_MAX]:
            match = _NAME.match(name)
            if match:
                term, index = int(match.group(1), 16), int(match.group(2), 16)
                found.append((index, term, posixpath.join(self._directory, name)))
        found.sort()
        assert all(index >= 0 for index, _, _ in found)
        return [path for _, _, path in found]

    def save(self, snapshot: Snapshot) -> str:
        """Write `snapshot` durably (tmp, fsync, rename, fsync dir); return its path.

        Raises OSError; after a failure no partial file carries the final name.
        """
        assert not snapshot.is_empty(), "never save the empty snapshot"
        name = snapshot_name(snapshot.meta.term, snapshot.meta.index)
        path = posixpath.join(self._directory, name)
        temporary = path + ".tmp"
        if self._fs.exists(temporary):
            self._fs.remove(temporary)
        file = self._fs.open_append(temporary)
        try:
            file.write(encode_snapshot_file(snapshot))
            file.sync()
        finally:
            file.close()
        self._fs.rename(temporary, path)
        self._fs.sync_dir(self._directory)
        assert self._fs.exists(path), path
        return path

    def load(self, path: str) -> Snapshot:
        """Read and verify one snapshot file. Raises SnapshotCorruption, OSError."""
        return decode_snapshot_file(path, self._fs.read_bytes(path))

    def load_newest(self) -> tuple[Snapshot, list[SnapshotProblem]]:
        """The newest snapshot that verifies (EMPTY_SNAPSHOT if none) and the damaged
        newer ones, which are renamed to `<name>.broken`. Raises OSError."""
        problems: list[SnapshotProblem] = []
        for path in reversed(self.paths()):  # Newest first.
            try:
                return self.load(path), problems
            except SnapshotCorruption as error:
                problems.append(SnapshotProblem(path, error.reason))
                self._fs.rename(path, path + ".broken")
                self._fs.sync_dir(self._directory)
        assert all(problem.reason for problem in problems)
        return EMPTY_SNAPSHOT, problems

    def purge(self) -> list[str]:
        """Delete all but the newest `snapshots_kept_max` snapshots; return their paths.
        Raises OSError."""
        paths = self.paths()
        doomed = paths[: max(0, len(paths) - self._snapshots_kept_max)]
        for path in doomed:  # Bounded by SNAPSHOT_FILES_MAX.
            self._fs.remove(path)
        if doomed:
            self._fs.sync_dir(self._directory)
        assert len(self.paths()) <= max(self._snapshots_kept_max, len(paths))
        return doomed

    def oldest_index(self) -> int:
        """Index of the oldest kept snapshot (0 without any): the WAL must keep the
        entries after it so that any kept snapshot can be the one loaded."""
        paths = self.paths()
        if not paths:
            return 0
        match = _NAME.match(posixpath.basename(paths[0]))
        assert match is not None, paths[0]
        return int(match.group(2), 16)
