"""Leases on a real cluster: expiry deletes attached keys, keep-alive holds them,
and a new leader gives every live lease a full TTL before expiring any."""

from __future__ import annotations

import time
from pathlib import Path

from tests.cluster.harness import Cluster, request

LONG_TTL_MS = 4000


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
        _, long = request(url, "POST", "/v1/lease/grant", {"ttl_ms": LONG_TTL_MS})
        # The old leader's deadline for "long" is at most this plus its TTL.
        long_granted_by = time.monotonic()
        for name, lease in (("short", short), ("kept", kept), ("long", long)):
            body = {"key": name, "value": "x", "lease": lease["id"]}
            assert request(url, "POST", "/v1/kv/put", body)[0] == 200
        status, listed = request(url, "POST", "/v1/lease/leases", {})
        assert status == 200 and (listed["count"], listed["more"]) == (3, False), listed
        assert [lease["id"] for lease in listed["leases"]] == sorted(
            lease["id"] for lease in (short, kept, long)
        )
        assert all(0 < lease["ttl_ms"] <= lease["granted_ttl_ms"] for lease in listed["leases"])

        def short_gone_while_kept_renewed() -> bool:
            # Renewed at every poll (far more often than its TTL) until "short" expires.
            status, renewed = request(url, "POST", "/v1/lease/keepalive", {"id": kept["id"]})
            assert status == 200 and renewed["ttl_ms"] == 1000
            return not _key_exists(cluster, leader, "short")

        cluster.wait_until(short_gone_while_kept_renewed, "the short lease to expire")
        assert _key_exists(cluster, leader, "kept"), "a renewed lease must keep its key"
        # Kill the leader while "long" is live: the new leader restarts its clock.
        cluster.kill(leader)
        new_leader = cluster.wait_for_leader(exclude={leader})
        assert _key_exists(cluster, new_leader, "long")
        asked_at = time.monotonic()
        status, ttl = request(
            cluster.nodes[new_leader].url, "POST", "/v1/lease/timetolive", {"id": long["id"]}
        )
        assert status == 200, ttl
        # The old deadline would leave at most this much; a full TTL from the election
        # (which came after "short" expired, over a second after the grant) leaves more.
        old_remaining_ms_max = (long_granted_by + LONG_TTL_MS / 1000 - asked_at) * 1000
        assert ttl["ttl_ms"] > old_remaining_ms_max, "a new leader must extend live leases"
        assert ttl["granted_ttl_ms"] == LONG_TTL_MS
        cluster.wait_until(
            lambda: not _key_exists(cluster, new_leader, "long"), "the long lease to expire"
        )
        status, problem = request(
            cluster.nodes[new_leader].url, "POST", "/v1/lease/timetolive", {"id": long["id"]}
        )
        assert status == 404, problem
    finally:
        cluster.stop_all()
