"""The snowflake generator: unique IDs from a leased worker id, safe under clock jumps.

Pure (sans-I/O): time comes from an injected :class:`Clock` and the worker lease from
:meth:`SnowflakeGenerator.install`; the SDK and the node drive the network calls.

Why it cannot issue a duplicate (docs/ids.md has the long form):

* A worker id is leased from the cluster: no two live leases share it, and the lease
  is bound to a Synod lease. The holder stops issuing at ``safe_until`` (a fraction of
  the TTL after it *sent* its last successful renewal, on its monotonic clock), before
  the cluster can expire the lease and give the worker id to someone else.
* Each renewal commits a time *reservation* ``ceiling_ms`` (the holder's wall clock at
  send time plus the TTL) as the worker's high-water mark; the holder never issues a
  timestamp above its committed ceiling, and the next holder of the worker id only
  issues timestamps strictly above the high-water mark it was granted (``floor_ms``).
  So two holders of one worker id use disjoint time ranges even when their clocks
  disagree.
* Within one holder, timestamps never go backwards: a small backwards step of the wall
  clock (at most ``rollback_wait_ms_max``) is waited out; a larger one is refused with
  :class:`ClockRollback` until the clock catches up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final, Protocol

from synod.ids.layout import Layout

__all__ = [
    "BATCH_COUNT_MAX",
    "RENEW_SHARE",
    "ROLLBACK_WAIT_MS_MAX_DEFAULT",
    "SAFE_SHARE",
    "Clock",
    "ClockRollback",
    "ClockStalled",
    "IdsError",
    "SnowflakeGenerator",
    "SystemClock",
    "WorkerGrant",
    "WorkerLeaseLost",
    "grant_from_answer",
]

# A backwards step of the wall clock up to this long is waited out; beyond it the
# generator refuses (ClockRollback) until the clock is past its last timestamp again.
ROLLBACK_WAIT_MS_MAX_DEFAULT: Final = 50
# One call issues at most this many IDs (the HTTP batch bound too).
BATCH_COUNT_MAX: Final = 100_000
# Renew the worker lease when this share of its TTL has passed since the last renewal.
RENEW_SHARE: Final = 1 / 3
# Stop issuing when this share of the TTL has passed since the last successful
# renewal was *sent*: the rest absorbs clock-rate differences and the leader's delay.
SAFE_SHARE: Final = 0.75
# A call waits for the clock at most this many times (rollback waits, a full
# millisecond); a clock that does not advance is an error, not a hang.
CLOCK_WAITS_MAX: Final = 1_000


class IdsError(Exception):
    """Base of the generator errors; ``code`` is the stable problem code (synod.codes)."""

    code = "internal"

    def __init__(self, message: str, **details: int | str) -> None:
        assert message
        super().__init__(message)
        self.message = message
        self.details = details


class ClockRollback(IdsError):
    """The wall clock is behind the last issued timestamp (or the worker's high-water
    mark) by more than ``rollback_wait_ms_max``; details: ``behind_ms``."""

    code = "clock-rollback"


class WorkerLeaseLost(IdsError):
    """The generator holds no worker lease it may still issue under (never acquired,
    past ``safe_until``, fenced by a newer grant, or its time reservation used up)."""

    code = "worker-lease-lost"


class ClockStalled(IdsError):
    """The clock did not advance after CLOCK_WAITS_MAX waits (a frozen test clock)."""

    code = "internal"


class Clock(Protocol):
    """Where a generator reads time; tests inject one that jumps."""

    def wall_ms(self) -> int:
        """Unix milliseconds (may jump backwards)."""
        ...

    def mono_ms(self) -> int:
        """A monotonic millisecond counter (never goes backwards)."""
        ...

    def sleep_ms(self, ms: int) -> None:
        """Block for about ``ms`` milliseconds."""
        ...


class SystemClock:
    """The process's clocks: time.time_ns, time.monotonic_ns, time.sleep."""

    def wall_ms(self) -> int:
        """Unix milliseconds. Raises nothing."""
        return time.time_ns() // 1_000_000

    def mono_ms(self) -> int:
        """Monotonic milliseconds. Raises nothing."""
        return time.monotonic_ns() // 1_000_000

    def sleep_ms(self, ms: int) -> None:
        """Sleep ``ms`` milliseconds. Raises nothing."""
        assert ms >= 0
        time.sleep(ms / 1000)


@dataclass(frozen=True, slots=True)
class WorkerGrant:
    """A worker lease as the generator uses it."""

    generator: str
    worker: int
    epoch: int  # fencing epoch: grows with every grant of the generator's workers
    lease_id: int  # the Synod lease it is bound to
    ttl_ms: int
    floor_ms: int  # issue only timestamps > floor_ms (previous holders' reservations)
    ceiling_ms: int  # issue only timestamps <= ceiling_ms (our committed reservation)
    safe_until_mono_ms: int  # stop issuing at this monotonic time
    renew_at_mono_ms: int  # renew from this monotonic time on

    def __post_init__(self) -> None:
        assert self.ttl_ms > 0 and self.worker >= 0 and self.epoch >= 1
        assert self.renew_at_mono_ms <= self.safe_until_mono_ms


