"""Checker for lock histories: mutual exclusion and monotone fencing tokens.

Each `LockHold` is one acknowledged grant as its holder saw it. Record a hold
from the moment the grant was acknowledged to the holder (`acquire_time`) to
the moment the holder *began* releasing (`release_time`): that is the interval
in which it relied on the lock. Recording the release acknowledgement instead
would raise false alarms, since the next holder may be granted before that
acknowledgement reaches the first.

A hold whose end is unknown (the holder crashed, its lease expired, or the run
ended first) has `release_time=None`: it cannot be proven to overlap a later
hold, but its token still takes part in the fencing check. A reentrant
re-acquire by the same holder belongs to the outer hold, not a new one.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Final

from synod.checker.report import VIOLATIONS_MAX_DEFAULT, Report, ViolationLog

HOLDS_MAX_DEFAULT: Final = 1_000_000

MUTUAL_EXCLUSION: Final = "mutual-exclusion"
FENCING_ORDER: Final = "fencing-order"
DUPLICATE_TOKEN: Final = "duplicate-token"


@dataclass(frozen=True, slots=True)
class LockHold:
    """One acknowledged grant of `lock` to `holder` with fencing `token`.

    Raises ValueError (from construction) when release_time < acquire_time.
    """

    lock: Hashable
    holder: Hashable
    token: int
    acquire_time: int
    release_time: int | None = None

    def __post_init__(self) -> None:
        if self.release_time is not None and self.release_time < self.acquire_time:
            raise ValueError(f"{self}: released before it was acquired")

    def __str__(self) -> str:
        end = "?" if self.release_time is None else str(self.release_time)
        return f"{self.holder!r} held {self.lock!r} [{self.acquire_time}..{end}] token {self.token}"


def check_locks(
    holds: Sequence[LockHold],
    *,
    holds_max: int = HOLDS_MAX_DEFAULT,
    violations_max: int = VIOLATIONS_MAX_DEFAULT,
) -> Report:
    """Check mutual exclusion and fencing-token order per lock.

    Violations: `mutual-exclusion` (two holds of one lock overlap: the later one
    was acquired strictly before the earlier one's known release), `fencing-order`
    (a hold acquired strictly later carries a token that is not larger) and
    `duplicate-token` (two grants of one lock share a token).

    Raises ValueError when there are more than holds_max holds or violations_max < 1.
    """
    if len(holds) > holds_max:
        raise ValueError(f"{len(holds)} holds exceed holds_max={holds_max}")
    log = ViolationLog(violations_max)
    by_lock: dict[Hashable, list[LockHold]] = {}
    for hold in holds:  # bound: holds_max
        by_lock.setdefault(hold.lock, []).append(hold)
    for lock_holds in by_lock.values():  # bound: holds_max
        ordered = sorted(lock_holds, key=lambda h: (h.acquire_time, h.token))
        _check_exclusion(ordered, log)
        _check_tokens(ordered, log)
    report = log.report(len(holds))
    assert report.checked_count <= holds_max
    return report


def _check_exclusion(ordered: Sequence[LockHold], log: ViolationLog) -> None:
    """Sweep holds of one lock in acquire order against the latest-ending earlier hold."""
    latest_ending: LockHold | None = None
    for hold in ordered:  # bound: len(ordered)
        if latest_ending is not None:
            assert latest_ending.release_time is not None
            assert latest_ending.acquire_time <= hold.acquire_time, "sorted by acquire time"
            if hold.acquire_time < latest_ending.release_time:
                log.add(MUTUAL_EXCLUSION, f"{hold} overlaps {latest_ending}")
        if hold.release_time is not None and (
            latest_ending is None
            or latest_ending.release_time is None
            or hold.release_time > latest_ending.release_time
        ):
            latest_ending = hold


def _check_tokens(ordered: Sequence[LockHold], log: ViolationLog) -> None:
    """Tokens of one lock: unique, and larger for every strictly later acquire."""
    first_with_token: dict[int, LockHold] = {}
    max_before: LockHold | None = None  # Largest token among strictly earlier acquires.
    group_max: LockHold | None = None  # Largest token among the current equal-time group.
    for hold in ordered:  # bound: len(ordered)
        if group_max is not None and group_max.acquire_time < hold.acquire_time:
            if max_before is None or group_max.token > max_before.token:
                max_before = group_max
            group_max = None
        if hold.token in first_with_token:
            log.add(DUPLICATE_TOKEN, f"{hold} reuses the token of {first_with_token[hold.token]}")
        else:
            first_with_token[hold.token] = hold
            if max_before is not None and hold.token <= max_before.token:
                log.add(FENCING_ORDER, f"{hold} was granted after {max_before}")
        if group_max is None or hold.token > group_max.token:
            group_max = hold
    assert len(first_with_token) <= len(ordered)
