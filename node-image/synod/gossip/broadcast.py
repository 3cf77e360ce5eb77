"""The transmit-limited piggyback queue (memberlist's TransmitLimitedQueue).

Every membership fact (alive, suspect, dead) is queued once per member: a newer fact
about a member replaces the older one. Each gossip round and every outgoing probe
packet takes the least-transmitted facts that fit the packet; a fact is retired
after `retransmit_limit(mult, N)` transmissions, so dissemination costs O(log N)
packets per fact.

The queue is bounded (`broadcasts_max`); when full, the most-transmitted fact is
dropped and counted (`dropped`): the periodic push-pull repairs what gossip lost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def retransmit_limit(retransmit_mult: int, members: int) -> int:
    """memberlist's retransmitLimit: mult * ceil(log10(N + 1))."""
    assert retransmit_mult >= 1 and members >= 0
    limit = retransmit_mult * math.ceil(math.log10(members + 1))
    assert limit >= 0
    return limit


@dataclass(slots=True)
class Broadcast:
    """One queued fact: its key (the member it is about), bytes and transmit count."""

    key: str
    encoded: bytes
    transmits: int
    order: int


class BroadcastQueue:
    """Facts waiting to be piggybacked, at most one per key."""

    def __init__(self, broadcasts_max: int) -> None:
        assert broadcasts_max >= 1
        self.broadcasts_max = broadcasts_max
        self._by_key: dict[str, Broadcast] = {}
        self._order = 0
        self.dropped = 0
        assert not self._by_key

    def __len__(self) -> int:
        return len(self._by_key)

    def queue(self, key: str, encoded: bytes) -> None:
        """Queue a fact about `key`, replacing an older one about the same key."""
        assert key and encoded
        self._order += 1
        self._by_key.pop(key, None)
        if len(self._by_key) >= self.broadcasts_max:
            victim = max(self._by_key.values(), key=lambda b: (b.transmits, -b.order))
            del self._by_key[victim.key]
            self.dropped += 1
        self._by_key[key] = Broadcast(key, encoded, 0, self._order)
        assert len(self._by_key) <= self.broadcasts_max

    def pending(self, key: str) -> bytes | None:
        """The queued fact about `key`, if any (for tests and the buddy system)."""
        assert key
        broadcast = self._by_key.get(key)
        return None if broadcast is None else broadcast.encoded

    def take(self, bytes_budget: int, overhead_bytes: int, limit: int) -> list[bytes]:
        """The least-transmitted facts fitting `bytes_budget` (each costing its size
        plus `overhead_bytes`); counts a transmission and retires facts at `limit`."""
        assert bytes_budget >= 0 and overhead_bytes >= 0
        assert limit >= 1
        chosen: list[bytes] = []
        used = 0
        for broadcast in sorted(self._by_key.values(), key=lambda b: (b.transmits, -b.order)):
            cost = len(broadcast.encoded) + overhead_bytes
            if used + cost > bytes_budget:
                continue
            used += cost
            chosen.append(broadcast.encoded)
            broadcast.transmits += 1
            if broadcast.transmits >= limit:
                del self._by_key[broadcast.key]
        assert used <= bytes_budget
        return chosen
