"""The Envoy RLS v3 gRPC API (ShouldRateLimit) over an in-memory node: envoy's wire
format, OK / OVER_LIMIT with limit_remaining and duration_until_reset, hits_addend,
gRPC status codes for bad requests and unknown domains."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from aiohttp import web

from synod.node.http import build_app
from synod.node.rls_grpc import RlsServer
from synod.ratelimit.rls_proto import METHOD, SERVICE, RateLimitRequest, RateLimitResponse
from synod.services.ratelimit import ratelimit_policy_set_op
from tests.unit.http_helpers import async_test
from tests.unit.memory_node import MemoryNode

POLICY = {
    "domain": "envoy",
    "descriptors": [
        {"key": "remote_address", "rate_limit": {"unit": "minute", "requests_per_unit": 3,
                                                 "algorithm": "fixed_window", "name": "ip"}},
        {"key": "path", "value": "/healthz"},
    ],
}  # fmt: skip


@asynccontextmanager
async def rls(node: MemoryNode) -> AsyncIterator[Any]:
    app = build_app(node, registry=node.registry)
    runner = web.AppRunner(app)
    await runner.setup()
    server = RlsServer(app, node, "127.0.0.1:0")
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    call = channel.unary_unary(f"/{SERVICE}/{METHOD}",
                               request_serializer=RateLimitRequest.SerializeToString,
                               response_deserializer=RateLimitResponse.FromString)  # fmt: skip
    try:
        yield call
    finally:
        await channel.close()
        await server.stop()
        await runner.cleanup()


def _request(address: str, hits: int = 0, domain: str = "envoy") -> Any:
    request = RateLimitRequest(domain=domain, hits_addend=hits)
    entry = request.descriptors.add().entries.add()
    entry.key, entry.value = "remote_address", address
    return request


@async_test
async def test_should_rate_limit() -> None:
    node = MemoryNode()
    node.apply(ratelimit_policy_set_op(POLICY))
    async with rls(node) as call:
        answers = [await call(_request("10.0.0.1")) for _ in range(4)]
        assert [a.overall_code for a in answers] == [1, 1, 1, 2]  # OK x3, OVER_LIMIT
        first, last = answers[0].statuses[0], answers[-1].statuses[0]
        assert first.limit_remaining == 2 and first.current_limit.requests_per_unit == 3
        assert first.current_limit.unit == 2 and first.current_limit.name == "ip"  # MINUTE
        assert 0 < first.duration_until_reset.ToMilliseconds() <= 60_000
        assert last.code == 2 and last.limit_remaining == 0
        assert answers[-1].response_headers_to_add[0].key == "retry-after"
        two = await call(_request("10.0.0.2", hits=2))  # hits_addend counts twice
        assert two.statuses[0].limit_remaining == 1
        request = _request("10.0.0.3")
        request.descriptors[0].hits_addend.value = 3  # the descriptor's own addend wins
        assert (await call(request)).statuses[0].limit_remaining == 0
        free = RateLimitRequest(domain="envoy")
        entry = free.descriptors.add().entries.add()
        entry.key, entry.value = "path", "/healthz"
        answer = await call(free)
        assert answer.overall_code == 1 and not answer.statuses[0].HasField("current_limit")
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await call(_request("10.0.0.1", domain="nope"))
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await call(RateLimitRequest(domain="envoy"))  # no descriptor
        assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    metrics = node.metrics().decode()
    assert 'synod_ratelimit_checks_total{code="OVER_LIMIT"}' in metrics


def test_listen_rls_option() -> None:
    from synod.node.config import ConfigError, load_config

    base = ["--id", "1", "--initial-cluster", "1=127.0.0.1:2380@http://127.0.0.1:2379"]
    assert load_config([*base, "--listen-rls", "127.0.0.1:8081"], {}).listen_rls == (
        "127.0.0.1:8081")  # fmt: skip
    assert load_config(base, {}).listen_rls == ""
    with pytest.raises(ConfigError):
        load_config([*base, "--listen-rls", "no-port"], {})


@async_test
async def test_quota_extension() -> None:
    node = MemoryNode()
    policy = {
        "domain": "envoy",
        "descriptors": [
            {
                "key": "remote_address",
                "rate_limit": {
                    "unit": "minute",
                    "requests_per_unit": 5,
                    "quota_requests": 3,
                    "quota_valid_ms": 30_000,
                },
            }
        ],
    }
    node.apply(ratelimit_policy_set_op(policy))
    async with rls(node) as call:
        first = (await call(_request("10.0.0.9"))).statuses[0]
        assert first.quota.requests == 3 and first.limit_remaining == 1
        assert first.quota.HasField("valid_until") and first.quota.valid_until.seconds > 0
        second = (await call(_request("10.0.0.9"))).statuses[0]
        assert second.code == 1 and not second.HasField("quota")  # nothing left to grant
        assert (await call(_request("10.0.0.9"))).overall_code == 2
