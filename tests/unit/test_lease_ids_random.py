"""Lease ids are random (issue 15: sequential ids let any client guess and revoke
another's lease): the leader draws 63 bits, the log carries the draw, every replica
applies the same id, and a collision moves on deterministically."""

from __future__ import annotations

import pytest

from synod.node.guard import lease_id_pick
from synod.services.commands import INT64_MAX, encode_command, lease_grant_op
from synod.services.errors import AlreadyExists, InvalidArgument
from synod.services.leases import LeaseTable
from synod.services.limits import ServiceLimits
from synod.services.state import ServiceStateMachine
from tests.unit.http_helpers import async_test, ok, serve
from tests.unit.memory_node import MemoryNode

GRANTS = 64


def test_the_pick_in_the_log_is_the_id_on_every_replica() -> None:
    replicas = [ServiceStateMachine(), ServiceStateMachine()]
    entry = encode_command(lease_grant_op(5_000, pick=987_654_321_123))
    answers = [sm.apply(1, entry) for sm in replicas]
    assert answers[0] == answers[1]
    assert answers[0]["id"] == 987_654_321_123


def test_a_colliding_pick_takes_the_next_free_id_deterministically() -> None:
    table = LeaseTable()
    table.grant(42, 5_000)
    table.grant(43, 5_000)
    assert table.grant(0, 5_000, pick=42).lease_id == 44
    table.grant(INT64_MAX, 5_000)
    assert table.grant(0, 5_000, pick=INT64_MAX).lease_id == 1  # wraps within [1, max]
    with pytest.raises(AlreadyExists):
        table.grant(44, 5_000, pick=7)  # an explicit id is never moved


def test_a_pick_outside_the_id_range_changes_nothing() -> None:
    sm = ServiceStateMachine(ServiceLimits())
    for index, bad in enumerate((-1, INT64_MAX + 1, "x"), start=1):
        answer = sm.apply(index, encode_command({"kind": "lease_grant", "id": 0, "ttl_ms": 5_000,
                                             "pick": bad}))  # fmt: skip
        assert answer["ok"] is False and answer["error"]["code"] == InvalidArgument.code
    assert sm.lease_ttls_ms() == {}


def test_entries_without_a_pick_still_count_up() -> None:
    # Log entries written before ids were random replay to the same ids.
    table = LeaseTable()
    assert [table.grant(0, 5_000).lease_id for _ in range(3)] == [1, 2, 3]


def test_picks_are_63_bit_and_spread() -> None:
    picks = {lease_id_pick() for _ in range(GRANTS)}
    assert len(picks) == GRANTS and all(1 <= p <= INT64_MAX for p in picks)
    assert max(picks) > 2**40  # sequential ids would be tiny


@async_test
async def test_granted_ids_over_http_are_unguessable() -> None:
    node = MemoryNode()
    async with serve(node) as client:
        ids = []
        for _ in range(GRANTS):
            granted = await ok(await client.post("/v1/lease/grant", json={"ttl_ms": 5_000}))
            ids.append(granted["id"])
        explicit = await ok(await client.post("/v1/lease/grant",
                                              json={"ttl_ms": 5_000, "id": 7}))  # fmt: skip
    assert explicit["id"] == 7
    assert len(set(ids)) == GRANTS and max(ids) > 2**40
    consecutive = sum(1 for a, b in zip(sorted(ids), sorted(ids)[1:], strict=False) if b - a == 1)
    assert consecutive == 0
    grants = [w for w in node.writes if w["kind"] == "lease_grant"]
    assert [w["pick"] for w in grants[:-1]] == ids and "pick" not in grants[-1]
