"""Leases on a real cluster: expiry deletes attached keys, keep-alive holds them,
and a new leader gives every live lease a full TTL before expiring any."""

from __future__ import annotations

import time
from pathlib import Path

from tests.cluster.harness import Cluster, request


def _key_exists(cluster: Cluster, node_id: int, key: str) -> bool:
    status, body = request(cluster.nodes[node_id].url, "POST", "/v1/kv/range", {"key": key})
    assert status == 200, body
    return bool(body["kvs"])


def test_lease_expiry_keepalive_and_failover(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 3)
    try:
        cluster.start_all()
        leader = cluster.wait_for_leader()
        url = cluster.nodes[leader].url
        _, short = request(url, "POST", "/v1/lease/grant", {"ttl_ms": 1000})
        _, kept = request(url, "POST", "/v1/lease/grant", {"ttl_ms": 1000})
        _, long = request(url, "POST", "/v1/lease/grant", {"ttl_ms": 4000})
        for name, lease in (("short", short), ("kept", kept), ("long", long)):
            body = {"key": name, "value": "x", "lease": lease["id"]}
            assert request(url, "POST", "/v1/kv/put", body)[0] == 200
        for _ in range(10):  # 2.5 s of keep-alives for "kept" only.
            status, renewed = request(url, "POST", "/v1/lease/keepalive", {"id": kept["id"]})
            assert status == 200 and renewed["ttl_ms"] == 1000
            time.sleep(0.25)
        assert not _key_exists(cluster, leader, "short"), "expired lease must delete its key"
        assert _key_exists(cluster, leader, "kept")
        # Kill the leader 2.5 s into the 4 s lease: the new leader restarts its clock.
        cluster.kill(leader)
        killed_at = time.monotonic()
        new_leader = cluster.wait_for_leader(exclude={leader})
        assert _key_exists(cluster, new_leader, "long")
        time.sleep(max(0.0, 2.0 - (time.monotonic() - killed_at)))  # Past the old deadline.
        assert _key_exists(cluster, new_leader, "long"), "a new leader must extend live leases"
        cluster.wait_until(
            lambda: not _key_exists(cluster, new_leader, "long"), "the long lease to expire"
        )
        status, problem = request(
            cluster.nodes[new_leader].url, "POST", "/v1/lease/timetolive", {"id": long["id"]}
        )
        assert status == 404, problem
    finally:
        cluster.stop_all()
