"""Fenced locks, read-write locks, semaphores and leader election for the async client.

```python
async with client.lock("orders/42", ttl_ms=10_000) as lock:
    await write_somewhere(fence=lock.token)      # resources check the token
```

Holds are bound to a **session lease** (etcd's ``concurrency.Session``): one lease per
client and TTL, granted lazily by the first lock with that ``ttl_ms``, kept alive by one
keep-alive loop shared by all locks of the client, revoked when the client closes. An
acquire+release cycle is then 2 replicated writes (acquire, release) instead of 4
(grant, acquire, release, revoke). ``own_lease=True`` gives a lock a dedicated lease
(granted on acquire, revoked on release), as before. The session keeps a **conservative
local deadline** ``safe_until`` (monotonic seconds): the send time of the last
successful grant or renewal + TTL * (1 - ``drift``); measuring from the *send* time
charges the whole round trip to the holder. Each held lock's **watchdog** confirms the
hold every ttl/3 (a linearizable status read, no write). When the session lease is gone
(every lock of the session is lost), a confirmation says the lock was revoked, or no
renewal succeeded before ``safe_until``, the lock is **lost**: ``on_lost`` is called and
(``cancel_on_lost``, the default) the task inside the block is cancelled; leaving the
block then raises :class:`LockLost`. Past ``safe_until`` nothing the holder does is
protected except through its fencing token — which is why resources should check it
(``validate``, ``fenced_txn``, or the SQL guard of docs/locks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from synod.client.errors import (
    FencingTokenStale,
    LimitExceeded,
    LockWaitTimeout,
    NotFound,
    SynodError,
)
from synod.client.txn import Txn
from synod.client.types import TxnResult

if TYPE_CHECKING:
    from synod.client.aio import AsyncClient

_TRACER = trace.get_tracer("synod.client")

__all__ = [
    "DRIFT_DEFAULT",
    "Election",
    "Leader",
    "Lock",
    "LockLost",
    "LockSession",
    "RWLock",
    "SyncLock",
    "default_owner",
    "sql_fence_guard",
]

# Assumed worst relative rate difference between this clock and the leader's.
DRIFT_DEFAULT = 0.05
# Renewals per TTL: one lost renewal still leaves two chances.
RENEWALS_PER_TTL = 3
# Polls of one queued acquire (each long-polls up to the server's bound, 5 s).
POLLS_PER_ACQUIRE_MAX = 100_000
# A long-poll waits at most this share of the client's attempt timeout, and at most the
# server's bound (synod.node.locks_routes.LOCK_POLL_MS_MAX).
POLL_SHARE_OF_TIMEOUT = 0.6
POLL_MS_MAX = 5_000
# Holds and waits sharing one session lease (the server's locks_per_lease_max).
LOCKS_PER_SESSION_MAX = 10_000
# Session leases one client keeps at once (one per distinct ttl_ms).
SESSIONS_PER_CLIENT_MAX = 64
LockLostCallback = Callable[["Lock", SynodError], None]


class LockLost(SynodError):
    """The lock was lost while held (renewal refused, lease gone, or ``safe_until``
    passed without a successful renewal). Raised when leaving the guarded block."""

    code = "lock-lost"
    status = 409


def poll_ms(client: AsyncClient) -> int:
    """How long one long-poll may wait on the server: well inside the client's attempt
    timeout, at most the server's bound (5 s). Raises nothing."""
    return max(1, min(POLL_MS_MAX, int(client.timeout_s * 1000 * POLL_SHARE_OF_TIMEOUT)))


def default_owner() -> str:
    """A unique owner identity: host, pid and random bits. Raises nothing."""
    return f"{socket.gethostname()[:64]}-{os.getpid()}-{secrets.token_hex(4)}"


def sql_fence_guard(column: str = "fence_token") -> str:
    """The SQL condition that refuses a stale holder's write: use it in the WHERE
    clause of an UPDATE that also sets ``column`` to the token, e.g.
    ``UPDATE orders SET state = ?, fence_token = ? WHERE id = ? AND fence_token <= ?``.
    A write with an older token than the last one that touched the row matches no row.
    Raises ValueError for a column name that is not a plain identifier."""
    if not column.replace("_", "").isalnum():
        raise ValueError(f"not a plain SQL identifier: {column!r}")
    return f"{column} <= ?"


