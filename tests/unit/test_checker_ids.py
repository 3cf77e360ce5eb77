"""ID checker: global uniqueness and per-generator real-time order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synod.checker.ids import (
    DUPLICATE_ID,
    ORDER,
    SEGMENT_ORDER,
    SEGMENT_OVERLAP,
    IssuedId,
    TakenSegment,
    check_ids,
    check_segments,
)


def kinds(issued: list[IssuedId]) -> list[str]:
    return [v.kind for v in check_ids(issued).violations]


def test_increasing_unique_ids_are_ok() -> None:
    issued = [IssuedId("w1", 10, 0, 1), IssuedId("w1", 11, 2, 3), IssuedId("w2", 5, 0, 1)]
    report = check_ids(issued)
    assert report.ok and report.checked_count == 3


def test_concurrent_calls_may_return_ids_in_either_order() -> None:
    issued = [IssuedId("w1", 11, 0, 10), IssuedId("w1", 10, 5, 15)]
    assert check_ids(issued).ok


def test_duplicate_across_generators_is_caught() -> None:
    issued = [IssuedId("w1", 42, 0, 1), IssuedId("w2", 42, 0, 1)]
    report = check_ids(issued)
    assert [v.kind for v in report.violations] == [DUPLICATE_ID]
    assert "42" in report.explanation


def test_decreasing_id_after_a_returned_call_is_caught() -> None:
    issued = [IssuedId("w1", 10, 0, 1), IssuedId("w1", 9, 2, 3)]
    assert kinds(issued) == [ORDER]


def test_order_is_against_the_largest_earlier_value_not_the_last() -> None:
    issued = [
        IssuedId("w1", 20, 0, 1),
        IssuedId("w1", 30, 0, 100),  # Slow call, returns late.
        IssuedId("w1", 25, 50, 60),  # 25 > 20 returned before; 30 was concurrent: ok.
        IssuedId("w1", 26, 101, 102),  # 30 returned before this call: not larger.
    ]
    report = check_ids(issued)
    assert [v.kind for v in report.violations] == [ORDER]
    assert "26" in report.violations[0].message and "30" in report.violations[0].message


def test_repeated_id_from_one_generator_breaks_both_properties() -> None:
    issued = [IssuedId("w1", 7, 0, 1), IssuedId("w1", 7, 2, 3)]
    assert sorted(kinds(issued)) == [DUPLICATE_ID, ORDER]


def test_uuid_strings_compare_lexicographically() -> None:
    first = "018f1c2e-0000-7000-8000-000000000000"
    second = "018f1c2e-0001-7000-8000-000000000000"
    assert check_ids([IssuedId("u", first, 0, 1), IssuedId("u", second, 2, 3)]).ok
    assert kinds([IssuedId("u", second, 0, 1), IssuedId("u", first, 2, 3)]) == [ORDER]


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="before its call"):
        IssuedId("w", 1, 5, 4)
    with pytest.raises(ValueError, match="mixes"):
        check_ids([IssuedId("w", 1, 0, 1), IssuedId("w", "2", 2, 3)])
    with pytest.raises(ValueError, match="ids_max"):
        check_ids([IssuedId("w", i, 0, 1) for i in range(3)], ids_max=2)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4), st.integers(0, 4)), max_size=40))
def test_a_correct_generator_passes(calls: list[tuple[int, int, int]]) -> None:
    # Values are handed out in the order calls take effect, as a real generator would.
    issued, clock_of, effects = [], {0: 0, 1: 0, 2: 0, 3: 0}, []
    for client, before_ticks, after_ticks in calls:
        call = clock_of[client]
        effect = call + before_ticks
        clock_of[client] = effect + after_ticks + 1
        effects.append((effect, call, effect + after_ticks))
    for value, (_, call, ret) in enumerate(sorted(effects)):
        issued.append(IssuedId("g", value, call, ret))
    assert check_ids(issued).ok


# -- namespaces and segments (the ids service) ------------------------------------------------


def test_equal_values_in_different_namespaces_are_not_duplicates() -> None:
    issued = [IssuedId("a", 42, 0, 1, namespace="orders"), IssuedId("b", 42, 0, 1, "invoices")]
    assert check_ids(issued).ok
    same = [IssuedId("a", 42, 0, 1, namespace="orders"), IssuedId("b", 42, 0, 1, "orders")]
    assert kinds(same) == [DUPLICATE_ID]


def test_disjoint_increasing_segments_are_ok() -> None:
    taken = [TakenSegment("t", 1, 100, 0, 1), TakenSegment("t", 101, 150, 2, 3),
             TakenSegment("u", 1, 10, 0, 1), TakenSegment("t", 151, 160, 2, 5)]  # fmt: skip
    report = check_segments(taken)
    assert report.ok and report.checked_count == 4


def test_overlapping_segments_are_caught() -> None:
    taken = [TakenSegment("t", 1, 100, 0, 1), TakenSegment("t", 100, 150, 0, 1)]
    report = check_segments(taken)
    assert [v.kind for v in report.violations] == [SEGMENT_OVERLAP]


def test_a_segment_below_an_earlier_answered_one_is_caught() -> None:
    # A restored stale max_id: the later call got a lower, non-overlapping range.
    taken = [TakenSegment("t", 101, 200, 0, 1), TakenSegment("t", 1, 100, 5, 6)]
    report = check_segments(taken)
    assert [v.kind for v in report.violations] == [SEGMENT_ORDER]
    concurrent = [TakenSegment("t", 101, 200, 0, 10), TakenSegment("t", 1, 100, 5, 6)]
    assert check_segments(concurrent).ok


def test_bad_segment_records_are_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        TakenSegment("t", 5, 4, 0, 1)
    with pytest.raises(ValueError, match="segments_max"):
        check_segments([TakenSegment("t", 1, 1, 0, 1)] * 3, segments_max=2)
