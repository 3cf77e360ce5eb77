"""The rate-limit checker on known-good and known-bad histories, and on histories the
pure limiter itself produces."""

from __future__ import annotations

import random

import pytest

from synod.checker.ratelimit import (
    OVER_ADMISSION,
    UNDER_ADMISSION,
    Check,
    check_rate_limit,
    lookback_ms,
    window_max,
)
from synod.ratelimit.algorithms import Algorithm, new_state
from synod.ratelimit.policy import LimitSpec

LOG = LimitSpec("second", 3, Algorithm.SLIDING_LOG)


def _at(t: int, admitted: bool = True, hits: int = 1, key: str = "k", latency: int = 0) -> Check:
    return Check(key, hits, admitted, t, t + latency)


def test_a_good_history_passes() -> None:
    history = [_at(0), _at(10), _at(20), _at(30, False), _at(1005), _at(1011), _at(1025),
               _at(1026, False)]  # fmt: skip
    report = check_rate_limit(history, LOG)
    assert report.ok, report.explanation
    assert report.checked_count == len(history)


def test_over_admission_is_found() -> None:
    history = [_at(t) for t in (0, 100, 200, 300)]  # four in one second, limit three
    report = check_rate_limit(history, LOG)
    assert not report.ok and report.violations[0].kind == OVER_ADMISSION
    assert check_rate_limit(history, LOG, bound=1).ok  # within a published bound of 1


def test_uncertain_intervals_are_not_blamed() -> None:
    """Four admissions whose calls may have been decided over more than a second."""
    history = [_at(0, latency=600), _at(100), _at(200), _at(900, latency=600)]
    assert check_rate_limit(history, LOG).ok


def test_under_admission_is_found() -> None:
    history = [_at(0), _at(500, admitted=False)]  # refused with one of three used
    report = check_rate_limit(history, LOG)
    assert not report.ok and report.violations[0].kind == UNDER_ADMISSION
    assert check_rate_limit(history, LOG, under_slack=2).ok


def test_keys_are_judged_apart() -> None:
    history = [_at(t, key=k) for k in ("a", "b") for t in (0, 1, 2)]
    assert check_rate_limit(history, LOG).ok
    assert not check_rate_limit([*history, _at(3, key="a")], LOG).ok


@pytest.mark.parametrize("algorithm", [a for a in Algorithm if a is not Algorithm.CONCURRENCY])
def test_histories_of_the_pure_limiter_pass(algorithm: Algorithm) -> None:
    """Whatever the arrivals, one counter's own decisions satisfy both properties."""
    limit = LimitSpec("second", 5, algorithm)
    rng = random.Random(7)
    state = new_state(algorithm, limit.rate())
    history, now = [], 0
    for _ in range(3000):  # bound: the history's length
        now += rng.choice((0, 1, 5, 20, 150))
        hits = rng.choice((1, 1, 1, 2))
        history.append(Check("k", hits, state.hit(now, hits).allowed, now, now))
    report = check_rate_limit(history, limit)
    assert report.ok, report.explanation
    assert sum(c.admitted for c in history) < len(history)  # the load exceeded the limit


def test_a_broken_limiter_is_caught() -> None:
    """A limiter that forgets its counts every 300 ms over-admits; one that refuses
    every other check under-admits."""
    limit = LimitSpec("second", 5, Algorithm.FIXED_WINDOW)
    forgetful = new_state(limit.algorithm, limit.rate())
    history = []
    for now in range(0, 3000, 10):  # bound: 300 checks
        if now % 300 == 0:
            forgetful = new_state(limit.algorithm, limit.rate())
        history.append(Check("k", 1, forgetful.hit(now, 1).allowed, now, now))
    assert any(v.kind == OVER_ADMISSION for v in check_rate_limit(history, limit).violations)
    stingy = [Check("k", 1, i % 2 == 0, t, t) for i, t in enumerate(range(0, 3000, 400))]
    assert any(v.kind == UNDER_ADMISSION for v in check_rate_limit(stingy, limit).violations)


def test_bounds_of_the_checker() -> None:
    assert window_max(LimitSpec("second", 5, Algorithm.TOKEN_BUCKET, burst=8)) == 13
    assert lookback_ms(LimitSpec("second", 5, Algorithm.GCRA, burst=10)) == 2000
    with pytest.raises(ValueError, match="not rates"):
        window_max(LimitSpec("second", 5, Algorithm.CONCURRENCY))
    with pytest.raises(ValueError, match="checks_max"):
        check_rate_limit([_at(0), _at(1)], LOG, checks_max=1)
    with pytest.raises(ValueError, match="returns before"):
        Check("k", 1, True, 5, 4)