class LockSession:
    """A lease shared by locks (etcd's ``concurrency.Session``): granted lazily by the
    first acquire, kept alive by one keep-alive loop, revoked by `close`. When the lease
    ends (or no renewal succeeds before ``safe_until``) every lock held under it is lost.

    ``client.lock(...)`` uses the client's session for its ``ttl_ms`` (see
    ``AsyncClient.lock_session``); ``own_lease=True`` gives a lock a private one."""

    def __init__(self, client: AsyncClient, ttl_ms: int, drift: float = DRIFT_DEFAULT) -> None:
        """Prepare; nothing is sent before `ensure`. Raises ValueError on bad bounds."""
        if ttl_ms <= 0 or not 0 <= drift < 1:
            raise ValueError("ttl_ms > 0 and 0 <= drift < 1")
        self.client = client
        self.ttl_ms = ttl_ms
        self.drift = drift
        self.lease_id = 0
        self.safe_until = 0.0  # monotonic seconds
        self.renewals = 0
        self.lost: SynodError | None = None
        self._locks: set[Lock] = set()
        self._keeper: asyncio.Task[None] | None = None
        self._granting = asyncio.Lock()

    async def ensure(self) -> int:
        """The lease id, granting the lease (and starting its keep-alive loop) first if
        there is none yet. Raises LockLost (the session ended), SynodError (grant)."""
        async with self._granting:
            if self.lost is not None:
                raise LockLost(f"lock session lease {self.lease_id} ended: {self.lost}",
                               {"lease": self.lease_id})  # fmt: skip
            if self.lease_id:
                return self.lease_id
            sent_s = time.monotonic()
            grant = await self.client.lease_grant(self.ttl_ms)
            assert grant.id > 0
            self.lease_id = grant.id
            self._safe_from(sent_s, grant.ttl_ms)
            self._keeper = asyncio.get_running_loop().create_task(self._keep())
            return self.lease_id

    def attach(self, lock: Lock) -> None:
        """Count ``lock`` (holding or queued) as using this lease. Raises
        LimitExceeded beyond LOCKS_PER_SESSION_MAX."""
        if len(self._locks) >= LOCKS_PER_SESSION_MAX:
            raise LimitExceeded(f"{LOCKS_PER_SESSION_MAX} locks use lease {self.lease_id}",
                                {"limit": "locks_per_session_max",
                                 "max": LOCKS_PER_SESSION_MAX})  # fmt: skip
        self._locks.add(lock)
        assert len(self._locks) <= LOCKS_PER_SESSION_MAX

    def detach(self, lock: Lock) -> None:
        """``lock`` no longer uses this lease. Raises nothing."""
        self._locks.discard(lock)
        assert lock not in self._locks

    def _safe_from(self, sent_s: float, ttl_ms: int) -> None:
        self.safe_until = max(self.safe_until, sent_s + ttl_ms / 1000 * (1 - self.drift))

    async def _keep(self) -> None:
        """Renew every ttl/3; the session is lost when the lease is gone or
        ``safe_until`` passes without a successful renewal."""
        interval_s = self.ttl_ms / 1000 / RENEWALS_PER_TTL
        for _renewal in range(2**62):  # ends when lost or cancelled by close
            await asyncio.sleep(max(0.0, min(interval_s, self.safe_until - time.monotonic())))
            if time.monotonic() >= self.safe_until:
                self._lose(LockLost(f"lease {self.lease_id}: safe_until passed without "
                                    "renewal", {"lease": self.lease_id}))  # fmt: skip
                # The lease may still live on the cluster: end it, so the holds that were
                # declared lost here do not outlive the session there.
                with contextlib.suppress(SynodError):
                    await self.client.lease_revoke(self.lease_id)
                return
            sent_s = time.monotonic()
            try:
                ttl_ms = await self.client.lease_keepalive(self.lease_id)
            except NotFound as exc:
                self._lose(LockLost(f"lease {self.lease_id} ended: {exc.detail}", exc.problem))
                return
            except SynodError:
                continue  # safe_until decides
            self.renewals += 1
            self._safe_from(sent_s, ttl_ms or self.ttl_ms)

    def _lose(self, error: SynodError) -> None:
        """Every lock held under this lease is lost; queued ones give up at their next
        poll. The client's next lock gets a new session. Raises nothing."""
        if self.lost is not None:
            return
        self.lost = error
        self.client._drop_lock_session(self)
        for lock in list(self._locks):  # bound: LOCKS_PER_SESSION_MAX
            if lock.token:
                lock._lose(LockLost(f"lock {lock.name!r} lost: {error}", {"lock": lock.name}))
        assert self.lost is not None

    async def stop(self) -> None:
        """Stop renewing (the lease then expires by its TTL). Raises nothing."""
        if self._keeper is not None:
            await _cancel(self._keeper)
            self._keeper = None

    async def close(self) -> None:
        """Stop renewing and revoke the lease (its holds are released, its waits
        leave their queues); the session cannot be used again. Raises nothing."""
        await self.stop()
        lease_id, ended = self.lease_id, self.lost is not None
        if self.lost is None:
            self.lost = LockLost(f"lock session lease {lease_id} closed", {"lease": lease_id})
        self.client._drop_lock_session(self)
        if lease_id and not ended:
            with contextlib.suppress(SynodError):
                await self.client.lease_revoke(lease_id)
        assert self.lost is not None


