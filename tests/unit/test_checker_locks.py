"""Lock checker: mutual exclusion of acknowledged holds, monotone fencing tokens."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synod.checker.locks import (
    DUPLICATE_TOKEN,
    FENCING_ORDER,
    MUTUAL_EXCLUSION,
    LockHold,
    check_locks,
)


def kinds(holds: list[LockHold]) -> list[str]:
    return [v.kind for v in check_locks(holds).violations]


def test_sequential_holds_with_growing_tokens_are_ok() -> None:
    holds = [
        LockHold("a", "alice", 1, 0, 10),
        LockHold("a", "bob", 2, 10, 20),  # Granted at the tick alice released: fine.
        LockHold("a", "carol", 5, 30, None),
    ]
    report = check_locks(holds)
    assert report.ok and report.checked_count == 3
    assert report.explanation == "ok: 3 records checked"


def test_different_locks_may_overlap_and_reuse_tokens() -> None:
    holds = [LockHold("a", "alice", 1, 0, 10), LockHold("b", "bob", 1, 5, 15)]
    assert check_locks(holds).ok


def test_overlapping_holds_of_one_lock_violate_mutual_exclusion() -> None:
    holds = [LockHold("a", "alice", 1, 0, 10), LockHold("a", "bob", 2, 5, 15)]
    report = check_locks(holds)
    assert not report.ok
    assert [v.kind for v in report.violations] == [MUTUAL_EXCLUSION]
    assert "'bob' held 'a' [5..15]" in report.explanation
    assert "'alice' held 'a' [0..10]" in report.explanation


def test_hold_nested_in_a_long_earlier_hold_is_caught() -> None:
    # The middle hold ends early, but the first one still covers the third.
    holds = [
        LockHold("a", "alice", 1, 0, 100),
        LockHold("a", "bob", 2, 10, 20),
        LockHold("a", "carol", 3, 50, 60),
    ]
    assert kinds(holds) == [MUTUAL_EXCLUSION, MUTUAL_EXCLUSION]


def test_hold_with_unknown_end_cannot_prove_overlap() -> None:
    holds = [LockHold("a", "alice", 1, 0, None), LockHold("a", "bob", 2, 5, 15)]
    assert check_locks(holds).ok


def test_token_not_growing_in_grant_order_is_caught() -> None:
    holds = [LockHold("a", "alice", 7, 0, 10), LockHold("a", "bob", 3, 20, 30)]
    assert kinds(holds) == [FENCING_ORDER]


def test_token_must_beat_every_earlier_grant_not_only_the_previous_one() -> None:
    holds = [
        LockHold("a", "alice", 9, 0, 10),
        LockHold("a", "bob", 10, 20, 30),
        LockHold("a", "carol", 8, 40, 50),
    ]
    assert kinds(holds) == [FENCING_ORDER]


def test_reused_token_is_caught_even_for_simultaneous_grants() -> None:
    holds = [LockHold("a", "alice", 4, 0, 0), LockHold("a", "bob", 4, 0, 10)]
    assert kinds(holds) == [DUPLICATE_TOKEN]


def test_violations_are_bounded_and_counted() -> None:
    holds = [LockHold("a", f"h{i}", 1000 - i, i, 1000) for i in range(50)]
    report = check_locks(holds, violations_max=5)
    assert len(report.violations) == 5 and report.violations_dropped > 0
    assert "more not reported" in report.explanation


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="released before"):
        LockHold("a", "alice", 1, 10, 5)
    with pytest.raises(ValueError, match="holds_max"):
        check_locks([LockHold("a", "x", 1, 0, 1)] * 3, holds_max=2)
    with pytest.raises(ValueError, match="violations_max"):
        check_locks([], violations_max=0)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), max_size=30))
def test_a_correct_lock_service_passes(steps: list[tuple[int, int]]) -> None:
    # A serial lock: each grant starts at or after the previous release.
    holds, now_ticks, token = [], 0, 0
    for index, (wait_ticks, hold_ticks) in enumerate(steps):
        token += 1 + wait_ticks % 2
        acquire = now_ticks + wait_ticks
        now_ticks = acquire + hold_ticks
        release = None if index == len(steps) - 1 else now_ticks
        holds.append(LockHold("a", index % 3, token, acquire, release))
    assert check_locks(holds).ok
