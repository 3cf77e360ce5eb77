"""Settable replicated bounds: changed by a committed `limits_set`, carried in snapshots."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from synod.services.commands import encode_command, lease_grant_op, limits_set_op, put_op
from synod.services.limits import SETTABLE_LIMITS_CEILING, ServiceLimits, with_settable_limits
from synod.services.state import ServiceStateMachine

SMALL = ServiceLimits(keys_max=2, leases_max=1, lease_ttl_ms_min=1)


def run(sm: ServiceStateMachine, op: dict[str, Any]) -> dict[str, Any]:
    return sm.apply(sm.applied_index + 1, encode_command(op))


def test_raising_keys_max_admits_the_key_that_was_refused() -> None:
    sm = ServiceStateMachine(SMALL)
    assert run(sm, put_op(b"a", b"1"))["ok"] and run(sm, put_op(b"b", b"1"))["ok"]
    refused = run(sm, put_op(b"c", b"1"))
    assert refused["error"]["code"] == "limit-exceeded" and refused["error"]["limit"] == "keys_max"
    answer = run(sm, limits_set_op({"keys_max": 3}))
    assert answer["ok"] and answer["limits"]["keys_max"] == 3
    assert run(sm, put_op(b"c", b"1"))["ok"]
    assert sm.settable_limits() == {"keys_max": 3, "leases_max": 1,
                                    "history_bytes_max": SMALL.history_bytes_max}  # fmt: skip


@pytest.mark.parametrize(
    "changes",
    [
        {"keys_max": 1},  # below the two keys stored
        {"leases_max": 0},
        {"keys_max": SETTABLE_LIMITS_CEILING["keys_max"] + 1},
        {"keys_max": "many"},
        {"keys_max": True},
        {"value_bytes_max": 10},  # shapes the wire: not settable
        {"history_bytes_max": 10},  # cannot hold the largest put (ServiceLimits refuses)
    ],
)
def test_bad_changes_are_refused_and_change_nothing(changes: dict[str, Any]) -> None:
    sm = ServiceStateMachine(SMALL)
    run(sm, put_op(b"a", b"1"))
    run(sm, put_op(b"b", b"1"))
    before = (sm.settable_limits(), sm.kv.revision, sm.limits)
    answer = run(sm, limits_set_op(changes))
    assert answer["ok"] is False and answer["error"]["code"] == "invalid-argument"
    assert (sm.settable_limits(), sm.kv.revision, sm.limits) == before
    assert sm.limits is sm.kv.limits is sm.leases.limits


def test_lowering_leases_max_below_the_live_leases_is_refused() -> None:
    sm = ServiceStateMachine(SMALL)
    assert run(sm, lease_grant_op(1_000))["ok"]
    assert run(sm, limits_set_op({"leases_max": 5}))["ok"]
    assert run(sm, lease_grant_op(1_000))["ok"]
    answer = run(sm, limits_set_op({"leases_max": 1}))
    assert (
        answer["error"]["code"] == "invalid-argument" and "2 stored" in answer["error"]["message"]
    )


def test_a_snapshot_carries_the_bounds_to_a_replica_started_with_the_defaults() -> None:
    leader = ServiceStateMachine(SMALL)
    run(leader, limits_set_op({"keys_max": 5, "history_bytes_max": 8 * 1024**2}))
    for key in (b"a", b"b", b"c"):
        assert run(leader, put_op(key, b"1"))["ok"]
    follower = ServiceStateMachine(SMALL)
    follower.restore(leader.snapshot())
    assert follower.settable_limits() == leader.settable_limits()
    assert follower.kv.limits is follower.limits
    # The replica now applies the next entries exactly as the leader does.
    for key in (b"d", b"e", b"f"):
        index = leader.applied_index + 1
        data = encode_command(put_op(key, b"1"))
        assert leader.apply(index, data) == follower.apply(index, data)
    assert follower.snapshot() == leader.snapshot()


def test_a_snapshot_from_before_settable_limits_restores_the_base_bounds() -> None:
    sm = ServiceStateMachine(SMALL)
    run(sm, limits_set_op({"keys_max": 7}))
    old = msgpack.unpackb(ServiceStateMachine(SMALL).snapshot())
    del old["limits"]  # what a release without settable limits wrote
    decoded = sm.decode(msgpack.packb(old))
    assert sm.limits.keys_max == 7 and decoded.limits == SMALL


def test_with_settable_limits_names_the_unknown_field() -> None:
    with pytest.raises(ValueError, match="'ops_per_txn_max' is not a settable limit"):
        with_settable_limits(SMALL, {"ops_per_txn_max": 3})
    assert with_settable_limits(SMALL, {}) == SMALL
