"""Lifeguard local health awareness (memberlist's awareness.go).

A member that misses acks it should have received (no ack from the target *and* no
nack from the relays it asked) is more likely to be the slow one itself. Its score
grows with every miss and shrinks with every success; the probe interval and probe
timeout are multiplied by `score + 1`, so a sick member probes less often, waits
longer, and stops accusing healthy members.
"""

from __future__ import annotations

AWARENESS_DELTA_MAX = 64  # One adjustment moves the score by at most this much.


class Awareness:
    """A saturating health score in 0..max_multiplier-1 (0 is healthy)."""

    def __init__(self, max_multiplier: int) -> None:
        assert max_multiplier >= 1
        self.max_multiplier = max_multiplier
        self.score = 0
        assert self.health_ok()

    def health_ok(self) -> bool:
        """The score is inside its bounds."""
        return 0 <= self.score < self.max_multiplier

    def apply_delta(self, delta: int) -> int:
        """Add `delta`, clamped to the bounds; returns the new score."""
        assert abs(delta) <= AWARENESS_DELTA_MAX, delta
        self.score = min(max(self.score + delta, 0), self.max_multiplier - 1)
        assert self.health_ok()
        return self.score

    def scale_ms(self, timeout_ms: int) -> int:
        """`timeout_ms` multiplied by the current health multiplier (score + 1)."""
        assert timeout_ms > 0 and self.health_ok()
        scaled = timeout_ms * (self.score + 1)
        assert scaled <= timeout_ms * self.max_multiplier
        return scaled
