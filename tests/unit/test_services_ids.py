"""The replicated ids service through the real state machine: definitions, worker
leases (fencing, bound to Synod leases, freed on expiry), high-water marks, segments,
snapshots, bounds; and a model run of generators on re-leased worker ids."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from synod.checker.ids import IssuedId, check_ids
from synod.ids import ClockRollback, Layout, SnowflakeGenerator, WorkerLeaseLost, grant_from_answer
from synod.services.commands import encode_command, lease_expire_op, lease_grant_op
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
from synod.services.state import ServiceStateMachine
from tests.unit.ids_helpers import WALL_START_MS, FakeClock

TTL_MS = 1_000


class Machine:
    """A state machine fed ops at increasing indexes."""

    def __init__(self) -> None:
        self.sm = ServiceStateMachine()
        self.index = 0

    def apply(self, op: dict[str, Any]) -> dict[str, Any]:
        self.index += 1
        return self.sm.apply(self.index, encode_command(op))

    def ok(self, op: dict[str, Any]) -> dict[str, Any]:
        result = self.apply(op)
        assert result["ok"], result
        return result

    def error(self, op: dict[str, Any], code: str) -> dict[str, Any]:
        before = self.sm.snapshot()
        result = self.apply(op)
        assert not result["ok"] and result["error"]["code"] == code, result
        after = msgpack.unpackb(self.sm.snapshot())
        expected = msgpack.unpackb(before)
        expected["applied_index"] = after["applied_index"]
        assert after == expected, "a refused op changes nothing"
        return result["error"]

    def lease(self) -> int:
        lease_id = self.ok(lease_grant_op(TTL_MS))["id"]
        assert isinstance(lease_id, int)
        return lease_id


def test_define_is_idempotent_and_validated() -> None:
    m = Machine()
    created = m.ok(ids_define_op("orders"))
    assert created["created"] and created["generator"]["worker_bits"] == 10
    assert not m.ok(ids_define_op("orders"))["created"]
    m.error(ids_define_op("orders", Layout(40, 10, 12)), "already-exists")
    m.error({"kind": "ids_define", "name": "x", "time_bits": 50, "worker_bits": 10,
             "sequence_bits": 12}, "invalid-argument")  # fmt: skip
    m.error({"kind": "ids_define", "name": "bad/name"}, "invalid-argument")
    m.error({"kind": "ids_define", "name": "y", "worker_max": 5000}, "invalid-argument")
    m.error({"kind": "ids_define", "name": "y", "color": 1}, "invalid-argument")
    m.error(ids_acquire_op("nope", 1, 0), "generator-not-found")
    listing = m.sm.read(ids_list_op())
    assert [g["name"] for g in listing["generators"]] == ["orders"]


def test_worker_leases_are_exclusive_fenced_and_freed_with_their_lease() -> None:
    m = Machine()
    m.ok(ids_define_op("g", Layout(41, 1, 12)))  # worker ids 0 and 1
    lease_a, lease_b, lease_c = m.lease(), m.lease(), m.lease()
    first = m.ok(ids_acquire_op("g", lease_a, WALL_START_MS + 1000))
    second = m.ok(ids_acquire_op("g", lease_b, WALL_START_MS + 500))
    assert {first["worker"], second["worker"]} == {0, 1}
    assert second["epoch"] > first["epoch"] and first["floor_ms"] == 0
    error = m.error(ids_acquire_op("g", lease_c, WALL_START_MS), "limit-exceeded")
    assert error["limit"] == "worker_ids"
    m.error(ids_acquire_op("g", 999, WALL_START_MS), "worker-lease-lost")
    # Renew raises the mark; a wrong epoch is fenced off.
    renewed = m.ok(ids_renew_op("g", first["worker"], first["epoch"], WALL_START_MS + 2000))
    assert renewed["ceiling_ms"] == WALL_START_MS + 2000
    lower = m.ok(ids_renew_op("g", first["worker"], first["epoch"], WALL_START_MS))
    assert lower["ceiling_ms"] == WALL_START_MS + 2000, "the mark never goes down"
    m.error(ids_renew_op("g", first["worker"], first["epoch"] + 7, 0), "worker-lease-lost")
    # The Synod lease expires: its worker id is free, and the next holder starts above
    # every reservation of the previous one.
    m.ok(lease_expire_op([lease_a]))
    m.error(ids_renew_op("g", first["worker"], first["epoch"], 0), "worker-lease-lost")
    third = m.ok(ids_acquire_op("g", lease_c, WALL_START_MS))
    assert third["worker"] == first["worker"] and third["epoch"] > second["epoch"]
    assert third["floor_ms"] == WALL_START_MS + 2000 == third["ceiling_ms"]
    # Release keeps the mark too.
    m.ok(ids_release_op("g", second["worker"], second["epoch"]))
    m.error(ids_release_op("g", second["worker"], second["epoch"]), "worker-lease-lost")
    workers = m.sm.read(ids_get_op("g"))["workers"]
    assert [w["worker"] for w in workers] == [third["worker"]]


def test_acquire_prefers_unused_then_lowest_mark() -> None:
    m = Machine()
    m.ok(ids_define_op("g", Layout(41, 2, 12), worker_min=1, worker_max=3))
    leases = [m.lease() for _ in range(3)]
    grants = [m.ok(ids_acquire_op("g", lease, WALL_START_MS + 100 * (3 - i)))
              for i, lease in enumerate(leases)]  # fmt: skip
    assert [g["worker"] for g in grants] == [1, 2, 3]
    for lease in leases:
        m.ok({"kind": "lease_revoke", "id": lease})
    again = m.ok(ids_acquire_op("g", m.lease(), 0))
    assert again["worker"] == 3 and again["floor_ms"] == WALL_START_MS + 100


def test_segments_are_dense_per_tag_and_bounded() -> None:
    m = Machine()
    assert (m.ok(ids_segment_op("inv", 10))["start"], m.ok(ids_segment_op("inv", 5))["end"]) == (
        1, 15)  # fmt: skip
    assert m.ok(ids_segment_op("other", 3))["start"] == 1
    m.error(ids_segment_op("inv", IdsLimits().segment_step_max + 1), "invalid-argument")
    m.error({"kind": "ids_segment", "tag": "inv", "step": 0}, "invalid-argument")
    tags = m.sm.read(ids_list_op())["tags"]
    assert tags == [{"tag": "inv", "max_id": 15}, {"tag": "other", "max_id": 3}]


def test_bounds_on_generators_and_tags() -> None:
    m = Machine()
    m.sm.ids.limits = IdsLimits(generators_max=2, tags_max=1)
    m.ok(ids_define_op("a"))
    m.ok(ids_define_op("b"))
    assert m.error(ids_define_op("c"), "limit-exceeded")["limit"] == "generators_max"
    m.ok(ids_segment_op("t", 1))
    assert m.error(ids_segment_op("u", 1), "limit-exceeded")["limit"] == "tags_max"


def test_snapshot_round_trip_keeps_marks_leases_and_tags() -> None:
    m = Machine()
    m.ok(ids_define_op("g", Layout(41, 3, 12)))
    lease = m.lease()
    grant = m.ok(ids_acquire_op("g", lease, WALL_START_MS + 5))
    m.ok(ids_segment_op("t", 42))
    data = m.sm.snapshot()
    other = ServiceStateMachine()
    other.restore(data)
    assert other.snapshot() == data
    assert other.read(ids_get_op("g"))["workers"][0]["hwm_ms"] == WALL_START_MS + 5
    # The restored table is bound to the restored leases: expiry frees the worker.
    other.apply(m.index + 1, encode_command(lease_expire_op([lease])))
    assert other.read(ids_get_op("g"))["workers"] == []
    renew = other.apply(m.index + 2, encode_command(
        ids_renew_op("g", grant["worker"], grant["epoch"], 0)))  # fmt: skip
    assert renew["error"]["code"] == "worker-lease-lost"
    # A snapshot of a version without ids restores to an empty table.
    old = msgpack.unpackb(data)
    del old["ids"]
    legacy = ServiceStateMachine()
    legacy.restore(msgpack.packb(old))
    assert legacy.read(ids_list_op())["generators"] == []


# -- a model run: instances with skewed, jumping clocks on two worker ids --------------------


@dataclass
class Instance:
    name: int
    clock: FakeClock
    gen: SnowflakeGenerator
    lease: int = 0
    paused: bool = False
    issued: list[IssuedId] = field(default_factory=list)


@dataclass
class World:
    m: Machine
    real_ms: int = 0
    deadlines: dict[int, int] = field(default_factory=dict)  # Synod lease -> expiry


def _tick(world: World, instances: list[Instance], ms: int) -> None:
    world.real_ms += ms
    for inst in instances:
        inst.clock.advance(ms)
    expired = sorted(lid for lid, dl in world.deadlines.items() if dl < world.real_ms)
    if expired:
        world.m.ok(lease_expire_op(expired))
        for lease_id in expired:
            del world.deadlines[lease_id]


def _renew_or_acquire(world: World, inst: Instance) -> None:
    m, gen, sent = world.m, inst.gen, inst.clock.mono
    grant = gen.grant
    if grant is not None and inst.lease in world.deadlines:
        world.deadlines[inst.lease] = world.real_ms + TTL_MS  # the keep-alive
        result = m.apply(ids_renew_op("g", grant.worker, grant.epoch, gen.reservation_ms()))
        if result["ok"]:
            gen.install(grant_from_answer(result, sent_mono_ms=sent, ttl_ms=TTL_MS,
                                          floor_ms=grant.floor_ms))  # fmt: skip
            return
    gen.drop()
    inst.lease = m.lease()
    world.deadlines[inst.lease] = world.real_ms + TTL_MS
    reserve = max(inst.clock.wall, 0) + TTL_MS
    result = m.apply(ids_acquire_op("g", inst.lease, reserve))
    if result["ok"]:
        gen.install(grant_from_answer(result, sent_mono_ms=sent, ttl_ms=TTL_MS))


actions = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from(["issue", "issue", "tick", "pause", "resume",
                                                  "jump_back", "jump_fwd"]),
              st.integers(1, 700)),
    min_size=60, max_size=150,
)  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from([0, 0, 0, 5, -5, 400, -400, 3000]), min_size=3, max_size=3), actions
)
def test_no_duplicates_when_paused_holders_lose_their_worker_ids(
    skews: list[int], steps: list[tuple[int, str, int]]
) -> None:
    world = World(Machine())
    spans: dict[tuple[int, int], tuple[int, int]] = {}  # (worker, epoch) -> ts range
    world.m.ok(ids_define_op("g", Layout(41, 1, 6)))  # two worker ids for three instances
    instances = []
    for i, skew in enumerate(skews):
        clock = FakeClock(wall=WALL_START_MS + skew)
        instances.append(Instance(i, clock, SnowflakeGenerator(Layout(41, 1, 6), clock)))
    for step, (who, action, amount) in enumerate(steps):
        inst = instances[who]
        if action == "tick":
            _tick(world, instances, amount)
        elif action == "pause":
            inst.paused = True
        elif action == "resume":
            inst.paused = False
        elif action == "jump_back":
            inst.clock.wall -= amount * 5
        elif action == "jump_fwd":
            inst.clock.wall += amount * 5
        elif not inst.paused and inst.gen.renew_due():
            # A live instance renews when due (a paused one does not, and its lease
            # expires under it; it still tries to issue: safe_until must stop it).
            _renew_or_acquire(world, inst)
        if action == "issue":
            try:
                values = inst.gen.next_many(amount % 50 + 1)
            except (WorkerLeaseLost, ClockRollback):
                continue
            inst.issued.extend(IssuedId(inst.name, v, step, step) for v in values)
            assert inst.gen.grant is not None
            epoch = inst.gen.grant.epoch
            for value in values:
                parts = inst.gen.layout.decode(value)
                low, high = spans.get((parts.worker, epoch), (parts.timestamp_ms, 0))
                spans[parts.worker, epoch] = (min(low, parts.timestamp_ms),
                                              max(high, parts.timestamp_ms))  # fmt: skip
    issued = [record for inst in instances for record in inst.issued]
    report = check_ids(issued)
    assert report.ok, report
    # Stronger than "no duplicate": holders of one worker id use disjoint time ranges,
    # in grant (epoch) order.
    for worker in (0, 1):
        ranges = sorted((epoch, span) for (w, epoch), span in spans.items() if w == worker)
        for (_e1, (_low1, high1)), (_e2, (low2, _high2)) in itertools.pairwise(ranges):
            assert high1 < low2, (worker, ranges)
