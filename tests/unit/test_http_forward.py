"""Followers forward leader-only requests once; a forwarded request is never re-forwarded."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.test_utils import TestServer

from synod.node.api import NotLeader
from synod.node.http import HttpLimits
from tests.unit.http_helpers import async_test, ok, problem, serve, served_url
from tests.unit.memory_node import MemoryNode

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@contextlib.asynccontextmanager
async def echo_server(
    answer: asyncio.Event | None = None,
) -> AsyncIterator[tuple[str, list[web.Request]]]:
    """A fake leader that records requests and answers 200 with what it saw; only once
    ``answer`` is set, when given (a slow leader)."""
    seen: list[web.Request] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request)
        body = await request.read()
        if answer is not None:
            await answer.wait()
        return web.json_response({"path": request.path_qs, "body": body.decode()}, status=200)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = TestServer(app)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), seen
    finally:
        await server.close()


@async_test
async def test_write_through_follower_reaches_leader() -> None:
    leader = MemoryNode(member_id=2)
    follower = MemoryNode(member_id=1)
    async with served_url(leader) as url, serve(follower) as client:
        follower.not_leader = NotLeader(2, url)
        put = await ok(await client.post("/v1/kv/put", json={"key": "k", "value": "v"}))
        assert put["header"]["member_id"] == 2 and leader.revision == 2
        assert follower.revision == 1 and follower.index == 0
        opened = await ok(await client.post("/v1/session/open"))
        headers = {"Synod-Client-Id": str(opened["client_id"]), "Synod-Seq": "1"}
        first = await ok(await client.post("/v1/kv/put", json={"key": "s", "value": "1"},
                                           headers=headers))  # fmt: skip
        retry = await ok(await client.post("/v1/kv/put", json={"key": "s", "value": "2"},
                                           headers=headers))  # fmt: skip
        assert first == retry and leader.machine.kv.get(b"s").value == b"1"  # type: ignore[union-attr]
        granted = await ok(await client.post("/v1/lease/grant", json={"ttl_ms": 5000}))
        alive = await ok(await client.post("/v1/lease/keepalive", json={"id": granted["id"]}))
        assert alive["ttl_ms"] == 5000
        await ok(await client.post("/v1/admin/snapshot"))
        assert leader.admin_calls == [("snapshot", None)] and not follower.admin_calls
        # Problems of the leader come back unchanged.
        refused = await client.post("/v1/lease/revoke", json={"id": 12345})
        await problem(refused, 404, "not-found")
        # Reads are served locally.
        local = await ok(await client.post("/v1/kv/range", json={"key": "k"}))
        assert local["kvs"] == [] and local["header"]["member_id"] == 1


@async_test
async def test_bad_input_is_refused_before_forwarding() -> None:
    follower = MemoryNode(member_id=3)
    async with echo_server() as (url, seen), serve(follower) as client:
        follower.not_leader = NotLeader(2, url)
        query = await client.post("/v1/kv/put?x=1", json={"key": "k", "value": "v"})
        await problem(query, 400, "invalid-argument")
        body = await client.post("/v1/kv/put", json={"key": "k"})
        await problem(body, 400, "invalid-argument")
    assert seen == []


@async_test
async def test_forwarded_request_carries_session_trace_and_member() -> None:
    follower = MemoryNode(member_id=3)
    async with echo_server() as (url, seen), serve(follower) as client:
        follower.not_leader = NotLeader(2, url)
        headers = {"Synod-Client-Id": "7", "Synod-Seq": "4", "Synod-Ack-Seq": "2",
                   "traceparent": TRACEPARENT, "tracestate": "vendor=1",
                   "Authorization": "secret"}  # fmt: skip
        raw = b'{"key": "k",  "value": "v"}'
        response = await client.post("/v1/kv/put", data=raw, headers=headers)
        assert response.status == 200
        echoed = await response.json()
    assert echoed == {"path": "/v1/kv/put", "body": raw.decode()}
    (request,) = seen
    assert request.headers["Synod-Forwarded"] == "3"
    assert (request.headers["Synod-Client-Id"], request.headers["Synod-Seq"],
            request.headers["Synod-Ack-Seq"]) == ("7", "4", "2")  # fmt: skip
    assert request.headers["traceparent"].split("-")[1] == TRACEPARENT.split("-")[1]
    assert request.headers["tracestate"] == "vendor=1"
    assert "Authorization" not in request.headers


@async_test
async def test_already_forwarded_is_421() -> None:
    follower = MemoryNode(member_id=1)
    follower.not_leader = NotLeader(2, "http://127.0.0.1:9")
    async with serve(follower) as client:
        response = await client.post("/v1/kv/put", json={"key": "k", "value": "v"},
                                     headers={"Synod-Forwarded": "3"})  # fmt: skip
        answer = await problem(response, 421, "not-leader")
        assert answer["leader_id"] == 2 and answer["leader_client_url"] == "http://127.0.0.1:9"


@async_test
async def test_stale_leader_hint_costs_one_hop() -> None:
    """Two nodes each believing the other leads: one hop, then 421 back to the client."""
    a, b = MemoryNode(member_id=1), MemoryNode(member_id=2)
    async with served_url(b) as b_url, serve(a) as client:
        a.not_leader = NotLeader(2, b_url)
        b.not_leader = NotLeader(1, str(client.make_url("")).rstrip("/"))
        response = await client.post("/v1/kv/put", json={"key": "k", "value": "v"})
        answer = await problem(response, 421, "not-leader")
        assert answer["leader_id"] == 1
    assert a.index == b.index == 0


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@async_test
async def test_unreachable_or_slow_leader_is_503() -> None:
    follower = MemoryNode(member_id=1)
    follower.not_leader = NotLeader(2, _closed_port_url())
    async with serve(follower) as client:
        gone = await client.post("/v1/kv/put", json={"key": "k", "value": "v"})
        assert (await problem(gone, 503, "no-leader"))["leader_client_url"]
    answer = asyncio.Event()  # the leader answers only after the forward gave up
    async with (
        echo_server(answer) as (url, seen),
        serve(follower, limits=HttpLimits(forward_timeout_ms=100)) as client,
    ):
        follower.not_leader = NotLeader(2, url)
        slow = await client.post("/v1/kv/put", json={"key": "k", "value": "v"})
        await problem(slow, 503, "timeout")
        assert len(seen) == 1  # it reached the leader, which had not answered
        answer.set()


@async_test
async def test_leader_dying_mid_answer_cuts_the_connection() -> None:
    async def half(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        response.content_length = 1000
        await response.prepare(request)
        await response.write(b'{"header": ')
        assert request.transport is not None
        request.transport.close()
        return response

    app = web.Application()
    app.router.add_post("/v1/kv/put", half)
    leader = TestServer(app)
    await leader.start_server()
    follower = MemoryNode(member_id=1)
    follower.not_leader = NotLeader(2, str(leader.make_url("")).rstrip("/"))
    try:
        async with serve(follower) as client:
            response = await client.post("/v1/kv/put", json={"key": "k", "value": "v"})
            assert response.status == 200
            try:
                await response.read()
            except Exception as exc:  # the cut shows as a payload or connection error
                assert "Payload" in type(exc).__name__ or isinstance(exc, ConnectionError)
            else:
                raise AssertionError("a cut answer must not look complete")
            metrics = (await (await client.get("/metrics")).text()).splitlines()
            assert any('code="499"' in line and "/v1/kv/put" in line for line in metrics)
    finally:
        await leader.close()
