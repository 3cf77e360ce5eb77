"""Retries, backoff, leader discovery, 421 redirects and session safety of AsyncClient."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from synod.client import AsyncClient, LimitExceeded, NoLeader, SessionExpired, Unavailable
from tests.unit.fake_synod import FakeCluster, Fault


class Sleeps:
    """Records backoff sleeps instead of sleeping."""

    def __init__(self) -> None:
        self.delays_s: list[float] = []

    async def __call__(self, delay_s: float) -> None:
        self.delays_s.append(delay_s)


def run_with(body: Callable[[FakeCluster, Sleeps], Awaitable[Any]], **cluster_options: Any) -> Any:
    async def main() -> Any:
        async with FakeCluster(**cluster_options) as cluster:
            return await body(cluster, Sleeps())

    return asyncio.run(main())


def client_for(urls: list[str], sleeps: Sleeps, **options: Any) -> AsyncClient:
    options.setdefault("timeout_s", 1.0)
    return AsyncClient(urls, backoff_ms_base=100, backoff_ms_max=400, sleep=sleeps, **options)


def test_lost_answer_is_retried_with_the_same_seq_and_applied_once() -> None:
    async def body(cluster: FakeCluster, sleeps: Sleeps) -> None:
        async with client_for(cluster.urls, sleeps) as client:
            cluster.fault("/v1/kv/put", Fault("drop-after"), times=2)
            result = await client.put("k", "v")
            assert result.revision == 2
            assert cluster.state.applied_writes == 1
            seqs = {h["Synod-Seq"] for _, p, h in cluster.requests if p == "/v1/kv/put"}
            assert seqs == {"1"} and len(cluster.requests_to("/v1/kv/put")) == 3
            await client.put("k", "w")
            assert cluster.requests_to("/v1/kv/put")[-1][2]["Synod-Ack-Seq"] == "2"

    run_with(body)


def test_backoff_is_exponential_capped_and_jittered() -> None:
    async def body(cluster: FakeCluster, sleeps: Sleeps) -> None:
        async with client_for(cluster.urls, sleeps, attempts_max=6) as client:
            cluster.fault("/v1/kv/range", Fault("problem"), times=5)
            await client.get("k")
        caps_s = [0.1, 0.2, 0.4, 0.4, 0.4]
        assert len(sleeps.delays_s) == 5
        for delay_s, cap_s in zip(sleeps.delays_s, caps_s, strict=True):
            assert cap_s / 2 <= delay_s <= cap_s

    run_with(body)


def test_gives_up_after_attempts_max_with_the_last_error() -> None:
    async def body(cluster: FakeCluster, sleeps: Sleeps) -> None:
        async with client_for(cluster.urls, sleeps, attempts_max=3) as client:
            cluster.fault("/v1/kv/range", Fault("problem"), times=10)
            with pytest.raises(NoLeader, match="gave up after 3 attempts"):
                await client.get("k")
        assert len(cluster.requests_to("/v1/kv/range")) == 3
        assert len(sleeps.delays_s) == 2

    run_with(body)


def test_421_is_followed_to_the_leader_without_sleeping() -> None:
    async def body(cluster: FakeCluster, sleeps: Sleeps) -> None:
        urls = [cluster.urls[1], cluster.urls[2]]  # the leader (node 0) is unknown
        async with client_for(urls, sleeps, discover_leader=False) as client:
            await client.put("k", "v")
            assert client.endpoint == cluster.urls[0]
            assert cluster.urls[0] in client.endpoints
        assert sleeps.delays_s == []
        assert [n for n, p, _ in cluster.requests if p == "/v1/session/open"] == [1, 0]

    run_with(body, forward=False)


def test_leader_is_discovered_from_cluster_status() -> None:
    async def body(cluster: FakeCluster, sleeps: Sleeps) -> None:
        async with client_for(cluster.urls[1:], sleeps) as client:
            await client.put("k", "v")
        assert [n for n, p, _ in cluster.requests if p == "/v1/kv/put"] == [2]

    run_with(body, leader=2, forward=False)


def test_dead_endpoint_fails_over() -> None:
    async def body(cluster: FakeCluster, sleeps: Sleeps) -> None:
        cluster.down.add(0)
        async with client_for(cluster.urls, sleeps, discover_leader=False) as client:
            await client.put("k", "v")
            assert client.endpoint == cluster.urls[1]
        refused = AsyncClient(["127.0.0.1:1", cluster.urls[1]], sleep=sleeps)
        async with refused:
            assert (await refused.get("k")) is not None

    run_with(body)


def test_session_expired_before_applying_reopens_and_retries() -> None:
    async def body(cluster: FakeCluster, sleeps: Sleeps) -> None:
        async with client_for(cluster.urls, sleeps) as client:
            await client.put("k", "1")
            first = client.client_id
            cluster.state.sessions.clear()  # evicted while idle
            await client.put("k", "2")
            assert client.client_id != first
            assert cluster.requests_to("/v1/kv/put")[-1][2]["Synod-Seq"] == "1"

    run_with(body)


def test_session_expired_after_an_unknown_outcome_is_reported() -> None:
    async def body(cluster: FakeCluster, sleeps: Sleeps) -> None:
        async with client_for(cluster.urls, sleeps) as client:
            await client.put("k", "1")
            cluster.fault("/v1/kv/put", Fault("drop-after"))
            cluster.fault("/v1/kv/put", Fault("problem", status=410, code="session-expired"))
            with pytest.raises(SessionExpired) as info:
                await client.put("k", "2")
            assert info.value.outcome_unknown
            assert client.client_id == 0  # the next write opens a new session

    run_with(body)


def test_without_session_an_unanswered_write_is_not_retried() -> None:
    async def body(cluster: FakeCluster, sleeps: Sleeps) -> None:
        async with client_for(cluster.urls, sleeps, session=False) as client:
            cluster.fault("/v1/kv/put", Fault("drop-after"))
            with pytest.raises(Unavailable):
                await client.put("k", "1")
            assert cluster.state.applied_writes == 1
            assert "Synod-Client-Id" not in cluster.requests_to("/v1/kv/put")[0][2]
            cluster.fault("/v1/kv/put", Fault("problem", status=421, code="not-leader"))
            await client.put("k", "2")  # 421: surely not applied, so retried

    run_with(body)


def test_limit_exceeded_retried_only_when_transient() -> None:
    async def body(cluster: FakeCluster, sleeps: Sleeps) -> None:
        async with client_for(cluster.urls, sleeps) as client:
            busy = Fault("problem", 429, "limit-exceeded", {"limit": "pending_requests_max"})
            cluster.fault("/v1/kv/range", busy)
            await client.get("k")
            full = Fault("problem", 429, "limit-exceeded", {"limit": "leases_max"})
            cluster.fault("/v1/lease/grant", full)
            with pytest.raises(LimitExceeded) as info:
                await client.lease_grant(2000)
            assert info.value.problem["limit"] == "leases_max"

    run_with(body)


def test_slow_node_times_out_and_fails_over() -> None:
    async def body(cluster: FakeCluster, sleeps: Sleeps) -> None:
        async with client_for(cluster.urls, sleeps, timeout_s=0.2, discover_leader=False) as c:
            cluster.fault("/v1/kv/range", Fault("delay", delay_s=1.0, node=0))
            await c.get("k")
            assert c.endpoint == cluster.urls[1]

    run_with(body)
