"""The few filesystem calls the storage layer makes, real or simulated.

`OsFileSystem` makes real system calls and fsyncs files and directories.
`SimFileSystem` is the deterministic simulator's disk: it keeps, for every
file, which bytes were synced, and for every directory, which creates, renames
and removes were synced, so that `crash()` can lose exactly what a real crash
may lose. All randomness comes from the `random.Random` passed in, so one seed
always produces the same disk after the same calls.

Paths are plain strings (POSIX separators). Calls on missing files raise
`FileNotFoundError`, like the `os` module.
"""

from __future__ import annotations

import os
import posixpath
import random
from dataclasses import dataclass, field
from typing import Protocol

SECTOR_BYTES = 512  # A torn write in the simulator zero-fills from a sector boundary.
PATH_DEPTH_MAX = 64  # Bound on directory levels walked by `makedirs`.


class AppendFile(Protocol):
    """A file open for appending."""

    def write(self, data: bytes) -> None:
        """Append `data` (not durable until `sync`). Raises OSError."""
        ...

    def sync(self) -> None:
        """Make every byte written so far durable (fsync). Raises OSError."""
        ...

    def close(self) -> None:
        """Release the handle; unsynced data stays unsynced. Raises OSError."""
        ...


class FileSystem(Protocol):
    """What the WAL and the snapshot store need from a filesystem."""

    def makedirs(self, path: str) -> None:
        """Create `path` and missing parents, durably. Existing is fine. Raises OSError."""
        ...

    def list_dir(self, path: str) -> list[str]:
        """Names in directory `path`, sorted. Raises FileNotFoundError."""
        ...

    def exists(self, path: str) -> bool:
        """True if a file or directory exists at `path`."""
        ...

    def read_bytes(self, path: str) -> bytes:
        """The whole content of a file. Raises FileNotFoundError."""
        ...

    def open_append(self, path: str) -> AppendFile:
        """Open a file for appending, creating it (the create is durable only after
        `sync_dir` of its directory). Raises FileNotFoundError if the directory is missing."""
        ...

    def truncate(self, path: str, size_bytes: int) -> None:
        """Cut a file to `size_bytes` and sync it. Raises FileNotFoundError."""
        ...

    def rename(self, source: str, target: str) -> None:
        """Atomically rename within a directory, replacing `target` (durable after
        `sync_dir`). Raises FileNotFoundError."""
        ...

    def remove(self, path: str) -> None:
        """Delete a file (durable after `sync_dir`). Raises FileNotFoundError."""
        ...

    def sync_dir(self, path: str) -> None:
        """Make creates, renames and removes in directory `path` durable. Raises OSError."""
        ...


# -- the real thing ------------------------------------------------------------
def _fsync_fd(fd: int) -> None:
    """fdatasync where available: it also flushes the size of an appended file."""
    if hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:  # macOS: fsync does not flush the drive cache; acceptable for development.
        os.fsync(fd)


class OsAppendFile:
    """An `AppendFile` over an O_APPEND file descriptor."""

    def __init__(self, owner: OsFileSystem, path: str) -> None:
        self.path = path
        self._owner = owner  # Counts syncs.
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)

    def write(self, data: bytes) -> None:
        """See `AppendFile.write`."""
        assert self._fd >= 0, f"{self.path} is closed"
        view = memoryview(data)
        for _attempt in range(len(view) + 1):  # Each short write makes progress.
            if not view:
                return
            view = view[os.write(self._fd, view) :]
        raise AssertionError("unreachable: os.write made no progress")

    def sync(self) -> None:
        """See `AppendFile.sync`."""
        assert self._fd >= 0, f"{self.path} is closed"
        _fsync_fd(self._fd)
        self._owner.sync_count += 1

    def close(self) -> None:
        """See `AppendFile.close`. Closing twice is allowed."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        assert self._fd == -1


class OsFileSystem:
    """`FileSystem` over real system calls. `sync_count` counts file and directory syncs."""

    def __init__(self) -> None:
        self.sync_count = 0

    def makedirs(self, path: str) -> None:
        """See `FileSystem.makedirs`."""
        missing: list[str] = []
        current = os.path.abspath(path)
        for _level in range(PATH_DEPTH_MAX):
            if os.path.isdir(current):
                break
            missing.append(current)
            current = os.path.dirname(current)
        os.makedirs(path, exist_ok=True)
        assert os.path.isdir(path), path
        for created in reversed(missing):  # Each new entry is durable in its parent.
            self.sync_dir(os.path.dirname(created))

    def list_dir(self, path: str) -> list[str]:
        """See `FileSystem.list_dir`."""
        return sorted(os.listdir(path))

    def exists(self, path: str) -> bool:
        """See `FileSystem.exists`."""
        return os.path.exists(path)

    def read_bytes(self, path: str) -> bytes:
        """See `FileSystem.read_bytes`."""
        with open(path, "rb") as file:
            return file.read()

    def open_append(self, path: str) -> OsAppendFile:
        """See `FileSystem.open_append`."""
        return OsAppendFile(self, path)

    def truncate(self, path: str, size_bytes: int) -> None:
        """See `FileSystem.truncate`."""
        assert size_bytes >= 0, size_bytes
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            assert os.fstat(fd).st_size >= size_bytes, "truncate never extends"
            os.ftruncate(fd, size_bytes)
            os.fsync(fd)  # A size change is metadata: fsync, not fdatasync.
            self.sync_count += 1
        finally:
            os.close(fd)

    def rename(self, source: str, target: str) -> None:
        """See `FileSystem.rename`."""
        assert os.path.dirname(source) == os.path.dirname(target), (source, target)
        os.rename(source, target)

    def remove(self, path: str) -> None:
        """See `FileSystem.remove`."""
        os.remove(path)

    def sync_dir(self, path: str) -> None:
        """See `FileSystem.sync_dir`."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
            self.sync_count += 1
        finally:
            os.close(fd)


