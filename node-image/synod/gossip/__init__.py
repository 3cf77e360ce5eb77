"""`synod.gossip`: sans-I/O SWIM membership with the Lifeguard extensions.

The core (`GossipCore` in core.py) takes packets and `now_ms` in and hands back
packets and membership events; it owns no socket, no clock and no task. One concern
per module, in the style of hashicorp/memberlist:

- settings.py   memberlist's defaults and the named bounds
- state.py      members, their states, metadata
- messages.py   the wire messages and their msgpack codec (size-bounded)
- awareness.py  Lifeguard local health (the multiplier on probe interval and timeout)
- suspicion.py  Lifeguard dynamic suspicion timeout (the pure formula) and confirmations
- broadcast.py  the transmit-limited piggyback queue (retransmits ~ mult * log10(N))
- probe.py      the randomized round-robin probe order
- core.py       the protocol tying them together
- sim.py        a seeded simulator (`python -m synod.gossip.sim`)
- udp.py        the asyncio UDP adapter (the only module here doing I/O)
"""

from __future__ import annotations

from synod.gossip.core import GossipCore, Packet
from synod.gossip.settings import GossipSettings
from synod.gossip.state import EventKind, Member, MembershipEvent, MemberState, Meta

__all__ = [
    "EventKind",
    "GossipCore",
    "GossipSettings",
    "Member",
    "MemberState",
    "MembershipEvent",
    "Meta",
    "Packet",
]
