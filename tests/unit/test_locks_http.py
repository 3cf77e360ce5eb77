"""/v1/locks and /v1/election on the real HTTP app over a real state machine: long-polls
answered by the applied state, problem codes, fencing, elections, the OpenAPI entries."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from synod.node.locks_http import LockWaits
from synod.node.metrics import NodeMetrics
from synod.node.routes import route_specs
from synod.node.schema import validate
from synod.services.commands import lease_grant_op, lease_revoke_op
from synod.services.locks import lock_timer_fire_op
from tests.unit.http_helpers import WAIT_TIMEOUT_S, async_test, ok, problem, serve
from tests.unit.memory_node import MemoryNode

SPECS = {spec.route_id: spec for spec in route_specs()}


async def call(client: TestClient[Any, Any], path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = await ok(await client.post(path, json=body))
    validate(answer, SPECS["POST " + path].response)
    return answer


async def fails(client: TestClient[Any, Any], path: str, body: dict[str, Any], code: str,
                status: int = 409) -> dict[str, Any]:  # fmt: skip
    return await problem(await client.post(path, json=body), status, code)


def node_with_leases(count: int = 3) -> MemoryNode:
    node = MemoryNode()
    for lease_id in range(1, count + 1):
        assert node.apply(lease_grant_op(10_000, lease_id))["ok"]
    return node


async def until_queued(node: MemoryNode, name: str, owners: int) -> list[dict[str, Any]]:
    """Wait (on the state, bounded) until ``owners`` waiters are queued on ``name``."""
    async with asyncio.timeout(WAIT_TIMEOUT_S):
        while True:
            found = node.machine.locks.status("default", name)["waiters"]
            if len(found) >= owners:
                return list(found)
            await asyncio.sleep(0)  # let the HTTP tasks run; bounded by the timeout


@async_test
async def test_acquire_long_poll_is_answered_by_the_release() -> None:
    node = node_with_leases()
    async with serve(node) as client:
        first = await call(client, "/v1/locks/acquire",
                           {"name": "orders/42", "owner": "a", "lease": 1})  # fmt: skip
        assert first["granted"] and first["token"] > 0
        waiting = asyncio.create_task(call(client, "/v1/locks/acquire", {
            "name": "orders/42", "owner": "b", "lease": 2, "wait_ms": 60_000}))  # fmt: skip
        await until_queued(node, "orders/42", 1)
        assert not waiting.done()
        await call(client, "/v1/locks/release",
                   {"name": "orders/42", "owner": "a", "token": first["token"]})  # fmt: skip
        second = await waiting
        assert second["granted"] and second["token"] > first["token"]
        status = await call(client, "/v1/locks/status", {"name": "orders/42"})
        assert [h["owner"] for h in status["holders"]] == ["b"]


def _sample(metrics: NodeMetrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    assert value is not None, f"{name} is not exported"
    return value


@async_test
async def test_lock_metrics_count_grants_and_time_the_wait_and_the_hand_over() -> None:
    node = node_with_leases()
    metrics = NodeMetrics(1)
    metrics.watch_locks(lambda: node.machine.locks)
    node.lock_waits = LockWaits(lambda: node.machine.locks,
                                observe_wait=metrics.lock_wait_seconds.observe,
                                observe_handover=metrics.lock_handover_seconds.observe)  # fmt: skip
    async with serve(node) as client:
        first = await call(client, "/v1/locks/acquire", {"name": "m", "owner": "a", "lease": 1})
        waiting = asyncio.create_task(call(client, "/v1/locks/acquire", {
            "name": "m", "owner": "b", "lease": 2, "wait_ms": 60_000}))  # fmt: skip
        await until_queued(node, "m", 1)
        assert _sample(metrics, "synod_lock_waiters") == 1
        assert _sample(metrics, "synod_lock_wait_duration_seconds_count") == 0
        await call(client, "/v1/locks/release", {"name": "m", "owner": "a",
                                                 "token": first["token"]})  # fmt: skip
        assert (await waiting)["granted"]
    assert _sample(metrics, "synod_lock_held") == 1 and _sample(metrics, "synod_locks") == 1
    assert _sample(metrics, "synod_lock_acquisitions_total", {"via": "at_once"}) == 1
    assert _sample(metrics, "synod_lock_acquisitions_total", {"via": "queue"}) == 1
    assert _sample(metrics, "synod_lock_releases_total") == 1
    assert _sample(metrics, "synod_lock_wait_duration_seconds_count") == 1
    assert _sample(metrics, "synod_lock_handover_duration_seconds_count") == 1
    assert _sample(metrics, "synod_lock_fencing_rejections_total") == 0


def test_lock_wait_timings_are_bounded_and_skip_grants_a_release_did_not_cause() -> None:
    waits_seen: list[float] = []
    handovers: list[float] = []
    table = node_with_leases().machine.locks
    waits = LockWaits(lambda: table, waits_max=2, observe_wait=waits_seen.append,
                      observe_handover=handovers.append)  # fmt: skip
    waits.releasing(("default", "m"))
    waits.queued(("default", "m"), 1)  # queued after that release: an expiry will grant it
    waits.granted(("default", "m"), 1)
    assert len(waits_seen) == 1 and handovers == []
    for waiter_id in range(2, 10):  # never answered: the oldest starts are dropped
        waits.queued(("default", "n"), waiter_id)
    waits.granted(("default", "n"), 2)
    waits.granted(("default", "n"), 9)
    assert len(waits_seen) == 2


@async_test
async def test_try_lock_and_wait_timeout_are_problems() -> None:
    node = node_with_leases()
    async with serve(node) as client:
        await call(client, "/v1/locks/acquire", {"name": "m", "owner": "a", "lease": 1})
        await fails(client, "/v1/locks/acquire", {"name": "m", "owner": "b", "lease": 2},
                    "lock-wait-timeout")  # fmt: skip
        waiting = asyncio.create_task(client.post("/v1/locks/acquire", json={
            "name": "m", "owner": "b", "lease": 2, "wait_ms": 1_000}))  # fmt: skip
        (waiter,) = await until_queued(node, "m", 1)
        # The leader decides the wait is over and writes it to the log.
        assert node.apply(lock_timer_fire_op([waiter["waiter_id"]]))["ok"]
        body = await problem(await waiting, 409, "lock-wait-timeout")
        assert body["waiter_id"] == waiter["waiter_id"]


@async_test
async def test_poll_bound_then_wait_route() -> None:
    node = node_with_leases()
    async with serve(node) as client:
        await call(client, "/v1/locks/acquire", {"name": "m", "owner": "a", "lease": 1})
        queued = await call(client, "/v1/locks/acquire", {
            "name": "m", "owner": "b", "lease": 2, "wait_ms": 60_000, "poll_ms": 1})  # fmt: skip
        assert not queued["granted"] and queued["waiter_id"] > 0
        polling = asyncio.create_task(call(client, "/v1/locks/wait", {
            "name": "m", "owner": "b", "waiter_id": queued["waiter_id"]}))  # fmt: skip
        await asyncio.sleep(0)
        await call(client, "/v1/locks/release", {"name": "m", "owner": "a"})
        granted = await polling
        assert granted["granted"] and granted["token"] > 0
        await fails(client, "/v1/locks/wait", {"name": "m", "owner": "c", "waiter_id": 99},
                    "lock-wait-timeout")  # fmt: skip


@async_test
async def test_release_renew_validate_revoke_and_fenced_txn() -> None:
    node = node_with_leases()
    async with serve(node) as client:
        held = await call(client, "/v1/locks/acquire", {"name": "m", "owner": "a", "lease": 1})
        token = held["token"]
        await fails(client, "/v1/locks/release", {"name": "m", "owner": "b"}, "lock-not-held")
        await fails(client, "/v1/locks/release", {"name": "m", "owner": "a", "token": token + 9},
                    "fencing-token-stale")  # fmt: skip
        renewed = await call(client, "/v1/locks/renew", {"name": "m", "owner": "a", "lease": 1})
        assert renewed["token"] == token and renewed["ttl_ms"] == 10_000
        await fails(client, "/v1/locks/renew", {"name": "m", "owner": "b", "lease": 2},
                    "lock-not-held")  # fmt: skip
        valid = await call(client, "/v1/locks/validate", {"name": "m", "token": token})
        assert valid["valid"] and valid["token"] == token
        fenced = {"success": [{"put": {"key": "orders/42", "value": "paid"}}],
                  "fences": [{"name": "m", "token": token}]}  # fmt: skip
        assert (await call(client, "/v1/kv/txn", fenced))["succeeded"]
        revoked = await call(client, "/v1/locks/revoke", {"name": "m"})
        assert revoked["revoked"] == ["a"]
        stale = await fails(client, "/v1/locks/validate", {"name": "m", "token": token},
                            "fencing-token-stale")  # fmt: skip
        assert stale["current"] == 0
        await fails(client, "/v1/kv/txn", fenced, "fencing-token-stale")
        await fails(client, "/v1/locks/revoke", {"name": "m"}, "lock-not-held")


@async_test
async def test_lease_end_grants_the_waiter_through_the_long_poll() -> None:
    node = node_with_leases()
    async with serve(node) as client:
        await call(client, "/v1/locks/acquire", {"name": "m", "owner": "a", "lease": 1})
        waiting = asyncio.create_task(call(client, "/v1/locks/acquire", {
            "name": "m", "owner": "b", "lease": 2, "wait_ms": 60_000}))  # fmt: skip
        await until_queued(node, "m", 1)
        assert node.apply(lease_revoke_op(1))["ok"]  # the holder's lease ends
        assert (await waiting)["granted"]


@async_test
async def test_rw_semaphore_list_and_upgrade_refused() -> None:
    node = node_with_leases()
    async with serve(node) as client:
        for owner, lease in (("r1", 1), ("r2", 2)):
            read = {"name": "t", "owner": owner, "lease": lease, "type": "rw", "mode": "s"}
            assert (await call(client, "/v1/locks/acquire", read))["granted"]
        await fails(client, "/v1/locks/acquire",
                    {"name": "t", "owner": "r1", "lease": 1, "type": "rw", "mode": "x"},
                    "lock-upgrade-refused")  # fmt: skip
        sem = {"name": "pool", "type": "semaphore", "permits": 2}
        await call(client, "/v1/locks/acquire", {**sem, "owner": "a", "lease": 1})
        await call(client, "/v1/locks/acquire", {**sem, "owner": "b", "lease": 2})
        await fails(client, "/v1/locks/acquire", {**sem, "owner": "c", "lease": 3},
                    "lock-wait-timeout")  # fmt: skip
        listed = await call(client, "/v1/locks/list", {})
        assert [lock["name"] for lock in listed["locks"]] == ["pool", "t"]
        assert listed["locks"][0]["holders"] == 2


@async_test
async def test_namespaces_and_bad_input() -> None:
    node = node_with_leases()
    async with serve(node) as client:
        created = await call(client, "/v1/locks/namespaces/put", {"ns": "jobs"})
        assert created["created"]
        await call(client, "/v1/locks/acquire", {"ns": "jobs", "name": "x", "owner": "a",
                                                  "lease": 1})  # fmt: skip
        deleted = await call(client, "/v1/locks/namespaces/delete", {"ns": "jobs"})
        assert deleted["released"] == 1
        await fails(client, "/v1/locks/status", {"ns": "jobs", "name": "x"}, "not-found", 404)
        await fails(client, "/v1/locks/acquire", {"name": "x", "owner": "a", "lease": 77},
                    "not-found", 404)  # fmt: skip
        await fails(client, "/v1/locks/acquire", {"name": "x", "owner": "a"},
                    "invalid-argument", 400)  # fmt: skip
        await fails(client, "/v1/locks/acquire",
                    {"name": "x", "owner": "a", "lease": 1, "wait_ms": 10**9},
                    "too-large", 413)  # fmt: skip
        await fails(client, "/v1/locks/acquire", {"name": "x" * 2_000, "owner": "a",
                                                  "lease": 1}, "too-large", 413)  # fmt: skip


@async_test
async def test_election_campaign_observe_proclaim_resign() -> None:
    node = node_with_leases()
    async with serve(node) as client:
        none = await call(client, "/v1/election/leader", {"name": "sched"})
        assert none["leader"] is None
        first = await call(client, "/v1/election/campaign", {
            "name": "sched", "owner": "pod-a", "lease": 1, "value": "http://a"})  # fmt: skip
        assert first["granted"]
        now = await call(client, "/v1/election/leader", {"name": "sched"})
        assert now["leader"]["owner"] == "pod-a" and now["leader"]["value"] == "http://a"
        observing = asyncio.create_task(call(client, "/v1/election/leader", {
            "name": "sched", "after_revision": now["changed_revision"]}))  # fmt: skip
        campaign_b = asyncio.create_task(call(client, "/v1/election/campaign", {
            "name": "sched", "owner": "pod-b", "lease": 2, "value": "http://b",
            "wait_ms": 60_000}))  # fmt: skip
        await until_queued(node, "sched", 1)
        await call(
            client,
            "/v1/election/proclaim",
            {"name": "sched", "owner": "pod-a", "token": first["token"], "value": "v2"},
        )
        changed = await observing
        assert (
            changed["leader"]["value"] == "v2"
            and changed["changed_revision"] != now["changed_revision"]
        )
        await fails(client, "/v1/election/proclaim", {"name": "sched", "owner": "pod-a",
                                                       "token": first["token"] + 100,
                                                       "value": "x"},
                    "fencing-token-stale")  # fmt: skip
        await call(client, "/v1/election/resign", {"name": "sched", "owner": "pod-a"})
        second = await campaign_b
        assert second["granted"] and second["token"] > first["token"]
        leader = await call(client, "/v1/election/leader", {"name": "sched"})
        assert leader["leader"]["owner"] == "pod-b"


@async_test
async def test_observe_answers_unchanged_after_its_poll_bound() -> None:
    node = node_with_leases()
    async with serve(node) as client:
        await call(client, "/v1/election/campaign", {"name": "e", "owner": "a", "lease": 1})
        now = await call(client, "/v1/election/leader", {"name": "e"})
        same = await call(client, "/v1/election/leader", {
            "name": "e", "after_revision": now["changed_revision"], "poll_ms": 1})  # fmt: skip
        assert same["changed_revision"] == now["changed_revision"]


def test_openapi_lists_the_lock_routes() -> None:
    paths = {spec.path for spec in route_specs()}
    assert {"/v1/locks/acquire", "/v1/locks/wait", "/v1/locks/release", "/v1/locks/renew",
            "/v1/locks/status", "/v1/locks/list", "/v1/locks/validate", "/v1/locks/revoke",
            "/v1/election/campaign", "/v1/election/leader", "/v1/election/proclaim",
            "/v1/election/resign"} <= paths  # fmt: skip
    acquire = SPECS["POST /v1/locks/acquire"]
    assert "lock-wait-timeout" in acquire.all_errors
    assert acquire.body is not None and acquire.body["properties"]["wait_ms"]["maximum"] > 0
