"""A controllable clock for the ID generators' tests."""

from __future__ import annotations

from dataclasses import dataclass, field

# A fixed, plausible "now": 2027-01-15.
WALL_START_MS = 1_800_000_000_000


@dataclass
class FakeClock:
    """Wall and monotonic milliseconds a test moves by hand; sleep advances both."""

    wall: int = WALL_START_MS
    mono: int = 0
    sleeps: list[int] = field(default_factory=list)

    def wall_ms(self) -> int:
        return self.wall

    def mono_ms(self) -> int:
        return self.mono

    def sleep_ms(self, ms: int) -> None:
        self.sleeps.append(ms)
        self.advance(max(ms, 1))

    def advance(self, ms: int) -> None:
        """Both clocks move on by ``ms``."""
        assert ms >= 0
        self.wall += ms
        self.mono += ms
