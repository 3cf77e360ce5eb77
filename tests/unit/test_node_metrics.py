"""The node metrics the alerts rely on move when their events happen.

`synod_raft_voters` is the configuration's size (the quorum alert), and
`synod_raft_proposals_failed_total` counts a write that timed out behind a stuck disk
(the failing-proposals alert): it was declared but never incremented before.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from synod.node.driver import Turn
from synod.node.http import build_app
from synod.node.server import RaftServer
from synod.raft.types import Role
from tests.unit.http_helpers import async_test, problem
from tests.unit.test_http_admin import _config
from tests.waiting import async_wait_until

WAIT_S_MAX = 20.0
REQUEST_TIMEOUT_MS = 300


async def _until(predicate: Callable[[], object], what: str) -> None:
    await async_wait_until(predicate, WAIT_S_MAX, what)


def _sample(server: RaftServer, name: str) -> float:
    value = server.node_metrics.registry.get_sample_value(name)
    assert value is not None, name
    return value


def test_voters_and_failed_proposals(tmp_path: Path) -> None:
    @async_test
    async def scenario() -> None:
        config = dataclasses.replace(_config(tmp_path), request_timeout_ms=REQUEST_TIMEOUT_MS)
        server = RaftServer(config, on_fatal=lambda code: None)
        await server.start()
        release = asyncio.Event()
        try:
            await _until(lambda: server._raft().role == Role.LEADER, "leadership")
            app = build_app(server, registry=server.node_metrics.registry)
            async with TestClient(TestServer(app)) as client:
                ok = await client.post("/v1/kv/put", json={"key": "k", "value": "v"})
                assert ok.status == 200
                assert _sample(server, "synod_raft_voters") == 1
                assert _sample(server, "synod_raft_proposals_failed_total") == 0
                persist = server._persist

                async def stuck_disk(turn: Turn) -> None:
                    await release.wait()  # An fsync that does not come back (for now).
                    await persist(turn)

                server._persist = stuck_disk  # type: ignore[method-assign, assignment]
                stuck = await client.post("/v1/kv/put", json={"key": "k", "value": "w"})
                await problem(stuck, 503, "timeout")
                assert _sample(server, "synod_raft_proposals_failed_total") == 1
                text = await (await client.get("/metrics")).text()
                assert 'synod_http_problems_total{code="timeout",route="/v1/kv/put"} 1.0' in text
                release.set()
        finally:
            release.set()
            await server.stop(transfer_leadership=False)

    scenario()
