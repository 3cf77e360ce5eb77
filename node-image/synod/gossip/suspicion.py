"""Lifeguard dynamic suspicion (memberlist's suspicion.go and util.go), pure maths.

A suspicion starts with the longest timeout and shrinks as *independent* members
confirm it: with `n` confirmations out of `k` expected,

    timeout = max(min, max - (max - min) * log(n + 1) / log(k + 1))

and the bounds scale with the cluster: min = suspicion_mult * max(1, log10(N)) *
probe_interval, max = suspicion_max_timeout_mult * min. A member whose ack was merely
late has time to refute; a really dead member is declared dead in `min` once enough
members agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

CONFIRMERS_MAX = 64  # Distinct confirmers remembered for one suspicion (>= k).


def suspicion_min_timeout_ms(suspicion_mult: int, members: int, probe_interval_ms: int) -> int:
    """memberlist's suspicionTimeout: mult * max(1, log10(N)) * interval."""
    assert suspicion_mult >= 1 and probe_interval_ms > 0
    assert members >= 0
    node_scale = max(1.0, math.log10(max(1.0, float(members))))
    # memberlist keeps three digits of the scale (time.Duration is an integer).
    return suspicion_mult * int(node_scale * 1000) * probe_interval_ms // 1000


def expected_confirmations(suspicion_mult: int, members: int) -> int:
    """k: confirmations expected before the minimum timeout (0 in tiny clusters)."""
    assert suspicion_mult >= 2 and members >= 0
    k = suspicion_mult - 2
    # Take out ourselves and the suspect: fewer others than k means expect none.
    result = 0 if members - 2 < k else k
    assert 0 <= result <= CONFIRMERS_MAX
    return result


def suspicion_timeout_ms(confirmations: int, expected: int, min_ms: int, max_ms: int) -> int:
    """The total timeout after `confirmations` of `expected` (memberlist's
    remainingSuspicionTime before the elapsed time is taken off)."""
    assert confirmations >= 0 and expected >= 0
    assert 0 < min_ms <= max_ms
    if expected < 1:
        return min_ms
    fraction = math.log(confirmations + 1.0) / math.log(expected + 1.0)
    raw_s = max_ms / 1000 - fraction * (max_ms - min_ms) / 1000
    timeout_ms = max(math.floor(1000.0 * raw_s), min_ms)
    assert min_ms <= timeout_ms <= max_ms
    return timeout_ms


@dataclass(slots=True)
class Suspicion:
    """One live suspicion of a member at a given incarnation."""

    incarnation: int
    started_ms: int
    expected: int
    min_ms: int
    max_ms: int
    suspected_by: str
    confirmers: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Raises AssertionError on inconsistent bounds."""
        assert 0 < self.min_ms <= self.max_ms
        assert 0 <= self.expected <= CONFIRMERS_MAX

    def confirm(self, source: str) -> bool:
        """Record an independent confirmation; False when it adds nothing (already
        counted, the original suspecter, or `expected` reached)."""
        assert source
        if len(self.confirmers) >= self.expected or len(self.confirmers) >= CONFIRMERS_MAX:
            return False
        if source == self.suspected_by or source in self.confirmers:
            return False
        self.confirmers.append(source)
        assert len(self.confirmers) <= self.expected
        return True

    def deadline_ms(self) -> int:
        """When the suspicion turns into a death, given the confirmations so far."""
        assert self.started_ms >= 0
        timeout = suspicion_timeout_ms(
            len(self.confirmers), self.expected, self.min_ms, self.max_ms
        )
        return self.started_ms + timeout
