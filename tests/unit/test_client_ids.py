"""The SDK's ID generators against the real HTTP API (memory cluster): embedded
snowflake generators with leased, renewed and re-leased worker ids, segments, remote
calls."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from synod.checker.ids import IssuedId, check_ids
from synod.client import Client, GeneratorNotFound, LimitExceeded
from synod.client import NoLeader as ClientNoLeader
from synod.ids import Layout, StepPolicy, WorkerLeaseLost
from synod.node.api import NoLeader
from tests.unit.ids_helpers import FakeClock
from tests.unit.memory_cluster import Fault, MemoryCluster, threaded

TTL_MS = 3_000


@pytest.fixture
def cluster() -> Iterator[MemoryCluster]:
    with threaded(MemoryCluster()) as memory:
        yield memory


def test_embedded_generator_issues_renews_and_decodes(cluster: MemoryCluster) -> None:
    with Client(cluster.urls, timeout_s=2) as client:
        clock = FakeClock()
        gen = client.snowflake("orders", ttl_ms=TTL_MS, clock=clock)
        issued = [gen.next()]
        for _ in range(10):  # bound: ten renewal periods
            issued.extend(gen.next_many(500))
            clock.advance(TTL_MS // 3)
        assert issued == sorted(set(issued))
        assert gen.renewals >= 9 and gen.acquisitions == 1
        parts = gen.decode(issued[-1])
        assert parts.worker == gen.generator.grant.worker  # type: ignore[union-attr]
        assert client.ids_decode("orders", issued[-1])["timestamp_ms"] == parts.timestamp_ms
        assert client.ids_list()["generators"][0]["workers_leased"] == 1
        gen.close()
        assert client.ids_list()["generators"][0]["workers_leased"] == 0
        with pytest.raises(GeneratorNotFound):
            client.snowflake("missing", create=False)


def test_a_paused_generator_never_overlaps_the_new_holder_of_its_worker(
    cluster: MemoryCluster,
) -> None:
    with Client(cluster.urls, timeout_s=2) as client:
        client.snowflake("g", layout=Layout(41, 1, 12), ttl_ms=TTL_MS, clock=FakeClock()).close()
        clock_a, clock_b = FakeClock(), FakeClock(wall=FakeClock().wall - 40)  # b is behind
        a = client.snowflake("g", ttl_ms=TTL_MS, clock=clock_a)
        records = [IssuedId("a", v, 0, 0) for v in a.next_many(100)]
        worker_a = a.generator.grant.worker  # type: ignore[union-attr]
        # a pauses past its lease: the cluster expires it and b takes a's worker id.
        clock_other = FakeClock()
        for clock in (clock_a, clock_b, clock_other):
            clock.advance(TTL_MS + 1)
        lease_a = a.generator.grant.lease_id  # type: ignore[union-attr]
        cluster.call(lambda: cluster.expire_lease(lease_a))
        b = client.snowflake("g", ttl_ms=TTL_MS, clock=clock_b)
        other = client.snowflake("g", ttl_ms=TTL_MS, clock=clock_other)
        assert worker_a in (b.generator.grant.worker, other.generator.grant.worker)  # type: ignore[union-attr]
        records += [IssuedId("b", v, 1, 1) for v in b.next_many(100)]
        records += [IssuedId("o", v, 1, 1) for v in other.next_many(100)]
        # a wakes up: past safe_until it cannot issue on its old worker; it re-acquires
        # (both worker ids are taken, so it fails) rather than overlap.
        with pytest.raises(LimitExceeded, match="worker ids of 'g' are leased"):
            a.next()
        report = check_ids(records)
        assert report.ok, report


def test_unreachable_cluster_stops_issuing_at_safe_until(cluster: MemoryCluster) -> None:
    with Client(cluster.urls, timeout_s=1, attempts_max=1) as client:
        clock = FakeClock()
        gen = client.snowflake("h", ttl_ms=TTL_MS, clock=clock)
        cluster.fault("/v1/ids/h/workers/renew", Fault(error=NoLeader("injected")), times=100)
        cluster.fault("/v1/ids/h/workers/acquire", Fault(error=NoLeader("injected")), times=100)
        clock.advance(TTL_MS // 2)
        gen.next()  # renewal failed, but safe_until is still ahead
        clock.advance(TTL_MS // 3)
        # Past safe_until: the worker is dropped (no ID), a new acquire cannot reach
        # the cluster either.
        with pytest.raises(ClientNoLeader):
            gen.next()
        assert gen.generator is not None and gen.generator.grant is None
        with pytest.raises(WorkerLeaseLost, match="no worker lease"):
            gen.generator.next()


def test_segments_are_dense_and_prefetched(cluster: MemoryCluster) -> None:
    with Client(cluster.urls, timeout_s=2) as client:
        policy = StepPolicy(step_initial=100, step_min=100, step_max=400, prefetch_share=0.5)
        seg = client.segment("invoice", policy=policy)
        issued = [seg.next() for _ in range(150)]
        issued += seg.next_many(300)
        issued += seg.next_many(400)  # more than both buffered segments hold
        assert issued == list(range(1, 851))
        assert seg.fetches >= 2
        other = client.segment("invoice")
        assert other.next() > max(issued), "a second client takes a later segment"
        assert client.ids_next  # the remote calls exist
        client.snowflake("n")
        remote = client.ids_next("n", 5)
        assert remote == sorted(set(remote)) and len(remote) == 5
