"""The /v1/ids handlers and the node's own snowflake generators.

``POST /v1/ids/{generator}/next`` is served by an :class:`IdsPool` on the application:
one :class:`~synod.ids.SnowflakeGenerator` per generator, with a worker id this node
leased like any embedded SDK generator does (a Synod lease of ``NODE_WORKER_TTL_MS``
plus an ``ids_acquire``), renewed lazily when a request finds it due. Only the leader
can write, so on a follower the first write raises NotLeader and the HTTP layer
forwards the whole request: the leader's worker serves it.

The worker endpoints let embedded generators lease and renew worker ids: *acquire*
grants a Synod lease and binds a worker to it, *renew* keeps that lease alive (on the
leader) and then raises the worker's high-water mark, *release* gives it back.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from synod.ids import (
    Clock,
    ClockRollback,
    IdsError,
    Layout,
    SnowflakeGenerator,
    SystemClock,
    WorkerLeaseLost,
    grant_from_answer,
)
from synod.node.api import NodeApi, Session
from synod.node.guard import lease_id_pick
from synod.node.problems import Problem, problem_from_result_error
from synod.services import commands
from synod.services.ids import (
    IdsLimits,
    ids_acquire_op,
    ids_define_op,
    ids_get_op,
    ids_list_op,
    ids_release_op,
    ids_renew_op,
    ids_segment_op,
)

__all__ = ["IDS_POOL", "NODE_WORKER_TTL_MS", "OPERATIONS", "IdsPool", "install"]

# TTL of the Synod lease behind the node's own worker ids.
NODE_WORKER_TTL_MS: Final = 10_000
# The node's generators wait out backwards clock steps on the event loop: keep that
# short (a longer step answers clock-rollback and the client retries).
NODE_ROLLBACK_WAIT_MS_MAX: Final = 5
# A request renews (or re-acquires) at most this many times before it gives up.
RENEWALS_PER_REQUEST_MAX: Final = 2

Answer = tuple[dict[str, Any], int | None]


def _ok(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` if it succeeded. Raises the Problem of its service error."""
    if result.get("ok") is not True:
        error = result.get("error")
        if not isinstance(error, dict):
            raise Problem("internal", "node answered neither ok nor a service error")
        raise problem_from_result_error(error)
    assert isinstance(result.get("revision", 0), int)
    return result


def _problem(error: IdsError) -> Problem:
    assert error.code in ("clock-rollback", "worker-lease-lost", "internal")
    return Problem(error.code, error.message, **error.details)


@dataclass(slots=True)
class _Entry:
    generator: SnowflakeGenerator
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True, slots=True)
class _Metrics:
    issued: Counter
    batch: Histogram
    acquired: Counter
    rollbacks: Counter


_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, _Metrics] = weakref.WeakKeyDictionary()


def _metrics(registry: CollectorRegistry) -> _Metrics:
    found = _METRICS.get(registry)
    if found is None:
        found = _Metrics(
            Counter("synod_ids_issued", "IDs issued by this node", ("generator",),
                    registry=registry),
            Histogram("synod_ids_batch_size", "IDs per /next request",
                      buckets=(1, 10, 100, 1000, 10_000, 100_000), registry=registry),
            Counter("synod_ids_worker_leases", "worker ids this node acquired",
                    ("generator",), registry=registry),
            Counter("synod_ids_rollbacks", "clock rollbacks refused by this node's generators",
                    ("generator",), registry=registry),
        )  # fmt: skip
        _METRICS[registry] = found
    return found


