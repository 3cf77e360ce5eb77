"""HTTP API happy paths over a real state machine: every route, answers in API form."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from synod.node.routes import route_specs
from synod.node.schema import validate
from tests.unit.http_helpers import async_test, ok, problem, serve
from tests.unit.memory_node import MemoryNode

SPECS = {spec.route_id: spec for spec in route_specs()}


async def call(client: TestClient[Any, Any], route_id: str, body: Any = None,
               **kwargs: Any) -> dict[str, Any]:  # fmt: skip
    """POST/GET and check the 200 answer against the route's documented schema."""
    method, path = route_id.split(" ", 1)
    response = await client.request(method, kwargs.pop("url", path), json=body, **kwargs)
    answer = await ok(response)
    validate(answer, SPECS[route_id].response)
    return answer


@async_test
async def test_put_range_get_delete() -> None:
    node = MemoryNode()
    async with serve(node) as client:
        first = await call(client, "POST /v1/kv/put", {"key": "a/1", "value": "x"})
        assert first == {"header": first["header"], "prev_kv": None}
        assert first["header"]["revision"] == 2 and first["header"]["member_id"] == 1
        second = await call(client, "POST /v1/kv/put",
                            {"key": "a/1", "value": "ü", "prev_kv": True})  # fmt: skip
        assert second["prev_kv"]["value"] == "x" and second["prev_kv"]["version"] == 1
        await call(client, "POST /v1/kv/put", {"key": "a/2", "value": ""})
        ranged = await call(client, "POST /v1/kv/range", {"key": "a/", "prefix": True})
        assert [kv["key"] for kv in ranged["kvs"]] == ["a/1", "a/2"]
        assert ranged["kvs"][0] == {"key": "a/1", "value": "ü", "create_revision": 2,
                                    "mod_revision": 3, "version": 2, "lease": 0}  # fmt: skip
        assert ranged["count"] == 2 and ranged["more"] is False
        limited = await call(client, "POST /v1/kv/range",
                             {"key": "a/", "range_end": "a0", "limit": 1, "keys_only": True,
                              "serializable": True})  # fmt: skip
        assert limited["more"] is True and limited["kvs"][0]["value"] == ""
        old = await call(client, "POST /v1/kv/range", {"key": "a/1", "revision": 2})
        assert old["kvs"][0]["value"] == "x" and old["header"]["revision"] == 4
        got = await call(client, "GET /v1/kv/{key}", url="/v1/kv/a/1?serializable=true")
        assert got["kvs"][0]["value"] == "ü"
        got_old = await call(client, "GET /v1/kv/{key}", url="/v1/kv/a%2F1?revision=2")
        assert got_old["kvs"][0]["value"] == "x"
        await problem(await client.get("/v1/kv/absent"), 404, "not-found")
        deleted = await call(client, "POST /v1/kv/delete",
                             {"key": "a/", "prefix": True, "prev_kv": True})  # fmt: skip
        assert deleted["deleted"] == 2 and len(deleted["prev_kvs"]) == 2
        assert deleted["header"]["revision"] == 5 == node.revision


@async_test
async def test_txn_compare_and_swap() -> None:
    node = MemoryNode()
    async with serve(node) as client:
        body = {
            "compare": [{"key": "k", "target": "version", "result": "=", "value": 0}],
            "success": [{"put": {"key": "k", "value": "first"}}, {"range": {"key": "k"}}],
            "failure": [{"range": {"key": "k"}}],
        }
        won = await call(client, "POST /v1/kv/txn", body)
        assert won["succeeded"] is True
        assert won["responses"][0] == {"put": {"prev_kv": None}}
        assert won["responses"][1]["range"]["kvs"][0]["value"] == "first"
        lost = await call(client, "POST /v1/kv/txn", body)
        assert lost["succeeded"] is False and node.revision == 2
        assert lost["responses"][0]["range"]["count"] == 1
        by_value = {"compare": [{"key": "k", "target": "value", "result": "=", "value": "first"}],
                    "success": [{"delete": {"key": "k", "prev_kv": True}}]}  # fmt: skip
        deleted = await call(client, "POST /v1/kv/txn", by_value)
        assert deleted["responses"][0]["delete"]["deleted"] == 1
        assert (await call(client, "POST /v1/kv/txn", {}))["succeeded"] is True


@async_test
async def test_compact() -> None:
    node = MemoryNode()
    async with serve(node) as client:
        for value in ("1", "2", "3"):
            await call(client, "POST /v1/kv/put", {"key": "k", "value": value})
        compacted = await call(client, "POST /v1/kv/compact", {"revision": 3})
        assert compacted["compact_revision"] == 3
        gone = await client.post("/v1/kv/range", json={"key": "k", "revision": 2})
        assert (await problem(gone, 410, "compacted"))["compact_revision"] == 3
        future = await client.post("/v1/kv/range", json={"key": "k", "revision": 99})
        await problem(future, 400, "future-revision")


