"""Leases: replicated table, attachment and deletion, leader-side clock, new-leader grace."""

from __future__ import annotations

import pytest

from synod.services.commands import (
    encode_command,
    lease_expire_op,
    lease_grant_op,
    lease_revoke_op,
    put_op,
)
from synod.services.errors import AlreadyExists, InvalidArgument, LimitExceeded, NotFound
from synod.services.leases import LeaseClock, LeaseTable
from synod.services.limits import ServiceLimits
from synod.services.state import ServiceStateMachine


class Replica:
    """A state machine with an index counter."""

    def __init__(self, limits: ServiceLimits | None = None) -> None:
        self.sm = ServiceStateMachine(limits)
        self.index = 0

    def apply(self, op: dict[str, object]) -> dict[str, object]:
        self.index += 1
        return self.sm.apply(self.index, encode_command(op))


def test_grant_auto_ids_are_deterministic_and_skip_used_ids() -> None:
    table = LeaseTable()
    assert table.grant(2, 5_000).lease_id == 2
    assert [table.grant(0, 5_000).lease_id for _ in range(3)] == [1, 3, 4]
    with pytest.raises(AlreadyExists):
        table.grant(3, 5_000)


@pytest.mark.parametrize("ttl_ms", [0, 999, 366 * 24 * 3600 * 1000 + 1])
def test_ttl_out_of_bounds_is_invalid(ttl_ms: int) -> None:
    with pytest.raises(InvalidArgument):
        LeaseTable().grant(0, ttl_ms)


def test_leases_max_is_limit_exceeded() -> None:
    table = LeaseTable(ServiceLimits(leases_max=1))
    table.grant(0, 5_000)
    with pytest.raises(LimitExceeded):
        table.grant(0, 5_000)
    assert len(table) == 1


def test_revoke_deletes_attached_keys_in_one_revision() -> None:
    replica = Replica()
    lease_id = replica.apply(lease_grant_op(5_000))["id"]
    replica.apply(put_op(b"a", b"1", lease=lease_id))  # type: ignore[arg-type]
    replica.apply(put_op(b"b", b"1", lease=lease_id))  # type: ignore[arg-type]
    replica.apply(put_op(b"c", b"1"))
    watcher = replica.sm.watches.watch(b"\0", b"\0")
    result = replica.apply(lease_revoke_op(lease_id))  # type: ignore[arg-type]
    assert result["ok"] and result["keys_deleted"] == 2 and result["revision"] == 5
    assert [kv["key"] for kv in replica.sm.range(b"\0", b"\0")["kvs"]] == [b"c"]
    events = watcher.poll(10)
    assert [(e.type, e.kv.key, e.revision) for e in events] == [
        ("DELETE", b"a", 5),
        ("DELETE", b"b", 5),
    ]
    again = replica.apply(lease_revoke_op(lease_id))  # type: ignore[arg-type]
    assert again["error"]["code"] == "not-found"  # type: ignore[index]


def test_put_with_missing_lease_is_not_found() -> None:
    replica = Replica()
    result = replica.apply(put_op(b"a", b"1", lease=9))
    assert result["error"]["code"] == "not-found"  # type: ignore[index]
    assert replica.sm.kv.revision == 1


def test_keys_per_lease_max() -> None:
    limits = ServiceLimits(keys_per_lease_max=2)
    replica = Replica(limits)
    lease_id = replica.apply(lease_grant_op(5_000))["id"]
    for key in (b"a", b"b"):
        assert replica.apply(put_op(key, b"", lease=lease_id))["ok"]  # type: ignore[arg-type]
    assert replica.apply(put_op(b"a", b"again", lease=lease_id))["ok"]  # type: ignore[arg-type]
    third = replica.apply(put_op(b"c", b"", lease=lease_id))  # type: ignore[arg-type]
    assert third["error"]["limit"] == "keys_per_lease_max"  # type: ignore[index]


def test_expire_command_revokes_live_leases_and_skips_gone_ones() -> None:
    replica = Replica()
    first = replica.apply(lease_grant_op(5_000))["id"]
    second = replica.apply(lease_grant_op(5_000))["id"]
    replica.apply(put_op(b"k", b"", lease=first))  # type: ignore[arg-type]
    replica.apply(lease_revoke_op(second))  # type: ignore[arg-type]
    result = replica.apply(lease_expire_op([first, second]))  # type: ignore[list-item]
    assert result["ok"] and result["expired"] == [first]
    assert len(replica.sm.leases) == 0 and len(replica.sm.kv) == 0


def test_clock_expires_only_after_ttl_and_keepalive_refreshes() -> None:
    clock = LeaseClock()
    clock.on_become_leader(now_ms=0, ttls_ms={})
    clock.on_granted(1, 1_000, now_ms=0)
    clock.on_granted(2, 3_000, now_ms=0)
    assert clock.expired(999) == []
    assert clock.keepalive(1, now_ms=900) == 1_000
    assert clock.expired(1_500) == []
    assert clock.expired(1_900) == [1]
    assert clock.expired(1_950) == []  # not offered twice while the proposal is in flight
    with pytest.raises(NotFound):
        clock.keepalive(1, now_ms=1_950)  # being expired
    assert clock.remaining_ms(2, 1_000) == 2_000
    assert clock.expired(1_900 + clock.expire_retry_ms) == [1]  # proposal lost: offered again
    clock.on_revoked(1)
    assert clock.expired(10_000) == [2]


def test_new_leader_extends_every_lease_by_its_full_ttl() -> None:
    old = LeaseClock()
    old.on_become_leader(0, {})
    old.on_granted(1, 1_000, now_ms=0)
    # The old leader dies at 900 ms; the new one takes over at 5 s, long past the deadline.
    new = LeaseClock()
    assert new.expired(5_000) == []  # followers never expire
    new.on_become_leader(now_ms=5_000, ttls_ms={1: 1_000})
    assert new.expired(5_999) == []
    new.keepalive(1, 5_500)
    assert new.expired(6_499) == [] and new.expired(6_500) == [1]


def test_follower_clock_tracks_nothing() -> None:
    clock = LeaseClock()
    clock.on_granted(1, 1_000, 0)
    clock.sync({1: 1_000}, 0)
    assert clock.expired(10**9) == []
    with pytest.raises(NotFound):
        clock.remaining_ms(1, 0)


def test_sync_adds_new_and_forgets_vanished_leases() -> None:
    clock = LeaseClock(expire_batch_max=2)
    clock.on_become_leader(0, {1: 1_000, 2: 1_000})
    clock.sync({2: 1_000, 3: 1_000, 4: 1_000}, now_ms=500)
    assert clock.expired(1_000) == [2]
    assert clock.expired(1_500) == [3, 4]  # batch bound 2


def test_lease_info_reports_keys() -> None:
    replica = Replica()
    lease_id = replica.apply(lease_grant_op(7_000, lease_id=42))["id"]
    replica.apply(put_op(b"z", b"", lease=lease_id))  # type: ignore[arg-type]
    info = replica.sm.lease_info(42)
    assert (info["id"], info["ttl_ms"], info["keys"]) == (42, 7_000, [b"z"])
    assert replica.sm.lease_ttls_ms() == {42: 7_000}
