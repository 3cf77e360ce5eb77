"""/v1/ids on the real HTTP layer over an in-memory node: define, next (batches from the
node's own worker), decode, worker acquire/renew/release, segments, problem codes."""

from __future__ import annotations

from typing import Any

from synod.ids import Layout
from synod.node.ids_http import IDS_POOL
from synod.node.routes import route_specs
from synod.node.schema import validate
from synod.services.commands import lease_expire_op
from tests.unit.http_helpers import async_test, ok, problem, serve
from tests.unit.ids_helpers import WALL_START_MS, FakeClock
from tests.unit.memory_node import MemoryNode


@async_test
async def test_next_issues_unique_increasing_batches_and_decodes() -> None:
    node = MemoryNode()
    async with serve(node) as http:
        await problem(await http.post("/v1/ids/orders/next", json={}), 404, "generator-not-found")
        created = await ok(await http.post("/v1/ids/orders", json={"worker_bits": 8}))
        assert created["created"] and created["generator"]["worker_max"] == 255
        again = await ok(await http.post("/v1/ids/orders", json={"worker_bits": 8}))
        assert not again["created"]
        await problem(await http.post("/v1/ids/orders", json={"worker_bits": 9}), 409,
                      "already-exists")  # fmt: skip
        await problem(await http.post("/v1/ids/bad", json={"time_bits": 50, "worker_bits": 10}),
                      400, "invalid-argument")  # fmt: skip
        issued: list[int] = []
        for count in (1, 1000, 5000):
            body = await ok(await http.post("/v1/ids/orders/next", json={"count": count}))
            assert len(body["ids"]) == count
            issued.extend(body["ids"])
        assert issued == sorted(set(issued))
        await problem(await http.post("/v1/ids/orders/next", json={"count": 10**6}), 413,
                      "too-large")  # fmt: skip
        decoded = await ok(await http.get("/v1/ids/orders/decode", params={"id": issued[-1]}))
        layout = Layout(41, 8, 12)
        assert decoded["worker"] == layout.decode(issued[-1]).worker == body["worker"]
        listing = await ok(await http.get("/v1/ids"))
        assert listing["generators"][0]["workers_leased"] == 1
        got = await ok(await http.get("/v1/ids/orders"))
        specs = {spec.operation_id: spec for spec in route_specs()}
        for answer, operation in (
            (listing, "idsList"),
            (got, "idsGet"),
            (body, "idsNext"),
            (decoded, "idsDecode"),
            (created, "idsDefine"),
        ):
            validate(answer, specs[operation].response)  # the documented answer schema
        assert [w["worker"] for w in got["workers"]] == [body["worker"]]
        metrics = (await (await http.get("/metrics")).read()).decode()
        assert 'synod_ids_issued_total{generator="orders"} 6001.0' in metrics


@async_test
async def test_node_worker_is_reacquired_after_its_lease_expires_and_refuses_rollback() -> None:
    node = MemoryNode()
    async with serve(node) as http:
        clock = FakeClock()
        http.server.app[IDS_POOL].clock = clock
        await ok(await http.post("/v1/ids/g", json={"worker_bits": 1}))
        first = await ok(await http.post("/v1/ids/g/next", json={"count": 10}))
        # The node stalls past safe_until and its Synod lease expires meanwhile.
        clock.advance(20_000)
        lease = (await ok(await http.get("/v1/ids/g")))["workers"][0]["lease"]
        node.apply(lease_expire_op([lease]))
        second = await ok(await http.post("/v1/ids/g/next", json={"count": 10}))
        assert second["epoch"] > first["epoch"] and min(second["ids"]) > max(first["ids"])
        # A backwards jump beyond rollback_wait_ms_max is refused with behind_ms.
        clock.wall -= 5_000
        body = await problem(await http.post("/v1/ids/g/next", json={}), 503, "clock-rollback")
        assert body["behind_ms"] >= 5_000
        clock.wall += 6_000
        third = await ok(await http.post("/v1/ids/g/next", json={}))
        assert third["ids"][0] > max(second["ids"])
        # A layout whose epoch lies ahead of the clock cannot encode its time: 400.
        await ok(await http.post("/v1/ids/future", json={"epoch_ms": clock.wall + 10**9}))
        body = await problem(await http.post("/v1/ids/future/next", json={}), 400,
                             "invalid-argument")  # fmt: skip
        assert "outside this layout's range" in body["detail"]


