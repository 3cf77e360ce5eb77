"""Retries, backoff, leader discovery, 421 redirects and session safety of AsyncClient."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from synod.client import AsyncClient, LimitExceeded, SessionExpired, Unavailable
from synod.client import NoLeader as ClientNoLeader
from synod.node.api import NoLeader, NotLeader, Overloaded
from synod.services.limits import ServiceLimits
from tests.unit.memory_cluster import LEASE_TTL_MS_MIN, Fault, MemoryCluster


class Sleeps:
    """Records backoff sleeps instead of sleeping."""

    def __init__(self) -> None:
        self.delays_s: list[float] = []

    async def __call__(self, delay_s: float) -> None:
        self.delays_s.append(delay_s)


def run_with(
    body: Callable[[MemoryCluster, Sleeps], Awaitable[Any]], **cluster_options: Any
) -> Any:
    async def main() -> Any:
        async with MemoryCluster(**cluster_options) as cluster:
            return await body(cluster, Sleeps())

    return asyncio.run(main())


def client_for(urls: list[str], sleeps: Sleeps, **options: Any) -> AsyncClient:
    options.setdefault("timeout_s", 1.0)
    return AsyncClient(urls, backoff_ms_base=100, backoff_ms_max=400, sleep=sleeps, **options)


def test_lost_answer_is_retried_with_the_same_seq_and_applied_once() -> None:
    async def body(cluster: MemoryCluster, sleeps: Sleeps) -> None:
        async with client_for(cluster.urls, sleeps) as client:
            cluster.fault("/v1/kv/put", Fault(drop="after"), times=2)
            result = await client.put("k", "v")
            assert result.revision == 2
            # Three log entries reached the state machine; the put took effect once.
            assert [w["kind"] for w in cluster.node.writes] == ["session_open"] + ["put"] * 3
            kv = await client.get("k")
            assert kv is not None and (kv.version, kv.mod_revision) == (1, 2)
            assert cluster.node.revision == 2
            seqs = {r.headers["Synod-Seq"] for r in cluster.requests_to("/v1/kv/put")}
            assert seqs == {"1"} and len(cluster.sent_by_client("/v1/kv/put")) == 3
            await client.put("k", "w")
            assert cluster.requests_to("/v1/kv/put")[-1].headers["Synod-Ack-Seq"] == "2"

    run_with(body)


def test_backoff_is_exponential_capped_and_jittered() -> None:
    async def body(cluster: MemoryCluster, sleeps: Sleeps) -> None:
        async with client_for(cluster.urls, sleeps, attempts_max=6) as client:
            cluster.fault("/v1/kv/range", Fault(error=NoLeader("injected")), times=5)
            await client.get("k")
        caps_s = [0.1, 0.2, 0.4, 0.4, 0.4]
        assert len(sleeps.delays_s) == 5
        for delay_s, cap_s in zip(sleeps.delays_s, caps_s, strict=True):
            assert cap_s / 2 <= delay_s <= cap_s

    run_with(body)


def test_gives_up_after_attempts_max_with_the_last_error() -> None:
    async def body(cluster: MemoryCluster, sleeps: Sleeps) -> None:
        async with client_for(cluster.urls, sleeps, attempts_max=3) as client:
            cluster.fault("/v1/kv/range", Fault(error=NoLeader("injected")), times=10)
            with pytest.raises(ClientNoLeader, match="gave up after 3 attempts"):
                await client.get("k")
        assert len(cluster.requests_to("/v1/kv/range")) == 3
        assert len(sleeps.delays_s) == 2

    run_with(body)


def test_421_is_followed_to_the_leader_without_sleeping() -> None:
    async def body(cluster: MemoryCluster, sleeps: Sleeps) -> None:
        # Member 1 still believes member 2 leads: it forwards there, and member 2, which
        # knows the leader is member 0, answers 421 (a forwarded request is never
        # forwarded again) with member 0's address.
        cluster.stale_leader[1] = 2
        urls = [cluster.urls[1], cluster.urls[2]]  # the leader (node 0) is unknown
        async with client_for(urls, sleeps, discover_leader=False) as client:
            await client.put("k", "v")
            assert client.endpoint == cluster.urls[0]
            assert cluster.urls[0] in client.endpoints
        assert sleeps.delays_s == []
        opens = cluster.requests_to("/v1/session/open")
        assert [r.member for r in opens if not r.forwarded] == [1, 0]
        assert [r.member for r in opens if r.forwarded] == [2]

    run_with(body)


def test_leader_is_discovered_from_cluster_status() -> None:
    async def body(cluster: MemoryCluster, sleeps: Sleeps) -> None:
        async with client_for(cluster.urls[1:], sleeps) as client:
            await client.put("k", "v")
        # Sent to the leader directly: no follower received it (to forward it).
        assert [r.member for r in cluster.requests_to("/v1/kv/put")] == [2]

    run_with(body, leader=2)


def test_dead_endpoint_fails_over() -> None:
    async def body(cluster: MemoryCluster, sleeps: Sleeps) -> None:
        cluster.down.add(0)  # a follower: member 1 forwards writes to the leader, member 2
        async with client_for(cluster.urls, sleeps, discover_leader=False) as client:
            await client.put("k", "v")
            assert client.endpoint == cluster.urls[1]
        refused = AsyncClient(["127.0.0.1:1", cluster.urls[1]], sleep=sleeps)
        async with refused:
            assert (await refused.get("k")) is not None

    run_with(body, leader=2)


def test_session_expired_before_applying_reopens_and_retries() -> None:
    async def body(cluster: MemoryCluster, sleeps: Sleeps) -> None:
        async with client_for(cluster.urls, sleeps) as client:
            await client.put("k", "1")
            first = client.client_id
            cluster.expire_session(first)  # evicted while idle
            await client.put("k", "2")
            assert client.client_id != first
            assert cluster.requests_to("/v1/kv/put")[-1].headers["Synod-Seq"] == "1"
            kv = await client.get("k")
            assert kv is not None and (kv.value, kv.version) == ("2", 2)

    run_with(body)


def test_session_expired_after_an_unknown_outcome_is_reported() -> None:
    async def body(cluster: MemoryCluster, sleeps: Sleeps) -> None:
        async with client_for(cluster.urls, sleeps) as client:
            await client.put("k", "1")
            cluster.fault("/v1/kv/put", Fault(drop="after"))
            # The session is evicted before the retry is applied: the state machine
            # answers session-expired, and the first attempt's outcome stays unknown.
            expire = Fault(before=lambda: cluster.expire_session(client.client_id))
            cluster.fault("/v1/kv/put", expire)
            with pytest.raises(SessionExpired) as info:
                await client.put("k", "2")
            assert info.value.outcome_unknown
            assert client.client_id == 0  # the next write opens a new session

    run_with(body)


def test_without_session_an_unanswered_write_is_not_retried() -> None:
    async def body(cluster: MemoryCluster, sleeps: Sleeps) -> None:
        async with client_for(cluster.urls, sleeps, session=False) as client:
            cluster.fault("/v1/kv/put", Fault(drop="after"))
            with pytest.raises(Unavailable):
                await client.put("k", "1")
            assert len(cluster.node.writes) == 1  # applied once, not retried
            assert "Synod-Client-Id" not in cluster.requests_to("/v1/kv/put")[0].headers
            # The client moved on to member 1, which forwards to the leader; the leader
            # answers once as if it were a stale follower: 421 (a forwarded request is not
            # forwarded again), relayed to the client.
            stale = Fault(error=NotLeader(2, cluster.urls[1]), member=0)
            cluster.fault("/v1/kv/put", stale)
            await client.put("k", "2")  # 421: surely not applied, so retried
            assert [r.member for r in cluster.sent_by_client("/v1/kv/put")] == [0, 1, 2]
            assert len(cluster.node.writes) == 2  # the refused attempt was not applied

    run_with(body)


def test_limit_exceeded_retried_only_when_transient() -> None:
    async def body(cluster: MemoryCluster, sleeps: Sleeps) -> None:
        async with client_for(cluster.urls, sleeps) as client:
            busy = Fault(error=Overloaded("too many requests pending (pending_requests_max)"))
            cluster.fault("/v1/kv/range", busy)
            await client.get("k")
            assert len(sleeps.delays_s) == 1  # retried after a backoff
            # The replicated bound: the state machine refuses the second lease.
            await client.lease_grant(2000)
            with pytest.raises(LimitExceeded) as info:
                await client.lease_grant(2000)
            assert info.value.problem["limit"] == "leases_max"
            assert len(cluster.requests_to("/v1/lease/grant")) == 2  # not retried

    run_with(body, limits=ServiceLimits(leases_max=1, lease_ttl_ms_min=LEASE_TTL_MS_MIN))


def test_slow_node_times_out_and_fails_over() -> None:
    async def body(cluster: MemoryCluster, sleeps: Sleeps) -> None:
        async with client_for(cluster.urls, sleeps, timeout_s=0.2, discover_leader=False) as c:
            cluster.fault("/v1/kv/range", Fault(stall=True, member=0))
            await c.get("k")
            assert c.endpoint == cluster.urls[1]

    run_with(body)
