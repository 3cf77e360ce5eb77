"""Rate-limit algorithms: pure maths, no clock (time comes in as ``now_ms``).

Every algorithm keeps a small mutable state and answers one question: may ``hits`` more
requests pass at ``now_ms``? A refused request changes nothing (it is not counted), and
``hits == 0`` only asks. Integer arithmetic throughout (rates are scaled by the unit),
so the answers are exact and identical on every replica (the ``strict`` mode applies
them in the replicated state machine).

* **token bucket**: ``burst`` tokens, refilled at ``requests / unit_ms``;
* **GCRA** (the leaky bucket as a meter): a theoretical arrival time advanced by
  ``unit_ms / requests`` per hit, admitted while it stays within ``burst`` emission
  intervals of now (the same admissions as the token bucket, one integer of state);
* **fixed window**: ``requests`` per aligned window of ``unit_ms``;
* **sliding window, counter approximation**: the previous window's count weighted by
  the part of it still inside the sliding window, plus the current window's count
  (Cloudflare's estimate; it assumes the previous window's hits were evenly spread);
* **sliding window, exact log**: the time of every admitted hit in the last ``unit_ms``
  (bounded: at most ``requests`` entries, and ``requests`` is bounded by
  ``SLIDING_LOG_REQUESTS_MAX``);
* **concurrency**: at most ``requests`` in-flight leases, each released or expired
  after its ``ttl_ms``.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "CONCURRENCY_REQUESTS_MAX",
    "REQUESTS_PER_UNIT_MAX",
    "SLIDING_LOG_REQUESTS_MAX",
    "UNIT_MS_MAX",
    "Algorithm",
    "Concurrency",
    "Decision",
    "FixedWindow",
    "Gcra",
    "Rate",
    "SlidingLog",
    "SlidingWindow",
    "TokenBucket",
    "new_state",
]

REQUESTS_PER_UNIT_MAX: Final = 1_000_000_000
UNIT_MS_MAX: Final = 366 * 24 * 3600 * 1000  # a leap year
# The exact log keeps one entry per admitted hit: its limit is the log's bound.
SLIDING_LOG_REQUESTS_MAX: Final = 10_000
# Concurrency keeps one lease per admitted request.
CONCURRENCY_REQUESTS_MAX: Final = 100_000
NEVER: Final = -1  # retry_after_ms of a request that can never pass (hits > capacity)


class Algorithm(enum.StrEnum):
    """The algorithm of a limit (its wire name)."""

    TOKEN_BUCKET = "token_bucket"
    GCRA = "gcra"
    FIXED_WINDOW = "fixed_window"
    SLIDING_WINDOW = "sliding_window"
    SLIDING_LOG = "sliding_log"
    CONCURRENCY = "concurrency"


@dataclass(frozen=True, slots=True)
class Rate:
    """``requests`` per ``unit_ms``, with ``burst`` (bucket capacity; 0 means
    ``requests``) for the token bucket and GCRA. For concurrency, ``requests`` is the
    in-flight maximum and ``unit_ms`` a lease's time to live."""

    requests: int
    unit_ms: int
    burst: int = 0

    def __post_init__(self) -> None:
        """Raises ValueError naming the field out of range."""
        if not 1 <= self.requests <= REQUESTS_PER_UNIT_MAX:
            raise ValueError(f"requests_per_unit must be in [1, {REQUESTS_PER_UNIT_MAX}]")
        if not 1 <= self.unit_ms <= UNIT_MS_MAX:
            raise ValueError(f"unit_ms must be in [1, {UNIT_MS_MAX}]")
        if not 0 <= self.burst <= REQUESTS_PER_UNIT_MAX:
            raise ValueError(f"burst must be in [0, {REQUESTS_PER_UNIT_MAX}]")

    @property
    def capacity(self) -> int:
        """The burst, or ``requests`` when none was given. Raises nothing."""
        return self.burst or self.requests


@dataclass(frozen=True, slots=True)
class Decision:
    """One answer: ``allowed``, the ``limit``, what ``remaining`` after this request,
    ``reset_ms`` until the limit is fully available again and ``retry_after_ms`` until
    a refused request could pass (0 when allowed, ``NEVER`` when it cannot)."""

    allowed: bool
    limit: int
    remaining: int
    reset_ms: int
    retry_after_ms: int = 0

    def __post_init__(self) -> None:
        assert self.remaining >= 0 and self.reset_ms >= 0 and self.limit >= 1
        assert self.retry_after_ms >= NEVER and (not self.allowed or self.retry_after_ms == 0)