@async_test
async def test_worker_lease_endpoints_fence_and_persist_the_mark() -> None:
    node = MemoryNode()
    async with serve(node) as http:
        await ok(await http.post("/v1/ids/emb", json={"worker_bits": 1}))
        acquire = {"ttl_ms": 2000, "reserve_ms": WALL_START_MS + 2000}
        grant: dict[str, Any] = await ok(
            await http.post("/v1/ids/emb/workers/acquire", json=acquire)
        )
        assert grant["layout"]["worker_bits"] == 1 and grant["ttl_ms"] == 2000
        renew = {"worker": grant["worker"], "epoch": grant["epoch"], "lease": grant["lease"],
                 "reserve_ms": WALL_START_MS + 9000}  # fmt: skip
        renewed = await ok(await http.post("/v1/ids/emb/workers/renew", json=renew))
        assert renewed["ceiling_ms"] == WALL_START_MS + 9000
        wrong = {**renew, "epoch": grant["epoch"] + 5}
        await problem(await http.post("/v1/ids/emb/workers/renew", json=wrong), 409,
                      "worker-lease-lost")  # fmt: skip
        node.apply(lease_expire_op([grant["lease"]]))
        await problem(await http.post("/v1/ids/emb/workers/renew", json=renew), 409,
                      "worker-lease-lost")  # fmt: skip
        # Both workers are free; the unused one comes first, then the old mark is the floor.
        other = await ok(await http.post("/v1/ids/emb/workers/acquire", json=acquire))
        again = await ok(await http.post("/v1/ids/emb/workers/acquire", json=acquire))
        assert other["worker"] != grant["worker"] and other["floor_ms"] == 0
        assert again["worker"] == grant["worker"] and again["floor_ms"] == WALL_START_MS + 9000
        full = await problem(await http.post("/v1/ids/emb/workers/acquire", json=acquire), 429,
                             "limit-exceeded")  # fmt: skip
        assert full["limit"] == "worker_ids"
        release = {"worker": again["worker"], "epoch": again["epoch"], "lease": again["lease"]}
        assert (await ok(await http.post("/v1/ids/emb/workers/release", json=release)))[
            "released"]  # fmt: skip
        await problem(await http.post("/v1/ids/nope/workers/acquire", json=acquire), 404,
                      "generator-not-found")  # fmt: skip


@async_test
async def test_segments_are_dense_per_tag() -> None:
    async with serve(MemoryNode()) as http:
        first = await ok(await http.post("/v1/ids/invoice/segment", json={"step": 100}))
        second = await ok(await http.post("/v1/ids/invoice/segment", json={"step": 50}))
        assert (first["start"], first["end"], second["start"], second["end"]) == (1, 100, 101, 150)
        await problem(await http.post("/v1/ids/invoice/segment", json={"step": 0}), 400,
                      "invalid-argument")  # fmt: skip
        await problem(await http.post("/v1/ids/bad name/segment", json={"step": 1}), 400,
                      "invalid-argument")  # fmt: skip
        listing = await ok(await http.get("/v1/ids"))
        assert listing["tags"] == [{"tag": "invoice", "max_id": 150}]


@async_test
async def test_ids_routes_are_in_the_openapi_document() -> None:
    async with serve(MemoryNode()) as http:
        document: dict[str, Any] = await (await http.get("/v1/openapi.json")).json()
    paths = document["paths"]
    assert "post" in paths["/v1/ids/{generator}/next"]
    responses = paths["/v1/ids/{generator}/next"]["post"]["responses"]
    described = " ".join(r["description"] for r in responses.values())
    for code in ("clock-rollback", "worker-lease-lost", "generator-not-found"):
        assert code in described
    assert {"/v1/ids", "/v1/ids/{tag}/segment", "/v1/ids/{generator}/workers/renew"} <= set(paths)