class Lock:
    """One acquisition of a lock (mutex, rw mode, semaphore permit or election)."""

    def __init__(
        self,
        client: AsyncClient,
        name: str,
        *,
        ttl_ms: int = 10_000,
        wait_ms: int = 60_000,
        ns: str = "default",
        owner: str | None = None,
        lock_type: str = "mutex",
        mode: str = "x",
        permits: int = 1,
        value: str = "",
        drift: float = DRIFT_DEFAULT,
        on_lost: LockLostCallback | None = None,
        cancel_on_lost: bool = True,
        own_lease: bool = False,
    ) -> None:
        """Prepare; nothing is sent before `acquire` (or ``async with``). ``ttl_ms`` is
        the TTL of the session lease (shared by the client's locks of that TTL) or, with
        ``own_lease``, of a lease granted for this lock alone.

        Raises ValueError on bad bounds."""
        if ttl_ms <= 0 or wait_ms < 0 or not 0 <= drift < 1:
            raise ValueError("ttl_ms > 0, wait_ms >= 0 and 0 <= drift < 1")
        self.client = client
        self.name = name
        self.ns = ns
        self.ttl_ms = ttl_ms
        self.wait_ms = wait_ms
        self.owner = owner or default_owner()
        self.lock_type, self.mode, self.permits, self.value = lock_type, mode, permits, value
        self.drift = drift
        self.on_lost = on_lost
        self.cancel_on_lost = cancel_on_lost
        self.own_lease = own_lease
        self.session: LockSession | None = None
        self.token = 0
        self.lease_id = 0
        self.lost: SynodError | None = None
        self.confirmations = 0
        self._renewals_base = 0
        self._watchdog: asyncio.Task[None] | None = None
        self._guarded: asyncio.Task[Any] | None = None
        self._cancelled_by_us = False

    # -- state -------------------------------------------------------------------------

    @property
    def safe_until(self) -> float:
        """Monotonic seconds until which the lease is known alive: the session's
        conservative deadline (0 before acquire). Raises nothing."""
        return self.session.safe_until if self.session is not None else 0.0

    @property
    def renewals(self) -> int:
        """Successful renewals of the lease since this acquire began. Raises nothing."""
        return self.session.renewals - self._renewals_base if self.session is not None else 0

    @property
    def held(self) -> bool:
        """True while granted, not lost and before ``safe_until``. Raises nothing."""
        return bool(self.token) and self.lost is None and time.monotonic() < self.safe_until

    def check(self) -> None:
        """Raise LockLost unless `held`."""
        if not self.held:
            raise self.lost if isinstance(self.lost, LockLost) else LockLost(
                f"lock {self.name!r} is not held safely", {"lock": self.name}
            )  # fmt: skip

    def _body(self, **extra: Any) -> dict[str, Any]:
        return {"ns": self.ns, "name": self.name, "owner": self.owner, **extra}

    # -- acquire / release -------------------------------------------------------------

    async def acquire(self) -> Lock:
        """Queue for the lock (FIFO) under the session lease (granted first if this is
        the session's first lock, or with ``own_lease``) and wait at most ``wait_ms``;
        start the watchdog. A granted acquire is one replicated write. Raises
        LockWaitTimeout, LockUpgradeRefused, LockLost (the session lease ended while
        queued), SynodError (the queue is left on failure)."""
        # One CLIENT span for the whole acquire, its queueing and polls included; the
        # requests inside it carry its trace context to the nodes.
        with _TRACER.start_as_current_span(
            "synod.lock.acquire", kind=trace.SpanKind.CLIENT,
            attributes={"synod.lock.name": self.name, "synod.lock.ns": self.ns,
                        "synod.lock.type": self.lock_type},
        ) as span:  # fmt: skip
            await self._acquire()
            span.set_attribute("synod.lock.token", self.token)
        return self

    async def _acquire(self) -> None:
        if self.own_lease:
            self.session = LockSession(self.client, self.ttl_ms, self.drift)
        else:
            self.session = self.client.lock_session(self.ttl_ms, self.drift)
        session = self.session
        self.lost = None
        self.lease_id = await session.ensure()
        self._renewals_base = session.renewals
        session.attach(self)
        try:
            doc = await self._acquire_call()
            for _poll in range(POLLS_PER_ACQUIRE_MAX):
                if doc.get("granted"):
                    break
                if session.lost is not None:
                    raise LockLost(f"{self.name!r}: lease ended while queued: {session.lost}",
                                   {"lock": self.name})  # fmt: skip
                doc = await self.client._call("POST", "/v1/locks/wait", self._body(
                    waiter_id=int(doc["waiter_id"]), poll_ms=poll_ms(self.client)))  # fmt: skip
            else:
                raise LockWaitTimeout(f"{self.name!r}: more than {POLLS_PER_ACQUIRE_MAX} polls")
            if session.lost is not None:  # granted, but the lease ended meanwhile
                raise LockLost(f"{self.name!r}: lease ended while acquiring: {session.lost}",
                               {"lock": self.name})  # fmt: skip
        except LockWaitTimeout:
            await self._give_up(queued=False)  # the server already dropped the wait
            raise
        except BaseException:
            await self._give_up(queued=True)
            raise
        self.token = int(doc["token"])
        self._watchdog = asyncio.get_running_loop().create_task(self._watch())
        self.client._locks.add(self)

    async def _acquire_call(self) -> dict[str, Any]:
        path, body = "/v1/locks/acquire", self._body(lease=self.lease_id, wait_ms=self.wait_ms,
                                                     poll_ms=poll_ms(self.client))  # fmt: skip
        if self.lock_type == "election":
            path = "/v1/election/campaign"
            if self.value:
                body["value"] = self.value
        else:
            body.update(type=self.lock_type, mode=self.mode)
            if self.lock_type == "semaphore":
                body["permits"] = self.permits
        return await self.client._call("POST", path, body, write=True)

    async def _give_up(self, *, queued: bool) -> None:
        """Leave the queue if we may be in it; drop a private lease. Raises nothing."""
        if queued:
            with contextlib.suppress(SynodError):
                await self.client._call("POST", "/v1/locks/release", self._body(), write=True)
        await self._detach()

    async def _detach(self) -> None:
        if self.session is not None:
            self.session.detach(self)
            if self.own_lease:
                await self.session.close()

    async def stop_watchdog(self) -> None:
        """Stop renewing (the client is closing). Raises nothing."""
        if self._watchdog is not None:
            await _cancel(self._watchdog)
            self._watchdog = None
        if self.own_lease and self.session is not None:
            await self.session.stop()

    async def release(self) -> None:
        """Stop the watchdog and release the hold (checked by token): one replicated
        write; a private lease (``own_lease``) is revoked too.

        Raises nothing: a hold that cannot be released now is freed when its lease ends
        (for a session lease: when the client closes or stops renewing)."""
        await self.stop_watchdog()
        # A lock lost here (revoked, safe_until passed) while its lease lives on: the
        # token-checked release frees a hold that may remain (a stale token changes
        # nothing). Under an ended lease there is nothing left to release.
        session_alive = self.session is not None and self.session.lost is None
        if self.token and (self.lost is None or (session_alive and not self.own_lease)):
            with contextlib.suppress(SynodError):
                await self.client._call(
                    "POST", "/v1/locks/release", self._body(token=self.token, all=True), write=True
                )
        await self._detach()
        self.client._locks.discard(self)
        self.token = 0

    async def __aenter__(self) -> Lock:
        """Acquire; the current task is the guarded one. Raises as `acquire`."""
        self._guarded = asyncio.current_task()
        return await self.acquire()

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """Release. Raises LockLost if the lock was lost inside the block."""
        lost = self.lost
        await self.release()
        if lost is None:
            return
        if self._cancelled_by_us and self._guarded is not None:
            self._guarded.uncancel()
        if exc_type is None or exc_type is asyncio.CancelledError:
            raise lost if isinstance(lost, LockLost) else LockLost(str(lost), lost.problem)

    # -- the watchdog ------------------------------------------------------------------

    async def _watch(self) -> None:
        """Confirm the hold every ttl/3 (a status read; the session renews the lease);
        declare the lock lost when it is gone, granted again, or past safe_until."""
        interval_s = self.ttl_ms / 1000 / RENEWALS_PER_TTL
        for _check in range(2**62):  # ends when lost or cancelled by release
            await asyncio.sleep(max(0.0, min(interval_s, self.safe_until - time.monotonic())))
            if self.lost is not None:
                return  # the session declared it
            if time.monotonic() >= self.safe_until:
                self._lose(LockLost(f"lock {self.name!r}: safe_until passed without renewal",
                                    {"lock": self.name}))  # fmt: skip
                return
            try:
                status = await self.client.lock_status(self.name, ns=self.ns)
            except NotFound as exc:
                self._lose(LockLost(f"lock {self.name!r} lost: {exc.detail}", exc.problem))
                return
            except SynodError:
                continue  # safe_until decides
            mine = [hold for hold in status.get("holders", [])
                    if hold.get("owner") == self.owner
                    and int(hold.get("lease", 0)) == self.lease_id]  # fmt: skip
            if not mine:
                self._lose(LockLost(f"lock {self.name!r} lost: {self.owner!r} does not hold "
                                    "it any more", {"lock": self.name}))  # fmt: skip
                return
            if int(mine[0].get("token", 0)) != self.token:
                self._lose(LockLost(f"lock {self.name!r} was granted again", mine[0]))
                return
            self.confirmations += 1

    def _lose(self, error: SynodError) -> None:
        if self.lost is not None:
            return
        self.lost = error
        if self.on_lost is not None:
            with contextlib.suppress(Exception):
                self.on_lost(self, error)
        if self.cancel_on_lost and self._guarded is not None and not self._guarded.done():
            self._cancelled_by_us = True
            self._guarded.cancel()

    # -- resource side -----------------------------------------------------------------

    async def fenced_txn(self, txn: Txn) -> TxnResult:
        """Run ``txn`` only while this hold's token is current (checked in the same
        applied command). Raises FencingTokenStale, SynodError."""
        body = {**txn.to_json(base64=True), "encoding": "base64",
                "fences": [{"ns": self.ns, "name": self.name, "token": self.token}]}  # fmt: skip
        return TxnResult.from_json(await self.client._call("POST", "/v1/kv/txn", body,
                                                            write=True), base64=True)  # fmt: skip


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it. Raises nothing."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class RWLock:
    """``client.rwlock(name)``: ``.read()`` and ``.write()`` give Locks of one rw lock."""

    def __init__(self, client: AsyncClient, name: str, **options: Any) -> None:
        """Raises nothing."""
        self.client, self.name, self.options = client, name, options

    def read(self, **options: Any) -> Lock:
        """A shared hold (many readers). Raises ValueError on bad options."""
        return Lock(self.client, self.name, lock_type="rw", mode="s",
                    **{**self.options, **options})  # fmt: skip

    def write(self, **options: Any) -> Lock:
        """An exclusive hold (writers are preferred: new readers queue behind a waiting
        writer). Raises ValueError on bad options."""
        return Lock(self.client, self.name, lock_type="rw", mode="x",
                    **{**self.options, **options})  # fmt: skip


