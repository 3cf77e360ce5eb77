"""Sessions can be closed: `POST /v1/session/close`, `AsyncClient.close()` and the CLI.

Regression: there was no way to close a client session, so every SDK client and every
CLI command left one behind until `sessions_max` evicted it.
"""

from __future__ import annotations

import asyncio

from click.testing import CliRunner

from synod.cli.main import cli
from synod.client import AsyncClient, Client
from tests.unit.http_helpers import async_test, ok, problem, serve, served_url
from tests.unit.memory_node import MemoryNode

CLOSE = "/v1/session/close"


@async_test
async def test_close_route_forgets_the_session_and_refuses_it_afterwards() -> None:
    node = MemoryNode()
    async with serve(node) as client:
        opened = await ok(await client.post("/v1/session/open"))
        client_id = opened["client_id"]
        headers = {"Synod-Client-Id": str(client_id), "Synod-Seq": "1"}
        await ok(await client.post("/v1/kv/put", json={"key": "k", "value": "v"}, headers=headers))
        closed = await ok(await client.post(CLOSE, json={"client_id": client_id}))
        assert closed["client_id"] == client_id and client_id not in node.machine.sessions
        headers["Synod-Seq"] = "2"
        late = await client.post("/v1/kv/put", json={"key": "k", "value": "w"}, headers=headers)
        await problem(late, 410, "session-expired")
        await problem(await client.post(CLOSE, json={"client_id": client_id}), 410,
                      "session-expired")  # fmt: skip
        await problem(await client.post(CLOSE, json={}), 400, "invalid-argument")
    assert node.machine.kv.get(b"k").value == b"v"  # type: ignore[union-attr]


@async_test
async def test_sdk_close_closes_its_session() -> None:
    node = MemoryNode()
    async with served_url(node) as url:
        client = AsyncClient(url, discover_leader=False)
        await client.put("k", "v")
        client_id = client.client_id
        assert client_id in node.machine.sessions
        await client.close()
        assert client_id not in node.machine.sessions and client.client_id == 0
        async with AsyncClient(url, discover_leader=False) as reader:
            assert await reader.get("k") is not None  # no session opened by a read
        assert len(node.machine.sessions) == 0


def test_cli_write_leaves_no_session_behind() -> None:
    node = MemoryNode()

    @async_test
    async def run() -> None:
        async with served_url(node) as url:
            # The CLI's blocking client runs on its own loop thread: run it off this one.
            result = await asyncio.to_thread(
                CliRunner().invoke, cli, ["kv", "put", "k", "v", "--endpoints", url]
            )
            assert result.exit_code == 0, result.output
        assert node.machine.kv.get(b"k") is not None

    run()
    assert len(node.machine.sessions) == 0


def test_blocking_client_closes_its_session() -> None:
    node = MemoryNode()

    @async_test
    async def run() -> None:
        async with served_url(node) as url:

            def use() -> None:
                with Client(url, discover_leader=False) as client:
                    client.put("k", "v")
                    assert len(node.machine.sessions) == 1
                    assert client.close_session() is True
                    assert len(node.machine.sessions) == 0
                    client.put("k", "w")  # a new session
                    assert len(node.machine.sessions) == 1

            await asyncio.to_thread(use)

    run()
    assert len(node.machine.sessions) == 0
