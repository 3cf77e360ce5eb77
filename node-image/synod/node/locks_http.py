"""HTTP handlers of the locks service and the node-local wake-ups of lock long-polls.

An acquire that queues answers only when the applied state grants it: the handler
sleeps on :class:`LockWaits`, which the node wakes after each applied turn for exactly
the locks that changed (``LockTable.take_changed``) — no client busy loop, and only the
long-polls of a changed lock wake up. One HTTP call waits at most ``poll_ms``
(<= LOCK_POLL_MS_MAX, under the forwarder's timeout); a waiter still queued then gets
``granted: false`` with its ``waiter_id`` and polls ``/v1/locks/wait``. Whether a wait
timed out is decided by the leader and written to the log (``lock_timer_fire``), never
by this node's clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from synod.node.http_state import jsonable
from synod.node.locks_routes import LOCK_POLL_MS_MAX
from synod.node.problems import Problem, problem_from_result_error
from synod.services.locks import (
    DEFAULT_NAMESPACE,
    LockTable,
    lock_acquire_op,
    lock_namespace_delete_op,
    lock_namespace_put_op,
    lock_proclaim_op,
    lock_release_op,
    lock_revoke_op,
)

if TYPE_CHECKING:
    from synod.node.http import Call

__all__ = ["LOCK_OPERATIONS", "LOCK_WAITS_MAX", "LockWaits"]

# Long-polls one node keeps at once; beyond it a poll answers limit-exceeded.
LOCK_WAITS_MAX = 10_000
# Wake-ups one poll handles before it answers "still waiting" (each is a real change of
# its lock, so this only bounds a pathological churn).
_WAKEUPS_PER_POLL_MAX = 10_000

Key = tuple[str, str]
Answer = tuple[dict[str, Any], int | None]
Observe = Callable[[float], None]


class LockWaits:
    """Node-local: long-polls sleeping on a lock until the applied state changes it.

    It also times them for metrics, on this node's monotonic clock: ``observe_wait``
    gets the seconds from an acquire queued here to its grant answered here, and
    ``observe_handover`` the seconds from a release received here to the answer of the
    waiter it made holder (when both are served here, as they are for clients of the
    leader). Neither decides anything: grants and timeouts come from the log.
    """

    def __init__(
        self,
        table: Callable[[], LockTable],
        waits_max: int = LOCK_WAITS_MAX,
        *,
        observe_wait: Observe | None = None,
        observe_handover: Observe | None = None,
    ) -> None:
        """``table`` returns the current applied LockTable (a snapshot restore replaces
        it). Raises nothing."""
        assert waits_max >= 1
        self.table = table
        self.waits_max = waits_max
        self._events: dict[Key, set[asyncio.Event]] = {}
        self._count = 0
        self._observe_wait = observe_wait
        self._observe_handover = observe_handover
        # Start times, each map bounded by waits_max (the oldest entry goes first): a
        # client that never polls again must not grow them.
        self._queued_s: dict[tuple[str, str, int], float] = {}
        self._releasing_s: dict[Key, float] = {}

    def queued(self, key: Key, waiter_id: int) -> None:
        """An acquire of ``key`` was queued as ``waiter_id`` here. Raises nothing."""
        assert waiter_id >= 1
        _remember(self._queued_s, (*key, waiter_id), time.monotonic(), self.waits_max)

    def releasing(self, key: Key) -> None:
        """A release of ``key`` arrived here. Raises nothing."""
        _remember(self._releasing_s, key, time.monotonic(), self.waits_max)

    def granted(self, key: Key, waiter_id: int) -> None:
        """The queued ``waiter_id`` of ``key`` is answered granted. Raises nothing."""
        now_s = time.monotonic()
        queued_s = self._queued_s.pop((*key, waiter_id), None)
        if queued_s is not None and self._observe_wait is not None:
            self._observe_wait(max(0.0, now_s - queued_s))
        released_s = self._releasing_s.pop(key, None)
        # A release older than the wait did not end it (an expiry or a timer did).
        caused = released_s is not None and (queued_s is None or released_s >= queued_s)
        if caused and released_s is not None and self._observe_handover is not None:
            self._observe_handover(max(0.0, now_s - released_s))
        assert len(self._queued_s) <= self.waits_max

    def notify(self) -> None:
        """Wake the polls of every lock changed since the last call (all of them after
        an overflow or a restore). Raises nothing."""
        changed, overflow = self.table().take_changed()
        keys = list(self._events) if overflow else [k for k in changed if k in self._events]
        for key in keys:  # bound: waits_max
            for event in self._events.get(key, ()):
                event.set()
        assert self._count >= 0

    async def wait(self, key: Key, timeout_s: float) -> bool:
        """Sleep until ``key`` changes or ``timeout_s`` passes; True if woken.

        Raises Problem limit-exceeded when waits_max polls are sleeping."""
        if self._count >= self.waits_max:
            raise Problem("limit-exceeded", f"lock_waits_max={self.waits_max} polls wait",
                          limit="lock_waits_max", max=self.waits_max)  # fmt: skip
        event = asyncio.Event()
        self._events.setdefault(key, set()).add(event)
        self._count += 1
        try:
            async with asyncio.timeout(max(0.0, timeout_s)):
                await event.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self._count -= 1
            events = self._events[key]
            events.discard(event)
            if not events:
                del self._events[key]
            assert self._count >= 0


def _remember(starts: dict[Any, float], key: Any, now_s: float, entries_max: int) -> None:
    """``starts[key] = now_s``, dropping the oldest entry beyond ``entries_max``."""
    starts.pop(key, None)
    if len(starts) >= entries_max:
        del starts[next(iter(starts))]
    starts[key] = now_s
    assert len(starts) <= entries_max


def _ok(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` if it succeeded. Raises the Problem of a service error result."""
    if result.get("ok") is not True:
        error = result.get("error")
        if not isinstance(error, dict):
            raise Problem("internal", "node answered neither ok nor a service error")
        raise problem_from_result_error(error)
    return result


