"""Gossip settings: memberlist's DefaultLANConfig as the reference, plus the bounds.

Intervals are in milliseconds (`_ms`), counts are plain integers; every collection in
the core has a bound here whose name ends in `_max`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

# Datagram budget for one packet (memberlist's UDPBufferSize is 1400: below Ethernet's MTU).
PACKET_BYTES_MAX_DEFAULT = 1400
# A push-pull message carries the whole member table; it goes in one datagram up to this.
STATE_BYTES_MAX_DEFAULT = 60 * 1024


@dataclass(frozen=True, slots=True)
class GossipSettings:
    """Protocol timing and bounds. Defaults are memberlist's LAN defaults."""

    probe_interval_ms: int = 1000  # ProbeInterval
    probe_timeout_ms: int = 500  # ProbeTimeout
    indirect_checks: int = 3  # IndirectChecks
    suspicion_mult: int = 4  # SuspicionMult
    suspicion_max_timeout_mult: int = 6  # SuspicionMaxTimeoutMult
    retransmit_mult: int = 4  # RetransmitMult
    gossip_interval_ms: int = 200  # GossipInterval
    gossip_nodes: int = 3  # GossipNodes
    gossip_to_the_dead_ms: int = 30_000  # GossipToTheDeadTime
    push_pull_interval_ms: int = 30_000  # PushPullInterval
    awareness_max_multiplier: int = 8  # AwarenessMaxMultiplier
    # Until a seed answers, the join push-pull is repeated (memberlist leaves the retry to
    # its caller; Consul's retry_join does it): a lost datagram must not isolate a member.
    join_retry_ms: int = 1000
    join_attempts_max: int = 120
    # Lifeguard switches (both on in memberlist; the simulator turns them off to compare).
    lifeguard: bool = True  # local health awareness + buddy system + dynamic suspicion
    refute: bool = True  # answer a suspicion about ourselves (off only as a known-bad variant)
    # Bounds (Principle 4).
    members_max: int = 1024
    broadcasts_max: int = 4096  # Pending piggyback messages (one per member at most, x3).
    packet_bytes_max: int = PACKET_BYTES_MAX_DEFAULT
    state_bytes_max: int = STATE_BYTES_MAX_DEFAULT
    relays_max: int = 256  # Indirect probes we are relaying for others at once.
    outbox_packets_max: int = 4096  # Packets produced but not yet taken by the shell.
    events_max: int = 4096  # Membership events produced but not yet taken by the shell.

    def __post_init__(self) -> None:
        """Check the values fit together. Raises ValueError naming the misfit."""
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool):
                continue
            if value < 1:
                raise ValueError(f"{field.name} must be positive")
        if self.probe_timeout_ms >= self.probe_interval_ms:
            raise ValueError("probe_timeout_ms must be shorter than probe_interval_ms")
        if self.suspicion_mult < 2:
            raise ValueError("suspicion_mult must be at least 2")
        if self.packet_bytes_max < 512 or self.state_bytes_max < self.packet_bytes_max:
            raise ValueError("packet_bytes_max >= 512 and state_bytes_max >= packet_bytes_max")
        if self.broadcasts_max < self.members_max:
            raise ValueError("broadcasts_max must hold one broadcast per member")
