"""`/v1/cluster/members`, the gossip summary of `/v1/cluster/status` and the
`synod_gossip_*` metrics over the real HTTP app of an in-memory node.

The gossip view is a real `GossipCore` of three cores wired by an in-memory packet
router and a fake clock (no sockets, no sleeps): they converge to all alive, then one
stops answering and the others declare it dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp.test_utils import TestServer
from click.testing import CliRunner, Result
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import generate_latest

from synod.cli.main import cli
from synod.gossip.core import GossipCore
from synod.gossip.settings import GossipSettings
from synod.gossip.state import MemberState, Meta
from synod.gossip.view import register
from synod.node.gossip_node import trace_event
from synod.node.http import build_app
from synod.node.routes import route_specs
from synod.node.schema import validate
from tests.unit.http_helpers import async_test, ok, serve
from tests.unit.memory_node import MemoryNode

STEP_MS = 50
SIM_MS_MAX = 120_000  # Fake time a convergence may take before the test fails.
DELIVERY_ROUNDS_MAX = 10  # Rounds of deliveries per step (acks answer pings in a step).


class Cores:
    """Three gossip cores exchanging packets in memory on a fake clock."""

    def __init__(self) -> None:
        self.now_ms = 0
        self.down: set[str] = set()
        self.cores = {
            f"10.0.0.{i}:7946": GossipCore(
                GossipSettings(), str(i), f"10.0.0.{i}:7946",
                Meta(client_url=f"http://10.0.0.{i}:2379"), seed=i, now_ms=0,
            )
            for i in (1, 2, 3)
        }  # fmt: skip
        first = self.core("1")
        for core in self.cores.values():
            if core is not first:
                core.join([first.address], 0)

    def core(self, name: str) -> GossipCore:
        return next(c for c in self.cores.values() if c.name == name)

    def step(self) -> None:
        self.now_ms += STEP_MS
        for core in self.cores.values():
            if core.name not in self.down:
                core.tick(self.now_ms)
        for _ in range(DELIVERY_ROUNDS_MAX):
            moved = 0
            for sender in self.cores.values():
                for packet in sender.take_packets():
                    target = self.cores.get(packet.address)
                    if target is None or target.name in self.down or sender.name in self.down:
                        continue
                    target.receive(sender.address, packet.payload, self.now_ms)
                    moved += 1
            if not moved:
                break

    def run_until(self, done: Any, what: str) -> None:
        while self.now_ms < SIM_MS_MAX:
            if done():
                return
            self.step()
        raise AssertionError(f"no {what} within {SIM_MS_MAX} ms of fake time")

    def states(self, observer: str) -> dict[str, MemberState]:
        return {m.name: m.state for m in self.core(observer).member_list()}


def _schema(operation_id: str) -> dict[str, Any]:
    return next(s.response for s in route_specs() if s.operation_id == operation_id)


@async_test
async def test_members_route_serves_the_gossip_view_alive_then_dead() -> None:
    cores = Cores()
    alive3 = {"1": MemberState.ALIVE, "2": MemberState.ALIVE, "3": MemberState.ALIVE}
    cores.run_until(lambda: all(cores.states(n) == alive3 for n in "123"), "convergence")
    node = MemoryNode()
    register(cores.core("1"), node.registry)
    async with serve(node, gossip=cores.core("1")) as client:
        body = await ok(await client.get("/v1/cluster/members"))
        validate(body, _schema("clusterMembers"))
        assert body["enabled"] is True and body["self"] == "1"
        by_name = {m["name"]: m for m in body["members"]}
        assert {n: m["state"] for n, m in by_name.items()} == {"1": "alive", "2": "alive",
                                                               "3": "alive"}  # fmt: skip
        assert by_name["3"]["client_url"] == "http://10.0.0.3:2379"
        assert by_name["3"]["address"] == "10.0.0.3:7946"

        cores.down.add("3")  # Crashed: sends and answers nothing.
        cores.run_until(lambda: cores.states("1")["3"] is MemberState.DEAD, "death of 3")
        body = await ok(await client.get("/v1/cluster/members"))
        validate(body, _schema("clusterMembers"))
        assert {m["name"]: m["state"] for m in body["members"]}["3"] == "dead"

        status = await ok(await client.get("/v1/cluster/status"))
        validate(status, _schema("clusterStatus"))
        assert status["gossip"]["self"] == "1"
        assert status["gossip"]["members"] == {"alive": 2, "suspect": 0, "dead": 1, "left": 0}

        text = await (await client.get("/metrics")).text()
        assert 'synod_gossip_members{state="dead"} 1.0' in text
    assert 'synod_gossip_members{state="alive"} 2.0' in generate_latest(node.registry).decode()


@async_test
async def test_members_route_answers_disabled_without_gossip() -> None:
    async with serve(MemoryNode()) as client:
        body = await ok(await client.get("/v1/cluster/members"))
        validate(body, _schema("clusterMembers"))
        assert body["enabled"] is False and body["self"] is None and body["members"] == []
        status = await ok(await client.get("/v1/cluster/status"))
        assert status["gossip"] is None
        text = await (await client.get("/metrics")).text()
        assert "synod_gossip_" not in text


@contextlib.asynccontextmanager
async def _served(node: MemoryNode, gossip: GossipCore | None) -> AsyncIterator[str]:
    server = TestServer(build_app(node, registry=node.registry, gossip=gossip))
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def _members_cli(gossip: GossipCore | None, *args: str) -> Result:
    async with _served(MemoryNode(), gossip) as url:
        # The CLI's blocking client runs its own loop: keep it off this one.
        return await asyncio.to_thread(
            CliRunner().invoke, cli, ["members", *args, "--endpoints", url, "--attempts", "2"]
        )


@async_test
async def test_members_cli_prints_the_gossip_view() -> None:
    cores = Cores()
    cores.run_until(lambda: len(cores.states("2")) == 3, "2 learning every member")
    cores.down.add("1")
    cores.run_until(lambda: cores.states("2")["1"] is MemberState.DEAD, "death of 1")
    result = await _members_cli(cores.core("2"), "-o", "table")
    assert result.exit_code == 0, result.output
    assert "gossip view of 2" in result.output
    lines = {line.split()[1]: line for line in result.output.splitlines() if "10.0.0." in line}
    assert "dead" in lines["1"] and "http://10.0.0.1:2379" in lines["1"]
    assert "alive" in lines["3"]
    result = await _members_cli(cores.core("2"), "-o", "json")
    assert result.exit_code == 0, result.output
    view = json.loads(result.output)
    assert {m["name"]: m["state"] for m in view["members"]} == {"1": "dead", "2": "alive",
                                                                "3": "alive"}  # fmt: skip


@async_test
async def test_members_cli_says_when_gossip_is_off() -> None:
    result = await _members_cli(None)
    assert result.exit_code == 0, result.output
    assert "gossip is off" in result.output


def test_membership_events_become_span_events_with_provenance() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    cores = Cores()
    cores.run_until(lambda: len(cores.states("1")) == 3, "1 learning every member")
    cores.down.add("3")
    cores.run_until(lambda: cores.states("1")["3"] is MemberState.DEAD, "death of 3")
    events = cores.core("1").take_events()
    deaths = [e for e in events if e.name == "3" and e.kind == "dead"]
    assert deaths, events
    for event in events:
        trace_event(tracer, "1", event)
    spans = exporter.get_finished_spans()
    assert len(spans) == len(events) and {s.name for s in spans} == {"gossip.membership"}
    recorded = [s.events[0] for s in spans if s.events[0].name == "gossip.dead"]
    attributes = recorded[-1].attributes
    assert attributes is not None
    assert attributes["gossip.observer"] == "1" and attributes["gossip.member"] == "3"
    death = deaths[-1]
    assert attributes["gossip.suspected_by"] == death.suspected_by
    assert list(attributes["gossip.confirmed_by"]) == list(death.confirmed_by)  # type: ignore[arg-type]
    assert death.suspected_by in ("1", "2")
