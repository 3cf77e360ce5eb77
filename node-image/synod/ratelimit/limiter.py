"""Counters in memory and the decisions of one check: sans-I/O (``now_ms`` in).

A :class:`Counters` store holds one algorithm state per counter key, at most
``counters_max``; states that are back to idle (a full bucket, an elapsed window) are
dropped when room is needed, and a store still full refuses a new counter with
``CountersFull`` (a clear error, never a silently forgotten count).

:func:`decide` answers a whole check (several descriptors) Envoy-style: the overall
answer is OVER_LIMIT when any non-shadow descriptor is over its limit. A check that is
refused consumes nothing on any of its counters (all are asked first, then all are
counted), so refused traffic never eats the budget of admitted traffic.

:func:`over_admission_bound` is the published error bound of each consistency mode.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from synod.ratelimit.algorithms import (
    NEVER,
    Concurrency,
    Decision,
    FixedWindow,
    Gcra,
    SlidingLog,
    SlidingWindow,
    State,
    TokenBucket,
    new_state,
)
from synod.ratelimit.policy import Consistency, LimitSpec, Match

__all__ = [
    "COUNTERS_MAX_DEFAULT",
    "Code",
    "Counters",
    "CountersFull",
    "DescriptorStatus",
    "check_state",
    "decide",
    "grant_quota",
    "over_admission_bound",
    "restore_fields",
    "state_fields",
]

COUNTERS_MAX_DEFAULT: Final = 100_000


class CountersFull(Exception):
    """``counters_max`` live counters exist; none is idle."""


class Code(enum.StrEnum):
    """Envoy's RateLimitResponse codes."""

    OK = "OK"
    OVER_LIMIT = "OVER_LIMIT"


@dataclass(frozen=True, slots=True)
class DescriptorStatus:
    """One descriptor's answer (``decision`` None: the descriptor is not limited)."""

    code: Code
    decision: Decision | None
    limit: LimitSpec | None = None
    shadow_mode: bool = False


