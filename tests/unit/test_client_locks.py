"""The lock SDK against the real HTTP API (memory cluster): fenced mutex, FIFO hand-over
through long-polls, watchdog renewals, safe_until, loss (revocation, renewal failures)
cancelling the guarded task, rw locks, semaphores, elections, the blocking client."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from synod.client import AsyncClient, Client, Txn
from synod.client.errors import FencingTokenStale, LockWaitTimeout
from synod.client.locks import Lock, LockLost, poll_ms, sql_fence_guard
from synod.client.txn import put
from synod.node.api import NoLeader
from synod.services.locks import lock_timer_fire_op
from tests.unit.memory_cluster import Fault, MemoryCluster, threaded

WAIT_S = 10.0  # bounds every wait on a condition


def run_with(body: Callable[[MemoryCluster, AsyncClient], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with MemoryCluster() as cluster:
            client = AsyncClient(cluster.urls, timeout_s=2, backoff_ms_base=1, backoff_ms_max=5)
            async with client:
                return await asyncio.wait_for(body(cluster, client), WAIT_S * 3)

    return asyncio.run(main())


async def queued(cluster: MemoryCluster, name: str, count: int) -> None:
    async with asyncio.timeout(WAIT_S):
        while len(cluster.node.machine.locks.status("default", name)["waiters"]) < count:
            await asyncio.sleep(0.001)


def kinds(cluster: MemoryCluster) -> list[str]:
    """The replicated writes the node applied, by kind, without the client session's
    own open/close (once per client, not per lock)."""
    return [str(op["kind"]) for op in cluster.node.writes
            if not str(op["kind"]).startswith("session_")]  # fmt: skip


def test_mutex_tokens_and_fifo_hand_over() -> None:
    async def body(cluster: MemoryCluster, client: AsyncClient) -> None:
        order: list[str] = []
        first = client.lock("orders/42", ttl_ms=1_000, owner="a")
        async with first as held:
            assert held.token > 0 and held.held and held.safe_until > time.monotonic()

            async def contender(owner: str) -> int:
                async with client.lock("orders/42", ttl_ms=1_000, owner=owner) as lock:
                    order.append(owner)
                    return lock.token

            b = asyncio.create_task(contender("b"))
            await queued(cluster, "orders/42", 1)
            c = asyncio.create_task(contender("c"))
            await queued(cluster, "orders/42", 2)
            assert not b.done() and not c.done()
            first_token = held.token
        token_b, token_c = await b, await c
        assert order == ["b", "c"] and first_token < token_b < token_c
        assert first.token == 0 and not first.held
        status = await client.lock_status("orders/42")
        assert not status["held"]

    run_with(body)


def test_try_lock_and_wait_timeout_share_the_session_lease_and_close_revokes_it() -> None:
    async def body(cluster: MemoryCluster, client: AsyncClient) -> None:
        async with client.lock("m", owner="a", ttl_ms=1_000):
            with pytest.raises(LockWaitTimeout):
                await client.lock("m", owner="b", wait_ms=0, ttl_ms=1_000).acquire()
            waiting = asyncio.create_task(client.lock("m", owner="c", wait_ms=500,
                                                      ttl_ms=1_000).acquire())  # fmt: skip
            await queued(cluster, "m", 1)
            (waiter,) = cluster.node.machine.locks.status("default", "m")["waiters"]
            cluster.node.apply(lock_timer_fire_op([waiter["waiter_id"]]))  # leader's timer
            with pytest.raises(LockWaitTimeout):
                await waiting
        session = client.lock_session(1_000)
        assert cluster.node.machine.leases.ttls_ms() == {session.lease_id: 1_000}  # one lease
        assert kinds(cluster).count("lease_grant") == 1
        await client.close()
        assert cluster.node.machine.leases.ttls_ms() == {}  # close revoked the session lease
        assert kinds(cluster)[-1] == "lease_revoke" and session.lost is not None

    run_with(body)


def test_a_waiter_keeps_its_lease_alive_while_queued() -> None:
    async def body(cluster: MemoryCluster, client: AsyncClient) -> None:
        first = await client.lock("m", owner="a", ttl_ms=600).acquire()
        second = client.lock("m", owner="b", ttl_ms=600)
        waiting = asyncio.create_task(second.acquire())
        await queued(cluster, "m", 1)
        async with asyncio.timeout(WAIT_S):
            while second.renewals < 4:  # more than a whole TTL in the queue
                await asyncio.sleep(0.01)
        await first.release()
        await waiting
        assert second.held and second.safe_until > time.monotonic()
        await second.release()

    run_with(body)


def test_watchdog_renews_past_the_ttl() -> None:
    async def body(cluster: MemoryCluster, client: AsyncClient) -> None:
        # Renewals every 200 ms keep a 600 ms TTL on a loaded machine too.
        async with client.lock("m", ttl_ms=600) as lock:
            async with asyncio.timeout(WAIT_S):
                while lock.renewals < 3:
                    await asyncio.sleep(0.01)
            assert lock.held and lock.lost is None

    run_with(body)


def test_revocation_cancels_the_guarded_task_and_raises_lock_lost() -> None:
    async def body(cluster: MemoryCluster, client: AsyncClient) -> None:
        lost: list[str] = []
        lock = client.lock("m", ttl_ms=300, on_lost=lambda lk, err: lost.append(lk.name))
        with pytest.raises(LockLost):
            async with lock:
                await client.lock_revoke("m")
                await asyncio.sleep(WAIT_S)  # cancelled by the watchdog long before
        assert lost == ["m"] and lock.lost is not None
        assert not await client.validate_token("m", 1)

    run_with(body)


def test_renewals_failing_until_safe_until_lose_the_lock() -> None:
    async def body(cluster: MemoryCluster, client: AsyncClient) -> None:
        cluster.fault("/v1/lease/keepalive", Fault(error=NoLeader("injected")), times=10_000)
        lock = client.lock("m", ttl_ms=200, cancel_on_lost=False)
        async with asyncio.timeout(WAIT_S):
            with pytest.raises(LockLost, match="safe_until"):
                async with lock:
                    while lock.lost is None:
                        await asyncio.sleep(0.01)
                    assert not lock.held
                    with pytest.raises(LockLost):
                        lock.check()
            # The session revoked its lease: the hold declared lost here is gone there too.
            while cluster.node.machine.leases.ttls_ms():
                await asyncio.sleep(0.01)
        assert not (await client.lock_status("m"))["held"]

    run_with(body)


def test_a_queued_acquire_gives_up_when_its_session_lease_ends() -> None:
    async def body(cluster: MemoryCluster, client: AsyncClient) -> None:
        async with AsyncClient(cluster.urls, timeout_s=2) as other:
            holder = await other.lock("m", ttl_ms=1_000).acquire()
            waiting = asyncio.create_task(client.lock("m", ttl_ms=1_000).acquire())
            await queued(cluster, "m", 1)
            await client.lease_revoke(client.lock_session(1_000).lease_id)
            with pytest.raises((LockLost, LockWaitTimeout)):
                await asyncio.wait_for(waiting, WAIT_S)
            status = await client.lock_status("m")
            assert status["waiters"] == [] and holder.held
            await holder.release()

    run_with(body)


def test_a_cycle_is_two_writes_on_the_shared_session_lease() -> None:
    async def body(cluster: MemoryCluster, client: AsyncClient) -> None:
        first = await client.lock("a", ttl_ms=1_000).acquire()
        await first.release()
        assert kinds(cluster) == ["lease_grant", "lock_acquire", "lock_release"]
        del cluster.node.writes[:]
        held = [await client.lock(name, ttl_ms=1_000).acquire() for name in ("a", "b", "c")]
        assert {lock.lease_id for lock in held} == {first.lease_id}
        assert all(lock.held and lock.safe_until > time.monotonic() for lock in held)
        for lock in held:
            await lock.release()
        assert kinds(cluster) == ["lock_acquire"] * 3 + ["lock_release"] * 3
        assert cluster.node.machine.leases.ttls_ms() == {first.lease_id: 1_000}
        # Another TTL is another session; own_lease is a private lease, revoked on release.
        del cluster.node.writes[:]
        other = await client.lock("a", ttl_ms=2_000).acquire()
        own = await client.lock("b", ttl_ms=1_000, own_lease=True).acquire()
        assert len({first.lease_id, other.lease_id, own.lease_id}) == 3
        await other.release()
        await own.release()
        assert kinds(cluster) == ["lease_grant", "lock_acquire", "lease_grant", "lock_acquire",
                                  "lock_release", "lock_release", "lease_revoke"]  # fmt: skip

    run_with(body)


def test_session_lease_loss_loses_every_lock_of_the_session() -> None:
    async def body(cluster: MemoryCluster, client: AsyncClient) -> None:
        lost: list[str] = []
        entered: list[Lock] = []

        async def guarded(name: str) -> None:
            lock = client.lock(name, ttl_ms=1_000, on_lost=lambda lk, err: lost.append(lk.name))
            async with lock:
                entered.append(lock)
                await asyncio.sleep(WAIT_S)  # cancelled when the lease is lost

        # The watchdogs' status reads fail: only the session's keep-alive sees the loss.
        cluster.fault("/v1/locks/status", Fault(error=NoLeader("injected")), times=10_000)
        tasks = [asyncio.create_task(guarded(name)) for name in ("x", "y")]
        async with asyncio.timeout(WAIT_S):
            while len(entered) < 2:
                await asyncio.sleep(0.001)
        lease_id = entered[0].lease_id
        assert entered[1].lease_id == lease_id
        session = client.lock_session(1_000)
        await client.lease_revoke(lease_id)  # the lease ends: both holds are released
        for task in tasks:
            with pytest.raises(LockLost):
                await asyncio.wait_for(task, WAIT_S)
        assert sorted(lost) == ["x", "y"] and all(not lock.held for lock in entered)
        assert session.lost is not None and client.lock_session(1_000) is not session
        # The next lock gets a new session lease.
        async with client.lock("x", ttl_ms=1_000) as again:
            assert again.lease_id != lease_id and again.held

    run_with(body)


def test_fenced_txn_and_validate() -> None:
    async def body(cluster: MemoryCluster, client: AsyncClient) -> None:
        async with client.lock("m", ttl_ms=60_000) as lock:  # no renewal in the test
            result = await lock.fenced_txn(Txn(success=[put("orders/42", "paid")]))
            assert result.succeeded
            assert await client.validate_token("m", lock.token)
            old = lock.token
            await client.lock_revoke("m")
            assert not await client.validate_token("m", old)
            with pytest.raises(FencingTokenStale):
                await lock.fenced_txn(Txn(success=[put("orders/42", "late")]))
        got = await client.get("orders/42")
        assert got is not None and got.value == "paid"

    run_with(body)


def test_rwlock_semaphore_and_listing() -> None:
    async def body(cluster: MemoryCluster, client: AsyncClient) -> None:
        rw = client.rwlock("table", ttl_ms=1_000)
        async with rw.read(owner="r1"), rw.read(owner="r2"):
            status = await client.lock_status("table")
            assert [h["mode"] for h in status["holders"]] == ["s", "s"]
            with pytest.raises(LockWaitTimeout):
                await rw.write(owner="w", wait_ms=0).acquire()
        async with client.semaphore("pool", 2, owner="a", ttl_ms=1_000), \
                client.semaphore("pool", 2, owner="b", ttl_ms=1_000):  # fmt: skip
            listed = await client.lock_list()
            assert [(x["name"], x["holders"]) for x in listed["locks"]] == [("pool", 2)]

    run_with(body)


def test_election_campaign_observe_proclaim() -> None:
    async def body(cluster: MemoryCluster, client: AsyncClient) -> None:
        election = client.election("scheduler")
        assert await election.leader() is None
        seen: list[Any] = []

        async def observe() -> None:
            async for leader in election.observe(changes_max=3):
                seen.append(leader and (leader.owner, leader.value))

        observer = asyncio.create_task(observe())
        async with election.campaign("http://a", owner="a", ttl_ms=1_000) as leadership:
            await election.proclaim(leadership, "http://a2")
            leader = await election.leader()
            assert leader is not None and leader.token == leadership.token
        await asyncio.wait_for(observer, WAIT_S)
        assert seen[0] is None and seen[-1] in (("a", "http://a2"), None)
        assert len(seen) == 3

    run_with(body)


def test_blocking_client_lock() -> None:
    with threaded(MemoryCluster()) as cluster, Client(cluster.urls, timeout_s=2) as client:
        with client.lock("m", ttl_ms=1_000) as lock:
            token = lock.token
            assert token > 0 and lock.held
            assert client.validate_token("m", token)
        assert not client.validate_token("m", token) and lock.token == 0


def test_sql_fence_guard_refuses_a_stale_token() -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, state TEXT, fence_token INTEGER)")
    db.execute("INSERT INTO orders VALUES (42, 'new', 0)")
    update = f"UPDATE orders SET state = ?, fence_token = ? WHERE id = ? AND {sql_fence_guard()}"
    assert db.execute(update, ("paid", 7, 42, 7)).rowcount == 1
    assert db.execute(update, ("late", 5, 42, 5)).rowcount == 0  # a stale holder
    assert db.execute("SELECT state FROM orders").fetchone() == ("paid",)
    with pytest.raises(ValueError, match="identifier"):
        sql_fence_guard("x; DROP TABLE orders")


def test_long_polls_fit_inside_the_attempt_timeout() -> None:
    assert poll_ms(AsyncClient("127.0.0.1:1", timeout_s=2)) == 1_200
    assert poll_ms(AsyncClient("127.0.0.1:1", timeout_s=100)) == 5_000


def test_lock_options_are_checked() -> None:
    with pytest.raises(ValueError, match="ttl_ms"):
        Lock(AsyncClient("127.0.0.1:1"), "m", ttl_ms=0)
