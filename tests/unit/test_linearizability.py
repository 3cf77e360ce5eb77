"""The linearizability checker: known-good, known-bad and generated histories."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from synod.checker.history import PENDING, Operation
from synod.checker.linearizability import Model, check
from synod.checker.models import (
    Cas,
    CompareAndSet,
    Delete,
    Get,
    KvModel,
    Put,
    Read,
    RegisterModel,
    Write,
)

KV = KvModel()


def op(
    client_id: int, call_time: int, return_time: int | None, input: object, output: object = None
) -> Operation:
    return Operation(client_id, call_time, return_time, input, output)


# ---------------------------------------------------------------- known good


def test_empty_history_is_linearizable() -> None:
    result = check(KV, [])
    assert result.ok is True
    assert result.partitions_count == 0


def test_sequential_history_is_linearizable() -> None:
    history = [
        op(1, 0, 1, Get("x"), None),
        op(1, 2, 3, Put("x", 1)),
        op(2, 4, 5, Get("x"), 1),
        op(2, 6, 7, Cas("x", 1, 2), True),
        op(1, 8, 9, Cas("x", 1, 3), False),
        op(1, 10, 11, Delete("x")),
        op(2, 12, 13, Get("x"), None),
        op(2, 14, 15, Cas("x", None, 4), True),
        op(1, 16, 17, Get("x"), 4),
    ]
    assert check(KV, history).ok is True


@pytest.mark.parametrize("seen", [None, 1])
def test_read_concurrent_with_write_may_see_either_value(seen: int | None) -> None:
    history = [op(1, 0, 10, Put("x", 1)), op(2, 5, 15, Get("x"), seen)]
    assert check(KV, history).ok is True


def test_reads_may_order_concurrent_writes_either_way() -> None:
    # Two overlapping writes; reads after both agree on the one linearized last.
    history = [
        op(1, 0, 10, Put("x", 1)),
        op(2, 0, 10, Put("x", 2)),
        op(3, 20, 30, Get("x"), 1),
        op(4, 40, 50, Get("x"), 1),
    ]
    assert check(KV, history).ok is True


def test_read_may_see_write_that_overlaps_it_at_one_instant() -> None:
    # A call at the very tick another returns counts as concurrent.
    history = [op(1, 0, 10, Put("x", 1)), op(2, 10, 12, Get("x"), None)]
    assert check(KV, history).ok is True


@pytest.mark.parametrize("seen", [None, 7])
def test_pending_write_may_or_may_not_have_taken_effect(seen: int | None) -> None:
    history = [op(1, 0, None, Put("x", 7)), op(2, 100, 110, Get("x"), seen)]
    assert check(KV, history).ok is True


def test_pending_write_may_take_effect_long_after_its_call() -> None:
    history = [
        op(1, 0, None, Put("x", 7)),
        op(2, 100, 110, Get("x"), None),
        op(2, 200, 210, Get("x"), 7),
        op(3, 300, 310, Put("x", 8)),
        op(2, 400, 410, Get("x"), 8),
    ]
    assert check(KV, history).ok is True


@pytest.mark.parametrize("seen", [1, 2])
def test_pending_cas_may_or_may_not_have_taken_effect(seen: int) -> None:
    history = [
        op(1, 0, 1, Put("x", 1)),
        op(2, 2, None, Cas("x", 1, 2), "ignored: the call never returned"),
        op(3, 100, 110, Get("x"), seen),
    ]
    assert check(KV, history).ok is True


def test_keys_are_independent() -> None:
    history = [
        op(1, 0, 10, Put("x", 1)),
        op(1, 0, 10, Put("y", 2)),
        op(2, 20, 30, Get("y"), 2),
        op(2, 20, 30, Get("x"), 1),
    ]
    result = check(KV, history)
    assert result.ok is True
    assert result.partitions_count == 2


def test_register_model_accepts_a_good_history() -> None:
    history = [
        op(1, 0, 10, Write(1)),
        op(2, 5, 15, Read(), 0),
        op(3, 12, 20, CompareAndSet(1, 2), True),
        op(1, 16, 25, CompareAndSet(1, 3), False),
        op(2, 30, 31, Read(), 2),
    ]
    assert check(RegisterModel(initial=0), history).ok is True


# ---------------------------------------------------------------- known bad


def assert_rejected(history: Sequence[Operation], culprit: Operation, text: str) -> str:
    """Check that the history is rejected, naming `culprit`, and return the explanation."""
    result = check(KV, history)
    assert result.ok is False, result.explanation
    assert result.unlinearizable == culprit, result.explanation
    assert text in result.explanation
    assert "NOT linearizable" in result.explanation
    assert result.partition_index is not None
    return result.explanation


def test_stale_read_after_completed_write_is_rejected() -> None:
    stale = op(3, 40, 50, Get("x"), 1)
    history = [op(1, 0, 10, Put("x", 1)), op(2, 20, 30, Put("x", 2)), stale]
    explanation = assert_rejected(history, stale, "get('x') -> 1")
    assert "put('x', 2)" in explanation  # The prefix shows the overwrite.


def test_lost_acknowledged_write_is_rejected() -> None:
    lost = op(2, 20, 30, Get("x"), None)
    assert_rejected([op(1, 0, 10, Put("x", 1)), lost], lost, "get('x') -> None")


def test_cas_succeeding_twice_from_the_same_expected_value_is_rejected() -> None:
    history = [
        op(1, 0, 5, Put("x", 0)),
        op(2, 10, 20, Cas("x", 0, 1), True),
        op(3, 12, 22, Cas("x", 0, 2), True),
    ]
    result = check(KV, history)
    assert result.ok is False
    assert result.unlinearizable in history[1:]
    assert "cas('x', 0," in result.explanation and "-> True" in result.explanation


def test_read_of_a_value_never_written_is_rejected() -> None:
    phantom = op(2, 5, 15, Get("x"), 99)
    assert_rejected([op(1, 0, 10, Put("x", 1)), phantom], phantom, "get('x') -> 99")


def test_non_monotonic_reads_across_real_time_order_are_rejected() -> None:
    # The first read saw the slow write, so it took effect before t=20; a read
    # that starts after that must see it too.
    history = [
        op(1, 0, 100, Put("x", 1)),
        op(2, 10, 20, Get("x"), 1),
        op(3, 30, 40, Get("x"), None),
    ]
    assert check(KV, history).ok is False


def test_pending_write_cannot_be_undone_once_observed() -> None:
    history = [
        op(1, 0, None, Put("x", 7)),
        op(2, 100, 110, Get("x"), 7),
        op(2, 200, 210, Get("x"), None),
    ]
    assert check(KV, history).ok is False


def test_explanation_names_the_failing_key_partition_only() -> None:
    stale = op(3, 40, 50, Get("y"), 1)
    history = [
        op(1, 0, 10, Put("x", 5)),
        op(1, 0, 10, Put("y", 1)),
        op(2, 20, 30, Put("y", 2)),
        op(2, 20, 30, Get("x"), 5),
        stale,
    ]
    result = check(KV, history)
    assert result.ok is False and result.partition_index == 1
    assert result.linearized_prefix == (history[1], history[2])
    assert "'x'" not in result.explanation


def test_explanation_shows_the_tail_of_a_long_prefix() -> None:
    stale = op(2, 1000, 1001, Get("x"), 3)
    history = [op(1, i * 10, i * 10 + 5, Put("x", i)) for i in range(30)] + [stale]
    result = check(KV, history)
    assert result.ok is False and len(result.linearized_prefix) == 30
    assert "... 10 earlier operations" in result.explanation
    assert "put('x', 29)" in result.explanation and "put('x', 9)" not in result.explanation


def test_explanation_lists_concurrent_rivals() -> None:
    bad = op(2, 20, 30, Get("x"), 5)
    history = [op(1, 0, 10, Put("x", 1)), bad, op(3, 25, 40, Get("x"), 8)]
    result = check(KV, history)
    assert result.ok is False and result.unlinearizable == bad
    assert "1 other operations not in the prefix" in result.explanation
    assert "client 3 [25..40] get('x') -> 8" in result.explanation


def test_register_model_rejects_a_bad_cas() -> None:
    history = [op(1, 0, 10, Write(1)), op(2, 20, 30, CompareAndSet(1, 2), False)]
    result = check(RegisterModel(initial=0), history)
    assert result.ok is False
    assert "cas(1, 2) -> False" in result.explanation


# ---------------------------------------------------------------- budget, errors


def concurrent_writes_then_bad_read(writers: int) -> list[Operation]:
    """Many overlapping writes followed by an impossible read: a hard negative."""
    history = [op(i, 0, 100, Put("x", i)) for i in range(writers)]
    history.append(op(99, 200, 300, Get("x"), -1))
    return history


def test_exhausted_budget_is_unknown_never_ok() -> None:
    result = check(KV, concurrent_writes_then_bad_read(12), search_steps_max=50)
    assert result.ok is None
    assert "UNKNOWN" in result.explanation and "search_steps_max=50" in result.explanation
    assert result.partition_index == 0
    assert result.search_steps <= 50


def test_definite_violation_wins_over_exhausted_budget() -> None:
    hard = concurrent_writes_then_bad_read(12)
    stale = op(3, 40, 50, Get("y"), None)
    result = check(KV, [*hard, op(1, 0, 10, Put("y", 1)), stale], search_steps_max=50)
    assert result.ok is False
    assert result.unlinearizable == stale


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="search_steps_max"):
        check(KV, [], search_steps_max=0)
    with pytest.raises(ValueError, match="does not know"):
        check(KV, [op(1, 0, 1, "frobnicate")])
    with pytest.raises(ValueError, match="does not know"):
        check(RegisterModel(), [op(1, 0, 1, "frobnicate")])


@dataclass(frozen=True)
class _ListModel(Model[Hashable]):
    """A broken model whose state is a list."""

    def init(self) -> Hashable:
        return []  # type: ignore[return-value]

    def step(self, state: Hashable, input: object, output: object) -> tuple[bool, Hashable]:
        return True, state


def test_unhashable_state_raises_type_error() -> None:
    with pytest.raises(TypeError):
        check(_ListModel(), [op(1, 0, 1, "anything")])


def test_model_defaults_describe_and_partition() -> None:
    model = _ListModel()
    assert model.describe("in", "out") == "'in' -> 'out'"
    assert model.partition([op(1, 0, 1, "a")]) == [[op(1, 0, 1, "a")]]
    assert not model.is_read_only("a", None)


# ---------------------------------------------------------------- generated histories


@dataclass(frozen=True)
class OpSpec:
    """One generated call: what it does and how its interval sits around its effect."""

    client_id: int
    kind: str
    key: int
    before_effect_ticks: int
    after_effect_ticks: int
    gap_ticks: int
    cas_hint: int
    pending: bool
    took_effect: bool


op_specs = st.builds(
    OpSpec,
    client_id=st.integers(0, 3),
    kind=st.sampled_from(["put", "get", "get", "delete", "cas"]),
    key=st.integers(0, 2),
    before_effect_ticks=st.integers(0, 6),
    after_effect_ticks=st.integers(0, 6),
    gap_ticks=st.integers(0, 3),
    cas_hint=st.integers(0, 2),
    pending=st.sampled_from([False, False, False, True]),
    took_effect=st.booleans(),
)

# One key, mostly writes and reads, spread out: stale-read candidates are common.
one_key_op_specs = st.builds(
    OpSpec,
    client_id=st.integers(0, 3),
    kind=st.sampled_from(["put", "put", "get", "get", "cas"]),
    key=st.just(0),
    before_effect_ticks=st.integers(0, 4),
    after_effect_ticks=st.integers(0, 4),
    gap_ticks=st.integers(0, 8),
    cas_hint=st.integers(0, 2),
    pending=st.sampled_from([False, False, False, False, True]),
    took_effect=st.booleans(),
)


@dataclass
class _Timed:
    """A generated call with its effect time, before outputs are known."""

    spec: OpSpec
    call_time: int
    effect_time: int
    return_time: int


def lay_out(specs: Sequence[OpSpec]) -> list[_Timed]:
    """Give each client's calls consecutive, non-overlapping intervals."""
    clock_of: dict[int, int] = {}
    timed = []
    for spec in specs:
        call_time = clock_of.get(spec.client_id, 0) + spec.gap_ticks
        effect_time = call_time + spec.before_effect_ticks
        return_time = effect_time + spec.after_effect_ticks
        clock_of[spec.client_id] = return_time + 1
        timed.append(_Timed(spec, call_time, effect_time, return_time))
    return timed


