"""AsyncClient KV, txn, lease and admin calls against the real HTTP API (memory cluster)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from synod.client import (
    AsyncClient,
    CompareFailed,
    InvalidArgument,
    NotFound,
    TooLarge,
    Txn,
    normalize_endpoints,
)
from synod.client.txn import put, range_, value, version
from synod.services.limits import ServiceLimits
from tests.unit.memory_cluster import LEASE_TTL_MS_MIN, MemoryCluster

VALUE_BYTES_MAX = 1000  # small, so that a too-large value is cheap to build


def run_with(
    body: Callable[[MemoryCluster, AsyncClient], Awaitable[Any]], **cluster_options: Any
) -> Any:
    async def main() -> Any:
        async with MemoryCluster(**cluster_options) as cluster:
            client = AsyncClient(cluster.urls, timeout_s=2, backoff_ms_base=1, backoff_ms_max=5)
            async with client:
                return await body(cluster, client)

    return asyncio.run(main())


def test_normalize_endpoints() -> None:
    assert normalize_endpoints("127.0.0.1:1, http://h:2/") == ["http://127.0.0.1:1", "http://h:2"]
    assert normalize_endpoints(None)[0] == "http://127.0.0.1:2379"
    assert normalize_endpoints("") == normalize_endpoints(None)
    with pytest.raises(ValueError, match="empty endpoint"):
        normalize_endpoints(["a:1", ""])


def test_put_get_range_delete() -> None:
    async def body(cluster: MemoryCluster, client: AsyncClient) -> None:
        first = await client.put("a/1", "x")
        assert first.revision == 2
        await client.put("a/2", "y")
        again = await client.put("a/1", "z", prev_kv=True)
        assert again.prev_kv is not None and again.prev_kv.value == "x"
        kv = await client.get("a/1")
        assert kv is not None and (kv.value, kv.version, kv.create_revision) == ("z", 2, 2)
        assert await client.get("missing") is None
        listed = await client.prefix("a/")
        assert [k.key for k in listed.kvs] == ["a/1", "a/2"] and listed.count == 2
        limited = await client.range("a/", prefix=True, limit=1)
        assert limited.more and len(limited.kvs) == 1
        gone = await client.delete("a/", prefix=True, prev_kv=True)
        assert gone.deleted == 2 and {k.key for k in gone.prev_kvs} == {"a/1", "a/2"}
        assert (await client.prefix("a/")).kvs == []

    run_with(body)


def test_writes_carry_session_headers_with_increasing_seq() -> None:
    async def body(cluster: MemoryCluster, client: AsyncClient) -> None:
        await client.put("k", "1")
        await client.put("k", "2")
        await client.delete("k")
        seqs = [
            (int(r.headers["Synod-Seq"]), int(r.headers["Synod-Ack-Seq"]))
            for r in cluster.requests
            if r.path.startswith("/v1/kv/")
        ]
        assert seqs == [(1, 1), (2, 2), (3, 3)]
        assert len(cluster.requests_to("/v1/session/open")) == 1
        assert client.client_id > 0

    run_with(body)


def test_txn_builder_and_cas() -> None:
    async def body(cluster: MemoryCluster, client: AsyncClient) -> None:
        created = await client.cas("cfg", None, "v1")
        assert created.revision > 0
        with pytest.raises(CompareFailed) as failed:
            await client.cas("cfg", None, "other")
        assert failed.value.current is not None and failed.value.current.value == "v1"
        await client.cas("cfg", "v1", "v2")
        with pytest.raises(CompareFailed, match="expected 'v1'"):
            await client.cas("cfg", "v1", "v3")
        txn = Txn().when(value("cfg").eq("v2"), version("cfg").gt(1)).then(put("cfg", "v3"))
        result = await client.txn(txn.otherwise(range_("cfg")))
        assert result.succeeded
        miss = await client.txn(Txn().when(value("cfg").ne("v3")).otherwise(range_("cfg")))
        assert not miss.succeeded and miss.range_kvs(0)[0].value == "v3"

    run_with(body)


def test_problem_documents_map_to_typed_errors() -> None:
    async def body(cluster: MemoryCluster, client: AsyncClient) -> None:
        with pytest.raises(InvalidArgument) as bad:
            await client.put("", "x")
        assert bad.value.status == 400 and bad.value.problem["type"].endswith("invalid-argument")
        with pytest.raises(TooLarge) as large:
            await client.put("k", "x" * (VALUE_BYTES_MAX + 1))
        assert large.value.problem["limit"] == "value_bytes_max"
        with pytest.raises(NotFound):
            await client.lease_revoke(123)
        # Final errors are not retried.
        assert len(cluster.requests_to("/v1/lease/revoke")) == 1
        assert cluster.node.writes[-1] == {"kind": "lease_revoke", "id": 123}

    run_with(body, limits=ServiceLimits(value_bytes_max=VALUE_BYTES_MAX,
                                        lease_ttl_ms_min=LEASE_TTL_MS_MIN))  # fmt: skip


def test_leases_and_admin() -> None:
    async def body(cluster: MemoryCluster, client: AsyncClient) -> None:
        lease = await client.lease_grant(3000)
        await client.put("eph", "1", lease=lease.id)
        info = await client.lease_timetolive(lease.id)
        assert info.granted_ttl_ms == 3000 and info.keys == ["eph"]
        assert await client.lease_keepalive(lease.id) == 3000
        assert await client.lease_revoke(lease.id) == 1
        assert await client.get("eph") is None
        # The snapshot is taken at the applied index (every entry so far).
        assert await client.snapshot() == cluster.node.index > 0
        assert (await client.transfer_leadership(to=2))["leader_id"] == 2
        added = await client.add_learner(4, "127.0.0.1:2680")
        assert added["changed"] is True
        learner = {"id": 4, "role": "learner", "peer_url": "127.0.0.1:2680"}
        assert [m for m in added["members"] if m["id"] == 4] == [
            {**learner, "client_url": None, "match_index": cluster.node.index,
             "last_contact_ms": 0, "healthy": True}
        ]  # fmt: skip
        promoted = await client.promote(4)
        assert {m["id"]: m["role"] for m in promoted["members"]}[4] == "voter"
        removed = await client.remove_member(4)
        assert 4 not in {m["id"] for m in removed["members"]}
        status = await client.status()
        assert status.leader_id == 2 and len(status.members) == 3
        one = await client.status(cluster.urls[2])
        assert one.member_id == 3 and one.role == "follower"

    run_with(body)


def test_every_documented_problem_code_maps_to_its_class() -> None:
    from synod.client import errors

    expected = {
        "invalid-argument": errors.InvalidArgument,
        "future-revision": errors.FutureRevision,
        "not-found": errors.NotFound,
        "request-timeout": errors.BodyTimeout,
        "already-exists": errors.AlreadyExists,
        "compare-failed": errors.CompareFailed,
        "not-caught-up": errors.NotCaughtUp,
        "compacted": errors.Compacted,
        "session-expired": errors.SessionExpired,
        "too-large": errors.TooLarge,
        "not-leader": errors.NotLeader,
        "limit-exceeded": errors.LimitExceeded,
        "no-leader": errors.NoLeader,
        "timeout": errors.RequestTimeout,
        "not-ready": errors.NotReady,
    }
    for code, cls in expected.items():
        problem = {"type": errors.PROBLEM_TYPE_PREFIX + code, "detail": "d", "extra": 1}
        error = errors.error_from_problem(cls.status, problem)
        assert type(error) is cls and error.problem["extra"] == 1, code
    assert type(errors.error_from_problem(502, "<html>")) is errors.Unavailable
    assert type(errors.error_from_problem(500, {"detail": "boom"})) is errors.SynodError


def test_set_limits_through_the_log() -> None:
    async def body(cluster: MemoryCluster, client: AsyncClient) -> None:
        await client.put("a", "1")
        await client.put("b", "1")
        with pytest.raises(InvalidArgument, match="keys_max cannot go below the 2 stored"):
            await client.set_limits(keys_max=1)
        with pytest.raises(InvalidArgument, match="must have at least 1 of"):
            await client.set_limits()  # nothing to change: the schema wants one bound
        applied = await client.set_limits(keys_max=3, history_bytes_max=16 * 1024**2)
        assert applied["keys_max"] == 3 and applied["history_bytes_max"] == 16 * 1024**2
        assert (await client.status()).limits == applied
        await client.put("c", "1")

    run_with(body, limits=ServiceLimits(keys_max=2))
