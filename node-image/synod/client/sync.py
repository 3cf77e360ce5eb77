"""The blocking Synod client: the AsyncClient run on a private event-loop thread.

Every method is the AsyncClient method of the same name (same arguments, same errors),
so the protocol lives in one place.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import threading
import weakref
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Concatenate, ParamSpec, TypeVar

from synod.client import ids as client_ids
from synod.client.aio import AsyncClient, ConnectionState, StateListener
from synod.client.errors import AlreadyExists, LimitExceeded, SynodError
from synod.client.lease import LeaseKeepAlive
from synod.client.locks import SyncLock
from synod.client.ratelimit import RateLimited
from synod.client.types import WatchEvent

__all__ = ["Client", "SyncLeaseKeepAlive", "Watch"]

P = ParamSpec("P")
T = TypeVar("T")

# Closing waits this long for the loop thread; it only has to close sockets.
CLOSE_WAIT_S_MAX = 5.0
# Watches delivered to callbacks, each on a thread of its own (python-etcd3's
# add_watch_callback); more is a caller's bug.
WATCH_CALLBACKS_MAX = 64


def _blocking(
    method: Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Client, P], T]:
    """Turn an AsyncClient coroutine method into a blocking Client method."""

    def call(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(method(self.aio, *args, **kwargs))

    # help(Client.put) and IDEs show the real parameters, not (*args, **kwargs).
    call.__name__ = method.__name__
    call.__qualname__ = f"Client.{method.__name__}"
    call.__doc__ = method.__doc__
    call.__annotations__ = dict(method.__annotations__)
    call.__signature__ = inspect.signature(method)  # type: ignore[attr-defined]
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

    def __repr__(self) -> str:
        """`<LeaseKeepAlive id=... ttl=...s alive renewals=...>`. Raises nothing."""
        return repr(self.keeper)


class Watch:
    """A blocking watch: iterate it for events; `cancel()` (from any thread) or leaving
    a ``with`` block ends it, and a blocked iteration then stops."""

    def __init__(self, client: Client, stream: AsyncGenerator[WatchEvent, None]) -> None:
        """Raises nothing."""
        self._client = client
        self._stream = stream
        self._lock = threading.Lock()
        self._pending: concurrent.futures.Future[WatchEvent] | None = None
        self.cancelled = False

    def __iter__(self) -> Watch:
        """Raises nothing."""
        return self

    def __next__(self) -> WatchEvent:
        """The next event. Raises StopIteration once cancelled or ended; the watch's
        errors (Compacted, Unavailable after its attempts...)."""
        with self._lock:
            if self.cancelled:
                raise StopIteration
            self._pending = self._client._submit(_next(self._stream))
        try:
            return self._pending.result()
        except (StopAsyncIteration, concurrent.futures.CancelledError):
            self._finish()
            raise StopIteration from None
        except BaseException:
            self._pending.cancel()  # Ctrl-C: do not leave the read running
            self._finish()
            raise

    def cancel(self) -> None:
        """End the watch; an iteration blocked in another thread stops. Raises nothing."""
        with self._lock:
            self.cancelled = True
            pending = self._pending
        if pending is not None and not pending.done():
            pending.cancel()
        else:
            self._finish()

    close = cancel  # a generator's name for it

    def _finish(self) -> None:
        """Close the stream (its connection goes back). Raises nothing."""
        self.cancelled = True
        with contextlib.suppress(RuntimeError, concurrent.futures.CancelledError):
            self._client._run(self._stream.aclose())

    def __enter__(self) -> Watch:
        """Raises nothing."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Raises nothing."""
        self.cancel()

    def __repr__(self) -> str:
        """Raises nothing."""
        return f"<Watch {'cancelled' if self.cancelled else 'running'}>"


class WatchCallback:
    """A watch whose events go to a callback on a thread of its own (python-etcd3's
    ``add_watch_callback``); `cancel()` ends it."""

    def __init__(
        self,
        watch: Watch,
        callback: Callable[[WatchEvent], None],
        on_error: Callable[[BaseException], None] | None,
    ) -> None:
        """Start the thread. Raises nothing."""
        self.watch = watch
        self.error: BaseException | None = None
        self._callback = callback
        self._on_error = on_error
        self._thread = threading.Thread(target=self._run, name="synod-watch-callback",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def _run(self) -> None:
        """Deliver events until cancelled; an error ends the watch and goes to
        ``on_error``. Raises nothing."""
        try:
            for event in self.watch:
                self._callback(event)
        except Exception as exc:
            self.error = exc
            self.watch.cancel()
            if self._on_error is not None:
                self._on_error(exc)

    @property
    def running(self) -> bool:
        """Raises nothing."""
        return self._thread.is_alive()

    def cancel(self, timeout_s: float | None = CLOSE_WAIT_S_MAX) -> None:
        """End the watch and wait (up to ``timeout_s``) for its thread. Raises nothing."""
        self.watch.cancel()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)