def _fields(result: dict[str, Any], *names: str) -> Answer:
    ok = _ok(result)
    return {name: jsonable(ok[name]) for name in names}, ok.get("revision")


def _ns(body: dict[str, Any]) -> str:
    ns = body.get("ns", DEFAULT_NAMESPACE)
    assert isinstance(ns, str)
    return ns


def _poll_s(body: dict[str, Any], wait_ms: int) -> float:
    poll_ms = body.get("poll_ms", LOCK_POLL_MS_MAX) or LOCK_POLL_MS_MAX
    return min(poll_ms, LOCK_POLL_MS_MAX, wait_ms + 1_000) / 1000


async def _await_grant(call: Call, name: str, owner: str, waiter_id: int, poll_s: float) -> Answer:
    """Long-poll a queued waiter on this node's applied state. Raises Problem
    lock-wait-timeout when it left the queue without the lock."""
    waits: LockWaits = call.node.lock_waits
    ns = _ns(call.body)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + poll_s
    for _wakeup in range(_WAKEUPS_PER_POLL_MAX):
        state, token = waits.table().waiter_state(ns, name, owner, waiter_id)
        if state == "granted":
            waits.granted((ns, name), waiter_id)
            return {"granted": True, "token": token, "count": 1, "waiter_id": waiter_id,
                    "lock_revision": waits.table().revision}, None  # fmt: skip
        if state == "gone":
            raise Problem("lock-wait-timeout",
                          f"{owner!r} left the queue of {name!r} without the lock (wait "
                          "bound, lease ended, cancelled or revoked)",
                          lock=name, owner=owner, waiter_id=waiter_id)  # fmt: skip
        remaining = deadline - loop.time()
        if remaining <= 0 or not await waits.wait((ns, name), remaining):
            break
    return {"granted": False, "token": 0, "count": 0, "waiter_id": waiter_id,
            "lock_revision": waits.table().revision}, None  # fmt: skip


async def _acquire(call: Call, lock_type: str | None = None) -> Answer:
    body = call.body
    op = lock_acquire_op(
        body["name"], body["owner"], body["lease"], ns=_ns(body),
        lock_type=lock_type or body.get("type", "mutex"), mode=body.get("mode", "x"),
        permits=body.get("permits", 1), wait_ms=body.get("wait_ms", 0),
        value=body.get("value", "").encode("utf-8"),
    )  # fmt: skip
    result = _ok(await call.node.write(op, call.session))
    fields = {k: result[k] for k in ("granted", "token", "count", "waiter_id", "lock_revision")}
    if result["granted"]:
        return fields, result.get("revision")
    call.node.lock_waits.queued((_ns(body), body["name"]), result["waiter_id"])
    poll_s = _poll_s(body, body.get("wait_ms", 0))
    return await _await_grant(call, body["name"], body["owner"], result["waiter_id"], poll_s)


async def _lock_acquire(call: Call) -> Answer:
    return await _acquire(call)


async def _lock_wait(call: Call) -> Answer:
    body = call.body
    # A poll must see this node's state at least as new as the acquire: a linearizable
    # read barrier (ReadIndex) first.
    _ok(await call.node.read({"kind": "lock_status", "ns": _ns(body), "name": body["name"]},
                             serializable=False))  # fmt: skip
    poll_s = _poll_s(body, LOCK_POLL_MS_MAX)
    return await _await_grant(call, body["name"], body["owner"], body["waiter_id"], poll_s)


async def _lock_release(call: Call) -> Answer:
    body = call.body
    call.node.lock_waits.releasing((_ns(body), body["name"]))
    op = lock_release_op(body["name"], body["owner"], ns=_ns(body), token=body.get("token", 0),
                         release_all=body.get("all", False))  # fmt: skip
    result = await call.node.write(op, call.session)
    return _fields(result, "released", "cancelled", "count", "lock_revision")


