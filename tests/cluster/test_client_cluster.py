"""The SDK against real `synod node` processes: failover of writes and of a watch when
the leader is killed with SIGKILL, exactly-once retries, 421-free forwarding, leases."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from synod.client import Client, CompareFailed, LeaseExpired, WatchEvent
from tests.cluster.harness import Cluster
from tests.waiting import wait_until

EVENT_WAIT_S_MAX = 30.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(tmp_path, 3)
    try:
        made.start_all()
        yield made
    finally:
        made.stop_all()


def leader_url(cluster: Cluster) -> tuple[int, str]:
    leader = cluster.wait_for_leader()
    return leader, cluster.nodes[leader].url


def test_writes_and_a_watch_survive_kill_9_of_the_leader(cluster: Cluster) -> None:
    leader, url = leader_url(cluster)
    urls = [url] + [n.url for i, n in cluster.nodes.items() if i != leader]
    events: queue.Queue[WatchEvent | BaseException] = queue.Queue()
    count = 20
    with Client(urls, timeout_s=2.0, attempts_max=20) as client:
        first = client.put("fo/start", "-")

        def watch() -> None:
            try:
                stream = client.watch("fo/v", prefix=True, start_revision=first.revision)
                for seen, event in enumerate(stream, start=1):
                    events.put(event)
                    if seen == count:
                        return
            except BaseException as exc:
                events.put(exc)

        threading.Thread(target=watch, daemon=True).start()
        for i in range(count):
            if i == count // 2:
                # The client and its watch talk to the leader (discovered first): kill it.
                cluster.kill(leader)
            client.put(f"fo/v{i:02d}", str(i))
        got: list[WatchEvent] = []
        for _ in range(count):
            item = events.get(timeout=EVENT_WAIT_S_MAX)
            assert not isinstance(item, BaseException), item
            got.append(item)
        # Every write seen once, in order: the watch resumed without gap or duplicate.
        assert [e.kv.value for e in got] == [str(i) for i in range(count)]
        assert all(e.kv.version == 1 for e in got)  # and every retried put applied once
        assert client.endpoint != url


def test_cas_txn_and_lease_keeper_on_real_nodes(cluster: Cluster) -> None:
    follower = next(n.url for i, n in cluster.nodes.items() if i != cluster.wait_for_leader())
    with Client([follower], timeout_s=2.0, discover_leader=False) as client:
        client.cas("cfg", None, "v1")  # forwarded by the follower
        with pytest.raises(CompareFailed) as info:
            client.cas("cfg", "v0", "v2")
        assert info.value.current is not None and info.value.current.value == "v1"
        grant = client.lease_grant(1000)
        keeper = client.keep_alive(grant.id, grant.ttl_ms)
        client.put("holder", "me", lease=grant.id)
        # Renewals come every ttl/3: seven of them span more than two TTLs, past which
        # only the keeper can have kept the key.
        wait_until(lambda: keeper.keeper.renewals >= 7, EVENT_WAIT_S_MAX, "seven renewals")
        assert keeper.alive and client.get("holder") is not None
        client.lease_revoke(grant.id)
        error = keeper.wait(timeout_s=EVENT_WAIT_S_MAX)
        assert isinstance(error, LeaseExpired)
        assert client.get("holder") is None
