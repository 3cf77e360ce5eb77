"""A write whose outcome is unknown answers an indeterminate code, never `no-leader`.

Regression: a write forwarded to the leader whose connection was cut mid-request
answered 503 `no-leader` although the leader had applied it (6 of 24 such writes in the
fault runs); clients read that as "not applied". It now answers `outcome-unknown`, and
a retry with the same session seq returns the first answer without applying it twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from synod.codes import is_definite
from synod.node.api import NotLeader
from tests.unit.http_helpers import async_test, ok, problem, serve, served_url
from tests.unit.memory_node import MemoryNode


@contextlib.asynccontextmanager
async def cutting_proxy(leader_url: str, cuts: list[str]) -> AsyncIterator[str]:
    """A leader front that passes requests on to ``leader_url``; for a path in
    ``cuts`` (each used once) it lets the leader apply the request, then drops the
    connection before answering, as a leader dying or a network cut would."""
    http = aiohttp.ClientSession()

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length")}  # fmt: skip
        async with http.request(request.method, leader_url + request.path_qs, data=body,
                                headers=headers) as upstream:  # fmt: skip
            answer = await upstream.read()
            status = upstream.status
        if request.path in cuts:
            cuts.remove(request.path)
            assert request.transport is not None
            request.transport.close()  # applied on the leader, answer lost
            return web.Response(status=200)
        return web.Response(status=status, body=answer, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = TestServer(app)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()
        await http.close()


@async_test
async def test_forward_cut_mid_request_is_outcome_unknown_and_the_retry_learns_it() -> None:
    leader, follower = MemoryNode(member_id=2), MemoryNode(member_id=1)
    cuts = ["/v1/kv/put"]
    async with (
        served_url(leader) as url,
        cutting_proxy(url, cuts) as proxy,
        serve(follower) as client,
    ):
        follower.not_leader = NotLeader(2, proxy)
        opened = await ok(await client.post("/v1/session/open"))
        headers = {"Synod-Client-Id": str(opened["client_id"]), "Synod-Seq": "1"}
        put = {"key": "k", "value": "v", "prev_kv": True}
        cut = await client.post("/v1/kv/put", json=put, headers=headers)
        answer = await problem(cut, 503, "outcome-unknown")
        assert "same session seq" in answer["detail"]
        assert not is_definite(answer["code"])
        # It had been applied: the code must not have said "not applied".
        assert leader.machine.kv.get(b"k") is not None
        revision = leader.revision
        retry = await ok(await client.post("/v1/kv/put", json=put, headers=headers))
        assert retry["prev_kv"] is None  # the first answer: the put is not run twice
        assert leader.revision == revision
    assert cuts == []


@async_test
async def test_no_leader_known_is_definite_no_leader() -> None:
    follower = MemoryNode(member_id=1)
    follower.not_leader = NotLeader(0, None)
    async with serve(follower) as client:
        refused = await client.post("/v1/kv/put", json={"key": "k", "value": "v"})
        answer = await problem(refused, 503, "no-leader")
        assert is_definite(answer["code"])
    assert follower.revision == 1 and follower.writes == []
