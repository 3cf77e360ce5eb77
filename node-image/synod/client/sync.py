"""The blocking Synod client: the AsyncClient run on a private event-loop thread.

Every method is the AsyncClient method of the same name (same arguments, same errors),
so the protocol lives in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import AsyncGenerator, Callable, Coroutine, Generator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Concatenate, ParamSpec, TypeVar

from synod.client import ids as client_ids
from synod.client.aio import AsyncClient
from synod.client.errors import AlreadyExists, SynodError
from synod.client.lease import LeaseKeepAlive
from synod.client.locks import SyncLock
from synod.client.ratelimit import RateLimited
from synod.client.types import WatchEvent

__all__ = ["Client", "SyncLeaseKeepAlive"]

P = ParamSpec("P")
T = TypeVar("T")

# Closing waits this long for the loop thread; it only has to close sockets.
CLOSE_WAIT_S_MAX = 5.0


def _blocking(
    method: Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Client, P], T]:
    """Turn an AsyncClient coroutine method into a blocking Client method."""

    def call(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(method(self.aio, *args, **kwargs))

    call.__name__ = method.__name__
    call.__doc__ = method.__doc__
    return call


class SyncLeaseKeepAlive:
    """Blocking view of a :class:`LeaseKeepAlive` running on the client's loop."""

    def __init__(self, client: Client, keeper: LeaseKeepAlive) -> None:
        """Raises nothing."""
        self._client = client
        self.keeper = keeper

    @property
    def id(self) -> int:
        """The lease id. Raises nothing."""
        return self.keeper.id

    @property
    def alive(self) -> bool:
        """True while renewing and the lease is believed alive. Raises nothing."""
        return self.keeper.alive

    @property
    def error(self) -> SynodError | None:
        """Why the keeper stopped (LeaseExpired...), if it did. Raises nothing."""
        return self.keeper.error

    def check(self) -> None:
        """Raise LeaseExpired if the lease is gone."""
        self.keeper.check()

    def wait(self, timeout_s: float | None = None) -> SynodError | None:
        """Block until the keeper stops (or ``timeout_s``); returns why.

        Raises TimeoutError when ``timeout_s`` passes first."""
        return self._client._run(asyncio.wait_for(self.keeper.wait(), timeout_s))

    def stop(self, *, revoke: bool = False) -> None:
        """Stop renewing (and revoke). Raises nothing."""
        self._client._run(self.keeper.stop(revoke=revoke))