@dataclass(frozen=True, slots=True)
class Leader:
    """The current leader of an election."""

    owner: str
    token: int
    value: str
    changed_revision: int


class Election:
    """``client.election(name)``: campaign, leader, observe, proclaim, resign."""

    def __init__(self, client: AsyncClient, name: str, *, ns: str = "default") -> None:
        """Raises nothing."""
        self.client, self.name, self.ns = client, name, ns

    def campaign(self, value: str = "", **options: Any) -> Lock:
        """A Lock that, once acquired, is the leadership (``token`` fences it; leaving
        the block resigns). Raises ValueError on bad options."""
        return Lock(self.client, self.name, ns=self.ns, lock_type="election", value=value,
                    **options)  # fmt: skip

    async def leader(self) -> Leader | None:
        """The current leader, None if there is none. Raises SynodError."""
        doc = await self.client._call("POST", "/v1/election/leader",
                                      {"ns": self.ns, "name": self.name})  # fmt: skip
        return _leader(doc)

    async def observe(self, changes_max: int = 2**31) -> AsyncIterator[Leader | None]:
        """Yield the leader now and at every change (long-polls, no busy loop), at most
        ``changes_max`` times. Raises SynodError."""
        doc = await self.client._call("POST", "/v1/election/leader",
                                      {"ns": self.ns, "name": self.name})  # fmt: skip
        seen = _leader(doc)
        yield seen
        for _change in range(changes_max - 1):
            for _poll in range(POLLS_PER_ACQUIRE_MAX):
                doc = await self.client._call("POST", "/v1/election/leader", {
                    "ns": self.ns, "name": self.name,
                    "after_revision": int(doc["changed_revision"]),
                    "poll_ms": poll_ms(self.client)})  # fmt: skip
                if _leader(doc) != seen:
                    break
            seen = _leader(doc)
            yield seen

    async def proclaim(self, leadership: Lock, value: str) -> None:
        """The leader changes its value. Raises LockNotHeld, FencingTokenStale."""
        await self.client._call("POST", "/v1/election/proclaim", {
            "ns": self.ns, "name": self.name, "owner": leadership.owner,
            "token": leadership.token, "value": value}, write=True)  # fmt: skip


