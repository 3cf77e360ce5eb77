"""/v1/ratelimit on the real HTTP layer over in-memory nodes: policies, checks by mode
(local, owner forwarding between members, strict through the log), IETF headers,
problem documents, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from synod.node.ratelimit_http import RATELIMITER
from synod.node.routes import route_specs
from synod.node.schema import validate
from tests.unit.http_helpers import async_test, ok, problem, serve
from tests.unit.memory_cluster import MemoryCluster
from tests.unit.memory_node import MemoryNode

UNTIL_POLLS_MAX = 500  # 10 s of 20 ms polls
SPECS = {spec.operation_id: spec for spec in route_specs()}


def _policy(consistency: str, algorithm: str = "fixed_window", requests: int = 3) -> dict[str, Any]:
    return {"domain": "api", "descriptors": [
        {"key": "user", "rate_limit": {"unit": "minute", "requests_per_unit": requests,
                                       "algorithm": algorithm, "consistency": consistency,
                                       "name": "per-user"}},
        {"key": "path", "value": "/free"},
    ]}  # fmt: skip


def _check(user: str, hits: int = 1) -> dict[str, Any]:
    return {"domain": "api", "descriptors": [{"entries": [{"key": "user", "value": user}]}],
            "hits": hits}  # fmt: skip


@async_test
async def test_policies_and_local_checks_with_headers() -> None:
    node = MemoryNode()
    async with serve(node) as http:
        await problem(await http.post("/v1/ratelimit/check", json=_check("a")), 404, "not-found")
        put = await ok(await http.put("/v1/ratelimit/policies", json=_policy("local")))
        assert put["created"] and put["generation"] == 1
        validate(put, SPECS["rateLimitPolicyPut"].response)
        bad = {"domain": "api", "descriptors": [{"key": "k", "rate_limit": {"unit": "week"}}]}
        await problem(await http.put("/v1/ratelimit/policies", json=bad), 400,
                      "invalid-argument")  # fmt: skip
        assert node.machine.ratelimit.generation == 1  # the bad policy cost no entry
        codes = []
        for _ in range(4):
            response = await http.post("/v1/ratelimit/check", json=_check("a"))
            body = await ok(response)
            validate(body, SPECS["rateLimitCheck"].response)
            codes.append(body["overall_code"])
        assert codes == ["OK", "OK", "OK", "OVER_LIMIT"]
        assert response.headers["RateLimit-Policy"] == '"per-user";q=3;w=60'
        assert response.headers["RateLimit"].startswith('"per-user";r=0;t=')
        assert int(response.headers["Retry-After"]) >= 1
        other = await ok(await http.post("/v1/ratelimit/check", json=_check("b", hits=3)))
        assert other["overall_code"] == "OK" and other["statuses"][0]["remaining"] == 0
        free = {"domain": "api", "descriptors": [{"entries": [{"key": "path",
                                                               "value": "/free"}]}]}  # fmt: skip
        answer = await ok(await http.post("/v1/ratelimit/check", json=free))
        assert answer["statuses"] == [{"code": "OK"}] and "RateLimit" not in {
            k for k in (await http.post("/v1/ratelimit/check", json=free)).headers
        }
        listed = await ok(await http.get("/v1/ratelimit/policies"))
        assert [p["domain"] for p in listed["policies"]] == ["api"]
        validate(listed, SPECS["rateLimitPolicies"].response)
        status = await ok(await http.get("/v1/ratelimit/status"))
        validate(status, SPECS["rateLimitStatus"].response)
        assert status["ring_source"] == "raft" and status["counters"] == 2
        metrics = node.metrics().decode()
        assert 'synod_ratelimit_decisions_total{code="OVER_LIMIT",mode="local"} 1.0' in metrics
        assert 'synod_ratelimit_over_admission_bound{domain="api",mode="local"}' in metrics
        deleted = await ok(await http.delete("/v1/ratelimit/policies/api"))
        assert deleted["deleted"] and deleted["generation"] == 2
        await problem(await http.delete("/v1/ratelimit/policies/api"), 404, "not-found")


BAD_CHECKS = [
    ({"domain": "api", "descriptors": []}, 400, "invalid-argument"),
    ({"domain": "api", "descriptors": [{"entries": []}]}, 400, "invalid-argument"),
    ({"domain": "api", "descriptors": [{"entries": [{"key": "user"}]}]}, 400,
     "invalid-argument"),
    ({"domain": "api", "descriptors": [{"entries": [{"key": "u", "value": "v"}]}] * 17}, 413,
     "too-large"),
    ({"domain": "api", "descriptors": [{"entries": [{"key": "u", "value": "v"}]}],
      "hits": 10**7}, 413, "too-large"),
]  # fmt: skip


@async_test
async def test_bad_checks_are_problem_documents() -> None:
    node = MemoryNode()
    async with serve(node) as http:
        await ok(await http.put("/v1/ratelimit/policies", json=_policy("local")))
        for body, status, code in BAD_CHECKS:
            await problem(await http.post("/v1/ratelimit/check", json=body), status, code)
        assert node.machine.ratelimit.generation == 1 and len(node.machine.ratelimit.strict) == 0


@async_test
async def test_strict_limits_count_through_the_log() -> None:
    node = MemoryNode()
    async with serve(node) as http:
        await ok(await http.put("/v1/ratelimit/policies", json=_policy("strict", "sliding_log")))
        codes = [(await ok(await http.post("/v1/ratelimit/check", json=_check("a"))))[
            "overall_code"] for _ in range(4)]  # fmt: skip
        assert codes == ["OK", "OK", "OK", "OVER_LIMIT"]
        assert len(node.machine.ratelimit.strict) == 1  # counted in the replicated state


async def _codes(url: str, session: aiohttp.ClientSession, body: dict[str, Any], n: int) -> list[
    str]:  # fmt: skip
    out = []
    for _ in range(n):
        async with session.post(url + "/v1/ratelimit/check", json=body) as response:
            assert response.status == 200, await response.text()
            out.append((await response.json())["overall_code"])
    return out


@async_test
async def test_owner_mode_counts_once_for_the_whole_cluster() -> None:
    async with MemoryCluster(3) as cluster, aiohttp.ClientSession() as session:
        async with session.put(cluster.urls[0] + "/v1/ratelimit/policies",
                               json=_policy("owner", "token_bucket", 5)) as response:  # fmt: skip
            assert response.status == 200
        admitted = 0
        for user in ("u1", "u2", "u3", "u4"):
            codes = []
            for url in cluster.urls * 3:  # 9 checks spread over the three members
                codes += await _codes(url, session, _check(user), 1)
            admitted_user = codes.count("OK")
            assert admitted_user == 5, (user, codes)
            admitted += admitted_user
        assert admitted == 20
        owners = set()
        for url in cluster.urls:
            async with session.post(url + "/v1/ratelimit/check", json=_check("u1")) as response:
                owners.add((await response.json())["statuses"][0]["owner"])
        assert len(owners) == 1  # every member names the same owner
        # A local policy on the same cluster admits per member: 3 * 5.
        async with session.put(cluster.urls[0] + "/v1/ratelimit/policies",
                               json=_policy("local", "token_bucket", 5)) as response:  # fmt: skip
            assert response.status == 200
        codes = []
        for url in cluster.urls:
            codes += await _codes(url, session, _check("fresh"), 6)
        assert codes.count("OK") == 15


@async_test
async def test_an_owner_that_does_not_answer_is_replaced_for_the_check() -> None:
    async with MemoryCluster(3) as cluster, aiohttp.ClientSession() as session:
        async with session.put(cluster.urls[0] + "/v1/ratelimit/policies",
                               json=_policy("owner", "token_bucket", 2)) as response:  # fmt: skip
            assert response.status == 200
        async with session.post(cluster.urls[0] + "/v1/ratelimit/check",
                                json=_check("x")) as response:  # fmt: skip
            owner = (await response.json())["statuses"][0]["owner"]
        other = next(i for i in range(3) if str(i + 1) != owner)
        cluster.down.add(int(owner) - 1)
        codes = await _codes(cluster.urls[other], session, _check("x"), 3)
        assert codes == ["OK", "OK", "OVER_LIMIT"]  # a fresh counter on the fallback member
        metrics = cluster.members[other].metrics().decode()
        assert "synod_ratelimit_owner_fallbacks_total 3.0" in metrics


def test_rate_limiter_is_installed_on_the_app() -> None:
    from synod.node.http import build_app

    app = build_app(MemoryNode())
    assert RATELIMITER in app


async def _until(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll an async condition (bounded: UNTIL_POLLS_MAX polls)."""
    for _ in range(UNTIL_POLLS_MAX):
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def _remaining(session: aiohttp.ClientSession, url: str, user: str) -> int:
    async with session.post(url + "/v1/ratelimit/check", json=_check(user, hits=0)) as response:
        body = await response.json()
    return int(body["statuses"][0]["remaining"])


