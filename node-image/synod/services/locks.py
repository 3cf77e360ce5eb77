"""Locks: the replicated state machine of fair, fenced locks (the LockService core).

Pure and deterministic (Principle 1 and 2): no clock, no I/O. Everything time-dependent
(a waiter's wait bound, the lock-delay after a holder's lease died) is a *timer* held in
the replicated state only as a duration. The leader's clock (a
:class:`~synod.services.leases.LeaseClock` fed with :meth:`LockTable.timers`) decides
when a timer is due and proposes a ``lock_timer_fire`` command; the timer takes effect
when that command is applied, on every replica at the same log position. A new leader
restarts every timer with its full duration, so a leader change can only make a wait
longer, never shorter.

Model, per namespace (one LockService = one namespace with its settings) and lock name:

* a lock has a ``kind``: ``mutex``, ``rw`` (read-write), ``semaphore`` (``permits``
  holders) or ``election`` (a mutex whose holder carries a proclaimed value);
* holders are owners (a client-chosen string) bound to a lease; re-acquiring by the same
  owner counts up (reentrancy) and keeps the token;
* waiters queue in FIFO order in the replicated state; a release, revocation, lease
  expiry, timer or lock-delay end grants the head(s) of the queue *in the same applied
  command*;
* every grant gets a fencing token: the locks revision of the grant (one counter for the
  whole service that grows with every change), so tokens only grow, per lock and overall;
* read-write locks prefer writers: a new reader queues behind a waiting writer (FIFO),
  and an upgrade (read held, write asked) is refused with ``lock-upgrade-refused``.

Errors never change the state (the op is validated first, then applied).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from synod.codes import status_of
from synod.services.commands import (
    read_bool,
    read_bytes,
    read_int,
    read_list,
    read_str,
    require_fields,
)
from synod.services.errors import (
    InvalidArgument,
    LimitExceeded,
    NotFound,
    ServiceError,
    TooLarge,
)

__all__ = [
    "DEFAULT_NAMESPACE",
    "KINDS",
    "LOCK_OPS",
    "LOCK_READS",
    "MODES",
    "FencingTokenStale",
    "LockLimits",
    "LockNotHeld",
    "LockStats",
    "LockTable",
    "LockUpgradeRefused",
    "LockWaitTimeout",
    "lock_acquire_op",
    "lock_namespace_delete_op",
    "lock_namespace_put_op",
    "lock_proclaim_op",
    "lock_release_op",
    "lock_revoke_op",
    "lock_timer_fire_op",
]

DEFAULT_NAMESPACE = "default"
KINDS = ("mutex", "rw", "semaphore", "election")
MODES = ("x", "s")  # exclusive (write), shared (read; rw locks only)
LOCK_READS = ("lock_status", "lock_list", "lock_check", "lock_waiter")
LOCK_OPS = (
    "lock_acquire",
    "lock_release",
    "lock_revoke",
    "lock_proclaim",
    "lock_timer_fire",
    "lock_namespace_put",
    "lock_namespace_delete",
)


class LockNotHeld(ServiceError):
    """A release, proclaim or renew named an owner that neither holds nor waits."""

    code = "lock-not-held"
    http_status = status_of(code)


class LockWaitTimeout(ServiceError):
    """Not granted within the wait bound (``wait_ms`` 0: not free right now)."""

    code = "lock-wait-timeout"
    http_status = status_of(code)


class FencingTokenStale(ServiceError):
    """A fencing token is not the one of a current holder (it was released, revoked,
    expired, or never granted); details: lock, token, current (0 = not held)."""

    code = "fencing-token-stale"
    http_status = status_of(code)


class LockUpgradeRefused(ServiceError):
    """A read holder asked for the write lock: upgrades deadlock, release first."""

    code = "lock-upgrade-refused"
    http_status = status_of(code)


@dataclass(frozen=True, slots=True)
class LockLimits:
    """Named bounds of the locks service (replicated: every member must agree)."""

    namespaces_max: int = 1_000
    namespace_bytes_max: int = 253
    locks_per_namespace_max: int = 100_000
    lock_name_bytes_max: int = 1_024
    owner_bytes_max: int = 256
    waiters_per_lock_max: int = 10_000
    holders_per_semaphore_max: int = 10_000
    locks_per_lease_max: int = 10_000  # holds and waits of one lease
    wait_ms_max: int = 3_600_000
    lock_delay_ms_max: int = 60_000
    election_value_bytes_max: int = 64 * 1024
    timer_fire_batch_max: int = 1_000
    list_limit_max: int = 10_000
    reentry_count_max: int = 1_000_000
    changed_locks_max: int = 10_000  # node-local wake-up set; beyond it: wake all

    def __post_init__(self) -> None:
        """Check every bound is positive. Raises ValueError naming the misfit."""
        for name in self.__slots__:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        assert self.namespaces_max >= 1


@dataclass(slots=True)
class NamespaceSettings:
    """Settings of one lock namespace (written by the admin API / operator)."""

    lock_delay_ms: int = 0
    locks_max: int = 0  # 0 = LockLimits.locks_per_namespace_max
    waiters_per_lock_max: int = 0  # 0 = LockLimits.waiters_per_lock_max


@dataclass(slots=True)
class Hold:
    """A holder of a lock: one owner, its lease, mode, reentrancy count and token."""

    owner: str
    lease: int
    mode: str
    count: int
    token: int
    value: bytes = b""
    waiter_id: int = 0  # the wait it was granted from (0: granted at once)


@dataclass(slots=True)
class Waiter:
    """A queued acquire; ``waiter_id`` is also the id of its wait-bound timer."""

    waiter_id: int
    owner: str
    lease: int
    mode: str
    wait_ms: int
    value: bytes = b""


@dataclass(slots=True)
class Lock:
    """One named lock: kind, permits, holders (grant order), FIFO waiters, delay."""

    kind: str
    permits: int
    holders: dict[str, Hold] = field(default_factory=dict)
    waiters: list[Waiter] = field(default_factory=list)
    delay_id: int = 0  # timer id of a running lock-delay (0 = none)
    delay_ms: int = 0
    revision: int = 0  # locks revision of the last change


@dataclass(slots=True)
class Namespace:
    """A lock namespace: its settings and live locks."""

    settings: NamespaceSettings
    locks: dict[str, Lock] = field(default_factory=dict)


LockKey = tuple[str, str]


@dataclass(slots=True)
class LockStats:
    """What this replica's table did since the process started, for metrics only.

    Not replicated and not in snapshots: every replica applies the same ops, so each
    counts the same grants and expirations from its own start (like Prometheus
    counters, they restart at zero with the process). A snapshot restore keeps them.
    """

    acquired_at_once: int = 0  # granted in the acquire itself
    acquired_from_queue: int = 0  # hand-overs: a waiter granted by a release, expiry...
    released: int = 0  # holds ended by their owner's release
    expired: int = 0  # holds ended because their lease expired or was revoked
    revoked: int = 0  # holds ended by an admin revocation
    wait_timeouts: int = 0  # waiters dropped by their wait bound
    cancelled: int = 0  # waiters that gave up (left the queue)
    fencing_rejected: int = 0  # stale tokens refused: release, proclaim, checks, fences

    def as_dict(self) -> dict[str, int]:
        """The counters by name. Raises nothing."""
        out = {name: getattr(self, name) for name in self.__slots__}
        assert all(value >= 0 for value in out.values())
        return out


class LockTable:
    """The replicated lock namespaces. ``lease_exists`` asks the lease table.

    ``changed`` collects the (namespace, name) of every lock an applied op touched; the
    node drains it after apply to wake the long-polls waiting on those locks.
    """

    def __init__(
        self, lease_exists: Callable[[int], bool], limits: LockLimits | None = None
    ) -> None:
        """Create the table with the empty ``default`` namespace. Raises nothing."""
        self.limits = limits or LockLimits()
        self.lease_exists = lease_exists
        self.revision = 0
        self._next_timer_id = 1
        self.namespaces: dict[str, Namespace] = {DEFAULT_NAMESPACE: Namespace(NamespaceSettings())}
        self._timers: dict[int, LockKey] = {}
        self._by_lease: dict[int, dict[LockKey, int]] = {}
        self.changed: set[LockKey] = set()
        self.changed_overflow = False
        self.stats = LockStats()
        assert self.revision == 0 and DEFAULT_NAMESPACE in self.namespaces

    # -- apply (each op map in, result fields out; raises ServiceError, state unchanged) --

    def apply(self, op: dict[str, Any]) -> dict[str, Any]:
        """Apply one ``lock_*`` op map. Raises ServiceError (state unchanged)."""
        kind = op["kind"]
        assert kind in LOCK_OPS, kind
        handler = getattr(self, "_op_" + kind.removeprefix("lock_"))
        result: dict[str, Any] = handler(op)
        result["lock_revision"] = self.revision
        assert self.revision >= 0
        return result

    def _op_acquire(self, op: dict[str, Any]) -> dict[str, Any]:
        require_fields(op, ("name", "owner", "lease"), ("ns", "type", "mode", "permits",
                                                         "wait_ms", "value"))  # fmt: skip
        space, ns, name = self._namespace_of(op)
        owner = self._owner(op)
        lease = read_int(op, "lease", minimum=1)
        lock_kind = op.get("type", "mutex")
        if lock_kind not in KINDS:
            raise InvalidArgument(f"field 'type' must be one of {list(KINDS)}")
        mode = read_str(op, "mode", MODES) if "mode" in op else "x"
        if mode == "s" and lock_kind != "rw":
            raise InvalidArgument("shared mode ('s') is only for rw locks")
        permits = read_int(op, "permits", default=1, minimum=1)
        if permits > self.limits.holders_per_semaphore_max:
            raise TooLarge(f"permits {permits} exceed holders_per_semaphore_max",
                           limit="holders_per_semaphore_max",
                           max=self.limits.holders_per_semaphore_max)  # fmt: skip
        if lock_kind != "semaphore" and permits != 1:
            raise InvalidArgument("only a semaphore has more than one permit")
        wait_ms = read_int(op, "wait_ms", default=0, maximum=self.limits.wait_ms_max)
        value = read_bytes(op, "value", default=b"")
        if len(value) > self.limits.election_value_bytes_max:
            raise TooLarge("election value too large", limit="election_value_bytes_max",
                           max=self.limits.election_value_bytes_max)  # fmt: skip
        if not self.lease_exists(lease):
            raise NotFound(f"lease {lease} not found", lease=lease)
        lock = space.locks.get(name)
        if lock is None:
            locks_max = space.settings.locks_max or self.limits.locks_per_namespace_max
            if len(space.locks) >= locks_max:
                raise LimitExceeded(f"namespace {ns!r} has locks_per_namespace_max locks",
                                    limit="locks_per_namespace_max", max=locks_max)  # fmt: skip
        elif lock.kind != lock_kind or lock.permits != permits:
            raise InvalidArgument(
                f"lock {name!r} is a {lock.kind} of {lock.permits} permit(s), "
                f"not a {lock_kind} of {permits}"
            )
        key = (ns, name)
        if lock is not None:
            reentrant = self._reenter(lock, key, owner, lease, mode)
            if reentrant is not None:
                return reentrant
        self._check_lease_room(lease)
        fresh = lock is None
        if lock is None:
            lock = Lock(lock_kind, permits)
        if not lock.waiters and not lock.delay_id and _compatible(lock, mode):
            if fresh:
                space.locks[name] = lock
            hold = self._grant(lock, key, Waiter(0, owner, lease, mode, 0, value))
            return {"granted": True, "token": hold.token, "count": 1, "waiter_id": 0}
        if wait_ms == 0:
            raise LockWaitTimeout(f"lock {name!r} is not free (wait_ms 0)", lock=name)
        waiters_max = space.settings.waiters_per_lock_max or self.limits.waiters_per_lock_max
        if len(lock.waiters) >= waiters_max:
            raise LimitExceeded(f"lock {name!r} has waiters_per_lock_max waiters",
                                limit="waiters_per_lock_max", max=waiters_max)  # fmt: skip
        assert not fresh, "an absent lock is free"
        waiter = Waiter(self._new_timer(key), owner, lease, mode, wait_ms, value)
        lock.waiters.append(waiter)
        self._ref(lease, key, +1)
        self._touch(lock, key)
        assert len(lock.waiters) <= waiters_max
        return {"granted": False, "token": 0, "count": 0, "waiter_id": waiter.waiter_id,
                "position": len(lock.waiters)}  # fmt: skip

    def _reenter(
        self, lock: Lock, key: LockKey, owner: str, lease: int, mode: str
    ) -> dict[str, Any] | None:
        """An owner that already holds or waits: count up, or return its waiter.

        Raises InvalidArgument (other lease), LockUpgradeRefused."""
        hold = lock.holders.get(owner)
        if hold is not None:
            if hold.lease != lease:
                raise InvalidArgument(f"owner {owner!r} holds it under lease {hold.lease}")
            if hold.mode == "s" and mode == "x":
                raise LockUpgradeRefused(
                    f"{owner!r} holds {key[1]!r} for reading: release it before writing",
                    lock=key[1],
                )
            if hold.count >= self.limits.reentry_count_max:
                raise LimitExceeded(f"{owner!r} re-entered {key[1]!r} reentry_count_max times",
                                    limit="reentry_count_max",
                                    max=self.limits.reentry_count_max)  # fmt: skip
            hold.count += 1
            self._touch(lock, key)
            assert hold.count >= 2
            return {"granted": True, "token": hold.token, "count": hold.count, "waiter_id": 0}
        for position, waiter in enumerate(lock.waiters, start=1):  # bound: waiters_per_lock
            if waiter.owner == owner:
                if waiter.lease != lease:
                    raise InvalidArgument(f"owner {owner!r} waits under lease {waiter.lease}")
                # A retried acquire finds its waiter again (idempotent without a session).
                return {"granted": False, "token": 0, "count": 0,
                        "waiter_id": waiter.waiter_id, "position": position}  # fmt: skip
        return None

    def _op_release(self, op: dict[str, Any]) -> dict[str, Any]:
        require_fields(op, ("name", "owner"), ("ns", "token", "all"))
        _space, ns, name = self._namespace_of(op)
        owner = self._owner(op)
        token = read_int(op, "token", default=0)
        release_all = read_bool(op, "all")
        key = (ns, name)
        lock = _space.locks.get(name)
        hold = None if lock is None else lock.holders.get(owner)
        if lock is not None and hold is None:
            for waiter in lock.waiters:  # bound: waiters_per_lock_max
                if waiter.owner == owner:  # giving up a wait: leave the queue atomically
                    self._drop_waiter(lock, key, waiter)
                    self._settle(key)
                    self.stats.cancelled += 1
                    return {"released": False, "cancelled": True, "count": 0}
        if lock is None or hold is None:
            raise LockNotHeld(f"{owner!r} does not hold lock {name!r}", lock=name, owner=owner)
        if token and token != hold.token:
            self.stats.fencing_rejected += 1
            raise FencingTokenStale(f"token {token} is not the holder's token of {name!r}",
                                    lock=name, token=token, current=hold.token)  # fmt: skip
        hold.count = 0 if release_all else hold.count - 1
        if hold.count == 0:
            self._drop_hold(lock, key, hold)
            self.stats.released += 1
        self._touch(lock, key)
        self._settle(key)
        return {"released": hold.count == 0, "cancelled": False, "count": hold.count}

    def _op_revoke(self, op: dict[str, Any]) -> dict[str, Any]:
        require_fields(op, ("name",), ("ns", "owner"))
        space, ns, name = self._namespace_of(op)
        owner = self._owner(op) if "owner" in op else ""
        key = (ns, name)
        lock = space.locks.get(name)
        if lock is None or (owner and owner not in lock.holders):
            raise LockNotHeld(f"lock {name!r} has no such holder", lock=name, owner=owner)
        victims = [h for h in lock.holders.values() if not owner or h.owner == owner]
        for hold in victims:  # bound: holders_per_semaphore_max
            self._drop_hold(lock, key, hold)
        self.stats.revoked += len(victims)
        self._touch(lock, key)
        self._settle(key)
        return {"revoked": [hold.owner for hold in victims]}

    def _op_proclaim(self, op: dict[str, Any]) -> dict[str, Any]:
        require_fields(op, ("name", "owner", "token", "value"), ("ns",))
        space, ns, name = self._namespace_of(op)
        owner = self._owner(op)
        token = read_int(op, "token", minimum=1)
        value = read_bytes(op, "value")
        if len(value) > self.limits.election_value_bytes_max:
            raise TooLarge("election value too large", limit="election_value_bytes_max",
                           max=self.limits.election_value_bytes_max)  # fmt: skip
        lock = space.locks.get(name)
        hold = None if lock is None else lock.holders.get(owner)
        if lock is None or hold is None:
            raise LockNotHeld(f"{owner!r} is not the leader of {name!r}", lock=name, owner=owner)
        if hold.token != token:
            self.stats.fencing_rejected += 1
            raise FencingTokenStale(f"token {token} is not the leader's token",
                                    lock=name, token=token, current=hold.token)  # fmt: skip
        hold.value = value
        self._touch(lock, (ns, name))
        return {"token": token}

    def _op_timer_fire(self, op: dict[str, Any]) -> dict[str, Any]:
        require_fields(op, ("ids",))
        items = read_list(op, "ids", self.limits.timer_fire_batch_max, "timer_fire_batch_max")
        timer_ids = sorted({read_int({"id": item}, "id", minimum=1) for item in items})
        fired: list[int] = []
        for timer_id in timer_ids:  # bound: timer_fire_batch_max
            key = self._timers.get(timer_id)
            if key is None:
                continue  # granted, cancelled or fired since the leader decided
            lock = self.namespaces[key[0]].locks[key[1]]
            if lock.delay_id == timer_id:
                self._timers.pop(timer_id)
                lock.delay_id, lock.delay_ms = 0, 0
            else:
                waiter = next(w for w in lock.waiters if w.waiter_id == timer_id)
                self._drop_waiter(lock, key, waiter)
                self.stats.wait_timeouts += 1
            self._touch(lock, key)
            self._settle(key)
            fired.append(timer_id)
        return {"fired": fired}

    def _op_namespace_put(self, op: dict[str, Any]) -> dict[str, Any]:
        require_fields(op, ("ns",), ("lock_delay_ms", "locks_max", "waiters_per_lock_max"))
        ns = self._name(op, "ns", self.limits.namespace_bytes_max, "namespace_bytes_max")
        settings = NamespaceSettings(
            lock_delay_ms=read_int(op, "lock_delay_ms", 0, maximum=self.limits.lock_delay_ms_max),
            locks_max=read_int(op, "locks_max", 0, maximum=self.limits.locks_per_namespace_max),
            waiters_per_lock_max=read_int(op, "waiters_per_lock_max", 0,
                                          maximum=self.limits.waiters_per_lock_max),
        )  # fmt: skip
        space = self.namespaces.get(ns)
        if space is None:
            if len(self.namespaces) >= self.limits.namespaces_max:
                raise LimitExceeded("namespaces_max namespaces exist", limit="namespaces_max",
                                    max=self.limits.namespaces_max)  # fmt: skip
            self.namespaces[ns] = Namespace(settings)
        else:
            space.settings = settings  # bounds apply to new locks and new waiters
        self.revision += 1
        return {"ns": ns, "created": space is None}

    def _op_namespace_delete(self, op: dict[str, Any]) -> dict[str, Any]:
        require_fields(op, ("ns",))
        ns = self._name(op, "ns", self.limits.namespace_bytes_max, "namespace_bytes_max")
        space = self.namespaces.get(ns)
        if space is None:
            raise NotFound(f"lock namespace {ns!r} not found", ns=ns)
        released = 0
        for name in sorted(space.locks):  # bound: locks_per_namespace_max
            lock = space.locks[name]
            key = (ns, name)
            released += len(lock.holders)
            self.stats.revoked += len(lock.holders)
            for hold in list(lock.holders.values()):
                self._drop_hold(lock, key, hold)
            for waiter in list(lock.waiters):
                self._drop_waiter(lock, key, waiter)
            if lock.delay_id:
                self._timers.pop(lock.delay_id)
            self._note(key)
        del self.namespaces[ns]
        if ns == DEFAULT_NAMESPACE:
            self.namespaces[ns] = Namespace(NamespaceSettings())  # the default always exists
        self.revision += 1
        assert all(k[0] != ns for k in self._timers.values())
        return {"ns": ns, "released": released}

    # -- lease integration ---------------------------------------------------------------

    def on_lease_revoked(self, lease_id: int) -> list[LockKey]:
        """The lease was revoked or expired (applied): its holds are released (after the
        namespace's lock-delay, if any) and its waits dropped. Returns the touched locks.
        Raises nothing."""
        keys = sorted(self._by_lease.get(lease_id, {}))
        for key in keys:  # bound: locks_per_lease_max
            space = self.namespaces[key[0]]
            lock = space.locks[key[1]]
            dead = [h for h in lock.holders.values() if h.lease == lease_id]
            for hold in dead:
                self._drop_hold(lock, key, hold)
            self.stats.expired += len(dead)
            for waiter in [w for w in lock.waiters if w.lease == lease_id]:
                self._drop_waiter(lock, key, waiter)
            delay_ms = space.settings.lock_delay_ms
            if dead and delay_ms and not lock.delay_id:
                lock.delay_id, lock.delay_ms = self._new_timer(key), delay_ms
            self._touch(lock, key)
            self._settle(key)
        assert lease_id not in self._by_lease
        return keys

    # -- reads ---------------------------------------------------------------------------

    def read(self, op: dict[str, Any]) -> dict[str, Any]:
        """Serve a read op map (``lock_status``, ``lock_list``, ``lock_check``,
        ``lock_waiter``) from the applied state. Raises InvalidArgument, NotFound,
        FencingTokenStale, TooLarge."""
        kind = op.get("kind")
        assert kind in LOCK_READS, kind
        ns = op.get("ns", DEFAULT_NAMESPACE)
        if not isinstance(ns, str):
            raise InvalidArgument("field 'ns' must be a string")
        if kind == "lock_list":
            require_fields(op, (), ("ns", "prefix", "limit"))
            prefix = op.get("prefix", "")
            if not isinstance(prefix, str):
                raise InvalidArgument("field 'prefix' must be a string")
            return self.list_locks(ns, prefix, read_int(op, "limit", 0))
        if kind == "lock_status":
            require_fields(op, ("name",), ("ns",))
            _space, ns, name = self._namespace_of(op)
            return self.status(ns, name)
        if kind == "lock_check":
            require_fields(op, ("name", "token"), ("ns",))
            _space, ns, name = self._namespace_of(op)
            token = self.check_token(ns, name, read_int(op, "token", minimum=1))
            return {"valid": True, "token": token, "lock_revision": self.revision}
        require_fields(op, ("name", "owner", "waiter_id"), ("ns",))
        _space, ns, name = self._namespace_of(op)
        state, token = self.waiter_state(ns, name, self._owner(op), read_int(op, "waiter_id"))
        assert state in ("waiting", "granted", "gone")
        return {"state": state, "token": token, "lock_revision": self.revision}

    def status(self, ns: str, name: str) -> dict[str, Any]:
        """The lock's holders and waiters (``held`` False if it does not exist).

        Raises NotFound (namespace)."""
        lock = self._space(ns).locks.get(name)
        body: dict[str, Any] = {"ns": ns, "name": name, "lock_revision": self.revision}
        if lock is None:
            return {**body, "held": False, "type": None, "permits": 0, "holders": [],
                    "waiters": [], "delayed": False, "changed_revision": 0}  # fmt: skip
        holders = [
            {"owner": h.owner, "lease": h.lease, "mode": h.mode, "count": h.count,
             "token": h.token, "value": h.value, "waiter_id": h.waiter_id}
            for h in lock.holders.values()
        ]  # fmt: skip
        waiters = [
            {"owner": w.owner, "lease": w.lease, "mode": w.mode, "waiter_id": w.waiter_id,
             "wait_ms": w.wait_ms}
            for w in lock.waiters
        ]  # fmt: skip
        assert len(holders) <= lock.permits or lock.kind == "rw"
        return {**body, "held": bool(holders), "type": lock.kind, "permits": lock.permits,
                "holders": holders, "waiters": waiters, "delayed": bool(lock.delay_id),
                "changed_revision": lock.revision}  # fmt: skip

    def list_locks(self, ns: str, prefix: str = "", limit: int = 0) -> dict[str, Any]:
        """Names and holder/waiter counts of the namespace's locks with ``prefix``,
        sorted, at most ``limit`` (0 = list_limit_max). Raises NotFound, InvalidArgument."""
        limit = limit or self.limits.list_limit_max
        if not 1 <= limit <= self.limits.list_limit_max:
            raise InvalidArgument(f"limit must be in [1, {self.limits.list_limit_max}]")
        space = self._space(ns)
        names = sorted(n for n in space.locks if n.startswith(prefix))
        out = [
            {"name": n, "type": space.locks[n].kind, "holders": len(space.locks[n].holders),
             "waiters": len(space.locks[n].waiters)}
            for n in names[:limit]
        ]  # fmt: skip
        assert len(out) <= limit
        return {"ns": ns, "locks": out, "more": len(names) > limit, "count": len(names)}

    def check_token(self, ns: str, name: str, token: int) -> int:
        """CheckSequencer: returns ``token`` if a current holder of the lock has it.

        Raises FencingTokenStale (details: current = the newest holder's token or 0),
        NotFound (namespace)."""
        assert token >= 0
        lock = self._space(ns).locks.get(name)
        tokens = [] if lock is None else [h.token for h in lock.holders.values()]
        if token not in tokens:
            self.stats.fencing_rejected += 1
            raise FencingTokenStale(
                f"token {token} does not hold lock {name!r} in {ns!r}",
                lock=name, token=token, current=max(tokens, default=0),
            )  # fmt: skip
        return token

    def check_fences(self, fences: list[Any]) -> None:
        """Check every ``{"ns", "name", "token"}`` fence of a guarded txn.

        Raises InvalidArgument (malformed), FencingTokenStale, NotFound (namespace)."""
        assert isinstance(fences, list)
        for fence in fences:  # bound: the caller's list bound
            if not isinstance(fence, dict):
                raise InvalidArgument("a fence must be a map {ns, name, token}")
            require_fields(fence, ("name", "token"), ("ns",), what="fence")
            space, ns, name = self._namespace_of(fence)
            assert space is self.namespaces[ns]
            self.check_token(ns, name, read_int(fence, "token", minimum=1))

    def waiter_state(self, ns: str, name: str, owner: str, waiter_id: int) -> tuple[str, int]:
        """What became of a waiter: ``("waiting", 0)``, ``("granted", token)`` (the owner
        holds the lock) or ``("gone", 0)`` (timed out, cancelled, lease lost, revoked).
        Raises nothing."""
        space = self.namespaces.get(ns)
        lock = None if space is None else space.locks.get(name)
        if lock is None:
            return ("gone", 0)
        if any(w.waiter_id == waiter_id for w in lock.waiters):
            return ("waiting", 0)
        hold = lock.holders.get(owner)
        if hold is not None and hold.waiter_id == waiter_id:
            return ("granted", hold.token)
        return ("gone", 0)

    def timers(self) -> dict[int, int]:
        """``{timer_id: duration_ms}`` of every pending wait bound and lock-delay, for the
        leader's clock. Raises nothing."""
        out: dict[int, int] = {}
        for timer_id, (ns, name) in sorted(self._timers.items()):  # bound: timers
            lock = self.namespaces[ns].locks[name]
            if lock.delay_id == timer_id:
                out[timer_id] = lock.delay_ms
            else:
                out[timer_id] = next(w.wait_ms for w in lock.waiters if w.waiter_id == timer_id)
        assert len(out) == len(self._timers)
        return out

    def counts(self) -> dict[str, int]:
        """Totals for metrics: locks, holders, waiters. Raises nothing."""
        locks = holders = waiters = 0
        for space in self.namespaces.values():  # bound: namespaces_max
            for lock in space.locks.values():
                locks += 1
                holders += len(lock.holders)
                waiters += len(lock.waiters)
        assert holders >= 0 and waiters >= 0
        return {"locks": locks, "holders": holders, "waiters": waiters}

    # -- internals -----------------------------------------------------------------------

    def _namespace_of(self, op: dict[str, Any]) -> tuple[Namespace, str, str]:
        ns = op.get("ns", DEFAULT_NAMESPACE)
        if not isinstance(ns, str):
            raise InvalidArgument("field 'ns' must be a string")
        name = self._name(op, "name", self.limits.lock_name_bytes_max, "lock_name_bytes_max")
        return self._space(ns), ns, name

    def _space(self, ns: str) -> Namespace:
        space = self.namespaces.get(ns)
        if space is None:
            raise NotFound(f"lock namespace {ns!r} not found", ns=ns)
        return space

    def _owner(self, op: dict[str, Any]) -> str:
        return self._name(op, "owner", self.limits.owner_bytes_max, "owner_bytes_max")

    @staticmethod
    def _name(op: dict[str, Any], field_name: str, bytes_max: int, limit: str) -> str:
        value = op.get(field_name)
        if not isinstance(value, str) or not value:
            raise InvalidArgument(f"field {field_name!r} must be a non-empty string")
        if len(value.encode()) > bytes_max:
            raise TooLarge(f"{field_name} exceeds {limit}={bytes_max} bytes",
                           limit=limit, max=bytes_max)  # fmt: skip
        return value

    def _check_lease_room(self, lease: int) -> None:
        used = len(self._by_lease.get(lease, {}))
        if used >= self.limits.locks_per_lease_max:
            raise LimitExceeded(f"lease {lease} holds or waits for locks_per_lease_max locks",
                                limit="locks_per_lease_max",
                                max=self.limits.locks_per_lease_max)  # fmt: skip

    def _new_timer(self, key: LockKey) -> int:
        timer_id = self._next_timer_id
        self._next_timer_id += 1
        self._timers[timer_id] = key
        assert timer_id >= 1
        return timer_id

    def _grant(self, lock: Lock, key: LockKey, want: Waiter) -> Hold:
        """Make ``want.owner`` a holder with a fresh token (the new locks revision)."""
        assert want.owner not in lock.holders and _compatible(lock, want.mode)
        self.revision += 1
        hold = Hold(want.owner, want.lease, want.mode, 1, self.revision, want.value,
                    want.waiter_id)  # fmt: skip
        lock.holders[want.owner] = hold
        lock.revision = self.revision
        if want.waiter_id:
            self.stats.acquired_from_queue += 1
        else:
            self.stats.acquired_at_once += 1
        self._ref(want.lease, key, +1)
        self._note(key)
        return hold

    def _note(self, key: LockKey) -> None:
        """Remember a changed lock for the node's wake-ups (bounded: overflow = all)."""
        if len(self.changed) >= self.limits.changed_locks_max:
            self.changed.clear()
            self.changed_overflow = True
        self.changed.add(key)
        assert len(self.changed) <= self.limits.changed_locks_max

    def take_changed(self) -> tuple[set[LockKey], bool]:
        """Drain the locks changed since the last call and whether more changed than
        changed_locks_max (then wake every waiter). Raises nothing."""
        changed, overflow = self.changed, self.changed_overflow
        self.changed, self.changed_overflow = set(), False
        assert not self.changed
        return changed, overflow

    def _drop_hold(self, lock: Lock, key: LockKey, hold: Hold) -> None:
        assert lock.holders[hold.owner] is hold
        del lock.holders[hold.owner]
        self._ref(hold.lease, key, -1)

    def _drop_waiter(self, lock: Lock, key: LockKey, waiter: Waiter) -> None:
        lock.waiters.remove(waiter)
        del self._timers[waiter.waiter_id]
        self._ref(waiter.lease, key, -1)
        assert waiter.waiter_id not in self._timers

    def _ref(self, lease: int, key: LockKey, delta: int) -> None:
        refs = self._by_lease.setdefault(lease, {})
        refs[key] = refs.get(key, 0) + delta
        assert refs[key] >= 0
        if refs[key] == 0:
            del refs[key]
        if not refs:
            del self._by_lease[lease]

    def _touch(self, lock: Lock, key: LockKey) -> None:
        self.revision += 1
        lock.revision = self.revision
        self._note(key)

    def _settle(self, key: LockKey) -> None:
        """Grant the queue's head(s) the lock can take now (FIFO: stop at the first that
        must wait), then forget the lock if nothing is left of it."""
        space = self.namespaces[key[0]]
        lock = space.locks[key[1]]
        for _step in range(len(lock.waiters)):  # bound: waiters_per_lock_max
            if lock.delay_id or not lock.waiters or not _compatible(lock, lock.waiters[0].mode):
                break
            head = lock.waiters[0]
            self._drop_waiter(lock, key, head)
            if head.owner in lock.holders:  # cannot happen: an owner holds or waits
                raise AssertionError(f"{head.owner!r} waits for a lock it holds")
            self._grant(lock, key, head)
        if not lock.holders and not lock.waiters and not lock.delay_id:
            del space.locks[key[1]]

    # -- snapshot ------------------------------------------------------------------------

    def to_snapshot(self) -> dict[str, Any]:
        """Deterministic msgpack-able form. Raises nothing."""
        spaces = []
        for ns in sorted(self.namespaces):  # bound: namespaces_max
            space = self.namespaces[ns]
            s = space.settings
            locks = []
            for name in sorted(space.locks):
                lock = space.locks[name]
                holders = [[h.owner, h.lease, h.mode, h.count, h.token, h.value, h.waiter_id]
                           for h in lock.holders.values()]  # fmt: skip
                waiters = [[w.waiter_id, w.owner, w.lease, w.mode, w.wait_ms, w.value]
                           for w in lock.waiters]  # fmt: skip
                locks.append([name, lock.kind, lock.permits, holders, waiters, lock.delay_id,
                              lock.delay_ms, lock.revision])  # fmt: skip
            spaces.append([ns, [s.lock_delay_ms, s.locks_max, s.waiters_per_lock_max], locks])
        assert len(spaces) <= self.limits.namespaces_max
        return {"revision": self.revision, "next_timer_id": self._next_timer_id,
                "namespaces": spaces}  # fmt: skip

    def restore(self, data: dict[str, Any]) -> None:
        """Replace the content with a :meth:`to_snapshot` form.

        Raises InvalidArgument if malformed (table unchanged)."""
        fresh = LockTable(self.lease_exists, self.limits)
        try:
            fresh.revision = int(data["revision"])
            fresh._next_timer_id = int(data["next_timer_id"])
            fresh.namespaces = {}
            for ns, (delay_ms, locks_max, waiters_max), locks in data["namespaces"]:
                space = Namespace(NamespaceSettings(int(delay_ms), int(locks_max),
                                                    int(waiters_max)))  # fmt: skip
                fresh.namespaces[str(ns)] = space
                for name, kind, permits, holders, waiters, delay_id, delay, rev in locks:
                    lock = Lock(str(kind), int(permits), delay_id=int(delay_id),
                                delay_ms=int(delay), revision=int(rev))  # fmt: skip
                    space.locks[str(name)] = lock
                    key = (str(ns), str(name))
                    for owner, lease, mode, count, token, value, from_id in holders:
                        lock.holders[str(owner)] = Hold(str(owner), int(lease), str(mode),
                                                        int(count), int(token), bytes(value),
                                                        int(from_id))  # fmt: skip
                        fresh._ref(int(lease), key, +1)
                    for waiter_id, owner, lease, mode, wait_ms, value in waiters:
                        lock.waiters.append(
                            Waiter(
                                int(waiter_id),
                                str(owner),
                                int(lease),
                                str(mode),
                                int(wait_ms),
                                bytes(value),
                            )
                        )
                        fresh._timers[int(waiter_id)] = key
                        fresh._ref(int(lease), key, +1)
                    if lock.delay_id:
                        fresh._timers[lock.delay_id] = key
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgument(f"malformed lock snapshot: {type(exc).__name__}") from None
        if len(fresh.namespaces) > self.limits.namespaces_max:
            raise InvalidArgument("lock snapshot exceeds namespaces_max")
        self.revision, self._next_timer_id = fresh.revision, fresh._next_timer_id
        self.namespaces, self._timers, self._by_lease = (
            fresh.namespaces, fresh._timers, fresh._by_lease)  # fmt: skip
        self.changed, self.changed_overflow = set(), True  # wake every long-poll


def _compatible(lock: Lock, mode: str) -> bool:
    """True if a new holder in ``mode`` fits next to the current holders."""
    holders = lock.holders.values()
    if lock.kind == "semaphore":
        return len(lock.holders) < lock.permits
    if lock.kind == "rw" and mode == "s":
        return all(h.mode == "s" for h in holders)
    return not lock.holders


# -- op builders (the reference for the lock op formats) --------------------------------


def lock_acquire_op(
    name: str,
    owner: str,
    lease: int,
    *,
    ns: str = DEFAULT_NAMESPACE,
    lock_type: str = "mutex",
    mode: str = "x",
    permits: int = 1,
    wait_ms: int = 0,
    value: bytes = b"",
) -> dict[str, Any]:
    """``lock_acquire``: hold ``name`` (or queue for at most ``wait_ms``). Raises nothing."""
    assert lock_type in KINDS and mode in MODES and lease > 0
    op: dict[str, Any] = {"kind": "lock_acquire", "ns": ns, "name": name, "owner": owner,
                          "lease": lease, "type": lock_type, "mode": mode,
                          "permits": permits, "wait_ms": wait_ms}  # fmt: skip
    if value:
        op["value"] = value
    return op


def lock_release_op(
    name: str, owner: str, *, ns: str = DEFAULT_NAMESPACE, token: int = 0, release_all: bool = False
) -> dict[str, Any]:
    """``lock_release``: count down (or drop with ``release_all``) a hold, or leave the
    queue. ``token`` (0 = unchecked) must be the hold's token. Raises nothing."""
    assert token >= 0
    return {"kind": "lock_release", "ns": ns, "name": name, "owner": owner, "token": token,
            "all": release_all}  # fmt: skip


def lock_revoke_op(name: str, *, ns: str = DEFAULT_NAMESPACE, owner: str = "") -> dict[str, Any]:
    """``lock_revoke`` (admin): drop every holder (or ``owner``'s hold). Raises nothing."""
    op: dict[str, Any] = {"kind": "lock_revoke", "ns": ns, "name": name}
    if owner:
        op["owner"] = owner
    return op


def lock_proclaim_op(
    name: str, owner: str, token: int, value: bytes, *, ns: str = DEFAULT_NAMESPACE
) -> dict[str, Any]:
    """``lock_proclaim``: the leader (holder with ``token``) sets its value. Raises nothing."""
    assert token > 0
    return {"kind": "lock_proclaim", "ns": ns, "name": name, "owner": owner, "token": token,
            "value": value}  # fmt: skip


def lock_timer_fire_op(timer_ids: list[int]) -> dict[str, Any]:
    """``lock_timer_fire``: proposed by the leader's lock clock. Raises nothing."""
    assert all(timer_id > 0 for timer_id in timer_ids)
    return {"kind": "lock_timer_fire", "ids": sorted(timer_ids)}


def lock_namespace_put_op(
    ns: str, *, lock_delay_ms: int = 0, locks_max: int = 0, waiters_per_lock_max: int = 0
) -> dict[str, Any]:
    """``lock_namespace_put`` (admin, idempotent): create or update a namespace.

    Raises nothing."""
    assert lock_delay_ms >= 0
    return {"kind": "lock_namespace_put", "ns": ns, "lock_delay_ms": lock_delay_ms,
            "locks_max": locks_max, "waiters_per_lock_max": waiters_per_lock_max}  # fmt: skip


def lock_namespace_delete_op(ns: str) -> dict[str, Any]:
    """``lock_namespace_delete`` (admin): remove a namespace, releasing its holders.

    Raises nothing."""
    return {"kind": "lock_namespace_delete", "ns": ns}
