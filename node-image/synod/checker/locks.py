"""Checkers for lock histories: mutual exclusion and monotone fencing tokens of holds;
mutual exclusion judged at a fenced resource (`check_fenced_writes`); FIFO grant order
(`check_fifo`); no lost wake-up (`check_wakeups`).

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


# -- resource side, FIFO order and wake-ups ----------------------------------------------

STALE_WRITE_ACCEPTED: Final = "stale-write-accepted"
FENCED_WHILE_HELD: Final = "fenced-while-held"
FIFO_ORDER: Final = "fifo-order"
LOST_WAKEUP: Final = "lost-wakeup"


@dataclass(frozen=True, slots=True)
class FencedWrite:
    """One write a holder sent to a fenced resource (which keeps the highest token it
    accepted and refuses lower ones). ``believed_held``: the writer was inside its
    conservative validity (``safe_until``) when it wrote. ``accepted``: the resource's
    answer."""

    lock: Hashable
    holder: Hashable
    token: int
    time: int
    believed_held: bool
    accepted: bool


def check_fenced_writes(
    writes: Sequence[FencedWrite],
    *,
    writes_max: int = HOLDS_MAX_DEFAULT,
    violations_max: int = VIOLATIONS_MAX_DEFAULT,
) -> Report:
    """Mutual exclusion judged by fencing tokens at the resource, in write order:

    * ``stale-write-accepted``: the resource accepted a token lower than one it had
      already accepted (a resource that does not fence, or tokens that went back);
    * ``fenced-while-held``: a writer inside its validity was refused because a newer
      token had been accepted — two holders believed they held the lock at once.

    Raises ValueError when there are more than writes_max writes."""
    if len(writes) > writes_max:
        raise ValueError(f"{len(writes)} writes exceed writes_max={writes_max}")
    log = ViolationLog(violations_max)
    highest: dict[Hashable, FencedWrite] = {}
    for write in sorted(writes, key=lambda w: w.time):  # bound: writes_max
        best = highest.get(write.lock)
        if write.accepted:
            if best is not None and write.token < best.token:
                log.add(STALE_WRITE_ACCEPTED,
                        f"{write.holder!r} wrote {write.lock!r} with token {write.token} at "
                        f"{write.time} after token {best.token} of {best.holder!r}")  # fmt: skip
            if best is None or write.token > best.token:
                highest[write.lock] = write
        elif write.believed_held and best is not None and best.token > write.token:
            log.add(FENCED_WHILE_HELD,
                    f"{write.holder!r} believed it held {write.lock!r} (token {write.token}) "
                    f"at {write.time} but {best.holder!r} had written with token "
                    f"{best.token} at {best.time}")  # fmt: skip
    report = log.report(len(writes))
    assert report.checked_count == len(writes)
    return report


@dataclass(frozen=True, slots=True)
class QueuedGrant:
    """A grant out of the wait queue: ``waiter_id`` numbers the waits of the service in
    request order; ``time`` orders the grants (e.g. the log index that granted it)."""

    lock: Hashable
    holder: Hashable
    waiter_id: int
    time: int


def check_fifo(
    grants: Sequence[QueuedGrant],
    *,
    grants_max: int = HOLDS_MAX_DEFAULT,
    violations_max: int = VIOLATIONS_MAX_DEFAULT,
) -> Report:
    """``fifo-order``: per lock, queued waiters are granted in request order (a later
    grant never carries an earlier waiter id). Raises ValueError beyond grants_max."""
    if len(grants) > grants_max:
        raise ValueError(f"{len(grants)} grants exceed grants_max={grants_max}")
    log = ViolationLog(violations_max)
    last: dict[Hashable, QueuedGrant] = {}
    for grant in sorted(grants, key=lambda g: g.time):  # bound: grants_max
        before = last.get(grant.lock)
        if before is not None and grant.waiter_id < before.waiter_id:
            log.add(FIFO_ORDER,
                    f"{grant.holder!r} (wait {grant.waiter_id}) was granted {grant.lock!r} "
                    f"at {grant.time} after {before.holder!r} (wait {before.waiter_id}) "
                    f"at {before.time}")  # fmt: skip
        if before is None or grant.waiter_id > before.waiter_id:
            last[grant.lock] = grant
    return log.report(len(grants))


@dataclass(frozen=True, slots=True)
class LockSample:
    """The applied state of one lock at ``time``: whether its queue head could be
    granted now (free enough for it and no lock-delay running)."""

    lock: Hashable
    time: int
    head_grantable: bool


def check_wakeups(
    samples: Sequence[LockSample],
    bound: int,
    *,
    samples_max: int = HOLDS_MAX_DEFAULT,
    violations_max: int = VIOLATIONS_MAX_DEFAULT,
) -> Report:
    """``lost-wakeup``: a queue head that could be granted stayed waiting for longer
    than ``bound`` (time units of the samples). Synod grants in the same applied
    command, so its bound is 0. Raises ValueError beyond samples_max or bound < 0."""
    if len(samples) > samples_max or bound < 0:
        raise ValueError(f"{len(samples)} samples (max {samples_max}), bound {bound} >= 0")
    log = ViolationLog(violations_max)
    since: dict[Hashable, int] = {}
    for sample in sorted(samples, key=lambda s: s.time):  # bound: samples_max
        if not sample.head_grantable:
            since.pop(sample.lock, None)
            continue
        start = since.setdefault(sample.lock, sample.time)
        if sample.time - start > bound:
            log.add(LOST_WAKEUP, f"the head waiter of {sample.lock!r} could be granted "
                                 f"from {start} but still waited at {sample.time}")  # fmt: skip
            since[sample.lock] = sample.time  # report each stall once per bound
    return log.report(len(samples))