class IdsPool:
    """This node's generators, one per generator name (at most generators_max)."""

    def __init__(self, registry: CollectorRegistry, clock: Clock | None = None) -> None:
        """Raises ValueError if another owner registered the metric names."""
        self.clock: Clock = clock or SystemClock()
        self.ttl_ms = NODE_WORKER_TTL_MS
        self.metrics = _metrics(registry)
        self._entries: dict[str, _Entry] = {}
        self._entries_max = IdsLimits().generators_max
        assert self.ttl_ms > 0

    async def _entry(self, node: NodeApi, name: str) -> _Entry:
        entry = self._entries.get(name)
        if entry is None:
            layout = await layout_of(node, name)
            entry = self._entries.get(name)  # another request may have made it meanwhile
            if entry is None:
                if len(self._entries) >= self._entries_max:
                    raise Problem("limit-exceeded", "generators_max generators served",
                                  limit="generators_max", max=self._entries_max)  # fmt: skip
                entry = _Entry(
                    SnowflakeGenerator(
                        layout, self.clock, rollback_wait_ms_max=NODE_ROLLBACK_WAIT_MS_MAX
                    )
                )
                self._entries[name] = entry
        assert entry.generator.layout is not None
        return entry

    async def next_many(self, node: NodeApi, name: str, count: int) -> tuple[list[int], int, int]:
        """(ids, worker, epoch). Raises Problem (generator-not-found, clock-rollback,
        worker-lease-lost...), NotLeader and the other NodeErrors of the writes."""
        entry = await self._entry(node, name)
        gen = entry.generator
        gen.clock = self.clock
        async with entry.lock:
            for attempt in range(RENEWALS_PER_REQUEST_MAX + 1):
                if gen.renew_due():
                    await self._renew(node, name, gen)
                try:
                    ids = gen.next_many(count)
                except WorkerLeaseLost as error:
                    gen.drop()  # past safe_until or the reservation: start afresh
                    if attempt == RENEWALS_PER_REQUEST_MAX:
                        raise _problem(error) from None
                    continue
                except ClockRollback as error:
                    self.metrics.rollbacks.labels(name).inc()
                    raise _problem(error) from None
                except IdsError as error:
                    raise _problem(error) from None
                except ValueError as error:  # the layout cannot encode the clock's time
                    raise Problem("invalid-argument", f"generator {name!r}: {error}") from None
                grant = gen.grant
                assert grant is not None
                self.metrics.issued.labels(name).inc(count)
                self.metrics.batch.observe(count)
                return ids, grant.worker, grant.epoch
        raise AssertionError("unreachable: the loop returns or raises")

    async def _renew(self, node: NodeApi, name: str, gen: SnowflakeGenerator) -> None:
        """Renew the grant, or acquire a new worker when there is none or it is lost.
        Raises Problem, NodeErrors."""
        grant = gen.grant
        if grant is not None:
            sent = self.clock.mono_ms()
            alive = await node.lease_keepalive(grant.lease_id)
            if alive.get("ok") is True:
                result = await node.write(
                    ids_renew_op(name, grant.worker, grant.epoch, gen.reservation_ms()), None
                )
                if result.get("ok") is True:
                    gen.install(grant_from_answer(result, sent_mono_ms=sent, ttl_ms=self.ttl_ms,
                                                  floor_ms=grant.floor_ms))  # fmt: skip
                    return
            gen.drop()
        sent = self.clock.mono_ms()
        lease = _ok(
            await node.write(commands.lease_grant_op(self.ttl_ms, pick=lease_id_pick()), None)
        )
        reserve_ms = self.clock.wall_ms() + self.ttl_ms
        result = _ok(await node.write(ids_acquire_op(name, int(lease["id"]), reserve_ms), None))
        gen.install(grant_from_answer(result, sent_mono_ms=sent, ttl_ms=self.ttl_ms))
        self.metrics.acquired.labels(name).inc()
        assert gen.grant is not None


IDS_POOL: Final = web.AppKey("ids_pool", IdsPool)


def install(app: web.Application, registry: CollectorRegistry) -> None:
    """Put an IdsPool on ``app``. Raises ValueError (metric names taken)."""
    app[IDS_POOL] = IdsPool(registry)
    assert IDS_POOL in app


async def layout_of(node: NodeApi, name: str) -> Layout:
    """The layout of generator ``name`` (a linearizable read). Raises Problem."""
    result = _ok(await node.read(ids_get_op(name), serializable=False))
    fields = dict(result["generator"])
    for extra in ("name", "worker_min", "worker_max"):
        fields.pop(extra)
    return Layout.from_dict(fields)


# -- handlers: (node, request, body, session) -> (fields, header revision) ---------------


def _name(request: web.Request, param: str = "generator") -> str:
    return request.match_info[param]


async def _list(
    node: NodeApi, request: web.Request, body: dict[str, Any], session: Session | None
) -> Answer:
    result = _ok(await node.read(ids_list_op(), serializable=False))
    return {"generators": result["generators"], "tags": result["tags"]}, result["revision"]


async def _define(
    node: NodeApi, request: web.Request, body: dict[str, Any], session: Session | None
) -> Answer:
    names = ("time_bits", "worker_bits", "sequence_bits", "epoch_ms")
    layout_fields: dict[str, Any] = {k: body[k] for k in names if k in body}
    try:
        layout = Layout.from_dict(layout_fields)
    except ValueError as error:
        raise Problem("invalid-argument", str(error)) from None
    op = ids_define_op(_name(request), layout, body.get("worker_min", 0), body.get("worker_max"))
    if op["worker_min"] > op["worker_max"]:
        raise Problem("invalid-argument", "worker_min must not exceed worker_max")
    result = _ok(await node.write(op, session))
    return {"generator": result["generator"], "created": result["created"]}, result["revision"]


