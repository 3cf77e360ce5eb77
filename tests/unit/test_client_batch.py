"""The SDK coalesces the calls its tasks start together into one `/v1/batch` request
(real HTTP layer over an in-memory node): a lone call is sent as itself, a node without
the route gets one request per call, and an operation whose answer never comes is
retried through the session and applied once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from synod.client import AsyncClient, TooLarge
from synod.client.batch import BATCH_BYTES_MAX
from synod.node.http import build_app
from synod.services.limits import ServiceLimits
from tests.unit.memory_cluster import Fault, MemoryCluster
from tests.unit.memory_node import MemoryNode


def run(body: Callable[[MemoryCluster], Awaitable[None]], **options: Any) -> None:
    async def main() -> None:
        async with MemoryCluster(**options) as cluster:
            await body(cluster)

    asyncio.run(main())


def test_calls_started_together_share_one_request() -> None:
    async def body(cluster: MemoryCluster) -> None:
        async with AsyncClient(cluster.urls, timeout_s=2.0) as client:
            await client.put("warm", "up")  # opens the session: the rest start together
            results = await asyncio.gather(*(client.put(f"k{i}", str(i)) for i in range(8)))
            assert len({r.revision for r in results}) == 8
            assert len(cluster.sent_by_client("/v1/batch")) == 1
            assert len(cluster.sent_by_client("/v1/kv/put")) == 1  # only the warm-up
            found = (await client.prefix("k")).kvs
            assert {kv.key: kv.value for kv in found} == {f"k{i}": str(i) for i in range(8)}

    run(body)


def test_a_lone_call_is_sent_as_itself() -> None:
    async def body(cluster: MemoryCluster) -> None:
        async with AsyncClient(cluster.urls, timeout_s=2.0) as client:
            await client.put("a", "1")
            assert await client.get("a") is not None
        assert cluster.sent_by_client("/v1/batch") == []

    run(body)


def test_an_operation_whose_answer_never_comes_is_retried_and_applied_once() -> None:
    async def body(cluster: MemoryCluster) -> None:
        async with AsyncClient(cluster.urls, timeout_s=1.0, backoff_ms_base=1,
                               backoff_ms_max=1) as client:  # fmt: skip
            await client.put("warm", "up")
            cluster.fault("/v1/batch", Fault(stall=True))  # one operation never answers
            await asyncio.gather(*(client.put(f"k{i}", str(i)) for i in range(4)))
            found = (await client.prefix("k")).kvs
            assert {kv.key: kv.value for kv in found} == {f"k{i}": str(i) for i in range(4)}
            puts = [w for w in cluster.node.writes if w["kind"] == "put"]
            assert len(puts) == 5  # the warm-up and four, the stalled one applied once
            assert all(kv.version == 1 for kv in found)

    run(body)


def test_a_node_without_the_batch_route_gets_one_request_per_call() -> None:
    seen: list[str] = []

    @web.middleware
    async def before_batches(request: web.Request, handler: Any) -> web.StreamResponse:
        seen.append(request.path)
        if request.path == "/v1/batch":
            raise web.HTTPNotFound()  # what a node from before /v1/batch answers
        response: web.StreamResponse = await handler(request)
        return response

    async def main() -> None:
        app = build_app(MemoryNode())
        app.middlewares.insert(0, before_batches)
        server = TestServer(app)
        await server.start_server()
        try:
            url = str(server.make_url("")).rstrip("/")
            async with AsyncClient([url], timeout_s=2.0, discover_leader=False) as client:
                await client.put("x/warm", "up")
                await asyncio.gather(*(client.put(f"x/k{i}", "v") for i in range(3)))
                await asyncio.gather(*(client.put(f"x/j{i}", "v") for i in range(3)))
                assert len((await client.prefix("x/")).kvs) == 7
        finally:
            await server.close()

    asyncio.run(main())
    assert seen.count("/v1/batch") == 1  # tried once, then never again for that node
    assert seen.count("/v1/kv/put") == 7


def test_one_refused_operation_does_not_fail_the_others() -> None:
    # The node refuses a batch whole when one operation is invalid (nothing runs); the
    # client then sends each alone, so only the bad one fails.
    async def body(cluster: MemoryCluster) -> None:
        async with AsyncClient(cluster.urls, timeout_s=2.0) as client:
            await client.put("warm", "up")
            too_long = "k" * (cluster.limits.key_bytes_max + 1)
            answers = await asyncio.gather(
                client.put("a", "1"), client.put(too_long, "x"), client.put("b", "2"),
                return_exceptions=True,
            )  # fmt: skip
            assert isinstance(answers[1], TooLarge)
            assert not isinstance(answers[0], BaseException)
            assert not isinstance(answers[2], BaseException)
            assert len(cluster.sent_by_client("/v1/batch")) == 1
            assert len(cluster.sent_by_client("/v1/kv/put")) == 4  # warm-up + each alone

    run(body)


def test_batches_are_bounded_in_bytes_and_a_large_value_goes_alone() -> None:
    async def body(cluster: MemoryCluster) -> None:
        async with AsyncClient(cluster.urls, timeout_s=5.0) as client:
            await client.put("warm", "up")
            large = "x" * (BATCH_BYTES_MAX // 3)
            await asyncio.gather(*(client.put(f"big{i}", large) for i in range(6)),
                                 client.put("huge", "y" * BATCH_BYTES_MAX))  # fmt: skip
            # Two large values per batch (a third would pass the byte bound), the huge
            # one alone.
            assert len(cluster.sent_by_client("/v1/batch")) == 3
            assert len(cluster.sent_by_client("/v1/kv/put")) == 2
            assert len((await client.prefix("big")).kvs) == 6

    run(body, limits=ServiceLimits(value_bytes_max=2 * BATCH_BYTES_MAX))
