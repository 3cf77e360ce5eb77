"""The operator's IdGenerator calls (AdminClient) against the real HTTP layer over an
in-memory cluster: the definition document is accepted (at the CRD's extremes too),
writing it twice is idempotent, another definition under the name is refused, and the
status counts come from the node's own list answer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from synod_operator.admin import AdminClient, AdminError
from synod_operator.idgenerator import (
    IdObservation,
    build_id_status,
    definition_document,
    parse_idgenerator,
)
from synod_operator.status import now_utc
from tests.unit.memory_cluster import MemoryCluster

WAIT_S = 10.0


def run_with(body: Callable[[MemoryCluster, AdminClient], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with MemoryCluster() as cluster, aiohttp.ClientSession() as http:
            admin = AdminClient(http, cluster.urls)
            return await asyncio.wait_for(body(cluster, admin), WAIT_S)

    return asyncio.run(main())


@pytest.mark.parametrize(
    "snowflake",
    [
        {},
        {"timeBits": 1, "workerBits": 16, "sequenceBits": 46, "epochMs": 2**53 - 1,
         "workerMin": 65535, "workerMax": 65535},
        {"timeBits": 61, "workerBits": 1, "sequenceBits": 1, "epochMs": 0},
    ],
)  # fmt: skip
def test_definition_written_idempotently_and_listed(snowflake: dict[str, Any]) -> None:
    spec = parse_idgenerator("orders", "team-a", {"clusterRef": "c", "snowflake": snowflake})
    document = definition_document(spec)
    assert document is not None

    async def body(cluster: MemoryCluster, admin: AdminClient) -> None:
        assert await admin.cluster_status() is not None
        first = await admin.ids_define(spec.generator, document)
        again = await admin.ids_define(spec.generator, document)
        assert (first["created"], again["created"]) == (True, False)
        assert first["generator"] == {"name": "orders", **document}
        listing = await admin.ids_list()
        obs = IdObservation(True, True, applied=True, listing=listing)
        status = build_id_status(spec, obs, generation=1, previous={}, now=now_utc())
        assert status["ready"] is True
        assert (status["workersLeased"], status["highWaterMark"]) == (0, 0)

    run_with(body)


def test_another_definition_under_the_name_is_refused() -> None:
    first = parse_idgenerator("orders", "team-a", {"clusterRef": "c"})
    other = parse_idgenerator("orders", "team-a", {"clusterRef": "c",
                                                   "snowflake": {"workerBits": 8}})  # fmt: skip
    first_doc, other_doc = definition_document(first), definition_document(other)
    assert first_doc is not None and other_doc is not None

    async def body(cluster: MemoryCluster, admin: AdminClient) -> None:
        await admin.ids_define("orders", first_doc)
        with pytest.raises(AdminError) as refused:
            await admin.ids_define("orders", other_doc)
        assert (refused.value.status, refused.value.code) == (409, "already-exists")
        obs = IdObservation(True, True, error_code=refused.value.code, error_detail="x")
        status = build_id_status(other, obs, generation=1, previous={}, now=now_utc())
        reasons = {c["type"]: c["reason"] for c in status["conditions"]}
        assert status["ready"] is False and reasons["DefinitionApplied"] == "AlreadyExists"

    run_with(body)


def test_segment_high_water_mark_is_the_tags_max_id() -> None:
    spec = parse_idgenerator("invoice", "team-a", {"mode": "segment", "clusterRef": "c"})

    async def body(cluster: MemoryCluster, admin: AdminClient) -> None:
        segment = await admin.post("/v1/ids/invoice/segment", {"step": 250})
        assert (segment["start"], segment["end"]) == (1, 250)
        obs = IdObservation(True, True, applied=True, listing=await admin.ids_list())
        status = build_id_status(spec, obs, generation=1, previous={}, now=now_utc())
        assert status["highWaterMark"] == 250 and "workersLeased" not in status

    run_with(body)
