"""`synod snapshot status FILE`: what a snapshot file (docs/node.md, `snap-*.snap`)
holds, read offline: Raft position, members, and the store's revision and sizes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import crc32c
import msgpack

from synod.services.state import ServiceStateMachine
from synod.storage.snapfile import decode_snapshot_content

__all__ = ["SNAPSHOT_FILE_BYTES_MAX", "restore_snapshot", "snapshot_status", "write_atomically"]

# A snapshot file read for `status` is held in memory whole; larger ones are refused.
SNAPSHOT_FILE_BYTES_MAX = 8 * 1024**3


def _read(path: Path) -> bytes:
    """Raises OSError, ValueError (too large)."""
    size_bytes = path.stat().st_size
    if size_bytes > SNAPSHOT_FILE_BYTES_MAX:
        raise ValueError(f"{path}: {size_bytes} bytes, more than {SNAPSHOT_FILE_BYTES_MAX}")
    return path.read_bytes()


def snapshot_status(path: Path) -> dict[str, Any]:
    """The facts of the snapshot file at ``path``. Raises OSError, ValueError (too large,
    not a Synod snapshot, or damaged: the CRC or the decoding fails)."""
    content = _read(path)
    try:
        snapshot = decode_snapshot_content(str(path), content)
        payload = msgpack.unpackb(snapshot.data, raw=False, strict_map_key=False)
        members = {int(node_id): (peer, client)
                   for node_id, (peer, client) in payload["members"].items()}  # fmt: skip
        restored = ServiceStateMachine().decode(payload["services"])
    except Exception as exc:  # SnapshotCorruption, msgpack errors, InvalidArgument...
        raise ValueError(f"{path}: not a valid Synod snapshot: {exc}") from exc
    meta = snapshot.meta
    assert meta.index >= 1 and restored.kv.revision >= 1
    return {
        "index": meta.index,
        "term": meta.term,
        "voters": sorted(meta.conf.voters),
        "learners": sorted(meta.conf.learners),
        "members": [
            {"id": node_id, "peer_url": peer, "client_url": client}
            for node_id, (peer, client) in sorted(members.items())
        ],
        "revision": restored.kv.revision,
        "keys": len(restored.kv),
        "leases": len(restored.leases),
        "bytes": len(content),
        "crc32c": f"{crc32c.crc32c(content):08x}",
    }


def write_atomically(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` via a temporary file, fsynced and renamed: a crash
    leaves the old file or the new one. Raises OSError."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as out:
        out.write(content)
        out.flush()
        os.fsync(out.fileno())
    temporary.replace(path)
    assert path.stat().st_size == len(content)


def restore_snapshot(path: Path, initial_cluster: str, targets: dict[int, Path]) -> int:
    """Write, for each member id of ``targets``, a data directory of a new cluster of
    the members of ``initial_cluster`` (as `synod node --initial-cluster`) holding the
    keys, leases, locks and IDs of the snapshot file at ``path`` (etcdutl snapshot
    restore): term 1, every member a voter, the snapshot's index. Returns that index.

    Raises ValueError (a bad file or cluster, a member id not in it, a directory that
    is not empty), OSError. Nothing is written unless every check passed."""
    from synod.node.config import ConfigError, parse_initial_cluster
    from synod.node.driver import encode_snapshot_payload
    from synod.raft.types import ConfState, HardState, Ready, Snapshot, SnapshotMeta
    from synod.storage.durable import DurableStorage
    from synod.storage.fs import OsFileSystem

    content = _read(path)
    try:
        members = parse_initial_cluster(initial_cluster)
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc
    ids = frozenset(member.node_id for member in members)
    if not ids or not set(targets) <= ids:
        raise ValueError(f"--initial-cluster has members {sorted(ids)}, not {sorted(targets)}")
    try:
        old = decode_snapshot_content(str(path), content)
        payload = msgpack.unpackb(old.data, raw=False, strict_map_key=False)
        state = ServiceStateMachine()
        state.adopt(state.decode(payload["services"]))
    except Exception as exc:  # SnapshotCorruption, msgpack errors, InvalidArgument...
        raise ValueError(f"{path}: not a valid Synod snapshot: {exc}") from exc
    for directory in targets.values():
        if directory.exists() and any(directory.iterdir()):
            raise ValueError(f"{directory} is not empty: restore writes new data directories")
    data = encode_snapshot_payload(members, state)
    meta = SnapshotMeta(index=old.meta.index, term=1, conf=ConfState(voters=ids))
    for directory in targets.values():
        directory.mkdir(parents=True, exist_ok=True)
        storage = DurableStorage(OsFileSystem(), str(directory))
        storage.load()
        ready = Ready(snapshot=Snapshot(meta, data), hard_state=HardState(1, 0, meta.index))
        storage.persist(ready)
        storage.sync()
        storage.close()
    assert meta.index >= 1
    return meta.index
