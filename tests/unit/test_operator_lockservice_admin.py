"""The operator's LockService calls (AdminClient) against the real HTTP layer over an
in-memory cluster: the settings document is accepted (at the CRD's maxima too), writing it
twice is idempotent, the counts come back, deleting twice is harmless."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from synod_operator.admin import AdminClient, AdminError
from synod_operator.lockservice import (
    LOCK_DELAY_MS_MAX,
    LOCKS_PER_NAMESPACE_MAX,
    STATUS_LOCKS_LISTED_MAX,
    WAITERS_PER_LOCK_MAX,
    namespace_settings_document,
    parse_lockservice,
)
from tests.unit.memory_cluster import MemoryCluster

WAIT_S = 10.0


def run_with(body: Callable[[MemoryCluster, AdminClient], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with MemoryCluster() as cluster, aiohttp.ClientSession() as http:
            admin = AdminClient(http, cluster.urls)
            return await asyncio.wait_for(body(cluster, admin), WAIT_S)

    return asyncio.run(main())


def test_settings_written_idempotently_counted_and_deleted() -> None:
    settings = {
        "lockDelayMs": LOCK_DELAY_MS_MAX,
        "locksMax": LOCKS_PER_NAMESPACE_MAX,
        "waitersPerLockMax": WAITERS_PER_LOCK_MAX,
    }
    spec = parse_lockservice("jobs", "team-a", {"clusterRef": "c", "settings": settings})
    document = namespace_settings_document(spec)

    async def body(cluster: MemoryCluster, admin: AdminClient) -> None:
        assert await admin.cluster_status() is not None
        first = await admin.lock_namespace_put(document)
        again = await admin.lock_namespace_put(document)
        assert (first["created"], again["created"]) == (True, False)
        listing = await admin.lock_list("jobs", STATUS_LOCKS_LISTED_MAX)
        assert (listing["count"], listing["locks"], listing["more"]) == (0, [], False)
        assert await admin.lock_namespace_delete("jobs") is True
        assert await admin.lock_namespace_delete("jobs") is False
        with pytest.raises(AdminError) as refused:
            await admin.lock_list("jobs", STATUS_LOCKS_LISTED_MAX)
        assert refused.value.code == "not-found"

    run_with(body)


def test_beyond_the_crd_maxima_the_node_refuses() -> None:
    document = {"ns": "jobs", "lock_delay_ms": LOCK_DELAY_MS_MAX + 1}

    async def body(cluster: MemoryCluster, admin: AdminClient) -> None:
        with pytest.raises(AdminError) as refused:
            await admin.lock_namespace_put(document)
        assert (refused.value.status, refused.value.code) == (413, "too-large")
        assert "lock_delay_ms_max" in str(refused.value)
        with pytest.raises(AdminError):
            await admin.lock_list("jobs", STATUS_LOCKS_LISTED_MAX)

    run_with(body)
