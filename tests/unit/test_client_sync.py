"""The blocking Client and the lease keeper, against the fake API server."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from synod.client import Client, LeaseExpired, NotFound
from tests.unit.fake_synod import FakeCluster, Fault, threaded


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with threaded(FakeCluster()) as fake:
        yield fake


def in_loop(cluster: FakeCluster, action: object) -> None:
    """Run ``action()`` on the fake's loop thread (its state is not thread-safe)."""
    done = threading.Event()

    def call() -> None:
        action()  # type: ignore[operator]
        done.set()

    cluster.loop.call_soon_threadsafe(call)  # type: ignore[attr-defined]
    assert done.wait(5)


def test_blocking_calls_and_watch(cluster: FakeCluster) -> None:
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


def test_keeper_renews_until_the_lease_expires(cluster: FakeCluster) -> None:
    with Client(cluster.urls, timeout_s=2) as client:
        grant = client.lease_grant(300)
        keeper = client.keep_alive(grant.id, grant.ttl_ms)
        with pytest.raises(TimeoutError):
            keeper.wait(timeout_s=0.5)
        assert keeper.alive and keeper.keeper.renewals >= 2
        in_loop(cluster, lambda: cluster.expire_lease(grant.id))
        error = keeper.wait(timeout_s=5)
        assert isinstance(error, LeaseExpired) and not keeper.alive
        with pytest.raises(LeaseExpired, match="expired or was revoked"):
            keeper.check()


def test_keeper_gives_up_after_a_whole_ttl_without_renewal(cluster: FakeCluster) -> None:
    with Client(cluster.urls, timeout_s=1, attempts_max=1) as client:
        grant = client.lease_grant(300)
        cluster.fault("/v1/lease/keepalive", Fault("problem"), times=100)
        keeper = client.keep_alive(grant.id, grant.ttl_ms)
        error = keeper.wait(timeout_s=5)
        assert isinstance(error, LeaseExpired) and "not renewed" in error.detail
        assert isinstance(error, NotFound)


def test_lease_block_revokes_on_exit(cluster: FakeCluster) -> None:
    with Client(cluster.urls, timeout_s=2) as client:
        with client.lease(5000) as keeper:
            client.put("s/eph", "1", lease=keeper.id)
            assert keeper.alive
        assert keeper.id not in cluster.state.leases
        assert client.get("s/eph") is None
        assert isinstance(keeper.error, LeaseExpired)