def run_against_dict(specs: Sequence[OpSpec]) -> list[Operation]:
    """Apply the calls to a real dict at their effect times and record what clients saw."""
    store: dict[Hashable, Hashable] = {}
    value_next = 1  # Every write writes a fresh value.
    history = []
    for timed in sorted(lay_out(specs), key=lambda t: t.effect_time):
        spec = timed.spec
        output: object = None
        current = store.get(spec.key)
        if spec.kind == "put":
            call: object = Put(spec.key, value_next)
        elif spec.kind == "get":
            call = Get(spec.key)
        elif spec.kind == "delete":
            call = Delete(spec.key)
        else:
            expected = [current, None, value_next - 1][spec.cas_hint]
            call = Cas(spec.key, expected, value_next)
        applies = not spec.pending or spec.took_effect
        if applies:
            output = apply(store, call)
        value_next += 1
        return_time = None if spec.pending else timed.return_time
        history.append(Operation(spec.client_id, timed.call_time, return_time, call, output))
    return history


def apply(store: dict[Hashable, Hashable], call: object) -> object:
    """The sequential reference semantics, independent of KvModel."""
    match call:
        case Put(key=key, value=value):
            store[key] = value
            return None
        case Get(key=key):
            return store.get(key)
        case Delete(key=key):
            store.pop(key, None)
            return None
        case Cas(key=key, expected=expected, new=new):
            if store.get(key) != expected:
                return False
            store[key] = new
            return True
    raise AssertionError(call)


