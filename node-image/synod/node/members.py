"""Where members are reached: shared by the configuration and the node driver."""

from __future__ import annotations

from dataclasses import dataclass

from synod.raft.types import NodeId


@dataclass(frozen=True, slots=True)
class Member:
    """Where to reach one member."""

    node_id: NodeId
    peer_address: str  # host:port of the peer listener
    client_url: str  # http://host:port of the client API
