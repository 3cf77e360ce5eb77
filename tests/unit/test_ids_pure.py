"""The pure ID generators: layouts, snowflake issuing under clock jumps, UUIDv7, segments."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synod.ids import (
    ClockRollback,
    Layout,
    SegmentBuffer,
    SegmentExhausted,
    SnowflakeGenerator,
    StepPolicy,
    Uuid7Generator,
    WorkerLeaseLost,
    decode,
    decode_uuid7,
    grant_from_answer,
    uuid7,
)
from synod.ids.layout import EPOCH_MS_DEFAULT
from tests.unit.ids_helpers import WALL_START_MS, FakeClock

TTL_MS = 10_000


def _install(gen: SnowflakeGenerator, clock: FakeClock, worker: int = 5, epoch: int = 1,
             floor_ms: int = 0, ceiling_ms: int | None = None) -> None:  # fmt: skip
    answer = {"generator": "orders", "worker": worker, "epoch": epoch, "lease": 7,
              "floor_ms": floor_ms,
              "ceiling_ms": clock.wall + TTL_MS if ceiling_ms is None else ceiling_ms}  # fmt: skip
    gen.install(grant_from_answer(answer, sent_mono_ms=clock.mono, ttl_ms=TTL_MS))


layouts = st.tuples(st.integers(1, 45), st.integers(1, 16), st.integers(1, 20)).filter(
    lambda bits: sum(bits) <= 63
)


@settings(deadline=None)
@given(layouts, st.data())
def test_encode_decode_round_trip(bits: tuple[int, int, int], data: st.DataObject) -> None:
    layout = Layout(*bits)
    timestamp = data.draw(st.integers(layout.epoch_ms, layout.last_ms))
    worker = data.draw(st.integers(0, layout.worker_max))
    sequence = data.draw(st.integers(0, layout.sequence_max))
    value = layout.encode(timestamp, worker, sequence)
    assert 0 <= value < 2**63
    parts = layout.decode(value)
    assert (parts.timestamp_ms, parts.worker, parts.sequence) == (timestamp, worker, sequence)


@settings(deadline=None)
@given(st.tuples(st.integers(1, 60), st.integers(1, 16), st.integers(1, 60)))
def test_layouts_beyond_63_bits_are_refused(bits: tuple[int, int, int]) -> None:
    if sum(bits) <= 63:
        assert Layout(*bits).time_shift == bits[1] + bits[2]
    else:
        with pytest.raises(ValueError, match="exceeds 63"):
            Layout(*bits)


def test_layout_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="worker_bits"):
        Layout(30, 17, 12)
    with pytest.raises(ValueError, match="time_bits"):
        Layout(0, 10, 12)
    with pytest.raises(ValueError, match="epoch_ms"):
        Layout(epoch_ms=-1)
    with pytest.raises(ValueError, match="outside"):
        Layout().encode(EPOCH_MS_DEFAULT - 1, 0, 0)
    with pytest.raises(ValueError, match="outside"):
        Layout().encode(EPOCH_MS_DEFAULT, 1024, 0)
    with pytest.raises(ValueError, match="unknown layout fields"):
        Layout.from_dict({"bits": 3})
    assert Layout.from_dict(Layout(39, 8, 16).to_dict()) == Layout(39, 8, 16)


# Clock moves: forward, standing still, small steps back, big jumps back.
moves = st.lists(
    st.tuples(st.sampled_from(["fwd", "still", "back_small", "back_big"]), st.integers(0, 40),
              st.integers(1, 5000)),
    min_size=1, max_size=60,
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(moves)
def test_snowflake_ids_grow_under_any_clock_jumps(steps: list[tuple[str, int, int]]) -> None:
    clock = FakeClock()
    gen = SnowflakeGenerator(Layout(41, 10, 4), clock, rollback_wait_ms_max=20)
    _install(gen, clock, ceiling_ms=WALL_START_MS + 10**9)
    issued: list[int] = []
    for move, amount, count in steps:
        if move == "fwd":
            clock.advance(amount)
        elif move == "back_small":
            clock.wall -= amount % 21
        elif move == "back_big":
            clock.wall -= 21 + amount
        clock.mono = min(clock.mono, TTL_MS // 2)  # keep the lease safe
        try:
            if count % 3 == 0:  # single IDs take the fast path within a millisecond
                issued.extend(gen.next() for _ in range(count % 40))
            else:
                issued.extend(gen.next_many(count))
        except ClockRollback as error:
            assert move == "back_big" or issued, error
            assert error.details["behind_ms"] > 20
    assert issued == sorted(set(issued)), "unique and strictly increasing"
    for value in issued:
        assert gen.layout.decode(value).worker == 5


def test_small_rollback_is_waited_out_and_big_one_refused() -> None:
    clock = FakeClock()
    gen = SnowflakeGenerator(Layout(), clock, rollback_wait_ms_max=50)
    _install(gen, clock)
    first = gen.next()
    clock.wall -= 30
    second = gen.next()
    assert second > first and clock.sleeps == [30] and gen.rollbacks_waited == 1
    clock.wall -= 1000
    with pytest.raises(ClockRollback, match="rollback_wait_ms_max=50"):
        gen.next()
    assert gen.rollbacks_refused == 1
    clock.wall += 2000
    assert gen.next() > second


def test_issuing_stops_at_safe_until_and_beyond_the_reservation() -> None:
    clock = FakeClock()
    gen = SnowflakeGenerator(Layout(), clock)
    with pytest.raises(WorkerLeaseLost, match="no worker lease"):
        gen.next()
    _install(gen, clock)
    assert not gen.renew_due()
    clock.advance(TTL_MS // 3)
    assert gen.renew_due()
    gen.next()
    clock.advance(TTL_MS * 3 // 4 - TTL_MS // 3)
    with pytest.raises(WorkerLeaseLost, match="safe_until"):
        gen.next()
    # A renewal of the same worker and epoch extends it.
    _install(gen, clock)
    gen.next()
    # The wall clock jumps beyond the committed reservation: refuse until renewed.
    clock.wall += 2 * TTL_MS
    assert gen.renew_due()
    with pytest.raises(WorkerLeaseLost, match="reservation"):
        gen.next()


def test_a_new_worker_starts_above_its_floor_and_everything_issued() -> None:
    clock = FakeClock()
    gen = SnowflakeGenerator(Layout(), clock)
    _install(gen, clock, worker=5)
    before = gen.next_many(10)
    # The new worker's previous holder reserved 20 ms ahead of our clock: wait it out.
    _install(gen, clock, worker=9, epoch=2, floor_ms=clock.wall + 20)
    after = gen.next()
    assert after > before[-1]
    assert decode(after).timestamp_ms == WALL_START_MS + 21  # type: ignore[union-attr]
    # Same floor, 10 s ahead: beyond rollback_wait_ms_max.
    _install(gen, clock, worker=11, epoch=3, floor_ms=clock.wall + 10_000)
    with pytest.raises(ClockRollback):
        gen.next()


def test_full_millisecond_waits_for_the_next() -> None:
    clock = FakeClock()
    gen = SnowflakeGenerator(Layout(41, 10, 2), clock)
    _install(gen, clock)
    ids = gen.next_many(10)  # 4 per millisecond
    parts = [gen.layout.decode(value) for value in ids]
    assert [p.sequence for p in parts] == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert parts[-1].timestamp_ms == WALL_START_MS + 2
    with pytest.raises(ValueError, match="count"):
        gen.next_many(0)


@settings(deadline=None)
@given(st.lists(st.integers(-5, 3), min_size=1, max_size=300))
def test_uuid7_strictly_increases_under_clock_steps(steps: list[int]) -> None:
    now = [WALL_START_MS]
    counters = iter(range(10**6))
    gen = Uuid7Generator(lambda: now[0], lambda bits: next(counters) % (1 << bits))
    out = []
    highest = WALL_START_MS
    for step in steps:
        now[0] += step
        highest = max(highest, now[0])
        out.append(gen.next())
    assert out == sorted(set(out))
    assert [uuid.UUID(u).int for u in out] == sorted(uuid.UUID(u).int for u in out)
    for text in out:
        parts = decode_uuid7(text)
        assert uuid.UUID(text).version == 7
        assert parts.timestamp_ms <= highest


def test_uuid7_counter_overflow_moves_the_timestamp() -> None:
    gen = Uuid7Generator(lambda: 1000, lambda bits: (1 << bits) - 1)
    first, second = gen.next(), gen.next()
    assert decode_uuid7(first).timestamp_ms == 1000
    # The seed is 2^41 - 1 (top bit clear): 2^41 increments fit before an overflow.
    assert decode_uuid7(second).counter == decode_uuid7(first).counter + 1
    gen._counter = (1 << 42) - 1
    third = gen.next()
    assert decode_uuid7(third).timestamp_ms == 1001 and third > second
    assert isinstance(decode(uuid7()), type(decode_uuid7(uuid7())))
    with pytest.raises(ValueError, match="not a UUIDv7"):
        decode_uuid7(str(uuid.uuid4()))


@settings(deadline=None)
@given(st.lists(st.integers(1, 700), min_size=1, max_size=80))
def test_segment_buffer_hands_out_dense_increasing_ids(counts: list[int]) -> None:
    policy = StepPolicy(step_initial=100, step_min=100, step_max=800, grow_below_ms=10,
                        shrink_above_ms=1000, prefetch_share=0.5)  # fmt: skip
    buffer = SegmentBuffer("inv", policy)
    max_id, now_ms = 0, 0
    issued: list[int] = []
    for count in counts:  # bound: the list
        now_ms += 3
        for _fetch in range(20):  # bound: enough segments for count
            if not buffer.wants_fetch() and buffer.remaining() >= count:
                break
            if buffer.buffered >= 2:
                break
            step = buffer.step_for_fetch(now_ms)
            assert policy.step_min <= step <= policy.step_max
            buffer.install(max_id + 1, max_id + step, now_ms)
            max_id += step
        try:
            issued.extend(buffer.next_many(count))
        except SegmentExhausted:
            assert buffer.remaining() < count
    assert issued == sorted(set(issued))
    assert issued == list(range(1, len(issued) + 1)), "dense: one client, no restart"


def test_step_policy_adapts_within_bounds() -> None:
    policy = StepPolicy(step_initial=1000, step_min=500, step_max=4000)
    assert policy.next_step(1000, 60_000) == 2000
    assert policy.next_step(4000, 60_000) == 4000
    assert policy.next_step(1000, 20 * 60_000) == 1000
    assert policy.next_step(1000, 40 * 60_000) == 500
    assert policy.next_step(500, 40 * 60_000) == 500
    with pytest.raises(ValueError, match="step_min"):
        StepPolicy(step_initial=10, step_min=20)
    with pytest.raises(ValueError, match="prefetch_share"):
        StepPolicy(prefetch_share=2.0)
    buffer = SegmentBuffer("t")
    buffer.install(1, 10, 0)
    with pytest.raises(ValueError, match="not above"):
        buffer.install(5, 20, 0)
