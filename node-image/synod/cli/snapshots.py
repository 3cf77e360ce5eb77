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

__all__ = ["SNAPSHOT_FILE_BYTES_MAX", "snapshot_status", "write_atomically"]

# A snapshot file read for `status` is held in memory whole; larger ones are refused.
SNAPSHOT_FILE_BYTES_MAX = 8 * 1024**3


def snapshot_status(path: Path) -> dict[str, Any]:
    """The facts of the snapshot file at ``path``. Raises OSError, ValueError (too large,
    not a Synod snapshot, or damaged: the CRC or the decoding fails)."""
    size_bytes = path.stat().st_size
    if size_bytes > SNAPSHOT_FILE_BYTES_MAX:
        raise ValueError(f"{path}: {size_bytes} bytes, more than {SNAPSHOT_FILE_BYTES_MAX}")
    content = path.read_bytes()
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
