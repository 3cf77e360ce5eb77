"""The operator's RateLimitPolicy calls (AdminClient and the handlers' write/read) against
the real HTTP layer over an in-memory three-member cluster: the document is accepted and
stored exactly as sent, an unchanged policy is not written again (the generation stays
still), an edit is, every member reports its ring and applied generation, the status comes
out Ready and propagated, deleting twice is harmless."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from synod_operator.admin import AdminClient, AdminError
from synod_operator.ratelimitpolicy import (
    RateLimitObservation,
    build_ratelimit_status,
    parse_ratelimitpolicy,
    policy_document,
)
from synod_operator.ratelimitpolicy_handlers import _read, _write
from synod_operator.status import now_utc
from tests.unit.memory_cluster import MemoryCluster

WAIT_S = 10.0
MEMBERS = 3


def run_with(body: Callable[[MemoryCluster, AdminClient], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with MemoryCluster(MEMBERS) as cluster, aiohttp.ClientSession() as http:
            admin = AdminClient(http, cluster.urls)
            return await asyncio.wait_for(body(cluster, admin), WAIT_S)

    return asyncio.run(main())


def _spec(per_minute: int) -> dict[str, Any]:
    return {
        "clusterRef": "shared",
        "domain": "api",
        "descriptors": [
            {"key": "user", "rateLimit": {"unit": "minute", "requestsPerUnit": per_minute}},
            {"key": "path", "value": "/login", "descriptors": [{"key": "user", "rateLimit": {
                "unit": "hour", "requestsPerUnit": 5, "algorithm": "sliding_log",
                "consistency": "strict"}}]},
        ],
    }  # fmt: skip


def test_written_once_read_back_propagated_and_deleted() -> None:
    spec = parse_ratelimitpolicy("limits", "team-a", _spec(10))

    async def body(cluster: MemoryCluster, admin: AdminClient) -> None:
        assert await admin.ratelimit_policy_get("api") == (None, 0)
        await _write(admin, spec)
        stored, first = await admin.ratelimit_policy_get("api")
        assert stored == policy_document(spec) and first == 1
        await _write(admin, spec)  # unchanged: not written again
        assert (await admin.ratelimit_policy_get("api"))[1] == first
        edited = parse_ratelimitpolicy("limits", "team-a", _spec(20))
        await _write(admin, edited)
        stored, second = await admin.ratelimit_policy_get("api")
        assert second == first + 1 and stored == policy_document(edited)

        listing = await _read(admin, edited)
        assert listing is not None and listing["generation"] == second
        assert [m["url"] for m in listing["members"]] == cluster.urls
        obs = RateLimitObservation(True, True, applied=True, listing=listing)
        status = build_ratelimit_status(edited, obs, generation=2, previous={}, now=now_utc())
        assert status["ready"] and status["applied"] == f"{MEMBERS}/{MEMBERS}"
        assert (status["ringMembers"], status["ringSource"]) == (MEMBERS, "raft")
        assert status["ringsAgree"] is True

        assert await admin.ratelimit_policy_delete("api") is True
        assert await admin.ratelimit_policy_delete("api") is False
        assert await admin.ratelimit_policy_get("api") == (None, second + 1)

    run_with(body)


def test_an_unanswering_member_is_counted_as_not_applied() -> None:
    spec = parse_ratelimitpolicy("limits", "team-a", _spec(10))

    async def body(cluster: MemoryCluster, admin: AdminClient) -> None:
        await _write(admin, spec)
        cluster.down.add(2)
        listing = await _read(admin, spec)
        assert listing is not None
        assert [m["status"] is None for m in listing["members"]] == [False, False, True]
        obs = RateLimitObservation(True, True, applied=True, listing=listing)
        status = build_ratelimit_status(spec, obs, generation=1, previous={}, now=now_utc())
        assert status["ready"] and status["applied"] == f"2/{MEMBERS}"
        conditions = {c["type"]: c["reason"] for c in status["conditions"]}
        assert conditions["Propagated"] == "MembersBehind"

    run_with(body)


def test_a_policy_the_node_refuses_is_an_admin_error() -> None:
    bad = {"domain": "api", "descriptors": [{"key": "k", "rate_limit": {
        "unit": "week", "requests_per_unit": 1}}]}  # fmt: skip

    async def body(cluster: MemoryCluster, admin: AdminClient) -> None:
        with pytest.raises(AdminError) as refused:
            await admin.ratelimit_policy_put(bad)
        assert (refused.value.status, refused.value.code) == (400, "invalid-argument")
        assert await admin.ratelimit_policy_get("api") == (None, 0)

    run_with(body)
