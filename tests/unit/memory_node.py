"""A single-member NodeApi over a real ServiceStateMachine, for HTTP-tier tests.

Writes are encoded with the real command envelope and applied at increasing log
indexes, reads are served from the applied state, watches through the node's own
``WatchStreams``: everything but Raft itself is the production code path. Knobs let a test
make the node refuse as a follower (``not_leader``) or fail with any NodeError.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from synod.node.api import NodeError, NotLeader, Session
from synod.node.locks_http import LockWaits
from synod.node.watch_stream import WatchStreamLimits, WatchStreams
from synod.services.commands import encode_command
from synod.services.errors import NotFound, ServiceError
from synod.services.limits import ServiceLimits
from synod.services.state import ServiceStateMachine


class MemoryNode:
    """One-member "cluster": leader of term 1, everything applied at once."""

    def __init__(
        self,
        member_id: int = 1,
        limits: ServiceLimits | None = None,
        progress_interval_ms: int = 200,
        events_per_message_max: int = 1000,
    ) -> None:
        self.member_id = member_id
        self.machine = ServiceStateMachine(limits)
        self.registry = CollectorRegistry()
        limits_of_streams = WatchStreamLimits(events_per_message_max, progress_interval_ms)
        self.streams = WatchStreams(self.machine, limits_of_streams)
        self.lock_waits = LockWaits(lambda: self.machine.locks)
        self.index = 0
        self.not_leader: NotLeader | None = None  # raise it from leader-only calls
        self.fail_with: NodeError | None = None  # raise it from every call
        self.writes: list[dict[str, Any]] = []
        self.admin_calls: list[tuple[str, Any]] = []
        self.ready = (True, "leader known, caught up")

    @property
    def revision(self) -> int:
        return self.machine.kv.revision

    def _check(self, leader_only: bool) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        if leader_only and self.not_leader is not None:
            raise self.not_leader

    def header(self) -> dict[str, int]:
        leader_id = self.member_id if self.not_leader is None else self.not_leader.leader_id
        return {"revision": self.revision, "raft_term": 1, "member_id": self.member_id,
                "leader_id": leader_id}  # fmt: skip

    def apply(self, op: dict[str, Any], session: Session | None = None) -> dict[str, Any]:
        """Apply one op as the next log entry (what Raft would do once committed)."""
        client_id, seq, ack_seq = (0, 0, 0) if session is None else (
            session.client_id, session.seq, session.ack_seq)  # fmt: skip
        self.index += 1
        result = self.machine.apply(self.index, encode_command(op, client_id, seq, ack_seq))
        self.lock_waits.notify()
        return result

    async def write(self, op: dict[str, Any], session: Session | None) -> dict[str, Any]:
        self._check(leader_only=True)
        self.writes.append(op)
        return self.apply(op, session)

    async def read(self, op: dict[str, Any], *, serializable: bool) -> dict[str, Any]:
        self._check(leader_only=False)
        try:
            return self.machine.read(op)
        except ServiceError as error:
            return {"ok": False, "revision": self.revision, "error": error.to_dict()}

    def _lease(self, lease_id: int) -> dict[str, Any]:
        try:
            return self.machine.lease_info(lease_id)
        except NotFound as error:
            return {"ok": False, "revision": self.revision, "error": error.to_dict()}

    async def lease_keepalive(self, lease_id: int) -> dict[str, Any]:
        self._check(leader_only=True)
        info = self._lease(lease_id)
        if not info["ok"]:
            return info
        return {"ok": True, "id": lease_id, "ttl_ms": info["ttl_ms"]}

    async def lease_timetolive(self, lease_id: int) -> dict[str, Any]:
        self._check(leader_only=True)
        info = self._lease(lease_id)
        if not info["ok"]:
            return info
        return {"ok": True, "id": lease_id, "ttl_ms": info["ttl_ms"],
                "granted_ttl_ms": info["ttl_ms"], "keys": info["keys"]}  # fmt: skip

    async def snapshot_file(self) -> bytes | None:
        return None  # a memory node keeps no snapshot files

    async def lease_list(self, limit: int) -> dict[str, Any]:
        self._check(leader_only=True)
        granted = self.machine.lease_ttls_ms()
        shown = sorted(granted)[:limit]
        leases = [{"id": lease_id, "ttl_ms": granted[lease_id],
                   "granted_ttl_ms": granted[lease_id]} for lease_id in shown]  # fmt: skip
        return {"ok": True, "revision": self.revision, "leases": leases,
                "count": len(granted), "more": len(granted) > limit}  # fmt: skip

    def watch(
        self, key: bytes, range_end: bytes, start_revision: int
    ) -> AsyncIterator[dict[str, Any]]:
        """Registers the watcher now, so refusals raise synchronously."""
        self._check(leader_only=False)
        return self.streams.watch(key, range_end, start_revision)

    def status(self) -> dict[str, Any]:
        return {
            "member_id": self.member_id, "role": "leader", "term": 1,
            "leader_id": self.member_id, "leader_client_url": None,
            "commit_index": self.index, "applied_index": self.index,
            "last_index": self.index, "snapshot_index": 0,
            "limits": self.machine.settable_limits(),
            "members": [{"id": self.member_id, "role": "voter", "peer_url": "127.0.0.1:2380",
                         "client_url": "http://127.0.0.1:2379", "match_index": self.index,
                         "last_contact_ms": 0, "healthy": True}],
        }  # fmt: skip

    def is_ready(self) -> tuple[bool, str]:
        return self.ready

    def health(self) -> tuple[bool, str]:
        return True, "in memory"

    def metrics(self) -> bytes:
        return generate_latest(self.registry)

    async def _admin(self, name: str, arg: Any) -> dict[str, Any]:
        self._check(leader_only=True)
        self.admin_calls.append((name, arg))
        return {"done": name}

    async def admin_add_learner(
        self, node_id: int, peer_url: str, client_url: str
    ) -> dict[str, Any]:
        return await self._admin("add_learner", (node_id, peer_url, client_url))

    async def admin_promote(self, node_id: int) -> dict[str, Any]:
        return await self._admin("promote", node_id)

    async def admin_remove(self, node_id: int) -> dict[str, Any]:
        return await self._admin("remove", node_id)

    async def admin_transfer_leadership(self, to: int | None) -> dict[str, Any]:
        return await self._admin("transfer", to)

    async def admin_snapshot(self) -> dict[str, Any]:
        await self._admin("snapshot", None)
        return {"snapshot_index": self.index}
