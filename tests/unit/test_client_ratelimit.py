"""The SDK's rate limits against the real HTTP API (memory cluster): checks, the
decorators (sync and async), policies, concurrency leases, bad descriptors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from synod.client import AsyncClient, Client, InvalidArgument, NotFound, RateLimited
from tests.unit.http_helpers import async_test
from tests.unit.memory_cluster import MemoryCluster, threaded

POLICY = {
    "domain": "sdk",
    "descriptors": [
        {"key": "user", "rate_limit": {"unit": "minute", "requests_per_unit": 2,
                                       "algorithm": "sliding_window"}},
        {"key": "job", "rate_limit": {"unit": "minute", "requests_per_unit": 1,
                                      "algorithm": "concurrency", "consistency": "local"}},
    ],
}  # fmt: skip


@pytest.fixture
def cluster() -> Iterator[MemoryCluster]:
    with threaded(MemoryCluster()) as memory:
        yield memory


def test_sync_checks_decorator_and_policies(cluster: MemoryCluster) -> None:
    with Client(cluster.urls, timeout_s=2) as client:
        with pytest.raises(NotFound):
            client.rate_limit("sdk", [{"user": "bob"}])
        put = client.ratelimit_policy_put(POLICY)
        assert put["created"] and put["generation"] == 1
        assert client.ratelimit_policies()["policies"][0]["domain"] == "sdk"
        results = [client.rate_limit("sdk", [{"user": "bob"}]) for _ in range(3)]
        assert [r.allowed for r in results] == [True, True, False]
        assert results[-1].overall_code == "OVER_LIMIT" and results[-1].retry_after_ms > 0
        calls = []

        @client.rate_limited("sdk", [[("user", "ann")]])
        def work(n: int) -> int:
            calls.append(n)
            return n * 2

        assert work(1) == 2 and work(2) == 4
        with pytest.raises(RateLimited) as refused:
            work(3)
        assert calls == [1, 2] and refused.value.result.retry_after_ms > 0
        with pytest.raises(ValueError, match="non-empty mapping"):
            client.rate_limit("sdk", [{}])
        with pytest.raises(InvalidArgument):
            client.ratelimit_policy_put({"domain": "sdk", "descriptors": [{"key": 3}]})
        status = client.ratelimit_status()
        assert len(status["ring"]) == 3 and status["ring_source"] == "raft"
        assert client.ratelimit_policy_delete("sdk")["deleted"]


def test_concurrency_leases_are_released(cluster: MemoryCluster) -> None:
    with Client(cluster.urls[:1], timeout_s=2) as client:
        client.ratelimit_policy_put(POLICY)
        assert client.rate_limit("sdk", [{"job": "nightly"}], lease_id="run-1").allowed
        assert not client.rate_limit("sdk", [{"job": "nightly"}], lease_id="run-2").allowed
        assert client.ratelimit_release("sdk", [{"job": "nightly"}], "run-1") == 1
        assert client.rate_limit("sdk", [{"job": "nightly"}], lease_id="run-2").allowed


@async_test
async def test_async_client_and_decorator() -> None:
    async with MemoryCluster() as cluster:
        client = AsyncClient(cluster.urls, timeout_s=2)
        try:
            await client.ratelimit_policy_put(POLICY)
            first = await client.rate_limit("sdk", [{"user": "zoe"}], hits=2)
            assert first.allowed and first.statuses[0]["remaining"] == 0

            @client.rate_limited("sdk", [{"user": "zed"}])
            async def handler() -> str:
                return "done"

            assert await handler() == "done" and await handler() == "done"
            with pytest.raises(RateLimited):
                await handler()
            with pytest.raises(TypeError, match="async functions"):
                client.rate_limited("sdk", [{"user": "x"}])(lambda: None)  # type: ignore[arg-type]
        finally:
            await client.close()


QUOTA_POLICY = {
    "domain": "quota",
    "descriptors": [
        {"key": "user", "rate_limit": {"unit": "minute", "requests_per_unit": 10,
                                       "algorithm": "sliding_log", "quota_requests": 4,
                                       "quota_valid_ms": 60_000}},
    ],
}  # fmt: skip


def test_local_quota_grants_are_spent_without_requests(cluster: MemoryCluster) -> None:
    with Client(cluster.urls, timeout_s=2) as client:
        client.ratelimit_policy_put(QUOTA_POLICY)
        before = len(cluster.requests)
        results = [client.rate_limit("quota", [{"user": "q"}]) for _ in range(14)]
        sent = [r for r in cluster.requests[before:] if r.path == "/v1/ratelimit/check"]
        assert [r.allowed for r in results] == [True] * 10 + [False] * 4
        first = results[0].statuses[0]
        assert first["quota"]["requests"] == 4 and first["remaining"] == 5
        assert sum(bool(r.statuses[0].get("cached")) for r in results) == 8
        # 2 granting checks, then each refused one asks the cluster (no grant is left).
        assert len([r for r in sent if not r.forwarded]) == 6
        assert client.aio.quotas.served == 8