class Client:
    """A blocking Synod client; see :class:`AsyncClient` for the options and methods."""

    def __init__(self, endpoints: Sequence[str] | str | None = None, **options: Any) -> None:
        """Start the private loop thread. Raises ValueError on bad options."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="synod-client-loop", daemon=True
        )
        self._thread.start()
        try:
            self.aio = self._run(_make(endpoints, options))
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop thread and wait for it. Raises what it raises."""
        if self._loop.is_closed():
            coro.close()
            raise RuntimeError("the client is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            # Ctrl-C while waiting: do not leave the call running on the loop thread.
            future.cancel()
            raise

    def __enter__(self) -> Client:
        """Raises nothing."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Raises nothing."""
        self.close()

    def close(self) -> None:
        """Close connections and stop the loop thread. Raises nothing."""
        if self._loop.is_closed():
            return
        try:
            self._run(self.aio.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        """Stop and close the loop. Raises nothing."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CLOSE_WAIT_S_MAX)
        if not self._thread.is_alive():
            self._loop.close()

    @property
    def endpoints(self) -> list[str]:
        """The known endpoints (leaders found on the way are added). Raises nothing."""
        return self.aio.endpoints

    @property
    def endpoint(self) -> str:
        """Where the next request goes (the leader once found). Raises nothing."""
        return self.aio.endpoint

    put = _blocking(AsyncClient.put)
    get = _blocking(AsyncClient.get)
    range = _blocking(AsyncClient.range)
    prefix = _blocking(AsyncClient.prefix)
    delete = _blocking(AsyncClient.delete)
    txn = _blocking(AsyncClient.txn)
    cas = _blocking(AsyncClient.cas)
    compact = _blocking(AsyncClient.compact)
    lease_grant = _blocking(AsyncClient.lease_grant)
    lease_revoke = _blocking(AsyncClient.lease_revoke)
    lease_keepalive = _blocking(AsyncClient.lease_keepalive)
    lease_timetolive = _blocking(AsyncClient.lease_timetolive)
    status = _blocking(AsyncClient.status)
    gossip_members = _blocking(AsyncClient.gossip_members)
    add_learner = _blocking(AsyncClient.add_learner)
    promote = _blocking(AsyncClient.promote)
    remove_member = _blocking(AsyncClient.remove_member)
    transfer_leadership = _blocking(AsyncClient.transfer_leadership)
    snapshot = _blocking(AsyncClient.snapshot)
    set_limits = _blocking(AsyncClient.set_limits)
    close_session = _blocking(AsyncClient.close_session)

    validate_token = _blocking(AsyncClient.validate_token)
    election_leader = _blocking(AsyncClient.election_leader)
    lock_status = _blocking(AsyncClient.lock_status)
    lock_list = _blocking(AsyncClient.lock_list)
    lock_release = _blocking(AsyncClient.lock_release)
    lock_revoke = _blocking(AsyncClient.lock_revoke)

    # -- rate limits (docs/ratelimit.md) ---------------------------------------------
    rate_limit = _blocking(AsyncClient.rate_limit)
    ratelimit_release = _blocking(AsyncClient.ratelimit_release)
    ratelimit_policy_put = _blocking(AsyncClient.ratelimit_policy_put)
    ratelimit_policies = _blocking(AsyncClient.ratelimit_policies)
    ratelimit_policy_delete = _blocking(AsyncClient.ratelimit_policy_delete)
    ratelimit_status = _blocking(AsyncClient.ratelimit_status)

    def rate_limited(
        self, domain: str, descriptors: Sequence[Any], hits: int = 1
    ) -> Callable[[Callable[P, T]], Callable[P, T]]:
        """Decorate a function: each call first counts ``hits`` and raises
        :class:`~synod.client.ratelimit.RateLimited` when over the limit. Raises nothing
        until a decorated call."""

        def wrap(function: Callable[P, T]) -> Callable[P, T]:
            @functools.wraps(function)
            def limited(*args: P.args, **kwargs: P.kwargs) -> T:
                result = self.rate_limit(domain, descriptors, hits)
                if not result.allowed:
                    raise RateLimited(result)
                return function(*args, **kwargs)

            return limited

        return wrap

    def lock(self, name: str, **options: Any) -> SyncLock:
        """A fenced mutex: ``with client.lock("orders/42", ttl_ms=10_000) as lock:``
        (see :class:`~synod.client.locks.SyncLock`). Raises ValueError on bad options."""
        options.setdefault("cancel_on_lost", False)
        return SyncLock(self._run, self.aio.lock(name, **options))

    def semaphore(self, name: str, permits: int, **options: Any) -> SyncLock:
        """One permit of a counting semaphore. Raises ValueError on bad options."""
        options.setdefault("cancel_on_lost", False)
        return SyncLock(self._run, self.aio.semaphore(name, permits, **options))

    def rwlock_read(self, name: str, **options: Any) -> SyncLock:
        """A shared hold of an rw lock. Raises ValueError on bad options."""
        options.setdefault("cancel_on_lost", False)
        return SyncLock(self._run, self.aio.rwlock(name).read(**options))

    def rwlock_write(self, name: str, **options: Any) -> SyncLock:
        """An exclusive hold of an rw lock. Raises ValueError on bad options."""
        options.setdefault("cancel_on_lost", False)
        return SyncLock(self._run, self.aio.rwlock(name).write(**options))

    # -- unique IDs (docs/ids.md) -----------------------------------------------------

    def snowflake(
        self, name: str, *, create: bool = True, layout: Any = None, **options: Any
    ) -> client_ids.Snowflake:
        """An embedded snowflake generator of ``name``; options: ``ttl_ms``, ``clock``.
        With ``create`` a missing generator is defined (with ``layout``, else the
        default one; an existing one is used as it is when no ``layout`` is given).
        Raises GeneratorNotFound, AlreadyExists (``layout`` differs from the existing
        definition), LimitExceeded (every worker id leased), Unavailable."""
        if create:
            try:
                self._run(client_ids.define(self.aio, name, layout))
            except AlreadyExists:
                if layout is not None:
                    raise
        return client_ids.Snowflake(self._run, self.aio, name, **options)

    def segment(self, tag: str, **options: Any) -> client_ids.SegmentIds:
        """Dense IDs of ``tag`` from double-buffered segments; options: ``policy`` (a
        synod.ids.StepPolicy), ``clock``. Raises nothing until used."""
        return client_ids.SegmentIds(self._loop, self.aio, tag, **options)

    def ids_next(self, generator: str, count: int = 1) -> list[int]:
        """``count`` IDs issued by a node. Raises GeneratorNotFound, ClockRollback,
        WorkerLeaseLost, Unavailable."""
        return self._run(client_ids.next_remote(self.aio, generator, count))

    def ids_decode(self, generator: str, value: int) -> dict[str, Any]:
        """The parts of an ID under ``generator``'s layout. Raises GeneratorNotFound."""
        return self._run(client_ids.decode_remote(self.aio, generator, value))

    def ids_define(self, generator: str, layout: Any = None, worker_min: int = 0,
                   worker_max: int | None = None) -> dict[str, Any]:  # fmt: skip
        """Define a snowflake generator (a synod.ids.Layout, default the default layout;
        worker ids in [worker_min, worker_max]); idempotent. Raises AlreadyExists
        (another definition), InvalidArgument, LimitExceeded."""
        return self._run(client_ids.define(self.aio, generator, layout, worker_min, worker_max))

    def ids_get(self, generator: str) -> dict[str, Any]:
        """A generator's definition and live worker leases. Raises GeneratorNotFound."""
        return self._run(client_ids.get_remote(self.aio, generator))

    def ids_list(self) -> dict[str, Any]:
        """Every generator and segment tag. Raises Unavailable."""
        return self._run(client_ids.list_remote(self.aio))

    def keep_alive(self, lease_id: int, ttl_ms: int) -> SyncLeaseKeepAlive:
        """Renew ``lease_id`` in the background every ttl/3. Raises nothing."""
        return SyncLeaseKeepAlive(self, self._run(_start_keeper(self.aio, lease_id, ttl_ms)))

    @contextmanager
    def lease(self, ttl_ms: int) -> Iterator[SyncLeaseKeepAlive]:
        """Grant a lease, keep it alive inside the block, revoke it on exit.

        Raises like `lease_grant`."""
        grant = self.lease_grant(ttl_ms)
        keeper = self.keep_alive(grant.id, grant.ttl_ms)
        try:
            yield keeper
        finally:
            keeper.stop(revoke=True)

    def watch(
        self, key: str, range_end: str = "", *, prefix: bool = False, start_revision: int = 0
    ) -> Generator[WatchEvent, None, None]:
        """Blocking iterator over `AsyncClient.watch`; closing it ends the stream.

        Raises like `AsyncClient.watch`."""
        stream = self.aio.watch(key, range_end, prefix=prefix, start_revision=start_revision)
        try:
            while True:
                try:
                    yield self._run(_next(stream))
                except StopAsyncIteration:
                    return
        finally:
            # After an interrupted __anext__ the generator may still be finishing; its
            # connection is released when the loop closes.
            with contextlib.suppress(RuntimeError):
                self._run(stream.aclose())


async def _make(endpoints: Sequence[str] | str | None, options: dict[str, Any]) -> AsyncClient:
    """Build the AsyncClient on its own loop. Raises ValueError."""
    return AsyncClient(endpoints, **options)


async def _start_keeper(client: AsyncClient, lease_id: int, ttl_ms: int) -> LeaseKeepAlive:
    """Start a keeper on the loop thread. Raises nothing."""
    return client.keep_alive(lease_id, ttl_ms)


async def _next(stream: AsyncGenerator[WatchEvent, None]) -> WatchEvent:
    """One item of an async iterator. Raises StopAsyncIteration at its end."""
    item: WatchEvent = await stream.__anext__()
    return item