# -- the simulated disk --------------------------------------------------------
@dataclass(eq=False)
class _Inode:
    """A simulated file: its bytes, of which the first `synced_bytes` are durable."""

    data: bytearray = field(default_factory=bytearray)
    synced_bytes: int = 0


@dataclass(frozen=True)
class _DirOp:
    """One unsynced directory change: kind is "create", "remove" or "rename"."""

    kind: str
    path: str
    target: str = ""
    inode: _Inode | None = None


class SimAppendFile:
    """An `AppendFile` on a `SimFileSystem`; unusable after the disk crashed."""

    def __init__(self, disk: SimFileSystem, path: str, inode: _Inode) -> None:
        self._disk = disk
        self._path = path
        self._inode = inode
        self._generation = disk.generation
        self._closed = False

    def _check_usable(self) -> None:
        """Assert the handle is open and no crash happened since it was opened."""
        assert not self._closed, f"{self._path} is closed"
        assert self._generation == self._disk.generation, f"{self._path} predates a crash"

    def write(self, data: bytes) -> None:
        """See `AppendFile.write`."""
        self._check_usable()
        self._inode.data += data
        assert len(self._inode.data) >= self._inode.synced_bytes

    def sync(self) -> None:
        """See `AppendFile.sync`."""
        self._check_usable()
        self._inode.synced_bytes = len(self._inode.data)
        self._disk.sync_count += 1

    def close(self) -> None:
        """See `AppendFile.close`."""
        self._closed = True


