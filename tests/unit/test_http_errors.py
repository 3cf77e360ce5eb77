"""Bad input of every kind answers a problem document and changes nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from synod.node.api import NodeError, NoLeader, NotCaughtUp, NotLeader, Overloaded, Timeout
from synod.node.http import HttpLimits
from synod.services.limits import ServiceLimits
from tests.unit.http_helpers import WAIT_TIMEOUT_S, async_test, problem, serve
from tests.unit.memory_node import MemoryNode
from tests.waiting import async_wait_until

SMALL = ServiceLimits(key_bytes_max=16, value_bytes_max=32, ops_per_txn_max=2,
                      compares_per_txn_max=2, range_limit_max=5, keys_per_lease_max=2,
                      events_per_revision_max=2)  # fmt: skip
LIMITS = HttpLimits(service=SMALL, request_body_bytes_max=512)

PUT = "/v1/kv/put"
TXN = "/v1/kv/txn"
INVALID: list[tuple[str, Any]] = [
    (PUT, b"{"),
    (PUT, b'{"key": "\xff", "value": ""}'),
    (PUT, b'{"key": "a", "key": "b", "value": ""}'),
    (PUT, b'{"key": "a", "value": "", "lease": NaN}'),
    (PUT, b'{"key": "\\ud800", "value": ""}'),
    (PUT, b"[]"),
    (PUT, b'"text"'),
    (PUT, b"[" * 500),
    (PUT, {"key": "a"}),
    (PUT, {"value": "a"}),
    (PUT, {"key": "a", "value": "b", "bogus": 1}),
    (PUT, {"key": 1, "value": "b"}),
    (PUT, {"key": None, "value": "b"}),
    (PUT, {"key": "a", "value": ["b"]}),
    (PUT, {"key": "a", "value": "b", "lease": "1"}),
    (PUT, {"key": "a", "value": "b", "lease": 1.0}),
    (PUT, {"key": "a", "value": "b", "lease": True}),
    (PUT, {"key": "a", "value": "b", "lease": -1}),
    (PUT, {"key": "a", "value": "b", "lease": 2**63}),
    (PUT, {"key": "a", "value": "b", "prev_kv": "true"}),
    (PUT, {"key": "", "value": "b"}),
    ("/v1/kv/range", {"key": "a", "prefix": True, "range_end": "b"}),
    ("/v1/kv/range", {"key": "a", "limit": -1}),
    ("/v1/kv/range", {"key": "a", "serializable": 1}),
    ("/v1/kv/delete", {"key": "a", "prefix": True, "range_end": "b"}),
    ("/v1/kv/delete", {"key": "a", "value": "x"}),
    (TXN, {"compare": {}}),
    (TXN, {"success": [{"put": {"key": "a", "value": ""}, "range": {"key": "a"}}]}),
    (TXN, {"success": [{}]}),
    (TXN, {"success": [{"watch": {"key": "a"}}]}),
    (TXN, {"success": [{"range": {"key": "a", "serializable": True}}]}),
    (TXN, {"success": [{"put": {"key": "a", "value": ""}}, {"put": {"key": "a", "value": ""}}]}),
    (TXN, {"compare": [{"key": "a", "target": "value", "result": "=", "value": 1}]}),
    (TXN, {"compare": [{"key": "a", "target": "version", "result": "=", "value": "1"}]}),
    (TXN, {"compare": [{"key": "a", "target": "version", "result": "==", "value": 1}]}),
    (TXN, {"compare": [{"key": "a", "target": "color", "result": "=", "value": 1}]}),
    (TXN, {"compare": [{"key": "a", "target": "version", "result": "="}]}),
    ("/v1/kv/compact", {"revision": 0}),
    ("/v1/kv/compact", {}),
    ("/v1/lease/grant", {"ttl_ms": 10}),
    ("/v1/lease/grant", {"ttl_ms": 5000, "id": -1}),
    ("/v1/lease/grant", {"id": 1}),
    ("/v1/lease/revoke", {"id": 0}),
    ("/v1/lease/keepalive", {"id": "1"}),
    ("/v1/lease/timetolive", {}),
    ("/v1/session/open", {"nonce": "x"}),
    ("/v1/admin/members/add-learner", {"id": 4}),
    ("/v1/admin/members/add-learner", {"id": 0, "peer_url": "h:1"}),
    ("/v1/admin/members/promote", {"id": 4, "force": True}),
    ("/v1/admin/leadership/transfer", {"to": 0}),
    ("/v1/admin/snapshot", {"now": True}),
]
TOO_LARGE: list[tuple[str, Any, str]] = [
    (PUT, {"key": "k" * 17, "value": ""}, "key_bytes_max"),
    (PUT, {"key": "é" * 9, "value": ""}, "key_bytes_max"),  # 9 characters, 18 bytes
    (PUT, {"key": "k", "value": "v" * 33}, "value_bytes_max"),
    (PUT, {"key": "k", "value": "v" * 600}, "request_body_bytes_max"),
    ("/v1/kv/range", {"key": "a", "range_end": "z" * 17}, "key_bytes_max"),
    ("/v1/kv/range", {"key": "a", "limit": 6}, "range_limit_max"),
    (TXN, {"success": [{"range": {"key": "a"}}] * 3}, "ops_per_txn_max"),
    (TXN, {"compare": [{"key": "a", "target": "lease", "result": "=", "value": 0}] * 3},
     "compares_per_txn_max"),
    (TXN, {"success": [{"put": {"key": "a", "value": "v" * 33}}]}, "value_bytes_max"),
    ("/v1/admin/members/add-learner", {"id": 4, "peer_url": "h" * 3000},
     "request_body_bytes_max"),
]  # fmt: skip


async def _refused(body: Any, path: str, status: int, code: str, **kwargs: Any) -> dict[str, Any]:
    node = MemoryNode(limits=SMALL)
    async with serve(node, limits=LIMITS) as client:
        before = node.revision
        if isinstance(body, bytes):
            response = await client.post(path, data=body, **kwargs)
        else:
            response = await client.post(path, json=body, **kwargs)
        answer = await problem(response, status, code)
        assert node.revision == before and node.index == 0 and not node.admin_calls
    return answer


@pytest.mark.parametrize(("path", "body"), INVALID)
@async_test
async def test_invalid_input_is_400(path: str, body: Any) -> None:
    answer = await _refused(body, path, 400, "invalid-argument")
    assert len(answer["detail"]) < 300


@pytest.mark.parametrize(("path", "body", "limit"), TOO_LARGE)
@async_test
async def test_limits_are_413(path: str, body: Any, limit: str) -> None:
    answer = await _refused(body, path, 413, "too-large")
    assert answer["limit"] == limit and isinstance(answer["max"], int)


@pytest.mark.parametrize(
    "headers",
    [
        {"Synod-Client-Id": "1"},
        {"Synod-Seq": "1"},
        {"Synod-Client-Id": "x", "Synod-Seq": "1"},
        {"Synod-Client-Id": "1", "Synod-Seq": "-1"},
        {"Synod-Client-Id": "1", "Synod-Seq": "0"},
        {"Synod-Client-Id": "0", "Synod-Seq": "1"},
        {"Synod-Client-Id": "1", "Synod-Seq": "1", "Synod-Ack-Seq": "2"},
        {"Synod-Client-Id": "1", "Synod-Seq": str(2**63)},
        {"Synod-Client-Id": "1", "Synod-Seq": "+1"},
        {"Synod-Client-Id": "1", "Synod-Seq": "\uff11"},
    ],
)
@async_test
async def test_bad_session_headers(headers: dict[str, str]) -> None:
    await _refused({"key": "a", "value": ""}, PUT, 400, "invalid-argument", headers=headers)


@async_test
async def test_repeated_session_header_and_chunked_body() -> None:
    node = MemoryNode(limits=SMALL)
    async with serve(node, limits=LIMITS) as client:
        headers = [("Synod-Client-Id", "1"), ("Synod-Client-Id", "2"), ("Synod-Seq", "1")]
        repeated = await client.post(PUT, json={"key": "a", "value": ""}, headers=headers)
        await problem(repeated, 400, "invalid-argument")

        async def chunks() -> Any:
            for _ in range(10):
                yield b" " * 100

        chunked = await client.post(PUT, data=chunks())
        assert (await problem(chunked, 413, "too-large"))["limit"] == "request_body_bytes_max"
        assert node.index == 0


@pytest.mark.parametrize(
    "url",
    [
        "/v1/kv/a?bogus=1",
        "/v1/kv/a?revision=abc",
        "/v1/kv/a?revision=-1",
        "/v1/kv/a?serializable=yes",
        "/v1/kv/a?revision=1&revision=2",
        "/v1/watch",
        "/v1/watch?key=",
        "/v1/watch?key=a&prefix=true&range_end=b",
        "/v1/watch?key=a&start_revision=x",
        "/v1/watch?key=a&since=1",
    ],
)
@async_test
async def test_bad_query(url: str) -> None:
    node = MemoryNode(limits=SMALL)
    async with serve(node, limits=LIMITS) as client:
        await problem(await client.get(url), 400, "invalid-argument")
        assert len(node.machine.watches) == 0


@async_test
async def test_deep_nesting_is_400() -> None:
    node = MemoryNode()
    async with serve(node) as client:
        deep = b'{"key": "a", "value": "", "lease": ' + b"[" * 100_000 + b"}"
        await problem(await client.post(PUT, data=deep), 400, "invalid-argument")
        assert node.index == 0


@async_test
async def test_long_key_in_path_and_watch_is_413() -> None:
    node = MemoryNode(limits=SMALL)
    async with serve(node, limits=LIMITS) as client:
        got = await problem(await client.get("/v1/kv/" + "k" * 17), 413, "too-large")
        assert got["limit"] == "key_bytes_max"
        watched = await problem(await client.get("/v1/watch?key=" + "k" * 17), 413, "too-large")
        assert watched["limit"] == "key_bytes_max"


@async_test
async def test_unknown_route_and_method() -> None:
    async with serve(MemoryNode()) as client:
        await problem(await client.get("/v2/nothing"), 404, "not-found")
        wrong = await client.get("/v1/kv/put/")
        assert wrong.status in (404, 405)
        not_allowed = await client.delete("/v1/kv/put")
        await problem(not_allowed, 405, "method-not-allowed")
        assert "POST" in not_allowed.headers["Allow"]


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (NoLeader("no leader"), 503, "no-leader"),
        (Timeout("no answer in 5000 ms"), 503, "timeout"),
        (Overloaded("pending_requests_max", limit="pending_requests_max", max=1), 429,
         "limit-exceeded"),
        (NotLeader(0, None), 503, "no-leader"),
        (NodeError("disk on fire"), 500, "internal"),
    ],
)  # fmt: skip
@async_test
async def test_node_errors(error: NodeError, status: int, code: str) -> None:
    node = MemoryNode()
    node.fail_with = error
    async with serve(node) as client:
        await problem(await client.post(PUT, json={"key": "a", "value": ""}), status, code)
        await problem(await client.post("/v1/kv/range", json={"key": "a"}), status, code)
        await problem(await client.post("/v1/lease/keepalive", json={"id": 1}), status, code)
        await problem(await client.post("/v1/admin/snapshot"), status, code)
    assert node.index == 0


@async_test
async def test_promote_not_caught_up_is_409() -> None:
    class Lagging(MemoryNode):
        async def admin_promote(self, node_id: int) -> dict[str, Any]:
            raise NotCaughtUp(f"learner {node_id} lags", match_index=3, commit_index=90)

    async with serve(Lagging()) as client:
        answer = await problem(
            await client.post("/v1/admin/members/promote", json={"id": 4}), 409, "not-caught-up"
        )
        assert answer["match_index"] == 3 and answer["commit_index"] == 90


@async_test
async def test_internal_error_is_a_problem() -> None:
    class Broken(MemoryNode):
        def status(self) -> dict[str, Any]:
            raise RuntimeError("bug")

    async with serve(Broken()) as client:
        answer = await problem(await client.get("/v1/cluster/status"), 500, "internal")
        assert "bug" not in answer["detail"]


@async_test
async def test_pending_requests_bound_is_429() -> None:
    release = asyncio.Event()

    class Slow(MemoryNode):
        async def write(self, op: dict[str, Any], session: Any) -> dict[str, Any]:
            await release.wait()
            return await super().write(op, session)

    node = Slow()
    async with serve(node, limits=HttpLimits(pending_requests_max=1)) as client:
        first = asyncio.ensure_future(client.post(PUT, json={"key": "a", "value": "1"}))
        await async_wait_until(lambda: _pending(client) == 1, WAIT_TIMEOUT_S,
                               "the first request to be pending")  # fmt: skip
        second = await client.post(PUT, json={"key": "b", "value": "2"})
        answer = await problem(second, 429, "limit-exceeded")
        assert answer["limit"] == "pending_requests_max"
        health = await client.get("/healthz")
        assert health.status == 200  # probes are not bounded
        release.set()
        assert (await first).status == 200
    assert node.index == 1


def _pending(client: Any) -> int:
    from synod.node.http_state import STATE

    return int(client.app[STATE].pending_requests)


@async_test
async def test_trickled_body_is_408() -> None:
    node = MemoryNode()
    async with serve(node, limits=HttpLimits(request_body_read_timeout_ms=100)) as client:
        answered = asyncio.Event()

        async def trickle() -> Any:
            yield b'{"key": "a", '
            # The rest comes only after the server answered: far beyond the read bound.
            await answered.wait()
            yield b'"value": ""}'

        response = await client.post(PUT, data=trickle())
        answered.set()
        answer = await problem(response, 408, "request-timeout")
        assert answer["limit"] == "request_body_read_timeout_ms"
    assert node.index == 0
