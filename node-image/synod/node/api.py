"""The contract between the HTTP layer and the node's Raft server.

`synod.node.http` serves `docs/api.md` on top of any `NodeApi`;
`synod.node.server.RaftServer` implements it. Service results are the plain
dicts of `synod.services.state.ServiceStateMachine` (`{"ok": True, "revision":
..., ...}` or `{"ok": False, "error": {...}}`); node-level failures are the
exceptions below.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Session:
    """Exactly-once coordinates of a write (from the Synod-* headers)."""

    client_id: int
    seq: int
    ack_seq: int


class NodeError(Exception):
    """A node-level failure with a stable problem code and HTTP status."""

    code = "internal"
    status = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


class NotLeader(NodeError):
    """This node cannot do it; the leader can. The HTTP layer forwards or answers 421."""

    code = "not-leader"
    status = 421

    def __init__(self, leader_id: int, leader_client_url: str | None) -> None:
        super().__init__(
            f"node is not the leader (leader: {leader_id or 'unknown'})",
            leader_id=leader_id,
            leader_client_url=leader_client_url,
        )
        self.leader_id = leader_id
        self.leader_client_url = leader_client_url


class NoLeader(NodeError):
    """No leader is known (election in progress or no quorum)."""

    code = "no-leader"
    status = 503


class Timeout(NodeError):
    """The request did not complete within the request timeout. Safe to retry."""

    code = "timeout"
    status = 503


class Overloaded(NodeError):
    """Too many requests pending on this node (`pending_requests_max`)."""

    code = "limit-exceeded"
    status = 429


class NotCaughtUp(NodeError):
    """A learner cannot be promoted before it has caught up."""

    code = "not-caught-up"
    status = 409


class NotMember(NodeError):
    """The member named in an admin call does not exist."""

    code = "not-found"
    status = 404


class NodeApi(Protocol):
    """What the HTTP layer needs from a node."""

    member_id: int

    def header(self) -> dict[str, int]:
        """`{"revision", "raft_term", "member_id", "leader_id"}` for answers."""
        ...

    async def write(self, op: dict[str, Any], session: Session | None) -> dict[str, Any]:
        """Replicate one service op (see `synod.services.commands`), wait for it to apply
        and return its result. Raises NotLeader (forward it), NoLeader, Timeout, Overloaded.
        """
        ...

    async def read(self, op: dict[str, Any], *, serializable: bool) -> dict[str, Any]:
        """Serve a `range` op: linearizable via ReadIndex unless `serializable`.
        Raises NoLeader, Timeout; service errors come back as `{"ok": False}`."""
        ...

    async def lease_keepalive(self, lease_id: int) -> dict[str, Any]:
        """Renew a lease on the leader: `{"ok", "id", "ttl_ms"}`. Raises NotLeader."""
        ...

    async def lease_timetolive(self, lease_id: int) -> dict[str, Any]:
        """`{"ok", "id", "ttl_ms" (remaining), "granted_ttl_ms", "keys"}`. Raises NotLeader."""
        ...

    def watch(
        self, key: bytes, range_end: bytes, start_revision: int
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream watch messages: `{"events": [...], "revision": R}`, `{"progress":
        R}` while idle, and finally `{"cancel": reason, "resume_revision": R, "message"}`.
        Raises services Compacted / LimitExceeded before the first item."""
        ...

    def status(self) -> dict[str, Any]:
        """The `/v1/cluster/status` document."""
        ...

    def is_ready(self) -> tuple[bool, str]:
        """(ready, reason) for `/readyz`."""
        ...

    def metrics(self) -> bytes:
        """Prometheus text exposition of this node's registry."""
        ...

    async def admin_add_learner(
        self, node_id: int, peer_url: str, client_url: str
    ) -> dict[str, Any]:
        """Idempotent. Raises NotLeader, NoLeader, Timeout, NodeError."""
        ...

    async def admin_promote(self, node_id: int) -> dict[str, Any]:
        """Idempotent. Raises NotLeader, NotCaughtUp, NoLeader, Timeout."""
        ...

    async def admin_remove(self, node_id: int) -> dict[str, Any]:
        """Idempotent. Raises NotLeader, NoLeader, Timeout."""
        ...

    async def admin_transfer_leadership(self, to: int | None) -> dict[str, Any]:
        """Move leadership (to the most caught-up voter when `to` is None)."""
        ...

    async def admin_snapshot(self) -> dict[str, Any]:
        """Take a snapshot now: `{"snapshot_index"}`."""
        ...
