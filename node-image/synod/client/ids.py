"""Unique IDs from the SDK: embedded snowflake generators, segments, remote calls.

``client.snowflake("orders")`` gives a :class:`Snowflake` that issues IDs in this
process (no network per ID): it leases a worker id from the cluster, renews it (and
its time high-water mark) every third of its TTL from inside ``next`` calls, and stops
issuing if it could not renew before ``safe_until`` (``WorkerLeaseLost``). A lost
worker lease is replaced by a new one on the next call. ``client.segment("invoice")``
gives a :class:`SegmentIds` handing out dense IDs of a tag from double-buffered
segments. UUIDv7 needs no cluster: ``synod.ids.uuid7()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, Final, TypeVar
from urllib.parse import quote

from synod.client.aio import AsyncClient
from synod.client.errors import SynodError, WorkerLeaseLost
from synod.ids import (
    Clock,
    Decoded,
    Layout,
    SegmentBuffer,
    SnowflakeGenerator,
    StepPolicy,
    SystemClock,
    grant_from_answer,
)
from synod.ids import WorkerLeaseLost as GeneratorLeaseLost

__all__ = ["WORKER_TTL_MS_DEFAULT", "SegmentIds", "Snowflake"]

# TTL of the Synod lease behind an embedded generator's worker id.
WORKER_TTL_MS_DEFAULT: Final = 10_000
# A call acquires or renews at most this many times before it gives up.
RENEWALS_PER_CALL_MAX: Final = 2
# A segment call waits for at most this many fetches.
FETCHES_PER_CALL_MAX: Final = 4

T = TypeVar("T")
Runner = Callable[[Coroutine[Any, Any, Any]], Any]


def _path(name: str, *rest: str) -> str:
    return "/".join(("/v1/ids", quote(name, safe=""), *rest))


async def define(client: AsyncClient, name: str, layout: Layout | None = None,
                 worker_min: int = 0, worker_max: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Define generator ``name`` (idempotent). Raises AlreadyExists (another definition),
    InvalidArgument, Unavailable."""
    body: dict[str, Any] = {**(layout or Layout()).to_dict(), "worker_min": worker_min}
    if worker_max is not None:
        body["worker_max"] = worker_max
    return await client._call("POST", _path(name), body, write=True)


async def next_remote(client: AsyncClient, name: str, count: int = 1) -> list[int]:
    """``count`` IDs issued by a node's generator. Raises GeneratorNotFound,
    ClockRollback, WorkerLeaseLost, Unavailable."""
    doc = await client._call("POST", _path(name, "next"), {"count": count})
    return [int(value) for value in doc["ids"]]


async def decode_remote(client: AsyncClient, name: str, value: int) -> dict[str, Any]:
    """The parts of ``value`` under generator ``name``'s layout. Raises GeneratorNotFound,
    InvalidArgument, Unavailable."""
    doc = await client._call("GET", _path(name, "decode"), params={"id": str(value)})
    return {k: doc[k] for k in ("id", "timestamp_ms", "worker", "sequence")}


async def get_remote(client: AsyncClient, name: str) -> dict[str, Any]:
    """``{"generator": definition, "workers": [live worker leases]}``. Raises
    GeneratorNotFound, Unavailable."""
    doc = await client._call("GET", _path(name))
    return {"generator": doc["generator"], "workers": doc["workers"]}


async def list_remote(client: AsyncClient) -> dict[str, Any]:
    """``{"generators": [...], "tags": [...]}``. Raises Unavailable."""
    doc = await client._call("GET", "/v1/ids")
    return {"generators": doc["generators"], "tags": doc["tags"]}


async def take_segment(client: AsyncClient, tag: str, step: int) -> tuple[int, int]:
    """Take ``step`` IDs of ``tag``: (start, end) inclusive. Raises InvalidArgument,
    LimitExceeded, Unavailable."""
    doc = await client._call("POST", _path(tag, "segment"), {"step": step}, write=True)
    return int(doc["start"]), int(doc["end"])