@async_test
async def test_leases() -> None:
    node = MemoryNode()
    async with serve(node) as client:
        granted = await call(client, "POST /v1/lease/grant", {"ttl_ms": 5000})
        lease_id = granted["id"]
        assert granted["ttl_ms"] == 5000 and lease_id >= 1
        await call(client, "POST /v1/kv/put", {"key": "eph", "value": "v", "lease": lease_id})
        alive = await call(client, "POST /v1/lease/keepalive", {"id": lease_id})
        assert alive == {"header": alive["header"], "id": lease_id, "ttl_ms": 5000}
        ttl = await call(client, "POST /v1/lease/timetolive", {"id": lease_id})
        assert ttl["keys"] == ["eph"] and ttl["granted_ttl_ms"] == 5000
        again = await client.post("/v1/lease/grant", json={"ttl_ms": 5000, "id": lease_id})
        await problem(again, 409, "already-exists")
        revoked = await call(client, "POST /v1/lease/revoke", {"id": lease_id})
        assert revoked["keys_deleted"] == 1
        await problem(await client.get("/v1/kv/eph"), 404, "not-found")
        gone = await client.post("/v1/lease/keepalive", json={"id": lease_id})
        assert (await problem(gone, 404, "not-found"))["lease"] == lease_id
        await problem(await client.post("/v1/lease/revoke", json={"id": 999}), 404, "not-found")
        on_missing = await client.post("/v1/kv/put", json={"key": "x", "value": "", "lease": 77})
        assert on_missing.status == 404


@async_test
async def test_session_retry_returns_first_answer() -> None:
    node = MemoryNode()
    async with serve(node) as client:
        opened = await call(client, "POST /v1/session/open")
        client_id = opened["client_id"]
        assert client_id >= 1 and node.writes[0]["kind"] == "session_open"
        assert len(node.writes[0]["nonce"]) == 16
        headers = {"Synod-Client-Id": str(client_id), "Synod-Seq": "1"}
        first = await call(client, "POST /v1/kv/put", {"key": "k", "value": "a"},
                           headers=headers)  # fmt: skip
        retry = await call(client, "POST /v1/kv/put", {"key": "k", "value": "b"},
                           headers=headers)  # fmt: skip
        assert retry["header"]["revision"] == first["header"]["revision"] == 2
        assert node.revision == 2 and node.machine.kv.get(b"k").value == b"a"  # type: ignore[union-attr]
        acked = {"Synod-Client-Id": str(client_id), "Synod-Seq": "3", "Synod-Ack-Seq": "3"}
        await call(client, "POST /v1/kv/put", {"key": "k", "value": "c"}, headers=acked)
        stale = await client.post("/v1/kv/put", json={"key": "k", "value": "d"}, headers=headers)
        await problem(stale, 410, "session-expired")
        unknown = {"Synod-Client-Id": "999", "Synod-Seq": "1"}
        expired = await client.post("/v1/kv/put", json={"key": "k", "value": "e"},
                                    headers=unknown)  # fmt: skip
        await problem(expired, 410, "session-expired")
        assert node.machine.kv.get(b"k").value == b"c"  # type: ignore[union-attr]


@async_test
async def test_cluster_health_admin() -> None:
    node = MemoryNode()
    async with serve(node) as client:
        status = await call(client, "GET /v1/cluster/status")
        assert status["role"] == "leader" and status["members"][0]["id"] == 1
        health = await client.get("/healthz")
        assert health.status == 200
        assert (await health.json()) == {"status": "ok", "reason": "in memory"}
        ready = await client.get("/readyz")
        assert ready.status == 200 and (await ready.json())["ready"] is True
        node.ready = (False, "no leader")
        not_ready = await problem(await client.get("/readyz"), 503, "not-ready")
        assert not_ready["reason"] == "no leader"
        added = await call(client, "POST /v1/admin/members/add-learner",
                           {"id": 4, "peer_url": "127.0.0.1:2680"})  # fmt: skip
        assert added["done"] == "add_learner"
        await call(client, "POST /v1/admin/members/promote", {"id": 4})
        await call(client, "POST /v1/admin/members/remove", {"id": 4})
        await call(client, "POST /v1/admin/leadership/transfer", {})
        await call(client, "POST /v1/admin/leadership/transfer", {"to": 2})
        snap = await call(client, "POST /v1/admin/snapshot", {})
        assert snap["snapshot_index"] == node.index
        assert node.admin_calls == [("add_learner", (4, "127.0.0.1:2680", "")),
                                    ("promote", 4), ("remove", 4), ("transfer", None),
                                    ("transfer", 2), ("snapshot", None)]  # fmt: skip


@async_test
async def test_metrics_use_route_templates() -> None:
    node = MemoryNode()
    async with serve(node) as client:
        await call(client, "POST /v1/kv/put", {"key": "a/b/c", "value": "v"})
        await client.get("/v1/kv/a/b/c")
        await client.get("/v1/kv/nope")
        await client.get("/no/such/route")
        metrics = await client.get("/metrics")
        assert metrics.status == 200
        assert metrics.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await metrics.text()
    assert 'synod_http_requests_total{code="200",method="POST",route="/v1/kv/put"} 1.0' in text
    assert 'synod_http_requests_total{code="200",method="GET",route="/v1/kv/{key}"} 1.0' in text
    assert 'synod_http_requests_total{code="404",method="GET",route="/v1/kv/{key}"} 1.0' in text
    assert 'code="404",method="GET",route="unmatched"} 1.0' in text
    assert 'synod_http_request_duration_seconds_count{route="/v1/kv/put"} 1.0' in text
    assert "a/b/c" not in text and "nope" not in text
    # Problem answers are counted by their stable code (the alerts pick codes by name).
    assert 'synod_http_problems_total{code="not-found",route="/v1/kv/{key}"} 1.0' in text
    assert 'synod_http_problems_total{code="not-found",route="unmatched"} 1.0' in text
    assert 'synod_http_problems_total{code="not-found",route="/v1/kv/put"}' not in text
