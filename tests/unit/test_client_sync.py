"""The blocking Client and the lease keeper, against the real HTTP API (memory cluster)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from synod.client import Client, LeaseExpired, NotFound
from synod.node.api import NoLeader
from tests.unit.memory_cluster import Fault, MemoryCluster, threaded
from tests.waiting import wait_until

# Bounds every wait on the cluster or a keeper (they act within a few TTLs of 300 ms).
WAIT_TIMEOUT_S = 10.0


@pytest.fixture
def cluster() -> Iterator[MemoryCluster]:
    with threaded(MemoryCluster()) as memory:
        yield memory


def test_blocking_calls_and_watch(cluster: MemoryCluster) -> None:
    with Client(cluster.urls, timeout_s=2) as client:
        first = client.put("s/a", "1")
        assert client.get("s/a") is not None
        client.put("s/b", "2")
        assert [kv.key for kv in client.prefix("s/").kvs] == ["s/a", "s/b"]
        stream = client.watch("s/", prefix=True, start_revision=first.revision)
        events = [next(stream), next(stream)]
        stream.close()
        assert [e.kv.key for e in events] == ["s/a", "s/b"]
        assert client.delete("s/", prefix=True).deleted == 2
    with pytest.raises(RuntimeError, match="closed"):
        client.get("s/a")


def test_keeper_renews_until_the_lease_expires(cluster: MemoryCluster) -> None:
    with Client(cluster.urls, timeout_s=2) as client:
        grant = client.lease_grant(300)
        keeper = client.keep_alive(grant.id, grant.ttl_ms)
        # Renewals every ttl/3: four of them span more than a whole TTL.
        wait_until(lambda: keeper.keeper.renewals >= 4, WAIT_TIMEOUT_S, "four renewals")
        assert keeper.alive and keeper.error is None
        cluster.call(lambda: cluster.expire_lease(grant.id))
        error = keeper.wait(timeout_s=WAIT_TIMEOUT_S)
        assert isinstance(error, LeaseExpired) and not keeper.alive
        with pytest.raises(LeaseExpired, match="expired or was revoked"):
            keeper.check()


def test_keeper_gives_up_after_a_whole_ttl_without_renewal(cluster: MemoryCluster) -> None:
    with Client(cluster.urls, timeout_s=1, attempts_max=1) as client:
        grant = client.lease_grant(300)
        cluster.fault("/v1/lease/keepalive", Fault(error=NoLeader("injected")), times=100)
        keeper = client.keep_alive(grant.id, grant.ttl_ms)
        error = keeper.wait(timeout_s=WAIT_TIMEOUT_S)
        assert isinstance(error, LeaseExpired) and "not renewed" in error.detail
        assert isinstance(error, NotFound)


def test_lease_block_revokes_on_exit(cluster: MemoryCluster) -> None:
    with Client(cluster.urls, timeout_s=2) as client:
        with client.lease(5000) as keeper:
            client.put("s/eph", "1", lease=keeper.id)
            assert keeper.alive
        assert not cluster.call(lambda: cluster.node.machine.leases.exists(keeper.id))
        assert client.get("s/eph") is None
        assert isinstance(keeper.error, LeaseExpired)
