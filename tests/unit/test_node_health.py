"""A member whose Raft loop dies or stalls must not look healthy (issue 8).

Before the node driver, an exception in the loop task killed it silently: HTTP kept
serving, /healthz stayed 200 and the role stayed LEADER. Now a dead loop ends the
process (exit status 70) and /healthz reports the age of the last loop turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from synod.node.driver import Turn
from synod.node.http import build_app
from synod.node.server import LOOP_EXIT_CODE, RaftServer, ServerLimits
from synod.raft.types import Role
from tests.unit.http_helpers import async_test, problem
from tests.unit.test_http_admin import _config
from tests.waiting import async_wait_until

WAIT_S_MAX = 20.0  # Generous bound for conditions polled below.


async def _until(predicate: Callable[[], object], what: str) -> None:
    await async_wait_until(predicate, WAIT_S_MAX, what)


def test_a_dead_loop_is_fatal_and_unhealthy(tmp_path: Path) -> None:
    exits: list[int] = []

    @async_test
    async def scenario() -> None:
        server = RaftServer(_config(tmp_path), on_fatal=exits.append)
        await server.start()
        try:
            await _until(lambda: server._raft().role == Role.LEADER, "leadership")
            app = build_app(server, registry=server.node_metrics.registry)
            async with TestClient(TestServer(app)) as client:
                assert (await client.get("/healthz")).status == 200

                def broken(now_ms: int) -> None:
                    raise RuntimeError("a bug in the loop")

                server._driver().begin = broken  # type: ignore[assignment, method-assign]
                server._wakeup.set()
                await _until(lambda: exits, "the fatal exit")
                assert exits == [LOOP_EXIT_CODE]
                await problem(await client.get("/healthz"), 503, "unhealthy")
        finally:
            await server.stop(transfer_leadership=False)

    scenario()


def test_a_stalled_loop_turns_healthz_to_503(tmp_path: Path) -> None:
    @async_test
    async def scenario() -> None:
        limits = ServerLimits(loop_stall_ms_max=200)
        server = RaftServer(_config(tmp_path), limits, on_fatal=lambda code: None)
        await server.start()
        release = asyncio.Event()
        try:
            await _until(lambda: server._raft().role == Role.LEADER, "leadership")
            app = build_app(server, registry=server.node_metrics.registry)
            async with TestClient(TestServer(app)) as client:
                healthy = await client.get("/healthz")
                assert healthy.status == 200
                assert (await healthy.json())["status"] == "ok"

                persist = server._persist

                async def stuck_disk(turn: Turn) -> None:
                    await release.wait()  # An fsync that does not come back (for now).
                    await persist(turn)

                server._persist = stuck_disk  # type: ignore[method-assign, assignment]
                put = asyncio.ensure_future(
                    client.post("/v1/kv/put", json={"key": "k", "value": "v"})
                )
                await _until(lambda: not server.health()[0], "healthz to report the stall")
                await problem(await client.get("/healthz"), 503, "unhealthy")
                release.set()
                assert (await put).status == 200
                await _until(lambda: server.health()[0], "recovery")
        finally:
            release.set()
            await server.stop(transfer_leadership=False)

    scenario()