def _ceil_div(a: int, b: int) -> int:
    assert b > 0
    return -(-a // b)


def _check(hits: int, now_ms: int) -> None:
    if hits < 0 or now_ms < 0:
        raise ValueError("hits and now_ms must not be negative")


@dataclass(slots=True)
class TokenBucket:
    """Tokens scaled by ``unit_ms`` (``tokens * unit_ms``) so refills are exact."""

    rate: Rate
    scaled: int = -1  # -1: full (fresh)
    at_ms: int = 0

    def _refill(self, now_ms: int) -> int:
        full = self.rate.capacity * self.rate.unit_ms
        if self.scaled < 0:
            return full
        elapsed = max(0, now_ms - self.at_ms)
        refilled = min(full, self.scaled + elapsed * self.rate.requests)
        assert 0 <= refilled <= full
        return refilled

    def hit(self, now_ms: int, hits: int, commit: bool = True) -> Decision:
        """Take ``hits`` tokens if there are. Raises ValueError for negative input."""
        _check(hits, now_ms)
        rate = self.rate
        scaled = self._refill(now_ms)
        cost = hits * rate.unit_ms
        allowed = cost <= scaled
        if allowed and commit:
            scaled -= cost
            self.scaled, self.at_ms = scaled, max(now_ms, self.at_ms)
        full = rate.capacity * rate.unit_ms
        reset_ms = _ceil_div(full - scaled, rate.requests)
        if allowed:
            retry = 0
        elif hits > rate.capacity:
            retry = NEVER
        else:
            retry = _ceil_div(cost - scaled, rate.requests)
        decision = Decision(allowed, rate.capacity, scaled // rate.unit_ms, reset_ms, retry)
        assert decision.remaining <= rate.capacity
        return decision

    def idle(self, now_ms: int) -> bool:
        """Whether the bucket is full again (the state may be dropped). Raises nothing."""
        return self._refill(now_ms) == self.rate.capacity * self.rate.unit_ms


@dataclass(slots=True)
class Gcra:
    """The theoretical arrival time, scaled by ``requests`` (``tat * requests``)."""

    rate: Rate
    tat_scaled: int = 0

    def hit(self, now_ms: int, hits: int, commit: bool = True) -> Decision:
        """Advance the arrival time by ``hits`` emission intervals if it stays within
        the burst tolerance. Raises ValueError for negative input."""
        _check(hits, now_ms)
        rate = self.rate
        now_scaled = now_ms * rate.requests
        tolerance = rate.capacity * rate.unit_ms  # burst emission intervals, scaled
        tat = max(self.tat_scaled, now_scaled)
        new_tat = tat + hits * rate.unit_ms
        allowed = new_tat - now_scaled <= tolerance
        if allowed and commit:
            self.tat_scaled = tat = new_tat
        ahead = tat - now_scaled  # scaled time the bucket is "full" ahead of now
        remaining = max(0, (tolerance - ahead) // rate.unit_ms)
        if allowed:
            retry = 0
        elif hits > rate.capacity:
            retry = NEVER
        else:
            retry = _ceil_div(new_tat - now_scaled - tolerance, rate.requests)
        decision = Decision(allowed, rate.capacity, remaining, _ceil_div(ahead, rate.requests),
                            retry)  # fmt: skip
        assert 0 <= decision.remaining <= rate.capacity
        return decision

    def idle(self, now_ms: int) -> bool:
        """Whether the arrival time is in the past. Raises nothing."""
        return self.tat_scaled <= now_ms * self.rate.requests


@dataclass(slots=True)
class FixedWindow:
    """A count per aligned window ``[k * unit_ms, (k + 1) * unit_ms)``."""

    rate: Rate
    start_ms: int = 0
    count: int = 0

    def hit(self, now_ms: int, hits: int, commit: bool = True) -> Decision:
        """Count ``hits`` in the current window if they fit. Raises ValueError."""
        _check(hits, now_ms)
        rate = self.rate
        start = now_ms - now_ms % rate.unit_ms
        count = self.count if start == self.start_ms else 0
        allowed = count + hits <= rate.requests
        if allowed and commit:
            count += hits
            self.start_ms, self.count = start, count
        reset_ms = start + rate.unit_ms - now_ms
        retry = 0 if allowed else (NEVER if hits > rate.requests else reset_ms)
        decision = Decision(allowed, rate.requests, rate.requests - count, reset_ms, retry)
        assert count <= rate.requests and reset_ms > 0
        return decision

    def idle(self, now_ms: int) -> bool:
        """Whether the counted window is over. Raises nothing."""
        return now_ms - now_ms % self.rate.unit_ms != self.start_ms or self.count == 0


@dataclass(slots=True)
class SlidingWindow:
    """Counts of the current and the previous aligned window; the estimate over the
    sliding window ``(now - unit_ms, now]`` is ``previous * (unit_ms - elapsed) /
    unit_ms + current`` (compared scaled by ``unit_ms``, exactly)."""

    rate: Rate
    start_ms: int = 0
    current: int = 0
    previous: int = 0

    def _roll(self, now_ms: int) -> tuple[int, int, int]:
        unit = self.rate.unit_ms
        start = now_ms - now_ms % unit
        if start == self.start_ms:
            return start, self.current, self.previous
        if start == self.start_ms + unit:
            return start, 0, self.current
        return start, 0, 0

    def hit(self, now_ms: int, hits: int, commit: bool = True) -> Decision:
        """Count ``hits`` if the estimate stays within the limit. Raises ValueError."""
        _check(hits, now_ms)
        rate, unit = self.rate, self.rate.unit_ms
        start, current, previous = self._roll(now_ms)
        weight = unit - (now_ms - start)  # the previous window's part still inside
        used_scaled = previous * weight + current * unit
        allowed = used_scaled + hits * unit <= rate.requests * unit
        if allowed and commit:
            current += hits
            used_scaled += hits * unit
            self.start_ms, self.current, self.previous = start, current, previous
        remaining = max(0, (rate.requests * unit - used_scaled) // unit)
        # The estimate falls to `current` at the window's end; fully reset one later.
        reset_ms = (start + unit - now_ms) + (unit if current else 0)
        if allowed:
            retry = 0
        elif hits > rate.requests:
            retry = NEVER
        else:
            retry = _sliding_retry(rate, now_ms - start, current, previous, hits)
        decision = Decision(allowed, rate.requests, remaining, reset_ms, retry)
        assert current <= rate.requests and decision.remaining <= rate.requests
        return decision

    def idle(self, now_ms: int) -> bool:
        """Whether both windows have slid out. Raises nothing."""
        _start, current, previous = self._roll(now_ms)
        return current == 0 and previous == 0


def _sliding_retry(rate: Rate, elapsed: int, current: int, previous: int, hits: int) -> int:
    """Milliseconds until ``hits`` fit the sliding estimate (no other hit meanwhile)."""
    unit, need = rate.unit_ms, rate.requests - hits
    assert need >= 0 and 0 <= elapsed < unit
    if current <= need and previous > 0:
        # previous * (unit - elapsed - d) + current * unit <= need * unit
        d = _ceil_div(previous * (unit - elapsed) + (current - need) * unit, previous)
        if elapsed + d <= unit:
            return max(1, d)
    # Wait for the next window: there `current` becomes `previous`.
    wait = unit - elapsed
    if current <= need:
        return wait
    return wait + min(unit, _ceil_div((current - need) * unit, current))


@dataclass(slots=True)
class SlidingLog:
    """The exact log: ``(time, hits)`` of every admitted request in the last
    ``unit_ms``; its total never exceeds ``requests`` (so at most ``requests`` entries,
    and ``requests <= SLIDING_LOG_REQUESTS_MAX``)."""

    rate: Rate
    log: deque[tuple[int, int]] = field(default_factory=deque)
    total: int = 0

    def __post_init__(self) -> None:
        if self.rate.requests > SLIDING_LOG_REQUESTS_MAX:
            raise ValueError(f"sliding_log allows at most {SLIDING_LOG_REQUESTS_MAX} requests "
                             "per unit (one log entry each)")  # fmt: skip

    def _expire(self, now_ms: int) -> None:
        horizon = now_ms - self.rate.unit_ms
        while self.log and self.log[0][0] <= horizon:  # bound: requests entries
            self.total -= self.log.popleft()[1]
        assert self.total >= 0

    def hit(self, now_ms: int, hits: int, commit: bool = True) -> Decision:
        """Log ``hits`` if the last ``unit_ms`` holds room. Raises ValueError."""
        _check(hits, now_ms)
        rate = self.rate
        self._expire(now_ms)
        allowed = self.total + hits <= rate.requests
        if allowed and hits and commit:
            if self.log and self.log[-1][0] >= now_ms:
                at, n = self.log.pop()  # same (or an earlier clock's) millisecond
                self.log.append((at, n + hits))
            else:
                self.log.append((now_ms, hits))
            self.total += hits
        reset_ms = self.log[-1][0] + rate.unit_ms - now_ms if self.log else 0
        if allowed:
            retry = 0
        elif hits > rate.requests:
            retry = NEVER
        else:
            retry = self._retry(now_ms, rate.requests - hits)
        decision = Decision(allowed, rate.requests, rate.requests - self.total, max(0, reset_ms),
                            retry)  # fmt: skip
        assert len(self.log) <= rate.requests and self.total <= rate.requests
        return decision

    def _retry(self, now_ms: int, room: int) -> int:
        """When enough entries have slid out that the total is at most ``room``."""
        total = self.total
        for at, n in self.log:  # bound: requests entries
            total -= n
            if total <= room:
                return max(1, at + self.rate.unit_ms - now_ms + 1)
        raise AssertionError("the whole log slides out eventually")

    def idle(self, now_ms: int) -> bool:
        """Whether the log is empty after expiry. Raises nothing."""
        self._expire(now_ms)
        return not self.log


@dataclass(slots=True)
class Concurrency:
    """In-flight leases ``{lease_id: expires_ms}``, at most ``requests``; a lease lives
    ``unit_ms`` unless released before."""

    rate: Rate
    leases: dict[str, int] = field(default_factory=dict)
    anonymous: int = 0  # ids handed to anonymous leases

    def __post_init__(self) -> None:
        if self.rate.requests > CONCURRENCY_REQUESTS_MAX:
            raise ValueError(f"concurrency allows at most {CONCURRENCY_REQUESTS_MAX} in flight")

    def _expire(self, now_ms: int) -> None:
        for lease_id, expires in list(self.leases.items()):  # bound: requests leases
            if expires <= now_ms:
                del self.leases[lease_id]
        assert len(self.leases) <= self.rate.requests

    def acquire(self, now_ms: int, lease_id: str, hits: int = 1, commit: bool = True) -> Decision:
        """Hold ``hits`` slots under ``lease_id`` (``lease_id#i`` for i > 0) for
        ``unit_ms``; an id already held is renewed. Raises ValueError."""
        _check(hits, now_ms)
        if not lease_id:
            raise ValueError("a concurrency lease needs an id")
        self._expire(now_ms)
        ids = [f"{lease_id}#{i}" if i else lease_id for i in range(hits)]
        new = [i for i in ids if i not in self.leases]
        allowed = len(self.leases) + len(new) <= self.rate.requests
        if allowed and commit:
            for i in ids:
                self.leases[i] = now_ms + self.rate.unit_ms
        soonest = min(self.leases.values(), default=now_ms)
        reset_ms = max(self.leases.values(), default=now_ms) - now_ms
        if allowed:
            retry = 0
        elif hits > self.rate.requests:
            retry = NEVER
        else:
            retry = max(1, soonest - now_ms)
        remaining = self.rate.requests - len(self.leases)
        assert remaining >= 0
        return Decision(allowed, self.rate.requests, remaining, reset_ms, retry)

    def hit(self, now_ms: int, hits: int, commit: bool = True) -> Decision:
        """A check without a lease id: an anonymous lease per call (it expires after
        ``unit_ms``). Raises ValueError."""
        if commit:
            self.anonymous += 1
        return self.acquire(now_ms, f"~{self.anonymous + (0 if commit else 1)}", hits, commit)

    def release(self, now_ms: int, lease_id: str) -> bool:
        """Free ``lease_id`` (and its ``#i`` companions). Returns whether it was held.
        Raises nothing."""
        self._expire(now_ms)
        held = [i for i in self.leases if i == lease_id or i.startswith(f"{lease_id}#")]
        for i in held:
            del self.leases[i]
        assert lease_id not in self.leases
        return bool(held)

    def idle(self, now_ms: int) -> bool:
        """Whether no lease is in flight. Raises nothing."""
        self._expire(now_ms)
        return not self.leases


State = TokenBucket | Gcra | FixedWindow | SlidingWindow | SlidingLog | Concurrency


def new_state(algorithm: Algorithm, rate: Rate) -> State:
    """A fresh state of ``algorithm`` for ``rate``. Raises ValueError (bounds of the
    log and concurrency algorithms)."""
    classes: dict[Algorithm, type[State]] = {
        Algorithm.TOKEN_BUCKET: TokenBucket,
        Algorithm.GCRA: Gcra,
        Algorithm.FIXED_WINDOW: FixedWindow,
        Algorithm.SLIDING_WINDOW: SlidingWindow,
        Algorithm.SLIDING_LOG: SlidingLog,
        Algorithm.CONCURRENCY: Concurrency,
    }
    state = classes[algorithm](rate)
    assert state.rate is rate
    return state