GENERATED = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@GENERATED
@given(st.lists(op_specs, max_size=40))
def test_histories_of_a_real_dict_are_accepted(specs: list[OpSpec]) -> None:
    history = run_against_dict(specs)
    result = check(KV, history)
    assert result.ok is True, result.explanation


def completed_reads(history: Sequence[Operation]) -> list[int]:
    return [
        i
        for i, operation in enumerate(history)
        if isinstance(operation.input, Get) and not operation.is_pending
    ]


@GENERATED
@given(st.lists(op_specs, min_size=1, max_size=40), st.data())
def test_read_of_a_value_never_written_is_always_rejected(
    specs: list[OpSpec], data: st.DataObject
) -> None:
    history = run_against_dict(specs)
    reads = completed_reads(history)
    if not reads:
        return
    index = data.draw(st.sampled_from(reads))
    history[index] = Operation(
        history[index].client_id,
        history[index].call_time,
        history[index].return_time,
        history[index].input,
        -1,  # Values written are positive.
    )
    result = check(KV, history)
    assert result.ok is False
    assert result.unlinearizable is not None


def stale_value_for(history: Sequence[Operation], read: Operation) -> Hashable | None:
    """A value whose only write was overwritten strictly before `read` was called."""
    assert isinstance(read.input, Get)
    writes = [
        (o, value)
        for o in history
        if o.return_time is not None and o.input is not read.input
        for value in [written_value(o, read.input.key)]
        if value is not None
    ]
    for old, value in writes:
        for newer, _ in writes:
            assert old.return_time is not None and newer.return_time is not None
            if old.return_time < newer.call_time and newer.return_time < read.call_time:
                return value
    return None


