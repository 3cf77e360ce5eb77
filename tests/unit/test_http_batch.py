"""`POST /v1/batch` on the real HTTP app over a real state machine: each operation gets
what its own request would, answers stream as they complete (a queued lock acquire holds
nothing up), bad batches run nothing, sessions de-duplicate per operation, a follower
answers not-leader per operation, and every operation is counted under its own route."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp.test_utils import TestClient

from synod.node.api import NotLeader
from synod.node.routes import BATCH_OPS_MAX
from synod.services.commands import lease_grant_op
from tests.unit.http_helpers import WAIT_TIMEOUT_S, async_test, ok, problem, serve
from tests.unit.memory_node import MemoryNode


def op(path: str, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    return {"call": {path: body}, "headers": headers} if headers else {"call": {path: body}}


async def lines(response: Any) -> list[dict[str, Any]]:
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "application/x-ndjson"
    return [json.loads(line) for line in (await response.read()).splitlines()]


async def batch(client: TestClient[Any, Any], *ops: dict[str, Any]) -> dict[int, Any]:
    answers = await lines(await client.post("/v1/batch", json={"ops": list(ops)}))
    assert sorted(a["i"] for a in answers) == list(range(len(ops)))
    return {a["i"]: a for a in answers}


@async_test
async def test_each_operation_answers_as_its_own_request_would() -> None:
    node = MemoryNode()
    assert node.apply(lease_grant_op(10_000, 1))["ok"]
    async with serve(node) as client:
        answers = await batch(
            client,
            op("/v1/kv/put", {"key": "a", "value": "1"}),
            op("/v1/kv/put", {"key": "b", "value": "2"}),
            op("/v1/locks/acquire", {"name": "m", "owner": "o", "lease": 1}),
            op("/v1/locks/release", {"name": "nobody-holds-it", "owner": "o"}),
        )
        assert [answers[i]["status"] for i in range(4)] == [200, 200, 200, 409]
        assert answers[2]["body"]["granted"] and answers[2]["body"]["token"] > 0
        assert answers[3]["body"]["code"] == "lock-not-held"
        single = await ok(await client.post("/v1/kv/range", json={"key": "a", "range_end": "c"}))
        assert [kv["value"] for kv in single["kvs"]] == ["1", "2"]
        assert set(answers[0]["body"]["header"]) == set(single["header"])


@async_test
async def test_a_queued_acquire_does_not_hold_back_the_other_answers() -> None:
    node = MemoryNode()
    for lease_id in (1, 2):
        assert node.apply(lease_grant_op(10_000, lease_id))["ok"]
    async with serve(node) as client:
        first = {"name": "m", "owner": "a", "lease": 1}
        held = await ok(await client.post("/v1/locks/acquire", json=first))
        response = await client.post("/v1/batch", json={"ops": [
            op("/v1/locks/acquire", {"name": "m", "owner": "b", "lease": 2, "wait_ms": 60_000}),
            op("/v1/kv/put", {"key": "k", "value": "v"}),
        ]})  # fmt: skip
        async with asyncio.timeout(WAIT_TIMEOUT_S):
            first = json.loads(await response.content.readline())
        assert first["i"] == 1 and first["status"] == 200  # the put, while b still waits
        await ok(await client.post("/v1/locks/release", json={"name": "m", "owner": "a",
                                                              "token": held["token"]}))  # fmt: skip
        async with asyncio.timeout(WAIT_TIMEOUT_S):
            second = json.loads(await response.content.readline())
        assert second["i"] == 0 and second["body"]["granted"]
        assert second["body"]["token"] > held["token"]


@async_test
async def test_a_bad_batch_is_refused_whole_and_runs_nothing() -> None:
    node = MemoryNode()
    async with serve(node) as client:
        good = op("/v1/kv/put", {"key": "k", "value": "v"})
        refused = [
            ({"ops": [good, op("/v1/kv/put", {"key": "k"})]}, 400, "invalid-argument"),
            ({"ops": [good, op("/v1/admin/snapshot", {})]}, 400, "invalid-argument"),
            (
                {
                    "ops": [
                        good,
                        {
                            "call": {
                                "/v1/kv/put": {"key": "k", "value": "v"},
                                "/v1/kv/range": {"key": "k"},
                            }
                        },
                    ]
                },
                400,
                "invalid-argument",
            ),
            (
                {"ops": [good, op("/v1/kv/put", {"key": "x", "value": "y"}, Evil="1")]},
                400,
                "invalid-argument",
            ),
            ({"ops": []}, 400, "invalid-argument"),
            ({"ops": [good] * (BATCH_OPS_MAX + 1)}, 413, "too-large"),
        ]
        for body, status, code in refused:
            await problem(await client.post("/v1/batch", json=body), status, code)
        plain = await client.post("/v1/batch", data=json.dumps({"ops": [good]}),
                                  headers={"Content-Type": "text/plain"})  # fmt: skip
        await problem(plain, 415, "unsupported-media-type")  # no cross-site write
        assert node.machine.kv.revision == 1, "nothing was applied"


@async_test
async def test_sessions_de_duplicate_each_operation() -> None:
    node = MemoryNode()
    async with serve(node) as client:
        opened = await ok(await client.post("/v1/session/open", json={}))
        session = {"Synod-Client-Id": str(opened["client_id"]), "Synod-Seq": "1"}
        put = op("/v1/kv/put", {"key": "k", "value": "once"}, **session)
        answers = await batch(client, put, put)
        assert answers[0]["body"]["header"]["revision"] == answers[1]["body"]["header"][
            "revision"]  # fmt: skip
        assert node.machine.kv.revision == 2, "one write, answered twice"


@async_test
async def test_a_follower_answers_not_leader_per_operation() -> None:
    node = MemoryNode(member_id=2)
    node.not_leader = NotLeader(1, "http://leader.example:2379")
    async with serve(node) as client:
        answers = await batch(client, op("/v1/kv/put", {"key": "k", "value": "v"}),
                              op("/v1/kv/range", {"key": "k", "serializable": True}))  # fmt: skip
    assert answers[0]["status"] == 421 and answers[0]["body"]["code"] == "not-leader"
    assert answers[0]["body"]["leader_client_url"] == "http://leader.example:2379"
    assert answers[1]["status"] == 200  # a serializable read is served here


@async_test
async def test_operations_are_counted_under_their_own_routes() -> None:
    node = MemoryNode()
    async with serve(node) as client:
        await batch(client, op("/v1/kv/put", {"key": "k", "value": "v"}),
                    op("/v1/kv/put", {"key": "j", "value": "v"}))  # fmt: skip
    count = node.registry.get_sample_value(
        "synod_http_requests_total", {"route": "/v1/kv/put", "method": "POST", "code": "200"}
    )
    assert count == 2