def _leader(doc: dict[str, Any]) -> Leader | None:
    found = doc.get("leader")
    if not found:
        return None
    return Leader(str(found["owner"]), int(found["token"]), str(found.get("value", "")),
                  int(doc.get("changed_revision", 0)))  # fmt: skip


async def validate_token(client: AsyncClient, name: str, token: int, ns: str = "default") -> bool:
    """CheckSequencer: True if ``token`` is a current holder's of ``name``, False if it
    is stale. Raises SynodError (other failures)."""
    try:
        await client._call("POST", "/v1/locks/validate", {"ns": ns, "name": name,
                                                          "token": token})  # fmt: skip
    except FencingTokenStale:
        return False
    return True


class SyncLock:
    """Blocking view of a :class:`Lock` run on the client's loop thread (``with
    client.lock(...) as lock:``). The watchdog runs there too; a lost lock cannot cancel
    a thread, so check ``lock.held`` (or ``lock.check()``) before each protected step,
    or pass ``on_lost``. Leaving the block raises LockLost if the lock was lost."""

    def __init__(self, run: Callable[[Any], Any], lock: Lock) -> None:
        """``run`` runs a coroutine on the loop thread. Raises nothing."""
        self._run = run
        self.lock = lock

    @property
    def token(self) -> int:
        """The fencing token (0 when not held). Raises nothing."""
        return self.lock.token

    @property
    def held(self) -> bool:
        """See `Lock.held`. Raises nothing."""
        return self.lock.held

    @property
    def safe_until(self) -> float:
        """See `Lock.safe_until` (monotonic seconds). Raises nothing."""
        return self.lock.safe_until

    @property
    def lost(self) -> SynodError | None:
        """Why the lock was lost, if it was. Raises nothing."""
        return self.lock.lost

    def check(self) -> None:
        """Raise LockLost unless held."""
        self.lock.check()

    def acquire(self) -> SyncLock:
        """See `Lock.acquire`."""
        self._run(self.lock.acquire())
        return self

    def release(self) -> None:
        """See `Lock.release`. Raises nothing."""
        self._run(self.lock.release())

    def fenced_txn(self, txn: Txn) -> TxnResult:
        """See `Lock.fenced_txn`."""
        result: TxnResult = self._run(self.lock.fenced_txn(txn))
        return result

    def __enter__(self) -> SyncLock:
        """Acquire. Raises as `Lock.acquire`."""
        return self.acquire()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """Release. Raises LockLost if the lock was lost inside the block."""
        lost = self.lock.lost
        self.release()
        if lost is not None and exc_type is None:
            raise lost if isinstance(lost, LockLost) else LockLost(str(lost), lost.problem)
