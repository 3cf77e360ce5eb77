"""SWIM gossip in `synod node` (docs/gossip.md, "In the node").

`start_gossip(config, registry)` starts a `GossipUdp` member named after the node id
with the member's client URL as metadata, contacts the seeds and registers the
`synod_gossip_*` metrics; `stop_gossip` leaves and closes it. The HTTP layer reads the
core through the `GOSSIP` app key (`members_answer`, `status_summary`), so the Raft
server and `NodeApi` do not change. Gossip is off (`None`) unless `--listen-gossip` is
given; `/v1/cluster/members` then answers `enabled: false` with no members.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket

from aiohttp import web
from opentelemetry import trace
from opentelemetry.util.types import AttributeValue
from prometheus_client import CollectorRegistry

from synod.gossip.core import GossipCore
from synod.gossip.settings import GossipSettings
from synod.gossip.state import MembershipEvent, MemberState, Meta
from synod.gossip.udp import GossipUdp, parse_address
from synod.gossip.view import members_view, register
from synod.node.config import NodeConfig

log = logging.getLogger("synod.node.gossip")

GOSSIP = web.AppKey("gossip", GossipCore)  # Absent from the app when gossip is off.
SEEDS_MAX = 64  # Seed addresses resolved at start (the node config's MEMBERS_MAX).
RESOLVE_TIMEOUT_MS = 2000  # One DNS look-up of a seed or of the advertised host.
SPAN_NAME = "gossip.membership"


def trace_event(tracer: trace.Tracer, observer: str, event: MembershipEvent) -> None:
    """Record one membership event with its provenance (who suspected, who confirmed)
    as a span of its own carrying one span event. Raises nothing."""
    assert observer, "the observer is a member name"
    assert event.name, "a membership event names its member"
    attributes: dict[str, AttributeValue] = {
        "gossip.observer": observer,
        "gossip.member": event.name,
        "gossip.incarnation": event.incarnation,
        "gossip.at_ms": event.at_ms,
        "gossip.source": event.source,
        "gossip.suspected_by": event.suspected_by,
        "gossip.confirmed_by": list(event.confirmed_by),
    }
    with tracer.start_as_current_span(
        SPAN_NAME, attributes={"gossip.kind": str(event.kind)}
    ) as span:
        span.add_event(f"gossip.{event.kind}", attributes=attributes)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def resolve(address: str) -> str | None:
    """`address` with its host resolved to an IPv4 address (None when it does not resolve
    within RESOLVE_TIMEOUT_MS). The UDP socket would otherwise resolve names on every
    send, blocking the event loop."""
    host, port = parse_address(address)
    if _is_ip(host):
        return address
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM),
            RESOLVE_TIMEOUT_MS / 1000,
        )
    except (OSError, TimeoutError) as error:
        log.info("gossip: cannot resolve %s: %s", address, error)
        return None
    assert infos, "getaddrinfo answers at least one address or raises"
    return f"{infos[0][4][0]}:{port}"


async def start_gossip(
    config: NodeConfig, registry: CollectorRegistry, settings: GossipSettings | None = None
) -> GossipUdp | None:
    """The node's gossip member, started, or None when gossip is off. Raises OSError when
    the UDP port cannot be bound."""
    if not config.listen_gossip:
        return None
    assert config.advertise_gossip, "load_config sets advertise_gossip with listen_gossip"
    assert len(config.gossip_join) <= SEEDS_MAX
    advertise = await resolve(config.advertise_gossip) or config.advertise_gossip
    tracer = trace.get_tracer("synod.node")  # No-op unless tracing is configured.
    name = str(config.node_id)
    member = GossipUdp(
        settings or GossipSettings(),
        name,
        config.listen_gossip,
        Meta(client_url=config.advertise_client),
        advertise=advertise,
        on_event=lambda event: trace_event(tracer, name, event),
    )
    seeds = [s for s in [await resolve(a) for a in config.gossip_join] if s and s != advertise]
    await member.start(seeds)
    register(member.core, registry)
    log.info("gossip on %s (advertised %s), seeds %s", config.listen_gossip, advertise, seeds)
    return member


async def stop_gossip(member: GossipUdp | None) -> None:
    """Leave (one best-effort gossip round) and close. Raises nothing."""
    if member is None:
        return
    await member.leave()
    await member.close()


def members_answer(core: GossipCore | None) -> dict[str, object]:
    """The `/v1/cluster/members` fields (the header is added by the HTTP layer)."""
    if core is None:
        return {"enabled": False, "self": None, "health_score": 0, "members": []}
    view = members_view(core)
    assert view["self"] == core.name
    return {"enabled": True, **view}


def status_summary(core: GossipCore | None) -> dict[str, object] | None:
    """The `gossip` member of `/v1/cluster/status`: member counts by state (None: off)."""
    if core is None:
        return None
    counts = {state.name.lower(): 0 for state in MemberState}
    for member in core.members.values():
        counts[member.state.name.lower()] += 1
    assert sum(counts.values()) == len(core.members)
    return {"self": core.name, "health_score": core.health_score(), "members": counts}
