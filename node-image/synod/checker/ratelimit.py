"""Checker for rate-limit histories: admitted hits stay within the limit plus the
published bound, and refusals are justified.

Each :class:`Check` is one answered check of one counter key: its hits, whether it was
admitted, and the interval ``[call_time, return_time]`` (ms) of the call as the client
saw it; the decision happened somewhere inside. Both properties are judged only on what
is certain whatever the decision times inside those intervals:

* ``over-admission``: admitted checks whose whole intervals fit inside one span of
  ``unit_ms`` certainly were decided inside it; their hits must not exceed what the
  algorithm may admit in such a span (:func:`window_max`) plus ``bound`` (the mode's
  over-admission bound, :func:`synod.ratelimit.limiter.over_admission_bound`, plus one
  capacity per ownership move the run caused).
* ``under-admission``: a refused check is unjustified when the hits admitted by checks
  that *may* have been decided in the lookback before it (:func:`lookback_ms`), plus its
  own hits, still fit the capacity minus ``under_slack`` (the hits a run may lose, e.g.
  to a member killed with counts that a new owner does not know, which only makes the
  limiter stricter for a while — so it is zero unless the run says otherwise).

Concurrency limits are not rates: they are not judged here.
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Final

from synod.checker.report import VIOLATIONS_MAX_DEFAULT, Report, ViolationLog
from synod.ratelimit.algorithms import Algorithm
from synod.ratelimit.policy import LimitSpec

__all__ = ["Check", "check_rate_limit", "lookback_ms", "window_max"]

CHECKS_MAX_DEFAULT: Final = 1_000_000
OVER_ADMISSION: Final = "over-admission"
UNDER_ADMISSION: Final = "under-admission"


@dataclass(frozen=True, slots=True)
class Check:
    """``hits`` of ``key`` answered ``admitted`` by a call over [call_time..return_time].

    Raises ValueError (from construction) for negative hits or a call that returns
    before it began."""

    key: Hashable
    hits: int
    admitted: bool
    call_time: int
    return_time: int

    def __post_init__(self) -> None:
        if self.hits < 0:
            raise ValueError(f"{self}: negative hits")
        if self.return_time < self.call_time:
            raise ValueError(f"{self}: returns before its call")

    def __str__(self) -> str:
        verdict = "admitted" if self.admitted else "refused"
        return f"{self.key!r} {self.hits} {verdict} [{self.call_time}..{self.return_time}]"


def window_max(limit: LimitSpec) -> int:
    """The most hits the algorithm admits in any span of ``unit_ms`` on one counter:
    a full bucket plus one unit of refill; two fixed windows' worth across a window
    edge; the sliding estimate admits at most two limits across two windows; the exact
    log admits the limit. Raises ValueError for concurrency."""
    capacity = limit.burst or limit.requests_per_unit
    algorithm = limit.algorithm
    if algorithm in (Algorithm.TOKEN_BUCKET, Algorithm.GCRA):
        return capacity + limit.requests_per_unit
    if algorithm in (Algorithm.FIXED_WINDOW, Algorithm.SLIDING_WINDOW):
        return 2 * limit.requests_per_unit
    if algorithm is Algorithm.SLIDING_LOG:
        return limit.requests_per_unit
    raise ValueError("concurrency limits are not rates")


def lookback_ms(limit: LimitSpec) -> int:
    """How far back the admitted hits that can justify a refusal lie: the time a full
    bucket takes to refill; one window for the fixed window and the log; two for the
    sliding estimate (the previous window weighs in). Raises ValueError (concurrency)."""
    unit = limit.unit_ms
    algorithm = limit.algorithm
    if algorithm in (Algorithm.TOKEN_BUCKET, Algorithm.GCRA):
        capacity = limit.burst or limit.requests_per_unit
        return -(-capacity * unit // limit.requests_per_unit)
    if algorithm in (Algorithm.FIXED_WINDOW, Algorithm.SLIDING_LOG):
        return unit
    if algorithm is Algorithm.SLIDING_WINDOW:
        return 2 * unit
    raise ValueError("concurrency limits are not rates")


def check_rate_limit(
    checks: Sequence[Check],
    limit: LimitSpec,
    *,
    bound: int = 0,
    under_slack: int = 0,
    checks_max: int = CHECKS_MAX_DEFAULT,
    violations_max: int = VIOLATIONS_MAX_DEFAULT,
) -> Report:
    """Check every key's history against ``limit`` (see the module doc).

    Raises ValueError when there are more than checks_max records, a negative bound or
    slack, violations_max < 1, or a concurrency limit."""
    if len(checks) > checks_max:
        raise ValueError(f"{len(checks)} checks exceed checks_max={checks_max}")
    if bound < 0 or under_slack < 0:
        raise ValueError("bound and under_slack must not be negative")
    most, back = window_max(limit) + bound, lookback_ms(limit)
    capacity = (limit.burst or limit.requests_per_unit) - under_slack
    log = ViolationLog(violations_max)
    by_key: dict[Hashable, list[Check]] = {}
    for record in checks:  # bound: checks_max
        by_key.setdefault(record.key, []).append(record)
    for records in by_key.values():  # bound: checks_max in all
        admitted = sorted((r for r in records if r.admitted and r.hits),
                          key=lambda r: r.call_time)  # fmt: skip
        _over(admitted, limit.unit_ms, most, log)
        _under([r for r in records if not r.admitted], admitted, back, capacity, log)
    report = log.report(len(checks))
    assert report.checked_count == len(checks)
    return report


def _over(admitted: list[Check], unit_ms: int, most: int, log: ViolationLog) -> None:
    """Spans ``[call, call + unit_ms)`` from each admitted call: the checks wholly
    inside certainly count."""
    calls = [r.call_time for r in admitted]
    for i, first in enumerate(admitted):  # bound: the admitted checks of the key
        end = first.call_time + unit_ms - 1
        stop = bisect.bisect_right(calls, end)
        inside = sum(r.hits for r in admitted[i:stop] if r.return_time <= end)
        if inside > most:
            log.add(OVER_ADMISSION, f"{inside} hits admitted within {unit_ms} ms from "
                    f"{first}, more than {most}")  # fmt: skip
    assert len(calls) == len(admitted)


def _under(refused: list[Check], admitted: list[Check], back_ms: int, capacity: int,
           log: ViolationLog) -> None:  # fmt: skip
    """A refusal needs enough hits possibly admitted in the lookback before it."""
    calls = [r.call_time for r in admitted]
    latency_max = max((r.return_time - r.call_time for r in admitted), default=0)
    for record in refused:  # bound: the refused checks of the key
        start = bisect.bisect_left(calls, record.call_time - back_ms - latency_max)
        stop = bisect.bisect_right(calls, record.return_time)
        maybe = sum(r.hits for r in admitted[start:stop]
                    if r.return_time >= record.call_time - back_ms)  # fmt: skip
        if maybe + record.hits <= capacity:
            log.add(UNDER_ADMISSION, f"{record} refused with at most {maybe} hits admitted "
                    f"in the {back_ms} ms before it (capacity {capacity})")  # fmt: skip
    assert len(calls) == len(admitted)