async def _get(
    node: NodeApi, request: web.Request, body: dict[str, Any], session: Session | None
) -> Answer:
    result = _ok(await node.read(ids_get_op(_name(request)), serializable=False))
    return {"generator": result["generator"], "workers": result["workers"]}, result["revision"]


async def _next(
    node: NodeApi, request: web.Request, body: dict[str, Any], session: Session | None
) -> Answer:
    pool = request.app[IDS_POOL]
    ids, worker, epoch = await pool.next_many(node, _name(request), body.get("count", 1))
    return {"ids": ids, "worker": worker, "epoch": epoch}, None


async def _decode(
    node: NodeApi, request: web.Request, body: dict[str, Any], session: Session | None
) -> Answer:
    layout = await layout_of(node, _name(request))
    try:
        parts = layout.decode(body["id"])
    except ValueError as error:
        raise Problem("invalid-argument", str(error)) from None
    return parts.to_dict(), None


async def _grant_answer(node: NodeApi, name: str, result: dict[str, Any], ttl_ms: int) -> Answer:
    result = _ok(result)
    layout = _ok(await node.read(ids_get_op(name), serializable=True))["generator"]
    fields = {k: result[k] for k in ("generator", "worker", "epoch", "lease", "floor_ms",
                                     "ceiling_ms")}  # fmt: skip
    return {**fields, "ttl_ms": ttl_ms, "layout": layout}, result["revision"]


async def _acquire(
    node: NodeApi, request: web.Request, body: dict[str, Any], session: Session | None
) -> Answer:
    name = _name(request)
    await layout_of(node, name)  # generator-not-found before a lease is granted
    lease = _ok(
        await node.write(commands.lease_grant_op(body["ttl_ms"], pick=lease_id_pick()), None)
    )
    result = await node.write(ids_acquire_op(name, int(lease["id"]), body["reserve_ms"]), None)
    if result.get("ok") is not True:
        await node.write(commands.lease_revoke_op(int(lease["id"])), None)
    return await _grant_answer(node, name, result, int(lease["ttl_ms"]))


async def _renew(
    node: NodeApi, request: web.Request, body: dict[str, Any], session: Session | None
) -> Answer:
    name = _name(request)
    # Keep the Synod lease alive first: the mark is raised only for a live lease.
    alive = await node.lease_keepalive(body["lease"])
    if alive.get("ok") is not True:
        raise Problem("worker-lease-lost", f"lease {body['lease']} expired: the worker "
                      f"{body['worker']} of {name!r} is free again", generator=name,
                      worker=body["worker"], epoch=body["epoch"])  # fmt: skip
    op = ids_renew_op(name, body["worker"], body["epoch"], body["reserve_ms"])
    result = await node.write(op, None)
    answer, revision = await _grant_answer(node, name, result, int(alive["ttl_ms"]))
    if answer["lease"] != body["lease"]:
        raise Problem("worker-lease-lost", "the worker is bound to another lease",
                      generator=name, worker=body["worker"], epoch=body["epoch"])  # fmt: skip
    return answer, revision


async def _release(
    node: NodeApi, request: web.Request, body: dict[str, Any], session: Session | None
) -> Answer:
    name = _name(request)
    result = _ok(await node.write(ids_release_op(name, body["worker"], body["epoch"]), None))
    await node.write(commands.lease_revoke_op(body["lease"]), None)  # not-found: gone anyway
    return {"generator": name, "worker": result["worker"], "released": True}, result["revision"]


async def _segment(
    node: NodeApi, request: web.Request, body: dict[str, Any], session: Session | None
) -> Answer:
    result = _ok(await node.write(ids_segment_op(_name(request, "tag"), body["step"]), session))
    return {"tag": result["tag"], "start": result["start"], "end": result["end"]}, result[
        "revision"
    ]


IdsOperation = Callable[[NodeApi, web.Request, dict[str, Any], Session | None], Awaitable[Answer]]

OPERATIONS: Final[dict[str, IdsOperation]] = {
    "idsList": _list,
    "idsDefine": _define,
    "idsGet": _get,
    "idsNext": _next,
    "idsDecode": _decode,
    "idsWorkerAcquire": _acquire,
    "idsWorkerRenew": _renew,
    "idsWorkerRelease": _release,
    "idsSegment": _segment,
}
