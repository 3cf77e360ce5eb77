"""The resource-side, FIFO and wake-up lock checkers on good and known-bad histories."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synod.checker.locks import (
    FENCED_WHILE_HELD,
    FIFO_ORDER,
    LOST_WAKEUP,
    STALE_WRITE_ACCEPTED,
    FencedWrite,
    LockSample,
    QueuedGrant,
    check_fenced_writes,
    check_fifo,
    check_wakeups,
)


def test_fenced_writes_in_token_order_are_ok() -> None:
    writes = [
        FencedWrite("a", "alice", 1, 0, True, True),
        FencedWrite("a", "alice", 1, 5, True, True),
        FencedWrite("a", "bob", 4, 10, True, True),
        FencedWrite("a", "alice", 1, 12, False, False),  # paused alice, refused: the point
        FencedWrite("b", "carol", 2, 13, True, True),  # other lock, own order
    ]
    assert check_fenced_writes(writes).ok


def test_a_resource_that_accepts_a_stale_token_is_caught() -> None:
    writes = [FencedWrite("a", "bob", 4, 10, True, True),
              FencedWrite("a", "alice", 1, 12, False, True)]  # fmt: skip
    report = check_fenced_writes(writes)
    assert [v.kind for v in report.violations] == [STALE_WRITE_ACCEPTED]


def test_two_holders_believing_at_once_are_caught() -> None:
    writes = [FencedWrite("a", "bob", 4, 10, True, True),
              FencedWrite("a", "alice", 1, 12, True, False)]  # fmt: skip
    report = check_fenced_writes(writes)
    assert [v.kind for v in report.violations] == [FENCED_WHILE_HELD]
    assert "alice" in report.explanation


def test_fifo_order() -> None:
    good = [QueuedGrant("a", "x", 3, 1), QueuedGrant("a", "y", 7, 2), QueuedGrant("b", "z", 1, 3)]
    assert check_fifo(good).ok
    bad = [QueuedGrant("a", "x", 7, 1), QueuedGrant("a", "y", 3, 2)]
    assert [v.kind for v in check_fifo(bad).violations] == [FIFO_ORDER]


def test_wakeups() -> None:
    ok = [LockSample("a", 0, False), LockSample("a", 1, True), LockSample("a", 1, False)]
    assert check_wakeups(ok, bound=0).ok
    stalled = [LockSample("a", 0, True), LockSample("a", 5, True), LockSample("a", 6, False)]
    report = check_wakeups(stalled, bound=2)
    assert [v.kind for v in report.violations] == [LOST_WAKEUP]
    assert check_wakeups(stalled, bound=5).ok
    with pytest.raises(ValueError, match="bound"):
        check_wakeups(ok, bound=-1)


def test_bounds() -> None:
    with pytest.raises(ValueError, match="writes_max"):
        check_fenced_writes([FencedWrite("a", "x", 1, 0, True, True)] * 3, writes_max=2)
    with pytest.raises(ValueError, match="grants_max"):
        check_fifo([QueuedGrant("a", "x", 1, 0)] * 3, grants_max=2)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ab"), st.integers(1, 20)), max_size=40))
def test_a_fencing_resource_never_accepts_a_stale_token(attempts: list[tuple[str, int]]) -> None:
    highest: dict[str, int] = {}
    writes = []
    for time, (lock, token) in enumerate(attempts):
        accepted = token >= highest.get(lock, 0)
        if accepted:
            highest[lock] = token
        writes.append(FencedWrite(lock, f"h{token}", token, time, False, accepted))
    assert check_fenced_writes(writes).ok