def written_value(operation: Operation, key: Hashable) -> Hashable | None:
    """The value a completed write stored under `key`, if it did store one."""
    match operation.input:
        case Put(key=k, value=value) if k == key:
            return value
        case Cas(key=k, new=new) if k == key and operation.output is True:
            return new
    return None


@GENERATED
@given(st.lists(one_key_op_specs, min_size=6, max_size=30), st.data())
def test_stale_read_of_an_overwritten_value_is_always_rejected(
    specs: list[OpSpec], data: st.DataObject
) -> None:
    history = run_against_dict(specs)
    candidates = [
        (i, value)
        for i in completed_reads(history)
        for value in [stale_value_for(history, history[i])]
        if value is not None
    ]
    event(f"stale candidates: {bool(candidates)}")
    if not candidates:
        return
    index, value = data.draw(st.sampled_from(candidates))
    read = history[index]
    history[index] = Operation(read.client_id, read.call_time, read.return_time, read.input, value)
    assert check(KV, history).ok is False


# ------------------------------------------------ agreement with brute force


def brute_force(model: RegisterModel, history: Sequence[Operation]) -> bool:
    """Try every order that respects real time (a returned strictly before b called)."""

    def precedes(a: Operation, b: Operation) -> bool:
        return a.return_time is not None and a.return_time < b.call_time

    def search(state: Hashable, remaining: tuple[Operation, ...]) -> bool:
        if not remaining:
            return True
        for candidate in remaining:
            if any(precedes(other, candidate) for other in remaining):
                continue
            allowed, state_next = model.step(state, candidate.input, candidate.effective_output)
            rest = tuple(o for o in remaining if o is not candidate)
            if allowed and search(state_next, rest):
                return True
        return False

    return search(model.init(), tuple(history))