class Client:
    """A blocking Synod client; see :class:`AsyncClient` for the options and methods."""

    def __init__(self, endpoints: Sequence[str] | str | None = None, **options: Any) -> None:
        """Start the private loop thread. Options: see :class:`AsyncClient`
        (``timeout_s``, ``attempts_max``, ``ssl_context``, ``headers``...). Raises
        ValueError on bad options."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="synod-client-loop", daemon=True
        )
        self._thread.start()
        self._callbacks: list[WatchCallback] = []
        self._watches: weakref.WeakSet[Watch] = weakref.WeakSet()
        try:
            self.aio = self._run(_make(endpoints, options))
        except BaseException:
            self._stop_loop()
            raise
        # A client dropped without close(): its session and loop thread end with it,
        # without "Unclosed client session" warnings.
        self._finalizer = weakref.finalize(self, _finalize, self._loop, self._thread, self.aio)

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the loop thread. Raises RuntimeError once closed."""
        if self._loop.is_closed():
            coro.close()
            raise RuntimeError("the client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop thread and wait for it. Raises what it raises."""
        future = self._submit(coro)
        try:
            return future.result()
        except BaseException:
            # Ctrl-C while waiting: do not leave the call running on the loop thread.
            future.cancel()
            raise

    def __repr__(self) -> str:
        """Raises nothing."""
        state = "closed" if self._loop.is_closed() else self.aio.state.value
        return f"<Client {self.aio.endpoint} {state}>"

    def __enter__(self) -> Client:
        """Raises nothing."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Raises nothing."""
        self.close()

    def close(self) -> None:
        """Close the session, the connections and the loop thread (watch callbacks
        end first). Raises nothing."""
        if self._loop.is_closed():
            return
        for handle in list(self._callbacks):
            handle.cancel()
        for watch in list(self._watches):
            watch.cancel()
        try:
            self._run(self.aio.close())
        finally:
            self._stop_loop()
            self._finalizer.detach()

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
    lease_list = _blocking(AsyncClient.lease_list)
    status = _blocking(AsyncClient.status)
    gossip_members = _blocking(AsyncClient.gossip_members)
    add_learner = _blocking(AsyncClient.add_learner)
    promote = _blocking(AsyncClient.promote)
    remove_member = _blocking(AsyncClient.remove_member)
    transfer_leadership = _blocking(AsyncClient.transfer_leadership)
    snapshot = _blocking(AsyncClient.snapshot)
    snapshot_download = _blocking(AsyncClient.snapshot_download)
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

    @property
    def state(self) -> ConnectionState:
        """CONNECTED, SUSPENDED or LOST (see :class:`ConnectionState`). Raises nothing."""
        return self.aio.state

    def add_listener(self, listener: StateListener) -> None:
        """Call ``listener(state)`` on each change of connection state (kazoo's
        ``add_listener``). It runs on the client's loop thread: it must return quickly
        and must not call the client (hand work to another thread). Raises
        LimitExceeded beyond LISTENERS_MAX."""
        self.aio.add_listener(listener)

    def remove_listener(self, listener: StateListener) -> None:
        """Raises nothing."""
        self.aio.remove_listener(listener)

    def watch(
        self,
        key: str | bytes,
        range_end: str | bytes = "",
        *,
        prefix: bool = False,
        start_revision: int = 0,
    ) -> Watch:
        """Changes of ``key`` (a range, a prefix) as a blocking iterator:
        ``for event in client.watch("k"): ...``; ``watch.cancel()`` from any thread
        (or ``with client.watch(...) as watch:``) ends it.

        Raises like `AsyncClient.watch` while iterating."""
        stream = self.aio.watch(key, range_end, prefix=prefix, start_revision=start_revision)
        watch = Watch(self, stream)
        self._watches.add(watch)  # close() ends it
        return watch

    def add_watch_callback(
        self,
        key: str | bytes,
        callback: Callable[[WatchEvent], None],
        range_end: str | bytes = "",
        *,
        prefix: bool = False,
        start_revision: int = 0,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> WatchCallback:
        """Call ``callback(event)`` for each change, on a thread of the watch's own
        (it may call the client); ``.cancel()`` on the answer ends it. An error ends
        the watch and goes to ``on_error``. Raises LimitExceeded beyond
        WATCH_CALLBACKS_MAX running watches."""
        self._callbacks = [handle for handle in self._callbacks if handle.running]
        if len(self._callbacks) >= WATCH_CALLBACKS_MAX:
            raise LimitExceeded(f"{WATCH_CALLBACKS_MAX} watch callbacks run",
                                {"limit": "watch_callbacks_max",
                                 "max": WATCH_CALLBACKS_MAX})  # fmt: skip
        watch = self.watch(key, range_end, prefix=prefix, start_revision=start_revision)
        handle = WatchCallback(watch, callback, on_error)
        self._callbacks.append(handle)
        assert len(self._callbacks) <= WATCH_CALLBACKS_MAX
        return handle


def _finalize(loop: asyncio.AbstractEventLoop, thread: threading.Thread, aio: AsyncClient) -> None:
    """Close a garbage-collected Client: its session and connections, then its loop.

    Raises nothing."""
    if loop.is_closed():
        return
    if threading.current_thread() is not thread:
        future = asyncio.run_coroutine_threadsafe(aio.close(), loop)
        with contextlib.suppress(Exception):
            future.result(CLOSE_WAIT_S_MAX)
    loop.call_soon_threadsafe(loop.stop)
    if threading.current_thread() is not thread:
        thread.join(CLOSE_WAIT_S_MAX)
        if not thread.is_alive():
            loop.close()


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
