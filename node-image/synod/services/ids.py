"""The replicated ``ids`` service: generator definitions, worker-id leases with
time high-water marks, and segment ``max_id`` per tag. Pure and deterministic.

* A **generator** is a named snowflake layout (``synod.ids.Layout``) plus the worker-id
  range its instances may lease.
* A **worker lease** gives one generator instance a worker id no live lease of the
  same generator holds, with a **fencing epoch** (grows with every grant of the
  generator) and bound to a Synod lease: when that lease is revoked or expires (the
  leader's LeaseClock decides, Principle 2) the worker id is freed.
* Each worker id has a persisted **high-water mark** ``hwm_ms``: the largest time
  reservation any holder committed (acquire and every renewal raise it to the
  holder's ``reserve_ms``). A holder issues timestamps in ``(floor_ms, ceiling_ms]``,
  where ``floor_ms`` is the mark when it acquired and ``ceiling_ms`` its latest
  committed reservation; so successive holders of one worker id never share a
  timestamp, whatever their clocks say. The mark survives releases, expiries,
  snapshots and restarts.
* A **tag** (segment mode) has a ``max_id``; ``ids_segment`` adds ``step`` to it
  atomically and answers the segment ``[max_id + 1, max_id + step]``.

Bad input changes nothing and every collection has a named bound (:class:`IdsLimits`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from synod.codes import status_of
from synod.ids.layout import UNIX_MS_MAX, WORKER_BITS_MAX, Layout
from synod.services.commands import INT64_MAX, read_int, require_fields
from synod.services.errors import InvalidArgument, LimitExceeded, ServiceError

__all__ = [
    "IDS_OP_KINDS",
    "IDS_READ_KINDS",
    "GeneratorDef",
    "GeneratorNotFound",
    "IdsLimits",
    "IdsTable",
    "WorkerLeaseLost",
    "ids_acquire_op",
    "ids_define_op",
    "ids_get_op",
    "ids_list_op",
    "ids_release_op",
    "ids_renew_op",
    "ids_segment_op",
]

# Generator and tag names: what fits a URL path segment and a metric label.
NAME_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True, slots=True)
class IdsLimits:
    """Bounds of the ids service (replicated: every member must use the same)."""

    generators_max: int = 1_000
    tags_max: int = 10_000
    worker_leases_max: int = 65_536  # live worker leases, all generators together
    segment_step_min: int = 1
    segment_step_max: int = 10_000_000
    list_items_max: int = 1_000  # generators or tags in one ids_list answer

    def __post_init__(self) -> None:
        """Raises ValueError naming the misfit."""
        for name in self.__slots__:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.segment_step_min > self.segment_step_max:
            raise ValueError("segment_step_min must not exceed segment_step_max")


class GeneratorNotFound(ServiceError):
    """No generator of that name is defined."""

    code: ClassVar[str] = "generator-not-found"
    http_status: ClassVar[int] = status_of(code)


class WorkerLeaseLost(ServiceError):
    """The worker lease is gone or was granted again (another fencing epoch)."""

    code: ClassVar[str] = "worker-lease-lost"
    http_status: ClassVar[int] = status_of(code)


class GeneratorConflict(ServiceError):
    """A generator of that name exists with another definition."""

    code: ClassVar[str] = "already-exists"
    http_status: ClassVar[int] = status_of(code)


@dataclass(frozen=True, slots=True)
class GeneratorDef:
    """A defined generator: its layout and the worker ids its instances may lease."""

    name: str
    layout: Layout
    worker_min: int
    worker_max: int

    def __post_init__(self) -> None:
        """Raises ValueError for a worker range outside the layout."""
        if not 0 <= self.worker_min <= self.worker_max <= self.layout.worker_max:
            raise ValueError(
                f"worker range [{self.worker_min}, {self.worker_max}] must lie in "
                f"[0, {self.layout.worker_max}]"
            )

    def to_dict(self) -> dict[str, Any]:
        """msgpack/JSON form. Raises nothing."""
        return {"name": self.name, **self.layout.to_dict(), "worker_min": self.worker_min,
                "worker_max": self.worker_max}  # fmt: skip


@dataclass(slots=True)
class _Worker:
    worker: int
    epoch: int
    lease_id: int


@dataclass(slots=True)
class _Generator:
    definition: GeneratorDef
    next_epoch: int = 1
    live: dict[int, _Worker] = field(default_factory=dict)  # worker id -> lease
    hwm_ms: dict[int, int] = field(default_factory=dict)  # worker id -> high-water mark


def _name(op: dict[str, Any], field_name: str) -> str:
    value = op.get(field_name)
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise InvalidArgument(
            f"field {field_name!r} must match {NAME_PATTERN.pattern} (a generator or tag name)"
        )
    return value


class IdsTable:
    """The replicated ids state. ``lease_exists`` answers whether a Synod lease is live."""

    def __init__(self, lease_exists: Callable[[int], bool], limits: IdsLimits | None = None):
        """Create the empty table. Raises nothing."""
        self.limits = limits or IdsLimits()
        self._lease_exists = lease_exists
        self._generators: dict[str, _Generator] = {}
        self._tags: dict[str, int] = {}  # tag -> max_id
        self._by_lease: dict[int, set[tuple[str, int]]] = {}
        assert not self._generators and not self._tags

    @property
    def live_workers(self) -> int:
        """Live worker leases of all generators. Raises nothing."""
        return sum(len(gen.live) for gen in self._generators.values())

    def ops(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        """The op handlers by kind, for the state machine. Raises nothing."""
        handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "ids_define": self.define,
            "ids_acquire": self.acquire,
            "ids_renew": self.renew,
            "ids_release": self.release,
            "ids_segment": self.segment,
        }
        assert set(handlers) == set(IDS_OP_KINDS)
        return handlers

    # -- writes ----------------------------------------------------------------------------

    def define(self, op: dict[str, Any]) -> dict[str, Any]:
        """Define a generator (idempotent for the same definition). Raises
        InvalidArgument, GeneratorConflict, LimitExceeded (generators_max)."""
        layout_fields = ("time_bits", "worker_bits", "sequence_bits", "epoch_ms")
        require_fields(op, ("name",), (*layout_fields, "worker_min", "worker_max"))
        name = _name(op, "name")
        given = {f: read_int(op, f, maximum=UNIX_MS_MAX) for f in layout_fields if f in op}
        try:
            layout = Layout.from_dict(given)
            worker_max = read_int(op, "worker_max", layout.worker_max, maximum=2**WORKER_BITS_MAX)
            definition = GeneratorDef(name, layout, read_int(op, "worker_min", 0), worker_max)
        except ValueError as error:
            raise InvalidArgument(str(error)) from None
        existing = self._generators.get(name)
        if existing is not None:
            if existing.definition != definition:
                raise GeneratorConflict(
                    f"generator {name!r} exists with another definition", generator=name
                )
            return {"generator": definition.to_dict(), "created": False}
        if len(self._generators) >= self.limits.generators_max:
            raise LimitExceeded(f"generators_max={self.limits.generators_max} generators exist",
                                limit="generators_max", max=self.limits.generators_max)  # fmt: skip
        self._generators[name] = _Generator(definition)
        assert len(self._generators) <= self.limits.generators_max
        return {"generator": definition.to_dict(), "created": True}

    def acquire(self, op: dict[str, Any]) -> dict[str, Any]:
        """Lease a free worker id of a generator to a live Synod lease. Picks the free id
        with the lowest high-water mark (never used ones first, then the lowest id), so
        a holder rarely waits for its floor. Raises InvalidArgument, GeneratorNotFound,
        NotFound-like WorkerLeaseLost (the Synod lease is not live), LimitExceeded."""
        require_fields(op, ("name", "lease", "reserve_ms"))
        gen = self._generator(op)
        lease_id = read_int(op, "lease", minimum=1)
        reserve_ms = read_int(op, "reserve_ms", maximum=UNIX_MS_MAX)
        if not self._lease_exists(lease_id):
            raise WorkerLeaseLost(f"lease {lease_id} is not live", lease=lease_id)
        if self.live_workers >= self.limits.worker_leases_max:
            raise LimitExceeded(
                f"worker_leases_max={self.limits.worker_leases_max} worker leases are live",
                limit="worker_leases_max", max=self.limits.worker_leases_max,
            )  # fmt: skip
        definition = gen.definition
        free = [w for w in range(definition.worker_min, definition.worker_max + 1)
                if w not in gen.live]  # fmt: skip
        if not free:
            size = definition.worker_max - definition.worker_min + 1
            raise LimitExceeded(
                f"all {size} worker ids of {definition.name!r} are leased",
                limit="worker_ids", max=size, generator=definition.name,
            )  # fmt: skip
        worker = min(free, key=lambda w: (w in gen.hwm_ms, gen.hwm_ms.get(w, 0), w))
        floor_ms = gen.hwm_ms.get(worker, 0)
        ceiling_ms = max(floor_ms, reserve_ms)
        record = _Worker(worker, gen.next_epoch, lease_id)
        gen.next_epoch += 1
        gen.live[worker] = record
        gen.hwm_ms[worker] = ceiling_ms
        self._by_lease.setdefault(lease_id, set()).add((definition.name, worker))
        assert gen.hwm_ms[worker] >= floor_ms
        return self._grant(definition.name, record, floor_ms, ceiling_ms)

    def renew(self, op: dict[str, Any]) -> dict[str, Any]:
        """Raise a held worker's high-water mark to ``reserve_ms`` (the answer's
        ``ceiling_ms`` is the new mark). Raises InvalidArgument, GeneratorNotFound,
        WorkerLeaseLost (not held under that epoch)."""
        require_fields(op, ("name", "worker", "epoch", "reserve_ms"))
        gen = self._generator(op)
        record = self._held(gen, op)
        reserve_ms = read_int(op, "reserve_ms", maximum=UNIX_MS_MAX)
        floor_ms = gen.hwm_ms.get(record.worker, 0)
        ceiling_ms = max(floor_ms, reserve_ms)
        gen.hwm_ms[record.worker] = ceiling_ms
        assert ceiling_ms >= floor_ms
        return self._grant(gen.definition.name, record, floor_ms, ceiling_ms)

    def release(self, op: dict[str, Any]) -> dict[str, Any]:
        """Give a worker id back (its mark stays). Raises InvalidArgument,
        GeneratorNotFound, WorkerLeaseLost (not held under that epoch)."""
        require_fields(op, ("name", "worker", "epoch"))
        gen = self._generator(op)
        record = self._held(gen, op)
        self._free(gen.definition.name, record)
        assert record.worker not in gen.live
        return {"generator": gen.definition.name, "worker": record.worker, "released": True}

    def segment(self, op: dict[str, Any]) -> dict[str, Any]:
        """Take ``step`` IDs of a tag: ``[start, end]``. Raises InvalidArgument (step out
        of [segment_step_min, segment_step_max], the tag exhausted 2^63 - 1),
        LimitExceeded (tags_max)."""
        require_fields(op, ("tag", "step"))
        tag = _name(op, "tag")
        limits = self.limits
        step = read_int(op, "step", minimum=limits.segment_step_min,
                        maximum=limits.segment_step_max)  # fmt: skip
        max_id = self._tags.get(tag)
        if max_id is None and len(self._tags) >= limits.tags_max:
            raise LimitExceeded(f"tags_max={limits.tags_max} tags exist", limit="tags_max",
                                max=limits.tags_max)  # fmt: skip
        start = (max_id or 0) + 1
        end = start + step - 1
        if end > INT64_MAX:
            raise InvalidArgument(f"tag {tag!r} would pass 2^63 - 1", tag=tag)
        self._tags[tag] = end
        assert start <= end and len(self._tags) <= limits.tags_max
        return {"tag": tag, "start": start, "end": end}

    def release_lease(self, lease_id: int) -> int:
        """The Synod lease was revoked or expired: free its worker ids. Returns how
        many. Raises nothing."""
        held = sorted(self._by_lease.get(lease_id, ()))
        for name, worker in held:  # bound: worker_leases_max
            self._free(name, self._generators[name].live[worker])
        assert lease_id not in self._by_lease
        return len(held)

    # -- reads -----------------------------------------------------------------------------

    def read(self, op: dict[str, Any]) -> dict[str, Any]:
        """Serve ``ids_get`` (one generator with its live workers and marks) or
        ``ids_list`` (generators and tags, at most list_items_max each). Raises
        InvalidArgument, GeneratorNotFound."""
        if op.get("kind") == "ids_get":
            require_fields(op, ("name",))
            gen = self._generator(op)
            workers = [{"worker": w.worker, "epoch": w.epoch, "lease": w.lease_id,
                        "hwm_ms": gen.hwm_ms[w.worker]}
                       for w in sorted(gen.live.values(), key=lambda w: w.worker)]  # fmt: skip
            return {"generator": gen.definition.to_dict(), "workers": workers}
        require_fields(op, ())
        items_max = self.limits.list_items_max
        generators = [
            {**gen.definition.to_dict(), "workers_leased": len(gen.live),
             "hwm_ms": max(gen.hwm_ms.values(), default=0)}
            for _name_, gen in sorted(self._generators.items())[:items_max]
        ]  # fmt: skip
        tags = [{"tag": tag, "max_id": max_id}
                for tag, max_id in sorted(self._tags.items())[:items_max]]  # fmt: skip
        assert len(generators) <= items_max and len(tags) <= items_max
        return {"generators": generators, "tags": tags}

    # -- helpers ---------------------------------------------------------------------------

    def _generator(self, op: dict[str, Any]) -> _Generator:
        name = _name(op, "name")
        gen = self._generators.get(name)
        if gen is None:
            raise GeneratorNotFound(f"generator {name!r} is not defined", generator=name)
        assert gen.definition.name == name
        return gen

    def _held(self, gen: _Generator, op: dict[str, Any]) -> _Worker:
        worker = read_int(op, "worker", maximum=2**WORKER_BITS_MAX)
        epoch = read_int(op, "epoch", minimum=1)
        record = gen.live.get(worker)
        if record is None or record.epoch != epoch:
            raise WorkerLeaseLost(
                f"worker {worker} of {gen.definition.name!r} is not held under epoch {epoch} "
                "(its lease expired, or it was released or granted again)",
                generator=gen.definition.name, worker=worker, epoch=epoch,
            )  # fmt: skip
        assert record.worker == worker
        return record

    def _free(self, name: str, record: _Worker) -> None:
        gen = self._generators[name]
        del gen.live[record.worker]
        holders = self._by_lease[record.lease_id]
        holders.discard((name, record.worker))
        if not holders:
            del self._by_lease[record.lease_id]
        assert record.worker in gen.hwm_ms

    @staticmethod
    def _grant(name: str, record: _Worker, floor_ms: int, ceiling_ms: int) -> dict[str, Any]:
        assert floor_ms <= ceiling_ms
        return {"generator": name, "worker": record.worker, "epoch": record.epoch,
                "lease": record.lease_id, "floor_ms": floor_ms,
                "ceiling_ms": ceiling_ms}  # fmt: skip

    # -- snapshot --------------------------------------------------------------------------

    def to_snapshot(self) -> dict[str, Any]:
        """Deterministic msgpack-able form (sorted). Raises nothing."""
        generators = [
            {"def": gen.definition.to_dict(), "next_epoch": gen.next_epoch,
             "live": [[w.worker, w.epoch, w.lease_id]
                      for w in sorted(gen.live.values(), key=lambda w: w.worker)],
             "hwm": [[worker, ms] for worker, ms in sorted(gen.hwm_ms.items())]}
            for _name_, gen in sorted(self._generators.items())
        ]  # fmt: skip
        data = {"generators": generators, "tags": [[t, m] for t, m in sorted(self._tags.items())]}
        assert len(generators) <= self.limits.generators_max
        return data

    def restore(self, data: dict[str, Any] | None) -> None:
        """Replace the content with a :meth:`to_snapshot` form (None: empty, a snapshot
        of a version without ids). Raises InvalidArgument if malformed (unchanged)."""
        generators: dict[str, _Generator] = {}
        by_lease: dict[int, set[tuple[str, int]]] = {}
        try:
            for item in (data or {}).get("generators", []):
                fields = dict(item["def"])
                name = str(fields.pop("name"))
                worker_min, worker_max = (
                    int(fields.pop("worker_min")),
                    int(fields.pop("worker_max")),
                )
                gen = _Generator(GeneratorDef(name, Layout.from_dict(fields), worker_min,
                                              worker_max), int(item["next_epoch"]))  # fmt: skip
                for worker, epoch, lease_id in item["live"]:
                    gen.live[int(worker)] = _Worker(int(worker), int(epoch), int(lease_id))
                    by_lease.setdefault(int(lease_id), set()).add((name, int(worker)))
                gen.hwm_ms = {int(worker): int(ms) for worker, ms in item["hwm"]}
                generators[name] = gen
            tags = {str(tag): int(max_id) for tag, max_id in (data or {}).get("tags", [])}
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgument(f"malformed ids snapshot: {type(exc).__name__}") from None
        if len(generators) > self.limits.generators_max or len(tags) > self.limits.tags_max:
            raise InvalidArgument("ids snapshot exceeds generators_max or tags_max")
        self._generators, self._tags, self._by_lease = generators, tags, by_lease


IDS_OP_KINDS: Final = ("ids_define", "ids_acquire", "ids_renew", "ids_release", "ids_segment")
IDS_READ_KINDS: Final = ("ids_get", "ids_list")


# -- op builders (the reference for the op formats) ----------------------------------------


def ids_define_op(name: str, layout: Layout | None = None, worker_min: int = 0,
                  worker_max: int | None = None) -> dict[str, Any]:  # fmt: skip
    """``ids_define``: define generator ``name``. Raises nothing."""
    layout = layout or Layout()
    op: dict[str, Any] = {"kind": "ids_define", "name": name, **layout.to_dict(),
                          "worker_min": worker_min}  # fmt: skip
    op["worker_max"] = layout.worker_max if worker_max is None else worker_max
    assert op["worker_min"] <= op["worker_max"]
    return op


def ids_acquire_op(name: str, lease_id: int, reserve_ms: int) -> dict[str, Any]:
    """``ids_acquire``: lease a worker id of ``name`` to ``lease_id``. Raises nothing."""
    assert lease_id > 0 and reserve_ms >= 0
    return {"kind": "ids_acquire", "name": name, "lease": lease_id, "reserve_ms": reserve_ms}


def ids_renew_op(name: str, worker: int, epoch: int, reserve_ms: int) -> dict[str, Any]:
    """``ids_renew``: raise a held worker's mark to ``reserve_ms``. Raises nothing."""
    assert worker >= 0 and epoch >= 1
    return {"kind": "ids_renew", "name": name, "worker": worker, "epoch": epoch,
            "reserve_ms": reserve_ms}  # fmt: skip


def ids_release_op(name: str, worker: int, epoch: int) -> dict[str, Any]:
    """``ids_release``: give a worker id back. Raises nothing."""
    assert worker >= 0 and epoch >= 1
    return {"kind": "ids_release", "name": name, "worker": worker, "epoch": epoch}


def ids_segment_op(tag: str, step: int) -> dict[str, Any]:
    """``ids_segment``: take ``step`` IDs of ``tag``. Raises nothing."""
    assert step >= 1
    return {"kind": "ids_segment", "tag": tag, "step": step}


def ids_get_op(name: str) -> dict[str, Any]:
    """Read ``ids_get``: one generator and its live workers. Raises nothing."""
    return {"kind": "ids_get", "name": name}


def ids_list_op() -> dict[str, Any]:
    """Read ``ids_list``: every generator and tag (bounded). Raises nothing."""
    return {"kind": "ids_list"}
