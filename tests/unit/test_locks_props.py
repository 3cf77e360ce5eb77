"""Property tests of the locks state machine: random op sequences (acquire, try-lock,
release, revoke, timers, lease expiry, lock-delay, snapshots) keep every invariant:
compatible holders, tokens strictly growing per lock, FIFO grants, no lost wake-up,
errors change nothing, replicas and restored snapshots agree byte for byte."""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from synod.services.commands import encode_command, lease_grant_op, lease_revoke_op
from synod.services.locks import (
    lock_acquire_op,
    lock_namespace_put_op,
    lock_release_op,
    lock_revoke_op,
    lock_timer_fire_op,
)
from synod.services.state import ServiceStateMachine

LOCKS: dict[str, dict[str, Any]] = {
    "m": {"lock_type": "mutex"},
    "r": {"lock_type": "rw"},
    "s": {"lock_type": "semaphore", "permits": 2},
    "e": {"lock_type": "election"},
}
OWNERS = ("a", "b", "c", "d")
LEASES = (1, 2, 3)
NS = ("default", "delayed")

step = st.one_of(
    st.tuples(st.just("acquire"), st.sampled_from(NS), st.sampled_from(sorted(LOCKS)),
              st.sampled_from(OWNERS), st.sampled_from(LEASES), st.sampled_from(("x", "s")),
              st.sampled_from((0, 1_000, 5_000))),
    st.tuples(st.just("release"), st.sampled_from(NS), st.sampled_from(sorted(LOCKS)),
              st.sampled_from(OWNERS), st.booleans()),
    st.tuples(st.just("revoke"), st.sampled_from(NS), st.sampled_from(sorted(LOCKS))),
    st.tuples(st.just("fire"), st.integers(0, 7)),
    st.tuples(st.just("lease"), st.sampled_from(LEASES)),
    st.tuples(st.just("snapshot")),
)  # fmt: skip


def build(sm: ServiceStateMachine, action: tuple[Any, ...]) -> dict[str, Any] | None:
    kind = action[0]
    if kind == "acquire":
        _, ns, name, owner, lease, mode, wait_ms = action
        if mode == "s" and name != "r":
            mode = "x"
        return lock_acquire_op(name, owner, lease, ns=ns, mode=mode, wait_ms=wait_ms,
                               **LOCKS[name])  # fmt: skip
    if kind == "release":
        _, ns, name, owner, release_all = action
        return lock_release_op(name, owner, ns=ns, release_all=release_all)
    if kind == "revoke":
        return lock_revoke_op(action[2], ns=action[1])
    if kind == "fire":
        timers = sorted(sm.lock_timers_ms())
        if not timers:
            return None
        return lock_timer_fire_op([timers[action[1] % len(timers)]])
    if kind == "lease":
        return lease_revoke_op(action[1])
    return None


def apply(sm: ServiceStateMachine, op: dict[str, Any]) -> dict[str, Any]:
    return sm.apply(sm.applied_index + 1, encode_command(op))


def check_invariants(sm: ServiceStateMachine, seen: dict[tuple[str, str, str, int], int],
                     last_token: dict[tuple[str, str], int],
                     last_waiter: dict[tuple[str, str], int]) -> None:  # fmt: skip
    for ns in NS:
        for name in LOCKS:
            status = sm.locks.status(ns, name)
            holders, queue = status["holders"], status["waiters"]
            modes = [h["mode"] for h in holders]
            if status["type"] == "semaphore":
                assert len(holders) <= status["permits"]
            elif status["type"] == "rw":
                assert modes == ["x"] or all(m == "s" for m in modes), modes
            else:
                assert len(holders) <= 1
            assert len({h["owner"] for h in holders} | {w["owner"] for w in queue}) == len(
                holders
            ) + len(queue), "an owner holds or waits, not both"
            for hold in holders:
                assert sm.leases.exists(hold["lease"])
                identity = (ns, name, hold["owner"], hold["token"])
                if identity not in seen:  # a new grant
                    key = (ns, name)
                    assert hold["token"] > last_token.get(key, 0), "tokens only grow"
                    last_token[key] = hold["token"]
                    seen[identity] = hold["token"]
            # No lost wake-up: a lock that could take its queue head has granted it.
            if queue and not status["delayed"]:
                head = queue[0]
                if status["type"] == "semaphore":
                    assert len(holders) == status["permits"]
                elif status["type"] == "rw" and head["mode"] == "s":
                    assert "x" in modes
                else:
                    assert holders
            ids = [w["waiter_id"] for w in queue]
            assert ids == sorted(ids), "FIFO: the queue is in request order"
            if ids:
                last_waiter[(ns, name)] = max(last_waiter.get((ns, name), 0), ids[-1])


@settings(max_examples=300, deadline=None)
@given(st.lists(step, min_size=1, max_size=60))
def test_random_histories_keep_the_invariants(actions: list[tuple[Any, ...]]) -> None:
    sm, replica = ServiceStateMachine(), ServiceStateMachine()
    setup = [lease_grant_op(10_000, lease) for lease in LEASES]
    setup.append(lock_namespace_put_op("delayed", lock_delay_ms=1_000))
    for op in setup:
        apply(sm, op)
        apply(replica, op)
    seen: dict[tuple[str, str, str, int], int] = {}
    last_token: dict[tuple[str, str], int] = {}
    last_waiter: dict[tuple[str, str], int] = {}
    for action in actions:
        if action[0] == "snapshot":
            replica = ServiceStateMachine()
            replica.restore(sm.snapshot())
            continue
        op = build(sm, action)
        if op is None:
            continue
        before = sm.snapshot()
        result = apply(sm, op)
        assert apply(replica, op) == result, "replicas agree on every result"
        if not result["ok"]:
            after = msgpack.unpackb(sm.snapshot())
            expected = msgpack.unpackb(before)
            expected["applied_index"] = after["applied_index"]
            assert after == expected, "an error changes no state"
        if action[0] == "lease" and result["ok"]:
            for target in (sm, replica):
                apply(target, lease_grant_op(10_000, action[1]))
        check_invariants(sm, seen, last_token, last_waiter)
        assert sm.snapshot() == replica.snapshot()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(OWNERS), min_size=1, max_size=12))
def test_grants_follow_request_order(owners: list[str]) -> None:
    sm = ServiceStateMachine()
    apply(sm, lease_grant_op(10_000, 1))
    distinct = list(dict.fromkeys(owners))
    for owner in distinct:
        apply(sm, lock_acquire_op("q", owner, 1, wait_ms=60_000))
    granted = []
    for _ in distinct:
        holder = sm.locks.status("default", "q")["holders"][0]
        granted.append(holder["owner"])
        assert apply(sm, lock_release_op("q", holder["owner"]))["ok"]
    assert granted == distinct
    assert not sm.locks.status("default", "q")["held"]
