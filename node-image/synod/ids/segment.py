"""Segment mode (Leaf's, on Raft instead of MySQL): the client side, pure.

The cluster keeps one ``max_id`` per tag; a client takes a *segment* of ``step`` IDs
``[max_id + 1, max_id + step]`` by one replicated command, then hands them out from
memory. :class:`SegmentBuffer` double-buffers: once ``prefetch_share`` of the current
segment is used it asks for the next one (``wants_fetch``), so a busy client rarely
waits on the network. :class:`StepPolicy` adapts the step like Leaf: a segment used up
in less than ``grow_below_ms`` doubles the next step, one that lasted more than
``shrink_above_ms`` halves it, always within ``[step_min, step_max]``.

IDs of one tag are unique and increase across segments; IDs a client took but did
not hand out (it stopped) are skipped, never reused.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

__all__ = ["SEGMENTS_BUFFERED_MAX", "Segment", "SegmentBuffer", "SegmentExhausted", "StepPolicy"]

# Current + prefetched: double buffering.
SEGMENTS_BUFFERED_MAX: Final = 2


class SegmentExhausted(Exception):
    """No ID is left in memory: fetch a segment (synchronously) first."""


@dataclass(frozen=True, slots=True)
class Segment:
    """IDs ``start .. end`` inclusive, installed at monotonic ``taken_ms``."""

    tag: str
    start: int
    end: int
    taken_ms: int

    def __post_init__(self) -> None:
        assert 1 <= self.start <= self.end, "a segment holds at least one ID"
        assert self.end < 2**63

    @property
    def size(self) -> int:
        """How many IDs. Raises nothing."""
        return self.end - self.start + 1


@dataclass(frozen=True, slots=True)
class StepPolicy:
    """Segment size bounds and Leaf's adaptation rule, as settings."""

    step_initial: int = 1_000
    step_min: int = 100
    step_max: int = 1_000_000
    grow_below_ms: int = 15 * 60 * 1000
    shrink_above_ms: int = 30 * 60 * 1000
    prefetch_share: float = 0.1

    def __post_init__(self) -> None:
        """Raises ValueError naming the misfit."""
        if not 1 <= self.step_min <= self.step_initial <= self.step_max:
            raise ValueError("need 1 <= step_min <= step_initial <= step_max")
        if not 0 <= self.grow_below_ms <= self.shrink_above_ms:
            raise ValueError("need 0 <= grow_below_ms <= shrink_above_ms")
        if not 0.0 <= self.prefetch_share <= 1.0:
            raise ValueError("prefetch_share must be in [0, 1]")

    def next_step(self, step: int, lasted_ms: int) -> int:
        """The step after a segment of ``step`` lasted ``lasted_ms``. Raises nothing."""
        assert lasted_ms >= 0
        if lasted_ms < self.grow_below_ms:
            step *= 2
        elif lasted_ms > self.shrink_above_ms:
            step //= 2
        out = min(self.step_max, max(self.step_min, step))
        assert self.step_min <= out <= self.step_max
        return out


class SegmentBuffer:
    """The in-memory segments of one tag. Not thread-safe (the SDK holds a lock)."""

    def __init__(self, tag: str, policy: StepPolicy | None = None) -> None:
        """Raises nothing."""
        self.tag = tag
        self.policy = policy or StepPolicy()
        self.step = self.policy.step_initial
        self._segments: deque[Segment] = deque()
        self._next = 0  # next ID of the current (first) segment
        self._last_issued = 0
        self.fetching = False  # a fetch is in flight (set by the driver)
        assert self.step >= 1

    @property
    def buffered(self) -> int:
        """How many segments are held (current + prefetched). Raises nothing."""
        return len(self._segments)

    def remaining(self) -> int:
        """IDs left in memory. Raises nothing."""
        if not self._segments:
            return 0
        left = self._segments[0].end - self._next + 1
        return left + sum(s.size for s in list(self._segments)[1:])

    def wants_fetch(self) -> bool:
        """True when the driver should fetch the next segment now: nothing buffered, or
        only the current one with ``prefetch_share`` of it used. Raises nothing."""
        if self.fetching or len(self._segments) >= SEGMENTS_BUFFERED_MAX:
            return False
        if not self._segments:
            return True
        current = self._segments[0]
        used = self._next - current.start
        return used >= current.size * self.policy.prefetch_share

    def step_for_fetch(self, now_ms: int) -> int:
        """The step to ask for now: adapted by how long the current segment has lasted
        (the initial step when none was taken yet). Raises nothing."""
        if self._segments:
            lasted_ms = max(0, now_ms - self._segments[0].taken_ms)
            self.step = self.policy.next_step(self.step, lasted_ms)
        assert self.policy.step_min <= self.step <= self.policy.step_max
        return self.step

    def install(self, start: int, end: int, now_ms: int) -> None:
        """Add the segment ``start .. end`` the cluster answered. Raises ValueError if
        it is not above everything held or issued (a bug or a stale answer)."""
        highest = self._segments[-1].end if self._segments else self._last_issued
        if start <= highest or end < start:
            raise ValueError(f"segment {start}..{end} is not above {highest}")
        if len(self._segments) >= SEGMENTS_BUFFERED_MAX:
            raise ValueError("two segments are already buffered")
        if not self._segments:
            self._next = start
        self._segments.append(Segment(self.tag, start, end, now_ms))
        assert len(self._segments) <= SEGMENTS_BUFFERED_MAX

    def next_many(self, count: int) -> list[int]:
        """``count`` IDs from memory, increasing. All or nothing. Raises
        SegmentExhausted when fewer than ``count`` are held, ValueError for count < 1."""
        if count < 1:
            raise ValueError("count must be >= 1")
        if self.remaining() < count:
            raise SegmentExhausted(f"{self.remaining()} IDs of {self.tag!r} left, {count} asked")
        out: list[int] = []
        for _segment in range(SEGMENTS_BUFFERED_MAX):  # bound: segments held
            if len(out) == count:
                break
            current = self._segments[0]
            take = min(count - len(out), current.end - self._next + 1)
            out.extend(range(self._next, self._next + take))
            self._next += take
            if self._next > current.end:
                self._segments.popleft()
                if self._segments:
                    self._next = self._segments[0].start
        assert len(out) == count
        self._last_issued = out[-1]
        return out