def grant_from_answer(
    answer: dict[str, Any], *, sent_mono_ms: int, ttl_ms: int, floor_ms: int | None = None
) -> WorkerGrant:
    """The grant of an acquire or renew answer (``generator, worker, epoch, lease,
    floor_ms, ceiling_ms``) whose request was sent at ``sent_mono_ms``. A renewal keeps
    the acquire's ``floor_ms`` (pass it). Raises KeyError/ValueError if malformed."""
    if ttl_ms <= 0:
        raise ValueError("ttl_ms must be positive")
    floor = int(answer["floor_ms"]) if floor_ms is None else floor_ms
    grant = WorkerGrant(
        generator=str(answer["generator"]),
        worker=int(answer["worker"]),
        epoch=int(answer["epoch"]),
        lease_id=int(answer["lease"]),
        ttl_ms=ttl_ms,
        floor_ms=floor,
        ceiling_ms=int(answer["ceiling_ms"]),
        safe_until_mono_ms=sent_mono_ms + int(ttl_ms * SAFE_SHARE),
        renew_at_mono_ms=sent_mono_ms + int(ttl_ms * RENEW_SHARE),
    )
    assert grant.safe_until_mono_ms > sent_mono_ms
    return grant


class SnowflakeGenerator:
    """Issues IDs of ``layout`` under the installed worker grant. Not thread-safe: the
    SDK and the node serialise calls (one lock per generator)."""

    def __init__(
        self,
        layout: Layout,
        clock: Clock | None = None,
        *,
        rollback_wait_ms_max: int = ROLLBACK_WAIT_MS_MAX_DEFAULT,
    ) -> None:
        """Raises ValueError for a negative rollback wait."""
        if rollback_wait_ms_max < 0:
            raise ValueError("rollback_wait_ms_max must be >= 0")
        self.layout = layout
        self.clock: Clock = clock or SystemClock()
        self.rollback_wait_ms_max = rollback_wait_ms_max
        self.grant: WorkerGrant | None = None
        self._last_ms = -1  # timestamp of the last issued ID (any worker)
        self._sequence = 0  # next sequence number at _last_ms
        self._floor_ms = -1  # issue only timestamps > this (raised on a new worker)
        self._base = 0  # the ID of sequence 0 at _last_ms for the current worker
        # Counters for metrics and tests.
        self.issued = 0
        self.rollbacks_waited = 0
        self.rollbacks_refused = 0
        assert self.grant is None

    @property
    def last_ms(self) -> int:
        """The timestamp of the last issued ID (-1 before the first). Raises nothing."""
        return self._last_ms

    # -- the lease --------------------------------------------------------------------------

    def install(self, grant: WorkerGrant) -> None:
        """Use ``grant`` from now on: a renewal of the current worker (same worker and
        epoch) raises the ceiling and safe_until; any other grant starts afresh above
        both its floor and every timestamp issued so far (so IDs keep growing).

        Raises ValueError if the grant's generator or worker does not fit."""
        if grant.worker > self.layout.worker_max:
            raise ValueError(f"worker {grant.worker} does not fit {self.layout.worker_bits} bits")
        current = self.grant
        if current is not None and grant.generator != current.generator:
            raise ValueError(f"grant of {grant.generator!r} for {current.generator!r}")
        if current is not None and (grant.worker, grant.epoch) == (current.worker, current.epoch):
            self.grant = WorkerGrant(
                grant.generator, grant.worker, grant.epoch, grant.lease_id, grant.ttl_ms,
                current.floor_ms, max(current.ceiling_ms, grant.ceiling_ms),
                max(current.safe_until_mono_ms, grant.safe_until_mono_ms),
                grant.renew_at_mono_ms,
            )  # fmt: skip
        else:
            self.grant = grant
            # A new worker id: strictly above everything issued so far, so the first ID
            # of the new worker cannot sort below the last ID of the old one.
            self._floor_ms = max(grant.floor_ms, self._last_ms)
            self._last_ms = max(self._last_ms, self._floor_ms)
            self._sequence = self.layout.sequence_max + 1  # nothing left at _last_ms
        assert self.grant is not None and self._floor_ms <= self._last_ms

    def drop(self) -> None:
        """Forget the grant (lost or released): nothing is issued until the next
        install. Raises nothing."""
        self.grant = None
        assert self.grant is None

    def renew_due(self) -> bool:
        """True when the worker lease should be renewed (or acquired) now.

        Raises nothing."""
        grant = self.grant
        if grant is None:
            return True
        now_mono = self.clock.mono_ms()
        # Also renew before the reservation runs out (the wall clock jumped forward).
        reserve_left_ms = grant.ceiling_ms - self.clock.wall_ms()
        return now_mono >= grant.renew_at_mono_ms or reserve_left_ms < grant.ttl_ms // 2

    def reservation_ms(self) -> int:
        """The ceiling to ask for in an acquire or renewal sent now: the wall clock
        plus one TTL (``ttl_ms`` of the current grant; the caller passes its own for an
        acquire). Raises nothing."""
        grant = self.grant
        assert grant is not None
        return max(self.clock.wall_ms(), self._last_ms) + grant.ttl_ms

    # -- issuing ----------------------------------------------------------------------------

    def next(self) -> int:
        """One ID. Raises WorkerLeaseLost, ClockRollback, ClockStalled, ValueError (the
        clock is outside the layout's time range)."""
        grant = self.grant
        # Fast path: the same millisecond as the last ID, sequence left, lease safe (the
        # millisecond was checked against floor and ceiling when it was first used).
        if (
            grant is not None
            and self._sequence <= self.layout.sequence_max
            and self.clock.wall_ms() == self._last_ms
            and self.clock.mono_ms() < grant.safe_until_mono_ms
        ):
            value = self._base + self._sequence
            self._sequence += 1
            self.issued += 1
            return value
        return self.next_many(1)[0]

    def next_many(self, count: int) -> list[int]:
        """``count`` IDs (1..BATCH_COUNT_MAX), increasing. All or nothing: on an error
        no ID of the call was handed out (those already drawn are lost, never reused).

        Raises WorkerLeaseLost, ClockRollback, ClockStalled, ValueError."""
        if not 1 <= count <= BATCH_COUNT_MAX:
            raise ValueError(f"count must be in [1, {BATCH_COUNT_MAX}]")
        out: list[int] = []
        waits = 0
        sequence_end = self.layout.sequence_max + 1
        while len(out) < count:  # bound: each turn issues >= 1 ID or counts a wait
            grant = self._usable_grant()
            timestamp_ms, waited = self._timestamp(grant)
            if waited:
                waits += 1
                if waits > CLOCK_WAITS_MAX:
                    raise ClockStalled(f"the clock did not advance in {CLOCK_WAITS_MAX} waits")
                continue
            if timestamp_ms > self._last_ms:
                self._last_ms, self._sequence = timestamp_ms, 0
            elif self._sequence >= sequence_end:  # this millisecond is used up
                waits += 1
                if waits > CLOCK_WAITS_MAX:
                    raise ClockStalled(f"the clock did not advance in {CLOCK_WAITS_MAX} waits")
                self.clock.sleep_ms(1)
                continue
            take = min(count - len(out), sequence_end - self._sequence)
            base = self._base = self.layout.base(self._last_ms, grant.worker)
            out.extend(range(base + self._sequence, base + self._sequence + take))
            self._sequence += take
        self.issued += count
        assert len(out) == count and out[0] < out[-1] + 1
        return out

    def _usable_grant(self) -> WorkerGrant:
        """The grant if it may still issue. Raises WorkerLeaseLost."""
        grant = self.grant
        if grant is None:
            raise WorkerLeaseLost("no worker lease: acquire one first")
        if self.clock.mono_ms() >= grant.safe_until_mono_ms:
            raise WorkerLeaseLost(
                f"worker {grant.worker} of {grant.generator!r} was not renewed before "
                "safe_until; it may be re-leased, so this generator stops issuing",
                generator=grant.generator, worker=grant.worker, epoch=grant.epoch,
            )  # fmt: skip
        assert grant.floor_ms <= self._floor_ms
        return grant

    def _timestamp(self, grant: WorkerGrant) -> tuple[int, bool]:
        """(the wall clock, False) when usable; (_, True) after waiting out a small
        backwards step. Raises ClockRollback, WorkerLeaseLost (reservation used up)."""
        now_ms = self.clock.wall_ms()
        lowest_ms = max(self._last_ms, self._floor_ms + 1)
        if now_ms < lowest_ms:
            behind_ms = lowest_ms - now_ms
            if behind_ms > self.rollback_wait_ms_max:
                self.rollbacks_refused += 1
                raise ClockRollback(
                    f"the clock is {behind_ms} ms behind the last issued timestamp or the "
                    f"worker's high-water mark (more than rollback_wait_ms_max="
                    f"{self.rollback_wait_ms_max}); refusing until it catches up",
                    behind_ms=behind_ms, generator=grant.generator,
                )  # fmt: skip
            self.rollbacks_waited += 1
            self.clock.sleep_ms(behind_ms)
            return now_ms, True
        if now_ms > grant.ceiling_ms:
            raise WorkerLeaseLost(
                f"the clock is past the reservation of worker {grant.worker} "
                f"({grant.ceiling_ms}); renew the lease first",
                generator=grant.generator, worker=grant.worker, epoch=grant.epoch,
            )  # fmt: skip
        assert now_ms >= self._last_ms
        return now_ms, False
