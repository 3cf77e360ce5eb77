"""The locks state machine through ServiceStateMachine.apply: mutexes, FIFO hand-over,
fencing tokens, leases, lock-delay, try-lock timers, rw locks, semaphores, revocation,
elections, fenced txns, bounds and snapshots."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from synod.services.commands import (
    encode_command,
    lease_expire_op,
    lease_grant_op,
    lease_revoke_op,
    put_op,
    range_op,
    txn_op,
)
from synod.services.locks import (
    LockLimits,
    LockTable,
    lock_acquire_op,
    lock_namespace_delete_op,
    lock_namespace_put_op,
    lock_proclaim_op,
    lock_release_op,
    lock_revoke_op,
    lock_timer_fire_op,
)
from synod.services.state import ServiceStateMachine


def run(sm: ServiceStateMachine, op: dict[str, Any]) -> dict[str, Any]:
    return sm.apply(sm.applied_index + 1, encode_command(op))


def ok(sm: ServiceStateMachine, op: dict[str, Any]) -> dict[str, Any]:
    result = run(sm, op)
    assert result["ok"], result
    return result


def err(sm: ServiceStateMachine, op: dict[str, Any]) -> str:
    before = sm.snapshot()
    result = run(sm, op)
    assert not result["ok"], result
    after = msgpack.unpackb(sm.snapshot())
    expected = msgpack.unpackb(before)
    expected["applied_index"] = after["applied_index"]
    assert after == expected, "an error changes no state"
    code = result["error"]["code"]
    assert isinstance(code, str)
    return code


def machine(leases: int = 3) -> ServiceStateMachine:
    sm = ServiceStateMachine()
    for lease_id in range(1, leases + 1):
        ok(sm, lease_grant_op(10_000, lease_id))
    return sm


def holders(sm: ServiceStateMachine, name: str, ns: str = "default") -> list[str]:
    return [h["owner"] for h in sm.locks.status(ns, name)["holders"]]


def waiters(sm: ServiceStateMachine, name: str, ns: str = "default") -> list[str]:
    return [w["owner"] for w in sm.locks.status(ns, name)["waiters"]]


def test_mutex_grant_release_and_tokens_grow() -> None:
    sm = machine()
    first = ok(sm, lock_acquire_op("m", "a", 1))
    assert first["granted"] and first["token"] > 0 and first["count"] == 1
    assert err(sm, lock_acquire_op("m", "b", 2)) == "lock-wait-timeout"  # try-lock
    ok(sm, lock_release_op("m", "a", token=first["token"]))
    assert not sm.locks.status("default", "m")["held"]
    second = ok(sm, lock_acquire_op("m", "b", 2))
    assert second["token"] > first["token"]
    assert sm.locks.check_token("default", "m", second["token"]) == second["token"]
    with pytest.raises(Exception, match="does not hold"):
        sm.locks.check_token("default", "m", first["token"])


def test_fifo_hand_over_in_the_same_command() -> None:
    sm = machine()
    held = ok(sm, lock_acquire_op("m", "a", 1))
    queued_b = ok(sm, lock_acquire_op("m", "b", 2, wait_ms=5_000))
    queued_c = ok(sm, lock_acquire_op("m", "c", 3, wait_ms=5_000))
    assert not queued_b["granted"] and queued_b["position"] == 1 and queued_c["position"] == 2
    assert waiters(sm, "m") == ["b", "c"]
    released = ok(sm, lock_release_op("m", "a"))
    assert released["released"]
    assert holders(sm, "m") == ["b"] and waiters(sm, "m") == ["c"]
    state, token_b = sm.locks.waiter_state("default", "m", "b", queued_b["waiter_id"])
    assert state == "granted" and token_b > held["token"]
    assert sm.locks.waiter_state("default", "m", "c", queued_c["waiter_id"]) == ("waiting", 0)
    ok(sm, lock_release_op("m", "b"))
    assert holders(sm, "m") == ["c"]


def test_retried_acquire_finds_its_waiter_and_release_cancels_the_wait() -> None:
    sm = machine()
    ok(sm, lock_acquire_op("m", "a", 1))
    queued = ok(sm, lock_acquire_op("m", "b", 2, wait_ms=5_000))
    again = ok(sm, lock_acquire_op("m", "b", 2, wait_ms=5_000))
    assert again["waiter_id"] == queued["waiter_id"] and again["position"] == 1
    cancelled = ok(sm, lock_release_op("m", "b"))
    assert cancelled["cancelled"] and waiters(sm, "m") == []
    assert sm.lock_timers_ms() == {}
    assert sm.locks.waiter_state("default", "m", "b", queued["waiter_id"]) == ("gone", 0)


def test_reentrancy_counts_and_keeps_the_token() -> None:
    sm = machine()
    first = ok(sm, lock_acquire_op("m", "a", 1))
    again = ok(sm, lock_acquire_op("m", "a", 1))
    assert again["token"] == first["token"] and again["count"] == 2
    assert err(sm, lock_acquire_op("m", "a", 2)) == "invalid-argument"  # other lease
    assert not ok(sm, lock_release_op("m", "a"))["released"]
    assert holders(sm, "m") == ["a"]
    assert ok(sm, lock_release_op("m", "a"))["released"]
    ok(sm, lock_acquire_op("m", "a", 1))
    ok(sm, lock_acquire_op("m", "a", 1))
    assert ok(sm, lock_release_op("m", "a", release_all=True))["released"]


def test_release_errors() -> None:
    sm = machine()
    assert err(sm, lock_release_op("m", "a")) == "lock-not-held"
    held = ok(sm, lock_acquire_op("m", "a", 1))
    assert err(sm, lock_release_op("m", "b")) == "lock-not-held"
    assert err(sm, lock_release_op("m", "a", token=held["token"] + 1)) == "fencing-token-stale"


def test_wait_timeout_is_a_replicated_timer() -> None:
    sm = machine()
    ok(sm, lock_acquire_op("m", "a", 1))
    queued = ok(sm, lock_acquire_op("m", "b", 2, wait_ms=1_500))
    assert sm.lock_timers_ms() == {queued["waiter_id"]: 1_500}
    fired = ok(sm, lock_timer_fire_op([queued["waiter_id"], 999]))
    assert fired["fired"] == [queued["waiter_id"]]  # unknown ids are skipped
    assert waiters(sm, "m") == [] and sm.lock_timers_ms() == {}
    assert ok(sm, lock_timer_fire_op([queued["waiter_id"]]))["fired"] == []  # twice: no-op


def test_timer_of_a_granted_waiter_is_gone() -> None:
    sm = machine()
    ok(sm, lock_acquire_op("m", "a", 1))
    queued = ok(sm, lock_acquire_op("m", "b", 2, wait_ms=1_500))
    ok(sm, lock_release_op("m", "a"))
    assert ok(sm, lock_timer_fire_op([queued["waiter_id"]]))["fired"] == []
    assert holders(sm, "m") == ["b"]


def test_lease_expiry_releases_and_grants_the_next() -> None:
    sm = machine()
    held = ok(sm, lock_acquire_op("m", "a", 1))
    ok(sm, lock_acquire_op("m", "b", 2, wait_ms=5_000))
    ok(sm, lock_acquire_op("m", "c", 1, wait_ms=5_000))  # a waiter of the same lease
    ok(sm, lease_expire_op([1]))
    status = sm.locks.status("default", "m")
    assert [h["owner"] for h in status["holders"]] == ["b"] and status["waiters"] == []
    assert status["holders"][0]["token"] > held["token"]
    ok(sm, lease_revoke_op(2))
    assert not sm.locks.status("default", "m")["held"]
    assert sm.locks.counts() == {"locks": 0, "holders": 0, "waiters": 0}


def test_acquire_needs_a_live_lease() -> None:
    sm = machine(leases=1)
    assert err(sm, lock_acquire_op("m", "a", 7)) == "not-found"


def test_lock_delay_after_a_dead_holder_then_timer_grants() -> None:
    sm = machine()
    ok(sm, lock_namespace_put_op("jobs", lock_delay_ms=2_000))
    ok(sm, lock_acquire_op("x", "a", 1, ns="jobs"))
    queued = ok(sm, lock_acquire_op("x", "b", 2, ns="jobs", wait_ms=60_000))
    ok(sm, lease_revoke_op(1))
    status = sm.locks.status("jobs", "x")
    assert status["delayed"] and not status["held"] and waiters(sm, "x", "jobs") == ["b"]
    assert err(sm, lock_acquire_op("y", "a", 2, ns="nope")) == "not-found"
    assert err(sm, lock_acquire_op("x", "c", 3, ns="jobs")) == "lock-wait-timeout"
    timers = sm.lock_timers_ms()
    delay_id = next(t for t, ms in timers.items() if ms == 2_000)
    assert set(timers) == {delay_id, queued["waiter_id"]}
    ok(sm, lock_timer_fire_op([delay_id]))
    assert holders(sm, "x", "jobs") == ["b"] and not sm.locks.status("jobs", "x")["delayed"]


def test_explicit_release_has_no_delay() -> None:
    sm = machine()
    ok(sm, lock_namespace_put_op("jobs", lock_delay_ms=2_000))
    ok(sm, lock_acquire_op("x", "a", 1, ns="jobs"))
    ok(sm, lock_release_op("x", "a", ns="jobs"))
    assert ok(sm, lock_acquire_op("x", "b", 2, ns="jobs"))["granted"]


def test_delayed_lock_without_waiters_is_forgotten_after_the_delay() -> None:
    sm = machine()
    ok(sm, lock_namespace_put_op("jobs", lock_delay_ms=1_000))
    ok(sm, lock_acquire_op("x", "a", 1, ns="jobs"))
    ok(sm, lease_revoke_op(1))
    (delay_id,) = sm.lock_timers_ms()
    ok(sm, lock_timer_fire_op([delay_id]))
    assert sm.locks.list_locks("jobs")["count"] == 0


def test_rw_shared_readers_exclusive_writer_and_writer_preference() -> None:
    sm = machine(leases=4)
    rw = {"lock_type": "rw"}
    ok(sm, lock_acquire_op("t", "r1", 1, mode="s", **rw))
    ok(sm, lock_acquire_op("t", "r2", 2, mode="s", **rw))
    assert holders(sm, "t") == ["r1", "r2"]
    ok(sm, lock_acquire_op("t", "w", 3, wait_ms=5_000, **rw))
    # A reader arriving while a writer waits queues behind it (writers do not starve).
    ok(sm, lock_acquire_op("t", "r3", 4, mode="s", wait_ms=5_000, **rw))
    assert waiters(sm, "t") == ["w", "r3"]
    assert err(sm, lock_acquire_op("t", "r1", 1, **rw)) == "lock-upgrade-refused"
    ok(sm, lock_release_op("t", "r1"))
    assert holders(sm, "t") == ["r2"]
    ok(sm, lock_release_op("t", "r2"))
    assert holders(sm, "t") == ["w"] and waiters(sm, "t") == ["r3"]
    again = ok(sm, lock_acquire_op("t", "w", 3, mode="s", **rw))  # read inside write
    assert again["count"] == 2
    ok(sm, lock_release_op("t", "w", release_all=True))
    assert holders(sm, "t") == ["r3"]


def test_rw_consecutive_readers_are_granted_together() -> None:
    sm = machine(leases=3)
    rw = {"lock_type": "rw"}
    ok(sm, lock_acquire_op("t", "w", 1, **rw))
    ok(sm, lock_acquire_op("t", "r1", 2, mode="s", wait_ms=5_000, **rw))
    ok(sm, lock_acquire_op("t", "r2", 3, mode="s", wait_ms=5_000, **rw))
    ok(sm, lock_release_op("t", "w"))
    assert holders(sm, "t") == ["r1", "r2"]


def test_semaphore_permits() -> None:
    sm = machine(leases=3)
    sem = {"lock_type": "semaphore", "permits": 2}
    t1 = ok(sm, lock_acquire_op("s", "a", 1, **sem))["token"]
    t2 = ok(sm, lock_acquire_op("s", "b", 2, **sem))["token"]
    assert t2 > t1
    assert err(sm, lock_acquire_op("s", "c", 3, **sem)) == "lock-wait-timeout"
    ok(sm, lock_acquire_op("s", "c", 3, wait_ms=5_000, **sem))
    assert err(sm, lock_acquire_op("s", "d", 3, lock_type="semaphore", permits=3)) == (
        "invalid-argument"
    )
    ok(sm, lease_expire_op([1]))
    assert holders(sm, "s") == ["b", "c"]
    assert sm.locks.check_token("default", "s", t2) == t2


def test_kind_and_mode_validation() -> None:
    sm = machine()
    assert err(sm, lock_acquire_op("m", "a", 1, mode="s")) == "invalid-argument"
    assert err(sm, lock_acquire_op("m", "a", 1, permits=2)) == "invalid-argument"
    bad_type = {**lock_acquire_op("m", "a", 1), "type": "spinlock"}
    assert err(sm, bad_type) == "invalid-argument"
    assert err(sm, {**lock_acquire_op("m", "a", 1), "color": 1}) == "invalid-argument"
    assert err(sm, lock_acquire_op("", "a", 1)) == "invalid-argument"
    assert err(sm, lock_acquire_op("m", "", 1)) == "invalid-argument"
    ok(sm, lock_acquire_op("m", "a", 1))
    assert err(sm, lock_acquire_op("m", "b", 2, lock_type="rw")) == "invalid-argument"


def test_admin_revoke_moves_the_token_on() -> None:
    sm = machine()
    old = ok(sm, lock_acquire_op("m", "a", 1))["token"]
    ok(sm, lock_acquire_op("m", "b", 2, wait_ms=5_000))
    assert err(sm, lock_revoke_op("m", owner="zz")) == "lock-not-held"
    assert ok(sm, lock_revoke_op("m"))["revoked"] == ["a"]
    new = sm.locks.status("default", "m")["holders"][0]["token"]
    assert new > old and holders(sm, "m") == ["b"]
    assert err(sm, lock_release_op("m", "a")) == "lock-not-held"
    guarded = txn_op([], [put_op(b"k", b"v")])
    assert err(sm, {**guarded, "fences": [{"name": "m", "token": old}]}) == ("fencing-token-stale")
    ok(sm, {**guarded, "fences": [{"name": "m", "token": new}]})
    assert run(sm, range_op(b"k"))["count"] == 1


def test_fences_are_validated() -> None:
    sm = machine()
    guarded = txn_op([], [put_op(b"k", b"v")])
    assert err(sm, {**guarded, "fences": ["x"]}) == "invalid-argument"
    assert err(sm, {**guarded, "fences": [{"name": "m"}]}) == "invalid-argument"
    assert err(sm, {**guarded, "fences": [{"name": "m", "token": 1, "ns": "no"}]}) == ("not-found")
    assert err(sm, {**guarded, "fences": [{"name": "m", "token": 1}] * 200}) == "too-large"


def test_election_campaign_proclaim_resign() -> None:
    sm = machine()
    election = {"lock_type": "election"}
    leader = ok(sm, lock_acquire_op("e", "n1", 1, value=b"http://n1", **election))
    ok(sm, lock_acquire_op("e", "n2", 2, value=b"http://n2", wait_ms=60_000, **election))
    status = sm.locks.status("default", "e")
    assert status["holders"][0]["value"] == b"http://n1"
    ok(sm, lock_proclaim_op("e", "n1", leader["token"], b"http://n1:2"))
    assert sm.locks.status("default", "e")["holders"][0]["value"] == b"http://n1:2"
    assert err(sm, lock_proclaim_op("e", "n1", leader["token"] + 5, b"x")) == (
        "fencing-token-stale"
    )
    assert err(sm, lock_proclaim_op("e", "n2", 1, b"x")) == "lock-not-held"
    ok(sm, lock_release_op("e", "n1"))  # resign
    new_leader = sm.locks.status("default", "e")["holders"][0]
    assert new_leader["owner"] == "n2" and new_leader["value"] == b"http://n2"


def test_namespaces_put_update_delete() -> None:
    sm = machine()
    assert ok(sm, lock_namespace_put_op("a", locks_max=1, waiters_per_lock_max=1))["created"]
    assert not ok(sm, lock_namespace_put_op("a", locks_max=1, waiters_per_lock_max=1))["created"]
    ok(sm, lock_acquire_op("x", "o", 1, ns="a"))
    assert err(sm, lock_acquire_op("y", "o", 1, ns="a")) == "limit-exceeded"
    ok(sm, lock_acquire_op("x", "p", 2, ns="a", wait_ms=1_000))
    assert err(sm, lock_acquire_op("x", "q", 3, ns="a", wait_ms=1_000)) == "limit-exceeded"
    assert ok(sm, lock_namespace_delete_op("a"))["released"] == 1
    assert sm.lock_timers_ms() == {} and sm.locks.on_lease_revoked(1) == []
    assert err(sm, lock_namespace_delete_op("a")) == "not-found"
    assert err(sm, lock_namespace_put_op("d", lock_delay_ms=10**9)) == "invalid-argument"
    ok(sm, lock_acquire_op("x", "o", 1))
    ok(sm, lock_namespace_delete_op("default"))  # released; the default namespace stays
    assert sm.locks.list_locks("default")["count"] == 0


def test_named_bounds() -> None:
    limits = LockLimits(owner_bytes_max=4, lock_name_bytes_max=4, locks_per_lease_max=2,
                        reentry_count_max=2, election_value_bytes_max=2, namespaces_max=2,
                        holders_per_semaphore_max=3)  # fmt: skip
    sm = machine()
    sm.locks = LockTable(sm.leases.exists, limits)
    assert err(sm, lock_acquire_op("m", "owner", 1)) == "too-large"
    assert err(sm, lock_acquire_op("mmmmm", "o", 1)) == "too-large"
    assert err(sm, lock_acquire_op("e", "o", 1, lock_type="election", value=b"abc")) == (
        "too-large"
    )
    assert err(sm, lock_acquire_op("s", "o", 1, lock_type="semaphore", permits=4)) == ("too-large")
    ok(sm, lock_acquire_op("m", "o", 1))
    ok(sm, lock_acquire_op("m", "o", 1))
    assert err(sm, lock_acquire_op("m", "o", 1)) == "limit-exceeded"  # reentry
    ok(sm, lock_acquire_op("n", "o", 1))
    assert err(sm, lock_acquire_op("p", "o", 1)) == "limit-exceeded"  # per lease
    ok(sm, lock_namespace_put_op("b"))
    assert err(sm, lock_namespace_put_op("c")) == "limit-exceeded"
    assert err(sm, {**lock_acquire_op("m", "x", 2), "wait_ms": 10**8}) == "invalid-argument"
    assert err(sm, lock_timer_fire_op(list(range(1, 1_002)))) == "too-large"
    with pytest.raises(ValueError, match="positive"):
        LockLimits(waiters_per_lock_max=0)


def test_list_and_status_reads() -> None:
    sm = machine()
    for name in ("a/1", "a/2", "b/1"):
        ok(sm, lock_acquire_op(name, "o", 1))
    listed = sm.locks.list_locks("default", prefix="a/", limit=1)
    assert listed["more"] and listed["count"] == 2 and listed["locks"][0]["name"] == "a/1"
    with pytest.raises(Exception, match="limit"):
        sm.locks.list_locks("default", limit=10**6)
    with pytest.raises(Exception, match="not found"):
        sm.locks.status("nope", "a")
    assert sm.locks.status("default", "zz")["held"] is False


def test_snapshot_round_trip_keeps_queues_timers_and_tokens() -> None:
    sm = machine()
    ok(sm, lock_namespace_put_op("jobs", lock_delay_ms=1_000))
    ok(sm, lock_acquire_op("x", "a", 1, ns="jobs"))
    ok(sm, lock_acquire_op("m", "a", 1))
    ok(sm, lock_acquire_op("m", "b", 2, wait_ms=3_000))
    ok(sm, lock_acquire_op("x", "c", 3, ns="jobs", wait_ms=9_000))
    ok(sm, lease_revoke_op(1))
    copy = ServiceStateMachine()
    copy.restore(sm.snapshot())
    assert copy.snapshot() == sm.snapshot()
    assert copy.lock_timers_ms() == sm.lock_timers_ms()
    # Both go on identically after the restore.
    for target in (sm, copy):
        ok(target, lock_timer_fire_op(sorted(target.lock_timers_ms())))
        ok(target, lock_acquire_op("n", "z", 3))
    assert copy.snapshot() == sm.snapshot()
    changed, overflow = copy.locks.take_changed()
    assert changed and overflow  # a restore wakes every long-poll


def test_snapshot_without_locks_restores_an_empty_table() -> None:
    sm = machine()
    state = msgpack.unpackb(sm.snapshot())
    del state["locks"]
    copy = ServiceStateMachine()
    copy.restore(msgpack.packb(state))
    assert copy.locks.counts()["locks"] == 0


def test_malformed_lock_snapshot_is_refused() -> None:
    sm = machine()
    state = msgpack.unpackb(sm.snapshot())
    state["locks"] = {"revision": 1}
    copy = ServiceStateMachine()
    with pytest.raises(Exception, match="malformed lock snapshot"):
        copy.restore(msgpack.packb(state))


def test_changed_set_is_bounded() -> None:
    limits = LockLimits(changed_locks_max=2)
    table = LockTable(lambda lease: True, limits)
    for name in ("a", "b", "c"):
        table.apply(lock_acquire_op(name, "o", 1))
    changed, overflow = table.take_changed()
    assert overflow and len(changed) <= 2
    assert table.take_changed() == (set(), False)


def test_stats_count_what_the_table_did() -> None:
    # Each counter moves for its event only (metrics read them: synod_lock_*_total).
    sm = machine(leases=4)
    stats = sm.locks.stats
    held = ok(sm, lock_acquire_op("m", "a", 1))
    assert (stats.acquired_at_once, stats.acquired_from_queue) == (1, 0)
    ok(sm, lock_acquire_op("m", "a", 1))  # re-entry: not a new acquisition
    assert stats.acquired_at_once == 1
    ok(sm, lock_acquire_op("m", "b", 2, wait_ms=60_000))
    ok(sm, lock_acquire_op("m", "c", 3, wait_ms=60_000))
    assert err(sm, lock_release_op("m", "a", token=held["token"] + 1)) == "fencing-token-stale"
    assert stats.fencing_rejected == 1
    ok(sm, lock_release_op("m", "a", release_all=True))  # hands over to b
    assert (stats.released, stats.acquired_from_queue) == (1, 1)
    ok(sm, lock_release_op("m", "c"))  # c gives up its wait
    assert stats.cancelled == 1
    ok(sm, lease_revoke_op(2))  # b's lease ends: its hold expires
    assert stats.expired == 1
    ok(sm, lock_acquire_op("n", "a", 1))
    queued = ok(sm, lock_acquire_op("n", "d", 4, wait_ms=1_000))
    ok(sm, lock_timer_fire_op([queued["waiter_id"]]))
    assert stats.wait_timeouts == 1
    ok(sm, lock_revoke_op("n"))
    assert stats.revoked == 1
    ok(sm, lock_acquire_op("n", "a", 1))
    guarded = txn_op([], [put_op(b"k", b"v")])
    assert err(sm, {**guarded, "fences": [{"name": "n", "token": 1}]}) == "fencing-token-stale"
    assert stats.fencing_rejected == 2
    assert stats.as_dict()["expired"] == 1


def test_stats_survive_a_snapshot_restore() -> None:
    sm = machine()
    ok(sm, lock_acquire_op("m", "a", 1))
    counted = sm.locks.stats
    sm.restore(sm.snapshot())
    assert sm.locks.stats is counted and counted.acquired_at_once == 1
