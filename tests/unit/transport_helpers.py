"""Two or more real PeerTransports on loopback, for the transport tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from synod.node.transport import PeerTls, PeerTransport, TransportLimits
from synod.raft.types import Message, NodeId
from tests.ports import free_port

CLUSTER_ID = bytes(range(16))
WAIT_S_MAX = 20.0


class Member:
    """One transport and everything its callbacks saw."""

    def __init__(
        self,
        node_id: NodeId,
        addresses: dict[NodeId, str],
        limits: TransportLimits | None = None,
        cluster_id: bytes = CLUSTER_ID,
        transport_class: type[PeerTransport] = PeerTransport,
        tls: PeerTls | None = None,
    ) -> None:
        self.received: list[Message] = []
        self.unreachable: list[NodeId] = []
        self.snapshots_sent: list[tuple[NodeId, bool]] = []
        self.transport = transport_class(
            node_id,
            addresses[node_id],
            addresses.get,
            self.received.extend,
            self.unreachable.append,
            lambda peer, ok: self.snapshots_sent.append((peer, ok)),
            limits,
            cluster_id=cluster_id,
            tls=tls,
        )


def addresses_for(*node_ids: NodeId, host: str = "127.0.0.1") -> dict[NodeId, str]:
    return {node_id: f"{host}:{free_port(host)}" for node_id in node_ids}


async def wait_until(
    predicate: Callable[[], bool], what: str, timeout_s: float = WAIT_S_MAX
) -> None:
    """Poll `predicate` until it holds; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)