register_ops = st.builds(
    lambda client_id, call_time, length, pending, kind, a, b, result: Operation(
        client_id,
        call_time,
        None if pending else call_time + length,
        [Read(), Write(a), CompareAndSet(a, b)][kind],
        [a, None, result][kind],
    ),
    client_id=st.integers(0, 3),
    call_time=st.integers(0, 12),
    length=st.integers(0, 6),
    pending=st.sampled_from([False, False, False, True]),
    kind=st.integers(0, 2),
    a=st.integers(0, 2),
    b=st.integers(0, 2),
    result=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(register_ops, max_size=7))
def test_checker_agrees_with_brute_force_on_small_histories(history: list[Operation]) -> None:
    model = RegisterModel(initial=0)
    expected = brute_force(model, history)
    event(f"linearizable: {expected}")
    assert check(model, history).ok is expected


class _DuckRegister:
    """A model that does not subclass Model and lacks the optional methods' defaults."""

    def init(self) -> int:
        return 0

    def step(self, state: int, input: object, output: object) -> tuple[bool, int]:
        if isinstance(input, Write):
            return True, int(input.value)  # type: ignore[call-overload]
        return output is PENDING or output == state, state

    def partition(self, history: Sequence[Operation]) -> list[list[Operation]]:
        return [list(history)]

    def describe(self, input: object, output: object) -> str:
        return f"{input} -> {output}"


def test_duck_typed_model_without_is_read_only_works() -> None:
    good = [op(1, 0, 10, Write(1)), op(2, 20, 30, Read(), 1)]
    bad = [op(1, 0, 10, Write(1)), op(2, 20, 30, Read(), 0)]
    assert check(_DuckRegister(), good).ok is True  # type: ignore[arg-type]
    assert check(_DuckRegister(), bad).ok is False  # type: ignore[arg-type]


def test_pending_output_reaches_the_model_as_the_sentinel() -> None:
    seen: list[object] = []

    class Spy(RegisterModel):
        def step(self, state: Hashable, input: object, output: object) -> tuple[bool, Hashable]:
            seen.append(output)
            return super().step(state, input, output)

    check(Spy(), [op(1, 0, None, Read(), "ignored")])
    assert seen == [PENDING]


# ---------------------------------------------------------------- scale


# Search steps per operation a well-behaved history may cost: the search is about
# linear on them (3000 ops take ~8100 steps); an exponential blow-up would need far more.
SEARCH_STEPS_PER_OPERATION_MAX = 4


def test_a_few_thousand_operations_per_key_check_with_a_near_linear_search() -> None:
    # 3000 calls by 6 clients on 2 keys: about 1500 per partition. The cost is measured
    # in search steps (deterministic), not in seconds (which depend on the machine).
    specs = [
        OpSpec(
            client_id=i % 6,
            kind=["put", "get", "get", "cas", "delete", "get"][(i * 7) % 6],
            key=(i // 6) % 2,
            before_effect_ticks=(i * 5) % 7,
            after_effect_ticks=(i * 3) % 7,
            gap_ticks=i % 3,
            cas_hint=i % 3,
            pending=i % 97 == 0,
            took_effect=i % 2 == 0,
        )
        for i in range(3000)
    ]
    history = run_against_dict(specs)
    steps_max = SEARCH_STEPS_PER_OPERATION_MAX * len(history)
    # With the budget as tight as the claim, a slower search ends UNKNOWN (ok=None).
    result = check(KV, history, search_steps_max=steps_max)
    assert result.ok is True, result.explanation
    assert 0 < result.search_steps <= steps_max