async def _lock_renew(call: Call) -> Answer:
    body = call.body
    kept = _ok(await call.node.lease_keepalive(body["lease"]))
    status = _ok(await call.node.read({"kind": "lock_status", "ns": _ns(body),
                                       "name": body["name"]}, serializable=False))  # fmt: skip
    for hold in status["holders"]:
        if hold["owner"] == body["owner"] and hold["lease"] == body["lease"]:
            return {"token": hold["token"], "ttl_ms": kept["ttl_ms"],
                    "count": hold["count"]}, status.get("revision")  # fmt: skip
    raise Problem("lock-not-held", f"{body['owner']!r} does not hold {body['name']!r}",
                  lock=body["name"], owner=body["owner"])  # fmt: skip


_STATUS_FIELDS = ("ns", "name", "held", "type", "permits", "holders", "waiters", "delayed",
                  "changed_revision", "lock_revision")  # fmt: skip


async def _lock_status(call: Call) -> Answer:
    body = call.body
    op = {"kind": "lock_status", "ns": _ns(body), "name": body["name"]}
    result = await call.node.read(op, serializable=body.get("serializable", False))
    fields, _revision = _fields(result, *_STATUS_FIELDS)
    return fields, None


async def _lock_list(call: Call) -> Answer:
    body = call.body
    op = {"kind": "lock_list", "ns": _ns(body), "prefix": body.get("prefix", ""),
          "limit": body.get("limit", 0)}  # fmt: skip
    result = await call.node.read(op, serializable=body.get("serializable", False))
    fields, _revision = _fields(result, "ns", "locks", "more", "count")
    return fields, None


async def _lock_validate(call: Call) -> Answer:
    body = call.body
    op = {"kind": "lock_check", "ns": _ns(body), "name": body["name"], "token": body["token"]}
    fields, _revision = _fields(await call.node.read(op, serializable=False),
                                "valid", "token", "lock_revision")  # fmt: skip
    return fields, None


async def _lock_revoke(call: Call) -> Answer:
    body = call.body
    op = lock_revoke_op(body["name"], ns=_ns(body), owner=body.get("owner", ""))
    return _fields(await call.node.write(op, call.session), "revoked", "lock_revision")


async def _lock_namespace_put(call: Call) -> Answer:
    body = call.body
    op = lock_namespace_put_op(
        body["ns"],
        lock_delay_ms=body.get("lock_delay_ms", 0),
        locks_max=body.get("locks_max", 0),
        waiters_per_lock_max=body.get("waiters_per_lock_max", 0),
    )
    return _fields(await call.node.write(op, call.session), "ns", "created", "lock_revision")


async def _lock_namespace_delete(call: Call) -> Answer:
    op = lock_namespace_delete_op(call.body["ns"])
    return _fields(await call.node.write(op, call.session), "ns", "released", "lock_revision")


async def _election_campaign(call: Call) -> Answer:
    return await _acquire(call, "election")


async def _election_proclaim(call: Call) -> Answer:
    body = call.body
    op = lock_proclaim_op(body["name"], body["owner"], body["token"],
                          body["value"].encode("utf-8"), ns=_ns(body))  # fmt: skip
    return _fields(await call.node.write(op, call.session), "token", "lock_revision")


async def _election_resign(call: Call) -> Answer:
    return await _lock_release(call)


def _leader_of(status: dict[str, Any]) -> dict[str, Any] | None:
    if not status["holders"]:
        return None
    hold = status["holders"][0]
    return {"owner": hold["owner"], "token": hold["token"], "value": jsonable(hold["value"]),
            "lease": hold["lease"]}  # fmt: skip


async def _election_leader(call: Call) -> Answer:
    body = call.body
    ns, name = _ns(body), body["name"]
    status = _ok(await call.node.read({"kind": "lock_status", "ns": ns, "name": name},
                                      serializable=False))  # fmt: skip
    after = body.get("after_revision", 0)
    if after and status["changed_revision"] == after:
        seen = _leader_of(status)
        waits: LockWaits = call.node.lock_waits
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _poll_s(body, LOCK_POLL_MS_MAX)
        for _wakeup in range(_WAKEUPS_PER_POLL_MAX):
            remaining = deadline - loop.time()
            if remaining <= 0 or not await waits.wait((ns, name), remaining):
                break
            status = waits.table().status(ns, name)
            if _leader_of(status) != seen:  # queue changes do not wake an observer
                break
    return {"leader": _leader_of(status), "changed_revision": status["changed_revision"],
            "lock_revision": status["lock_revision"]}, None  # fmt: skip


LOCK_OPERATIONS: dict[str, Callable[[Call], Awaitable[Answer]]] = {
    "lockAcquire": _lock_acquire,
    "lockWait": _lock_wait,
    "lockRelease": _lock_release,
    "lockRenew": _lock_renew,
    "lockStatus": _lock_status,
    "lockList": _lock_list,
    "lockValidate": _lock_validate,
    "lockRevoke": _lock_revoke,
    "lockNamespacePut": _lock_namespace_put,
    "lockNamespaceDelete": _lock_namespace_delete,
    "electionCampaign": _election_campaign,
    "electionProclaim": _election_proclaim,
    "electionResign": _election_resign,
    "electionLeader": _election_leader,
}
