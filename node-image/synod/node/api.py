"""The contract between the HTTP layer and the node's Raft server.

`synod.node.http` serves `docs/api.md` on top of any `NodeApi`;
`synod.node.server.RaftServer` implements it. Service results are the plain
dicts of `synod.services.state.ServiceStateMachine` (`{"ok": True, "revision":
..., ...}` or `{"ok": False, "error": {...}}`); node-level failures are the
exceptions below.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from synod.codes import status_of

if TYPE_CHECKING:
    from synod.node.locks_http import LockWaits


@dataclass(frozen=True, slots=True)
class Session:
    """Exactly-once coordinates of a write (from the Synod-* headers)."""

    client_id: int
    seq: int
    ack_seq: int


class NodeError(Exception):
    """A node-level failure with a stable problem code; its HTTP status and whether a
    write that failed with it may have been applied are declared in `synod.codes`."""

    code: ClassVar[str] = "internal"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details

    @property
    def status(self) -> int:
        """The HTTP status of the code. Raises nothing (the codes below are declared)."""
        return status_of(self.code)


class NotLeader(NodeError):
    """This node cannot do it; the leader can. The HTTP layer forwards or answers 421."""

    code = "not-leader"

    def __init__(self, leader_id: int, leader_client_url: str | None) -> None:
        super().__init__(
            f"node is not the leader (leader: {leader_id or 'unknown'})",
            leader_id=leader_id,
            leader_client_url=leader_client_url,
        )
        self.leader_id = leader_id
        self.leader_client_url = leader_client_url


class NoLeader(NodeError):
    """No leader is known (election in progress or no quorum), or the write was refused
    before it was proposed. Definite: nothing was applied."""

    code = "no-leader"


class OutcomeUnknown(NodeError):
    """The write was proposed (or sent to the leader) but its answer was lost: it may
    have been applied. Retry with the same session seq to learn its outcome."""

    code = "outcome-unknown"


class Timeout(NodeError):
    """The request did not complete within the request timeout. Indeterminate for a
    write: retry with the same session seq."""

    code = "timeout"


class Overloaded(NodeError):
    """Too many requests pending on this node (`pending_requests_max`)."""

    code = "limit-exceeded"


class NotCaughtUp(NodeError):
    """A learner cannot be promoted before it has caught up."""

    code = "not-caught-up"


class NotMember(NodeError):
    """The member named in an admin call does not exist."""

    code = "not-found"


class ChangePending(NodeError):
    """Another membership change is still in flight (one at a time); retry later."""

    code = "conf-change-pending"


class ChangeInvalid(NodeError):
    """The membership change does not fit the current membership (the last voter, an id
    that is a member with another address, an address another member uses)."""

    code = "conf-change-invalid"


class TransferInvalid(NodeError):
    """Leadership cannot move there: the target is not a voter, or there is no other
    voter."""

    code = "transfer-invalid"


class NodeApi(Protocol):
    """What the HTTP layer needs from a node."""

    member_id: int
    lock_waits: LockWaits  # wakes lock long-polls after each applied turn

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

    async def snapshot_file(self) -> bytes | None:
        """The newest snapshot this member holds, as a snapshot file (the bytes of
        `synod.storage.snapfile`), or None before the first. Raises nothing."""
        ...

    async def lease_list(self, limit: int) -> dict[str, Any]:
        """The live leases by id, at most ``limit``: `{"ok", "leases": [{"id", "ttl_ms"
        (remaining), "granted_ttl_ms"}], "count" (all of them), "more"}`. Raises
        NotLeader, NoLeader."""
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

    def health(self) -> tuple[bool, str]:
        """(healthy, reason) for `/healthz`: False when the member's loop is dead or
        stalled and only a restart helps."""
        ...

    def metrics(self) -> bytes:
        """Prometheus text exposition of this node's registry."""
        ...

    async def admin_add_learner(
        self, node_id: int, peer_url: str, client_url: str
    ) -> dict[str, Any]:
        """Add a learner (`"changed": false` if it is a member with these addresses).
        Raises NotLeader, NoLeader, Timeout, ChangePending, ChangeInvalid (the id is a
        member with another address, or another member uses the address; see
        `check_new_learner`)."""
        ...

    async def admin_promote(self, node_id: int) -> dict[str, Any]:
        """Idempotent. Raises NotLeader, NotMember, NotCaughtUp, NoLeader, Timeout,
        ChangePending."""
        ...

    async def admin_remove(self, node_id: int) -> dict[str, Any]:
        """Remove a member (`"changed": false` when it is not one). Raises NotLeader,
        NoLeader, Timeout, ChangePending, ChangeInvalid (the last voter)."""
        ...

    async def admin_transfer_leadership(self, to: int | None) -> dict[str, Any]:
        """Move leadership (to the most caught-up voter when `to` is None). Raises
        NotLeader, TransferInvalid (not a voter, no other voter), Timeout."""
        ...

    async def admin_snapshot(self) -> dict[str, Any]:
        """Take a snapshot on the leader now: `{"snapshot_index"}`. Like every admin
        call it is leader-only (a follower raises NotLeader and the HTTP layer
        forwards it). Raises NotLeader, NoLeader."""
        ...


def check_new_learner(
    node_id: int,
    peer_url: str,
    client_url: str,
    members: Mapping[int, tuple[str | None, str | None]],
) -> bool:
    """Whether adding learner ``node_id`` at ``peer_url`` / ``client_url`` is a no-op,
    given ``members`` (id -> (peer address, client URL)) of the current membership.

    Returns True when ``node_id`` already is a member with these addresses (an empty
    ``client_url`` matches any). Raises ChangeInvalid when ``node_id`` is a member with
    another address, or another member uses ``peer_url`` or ``client_url``: two members
    on one address would make the leader reconnect to the wrong process forever.
    """
    known = members.get(node_id)
    if known is not None:
        peer, client = known
        if peer == peer_url and (not client_url or client == client_url):
            return True
        raise ChangeInvalid(
            f"node {node_id} is already a member with peer address {peer} and client URL "
            f"{client}; remove it first to change its address",
            member_id=node_id, peer_url=peer, client_url=client,
        )  # fmt: skip
    for other_id, (peer, client) in sorted(members.items()):
        if peer == peer_url or (client_url and client == client_url):
            used = peer_url if peer == peer_url else client_url
            raise ChangeInvalid(
                f"member {other_id} already uses {used}; each member needs its own addresses",
                member_id=other_id, address=used,
            )  # fmt: skip
    return False