class Counters:
    """Algorithm states by counter key, at most ``counters_max``."""

    def __init__(self, counters_max: int = COUNTERS_MAX_DEFAULT) -> None:
        """Raises ValueError for a bound below 1."""
        if counters_max < 1:
            raise ValueError("counters_max must be positive")
        self.counters_max = counters_max
        self._states: dict[str, tuple[LimitSpec, State]] = {}
        self.now_ms = 0  # the latest time seen: a clock stepping back is held still
        assert not self._states

    def advance(self, now_ms: int) -> int:
        """``now_ms``, or the latest time seen if it is later. Raises nothing."""
        self.now_ms = max(self.now_ms, now_ms)
        assert self.now_ms >= now_ms
        return self.now_ms

    def __len__(self) -> int:
        """Live counters. Raises nothing."""
        return len(self._states)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` has a live counter. Raises nothing."""
        return key in self._states

    def state(self, key: str, limit: LimitSpec, now_ms: int) -> State:
        """The state of ``key`` (fresh when unknown or when its limit changed).

        Raises CountersFull."""
        found = self._states.get(key)
        if found is not None and found[0] == limit:
            return found[1]
        if found is None and len(self._states) >= self.counters_max:
            self.sweep(now_ms)
            if len(self._states) >= self.counters_max:
                raise CountersFull(f"counters_max={self.counters_max} counters are live")
        state = new_state(limit.algorithm, limit.rate())
        self._states[key] = (limit, state)
        assert len(self._states) <= self.counters_max
        return state

    def replace(self, key: str, limit: LimitSpec, fields: dict[str, Any], now_ms: int) -> None:
        """Install a state rebuilt from :func:`state_fields` (another member's or a
        snapshot's). Raises ValueError, TypeError (malformed or inconsistent fields:
        nothing changes), CountersFull."""
        state = new_state(limit.algorithm, limit.rate())
        restore_fields(state, fields)
        check_state(state)
        if key not in self._states and len(self._states) >= self.counters_max:
            self.sweep(now_ms)
            if len(self._states) >= self.counters_max:
                raise CountersFull(f"counters_max={self.counters_max} counters are live")
        self._states[key] = (limit, state)
        assert len(self._states) <= self.counters_max

    def sweep(self, now_ms: int) -> int:
        """Drop the idle states; returns how many. Raises nothing."""
        idle = [key for key, (_limit, state) in self._states.items() if state.idle(now_ms)]
        for key in idle:  # bound: counters_max
            del self._states[key]
        assert len(self._states) <= self.counters_max
        return len(idle)

    def drop(self, keys: Sequence[str]) -> None:
        """Forget ``keys`` (this member no longer owns them). Raises nothing."""
        for key in keys:
            self._states.pop(key, None)
        assert all(key not in self._states for key in keys)

    def entry(self, key: str) -> tuple[LimitSpec, State]:
        """The limit and state of ``key``. Raises KeyError."""
        limit, state = self._states[key]
        assert state.rate == limit.rate()
        return limit, state

    def names(self) -> list[str]:
        """The live counter keys. Raises nothing."""
        return list(self._states)

    def release(self, key: str, lease_id: str, now_ms: int) -> bool:
        """Release a concurrency lease. Returns whether it was held. Raises nothing."""
        found = self._states.get(key)
        if found is None or not isinstance(found[1], Concurrency):
            return False
        return found[1].release(now_ms, lease_id)


def decide(
    counters: Counters, matches: Sequence[Match | None], now_ms: int, lease_id: str = ""
) -> list[DescriptorStatus]:
    """The statuses of one check's descriptors (None: not limited), counting them
    only when the overall answer is OK (shadow-mode descriptors never refuse; they
    are counted when they fit). ``lease_id`` names concurrency leases. Raises
    CountersFull (nothing counted)."""
    assert now_ms >= 0
    now_ms = counters.advance(now_ms)
    states = [None if m is None else counters.state(m.counter_key, m.limit, now_ms)
              for m in matches]  # fmt: skip
    asked = [None if m is None or s is None else _ask(s, m, now_ms)
             for m, s in zip(matches, states, strict=True)]  # fmt: skip
    refused = any(d is not None and m is not None and not d.allowed and not m.shadow_mode
                  for m, d in zip(matches, asked, strict=True))  # fmt: skip
    out: list[DescriptorStatus] = []
    for m, state, probe in zip(matches, states, asked, strict=True):
        if m is None or state is None or probe is None:
            out.append(DescriptorStatus(Code.OK, None))
            continue
        decision = probe
        if not refused and probe.allowed and m.hits:
            decision = _count(state, m, now_ms, lease_id)
        code = Code.OK if decision.allowed and not refused else Code.OVER_LIMIT
        if not decision.allowed and m.shadow_mode:
            code = Code.OK
        if refused and decision.allowed:
            code = Code.OK  # this descriptor fit; another one refused the request
        out.append(DescriptorStatus(code, decision, m.limit, m.shadow_mode))
    assert len(out) == len(matches)
    return out


def _ask(state: State, m: Match, now_ms: int) -> Decision:
    """Whether ``m.hits`` would fit, without counting them."""
    decision = state.hit(now_ms, m.hits, commit=False)
    assert decision.limit >= 1
    return decision


def _count(state: State, m: Match, now_ms: int, lease_id: str) -> Decision:
    if isinstance(state, Concurrency) and lease_id:
        decision = state.acquire(now_ms, lease_id, m.hits)
    else:
        decision = state.hit(now_ms, m.hits)
    assert decision.allowed, "asked just before, on the same state"
    return decision


def grant_quota(counters: Counters, found: Match, now_ms: int) -> int:
    """Reserve up to ``found.limit.quota_requests`` more hits on ``found``'s counter
    (what is left if fewer): the grant a client may spend on its own. Returns its size
    (0: none). Raises CountersFull."""
    wanted = found.limit.quota_requests
    if not wanted:
        return 0
    now_ms = counters.advance(now_ms)
    state = counters.state(found.counter_key, found.limit, now_ms)
    probe = state.hit(now_ms, 0, commit=False)
    granted = min(wanted, probe.remaining)
    if granted and not state.hit(now_ms, granted).allowed:
        return 0  # the remaining count is a bucket's floor: nothing reserved then
    assert 0 <= granted <= wanted
    return granted


def overall(statuses: Sequence[DescriptorStatus]) -> Code:
    """OVER_LIMIT when any descriptor is. Raises nothing."""
    code = Code.OVER_LIMIT if any(s.code is Code.OVER_LIMIT for s in statuses) else Code.OK
    assert statuses or code is Code.OK
    return code


def retry_after_ms(statuses: Sequence[DescriptorStatus]) -> int:
    """The longest wait of the refusing descriptors (NEVER if one can never pass, 0 if
    none refuses). Raises nothing."""
    waits = [s.decision.retry_after_ms for s in statuses
             if s.code is Code.OVER_LIMIT and s.decision is not None]  # fmt: skip
    if NEVER in waits:
        return NEVER
    wait = max(waits, default=0)
    assert wait >= 0
    return wait


def over_admission_bound(
    limit: LimitSpec,
    members: int,
    *,
    batch_interval_ms: int = 0,
    broadcast_lag_ms: int = 0,
) -> int:
    """The most hits a limit may admit beyond ``requests_per_unit`` in one unit, by mode
    (docs/ratelimit.md, "Modes"), with ``members`` counting members. Raises nothing.

    * ``strict``: 0 (one replicated counter);
    * ``owner``: 0 while the ring is stable; each ownership move of the key restarts its
      counter (one more limit per move, counted by ``synod_ratelimit_ring_changes``);
    * ``local``: every member admits the limit alone: ``limit * (members - 1)``;
    * ``global``: every member answers from its replica, which misses the hits the
      other members admitted since the owner's last broadcast reached it: while the load
      is spread at the limit's rate, ``rate * (batch_interval + broadcast_lag) *
      (members - 1)`` (rounded up).
    """
    assert members >= 1 and batch_interval_ms >= 0 and broadcast_lag_ms >= 0
    capacity = limit.burst or limit.requests_per_unit
    if limit.consistency is Consistency.STRICT or members == 1:
        return 0
    if limit.consistency is Consistency.LOCAL:
        return capacity * (members - 1)
    if limit.consistency is Consistency.OWNER:
        return 0
    lag_ms = batch_interval_ms + broadcast_lag_ms
    bound = -(-limit.requests_per_unit * lag_ms // limit.unit_ms) * (members - 1)
    assert bound >= 0
    return bound


def state_fields(state: State) -> dict[str, Any]:
    """The msgpack/JSON-able fields of an algorithm state (all but its rate). Raises
    nothing."""
    out: dict[str, Any] = {}
    for name in type(state).__dataclass_fields__:
        if name == "rate":
            continue
        value = getattr(state, name)
        if isinstance(value, deque):
            value = [list(item) for item in value]
        elif isinstance(value, dict):
            value = sorted([k, v] for k, v in value.items())
        out[name] = value
    assert "rate" not in out
    return out


def check_state(state: State) -> None:
    """Check a restored state's invariants. Raises ValueError naming the misfit."""
    rate = state.rate
    if isinstance(state, TokenBucket):
        ok = state.scaled == -1 or 0 <= state.scaled <= rate.capacity * rate.unit_ms
    elif isinstance(state, Gcra):
        ok = state.tat_scaled >= 0
    elif isinstance(state, FixedWindow):
        ok = 0 <= state.count <= rate.requests and state.start_ms >= 0
    elif isinstance(state, SlidingWindow):
        ok = 0 <= state.current <= rate.requests and 0 <= state.previous <= rate.requests
    elif isinstance(state, SlidingLog):
        times = [t for t, _n in state.log]
        ok = (all(n >= 1 for _t, n in state.log) and times == sorted(times)
              and state.total == sum(n for _t, n in state.log) <= rate.requests)  # fmt: skip
    else:
        ok = isinstance(state, Concurrency) and len(state.leases) <= rate.requests
    if not ok:
        raise ValueError(f"inconsistent {type(state).__name__} state")
    assert state.rate is rate


def restore_fields(state: State, fields: dict[str, Any]) -> None:
    """Set ``state``'s fields from :func:`state_fields`. Raises ValueError, TypeError
    (malformed fields)."""
    for name, raw in fields.items():
        if name not in type(state).__dataclass_fields__ or name == "rate":
            raise ValueError(f"unknown state field {name!r}")
        current = getattr(state, name)
        value: Any
        if isinstance(current, deque):
            value = deque((int(t), int(n)) for t, n in raw)
        elif isinstance(current, dict):
            value = {str(k): int(v) for k, v in raw}
        else:
            value = int(raw)
        setattr(state, name, value)
    assert state.rate.requests >= 1