class SimFileSystem:
    """A deterministic in-memory disk that loses unsynced work on `crash()`.

    The model, per crash:
    * each directory keeps a random prefix of its unsynced creates, renames and
      removes (a journaling filesystem commits metadata in order; a rename is
      atomic); `sync_dir` makes them all durable;
    * each file keeps its synced bytes; with probability `torn_write_probability`
      a random prefix of its unsynced bytes survives too, and half of those
      times the survivor is torn the way a disk tears it: the file keeps its
      full length but reads zeros from a sector boundary on;
    * `makedirs` is durable at once (a simplification: the nodes create their
      directories once, before any write that matters).
    """

    def __init__(self, rng: random.Random, *, torn_write_probability: float = 0.5) -> None:
        assert 0.0 <= torn_write_probability <= 1.0, torn_write_probability
        self._rng = rng
        self._torn_write_probability = torn_write_probability
        self._dirs: set[str] = {"/"}
        self._files: dict[str, _Inode] = {}
        self._durable_files: dict[str, _Inode] = {}
        self._dir_ops: dict[str, list[_DirOp]] = {}
        self.generation = 0  # Bumped by each crash; invalidates open handles.
        self.sync_count = 0

    @staticmethod
    def _norm(path: str) -> str:
        """The canonical absolute form of `path`."""
        normalized = posixpath.normpath(posixpath.join("/", path))
        assert normalized.startswith("/"), normalized
        return normalized

    def _inode(self, path: str) -> _Inode:
        """The inode at `path`. Raises FileNotFoundError or IsADirectoryError."""
        if path in self._dirs:
            raise IsADirectoryError(path)
        inode = self._files.get(path)
        if inode is None:
            raise FileNotFoundError(path)
        return inode

    def _journal(self, op: _DirOp) -> None:
        """Record an unsynced directory change."""
        directory = posixpath.dirname(op.path)
        assert directory in self._dirs, directory
        self._dir_ops.setdefault(directory, []).append(op)

    # -- FileSystem ------------------------------------------------------------
    def makedirs(self, path: str) -> None:
        """See `FileSystem.makedirs`."""
        current = self._norm(path)
        for _level in range(PATH_DEPTH_MAX):
            if current in self._files:
                raise FileExistsError(current)
            self._dirs.add(current)
            if current == "/":
                return
            current = posixpath.dirname(current)
        raise AssertionError(f"path deeper than {PATH_DEPTH_MAX}: {path}")

    def list_dir(self, path: str) -> list[str]:
        """See `FileSystem.list_dir`."""
        directory = self._norm(path)
        if directory not in self._dirs:
            raise FileNotFoundError(directory)
        children = [p for p in (*self._files, *self._dirs) if p != "/"]
        names = {posixpath.basename(p) for p in children if posixpath.dirname(p) == directory}
        return sorted(names)

    def exists(self, path: str) -> bool:
        """See `FileSystem.exists`."""
        normalized = self._norm(path)
        return normalized in self._files or normalized in self._dirs

    def read_bytes(self, path: str) -> bytes:
        """See `FileSystem.read_bytes`."""
        return bytes(self._inode(self._norm(path)).data)

    def open_append(self, path: str) -> SimAppendFile:
        """See `FileSystem.open_append`."""
        normalized = self._norm(path)
        if posixpath.dirname(normalized) not in self._dirs:
            raise FileNotFoundError(posixpath.dirname(normalized))
        inode = self._files.get(normalized)
        if inode is None:
            inode = _Inode()
            self._files[normalized] = inode
            self._journal(_DirOp("create", normalized, inode=inode))
        return SimAppendFile(self, normalized, inode)

    def truncate(self, path: str, size_bytes: int) -> None:
        """See `FileSystem.truncate`."""
        inode = self._inode(self._norm(path))
        assert 0 <= size_bytes <= len(inode.data), (size_bytes, len(inode.data))
        del inode.data[size_bytes:]
        inode.synced_bytes = size_bytes  # truncate syncs the file, like OsFileSystem.
        self.sync_count += 1

    def rename(self, source: str, target: str) -> None:
        """See `FileSystem.rename`."""
        source, target = self._norm(source), self._norm(target)
        assert posixpath.dirname(source) == posixpath.dirname(target), (source, target)
        inode = self._inode(source)
        if target in self._dirs:
            raise IsADirectoryError(target)
        del self._files[source]
        self._files[target] = inode
        self._journal(_DirOp("rename", source, target, inode))

    def remove(self, path: str) -> None:
        """See `FileSystem.remove`."""
        normalized = self._norm(path)
        self._inode(normalized)
        del self._files[normalized]
        self._journal(_DirOp("remove", normalized))

    def sync_dir(self, path: str) -> None:
        """See `FileSystem.sync_dir`."""
        directory = self._norm(path)
        if directory not in self._dirs:
            raise FileNotFoundError(directory)
        self._apply_ops(self._dir_ops.pop(directory, []))
        self.sync_count += 1

    # -- crashes ----------------------------------------------------------------
    def _apply_ops(self, ops: list[_DirOp]) -> None:
        """Replay directory changes onto the durable namespace."""
        for op in ops:  # Bounded by the journal's length.
            if op.kind == "create":
                assert op.inode is not None
                self._durable_files[op.path] = op.inode
            elif op.kind == "remove":
                self._durable_files.pop(op.path, None)
            else:
                assert op.kind == "rename" and op.inode is not None, op
                self._durable_files.pop(op.path, None)
                self._durable_files[op.target] = op.inode

    def _crash_inode(self, inode: _Inode) -> None:
        """Cut `inode` to its synced bytes plus, maybe, a torn part of the rest."""
        synced, total = inode.synced_bytes, len(inode.data)
        assert 0 <= synced <= total, (synced, total)
        kept = synced
        if total > synced and self._rng.random() < self._torn_write_probability:
            kept = self._rng.randint(synced, total)
            if self._rng.random() < 0.5:  # The disk extended the file but not its data.
                zeros_from = max(synced, kept - kept % SECTOR_BYTES)
                inode.data[zeros_from:total] = bytes(total - zeros_from)
                kept = total
        del inode.data[kept:]
        inode.synced_bytes = kept

    def crash(self) -> None:
        """Lose what a power cut may lose (see the class docstring); open handles die."""
        for directory in sorted(self._dir_ops):
            ops = self._dir_ops[directory]
            self._apply_ops(ops[: self._rng.randint(0, len(ops))])
        self._dir_ops.clear()
        self._files = dict(self._durable_files)
        crashed: set[int] = set()
        for path in sorted(self._files):  # Sorted: the same seed gives the same disk.
            inode = self._files[path]
            if id(inode) not in crashed:
                crashed.add(id(inode))
                self._crash_inode(inode)
        self.generation += 1
        assert all(i.synced_bytes == len(i.data) for i in self._files.values())

    def unsynced_bytes(self) -> int:
        """Bytes written but not yet synced, over all files (for tests and metrics)."""
        total = sum(len(i.data) - i.synced_bytes for i in self._files.values())
        assert total >= 0
        return total
