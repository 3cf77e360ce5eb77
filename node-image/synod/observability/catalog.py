"""The node's metric catalog: every series name one `synod node` can export.

Built from the node's own registries (NodeMetrics, the HTTP layer, the ID generators,
the gossip collector), never from a hand-written list: a metric renamed in code is
renamed here, and a dashboard or alert still naming the old one fails to generate.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

# Series Prometheus itself writes for every target (not exported by the node).
PROMETHEUS_SERIES = frozenset({"up"})
# Suffixes a family's samples get, by family type (prometheus_client naming).
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}
FAMILIES_MAX = 256  # A node exports a few dozen families; more is a bug.


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family: its name, type and help text."""

    name: str
    kind: str
    help: str

    def series(self) -> tuple[str, ...]:
        """The sample names this family exports."""
        return tuple(self.name + suffix for suffix in _SUFFIXES[self.kind])


def node_registry() -> CollectorRegistry:
    """A registry holding every metric a node registers (node, HTTP, IDs, gossip)."""
    from synod.gossip.core import GossipCore
    from synod.gossip.settings import GossipSettings
    from synod.gossip.state import Meta
    from synod.gossip.view import register as register_gossip
    from synod.node.http import register_metrics as register_http
    from synod.node.ids_http import IdsPool
    from synod.node.metrics import NodeMetrics
    from synod.services.state import ServiceStateMachine

    metrics = NodeMetrics(1)
    state = ServiceStateMachine()
    metrics.watch_locks(lambda: state.locks)  # as RaftServer does
    registry = metrics.registry
    register_http(registry)
    IdsPool(registry)
    core = GossipCore(GossipSettings(), "1", "127.0.0.1:1", Meta(), seed=1, now_ms=0)
    register_gossip(core, registry)
    return registry


def families(registry: CollectorRegistry | None = None) -> dict[str, Family]:
    """Every family of ``registry`` (default: the node's), by name."""
    registry = registry if registry is not None else node_registry()
    found: dict[str, Family] = {}
    for metric in registry.collect():
        found[metric.name] = Family(metric.name, metric.type, metric.documentation)
        assert len(found) <= FAMILIES_MAX, "more metric families than FAMILIES_MAX"
    assert found, "a node registry exports metrics"
    return found


def series_names(registry: CollectorRegistry | None = None) -> frozenset[str]:
    """Every sample name the node can export, plus the series Prometheus adds."""
    names = {name for family in families(registry).values() for name in family.series()}
    assert names and not names & PROMETHEUS_SERIES
    return frozenset(names | PROMETHEUS_SERIES)