@async_test
async def test_global_mode_answers_locally_and_converges_through_the_owner() -> None:
    async with MemoryCluster(3) as cluster, aiohttp.ClientSession() as session:
        async with session.put(cluster.urls[0] + "/v1/ratelimit/policies",
                               json=_policy("global", "sliding_log", 30)) as response:  # fmt: skip
            assert response.status == 200
        for url in cluster.urls:  # each member admits from its own replica
            assert await _codes(url, session, _check("g"), 5) == ["OK"] * 5

        async def converged(remaining: int) -> bool:
            return all([await _remaining(session, url, "g") == remaining
                        for url in cluster.urls])  # fmt: skip

        await _until(lambda: converged(15), "replicas to see 15 hits")
        assert await _codes(cluster.urls[1], session, _check("g"), 15) == ["OK"] * 15
        await _until(lambda: converged(0), "replicas to see 30 hits")
        for url in cluster.urls:
            assert await _codes(url, session, _check("g"), 1) == ["OVER_LIMIT"]
        metrics = "".join(m.metrics().decode() for m in cluster.members)
        assert 'synod_ratelimit_global_syncs_total{kind="broadcast",result="ok"}' in metrics
        # 30/min, 50 ms batches plus the broadcast lag, two other members: >= 2 hits.
        bound_lines = [line for line in metrics.splitlines() if line.startswith(
            'synod_ratelimit_over_admission_bound{domain="api",mode="global"}')]  # fmt: skip
        assert bound_lines and all(float(line.split()[1]) >= 2 for line in bound_lines)


def test_global_concurrency_limits_are_refused() -> None:
    from synod.ratelimit.policy import parse_policy

    with pytest.raises(ValueError, match="cannot be global"):
        parse_policy(_policy("global", "concurrency"))
