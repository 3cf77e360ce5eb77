"""The node-facing gossip views: `/v1/cluster/members` JSON and `synod_gossip_*` metrics."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry, generate_latest

from synod.gossip.core import GossipCore
from synod.gossip.messages import Alive, Suspect, encode_datagram, encode_message
from synod.gossip.settings import GossipSettings
from synod.gossip.state import Meta
from synod.gossip.view import members_view, register


def _core() -> GossipCore:
    core = GossipCore(
        GossipSettings(), "a", "10.0.0.1:7946", Meta("http://a:2379"), seed=1, now_ms=0
    )
    for message in (
        Alive(2, "b", "10.0.0.2:7946", Meta("http://b:2379", "z2", ("kv",))),
        Alive(0, "c", "10.0.0.3:7946", Meta()),
        Suspect(0, "c", "b"),
    ):
        core.receive("x:1", encode_datagram("b", [encode_message(message)]), 10)
    return core


def test_members_view_lists_every_member_with_state_and_metadata() -> None:
    view = members_view(_core())
    json.dumps(view)  # the body is JSON as is
    assert view["self"] == "a" and view["health_score"] == 0
    members = {m["name"]: m for m in view["members"]}  # type: ignore[attr-defined]
    assert members["b"] == {
        "name": "b",
        "address": "10.0.0.2:7946",
        "state": "alive",
        "incarnation": 2,
        "client_url": "http://b:2379",
        "zone": "z2",
        "services": ["kv"],
        "state_changed_ms": 10,
    }
    assert members["c"]["state"] == "suspect"


def test_metrics_count_members_by_state_and_protocol_counters() -> None:
    core = _core()
    registry = CollectorRegistry()
    register(core, registry)
    core.receive("x:1", b"junk", 20)
    text = generate_latest(registry).decode()
    assert 'synod_gossip_members{state="alive"} 2.0' in text
    assert 'synod_gossip_members{state="suspect"} 1.0' in text
    assert 'synod_gossip_members{state="dead"} 0.0' in text
    assert "synod_gossip_health_score 0.0" in text
    assert "synod_gossip_decode_errors_total 1.0" in text
    assert "synod_gossip_probes_sent_total 0.0" in text
