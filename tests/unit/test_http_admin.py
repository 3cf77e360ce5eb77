"""Admin input and refusals: bad or clashing addresses, no-ops that say so, 409 codes
for refusals (they answered 500 `internal`), and snapshots that are leader-only."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from synod.node.api import ChangeInvalid, NoLeader, check_new_learner
from synod.node.config import Member, NodeConfig
from synod.node.http import build_app
from synod.node.inputs import client_url_from_json, peer_address_from_json
from synod.node.problems import Problem
from synod.node.server import RaftServer
from synod.node.transport import split_host_port
from synod.raft.types import Role
from tests.ports import free_port
from tests.unit.http_helpers import async_test, ok, problem, serve
from tests.unit.memory_node import MemoryNode

ADD = "/v1/admin/members/add-learner"
LEADER_WAIT_S = 20.0  # generous: an election of one takes a few ticks


def _free_port() -> int:
    return free_port()


@pytest.mark.parametrize(
    "peer_url",
    ["127.0.0.1", "http://127.0.0.1:2380", "127.0.0.1:0", "127.0.0.1:65536", "a_b:2380",
     "::1:2380", "host:port", "127.0.0.1:2380/x", "-bad-.example:1", "999.1.1.1:2380"],
)  # fmt: skip
def test_malformed_peer_address_is_400_before_the_node(peer_url: str) -> None:
    @async_test
    async def run() -> None:
        node = MemoryNode()
        async with serve(node) as client:
            refused = await client.post(ADD, json={"id": 4, "peer_url": peer_url})
            await problem(refused, 400, "invalid-argument")
        assert node.admin_calls == []

    run()


@async_test
async def test_client_url_is_checked_and_addresses_are_normalised() -> None:
    node = MemoryNode()
    async with serve(node) as client:
        bad = await client.post(ADD, json={"id": 4, "peer_url": "h:1", "client_url": "h:2"})
        await problem(bad, 400, "invalid-argument")
        body = {"id": 4, "peer_url": "Node-4.Example:2380", "client_url": "http://[::1]:2379/"}
        await ok(await client.post(ADD, json=body))
    assert node.admin_calls == [("add_learner", (4, "node-4.example:2380", "http://[::1]:2379"))]


def test_check_new_learner_refuses_clashes_and_spots_no_ops() -> None:
    members: dict[int, tuple[str | None, str | None]] = {
        1: ("10.0.0.1:2380", "http://10.0.0.1:2379"),
        2: ("10.0.0.2:2380", "http://10.0.0.2:2379"),
    }
    assert check_new_learner(2, "10.0.0.2:2380", "", members)  # same member: a no-op
    assert check_new_learner(2, "10.0.0.2:2380", "http://10.0.0.2:2379", members)
    assert not check_new_learner(3, "10.0.0.3:2380", "http://10.0.0.3:2379", members)
    with pytest.raises(ChangeInvalid, match=re.escape("member with peer address 10.0.0.2")):
        check_new_learner(2, "10.0.0.9:2380", "", members)
    with pytest.raises(ChangeInvalid, match=re.escape("member 1 already uses 10.0.0.1:2380")):
        check_new_learner(3, "10.0.0.1:2380", "", members)
    with pytest.raises(
        ChangeInvalid, match=re.escape("member 2 already uses http://10.0.0.2:2379")
    ):
        check_new_learner(3, "10.0.0.3:2380", "http://10.0.0.2:2379", members)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=40), st.from_regex(r"\A[a-zA-Z0-9.\[\]:-]{1,30}:[0-9]{1,6}\Z")))
def test_address_parsers_refuse_cleanly_or_normalise_idempotently(text: str) -> None:
    for parse in (peer_address_from_json, client_url_from_json):
        try:
            normal = parse(text)
        except Problem as refused:
            assert refused.code == "invalid-argument" and refused.status == 400
            continue
        assert parse(normal) == normal  # normalising twice changes nothing
        if parse is peer_address_from_json:
            host, port = split_host_port(normal)
            assert host and 1 <= port <= 65535


# -- a real single-member node ---------------------------------------------------------------


def _config(tmp_path: Path, node_id: int = 1, join: bool = False) -> NodeConfig:
    peer = f"127.0.0.1:{_free_port()}"
    client = f"http://127.0.0.1:{_free_port()}"
    founder = Member(1, peer, client) if node_id == 1 else Member(1, "127.0.0.1:9", "")
    return NodeConfig(
        node_id=node_id, data_dir=str(tmp_path / f"node-{node_id}"),
        listen_client=client.removeprefix("http://"), listen_peer=peer,
        advertise_client=client, advertise_peer=peer, initial_members=(founder,),
        join=join, tick_ms=10, heartbeat_interval_ms=20, election_timeout_ms=100,
        request_timeout_ms=5000,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def raft_node(
    config: NodeConfig, lead: bool = True
) -> AsyncIterator[tuple[TestClient[Any, Any], RaftServer]]:
    """A started RaftServer behind the HTTP layer; waits until it leads if ``lead``."""
    server = RaftServer(config)
    await server.start()
    try:
        deadline = time.monotonic() + LEADER_WAIT_S
        while lead and server._raft().role != Role.LEADER:
            assert time.monotonic() < deadline, "a single voter did not become leader"
            await asyncio.sleep(0.01)
        app = build_app(server, registry=server.node_metrics.registry)
        async with TestClient(TestServer(app)) as client:
            yield client, server
    finally:
        await server.stop(transfer_leadership=False)


def test_refusals_are_409_and_no_ops_say_so(tmp_path: Path) -> None:
    config = _config(tmp_path)

    @async_test
    async def run() -> None:
        async with raft_node(config) as (client, _server):
            last = await client.post("/v1/admin/members/remove", json={"id": 1})
            assert "last voter" in (await problem(last, 409, "conf-change-invalid"))["detail"]
            absent = await ok(await client.post("/v1/admin/members/remove", json={"id": 9}))
            assert absent["changed"] is False and "not a member" in absent["message"]
            nobody = await client.post("/v1/admin/leadership/transfer", json={})
            await problem(nobody, 409, "transfer-invalid")
            learner = {"id": 2, "peer_url": f"127.0.0.1:{_free_port()}"}
            added = await ok(await client.post(ADD, json=learner))
            assert added["changed"] is True
            again = await ok(await client.post(ADD, json=learner))
            assert again["changed"] is False and "already a member" in again["message"]
            to_learner = await client.post("/v1/admin/leadership/transfer", json={"to": 2})
            assert "not a voter" in (await problem(to_learner, 409, "transfer-invalid"))["detail"]
            moved = await client.post(ADD, json={"id": 2, "peer_url": "127.0.0.1:9"})
            answer = await problem(moved, 409, "conf-change-invalid")
            assert f"peer address {learner['peer_url']}" in answer["detail"]
            clash = await client.post(ADD, json={"id": 3, "peer_url": config.advertise_peer})
            answer = await problem(clash, 409, "conf-change-invalid")
            assert answer["member_id"] == 1
            client_clash = {"id": 3, "peer_url": f"127.0.0.1:{_free_port()}",
                            "client_url": config.advertise_client}  # fmt: skip
            await problem(await client.post(ADD, json=client_clash), 409, "conf-change-invalid")
            status = await ok(await client.get("/v1/cluster/status"))
            assert sorted(m["id"] for m in status["members"]) == [1, 2]

    run()


def test_snapshot_is_leader_only(tmp_path: Path) -> None:
    """A follower used to snapshot itself although admin calls are documented as
    forwarded; now it refuses as a non-leader (and the HTTP layer forwards when it
    knows the leader)."""
    config = _config(tmp_path, node_id=2, join=True)

    @async_test
    async def run() -> None:
        async with raft_node(config, lead=False) as (client, server):
            with pytest.raises(NoLeader):
                await server.admin_snapshot()
            refused = await client.post("/v1/admin/snapshot", json={})
            await problem(refused, 503, "no-leader")
            assert server.status()["snapshot_index"] == 0

    run()