class Snowflake:
    """An embedded snowflake generator bound to a blocking client; thread-safe."""

    def __init__(
        self,
        run: Runner,
        client: AsyncClient,
        name: str,
        *,
        ttl_ms: int = WORKER_TTL_MS_DEFAULT,
        clock: Clock | None = None,
    ) -> None:
        """Acquire a worker id now. Raises GeneratorNotFound, LimitExceeded (every
        worker id is leased), Unavailable."""
        self._run, self._client, self.name, self.ttl_ms = run, client, name, ttl_ms
        self.clock: Clock = clock or SystemClock()
        self._lock = threading.Lock()
        self.generator: SnowflakeGenerator | None = None
        self.acquisitions = 0
        self.renewals = 0
        with self._lock:
            self._acquire()
        assert self.generator is not None

    @property
    def layout(self) -> Layout:
        """The generator's layout. Raises nothing."""
        assert self.generator is not None
        return self.generator.layout

    def next(self) -> int:
        """One ID. Raises WorkerLeaseLost, ClockRollback (synod.ids), SynodError."""
        with self._lock:
            gen = self.generator
            if gen is not None and not gen.renew_due():
                with contextlib.suppress(GeneratorLeaseLost):
                    return gen.next()
        return self.next_many(1)[0]

    def next_many(self, count: int) -> list[int]:
        """``count`` increasing IDs (1..BATCH_COUNT_MAX). Raises like :meth:`next`,
        ValueError for a bad count."""
        with self._lock:
            gen = self.generator
            assert gen is not None
            for attempt in range(RENEWALS_PER_CALL_MAX + 1):
                if gen.renew_due():
                    self._renew(gen)
                try:
                    return gen.next_many(count)
                except GeneratorLeaseLost:
                    if attempt == RENEWALS_PER_CALL_MAX:
                        raise
                    gen.drop()
            raise AssertionError("unreachable: the loop returns or raises")

    def decode(self, value: int) -> Decoded:
        """The parts of an ID of this generator. Raises ValueError."""
        return self.layout.decode(value)

    def close(self) -> None:
        """Give the worker id back (best effort). Raises nothing."""
        with self._lock:
            gen = self.generator
            if gen is None or gen.grant is None:
                return
            grant = gen.grant
            gen.drop()
            body = {"worker": grant.worker, "epoch": grant.epoch, "lease": grant.lease_id}
            with contextlib.suppress(SynodError):  # else the lease expires by itself
                self._run(self._client._call("POST", _path(self.name, "workers", "release"),
                                             body))  # fmt: skip

    def __enter__(self) -> Snowflake:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the worker lease (called with the lock held) --------------------------------------

    def _acquire(self) -> None:
        sent = self.clock.mono_ms()
        last = self.generator._last_ms if self.generator is not None else 0
        body = {"ttl_ms": self.ttl_ms, "reserve_ms": max(self.clock.wall_ms(), last) + self.ttl_ms}
        doc = self._run(self._client._call("POST", _path(self.name, "workers", "acquire"), body))
        if self.generator is None:
            layout_fields = dict(doc["layout"])
            for extra in ("name", "worker_min", "worker_max"):
                layout_fields.pop(extra, None)
            self.generator = SnowflakeGenerator(Layout.from_dict(layout_fields), self.clock)
        self.generator.install(grant_from_answer(doc, sent_mono_ms=sent, ttl_ms=self.ttl_ms))
        self.acquisitions += 1

    def _renew(self, gen: SnowflakeGenerator) -> None:
        grant = gen.grant
        if grant is None:
            self._acquire()
            return
        sent = self.clock.mono_ms()
        body = {"worker": grant.worker, "epoch": grant.epoch, "lease": grant.lease_id,
                "reserve_ms": gen.reservation_ms()}  # fmt: skip
        try:
            doc = self._run(self._client._call("POST", _path(self.name, "workers", "renew"),
                                               body))  # fmt: skip
        except WorkerLeaseLost:
            gen.drop()
            self._acquire()
            return
        except SynodError:
            # Unreachable cluster: keep issuing until safe_until, then WorkerLeaseLost.
            return
        gen.install(grant_from_answer(doc, sent_mono_ms=sent, ttl_ms=self.ttl_ms,
                                      floor_ms=grant.floor_ms))  # fmt: skip
        self.renewals += 1


class SegmentIds:
    """Dense IDs of one tag from double-buffered segments; thread-safe."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        client: AsyncClient,
        tag: str,
        policy: StepPolicy | None = None,
        clock: Clock | None = None,
    ) -> None:
        """Nothing is fetched until the first call. Raises nothing."""
        self._loop, self._client, self.tag = loop, client, tag
        self.clock: Clock = clock or SystemClock()
        self.buffer = SegmentBuffer(tag, policy)
        self._lock = threading.Lock()
        self._pending: Future[tuple[int, int]] | None = None
        self.fetches = 0
        assert self.buffer.remaining() == 0

    def next(self) -> int:
        """One ID. Raises SynodError (the cluster could not give a segment)."""
        return self.next_many(1)[0]

    def next_many(self, count: int) -> list[int]:
        """``count`` increasing IDs (at most the policy's step_max). Raises SynodError,
        ValueError."""
        if not 1 <= count <= self.buffer.policy.step_max:
            raise ValueError(f"count must be in [1, {self.buffer.policy.step_max}]")
        with self._lock:
            out: list[int] = []
            for _fetch in range(FETCHES_PER_CALL_MAX + 1):  # bound: fetches per call
                self._collect(wait=self.buffer.remaining() == 0)
                take = min(count - len(out), self.buffer.remaining())
                if take:
                    out.extend(self.buffer.next_many(take))
                if len(out) == count:
                    break
                self._start_fetch(count - len(out))
            else:
                raise RuntimeError(f"no segment of {self.tag!r} in {FETCHES_PER_CALL_MAX} fetches")
            if self.buffer.wants_fetch():
                self._start_fetch(0)  # prefetch: the caller does not wait for it
            assert len(out) == count
            return out

    def _start_fetch(self, at_least: int) -> None:
        if self._pending is not None:
            return
        step = max(self.buffer.step_for_fetch(self.clock.mono_ms()), at_least)
        step = min(step, self.buffer.policy.step_max)
        self.buffer.fetching = True
        self._pending = asyncio.run_coroutine_threadsafe(
            take_segment(self._client, self.tag, step), self._loop
        )

    def _collect(self, *, wait: bool) -> None:
        pending = self._pending
        if pending is None or (not wait and not pending.done()):
            return
        self._pending = None
        self.buffer.fetching = False
        start, end = pending.result()  # raises the fetch's SynodError
        self.buffer.install(start, end, self.clock.mono_ms())
        self.fetches += 1
