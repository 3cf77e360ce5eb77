"""The verdict shared by the simple checkers (locks, ids): ok plus named violations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# Reporting stops after this many violations: one broken run can produce millions,
# and the first few are what a human reads.
VIOLATIONS_MAX_DEFAULT: Final = 100


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken property: `kind` is a stable code, `message` says which records."""

    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class Report:
    """`ok` iff no violation was found; `violations_dropped` counts unreported ones."""

    ok: bool
    checked_count: int
    violations: tuple[Violation, ...] = ()
    violations_dropped: int = 0

    def __post_init__(self) -> None:
        assert self.ok == (not self.violations and not self.violations_dropped)
        assert self.checked_count >= 0 and self.violations_dropped >= 0

    @property
    def explanation(self) -> str:
        """A readable summary, one line per reported violation."""
        if self.ok:
            return f"ok: {self.checked_count} records checked"
        lines = [f"{len(self.violations) + self.violations_dropped} violations:"]
        lines += [f"  [{v.kind}] {v.message}" for v in self.violations]
        if self.violations_dropped:
            lines.append(f"  ... and {self.violations_dropped} more not reported")
        return "\n".join(lines)


class ViolationLog:
    """Collects violations up to a bound, counting the ones it drops."""

    def __init__(self, violations_max: int = VIOLATIONS_MAX_DEFAULT) -> None:
        """Raises ValueError if violations_max < 1."""
        if violations_max < 1:
            raise ValueError(f"violations_max must be >= 1, got {violations_max}")
        self.violations_max: Final = violations_max
        self.violations: list[Violation] = []
        self.dropped = 0

    def add(self, kind: str, message: str) -> None:
        """Record one violation, or count it as dropped beyond the bound."""
        assert kind and message
        if len(self.violations) < self.violations_max:
            self.violations.append(Violation(kind, message))
        else:
            self.dropped += 1

    def report(self, checked_count: int) -> Report:
        """The final verdict over `checked_count` records."""
        ok = not self.violations and not self.dropped
        return Report(ok, checked_count, tuple(self.violations), self.dropped)
