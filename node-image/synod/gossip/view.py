"""What the node exposes of gossip: the `/v1/cluster/members` JSON view and the
`synod_gossip_*` Prometheus metrics, both read from a `GossipCore` on demand (the
core keeps counters; nothing here hooks into the protocol).

The node wiring (a `--listen-gossip` option defaulting to port 7946, a `GossipUdp`
started beside the Raft server, the route and the registry) is described in
docs/gossip.md; these two functions are what it calls.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from synod.gossip.core import GossipCore
from synod.gossip.state import MemberState

# Counters of GossipStats exported as synod_gossip_<name>_total, with their help text.
_COUNTERS = {
    "probes_sent": "Direct probes sent.",
    "probes_failed": "Probes that got no ack, direct or indirect, in a probe period.",
    "indirect_probes_sent": "Ping-req messages sent to relays.",
    "nacks_received": "Nacks received from relays (they are alive; the target is not).",
    "suspicions_raised": "Suspicions this member raised after its own failed probe.",
    "suspicions_refuted": "Suspected members that refuted with a higher incarnation.",
    "self_refutations": "Times this member refuted a suspicion or death of itself.",
    "stale_accusations": "Accusations at an older incarnation answered with our alive.",
    "deaths_declared": "Suspicions that timed out here into a death.",
    "dead_revived": "Members held dead that came back alive: false positives.",
    "decode_errors": "Datagrams refused by the codec.",
    "packets_dropped": "Datagrams not sent: outbox or state size over its bound.",
    "relays_dropped": "Ping-req requests refused: relays_max reached.",
    "members_refused": "New members refused: members_max reached.",
    "push_pulls": "Full-state exchanges handled.",
}


def members_view(core: GossipCore) -> dict[str, object]:
    """The JSON body of `/v1/cluster/members`: every known member with its state."""
    members = [
        {
            "name": m.name,
            "address": m.address,
            "state": m.state.name.lower(),
            "incarnation": m.incarnation,
            "client_url": m.meta.client_url,
            "zone": m.meta.zone,
            "services": list(m.meta.services),
            "state_changed_ms": m.state_changed_ms,
        }
        for m in core.member_list()
    ]
    assert len(members) <= core.settings.members_max
    return {"self": core.name, "health_score": core.health_score(), "members": members}


class GossipCollector(Collector):
    """Prometheus collector of one core's `synod_gossip_*` metrics."""

    def __init__(self, core: GossipCore) -> None:
        self.core = core

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """Members by state, the health score and the protocol counters."""
        by_state = GaugeMetricFamily(
            "synod_gossip_members", "Known members by state.", labels=["state"]
        )
        counts = dict.fromkeys(MemberState, 0)
        for member in self.core.members.values():
            counts[member.state] += 1
        for state, count in counts.items():
            by_state.add_metric([state.name.lower()], count)
        yield by_state
        yield GaugeMetricFamily(
            "synod_gossip_health_score",
            "Lifeguard local health score (0 healthy; probe timing scales by score + 1).",
            value=self.core.health_score(),
        )
        stats = self.core.stats.as_dict()
        for name, help_text in _COUNTERS.items():
            yield CounterMetricFamily(f"synod_gossip_{name}", help_text, value=stats[name])


def register(core: GossipCore, registry: CollectorRegistry) -> GossipCollector:
    """Add the gossip metrics of `core` to `registry`."""
    collector = GossipCollector(core)
    registry.register(collector)
    return collector
